//! Index rows extracted from a resource version: the `identifier` tokens conditional
//! interactions match on, reference-parameter rows (by FHIRPath, from the search-parameter
//! registry) for compartments, and every local reference, for referential integrity.

use crate::fhir::definitions::Definitions;
use crate::fhir::references::{collect, parse_local};
use crate::fhirpath::{Env, FpValue, evaluate};
use crate::search::parameters::{ParamType, SearchParameters};
use serde_json::Value;

/// A token index row (for now: identifiers, used by conditional interactions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub param: String,
    pub system: Option<String>,
    pub code: String,
}

/// A reference search-parameter value pointing at a resource on this server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReferenceRow {
    pub param: String,
    pub target_type: String,
    pub target_id: String,
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
    pub links: Vec<LinkRow>,
}

/// Extracts the index rows of a resource; `base` makes absolute references to this server local.
pub fn extract(resource: &Value, base: Option<&str>) -> IndexRows {
    let mut rows = IndexRows {
        tokens: identifiers(resource),
        references: references(resource, base),
        links: Vec::new(),
    };
    let rt = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
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

/// Reference search-parameter rows, by evaluating each reference parameter's FHIRPath.
fn references(resource: &Value, base: Option<&str>) -> Vec<ReferenceRow> {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let env = Env::new().with_type_info(Definitions::r4());
    let mut out = Vec::new();
    for p in SearchParameters::r4().own(rt) {
        if p.kind != ParamType::Reference {
            continue;
        }
        let Some(expr) = &p.parsed else { continue };
        let Ok(items) = evaluate(expr, resource, &env) else {
            continue;
        };
        for item in items {
            let FpValue::Node(node) = item.value() else {
                continue;
            };
            let Some(reference) = node
                .json()
                .and_then(|j| j.get("reference"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            if let Some(l) = parse_local(reference, base) {
                let row = ReferenceRow {
                    param: p.code.clone(),
                    target_type: l.resource_type,
                    target_id: l.id,
                };
                if !out.contains(&row) {
                    out.push(row);
                }
            }
        }
    }
    out
}

fn identifiers(resource: &Value) -> Vec<TokenRow> {
    let mut tokens = Vec::new();
    let identifiers: Vec<&Value> = match resource.get("identifier") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    for ident in identifiers {
        if let Some(code) = ident.get("value").and_then(Value::as_str) {
            let row = TokenRow {
                param: "identifier".to_string(),
                system: ident
                    .get("system")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                code: code.to_string(),
            };
            if !tokens.contains(&row) {
                tokens.push(row);
            }
        }
    }
    tokens
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
        assert_eq!(rows.tokens.len(), 2);
        assert_eq!(rows.tokens[1].system, None);
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
        let links: Vec<&str> = rows.links.iter().map(|l| l.target_id.as_str()).collect();
        assert_eq!(links.len(), 2);
        assert!(links.contains(&"p1") && links.contains(&"d1"));
    }
}
