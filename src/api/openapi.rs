//! `GET /openapi.json`: an OpenAPI 3.0 description of this server, generated (and cached per
//! registry and base URL)
//! from what the server itself dispatches — the CapabilityStatement (resource types, their
//! interactions and search parameters, custom SearchParameters included), the operation
//! table ([`crate::interaction::operation::OPERATIONS`]) and the edge's routes listed in
//! [`EDGE`] (which a conformance test requests one by one). Public like `/metadata`: it
//! describes the API, never data.

use super::{ApiState, base_url};
use crate::interaction::capabilities;
use crate::interaction::operation::{Level, OPERATIONS, Operation};
use crate::search::parameters::SearchParameters;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};

pub const PATH: &str = "/openapi.json";

/// Who may call an edge route.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// A SMART access token.
    Token,
    /// The client's own credentials (a form post of the OAuth2 token endpoint family).
    Client,
    /// The operator's metrics token.
    Operator,
}

/// A route of the HTTP edge outside the FHIR interactions.
pub struct EdgeRoute {
    /// The path; `{prefix}` stands for the FHIR API's prefix.
    pub path: &'static str,
    pub method: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Served only when SMART authorization is on.
    pub smart_only: bool,
}

const fn edge(
    path: &'static str,
    method: &'static str,
    tag: &'static str,
    summary: &'static str,
    access: Access,
    smart_only: bool,
) -> EdgeRoute {
    EdgeRoute {
        path,
        method,
        tag,
        summary,
        access,
        smart_only,
    }
}

/// The edge's routes beside the FHIR REST interactions (api/smart.rs, api/mod.rs,
/// api/metrics.rs, api/websocket.rs, api/hl7v2.rs).
pub const EDGE: &[EdgeRoute] = &[
    edge(
        "/health/live",
        "get",
        "operations",
        "The process answers",
        Access::Public,
        false,
    ),
    edge(
        "/health/ready",
        "get",
        "operations",
        "The database answers (503 when it does not)",
        Access::Public,
        false,
    ),
    edge(
        PATH,
        "get",
        "operations",
        "This document",
        Access::Public,
        false,
    ),
    edge(
        "/metrics",
        "get",
        "operations",
        "Prometheus metrics (the operator's token; 404 when not configured)",
        Access::Operator,
        false,
    ),
    edge(
        "{prefix}/.well-known/smart-configuration",
        "get",
        "authorization",
        "SMART App Launch discovery",
        Access::Public,
        false,
    ),
    edge(
        "{prefix}/.well-known/openid-configuration",
        "get",
        "authorization",
        "OpenID Connect discovery",
        Access::Public,
        true,
    ),
    edge(
        "/.well-known/openid-configuration",
        "get",
        "authorization",
        "OpenID Connect discovery",
        Access::Public,
        true,
    ),
    edge(
        "/auth/jwks",
        "get",
        "authorization",
        "The token signing keys (JWKS)",
        Access::Public,
        true,
    ),
    edge(
        "/auth/authorize",
        "get",
        "authorization",
        "Authorization code flow: the sign-in page (PKCE S256 required)",
        Access::Public,
        true,
    ),
    edge(
        "/auth/authorize",
        "post",
        "authorization",
        "Authorization code flow, parameters as a form",
        Access::Public,
        true,
    ),
    edge(
        "/auth/login",
        "post",
        "authorization",
        "Sign-in form",
        Access::Public,
        true,
    ),
    edge(
        "/auth/consent",
        "post",
        "authorization",
        "Consent form",
        Access::Public,
        true,
    ),
    edge(
        "/auth/token",
        "post",
        "authorization",
        "Token endpoint: authorization_code, refresh_token, client_credentials",
        Access::Client,
        true,
    ),
    edge(
        "/auth/introspect",
        "post",
        "authorization",
        "Token introspection (RFC 7662)",
        Access::Client,
        true,
    ),
    edge(
        "/auth/revoke",
        "post",
        "authorization",
        "Token revocation (RFC 7009)",
        Access::Client,
        true,
    ),
    edge(
        "/auth/launch",
        "post",
        "authorization",
        "EHR launch: a launch context for an app",
        Access::Token,
        true,
    ),
    edge(
        "{prefix}/websocket",
        "get",
        "subscriptions",
        "Websocket channel of Subscriptions (bind-with-token)",
        Access::Public,
        false,
    ),
    edge(
        "/hl7v2",
        "post",
        "feeds",
        "An HL7 v2 message (ER7) through the configured mappings; answers an ACK",
        Access::Token,
        false,
    ),
];

/// The document last generated, for the base URL and the registry it was made for: a public
/// 2.7 MB document that takes a tenth of a second to generate is generated once per change,
/// not once per request (anyone may ask for it, as often as they like).
type Cached = Option<(String, Arc<SearchParameters>, Bytes)>;

#[derive(Clone)]
struct DocState {
    api: ApiState,
    cache: Arc<Mutex<Cached>>,
}

/// `GET /openapi.json`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(PATH, get(document))
        .with_state(DocState {
            api: state,
            cache: Arc::new(Mutex::new(None)),
        })
}

async fn document(State(state): State<DocState>, headers: HeaderMap) -> Response {
    let api = &state.api;
    let base = base_url(api, &headers);
    // the custom SearchParameters as stored now (the last loaded ones if the store fails)
    let _ = api.ctx.registry.current(api.ctx.store.as_ref()).await;
    let params = api.ctx.registry.snapshot().params;
    let cached = state.cache.lock().ok().and_then(|c| match c.as_ref() {
        Some((b, p, doc)) if *b == base && Arc::ptr_eq(p, &params) => Some(doc.clone()),
        _ => None,
    });
    let body = match cached {
        Some(doc) => doc,
        None => {
            let doc = Bytes::from(generate(api, &base).to_string());
            if let Ok(mut c) = state.cache.lock() {
                *c = Some((base, params, doc.clone()));
            }
            doc
        }
    };
    (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

/// The OpenAPI document of this server at FHIR base `base`.
pub fn generate(state: &ApiState, base: &str) -> Value {
    let prefix: &str = &state.prefix;
    let origin = base.strip_suffix(prefix).unwrap_or(base);
    let smart = state.ctx.security == crate::auth::discovery::Security::Smart;
    let cs = capabilities::statement(&state.ctx, base);
    let rest = cs.pointer("/rest/0").cloned().unwrap_or(Value::Null);
    let mut paths = Map::new();
    let mut schemas = Map::new();
    system_paths(&mut paths, prefix);
    for op in OPERATIONS
        .iter()
        .filter(|o| o.levels.contains(&Level::System))
    {
        operation_paths(
            &mut paths,
            &format!("{prefix}/${}", op.name),
            op,
            None,
            false,
        );
    }
    for r in rest
        .get("resource")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(t) = r["type"].as_str() else {
            continue;
        };
        schemas.insert(t.to_string(), resource_schema(t));
        let params: Vec<(String, String)> = r["searchParam"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?.into(), p["type"].as_str()?.into())))
            .collect();
        type_paths(&mut paths, prefix, t, &params);
        for op in OPERATIONS {
            for (level, instance) in [(Level::Type, false), (Level::Instance, true)] {
                if op.applies(level, Some(t)) {
                    let path = if instance {
                        format!("{prefix}/{t}/{{id}}/${}", op.name)
                    } else {
                        format!("{prefix}/{t}/${}", op.name)
                    };
                    operation_paths(&mut paths, &path, op, Some(t), instance);
                }
            }
        }
    }
    for e in EDGE.iter().filter(|e| smart || !e.smart_only) {
        let path = e.path.replace("{prefix}", prefix);
        let mut op = json!({
            "tags": [e.tag],
            "summary": e.summary,
            "operationId": format!("{}-{}", e.method, path.trim_start_matches('/')),
            "responses": {"200": {"description": "OK"}},
        });
        let security = match (e.access, smart) {
            (Access::Operator, _) => Some(json!([{"metricsToken": []}])),
            (Access::Token, true) => None,
            _ => Some(json!([])),
        };
        if let (Some(security), Some(o)) = (security, op.as_object_mut()) {
            o.insert("security".into(), security);
        }
        insert(&mut paths, &path, e.method, op);
    }
    schemas.insert(
        "Resource".into(),
        json!({"type": "object", "required": ["resourceType"],
            "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"}},
            "additionalProperties": true,
            "externalDocs": {"url": "http://hl7.org/fhir/R4/resource.html"}}),
    );
    let mut security_schemes = Map::new();
    security_schemes.insert(
        "metricsToken".into(),
        json!({"type": "http", "scheme": "bearer",
            "description": "The operator's --metrics-token (never a SMART token)"}),
    );
    if smart {
        let scopes: Map<String, Value> = [
            ("openid", "OpenID Connect id_token"),
            ("fhirUser", "The signed-in user's FHIR resource"),
            ("launch", "EHR launch context"),
            ("launch/patient", "A patient chosen at sign-in"),
            ("offline_access", "A refresh token"),
            ("patient/*.rs", "Read and search the patient's compartment"),
            (
                "patient/*.cruds",
                "Read and write the patient's compartment",
            ),
            ("user/*.rs", "Read and search what the user may see"),
            ("user/*.cruds", "Read and write what the user may see"),
            ("system/*.rs", "Backend services: read and search"),
            ("system/*.cruds", "Backend services: read and write"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::from(v)))
        .collect();
        security_schemes.insert(
            "smart".into(),
            json!({"type": "oauth2",
            "description": "SMART App Launch 2.0; scopes follow the SMART v2 syntax for \
                any resource type (patient/Observation.rs …)",
            "flows": {
                "authorizationCode": {
                    "authorizationUrl": format!("{origin}/auth/authorize"),
                    "tokenUrl": format!("{origin}/auth/token"),
                    "refreshUrl": format!("{origin}/auth/token"),
                    "scopes": scopes,
                },
                "clientCredentials": {
                    "tokenUrl": format!("{origin}/auth/token"),
                    "scopes": scopes,
                }}}),
        );
    }
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Healporium FHIR R4 API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "FHIR R4 (4.0.1) REST API, generated from this server's \
                CapabilityStatement and operation table.",
        },
        "externalDocs": {"url": "http://hl7.org/fhir/R4/http.html"},
        "servers": [{"url": origin}],
        "tags": [
            {"name": "system"}, {"name": "resources"}, {"name": "operations"},
            {"name": "authorization"}, {"name": "subscriptions"}, {"name": "feeds"},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": security_schemes,
            "responses": {
                "Error": {"description": "An OperationOutcome",
                    "content": {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/Resource"}}}},
                "Bundle": {"description": "A Bundle",
                    "content": {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/Resource"}}}},
            },
            "parameters": common_parameters(),
        },
    });
    if smart && let Some(o) = doc.as_object_mut() {
        o.insert("security".into(), json!([{"smart": []}]));
    }
    doc
}

fn insert(paths: &mut Map<String, Value>, path: &str, method: &str, op: Value) {
    let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
    if let Some(o) = entry.as_object_mut() {
        o.insert(method.to_string(), op);
    }
}

fn errors(mut responses: Value, codes: &[&str]) -> Value {
    if let Some(o) = responses.as_object_mut() {
        for c in codes {
            o.insert(
                (*c).to_string(),
                json!({"$ref": "#/components/responses/Error"}),
            );
        }
    }
    responses
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {
        "application/fhir+json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn resource_ok(t: &str) -> Value {
    json!({"description": "The resource", "content": {"application/fhir+json":
        {"schema": {"$ref": format!("#/components/schemas/{t}")}}}})
}

fn bundle_ok() -> Value {
    json!({"$ref": "#/components/responses/Bundle"})
}

fn param_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

fn common_parameters() -> Value {
    let q = |name: &str, description: &str| {
        json!({"name": name, "in": "query", "required": false, "description": description,
            "schema": {"type": "string"}})
    };
    let h = |name: &str, description: &str| {
        json!({"name": name, "in": "header", "required": false, "description": description,
            "schema": {"type": "string"}})
    };
    let p = |name: &str| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}});
    json!({
        "id": p("id"),
        "vid": p("vid"),
        "_count": {"name": "_count", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}},
        "_sort": q("_sort", "Comma-separated parameters, `-` for descending"),
        "_include": q("_include", "Type:param[:target]"),
        "_revinclude": q("_revinclude", "Type:param[:target]"),
        "_summary": q("_summary", "true, text, data, count or false"),
        "_elements": q("_elements", "Comma-separated elements to return"),
        "_total": q("_total", "none, estimate or accurate"),
        "_since": q("_since", "An instant: only versions after it"),
        "_at": q("_at", "A date: versions current at that time"),
        "_format": q("_format", "json or application/fhir+json"),
        "If-Match": h("If-Match", "W/\"version\": update only that version"),
        "If-None-Exist": h("If-None-Exist", "A search: create only if nothing matches"),
        "If-None-Match": h("If-None-Match", "W/\"version\": 304 when unchanged"),
        "If-Modified-Since": h("If-Modified-Since", "An HTTP date: 304 when unchanged"),
        "Prefer": h("Prefer", "return=minimal|representation|OperationOutcome, handling=strict|lenient"),
    })
}

fn search_parameters(params: &[(String, String)]) -> Vec<Value> {
    let mut out: Vec<Value> = [
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_format",
    ]
    .iter()
    .map(|n| param_ref(n))
    .collect();
    out.extend(params.iter().map(|(name, kind)| {
        json!({"name": name, "in": "query", "required": false,
            "description": format!("FHIR {kind} search parameter"),
            "schema": {"type": "string"}})
    }));
    out
}

fn system_paths(paths: &mut Map<String, Value>, prefix: &str) {
    insert(
        paths,
        &format!("{prefix}/metadata"),
        "get",
        json!({"tags": ["system"], "summary": "The CapabilityStatement", "operationId": "capabilities",
            "security": [], "responses": {"200": resource_ok("Resource")}}),
    );
    insert(
        paths,
        prefix,
        "post",
        json!({"tags": ["system"], "summary": "A batch or transaction Bundle", "operationId": "transaction",
            "requestBody": body("Resource"),
            "responses": errors(json!({"200": bundle_ok()}), &["400", "401", "403", "409", "412", "422"])}),
    );
    insert(
        paths,
        prefix,
        "get",
        json!({"tags": ["system"], "summary": "Search all resource types", "operationId": "search-system",
            "parameters": search_parameters(&[("_type".into(), "special".into())]),
            "responses": errors(json!({"200": bundle_ok()}), &["400", "401", "403"])}),
    );
    insert(
        paths,
        &format!("{prefix}/_search"),
        "post",
        json!({"tags": ["system"], "summary": "Search all resource types (form body)",
            "operationId": "search-system-post",
            "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
            "responses": errors(json!({"200": bundle_ok()}), &["400", "401", "403"])}),
    );
    insert(
        paths,
        &format!("{prefix}/_history"),
        "get",
        json!({"tags": ["system"], "summary": "History of all resources", "operationId": "history-system",
            "parameters": [param_ref("_count"), param_ref("_since"), param_ref("_at")],
            "responses": errors(json!({"200": bundle_ok()}), &["400", "401", "403"])}),
    );
}

fn type_paths(paths: &mut Map<String, Value>, prefix: &str, t: &str, params: &[(String, String)]) {
    let tags = json!(["resources"]);
    let at = |suffix: &str| format!("{prefix}/{t}{suffix}");
    insert(
        paths,
        &at(""),
        "get",
        json!({"tags": tags, "summary": format!("Search {t}"), "operationId": format!("search-{t}"),
            "parameters": search_parameters(params),
            "responses": errors(json!({"200": bundle_ok()}), &["400", "401", "403"])}),
    );
    insert(
        paths,
        &at(""),
        "post",
        json!({"tags": tags, "summary": format!("Create a {t}"), "operationId": format!("create-{t}"),
            "parameters": [param_ref("If-None-Exist"), param_ref("Prefer")],
            "requestBody": body(t),
            "responses": errors(json!({"201": resource_ok(t), "200": resource_ok(t)}),
                &["400", "401", "403", "404", "409", "412", "422"])}),
    );
    insert(
        paths,
        &at(""),
        "put",
        json!({"tags": tags, "summary": format!("Conditional update of a {t} (search in the query)"),
            "operationId": format!("update-conditional-{t}"),
            "requestBody": body(t),
            "responses": errors(json!({"200": resource_ok(t), "201": resource_ok(t)}),
                &["400", "401", "403", "409", "412", "422"])}),
    );
    insert(
        paths,
        &at(""),
        "patch",
        json!({"tags": tags, "summary": format!("Conditional patch of a {t}"),
            "operationId": format!("patch-conditional-{t}"),
            "requestBody": patch_body(),
            "responses": errors(json!({"200": resource_ok(t)}), &["400", "401", "403", "404", "412", "422"])}),
    );
    insert(
        paths,
        &at(""),
        "delete",
        json!({"tags": tags, "summary": format!("Conditional delete of a {t}"),
            "operationId": format!("delete-conditional-{t}"),
            "responses": errors(json!({"200": {"description": "Deleted"}, "204": {"description": "Deleted"}}),
                &["400", "401", "403", "409", "412"])}),
    );
    insert(
        paths,
        &at("/_search"),
        "post",
        json!({"tags": tags, "summary": format!("Search {t} (form body)"),
            "operationId": format!("search-post-{t}"),
            "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
            "responses": errors(json!({"200": bundle_ok()}), &["400", "401", "403"])}),
    );
    insert(
        paths,
        &at("/_history"),
        "get",
        json!({"tags": tags, "summary": format!("History of every {t}"),
            "operationId": format!("history-type-{t}"),
            "parameters": [param_ref("_count"), param_ref("_since"), param_ref("_at")],
            "responses": errors(json!({"200": bundle_ok()}), &["400", "401", "403"])}),
    );
    insert(
        paths,
        &at("/{id}"),
        "get",
        json!({"tags": tags, "summary": format!("Read a {t}"), "operationId": format!("read-{t}"),
            "parameters": [param_ref("id"), param_ref("If-None-Match"), param_ref("If-Modified-Since"),
                param_ref("_summary"), param_ref("_elements"), param_ref("_format")],
            "responses": errors(json!({"200": resource_ok(t), "304": {"description": "Not modified"}}),
                &["401", "403", "404", "410"])}),
    );
    insert(
        paths,
        &at("/{id}"),
        "put",
        json!({"tags": tags, "summary": format!("Update (or create) a {t}"), "operationId": format!("update-{t}"),
            "parameters": [param_ref("id"), param_ref("If-Match"), param_ref("Prefer")],
            "requestBody": body(t),
            "responses": errors(json!({"200": resource_ok(t), "201": resource_ok(t)}),
                &["400", "401", "403", "409", "412", "422"])}),
    );
    insert(
        paths,
        &at("/{id}"),
        "patch",
        json!({"tags": tags, "summary": format!("Patch a {t}"), "operationId": format!("patch-{t}"),
            "parameters": [param_ref("id"), param_ref("If-Match"), param_ref("Prefer")],
            "requestBody": patch_body(),
            "responses": errors(json!({"200": resource_ok(t)}), &["400", "401", "403", "404", "409", "412", "422"])}),
    );
    insert(
        paths,
        &at("/{id}"),
        "delete",
        json!({"tags": tags, "summary": format!("Delete a {t}"), "operationId": format!("delete-{t}"),
            "parameters": [param_ref("id"), param_ref("If-Match")],
            "responses": errors(json!({"200": {"description": "Deleted"}, "204": {"description": "Deleted"}}),
                &["401", "403", "404", "409", "412"])}),
    );
    insert(
        paths,
        &at("/{id}/_history"),
        "get",
        json!({"tags": tags, "summary": format!("History of a {t}"),
            "operationId": format!("history-instance-{t}"),
            "parameters": [param_ref("id"), param_ref("_count"), param_ref("_since"), param_ref("_at")],
            "responses": errors(json!({"200": bundle_ok()}), &["401", "403", "404"])}),
    );
    insert(
        paths,
        &at("/{id}/_history/{vid}"),
        "get",
        json!({"tags": tags, "summary": format!("Read a version of a {t}"),
            "operationId": format!("vread-{t}"),
            "parameters": [param_ref("id"), param_ref("vid")],
            "responses": errors(json!({"200": resource_ok(t)}), &["401", "403", "404", "410"])}),
    );
}

fn patch_body() -> Value {
    json!({"required": true, "content": {
        "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "application/fhir+json": {"schema": {"$ref": "#/components/schemas/Resource"}}}})
}

fn operation_paths(
    paths: &mut Map<String, Value>,
    path: &str,
    op: &Operation,
    resource_type: Option<&str>,
    instance: bool,
) {
    let scope = match (resource_type, instance) {
        (Some(t), true) => format!("{t}-instance"),
        (Some(t), false) => t.to_string(),
        (None, _) => "system".to_string(),
    };
    let mut inputs: Vec<&str> = Vec::new();
    for p in op.parameters.iter().filter(|p| p.1 == "in") {
        if !inputs.contains(&p.0) {
            inputs.push(p.0);
        }
    }
    let mut parameters: Vec<Value> = Vec::new();
    if instance {
        parameters.push(param_ref("id"));
    }
    let post = json!({
        "tags": ["operations"],
        "summary": format!("${} (Parameters in, {})", op.name, op.canonical),
        "operationId": format!("{}-{scope}-post", op.name),
        "parameters": parameters,
        "externalDocs": {"url": op.canonical},
        "requestBody": {"content": {"application/fhir+json":
            {"schema": {"$ref": "#/components/schemas/Resource"}}}},
        "responses": errors(json!({"200": {"description": "The operation's output"}}),
            &["400", "401", "403", "404", "409", "422"]),
    });
    insert(paths, path, "post", post);
    if !op.affects_state {
        let mut query = parameters.clone();
        query.extend(inputs.iter().map(|name| {
            json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}})
        }));
        let get = json!({
            "tags": ["operations"],
            "summary": format!("${} (parameters in the query)", op.name),
            "operationId": format!("{}-{scope}-get", op.name),
            "parameters": query,
            "externalDocs": {"url": op.canonical},
            "responses": errors(json!({"200": {"description": "The operation's output"}}),
                &["400", "401", "403", "404"]),
        });
        insert(paths, path, "get", get);
    }
}

fn resource_schema(t: &str) -> Value {
    json!({"type": "object", "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "enum": [t]}},
        "additionalProperties": true,
        "externalDocs": {"url": format!("http://hl7.org/fhir/R4/{}.html", t.to_ascii_lowercase())}})
}
