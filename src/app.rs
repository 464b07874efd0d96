//! Wiring: opens the store, builds the router with its tower layers, and serves it until
//! Ctrl-C or SIGTERM.

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::fhir::definitions::Definitions;
use crate::fhir::validation::Validator;
use crate::interaction::Context;
use crate::store::{self, Store};
use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};

/// Options of the HTTP application that do not concern the store.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub base_url: Option<String>,
    pub prefix: String,
    pub max_body_bytes: usize,
    /// Reject references to local resources that do not exist, and deletes of referenced ones.
    pub referential_integrity: bool,
    /// Lifetime of search paging cursors, in milliseconds.
    pub search_page_ttl_ms: i64,
    /// Record an AuditEvent for every interaction (the server's default; off in this
    /// library default so tests and benchmarks opt in).
    pub audit: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            base_url: None,
            prefix: "/fhir".to_string(),
            max_body_bytes: 16 * 1024 * 1024,
            referential_integrity: true,
            search_page_ttl_ms: crate::interaction::search::CURSOR_TTL_MS,
            audit: false,
        }
    }
}

/// The whole HTTP application on a store.
pub fn router(store: Arc<dyn Store>, options: &AppOptions) -> Router {
    let mut ctx = Context::new(store);
    ctx.integrity = options.referential_integrity;
    ctx.page_ttl_ms = options.search_page_ttl_ms;
    ctx.audit = options.audit;
    let state = ApiState {
        ctx,
        base_url: options.base_url.as_deref().map(Into::into),
        prefix: options.prefix.as_str().into(),
    };
    api::router(state)
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| api::panic_response()))
        .layer(crate::telemetry::http_trace())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(SetSensitiveResponseHeadersLayer::new([SET_COOKIE]))
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            PROXY_AUTHORIZATION,
            COOKIE,
        ]))
}

/// Loads the compiled-in definitions and builds the validators up front, so a defect shows
/// at start rather than on a request.
pub fn warm_up() -> anyhow::Result<()> {
    let defs = Definitions::r4();
    anyhow::ensure!(
        !defs.resource_types().is_empty(),
        "no resource types loaded"
    );
    Validator::r4()
        .warm_up()
        .map_err(|e| anyhow::anyhow!("validator: {e}"))
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

/// Runs `healporium audit verify`: Ok(summary) when the chain holds, Err when it is broken.
pub async fn audit_verify(database_url: &str) -> anyhow::Result<String> {
    let store = store::open(database_url).await?;
    match crate::interaction::audit::verify(store.as_ref())
        .await
        .map_err(|o| anyhow::anyhow!("cannot read the audit trail: {:?}", o.issues))?
    {
        crate::interaction::audit::Verified::Intact(n) => Ok(format!(
            "audit trail intact: {n} AuditEvents, every link verified"
        )),
        crate::interaction::audit::Verified::Broken(seq, why) => {
            anyhow::bail!("audit trail broken at record {seq}: {why}")
        }
    }
}

/// Runs `healporium serve`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    warm_up()?;
    let store = store::open(config.database_url.expose()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let options = AppOptions {
        base_url: config.base_url.clone(),
        prefix: config.prefix.clone(),
        max_body_bytes: config.max_body_bytes,
        referential_integrity: config.referential_integrity,
        search_page_ttl_ms: config.search_page_ttl_ms,
        audit: config.audit,
    };
    let backend = store.backend();
    let app = router(store, &options);
    tracing::info!(
        address = %config.listen,
        store = backend,
        database = %config.database_url,
        "Healporium listening: http://{}{}/metadata",
        config.listen,
        config.prefix
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("server error")?;
    tracing::info!("Healporium stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
