//! create (`POST [base]/[type]`), with If-None-Exist (conditional create).

use super::session::Session;
use super::write::{check_body_type, existing, put_version};
use super::{Context, FhirResponse, Status, conditional, resource_type};
use crate::fhir::outcome::Outcome;
use crate::fhir::types::Id;
use crate::store::Method;
use serde_json::Value;

/// Checks a create body (type, validation) and drops its id — "If an id is provided, the
/// server SHALL ignore it."
pub(super) fn prepare<'a>(
    ctx: &'a Context,
    resource_type_name: &str,
    mut resource: Value,
) -> Result<(&'a str, Value), Outcome> {
    let rt = resource_type(ctx, resource_type_name)?;
    check_body_type(&resource, rt)?;
    if let Some(obj) = resource.as_object_mut() {
        obj.shift_remove("id");
        obj.shift_remove("_id");
    }
    ctx.validator.validate(&resource)?;
    super::write::check_profiles(ctx, &resource)?;
    Ok((rt, resource))
}

/// Creates a prepared resource in the session: with `if_none_exist`, an existing match is
/// returned instead (200); `id` is a server id chosen in advance (transaction Bundles).
pub(super) async fn create_in(
    s: &mut Session,
    rt: &str,
    resource: Value,
    if_none_exist: Option<&str>,
    id: Option<Id>,
) -> Result<FhirResponse, Outcome> {
    if let Some(query) = if_none_exist
        && let Some(found) = conditional::resolve(s, rt, query).await?
    {
        // answering with the match is a read of it
        s.guard.require(crate::auth::Perm::Read, rt)?;
        let (guard, registry) = (s.guard.clone(), s.registry.clone());
        guard
            .check_in_tx(s.tx(), &registry, crate::auth::Perm::Read, rt, &found)
            .await?;
        let current = s
            .tx()
            .current(rt, &found)
            .await?
            .ok_or_else(|| Outcome::internal("A matched resource has no current version"))?;
        return Ok(existing(&s.base, &current, Status::Ok));
    }
    let id = id.unwrap_or_else(Id::generate);
    put_version(s, rt, id.as_str(), resource, Method::Post, None).await
}
