//! vread (`GET [base]/[type]/[id]/_history/[vid]`).

use super::{Body, Context, FhirResponse, Status, resource_type};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::Id;

pub(super) async fn vread(
    ctx: &Context,
    resource_type_name: &str,
    id: &str,
    version: &str,
) -> Result<FhirResponse, Outcome> {
    let rt = resource_type(ctx, resource_type_name)?;
    let id = Id::parse(id)?;
    let missing = || {
        Outcome::not_found(format!(
            "{rt}/{id} has no version {}",
            version.chars().take(20).collect::<String>()
        ))
    };
    let Ok(n) = version.parse::<i64>() else {
        return Err(missing());
    };
    let Some(v) = ctx.store.vread(rt, id.as_str(), n).await? else {
        return Err(missing());
    };
    if v.deleted {
        return Err(Outcome::new(
            ErrorKind::Gone,
            format!("Version {n} of {rt}/{id} is a deletion"),
        ));
    }
    let mut response = FhirResponse::new(Status::Ok);
    response.body = v.body.clone().map(Body::Raw);
    response.version = Some(v.version);
    response.last_modified = Some(v.last_updated);
    Ok(response)
}
