//! The credit extension's published artifacts (fhir-profiles/healporium/, compiled in):
//! StructureDefinitions of its extensions and profiles, CodeSystems and ValueSets, and custom
//! SearchParameters — served read-only by the server, listed in the CapabilityStatement, and
//! the rules a resource claiming one of the profiles is checked against.

use crate::fhir::definitions::Profiles;
use crate::fhir::money::Money;
use serde_json::Value;

/// The artifacts compiled in, by resource type and id, with the default canonical base.
pub fn embedded() -> Vec<Value> {
    let mut out: Vec<Value> = Profiles::iter()
        .filter(|name| name.starts_with("healporium/"))
        .filter_map(|name| Profiles::get(&name))
        .filter_map(|f| serde_json::from_slice(&f.data).ok())
        .collect();
    out.sort_by_key(key);
    out
}

/// The sort key of an artifact: (resource type, id).
pub fn key(v: &Value) -> (Option<String>, Option<String>) {
    (
        v.get("resourceType")
            .and_then(Value::as_str)
            .map(str::to_string),
        v.get("id").and_then(Value::as_str).map(str::to_string),
    )
}

/// The artifact `resource_type/id` among `all`.
pub fn find<'a>(all: &'a [Value], resource_type: &str, id: &str) -> Option<&'a Value> {
    all.iter().find(|v| {
        v.get("resourceType").and_then(Value::as_str) == Some(resource_type)
            && v.get("id").and_then(Value::as_str) == Some(id)
    })
}

/// The codes of one of the CodeSystems among `all`.
fn codes<'a>(all: &'a [Value], id: &str) -> Vec<&'a str> {
    find(all, "CodeSystem", id)
        .and_then(|cs| cs.get("concept"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .collect()
}

/// Why `resource` does not conform to the profiles of ours it claims (`meta.profile`): each
/// problem with the FHIRPath of the element. Empty: it conforms, or claims none of ours.
pub fn check(all: &[Value], resource: &Value) -> Vec<(String, String)> {
    let rt = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let claimed: Vec<&str> = resource
        .pointer("/meta/profile")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut problems = Vec::new();
    for profile in all.iter().filter(|v| {
        v.get("kind").and_then(Value::as_str) == Some("resource")
            && v.get("url")
                .and_then(Value::as_str)
                .is_some_and(|u| claimed.contains(&u))
    }) {
        let Some(ext_url) = profile
            .pointer("/differential/element/1/type/0/profile/0")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let Some(ext_def) = all
            .iter()
            .find(|v| v.get("url").and_then(Value::as_str) == Some(ext_url))
        else {
            continue;
        };
        let name = ext_def.get("id").and_then(Value::as_str).unwrap_or("");
        let at = format!("{rt}.extension('{ext_url}')");
        let found: Vec<&Value> = resource
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e.get("url").and_then(Value::as_str) == Some(ext_url))
            .collect();
        let [ext] = found.as_slice() else {
            problems.push((
                at,
                format!("The profile needs exactly one {name} extension"),
            ));
            continue;
        };
        // every sub-extension with its type and cardinality
        let elements = ext_def
            .pointer("/differential/element")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for slice in elements.iter().filter(|e| e.get("sliceName").is_some()) {
            let part = slice.get("sliceName").and_then(Value::as_str).unwrap_or("");
            let min = slice.get("min").and_then(Value::as_u64).unwrap_or(0);
            let ty = elements
                .iter()
                .find(|e| {
                    e.get("id").and_then(Value::as_str)
                        == Some(format!("Extension.extension:{part}.value[x]").as_str())
                })
                .and_then(|e| e.pointer("/type/0/code"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let key = format!(
                "value{}{}",
                ty.get(..1).unwrap_or("").to_uppercase(),
                ty.get(1..).unwrap_or("")
            );
            let values: Vec<&Value> = ext
                .get("extension")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|e| e.get("url").and_then(Value::as_str) == Some(part))
                .collect();
            let here = format!("{at}.extension('{part}')");
            if (values.len() as u64) < min {
                problems.push((here.clone(), format!("{name} needs {part}")));
            }
            if values.len() > 1 {
                problems.push((here.clone(), format!("{name} has {part} more than once")));
            }
            for v in values {
                match v.get(&key) {
                    None => problems.push((here.clone(), format!("{part} must be a {ty}"))),
                    Some(m) if ty == "Money" => {
                        if let Err(e) = Money::parse(m) {
                            problems.push((format!("{here}.{key}"), e.to_string()));
                        }
                    }
                    Some(Value::String(c)) if part == "standing" => {
                        if !codes(all, "credit-standing").contains(&c.as_str()) {
                            problems.push((
                                format!("{here}.{key}"),
                                format!("'{c}' is not a credit standing"),
                            ));
                        }
                    }
                    Some(Value::String(c)) if part == "status" && name == "installment-status" => {
                        if !codes(all, "installment-status").contains(&c.as_str()) {
                            problems.push((
                                format!("{here}.{key}"),
                                format!("'{c}' is not an installment status"),
                            ));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_artifact_parses_and_its_url_ends_with_its_id() {
        let all = embedded();
        assert_eq!(all.len(), 25);
        assert!(find(&all, "StructureDefinition", "credit-line").is_some());
        for a in &all {
            let url = a.get("url").and_then(Value::as_str).unwrap();
            let id = a.get("id").and_then(Value::as_str).unwrap();
            assert!(url.ends_with(id), "{url}");
        }
    }
}
