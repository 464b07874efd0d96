//! delete (`DELETE [base]/[type]/[id]`) and conditional delete (`DELETE [base]/[type]?…`).
//! Logical and idempotent: deleting a deleted or unknown resource writes nothing and
//! answers 204, as http.html allows.

use super::write::{check_if_match, delete_version};
use super::{Context, FhirResponse, Preconditions, Status, Target, conditional, resource_type};
use crate::fhir::outcome::{Issue, Outcome};
use crate::fhir::types::Id;

pub(super) async fn delete(
    ctx: &Context,
    resource_type_name: &str,
    target: Target,
    pre: &Preconditions,
) -> Result<FhirResponse, Outcome> {
    let rt = resource_type(ctx, resource_type_name)?;
    let mut tx = ctx.store.begin().await?;
    let id = match target {
        Target::Id(id) => Id::parse(&id)?.as_str().to_string(),
        Target::Criteria(query) => match conditional::resolve(tx.as_mut(), rt, &query).await? {
            Some(id) => id,
            None => return Ok(nothing_deleted("No resource matches the criteria")),
        },
    };
    tx.lock_resource(rt, &id).await?;
    let current = tx.current(rt, &id).await?;
    match current {
        None => Ok(nothing_deleted(&format!("{rt}/{id} does not exist"))),
        Some(c) if c.deleted => {
            let mut r = nothing_deleted(&format!("{rt}/{id} was already deleted"));
            r.version = Some(c.version);
            Ok(r)
        }
        Some(c) => {
            check_if_match(Some(&c), pre.if_match)?;
            let response = delete_version(tx.as_mut(), &c).await?;
            tx.commit().await?;
            Ok(response)
        }
    }
}

fn nothing_deleted(why: &str) -> FhirResponse {
    let mut r = FhirResponse::new(Status::NoContent);
    r.issues.push(Issue::information("informational", why));
    r
}
