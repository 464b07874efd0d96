//! HL7 v2 at the HTTP edge: `POST /hl7v2` takes one ER7 message and answers with its ACK,
//! and [`InteractionSink`] commits what the feed pipeline maps as one FHIR transaction
//! through the interaction layer (every transport's writes go this way).
//!
//! Who may post: a backend service with a `system/` scope that creates or updates, or an
//! administrator (or anyone when authorization is off). Patients, practitioners, pharmacists
//! and insurers are refused with 403 before anything is stored, so a valid token of theirs
//! cannot fill the inbox either.

use super::{ApiError, ApiState, peer_address};
use crate::auth::scopes::{Perm, ScopeContext};
use crate::auth::{Principal, Role};
use crate::feeds::runtime::{Channel, Class, Pipeline, Refusal, Sink};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::interaction::search::{SearchRequest, SearchScope};
use crate::interaction::{self, Context, FhirRequest, Interaction, Preconditions, PreferReturn};
use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use std::sync::Arc;

/// Where messages are posted (outside the FHIR prefix, behind the same token check).
pub const PATH: &str = "/hl7v2";

/// The media types an ER7 body may come as.
pub const ER7_TYPES: [&str; 3] = [
    "x-application/hl7-v2+er7",
    "application/hl7-v2",
    "text/plain",
];

/// Commits mapped transactions through the interaction layer.
pub struct InteractionSink {
    pub ctx: Context,
    /// The FHIR base URL of this server (for the links in responses, unused here).
    pub base: String,
}

impl InteractionSink {
    /// Runs `what` as `principal` and returns the response body (Null without one).
    async fn call(
        &self,
        what: Interaction,
        provenance: Option<Value>,
        prefer: PreferReturn,
        principal: Option<Principal>,
        source: Option<String>,
    ) -> Result<Value, Refusal> {
        let request = FhirRequest {
            base: self.base.clone(),
            interaction: what,
            preconditions: Preconditions::default(),
            cascade: false,
            provenance,
            prefer,
            principal,
            source,
        };
        let response = interaction::handle(&self.ctx, request)
            .await
            .map_err(|o| refusal(&o))?;
        Ok(response
            .body
            .map(|b| b.to_value())
            .transpose()
            .map_err(|o| refusal(&o))?
            .unwrap_or_default())
    }
}

#[async_trait]
impl Sink for InteractionSink {
    async fn commit(
        &self,
        bundle: Value,
        provenance: Value,
        principal: Option<Principal>,
        source: Option<String>,
    ) -> Result<(), Refusal> {
        self.call(
            Interaction::Bundle { bundle },
            Some(provenance),
            PreferReturn::Minimal,
            principal,
            source,
        )
        .await
        .map(|_| ())
    }

    async fn command(
        &self,
        kind: &str,
        target: &str,
        parameters: Value,
        principal: Option<Principal>,
        source: Option<String>,
    ) -> Result<(), Refusal> {
        let refused = |class: Class, status: u16, text: String| Refusal {
            class,
            status,
            issues: vec![(None, text)],
        };
        if kind != "credit-payment" {
            return Err(refused(
                Class::Unsupported,
                501,
                format!("no command {kind}"),
            ));
        }
        // the patient's open credit line
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let Some((_, token)) = pairs.into_iter().find(|(k, _)| k == "identifier") else {
            return Err(refused(
                Class::Validation,
                400,
                "a payment names its patient by identifier".into(),
            ));
        };
        let search = Interaction::Search(SearchRequest {
            scope: SearchScope::Type("Account".into()),
            pairs: vec![
                ("subject:Patient.identifier".into(), token),
                ("status".into(), "active".into()),
            ],
            strict: false,
            paging: false,
        });
        let found = self
            .call(
                search,
                None,
                PreferReturn::Representation,
                principal.clone(),
                source.clone(),
            )
            .await?;
        let line_ext = self.ctx.finance.extension_url("credit-line");
        let lines: Vec<String> = found
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource"))
            .filter(|r| {
                r.get("extension")
                    .and_then(Value::as_array)
                    .is_some_and(|x| {
                        x.iter().any(|x| {
                            x.get("url").and_then(Value::as_str) == Some(line_ext.as_str())
                        })
                    })
            })
            .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        let line = match lines.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(refused(
                    Class::Validation,
                    422,
                    "the patient has no open credit line to post the payment to".into(),
                ));
            }
            _ => {
                return Err(refused(
                    Class::Conflict,
                    409,
                    "the patient has more than one open credit line".into(),
                ));
            }
        };
        // the payment, as its own request (it commits on its own)
        let bundle = serde_json::json!({"resourceType": "Bundle", "type": "batch", "entry": [{
            "request": {"method": "POST", "url": format!("Account/{line}/$credit-payment")},
            "resource": parameters,
        }]});
        let body = self
            .call(
                Interaction::Bundle { bundle },
                None,
                PreferReturn::OperationOutcome,
                principal,
                source,
            )
            .await?;
        let entry = body.pointer("/entry/0").cloned().unwrap_or_default();
        let status: u16 = entry
            .pointer("/response/status")
            .and_then(Value::as_str)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(500);
        if status < 400 {
            return Ok(());
        }
        let issues: Vec<(Option<String>, String)> = entry
            .pointer("/response/outcome/issue")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|i| {
                (
                    i.pointer("/expression/0")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    i.get("diagnostics")
                        .and_then(Value::as_str)
                        .unwrap_or("refused")
                        .to_string(),
                )
            })
            .collect();
        let class = match status {
            409 | 412 => Class::Conflict,
            s if s >= 500 => Class::TransientExhausted,
            _ => Class::Validation,
        };
        Err(Refusal {
            class,
            status,
            issues,
        })
    }
}

/// The dead-letter class of an interaction failure.
fn refusal(o: &Outcome) -> Refusal {
    let class = match o.kind {
        ErrorKind::Conflict | ErrorKind::VersionConflict | ErrorKind::MultipleMatches => {
            Class::Conflict
        }
        ErrorKind::Unavailable | ErrorKind::Contention | ErrorKind::Internal => {
            Class::TransientExhausted
        }
        _ => Class::Validation,
    };
    Refusal {
        class,
        status: o.status(),
        issues: o
            .issues
            .iter()
            .map(|i| (i.expression.first().cloned(), i.diagnostics.clone()))
            .collect(),
    }
}

/// Whether `principal` may feed messages in (`secured`: authorization is on).
pub fn may_feed(principal: Option<&Principal>, secured: bool) -> bool {
    let Some(p) = principal else {
        return !secured;
    };
    if p.role == Some(Role::Admin) {
        return true;
    }
    p.user.is_none()
        && p.role.is_none()
        && p.grants.iter().any(|g| {
            g.context == ScopeContext::System
                && (g.grants(Perm::Create, "Patient") || g.grants(Perm::Update, "Patient"))
        })
}

/// State of the HL7 v2 route.
#[derive(Clone)]
pub struct Hl7State {
    pub api: ApiState,
    pub pipeline: Arc<Pipeline>,
    pub channel: Arc<Channel>,
    /// Authorization is on: a request without a principal is refused.
    pub secured: bool,
}

/// `POST /hl7v2`.
pub fn router(state: Hl7State) -> Router {
    let api = state.api.clone();
    Router::new()
        .route(PATH, post(receive))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            api,
            super::audit_refusals,
        ))
}

async fn receive(State(state): State<Hl7State>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let principal = parts.extensions.get::<Principal>().cloned();
    if !may_feed(principal.as_ref(), state.secured) {
        return ApiError(Outcome::new(
            ErrorKind::Forbidden,
            "Only a backend service with system/ write scopes or an administrator may send HL7 v2 messages",
        ))
        .into_response();
    }
    let media = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if !media.as_deref().is_some_and(|m| ER7_TYPES.contains(&m)) {
        return ApiError(Outcome::new(
            ErrorKind::UnsupportedMediaType,
            "An HL7 v2 message is sent as Content-Type: x-application/hl7-v2+er7",
        ))
        .into_response();
    }
    // read at most one message's worth: a larger body is refused before it is held
    let limit = crate::hl7v2::er7::MAX_MESSAGE_BYTES;
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError(Outcome::new(
                ErrorKind::PayloadTooLarge,
                format!("An HL7 v2 message is at most {limit} bytes"),
            ))
            .into_response();
        }
    };
    let source = peer_address(&parts.headers, &parts.extensions);
    let receipt = state
        .pipeline
        .receive(&state.channel, principal, source, &bytes)
        .await;
    if let Some(r) = parts.extensions.get::<super::Reached>() {
        // the transaction was audited by the interaction layer
        r.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let status = if receipt.retry {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("x-application/hl7-v2+er7; charset=utf-8"),
        )],
        receipt.ack,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(receipt.code.as_str()) {
        response.headers_mut().insert("x-hl7-ack-code", v);
    }
    if receipt.duplicate {
        response
            .headers_mut()
            .insert("x-hl7-duplicate", HeaderValue::from_static("true"));
    }
    response
}
