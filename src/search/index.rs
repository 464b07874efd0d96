//! Index rows extracted from a resource version: for every search parameter that applies to
//! the resource's type (from the registry, evaluated with FHIRPath), rows of the parameter's
//! type — string (normalized), token, reference, date (as a range), number, quantity
//! (UCUM-normalized where simple), uri and composite — plus every local reference, for
//! referential integrity. The store writes them in the same transaction as the version.

use crate::fhir::definitions::Definitions;
use crate::fhir::references::{collect, parse_local};
use crate::fhirpath::{Env, FpValue, Item, evaluate};
use crate::search::dates;
use crate::search::parameters::{ParamType, SearchParam, SearchParameters};
use crate::search::text::normalize;
use crate::search::ucum;
use serde_json::Value;

/// A token: `system|code` (identifiers, codings, codes, booleans…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub param: String,
    pub system: Option<String>,
    pub code: String,
    pub grp: Option<i64>,
}

/// A reference search-parameter value pointing at a resource on this server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReferenceRow {
    pub param: String,
    pub target_type: String,
    pub target_id: String,
    pub grp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringRow {
    pub param: String,
    /// Lower-cased, accents removed.
    pub norm: String,
    pub exact: String,
    pub grp: Option<i64>,
}

/// A date as an inclusive range of milliseconds since the epoch (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateRow {
    pub param: String,
    pub low: i64,
    pub high: i64,
    pub grp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NumberRow {
    pub param: String,
    pub value: f64,
    pub grp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuantityRow {
    pub param: String,
    pub value: f64,
    pub system: Option<String>,
    pub code: Option<String>,
    pub unit: Option<String>,
    /// The value and code in the UCUM base unit (the value and code as given otherwise).
    pub cvalue: Option<f64>,
    pub ccode: Option<String>,
    pub grp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriRow {
    pub param: String,
    pub value: String,
    pub grp: Option<i64>,
}

/// A local resource this resource references anywhere (for referential integrity).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkRow {
    pub target_type: String,
    pub target_id: String,
    /// The version, for a versioned reference (`Patient/1/_history/2`). Versioned references
    /// must resolve but do not keep the resource from being deleted.
    pub version: Option<String>,
    /// FHIRPath of the first Reference element pointing there.
    pub expression: String,
}

/// Index rows written with a version, replacing the resource's previous rows.
#[derive(Debug, Clone, Default)]
pub struct IndexRows {
    pub tokens: Vec<TokenRow>,
    pub references: Vec<ReferenceRow>,
    pub strings: Vec<StringRow>,
    pub dates: Vec<DateRow>,
    pub numbers: Vec<NumberRow>,
    pub quantities: Vec<QuantityRow>,
    pub uris: Vec<UriRow>,
    pub links: Vec<LinkRow>,
}

/// Combinations of component values indexed per composite value, at most.
const MAX_COMBINATIONS: usize = 64;

/// The parameters a resource type is indexed on: its own, DomainResource's and Resource's,
/// except those answered from the resource table (`_id`, `_lastUpdated`) and special ones.
pub fn indexed_params<'a>(
    registry: &'a SearchParameters,
    resource_type: &str,
) -> impl Iterator<Item = &'a SearchParam> {
    let own: Vec<&'a SearchParam> = [resource_type, "DomainResource", "Resource"]
        .iter()
        .flat_map(|t| registry.own(t))
        .map(|p| p.as_ref())
        .collect();
    own.into_iter().filter(|p| {
        p.parsed.is_some()
            && p.kind != ParamType::Special
            && p.code != "_id"
            && p.code != "_lastUpdated"
    })
}

/// Extracts the index rows of a resource; `base` makes absolute references to this server local.
pub fn extract(resource: &Value, base: Option<&str>) -> IndexRows {
    extract_with(resource, base, SearchParameters::r4())
}

/// Extracts the rows of every parameter of `registry` (custom ones included), the identifier
/// tokens conditional interactions need, and the local links.
pub fn extract_with(
    resource: &Value,
    base: Option<&str>,
    registry: &SearchParameters,
) -> IndexRows {
    let mut rows = extract_params(resource, base, registry, |_| true);
    let rt = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !rows.tokens.iter().any(|t| t.param == "identifier") {
        // conditional interactions match on identifier even where it is no search parameter
        identifiers(&mut rows, resource);
    }
    for (expression, reference) in collect(resource, rt) {
        if let Some(l) = parse_local(&reference, base)
            && !rows.links.iter().any(|x| {
                x.target_type == l.resource_type && x.target_id == l.id && x.version == l.version
            })
        {
            rows.links.push(LinkRow {
                target_type: l.resource_type,
                target_id: l.id,
                version: l.version,
                expression,
            });
        }
    }
    rows
}

/// The rows of the parameters `keep` selects, only (reindexing one parameter).
pub fn extract_params(
    resource: &Value,
    base: Option<&str>,
    registry: &SearchParameters,
    keep: impl Fn(&SearchParam) -> bool,
) -> IndexRows {
    let mut rows = IndexRows::default();
    let rt = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let env = Env::new().with_type_info(Definitions::r4());
    for p in indexed_params(registry, rt) {
        if !keep(p) {
            continue;
        }
        let Some(expr) = &p.parsed else { continue };
        let Ok(items) = evaluate(expr, resource, &env) else {
            continue;
        };
        if p.kind == ParamType::Composite {
            composite(&mut rows, p, registry, rt, &items, base, &env);
            continue;
        }
        for item in &items {
            add_value(&mut rows, &p.code, p.kind, item.value(), base, None);
        }
        // a test's value exists always; `:missing` asks whether the tested element does
        if let Some(paths) = super::presence::tested_elements(expr)
            && paths
                .iter()
                .any(|path| evaluate(path, resource, &env).is_ok_and(|v| !v.is_empty()))
        {
            rows.tokens.push(TokenRow {
                param: super::presence::marker(&p.code),
                system: None,
                code: "true".into(),
                grp: None,
            });
        }
    }
    rows
}

/// A composite parameter: each value of the base expression, with every combination of its
/// components' values, stored as `code$i` rows sharing a group number.
fn composite(
    rows: &mut IndexRows,
    p: &SearchParam,
    registry: &SearchParameters,
    rt: &str,
    items: &[Item<'_>],
    base: Option<&str>,
    env: &Env,
) {
    let mut grp = 0i64;
    for item in items {
        let FpValue::Node(node) = item.value() else {
            continue;
        };
        let Some(json) = node.json() else { continue };
        // one IndexRows per component holding that component's alternatives
        let mut alternatives: Vec<Vec<IndexRows>> = Vec::new();
        for (i, c) in p.components.iter().enumerate() {
            let Some(kind) = registry.get(rt, &c.param).map(|d| d.kind) else {
                return;
            };
            let Some(expr) = &c.parsed else { return };
            let Ok(values) = evaluate(expr, json, env) else {
                return;
            };
            let code = format!("{}${i}", p.code);
            let mut alts = Vec::new();
            for v in &values {
                let mut one = IndexRows::default();
                add_value(&mut one, &code, kind, v.value(), base, None);
                // a CodeableConcept gives one alternative per coding
                alts.extend(split_rows(one));
            }
            if alts.is_empty() {
                break;
            }
            alternatives.push(alts);
        }
        if alternatives.len() != p.components.len() {
            continue;
        }
        let mut combos: Vec<Vec<&IndexRows>> = vec![Vec::new()];
        for alts in &alternatives {
            let mut next = Vec::new();
            for combo in &combos {
                for a in alts {
                    if next.len() < MAX_COMBINATIONS {
                        let mut c = combo.clone();
                        c.push(a);
                        next.push(c);
                    }
                }
            }
            combos = next;
        }
        for combo in combos {
            for part in combo {
                append(rows, part.clone(), Some(grp));
            }
            grp += 1;
        }
    }
}

/// Splits rows into one IndexRows per row (the alternatives of a composite component).
fn split_rows(rows: IndexRows) -> Vec<IndexRows> {
    let mut out = Vec::new();
    let one = || IndexRows::default();
    for t in rows.tokens {
        let mut r = one();
        r.tokens.push(t);
        out.push(r);
    }
    for t in rows.references {
        let mut r = one();
        r.references.push(t);
        out.push(r);
    }
    for t in rows
        .strings
        .into_iter()
        .filter(|s| !s.param.ends_with(":text"))
    {
        let mut r = one();
        r.strings.push(t);
        out.push(r);
    }
    for t in rows.dates {
        let mut r = one();
        r.dates.push(t);
        out.push(r);
    }
    for t in rows.numbers {
        let mut r = one();
        r.numbers.push(t);
        out.push(r);
    }
    for t in rows.quantities {
        let mut r = one();
        r.quantities.push(t);
        out.push(r);
    }
    for t in rows.uris {
        let mut r = one();
        r.uris.push(t);
        out.push(r);
    }
    out
}

fn append(rows: &mut IndexRows, part: IndexRows, grp: Option<i64>) {
    rows.tokens
        .extend(part.tokens.into_iter().map(|r| TokenRow { grp, ..r }));
    rows.references.extend(
        part.references
            .into_iter()
            .map(|r| ReferenceRow { grp, ..r }),
    );
    rows.strings
        .extend(part.strings.into_iter().map(|r| StringRow { grp, ..r }));
    rows.dates
        .extend(part.dates.into_iter().map(|r| DateRow { grp, ..r }));
    rows.numbers
        .extend(part.numbers.into_iter().map(|r| NumberRow { grp, ..r }));
    rows.quantities.extend(
        part.quantities
            .into_iter()
            .map(|r| QuantityRow { grp, ..r }),
    );
    rows.uris
        .extend(part.uris.into_iter().map(|r| UriRow { grp, ..r }));
}

/// The FHIR type of a value: the node's known type, else guessed from its JSON shape.
fn type_of<'v>(value: &'v FpValue<'_>) -> (&'v str, Option<&'v Value>) {
    match value {
        FpValue::Node(n) => {
            let json = n.json();
            let ty = n.fhir_type().unwrap_or_else(|| match json {
                Some(Value::Object(o)) if o.contains_key("coding") || o.contains_key("text") => {
                    "CodeableConcept"
                }
                Some(Value::Object(o)) if o.contains_key("reference") => "Reference",
                Some(Value::Object(o)) if o.contains_key("start") || o.contains_key("end") => {
                    "Period"
                }
                Some(Value::Object(o)) if o.contains_key("family") || o.contains_key("given") => {
                    "HumanName"
                }
                Some(Value::Object(o)) if o.contains_key("value") && o.contains_key("unit") => {
                    "Quantity"
                }
                Some(Value::Object(o)) if o.contains_key("code") => "Coding",
                Some(Value::Object(o)) if o.contains_key("value") => "Identifier",
                Some(Value::Bool(_)) => "boolean",
                Some(Value::Number(_)) => "decimal",
                _ => "string",
            });
            (ty, json)
        }
        _ => ("", None),
    }
}

fn s(v: Option<&Value>, key: &str) -> Option<String> {
    v.and_then(|v| v.get(key))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Adds the rows one value of a parameter produces.
fn add_value(
    rows: &mut IndexRows,
    param: &str,
    kind: ParamType,
    value: &FpValue<'_>,
    base: Option<&str>,
    grp: Option<i64>,
) {
    // System values computed by the expression (rare: e.g. `.toString()`)
    let computed = match value {
        FpValue::String(s) => Some(s.to_string()),
        FpValue::Boolean(b) => Some(b.to_string()),
        FpValue::Integer(i) => Some(i.to_string()),
        FpValue::Decimal(d) => Some(d.to_string()),
        _ => None,
    };
    if let Some(text) = computed {
        primitive(rows, param, kind, &text, base, grp);
        return;
    }
    let (ty, json) = type_of(value);
    let Some(json) = json else { return };
    match json {
        Value::String(text) => primitive(rows, param, kind, text, base, grp),
        Value::Bool(b) => primitive(rows, param, kind, &b.to_string(), base, grp),
        Value::Number(n) => primitive(rows, param, kind, &n.to_string(), base, grp),
        Value::Object(_) => complex(rows, param, kind, ty, json, base, grp),
        _ => {}
    }
}

fn primitive(
    rows: &mut IndexRows,
    param: &str,
    kind: ParamType,
    text: &str,
    base: Option<&str>,
    grp: Option<i64>,
) {
    match kind {
        ParamType::String => push_string(rows, param, text, grp),
        ParamType::Token => push_token(rows, param, None, text, grp),
        ParamType::Uri => push_uri(rows, param, text, grp),
        ParamType::Reference => reference(rows, param, text, base, grp),
        ParamType::Date => {
            if let Some((low, high)) = dates::range(text) {
                push(
                    &mut rows.dates,
                    DateRow {
                        param: param.to_string(),
                        low,
                        high,
                        grp,
                    },
                );
            }
        }
        ParamType::Number => {
            if let Ok(value) = text.parse::<f64>() {
                push(
                    &mut rows.numbers,
                    NumberRow {
                        param: param.to_string(),
                        value,
                        grp,
                    },
                );
            }
        }
        ParamType::Quantity => {
            if let Ok(value) = text.parse::<f64>() {
                push_quantity(rows, param, value, None, None, None, grp);
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
}

fn complex(
    rows: &mut IndexRows,
    param: &str,
    kind: ParamType,
    ty: &str,
    json: &Value,
    base: Option<&str>,
    grp: Option<i64>,
) {
    let j = Some(json);
    match (kind, ty) {
        (ParamType::Token, "CodeableConcept") => {
            for coding in json
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                complex(rows, param, kind, "Coding", coding, base, grp);
            }
            if let Some(text) = s(j, "text") {
                push_string(rows, &format!("{param}:text"), &text, grp);
            }
        }
        (ParamType::Token, "Coding") => {
            if let Some(code) = s(j, "code") {
                push_token(rows, param, s(j, "system"), &code, grp);
            }
            if let Some(display) = s(j, "display") {
                push_string(rows, &format!("{param}:text"), &display, grp);
            }
        }
        (ParamType::Token, "Identifier") => {
            if let Some(value) = s(j, "value") {
                push_token(rows, param, s(j, "system"), &value, grp);
            }
            if let Some(text) = json.get("type").and_then(|t| s(Some(t), "text")) {
                push_string(rows, &format!("{param}:text"), &text, grp);
            }
        }
        (ParamType::Token, "ContactPoint") => {
            if let Some(value) = s(j, "value") {
                push_token(rows, param, s(j, "system"), &value, grp);
            }
        }
        (ParamType::Token, _) => {
            if let Some(code) = s(j, "code").or_else(|| s(j, "value")) {
                push_token(rows, param, s(j, "system"), &code, grp);
            }
        }
        (ParamType::Reference, _) => {
            if let Some(r) = s(j, "reference") {
                reference(rows, param, &r, base, grp);
            }
            if let Some(ident) = json.get("identifier")
                && let Some(value) = s(Some(ident), "value")
            {
                push_token(
                    rows,
                    &format!("{param}:identifier"),
                    s(Some(ident), "system"),
                    &value,
                    grp,
                );
            }
        }
        (ParamType::Date, "Period") => {
            let low = s(j, "start")
                .and_then(|t| dates::range(&t))
                .map_or(dates::MIN, |r| r.0);
            let high = s(j, "end")
                .and_then(|t| dates::range(&t))
                .map_or(dates::MAX, |r| r.1);
            if json.get("start").is_some() || json.get("end").is_some() {
                push(
                    &mut rows.dates,
                    DateRow {
                        param: param.to_string(),
                        low,
                        high,
                        grp,
                    },
                );
            }
        }
        (ParamType::Date, "Timing") => {
            let events: Vec<(i64, i64)> = json
                .get("event")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(dates::range)
                .collect();
            if let (Some(low), Some(high)) = (
                events.iter().map(|e| e.0).min(),
                events.iter().map(|e| e.1).max(),
            ) {
                push(
                    &mut rows.dates,
                    DateRow {
                        param: param.to_string(),
                        low,
                        high,
                        grp,
                    },
                );
            }
            if let Some(bounds) = json.get("repeat").and_then(|r| r.get("boundsPeriod")) {
                complex(rows, param, kind, "Period", bounds, base, grp);
            }
        }
        (ParamType::Quantity | ParamType::Number, "Range") => {
            for end in ["low", "high"] {
                if let Some(q) = json.get(end) {
                    complex(rows, param, kind, "Quantity", q, base, grp);
                }
            }
        }
        (ParamType::Quantity | ParamType::Number, _) => {
            let Some(value) = json
                .get("value")
                .and_then(|v| v.to_string().parse::<f64>().ok())
            else {
                return;
            };
            if kind == ParamType::Number {
                push(
                    &mut rows.numbers,
                    NumberRow {
                        param: param.to_string(),
                        value,
                        grp,
                    },
                );
                return;
            }
            // Money carries its currency as the code
            let code = s(j, "code").or_else(|| s(j, "currency"));
            push_quantity(rows, param, value, s(j, "system"), code, s(j, "unit"), grp);
        }
        (ParamType::String, _) => strings_of(rows, param, json, grp, 0),
        (ParamType::Uri, _) => {
            if let Some(u) = s(j, "url").or_else(|| s(j, "reference")) {
                push_uri(rows, param, &u, grp);
            }
        }
        _ => {}
    }
}

/// Every string inside a complex value (HumanName parts, Address lines…), without ids,
/// extensions and codes.
fn strings_of(rows: &mut IndexRows, param: &str, json: &Value, grp: Option<i64>, depth: u8) {
    if depth > 4 {
        return;
    }
    match json {
        Value::String(text) => push_string(rows, param, text, grp),
        Value::Array(a) => a
            .iter()
            .for_each(|v| strings_of(rows, param, v, grp, depth + 1)),
        Value::Object(o) => {
            for (k, v) in o {
                if !matches!(
                    k.as_str(),
                    "id" | "extension" | "use" | "period" | "system" | "code" | "type"
                ) && !k.starts_with('_')
                {
                    strings_of(rows, param, v, grp, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// A reference value: a local resource (reference row), or another server's resource or a
/// canonical URL (uri row).
fn reference(rows: &mut IndexRows, param: &str, text: &str, base: Option<&str>, grp: Option<i64>) {
    if text.starts_with('#') {
        return;
    }
    if let Some(l) = parse_local(text, base) {
        push(
            &mut rows.references,
            ReferenceRow {
                param: param.to_string(),
                target_type: l.resource_type,
                target_id: l.id,
                grp,
            },
        );
    } else if text.contains(':') {
        push_uri(rows, param, text, grp);
    }
}

fn push<T: PartialEq>(list: &mut Vec<T>, row: T) {
    if !list.contains(&row) {
        list.push(row);
    }
}

fn push_string(rows: &mut IndexRows, param: &str, text: &str, grp: Option<i64>) {
    if text.is_empty() {
        return;
    }
    push(
        &mut rows.strings,
        StringRow {
            param: param.to_string(),
            norm: normalize(text),
            exact: text.to_string(),
            grp,
        },
    );
}

fn push_token(
    rows: &mut IndexRows,
    param: &str,
    system: Option<String>,
    code: &str,
    grp: Option<i64>,
) {
    push(
        &mut rows.tokens,
        TokenRow {
            param: param.to_string(),
            system,
            code: code.to_string(),
            grp,
        },
    );
}

fn push_uri(rows: &mut IndexRows, param: &str, value: &str, grp: Option<i64>) {
    push(
        &mut rows.uris,
        UriRow {
            param: param.to_string(),
            value: value.to_string(),
            grp,
        },
    );
}

fn push_quantity(
    rows: &mut IndexRows,
    param: &str,
    value: f64,
    system: Option<String>,
    code: Option<String>,
    unit: Option<String>,
    grp: Option<i64>,
) {
    let canonical = code
        .as_deref()
        .or(unit.as_deref())
        .map(|c| ucum::canonical(value, c));
    push(
        &mut rows.quantities,
        QuantityRow {
            param: param.to_string(),
            value,
            system,
            code,
            unit,
            cvalue: canonical.as_ref().map(|c| c.0),
            ccode: canonical.map(|c| c.1),
            grp,
        },
    );
}

fn identifiers(rows: &mut IndexRows, resource: &Value) {
    let identifiers: Vec<&Value> = match resource.get("identifier") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    for ident in identifiers {
        if let Some(code) = ident.get("value").and_then(Value::as_str) {
            push_token(rows, "identifier", s(Some(ident), "system"), code, None);
        }
    }
}

/// Indexed text longer than this (bytes) is stored as [`index_key`] makes it.
pub const INDEX_KEY_MAX: usize = 1000;
/// The part of a long value kept in front of its hash.
pub const INDEX_KEY_PREFIX: usize = 960;

/// An indexed value as the index stores it: as it is when short; else its first
/// [`INDEX_KEY_PREFIX`] bytes (at a character boundary), `#` and a hash of the whole, so a
/// value of any length fits PostgreSQL's B-tree rows (about 2.7 kB) while equality stays
/// exact and prefix searches of up to [`INDEX_KEY_PREFIX`] bytes still find it. Both stores
/// apply it to the values they write and the values they look for.
pub fn index_key(value: &str) -> std::borrow::Cow<'_, str> {
    use sha2::{Digest, Sha256};
    if value.len() <= INDEX_KEY_MAX {
        return std::borrow::Cow::Borrowed(value);
    }
    let hash = Sha256::digest(value.as_bytes());
    let hex: String = hash.iter().take(16).map(|b| format!("{b:02x}")).collect();
    std::borrow::Cow::Owned(format!("{}#{hex}", index_prefix(value)))
}

/// The first [`INDEX_KEY_PREFIX`] bytes of `value` (at a character boundary), or all of it.
pub fn index_prefix(value: &str) -> &str {
    if value.len() <= INDEX_KEY_PREFIX {
        return value;
    }
    let mut end = INDEX_KEY_PREFIX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_identifiers() {
        let rows = extract(
            &json!({"resourceType": "Patient", "identifier": [
            {"system": "s", "value": "1"}, {"value": "2"}, {"system": "s"}, {"system": "s", "value": "1"}]}),
            None,
        );
        let ids: Vec<&TokenRow> = rows
            .tokens
            .iter()
            .filter(|t| t.param == "identifier")
            .collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[1].system, None);
        let single = extract(
            &json!({"resourceType": "Bundle", "identifier": {"system": "s", "value": "b"}}),
            None,
        );
        assert_eq!(single.tokens.len(), 1);
    }

    #[test]
    fn extracts_references_and_links() {
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "http://h/fhir/Practitioner/d1"}, {"reference": "http://other/Practitioner/x"}],
            "contained": [{"resourceType": "Device", "id": "c"}],
            "device": {"reference": "#c"}});
        let rows = extract(&obs, Some("http://h/fhir"));
        let params: Vec<(&str, &str)> = rows
            .references
            .iter()
            .map(|r| (r.param.as_str(), r.target_id.as_str()))
            .collect();
        assert!(params.contains(&("subject", "p1")));
        assert!(params.contains(&("patient", "p1")));
        assert!(params.contains(&("performer", "d1")));
        assert!(!params.iter().any(|(_, id)| *id == "x" || *id == "c"));
        assert!(
            rows.uris
                .iter()
                .any(|u| u.param == "performer" && u.value == "http://other/Practitioner/x")
        );
        let links: Vec<&str> = rows.links.iter().map(|l| l.target_id.as_str()).collect();
        assert_eq!(links.len(), 2);
        assert!(links.contains(&"p1") && links.contains(&"d1"));
    }

    #[test]
    fn extracts_every_parameter_type() {
        let obs = json!({"resourceType": "Observation", "status": "final",
            "meta": {"tag": [{"system": "t", "code": "x"}], "profile": ["http://p/1"]},
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic"}], "text": "Blood Préssure"},
            "subject": {"reference": "Patient/p1", "display": "Ann"},
            "effectivePeriod": {"start": "2020-01-01", "end": "2020-01-02T10:00:00Z"},
            "valueQuantity": {"value": 120.5, "system": "http://unitsofmeasure.org", "code": "mg"},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                           "valueQuantity": {"value": 80, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]});
        let rows = extract(&obs, None);
        let has_token = |p: &str, c: &str| rows.tokens.iter().any(|t| t.param == p && t.code == c);
        assert!(has_token("code", "8480-6"));
        assert!(has_token("status", "final"));
        assert!(has_token("_tag", "x"));
        assert!(
            rows.uris
                .iter()
                .any(|u| u.param == "_profile" && u.value == "http://p/1")
        );
        assert!(
            rows.strings
                .iter()
                .any(|s| s.param == "code:text" && s.norm == "blood pressure")
        );
        let date = rows.dates.iter().find(|d| d.param == "date").unwrap();
        assert_eq!(date.low, dates::range("2020-01-01").unwrap().0);
        assert_eq!(date.high, dates::range("2020-01-02T10:00:00Z").unwrap().1);
        let q = rows
            .quantities
            .iter()
            .find(|q| q.param == "value-quantity")
            .unwrap();
        assert_eq!(q.value, 120.5);
        assert_eq!(q.ccode.as_deref(), Some("g"));
        assert!((q.cvalue.unwrap() - 0.1205).abs() < 1e-12);
        // composite: component-code-value-quantity pairs 8462-4 with 80 in one group
        let c0 = rows
            .tokens
            .iter()
            .find(|t| t.param == "component-code-value-quantity$0")
            .unwrap();
        let c1 = rows
            .quantities
            .iter()
            .find(|q| q.param == "component-code-value-quantity$1")
            .unwrap();
        assert_eq!(c0.code, "8462-4");
        assert_eq!(c1.value, 80.0);
        assert_eq!(c0.grp, c1.grp);
        assert!(c0.grp.is_some());
    }

    #[test]
    fn long_index_values_keep_a_prefix_and_a_hash() {
        assert_eq!(index_key("short"), "short");
        let long = "é".repeat(1500);
        let key = index_key(&long);
        assert!(key.len() < INDEX_KEY_MAX + 40, "{}", key.len());
        assert!(key.starts_with(index_prefix(&long)));
        assert!(long.starts_with(index_prefix(&long)));
        let other = format!("{}x", "é".repeat(1499));
        assert_ne!(index_key(&other), key, "equal prefixes, different values");
    }

    #[test]
    fn extracts_strings_from_names() {
        let p = json!({"resourceType": "Patient", "name": [{"family": "Müller", "given": ["Zoë", "Ann"]}],
            "birthDate": "1970-03", "gender": "female", "active": true});
        let rows = extract(&p, None);
        let names: Vec<&str> = rows
            .strings
            .iter()
            .filter(|s| s.param == "name")
            .map(|s| s.norm.as_str())
            .collect();
        assert_eq!(names, ["muller", "zoe", "ann"]);
        assert!(
            rows.tokens
                .iter()
                .any(|t| t.param == "active" && t.code == "true")
        );
        let b = rows.dates.iter().find(|d| d.param == "birthdate").unwrap();
        assert_eq!(
            (b.low, b.high),
            (
                dates::range("1970-03-01").unwrap().0,
                dates::range("1970-03-31").unwrap().1
            )
        );
    }
}
