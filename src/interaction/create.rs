//! create (`POST [base]/[type]`), with If-None-Exist (conditional create).

use super::write::{check_body_type, existing, put_version};
use super::{Context, FhirResponse, Preconditions, Status, conditional, resource_type};
use crate::fhir::outcome::Outcome;
use crate::fhir::types::Id;
use crate::store::Method;
use serde_json::Value;

pub(super) async fn create(
    ctx: &Context,
    base: &str,
    resource_type_name: &str,
    mut resource: Value,
    pre: &Preconditions,
) -> Result<FhirResponse, Outcome> {
    let rt = resource_type(ctx, resource_type_name)?;
    check_body_type(&resource, rt)?;
    // "If an id is provided, the server SHALL ignore it."
    if let Some(obj) = resource.as_object_mut() {
        obj.shift_remove("id");
        obj.shift_remove("_id");
    }
    ctx.validator.validate(&resource)?;
    let mut tx = ctx.store.begin().await?;
    if let Some(query) = &pre.if_none_exist
        && let Some(found) = conditional::resolve(tx.as_mut(), rt, query).await?
    {
        let current = tx
            .current(rt, &found)
            .await?
            .ok_or_else(|| Outcome::internal("A matched resource has no current version"))?;
        return Ok(existing(base, &current, Status::Ok));
    }
    let id = Id::generate();
    let response = put_version(
        tx.as_mut(),
        base,
        rt,
        id.as_str(),
        resource,
        Method::Post,
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(response)
}
