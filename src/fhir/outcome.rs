//! Outcome: the one error type every layer returns, rendered as a FHIR OperationOutcome.
//!
//! An [`Outcome`] carries an [`ErrorKind`] (what went wrong, which decides the HTTP status)
//! and one or more [`Issue`]s (severity, IssueType code, diagnostics, FHIRPath expression).
//! [`ErrorKind::table`] is the single table mapping kinds to status and issue code.

use serde_json::{Value, json};

/// What went wrong, independent of transport. The API edge maps it to an HTTP status through
/// [`ErrorKind::table`] and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not JSON, not a FHIR resource, or breaks FHIR JSON structure rules.
    Structure,
    /// A well-formed resource whose content is invalid (cardinality, formats, bindings).
    Invalid,
    /// A request that is wrong in itself (bad id, mismatched id, bad header or parameter).
    BadRequest,
    /// No valid access token (missing, malformed, expired, revoked, for another server).
    Unauthorized,
    /// The resource type in the URL is not a FHIR R4 resource type.
    UnknownType,
    NotFound,
    /// The resource existed and was deleted.
    Gone,
    /// The request conflicts with the current state of the resource.
    Conflict,
    /// If-Match named a version that is not the current one.
    VersionConflict,
    /// A conditional interaction matched more than one resource.
    MultipleMatches,
    /// The token's scopes or patient context do not allow the interaction.
    Forbidden,
    MethodNotAllowed,
    NotAcceptable,
    UnsupportedMediaType,
    PayloadTooLarge,
    /// The request is over one of the server's limits, or its database work ran out of time
    /// (the statement timeout): asking again as it is will not help.
    TooCostly,
    NotImplemented,
    /// The client has too much in progress (Bulk Data jobs); it may ask again later.
    TooManyRequests,
    /// The database is unreachable or overloaded; retrying may help.
    Unavailable,
    /// Concurrent transactions collided (deadlock, serialization failure); the whole
    /// transaction can be retried as it was.
    Contention,
    /// A fault of the server itself.
    Internal,
}

impl ErrorKind {
    /// The one table: (HTTP status, default OperationOutcome issue.code).
    pub fn table(self) -> (u16, &'static str) {
        match self {
            ErrorKind::Structure => (400, "structure"),
            ErrorKind::Invalid => (422, "invalid"),
            ErrorKind::BadRequest => (400, "invalid"),
            ErrorKind::Unauthorized => (401, "login"),
            ErrorKind::UnknownType => (404, "not-supported"),
            ErrorKind::NotFound => (404, "not-found"),
            ErrorKind::Gone => (410, "deleted"),
            ErrorKind::Conflict => (409, "conflict"),
            ErrorKind::VersionConflict => (412, "conflict"),
            ErrorKind::MultipleMatches => (412, "multiple-matches"),
            ErrorKind::Forbidden => (403, "forbidden"),
            ErrorKind::MethodNotAllowed => (405, "not-supported"),
            ErrorKind::NotAcceptable => (406, "not-supported"),
            ErrorKind::UnsupportedMediaType => (415, "not-supported"),
            ErrorKind::PayloadTooLarge => (413, "too-long"),
            ErrorKind::TooCostly => (400, "too-costly"),
            ErrorKind::NotImplemented => (501, "not-supported"),
            ErrorKind::TooManyRequests => (429, "throttled"),
            ErrorKind::Unavailable => (503, "transient"),
            ErrorKind::Contention => (503, "transient"),
            ErrorKind::Internal => (500, "exception"),
        }
    }

    pub fn status(self) -> u16 {
        self.table().0
    }

    /// Faults of the server (5xx) as opposed to mistakes of the client (4xx).
    pub fn is_fault(self) -> bool {
        self.status() >= 500
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One OperationOutcome.issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    /// An IssueType code (http://hl7.org/fhir/issue-type).
    pub code: &'static str,
    pub diagnostics: String,
    /// FHIRPath expressions of the elements concerned.
    pub expression: Vec<String>,
}

impl Issue {
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: Vec::new(),
        }
    }

    pub fn warning(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Warning,
            ..Issue::error(code, diagnostics)
        }
    }

    pub fn information(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Information,
            ..Issue::error(code, diagnostics)
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression.push(expression.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "severity": self.severity.as_str(),
            "code": self.code,
            "diagnostics": self.diagnostics,
        });
        if !self.expression.is_empty()
            && let Some(obj) = v.as_object_mut()
        {
            obj.insert("expression".into(), json!(self.expression));
        }
        v
    }
}

/// An error with its kind and the issues that explain it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: ErrorKind,
    pub issues: Vec<Issue>,
}

impl Outcome {
    /// An outcome with one error issue whose code is the kind's default code.
    pub fn new(kind: ErrorKind, diagnostics: impl Into<String>) -> Self {
        Outcome {
            kind,
            issues: vec![Issue::error(kind.table().1, diagnostics)],
        }
    }

    pub fn with_issues(kind: ErrorKind, issues: Vec<Issue>) -> Self {
        Outcome { kind, issues }
    }

    /// Adds a FHIRPath expression to the first issue.
    pub fn at(mut self, expression: impl Into<String>) -> Self {
        if let Some(first) = self.issues.first_mut() {
            first.expression.push(expression.into());
        }
        self
    }

    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Outcome::new(ErrorKind::BadRequest, diagnostics)
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Outcome::new(ErrorKind::NotFound, diagnostics)
    }

    pub fn internal(diagnostics: impl Into<String>) -> Self {
        Outcome::new(ErrorKind::Internal, diagnostics)
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The OperationOutcome resource.
    pub fn to_resource(&self) -> Value {
        operation_outcome(&self.issues)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = self.issues.first().map(|i| i.diagnostics.as_str());
        write!(f, "{:?}: {}", self.kind, first.unwrap_or(""))
    }
}

impl std::error::Error for Outcome {}

/// An OperationOutcome resource listing `issues` (an informational one if empty).
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = if issues.is_empty() {
        vec![Issue::information("informational", "All OK").to_json()]
    } else {
        issues.iter().map(Issue::to_json).collect()
    };
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_a_client_or_server_error() {
        let kinds = [
            ErrorKind::Structure,
            ErrorKind::Invalid,
            ErrorKind::BadRequest,
            ErrorKind::UnknownType,
            ErrorKind::NotFound,
            ErrorKind::Gone,
            ErrorKind::Conflict,
            ErrorKind::VersionConflict,
            ErrorKind::MultipleMatches,
            ErrorKind::MethodNotAllowed,
            ErrorKind::NotAcceptable,
            ErrorKind::UnsupportedMediaType,
            ErrorKind::PayloadTooLarge,
            ErrorKind::TooCostly,
            ErrorKind::NotImplemented,
            ErrorKind::Unavailable,
            ErrorKind::Contention,
            ErrorKind::Internal,
        ];
        for k in kinds {
            let (status, code) = k.table();
            assert!((400..600).contains(&status), "{k:?}");
            assert!(!code.is_empty());
            assert_eq!(k.is_fault(), status >= 500);
        }
    }

    #[test]
    fn outcome_renders_expression() {
        let o = Outcome::bad_request("bad").at("Patient.id");
        let r = o.to_resource();
        assert_eq!(r["issue"][0]["expression"][0], "Patient.id");
        assert_eq!(r["issue"][0]["code"], "invalid");
        assert_eq!(r["issue"][0]["severity"], "error");
    }
}
