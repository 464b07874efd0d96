//! `$export` (Bulk Data 2.0) at system level, on Patient and on a Group: the kick-off checks
//! the headers and parameters and stores the job; [`run`] writes the NDJSON files.
//!
//! Each type is read through the search engine with the filters the job's principal would get
//! on a search (scopes, patient compartments, role reach, insurer payers), `_typeFilter`'s
//! queries, `_since`, the patients' compartments at Patient and Group level, and
//! `_lastUpdated` not after the transaction time — keyset pages of ids, their bodies read per
//! page and appended to chunked files, so neither the job nor a download ever holds a type.

use super::files::Files;
use super::{Call, Method};
use super::{EXPORT_JOB, owner_of, principal_from, principal_json, status_url};
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Issue, Outcome};
use crate::fhir::types::{Id, Instant};
use crate::interaction::guard::{Guard, compartment, patient_links};
use crate::interaction::{Body, Context, FhirResponse, Status};
use crate::search::query::{Filter, Owners};
use crate::store::{Anchor, BulkJobRow, NewBulkJob, SearchSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Resources read per page.
const PAGE: u32 = 1000;
/// The output formats accepted (all mean NDJSON).
const FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];
/// The kick-off parameters this server knows.
const KNOWN: &[&str] = &[
    "_outputFormat",
    "_since",
    "_type",
    "_typeFilter",
    "_elements",
    "patient",
    "includeAssociatedData",
];
/// Parameters of every request that say nothing about the export.
const GENERAL: &[&str] = &["_format", "_pretty"];

/// An export's parameters as stored with its job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// `system`, `patient` or `group`.
    pub level: String,
    pub group: Option<String>,
    /// `_type` (None: every type the principal may read, of the compartment below system
    /// level).
    pub types: Option<Vec<String>>,
    /// `_since` (ms).
    pub since: Option<i64>,
    /// `_typeFilter`: per type, alternative queries.
    pub type_filters: Vec<(String, Vec<(String, String)>)>,
    /// `_elements`: `element` or `Type.element`.
    pub elements: Option<Vec<String>>,
    /// `patient` (POST, Patient and Group level).
    pub patients: Option<Vec<String>>,
    /// What `handling=lenient` let pass, reported in the error file.
    pub notes: Vec<String>,
}

fn bad(msg: impl Into<String>, at: &str) -> Outcome {
    Outcome::bad_request(msg).at(at)
}

/// Every value of parameter `name`: repeated query parameters, then the Parameters body's.
fn values(op: &Call, name: &str) -> Vec<Value> {
    let mut out: Vec<Value> = op
        .query
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| Value::String(v.clone()))
        .collect();
    if let Some(params) = op
        .body
        .as_ref()
        .filter(|b| b.get("resourceType").and_then(Value::as_str) == Some("Parameters"))
        .and_then(|b| b.get("parameter"))
        .and_then(Value::as_array)
    {
        for p in params {
            if p.get("name").and_then(Value::as_str) != Some(name) {
                continue;
            }
            if let Some(v) = p
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
                .map(|(_, v)| v.clone())
            {
                out.push(v);
            }
        }
    }
    out
}

fn strings(op: &Call, name: &str) -> Vec<String> {
    values(op, name)
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The names of every parameter given, in the query and the body.
fn names(op: &Call) -> Vec<String> {
    let mut out: Vec<String> = op.query.iter().map(|(k, _)| k.clone()).collect();
    if let Some(params) = op
        .body
        .as_ref()
        .and_then(|b| b.get("parameter"))
        .and_then(Value::as_array)
    {
        out.extend(
            params
                .iter()
                .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_string)),
        );
    }
    out
}

/// Splits `_typeFilter` values at the commas that begin another `Type?` query (a comma inside
/// a query's values stays).
fn split_type_filters(value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in value.split(',') {
        let starts_query = part
            .split_once('?')
            .is_some_and(|(t, _)| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphabetic()));
        match out.last_mut() {
            Some(last) if !starts_query => {
                last.push(',');
                last.push_str(part);
            }
            _ => out.push(part.to_string()),
        }
    }
    out
}

/// Whether `resource_type` belongs in a Patient- or Group-level export.
fn in_compartment(
    registry: &crate::search::parameters::SearchParameters,
    resource_type: &str,
) -> bool {
    resource_type == "Patient" || !patient_links(registry, resource_type).is_empty()
}

/// The `$export` kick-off.
pub async fn kick_off(ctx: &Context, base: &str, op: &Call) -> Result<FhirResponse, Outcome> {
    let level = match (op.resource_type.as_deref(), op.id.as_deref()) {
        (None, None) => "system",
        (Some("Patient"), None) => "patient",
        (Some("Group"), Some(_)) => "group",
        _ => {
            return Err(Outcome::bad_request(
                "$export is defined on the server, on Patient and on a Group instance",
            ));
        }
    };
    if op.method == Method::Delete {
        return Err(Outcome::new(
            ErrorKind::MethodNotAllowed,
            "$export is kicked off with GET or POST",
        ));
    }
    // the headers Bulk Data requires
    let prefer = op.prefer.clone().unwrap_or_default().to_ascii_lowercase();
    let tokens: Vec<&str> = prefer
        .split([',', ';'])
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect();
    if !tokens.contains(&"respond-async") {
        return Err(Outcome::bad_request(
            "$export runs asynchronously: send Prefer: respond-async",
        ));
    }
    let lenient = tokens.contains(&"handling=lenient");
    let accept_ok = op.accept.as_deref().is_some_and(|a| {
        a.split(',')
            .any(|r| r.split(';').next().unwrap_or("").trim() == "application/fhir+json")
    });
    if !accept_ok {
        return Err(Outcome::bad_request(
            "$export answers errors as FHIR JSON: send Accept: application/fhir+json",
        ));
    }
    let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
    let mut params = Params {
        level: level.to_string(),
        group: op.id.clone(),
        ..Params::default()
    };
    // a parameter this server cannot honour fails the kick-off, unless the client is lenient
    let refuse = |params: &mut Params, o: Outcome| -> Result<(), Outcome> {
        if lenient {
            params.notes.push(
                o.issues
                    .first()
                    .map(|i| i.diagnostics.clone())
                    .unwrap_or_default(),
            );
            Ok(())
        } else {
            Err(o)
        }
    };
    for name in names(op) {
        if !KNOWN.contains(&name.as_str()) && !GENERAL.contains(&name.as_str()) {
            let clipped: String = name.chars().take(40).collect();
            refuse(
                &mut params,
                bad(
                    format!("$export does not support the parameter {clipped}"),
                    &clipped,
                ),
            )?;
        }
    }
    for f in strings(op, "_outputFormat") {
        if !FORMATS.contains(&f.as_str()) {
            return Err(bad(
                "_outputFormat must be application/fhir+ndjson (or application/ndjson, ndjson)",
                "_outputFormat",
            ));
        }
    }
    if let Some(since) = strings(op, "_since").first() {
        let t = Instant::parse_fhir(since)
            .ok_or_else(|| bad("_since must be a FHIR instant", "_since"))?;
        params.since = Some(t.millis());
    }
    let type_values = strings(op, "_type");
    if !type_values.is_empty() {
        let mut types: Vec<String> = Vec::new();
        for t in type_values.iter().flat_map(|v| v.split(',')) {
            let t = t.trim();
            if t.is_empty() {
                continue;
            }
            match ctx.defs.resource_type(t) {
                Some(t) if level == "system" || in_compartment(&registry, t) => {
                    if !types.iter().any(|x| x == t) {
                        types.push(t.to_string());
                    }
                }
                Some(t) => refuse(
                    &mut params,
                    bad(format!("{t} is not in the Patient compartment"), "_type"),
                )?,
                None => {
                    let clipped: String = t.chars().take(40).collect();
                    refuse(
                        &mut params,
                        bad(
                            format!("'{clipped}' is not a FHIR R4 resource type"),
                            "_type",
                        ),
                    )?
                }
            }
        }
        for t in &types {
            ctx.guard.require(Perm::Read, t)?;
        }
        if types.is_empty() {
            return Err(bad("_type names no type this export can return", "_type"));
        }
        params.types = Some(types);
    }
    for value in strings(op, "_typeFilter") {
        for q in split_type_filters(&value) {
            let Some((t, query)) = q.split_once('?') else {
                refuse(
                    &mut params,
                    bad("A _typeFilter is a search: Type?query", "_typeFilter"),
                )?;
                continue;
            };
            let Some(t) = ctx.defs.resource_type(t) else {
                refuse(
                    &mut params,
                    bad("A _typeFilter names an unknown type", "_typeFilter"),
                )?;
                continue;
            };
            if params
                .types
                .as_ref()
                .is_some_and(|ts| !ts.iter().any(|x| x == t))
            {
                refuse(
                    &mut params,
                    bad(
                        format!("A _typeFilter on {t}, which _type does not name"),
                        "_typeFilter",
                    ),
                )?;
                continue;
            }
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
                .map_err(|_| bad("A _typeFilter query is not URL-encoded", "_typeFilter"))?;
            // parsed now, as the job will: a search this server cannot run fails here
            if let Err(o) = crate::search::query::parse_limited(
                &registry,
                &[t.to_string()],
                &pairs,
                true,
                None,
                &ctx.limits,
            ) {
                let why = o
                    .issues
                    .first()
                    .map(|i| i.diagnostics.clone())
                    .unwrap_or_default();
                refuse(
                    &mut params,
                    bad(format!("_typeFilter {t}: {why}"), "_typeFilter"),
                )?;
                continue;
            }
            params.type_filters.push((t.to_string(), pairs));
        }
    }
    let elements: Vec<String> = strings(op, "_elements")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    for e in &elements {
        let ok = match e.split_once('.') {
            Some((t, el)) => ctx.defs.resource_type(t).is_some() && valid_element(el),
            None => valid_element(e),
        };
        if !ok {
            return Err(bad(
                "_elements lists element names or Type.element",
                "_elements",
            ));
        }
    }
    if !elements.is_empty() {
        params.elements = Some(elements);
    }
    let patients = values(op, "patient");
    if !patients.is_empty() {
        if level == "system" || op.method != Method::Post {
            return Err(bad(
                "patient is a parameter of POST Patient/$export and Group/[id]/$export",
                "patient",
            ));
        }
        let mut ids = Vec::new();
        for p in patients {
            let id = p
                .get("reference")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("Patient/"))
                .filter(|id| crate::fhir::types::is_valid_id(id))
                .ok_or_else(|| bad("patient must be a Reference to Patient/[id]", "patient"))?;
            ids.push(id.to_string());
        }
        params.patients = Some(ids);
    }
    if !values(op, "includeAssociatedData").is_empty() {
        refuse(
            &mut params,
            bad(
                "includeAssociatedData is not supported by this server",
                "includeAssociatedData",
            ),
        )?;
    }
    // the token must be able to read something of what it asks for
    match &params.types {
        Some(_) => {}
        None => {
            let any = ctx.defs.resource_types().iter().any(|t| {
                (level == "system" || in_compartment(&registry, t))
                    && ctx.guard.require(Perm::Read, t).is_ok()
            });
            if !any {
                return Err(Outcome::new(
                    ErrorKind::Forbidden,
                    "The token's scopes allow reading none of the types an export returns",
                ));
            }
        }
    }
    if level != "system" {
        ctx.guard.require(Perm::Read, "Patient")?;
    }
    if let Some(group) = &params.group {
        let id = Id::parse(group)?;
        ctx.guard.require(Perm::Read, "Group")?;
        ctx.guard
            .check_stored(ctx, Perm::Read, "Group", id.as_str())
            .await?;
        match ctx.store.read("Group", id.as_str()).await? {
            Some(v) if !v.deleted => {}
            Some(_) => {
                return Err(Outcome::new(
                    ErrorKind::Gone,
                    format!("Group/{id} was deleted"),
                ));
            }
            None => return Err(crate::interaction::guard::hidden("Group", id.as_str())),
        }
    }

    super::check_active(ctx).await?;
    // the job
    let id = Id::generate().to_string();
    let now = Instant::now().millis();
    let path = match level {
        "system" => format!("{base}/$export"),
        "patient" => format!("{base}/Patient/$export"),
        _ => format!(
            "{base}/Group/{}/$export",
            params.group.as_deref().unwrap_or("")
        ),
    };
    let request = if op.query.is_empty() {
        path
    } else {
        format!(
            "{path}?{}",
            serde_urlencoded::to_string(&op.query).unwrap_or_default()
        )
    };
    super::queue(
        ctx,
        NewBulkJob {
            id: id.clone(),
            kind: "export".to_string(),
            owner: owner_of(ctx.guard.principal()),
            principal: ctx.guard.principal().map(principal_json),
            request,
            base: base.to_string(),
            params: serde_json::to_string(&params)
                .map_err(|_| Outcome::internal("Cannot store the export's parameters"))?,
            transaction_time: now,
            created: now,
        },
        EXPORT_JOB,
    )
    .await?;
    let mut r = FhirResponse::new(Status::Accepted);
    r.content_location = Some(status_url(base, &id));
    let mut issues = vec![Issue::information(
        "informational",
        format!("Export {id} accepted; poll the URL in Content-Location"),
    )];
    issues.extend(
        params
            .notes
            .iter()
            .map(|n| Issue::warning("not-supported", format!("Ignored: {n}"))),
    );
    r.body = Some(Body::Json(crate::fhir::outcome::operation_outcome(&issues)));
    Ok(r)
}

fn valid_element(e: &str) -> bool {
    !e.is_empty()
        && e.len() <= 64
        && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && e.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

/// The end of a FHIR date or dateTime: a partial date lasts until its end.
fn end_of(s: &str) -> Option<i64> {
    let start = Instant::parse_fhir(s)?.millis();
    let next = |y: i32, m: u32| Instant::parse_fhir(&format!("{y:04}-{m:02}"));
    let y: i32 = s.get(0..4)?.parse().ok()?;
    Some(match s.len() {
        4 => next(y + 1, 1)?.millis() - 1,
        7 => {
            let m: u32 = s.get(5..7)?.parse().ok()?;
            let (ny, nm) = if m >= 12 { (y + 1, 1) } else { (y, m + 1) };
            next(ny, nm)?.millis() - 1
        }
        10 => start + 86_400_000 - 1,
        _ => start,
    })
}

/// The patients of a Group at `at`: Patient members not inactive whose period covers it.
async fn members(ctx: &Context, base: &str, group: &str, at: i64) -> Result<Vec<String>, Outcome> {
    ctx.guard.require(Perm::Read, "Group")?;
    ctx.guard
        .check_stored(ctx, Perm::Read, "Group", group)
        .await?;
    let body = match ctx.store.read("Group", group).await? {
        Some(v) if !v.deleted => v.body,
        _ => {
            return Err(Outcome::not_found(format!(
                "Group/{group} no longer exists"
            )));
        }
    };
    let g: Value = body
        .as_deref()
        .and_then(|b| serde_json::from_str(b).ok())
        .ok_or_else(|| Outcome::internal("A stored Group is not JSON"))?;
    let mut out = Vec::new();
    for m in g
        .get("member")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if m.get("inactive").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let period = m.get("period");
        let start = period.and_then(|p| p.get("start")).and_then(Value::as_str);
        let end = period.and_then(|p| p.get("end")).and_then(Value::as_str);
        if start
            .and_then(Instant::parse_fhir)
            .is_some_and(|s| s.millis() > at)
            || end.and_then(end_of).is_some_and(|e| e < at)
        {
            continue;
        }
        let Some(reference) = m
            .get("entity")
            .and_then(|e| e.get("reference"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let local = reference
            .strip_prefix(base)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(reference);
        if let Some(id) = local.strip_prefix("Patient/")
            && crate::fhir::types::is_valid_id(id)
        {
            out.push(id.to_string());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Keeps the listed elements of a resource (and what every resource needs), marked as a
/// subset; a resource none of the elements applies to is returned whole.
fn subset(resource_type: &str, text: &str, elements: &[String]) -> Result<String, Outcome> {
    let keep: Vec<&str> = elements
        .iter()
        .filter_map(|e| match e.split_once('.') {
            Some((t, el)) if t == resource_type => Some(el),
            Some(_) => None,
            None => Some(e.as_str()),
        })
        .collect();
    if keep.is_empty() {
        return Ok(text.to_string());
    }
    let mut v: Value = serde_json::from_str(text)
        .map_err(|_| Outcome::internal("A stored resource is not JSON"))?;
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|k, _| {
            matches!(k.as_str(), "resourceType" | "id" | "meta") || keep.contains(&k.as_str())
        });
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let tags = meta.entry("tag").or_insert_with(|| json!([]));
            if let Some(tags) = tags.as_array_mut() {
                tags.push(json!({
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                    "code": "SUBSETTED",
                }));
            }
        }
    }
    serde_json::to_string(&v).map_err(|_| Outcome::internal("Cannot serialize a resource"))
}

/// Appends `versions` of `resource_type` to the files (subset to `elements`); returns how
/// many.
async fn emit(
    files: &mut Files,
    resource_type: &str,
    versions: Vec<crate::store::StoredVersion>,
    elements: Option<&[String]>,
) -> Result<u64, Outcome> {
    let mut n = 0;
    for v in versions {
        let Some(body) = v.body.as_deref().filter(|_| !v.deleted) else {
            continue;
        };
        let line = match elements {
            Some(elements) => subset(resource_type, body, elements)?,
            // stored text is compact JSON; anything else is made so
            None if body.contains('\n') => serde_json::from_str::<Value>(body)
                .map(|v| v.to_string())
                .map_err(|_| Outcome::internal("A stored resource is not JSON"))?,
            None => body.to_string(),
        };
        files.line("output", resource_type, &line).await?;
        n += 1;
    }
    Ok(n)
}

/// Whether the job was cancelled (or is no longer running) meanwhile.
async fn cancelled(ctx: &Context, id: &str) -> Result<bool, Outcome> {
    Ok(ctx
        .store
        .bulk()
        .job(id)
        .await?
        .is_none_or(|j| j.state != "running"))
}

/// Runs an export: writes its files, then marks it done (or stops quietly when it was
/// cancelled meanwhile).
pub async fn run(ctx: &Context, job: &BulkJobRow) -> Result<(), Outcome> {
    let bulk = ctx.store.bulk();
    if !bulk
        .transition(
            &job.id,
            &["accepted", "running"],
            "running",
            None,
            None,
            None,
        )
        .await?
    {
        return Ok(());
    }
    // a restarted attempt begins again
    bulk.clear_files(&job.id).await?;
    let params: Params = serde_json::from_str(&job.params)
        .map_err(|_| Outcome::internal("The export's stored parameters cannot be read"))?;
    let principal = match &job.principal {
        Some(text) => Some(
            principal_from(text)
                .ok_or_else(|| Outcome::internal("The export's principal cannot be read"))?,
        ),
        None => None,
    };
    let guard = Guard::load(ctx.store.as_ref(), principal, &job.base).await?;
    let ctx = &Context {
        guard,
        ..ctx.clone()
    };
    let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
    let owners: Option<Owners> = match params.level.as_str() {
        "system" => None,
        level => {
            let mut ids = match (level, &params.group) {
                ("group", Some(g)) => Some(members(ctx, &job.base, g, job.transaction_time).await?),
                _ => None,
            };
            if let Some(chosen) = &params.patients {
                ids = Some(match ids {
                    Some(members) => members.into_iter().filter(|m| chosen.contains(m)).collect(),
                    None => chosen.clone(),
                });
            }
            Some(match ids {
                Some(ids) if ids.is_empty() => {
                    Owners::Matching(Box::new(crate::interaction::reader::nothing()))
                }
                Some(ids) => Owners::Matching(Box::new(Filter::Id { ids, negate: false })),
                None => Owners::Matching(Box::new(Filter::OfType(vec!["Patient".to_string()]))),
            })
        }
    };
    let types: Vec<String> = match &params.types {
        Some(t) => t.clone(),
        None => ctx
            .defs
            .resource_types()
            .iter()
            // the audit trail only when `_type` names it, as with `$everything`: it is the
            // server's record of access, not the patients' data
            .filter(|t| {
                *t != "AuditEvent"
                    && (owners.is_none() || in_compartment(&registry, t))
                    && ctx.guard.require(Perm::Read, t).is_ok()
            })
            .cloned()
            .collect(),
    };
    if types.iter().any(|t| t == "AuditEvent") {
        // recorded AuditEvents become resources before they can be read
        crate::interaction::audit::settle(ctx.store.as_ref(), &registry).await?;
    }
    let mut files = Files::new(ctx.store.clone(), &job.id, ctx.bulk.file_bytes);
    for note in &params.notes {
        let outcome = crate::fhir::outcome::operation_outcome(&[Issue::warning(
            "not-supported",
            format!("Ignored (handling=lenient): {note}"),
        )]);
        files
            .line("error", "OperationOutcome", &outcome.to_string())
            .await?;
    }
    let mut window = vec![(
        "_lastUpdated".to_string(),
        format!("le{}", Instant::from_millis(job.transaction_time).to_fhir()),
    )];
    if let Some(since) = params.since {
        window.push((
            "_lastUpdated".to_string(),
            format!("ge{}", Instant::from_millis(since).to_fhir()),
        ));
    }
    let mut exported = 0u64;
    let total_types = types.len();
    for (n, t) in types.iter().enumerate() {
        if ctx.guard.require(Perm::Read, t).is_err() {
            continue;
        }
        bulk.progress(
            &job.id,
            &format!(
                "{exported} resources exported; type {} of {total_types} ({t})",
                n + 1
            ),
        )
        .await?;
        let queries: Vec<&Vec<(String, String)>> = params
            .type_filters
            .iter()
            .filter(|(ft, _)| ft == t)
            .map(|(_, q)| q)
            .collect();
        // nothing narrows this type: its pages come straight from the current versions
        if owners.is_none()
            && queries.is_empty()
            && ctx.guard.filters(&registry, Perm::Read, t)?.is_empty()
        {
            let mut after = String::new();
            loop {
                let page = ctx
                    .store
                    .current_page(
                        t,
                        params.since.unwrap_or(i64::MIN),
                        job.transaction_time,
                        &after,
                        PAGE,
                    )
                    .await?;
                let Some(last) = page.last() else {
                    break;
                };
                after = last.id.clone();
                let full = page.len() >= PAGE as usize;
                exported += emit(&mut files, t, page, params.elements.as_deref()).await?;
                if cancelled(ctx, &job.id).await? {
                    return Ok(());
                }
                if !full {
                    break;
                }
            }
            files.close().await?;
            continue;
        }
        let empty = Vec::new();
        let queries = if queries.is_empty() {
            vec![&empty]
        } else {
            queries
        };
        let mut alternatives = Vec::new();
        for q in queries {
            let mut pairs = window.clone();
            pairs.extend(q.iter().cloned());
            let mut filters =
                crate::interaction::search::export_filters(ctx, &registry, t, &pairs).await?;
            if let Some(owners) = &owners {
                filters.push(compartment(&registry, t, owners));
            }
            alternatives.push(filters);
        }
        let filters = if alternatives.len() == 1 {
            alternatives.pop().unwrap_or_default()
        } else {
            vec![Filter::Any(alternatives)]
        };
        let one = [t.clone()];
        let mut anchor: Option<Anchor> = None;
        loop {
            let hits = ctx
                .store
                .search(&SearchSpec {
                    types: &one,
                    filters: &filters,
                    sort: &[],
                    anchor: anchor.as_ref(),
                    backwards: false,
                    limit: PAGE,
                    forms: anchor.as_ref().map_or(&[], |a| &a.plan),
                })
                .await?;
            let Some(last) = hits.last() else {
                break;
            };
            let full = hits.len() >= PAGE as usize;
            anchor = Some(Anchor {
                keys: last.keys.clone(),
                resource_type: last.resource_type.clone(),
                id: last.id.clone(),
                plan: last.plan.clone(),
            });
            let keys: Vec<(String, String)> = hits
                .iter()
                .map(|h| (h.resource_type.clone(), h.id.clone()))
                .collect();
            let order: HashMap<&str, usize> = hits
                .iter()
                .enumerate()
                .map(|(i, h)| (h.id.as_str(), i))
                .collect();
            let mut versions = ctx.store.read_many(&keys).await?;
            versions.sort_by_key(|v| order.get(v.id.as_str()).copied().unwrap_or(usize::MAX));
            exported += emit(&mut files, t, versions, params.elements.as_deref()).await?;
            // a cancelled job stops at the next page (its files are removed by the cancel)
            if cancelled(ctx, &job.id).await? {
                return Ok(());
            }
            if !full {
                break;
            }
        }
        files.close().await?;
    }
    files.close().await?;
    let now = Instant::now().millis();
    bulk.progress(&job.id, &format!("{exported} resources exported"))
        .await?;
    let finished = bulk
        .transition(
            &job.id,
            &["running"],
            "done",
            None,
            Some(now),
            Some(now + ctx.bulk.ttl_ms),
        )
        .await?;
    if !finished {
        // cancelled at the last moment: what was written goes
        bulk.clear_files(&job.id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::*;

    #[test]
    fn type_filters_split_only_where_a_query_begins() {
        assert_eq!(
            split_type_filters("Observation?code=a,b&status=final,Patient?gender=male"),
            vec![
                "Observation?code=a,b&status=final".to_string(),
                "Patient?gender=male".to_string()
            ]
        );
        assert_eq!(
            split_type_filters("Patient?name=x"),
            vec!["Patient?name=x".to_string()]
        );
    }

    #[test]
    fn a_partial_end_lasts_until_its_end() {
        let day = end_of("2026-02-03").unwrap();
        assert_eq!(day, Instant::parse_fhir("2026-02-04").unwrap().millis() - 1);
        let month = end_of("2026-12").unwrap();
        assert_eq!(month, Instant::parse_fhir("2027-01").unwrap().millis() - 1);
        let year = end_of("2026").unwrap();
        assert_eq!(year, Instant::parse_fhir("2027").unwrap().millis() - 1);
    }

    #[test]
    fn subsets_keep_the_listed_elements_and_say_so() {
        let text = r#"{"resourceType":"Patient","id":"a","gender":"male","name":[{"family":"X"}]}"#;
        let out: Value =
            serde_json::from_str(&subset("Patient", text, &["gender".to_string()]).unwrap())
                .unwrap();
        assert_eq!(out["gender"], "male");
        assert!(out.get("name").is_none());
        assert_eq!(out["meta"]["tag"][0]["code"], "SUBSETTED");
        let whole = subset("Patient", text, &["Observation.code".to_string()]).unwrap();
        assert_eq!(whole, text);
    }

    #[test]
    fn settings_default_to_an_hour_and_64_mb_files() {
        let s = Settings::default();
        assert_eq!(s.ttl_ms, 3_600_000);
        assert_eq!(s.file_bytes, 64 << 20);
    }
}
