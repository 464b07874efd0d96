//! Wiring: opens the store, builds the router with its tower layers, registers the job
//! kinds, and runs the HTTP listener and the job workers under one [`supervisor`] until
//! Ctrl-C or SIGTERM.

pub mod accounts;
pub mod feeds;
pub mod supervisor;

use crate::api::smart::SmartState;
use crate::api::{self, ApiState};
use crate::auth::discovery::{INSECURE_WARNING, Security};
use crate::config::Config;
use crate::fhir::definitions::Definitions;
use crate::fhir::validation::Validator;
use crate::interaction::Context;
use crate::smart::{Smart, SmartConfig};
use crate::store::{self, Store};
use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LOCATION, CONTENT_TYPE, COOKIE, ETAG, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION, PROXY_AUTHORIZATION, SET_COOKIE,
};
use axum::http::{HeaderName, Method};
use std::sync::Arc;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};

pub use crate::auth::discovery::AuthMode;

/// Options of the HTTP application that do not concern the store.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub base_url: Option<String>,
    /// Without `base_url`: the Host names (beside loopback) links may be made of.
    pub trusted_hosts: Vec<String>,
    pub prefix: String,
    pub max_body_bytes: usize,
    /// Reject references to local resources that do not exist, and deletes of referenced ones.
    pub referential_integrity: bool,
    /// Lifetime of search paging cursors, in milliseconds.
    pub search_page_ttl_ms: i64,
    /// Lifetime of break-glass grants, in milliseconds.
    pub break_glass_ttl_ms: i64,
    /// Record an AuditEvent for every interaction (the server's default; off in this
    /// library default so tests and benchmarks opt in).
    pub audit: bool,
    /// SMART authorization on or off (default off: see [`AuthMode`]).
    pub auth: AuthMode,
    /// Token lifetimes and hashing cost of the authorization server.
    pub smart: SmartConfig,
    /// What one request may ask of the server (the statement timeout is the store's:
    /// [`store::StoreOptions`]).
    pub limits: crate::fhir::limits::Limits,
    /// The audit chain's key and signed head (none: unkeyed links, for tests and tools).
    pub seal: Option<Arc<crate::interaction::seal::Seal>>,
    /// The credit extension's canonical base, artifacts, products and plans.
    pub finance: Arc<crate::finance::catalog::Catalog>,
    /// The zone of HL7 v2 timestamps without an offset (`POST /hl7v2`, MLLP), over the
    /// default channel's.
    pub feed_zone: Option<String>,
    /// The feeds' mapping set (None: the one compiled in).
    pub mappings: Option<Arc<crate::feeds::mapping_set::MappingSet>>,
    /// The bearer token `GET /metrics` asks for on the main listener (None: not served there).
    pub metrics_token: Option<String>,
    /// Bulk Data: how long results stay, file sizes, polling interval.
    pub bulk: crate::interaction::bulk::Settings,
    /// The web app takes card payments through the built-in demo processor (`--demo`).
    pub demo_payments: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            base_url: None,
            trusted_hosts: Vec::new(),
            prefix: "/fhir".to_string(),
            max_body_bytes: 16 * 1024 * 1024,
            referential_integrity: true,
            search_page_ttl_ms: crate::interaction::search::CURSOR_TTL_MS,
            break_glass_ttl_ms: crate::interaction::BREAK_GLASS_TTL_MS,
            audit: false,
            auth: AuthMode::Off,
            smart: SmartConfig::default(),
            limits: crate::fhir::limits::Limits::default(),
            seal: None,
            finance: crate::finance::catalog::Catalog::standard(),
            feed_zone: None,
            mappings: None,
            metrics_token: None,
            bulk: crate::interaction::bulk::Settings::default(),
            demo_payments: false,
        }
    }
}

/// The whole HTTP application on a store.
pub fn router(store: Arc<dyn Store>, options: &AppOptions) -> Router {
    let smart = match options.auth {
        AuthMode::On => Some(Arc::new(Smart::new(store.auth(), options.smart.clone()))),
        AuthMode::Off => None,
    };
    router_with(store, options, smart)
}

/// The whole HTTP application, with the authorization server `smart` when auth is on.
pub fn router_with(
    store: Arc<dyn Store>,
    options: &AppOptions,
    smart: Option<Arc<Smart>>,
) -> Router {
    router_and_feeds(store, options, smart).0
}

/// The interaction context of a node.
fn node_context(store: Arc<dyn Store>, options: &AppOptions, secured: bool) -> Context {
    let mut ctx = Context::new(store);
    ctx.registry = Arc::new(crate::interaction::registry::Registry::for_catalog(
        &options.finance,
    ));
    ctx.finance = options.finance.clone();
    ctx.integrity = options.referential_integrity;
    ctx.page_ttl_ms = options.search_page_ttl_ms;
    ctx.break_glass_ttl_ms = options.break_glass_ttl_ms;
    ctx.audit = options.audit;
    ctx.prefix = options.prefix.clone();
    ctx.limits = options.limits;
    ctx.seal = options.seal.clone();
    ctx.bulk = options.bulk.clone();
    ctx.security = if secured {
        Security::Smart
    } else {
        Security::Off
    };
    ctx
}

/// The channel `name` of the pipeline's mapping set (the built-in default when the set has
/// no such file), writing as `principal`, with `zone` over the file's.
pub fn feed_channel(
    pipeline: &crate::feeds::runtime::Pipeline,
    name: &str,
    principal: Option<crate::auth::Principal>,
    zone: Option<&str>,
) -> crate::feeds::runtime::Channel {
    use crate::feeds::runtime::Channel;
    let mut c = pipeline
        .mapping_set()
        .channels()
        .iter()
        .find(|c| c.name == name)
        .map_or_else(
            || Channel::default_channel(principal.clone()),
            |m| Channel::from_map(m, principal.clone()),
        );
    if let Some(z) = zone {
        c.default_zone = Some(z.to_string());
    }
    c
}

/// Who a feed channel writes as: a backend principal of its own (None without authorization).
pub fn feed_principal(channel: &str, secured: bool) -> Option<crate::auth::Principal> {
    secured.then(|| crate::auth::Principal {
        client_id: format!("healporium-feed:{channel}"),
        ..crate::auth::Principal::system()
    })
}

/// The feed pipeline over `ctx` (None when the embedded mapping set does not load, which
/// `warm_up` reports at start).
pub fn feed_pipeline(
    ctx: &Context,
    base: &str,
    set: Option<Arc<crate::feeds::mapping_set::MappingSet>>,
) -> Option<Arc<crate::feeds::runtime::Pipeline>> {
    let set = match set {
        Some(s) => s,
        None => crate::feeds::mapping_set::MappingSet::shared().ok()?,
    };
    let sink = Arc::new(api::hl7v2::InteractionSink {
        ctx: ctx.clone(),
        base: base.to_string(),
    });
    Some(Arc::new(crate::feeds::runtime::Pipeline::new(
        set,
        ctx.store.feeds(),
        sink,
    )))
}

/// The HTTP application, the feed pipeline it posts HL7 v2 to (shared with MLLP) and its
/// metrics (for a listener of their own).
pub fn router_and_feeds(
    store: Arc<dyn Store>,
    options: &AppOptions,
    smart: Option<Arc<Smart>>,
) -> (
    Router,
    Option<Arc<crate::feeds::runtime::Pipeline>>,
    api::metrics::MetricsState,
) {
    let ctx = node_context(store, options, smart.is_some());
    let base = options
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://localhost{}", options.prefix));
    let pipeline = feed_pipeline(&ctx, &base, options.mappings.clone());
    let state = ApiState {
        ctx,
        base_url: options.base_url.as_deref().map(Into::into),
        trusted_hosts: options.trusted_hosts.clone().into(),
        prefix: options.prefix.as_str().into(),
    };
    let metrics_api = state.clone();
    let mut app = api::router(state.clone())
        .merge(api::websocket::router(state.clone()))
        .merge(api::health(state.clone()))
        .merge(api::openapi::router(state.clone()));
    if let Some(p) = &pipeline {
        app = app.merge(api::hl7v2::router(api::hl7v2::Hl7State {
            api: state.clone(),
            pipeline: p.clone(),
            channel: Arc::new(feed_channel(
                p,
                "default",
                None,
                options.feed_zone.as_deref(),
            )),
            secured: smart.is_some(),
        }));
    }
    if let Some(smart) = smart {
        // the web app (`/app/`): a SMART app of this server, beside the API (no token layer:
        // it signs people in and carries their tokens itself)
        let web = crate::web::router(crate::web::WebState {
            ctx: state.ctx.clone(),
            smart: smart.clone(),
            base_url: state.base_url.clone(),
            prefix: state.prefix.clone(),
            trusted_hosts: state.trusted_hosts.clone(),
            demo_payments: options.demo_payments,
            live: Arc::default(),
        });
        let smart_state = SmartState { api: state, smart };
        app = app
            .layer(axum::middleware::from_fn_with_state(
                smart_state.clone(),
                api::smart::require_token,
            ))
            .merge(api::smart::router(smart_state.clone()))
            .merge(api::discovery(&options.prefix, true))
            .layer(cors())
            .merge(api::smart::pages(smart_state))
            .merge(web);
    } else {
        // browser apps can be tried against a local server without authorization too
        app = app
            .merge(api::discovery(&options.prefix, false))
            .layer(cors());
    }
    let metrics = api::metrics::MetricsState {
        api: metrics_api,
        metrics: api::metrics::Metrics::new(),
        token: options.metrics_token.as_deref().map(Into::into),
    };
    let app = app
        .merge(api::metrics::router(metrics.clone()))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| api::panic_response()))
        .layer(axum::middleware::from_fn_with_state(
            metrics.metrics.clone(),
            api::metrics::record,
        ))
        .layer(crate::telemetry::http_trace())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(SetSensitiveResponseHeadersLayer::new([SET_COOKIE]))
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            PROXY_AUTHORIZATION,
            COOKIE,
        ]));
    (app, pipeline, metrics)
}

/// CORS for browser SMART apps: any origin (tokens travel in headers, never in cookies), the
/// FHIR request headers, and the response headers an app reads.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            AUTHORIZATION,
            ACCEPT,
            CONTENT_TYPE,
            IF_MATCH,
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            HeaderName::from_static("if-none-exist"),
            HeaderName::from_static("prefer"),
            HeaderName::from_static("x-provenance"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            LOCATION,
            CONTENT_LOCATION,
            ETAG,
            LAST_MODIFIED,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(3600))
}

/// Loads the compiled-in definitions, the datatypes schema and the mapping set up front, so a
/// defect shows at start rather than on a request. Each resource type's JSON Schema validator
/// is built on the first write of that type (about 20 ms, once): building all 146 at start
/// took a second and 200 MB that a server writing a dozen types never needs. A test builds
/// every one (`fhir::validation` tests), so a defect in them cannot ship.
pub fn warm_up() -> anyhow::Result<()> {
    let defs = Definitions::r4();
    anyhow::ensure!(
        !defs.resource_types().is_empty(),
        "no resource types loaded"
    );
    Validator::r4()
        .check_datatypes()
        .map_err(|e| anyhow::anyhow!("validator: {e}"))?;
    crate::feeds::mapping_set::MappingSet::shared().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Runs `healporium reindex`: prints what was rebuilt.
pub async fn reindex(
    database_url: &str,
    base_url: Option<&str>,
    all: bool,
) -> anyhow::Result<String> {
    warm_up()?;
    let store = store::open(database_url).await?;
    let ctx = Context::new(store);
    let report = crate::interaction::operation::reindex::reindex(&ctx, base_url, all)
        .await
        .map_err(|o| anyhow::anyhow!("reindex failed: {:?}", o.issues))?;
    let params: Vec<String> = report
        .params
        .iter()
        .map(|(b, c)| format!("{b}.{c}"))
        .collect();
    Ok(format!(
        "reindexed {} resources for {} parameter(s){}{}",
        report.resources,
        params.len(),
        if params.is_empty() { "" } else { ": " },
        params.join(", ")
    ))
}

/// Runs `healporium finance run-day --date …`: the finance day job for one date (idempotent).
pub async fn finance_run_day(
    database_url: &str,
    date: &str,
    finance: &crate::config::FinanceArgs,
) -> anyhow::Result<String> {
    warm_up()?;
    let catalog = finance.catalog().map_err(|e| anyhow::anyhow!(e))?;
    let date: jiff::civil::Date = date
        .parse()
        .map_err(|_| anyhow::anyhow!("--date: a date, YYYY-MM-DD"))?;
    let store = store::open(database_url).await?;
    let ctx = Context {
        registry: Arc::new(crate::interaction::registry::Registry::for_catalog(
            &catalog,
        )),
        finance: catalog,
        ..Context::new(store)
    };
    let r = crate::interaction::operation::run_day(&ctx, "", date)
        .await
        .map_err(|o| anyhow::anyhow!("the finance day failed: {:?}", o.issues))?;
    Ok(format!(
        "finance day {date}: {} credit lines, {} interest postings, {} late fees, {} statements",
        r.lines, r.interest_postings, r.late_fees, r.statements
    ))
}

/// Runs `healporium audit verify`: Ok(summary) when the chain is intact, Err naming the first
/// broken link otherwise. The outcome is recorded for `GET /metrics`.
pub async fn audit_verify(
    database_url: &str,
    key_file: &std::path::Path,
) -> anyhow::Result<String> {
    let store = store::open(database_url).await?;
    let seal = crate::interaction::seal::Seal::read(key_file).map_err(|e| anyhow::anyhow!(e))?;
    verify_audit_on(store.as_ref(), seal.as_ref()).await
}

/// Walks the audit chain of `store` and records the outcome (kind `audit`).
pub async fn verify_audit_on(
    store: &dyn Store,
    seal: Option<&crate::interaction::seal::Seal>,
) -> anyhow::Result<String> {
    let result = match crate::interaction::audit::verify(store, seal)
        .await
        .map_err(|o| anyhow::anyhow!("cannot read the audit trail: {:?}", o.issues))?
    {
        crate::interaction::audit::Verified::Intact(n) => Ok(format!(
            "audit trail intact: {n} AuditEvents, every link verified"
        )),
        crate::interaction::audit::Verified::Broken(seq, why) => {
            Err(anyhow::anyhow!("audit trail broken at record {seq}: {why}"))
        }
    };
    record_verification(store, "audit", &result).await;
    result
}

/// Runs `healporium finance verify`: Ok(summary) when every entry balances and the trial
/// balance is zero, Err naming the first bad entry otherwise. The outcome is recorded for
/// `GET /metrics`.
pub async fn finance_verify(database_url: &str) -> anyhow::Result<String> {
    let store = store::open(database_url).await?;
    verify_ledger_on(store.as_ref()).await
}

/// Verifies the ledger of `store` and records the outcome (kind `ledger`).
pub async fn verify_ledger_on(store: &dyn Store) -> anyhow::Result<String> {
    let v = store
        .ledger()
        .verify()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the ledger: {e}"))?;
    let result = if let Some((id, why)) = &v.first_bad {
        Err(anyhow::anyhow!("ledger entry {id} does not balance: {why}"))
    } else if let Some((currency, sum)) = v.trial_balance.iter().find(|(_, s)| *s != 0) {
        Err(anyhow::anyhow!(
            "the trial balance in {currency} is {sum} minor units, not zero"
        ))
    } else {
        let currencies: Vec<&str> = v.trial_balance.iter().map(|(c, _)| c.as_str()).collect();
        Ok(format!(
            "ledger sound: {} entries, {} postings, every entry balances, trial balance zero{}",
            v.entries,
            v.postings,
            if currencies.is_empty() {
                String::new()
            } else {
                format!(" in {}", currencies.join(", "))
            }
        ))
    };
    record_verification(store, "ledger", &result).await;
    result
}

/// Stores a verification's outcome; a store that cannot take it is logged, not fatal (the
/// verification's own answer matters more).
async fn record_verification(store: &dyn Store, kind: &str, result: &anyhow::Result<String>) {
    let (ok, detail) = match result {
        Ok(s) => (true, s.clone()),
        Err(e) => (false, e.to_string()),
    };
    if let Err(e) = store
        .record_verification(kind, crate::smart::now_ms(), ok, &detail)
        .await
    {
        tracing::warn!(kind, error = %e, "cannot record the verification's outcome");
    }
}

/// Runs `healporium serve`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    warm_up()?;
    let store = store::open_with(
        config.database_url.expose(),
        &store::StoreOptions {
            statement_timeout_ms: config.limits.statement_timeout_ms,
            search_replica_url: config
                .search_replica_url
                .as_ref()
                .map(|u| u.expose().to_string()),
        },
    )
    .await?;
    let mut supervisor = supervisor::Supervisor::new(Duration::from_millis(config.jobs.drain_ms));
    let listener = supervisor.bind("HTTP", config.listen).await?;
    let options = AppOptions {
        base_url: config.base_url.clone(),
        trusted_hosts: config.trusted_hosts.clone(),
        prefix: config.prefix.clone(),
        max_body_bytes: config.max_body_bytes,
        referential_integrity: config.referential_integrity,
        search_page_ttl_ms: config.search_page_ttl_ms,
        bulk: config.bulk.clone(),
        break_glass_ttl_ms: config.break_glass_ttl_ms,
        audit: config.audit,
        auth: config.auth,
        smart: SmartConfig {
            access_token_ttl_secs: config.access_token_ttl_secs,
            ..SmartConfig::default()
        },
        limits: config.limits,
        seal: Some(Arc::new(
            crate::interaction::seal::Seal::open(&config.audit_key_file)
                .map_err(|e| anyhow::anyhow!(e))?,
        )),
        finance: config.finance.clone(),
        feed_zone: config.feed_zone.clone(),
        mappings: config.mappings.clone(),
        metrics_token: config
            .metrics_token
            .as_ref()
            .map(|t| t.expose().to_string()),
        demo_payments: config.demo,
    };
    let backend = store.backend();
    let smart = match config.auth {
        AuthMode::On => {
            let smart = Arc::new(Smart::new(store.auth(), options.smart.clone()));
            smart
                .prepare()
                .await
                .map_err(|e| anyhow::anyhow!("cannot load the signing keys: {e:?}"))?;
            Some(smart)
        }
        AuthMode::Off => {
            eprintln!("{INSECURE_WARNING}");
            tracing::warn!("{INSECURE_WARNING}");
            None
        }
    };
    if config.demo {
        let ctx = Context {
            finance: options.finance.clone(),
            ..Context::new(store.clone())
        };
        let text = crate::demo::seed(&ctx, store.auth().as_ref(), &config).await?;
        println!("{text}");
    }
    if config.jobs.worker.concurrency > 0 {
        let ctx = Context {
            page_ttl_ms: options.search_page_ttl_ms,
            bulk: options.bulk.clone(),
            audit: options.audit,
            seal: options.seal.clone(),
            registry: Arc::new(crate::interaction::registry::Registry::for_catalog(
                &options.finance,
            )),
            finance: options.finance.clone(),
            ..Context::new(store.clone())
        };
        let registry = job_kinds(&ctx, &config.jobs)?;
        let worker = crate::jobs::Worker::new(
            store.clone(),
            registry,
            Arc::new(crate::jobs::SystemClock),
            config.jobs.worker.clone(),
        );
        let shutdown = supervisor.shutdown();
        supervisor.spawn("job worker", async move {
            worker.run(shutdown).await;
            Ok(())
        });
        // committed versions matched against the Subscriptions (docs/subscriptions.md)
        let shutdown = supervisor.shutdown();
        let dispatch_ctx = ctx.clone();
        supervisor.spawn("subscription dispatcher", async move {
            crate::interaction::notify::run_dispatcher(
                dispatch_ctx,
                std::time::Duration::from_millis(50),
                shutdown,
            )
            .await;
            Ok(())
        });
    }
    let secured = smart.is_some();
    let (app, pipeline, metrics) = router_and_feeds(store, &options, smart);
    if let Some(addr) = config.metrics_listen {
        let listener = supervisor.bind("metrics", addr).await?;
        tracing::info!(address = %addr, "metrics: http://{addr}/metrics");
        let shutdown = supervisor.shutdown();
        let app = api::metrics::open_router(metrics);
        supervisor.spawn("metrics listener", async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(supervisor::stopped(shutdown))
                .await
                .context("metrics listener")
        });
    }
    // the default channel on --mllp, and every channel of the set with its own address
    let mut listeners: Vec<(std::net::SocketAddr, crate::feeds::runtime::Channel)> = Vec::new();
    if let Some(p) = &pipeline {
        if let Some(addr) = config.mllp {
            let c = feed_channel(
                p,
                "default",
                feed_principal("default", secured),
                config.feed_zone.as_deref(),
            );
            listeners.push((addr, c));
        }
        for m in p.mapping_set().channels() {
            if let Some(bind) = &m.bind {
                let addr: std::net::SocketAddr = bind
                    .parse()
                    .map_err(|_| anyhow::anyhow!("channel {}: bad bind {bind}", m.name))?;
                let c = feed_channel(p, &m.name, feed_principal(&m.name, secured), None);
                listeners.push((addr, c));
            }
        }
    } else if config.mllp.is_some() {
        anyhow::bail!("the mapping set did not load");
    }
    for (addr, channel) in listeners {
        let Some(pipeline) = pipeline.clone() else {
            break;
        };
        let listener = supervisor.bind("MLLP", addr).await?;
        tracing::info!(address = %addr, channel = %channel.name, "HL7 v2 over MLLP");
        let shutdown = supervisor.shutdown();
        supervisor.spawn(&format!("MLLP listener {}", channel.name), async move {
            crate::feeds::mllp::serve(
                listener,
                pipeline,
                Arc::new(channel),
                crate::feeds::mllp::Limits::default(),
                shutdown,
            )
            .await
            .context("MLLP listener")
        });
    }
    tracing::info!(
        address = %config.listen,
        store = backend,
        database = %config.database_url,
        "Healporium listening: http://{}{}/metadata",
        config.listen,
        config.prefix
    );
    let shutdown = supervisor.shutdown();
    supervisor.spawn("HTTP listener", async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(supervisor::stopped(shutdown))
        .await
        .context("server error")
    });
    supervisor.run().await?;
    tracing::info!("Healporium stopped");
    Ok(())
}

/// The job kinds of a node: the built-in probe, and the periodic clean-up of what expires
/// (paging cursors, authorization requests and codes, launches, token and assertion ids,
/// break-glass grants; finished jobs after a week, daily at 03:00 in the configured zone).
pub fn job_kinds(
    ctx: &Context,
    jobs: &crate::config::JobConfig,
) -> anyhow::Result<crate::jobs::Registry> {
    use crate::jobs::{FnHandler, JobError, Schedule};
    let mut registry = crate::jobs::Registry::new();
    let cleanup_ctx = ctx.clone();
    registry.register(
        CLEANUP,
        3,
        FnHandler(move |_job| {
            let ctx = cleanup_ctx.clone();
            async move {
                let now = crate::smart::now_ms();
                let cursors = crate::interaction::search::purge_cursors(&ctx, now)
                    .await
                    .map_err(|_| JobError::Retry("cannot purge search cursors".into()))?;
                let auth =
                    ctx.store.auth().purge_expired(now).await.map_err(|e| {
                        JobError::Retry(format!("cannot purge expired grants: {e}"))
                    })?;
                let bulk =
                    ctx.store.bulk().purge(now).await.map_err(|e| {
                        JobError::Retry(format!("cannot purge expired bulk data: {e}"))
                    })?;
                tracing::debug!(cursors, auth, bulk, "expired rows purged");
                Ok(())
            }
        }),
    );
    let purge_store = ctx.store.clone();
    registry.register(
        JOB_PURGE,
        3,
        FnHandler(move |_job| {
            let store = purge_store.clone();
            async move {
                let week_ago = crate::smart::now_ms() - 7 * 24 * 3_600_000;
                store
                    .jobs()
                    .purge(week_ago)
                    .await
                    .map(|_| ())
                    .map_err(|e| JobError::Retry(format!("cannot purge finished jobs: {e}")))
            }
        }),
    );
    let settle_ctx = ctx.clone();
    registry.register(
        AUDIT_SETTLE,
        3,
        FnHandler(move |_job| {
            let ctx = settle_ctx.clone();
            async move {
                let registry = ctx
                    .registry
                    .current(ctx.store.as_ref())
                    .await
                    .map_err(|_| JobError::Retry("cannot load the search parameters".into()))?
                    .params;
                let moved = crate::interaction::audit::settle(ctx.store.as_ref(), &registry)
                    .await
                    .map_err(|_| JobError::Retry("cannot store recorded AuditEvents".into()))?;
                tracing::debug!(moved, "recorded AuditEvents stored as resources");
                Ok(())
            }
        }),
    );
    let verify_ctx = ctx.clone();
    registry.register(
        VERIFY,
        3,
        FnHandler(move |_job| {
            let ctx = verify_ctx.clone();
            async move {
                // a broken chain or ledger is recorded (and shown by /metrics), not retried
                if let Err(e) = verify_audit_on(ctx.store.as_ref(), ctx.seal.as_deref()).await {
                    tracing::error!(error = %e, "audit verification failed");
                }
                if let Err(e) = verify_ledger_on(ctx.store.as_ref()).await {
                    tracing::error!(error = %e, "ledger verification failed");
                }
                Ok(())
            }
        }),
    );
    // exports and imports: one handler, the job row says which
    for kind in [
        crate::interaction::bulk::EXPORT_JOB,
        crate::interaction::bulk::import::IMPORT_JOB,
    ] {
        let bulk_ctx = ctx.clone();
        registry.register(
            kind,
            crate::interaction::bulk::EXPORT_ATTEMPTS,
            FnHandler(move |job: crate::jobs::JobInput| {
                let ctx = bulk_ctx.clone();
                async move {
                    let id = job
                        .payload
                        .get("id")
                        .and_then(serde_json::Value::as_str)
                        .ok_or_else(|| JobError::Fatal("no id in the payload".into()))?;
                    let last = job.attempt >= i64::from(crate::interaction::bulk::EXPORT_ATTEMPTS);
                    crate::interaction::bulk::run_job(&ctx, id, last)
                        .await
                        .map_err(JobError::Retry)
                }
            }),
        );
    }
    let change_ctx = ctx.clone();
    registry.register(
        crate::interaction::write::CLAIM_ADJUDICATED_JOB,
        5,
        FnHandler(move |job: crate::jobs::JobInput| {
            let ctx = change_ctx.clone();
            async move {
                let id = job
                    .payload
                    .get("claimResponse")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| JobError::Fatal("no claimResponse in the payload".into()))?;
                let change = crate::interaction::operation::on_adjudicated(&ctx, "", id)
                    .await
                    .map_err(|_| JobError::Retry("cannot apply the adjudication".into()))?;
                tracing::debug!(?change, "claim adjudicated");
                Ok(())
            }
        }),
    );
    let notify_ctx = ctx.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the notification client: {e}"))?;
    registry.register(
        crate::interaction::subscription::NOTIFY_JOB,
        crate::interaction::write::NOTIFY_ATTEMPTS,
        FnHandler(move |job: crate::jobs::JobInput| {
            let ctx = notify_ctx.clone();
            let http = http.clone();
            async move {
                // `subscription` (a handshake) or `subscriptions` (what a pass matched)
                let mut ids: Vec<String> = job
                    .payload
                    .get("subscriptions")
                    .and_then(serde_json::Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(serde_json::Value::as_str)
                    .map(str::to_string)
                    .collect();
                if let Some(one) = job
                    .payload
                    .get("subscription")
                    .and_then(serde_json::Value::as_str)
                {
                    ids.push(one.to_string());
                }
                if ids.is_empty() {
                    return Err(JobError::Fatal("no subscription in the payload".into()));
                }
                crate::interaction::notify::deliver_all(&ctx, &http, &job.id, &ids, 16)
                    .await
                    .map_err(JobError::Retry)
            }
        }),
    );
    let slots_ctx = ctx.clone();
    registry.register(
        crate::interaction::scheduling::SLOTS_JOB,
        5,
        FnHandler(move |job: crate::jobs::JobInput| {
            let ctx = slots_ctx.clone();
            async move {
                let schedule = job
                    .payload
                    .get("schedule")
                    .and_then(serde_json::Value::as_str);
                let created = crate::interaction::slots::run_slots_job(
                    &ctx,
                    schedule,
                    crate::smart::now_ms(),
                )
                .await
                .map_err(|_| JobError::Retry("cannot generate slots".into()))?;
                tracing::debug!(created, "slots generated");
                Ok(())
            }
        }),
    );
    let day_ctx = ctx.clone();
    let zone = jobs.time_zone.clone();
    registry.register(
        FINANCE_DAY,
        5,
        FnHandler(move |_job| {
            let ctx = day_ctx.clone();
            let zone = zone.clone();
            async move {
                let tz = jiff::tz::TimeZone::get(&zone)
                    .map_err(|e| JobError::Retry(format!("time zone {zone}: {e}")))?;
                let today = jiff::Timestamp::now().to_zoned(tz).date();
                let r = crate::interaction::operation::run_day(&ctx, "", today)
                    .await
                    .map_err(|_| JobError::Retry("the finance day failed".into()))?;
                tracing::info!(
                    lines = r.lines,
                    interest = r.interest_postings,
                    late_fees = r.late_fees,
                    "finance day done"
                );
                Ok(())
            }
        }),
    );
    registry.every(
        FINANCE_DAY,
        Schedule::daily("00:30", &jobs.time_zone).map_err(anyhow::Error::msg)?,
        serde_json::json!({}),
    );
    // the planning horizon moves on, and expired holds are released
    registry.every(
        crate::interaction::scheduling::SLOTS_JOB,
        Schedule::every(300),
        serde_json::json!({}),
    );
    // recorded AuditEvents never wait long to become searchable resources
    registry.every(AUDIT_SETTLE, Schedule::every(10), serde_json::json!({}));
    registry.every(VERIFY, Schedule::every(3600), serde_json::json!({}));
    registry.every(
        CLEANUP,
        Schedule::every(jobs.cleanup_every_secs),
        serde_json::json!({}),
    );
    registry.every(
        JOB_PURGE,
        Schedule::daily("03:00", &jobs.time_zone).map_err(anyhow::Error::msg)?,
        serde_json::json!({}),
    );
    Ok(registry)
}

/// The periodic clean-up of expired rows.
pub const CLEANUP: &str = "cleanup";
/// The periodic move of recorded AuditEvents into searchable resources.
pub const AUDIT_SETTLE: &str = "audit-settle";
/// The hourly verification of the audit chain and the ledger.
pub const VERIFY: &str = "verify";
/// The daily purge of finished jobs.
pub const JOB_PURGE: &str = "job-purge";
/// The finance day: interest, late fees and missed installments on every credit line.
pub const FINANCE_DAY: &str = "finance-day";

/// Opens the store of an admin command (migrating it like `serve` would).
async fn admin_store(database_url: &str) -> anyhow::Result<Arc<dyn Store>> {
    store::open(database_url).await
}

/// Runs `healporium jobs …`: the operator's view of the queue.
pub async fn jobs_command(command: crate::config::JobsCommand) -> anyhow::Result<String> {
    use crate::config::JobsCommand;
    use crate::store::JobState;
    let fmt_time = |ms: i64| crate::fhir::types::Instant::from_millis(ms).to_fhir();
    match command {
        JobsCommand::List(args) => {
            let state = match args.state.as_deref() {
                None => None,
                Some(s) => Some(JobState::parse(s).ok_or_else(|| {
                    anyhow::anyhow!("--state: one of queued, running, done, dead, cancelled")
                })?),
            };
            let store = admin_store(&args.database.database_url).await?;
            let rows = store
                .jobs()
                .list(state, args.kind.as_deref(), args.limit)
                .await
                .map_err(|e| anyhow::anyhow!("cannot list jobs: {e}"))?;
            let mut out = format!(
                "{:<36}  {:<14}  {:<9}  {:>8}  {:<24}  last error",
                "id", "kind", "state", "attempts", "run at"
            );
            for r in &rows {
                out.push_str(&format!(
                    "\n{:<36}  {:<14}  {:<9}  {:>8}  {:<24}  {}",
                    r.id,
                    r.kind,
                    r.state,
                    format!("{}/{}", r.attempts, r.max_attempts),
                    fmt_time(r.run_at),
                    r.last_error.as_deref().unwrap_or("")
                ));
            }
            out.push_str(&format!("\n({} job(s))", rows.len()));
            Ok(out)
        }
        JobsCommand::Show(args) => {
            let store = admin_store(&args.database.database_url).await?;
            let (job, attempts) = store
                .jobs()
                .get(&args.id)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the job: {e}"))?
                .ok_or_else(|| anyhow::anyhow!("no job {}", args.id))?;
            let mut out = format!(
                "id: {}\nkind: {}\nkey: {}\nstate: {}\nattempts: {}/{}\nrun at: {}\nleased by: {}\nlast error: {}\ncreated: {}\nupdated: {}\npayload: {}",
                job.id,
                job.kind,
                job.key.as_deref().unwrap_or("-"),
                job.state,
                job.attempts,
                job.max_attempts,
                fmt_time(job.run_at),
                job.leased_by.as_deref().unwrap_or("-"),
                job.last_error.as_deref().unwrap_or("-"),
                fmt_time(job.created),
                fmt_time(job.updated),
                job.payload
            );
            for a in attempts {
                out.push_str(&format!(
                    "\nattempt {} on {}: started {}, {}{}",
                    a.attempt,
                    a.node,
                    fmt_time(a.started),
                    a.outcome.as_deref().unwrap_or("running"),
                    a.error.map(|e| format!(": {e}")).unwrap_or_default()
                ));
            }
            Ok(out)
        }
        JobsCommand::Retry(args) => {
            let store = admin_store(&args.database.database_url).await?;
            let now = crate::smart::now_ms();
            if store
                .jobs()
                .retry(&args.id, now)
                .await
                .map_err(|e| anyhow::anyhow!("cannot retry the job: {e}"))?
            {
                Ok(format!("job {} queued again", args.id))
            } else {
                anyhow::bail!(
                    "job {} is not dead or cancelled (or does not exist)",
                    args.id
                )
            }
        }
        JobsCommand::Cancel(args) => {
            let store = admin_store(&args.database.database_url).await?;
            let now = crate::smart::now_ms();
            if store
                .jobs()
                .cancel(&args.id, now)
                .await
                .map_err(|e| anyhow::anyhow!("cannot cancel the job: {e}"))?
            {
                Ok(format!("job {} cancelled", args.id))
            } else {
                anyhow::bail!(
                    "job {} is not queued or running (or does not exist)",
                    args.id
                )
            }
        }
        JobsCommand::Stats(args) => {
            let store = admin_store(&args.database.database_url).await?;
            let counts = store
                .jobs()
                .counts()
                .await
                .map_err(|e| anyhow::anyhow!("cannot count jobs: {e}"))?;
            let mut out = format!("{:<14}  {:<9}  {:>8}", "kind", "state", "jobs");
            for (kind, state, n) in counts {
                out.push_str(&format!("\n{kind:<14}  {state:<9}  {n:>8}"));
            }
            Ok(out)
        }
    }
}

/// Runs `healporium key rotate`: a new signing key signs from now on; keys retired longer
/// than the token lifetime ago are deleted.
pub async fn key_rotate(database_url: &str, token_ttl_secs: i64) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    let (kid, pruned) = crate::smart::keys::rotate(
        store.auth().as_ref(),
        crate::smart::now_ms(),
        token_ttl_secs * 1000,
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot rotate the signing key: {e:?}"))?;
    Ok(format!(
        "new signing key {kid}; older keys stay in the JWKS until their tokens expire          ({pruned} expired key(s) removed)"
    ))
}
