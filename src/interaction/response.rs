//! What the interaction layer answers: a status, an optional body and the headers' facts
//! (Location, ETag, Last-Modified, Content-Location), shaped by `Prefer: return=…`.

use crate::fhir::outcome::{Issue, Outcome};
use crate::fhir::types::{Instant, VersionId};
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Created,
    /// An asynchronous request was accepted; `content_location` names its status URL.
    Accepted,
    NoContent,
    NotModified,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::Created => 201,
            Status::Accepted => 202,
            Status::NoContent => 204,
            Status::NotModified => 304,
        }
    }
}

/// A resource body: the stored JSON text as is, or a value built by the server.
#[derive(Debug, Clone)]
pub enum Body {
    Raw(Arc<str>),
    Json(Value),
    /// A Bulk Data file: NDJSON read from the store chunk by chunk while it is sent.
    Ndjson(super::bulk::files::ChunkSource),
}

impl Body {
    pub fn to_value(&self) -> Result<Value, Outcome> {
        match self {
            Body::Json(v) => Ok(v.clone()),
            Body::Raw(s) => serde_json::from_str(s)
                .map_err(|_| Outcome::internal("A stored resource is not valid JSON")),
            Body::Ndjson(_) => Err(Outcome::new(
                crate::fhir::outcome::ErrorKind::NotAcceptable,
                "A bulk data file is NDJSON, not a JSON resource",
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FhirResponse {
    pub status: Status,
    pub body: Option<Body>,
    /// Absolute URL of the version written (`…/Patient/1/_history/2`).
    pub location: Option<String>,
    pub version: Option<VersionId>,
    pub last_modified: Option<Instant>,
    /// Information for `Prefer: return=OperationOutcome`.
    pub issues: Vec<Issue>,
    /// `Content-Location`: the status URL of an accepted asynchronous request.
    pub content_location: Option<String>,
    /// Other response headers (lower-case names): `X-Progress`, `Retry-After`, `Expires`.
    pub headers: Vec<(&'static str, String)>,
}

impl FhirResponse {
    /// The body as a JSON value (null when there is none).
    pub fn body_value(&self) -> Result<Value, Outcome> {
        Ok(self
            .body
            .as_ref()
            .map(Body::to_value)
            .transpose()?
            .unwrap_or(Value::Null))
    }

    pub fn new(status: Status) -> FhirResponse {
        FhirResponse {
            status,
            body: None,
            location: None,
            version: None,
            last_modified: None,
            issues: Vec::new(),
            content_location: None,
            headers: Vec::new(),
        }
    }
}

/// What a client asked for with `Prefer: return=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreferReturn {
    Minimal,
    #[default]
    Representation,
    OperationOutcome,
}

/// Shapes a write's response body as the client preferred.
pub fn apply_prefer(mut response: FhirResponse, prefer: PreferReturn) -> FhirResponse {
    match prefer {
        PreferReturn::Representation => {}
        PreferReturn::Minimal => response.body = None,
        PreferReturn::OperationOutcome => {
            let issues = if response.issues.is_empty() {
                vec![Issue::information(
                    "informational",
                    "The interaction succeeded",
                )]
            } else {
                response.issues.clone()
            };
            response.body = Some(Body::Json(crate::fhir::outcome::operation_outcome(&issues)));
            if response.status == Status::NoContent {
                response.status = Status::Ok;
            }
        }
    }
    response
}
