//! Helpers for resources as raw JSON: parsing a body, stamping server-managed `id`/`meta`,
//! and comparing content while ignoring the server-managed parts.

use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::{Instant, VersionId};
use serde_json::{Map, Value};

/// Parses a request body as a JSON object (400 with line and column when it is not one).
pub fn parse_json_object(body: &[u8]) -> Result<Value, Outcome> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Outcome::new(
            ErrorKind::Structure,
            "The request body is empty",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Outcome::new(
            ErrorKind::Structure,
            format!(
                "The body is not valid JSON: {} at line {} column {}",
                json_error_class(&e),
                e.line(),
                e.column()
            ),
        )
    })?;
    if !value.is_object() {
        return Err(Outcome::new(
            ErrorKind::Structure,
            "The body must be a JSON object",
        ));
    }
    super::json::check_strict(body).map_err(|o| match value.get("resourceType") {
        // name the element as FHIRPath does: from the resource type
        Some(serde_json::Value::String(rt))
            if super::definitions::Definitions::r4()
                .resource_type(rt)
                .is_some() =>
        {
            let mut o = o;
            if let Some(e) = o.issues.first_mut().and_then(|i| i.expression.first_mut()) {
                *e = format!("{rt}.{e}");
            }
            o
        }
        _ => o,
    })?;
    Ok(value)
}

/// The kind of a JSON syntax error without echoing any of the input (which may be PHI).
fn json_error_class(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "invalid data",
        serde_json::error::Category::Eof => "unexpected end of input",
    }
}

pub fn resource_type_of(resource: &Value) -> Option<&str> {
    resource.get("resourceType").and_then(Value::as_str)
}

pub fn id_of(resource: &Value) -> Option<&str> {
    resource.get("id").and_then(Value::as_str)
}

/// Sets `id`, `meta.versionId` and `meta.lastUpdated`, keeping the rest of `meta`, and puts
/// `resourceType`, `id`, `meta` first.
pub fn stamp(resource: &mut Value, id: &str, version: VersionId, last_updated: Instant) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let old = std::mem::take(obj);
    let mut meta = match old.get("meta") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    meta.shift_remove("versionId");
    meta.shift_remove("lastUpdated");
    let mut new_meta = Map::new();
    new_meta.insert("versionId".into(), Value::String(version.to_string()));
    new_meta.insert("lastUpdated".into(), Value::String(last_updated.to_fhir()));
    new_meta.extend(meta);
    let mut out = Map::new();
    if let Some(rt) = old.get("resourceType") {
        out.insert("resourceType".into(), rt.clone());
    }
    out.insert("id".into(), Value::String(id.to_string()));
    out.insert("meta".into(), Value::Object(new_meta));
    for (k, v) in old {
        if k != "resourceType" && k != "id" && k != "meta" {
            out.insert(k, v);
        }
    }
    *obj = out;
}

/// The resource without the parts the server manages (`meta.versionId`, `meta.lastUpdated`);
/// an emptied `meta` is dropped.
fn without_server_meta(resource: &Value) -> Value {
    let mut v = resource.clone();
    if let Some(obj) = v.as_object_mut() {
        let drop_meta = match obj.get_mut("meta") {
            Some(Value::Object(meta)) => {
                meta.shift_remove("versionId");
                meta.shift_remove("lastUpdated");
                meta.is_empty()
            }
            _ => false,
        };
        if drop_meta {
            obj.shift_remove("meta");
        }
    }
    v
}

/// Whether two versions have the same content apart from server-managed metadata
/// (a no-op update creates no new version). Key order does not matter; decimal text does.
pub fn same_content(a: &Value, b: &Value) -> bool {
    without_server_meta(a) == without_server_meta(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamp_puts_server_fields_first_and_keeps_meta() {
        let mut r = json!({"name": [{"family": "x"}], "resourceType": "Patient", "id": "old",
                           "meta": {"versionId": "9", "tag": [{"code": "t"}]}});
        stamp(&mut r, "new", 2, Instant::from_millis(0));
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.starts_with(r#"{"resourceType":"Patient","id":"new","meta":{"versionId":"2","lastUpdated":"1970-01-01T00:00:00.000Z","tag""#), "{text}");
    }

    #[test]
    fn same_content_ignores_server_meta_only() {
        let a = json!({"resourceType": "Patient", "id": "1", "meta": {"versionId": "1", "lastUpdated": "x"}, "active": true});
        let b = json!({"active": true, "id": "1", "resourceType": "Patient"});
        assert!(same_content(&a, &b));
        let c = json!({"active": true, "id": "1", "resourceType": "Patient", "meta": {"tag": [{"code": "a"}]}});
        assert!(!same_content(&a, &c));
        let d: Value = serde_json::from_str(
            r#"{"resourceType":"Observation","valueQuantity":{"value":1.50}}"#,
        )
        .unwrap();
        let e: Value =
            serde_json::from_str(r#"{"resourceType":"Observation","valueQuantity":{"value":1.5}}"#)
                .unwrap();
        assert!(!same_content(&d, &e));
    }

    #[test]
    fn parse_errors_do_not_echo_input() {
        let e = parse_json_object(br#"{"name": "secret-name"#).unwrap_err();
        assert!(!e.issues[0].diagnostics.contains("secret"));
        assert_eq!(e.kind, ErrorKind::Structure);
        assert!(parse_json_object(b"[1]").is_err());
        assert!(parse_json_object(b"  ").is_err());
    }
}
