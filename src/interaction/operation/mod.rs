//! Extended operations, one file each: `$everything`, `$validate`, `$meta`, `$meta-add`,
//! `$meta-delete`, `$reindex`, and Healporium's `$break-glass`. They run on the same store and
//! validator as the interactions.

mod break_glass;
mod everything;
mod meta;
pub mod reindex;
mod validate;

use super::{Context, FhirResponse};
use crate::fhir::outcome::{ErrorKind, Outcome};
use serde_json::Value;

/// Operations per level, as the CapabilityStatement advertises them: (name, definition).
pub const TYPE_OPERATIONS: &[(&str, &str)] = &[
    (
        "validate",
        "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    ),
    (
        "meta",
        "http://hl7.org/fhir/OperationDefinition/Resource-meta",
    ),
    (
        "meta-add",
        "http://hl7.org/fhir/OperationDefinition/Resource-meta-add",
    ),
    (
        "meta-delete",
        "http://hl7.org/fhir/OperationDefinition/Resource-meta-delete",
    ),
];
/// Operations only on Patient.
pub const PATIENT_OPERATIONS: &[(&str, &str)] = &[
    (
        "everything",
        "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    ),
    (
        "break-glass",
        "http://healporium.org/fhir/OperationDefinition/break-glass",
    ),
];
/// System-level operations.
pub const SYSTEM_OPERATIONS: &[(&str, &str)] = &[
    (
        "meta",
        "http://hl7.org/fhir/OperationDefinition/Resource-meta",
    ),
    (
        "reindex",
        "http://healporium.org/fhir/OperationDefinition/reindex",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationMethod {
    Get,
    Post,
}

/// An operation call: `[base]/$op`, `[base]/Type/$op`, `[base]/Type/id/$op` or
/// `[base]/Type/id/_history/vid/$op`.
#[derive(Debug, Clone)]
pub struct OperationRequest {
    /// Without the `$`.
    pub name: String,
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    pub method: OperationMethod,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// A POST body (a Parameters resource, or for `$validate` the resource itself).
    pub body: Option<Value>,
}

impl OperationRequest {
    /// A parameter from the query or a Parameters body: the first `valueX` or `resource`.
    pub fn param(&self, name: &str) -> Option<Value> {
        if let Some((_, v)) = self.query.iter().find(|(k, _)| k == name) {
            return Some(Value::String(v.clone()));
        }
        let body = self.body.as_ref()?;
        if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return None;
        }
        body.get("parameter")?
            .as_array()?
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|p| {
                p.as_object()?
                    .iter()
                    .find(|(k, _)| k.starts_with("value") || *k == "resource")
                    .map(|(_, v)| v.clone())
            })
    }
}

pub(super) async fn run(
    ctx: &Context,
    base: &str,
    op: OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let level = (op.resource_type.is_some(), op.id.is_some());
    if op.name == "reindex" {
        // server administration: a system/*. scope
        ctx.guard.require_system(crate::auth::Perm::Update)?;
    }
    match (op.name.as_str(), level) {
        ("everything", (true, _)) => everything::everything(ctx, base, &op).await,
        ("break-glass", (true, true)) => break_glass::break_glass(ctx, base, &op).await,
        ("validate", (true, _)) => validate::validate(ctx, &op).await,
        ("meta", _) => meta::meta(ctx, &op).await,
        ("meta-add" | "meta-delete", (true, true)) => meta::change(ctx, base, &op).await,
        ("reindex", (false, false)) => match op.method {
            OperationMethod::Get => reindex::status(ctx).await,
            OperationMethod::Post => {
                let all = op
                    .param("all")
                    .is_some_and(|v| v == Value::Bool(true) || v == "true");
                reindex::run(ctx, base, all).await
            }
        },
        // an operation this server does not define at this level is the client's mistake
        // (HAPI answers 400 as well), not a fault of the server
        _ => Err(Outcome::with_issues(
            ErrorKind::BadRequest,
            vec![crate::fhir::outcome::Issue::error(
                "not-supported",
                format!(
                    "${} is not an operation of this server at this level",
                    op.name.chars().take(40).collect::<String>()
                ),
            )],
        )),
    }
}
