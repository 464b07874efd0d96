//! Logging: a tracing subscriber (text or JSON lines) and the HTTP trace layer. Request logs
//! carry method, path, status, latency and request id — never query strings, bodies or
//! headers that could hold PHI or tokens. (Metrics: `api/metrics.rs`.)

use crate::config::LogFormat;
use axum::http::Request;
use tower_http::trace::{DefaultOnResponse, MakeSpan, TraceLayer};
use tracing::{Level, Span};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (a second call is a no-op). Logs go to stderr (stdout is
/// the commands' output), coloured only when stderr is a terminal.
pub fn init(format: LogFormat, filter: &str) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Span per request: method, path without the query, request id.
#[derive(Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        // a client may choose the request id; only a plain token reaches the logs
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_plain_token(v))
            .unwrap_or("-");
        tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %id,
        )
    }
}

fn is_plain_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub type HttpTrace = TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    RequestSpan,
    tower_http::trace::DefaultOnRequest,
    DefaultOnResponse,
>;

pub fn http_trace() -> HttpTrace {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_response(DefaultOnResponse::new().level(Level::INFO))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_request_ids_are_logged() {
        assert!(super::is_plain_token("3f2a-11ee.b_x"));
        assert!(!super::is_plain_token("John Smith, DOB 1970-01-01"));
        assert!(!super::is_plain_token(&"x".repeat(65)));
        assert!(!super::is_plain_token(""));
    }
}
