//! `Appointment/$find` (Argonaut Scheduling): the free Slots between `start` and `end`,
//! narrowed by `practitioner`, `location` (the Schedule's actors), `specialty`,
//! `service-type` and `visit-type` (the Slot's `appointmentType`), answered as a searchset
//! Bundle of proposed Appointments — one per slot, with the Schedule's actors and the patient
//! as participants. A slot held for another patient is not offered; one held for this
//! patient is. Nothing is written.

use super::OperationRequest;
use super::params::{integer, invalid, reference};
use crate::auth::Perm;
use crate::fhir::outcome::Outcome;
use crate::interaction::scheduling::{SlotState, holder_key, slot_state};
use crate::interaction::search::{SearchRequest, SearchScope};
use crate::interaction::{Body, Context, FhirResponse, Status};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The longest window one `$find` searches.
const MAX_WINDOW_MS: i64 = 92 * 24 * 3_600_000;
/// The most proposals one answer holds.
const MAX_PROPOSALS: i64 = 200;

/// A dateTime parameter, as given, with its earliest instant.
fn date_time(op: &OperationRequest, name: &str) -> Result<(String, i64), Outcome> {
    let text = match op.param(name) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err(invalid(name, format!("{name} must be a dateTime"))),
        None => return Err(invalid(name, format!("{name} (dateTime) is required"))),
    };
    let (lo, _) = crate::search::dates::range(&text)
        .filter(|_| text.len() <= 40)
        .ok_or_else(|| invalid(name, format!("{name} is not a FHIR dateTime")))?;
    Ok((text, lo))
}

/// A token parameter (`code`, `system|code`, or a Coding), as a search value.
fn token(op: &OperationRequest, name: &str) -> Result<Option<String>, Outcome> {
    let text = match op.param(name) {
        None => return Ok(None),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Object(c)) => {
            let code = c.get("code").and_then(Value::as_str).unwrap_or("");
            match c.get("system").and_then(Value::as_str) {
                Some(system) => format!("{system}|{code}"),
                None => code.to_string(),
            }
        }
        Some(_) => return Err(invalid(name, format!("{name} must be a code or Coding"))),
    };
    if text.is_empty() || text.len() > 512 || text.contains(',') {
        return Err(invalid(name, format!("{name} must be one code")));
    }
    Ok(Some(text))
}

pub(super) async fn find(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    ctx.guard.require(Perm::Search, "Slot")?;
    ctx.guard.require(Perm::Read, "Schedule")?;
    let (start, start_ms) = date_time(op, "start")?;
    let (end, end_ms) = date_time(op, "end")?;
    if end_ms <= start_ms {
        return Err(invalid("end", "end must be after start"));
    }
    if end_ms - start_ms > MAX_WINDOW_MS {
        return Err(invalid("end", "$find searches at most 92 days at a time"));
    }
    let count = integer(op, "_count")?.unwrap_or(50);
    if !(1..=MAX_PROPOSALS).contains(&count) {
        return Err(invalid(
            "_count",
            format!("_count must be 1 to {MAX_PROPOSALS}"),
        ));
    }
    let mut pairs = vec![
        ("status".to_string(), "free,busy-tentative".to_string()),
        ("start".to_string(), format!("ge{start}")),
        ("start".to_string(), format!("lt{end}")),
        ("_sort".to_string(), "start".to_string()),
        ("_count".to_string(), "1000".to_string()),
    ];
    for (name, types) in [
        ("practitioner", &["Practitioner", "PractitionerRole"][..]),
        ("location", &["Location"][..]),
    ] {
        if let Some((t, id)) = reference(op, name, types)? {
            pairs.push(("schedule.actor".into(), format!("{t}/{id}")));
        }
    }
    for (name, param) in [
        ("specialty", "specialty"),
        ("service-type", "service-type"),
        ("visit-type", "appointment-type"),
    ] {
        if let Some(v) = token(op, name)? {
            pairs.push((param.into(), v));
        }
    }
    // whom the proposals are for: the patient in context, or the one named
    let patient = match reference(op, "patient", &["Patient"])? {
        Some((_, id)) => Some(format!("Patient/{id}")),
        None => ctx
            .guard
            .principal()
            .and_then(|p| p.patient(Perm::Create, "Appointment"))
            .map(|p| format!("Patient/{p}")),
    };
    let found = crate::interaction::search::search(
        ctx,
        base,
        SearchRequest {
            scope: SearchScope::Type("Slot".into()),
            pairs,
            strict: true,
            paging: false,
        },
    )
    .await?
    .body_value()?;
    let now = crate::fhir::types::Instant::now().millis();
    let mut actors: HashMap<String, Value> = HashMap::new();
    let mut entries = Vec::new();
    for slot in found
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
    {
        let Some(id) = slot.get("id").and_then(Value::as_str) else {
            continue;
        };
        match slot_state(slot, now) {
            SlotState::Free => {}
            SlotState::Held(holder, _)
                if patient.as_deref().map(|p| holder_key(id, p)).as_ref() == Some(&holder) => {}
            _ => continue,
        }
        let schedule = slot
            .pointer("/schedule/reference")
            .and_then(Value::as_str)
            .and_then(|r| crate::interaction::scheduling::reference_id(r, "Schedule"))
            .unwrap_or_default();
        if !actors.contains_key(&schedule) {
            let body = ctx
                .store
                .read("Schedule", &schedule)
                .await?
                .filter(|v| !v.deleted)
                .and_then(|v| v.body)
                .and_then(|b| serde_json::from_str::<Value>(&b).ok());
            let list = body
                .and_then(|b| b.get("actor").cloned())
                .unwrap_or_else(|| json!([]));
            actors.insert(schedule.clone(), list);
        }
        let mut participants: Vec<Value> = actors
            .get(&schedule)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|a| json!({"actor": a, "required": "required", "status": "needs-action"}))
            .collect();
        if let Some(p) = &patient {
            participants.push(json!({"actor": {"reference": p}, "required": "required",
                "status": "needs-action"}));
        }
        let mut appointment = json!({
            "resourceType": "Appointment",
            "status": "proposed",
            "slot": [{"reference": format!("Slot/{id}")}],
            "participant": participants,
        });
        if let Some(obj) = appointment.as_object_mut() {
            for (from, to) in [
                ("start", "start"),
                ("end", "end"),
                ("serviceCategory", "serviceCategory"),
                ("serviceType", "serviceType"),
                ("specialty", "specialty"),
                ("appointmentType", "appointmentType"),
            ] {
                if let Some(v) = slot.get(from) {
                    obj.insert(to.into(), v.clone());
                }
            }
        }
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": appointment,
            "search": {"mode": "match"},
        }));
        if i64::try_from(entries.len()).unwrap_or(i64::MAX) >= count {
            break;
        }
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries,
    });
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(bundle));
    Ok(r)
}
