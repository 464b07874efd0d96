//! patch (`PATCH [base]/[type]/[id]` and conditional `PATCH [base]/[type]?…`) with JSON Patch
//! (application/json-patch+json) or FHIRPath Patch (a Parameters resource). The patched
//! resource is validated like any update and written as the next version.

use super::session::Session;
use super::write::{check_if_match, put_version};
use super::{Context, FhirResponse, PatchBody, Target, conditional};
use crate::fhir::limits::Limits;
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
    super::write::check_profiles(ctx, &resource)?;
    put_version(s, rt, &id, resource, Method::Patch, Some(&current)).await
}

/// The number of operations in one patch, against the limit.
fn operations(ctx: &Context, n: usize) -> Result<(), Outcome> {
    if n > ctx.limits.patch_operations {
        return Err(Limits::exceeded(
            "patch-operations",
            ctx.limits.patch_operations,
            &format!("A patch of {n} operations"),
        ));
    }
    Ok(())
}

/// The serialized size of `v` in bytes, without building the text.
fn json_size(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

fn apply(ctx: &Context, rt: &str, resource: &mut Value, patch: &PatchBody) -> Result<(), Outcome> {
    match patch {
        PatchBody::Json(ops) => {
            let ops: json_patch::Patch = serde_json::from_value(ops.clone()).map_err(|_| {
                Outcome::bad_request("The body is not a JSON Patch document (RFC 6902)")
            })?;
            operations(ctx, ops.0.len())?;
            // one operation at a time, so a patch that grows the resource (`copy` doubling an
            // array) stops at the size limit instead of filling the memory; on failure the
            // half-patched copy is dropped
            let mut size = json_size(resource);
            for (i, op) in ops.0.iter().enumerate() {
                size += match op {
                    json_patch::PatchOperation::Add(a) => json_size(&a.value),
                    json_patch::PatchOperation::Replace(r) => json_size(&r.value),
                    json_patch::PatchOperation::Copy(c) => {
                        resource.pointer(c.from.as_str()).map_or(0, json_size)
                    }
                    _ => 0,
                };
                if size > ctx.limits.resource_bytes {
                    return Err(ctx.limits.too_large("The patched resource"));
                }
                json_patch::patch_unsafe(resource, std::slice::from_ref(op)).map_err(|e| {
                    Outcome::new(
                        ErrorKind::Invalid,
                        format!("JSON Patch operation {i} failed: {}", e.kind),
                    )
                })?;
            }
            Ok(())
        }
        PatchBody::FhirPath(params) => {
            if params.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
                return Err(Outcome::bad_request(
                    "A FHIRPath Patch body must be a Parameters resource",
                ));
            }
            ctx.validator.validate(params)?;
            let count = params
                .get("parameter")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            operations(ctx, count)?;
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
