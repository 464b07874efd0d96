//! `Appointment/$book` (Argonaut Scheduling): in `appt-resource`, an Appointment that
//! references its Slot(s) and participants (a proposal from `$find`, or the Appointment
//! itself as the body); out the booked Appointment (201). The Appointment is created with
//! status `booked` through the ordinary write path, whose scheduling rules make its slots
//! busy in the same transaction — a slot busy or held for someone else is a 409 and nothing
//! is written. A patient books only for themselves (their token's compartment), a
//! practitioner for patients in their care.

use super::OperationRequest;
use super::params::invalid;
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::interaction::scheduling::{patient_of, slot_ids};
use crate::interaction::session::Session;
use crate::interaction::{Context, FhirResponse, create, integrity};
use serde_json::{Value, json};

/// An instant of a slot, in ms, with its text.
type Bound = Option<(i64, Value)>;

/// The Appointment of a `$book` or `$hold`: the `appt-resource` parameter or the body.
/// A patient token's own patient is added as a participant when none is named; the slots
/// fill in `start` and `end` when they are missing.
pub(super) async fn appointment_input(
    ctx: &Context,
    op: &OperationRequest,
) -> Result<Value, Outcome> {
    let mut appointment = match op.param("appt-resource") {
        Some(v) => v,
        None => match &op.body {
            Some(b) if b.get("resourceType").and_then(Value::as_str) == Some("Appointment") => {
                b.clone()
            }
            _ => {
                return Err(invalid(
                    "appt-resource",
                    "appt-resource (an Appointment referencing its Slots) is required",
                ));
            }
        },
    };
    if appointment.get("resourceType").and_then(Value::as_str) != Some("Appointment") {
        return Err(invalid(
            "appt-resource",
            "appt-resource must be an Appointment",
        ));
    }
    let slots = slot_ids(&appointment);
    if slots.is_empty() {
        return Err(Outcome::new(
            ErrorKind::Invalid,
            "The Appointment references no Slot of this server",
        )
        .at("Appointment.slot"));
    }
    if slots.len() > 20 {
        return Err(
            Outcome::new(ErrorKind::Invalid, "An Appointment books at most 20 slots")
                .at("Appointment.slot"),
        );
    }
    let own = ctx
        .guard
        .principal()
        .and_then(|p| p.patient(Perm::Create, "Appointment"))
        .map(|p| format!("Patient/{p}"));
    let Some(obj) = appointment.as_object_mut() else {
        return Err(invalid(
            "appt-resource",
            "appt-resource must be an Appointment",
        ));
    };
    if patient_of(&Value::Object(obj.clone())).is_none() {
        let Some(p) = own else {
            return Err(Outcome::new(
                ErrorKind::Invalid,
                "The Appointment names no Patient participant",
            )
            .at("Appointment.participant"));
        };
        let mut participants = obj
            .get("participant")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        participants.push(json!({"actor": {"reference": p}, "status": "accepted"}));
        obj.insert("participant".into(), Value::Array(participants));
    }
    if !obj.contains_key("start") || !obj.contains_key("end") {
        // the slots' span (a slot that does not exist is refused when the slots are locked)
        let (mut first, mut last): (Bound, Bound) = (None, None);
        for id in &slots {
            let Some(slot) = ctx
                .store
                .read("Slot", id)
                .await?
                .filter(|v| !v.deleted)
                .and_then(|v| v.body)
                .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            else {
                continue;
            };
            let at = |name: &str| {
                slot.get(name).and_then(|v| {
                    let ms = crate::search::dates::range(v.as_str()?)?.0;
                    Some((ms, v.clone()))
                })
            };
            if let Some(s) = at("start")
                && first.as_ref().is_none_or(|f| s.0 < f.0)
            {
                first = Some(s);
            }
            if let Some(e) = at("end")
                && last.as_ref().is_none_or(|l| e.0 > l.0)
            {
                last = Some(e);
            }
        }
        if let (Some((_, start)), Some((_, end))) = (first, last) {
            obj.entry("start").or_insert(start);
            obj.entry("end").or_insert(end);
        }
    }
    Ok(appointment)
}

pub(super) async fn book(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    ctx.guard.require(Perm::Create, "Appointment")?;
    let mut appointment = appointment_input(ctx, op).await?;
    match appointment.get("status").and_then(Value::as_str) {
        None | Some("proposed" | "pending" | "booked") => {}
        Some(other) => {
            return Err(Outcome::new(
                ErrorKind::Invalid,
                format!(
                    "$book books a proposed, pending or booked Appointment, not a {} one",
                    other.chars().take(32).collect::<String>()
                ),
            )
            .at("Appointment.status"));
        }
    }
    if let Some(obj) = appointment.as_object_mut() {
        obj.insert("status".into(), Value::from("booked"));
        // a booking records when it was made
        obj.entry("created").or_insert_with(|| {
            Value::from(
                crate::fhir::types::Instant::now()
                    .to_fhir()
                    .chars()
                    .take(10)
                    .collect::<String>(),
            )
        });
    }
    let (rt, appointment) = create::prepare(ctx, "Appointment", appointment)?;
    let mut s = Session::begin(ctx, base).await?;
    let written = create::create_in(&mut s, rt, appointment, None, None).await?;
    integrity::finish(s).await?;
    Ok(written)
}
