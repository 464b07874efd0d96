//! capabilities (`GET [base]/metadata`): the CapabilityStatement, generated from the resource
//! types in the definitions and the interactions listed here — the same list the API routes
//! and the conformance test (which exercises every advertised interaction) use.

use super::{Body, Context, FhirResponse, Status};
use serde_json::{Value, json};
use std::sync::LazyLock;

/// Type-level and instance-level interactions implemented for every resource type.
pub const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
];

/// System-level interactions implemented.
pub const SYSTEM_INTERACTIONS: &[&str] = &["transaction", "batch", "history-system"];

/// Patch formats accepted.
pub const PATCH_FORMATS: &[&str] = &["application/json-patch+json", "application/fhir+json"];

static STARTED: LazyLock<String> = LazyLock::new(|| crate::fhir::types::Instant::now().to_fhir());

pub fn statement(ctx: &Context, base: &str) -> Value {
    let interactions: Vec<Value> = TYPE_INTERACTIONS
        .iter()
        .map(|c| json!({"code": c}))
        .collect();
    let resources: Vec<Value> = ctx
        .defs
        .resource_types()
        .iter()
        .map(|t| {
            let mut ops: Vec<Value> = super::operation::TYPE_OPERATIONS
                .iter()
                .map(|(name, def)| json!({"name": name, "definition": def}))
                .collect();
            if t == "Patient" {
                ops.extend(
                    super::operation::PATIENT_OPERATIONS
                        .iter()
                        .map(|(name, def)| json!({"name": name, "definition": def})),
                );
            }
            json!({
                "type": t,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "referencePolicy": if ctx.integrity {
                    json!(["literal", "local", "enforced"])
                } else {
                    json!(["literal", "local"])
                },
                "operation": ops,
            })
        })
        .collect();
    let system: Vec<Value> = SYSTEM_INTERACTIONS
        .iter()
        .map(|c| json!({"code": c}))
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": *STARTED,
        "publisher": "Healporium",
        "kind": "instance",
        "software": {"name": "Healporium", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": format!("Healporium FHIR R4 server ({} store)", ctx.store.backend()),
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": PATCH_FORMATS,
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": system,
            "operation": super::operation::SYSTEM_OPERATIONS
                .iter()
                .map(|(name, def)| json!({"name": name, "definition": def}))
                .collect::<Vec<_>>(),
        }],
    })
}

pub(super) fn response(ctx: &Context, base: &str) -> FhirResponse {
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(statement(ctx, base)));
    r
}
