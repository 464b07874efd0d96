//! The write path shared by create, update, patch and delete: If-Match, no-op detection,
//! stamping `id`/`meta`, index extraction, and the version row — all on the caller's
//! transaction, which the caller commits.

use super::guard::Src;
use super::scheduling as sched;
use super::session::Session;
use super::{Body, Context, FhirResponse, Status};
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Issue, Outcome};
use crate::fhir::resource::{same_content, stamp};
use crate::fhir::types::{Instant, VersionId, etag};
use crate::search;
use crate::store::{Method, NewVersion, StoredVersion};
use serde_json::Value;
use std::collections::BTreeSet;

/// The job every stored ClaimResponse enqueues in its own transaction (the outbox): a claim
/// adjudicated again may change what a patient deferred (`operation::claim_change`).
pub const CLAIM_ADJUDICATED_JOB: &str = "claim-adjudicated";

/// Attempts of a Subscription's delivery job: retried with capped backoff for days (the
/// Subscription shows `error` after three failures in a row).
pub const NOTIFY_ATTEMPTS: u32 = 10_000;

/// Fails with 412 unless `if_match` names the current version.
pub(super) fn check_if_match(
    current: Option<&StoredVersion>,
    if_match: Option<VersionId>,
) -> Result<(), Outcome> {
    let Some(expected) = if_match else {
        return Ok(());
    };
    match current {
        Some(c) if c.version == expected && !c.deleted => Ok(()),
        Some(c) => Err(Outcome::new(
            ErrorKind::VersionConflict,
            format!(
                "If-Match {} does not match the current version {}",
                etag(expected),
                etag(c.version)
            ),
        )),
        None => Err(Outcome::new(
            ErrorKind::VersionConflict,
            format!(
                "If-Match {} given for a resource that does not exist",
                etag(expected)
            ),
        )),
    }
}

/// The response describing an existing version (no write happened).
pub(super) fn existing(base: &str, v: &StoredVersion, status: Status) -> FhirResponse {
    FhirResponse {
        status,
        body: v.body.clone().map(Body::Raw),
        location: Some(location(base, &v.resource_type, &v.id, v.version)),
        version: Some(v.version),
        last_modified: Some(v.last_updated),
        issues: Vec::new(),
        content_location: None,
        headers: Vec::new(),
    }
}

pub(super) fn location(base: &str, resource_type: &str, id: &str, version: VersionId) -> String {
    format!("{base}/{resource_type}/{id}/_history/{version}")
}

/// A timestamp for the next version: now, but never before the current version's.
fn next_timestamp(current: Option<&StoredVersion>) -> Instant {
    let now = Instant::now();
    match current {
        Some(c) if c.last_updated > now => c.last_updated,
        _ => now,
    }
}

/// Stores `resource` (already validated) as the next version of `resource_type/id`, unless it
/// equals the current version (a no-op update, which writes nothing and answers 200).
pub(super) async fn put_version(
    s: &mut Session,
    resource_type: &str,
    id: &str,
    mut resource: Value,
    method: Method,
    current: Option<&StoredVersion>,
) -> Result<FhirResponse, Outcome> {
    if let Some(obj) = resource.as_object_mut() {
        obj.insert("id".into(), Value::String(id.to_string()));
    }
    let live = current.filter(|c| !c.deleted);
    // the enforcement point for every write (REST, Bundle entries, operations)
    let perm = if live.is_some() {
        Perm::Update
    } else {
        Perm::Create
    };
    s.guard.require(perm, resource_type)?;
    let (guard, registry) = (s.guard.clone(), s.registry.clone());
    if current.is_some() {
        // the resource as it stands (for a deleted one its last live version) must be the
        // token's to change: someone else's id is neither updated nor re-created, and looks
        // unknown
        guard
            .check_in_tx(s.tx(), &registry, Perm::Update, resource_type, id)
            .await?;
    }
    // the patients the new content names must be the token's before the write: a write
    // cannot create the care relationship that would allow it
    guard
        .check_content(s.tx(), &registry, perm, resource_type, &resource)
        .await?;
    // the scheduling rules (docs/scheduling.md): a practitioner's own schedules only, and
    // a Schedule's availability must be well formed
    let before: Option<Value> = match live.and_then(|c| c.body.as_deref()) {
        Some(body)
            if matches!(
                resource_type,
                "Appointment" | "Schedule" | "Slot" | "Subscription"
            ) =>
        {
            Some(
                serde_json::from_str(body)
                    .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?,
            )
        }
        _ => None,
    };
    if let Some(before) = &before {
        super::scheduling::check_owner(s, resource_type, before).await?;
    }
    super::scheduling::check_owner(s, resource_type, &resource).await?;
    if resource_type == "Schedule" {
        super::scheduling::check_schedule(&resource)?;
    }
    if resource_type == "Subscription" && !s.internal {
        super::subscription::prepare(s, &mut resource, before.as_ref())?;
    }
    if let Some(cur) = live
        && let Some(body) = &cur.body
    {
        let stored: Value = serde_json::from_str(body)
            .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?;
        if same_content(&stored, &resource) {
            let mut response = existing(&s.base, cur, Status::Ok);
            response.issues.push(Issue::information(
                "informational",
                "No change: the content equals the current version, no version was created",
            ));
            return Ok(response);
        }
    }
    let version = current.map_or(1, |c| c.version + 1);
    let last_updated = next_timestamp(current);
    stamp(&mut resource, id, version, last_updated);
    let text = serde_json::to_string(&resource)
        .map_err(|_| Outcome::internal("Cannot serialize the resource"))?;
    let index = search::index::extract_with(&resource, Some(&s.base), &s.registry);
    let links = index.links.clone();
    let patients = super::guard::patients_of(&s.registry, resource_type, id, &index);
    if resource_type == "SearchParameter" {
        // a custom parameter indexes new writes at once; existing resources wait for $reindex
        if let Some((bases, p)) = search::parameters::custom_from_resource(&resource) {
            for b in bases {
                s.tx()
                    .params()
                    .set_param_state(&b, &p.code, "pending")
                    .await?;
            }
        }
        s.registry_changed();
    }
    s.tx()
        .write(&NewVersion {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            version,
            previous: current.map(|c| c.version),
            last_updated,
            method,
            body: Some(text.clone()),
            index,
        })
        .await?;
    s.record_write(resource_type, id, version, links, patients);
    if resource_type == "Appointment" {
        appointment_written(s, before.as_ref(), Some(&resource)).await?;
    }
    if resource_type == "Schedule" {
        let job = crate::store::jobs::NewJob {
            kind: super::scheduling::SLOTS_JOB.to_string(),
            key: Some(format!("Schedule/{id}/_history/{version}")),
            payload: serde_json::json!({"schedule": id}).to_string(),
            run_at: last_updated.millis(),
            max_attempts: 5,
        };
        s.tx().jobs().enqueue(&job, last_updated.millis()).await?;
    }
    if resource_type == "Subscription"
        && resource.get("status").and_then(Value::as_str) == Some("requested")
    {
        // the handshake, then whatever is owed (the outbox: only if this write commits)
        let job = crate::store::jobs::NewJob {
            kind: super::subscription::NOTIFY_JOB.to_string(),
            key: Some(format!("{id}:v{version}")),
            payload: serde_json::json!({"subscription": id}).to_string(),
            run_at: last_updated.millis(),
            max_attempts: NOTIFY_ATTEMPTS,
        };
        s.tx().jobs().enqueue(&job, last_updated.millis()).await?;
    }
    if resource_type == "ClaimResponse" {
        let job = crate::store::jobs::NewJob {
            kind: CLAIM_ADJUDICATED_JOB.to_string(),
            key: Some(format!("ClaimResponse/{id}/_history/{version}")),
            payload: serde_json::json!({"claimResponse": id}).to_string(),
            run_at: last_updated.millis(),
            max_attempts: 5,
        };
        s.tx().jobs().enqueue(&job, last_updated.millis()).await?;
    }
    // what was written must lie within what the token may write
    if guard.confined(perm, resource_type) {
        let mut src = Src::Tx(s.tx());
        if !guard
            .live_visible(&mut src, &registry, perm, resource_type, id)
            .await?
        {
            return Err(Outcome::new(
                ErrorKind::Forbidden,
                format!(
                    "The {resource_type} would be outside what the token may write (patient                      compartment, role or scope restriction)"
                ),
            ));
        }
    }
    let status = if live.is_some() {
        Status::Ok
    } else {
        Status::Created
    };
    Ok(FhirResponse {
        status,
        body: Some(Body::Raw(text.into())),
        location: Some(location(&s.base, resource_type, id, version)),
        version: Some(version),
        last_modified: Some(last_updated),
        issues: Vec::new(),
        content_location: None,
        headers: Vec::new(),
    })
}

/// Writes a delete version on top of a live `current` version.
pub(super) async fn delete_version(
    s: &mut Session,
    current: &StoredVersion,
) -> Result<FhirResponse, Outcome> {
    s.guard.require(Perm::Delete, &current.resource_type)?;
    let (guard, registry) = (s.guard.clone(), s.registry.clone());
    guard
        .check_in_tx(
            s.tx(),
            &registry,
            Perm::Delete,
            &current.resource_type,
            &current.id,
        )
        .await?;
    let before: Option<Value> = match current.body.as_deref() {
        Some(body)
            if matches!(
                current.resource_type.as_str(),
                "Appointment" | "Schedule" | "Slot"
            ) =>
        {
            Some(
                serde_json::from_str(body)
                    .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?,
            )
        }
        _ => None,
    };
    if let Some(before) = &before {
        super::scheduling::check_owner(s, &current.resource_type, before).await?;
    }
    let version = current.version + 1;
    let last_updated = next_timestamp(Some(current));
    // whose data went, for the audit
    let patients = match current.body.as_deref().map(serde_json::from_str::<Value>) {
        Some(Ok(body)) => {
            let rows = search::index::extract_with(&body, Some(&s.base), &s.registry);
            super::guard::patients_of(&s.registry, &current.resource_type, &current.id, &rows)
        }
        _ => Vec::new(),
    };
    s.tx()
        .write(&NewVersion {
            resource_type: current.resource_type.clone(),
            id: current.id.clone(),
            version,
            previous: Some(current.version),
            last_updated,
            method: Method::Delete,
            body: None,
            index: Default::default(),
        })
        .await?;
    s.record_delete(&current.resource_type, &current.id, version, patients);
    if current.resource_type == "Appointment" {
        appointment_written(s, before.as_ref(), None).await?;
    }
    if current.resource_type == "SearchParameter" {
        s.registry_changed();
    }
    let mut response = FhirResponse::new(Status::NoContent);
    response.version = Some(version);
    response.last_modified = Some(last_updated);
    response.issues.push(Issue::information(
        "informational",
        format!("Deleted {}/{}", current.resource_type, current.id),
    ));
    Ok(response)
}

// the scheduling rules of Appointment writes (docs/scheduling.md)

/// Writes a Slot as the server (the booking was authorized on the Appointment; a patient
/// may not write Slots).
pub(crate) async fn write_slot(
    s: &mut Session,
    current: &StoredVersion,
    slot: Value,
) -> Result<(), Outcome> {
    let caller = std::mem::replace(&mut s.guard, super::guard::Guard::open());
    let written = Box::pin(put_version(
        s,
        "Slot",
        &current.id,
        slot,
        Method::Put,
        Some(current),
    ))
    .await;
    s.guard = caller;
    written.map(|_| ())
}

/// After an Appointment changed from `before` (None: it is new) to `after` (None: deleted):
/// the slots it now occupies become busy (409 if one is not free for its patient), the
/// slots it stopped occupying are free again.
pub(super) async fn appointment_written(
    s: &mut Session,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Result<(), Outcome> {
    let occupied = |a: Option<&Value>| {
        a.filter(|a| sched::occupies(a))
            .map(sched::slot_ids)
            .unwrap_or_default()
    };
    let (old, new) = (occupied(before), occupied(after));
    if old == new {
        return Ok(());
    }
    let touched: BTreeSet<String> = old.symmetric_difference(&new).cloned().collect();
    let patient = after.or(before).and_then(sched::patient_of);
    let now = Instant::now().millis();
    for (current, slot) in sched::lock_slots(s, &touched, "Appointment.slot").await? {
        let id = current.id.clone();
        if new.contains(&id) {
            let state = sched::slot_state(&slot, now);
            let own = matches!(&state, sched::SlotState::Held(holder, _)
                if patient.as_deref().map(|p| sched::holder_key(&id, p)).as_deref() == Some(holder.as_str()));
            if state != sched::SlotState::Free && !own {
                return Err(sched::conflict(&id, &state, "Appointment.slot"));
            }
            write_slot(s, &current, sched::with_status(slot, "busy", None)).await?;
        } else if slot.get("status").and_then(Value::as_str) == Some("busy") {
            write_slot(s, &current, sched::with_status(slot, "free", None)).await?;
        }
    }
    Ok(())
}

/// A resource claiming one of the credit extension's profiles must conform to it (422 with
/// the FHIRPath of each problem).
pub(super) fn check_profiles(ctx: &Context, resource: &Value) -> Result<(), Outcome> {
    let problems = ctx.finance.check(resource);
    if problems.is_empty() {
        return Ok(());
    }
    let issues = problems
        .into_iter()
        .map(|(at, why)| Issue::error("structure", why).at(at))
        .collect();
    Err(Outcome::with_issues(ErrorKind::Invalid, issues))
}

/// The body's resourceType must be the URL's (400 otherwise).
pub(super) fn check_body_type(resource: &Value, resource_type: &str) -> Result<(), Outcome> {
    match resource.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == resource_type => Ok(()),
        Some(t) => Err(Outcome::bad_request(format!(
            "The body is a {} but the URL names {resource_type}",
            t.chars().take(64).collect::<String>()
        ))
        .at("resourceType")),
        None => Err(
            Outcome::new(ErrorKind::Structure, "The body has no resourceType").at("resourceType"),
        ),
    }
}
