//! capabilities (`GET [base]/metadata`): the CapabilityStatement, generated from the resource
//! types in the definitions and the interactions listed here — the same list the API routes
//! and the conformance test (which exercises every advertised interaction) use.

use super::{Body, Context, FhirResponse, Status};
use crate::auth::discovery::{Endpoints, INSECURE_WARNING, Security, insecure_security};
use crate::search::parameters::{ParamType, SearchParam, SearchParameters};
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
    "search-type",
];

/// System-level interactions implemented.
pub const SYSTEM_INTERACTIONS: &[&str] =
    &["transaction", "batch", "history-system", "search-system"];

/// Patch formats accepted.
pub const PATCH_FORMATS: &[&str] = &["application/json-patch+json", "application/fhir+json"];

static STARTED: LazyLock<String> = LazyLock::new(|| crate::fhir::types::Instant::now().to_fhir());

pub fn statement(ctx: &Context, base: &str) -> Value {
    let loaded = ctx.registry.snapshot();
    let registry: &SearchParameters = &loaded.params;
    let interactions: Vec<Value> = TYPE_INTERACTIONS
        .iter()
        .map(|c| json!({"code": c}))
        .collect();
    let resources: Vec<Value> = ctx
        .defs
        .resource_types()
        .iter()
        .map(|t| {
            let mut ops: Vec<(&str, &str)> =
                super::operation::advertised(super::operation::Level::Type, Some(t));
            for o in super::operation::advertised(super::operation::Level::Instance, Some(t)) {
                if !ops.contains(&o) {
                    ops.push(o);
                }
            }
            let ops: Vec<Value> = ops
                .into_iter()
                .map(|(name, def)| json!({"name": name, "definition": ctx.finance.rebase(def)}))
                .collect();
            let params = search_params(registry, t);
            let includes: Vec<String> = params
                .iter()
                .filter(|p| p.kind == ParamType::Reference)
                .map(|p| format!("{t}:{}", p.code))
                .collect();
            let mut r = json!({
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
                "supportedProfile": ctx.finance.profiles_of(t),
                "operation": ops,
                "searchInclude": includes,
                "searchRevInclude": revincludes(registry, t),
                "searchParam": params.iter().map(|p| param_json(p)).collect::<Vec<_>>(),
            });
            // FHIR forbids empty arrays
            if let Some(o) = r.as_object_mut() {
                o.retain(|_, v| v.as_array().is_none_or(|a| !a.is_empty()));
            }
            r
        })
        .collect();
    let (security, description) = match ctx.security {
        Security::Smart => (
            Endpoints::new(base, &ctx.prefix).capability_security(),
            format!("Healporium FHIR R4 server ({} store)", ctx.store.backend()),
        ),
        Security::Off => (
            insecure_security(),
            format!(
                "Healporium FHIR R4 server ({} store). {INSECURE_WARNING}",
                ctx.store.backend()
            ),
        ),
    };
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
            "description": description,
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": PATCH_FORMATS,
        "rest": [{
            "mode": "server",
            // where websocket Subscriptions bind (docs/subscriptions.md)
            "extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket",
                "valueUri": format!("{}/websocket", base.replacen("http", "ws", 1)),
            }],
            "security": security,
            "resource": resources,
            "interaction": system,
            "searchParam": search_params(registry, "Resource")
                .iter()
                .map(|p| param_json(p))
                .collect::<Vec<_>>(),
            "operation": super::operation::advertised(super::operation::Level::System, None)
                .into_iter()
                .map(|(name, def)| json!({"name": name, "definition": ctx.finance.rebase(def)}))
                .collect::<Vec<_>>(),
        }],
    })
}

/// The search parameters a type supports: its own, DomainResource's and Resource's, with an
/// expression this server evaluates (special ones such as `near` and `_text` are left out).
pub fn search_params<'r>(
    registry: &'r SearchParameters,
    resource_type: &str,
) -> Vec<&'r SearchParam> {
    let mut out: Vec<&SearchParam> = Vec::new();
    for t in [resource_type, "DomainResource", "Resource"] {
        if t == "DomainResource" && resource_type == "Resource" {
            continue;
        }
        for p in registry.own(t) {
            let supported = p.kind != ParamType::Special
                && !p.internal
                && (p.parsed.is_some() || p.code == "_id" || p.code == "_lastUpdated")
                && !out.iter().any(|o| o.code == p.code);
            if supported {
                out.push(p);
            }
        }
    }
    out
}

fn revincludes(registry: &SearchParameters, resource_type: &str) -> Vec<String> {
    let defs = crate::fhir::definitions::Definitions::r4();
    let mut out = Vec::new();
    for source in defs.resource_types() {
        for p in registry.own(source) {
            if p.kind == ParamType::Reference
                && !p.internal
                && p.parsed.is_some()
                && (p.targets.is_empty() || p.targets.iter().any(|x| x == resource_type))
            {
                out.push(format!("{source}:{}", p.code));
            }
        }
    }
    out
}

fn param_json(p: &SearchParam) -> Value {
    let kind = match p.kind {
        ParamType::Number => "number",
        ParamType::Date => "date",
        ParamType::String => "string",
        ParamType::Token => "token",
        ParamType::Reference => "reference",
        ParamType::Composite => "composite",
        ParamType::Quantity => "quantity",
        ParamType::Uri => "uri",
        ParamType::Special => "special",
    };
    json!({"name": p.code, "type": kind})
}

pub(super) fn response(ctx: &Context, base: &str) -> FhirResponse {
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(statement(ctx, base)));
    r
}
