//! vread (`GET [base]/[type]/[id]/_history/[vid]`).

use super::guard::Src;
use super::{Body, Context, FhirResponse, Status, resource_type};
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::Id;
use crate::store::StoredVersion;

pub(super) async fn vread(
    ctx: &Context,
    resource_type_name: &str,
    id: &str,
    version: &str,
) -> Result<FhirResponse, Outcome> {
    let rt = resource_type(ctx, resource_type_name)?;
    let id = Id::parse(id)?;
    ctx.guard.require(Perm::Read, rt)?;
    // a confined token sees the versions of resources it may read now, and of those only
    // the versions that were within its reach themselves
    ctx.guard
        .check_stored(ctx, Perm::Read, rt, id.as_str())
        .await?;
    let found = match version.parse::<i64>() {
        Ok(n) => ctx.store.vread(rt, id.as_str(), n).await?,
        Err(_) => None,
    };
    if let Some(v) = &found
        && ctx.guard.confined(Perm::Read, rt)
    {
        let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
        let mut src = Src::Store(ctx.store.as_ref());
        if !ctx
            .guard
            .version_visible(&mut src, &registry, Perm::Read, v)
            .await?
        {
            return respond(rt, id.as_str(), version, None);
        }
    }
    respond(rt, id.as_str(), version, found)
}

/// The vread response for `version` of `rt/id` (None: no such version).
pub(super) fn respond(
    rt: &str,
    id: &str,
    version: &str,
    found: Option<StoredVersion>,
) -> Result<FhirResponse, Outcome> {
    let Some(v) = found else {
        return Err(Outcome::not_found(format!(
            "{rt}/{id} has no version {}",
            version.chars().take(20).collect::<String>()
        )));
    };
    if v.deleted {
        return Err(Outcome::new(
            ErrorKind::Gone,
            format!("Version {} of {rt}/{id} is a deletion", v.version),
        ));
    }
    let mut response = FhirResponse::new(Status::Ok);
    response.body = v.body.clone().map(Body::Raw);
    response.version = Some(v.version);
    response.last_modified = Some(v.last_updated);
    Ok(response)
}
