//! The scheduling job: generates the free Slots a Schedule's weekly availability asks for
//! over its planning horizon (ids derived from the Schedule and the start, so every node and
//! every run agree and a slot is made once; a slot that exists or existed is never
//! touched), and sets slots whose `$hold` expired back to `free`.

use super::Context;
use super::guard::Guard;
use super::scheduling::{
    SlotState, availability, generated_slot_id, lock_slots, slot_state, slot_times, with_status,
};
use super::session::Session;
use crate::fhir::outcome::Outcome;
use crate::fhir::types::Instant;
use crate::store::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The periodic scheduling work for one Schedule (`Some`) or all: generates the free Slots
/// their availability asks for from `now` on (never touching a slot that exists or existed),
/// and frees slots whose hold expired. Returns the slots created.
pub async fn run_slots_job(
    ctx: &Context,
    schedule: Option<&str>,
    now: i64,
) -> Result<usize, Outcome> {
    let server = Context {
        guard: Guard::open(),
        ..ctx.clone()
    };
    let mut src = super::guard::Src::Store(ctx.store.as_ref());
    let ids = match schedule {
        Some(id) => vec![id.to_string()],
        None => src.find("Schedule", &[], 100_000).await?,
    };
    let mut created = 0;
    for id in ids {
        created += generate(&server, &id, now).await?;
    }
    if schedule.is_none() {
        release_expired_holds(&server, now).await?;
    }
    Ok(created)
}

async fn generate(server: &Context, schedule_id: &str, now: i64) -> Result<usize, Outcome> {
    let Some(schedule) = server
        .store
        .read("Schedule", schedule_id)
        .await?
        .filter(|v| !v.deleted)
        .and_then(|v| v.body)
        .and_then(|b| serde_json::from_str::<Value>(&b).ok())
    else {
        return Ok(0);
    };
    if schedule.get("active") == Some(&Value::Bool(false)) {
        return Ok(0);
    }
    let Ok(Some(a)) = availability(&schedule) else {
        return Ok(0); // refused on write; an older stored one generates nothing
    };
    let times = slot_times(&a, now);
    if times.is_empty() {
        return Ok(0);
    }
    let mut s = Session::begin(server, "").await?;
    s.tx()
        .lock_key(&format!("schedule-slots:{schedule_id}"))
        .await?;
    let mut created = 0;
    for (start, end) in times {
        let id = generated_slot_id(schedule_id, start);
        if s.tx().current("Slot", &id).await?.is_some() {
            continue; // booked, changed or deleted by its practitioner: theirs
        }
        let mut slot = json!({
            "resourceType": "Slot",
            "schedule": {"reference": format!("Schedule/{schedule_id}")},
            "status": "free",
            "start": Instant::from_millis(start).to_fhir(),
            "end": Instant::from_millis(end).to_fhir(),
        });
        for copied in ["serviceCategory", "serviceType", "specialty"] {
            if let (Some(v), Some(obj)) = (schedule.get(copied), slot.as_object_mut()) {
                obj.insert(copied.into(), v.clone());
            }
        }
        super::write::put_version(&mut s, "Slot", &id, slot, Method::Post, None).await?;
        created += 1;
    }
    super::integrity::finish(s).await?;
    Ok(created)
}

async fn release_expired_holds(server: &Context, now: i64) -> Result<(), Outcome> {
    use crate::search::query::{Filter, Pred};
    let tentative = [Filter::Param {
        param: "status".into(),
        preds: vec![Pred::Token {
            system: None,
            code: Some("busy-tentative".into()),
        }],
        negate: false,
    }];
    let ids = super::guard::Src::Store(server.store.as_ref())
        .find("Slot", &tentative, 10_000)
        .await?;
    for id in ids {
        let mut s = Session::begin(server, "").await?;
        let set: BTreeSet<String> = [id].into_iter().collect();
        let mut changed = false;
        for (current, slot) in lock_slots(&mut s, &set, "Slot").await? {
            if slot_state(&slot, now) == SlotState::Free
                && slot.get("status") != Some(&"free".into())
            {
                super::write::write_slot(&mut s, &current, with_status(slot, "free", None)).await?;
                changed = true;
            }
        }
        if changed {
            super::integrity::finish(s).await?;
        }
    }
    Ok(())
}
