//! What a caller asks of the interaction layer: the interaction, its preconditions and who
//! asks. REST handlers, Bundle entries and the web app all build one of these.

use super::{HistoryParams, PreferReturn, operation, search};
use crate::fhir::types::{Instant, VersionId};
use crate::store::HistoryScope;
use serde_json::Value;

/// Which resource an instance-level write addresses.
#[derive(Debug, Clone)]
pub enum Target {
    Id(String),
    /// A conditional interaction's criteria (a query string).
    Criteria(String),
}

/// The body of a PATCH.
#[derive(Debug, Clone)]
pub enum PatchBody {
    /// application/json-patch+json
    Json(Value),
    /// a FHIRPath Patch Parameters resource
    FhirPath(Value),
}

#[derive(Debug, Clone)]
pub enum Interaction {
    Capabilities,
    Read {
        resource_type: String,
        id: String,
    },
    VRead {
        resource_type: String,
        id: String,
        version: String,
    },
    Create {
        resource_type: String,
        resource: Value,
    },
    Update {
        resource_type: String,
        target: Target,
        resource: Value,
    },
    Patch {
        resource_type: String,
        target: Target,
        patch: PatchBody,
    },
    Delete {
        resource_type: String,
        target: Target,
    },
    History {
        scope: HistoryScope,
        params: HistoryParams,
    },
    /// `POST [base]` with a batch or transaction Bundle.
    Bundle {
        bundle: Value,
    },
    /// An extended operation (`$everything`, `$validate`, `$meta`…).
    Operation(operation::OperationRequest),
    /// search at type, system or compartment level (GET or POST `_search`).
    Search(search::SearchRequest),
}

/// HTTP-independent preconditions (headers in REST, entry.request fields in Bundles).
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    pub if_match: Option<VersionId>,
    /// If-None-Match on a read: the version the client holds (`*` is any version).
    pub if_none_match: Option<IfNoneMatch>,
    pub if_modified_since: Option<Instant>,
    /// If-None-Exist on a create: the criteria query string.
    pub if_none_exist: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfNoneMatch {
    Any,
    Version(VersionId),
}

#[derive(Debug, Clone)]
pub struct FhirRequest {
    /// The FHIR base URL the client used, e.g. `http://localhost:8080/fhir`.
    pub base: String,
    pub interaction: Interaction,
    pub preconditions: Preconditions,
    /// `_cascade=delete`: deleting also deletes the resources that reference the target.
    pub cascade: bool,
    /// `X-Provenance`: a Provenance to store, targeting what the request writes.
    pub provenance: Option<Value>,
    /// `Prefer: return=…` for writes and Bundle entries.
    pub prefer: PreferReturn,
    /// Who is calling (None: authorization is off).
    pub principal: Option<crate::auth::Principal>,
    /// The client's network address (for the audit trail).
    pub source: Option<String>,
}
