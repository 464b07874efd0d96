//! Reading an operation's input parameters (from a Parameters body or the query) into typed
//! values; every refusal is an OperationOutcome whose expression names the parameter.

use super::OperationRequest;
use crate::fhir::money::Money;
use crate::fhir::outcome::{ErrorKind, Outcome};
use rust_decimal::Decimal;
use serde_json::Value;

/// The FHIRPath of an input parameter, for an OperationOutcome.
pub(super) fn at(name: &str) -> String {
    format!("Parameters.parameter.where(name = '{name}')")
}

pub(super) fn invalid(name: &str, msg: impl Into<String>) -> Outcome {
    Outcome::new(ErrorKind::Invalid, msg).at(at(name))
}

/// An integer parameter (`valueInteger`, or its text in a query).
pub(super) fn integer(op: &OperationRequest, name: &str) -> Result<Option<i64>, Outcome> {
    match op.param(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid(name, format!("{name} must be an integer"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(name, format!("{name} must be an integer"))),
        Some(_) => Err(invalid(name, format!("{name} must be an integer"))),
    }
}

/// A decimal parameter, exact (`valueDecimal`, or its text in a query).
pub(super) fn decimal(op: &OperationRequest, name: &str) -> Result<Option<Decimal>, Outcome> {
    let text = match op.param(name) {
        None => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err(invalid(name, format!("{name} must be a decimal"))),
    };
    Decimal::from_str_exact(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map(Some)
        .map_err(|_| invalid(name, format!("{name} must be a decimal")))
}

/// A code parameter.
pub(super) fn code(op: &OperationRequest, name: &str) -> Result<Option<String>, Outcome> {
    match op.param(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(_) => Err(invalid(name, format!("{name} must be a code"))),
    }
}

/// A Money parameter (`valueMoney`, with its currency).
pub(super) fn money(op: &OperationRequest, name: &str) -> Result<Option<Money>, Outcome> {
    match op.param(name) {
        None => Ok(None),
        Some(v @ Value::Object(_)) => Money::parse(&v)
            .map(Some)
            .map_err(|e| e.to_outcome(&format!("{}.valueMoney", at(name)))),
        Some(_) => Err(invalid(
            name,
            format!("{name} must be a Money (valueMoney with value and currency)"),
        )),
    }
}

/// A string parameter.
pub(super) fn string(op: &OperationRequest, name: &str) -> Result<Option<String>, Outcome> {
    match op.param(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(_) => Err(invalid(name, format!("{name} must be a string"))),
    }
}

/// A Reference parameter's `reference` as (type, id), of one of `types`.
pub(super) fn reference(
    op: &OperationRequest,
    name: &str,
    types: &[&str],
) -> Result<Option<(String, String)>, Outcome> {
    let Some(v) = op.param(name) else {
        return Ok(None);
    };
    let text = match &v {
        Value::Object(m) => m.get("reference").and_then(Value::as_str).unwrap_or(""),
        Value::String(s) => s.as_str(),
        _ => "",
    };
    let parsed = text.split_once('/').and_then(|(t, id)| {
        let id = crate::fhir::types::Id::parse(id).ok()?;
        types
            .contains(&t)
            .then(|| (t.to_string(), id.as_str().to_string()))
    });
    parsed.map(Some).ok_or_else(|| {
        invalid(
            name,
            format!(
                "{name} must be a Reference to a {} on this server",
                types.join(" or ")
            ),
        )
    })
}

/// The required `requestId` of a state change: at most 200 characters.
pub(super) fn request_id(op: &OperationRequest) -> Result<String, Outcome> {
    let id = string(op, "requestId")?.ok_or_else(|| {
        Outcome::bad_request("Every state change takes a requestId (string), for safe retries")
            .at(at("requestId"))
    })?;
    if id.chars().count() > 200 {
        return Err(invalid(
            "requestId",
            "requestId is longer than 200 characters",
        ));
    }
    Ok(id)
}
