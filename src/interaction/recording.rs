//! The audit mapping: which AuditEvent each interaction records (subtype, action, what it
//! names), split per patient whose data it touched; reads and searches are recorded after
//! they ran, writes inside their own transaction.

use super::{Body, Context, FhirResponse, Interaction, audit, guard, search, session};
use crate::fhir::outcome::Outcome;
use serde_json::Value;

/// Records the AuditEvent of an interaction that does not write (or of a failed write),
/// with the status it ended with and the resources its response returned.
pub(super) async fn record_after(
    ctx: &Context,
    base: &str,
    mut r: audit::Record,
    result: &Result<FhirResponse, Outcome>,
) -> Result<(), Outcome> {
    r.status = match result {
        Ok(resp) => resp.status.code(),
        Err(o) => o.status(),
    };
    let mut items: Vec<(String, Vec<String>)> = Vec::new();
    if let Ok(resp) = result
        && let Some(body) = &resp.body
        && r.status < 300
    {
        let value = match body {
            Body::Json(v) => Some(v.clone()),
            Body::Raw(text) => serde_json::from_str::<Value>(text).ok(),
            // a bulk data file: the download is recorded as the operation it is
            Body::Ndjson(_) => None,
        };
        if let Some(v) = value {
            let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
            for (key, resource) in audit::resources_of(&v) {
                let patients = guard::resource_patients(&registry, base, resource);
                items.push((key, patients));
            }
        }
    }
    let events: Vec<Value> = audit::split(r, &items, requester_patient(ctx))
        .iter()
        .map(|part| audit::event(&ctx.requester, part))
        .collect();
    audit::append_all(ctx, events).await?;
    Ok(())
}

/// The Patient the requester is (a patient user), whose own requests need no split audit.
fn requester_patient(ctx: &Context) -> Option<&str> {
    ctx.requester
        .principal
        .as_ref()
        .and_then(|p| p.fhir_user.as_deref())
        .and_then(|f| f.strip_prefix("Patient/"))
}

/// The AuditEvent skeleton of an interaction, and whether it writes (audited in its own
/// transaction by the write path). None: not audited (the CapabilityStatement).
pub(super) fn audit_record(interaction: &Interaction) -> Option<(audit::Record, bool)> {
    let (subtype, action, writes, description, query) = match interaction {
        Interaction::Capabilities => return None,
        Interaction::Read { resource_type, id } => (
            "read",
            "R",
            false,
            Some(format!("{resource_type}/{id}")),
            None,
        ),
        Interaction::VRead {
            resource_type, id, ..
        } => (
            "vread",
            "R",
            false,
            Some(format!("{resource_type}/{id}")),
            None,
        ),
        Interaction::Create { resource_type, .. } => {
            ("create", "C", true, Some(resource_type.clone()), None)
        }
        Interaction::Update { resource_type, .. } => {
            ("update", "U", true, Some(resource_type.clone()), None)
        }
        Interaction::Patch { resource_type, .. } => {
            ("patch", "U", true, Some(resource_type.clone()), None)
        }
        Interaction::Delete { resource_type, .. } => {
            ("delete", "D", true, Some(resource_type.clone()), None)
        }
        Interaction::History { scope, .. } => match scope {
            crate::store::HistoryScope::System => ("history-system", "R", false, None, None),
            crate::store::HistoryScope::Type(t) => {
                ("history-type", "R", false, Some(t.clone()), None)
            }
            crate::store::HistoryScope::Instance(t, id) => (
                "history-instance",
                "R",
                false,
                Some(format!("{t}/{id}")),
                None,
            ),
        },
        Interaction::Bundle { bundle } => {
            let batch = bundle.get("type").and_then(Value::as_str) == Some("batch");
            (
                if batch { "batch" } else { "transaction" },
                "E",
                true,
                None,
                None,
            )
        }
        Interaction::Operation(op) => (
            "operation",
            "E",
            false,
            Some(format!("${}", op.name.chars().take(40).collect::<String>())),
            None,
        ),
        Interaction::Search(req) => {
            let (subtype, what) = match &req.scope {
                search::SearchScope::System => ("search-system", String::new()),
                search::SearchScope::Type(t) => ("search-type", t.clone()),
                search::SearchScope::Compartment {
                    owner_type,
                    owner_id,
                    target,
                } => ("search-type", format!("{owner_type}/{owner_id}/{target}")),
            };
            let qs = serde_urlencoded::to_string(&req.pairs).unwrap_or_default();
            (
                subtype,
                "E",
                false,
                Some(what.clone()),
                Some(format!("{what}?{qs}")),
            )
        }
    };
    Some((
        audit::Record {
            subtype: subtype.to_string(),
            action,
            status: 0,
            entities: Vec::new(),
            query,
            patients: Vec::new(),
            description,
        },
        writes,
    ))
}

/// Records the AuditEvent of a successful write inside its session (same transaction).
pub(crate) async fn audit_in_session(
    ctx: &Context,
    s: &mut session::Session,
    subtype: &str,
    action: &'static str,
    status: u16,
) -> Result<(), Outcome> {
    if !ctx.audit {
        return Ok(());
    }
    let items: Vec<(String, Vec<String>)> = s
        .versions
        .iter()
        .zip(s.patients.iter())
        .map(|((t, id, v), ps)| (format!("{t}/{id}/_history/{v}"), ps.clone()))
        .collect();
    let record = audit::Record {
        subtype: subtype.to_string(),
        action,
        status,
        ..audit::Record::default()
    };
    // one record per patient whose data the write touched (and one for the rest)
    let events: Vec<Value> = audit::split(record, &items, requester_patient(ctx))
        .iter()
        .map(|part| audit::event(&ctx.requester, part))
        .collect();
    let events: Vec<&Value> = events.iter().collect();
    audit::append_many_in(s.tx(), ctx.seal.as_deref(), &events).await
}
