//! Scheduling on Schedule, Slot and Appointment: the rules every write of them obeys, on
//! every path (REST, PATCH, Bundles, `$book`). An Appointment that occupies a Slot makes it
//! `busy` in the same transaction, and one that stops occupying it (cancelled,
//! entered-in-error, deleted, the slot taken off) frees it; a slot that is busy, or held
//! (`$hold`) for another patient, is a 409. Slots are locked (sorted, one key each) before
//! they are read, so concurrent bookings of one slot — on one node or many — serialize and
//! exactly one wins. A practitioner user writes only Schedules that name them (directly or
//! through one of their PractitionerRoles) and the Slots of those Schedules. A Schedule's
//! weekly availability (the `schedule-availability` extension, docs/scheduling.md)
//! generates free Slots over its planning horizon, from a job, never touching a slot that
//! exists already.

use super::session::Session;
use crate::auth::Role;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::{Id, Instant};
use crate::store::StoredVersion;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// The weekly availability of a Schedule.
pub const AVAILABILITY_URL: &str =
    "https://healporium.example/fhir/StructureDefinition/schedule-availability";
/// A hold on a Slot (`$hold`): when it expires and an opaque key of whom it is for.
pub const HOLD_URL: &str = "https://healporium.example/fhir/StructureDefinition/slot-hold";
/// On the Appointment `$hold` answers with: when the hold on its slots ends.
pub const HOLD_EXPIRES_URL: &str =
    "https://healporium.example/fhir/StructureDefinition/appointment-hold-expires";
/// The job that generates Slots from availability and releases expired holds (with payload
/// `{"schedule": id}` for one Schedule, `{}` for all).
pub const SLOTS_JOB: &str = "schedule-slots";
/// How long a `$hold` lasts.
pub const HOLD_MS: i64 = 5 * 60_000;
/// The longest planning horizon an availability may ask for.
const MAX_HORIZON_DAYS: i64 = 366;
/// The shortest slot.
const MIN_SLOT_MINUTES: i64 = 5;

/// The Appointment statuses that occupy their slots.
const OCCUPYING: &[&str] = &[
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "checked-in",
    "noshow",
];

/// Whether an Appointment occupies the slots it references.
pub fn occupies(appointment: &Value) -> bool {
    appointment
        .get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| OCCUPYING.contains(&s))
}

/// The id in a reference to a `resource_type` (relative, absolute or versioned).
pub fn reference_id(reference: &str, resource_type: &str) -> Option<String> {
    let parts: Vec<&str> = reference.split('/').collect();
    let at = parts.iter().rposition(|p| *p == resource_type)?;
    parts
        .get(at + 1)
        .filter(|id| Id::parse(id).is_ok())
        .map(|id| (*id).to_string())
}

/// The Slot ids an Appointment references, sorted and without repeats.
pub fn slot_ids(appointment: &Value) -> BTreeSet<String> {
    appointment
        .get("slot")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("reference").and_then(Value::as_str))
        .filter_map(|r| reference_id(r, "Slot"))
        .collect()
}

/// The patient an Appointment is for (its first Patient participant), as `Patient/id`.
pub fn patient_of(appointment: &Value) -> Option<String> {
    appointment
        .get("participant")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.pointer("/actor/reference").and_then(Value::as_str))
        .find_map(|r| reference_id(r, "Patient"))
        .map(|id| format!("Patient/{id}"))
}

/// The opaque key of a hold on `slot` for `patient`: a Slot is shared data every user reads,
/// so it names no patient.
pub fn holder_key(slot: &str, patient: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"healporium-slot-hold\0");
    h.update(slot.as_bytes());
    h.update([0]);
    h.update(patient.as_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a Slot offers at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    Free,
    /// Held (until the instant, in ms) for the holder key.
    Held(String, i64),
    /// Not bookable: its status.
    Taken(String),
}

fn hold_of(slot: &Value) -> Option<(String, i64)> {
    let ext = slot
        .get("extension")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(HOLD_URL))?;
    let part = |name: &str| {
        ext.get("extension")
            .and_then(Value::as_array)?
            .iter()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(name))
            .cloned()
    };
    let holder = part("holder")?.get("valueString")?.as_str()?.to_string();
    let expires = part("expires")?
        .get("valueInstant")?
        .as_str()
        .and_then(crate::search::dates::range)?
        .0;
    Some((holder, expires))
}

/// The state of a Slot at `now` (ms): an expired hold is free again.
pub fn slot_state(slot: &Value, now: i64) -> SlotState {
    let status = slot.get("status").and_then(Value::as_str).unwrap_or("");
    match status {
        "free" => SlotState::Free,
        "busy-tentative" => match hold_of(slot) {
            Some((_, expires)) if expires <= now => SlotState::Free,
            Some((holder, expires)) => SlotState::Held(holder, expires),
            None => SlotState::Taken(status.to_string()),
        },
        other => SlotState::Taken(other.to_string()),
    }
}

/// `slot` with `status` and without a hold (or with `hold`).
pub fn with_status(mut slot: Value, status: &str, hold: Option<(&str, i64)>) -> Value {
    if let Some(obj) = slot.as_object_mut() {
        obj.insert("status".into(), Value::from(status));
        let mut extensions: Vec<Value> = obj
            .get("extension")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        extensions.retain(|e| e.get("url").and_then(Value::as_str) != Some(HOLD_URL));
        if let Some((holder, expires)) = hold {
            extensions.push(json!({"url": HOLD_URL, "extension": [
                {"url": "expires", "valueInstant": Instant::from_millis(expires).to_fhir()},
                {"url": "holder", "valueString": holder}]}));
        }
        if extensions.is_empty() {
            obj.shift_remove("extension");
        } else {
            obj.insert("extension".into(), Value::Array(extensions));
        }
    }
    slot
}

pub fn conflict(slot: &str, state: &SlotState, at: &str) -> Outcome {
    let why = match state {
        SlotState::Held(_, until) => format!(
            "Slot/{slot} is held for another booking until {}",
            Instant::from_millis(*until).to_fhir()
        ),
        SlotState::Taken(status) => format!("Slot/{slot} is not free (its status is {status})"),
        SlotState::Free => format!("Slot/{slot} is free"),
    };
    Outcome::new(ErrorKind::Conflict, why).at(at)
}

/// Locks the slots (in order: concurrent bookings of overlapping slots cannot deadlock) and
/// reads each live one.
pub(super) async fn lock_slots(
    s: &mut Session,
    ids: &BTreeSet<String>,
    at: &str,
) -> Result<Vec<(StoredVersion, Value)>, Outcome> {
    let mut out = Vec::new();
    for id in ids {
        s.tx().lock_key(&format!("slot:{id}")).await?;
    }
    for id in ids {
        let current = s
            .tx()
            .current("Slot", id)
            .await?
            .filter(|c| !c.deleted)
            .ok_or_else(|| {
                Outcome::new(ErrorKind::Invalid, format!("Slot/{id} does not exist")).at(at)
            })?;
        let body: Value = current
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .ok_or_else(|| Outcome::internal("A stored Slot is not JSON"))?;
        out.push((current, body));
    }
    Ok(out)
}

/// 403 unless a practitioner user's write of a Schedule or Slot (`content`) is to a
/// Schedule of their own; other principals are judged by their scopes and role alone.
pub(super) async fn check_owner(
    s: &mut Session,
    resource_type: &str,
    content: &Value,
) -> Result<(), Outcome> {
    if s.guard.role() != Some(Role::Practitioner) || !matches!(resource_type, "Schedule" | "Slot") {
        return Ok(());
    }
    let forbidden = |why: String| Outcome::new(ErrorKind::Forbidden, why);
    let me = s
        .guard
        .principal()
        .and_then(|p| p.fhir_user.clone())
        .and_then(|u| reference_id(&u, "Practitioner"))
        .ok_or_else(|| {
            forbidden(
                "A practitioner user without a Practitioner record manages no schedule".into(),
            )
        })?;
    let schedule = if resource_type == "Schedule" {
        Some(content.clone())
    } else {
        let id = content
            .pointer("/schedule/reference")
            .and_then(Value::as_str)
            .and_then(|r| reference_id(r, "Schedule"));
        match id {
            Some(id) => read_live(s, "Schedule", &id).await?,
            None => None,
        }
    };
    let owned = match &schedule {
        Some(schedule) => schedule_owned(s, &me, schedule).await?,
        None => false,
    };
    if owned {
        Ok(())
    } else {
        Err(forbidden(format!(
            "A practitioner manages only their own schedules: this {resource_type} is not \
             Practitioner/{me}'s"
        )))
    }
}

async fn read_live(s: &mut Session, rt: &str, id: &str) -> Result<Option<Value>, Outcome> {
    Ok(s.tx()
        .current(rt, id)
        .await?
        .filter(|c| !c.deleted)
        .and_then(|c| c.body)
        .and_then(|b| serde_json::from_str(&b).ok()))
}

/// Whether the Schedule's actors include Practitioner `me` or one of their PractitionerRoles.
async fn schedule_owned(s: &mut Session, me: &str, schedule: &Value) -> Result<bool, Outcome> {
    let actors: Vec<String> = schedule
        .get("actor")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("reference").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    for actor in actors {
        if reference_id(&actor, "Practitioner").as_deref() == Some(me) {
            return Ok(true);
        }
        if let Some(role) = reference_id(&actor, "PractitionerRole")
            && let Some(role) = read_live(s, "PractitionerRole", &role).await?
            && role
                .pointer("/practitioner/reference")
                .and_then(Value::as_str)
                .and_then(|r| reference_id(r, "Practitioner"))
                .as_deref()
                == Some(me)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One weekly window of availability.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub days: Vec<Weekday>,
    pub start: Time,
    pub end: Time,
}

/// A Schedule's weekly availability.
#[derive(Debug, Clone)]
pub struct Availability {
    pub zone: TimeZone,
    pub slot_minutes: i64,
    pub horizon_days: i64,
    pub windows: Vec<Window>,
}

fn parts<'a>(ext: &'a Value, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ext.get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |e| e.get("url").and_then(Value::as_str) == Some(name))
}

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

/// The availability a Schedule declares (None: it declares none), or what is wrong with it
/// as (FHIRPath, message).
pub fn availability(schedule: &Value) -> Result<Option<Availability>, (String, String)> {
    let Some(ext) = schedule
        .get("extension")
        .and_then(Value::as_array)
        .and_then(|es| {
            es.iter()
                .find(|e| e.get("url").and_then(Value::as_str) == Some(AVAILABILITY_URL))
        })
    else {
        return Ok(None);
    };
    let at = |part: &str| format!("Schedule.extension('{AVAILABILITY_URL}').extension('{part}')");
    let zone_name = parts(ext, "timeZone")
        .next()
        .and_then(|z| z.get("valueCode").and_then(Value::as_str))
        .unwrap_or("UTC");
    let zone = TimeZone::get(zone_name).map_err(|_| {
        (
            at("timeZone"),
            format!(
                "unknown time zone '{}' (use an IANA name)",
                zone_name.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let int = |part: &str, default: i64| -> i64 {
        parts(ext, part)
            .next()
            .and_then(|v| v.get("valueInteger").and_then(Value::as_i64))
            .unwrap_or(default)
    };
    let slot_minutes = int("slotMinutes", 30);
    if !(MIN_SLOT_MINUTES..=24 * 60).contains(&slot_minutes) {
        return Err((
            at("slotMinutes"),
            format!("slotMinutes must be {MIN_SLOT_MINUTES} to 1440"),
        ));
    }
    let horizon_days = int("horizonDays", 28);
    if !(1..=MAX_HORIZON_DAYS).contains(&horizon_days) {
        return Err((
            at("horizonDays"),
            format!("horizonDays must be 1 to {MAX_HORIZON_DAYS}"),
        ));
    }
    let mut windows = Vec::new();
    for w in parts(ext, "available") {
        let days: Option<Vec<Weekday>> = parts(w, "daysOfWeek")
            .map(|d| d.get("valueCode").and_then(Value::as_str).and_then(weekday))
            .collect();
        let time = |part: &str| {
            parts(w, part)
                .next()
                .and_then(|t| t.get("valueTime").and_then(Value::as_str))
                .and_then(|t| t.parse::<Time>().ok())
        };
        let (Some(days), Some(start), Some(end)) = (days, time("start"), time("end")) else {
            return Err((
                at("available"),
                "each available window needs daysOfWeek (mon…sun), start and end (valueTime)"
                    .into(),
            ));
        };
        if days.is_empty() || start >= end {
            return Err((
                at("available"),
                "an available window needs at least one day and a start before its end".into(),
            ));
        }
        windows.push(Window { days, start, end });
    }
    Ok(Some(Availability {
        zone,
        slot_minutes,
        horizon_days,
        windows,
    }))
}

/// The (start, end) of every slot of `a` (ms) from `from` up to its horizon: whole slots
/// inside each window, on the window's days in the availability's zone.
pub fn slot_times(a: &Availability, from: i64) -> Vec<(i64, i64)> {
    let Ok(now) = jiff::Timestamp::from_millisecond(from) else {
        return Vec::new();
    };
    let mut day = now.to_zoned(a.zone.clone()).date();
    let step = a.slot_minutes * 60_000;
    let mut out = Vec::new();
    for _ in 0..a.horizon_days {
        for w in a.windows.iter().filter(|w| w.days.contains(&day.weekday())) {
            let at = |t: Time| {
                day.to_datetime(t)
                    .to_zoned(a.zone.clone())
                    .ok()
                    .map(|z| z.timestamp().as_millisecond())
            };
            let (Some(start), Some(end)) = (at(w.start), at(w.end)) else {
                continue;
            };
            let mut t = start;
            while t + step <= end {
                if t >= from {
                    out.push((t, t + step));
                }
                t += step;
            }
        }
        match day.tomorrow() {
            Ok(d) => day = d,
            Err(_) => break,
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The id of the generated slot of `schedule` starting at `start`: the same on every node
/// and every run, so a slot is generated once.
pub fn generated_slot_id(schedule: &str, start: i64) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("healporium:slot:{schedule}:{start}").as_bytes(),
    )
    .to_string()
}

/// Refuses (422) a Schedule whose availability extension is malformed.
pub(super) fn check_schedule(schedule: &Value) -> Result<(), Outcome> {
    availability(schedule)
        .map(|_| ())
        .map_err(|(at, why)| Outcome::new(ErrorKind::Invalid, why).at(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(windows: Value) -> Value {
        json!({"resourceType": "Schedule", "extension": [{"url": AVAILABILITY_URL, "extension": [
            {"url": "timeZone", "valueCode": "Europe/Berlin"},
            {"url": "slotMinutes", "valueInteger": 30},
            {"url": "horizonDays", "valueInteger": 7},
            {"url": "available", "extension": windows}]}]})
    }

    #[test]
    fn weekly_windows_become_slots_in_the_zone() {
        let s = schedule(json!([
            {"url": "daysOfWeek", "valueCode": "mon"},
            {"url": "daysOfWeek", "valueCode": "wed"},
            {"url": "start", "valueTime": "09:00:00"},
            {"url": "end", "valueTime": "10:15:00"}]));
        let a = availability(&s).unwrap().unwrap();
        // Monday 2026-12-07 00:00 UTC
        let from = jiff::Timestamp::from_second(1_796_601_600)
            .unwrap()
            .as_millisecond();
        let times = slot_times(&a, from);
        // two days, two whole 30-minute slots each (10:00–10:30 does not fit)
        assert_eq!(times.len(), 4);
        let first = Instant::from_millis(times[0].0).to_fhir();
        assert!(first.starts_with("2026-12-07T08:00:00"), "{first}"); // 09:00 in Berlin
        assert_eq!(times[0].1 - times[0].0, 30 * 60_000);
    }

    #[test]
    fn malformed_availability_is_named() {
        let s = schedule(json!([{"url": "daysOfWeek", "valueCode": "someday"},
            {"url": "start", "valueTime": "09:00:00"}, {"url": "end", "valueTime": "10:00:00"}]));
        let (at, _) = availability(&s).unwrap_err();
        assert!(at.ends_with("extension('available')"), "{at}");
        let s = schedule(json!([{"url": "daysOfWeek", "valueCode": "mon"},
            {"url": "start", "valueTime": "11:00:00"}, {"url": "end", "valueTime": "10:00:00"}]));
        assert!(availability(&s).is_err());
    }

    #[test]
    fn holds_expire_and_name_no_patient() {
        let key = holder_key("s1", "Patient/p1");
        assert!(!key.contains("p1"));
        let slot = with_status(
            json!({"resourceType": "Slot", "status": "free"}),
            "busy-tentative",
            Some((&key, 1_000)),
        );
        assert_eq!(slot_state(&slot, 999), SlotState::Held(key, 1_000));
        assert_eq!(slot_state(&slot, 1_000), SlotState::Free);
        let freed = with_status(slot, "busy", None);
        assert!(freed.get("extension").is_none());
        assert_eq!(slot_state(&freed, 0), SlotState::Taken("busy".into()));
    }

    #[test]
    fn references_name_their_ids() {
        assert_eq!(reference_id("Slot/a1", "Slot").as_deref(), Some("a1"));
        assert_eq!(
            reference_id("http://x/fhir/Slot/a1/_history/2", "Slot").as_deref(),
            Some("a1")
        );
        assert_eq!(reference_id("Schedule/a1", "Slot"), None);
        let a = json!({"status": "booked", "slot": [{"reference": "Slot/b"}, {"reference": "Slot/a"}, {"reference": "Slot/a"}],
            "participant": [{"actor": {"reference": "Practitioner/d"}}, {"actor": {"reference": "Patient/p"}}]});
        assert!(occupies(&a));
        assert_eq!(slot_ids(&a).into_iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(patient_of(&a).as_deref(), Some("Patient/p"));
    }
}
