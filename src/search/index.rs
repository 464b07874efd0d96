//! Index rows extracted from a resource version. For now the `identifier` tokens of the
//! resource's top-level `identifier` element, which conditional interactions match on.

use serde_json::Value;

/// A token index row (for now: identifiers, used by conditional interactions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub param: String,
    pub system: Option<String>,
    pub code: String,
}

/// Index rows written with a version, replacing the resource's previous rows.
#[derive(Debug, Clone, Default)]
pub struct IndexRows {
    pub tokens: Vec<TokenRow>,
}

pub fn extract(resource: &Value) -> IndexRows {
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
    IndexRows { tokens }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_identifiers() {
        let rows = extract(&json!({"resourceType": "Patient", "identifier": [
            {"system": "s", "value": "1"}, {"value": "2"}, {"system": "s"}, {"system": "s", "value": "1"}]}));
        assert_eq!(rows.tokens.len(), 2);
        assert_eq!(rows.tokens[1].system, None);
        let single = extract(
            &json!({"resourceType": "Bundle", "identifier": {"system": "s", "value": "b"}}),
        );
        assert_eq!(single.tokens.len(), 1);
    }
}
