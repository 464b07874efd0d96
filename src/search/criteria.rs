//! Criteria of conditional interactions (If-None-Exist, conditional update/patch/delete):
//! `_id=a,b` and `identifier=[system|]value`, ANDed across parameters, ORed within one.

use crate::fhir::definitions::Definitions;
use crate::fhir::outcome::Outcome;

/// One value of a token criterion: `[system|]code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenValue {
    /// None: any system; Some(None): no system; Some(Some(s)): system s.
    pub system: Option<Option<String>>,
    /// None: any code (`system|`).
    pub code: Option<String>,
}

/// A criterion of a conditional interaction; criteria are ANDed, values within one ORed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    Id(Vec<String>),
    Token {
        param: String,
        values: Vec<TokenValue>,
    },
}

/// Query parameters that shape the response and are not criteria.
const RESULT_PARAMETERS: &[&str] = &["_format", "_pretty", "_summary", "_elements"];

/// Parses a criteria query string (`identifier=http://x|123&_id=a`) for `resource_type`.
pub fn parse(resource_type: &str, query: &str) -> Result<Vec<Criterion>, Outcome> {
    let query = query.trim_start_matches('?');
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| Outcome::bad_request("The criteria are not a valid query string"))?;
    let mut criteria = Vec::new();
    for (name, value) in pairs {
        if RESULT_PARAMETERS.contains(&name.as_str()) {
            continue;
        }
        if value.is_empty() {
            return Err(Outcome::bad_request(format!(
                "Criterion '{name}' has no value"
            )));
        }
        match name.as_str() {
            "_id" => criteria.push(Criterion::Id(split_or(&value))),
            "identifier" => {
                if Definitions::r4()
                    .property(resource_type, "identifier")
                    .is_none()
                {
                    return Err(Outcome::bad_request(format!(
                        "{resource_type} has no identifier to match on"
                    )));
                }
                let values = split_or(&value).iter().map(|v| token(v)).collect();
                criteria.push(Criterion::Token {
                    param: "identifier".to_string(),
                    values,
                });
            }
            other => {
                return Err(Outcome::bad_request(format!(
                    "Unsupported criterion '{other}': conditional interactions match on _id \
                     and identifier"
                )));
            }
        }
    }
    if criteria.is_empty() {
        return Err(Outcome::bad_request(
            "A conditional interaction needs at least one criterion",
        ));
    }
    Ok(criteria)
}

/// Splits on unescaped commas and removes FHIR search escapes (`\,` `\|` `\$` `\\`).
fn split_or(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ (',' | '$' | '\\')) => cur.push(n),
                Some('|') => cur.push_str("\\|"), // kept escaped for the token split
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            },
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// `[system|]code`: `a|b` system a code b; `|b` no system; `b` any system; `a|` any code.
fn token(v: &str) -> TokenValue {
    let mut split_at = None;
    let bytes = v.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'|' && (i == 0 || bytes[i - 1] != b'\\') {
            split_at = Some(i);
            break;
        }
    }
    let unescape = |s: &str| s.replace("\\|", "|");
    match split_at {
        None => TokenValue {
            system: None,
            code: Some(unescape(v)),
        },
        Some(i) => {
            let (system, code) = (&v[..i], &v[i + 1..]);
            TokenValue {
                system: Some(if system.is_empty() {
                    None
                } else {
                    Some(unescape(system))
                }),
                code: if code.is_empty() {
                    None
                } else {
                    Some(unescape(code))
                },
            }
        }
    }
}

/// A canonical form of the criteria, used as a lock key for conditional creates.
pub fn lock_key(resource_type: &str, criteria: &[Criterion]) -> String {
    format!("{resource_type}?{criteria:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(system: Option<Option<&str>>, code: Option<&str>) -> TokenValue {
        TokenValue {
            system: system.map(|s| s.map(str::to_string)),
            code: code.map(str::to_string),
        }
    }

    #[test]
    fn parses_identifier_and_id() {
        let c = parse("Patient", "identifier=http://x|1,|2,3,http://y|&_id=a,b").unwrap();
        assert_eq!(
            c,
            vec![
                Criterion::Token {
                    param: "identifier".into(),
                    values: vec![
                        tok(Some(Some("http://x")), Some("1")),
                        tok(Some(None), Some("2")),
                        tok(None, Some("3")),
                        tok(Some(Some("http://y")), None),
                    ]
                },
                Criterion::Id(vec!["a".into(), "b".into()]),
            ]
        );
    }

    #[test]
    fn escapes() {
        let c = parse("Patient", "identifier=a\\|b|c\\,d").unwrap();
        assert_eq!(
            c,
            vec![Criterion::Token {
                param: "identifier".into(),
                values: vec![tok(Some(Some("a|b")), Some("c,d"))]
            }]
        );
    }

    #[test]
    fn rejects_what_it_cannot_match() {
        assert!(parse("Patient", "name=x").is_err());
        assert!(parse("Patient", "").is_err());
        assert!(parse("Patient", "_format=json").is_err());
        assert!(parse("Patient", "identifier=").is_err());
        assert!(parse("Parameters", "identifier=x").is_err());
        assert!(parse("Patient", "_id=a&_format=json").is_ok());
    }
}
