//! The mapping set: every file under mappings/ (compiled into the binary, or an operator's
//! directory in its place), each checked against the JSON Schema of its `kind`
//! (mappings/schemas/) and then for meaning (a grammar that reads, a file named after its
//! structure, a trigger claimed once). A bad map stops the start with one line naming the
//! file and the field.

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
const KINDS: &[&str] = &["MappingSet", "MessageStructure"];

/// The loaded, checked mapping set.
#[derive(Debug, Clone)]
pub struct MappingSet {
    pub name: String,
    pub version: String,
    structures: BTreeMap<String, Structure>,
    /// `ADT^A04` → `ADT_A01`
    by_trigger: HashMap<String, String>,
}

impl MappingSet {
    /// The mapping set compiled into the binary (mappings/ at build time).
    pub fn embedded() -> Result<MappingSet, MappingError> {
        let files = Embedded::iter()
            .filter_map(|p| Embedded::get(&p).map(|f| (p.to_string(), f.data.into_owned())))
            .collect();
        MappingSet::from_files(files)
    }

    /// A mapping set from a directory laid out like mappings/ (an operator's own maps).
    pub fn from_dir(dir: &Path) -> Result<MappingSet, MappingError> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                if path.is_dir() {
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
                _ => {}
            }
        }
        let (name, version) =
            set.ok_or_else(|| err("mapping-set.json", "", "the MappingSet file is missing"))?;
        Ok(MappingSet {
            name,
            version,
            structures,
            by_trigger,
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

    /// Every structure, by name.
    pub fn structures(&self) -> impl Iterator<Item = &Structure> {
        self.structures.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded_files() -> Vec<(String, Vec<u8>)> {
        Embedded::iter()
            .filter_map(|p| Embedded::get(&p).map(|f| (p.to_string(), f.data.into_owned())))
            .collect()
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
