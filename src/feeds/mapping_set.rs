//! The mapping set: every file under mappings/ (compiled into the binary, or an operator's
//! directory in its place), each checked against the JSON Schema of its `kind`
//! (mappings/schemas/) and then for meaning (a grammar that reads, a file named after its
//! structure, a trigger claimed once). A bad map stops the start with one line naming the
//! file and the field.

use super::maps::{
    ChannelMap, CsvMap, DatatypeMap, IdentitySystems, MessageMap, SegmentMap, VocabMap,
};
use crate::hl7v2::er7::Message;
use crate::hl7v2::grammar::Structure;
use rust_embed::Embed;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

#[derive(Embed)]
#[folder = "mappings/"]
#[include = "*.json"]
#[exclude = "hl7v2/golden/*"]
struct Embedded;

/// A map that cannot be used: the file (relative to mappings/), the field (a JSON pointer)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() {
            "/"
        } else {
            &self.field
        };
        write!(f, "mappings/{}: {field}: {}", self.file, self.message)
    }
}

impl std::error::Error for MappingError {}

fn err(file: &str, field: &str, message: impl Into<String>) -> MappingError {
    MappingError {
        file: file.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// The kinds a file may have, each with its schema file.
const KINDS: &[&str] = &[
    "MappingSet",
    "MessageStructure",
    "MessageMap",
    "SegmentMap",
    "DatatypeMap",
    "VocabMap",
    "IdentitySystems",
    "Channel",
    "CsvMap",
];

/// The loaded, checked mapping set.
#[derive(Debug, Clone)]
pub struct MappingSet {
    pub name: String,
    pub version: String,
    structures: BTreeMap<String, Structure>,
    /// `ADT^A04` → `ADT_A01`
    by_trigger: HashMap<String, String>,
    message_maps: BTreeMap<String, MessageMap>,
    /// `ADT^A04` → the message map's name
    map_by_trigger: HashMap<String, String>,
    segment_maps: BTreeMap<String, SegmentMap>,
    datatypes: BTreeMap<String, DatatypeMap>,
    vocabs: BTreeMap<String, VocabMap>,
    /// assigning authority → identifier system
    authorities: BTreeMap<String, String>,
    /// The system of namespaces no file names, `{namespace}` replaced.
    namespace_template: Option<String>,
    channels: Vec<ChannelMap>,
    csv_maps: BTreeMap<String, CsvMap>,
}

impl MappingSet {
    /// The mapping set compiled into the binary (mappings/ at build time).
    pub fn embedded() -> Result<MappingSet, MappingError> {
        MappingSet::from_files(MappingSet::embedded_files())
    }

    /// The files of the embedded set, as (path under mappings/, bytes).
    pub fn embedded_files() -> Vec<(String, Vec<u8>)> {
        Embedded::iter()
            .filter_map(|p| Embedded::get(&p).map(|f| (p.to_string(), f.data.into_owned())))
            .collect()
    }

    /// The embedded set, loaded and checked once per process.
    pub fn shared() -> Result<std::sync::Arc<MappingSet>, MappingError> {
        static SET: std::sync::OnceLock<Result<std::sync::Arc<MappingSet>, MappingError>> =
            std::sync::OnceLock::new();
        SET.get_or_init(|| MappingSet::embedded().map(std::sync::Arc::new))
            .clone()
    }

    /// A mapping set from a directory laid out like mappings/ (an operator's own maps).
    pub fn from_dir(dir: &Path) -> Result<MappingSet, MappingError> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    // golden cases are test data beside the maps, not maps
                    if path.file_name().is_some_and(|n| n == "golden") {
                        continue;
                    }
                    walk(root, &path, out)?;
                } else if path.extension().is_some_and(|e| e == "json") {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .replace('\\', "/");
                    out.push((rel, std::fs::read(&path)?));
                }
            }
            Ok(())
        }
        let mut files = Vec::new();
        walk(dir, dir, &mut files)
            .map_err(|e| err(&dir.display().to_string(), "", e.to_string()))?;
        MappingSet::from_files(files)
    }

    /// Checks and loads `(path under mappings/, bytes)` pairs.
    pub fn from_files(mut files: Vec<(String, Vec<u8>)>) -> Result<MappingSet, MappingError> {
        files.sort();
        let schemas: HashMap<&str, jsonschema::Validator> = KINDS
            .iter()
            .map(|kind| {
                let name = format!("schemas/{kind}.schema.json");
                let text = files
                    .iter()
                    .find(|(p, _)| *p == name)
                    .map(|(_, b)| b.clone())
                    .ok_or_else(|| err(&name, "", "the schema of this kind is missing"))?;
                let schema: Value = serde_json::from_slice(&text)
                    .map_err(|e| err(&name, "", format!("not JSON: {e}")))?;
                let v = jsonschema::validator_for(&schema)
                    .map_err(|e| err(&name, "", format!("not a usable JSON Schema: {e}")))?;
                Ok((*kind, v))
            })
            .collect::<Result<_, MappingError>>()?;
        let mut set: Option<(String, String)> = None;
        let mut structures = BTreeMap::new();
        let mut by_trigger: HashMap<String, String> = HashMap::new();
        let mut message_maps = BTreeMap::new();
        let mut segment_maps = BTreeMap::new();
        let mut datatypes = BTreeMap::new();
        let mut vocabs = BTreeMap::new();
        let mut authorities = BTreeMap::new();
        let mut namespace_template: Option<String> = None;
        let mut channels: Vec<(ChannelMap, String)> = Vec::new();
        let mut csv_pending: Vec<(CsvMap, String)> = Vec::new();
        // where each map was defined, to name the file in cross-reference errors
        let mut origin: HashMap<String, String> = HashMap::new();
        for (path, bytes) in &files {
            if path.starts_with("schemas/") {
                continue;
            }
            let doc: Value = serde_json::from_slice(bytes)
                .map_err(|e| err(path, "", format!("not JSON: {e}")))?;
            let kind = doc.get("kind").and_then(Value::as_str).ok_or_else(|| {
                err(
                    path,
                    "/kind",
                    format!("a map names its kind (one of {})", KINDS.join(", ")),
                )
            })?;
            let schema = schemas.get(kind).ok_or_else(|| {
                err(
                    path,
                    "/kind",
                    format!("unknown kind '{kind}' (one of {})", KINDS.join(", ")),
                )
            })?;
            if let Some(e) = schema.iter_errors(&doc).next() {
                return Err(err(path, e.instance_path().as_str(), e.to_string()));
            }
            let text = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            match kind {
                "MappingSet" => {
                    if set.is_some() {
                        return Err(err(path, "/kind", "a second MappingSet file"));
                    }
                    set = Some((text("name"), text("version")));
                }
                "MessageStructure" => {
                    let name = text("name");
                    let stem = path
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .trim_end_matches(".json");
                    if stem != name {
                        return Err(err(
                            path,
                            "/name",
                            format!("the file of structure {name} is named {name}.json"),
                        ));
                    }
                    let st = Structure::parse(&name, &text("grammar"))
                        .map_err(|e| err(path, "/grammar", e.to_string()))?;
                    for (i, t) in doc
                        .get("triggers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .enumerate()
                    {
                        if let Some(other) = by_trigger.insert(t.to_string(), name.clone()) {
                            return Err(err(
                                path,
                                &format!("/triggers/{i}"),
                                format!("{t} is already the trigger of {other}"),
                            ));
                        }
                    }
                    structures.insert(name, st);
                }
                "MessageMap" => {
                    let m: MessageMap = typed(path, &doc)?;
                    origin.insert(format!("message:{}", m.name), path.clone());
                    if let Some(prev) = message_maps.insert(m.name.clone(), m) {
                        return Err(err(
                            path,
                            "/name",
                            format!("a second message map {}", prev.name),
                        ));
                    }
                }
                "SegmentMap" => {
                    let m: SegmentMap = typed(path, &doc)?;
                    origin.insert(format!("segment:{}", m.name), path.clone());
                    if let Some(prev) = segment_maps.insert(m.name.clone(), m) {
                        return Err(err(
                            path,
                            "/name",
                            format!("a second segment map {}", prev.name),
                        ));
                    }
                }
                "DatatypeMap" => {
                    let m: DatatypeMap = typed(path, &doc)?;
                    origin.insert(format!("datatype:{}", m.name), path.clone());
                    if let Some(prev) = datatypes.insert(m.name.clone(), m) {
                        return Err(err(
                            path,
                            "/name",
                            format!("a second datatype map {}", prev.name),
                        ));
                    }
                }
                "CsvMap" => {
                    let m: CsvMap = typed(path, &doc)?;
                    let named: Vec<&str> = m
                        .columns
                        .iter()
                        .filter_map(|c| c.column.as_deref())
                        .collect();
                    for (i, k) in m.key.iter().chain(&m.identity.uuid).enumerate() {
                        if !named.contains(&k.as_str()) {
                            return Err(err(
                                path,
                                &format!("/key/{i}"),
                                format!("{k} is not a column of this map"),
                            ));
                        }
                    }
                    if m.request.is_none() && !m.identity.identifier && m.identity.uuid.is_empty() {
                        return Err(err(
                            path,
                            "/identity",
                            "a row is identified by identifier or by a uuid tuple",
                        ));
                    }
                    csv_pending.push((m, path.to_string()));
                }
                "Channel" => {
                    let c: ChannelMap = typed(path, &doc)?;
                    if let Some(b) = &c.bind
                        && b.parse::<std::net::SocketAddr>().is_err()
                    {
                        return Err(err(
                            path,
                            "/bind",
                            format!("'{b}' is not an address such as 0.0.0.0:2575"),
                        ));
                    }
                    if channels
                        .iter()
                        .any(|(o, _): &(ChannelMap, String)| o.name == c.name)
                    {
                        return Err(err(path, "/name", format!("a second channel {}", c.name)));
                    }
                    channels.push((c, path.to_string()));
                }
                "VocabMap" => {
                    let m: VocabMap = typed(path, &doc)?;
                    if let Some(prev) = vocabs.insert(m.name.clone(), m) {
                        return Err(err(
                            path,
                            "/name",
                            format!("a second vocabulary {}", prev.name),
                        ));
                    }
                }
                "IdentitySystems" => {
                    let m: IdentitySystems = typed(path, &doc)?;
                    if let Some(t) = m.namespace_template
                        && namespace_template.replace(t).is_some()
                    {
                        return Err(err(
                            path,
                            "/namespace_template",
                            "a second namespace template in the mapping set",
                        ));
                    }
                    for (k, v) in m.systems {
                        if authorities.insert(k.clone(), v).is_some() {
                            return Err(err(
                                path,
                                &format!("/systems/{k}"),
                                "an assigning authority named twice",
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        // cross-references: every name a map uses exists
        let rows_ok =
            |file: &str, base: &str, rows: &[super::maps::Row]| -> Result<(), MappingError> {
                for (i, r) in rows.iter().enumerate() {
                    if let Some(d) = &r.datatype
                        && !datatypes.contains_key(d)
                    {
                        return Err(err(
                            file,
                            &format!("{base}/{i}/datatype"),
                            format!("no datatype map {d}"),
                        ));
                    }
                    if let Some(v) = &r.vocab
                        && !vocabs.contains_key(v)
                    {
                        return Err(err(
                            file,
                            &format!("{base}/{i}/vocab"),
                            format!("no vocabulary {v}"),
                        ));
                    }
                }
                Ok(())
            };
        for m in datatypes.values() {
            let file = origin
                .get(&format!("datatype:{}", m.name))
                .cloned()
                .unwrap_or_default();
            rows_ok(&file, "/rows", &m.rows)?;
        }
        for m in segment_maps.values() {
            let file = origin
                .get(&format!("segment:{}", m.name))
                .cloned()
                .unwrap_or_default();
            rows_ok(&file, "/rows", &m.rows)?;
        }
        let mut map_by_trigger = HashMap::new();
        for m in message_maps.values() {
            let file = origin
                .get(&format!("message:{}", m.name))
                .cloned()
                .unwrap_or_default();
            if !structures.contains_key(&m.structure) {
                return Err(err(
                    &file,
                    "/structure",
                    format!("no structure {}", m.structure),
                ));
            }
            let keys: Vec<&str> = m.produce.iter().map(|p| p.key.as_str()).collect();
            for (i, p) in m.produce.iter().enumerate() {
                if !segment_maps.contains_key(&p.map) {
                    return Err(err(
                        &file,
                        &format!("/produce/{i}/map"),
                        format!("no segment map {}", p.map),
                    ));
                }
                for (el, k) in &p.references {
                    if !keys.contains(&k.as_str()) {
                        return Err(err(
                            &file,
                            &format!("/produce/{i}/references/{el}"),
                            format!("no resource with key {k}"),
                        ));
                    }
                }
                for t in &p.identity.uuid {
                    if let Some(k) = t.strip_prefix('@')
                        && !keys.get(..i).unwrap_or_default().contains(&k)
                    {
                        return Err(err(
                            &file,
                            &format!("/produce/{i}/identity/uuid"),
                            format!("@{k} is not a resource produced before this one"),
                        ));
                    }
                }
                if let Some(k) = &p.into
                    && !keys.get(..i).unwrap_or_default().contains(&k.as_str())
                {
                    return Err(err(
                        &file,
                        &format!("/produce/{i}/into"),
                        format!("{k} is not a resource produced before this one"),
                    ));
                }
                if p.into.is_none()
                    && p.refuse.is_none()
                    && p.command.is_none()
                    && !p.identity.identifier
                    && p.identity.identifier_from.is_none()
                    && p.identity.uuid.is_empty()
                {
                    return Err(err(
                        &file,
                        &format!("/produce/{i}/identity"),
                        "a resource is identified by identifier or by a uuid tuple",
                    ));
                }
            }
            for (i, t) in m.triggers.iter().enumerate() {
                if let Some(other) = map_by_trigger.insert(t.clone(), m.name.clone()) {
                    return Err(err(
                        &file,
                        &format!("/triggers/{i}"),
                        format!("{t} is already mapped by {other}"),
                    ));
                }
            }
        }
        for (c, file) in &channels {
            for (i, t) in c.accept.iter().flatten().enumerate() {
                if !map_by_trigger.contains_key(t) {
                    return Err(err(
                        file,
                        &format!("/accept/{i}"),
                        format!("{t} is not a message type this set maps"),
                    ));
                }
            }
        }
        let channels = channels.into_iter().map(|(c, _)| c).collect();
        let mut csv_maps = BTreeMap::new();
        for (m, file) in csv_pending {
            for (i, c) in m.columns.iter().enumerate() {
                if let Some(v) = &c.vocab
                    && !vocabs.contains_key(v)
                {
                    return Err(err(
                        &file,
                        &format!("/columns/{i}/vocab"),
                        format!("no vocabulary {v}"),
                    ));
                }
            }
            let name = m.name.clone();
            if csv_maps.insert(name.clone(), m).is_some() {
                return Err(err(&file, "/name", format!("a second CSV map {name}")));
            }
        }
        let (name, version) =
            set.ok_or_else(|| err("mapping-set.json", "", "the MappingSet file is missing"))?;
        Ok(MappingSet {
            name,
            version,
            structures,
            by_trigger,
            message_maps,
            map_by_trigger,
            segment_maps,
            datatypes,
            vocabs,
            authorities,
            namespace_template,
            channels,
            csv_maps,
        })
    }

    /// The structure a message is read with: its trigger's (`ADT^A04` → `ADT_A01`), else
    /// the one MSH-9.3 names; None when the set has neither (an AR).
    pub fn structure_for(&self, message: &Message) -> Option<&Structure> {
        let (code, trigger, structure) = message.message_type();
        let key = if trigger.is_empty() {
            code
        } else {
            format!("{code}^{trigger}")
        };
        self.by_trigger
            .get(&key)
            .and_then(|s| self.structures.get(s))
            .or_else(|| self.structures.get(&structure))
    }

    pub fn structure(&self, name: &str) -> Option<&Structure> {
        self.structures.get(name)
    }

    /// The message map of a trigger (`ADT^A04`).
    pub fn message_map(&self, trigger: &str) -> Option<&MessageMap> {
        self.map_by_trigger
            .get(trigger)
            .and_then(|n| self.message_maps.get(n))
    }

    pub fn segment_map(&self, name: &str) -> Option<&SegmentMap> {
        self.segment_maps.get(name)
    }

    pub fn datatype(&self, name: &str) -> Option<&DatatypeMap> {
        self.datatypes.get(name)
    }

    pub fn vocab(&self, name: &str) -> Option<&VocabMap> {
        self.vocabs.get(name)
    }

    /// The identifier system of an assigning authority (CX.4.1 or its universal id).
    pub fn identity_system(&self, authority: &str) -> Option<&str> {
        self.authorities.get(authority).map(String::as_str)
    }

    /// A CSV map by name.
    pub fn csv_map(&self, name: &str) -> Option<&CsvMap> {
        self.csv_maps.get(name)
    }

    /// The names of the CSV maps.
    pub fn csv_maps(&self) -> impl Iterator<Item = &str> {
        self.csv_maps.keys().map(String::as_str)
    }

    /// The channels of the set (`default` is what `serve --mllp` starts).
    pub fn channels(&self) -> &[ChannelMap] {
        &self.channels
    }

    /// The system the namespace template gives a namespace (letters, digits, `._-` only).
    pub fn templated_system(&self, namespace: &str) -> Option<String> {
        let t = self.namespace_template.as_deref()?;
        let plain = !namespace.is_empty()
            && namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        plain.then(|| t.replace("{namespace}", namespace))
    }

    /// The triggers this set maps.
    pub fn mapped_triggers(&self) -> impl Iterator<Item = &str> {
        self.map_by_trigger.keys().map(String::as_str)
    }

    /// Every structure, by name.
    pub fn structures(&self) -> impl Iterator<Item = &Structure> {
        self.structures.values()
    }
}

/// A map document as its typed form (the schema has passed, so this names only what the
/// schema cannot say).
fn typed<T: serde::de::DeserializeOwned>(path: &str, doc: &Value) -> Result<T, MappingError> {
    serde_json::from_value(doc.clone()).map_err(|e| err(path, "", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded_files() -> Vec<(String, Vec<u8>)> {
        MappingSet::embedded_files()
    }

    #[test]
    fn channels_are_checked_against_the_set() {
        let c = |body: &str| {
            with(
                "channels/x.json",
                &format!("{{\"kind\": \"Channel\", \"name\": \"x\", {body}}}"),
            )
        };
        assert_eq!(c("\"accept\": [\"ORU^R01\"]").unwrap().channels().len(), 2);
        let e = c("\"accept\": [\"ZZZ^Z01\"]").unwrap_err().to_string();
        assert!(e.contains("channels/x.json: /accept/0"), "{e}");
        let e = c("\"bind\": \"nowhere:99999\"").unwrap_err().to_string();
        assert!(e.contains("/bind"), "{e}");
        let e = c("\"ack\": \"sometimes\"").unwrap_err().to_string();
        assert!(e.contains("channels/x.json"), "{e}");
    }

    #[test]
    fn a_namespace_template_names_plain_namespaces_once() {
        let t = r#"{"kind": "IdentitySystems", "name": "t", "namespace_template": "https://x.example/id/{namespace}"}"#;
        let set = with("identity/t.json", t).unwrap();
        assert_eq!(
            set.templated_system("GOOD_HOSP-1"),
            Some("https://x.example/id/GOOD_HOSP-1".to_string())
        );
        assert_eq!(set.templated_system("two words"), None);
        assert_eq!(set.templated_system(""), None);
        assert_eq!(MappingSet::embedded().unwrap().templated_system("X"), None);
        let mut files = embedded_files();
        files.push(("identity/t.json".into(), t.as_bytes().to_vec()));
        files.push((
            "identity/u.json".into(),
            t.replace("\"t\"", "\"u\"").into_bytes(),
        ));
        let e = MappingSet::from_files(files).unwrap_err().to_string();
        assert!(e.contains("/namespace_template"), "{e}");
    }

    fn with(path: &str, text: &str) -> Result<MappingSet, MappingError> {
        let mut files: Vec<_> = embedded_files()
            .into_iter()
            .filter(|(p, _)| p != path)
            .collect();
        files.push((path.to_string(), text.as_bytes().to_vec()));
        MappingSet::from_files(files)
    }

    #[test]
    fn the_shipped_set_loads() {
        let set = MappingSet::embedded().unwrap();
        assert_eq!(set.name, "healporium-default");
        assert!(set.structures().count() >= 17);
        let m = crate::hl7v2::er7::parse("MSH|^~\\&|A|B|C|D|x||ADT^A04^ADT_A04|1|P|2.8\r").unwrap();
        assert_eq!(
            set.structure_for(&m).map(|s| s.name.as_str()),
            Some("ADT_A01")
        );
        let m = crate::hl7v2::er7::parse("MSH|^~\\&|A|B|C|D|x||ZZZ^Z01|1|P|2.8\r").unwrap();
        assert!(set.structure_for(&m).is_none());
    }

    #[test]
    fn a_bad_map_is_one_line_naming_file_and_field() {
        let p = "hl7v2/structures/ADT_A02.json";
        let e = with(p, "{\"kind\": \"MessageStructure\", \"name\": \"ADT_A02\", \"version\": \"2.8\", \"triggers\": [\"ADT^A02\"], \"grammar\": \"MSH [PID\"}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "mappings/hl7v2/structures/ADT_A02.json: /grammar: missing ']'"
        );
        let e = with(p, "{\"kind\": \"MessageStructure\", \"name\": \"ADT_A02\", \"version\": \"2.8\", \"triggers\": [\"nope\"], \"grammar\": \"MSH PID\"}").unwrap_err();
        assert_eq!((e.file.as_str(), e.field.as_str()), (p, "/triggers/0"));
        let e = with(p, "{\"kind\": \"MessageStructure\", \"name\": \"ADT_A02\", \"version\": \"2.8\", \"triggers\": [\"ADT^A01\"], \"grammar\": \"MSH PID\"}").unwrap_err();
        assert!(
            e.to_string().contains("already the trigger of ADT_A01"),
            "{e}"
        );
        let e = with(p, "{\"kind\": \"Nope\"}").unwrap_err();
        assert_eq!(e.field, "/kind");
        let e = with(p, "{\"kind\": \"MessageStructure\", \"name\": \"ADT_A03\", \"version\": \"2.8\", \"triggers\": [\"ADT^A02\"], \"grammar\": \"MSH PID\"}").unwrap_err();
        assert_eq!(e.field, "/name");
        let e = with(p, "not json").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("mappings/hl7v2/structures/ADT_A02.json: /: not JSON"),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'));
    }
}
