//! `CodeSystem/$lookup` (`GET|POST [base]/CodeSystem/$lookup?system=…&code=…`, or a `coding`):
//! the code's display, its code system's name and version, its designations and properties,
//! from the CodeSystem resources stored on this server (there is no external terminology
//! server). Also answered at `ValueSet/$lookup`, which R4's own example transaction uses.

use super::OperationRequest;
use crate::auth::Perm;
use crate::fhir::outcome::Outcome;
use crate::interaction::{Body, Context, FhirResponse, Status};
use serde_json::{Value, json};

pub(super) async fn lookup(ctx: &Context, op: &OperationRequest) -> Result<FhirResponse, Outcome> {
    ctx.guard.require(Perm::Read, "CodeSystem")?;
    let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_string));
    let (system, code, version) = match op.param("coding") {
        Some(c @ Value::Object(_)) => (
            text(c.get("system").cloned()),
            text(c.get("code").cloned()),
            text(c.get("version").cloned()),
        ),
        Some(_) => return Err(super::params::invalid("coding", "coding must be a Coding")),
        None => (
            text(op.param("system")),
            text(op.param("code")),
            text(op.param("version")),
        ),
    };
    let (Some(system), Some(code)) = (system, code) else {
        return Err(super::params::invalid(
            "code",
            "$lookup needs system and code, or a coding with both",
        ));
    };
    let clip = |s: &str| s.chars().take(200).collect::<String>();
    let Some(cs) = crate::interaction::search::stored_by_url(ctx, "CodeSystem", &system).await?
    else {
        return Err(Outcome::not_found(format!(
            "{} is not a code system this server holds",
            clip(&system)
        )));
    };
    if let Some(v) = &version
        && cs.get("version").and_then(Value::as_str) != Some(v.as_str())
    {
        return Err(Outcome::not_found(format!(
            "This server holds {} only in version {}",
            clip(&system),
            cs.get("version")
                .and_then(Value::as_str)
                .unwrap_or("(none)")
        )));
    }
    let Some(concept) = find(cs.get("concept"), &code) else {
        return Err(Outcome::not_found(format!(
            "'{}' is not a code of {}",
            clip(&code),
            clip(&system)
        )));
    };
    let mut out = vec![json!({"name": "name", "valueString":
        cs.get("name").or(cs.get("title")).and_then(Value::as_str).unwrap_or(&system)})];
    if let Some(v) = cs.get("version").and_then(Value::as_str) {
        out.push(json!({"name": "version", "valueString": v}));
    }
    out.push(json!({"name": "display", "valueString":
        concept.get("display").and_then(Value::as_str).unwrap_or(&code)}));
    for d in concept
        .get("designation")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut part = Vec::new();
        if let Some(l) = d.get("language") {
            part.push(json!({"name": "language", "valueCode": l}));
        }
        if let Some(u) = d.get("use") {
            part.push(json!({"name": "use", "valueCoding": u}));
        }
        if let Some(v) = d.get("value") {
            part.push(json!({"name": "value", "valueString": v}));
        }
        out.push(json!({"name": "designation", "part": part}));
    }
    for p in concept
        .get("property")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut part = vec![json!({"name": "code", "valueCode": p.get("code")})];
        if let Some((k, v)) = p
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
        {
            part.push(json!({"name": "value", k.as_str(): v}));
        }
        out.push(json!({"name": "property", "part": part}));
    }
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(
        json!({"resourceType": "Parameters", "parameter": out}),
    ));
    Ok(r)
}

/// The concept `code` among `concepts` and their nested concepts.
fn find<'a>(concepts: Option<&'a Value>, code: &str) -> Option<&'a Value> {
    let mut stack: Vec<&Value> = concepts?.as_array()?.iter().collect();
    while let Some(c) = stack.pop() {
        if c.get("code").and_then(Value::as_str) == Some(code) {
            return Some(c);
        }
        if let Some(children) = c.get("concept").and_then(Value::as_array) {
            stack.extend(children.iter());
        }
    }
    None
}
