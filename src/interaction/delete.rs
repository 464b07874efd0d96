//! delete (`DELETE [base]/[type]/[id]`) and conditional delete (`DELETE [base]/[type]?…`).
//! Logical and idempotent: deleting a deleted or unknown resource writes nothing and
//! answers 204, as http.html allows. With referential integrity on, a resource others
//! reference is not deleted (409) unless `_cascade=delete` deletes them too.

use super::session::Session;
use super::write::{check_if_match, delete_version};
use super::{FhirResponse, Status, Target, conditional};
use crate::fhir::outcome::{Issue, Outcome};
use crate::fhir::types::{Id, VersionId};

pub(super) async fn delete_in(
    s: &mut Session,
    rt: &str,
    target: &Target,
    if_match: Option<VersionId>,
) -> Result<FhirResponse, Outcome> {
    let id = match target {
        Target::Id(id) => Id::parse(id)?.as_str().to_string(),
        Target::Criteria(query) => match conditional::resolve(s, rt, query).await? {
            Some(id) => id,
            None => return Ok(nothing_deleted("No resource matches the criteria")),
        },
    };
    s.tx().lock_resource(rt, &id).await?;
    let current = s.tx().current(rt, &id).await?;
    match current {
        None => Ok(nothing_deleted(&format!("{rt}/{id} does not exist"))),
        Some(c) if c.deleted => {
            let mut r = nothing_deleted(&format!("{rt}/{id} was already deleted"));
            r.version = Some(c.version);
            Ok(r)
        }
        Some(c) => {
            check_if_match(Some(&c), if_match)?;
            delete_version(s, &c).await
        }
    }
}

fn nothing_deleted(why: &str) -> FhirResponse {
    let mut r = FhirResponse::new(Status::NoContent);
    r.issues.push(Issue::information("informational", why));
    r
}
