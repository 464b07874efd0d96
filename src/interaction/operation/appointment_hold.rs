//! `Appointment/$hold` (Argonaut Scheduling): holds an Appointment's slots for its patient
//! for five minutes while they confirm. In `appt-resource` as for `$book`; the slots become
//! `busy-tentative` with a `slot-hold` extension (its expiry and an opaque key of the
//! patient — a Slot is shared data and names no patient). Out the Appointment, `pending`,
//! with the hold's expiry; nothing else is stored. `$find` stops offering a held slot to
//! others, `$book` refuses it to others (409) and accepts it for the holder; an expired hold
//! is free again (and the scheduling job sets such slots back to `free`).

use super::OperationRequest;
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::Instant;
use crate::interaction::scheduling::{
    HOLD_EXPIRES_URL, HOLD_MS, SlotState, holder_key, lock_slots, patient_of, slot_ids, slot_state,
    with_status,
};
use crate::interaction::session::Session;
use crate::interaction::write::write_slot;
use crate::interaction::{Body, Context, FhirResponse, Status, integrity};
use serde_json::{Value, json};

pub(super) async fn hold(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    ctx.guard.require(Perm::Create, "Appointment")?;
    let mut appointment = super::appointment_book::appointment_input(ctx, op).await?;
    // the hold must be one the caller could book: the Appointment validates, and its
    // patient is one the token may write for
    let probe = {
        let mut a = appointment.clone();
        if let Some(obj) = a.as_object_mut() {
            obj.insert("status".into(), Value::from("pending"));
        }
        crate::interaction::create::prepare(ctx, "Appointment", a)?.1
    };
    let patient = patient_of(&probe).ok_or_else(|| {
        Outcome::new(
            ErrorKind::Invalid,
            "The Appointment names no Patient participant",
        )
        .at("Appointment.participant")
    })?;
    let mut s = Session::begin(ctx, base).await?;
    let (guard, registry) = (s.guard.clone(), s.registry.clone());
    guard
        .check_content(s.tx(), &registry, Perm::Create, "Appointment", &probe)
        .await?;
    let now = Instant::now().millis();
    let expires = now + HOLD_MS;
    let ids = slot_ids(&probe);
    for (current, slot) in lock_slots(&mut s, &ids, "Appointment.slot").await? {
        let key = holder_key(&current.id, &patient);
        let state = slot_state(&slot, now);
        let ours = matches!(&state, SlotState::Held(h, _) if *h == key);
        if state != SlotState::Free && !ours {
            let why = match state {
                SlotState::Held(..) => format!("Slot/{} is held for another booking", current.id),
                SlotState::Taken(status) => {
                    format!("Slot/{} is not free (its status is {status})", current.id)
                }
                SlotState::Free => String::new(),
            };
            return Err(Outcome::new(ErrorKind::Conflict, why).at("Appointment.slot"));
        }
        let held = with_status(slot, "busy-tentative", Some((&key, expires)));
        write_slot(&mut s, &current, held).await?;
    }
    integrity::finish(s).await?;
    if let Some(obj) = appointment.as_object_mut() {
        obj.insert("status".into(), Value::from("pending"));
        let mut extensions = obj
            .get("extension")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        extensions.push(json!({"url": HOLD_EXPIRES_URL,
            "valueInstant": Instant::from_millis(expires).to_fhir()}));
        obj.insert("extension".into(), Value::Array(extensions));
    }
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(appointment));
    Ok(r)
}
