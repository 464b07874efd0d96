//! update (`PUT [base]/[type]/[id]`, including update-as-create with a client id) and
//! conditional update (`PUT [base]/[type]?criteria`).

use super::session::Session;
use super::write::{check_body_type, check_if_match, put_version};
use super::{Context, FhirResponse, Target, conditional, resource_type};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::resource::id_of;
use crate::fhir::types::{Id, VersionId};
use crate::store::Method;
use serde_json::Value;

/// Checks an update body against its target: type, id rules, validation.
pub(super) fn prepare<'a>(
    ctx: &'a Context,
    resource_type_name: &str,
    target: &Target,
    resource: &Value,
) -> Result<&'a str, Outcome> {
    let rt = resource_type(ctx, resource_type_name)?;
    check_body_type(resource, rt)?;
    let body_id = id_of(resource);
    if resource.get("id").is_some() && body_id.is_none() {
        return Err(Outcome::bad_request("The body id must be a string").at(format!("{rt}.id")));
    }
    if let Target::Id(id) = target {
        let id = Id::parse(id)?;
        match body_id {
            None => {
                return Err(
                    Outcome::bad_request("An update body must carry the id of the URL")
                        .at(format!("{rt}.id")),
                );
            }
            Some(b) if b != id.as_str() => {
                return Err(Outcome::bad_request(format!(
                    "The body id does not match the URL id {id}"
                ))
                .at(format!("{rt}.id")));
            }
            Some(_) => {}
        }
    }
    ctx.validator.validate(resource)?;
    super::write::check_profiles(ctx, resource)?;
    Ok(rt)
}

/// The id an update writes: the URL's, or the one the criteria match, or (no match) the body's
/// id or a new one.
pub(super) async fn resolve_target(
    s: &mut Session,
    rt: &str,
    target: &Target,
    resource: &Value,
) -> Result<String, Outcome> {
    let query = match target {
        Target::Id(id) => return Ok(id.clone()),
        Target::Criteria(q) => q,
    };
    let found = conditional::resolve(s, rt, query).await?;
    match (found, id_of(resource)) {
        (Some(found), Some(b)) if b != found => Err(Outcome::bad_request(format!(
            "The body id {b} is not the id of the resource the criteria match"
        ))
        .at(format!("{rt}.id"))),
        (Some(found), _) => Ok(found),
        (None, Some(b)) => {
            // No match and a client id: update-as-create, unless that id is taken.
            let id = Id::parse(b)?;
            s.tx().lock_resource(rt, id.as_str()).await?;
            // a resource the token may not see is not said to exist
            let (guard, registry) = (s.guard.clone(), s.registry.clone());
            guard
                .check_in_tx(
                    s.tx(),
                    &registry,
                    crate::auth::Perm::Update,
                    rt,
                    id.as_str(),
                )
                .await?;
            if s.tx()
                .current(rt, id.as_str())
                .await?
                .is_some_and(|c| !c.deleted)
            {
                return Err(Outcome::new(
                    ErrorKind::Conflict,
                    format!("{rt}/{id} exists but does not match the criteria"),
                ));
            }
            Ok(id.as_str().to_string())
        }
        (None, None) => Ok(Id::generate().as_str().to_string()),
    }
}

/// Writes a prepared resource as the next version of `rt/id`.
pub(super) async fn update_in(
    s: &mut Session,
    rt: &str,
    id: &str,
    resource: Value,
    if_match: Option<VersionId>,
) -> Result<FhirResponse, Outcome> {
    s.tx().lock_resource(rt, id).await?;
    let current = s.tx().current(rt, id).await?;
    check_if_match(current.as_ref(), if_match)?;
    put_version(s, rt, id, resource, Method::Put, current.as_ref()).await
}
