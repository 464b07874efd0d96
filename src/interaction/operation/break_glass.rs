//! `POST [base]/Patient/[id]/$break-glass` (Healporium's own operation): a practitioner
//! without a care relationship gets short-lived access to one patient in an emergency. The
//! reason is required; the grant and its reason are recorded as an AuditEvent in the
//! patient's compartment (`purposeOfEvent` BTG), so the patient and the administrators see
//! who broke the glass, when and why. The grant lasts `--break-glass-ttl` and then simply
//! stops counting.

use super::OperationRequest;
use crate::auth::Policy;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::{Id, Instant};
use crate::interaction::{Body, Context, FhirResponse, Status, audit, guard};
use crate::store::auth::AccessGrantRow;
use serde_json::{Value, json};

/// The longest reason kept.
const MAX_REASON: usize = 1000;

pub(super) async fn break_glass(
    ctx: &Context,
    _base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    if op.resource_type.as_deref() != Some("Patient") {
        return Err(Outcome::new(
            ErrorKind::BadRequest,
            "$break-glass is defined on Patient instances",
        ));
    }
    let id = Id::parse(op.id.as_deref().unwrap_or(""))?;
    let reason = match op.param("reason") {
        Some(Value::String(r)) if !r.trim().is_empty() => r.trim().to_string(),
        _ => {
            return Err(Outcome::bad_request(
                "$break-glass needs a reason (a string parameter 'reason')",
            )
            .at("Parameters.parameter.where(name = 'reason')"));
        }
    };
    if reason.chars().count() > MAX_REASON {
        return Err(Outcome::bad_request(format!(
            "The reason is longer than {MAX_REASON} characters"
        ))
        .at("Parameters.parameter.where(name = 'reason')"));
    }
    let now = Instant::now().millis();
    let Some(principal) = ctx.guard.principal() else {
        // authorization is off: every patient is visible already, nothing to grant
        return Ok(answer(id.as_str(), &reason, now, false));
    };
    let allowed = principal
        .role
        .and_then(|r| Policy::get().role(r))
        .is_some_and(|r| r.break_glass);
    let (Some(user), true) = (principal.user.clone(), allowed) else {
        return Err(Outcome::new(
            ErrorKind::Forbidden,
            "Only practitioners signed in as themselves may break the glass",
        ));
    };
    match ctx.store.read("Patient", id.as_str()).await? {
        Some(v) if !v.deleted => {}
        _ => return Err(guard::hidden("Patient", id.as_str())),
    }
    let expires = now + ctx.break_glass_ttl_ms;
    // the record first: a grant never exists without its AuditEvent
    if ctx.audit {
        let record = audit::Record {
            subtype: "$break-glass".to_string(),
            action: "E",
            status: 200,
            patients: vec![format!("Patient/{id}")],
            description: Some("$break-glass".to_string()),
            ..audit::Record::default()
        };
        let mut ev = audit::event(&ctx.requester, &record);
        if let Some(obj) = ev.as_object_mut() {
            obj.insert(
                "purposeOfEvent".into(),
                json!([{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                    "code": "BTG",
                    "display": "break the glass"
                }]}]),
            );
        }
        if let Some(Value::Array(entities)) = ev.get_mut("entity")
            && let Some(Value::Object(first)) = entities.first_mut()
        {
            first.insert(
                "detail".into(),
                json!([{"type": "reason", "valueString": reason}]),
            );
        }
        audit::append_all(ctx, vec![ev]).await?;
    }
    ctx.store
        .auth()
        .insert_access_grant(&AccessGrantRow {
            id: uuid::Uuid::new_v4().to_string(),
            username: user,
            patient: id.to_string(),
            reason: reason.clone(),
            created: now,
            expires,
        })
        .await?;
    Ok(answer(id.as_str(), &reason, expires, true))
}

fn answer(patient: &str, reason: &str, expires: i64, granted: bool) -> FhirResponse {
    let expires = Instant::from_millis(expires).to_fhir();
    let mut params = vec![
        json!({"name": "patient", "valueReference": {"reference": format!("Patient/{patient}")}}),
        json!({"name": "reason", "valueString": reason}),
        json!({"name": "granted", "valueBoolean": granted}),
    ];
    if granted {
        params.push(json!({"name": "expires", "valueInstant": expires}));
    }
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(
        json!({"resourceType": "Parameters", "parameter": params}),
    ));
    r
}
