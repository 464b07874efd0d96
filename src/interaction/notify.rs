//! Subscriptions that deliver (docs/subscriptions.md). The **dispatcher** (every node, a
//! few times a second) reads the change feed after its stored position, matches each
//! committed version against every `active`/`requested`/`error` Subscription of its type —
//! the criteria run as a search *as the Subscription's owner*, so what the owner may not read
//! never matches — and records what each is owed in the outbox table, in change-feed order,
//! then enqueues one delivery job per Subscription. The **delivery job** holds the
//! Subscription's lease (one delivery at a time: commit order), sends the handshake when the
//! Subscription is `requested`, then each owed notification in order — removed only after
//! the receiver answered 2xx, so a receiver that is down, or a node killed mid-delivery,
//! delays a notification but never loses it (at least once). Every notification is signed
//! (`X-Healporium-Signature: t=<ms>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`). After
//! three failed attempts in a row the Subscription is `error` with the reason; the first
//! success puts it back to `active`.

use super::Context;
use super::guard::{Guard, Src};
use super::search::{SearchRequest, SearchScope};
use super::session::Session;
use super::subscription::{NOTIFY_JOB, PAYLOAD_CONTENT_URL, criteria, owner, secret};
use crate::auth::Perm;
use crate::fhir::outcome::Outcome;
use crate::fhir::types::Instant;
use crate::store::{Method, SubscriptionEvent};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use std::time::Duration;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Changes matched per dispatcher pass.
const BATCH: u32 = 500;
/// Notifications sent per delivery job before it hands over (it is enqueued again).
const PER_JOB: u32 = 200;
/// Failed attempts in a row before a Subscription shows `error`.
const ERROR_AFTER: i64 = 3;
/// How long a delivery holds its Subscription.
const LEASE_MS: i64 = 30_000;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Healporium-Signature";

/// A Subscription as the dispatcher sees it.
struct Live {
    id: String,
    resource_type: String,
    pairs: Vec<(String, String)>,
    /// The criteria's filters (for the in-memory pre-check).
    filters: Vec<crate::search::query::Filter>,
    guard: Guard,
    /// Versions before this (ms) are older than the Subscription.
    created: i64,
}

/// The statuses whose Subscriptions are owed notifications.
fn owed_status(s: &Value) -> bool {
    matches!(
        s.get("status").and_then(Value::as_str),
        Some("requested" | "active" | "error")
    )
}

async fn live_subscriptions(
    ctx: &Context,
    registry: &crate::search::parameters::SearchParameters,
) -> Result<Vec<Live>, Outcome> {
    let ids = Src::Store(ctx.store.as_ref())
        .find("Subscription", &[], 100_000)
        .await?;
    let mut out = Vec::new();
    for id in ids {
        let Some(body) = read_json(ctx, "Subscription", &id).await? else {
            continue;
        };
        if !owed_status(&body) {
            continue;
        }
        let Some((resource_type, pairs)) = criteria(&body) else {
            continue;
        };
        let guard = Guard::load(ctx.store.as_ref(), owner(&body), "").await?;
        let Ok(query) = crate::search::query::parse(
            registry,
            std::slice::from_ref(&resource_type),
            &pairs,
            true,
        ) else {
            continue; // refused on write; a parameter dropped since matches nothing
        };
        out.push(Live {
            id,
            resource_type,
            pairs,
            filters: query.filters,
            guard,
            created: super::subscription::created(&body),
        });
    }
    Ok(out)
}

async fn read_json(ctx: &Context, rt: &str, id: &str) -> Result<Option<Value>, Outcome> {
    Ok(ctx
        .store
        .read(rt, id)
        .await?
        .filter(|v| !v.deleted)
        .and_then(|v| v.body)
        .and_then(|b| serde_json::from_str(&b).ok()))
}

/// Whether the version matches the Subscription's criteria as its owner: judged in memory
/// from its index rows where the criteria need nothing else (and the owner is not confined
/// on the type), else searched as the owner.
async fn matches_version(
    ctx: &Context,
    registry: &crate::search::parameters::SearchParameters,
    sub: &Live,
    v: &crate::store::StoredVersion,
    rows: &crate::search::index::IndexRows,
) -> Result<bool, Outcome> {
    let mut local = Some(true);
    for f in &sub.filters {
        match crate::search::matching::local_matches(
            f,
            &v.resource_type,
            &v.id,
            v.last_updated.millis(),
            rows,
        ) {
            Some(false) => return Ok(false),
            Some(true) => {}
            None => local = None,
        }
    }
    if sub.guard.require(Perm::Search, &v.resource_type).is_err() {
        return Ok(false);
    }
    match local {
        Some(true) if !sub.guard.confined(Perm::Search, &v.resource_type) => Ok(true),
        Some(true) => {
            let mut src = Src::Store(ctx.store.as_ref());
            sub.guard
                .current_visible(&mut src, registry, Perm::Read, &v.resource_type, &v.id)
                .await
        }
        _ => matches(ctx, sub, &v.id).await,
    }
}

/// Whether `resource_type/id` matches the Subscription's criteria, searched as its owner.
async fn matches(ctx: &Context, sub: &Live, id: &str) -> Result<bool, Outcome> {
    let as_owner = Context {
        guard: sub.guard.clone(),
        audit: false,
        ..ctx.clone()
    };
    let mut pairs: Vec<(String, String)> = sub
        .pairs
        .iter()
        .filter(|(k, _)| !k.starts_with('_') || k == "_tag" || k == "_profile" || k == "_security")
        .cloned()
        .collect();
    pairs.push(("_id".into(), id.to_string()));
    pairs.push(("_elements".into(), "id".into()));
    let found = match super::search::search(
        &as_owner,
        "",
        SearchRequest {
            scope: SearchScope::Type(sub.resource_type.clone()),
            pairs,
            strict: true,
            paging: false,
        },
    )
    .await
    {
        Ok(r) => r.body_value()?,
        // the owner lost the right to search the type: nothing matches
        Err(_) => return Ok(false),
    };
    Ok(found
        .get("entry")
        .and_then(Value::as_array)
        .is_some_and(|es| {
            es.iter()
                .any(|e| e.pointer("/resource/id").and_then(Value::as_str) == Some(id))
        }))
}

/// The dispatcher of a node: its pass, and the Subscriptions it matches against (reloaded
/// when one of them changed, and every few seconds for their owners' reach).
#[derive(Default)]
pub struct Dispatcher {
    subs: Vec<Live>,
    loaded: Option<std::time::Instant>,
}

/// How long a loaded set of Subscriptions (and their owners' Guards) is used.
const RELOAD_AFTER: Duration = Duration::from_secs(5);

impl Dispatcher {
    /// One pass: matches the next changes and records what is owed, then enqueues one
    /// delivery job for the Subscriptions owed something new. Returns the notifications
    /// recorded.
    pub async fn pass(&mut self, ctx: &Context) -> Result<usize, Outcome> {
        let store = ctx.store.subscriptions();
        let position = store.position().await?;
        let changes = ctx.store.changes(position, BATCH).await?;
        let Some(last) = changes.last().map(|(p, _)| *p) else {
            return Ok(0);
        };
        let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
        let stale = self.loaded.is_none_or(|at| at.elapsed() > RELOAD_AFTER)
            || changes
                .iter()
                .any(|(_, v)| v.resource_type == "Subscription");
        if stale {
            self.subs = live_subscriptions(ctx, &registry).await?;
            self.loaded = Some(std::time::Instant::now());
        }
        let subs = &self.subs;
        let mut events = Vec::new();
        for (seq, v) in &changes {
            // deletes carry no content to match; a Subscription is not about itself
            if v.deleted || v.resource_type == "Subscription" {
                continue;
            }
            let due = |s: &&Live| {
                s.resource_type == v.resource_type && v.last_updated.millis() >= s.created
            };
            if !subs.iter().any(|s| due(&s)) {
                continue;
            }
            let Some(body) = v
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
            else {
                continue;
            };
            let rows = crate::search::index::extract_with(&body, Some(""), &registry);
            for sub in subs.iter().filter(due) {
                if matches_version(ctx, &registry, sub, v, &rows).await? {
                    events.push(SubscriptionEvent {
                        subscription: sub.id.clone(),
                        seq: *seq,
                        resource_type: v.resource_type.clone(),
                        resource_id: v.id.clone(),
                        version: v.version,
                    });
                }
            }
        }
        let now = Instant::now().millis();
        store.advance(last, &events, now).await?;
        if !events.is_empty() {
            let mut ids: Vec<String> = events.iter().map(|e| e.subscription.clone()).collect();
            ids.sort();
            ids.dedup();
            enqueue(ctx, &format!("pass:{last}"), ids).await?;
        }
        Ok(events.len())
    }
}

/// Enqueues one delivery job (`key`) for `subscriptions`, leaving out those whose delivery
/// is failing: their own job is retrying them with backoff, and carries on with what became
/// owed meanwhile.
async fn enqueue(ctx: &Context, key: &str, mut subscriptions: Vec<String>) -> Result<(), Outcome> {
    let failing = ctx.store.subscriptions().failing().await?;
    subscriptions.retain(|s| !failing.contains(s));
    if subscriptions.is_empty() {
        return Ok(());
    }
    let now = Instant::now().millis();
    let job = crate::store::jobs::NewJob {
        kind: NOTIFY_JOB.to_string(),
        key: Some(key.to_string()),
        payload: json!({"subscriptions": subscriptions}).to_string(),
        run_at: now,
        max_attempts: super::write::NOTIFY_ATTEMPTS,
    };
    ctx.store.jobs().enqueue(&job, now).await?;
    ctx.store.job_signal().notify_waiters();
    Ok(())
}

/// Enqueues a delivery job for every Subscription owed something (a job that died, a node
/// that stopped mid-way), at most one per `SWEEP` period.
pub async fn enqueue_owed(ctx: &Context) -> Result<(), Outcome> {
    let owed: Vec<String> = ctx
        .store
        .subscriptions()
        .owed()
        .await?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let period = Instant::now().millis() / i64::try_from(SWEEP.as_millis()).unwrap_or(1);
    enqueue(ctx, &format!("sweep:{period}"), owed).await
}

/// How often everything still owed gets a delivery job of its own.
const SWEEP: Duration = Duration::from_secs(10);

/// Runs the dispatcher until `shutdown`: a pass every `every`, and at once again while
/// changes keep coming.
pub async fn run_dispatcher(
    ctx: Context,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut dispatcher = Dispatcher::default();
    let mut since_sweep = Duration::ZERO;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let busy = match dispatcher.pass(&ctx).await {
            Ok(n) => n > 0,
            Err(_) => {
                tracing::warn!("subscription dispatch failed; retrying");
                false
            }
        };
        since_sweep += every;
        if since_sweep >= SWEEP {
            since_sweep = Duration::ZERO;
            if enqueue_owed(&ctx).await.is_err() {
                tracing::warn!("cannot enqueue owed notifications");
            }
        }
        if busy {
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Delivers what is owed to each of `subscriptions` (at most `parallel` at once); the first
/// failure's reason when one failed (those that succeeded are done; a retry finds nothing
/// owed to them).
pub async fn deliver_all(
    ctx: &Context,
    http: &reqwest::Client,
    job: &str,
    subscriptions: &[String],
    parallel: usize,
) -> Result<(), String> {
    let mut set = tokio::task::JoinSet::new();
    let mut failure = None;
    let mut queue = subscriptions.iter().cloned();
    loop {
        while set.len() < parallel.max(1) {
            let Some(id) = queue.next() else { break };
            let (ctx, http, job) = (ctx.clone(), http.clone(), job.to_string());
            set.spawn(async move { deliver(&ctx, &http, &job, &id).await });
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        match done {
            Ok(Ok(()) | Err(DeliveryError::Busy)) => {}
            Ok(Err(DeliveryError::Failed(why))) => {
                failure.get_or_insert(why);
            }
            Err(_) => {
                failure.get_or_insert_with(|| "a delivery task failed".to_string());
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Why a delivery attempt did not finish.
#[derive(Debug)]
pub enum DeliveryError {
    /// Another delivery of the Subscription holds it.
    Busy,
    /// The receiver failed (or the store): try again later.
    Failed(String),
}

/// The notification's body and content type: the classic R4 payload (nothing, or the
/// resource) or a Backport IG notification Bundle.
async fn payload(
    ctx: &Context,
    sub: &Value,
    sub_id: &str,
    guard: &Guard,
    event: Option<&SubscriptionEvent>,
    events_so_far: i64,
) -> Result<Option<(Vec<u8>, &'static str)>, Outcome> {
    let channel = sub.get("channel").cloned().unwrap_or(Value::Null);
    let mime = channel.get("payload").and_then(Value::as_str);
    let content = channel
        .pointer("/_payload/extension")
        .and_then(Value::as_array)
        .and_then(|es| {
            es.iter()
                .find(|e| e.get("url").and_then(Value::as_str) == Some(PAYLOAD_CONTENT_URL))
        })
        .and_then(|e| e.get("valueCode"))
        .and_then(Value::as_str);
    let resource = match event {
        Some(e) => {
            let visible = {
                let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
                let mut src = Src::Store(ctx.store.as_ref());
                guard
                    .current_visible(
                        &mut src,
                        &registry,
                        Perm::Read,
                        &e.resource_type,
                        &e.resource_id,
                    )
                    .await?
            };
            if !visible {
                return Ok(None); // no longer the owner's to read: not sent
            }
            ctx.store
                .vread(&e.resource_type, &e.resource_id, e.version)
                .await?
                .and_then(|v| v.body)
                .and_then(|b| serde_json::from_str::<Value>(&b).ok())
        }
        None => None,
    };
    let Some(content) = content else {
        // classic R4: an empty POST, or the resource itself; the handshake is empty
        return Ok(Some(match (mime, resource) {
            (Some(_), Some(r)) => (r.to_string().into_bytes(), "application/fhir+json"),
            _ => (Vec::new(), "application/fhir+json"),
        }));
    };
    let now = Instant::now().to_fhir();
    let mut status = vec![
        json!({"name": "subscription", "valueReference": {"reference": format!("Subscription/{sub_id}")}}),
        json!({"name": "topic", "valueCanonical": sub.get("criteria").and_then(Value::as_str).unwrap_or("")}),
        json!({"name": "status", "valueCode": if event.is_some() { "active" } else { "requested" }}),
        json!({"name": "type", "valueCode": if event.is_some() { "event-notification" } else { "handshake" }}),
        json!({"name": "events-since-subscription-start", "valueString": events_so_far.to_string()}),
    ];
    let mut entries = Vec::new();
    if let Some(e) = event {
        let focus = format!("{}/{}", e.resource_type, e.resource_id);
        let mut parts = vec![
            json!({"name": "event-number", "valueString": events_so_far.to_string()}),
            json!({"name": "timestamp", "valueInstant": now}),
        ];
        if content != "empty" {
            parts.push(json!({"name": "focus", "valueReference": {"reference": focus}}));
        }
        status.push(json!({"name": "notification-event", "part": parts}));
        if content == "full-resource"
            && let Some(r) = resource
        {
            entries.push(json!({"fullUrl": focus, "resource": r,
                "request": {"method": if e.version == 1 { "POST" } else { "PUT" },
                    "url": if e.version == 1 { e.resource_type.clone() } else { focus.clone() }},
                "response": {"status": if e.version == 1 { "201" } else { "200" }}}));
        }
    }
    let status_resource = json!({"resourceType": "Parameters",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"]},
        "parameter": status});
    entries.insert(
        0,
        json!({"fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()), "resource": status_resource,
            "request": {"method": "GET", "url": format!("Subscription/{sub_id}/$status")},
            "response": {"status": "200"}}),
    );
    let bundle = json!({"resourceType": "Bundle", "id": uuid::Uuid::new_v4().to_string(),
        "type": "history", "timestamp": now, "entry": entries});
    Ok(Some((
        bundle.to_string().into_bytes(),
        "application/fhir+json",
    )))
}

/// The signature header value of `body` sent at `t` (ms).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let Ok(mut m) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    let hex: String = m
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// POSTs one notification; Err with the reason when the receiver did not answer 2xx.
async fn post(
    http: &reqwest::Client,
    sub: &Value,
    sub_id: &str,
    body: Vec<u8>,
    content_type: &str,
    event: Option<i64>,
) -> Result<(), String> {
    let channel = sub.get("channel").cloned().unwrap_or(Value::Null);
    let endpoint = channel
        .get("endpoint")
        .and_then(Value::as_str)
        .unwrap_or("");
    let t = Instant::now().millis();
    let sig = signature(&secret(sub).unwrap_or_default(), t, &body);
    let mut req = http
        .post(endpoint)
        .timeout(Duration::from_secs(10))
        .header("Content-Type", content_type)
        .header(SIGNATURE_HEADER, sig)
        .header("X-Healporium-Subscription", sub_id)
        .header(
            "X-Healporium-Event",
            event.map_or_else(|| "handshake".to_string(), |e| e.to_string()),
        );
    for h in channel
        .get("header")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Some((name, value)) = h.split_once(':') {
            req = req.header(name.trim(), value.trim());
        }
    }
    match req.body(body).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("the endpoint answered {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err("the endpoint did not answer in 10 s".into()),
        Err(_) => Err("the endpoint could not be reached".into()),
    }
}

/// Sets a Subscription's status (and error) as the server, unless it is already so.
async fn set_status(
    ctx: &Context,
    id: &str,
    status: &str,
    error: Option<&str>,
) -> Result<(), Outcome> {
    let server = Context {
        guard: Guard::open(),
        ..ctx.clone()
    };
    let mut s = Session::begin(&server, "").await?;
    s.internal = true;
    s.tx().lock_resource("Subscription", id).await?;
    let Some(current) = s
        .tx()
        .current("Subscription", id)
        .await?
        .filter(|c| !c.deleted)
    else {
        return Ok(());
    };
    let Some(mut body) = current
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
    else {
        return Ok(());
    };
    let now = body.get("status").and_then(Value::as_str);
    if now == Some(status) || now == Some("off") {
        return Ok(());
    }
    if let Some(obj) = body.as_object_mut() {
        obj.insert("status".into(), Value::from(status));
        match error {
            Some(e) => {
                obj.insert("error".into(), Value::from(e));
            }
            None => {
                obj.shift_remove("error");
            }
        }
    }
    super::write::put_version(
        &mut s,
        "Subscription",
        id,
        body,
        Method::Put,
        Some(&current),
    )
    .await?;
    super::integrity::finish(s).await
}

/// One delivery attempt for Subscription `id` (`job`: the attempt's job id, the lease
/// owner): the handshake if due, then what is owed, in order.
pub async fn deliver(
    ctx: &Context,
    http: &reqwest::Client,
    job: &str,
    id: &str,
) -> Result<(), DeliveryError> {
    let store = ctx.store.subscriptions();
    let failed = |e: Outcome| {
        DeliveryError::Failed(
            e.issues
                .first()
                .map(|i| i.diagnostics.clone())
                .unwrap_or_default(),
        )
    };
    // nothing to do for an active Subscription owed nothing (the common case of a retry)
    let quiet = store
        .pending(id, 1)
        .await
        .map_err(|e| failed(e.into()))?
        .is_empty();
    if quiet {
        let sub = read_json(ctx, "Subscription", id).await.map_err(failed)?;
        let status = sub
            .as_ref()
            .and_then(|s| s.get("status"))
            .and_then(Value::as_str);
        if !matches!(status, Some("requested" | "error")) {
            return Ok(());
        }
    }
    let now = Instant::now().millis();
    if !store
        .lease(id, job, now, now + LEASE_MS)
        .await
        .map_err(|e| failed(e.into()))?
    {
        return Err(DeliveryError::Busy);
    }
    // what was sent is acknowledged with the lease's release, in one transaction: a node
    // dying before it sends those notifications again (at least once)
    let mut done = Vec::new();
    let result = deliver_leased(ctx, http, id, &mut done).await;
    let failures = store
        .finish(id, job, &done, result.is_err())
        .await
        .map_err(|e| failed(e.into()))?;
    match result {
        Ok(more) => {
            if more {
                // more is owed than one attempt sends: a fresh job carries on
                let first = store
                    .pending(id, 1)
                    .await
                    .map_err(|e| failed(e.into()))?
                    .first()
                    .map_or(0, |e| e.seq);
                enqueue(ctx, &format!("more:{id}:{first}"), vec![id.to_string()])
                    .await
                    .map_err(failed)?;
            }
            Ok(())
        }
        Err(why) => {
            if failures >= ERROR_AFTER {
                let text = format!("{failures} delivery attempts failed in a row: {why}");
                set_status(ctx, id, "error", Some(&text))
                    .await
                    .map_err(failed)?;
            }
            Err(DeliveryError::Failed(why))
        }
    }
}

/// A websocket was bound to Subscription `id`: it is `active` (best effort: the pings do
/// not depend on it).
pub async fn websocket_bound(ctx: &Context, id: &str) {
    if set_status(ctx, id, "active", None).await.is_err() {
        tracing::warn!("cannot mark a websocket Subscription active");
    }
}

/// Sends `ping <id>` to the sockets bound to Subscription `id` on this node (`owner`: the
/// node's lease name) for each notification owed to it, in order, and marks them sent.
pub async fn ping_bound(
    ctx: &Context,
    owner: &str,
    id: &str,
    sockets: &[tokio::sync::mpsc::Sender<String>],
) -> Result<usize, Outcome> {
    let store = ctx.store.subscriptions();
    let now = Instant::now().millis();
    if !store.lease(id, owner, now, now + LEASE_MS).await? {
        return Ok(0);
    }
    let owed = store.pending(id, 200).await?;
    for _ in &owed {
        for s in sockets {
            // a socket that cannot keep up loses pings, never the server its memory
            let _ = s.try_send(format!("ping {id}"));
        }
    }
    let seqs: Vec<i64> = owed.iter().map(|e| e.seq).collect();
    store.finish(id, owner, &seqs, false).await?;
    Ok(owed.len())
}

/// Sends what is owed to `id` (under its lease), oldest first, pushing each position the
/// endpoint acknowledged onto `done`; Ok(true) when more is owed than one attempt sends.
async fn deliver_leased(
    ctx: &Context,
    http: &reqwest::Client,
    id: &str,
    done: &mut Vec<i64>,
) -> Result<bool, String> {
    let store = ctx.store.subscriptions();
    let internal = |e: Outcome| {
        e.issues
            .first()
            .map(|i| i.diagnostics.clone())
            .unwrap_or_default()
    };
    let sub = read_json(ctx, "Subscription", id).await.map_err(internal)?;
    let Some(sub) = sub.filter(owed_status) else {
        // deleted or switched off: nothing is owed any more
        store.forget(id).await.map_err(|e| internal(e.into()))?;
        return Ok(false);
    };
    if sub.pointer("/channel/type").and_then(Value::as_str) == Some("websocket") {
        return Ok(false); // the nodes with bound sockets ping them (api/websocket.rs)
    }
    let guard = Guard::load(ctx.store.as_ref(), owner(&sub), "")
        .await
        .map_err(internal)?;
    let status = sub.get("status").and_then(Value::as_str).unwrap_or("");
    if status == "requested" {
        let sent = store.sent_count(id).await.map_err(|e| internal(e.into()))?;
        if let Some((body, ct)) = payload(ctx, &sub, id, &guard, None, sent)
            .await
            .map_err(internal)?
        {
            post(http, &sub, id, body, ct, None).await?;
        }
        set_status(ctx, id, "active", None)
            .await
            .map_err(internal)?;
    }
    let so_far = store.sent_count(id).await.map_err(|e| internal(e.into()))?;
    let owed = store
        .pending(id, PER_JOB)
        .await
        .map_err(|e| internal(e.into()))?;
    let more = owed.len() >= usize::try_from(PER_JOB).unwrap_or(usize::MAX);
    for e in owed {
        let n = so_far + i64::try_from(done.len()).unwrap_or(i64::MAX) + 1;
        if let Some((body, ct)) = payload(ctx, &sub, id, &guard, Some(&e), n)
            .await
            .map_err(internal)?
        {
            post(http, &sub, id, body, ct, Some(e.seq)).await?;
        }
        done.push(e.seq);
    }
    if status == "error" {
        set_status(ctx, id, "active", None)
            .await
            .map_err(internal)?;
    }
    Ok(more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_time_and_body() {
        let a = signature("0123456789abcdef", 1_000, b"{}");
        assert!(a.starts_with("t=1000,v1="));
        assert_eq!(a.len(), "t=1000,v1=".len() + 64);
        assert_ne!(a, signature("0123456789abcdef", 1_001, b"{}"));
        assert_ne!(a, signature("0123456789abcdef", 1_000, b"{ }"));
        assert_ne!(a, signature("fedcba9876543210", 1_000, b"{}"));
    }
}
