//! References inside a resource: finding every `Reference.reference` (in extensions and
//! contained resources too), rewriting them (transaction `urn:uuid` ids), and telling local
//! references (`Patient/123`, or an absolute URL under this server's base) from the rest.

use crate::fhir::definitions::Definitions;
use crate::fhir::types::is_valid_id;
use serde_json::Value;

/// A literal reference to a resource on this server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalRef {
    pub resource_type: String,
    pub id: String,
    pub version: Option<String>,
}

impl LocalRef {
    /// `Type/id` (without a version).
    pub fn key(&self) -> String {
        format!("{}/{}", self.resource_type, self.id)
    }
}

/// Parses a reference if it points at a resource on this server: `Type/id`,
/// `Type/id/_history/v`, or the same under `base` (`http://host/fhir/Type/id`). Contained
/// (`#x`), `urn:` and other servers' absolute references are not local.
pub fn parse_local(reference: &str, base: Option<&str>) -> Option<LocalRef> {
    let rel = if reference.contains("://") {
        let base = base?.trim_end_matches('/');
        reference.strip_prefix(base)?.strip_prefix('/')?
    } else {
        reference
    };
    let mut parts = rel.split('/');
    let resource_type = parts.next()?;
    let id = parts.next()?;
    let version = match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => None,
        (Some("_history"), Some(v), None) if !v.is_empty() => Some(v.to_string()),
        _ => return None,
    };
    if Definitions::r4().resource_type(resource_type).is_none() || !is_valid_id(id) {
        return None;
    }
    Some(LocalRef {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        version,
    })
}

/// Whether a reference is conditional (`Patient?identifier=…`), to be resolved by search.
pub fn conditional_parts(reference: &str) -> Option<(&str, &str)> {
    let (t, q) = reference.split_once('?')?;
    (!t.contains('/') && Definitions::r4().resource_type(t).is_some()).then_some((t, q))
}

/// Calls `f(expression, reference)` for every `Reference.reference` string in `resource`
/// (whose FHIRPath is `expr`, e.g. `Observation`), including extensions and contained
/// resources; `f` may change the string.
pub fn for_each_reference_mut(
    resource: &mut Value,
    expr: &str,
    f: &mut dyn FnMut(&str, &mut String),
) {
    let defs = Definitions::r4();
    let Some(rt) = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return;
    };
    walk(defs, resource, &rt, expr, f, 0);
}

/// Every `Reference.reference` with the FHIRPath of the Reference element.
pub fn collect(resource: &Value, expr: &str) -> Vec<(String, String)> {
    let mut copy = resource.clone();
    let mut out = Vec::new();
    for_each_reference_mut(&mut copy, expr, &mut |path, r| {
        out.push((path.to_string(), r.clone()));
    });
    out
}

const MAX_DEPTH: usize = 64;

fn walk(
    defs: &Definitions,
    node: &mut Value,
    context: &str,
    expr: &str,
    f: &mut dyn FnMut(&str, &mut String),
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    if context == "Reference"
        && let Some(Value::String(r)) = obj.get_mut("reference")
    {
        f(expr, r);
    }
    for (key, child) in obj.iter_mut() {
        if key.starts_with('_') || key == "resourceType" {
            continue;
        }
        let Some(prop) = defs.property(context, key) else {
            continue;
        };
        if defs.is_primitive(prop.type_name) {
            continue;
        }
        let name = if prop.element.is_choice() {
            format!("{}.ofType({})", prop.element.stem(), prop.type_name)
        } else {
            prop.element.name.clone()
        };
        let nested_resource = prop.type_name == "Resource" && prop.element.content_ref.is_none();
        let child_context = if nested_resource {
            None
        } else {
            defs.context_of(&prop).map(str::to_string)
        };
        let mut visit = |v: &mut Value, path: String| {
            if nested_resource {
                if let Some(rt) = v
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                {
                    walk(defs, v, &rt, &path, f, depth + 1);
                }
            } else if let Some(c) = &child_context {
                walk(defs, v, c, &path, f, depth + 1);
            }
        };
        match child {
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    visit(item, format!("{expr}.{name}[{i}]"));
                }
            }
            v => visit(v, format!("{expr}.{name}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn local_references() {
        let base = Some("http://h/fhir");
        let p = parse_local("Patient/1", base).unwrap();
        assert_eq!(p.key(), "Patient/1");
        assert_eq!(
            parse_local("Patient/1/_history/2", base)
                .unwrap()
                .version
                .as_deref(),
            Some("2")
        );
        assert!(parse_local("http://h/fhir/Patient/1", base).is_some());
        for other in [
            "#c1",
            "urn:uuid:1",
            "http://elsewhere/fhir/Patient/1",
            "Nope/1",
            "Patient",
            "Patient/a b",
            "Patient/1/x",
        ] {
            assert!(parse_local(other, base).is_none(), "{other}");
        }
        assert_eq!(
            conditional_parts("Patient?identifier=a|b"),
            Some(("Patient", "identifier=a|b"))
        );
        assert_eq!(conditional_parts("http://x/Patient?identifier=a|b"), None);
    }

    #[test]
    fn finds_references_everywhere() {
        let r = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/1"},
            "extension": [{"url": "http://x", "valueReference": {"reference": "Practitioner/2"}}],
            "contained": [{"resourceType": "Specimen", "id": "s", "subject": {"reference": "Patient/3"}}],
            "performer": [{"reference": "#s"}, {"display": "no reference"}]});
        let refs = collect(&r, "Observation");
        assert_eq!(refs.len(), 4);
        let mut set: Vec<String> = refs.iter().map(|(p, _)| p.clone()).collect();
        set.sort();
        assert_eq!(
            set,
            vec![
                "Observation.contained[0].subject",
                "Observation.extension[0].value.ofType(Reference)",
                "Observation.performer[0]",
                "Observation.subject",
            ]
        );
        let mut m = r.clone();
        for_each_reference_mut(&mut m, "Observation", &mut |_, s| {
            if s == "Patient/1" {
                *s = "Patient/99".into();
            }
        });
        assert_eq!(m["subject"]["reference"], "Patient/99");
    }
}
