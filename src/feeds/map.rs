//! Mapping a parsed, structured HL7 v2 message to one FHIR transaction Bundle — a pure
//! function of (message, mapping set): no store, no clock.
//!
//! Layers, as the v2-to-FHIR guide splits them: a `MessageMap` says which resources a message
//! makes (from which segments of which groups), how each is identified and how they reference
//! each other; a `SegmentMap` fills one resource from one segment's fields; a `DatatypeMap`
//! turns one v2 datatype (CX, XPN, CWE…) into one FHIR datatype; a `VocabMap` translates
//! codes; `IdentitySystems` turns assigning authorities into identifier systems.
//!
//! Identity is deterministic: a resource identified by business identifier becomes a
//! conditional update (`PUT Patient?identifier=system|value`), any other gets the id
//! UUIDv5(namespace, "Type|" + an explicit tuple) (`PUT Encounter/<uuid>`), so the same
//! message always produces the same writes.

use super::mapping_set::MappingSet;
pub use super::maps::{
    DatatypeMap, Identity, IdentitySystems, MessageMap, Produce, Row, SegmentMap, VocabMap, When,
};
use crate::hl7v2::er7::{Field, Message, Repetition, Segment};
use crate::hl7v2::grammar::{Instance, Node};
use crate::hl7v2::{dtm, grammar};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The namespace of the ids derived here (UUIDv5 over `Type|tuple…`).
pub const ID_NAMESPACE: uuid::Uuid = uuid::uuid!("6f1c3a52-8e0b-5d4e-9a57-2b9d3c7e4f10");

/// A problem found while mapping, with its v2 location (`PID-3`) when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapIssue {
    pub location: Option<String>,
    /// HL7 table 0357: 100 segment sequence, 101 required field missing, 102 data type,
    /// 103 table value not found, 207 application error.
    pub code: &'static str,
    pub message: String,
    /// errors refuse the message (AE); warnings ride along in an AA
    pub error: bool,
}

fn issue(location: Option<String>, code: &'static str, message: String) -> MapIssue {
    MapIssue {
        location,
        code,
        message,
        error: true,
    }
}

/// What mapping a message gives: the transaction, and the issues.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub bundle: Value,
    pub issues: Vec<MapIssue>,
    /// Commands to run after the transaction commits, in message order.
    pub commands: Vec<MapCommand>,
}

/// A command a message carries besides its resources (a payment to post).
#[derive(Debug, Clone, PartialEq)]
pub struct MapCommand {
    /// `credit-payment`.
    pub kind: String,
    /// The request URL of the resource it concerns (`Patient?identifier=sys|val`).
    pub target: String,
    /// Its Parameters, from the segment's map.
    pub parameters: Value,
    /// The segment it came from (`FT1` and its position in the message), for a stable
    /// request id.
    pub segment: String,
}

/// Reads a location `3.1.2` as (field, component, subcomponent); 0 = whole.
fn position(from: &str) -> (usize, usize, usize) {
    let mut it = from.split('.').map(|p| p.parse::<usize>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// Sets `path` (`a.b[0].c`, `a[]`) in `obj` to `value`.
pub(super) fn set(obj: &mut Map<String, Value>, path: &str, value: Value) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let (name, index) = match head.split_once('[') {
        Some((n, i)) => (n, Some(i.trim_end_matches(']'))),
        None => (head, None),
    };
    match (index, rest) {
        (None, None) => {
            obj.insert(name.to_string(), value);
        }
        (None, Some(rest)) => {
            let child = obj
                .entry(name.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(c) = child {
                set(c, rest, value);
            }
        }
        (Some(i), rest) => {
            let arr = obj
                .entry(name.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(a) = arr else { return };
            let at = match i.parse::<usize>() {
                Ok(n) => n.min(a.len()),
                Err(_) => a.len(), // `[]`: append
            };
            if at == a.len() {
                a.push(match rest {
                    None => Value::Null,
                    Some(_) => Value::Object(Map::new()),
                });
            }
            match (rest, a.get_mut(at)) {
                (None, Some(slot)) => *slot = value,
                (Some(rest), Some(Value::Object(c))) => set(c, rest, value),
                _ => {}
            }
        }
    }
}

/// Merges `part` into `target`: arrays are appended, objects merged, other values set.
fn merge(target: &mut Map<String, Value>, part: Map<String, Value>) {
    for (k, v) in part {
        match (target.get_mut(&k), v) {
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b),
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (_, v) => {
                target.insert(k, v);
            }
        }
    }
}

struct Ctx<'a> {
    set: &'a MappingSet,
    default_zone: Option<&'a str>,
    issues: Vec<MapIssue>,
}

impl Ctx<'_> {
    /// A scalar value after type, vocabulary and identity handling; None: nothing to write.
    fn scalar(&mut self, raw: &str, row: &Row, at: &str) -> Option<Value> {
        if raw.is_empty() {
            return None;
        }
        let mut text = raw.to_string();
        if row.identity {
            let system = self
                .set
                .identity_system(raw)
                .map(str::to_string)
                .or_else(|| self.set.templated_system(raw));
            match system {
                Some(s) => text = s,
                None => {
                    self.issues.push(issue(
                        Some(at.to_string()),
                        "103",
                        format!(
                            "the assigning authority '{}' is not one this server knows",
                            raw.chars().take(40).collect::<String>()
                        ),
                    ));
                    return None;
                }
            }
        }
        if let Some(v) = &row.vocab {
            let Some(vm) = self.set.vocab(v) else {
                self.issues.push(issue(
                    Some(at.to_string()),
                    "207",
                    format!("no vocabulary {v}"),
                ));
                return None;
            };
            match vm.map.get(raw) {
                Some(code) => text = code.clone(),
                None => match vm.unmapped.as_deref() {
                    Some("keep") => {}
                    Some("drop") => return None,
                    _ => {
                        self.issues.push(issue(
                            Some(at.to_string()),
                            "103",
                            format!(
                                "'{}' is not a code of {}",
                                raw.chars().take(40).collect::<String>(),
                                vm.name
                            ),
                        ));
                        return None;
                    }
                },
            }
        }
        if let Some(c) = &row.constant {
            return Some(c.clone());
        }
        let converted = match row.value_type.as_deref() {
            Some("date") => dtm::to_date(&text).map(Value::String),
            Some("dateTime") => dtm::to_datetime(&text, self.default_zone).map(Value::String),
            Some("base64") => {
                use base64::Engine;
                Ok(Value::String(
                    base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
                ))
            }
            Some("boolean") => match text.as_str() {
                "Y" | "y" | "1" | "true" => Ok(Value::Bool(true)),
                "N" | "n" | "0" | "false" => Ok(Value::Bool(false)),
                _ => Err(dtm::DtmError(format!("'{text}' is not Y or N"))),
            },
            Some("magnitude") => {
                // an amount without its sign (DFT payments come as negative credits)
                let t = text.trim().trim_start_matches(['-', '+']);
                match (
                    t.parse::<rust_decimal::Decimal>().is_ok(),
                    serde_json::from_str::<Value>(t),
                ) {
                    (true, Ok(n @ Value::Number(_))) => Ok(n),
                    _ => Err(dtm::DtmError(format!(
                        "'{}' is not an amount",
                        text.chars().take(40).collect::<String>()
                    ))),
                }
            }
            Some("decimal") | Some("integer") => {
                let ok = text.parse::<rust_decimal::Decimal>().is_ok()
                    && (row.value_type.as_deref() == Some("decimal")
                        || text.parse::<i64>().is_ok());
                match (ok, serde_json::from_str::<Value>(text.trim())) {
                    (true, Ok(n @ Value::Number(_))) => Ok(n),
                    _ => Err(dtm::DtmError(format!(
                        "'{}' is not a number",
                        text.chars().take(40).collect::<String>()
                    ))),
                }
            }
            _ => Ok(Value::String(text)),
        };
        match converted {
            Ok(v) => Some(v),
            Err(e) => {
                self.issues.push(issue(Some(at.to_string()), "102", e.0));
                None
            }
        }
    }

    /// The identifier system of an assigning authority (HD: namespace, universal id, its
    /// type): the mapping set's for the namespace (or the universal id), else what a
    /// universal id says of itself (`ISO` → `urn:oid:`, `UUID` → `urn:uuid:`, `URI`);
    /// otherwise an error (103) — an identifier without a known system would merge
    /// patients of different hospitals.
    fn authority(&mut self, (ns, uid, kind): (&str, &str, &str), at: &str) -> Option<String> {
        if ns.is_empty() && uid.is_empty() {
            return None;
        }
        let known = [ns, uid]
            .into_iter()
            .filter(|x| !x.is_empty())
            .find_map(|x| self.set.identity_system(x))
            .map(str::to_string);
        let derived = match kind {
            "ISO" if !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
                Some(format!("urn:oid:{uid}"))
            }
            "UUID" if uuid::Uuid::parse_str(uid).is_ok() => Some(format!("urn:uuid:{uid}")),
            "URI" | "URL" if uid.contains(':') => Some(uid.to_string()),
            _ => None,
        };
        let found = known.or(derived).or_else(|| self.set.templated_system(ns));
        if found.is_none() {
            self.issues.push(issue(
                Some(at.to_string()),
                "103",
                format!(
                    "the assigning authority '{}' is not one this server knows",
                    if ns.is_empty() { uid } else { ns }
                        .chars()
                        .take(40)
                        .collect::<String>()
                ),
            ));
        }
        found
    }

    /// A datatype map over one repetition (or the part of it `component` selects).
    fn datatype(&mut self, name: &str, rep: &Repetition, at: &str) -> Option<Value> {
        let Some(dm) = self.set.datatype(name).cloned() else {
            self.issues.push(issue(
                Some(at.to_string()),
                "207",
                format!("no datatype map {name}"),
            ));
            return None;
        };
        let mut obj = Map::new();
        for row in &dm.rows {
            let (c, s, _) = position(&row.from);
            let here = format!("{at}.{}", row.from);
            if let Some(inner) = &row.datatype {
                // a component that is itself a composite: its subcomponents are its parts
                let sub = Repetition {
                    components: rep
                        .components
                        .get(c.saturating_sub(1))
                        .map(|subs| subs.iter().map(|x| vec![x.clone()]).collect())
                        .unwrap_or_default(),
                };
                if !sub.is_empty()
                    && let Some(v) = self.datatype(inner, &sub, &here)
                {
                    set(&mut obj, &row.to, v);
                }
                continue;
            }
            if row.identity {
                let hd = if row.flat {
                    (rep.get(c, 1), rep.get(c + 1, 1), rep.get(c + 2, 1))
                } else {
                    (rep.get(c, 1), rep.get(c, 2), rep.get(c, 3))
                };
                if let Some(system) = self.authority(hd, &here) {
                    set(&mut obj, &row.to, Value::String(system));
                }
                continue;
            }
            let raw = rep.get(c, s.max(1));
            if raw.is_empty() && row.required {
                self.issues.push(issue(
                    Some(here.clone()),
                    "101",
                    "a required component is empty".into(),
                ));
            }
            if let Some(v) = self.scalar(raw, row, &here) {
                set(&mut obj, &row.to, v);
            }
        }
        (!obj.is_empty()).then_some(Value::Object(obj))
    }

    /// A segment map over one segment.
    fn segment(&mut self, sm: &SegmentMap, seg: &Segment) -> Map<String, Value> {
        let mut obj = Map::new();
        obj.insert("resourceType".into(), Value::String(sm.resource.clone()));
        for (k, v) in &sm.fixed {
            obj.insert(k.clone(), v.clone());
        }
        for row in &sm.rows {
            if let Some(w) = &row.when {
                let (wf, wc, ws) = position(&w.field);
                let v = seg.get(wf, wc.max(1), ws.max(1));
                if !w.is_in.iter().any(|x| x == v) {
                    continue;
                }
            }
            let (f, c, s) = position(&row.from);
            let at = format!("{}-{}", seg.name, row.from);
            let field = seg.field(f).cloned().unwrap_or_else(Field::default);
            if field.is_empty() {
                if row.required {
                    self.issues
                        .push(issue(Some(at), "101", "a required field is empty".into()));
                }
                continue;
            }
            let reps: Vec<&Repetition> = if row.repeats {
                field.repetitions.iter().collect()
            } else {
                field.repetitions.first().into_iter().collect()
            };
            for rep in reps {
                let value = match &row.datatype {
                    Some(d) if c == 0 => self.datatype(d, rep, &at),
                    Some(d) => {
                        let sub = Repetition {
                            components: rep
                                .components
                                .get(c - 1)
                                .map(|subs| subs.iter().map(|x| vec![x.clone()]).collect())
                                .unwrap_or_default(),
                        };
                        self.datatype(d, &sub, &at)
                    }
                    None => self.scalar(rep.get(c.max(1), s.max(1)), row, &at),
                };
                if let Some(v) = value {
                    set(&mut obj, &row.to, v);
                }
            }
        }
        obj
    }
}

/// The segments at `path` (`A/B/SEG`) under `root`, each with the chain of group instances
/// above it (their addresses: unique within the tree, so chains from different paths compare,
/// and the longest common prefix is the nearest common ancestor).
fn find(root: &Instance, path: &str, names: &[String]) -> Vec<(usize, Vec<usize>)> {
    fn walk(
        inst: &Instance,
        parts: &[&str],
        names: &[String],
        chain: &mut Vec<usize>,
        out: &mut Vec<(usize, Vec<usize>)>,
    ) {
        let Some((head, rest)) = parts.split_first() else {
            return;
        };
        for child in &inst.children {
            match child {
                Node::Segment(i)
                    if rest.is_empty() && names.get(*i).map(String::as_str) == Some(*head) =>
                {
                    out.push((*i, chain.clone()));
                }
                Node::Group(g) if g.name.as_deref() == Some(*head) && !rest.is_empty() => {
                    chain.push(std::ptr::from_ref(g) as usize);
                    walk(g, rest, names, chain, out);
                    chain.pop();
                }
                _ => {}
            }
        }
    }
    let parts: Vec<&str> = path.split('/').collect();
    let mut out = Vec::new();
    walk(root, &parts, names, &mut Vec::new(), &mut out);
    out
}

impl MappingSet {
    /// Maps a message to a transaction Bundle. `default_zone` is the channel's zone for
    /// timestamps without an offset (`+01:00`).
    pub fn map_message(
        &self,
        message: &Message,
        default_zone: Option<&str>,
    ) -> Result<Mapped, Vec<MapIssue>> {
        let (code, trigger, _) = message.message_type();
        let key = format!("{code}^{trigger}");
        let Some(mm) = self.message_map(&key) else {
            return Err(vec![issue(
                Some("MSH-9".into()),
                "200",
                format!("{key} is not a message type this server maps"),
            )]);
        };
        let Some(structure) = self.structure(&mm.structure) else {
            return Err(vec![issue(
                None,
                "207",
                format!("no structure {}", mm.structure),
            )]);
        };
        let names: Vec<String> = message.segments.iter().map(|s| s.name.clone()).collect();
        let (tree, findings) = grammar::match_segments(structure, &names);
        let mut ctx = Ctx {
            set: self,
            default_zone,
            issues: Vec::new(),
        };
        for f in &findings {
            ctx.issues.push(MapIssue {
                location: None,
                code: "100",
                message: f.to_string(),
                error: f.is_error(),
            });
        }
        // every instance of every produced resource, in message order
        struct Made {
            key: String,
            seg: usize,
            chain: Vec<usize>,
            resource: Map<String, Value>,
            full_url: String,
            request_url: String,
            identity: String,
        }
        let mut made: Vec<Made> = Vec::new();
        let mut merges: Vec<(String, Vec<usize>, Map<String, Value>)> = Vec::new();
        // (kind, target key, group chain, parameters, segment)
        type Pending = (String, String, Vec<usize>, Map<String, Value>, String);
        let mut pending: Vec<Pending> = Vec::new();
        for p in &mm.produce {
            let Some(sm) = self.segment_map(&p.map).cloned() else {
                ctx.issues
                    .push(issue(None, "207", format!("no segment map {}", p.map)));
                continue;
            };
            let found = find(&tree, &p.path, &names);
            if found.is_empty() && !p.optional {
                ctx.issues.push(issue(
                    Some(p.path.clone()),
                    "100",
                    format!("the message has no {} for its {}", p.path, p.key),
                ));
            }
            for (seg_index, chain) in found {
                let Some(seg) = message.segments.get(seg_index) else {
                    continue;
                };
                if let Some(w) = &p.when {
                    let (wf, wc, ws) = position(&w.field);
                    let v = seg.get(wf, wc.max(1), ws.max(1));
                    if !w.is_in.iter().any(|x| x == v) {
                        continue;
                    }
                }
                if let Some(why) = &p.refuse {
                    ctx.issues.push(issue(
                        Some(format!(
                            "{}-{}",
                            seg.name,
                            p.when.as_ref().map_or("0", |w| w.field.as_str())
                        )),
                        "200",
                        why.clone(),
                    ));
                    continue;
                }
                let mut resource = ctx.segment(&sm, seg);
                for (k, v) in &p.fixed {
                    resource.insert(k.clone(), v.clone());
                }
                if let Some(into) = &p.into {
                    resource.shift_remove("resourceType");
                    merges.push((into.clone(), chain, resource));
                    continue;
                }
                if let Some(kind) = &p.command {
                    let target = p.references.values().next().cloned().unwrap_or_default();
                    let at = format!("{}[{}]", seg.name, seg_index + 1);
                    pending.push((kind.clone(), target, chain, resource, at));
                    continue;
                }
                made.push(Made {
                    key: p.key.clone(),
                    seg: seg_index,
                    chain,
                    resource,
                    full_url: String::new(),
                    request_url: String::new(),
                    identity: String::new(),
                });
            }
        }
        // segments that fill in another resource, into the nearest one of their key
        for (into, chain, part) in merges {
            let target = made
                .iter_mut()
                .filter(|m| m.key == into)
                .max_by_key(|m| common_prefix(&m.chain, &chain));
            if let Some(t) = target {
                merge(&mut t.resource, part);
            }
        }
        // identities, in produce order so `@key` tuples find theirs
        for i in 0..made.len() {
            let Some(m) = made.get(i) else { continue };
            let Some(p) = mm.produce.iter().find(|p| p.key == m.key) else {
                continue;
            };
            let rt = m
                .resource
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let (identity, request_url) = if let Some(loc) = &p.identity.identifier_from {
                let at = |part: &str| read_location(message, &format!("{loc}.{part}"), m.seg);
                let value = at("1");
                let (ns, uid, kind) = (at("4.1"), at("4.2"), at("4.3"));
                let system = if value.is_empty() {
                    ctx.issues.push(issue(
                        Some(loc.clone()),
                        "101",
                        format!("the {}'s identifier ({loc}) is empty", m.key),
                    ));
                    None
                } else {
                    ctx.authority((&ns, &uid, &kind), &format!("{loc}.4"))
                };
                let Some(s) = system else { continue };
                let q = format!("identifier={}|{}", url_escape(&s), url_escape(&value));
                (format!("{rt}?{s}|{value}"), format!("{rt}?{q}"))
            } else if p.identity.identifier {
                let first = m
                    .resource
                    .get("identifier")
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter().find_map(|id| {
                            Some((id.get("system")?.as_str()?, id.get("value")?.as_str()?))
                        })
                    });
                match first {
                    Some((s, v)) => {
                        let q = format!("identifier={}|{}", url_escape(s), url_escape(v));
                        (format!("{rt}?{s}|{v}"), format!("{rt}?{q}"))
                    }
                    None => {
                        ctx.issues.push(issue(
                            message.segments.get(m.seg).map(|s| format!("{}-3", s.name)),
                            "101",
                            format!(
                                "the {} has no identifier with an assigning authority",
                                m.key
                            ),
                        ));
                        continue;
                    }
                }
            } else {
                let mut tuple = vec![rt.clone()];
                for t in &p.identity.uuid {
                    if let Some(k) = t.strip_prefix('@') {
                        let other = made
                            .iter()
                            .filter(|o| o.key == k && !o.identity.is_empty())
                            .max_by_key(|o| common_prefix(&o.chain, &m.chain))
                            .map(|o| o.identity.clone())
                            .unwrap_or_default();
                        tuple.push(other);
                    } else {
                        tuple.push(read_location(message, t, m.seg));
                    }
                }
                if tuple.iter().skip(1).all(String::is_empty) {
                    ctx.issues.push(issue(
                        None,
                        "101",
                        format!(
                            "nothing identifies the {} ({})",
                            m.key,
                            p.identity.uuid.join(", ")
                        ),
                    ));
                    continue;
                }
                let id = uuid::Uuid::new_v5(&ID_NAMESPACE, tuple.join("|").as_bytes()).to_string();
                (format!("{rt}/{id}"), format!("{rt}/{id}"))
            };
            let full_url = format!(
                "urn:uuid:{}",
                uuid::Uuid::new_v5(&ID_NAMESPACE, identity.as_bytes())
            );
            if let Some(m) = made.get_mut(i) {
                if !request_url.contains('?')
                    && let Some(id) = request_url.split('/').nth(1)
                {
                    m.resource
                        .insert("id".into(), Value::String(id.to_string()));
                }
                m.identity = identity;
                m.request_url = request_url;
                m.full_url = full_url;
            }
        }
        // commands, on the nearest resource of their key
        let mut commands = Vec::new();
        for (kind, key, chain, resource, segment) in pending {
            let target = made
                .iter()
                .filter(|m| m.key == key && !m.request_url.is_empty())
                .max_by_key(|m| common_prefix(&m.chain, &chain))
                .map(|m| m.request_url.clone());
            match target {
                Some(target) => commands.push(MapCommand {
                    kind,
                    target,
                    parameters: Value::Object(resource),
                    segment,
                }),
                None => ctx.issues.push(issue(
                    None,
                    "207",
                    format!("the {kind} of {segment} has no {key} to act on"),
                )),
            }
        }
        // references, to the nearest instance of the key
        let targets: Vec<(String, Vec<usize>, String)> = made
            .iter()
            .filter(|m| !m.full_url.is_empty())
            .map(|m| (m.key.clone(), m.chain.clone(), m.full_url.clone()))
            .collect();
        for m in made.iter_mut() {
            let Some(p) = mm.produce.iter().find(|p| p.key == m.key) else {
                continue;
            };
            for (element, key) in &p.references {
                let target = targets
                    .iter()
                    .filter(|(k, _, _)| k == key)
                    .max_by_key(|(_, chain, _)| common_prefix(chain, &m.chain))
                    .map(|(_, _, u)| u.clone());
                if let Some(u) = target {
                    set(&mut m.resource, element, json!({"reference": u}));
                }
            }
        }
        if ctx.issues.iter().any(|i| i.error) {
            return Err(ctx.issues);
        }
        // one entry per identity (a resource named twice is written once, last wins)
        let mut entries: Vec<Value> = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for m in made.into_iter().filter(|m| !m.full_url.is_empty()) {
            let entry = json!({
                "fullUrl": m.full_url,
                "resource": Value::Object(m.resource),
                "request": {"method": "PUT", "url": m.request_url},
            });
            match seen.get(&m.identity) {
                Some(&i) => {
                    if let Some(e) = entries.get_mut(i) {
                        *e = entry;
                    }
                }
                None => {
                    seen.insert(m.identity, entries.len());
                    entries.push(entry);
                }
            }
        }
        Ok(Mapped {
            bundle: json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
            issues: ctx.issues,
            commands,
        })
    }
}

fn common_prefix(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Percent-escapes what a search value must not carry raw (`&`, `#`, `%`, `+`, space).
fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '&' | '#' | '%' | '+' | ' ' | '?' | '=' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `PV1-19.1` read from segment `own` when it has that name, else from the first segment
/// of that name.
fn read_location(message: &Message, loc: &str, own: usize) -> String {
    let Some((name, pos)) = loc.split_once('-') else {
        return String::new();
    };
    let (f, c, s) = position(pos);
    let seg = message
        .segments
        .get(own)
        .filter(|s| s.name == name)
        .or_else(|| message.segment(name));
    seg.map_or(String::new(), |seg| {
        seg.get(f, c.max(1), s.max(1)).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7v2::er7::parse;

    const A01: &str = "MSH|^~\\&|EPIC|HOSP|HP|HP|20240105083000+0100||ADT^A01^ADT_A01|MSG0001|P|2.5.1\r\
        EVN|A01|20240105083000+0100\r\
        PID|1||12345^^^HEALPORIUM^MR~999-99-9999^^^SSA^SS||Doe^Jane^Q||19800214|F|||1 Main St^^Town^ST^12345^^H||^PRN^PH^^^^^^^^^555-1234\r\
        ZPI|custom\r\
        PV1|1|I|W1^101^A||||1234^Smith^John||||||||||||V100^^^HEALPORIUM^VN|||||||||||||||||||||||||20240105080000+0100\r";

    fn set() -> MappingSet {
        MappingSet::embedded().unwrap()
    }

    #[test]
    fn an_admission_becomes_a_patient_and_an_encounter() {
        let m = parse(A01).unwrap();
        let out = set().map_message(&m, None).unwrap();
        let entries = out.bundle["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        let patient = &entries[0];
        assert_eq!(
            patient["request"]["url"],
            "Patient?identifier=https://healporium.dev/fhir/sid/mrn|12345"
        );
        let p = &patient["resource"];
        assert_eq!(p["gender"], "female");
        assert_eq!(p["birthDate"], "1980-02-14");
        assert_eq!(
            p["name"][0],
            json!({"family": "Doe", "given": ["Jane", "Q"]})
        );
        assert_eq!(
            p["identifier"][1]["system"],
            "http://hl7.org/fhir/sid/us-ssn"
        );
        assert_eq!(p["address"][0]["use"], "home");
        assert_eq!(
            p["telecom"][0],
            json!({"use": "home", "system": "phone", "value": "555-1234"})
        );
        let e = &entries[1]["resource"];
        assert_eq!(e["status"], "in-progress");
        assert_eq!(e["class"]["code"], "IMP");
        assert_eq!(e["period"]["start"], "2024-01-05T08:00:00+01:00");
        assert_eq!(e["subject"]["reference"], patient["fullUrl"]);
        assert_eq!(e["participant"][0]["individual"]["display"], "Smith");
        assert_eq!(e["identifier"][0]["value"], "V100");
        let url = entries[1]["request"]["url"].as_str().unwrap();
        assert!(url.starts_with("Encounter/"), "{url}");
        assert_eq!(e["id"].as_str(), url.strip_prefix("Encounter/"));
        // the Z-segment is a warning, not an error
        assert!(
            out.issues
                .iter()
                .any(|i| !i.error && i.message.contains("ZPI"))
        );
        // deterministic: the same message maps to the same bundle
        assert_eq!(set().map_message(&m, None).unwrap().bundle, out.bundle);
    }

    #[test]
    fn unknown_authorities_codes_and_types_are_errors_with_locations() {
        let bad = A01.replace("HEALPORIUM^MR", "ELSEWHERE^MR");
        let issues = set().map_message(&parse(&bad).unwrap(), None).unwrap_err();
        assert!(
            issues
                .iter()
                .any(|i| i.code == "103" && i.location.as_deref() == Some("PID-3.4")),
            "{issues:?}"
        );
        let bad = A01.replace("|F|||", "|Q|||");
        let issues = set().map_message(&parse(&bad).unwrap(), None).unwrap_err();
        assert!(
            issues
                .iter()
                .any(|i| i.code == "103" && i.location.as_deref() == Some("PID-8")),
            "{issues:?}"
        );
        let bad = A01.replace("|19800214|", "|1980-02-14|");
        let issues = set().map_message(&parse(&bad).unwrap(), None).unwrap_err();
        assert!(
            issues
                .iter()
                .any(|i| i.code == "102" && i.location.as_deref() == Some("PID-7")),
            "{issues:?}"
        );
        let unmapped = A01.replace("ADT^A01^ADT_A01", "ADT^A99");
        let issues = set()
            .map_message(&parse(&unmapped).unwrap(), None)
            .unwrap_err();
        assert_eq!(issues[0].code, "200");
    }

    #[test]
    fn results_attach_to_their_order_and_patient() {
        let oru = "MSH|^~\\&|LAB|HOSP|HP|HP|20240105||ORU^R01^ORU_R01|M2|P|2.5.1\r\
            PID|1||12345^^^HEALPORIUM^MR||Doe^Jane\r\
            OBR|1|ORD1|FIL1|24323-8^Metabolic panel^LN|||20240105070000+0000\r\
            OBX|1|NM|2345-7^Glucose^LN||95|mg/dL^^UCUM|70-99|N|||F|||20240105070000+0000\r\
            NTE|1||fasting\r\
            OBX|2|ST|8251-1^Note^LN||looks fine||||||F\r\
            OBR|2|ORD2|FIL2|58410-2^CBC^LN\r\
            OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL^^UCUM|||||P\r";
        let out = set().map_message(&parse(oru).unwrap(), None).unwrap();
        let entries = out.bundle["entry"].as_array().unwrap();
        let types: Vec<&str> = entries
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "Patient",
                "DiagnosticReport",
                "DiagnosticReport",
                "Observation",
                "Observation",
                "Observation"
            ]
        );
        let glucose = &entries[3]["resource"];
        assert_eq!(
            glucose["valueQuantity"],
            json!({"value": 95, "code": "mg/dL", "unit": "mg/dL", "system": "http://unitsofmeasure.org"})
        );
        assert_eq!(glucose["code"]["coding"][0]["system"], "http://loinc.org");
        assert_eq!(glucose["status"], "final");
        assert_eq!(glucose["effectiveDateTime"], "2024-01-05T07:00:00+00:00");
        assert_eq!(entries[4]["resource"]["valueString"], "looks fine");
        assert_eq!(entries[5]["resource"]["status"], "preliminary");
        // the two first-position OBXs of different orders get different ids
        assert_ne!(entries[3]["request"]["url"], entries[5]["request"]["url"]);
        assert_eq!(glucose["subject"]["reference"], entries[0]["fullUrl"]);
    }
}
