//! `Patient/[id]/$everything` and `Patient/$everything`: the patient(s), every resource in
//! their compartment (by the Patient CompartmentDefinition's parameters), and the resources
//! those reference (practitioners, organizations, medications, locations…). `_since`,
//! `_type`, `_count` and keyset paging ordered by type and id. AuditEvents only when `_type`
//! names them; a confined token gets only what it may read (type level: its patients).

use super::OperationRequest;
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::{Id, Instant};
use crate::interaction::guard::patient_links;
use crate::interaction::{Body, Context, FhirResponse, Status};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const DEFAULT_COUNT: usize = 50;
const MAX_COUNT: usize = 1000;
/// Patients a type-level `$everything` of a confined token covers, at most.
const MAX_PATIENTS: u32 = 10_000;

pub(super) async fn everything(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    if op.resource_type.as_deref() != Some("Patient") {
        return Err(Outcome::new(
            ErrorKind::BadRequest,
            "$everything is defined on Patient",
        ));
    }
    let text = |name: &str| match op.param(name) {
        Some(Value::String(s)) => Some(s),
        Some(v) if !v.is_null() => Some(v.to_string()),
        _ => None,
    };
    let since = match text("_since") {
        Some(s) => Some(
            Instant::parse_fhir(&s)
                .ok_or_else(|| Outcome::bad_request("_since must be a FHIR instant"))?,
        ),
        None => None,
    };
    let types: Option<BTreeSet<String>> = text("_type").map(|t| {
        t.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    if let Some(types) = &types {
        for t in types {
            crate::interaction::resource_type(ctx, t)?;
        }
    }
    let count = match text("_count") {
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| Outcome::bad_request("_count must be a non-negative integer"))?
            .min(MAX_COUNT),
        None => DEFAULT_COUNT,
    };
    let after = text("_page");

    ctx.guard.require(Perm::Read, "Patient")?;
    let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
    // the patients
    let patients: Vec<String> = match &op.id {
        Some(id) => {
            let id = Id::parse(id)?;
            ctx.guard
                .check_stored(ctx, Perm::Read, "Patient", id.as_str())
                .await?;
            match ctx.store.read("Patient", id.as_str()).await? {
                None => return Err(crate::interaction::guard::hidden("Patient", id.as_str())),
                Some(v) if v.deleted => {
                    return Err(Outcome::new(
                        ErrorKind::Gone,
                        format!("Patient/{id} was deleted"),
                    ));
                }
                Some(_) => vec![id.to_string()],
            }
        }
        // every patient the token may read
        None if ctx.guard.confined(Perm::Read, "Patient") => {
            let filters = ctx.guard.filters(&registry, Perm::Read, "Patient")?;
            let mut src = crate::interaction::guard::Src::Store(ctx.store.as_ref());
            src.find("Patient", &filters, MAX_PATIENTS).await?
        }
        None => ctx.store.live_ids("Patient").await?,
    };
    let patient_set: BTreeSet<&str> = patients.iter().map(String::as_str).collect();
    let mut members: BTreeSet<(String, String)> = patients
        .iter()
        .map(|p| ("Patient".to_string(), p.clone()))
        .collect();

    // their compartments
    let rows = match &op.id {
        Some(id) => ctx.store.referencing("Patient", Some(id)).await?,
        None => ctx.store.referencing("Patient", None).await?,
    };
    for (rt, id, param, target) in rows {
        if patient_set.contains(target.as_str())
            && patient_links(&registry, &rt).iter().any(|p| p == &param)
        {
            members.insert((rt, id));
        }
    }

    // and what the compartment references (other patients excepted)
    let sources: Vec<(String, String)> = members.iter().cloned().collect();
    for (t, id) in ctx.store.links_from(&sources).await? {
        if t != "Patient" || patient_set.contains(id.as_str()) {
            members.insert((t, id));
        }
    }
    // AuditEvents only when asked for by _type: each call would otherwise return the
    // previous call's record
    let keys: Vec<(String, String)> = members
        .into_iter()
        .filter(|(t, _)| match &types {
            Some(ts) => ts.contains(t),
            None => t != "AuditEvent",
        })
        .collect();
    // only what the token may read (scopes per type, compartment, scope queries)
    let mut versions =
        crate::interaction::search::permitted(ctx, ctx.store.read_many(&keys).await?).await?;
    if let Some(since) = since {
        versions.retain(|v| v.last_updated >= since);
    }
    versions.sort_by(|a, b| (&a.resource_type, &a.id).cmp(&(&b.resource_type, &b.id)));
    let total = versions.len();
    let start = match &after {
        Some(cursor) => versions
            .iter()
            .position(|v| format!("{}/{}", v.resource_type, v.id).as_str() > cursor.as_str())
            .unwrap_or(total),
        None => 0,
    };
    let page: Vec<_> = versions.iter().skip(start).take(count).collect();

    let path = match &op.id {
        Some(id) => format!("{base}/Patient/{id}/$everything"),
        None => format!("{base}/Patient/$everything"),
    };
    let link = |page_after: Option<String>| {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(s) = text("_since") {
            q.push(("_since", s));
        }
        if let Some(t) = text("_type") {
            q.push(("_type", t));
        }
        q.push(("_count", count.to_string()));
        if let Some(p) = page_after {
            q.push(("_page", p));
        }
        format!(
            "{path}?{}",
            serde_urlencoded::to_string(&q).unwrap_or_default()
        )
    };
    let mut links = vec![
        json!({"relation": "self", "url": link(after.clone())}),
        json!({"relation": "first", "url": link(None)}),
    ];
    if start + page.len() < total
        && let Some(last) = page.last()
    {
        links.push(json!({"relation": "next", "url": link(Some(format!("{}/{}", last.resource_type, last.id)))}));
    }
    let mut entries = Vec::with_capacity(page.len());
    for v in page {
        let resource: Value = match &v.body {
            Some(b) => serde_json::from_str(b)
                .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?,
            None => continue,
        };
        entries.push(json!({
            "fullUrl": format!("{base}/{}/{}", v.resource_type, v.id),
            "resource": resource,
            "search": {"mode": "match"},
        }));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
    });
    if !entries.is_empty()
        && let Some(obj) = bundle.as_object_mut()
    {
        obj.insert("entry".into(), Value::Array(entries));
    }
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(bundle));
    Ok(r)
}
