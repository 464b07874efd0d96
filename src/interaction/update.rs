//! update (`PUT [base]/[type]/[id]`, including update-as-create with a client id) and
//! conditional update (`PUT [base]/[type]?criteria`).

use super::write::{check_body_type, check_if_match, put_version};
use super::{Context, FhirResponse, Preconditions, Target, conditional, resource_type};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::resource::id_of;
use crate::fhir::types::Id;
use crate::store::{Method, Transaction};
use serde_json::Value;

pub(super) async fn update(
    ctx: &Context,
    base: &str,
    resource_type_name: &str,
    target: Target,
    resource: Value,
    pre: &Preconditions,
) -> Result<FhirResponse, Outcome> {
    let rt = resource_type(ctx, resource_type_name)?;
    check_body_type(&resource, rt)?;
    let body_id = id_of(&resource).map(str::to_string);
    if resource.get("id").is_some() && body_id.is_none() {
        return Err(Outcome::bad_request("The body id must be a string").at(format!("{rt}.id")));
    }
    match target {
        Target::Id(id) => {
            let id = Id::parse(&id)?;
            match body_id.as_deref() {
                None => {
                    return Err(Outcome::bad_request(
                        "An update body must carry the id of the URL",
                    )
                    .at(format!("{rt}.id")));
                }
                Some(b) if b != id.as_str() => {
                    return Err(Outcome::bad_request(format!(
                        "The body id does not match the URL id {id}"
                    ))
                    .at(format!("{rt}.id")));
                }
                Some(_) => {}
            }
            ctx.validator.validate(&resource)?;
            let mut tx = ctx.store.begin().await?;
            let response = update_in(tx.as_mut(), base, rt, id.as_str(), resource, pre).await?;
            tx.commit().await?;
            Ok(response)
        }
        Target::Criteria(query) => {
            ctx.validator.validate(&resource)?;
            let mut tx = ctx.store.begin().await?;
            let found = conditional::resolve(tx.as_mut(), rt, &query).await?;
            let id = match (found, body_id) {
                (Some(found), Some(b)) if b != found => {
                    return Err(Outcome::bad_request(format!(
                        "The body id {b} is not the id of the resource the criteria match"
                    ))
                    .at(format!("{rt}.id")));
                }
                (Some(found), _) => found,
                (None, Some(b)) => {
                    // No match and a client id: update-as-create, unless that id is taken.
                    let id = Id::parse(&b)?;
                    tx.lock_resource(rt, id.as_str()).await?;
                    if tx
                        .current(rt, id.as_str())
                        .await?
                        .is_some_and(|c| !c.deleted)
                    {
                        return Err(Outcome::new(
                            ErrorKind::Conflict,
                            format!("{rt}/{id} exists but does not match the criteria"),
                        ));
                    }
                    id.as_str().to_string()
                }
                (None, None) => Id::generate().as_str().to_string(),
            };
            let response = update_in(tx.as_mut(), base, rt, &id, resource, pre).await?;
            tx.commit().await?;
            Ok(response)
        }
    }
}

async fn update_in(
    tx: &mut dyn Transaction,
    base: &str,
    rt: &str,
    id: &str,
    resource: Value,
    pre: &Preconditions,
) -> Result<FhirResponse, Outcome> {
    tx.lock_resource(rt, id).await?;
    let current = tx.current(rt, id).await?;
    check_if_match(current.as_ref(), pre.if_match)?;
    put_version(tx, base, rt, id, resource, Method::Put, current.as_ref()).await
}
