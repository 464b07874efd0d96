//! L4: the axum edge. Routes turn HTTP requests into [`FhirRequest`]s, hand them to the
//! interaction layer, and turn [`FhirResponse`]s and [`Outcome`]s back into HTTP — every
//! error body an OperationOutcome, its status from [`ErrorKind::table`].
//!
//! axum and http types live here and in web/ only.

pub mod hl7v2;
pub mod metrics;
mod negotiate;
pub mod openapi;
mod pages;
pub mod smart;
pub mod websocket;

use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::resource::parse_json_object;
use crate::fhir::types::etag;
use crate::interaction::operation::{OperationMethod, OperationRequest};
use crate::interaction::search::{SearchRequest, SearchScope};
use crate::interaction::{
    self, Body, Context, FhirRequest, FhirResponse, HistoryParams, Interaction, PatchBody, Status,
    Target,
};
use crate::store::HistoryScope;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::header::{CONTENT_TYPE, ETAG, HOST, LAST_MODIFIED, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use negotiate::{BodyKind, Format};
use std::sync::Arc;

pub use negotiate::negotiate;

/// Shared state of the HTTP edge.
#[derive(Clone)]
pub struct ApiState {
    pub ctx: Context,
    /// The public FHIR base URL when configured; else derived from the Host header.
    pub base_url: Option<Arc<str>>,
    /// The path prefix of the FHIR API, e.g. `/fhir`.
    pub prefix: Arc<str>,
    /// Without a base URL: the `Host` values links, `Location` and the token issuer may be
    /// made of (loopback names are always trusted).
    pub trusted_hosts: Arc<[String]>,
}

/// The FHIR API router, mounted at `prefix`.
pub fn router(state: ApiState) -> Router {
    let prefix = state.prefix.to_string();
    let api = Router::new()
        .route("/metadata", get(metadata))
        .route("/_history", get(history_system))
        .route("/", post(bundle).get(system_search))
        .route("/_search", post(system_search_post))
        .route(
            "/{type}",
            post(create)
                .put(update_conditional)
                .patch(patch_conditional)
                .delete(delete_conditional)
                .get(type_get),
        )
        .route("/{type}/_history", get(history_type))
        .route("/{type}/_search", post(type_search_post))
        .route(
            "/{type}/{id}",
            get(read)
                .post(type_operation_post)
                .put(update)
                .patch(patch)
                .delete(delete),
        )
        .route("/{type}/{id}/_history", get(history_instance))
        .route("/{type}/{id}/_history/{vid}", get(vread))
        .route(
            "/{type}/{id}/{op}",
            get(instance_operation_get).post(instance_operation_post),
        )
        .route(
            "/{type}/{id}/_history/{vid}/{op}",
            get(version_operation_get).post(version_operation_post),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state.clone());
    // `[base]/?…` is the system search too
    let slash = Router::new()
        .route(&format!("{prefix}/"), get(system_search).post(bundle))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    Router::new()
        .nest(&prefix, api)
        .merge(slash)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state, audit_refusals))
}

/// An error on its way out as an OperationOutcome.
pub struct ApiError(pub Outcome);

impl From<Outcome> for ApiError {
    fn from(o: Outcome) -> Self {
        ApiError(o)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let outcome = self.0;
        let status =
            StatusCode::from_u16(outcome.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if outcome.kind.is_fault() {
            tracing::error!(kind = ?outcome.kind, status = status.as_u16(), "request failed");
        } else {
            tracing::warn!(kind = ?outcome.kind, status = status.as_u16(), "request rejected");
        }
        let body = serde_json::to_vec(&outcome.to_resource()).unwrap_or_default();
        (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
            body,
        )
            .into_response()
    }
}

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
const PLAIN_JSON: &str = "application/json; charset=utf-8";
const FHIR_NDJSON: &str = "application/fhir+ndjson";

type ApiResult = Result<Response, ApiError>;

/// Path parameters, with rejections as OperationOutcomes.
struct FhirPath<T>(T);

impl<S, T> FromRequestParts<S> for FhirPath<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| FhirPath(t))
            .map_err(|e: PathRejection| {
                ApiError(Outcome::bad_request(format!(
                    "Invalid URL path: {}",
                    e.body_text()
                )))
            })
    }
}

/// The request body, with a too-large body as 413 and other failures as 400.
struct FhirBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for FhirBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(FhirBody)
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError(Outcome::new(
                        ErrorKind::PayloadTooLarge,
                        "The request body is larger than this server accepts",
                    ))
                } else {
                    ApiError(Outcome::bad_request("The request body could not be read"))
                }
            })
    }
}

/// The query string as pairs (400 if it cannot be decoded).
fn query_pairs(raw: &Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    match raw {
        None => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|_| ApiError(Outcome::bad_request("The query string cannot be decoded"))),
    }
}

/// NUL cannot be stored or looked up (PostgreSQL text has none): a parameter holding one is
/// refused, not a 500.
fn refuse_nul(pairs: &[(String, String)]) -> Result<(), ApiError> {
    if let Some((name, _)) = pairs
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        let name: String = name.chars().filter(|c| *c != '\0').take(80).collect();
        return Err(ApiError(
            Outcome::bad_request("A query parameter contains a NUL character (%00)").at(name),
        ));
    }
    Ok(())
}

/// The FHIR base URL the client sees: the configured one; else made of the `Host` header
/// when that names a trusted host (a loopback name, or one of `--trusted-hosts`, with any
/// port), and `http://localhost` otherwise — an arbitrary Host never becomes a link, a
/// `Location` or the token issuer.
fn base_url(state: &ApiState, headers: &HeaderMap) -> String {
    crate::auth::discovery::fhir_base(
        state.base_url.as_deref(),
        headers.get(HOST).and_then(|h| h.to_str().ok()),
        &state.trusted_hosts,
        &state.prefix,
    )
}

/// Builds the HTTP response of a successful interaction.
fn respond(response: FhirResponse, format: Format) -> ApiResult {
    let status = StatusCode::from_u16(response.status.code()).unwrap_or(StatusCode::OK);
    let mut headers = HeaderMap::new();
    if let Some(v) = response.version
        && let Ok(h) = HeaderValue::from_str(&etag(v))
    {
        headers.insert(ETAG, h);
    }
    if let Some(lm) = response.last_modified
        && let Ok(h) = HeaderValue::from_str(&lm.to_http_date())
    {
        headers.insert(LAST_MODIFIED, h);
    }
    if let Some(loc) = &response.location
        && matches!(response.status, Status::Created | Status::Ok)
        && let Ok(h) = HeaderValue::from_str(loc)
    {
        headers.insert(LOCATION, h);
    }
    if let Some(cl) = &response.content_location
        && let Ok(h) = HeaderValue::from_str(cl)
    {
        headers.insert(axum::http::header::CONTENT_LOCATION, h);
    }
    for (name, value) in &response.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(*name, v);
        }
    }
    if let Some(Body::Ndjson(source)) = &response.body {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(FHIR_NDJSON));
        let stream = futures_util::stream::unfold(Some(source.clone()), |state| async move {
            let mut source = state?;
            match source.next_chunk().await {
                Ok(Some(text)) => Some((Ok::<_, std::io::Error>(Bytes::from(text)), Some(source))),
                Ok(None) => None,
                // the status line is sent: a failed chunk can only cut the body short
                Err(o) => Some((Err(std::io::Error::other(o.to_string())), None)),
            }
        });
        return Ok((status, headers, axum::body::Body::from_stream(stream)).into_response());
    }
    if format.ndjson && response.body.is_some() {
        return Err(ApiError(Outcome::new(
            ErrorKind::NotAcceptable,
            "Only bulk data files are NDJSON; ask for application/fhir+json",
        )));
    }
    let body = match (&response.body, response.status) {
        (_, Status::NotModified | Status::NoContent) | (None, _) => Vec::new(),
        (Some(Body::Raw(text)), _) if !format.pretty => text.as_bytes().to_vec(),
        (Some(body), _) => {
            let value = body.to_value().map_err(ApiError)?;
            let bytes = if format.pretty {
                serde_json::to_vec_pretty(&value)
            } else {
                serde_json::to_vec(&value)
            };
            bytes.map_err(|_| ApiError(Outcome::internal("Cannot serialize the response")))?
        }
    };
    if !body.is_empty() {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if format.plain_json {
                PLAIN_JSON
            } else {
                FHIR_JSON
            }),
        );
    }
    // an empty body gets no Content-Type (axum would call a byte vector octet-stream)
    Ok((status, headers, axum::body::Body::from(body)).into_response())
}

/// A request header's text (None when absent or not visible ASCII).
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(1024).collect())
}

/// What every FHIR handler takes from the request head: headers, the query (decoded and
/// raw, for criteria) and the negotiated response format (406 before anything else runs).
struct Call {
    headers: HeaderMap,
    /// Set by the authentication layer when authorization is on.
    principal: Option<crate::auth::Principal>,
    /// The peer's address (for the audit trail): the first X-Forwarded-For hop behind a
    /// proxy, else the TCP peer.
    source: Option<String>,
    query: Vec<(String, String)>,
    raw_query: Option<String>,
    format: Format,
    /// Set once the request reaches the interaction layer (which audits it).
    reached: Option<Reached>,
}

/// Whether a request reached the interaction layer, for [`audit_refusals`].
#[derive(Clone, Default)]
pub struct Reached(Arc<std::sync::atomic::AtomicBool>);

/// Audits what the interaction layer never saw: a request refused at the edge (malformed
/// JSON, 404 route, 405, 406, 413, 415, a bad If-Match…) records an AuditEvent of subtype
/// `refused` with who, from where, the method and path (not the query) and the status. A
/// refusal whose AuditEvent cannot be stored answers as that failure.
pub async fn audit_refusals(
    State(state): State<ApiState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !state.ctx.audit {
        if let Some(refused) = uri_too_long(&req) {
            return refused;
        }
        return next.run(req).await;
    }
    let reached = Reached::default();
    req.extensions_mut().insert(reached.clone());
    let description = format!(
        "{} {}",
        req.method(),
        req.uri().path().chars().take(200).collect::<String>()
    );
    let who = crate::interaction::audit::Requester {
        principal: req.extensions().get::<crate::auth::Principal>().cloned(),
        address: peer_address(req.headers(), req.extensions()),
    };
    if let Some(refused) = uri_too_long(&req) {
        return audit_refused(&state, description, who, refused).await;
    }
    let response = next.run(req).await;
    if response.status().as_u16() >= 400 && !reached.0.load(std::sync::atomic::Ordering::Relaxed) {
        return audit_refused(&state, description, who, response).await;
    }
    response
}

/// URLs longer than this are refused with 414 and an OperationOutcome (the HTTP layer itself
/// refuses those over 64 kB, with an empty 414 this server cannot dress).
pub const MAX_URL_BYTES: usize = 32 * 1024;

fn uri_too_long(req: &axum::extract::Request) -> Option<Response> {
    let len = req.uri().path().len() + req.uri().query().map_or(0, str::len);
    (len > MAX_URL_BYTES).then(|| {
        let o = Outcome::with_issues(
            ErrorKind::BadRequest,
            vec![crate::fhir::outcome::Issue::error(
                "too-long",
                format!("The URL is longer than {MAX_URL_BYTES} bytes; POST [type]/_search takes long queries"),
            )],
        );
        let mut r = ApiError(o).into_response();
        *r.status_mut() = StatusCode::URI_TOO_LONG;
        r
    })
}

/// Records the refusal `response` of a request that never reached an interaction.
async fn audit_refused(
    state: &ApiState,
    description: String,
    who: crate::interaction::audit::Requester,
    response: Response,
) -> Response {
    let record = crate::interaction::audit::Record {
        subtype: "refused".to_string(),
        action: "E",
        status: response.status().as_u16(),
        description: Some(description),
        ..Default::default()
    };
    let ev = crate::interaction::audit::event(&who, &record);
    if let Err(o) = crate::interaction::audit::append(&state.ctx, ev).await {
        return ApiError(o).into_response();
    }
    response
}

/// The peer's address: the first X-Forwarded-For hop behind a proxy, else the TCP peer.
fn peer_address(headers: &HeaderMap, extensions: &axum::http::Extensions) -> Option<String> {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().chars().take(64).collect::<String>());
    let peer = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    forwarded.or(peer)
}

impl FromRequestParts<ApiState> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let raw_query = parts.uri.query().map(str::to_string);
        let query = query_pairs(&raw_query)?;
        refuse_nul(&query)?;
        if parts.uri.path().to_ascii_lowercase().contains("%00") {
            return Err(ApiError(Outcome::bad_request(
                "The URL path contains a NUL character (%00)",
            )));
        }
        let format = match negotiate(&parts.headers, &query) {
            Ok(f) => f,
            // the Bulk Data kick-off judges its own Accept header (400, as the IG says)
            Err(_) if parts.uri.path().ends_with("/$export") => Format {
                pretty: false,
                plain_json: false,
                ndjson: false,
            },
            Err(o) => return Err(ApiError(o)),
        };
        Ok(Call {
            source: peer_address(&parts.headers, &parts.extensions),
            reached: parts.extensions.get::<Reached>().cloned(),
            principal: parts.extensions.get::<crate::auth::Principal>().cloned(),
            headers: parts.headers.clone(),
            query,
            raw_query,
            format,
        })
    }
}

impl Call {
    /// The conditional criteria of the URL (the whole query string).
    fn criteria(&self) -> Target {
        Target::Criteria(self.raw_query.clone().unwrap_or_default())
    }

    /// A resource body for `resource_type`: known type, FHIR JSON media type, a JSON object.
    fn resource(
        &self,
        state: &ApiState,
        resource_type: &str,
        body: &Bytes,
    ) -> Result<serde_json::Value, ApiError> {
        interaction::resource_type(&state.ctx, resource_type)?;
        negotiate::body_kind(&self.headers, false)?;
        Ok(parse_json_object(body)?)
    }

    /// A PATCH body: JSON Patch or a FHIRPath Patch Parameters resource.
    fn patch(
        &self,
        state: &ApiState,
        resource_type: &str,
        body: &Bytes,
    ) -> Result<PatchBody, ApiError> {
        interaction::resource_type(&state.ctx, resource_type)?;
        match negotiate::body_kind(&self.headers, true)? {
            BodyKind::JsonPatch => {
                let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
                    ApiError(Outcome::new(
                        ErrorKind::Structure,
                        "The JSON Patch body is not valid JSON",
                    ))
                })?;
                crate::fhir::json::check_strict(body)?;
                Ok(PatchBody::Json(v))
            }
            BodyKind::FhirJson => Ok(PatchBody::FhirPath(parse_json_object(body)?)),
        }
    }

    /// Runs an interaction and renders its result (writes honour `Prefer: return=…`).
    async fn run(self, state: &ApiState, interaction: Interaction) -> ApiResult {
        let request = FhirRequest {
            base: base_url(state, &self.headers),
            interaction,
            preconditions: negotiate::preconditions(&self.headers)?,
            cascade: self
                .query
                .iter()
                .any(|(k, v)| k == "_cascade" && v == "delete"),
            provenance: self.provenance()?,
            prefer: negotiate::prefer_return(&self.headers),
            principal: self.principal.clone(),
            source: self.source.clone(),
        };
        if let Some(r) = &self.reached {
            r.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let response = interaction::handle(&state.ctx, request).await?;
        respond(response, self.format)
    }

    /// The `X-Provenance` header: a Provenance resource as JSON.
    fn provenance(&self) -> Result<Option<serde_json::Value>, ApiError> {
        let Some(h) = self.headers.get("x-provenance") else {
            return Ok(None);
        };
        let v = h
            .to_str()
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| {
                ApiError(Outcome::bad_request(
                    "X-Provenance must be a Provenance resource in JSON",
                ))
            })?;
        Ok(Some(v))
    }

    /// Runs an operation (`name` without the `$`); a POST body is read as FHIR JSON.
    async fn operation(
        self,
        state: &ApiState,
        name: &str,
        resource_type: Option<String>,
        id: Option<String>,
        version: Option<String>,
        body: Option<&Bytes>,
    ) -> ApiResult {
        if let Some(t) = &resource_type {
            interaction::resource_type(&state.ctx, t)?;
        }
        let (method, body) = match body {
            Some(b) => {
                negotiate::body_kind(&self.headers, false)?;
                (OperationMethod::Post, Some(parse_json_object(b)?))
            }
            None => (OperationMethod::Get, None),
        };
        let op = OperationRequest {
            name: name.to_string(),
            resource_type,
            id,
            version,
            method,
            query: self.query.clone(),
            body,
            prefer: header_text(&self.headers, "prefer"),
            accept: header_text(&self.headers, "accept"),
        };
        self.run(state, Interaction::Operation(op)).await
    }

    /// The query pairs followed by those of an `application/x-www-form-urlencoded` body.
    fn form_pairs(&self, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
        if !body.is_empty() {
            let form = self
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
            if !form {
                return Err(ApiError(Outcome::new(
                    ErrorKind::UnsupportedMediaType,
                    "POST _search takes an application/x-www-form-urlencoded body",
                )));
            }
        }
        let mut pairs = self.query.clone();
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| ApiError(Outcome::bad_request("The form body cannot be decoded")))?;
        refuse_nul(&form)?;
        pairs.extend(form);
        Ok(pairs)
    }

    async fn search(
        self,
        state: &ApiState,
        scope: SearchScope,
        pairs: Vec<(String, String)>,
    ) -> ApiResult {
        let strict = negotiate::prefer_strict(&self.headers);
        let req = SearchRequest {
            scope,
            pairs,
            strict,
            paging: true,
        };
        self.run(state, Interaction::Search(req)).await
    }

    async fn history(self, state: &ApiState, scope: HistoryScope) -> ApiResult {
        let params = HistoryParams::parse(&self.query)?;
        self.run(state, Interaction::History { scope, params })
            .await
    }
}

async fn metadata(State(state): State<ApiState>, call: Call) -> ApiResult {
    call.run(&state, Interaction::Capabilities).await
}

async fn history_system(State(state): State<ApiState>, call: Call) -> ApiResult {
    call.history(&state, HistoryScope::System).await
}

async fn history_type(
    State(state): State<ApiState>,
    FhirPath(resource_type): FhirPath<String>,
    call: Call,
) -> ApiResult {
    call.history(&state, HistoryScope::Type(resource_type))
        .await
}

async fn history_instance(
    State(state): State<ApiState>,
    FhirPath((resource_type, id)): FhirPath<(String, String)>,
    call: Call,
) -> ApiResult {
    call.history(&state, HistoryScope::Instance(resource_type, id))
        .await
}

async fn read(
    State(state): State<ApiState>,
    FhirPath((resource_type, id)): FhirPath<(String, String)>,
    call: Call,
) -> ApiResult {
    if let Some(op) = id.strip_prefix('$') {
        return call
            .operation(&state, op, Some(resource_type), None, None, None)
            .await;
    }
    call.run(&state, Interaction::Read { resource_type, id })
        .await
}

/// `POST [base]/[type]/$op` (a POST to an instance URL is not an interaction).
async fn type_operation_post(
    State(state): State<ApiState>,
    FhirPath((resource_type, op)): FhirPath<(String, String)>,
    call: Call,
    FhirBody(body): FhirBody,
) -> ApiResult {
    match op.strip_prefix('$') {
        Some(op) => {
            call.operation(&state, op, Some(resource_type), None, None, Some(&body))
                .await
        }
        None => Err(method_not_allowed().await),
    }
}

async fn instance_operation_get(
    State(state): State<ApiState>,
    FhirPath((resource_type, id, op)): FhirPath<(String, String, String)>,
    call: Call,
) -> ApiResult {
    let Some(op) = op.strip_prefix('$') else {
        // `[base]/Patient/123/Observation`: compartment search
        let pairs = call.query.clone();
        let scope = SearchScope::Compartment {
            owner_type: resource_type,
            owner_id: id,
            target: op,
        };
        return call.search(&state, scope, pairs).await;
    };
    call.operation(&state, op, Some(resource_type), Some(id), None, None)
        .await
}

async fn instance_operation_post(
    State(state): State<ApiState>,
    FhirPath((resource_type, id, op)): FhirPath<(String, String, String)>,
    call: Call,
    FhirBody(body): FhirBody,
) -> ApiResult {
    let op = op
        .strip_prefix('$')
        .ok_or_else(|| ApiError(Outcome::not_found("No such endpoint")))?;
    call.operation(&state, op, Some(resource_type), Some(id), None, Some(&body))
        .await
}

async fn version_operation_get(
    State(state): State<ApiState>,
    FhirPath((resource_type, id, vid, op)): FhirPath<(String, String, String, String)>,
    call: Call,
) -> ApiResult {
    let op = op
        .strip_prefix('$')
        .ok_or_else(|| ApiError(Outcome::not_found("No such endpoint")))?;
    call.operation(&state, op, Some(resource_type), Some(id), Some(vid), None)
        .await
}

async fn version_operation_post(
    State(state): State<ApiState>,
    FhirPath((resource_type, id, vid, op)): FhirPath<(String, String, String, String)>,
    call: Call,
    FhirBody(body): FhirBody,
) -> ApiResult {
    let op = op
        .strip_prefix('$')
        .ok_or_else(|| ApiError(Outcome::not_found("No such endpoint")))?;
    call.operation(
        &state,
        op,
        Some(resource_type),
        Some(id),
        Some(vid),
        Some(&body),
    )
    .await
}

async fn vread(
    State(state): State<ApiState>,
    FhirPath((resource_type, id, version)): FhirPath<(String, String, String)>,
    call: Call,
) -> ApiResult {
    let interaction = Interaction::VRead {
        resource_type,
        id,
        version,
    };
    call.run(&state, interaction).await
}

async fn create(
    State(state): State<ApiState>,
    FhirPath(resource_type): FhirPath<String>,
    call: Call,
    FhirBody(body): FhirBody,
) -> ApiResult {
    if let Some(op) = resource_type.strip_prefix('$') {
        return call
            .operation(&state, op, None, None, None, Some(&body))
            .await;
    }
    // `POST Patient?identifier=…` is not a conditional create (that is If-None-Exist): a
    // query here would be ignored and a duplicate made
    if let Some((name, _)) = call
        .query
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "_format" | "_pretty"))
    {
        let name: String = name.chars().take(80).collect();
        return Err(ApiError(
            Outcome::bad_request(
                "A create takes no search parameters in its URL; a conditional create \
                 sends them in the If-None-Exist header",
            )
            .at(name),
        ));
    }
    let resource = call.resource(&state, &resource_type, &body)?;
    let interaction = Interaction::Create {
        resource_type,
        resource,
    };
    call.run(&state, interaction).await
}

async fn update(
    State(state): State<ApiState>,
    FhirPath((resource_type, id)): FhirPath<(String, String)>,
    call: Call,
    FhirBody(body): FhirBody,
) -> ApiResult {
    let resource = call.resource(&state, &resource_type, &body)?;
    let target = Target::Id(id);
    let interaction = Interaction::Update {
        resource_type,
        target,
        resource,
    };
    call.run(&state, interaction).await
}

async fn update_conditional(
    State(state): State<ApiState>,
    FhirPath(resource_type): FhirPath<String>,
    call: Call,
    FhirBody(body): FhirBody,
) -> ApiResult {
    let resource = call.resource(&state, &resource_type, &body)?;
    let target = call.criteria();
    let interaction = Interaction::Update {
        resource_type,
        target,
        resource,
    };
    call.run(&state, interaction).await
}

async fn patch(
    State(state): State<ApiState>,
    FhirPath((resource_type, id)): FhirPath<(String, String)>,
    call: Call,
    FhirBody(body): FhirBody,
) -> ApiResult {
    let patch = call.patch(&state, &resource_type, &body)?;
    let target = Target::Id(id);
    let interaction = Interaction::Patch {
        resource_type,
        target,
        patch,
    };
    call.run(&state, interaction).await
}

async fn patch_conditional(
    State(state): State<ApiState>,
    FhirPath(resource_type): FhirPath<String>,
    call: Call,
    FhirBody(body): FhirBody,
) -> ApiResult {
    let patch = call.patch(&state, &resource_type, &body)?;
    let target = call.criteria();
    let interaction = Interaction::Patch {
        resource_type,
        target,
        patch,
    };
    call.run(&state, interaction).await
}

async fn delete(
    State(state): State<ApiState>,
    FhirPath((resource_type, id)): FhirPath<(String, String)>,
    call: Call,
) -> ApiResult {
    let target = Target::Id(id);
    call.run(
        &state,
        Interaction::Delete {
            resource_type,
            target,
        },
    )
    .await
}

async fn delete_conditional(
    State(state): State<ApiState>,
    FhirPath(resource_type): FhirPath<String>,
    call: Call,
) -> ApiResult {
    // `DELETE [base]/$bulk-status?…` cancels an asynchronous request
    if let Some(op) = resource_type.strip_prefix('$') {
        let op = OperationRequest {
            name: op.to_string(),
            resource_type: None,
            id: None,
            version: None,
            method: OperationMethod::Delete,
            query: call.query.clone(),
            body: None,
            prefer: header_text(&call.headers, "prefer"),
            accept: header_text(&call.headers, "accept"),
        };
        return call.run(&state, Interaction::Operation(op)).await;
    }
    let target = call.criteria();
    call.run(
        &state,
        Interaction::Delete {
            resource_type,
            target,
        },
    )
    .await
}

/// `GET [base]/[type]`: search, or `GET [base]/$op`.
async fn type_get(
    State(state): State<ApiState>,
    FhirPath(resource_type): FhirPath<String>,
    call: Call,
) -> ApiResult {
    if let Some(op) = resource_type.strip_prefix('$') {
        return call.operation(&state, op, None, None, None, None).await;
    }
    let pairs = call.query.clone();
    call.search(&state, SearchScope::Type(resource_type), pairs)
        .await
}

/// `POST [base]/[type]/_search`: the form body (and any query) as a GET search.
async fn type_search_post(
    State(state): State<ApiState>,
    FhirPath(resource_type): FhirPath<String>,
    call: Call,
    FhirBody(body): FhirBody,
) -> ApiResult {
    let pairs = call.form_pairs(&body)?;
    call.search(&state, SearchScope::Type(resource_type), pairs)
        .await
}

/// `GET [base]?…`: a search across types (`_type`), or a page of any search (`_page`).
async fn system_search(State(state): State<ApiState>, call: Call) -> ApiResult {
    let pairs = call.query.clone();
    call.search(&state, SearchScope::System, pairs).await
}

async fn system_search_post(
    State(state): State<ApiState>,
    call: Call,
    FhirBody(body): FhirBody,
) -> ApiResult {
    let pairs = call.form_pairs(&body)?;
    call.search(&state, SearchScope::System, pairs).await
}

/// `POST [base]`: a batch or transaction Bundle.
async fn bundle(State(state): State<ApiState>, call: Call, FhirBody(body): FhirBody) -> ApiResult {
    negotiate::body_kind(&call.headers, false)?;
    let bundle = parse_json_object(&body)?;
    call.run(&state, Interaction::Bundle { bundle }).await
}

async fn method_not_allowed() -> ApiError {
    ApiError(Outcome::new(
        ErrorKind::MethodNotAllowed,
        "This method is not allowed on this URL",
    ))
}

async fn not_found() -> ApiError {
    ApiError(Outcome::not_found("No such endpoint"))
}

/// `GET /health/live` (the process answers) and `GET /health/ready` (the database answers;
/// migrations are applied before a node listens), for load balancers and orchestrators:
/// public, the same for every caller, and about nothing but the node.
pub fn health(state: ApiState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(state)
}

fn health_json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/health+json"),
        )],
        body.to_string(),
    )
        .into_response()
}

async fn live() -> Response {
    health_json(StatusCode::OK, serde_json::json!({"status": "pass"}))
}

async fn ready(State(state): State<ApiState>) -> Response {
    let db = state.ctx.store.ping().await.is_ok();
    let body = serde_json::json!({
        "status": if db { "pass" } else { "fail" },
        "checks": {"database": [{"status": if db { "pass" } else { "fail" }}]},
    });
    let status = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    health_json(status, body)
}

/// Discovery documents under `[prefix]/.well-known/` that every auth mode answers without a
/// token: unknown ones are a plain 404, and a server without authorization publishes a
/// smart-configuration that says so (the authorization server's routes serve the real one).
pub fn discovery(prefix: &str, authorization: bool) -> Router {
    let mut r = Router::new().route(
        &format!("{prefix}/.well-known/{{*rest}}"),
        get(unknown_discovery),
    );
    if !authorization {
        r = r.route(
            &format!("{prefix}/.well-known/smart-configuration"),
            get(insecure_smart_configuration),
        );
    }
    r.method_not_allowed_fallback(method_not_allowed)
}

async fn unknown_discovery() -> ApiError {
    ApiError(Outcome::not_found("No such discovery document"))
}

async fn insecure_smart_configuration() -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static(PLAIN_JSON))],
        serde_json::to_vec(&crate::auth::discovery::insecure_smart_configuration())
            .unwrap_or_default(),
    )
        .into_response()
}

/// The response of a panic caught by the panic layer: a 500 OperationOutcome.
pub fn panic_response() -> Response {
    ApiError(Outcome::internal("Internal server error")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An accepted asynchronous request (bulk export's kick-off) answers 202 with its status
    /// URL in Content-Location and no Location.
    #[test]
    fn accepted_renders_202_with_content_location() {
        let mut r = FhirResponse::new(Status::Accepted);
        r.content_location = Some("http://h/fhir/$export-status/1".into());
        r.location = Some("http://h/fhir/Patient/1".into());
        let format = Format {
            pretty: false,
            plain_json: false,
            ndjson: false,
        };
        let Ok(http) = respond(r, format) else {
            panic!("a 202 renders");
        };
        assert_eq!(http.status(), StatusCode::ACCEPTED);
        assert_eq!(
            http.headers()
                .get(axum::http::header::CONTENT_LOCATION)
                .and_then(|h| h.to_str().ok()),
            Some("http://h/fhir/$export-status/1")
        );
        assert!(http.headers().get(LOCATION).is_none());
        assert!(http.headers().get(CONTENT_TYPE).is_none());
    }
}
