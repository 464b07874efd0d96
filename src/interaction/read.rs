//! read (`GET [base]/[type]/[id]`), with conditional read (If-None-Match, If-Modified-Since).

use super::{Body, Context, FhirResponse, IfNoneMatch, Preconditions, Status, resource_type};
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::Id;
use crate::store::StoredVersion;

pub(super) async fn read(
    ctx: &Context,
    resource_type_name: &str,
    id: &str,
    pre: &Preconditions,
) -> Result<FhirResponse, Outcome> {
    let rt = resource_type(ctx, resource_type_name)?;
    let id = Id::parse(id)?;
    ctx.guard.require(Perm::Read, rt)?;
    if rt == "OperationDefinition"
        && let Some(mut def) = super::operation::definition(id.as_str())
    {
        let rebased = def
            .get("url")
            .and_then(serde_json::Value::as_str)
            .map(|u| ctx.finance.rebase(u));
        if let (Some(url), Some(o)) = (rebased, def.as_object_mut()) {
            o.insert("url".into(), url.into());
        }
        // the definitions of this server's own operations are part of the server
        let mut r = FhirResponse::new(Status::Ok);
        r.body = Some(Body::Json(def));
        return Ok(r);
    }
    if let Some(artifact) = ctx.finance.get(rt, id.as_str()) {
        // the credit extension's published definitions are part of the server too
        let mut r = FhirResponse::new(Status::Ok);
        r.body = Some(Body::Json(artifact.clone()));
        return Ok(r);
    }
    let current = ctx.store.read(rt, id.as_str()).await?;
    if current.is_some() {
        // forbidden looks like unknown; a deleted resource by its last live version
        ctx.guard
            .check_stored(ctx, Perm::Read, rt, id.as_str())
            .await?;
    }
    respond(rt, id.as_str(), current, pre)
}

/// The read response for the current version `current` of `rt/id` (None: never existed).
pub(super) fn respond(
    rt: &str,
    id: &str,
    current: Option<StoredVersion>,
    pre: &Preconditions,
) -> Result<FhirResponse, Outcome> {
    let Some(v) = current else {
        return Err(Outcome::not_found(format!("{rt}/{id} is not known")));
    };
    if v.deleted {
        return Err(Outcome::new(
            ErrorKind::Gone,
            format!("{rt}/{id} was deleted (version {})", v.version),
        ));
    }
    let not_modified = match pre.if_none_match {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Version(n)) => n == v.version,
        // If-None-Match, when present, decides alone (RFC 9110 13.2.2)
        None => pre
            .if_modified_since
            .is_some_and(|since| v.last_updated.truncate_to_second() <= since),
    };
    let mut response = FhirResponse::new(if not_modified {
        Status::NotModified
    } else {
        Status::Ok
    });
    if !not_modified {
        response.body = v.body.clone().map(Body::Raw);
    }
    response.version = Some(v.version);
    response.last_modified = Some(v.last_updated);
    Ok(response)
}
