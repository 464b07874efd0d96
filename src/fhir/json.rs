//! What serde_json lets through and FHIR JSON does not: an object naming a key twice (serde
//! keeps the last one, even for `resourceType`) and NUL characters (PostgreSQL cannot store
//! them in text). A second pass over the body's bytes, after it parsed, finds either and
//! names where it is.

use super::outcome::{ErrorKind, Outcome};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// Checks `body` (valid JSON) for duplicate keys and NUL characters.
pub fn check_strict(body: &[u8]) -> Result<(), Outcome> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut found: Option<(Problem, String)> = None;
    let seed = Check {
        path: String::new(),
        found: &mut found,
    };
    let _ = seed.deserialize(&mut de);
    match found {
        None => Ok(()),
        Some((problem, path)) => {
            let at = if path.is_empty() {
                "$this".to_string()
            } else {
                path
            };
            let (msg, kind) = match problem {
                Problem::Duplicate(key) => (
                    format!("The key '{key}' appears twice in one JSON object"),
                    ErrorKind::Structure,
                ),
                Problem::Nul => (
                    "A string contains a NUL character (\\u0000)".to_string(),
                    ErrorKind::Structure,
                ),
            };
            Err(Outcome::new(kind, msg).at(at))
        }
    }
}

enum Problem {
    Duplicate(String),
    Nul,
}

/// Walks one JSON value at `path`, recording the first problem.
struct Check<'a> {
    path: String,
    found: &'a mut Option<(Problem, String)>,
}

/// serde_json's private key for an arbitrary-precision number (not a real key).
const NUMBER_KEY: &str = "$serde_json::private::Number";

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        if v.contains('\0') {
            *self.found = Some((Problem::Nul, self.path));
            return Err(E::custom("nul"));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let seed = Check {
                path: format!("{}[{i}]", self.path),
                found: &mut *self.found,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == NUMBER_KEY {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let path = if self.path.is_empty() {
                key.to_string()
            } else {
                format!("{}.{key}", self.path)
            };
            if key.contains('\0') {
                *self.found = Some((Problem::Nul, self.path));
                return Err(serde::de::Error::custom("nul"));
            }
            if !keys.insert(key.to_string()) {
                *self.found = Some((Problem::Duplicate(key.to_string()), path));
                return Err(serde::de::Error::custom("duplicate"));
            }
            map.next_value_seed(Check {
                path,
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Option<(String, String)> {
        check_strict(body.as_bytes()).err().map(|o| {
            (
                o.issues[0].diagnostics.clone(),
                o.issues[0].expression.first().cloned().unwrap_or_default(),
            )
        })
    }

    #[test]
    fn finds_duplicates_and_nul_where_they_are() {
        assert_eq!(check(r#"{"a":1,"b":[{"c":"x"}]}"#), None);
        assert_eq!(check(r#"{"n": 1.000000000000000000001}"#), None);
        let (msg, at) = check(r#"{"resourceType":"Patient","resourceType":"Group"}"#).unwrap();
        assert!(msg.contains("'resourceType'"), "{msg}");
        assert_eq!(at, "resourceType");
        let (_, at) = check(r#"{"name":[{"given":["a"]},{"family":"x","family":"y"}]}"#).unwrap();
        assert_eq!(at, "name[1].family");
        let (msg, at) = check(r#"{"name":[{"family":"a\u0000b"}]}"#).unwrap();
        assert!(msg.contains("NUL"), "{msg}");
        assert_eq!(at, "name[0].family");
        // an escaped backslash before u0000 is text, not a NUL
        assert_eq!(check(r#"{"a":"\\u0000"}"#), None);
    }
}
