//! `POST [base]/Claim/[id]/$defer`: puts what the patient owes on a claim's latest
//! adjudication onto their credit line — `$credit-draw` with the newest ClaimResponse of the
//! claim as the source. In `creditLine` (Reference to the line Account), optional `plan`,
//! `termMonths`, `requestId`; out as `$credit-draw`. A claim not adjudicated yet, or whose
//! latest ClaimResponse is queued for review, is 409.

use super::params::{invalid, reference};
use super::{OperationMethod, OperationRequest};
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::Id;
use crate::interaction::search::{SearchRequest, SearchScope};
use crate::interaction::{Context, FhirResponse};
use serde_json::{Value, json};

pub(super) async fn defer(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let claim_id = Id::parse(op.id.as_deref().unwrap_or(""))?;
    let (_, line) = reference(op, "creditLine", &["Account"])?.ok_or_else(|| {
        invalid(
            "creditLine",
            "creditLine (Reference to the patient's credit line Account) is required",
        )
    })?;
    ctx.guard.require(Perm::Read, "Claim")?;
    super::credit_draw::read_visible(ctx, "Claim", claim_id.as_str()).await?;
    // the claim's newest adjudication the caller may see
    let found = crate::interaction::search::search(
        ctx,
        base,
        SearchRequest {
            scope: SearchScope::Type("ClaimResponse".into()),
            pairs: vec![
                ("request".into(), format!("Claim/{claim_id}")),
                ("_sort".into(), "-_lastUpdated".into()),
                ("_count".into(), "1".into()),
            ],
            strict: true,
            paging: false,
        },
    )
    .await?;
    let bundle = found.body_value()?;
    let Some(response) = bundle.pointer("/entry/0/resource") else {
        return Err(Outcome::new(
            ErrorKind::Conflict,
            format!("Claim/{claim_id} has no ClaimResponse yet: submit it first"),
        ));
    };
    let response_id = response.get("id").and_then(Value::as_str).unwrap_or("");
    if response.get("outcome").and_then(Value::as_str) == Some("queued") {
        return Err(Outcome::new(
            ErrorKind::Conflict,
            format!(
                "The latest adjudication of Claim/{claim_id} (ClaimResponse/{response_id}) is queued for review: what the patient owes is not known yet"
            ),
        ));
    }
    let mut parameters = vec![json!({"name": "source",
        "valueReference": {"reference": format!("ClaimResponse/{response_id}")}})];
    for name in ["plan", "termMonths", "requestId", "amount"] {
        if let Some(p) = op
            .body
            .as_ref()
            .and_then(|b| b.get("parameter"))
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            })
        {
            parameters.push(p.clone());
        }
    }
    let draw = OperationRequest {
        name: "credit-draw".into(),
        resource_type: Some("Account".into()),
        id: Some(line),
        version: None,
        method: OperationMethod::Post,
        query: op.query.clone(),
        body: Some(json!({"resourceType": "Parameters", "parameter": parameters})),
        prefer: None,
        accept: None,
    };
    super::credit_draw::draw(ctx, base, &draw).await
}
