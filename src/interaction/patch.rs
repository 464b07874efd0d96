//! patch (`PATCH [base]/[type]/[id]` and conditional `PATCH [base]/[type]?…`) with JSON Patch
//! (application/json-patch+json) or FHIRPath Patch (a Parameters resource). The patched
//! resource is validated like any update and written as the next version.

use super::session::Session;
use super::write::{check_if_match, put_version};
use super::{Context, FhirResponse, PatchBody, Target, conditional};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::{Id, VersionId};
use crate::store::Method;
use serde_json::Value;

pub(super) async fn patch_in(
    ctx: &Context,
    s: &mut Session,
    rt: &str,
    target: &Target,
    patch: &PatchBody,
    if_match: Option<VersionId>,
) -> Result<FhirResponse, Outcome> {
    let id = match target {
        Target::Id(id) => Id::parse(id)?.as_str().to_string(),
        Target::Criteria(query) => conditional::resolve(s, rt, query)
            .await?
            .ok_or_else(|| Outcome::not_found("No resource matches the criteria"))?,
    };
    s.tx().lock_resource(rt, &id).await?;
    let Some(current) = s.tx().current(rt, &id).await? else {
        return Err(Outcome::not_found(format!("{rt}/{id} is not known")));
    };
    if current.deleted {
        return Err(Outcome::new(
            ErrorKind::Gone,
            format!("{rt}/{id} was deleted"),
        ));
    }
    check_if_match(Some(&current), if_match)?;
    let body = current
        .body
        .as_deref()
        .ok_or_else(|| Outcome::internal("A live version has no body"))?;
    let mut resource: Value = serde_json::from_str(body)
        .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?;
    apply(ctx, rt, &mut resource, patch)?;
    if resource.get("resourceType").and_then(Value::as_str) != Some(rt)
        || resource.get("id").and_then(Value::as_str) != Some(id.as_str())
    {
        return Err(Outcome::new(
            ErrorKind::Invalid,
            "A patch must not change the resourceType or id",
        )
        .at(format!("{rt}.id")));
    }
    ctx.validator.validate(&resource).map_err(|mut o| {
        // the patched result is what is invalid: always 422, whatever the issue class
        o.kind = ErrorKind::Invalid;
        o
    })?;
    put_version(s, rt, &id, resource, Method::Patch, Some(&current)).await
}

fn apply(ctx: &Context, rt: &str, resource: &mut Value, patch: &PatchBody) -> Result<(), Outcome> {
    match patch {
        PatchBody::Json(ops) => {
            let ops: json_patch::Patch = serde_json::from_value(ops.clone()).map_err(|_| {
                Outcome::bad_request("The body is not a JSON Patch document (RFC 6902)")
            })?;
            json_patch::patch(resource, &ops).map_err(|e| {
                Outcome::new(
                    ErrorKind::Invalid,
                    format!("JSON Patch operation {} failed: {}", e.operation, e.kind),
                )
            })
        }
        PatchBody::FhirPath(params) => {
            if params.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
                return Err(Outcome::bad_request(
                    "A FHIRPath Patch body must be a Parameters resource",
                ));
            }
            ctx.validator.validate(params)?;
            let defs = ctx.defs;
            let is_list = |keys: &[&str]| defs.is_array_path(rt, keys);
            crate::fhirpath::patch::apply_fhirpath_patch(resource, params, &is_list).map_err(|e| {
                let mut o = Outcome::new(
                    ErrorKind::Invalid,
                    format!("FHIRPath Patch failed: {}", e.message),
                );
                if let Some(op) = e.operation {
                    o = o.at(op);
                }
                o
            })
        }
    }
}
