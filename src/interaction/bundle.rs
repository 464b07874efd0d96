//! batch and transaction Bundles (`POST [base]`), per http.html#transaction and bundle.html.
//!
//! A transaction runs in one [`Session`] (one database transaction): identities first
//! (server ids for `urn:uuid`/`urn:oid` fullUrls, conditional creates and updates resolved),
//! then every reference rewritten (fullUrls → `Type/id`, conditional references
//! `Type?criteria` → the one match), then validation, then the entries in the spec's order
//! (DELETE, POST, PUT/PATCH, GET/HEAD) through the same `_in` functions a REST call uses, then
//! referential integrity, then commit. Any failure rolls everything back and names the entry:
//! `Bundle.entry[3].resource.subject`. A batch runs each entry as a transaction of its own.

use super::session::{Session, locate, relocate};
use super::{
    Body, Context, FhirResponse, HistoryParams, Interaction, PatchBody, Preconditions,
    PreferReturn, Status, Target, conditional, create, delete, patch, provenance, read,
    resource_type, update, vread,
};
use crate::fhir::limits::Limits;
use crate::fhir::outcome::{ErrorKind, Issue, Outcome, operation_outcome};
use crate::fhir::references::{conditional_parts, for_each_reference_mut};
use crate::fhir::types::{Id, Instant, parse_etag};
use crate::search::criteria;
use crate::store::HistoryScope;
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

/// How often a transaction that collided with a concurrent one is retried.
const MAX_RETRIES: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    /// Processing order within a transaction (http.html#trules).
    fn order(self) -> u8 {
        match self {
            Verb::Delete => 0,
            Verb::Post => 1,
            Verb::Put | Verb::Patch => 2,
            Verb::Get | Verb::Head => 3,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    full_url: Option<String>,
    verb: Verb,
    /// Path segments of request.url, relative to the base.
    path: Vec<String>,
    query: Option<String>,
    resource: Option<Value>,
    pre: Preconditions,
}

impl Entry {
    fn label(&self) -> String {
        format!("Bundle.entry[{}]", self.index)
    }

    fn fail(&self, o: Outcome) -> Outcome {
        let rt = self
            .resource
            .as_ref()
            .and_then(|r| r.get("resourceType"))
            .and_then(Value::as_str);
        locate(o, Some(&self.label()), rt)
    }
}

/// What an entry does, once identities are resolved.
#[derive(Debug, Clone)]
enum Plan {
    Create {
        rt: String,
        id: Id,
    },
    /// A conditional create that matched an existing resource.
    Matched {
        rt: String,
        id: String,
    },
    Update {
        rt: String,
        id: String,
    },
    Patch {
        rt: String,
        id: String,
        patch: PatchBody,
    },
    Delete {
        rt: String,
        id: Option<String>,
    },
    Read {
        rt: String,
        id: String,
        version: Option<String>,
    },
    /// A read-only interaction served outside the transaction (history, capabilities).
    Other(Interaction),
}

pub(super) async fn process(
    ctx: &Context,
    base: &str,
    bundle: Value,
    prefer: PreferReturn,
    provenance: Option<Value>,
) -> Result<FhirResponse, Outcome> {
    let (kind, entries) = parse(bundle, base, &ctx.limits)?;
    let provenance = provenance
        .map(|p| provenance::prepare(ctx, p))
        .transpose()?;
    let transaction = kind == "transaction";
    // operation entries run first, each as its own call with its own Guard and audit (in a
    // transaction only those that change nothing, seeing the data as it was before it)
    let (ops, entries): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .partition(|e| operation_name(e).is_some());
    let mut results: Vec<(usize, Result<FhirResponse, Outcome>)> = Vec::new();
    if transaction {
        for e in &ops {
            check_operation_entry(ctx, e, true).map_err(|o| e.fail(o))?;
        }
    }
    for e in &ops {
        let r = run_operation_entry(ctx, base, e, transaction).await;
        match r {
            Err(o) if transaction => return Err(e.fail(o)),
            r => results.push((e.index, r.map_err(|o| e.fail(o)))),
        }
    }
    let response_type = if transaction {
        let done =
            with_retries(|| run_transaction(ctx, base, &entries, provenance.as_ref())).await?;
        results.extend(
            entries
                .iter()
                .map(|e| e.index)
                .zip(done.into_iter().map(Ok)),
        );
        "transaction-response"
    } else {
        let mut attempt = 0;
        let done = loop {
            match run_batch(ctx, base, &entries).await {
                Err(o) if o.kind == ErrorKind::Contention && attempt < MAX_RETRIES => attempt += 1,
                r => break r?,
            }
        };
        results.extend(entries.iter().map(|e| e.index).zip(done));
        "batch-response"
    };
    results.sort_by_key(|(i, _)| *i);
    let all: Vec<&Entry> = {
        let mut v: Vec<&Entry> = ops.iter().chain(entries.iter()).collect();
        v.sort_by_key(|e| e.index);
        v
    };
    let mut out = Vec::with_capacity(results.len());
    for (e, (_, result)) in all.into_iter().zip(&results) {
        if let Err(o) = result
            && o.kind.is_fault()
        {
            tracing::error!(kind = ?o.kind, entry = e.index, "bundle entry failed");
        }
        out.push(entry_json(e, result.as_ref(), base, prefer));
    }
    let mut response = FhirResponse::new(Status::Ok);
    response.body = Some(Body::Json(json!({
        "resourceType": "Bundle",
        "type": response_type,
        "timestamp": Instant::now().to_fhir(),
        "entry": out,
    })));
    Ok(response)
}

async fn with_retries<'a, F, Fut>(mut f: F) -> Result<Vec<FhirResponse>, Outcome>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<FhirResponse>, Outcome>> + 'a,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(o) if o.kind == ErrorKind::Contention && attempt < MAX_RETRIES => attempt += 1,
            r => return r,
        }
    }
}

/// Checks the Bundle's shape and reads its entries.
fn parse(bundle: Value, base: &str, limits: &Limits) -> Result<(String, Vec<Entry>), Outcome> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(Outcome::bad_request("POST to the base takes a Bundle").at("resourceType"));
    }
    let kind = bundle
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind != "transaction" && kind != "batch" {
        return Err(
            Outcome::bad_request("The Bundle type must be transaction or batch").at("Bundle.type"),
        );
    }
    let mut bundle = bundle;
    let raw = match bundle.get_mut("entry") {
        None => Vec::new(),
        Some(Value::Array(a)) => std::mem::take(a),
        Some(_) => {
            return Err(
                Outcome::new(ErrorKind::Structure, "Bundle.entry must be an array")
                    .at("Bundle.entry"),
            );
        }
    };
    if raw.len() > limits.bundle_entries {
        return Err(Limits::exceeded(
            "bundle-entries",
            limits.bundle_entries,
            &format!("A Bundle of {} entries", raw.len()),
        )
        .at("Bundle.entry"));
    }
    unique_full_urls(&raw)?;
    let mut entries = Vec::with_capacity(raw.len());
    for (index, mut e) in raw.into_iter().enumerate() {
        let label = format!("Bundle.entry[{index}]");
        let request = e
            .get("request")
            .cloned()
            .ok_or_else(|| Outcome::bad_request("An entry needs a request").at(label.clone()))?;
        let verb = match request.get("method").and_then(Value::as_str) {
            Some("GET") => Verb::Get,
            Some("HEAD") => Verb::Head,
            Some("POST") => Verb::Post,
            Some("PUT") => Verb::Put,
            Some("PATCH") => Verb::Patch,
            Some("DELETE") => Verb::Delete,
            _ => {
                return Err(Outcome::bad_request("Unknown request.method")
                    .at(format!("{label}.request.method")));
            }
        };
        let url = request.get("url").and_then(Value::as_str).ok_or_else(|| {
            Outcome::bad_request("An entry needs request.url").at(format!("{label}.request.url"))
        })?;
        let url = url.strip_prefix(base).unwrap_or(url);
        let url = url.trim_start_matches('/');
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (url, None),
        };
        let path: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let text = |name: &str| request.get(name).and_then(Value::as_str);
        let if_match = match text("ifMatch") {
            Some(v) => Some(parse_etag(v).ok_or_else(|| {
                Outcome::bad_request("ifMatch must be a version ETag such as W/\"3\"")
                    .at(format!("{label}.request.ifMatch"))
            })?),
            None => None,
        };
        let pre = Preconditions {
            if_match,
            if_none_match: text("ifNoneMatch").and_then(|v| {
                if v == "*" {
                    Some(super::IfNoneMatch::Any)
                } else {
                    parse_etag(v).map(super::IfNoneMatch::Version)
                }
            }),
            if_modified_since: text("ifModifiedSince").and_then(Instant::parse_fhir),
            if_none_exist: text("ifNoneExist")
                .map(|v| v.rsplit_once('?').map_or(v, |(_, q)| q).to_string()),
        };
        let resource = e.get_mut("resource").map(Value::take);
        if matches!(verb, Verb::Post | Verb::Put | Verb::Patch) && resource.is_none() {
            return Err(Outcome::bad_request("This request needs an entry.resource").at(label));
        }
        entries.push(Entry {
            index,
            full_url: e.get("fullUrl").and_then(Value::as_str).map(str::to_string),
            verb,
            path,
            query,
            resource,
            pre,
        });
    }
    Ok((kind, entries))
}

/// bdl-7: a fullUrl names one entry (entries of one fullUrl must differ in meta.versionId).
fn unique_full_urls(entries: &[Value]) -> Result<(), Outcome> {
    let mut seen: HashSet<(&str, Option<&str>)> = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let Some(url) = e.get("fullUrl").and_then(Value::as_str) else {
            continue;
        };
        let version = e
            .pointer("/resource/meta/versionId")
            .and_then(Value::as_str);
        if !seen.insert((url, version)) {
            return Err(Outcome::new(
                ErrorKind::Invalid,
                "bdl-7: fullUrl must be unique in a Bundle (or entries of one fullUrl differ \
                 in meta.versionId)",
            )
            .at(format!("Bundle.entry[{i}].fullUrl")));
        }
    }
    Ok(())
}

/// Runs entries as one transaction; the results are in entry order.
async fn run_transaction(
    ctx: &Context,
    base: &str,
    entries: &[Entry],
    provenance: Option<&Value>,
) -> Result<Vec<FhirResponse>, Outcome> {
    let mut s = Session::begin(ctx, base).await?;
    let results = run_in(ctx, base, &mut s, entries, provenance, &HashMap::new()).await?;
    super::recording::audit_in_session(ctx, &mut s, "transaction", "E", 200).await?;
    super::integrity::finish(s).await?;
    Ok(results)
}

/// Runs a batch in one database transaction: each entry inside a savepoint with its own
/// integrity check, rolled back alone when it fails, so entries stay independent while the
/// batch commits once.
async fn run_batch(
    ctx: &Context,
    base: &str,
    entries: &[Entry],
) -> Result<Vec<Result<FhirResponse, Outcome>>, Outcome> {
    let mut s = Session::begin(ctx, base).await?;
    let mut out = Vec::with_capacity(entries.len());
    // the entries' fullUrls, to name the rule when one refers to another
    let full_urls: HashMap<String, usize> = entries
        .iter()
        .filter_map(|e| e.full_url.clone().map(|u| (u, e.index)))
        .collect();
    for e in entries {
        let mut attempt = 0;
        let result = loop {
            let mark = s.mark();
            s.tx().savepoint("batch_entry").await?;
            let one = std::slice::from_ref(e);
            let r = match run_in(ctx, base, &mut s, one, None, &full_urls).await {
                Ok(r) => super::integrity::check_since(&mut s, &mark)
                    .await
                    .map(|_| r),
                Err(o) => Err(o),
            };
            match r {
                Ok(mut r) => {
                    s.tx().release_savepoint("batch_entry").await?;
                    break r
                        .pop()
                        .ok_or_else(|| Outcome::internal("an entry was not processed"));
                }
                Err(o) => {
                    s.tx().rollback_to_savepoint("batch_entry").await?;
                    s.reset(mark);
                    if o.kind == ErrorKind::Contention && attempt < MAX_RETRIES {
                        attempt += 1;
                        continue;
                    }
                    break Err(o);
                }
            }
        };
        out.push(result);
    }
    super::recording::audit_in_session(ctx, &mut s, "batch", "E", 200).await?;
    super::integrity::finish(s).await?;
    Ok(out)
}

/// The body of a transaction on an open session (no commit).
async fn run_in(
    ctx: &Context,
    base: &str,
    s: &mut Session,
    entries: &[Entry],
    provenance: Option<&Value>,
    batch_full_urls: &HashMap<String, usize>,
) -> Result<Vec<FhirResponse>, Outcome> {
    let mut entries: Vec<Entry> = entries.to_vec();
    // Explicit targets are locked up front, in one order, so transactions cannot deadlock
    // on them.
    let mut targets: Vec<(String, String)> = entries
        .iter()
        .filter(|e| matches!(e.verb, Verb::Put | Verb::Patch | Verb::Delete))
        .filter_map(|e| match e.path.as_slice() {
            [t, id] if e.query.is_none() => Some((t.clone(), id.clone())),
            _ => None,
        })
        .collect();
    targets.sort();
    targets.dedup();
    for (t, id) in &targets {
        s.tx().lock_resource(t, id).await?;
    }

    // 1. identities
    let mut plans = Vec::with_capacity(entries.len());
    let mut ids: HashMap<String, String> = HashMap::new();
    for e in &mut entries {
        s.set_entry(Some(e.label()));
        let plan = plan(ctx, s, e).await.map_err(|o| e.fail(o))?;
        if let (Some(full_url), Some((rt, id))) = (&e.full_url, plan_target(&plan)) {
            ids.insert(full_url.clone(), format!("{rt}/{id}"));
        }
        plans.push(plan);
    }
    check_duplicates(&entries, &plans)?;

    // 2. references: fullUrls and conditional references → Type/id
    resolve_references(s, &mut entries, &ids, batch_full_urls).await?;

    // 3. validation of what will be written
    for (e, plan) in entries.iter_mut().zip(&plans) {
        let Some(resource) = e.resource.as_mut() else {
            continue;
        };
        let checked = match plan {
            Plan::Create { rt, .. } => create::prepare(ctx, rt, resource.take()).map(|(_, r)| r),
            Plan::Update { rt, id } => {
                if let Some(obj) = resource.as_object_mut() {
                    obj.insert("id".into(), Value::String(id.clone()));
                }
                let r = resource.take();
                update::prepare(ctx, rt, &Target::Id(id.clone()), &r).map(|_| r)
            }
            _ => continue,
        };
        match checked {
            Ok(r) => *resource = r,
            Err(o) => return Err(locate(o, Some(&e.label()), plan_type(plan))),
        }
    }

    // 4. execution in the spec's order
    let mut order: Vec<(usize, &Entry, &Plan)> = entries
        .iter()
        .zip(&plans)
        .enumerate()
        .map(|(i, (e, plan))| (i, e, plan))
        .collect();
    order.sort_by_key(|&(i, e, _)| (e.verb.order(), i));
    let mut results: Vec<(usize, FhirResponse)> = Vec::with_capacity(order.len());
    for (i, e, plan) in order {
        s.set_entry(Some(e.label()));
        let r = execute(ctx, base, s, e, plan)
            .await
            .map_err(|o| locate(o, Some(&e.label()), plan_type(plan)))?;
        results.push((i, r));
    }
    s.set_entry(None);
    if let Some(p) = provenance {
        provenance::record_in(ctx, s, p.clone()).await?;
    }
    // back in the order of the entries
    results.sort_by_key(|&(i, _)| i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

fn plan_target(plan: &Plan) -> Option<(&str, &str)> {
    match plan {
        Plan::Create { rt, id } => Some((rt, id.as_str())),
        Plan::Matched { rt, id } | Plan::Update { rt, id } | Plan::Patch { rt, id, .. } => {
            Some((rt, id))
        }
        Plan::Delete { rt, id: Some(id) } => Some((rt, id)),
        _ => None,
    }
}

fn plan_type(plan: &Plan) -> Option<&str> {
    match plan {
        Plan::Create { rt, .. }
        | Plan::Matched { rt, .. }
        | Plan::Update { rt, .. }
        | Plan::Patch { rt, .. }
        | Plan::Delete { rt, .. }
        | Plan::Read { rt, .. } => Some(rt),
        Plan::Other(_) => None,
    }
}

/// The operation an entry calls (`$name` as the last segment of request.url), if any.
fn operation_name(e: &Entry) -> Option<&str> {
    e.path.last().and_then(|p| p.strip_prefix('$'))
}

/// The operation request an entry makes, and whether the operation changes state.
fn operation_request(
    ctx: &Context,
    e: &Entry,
) -> Result<(super::operation::OperationRequest, bool), Outcome> {
    use super::operation::{Level, OPERATIONS, OperationMethod, OperationRequest};
    let name = operation_name(e).unwrap_or_default().to_string();
    let at: Vec<&str> = e.path.iter().map(String::as_str).collect();
    let (rt, id, version) = match at.as_slice() {
        [_] => (None, None, None),
        [t, _] => (Some(*t), None, None),
        [t, id, _] => (Some(*t), Some(*id), None),
        [t, id, "_history", v, _] => (Some(*t), Some(*id), Some(*v)),
        _ => {
            return Err(Outcome::bad_request(
                "An operation's request.url is [$op], Type/$op, Type/id/$op or \
                 Type/id/_history/vid/$op",
            ));
        }
    };
    if let Some(t) = rt {
        resource_type(ctx, t)?;
    }
    let level = match (rt, id) {
        (None, _) => Level::System,
        (Some(_), None) => Level::Type,
        (Some(_), Some(_)) => Level::Instance,
    };
    let affects_state = OPERATIONS
        .iter()
        .find(|o| o.name == name && o.applies(level, rt))
        .map(|o| o.affects_state);
    let method = match e.verb {
        Verb::Get => OperationMethod::Get,
        Verb::Post => OperationMethod::Post,
        _ => {
            return Err(Outcome::new(
                ErrorKind::MethodNotAllowed,
                "An operation is called with GET or POST",
            ));
        }
    };
    let query: Vec<(String, String)> = match &e.query {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|_| Outcome::bad_request("The request.url query cannot be decoded"))?,
        None => Vec::new(),
    };
    let op = OperationRequest {
        name,
        resource_type: rt.map(str::to_string),
        id: id.map(str::to_string),
        version: version.map(str::to_string),
        method,
        query,
        body: if e.verb == Verb::Post {
            e.resource.clone()
        } else {
            None
        },
        prefer: None,
        accept: None,
    };
    // an operation this server does not define answers as its REST call does
    Ok((op, affects_state.unwrap_or(false)))
}

/// Whether an operation entry may run: GET only for operations that change nothing, and in
/// a transaction only those (an operation that changes state commits on its own).
fn check_operation_entry(ctx: &Context, e: &Entry, transaction: bool) -> Result<(), Outcome> {
    let (op, affects_state) = operation_request(ctx, e)?;
    if affects_state && e.verb == Verb::Get {
        return Err(Outcome::bad_request(format!(
            "${} changes state: it is called with POST",
            op.name
        )));
    }
    if affects_state && transaction {
        return Err(Outcome::bad_request(format!(
            "${} changes state and commits on its own, so it cannot be part of an atomic \
             transaction Bundle; send it in a batch or as its own request",
            op.name
        )));
    }
    Ok(())
}

/// Runs an operation entry as its REST call would: the request's Guard, and its AuditEvent.
async fn run_operation_entry(
    ctx: &Context,
    base: &str,
    e: &Entry,
    transaction: bool,
) -> Result<FhirResponse, Outcome> {
    check_operation_entry(ctx, e, transaction)?;
    let (op, _) = operation_request(ctx, e)?;
    let interaction = Interaction::Operation(op.clone());
    let record = super::recording::audit_record(&interaction);
    let result = super::operation::run(ctx, base, op).await;
    if ctx.audit
        && let Some((r, _)) = record
    {
        super::recording::record_after(ctx, base, r, &result).await?;
    }
    result
}

fn not_supported(what: &str) -> Outcome {
    Outcome::new(
        ErrorKind::NotImplemented,
        format!("{what} is not supported in a Bundle entry yet"),
    )
}

/// Decides what an entry does; resolves conditional creates and updates in the transaction.
async fn plan(ctx: &Context, s: &mut Session, e: &Entry) -> Result<Plan, Outcome> {
    let seg: Vec<&str> = e.path.iter().map(String::as_str).collect();
    if seg.iter().any(|p| p.starts_with('$')) {
        return Err(not_supported("An operation"));
    }
    let rt = match seg.first() {
        Some(&"_history") | Some(&"metadata") | None => None,
        Some(t) => Some(resource_type(ctx, t)?.to_string()),
    };
    if let Some(t) = &rt
        && matches!(e.verb, Verb::Put | Verb::Patch | Verb::Delete)
    {
        super::refuse_audit_change(t)?;
    }
    let body_type = e
        .resource
        .as_ref()
        .and_then(|r| r.get("resourceType"))
        .and_then(Value::as_str);
    match (e.verb, rt, seg.as_slice()) {
        (Verb::Post, Some(rt), [_]) if e.query.is_none() => {
            if body_type != Some(rt.as_str()) {
                return Err(Outcome::bad_request(format!(
                    "The entry resource is not a {rt} as request.url says"
                ))
                .at("resourceType"));
            }
            if let Some(q) = &e.pre.if_none_exist
                && let Some(found) = conditional::resolve(s, &rt, q).await?
            {
                return Ok(Plan::Matched { rt, id: found });
            }
            Ok(Plan::Create {
                rt,
                id: Id::generate(),
            })
        }
        (Verb::Put, Some(rt), [_, id]) if e.query.is_none() => Ok(Plan::Update {
            rt,
            id: Id::parse(id)?.to_string(),
        }),
        (Verb::Put, Some(rt), [_]) if e.query.is_some() => {
            let resource = e.resource.as_ref().unwrap_or(&Value::Null);
            let target = Target::Criteria(e.query.clone().unwrap_or_default());
            let id = update::resolve_target(s, &rt, &target, resource).await?;
            Ok(Plan::Update { rt, id })
        }
        (Verb::Patch, Some(rt), path @ ([_, _] | [_])) => {
            let id = match (path, &e.query) {
                ([_, id], None) => Id::parse(id)?.to_string(),
                ([_], Some(q)) => conditional::resolve(s, &rt, q)
                    .await?
                    .ok_or_else(|| Outcome::not_found("No resource matches the criteria"))?,
                _ => return Err(Outcome::bad_request("PATCH needs Type/id or Type?criteria")),
            };
            let patch = patch_body(e.resource.as_ref())?;
            Ok(Plan::Patch { rt, id, patch })
        }
        (Verb::Delete, Some(rt), [_, id]) if e.query.is_none() => Ok(Plan::Delete {
            rt,
            id: Some(Id::parse(id)?.to_string()),
        }),
        (Verb::Delete, Some(rt), [_]) if e.query.is_some() => {
            let q = e.query.clone().unwrap_or_default();
            let id = conditional::resolve(s, &rt, &q).await?;
            Ok(Plan::Delete { rt, id })
        }
        (Verb::Get | Verb::Head, Some(rt), [_, id]) if e.query.is_none() => Ok(Plan::Read {
            rt,
            id: id.to_string(),
            version: None,
        }),
        (Verb::Get | Verb::Head, Some(rt), [_, id, "_history", v]) => Ok(Plan::Read {
            rt,
            id: id.to_string(),
            version: Some(v.to_string()),
        }),
        (Verb::Get | Verb::Head, rt, path) => {
            let params = || history_params(e.query.as_deref());
            let search = |scope| -> Result<Interaction, Outcome> {
                let pairs: Vec<(String, String)> =
                    serde_urlencoded::from_str(e.query.as_deref().unwrap_or(""))
                        .map_err(|_| Outcome::bad_request("The query cannot be decoded"))?;
                Ok(Interaction::Search(super::search::SearchRequest {
                    scope,
                    pairs,
                    strict: false,
                    paging: false,
                }))
            };
            let interaction = match (rt, path) {
                (_, ["metadata"]) => Interaction::Capabilities,
                (_, ["_history"]) => Interaction::History {
                    scope: HistoryScope::System,
                    params: params()?,
                },
                (Some(rt), [_, "_history"]) => Interaction::History {
                    scope: HistoryScope::Type(rt),
                    params: params()?,
                },
                (Some(rt), [_, id, "_history"]) => Interaction::History {
                    scope: HistoryScope::Instance(rt, id.to_string()),
                    params: params()?,
                },
                (_, []) => search(super::search::SearchScope::System)?,
                (Some(rt), [_]) => search(super::search::SearchScope::Type(rt))?,
                (Some(rt), [_, id, target]) => search(super::search::SearchScope::Compartment {
                    owner_type: rt,
                    owner_id: id.to_string(),
                    target: target.to_string(),
                })?,
                _ => return Err(not_supported("This request")),
            };
            Ok(Plan::Other(interaction))
        }
        _ => Err(Outcome::bad_request(
            "This request.url and method do not make a FHIR interaction",
        )),
    }
}

fn history_params(query: Option<&str>) -> Result<HistoryParams, Outcome> {
    let pairs: Vec<(String, String)> = match query {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|_| Outcome::bad_request("The request.url query cannot be decoded"))?,
        None => Vec::new(),
    };
    HistoryParams::parse(&pairs)
}

/// A PATCH entry's body: a Binary holding a JSON Patch, or FHIRPath Patch Parameters.
fn patch_body(resource: Option<&Value>) -> Result<PatchBody, Outcome> {
    let r = resource.ok_or_else(|| Outcome::bad_request("PATCH needs an entry.resource"))?;
    match r.get("resourceType").and_then(Value::as_str) {
        Some("Parameters") => Ok(PatchBody::FhirPath(r.clone())),
        Some("Binary") => {
            let ct = r.get("contentType").and_then(Value::as_str).unwrap_or("");
            if !ct.starts_with("application/json-patch+json") {
                return Err(Outcome::bad_request(
                    "A Binary PATCH body must have contentType application/json-patch+json",
                ));
            }
            let data = r.get("data").and_then(Value::as_str).unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|_| Outcome::bad_request("Binary.data is not base64"))?;
            let ops: Value = serde_json::from_slice(&bytes)
                .map_err(|_| Outcome::bad_request("Binary.data is not a JSON Patch document"))?;
            Ok(PatchBody::Json(ops))
        }
        _ => Err(Outcome::bad_request(
            "A PATCH entry holds a Binary (JSON Patch) or a Parameters (FHIRPath Patch)",
        )),
    }
}

/// The same resource may be written by one entry only.
fn check_duplicates(entries: &[Entry], plans: &[Plan]) -> Result<(), Outcome> {
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (e, p) in entries.iter().zip(plans) {
        let writes = matches!(
            p,
            Plan::Create { .. } | Plan::Update { .. } | Plan::Patch { .. } | Plan::Delete { .. }
        );
        let Some((rt, id)) = plan_target(p).filter(|_| writes) else {
            continue;
        };
        if let Some(first) = seen.insert((rt.to_string(), id.to_string()), e.index) {
            return Err(Outcome::bad_request(format!(
                "Bundle.entry[{first}] and Bundle.entry[{}] both change {rt}/{id}",
                e.index
            ))
            .at(e.label()));
        }
    }
    Ok(())
}

/// Rewrites references to fullUrls of the Bundle and resolves conditional references; every
/// reference that cannot be resolved is reported, then the transaction fails.
async fn resolve_references(
    s: &mut Session,
    entries: &mut [Entry],
    ids: &HashMap<String, String>,
    batch_full_urls: &HashMap<String, usize>,
) -> Result<(), Outcome> {
    let mut issues = Vec::new();
    let mut kind = ErrorKind::NotFound;
    let mut conditional_refs: HashMap<String, String> = HashMap::new();
    for e in entries.iter_mut() {
        let label = e.label();
        let Some(resource) = e.resource.as_mut() else {
            continue;
        };
        let rt = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut wanted: Vec<(String, String)> = Vec::new();
        for_each_reference_mut(resource, &rt, &mut |expr, r| {
            if let Some(target) = ids.get(r.as_str()) {
                *r = target.clone();
            } else {
                wanted.push((expr.to_string(), r.clone()));
            }
        });
        for (expr, r) in wanted {
            let at = relocate(&expr, Some(&label), &rt);
            if let Some(other) = batch_full_urls.get(&r) {
                // R4 http.html#brules: no interdependencies between the entries of a batch
                kind = ErrorKind::BadRequest;
                issues.push(
                    Issue::error(
                        "invalid",
                        format!(
                            "{at} refers to {r}, the fullUrl of Bundle.entry[{other}]: the \
                             entries of a batch are processed independently and may not refer \
                             to each other (R4 http.html#brules); send a transaction Bundle, \
                             or refer to the resource by Type/id"
                        ),
                    )
                    .at(at),
                );
            } else if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") {
                issues.push(
                    Issue::error(
                        "not-found",
                        format!("{r} is not the fullUrl of any entry of this Bundle"),
                    )
                    .at(at),
                );
            } else if let Some((t, q)) = conditional_parts(&r) {
                if conditional_refs.contains_key(&r) {
                    continue;
                }
                let criteria = match criteria::parse(t, q) {
                    Ok(c) => c,
                    Err(mut o) => {
                        for i in &mut o.issues {
                            i.expression = vec![at.clone()];
                        }
                        return Err(o);
                    }
                };
                let criteria =
                    s.guard
                        .criteria(&s.registry, crate::auth::Perm::Read, t, criteria)?;
                let found = s.tx().find(t, &criteria, 2).await?;
                match found.as_slice() {
                    [one] => {
                        conditional_refs.insert(r.clone(), format!("{t}/{one}"));
                    }
                    [] => issues.push(
                        Issue::error("not-found", format!("No {t} matches the reference {r}"))
                            .at(at),
                    ),
                    _ => {
                        kind = ErrorKind::MultipleMatches;
                        issues.push(
                            Issue::error(
                                "multiple-matches",
                                format!("Several {t} match the reference {r}"),
                            )
                            .at(at),
                        );
                    }
                }
            }
        }
    }
    if !issues.is_empty() {
        return Err(Outcome::with_issues(kind, issues));
    }
    if !conditional_refs.is_empty() {
        for e in entries.iter_mut() {
            if let Some(resource) = e.resource.as_mut() {
                let rt = resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                for_each_reference_mut(resource, &rt, &mut |_, r| {
                    if let Some(t) = conditional_refs.get(r.as_str()) {
                        *r = t.clone();
                    }
                });
            }
        }
    }
    Ok(())
}

/// Runs one planned entry in the session.
async fn execute(
    ctx: &Context,
    base: &str,
    s: &mut Session,
    e: &Entry,
    plan: &Plan,
) -> Result<FhirResponse, Outcome> {
    let resource = || e.resource.clone().unwrap_or(Value::Null);
    match plan {
        Plan::Create { rt, id } => {
            create::create_in(s, rt, resource(), None, Some(id.clone())).await
        }
        Plan::Matched { rt, id } => {
            // answering with the match is a read of it
            s.guard.require(crate::auth::Perm::Read, rt)?;
            let (guard, registry) = (s.guard.clone(), s.registry.clone());
            guard
                .check_in_tx(s.tx(), &registry, crate::auth::Perm::Read, rt, id)
                .await?;
            let current =
                s.tx().current(rt, id).await?.ok_or_else(|| {
                    Outcome::internal("A matched resource has no current version")
                })?;
            Ok(super::write::existing(base, &current, Status::Ok))
        }
        Plan::Update { rt, id } => update::update_in(s, rt, id, resource(), e.pre.if_match).await,
        Plan::Patch { rt, id, patch } => {
            patch::patch_in(ctx, s, rt, &Target::Id(id.clone()), patch, e.pre.if_match).await
        }
        Plan::Delete { rt, id: Some(id) } => {
            delete::delete_in(s, rt, &Target::Id(id.clone()), e.pre.if_match).await
        }
        Plan::Delete { id: None, .. } => {
            let mut r = FhirResponse::new(Status::NoContent);
            r.issues.push(Issue::information(
                "informational",
                "No resource matches the criteria",
            ));
            Ok(r)
        }
        Plan::Read { rt, id, version } => {
            let id = Id::parse(id)?;
            s.guard.require(crate::auth::Perm::Read, rt)?;
            let (guard, registry) = (s.guard.clone(), s.registry.clone());
            // forbidden looks like unknown, as for a REST read
            guard
                .check_in_tx(s.tx(), &registry, crate::auth::Perm::Read, rt, id.as_str())
                .await?;
            let mut r = match version {
                None => {
                    let current = s.tx().current(rt, id.as_str()).await?;
                    read::respond(rt, id.as_str(), current, &e.pre)?
                }
                Some(v) => {
                    let mut found = match v.parse::<i64>() {
                        Ok(n) => s.tx().version(rt, id.as_str(), n).await?,
                        Err(_) => None,
                    };
                    if let Some(fv) = &found {
                        let mut src = super::guard::Src::Tx(s.tx());
                        if !guard
                            .version_visible(&mut src, &registry, crate::auth::Perm::Read, fv)
                            .await?
                        {
                            found = None;
                        }
                    }
                    vread::respond(rt, id.as_str(), v, found)?
                }
            };
            if e.verb == Verb::Head {
                r.body = None;
            }
            Ok(r)
        }
        Plan::Other(Interaction::Capabilities) => {
            let _ = ctx.registry.current(ctx.store.as_ref()).await;
            Ok(super::capabilities::response(ctx, base))
        }
        Plan::Other(Interaction::History { scope, params }) => {
            super::history::history(ctx, base, scope, params).await
        }
        Plan::Other(Interaction::Search(req)) => {
            super::search::search(ctx, base, req.clone()).await
        }
        Plan::Other(_) => Err(not_supported("This request")),
    }
}

fn status_line(code: u16) -> String {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    format!("{code} {reason}")
}

/// One response entry: status, location, etag, lastModified, and the resource or outcome the
/// client preferred (reads always carry their resource; errors their OperationOutcome).
fn entry_json(
    e: &Entry,
    result: Result<&FhirResponse, &Outcome>,
    base: &str,
    prefer: PreferReturn,
) -> Value {
    let mut entry = Map::new();
    let mut response = Map::new();
    match result {
        Err(o) => {
            response.insert("status".into(), json!(status_line(o.status())));
            response.insert("outcome".into(), o.to_resource());
        }
        Ok(r) => {
            response.insert("status".into(), json!(status_line(r.status.code())));
            if let Some(loc) = &r.location {
                response.insert("location".into(), json!(loc));
                if let Some((url, _)) = loc.split_once("/_history/") {
                    entry.insert("fullUrl".into(), json!(url));
                }
            }
            if let Some(v) = r.version {
                response.insert("etag".into(), json!(crate::fhir::types::etag(v)));
            }
            if let Some(lm) = r.last_modified {
                response.insert("lastModified".into(), json!(lm.to_fhir()));
            }
            let is_read = matches!(e.verb, Verb::Get | Verb::Head);
            let resource = r.body.as_ref().and_then(|b| b.to_value().ok());
            match (is_read, prefer) {
                (true, _) | (false, PreferReturn::Representation) => {
                    if let Some(res) = resource {
                        entry.insert("resource".into(), res);
                    }
                }
                (false, PreferReturn::OperationOutcome) => {
                    let issues = if r.issues.is_empty() {
                        vec![Issue::information("informational", "The entry succeeded")]
                    } else {
                        r.issues.clone()
                    };
                    response.insert("outcome".into(), operation_outcome(&issues));
                }
                (false, PreferReturn::Minimal) => {}
            }
        }
    }
    let _ = base;
    entry.insert("response".into(), Value::Object(response));
    Value::Object(entry)
}
