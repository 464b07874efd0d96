//! `GET /metrics`: the node's Prometheus page — requests by route and status, latency
//! histograms, database pools, jobs by state, the audit writer and indexer, the age of the
//! last audit and ledger verification, and the lag of feeds and Subscriptions. It is served
//! only to the operator: on the main listener with the metrics token (`--metrics-token`,
//! compared in constant time; every other caller, SMART tokens included, gets 401, and 404
//! when no token is configured), or without a token on a listener of its own
//! (`--metrics-listen`, for a scraper on a private network). Labels hold route templates
//! and states, never ids, paths or anything about a patient.

use super::ApiState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

/// The metrics page's path.
pub const PATH: &str = "/metrics";

#[derive(Clone)]
pub struct MetricsState {
    pub api: ApiState,
    pub metrics: Arc<Metrics>,
    /// The bearer token the page asks for (None: the page is not on this listener).
    pub token: Option<Arc<str>>,
}

/// Counts every request and its latency, by the route it matched.
pub async fn record(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    metrics.request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The page on the main listener: the metrics token, or nothing.
pub fn router(state: MetricsState) -> Router {
    Router::new()
        .route(PATH, get(guarded_page))
        .with_state(state)
}

/// The page alone, without a token (for `--metrics-listen`).
pub fn open_router(state: MetricsState) -> Router {
    Router::new().route(PATH, get(page)).with_state(state)
}

async fn guarded_page(State(state): State<MetricsState>, headers: HeaderMap) -> Response {
    let Some(token) = state.token.clone() else {
        return refusal(
            StatusCode::NOT_FOUND,
            "not-found",
            "No metrics here: the operator gives --metrics-token or --metrics-listen",
        );
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
        let mut r = refusal(
            StatusCode::UNAUTHORIZED,
            "login",
            "The metrics page needs the metrics token (Authorization: Bearer)",
        );
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"metrics\""),
        );
        return r;
    }
    page(State(state)).await
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let outcome = serde_json::json!({"resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": message}]});
    (status, Json(outcome)).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn page(State(state): State<MetricsState>) -> Response {
    gather(&state).await;
    (
        StatusCode::OK,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Reads the gauges from the node and the database. A part that cannot be read is left as
/// it was (and logged): the rest of the page still answers.
async fn gather(state: &MetricsState) {
    let m = &state.metrics;
    let ctx = &state.api.ctx;
    let store = ctx.store.as_ref();
    for (pool, size, idle, max) in store.pool_stats() {
        let set = |s: &'static str, v: u32| {
            m.gauge(
                "healporium_db_pool_connections",
                &[("pool", pool.to_string()), ("state", s.to_string())],
                f64::from(v),
            );
        };
        set("idle", idle);
        set("in_use", size.saturating_sub(idle));
        set("max", max);
    }
    let (commits, events) = ctx.audit_writer.totals();
    m.counter_total("healporium_audit_commits_total", commits);
    m.counter_total("healporium_audit_events_total", events);
    let now = crate::smart::now_ms();
    let warn = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(what, error = %e, "a metric could not be read");
    };
    match store.jobs().counts().await {
        Ok(rows) => {
            for (kind, job_state, n) in rows {
                m.gauge(
                    "healporium_jobs",
                    &[("kind", kind), ("state", job_state)],
                    n as f64,
                );
            }
        }
        Err(e) => warn("jobs", &e),
    }
    match store.audit_pending_count().await {
        Ok(n) => m.gauge("healporium_audit_pending", &[], n as f64),
        Err(e) => warn("audit pending", &e),
    }
    match store.verifications().await {
        Ok(rows) => {
            for kind in ["audit", "ledger"] {
                let last = rows.iter().find(|(k, _, _)| k == kind);
                let age = last.map_or(-1.0, |(_, at, _)| (now - at).max(0) as f64 / 1000.0);
                let ok = last.is_some_and(|(_, _, ok)| *ok);
                let labels = [("kind", kind.to_string())];
                m.gauge("healporium_verification_age_seconds", &labels, age);
                m.gauge(
                    "healporium_verification_ok",
                    &labels,
                    f64::from(u8::from(ok)),
                );
            }
        }
        Err(e) => warn("verifications", &e),
    }
    match store.feed_backlog().await {
        Ok((n, oldest)) => {
            m.gauge("healporium_feed_backlog", &[], n as f64);
            let age = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            m.gauge("healporium_feed_oldest_seconds", &[], age);
        }
        Err(e) => warn("feeds", &e),
    }
    let lag = async {
        let head = store.change_head().await?;
        let position = store.subscriptions().position().await?;
        let owed = store.subscription_owed().await?;
        Ok::<_, crate::store::StoreError>(((head - position).max(0), owed))
    }
    .await;
    match lag {
        Ok((lag, owed)) => {
            m.gauge("healporium_subscription_lag", &[], lag as f64);
            m.gauge("healporium_subscription_owed", &[], owed as f64);
        }
        Err(e) => warn("subscriptions", &e),
    }
}

/// A node's metrics, rendered in Prometheus' text format by `GET /metrics`. Each router
/// has its own registry (no process-global recorder), so nodes and tests never mix counts.
pub struct Metrics {
    recorder: metrics_exporter_prometheus::PrometheusRecorder,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    /// Requests since the histograms were last drained.
    since_upkeep: std::sync::atomic::AtomicU64,
}

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Upper bounds of the request-latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Requests between two drains of the histograms' samples into their buckets.
const UPKEEP_EVERY: u64 = 1024;

impl Metrics {
    pub fn new() -> std::sync::Arc<Metrics> {
        use metrics::{KeyName, Recorder, SharedString, Unit};
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .map_or_else(
                |_| metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
                |b| b.build_recorder(),
            );
        for (name, unit, help) in DESCRIPTIONS {
            let key = KeyName::from_const_str(name);
            let help = SharedString::from(*help);
            match unit {
                Some(Unit::Seconds) => recorder.describe_histogram(key, *unit, help),
                Some(Unit::Count) => recorder.describe_counter(key, None, help),
                _ => recorder.describe_gauge(key, *unit, help),
            }
        }
        let handle = recorder.handle();
        std::sync::Arc::new(Metrics {
            recorder,
            handle,
            since_upkeep: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Counts one answered HTTP request and its latency. `route` is the matched route's
    /// template (`/fhir/{type}/{id}`), never the path.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        use metrics::{Key, Label, Recorder};
        let labels = vec![
            Label::new("route", route.to_string()),
            Label::new("method", method.to_string()),
        ];
        let mut counted = labels.clone();
        counted.push(Label::new("status", status.to_string()));
        self.recorder
            .register_counter(
                &Key::from_parts("healporium_http_requests_total", counted),
                &METADATA,
            )
            .increment(1);
        self.recorder
            .register_histogram(
                &Key::from_parts("healporium_http_request_duration_seconds", labels),
                &METADATA,
            )
            .record(seconds);
        let n = self
            .since_upkeep
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.handle.run_upkeep();
        }
    }

    /// Sets a gauge (values read when the page is rendered).
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)], value: f64) {
        use metrics::{Key, Label, Recorder};
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.clone()))
            .collect();
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
            .set(value);
    }

    /// Sets a counter kept elsewhere to its current total.
    pub fn counter_total(&self, name: &'static str, value: u64) {
        use metrics::{Key, Recorder};
        self.recorder
            .register_counter(&Key::from_name(name), &METADATA)
            .absolute(value);
    }

    /// The page: every metric in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// What each metric means, for the page's `# HELP` lines.
const DESCRIPTIONS: &[(&str, Option<metrics::Unit>, &str)] = &[
    (
        "healporium_http_request_duration_seconds",
        Some(metrics::Unit::Seconds),
        "Time from the request's arrival to its response, by route and method",
    ),
    (
        "healporium_db_pool_connections",
        None,
        "Database connections of this node by pool and state (idle, in_use) and its maximum (max)",
    ),
    (
        "healporium_jobs",
        None,
        "Jobs in the queue by kind and state",
    ),
    (
        "healporium_audit_pending",
        None,
        "AuditEvents recorded (durable, chained) that wait to be stored as searchable resources",
    ),
    (
        "healporium_audit_commits_total",
        Some(metrics::Unit::Count),
        "Transactions this node's audit writer committed (group commits of reads' AuditEvents)",
    ),
    (
        "healporium_audit_events_total",
        Some(metrics::Unit::Count),
        "AuditEvents this node's audit writer recorded",
    ),
    (
        "healporium_verification_age_seconds",
        None,
        "Seconds since the audit chain or the ledger was last verified (kind), -1 when never",
    ),
    (
        "healporium_verification_ok",
        None,
        "Whether the last verification of the audit chain or the ledger (kind) passed",
    ),
    (
        "healporium_feed_backlog",
        None,
        "HL7 v2 messages received and not yet answered",
    ),
    (
        "healporium_feed_oldest_seconds",
        None,
        "Age of the oldest HL7 v2 message not yet answered (0 when none)",
    ),
    (
        "healporium_subscription_lag",
        None,
        "Committed resource versions the Subscription dispatcher has not matched yet",
    ),
    (
        "healporium_subscription_owed",
        None,
        "Notifications matched and not yet delivered",
    ),
];

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"ab"));
        assert!(!super::constant_time_eq(b"", b"a"));
    }
}
