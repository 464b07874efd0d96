//! Extended operations, one file each: `$everything`, `$validate`, `$meta`, `$meta-add`,
//! `$meta-delete`, `$reindex`, the Argonaut scheduling operations (`$find`, `$hold`,
//! `$book`), and Healporium's `$break-glass` and credit operations. They run on the same store and
//! validator as the interactions.

mod appointment_book;
mod appointment_find;
mod appointment_hold;
mod break_glass;
mod claim_change;
mod claim_defer;
mod claim_submit;
mod command;
mod credit_apply;
mod credit_day;
mod credit_draw;
mod credit_payment;
mod credit_payoff;
mod credit_quote;
mod credit_reverse;
mod credit_statement;
mod everything;
mod lookup;
mod meta;
mod params;
pub mod reindex;

pub use claim_change::{Change, KIND as CLAIM_ADJUDICATED_JOB, on_adjudicated};
pub use credit_day::{DayReport, run_day};
mod validate;

use super::{Context, FhirResponse};
use crate::fhir::outcome::{ErrorKind, Outcome};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

/// Where an operation may be invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `[base]/$op`
    System,
    /// `[base]/[type]/$op`
    Type,
    /// `[base]/[type]/[id]/$op`
    Instance,
}

type Handler =
    for<'a> fn(
        &'a Context,
        &'a str,
        &'a OperationRequest,
    ) -> Pin<Box<dyn Future<Output = Result<FhirResponse, Outcome>> + Send + 'a>>;

/// One parameter of an OperationDefinition: name, use, min, max, type.
pub type Param = (&'static str, &'static str, u32, &'static str, &'static str);

/// An operation of this server: dispatch, the CapabilityStatement and
/// `GET [base]/OperationDefinition/[id]` are all generated from [`OPERATIONS`].
pub struct Operation {
    /// Without the `$`.
    pub name: &'static str,
    pub levels: &'static [Level],
    /// The resource types it applies to at type and instance level (None: every type).
    pub types: Option<&'static [&'static str]>,
    pub affects_state: bool,
    /// The OperationDefinition's id on this server and its canonical URL.
    pub id: &'static str,
    pub canonical: &'static str,
    pub parameters: &'static [Param],
    pub handler: Handler,
}

impl Operation {
    /// Whether the operation may be invoked at `level` on `resource_type`.
    pub fn applies(&self, level: Level, resource_type: Option<&str>) -> bool {
        self.levels.contains(&level)
            && match (resource_type, self.types) {
                (Some(t), Some(types)) => types.contains(&t),
                _ => true,
            }
    }

    /// The OperationDefinition resource describing it.
    pub fn definition(&self) -> Value {
        let parameters: Vec<Value> = self
            .parameters
            .iter()
            .map(|(name, use_, min, max, ty)| {
                let mut p = serde_json::json!({"name": name, "use": use_, "min": min, "max": max});
                if !ty.is_empty()
                    && let Some(obj) = p.as_object_mut()
                {
                    obj.insert("type".into(), Value::from(*ty));
                }
                p
            })
            .collect();
        serde_json::json!({
            "resourceType": "OperationDefinition",
            "id": self.id,
            "url": self.canonical,
            "name": self.name.replace('-', "_"),
            "status": "active",
            "kind": "operation",
            "code": self.name,
            "affectsState": self.affects_state,
            "resource": self.types.map_or_else(|| vec!["Resource"], <[&str]>::to_vec),
            "system": self.levels.contains(&Level::System),
            "type": self.levels.contains(&Level::Type),
            "instance": self.levels.contains(&Level::Instance),
            "parameter": parameters,
        })
    }
}

/// An operation call as the Bulk Data module takes it.
fn bulk_call(op: &OperationRequest) -> crate::interaction::bulk::Call {
    use crate::interaction::bulk::Method;
    crate::interaction::bulk::Call {
        method: match op.method {
            OperationMethod::Get => Method::Get,
            OperationMethod::Post => Method::Post,
            OperationMethod::Delete => Method::Delete,
        },
        resource_type: op.resource_type.clone(),
        id: op.id.clone(),
        query: op.query.clone(),
        body: op.body.clone(),
        prefer: op.prefer.clone(),
        accept: op.accept.clone(),
    }
}

/// The parameters of `$export` at system level.
const EXPORT_PARAMS: &[Param] = &[
    ("_outputFormat", "in", 0, "1", "string"),
    ("_since", "in", 0, "1", "instant"),
    ("_type", "in", 0, "*", "string"),
    ("_elements", "in", 0, "*", "string"),
    ("includeAssociatedData", "in", 0, "*", "code"),
    ("_typeFilter", "in", 0, "*", "string"),
];

/// The parameters of `$export` on Patient and on a Group.
const EXPORT_PATIENT_PARAMS: &[Param] = &[
    ("_outputFormat", "in", 0, "1", "string"),
    ("_since", "in", 0, "1", "instant"),
    ("_type", "in", 0, "*", "string"),
    ("_elements", "in", 0, "*", "string"),
    ("patient", "in", 0, "*", "Reference"),
    ("includeAssociatedData", "in", 0, "*", "code"),
    ("_typeFilter", "in", 0, "*", "string"),
];

/// Every operation of this server.
pub static OPERATIONS: &[Operation] = &[
    Operation {
        name: "export",
        levels: &[Level::System],
        types: None,
        affects_state: false,
        id: "export",
        canonical: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
        parameters: EXPORT_PARAMS,
        handler: |ctx, base, op| {
            Box::pin(async move {
                crate::interaction::bulk::export::kick_off(ctx, base, &bulk_call(op)).await
            })
        },
    },
    Operation {
        name: "export",
        levels: &[Level::Type],
        types: Some(&["Patient"]),
        affects_state: false,
        id: "patient-export",
        canonical: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
        parameters: EXPORT_PATIENT_PARAMS,
        handler: |ctx, base, op| {
            Box::pin(async move {
                crate::interaction::bulk::export::kick_off(ctx, base, &bulk_call(op)).await
            })
        },
    },
    Operation {
        name: "export",
        levels: &[Level::Instance],
        types: Some(&["Group"]),
        affects_state: false,
        id: "group-export",
        canonical: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
        parameters: EXPORT_PATIENT_PARAMS,
        handler: |ctx, base, op| {
            Box::pin(async move {
                crate::interaction::bulk::export::kick_off(ctx, base, &bulk_call(op)).await
            })
        },
    },
    Operation {
        name: "import",
        levels: &[Level::System],
        types: None,
        affects_state: true,
        id: "import",
        canonical: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/import",
        parameters: &[
            ("inputFormat", "in", 0, "1", "code"),
            ("inputSource", "in", 0, "1", "uri"),
            ("input", "in", 1, "*", ""),
        ],
        handler: |ctx, base, op| {
            Box::pin(async move {
                crate::interaction::bulk::import::kick_off(ctx, base, &bulk_call(op)).await
            })
        },
    },
    Operation {
        name: "bulk-status",
        levels: &[Level::System],
        types: None,
        affects_state: false,
        id: "bulk-status",
        canonical: "https://healporium.example/fhir/OperationDefinition/bulk-status",
        parameters: &[("_jobId", "in", 1, "1", "string")],
        handler: |ctx, base, op| {
            Box::pin(
                async move { crate::interaction::bulk::status(ctx, base, &bulk_call(op)).await },
            )
        },
    },
    Operation {
        name: "bulk-file",
        levels: &[Level::System],
        types: None,
        affects_state: false,
        id: "bulk-file",
        canonical: "https://healporium.example/fhir/OperationDefinition/bulk-file",
        parameters: &[
            ("_jobId", "in", 1, "1", "string"),
            ("file", "in", 1, "1", "integer"),
        ],
        handler: |ctx, base, op| {
            Box::pin(async move { crate::interaction::bulk::file(ctx, base, &bulk_call(op)).await })
        },
    },
    Operation {
        name: "validate",
        levels: &[Level::Type, Level::Instance],
        types: None,
        affects_state: false,
        id: "Resource-validate",
        canonical: "http://hl7.org/fhir/OperationDefinition/Resource-validate",
        parameters: &[
            ("resource", "in", 0, "1", "Resource"),
            ("mode", "in", 0, "1", "code"),
            ("profile", "in", 0, "1", "uri"),
            ("return", "out", 1, "1", "OperationOutcome"),
        ],
        handler: |ctx, _, op| Box::pin(validate::validate(ctx, op)),
    },
    Operation {
        name: "lookup",
        levels: &[Level::Type],
        types: Some(&["CodeSystem", "ValueSet"]),
        affects_state: false,
        id: "CodeSystem-lookup",
        canonical: "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup",
        parameters: &[
            ("code", "in", 0, "1", "code"),
            ("system", "in", 0, "1", "uri"),
            ("version", "in", 0, "1", "string"),
            ("coding", "in", 0, "1", "Coding"),
            ("name", "out", 1, "1", "string"),
            ("version", "out", 0, "1", "string"),
            ("display", "out", 1, "1", "string"),
            ("designation", "out", 0, "*", ""),
            ("property", "out", 0, "*", ""),
        ],
        handler: |ctx, _, op| Box::pin(lookup::lookup(ctx, op)),
    },
    Operation {
        name: "meta",
        levels: &[Level::System, Level::Type, Level::Instance],
        types: None,
        affects_state: false,
        id: "Resource-meta",
        canonical: "http://hl7.org/fhir/OperationDefinition/Resource-meta",
        parameters: &[("return", "out", 1, "1", "Meta")],
        handler: |ctx, _, op| Box::pin(meta::meta(ctx, op)),
    },
    Operation {
        name: "meta-add",
        levels: &[Level::Instance],
        types: None,
        affects_state: true,
        id: "Resource-meta-add",
        canonical: "http://hl7.org/fhir/OperationDefinition/Resource-meta-add",
        parameters: &[
            ("meta", "in", 1, "1", "Meta"),
            ("return", "out", 1, "1", "Meta"),
        ],
        handler: |ctx, base, op| Box::pin(meta::change(ctx, base, op)),
    },
    Operation {
        name: "meta-delete",
        levels: &[Level::Instance],
        types: None,
        affects_state: true,
        id: "Resource-meta-delete",
        canonical: "http://hl7.org/fhir/OperationDefinition/Resource-meta-delete",
        parameters: &[
            ("meta", "in", 1, "1", "Meta"),
            ("return", "out", 1, "1", "Meta"),
        ],
        handler: |ctx, base, op| Box::pin(meta::change(ctx, base, op)),
    },
    Operation {
        name: "everything",
        levels: &[Level::Type, Level::Instance],
        types: Some(&["Patient"]),
        affects_state: false,
        id: "Patient-everything",
        canonical: "http://hl7.org/fhir/OperationDefinition/Patient-everything",
        parameters: &[
            ("start", "in", 0, "1", "date"),
            ("end", "in", 0, "1", "date"),
            ("_since", "in", 0, "1", "instant"),
            ("_type", "in", 0, "*", "code"),
            ("_count", "in", 0, "1", "integer"),
            ("return", "out", 1, "1", "Bundle"),
        ],
        handler: |ctx, base, op| Box::pin(everything::everything(ctx, base, op)),
    },
    Operation {
        name: "break-glass",
        levels: &[Level::Instance],
        types: Some(&["Patient"]),
        affects_state: true,
        id: "break-glass",
        canonical: "http://healporium.org/fhir/OperationDefinition/break-glass",
        parameters: &[
            ("reason", "in", 1, "1", "string"),
            ("return", "out", 1, "1", "Parameters"),
        ],
        handler: |ctx, base, op| Box::pin(break_glass::break_glass(ctx, base, op)),
    },
    Operation {
        name: "reindex",
        levels: &[Level::System],
        types: None,
        affects_state: true,
        id: "reindex",
        canonical: "http://healporium.org/fhir/OperationDefinition/reindex",
        parameters: &[
            ("all", "in", 0, "1", "boolean"),
            ("return", "out", 1, "1", "Parameters"),
        ],
        handler: |ctx, base, op| Box::pin(reindex_op(ctx, base, op)),
    },
    Operation {
        name: "credit-quote",
        levels: &[Level::Type, Level::Instance],
        types: Some(&["Account"]),
        affects_state: false,
        id: "credit-quote",
        canonical: "https://healporium.example/fhir/OperationDefinition/credit-quote",
        parameters: &[
            ("amount", "in", 1, "1", "Money"),
            ("termMonths", "in", 1, "1", "integer"),
            ("apr", "in", 0, "1", "decimal"),
            ("plan", "in", 0, "1", "code"),
            ("installment", "out", 1, "1", "Money"),
            ("finalInstallment", "out", 1, "1", "Money"),
            ("totalInterest", "out", 1, "1", "Money"),
            ("totalPayable", "out", 1, "1", "Money"),
            ("apr", "out", 1, "1", "decimal"),
            ("termMonths", "out", 1, "1", "integer"),
            ("plan", "out", 0, "1", "code"),
            ("schedule", "out", 1, "*", ""),
        ],
        handler: |ctx, base, op| Box::pin(credit_quote::quote(ctx, base, op)),
    },
    Operation {
        name: "credit-apply",
        levels: &[Level::Type],
        types: Some(&["Account"]),
        affects_state: true,
        id: "credit-apply",
        canonical: "https://healporium.example/fhir/OperationDefinition/credit-apply",
        parameters: &[
            ("patient", "in", 1, "1", "Reference"),
            ("product", "in", 1, "1", "code"),
            ("requestedLimit", "in", 1, "1", "Money"),
            ("requestId", "in", 1, "1", "string"),
            ("decision", "out", 1, "1", "code"),
            ("reason", "out", 1, "1", "string"),
            ("account", "out", 0, "1", "Account"),
            ("contract", "out", 0, "1", "Contract"),
        ],
        handler: |ctx, base, op| Box::pin(credit_apply::apply(ctx, base, op)),
    },
    Operation {
        name: "credit-draw",
        levels: &[Level::Instance],
        types: Some(&["Account"]),
        affects_state: true,
        id: "credit-draw",
        canonical: "https://healporium.example/fhir/OperationDefinition/credit-draw",
        parameters: &[
            ("source", "in", 1, "1", "Reference"),
            ("amount", "in", 0, "1", "Money"),
            ("plan", "in", 0, "1", "code"),
            ("termMonths", "in", 1, "1", "integer"),
            ("requestId", "in", 1, "1", "string"),
            ("account", "out", 1, "1", "Account"),
            ("contract", "out", 1, "1", "Contract"),
        ],
        handler: |ctx, base, op| Box::pin(credit_draw::draw(ctx, base, op)),
    },
    Operation {
        name: "credit-payment",
        levels: &[Level::Instance],
        types: Some(&["Account"]),
        affects_state: true,
        id: "credit-payment",
        canonical: "https://healporium.example/fhir/OperationDefinition/credit-payment",
        parameters: &[
            ("amount", "in", 1, "1", "Money"),
            ("requestId", "in", 1, "1", "string"),
            ("processorTransactionId", "in", 0, "1", "string"),
            ("paidOn", "in", 0, "1", "date"),
            (
                "paymentReconciliation",
                "out",
                1,
                "1",
                "PaymentReconciliation",
            ),
            ("balance", "out", 1, "1", "Money"),
            ("creditBalance", "out", 1, "1", "Money"),
        ],
        handler: |ctx, base, op| Box::pin(credit_payment::payment(ctx, base, op)),
    },
    Operation {
        name: "submit",
        levels: &[Level::Type],
        types: Some(&["Claim"]),
        affects_state: true,
        id: "Claim-submit",
        canonical: "http://hl7.org/fhir/OperationDefinition/Claim-submit",
        parameters: &[
            ("resource", "in", 1, "1", "Resource"),
            ("return", "out", 1, "1", "Resource"),
        ],
        handler: |ctx, base, op| Box::pin(claim_submit::submit(ctx, base, op)),
    },
    Operation {
        name: "defer",
        levels: &[Level::Instance],
        types: Some(&["Claim"]),
        affects_state: true,
        id: "defer",
        canonical: "https://healporium.example/fhir/OperationDefinition/defer",
        parameters: &[
            ("creditLine", "in", 1, "1", "Reference"),
            ("plan", "in", 0, "1", "code"),
            ("termMonths", "in", 1, "1", "integer"),
            ("requestId", "in", 1, "1", "string"),
            ("account", "out", 1, "1", "Account"),
            ("contract", "out", 1, "1", "Contract"),
        ],
        handler: |ctx, base, op| Box::pin(claim_defer::defer(ctx, base, op)),
    },
    Operation {
        name: "credit-reverse",
        levels: &[Level::Instance],
        types: Some(&["Account"]),
        affects_state: true,
        id: "credit-reverse",
        canonical: "https://healporium.example/fhir/OperationDefinition/credit-reverse",
        parameters: &[
            ("payment", "in", 1, "1", "Reference"),
            ("reason", "in", 1, "1", "code"),
            ("requestId", "in", 1, "1", "string"),
            (
                "paymentReconciliation",
                "out",
                1,
                "1",
                "PaymentReconciliation",
            ),
            ("balance", "out", 1, "1", "Money"),
            ("creditBalance", "out", 1, "1", "Money"),
        ],
        handler: |ctx, base, op| Box::pin(credit_reverse::reverse(ctx, base, op)),
    },
    Operation {
        name: "payoff",
        levels: &[Level::Instance],
        types: Some(&["Account"]),
        affects_state: false,
        id: "payoff",
        canonical: "https://healporium.example/fhir/OperationDefinition/payoff",
        parameters: &[
            ("date", "in", 0, "1", "date"),
            ("amount", "out", 1, "1", "Money"),
            ("principal", "out", 1, "1", "Money"),
            ("interest", "out", 1, "1", "Money"),
            ("creditBalance", "out", 1, "1", "Money"),
        ],
        handler: |ctx, base, op| Box::pin(credit_payoff::payoff(ctx, base, op)),
    },
    Operation {
        name: "find",
        levels: &[Level::Type],
        types: Some(&["Appointment"]),
        affects_state: false,
        id: "appointment-find",
        canonical: "http://fhir.org/guides/argonaut/scheduling/OperationDefinition/appointment-find",
        parameters: &[
            ("start", "in", 1, "1", "dateTime"),
            ("end", "in", 1, "1", "dateTime"),
            ("practitioner", "in", 0, "1", "Reference"),
            ("location", "in", 0, "1", "Reference"),
            ("specialty", "in", 0, "1", "Coding"),
            ("service-type", "in", 0, "1", "Coding"),
            ("visit-type", "in", 0, "1", "Coding"),
            ("patient", "in", 0, "1", "Reference"),
            ("_count", "in", 0, "1", "integer"),
            ("return", "out", 1, "1", "Bundle"),
        ],
        handler: |ctx, base, op| Box::pin(appointment_find::find(ctx, base, op)),
    },
    Operation {
        name: "hold",
        levels: &[Level::Type],
        types: Some(&["Appointment"]),
        affects_state: true,
        id: "appointment-hold",
        canonical: "http://fhir.org/guides/argonaut/scheduling/OperationDefinition/appointment-hold",
        parameters: &[
            ("appt-resource", "in", 1, "1", "Appointment"),
            ("return", "out", 1, "1", "Appointment"),
        ],
        handler: |ctx, base, op| Box::pin(appointment_hold::hold(ctx, base, op)),
    },
    Operation {
        name: "book",
        levels: &[Level::Type],
        types: Some(&["Appointment"]),
        affects_state: true,
        id: "appointment-book",
        canonical: "http://fhir.org/guides/argonaut/scheduling/OperationDefinition/appointment-book",
        parameters: &[
            ("appt-resource", "in", 1, "1", "Appointment"),
            ("return", "out", 1, "1", "Appointment"),
        ],
        handler: |ctx, base, op| Box::pin(appointment_book::book(ctx, base, op)),
    },
    Operation {
        name: "statement",
        levels: &[Level::Instance],
        types: Some(&["Account"]),
        affects_state: true,
        id: "statement",
        canonical: "https://healporium.example/fhir/OperationDefinition/statement",
        parameters: &[
            ("date", "in", 0, "1", "date"),
            ("invoice", "out", 1, "1", "Invoice"),
        ],
        handler: |ctx, base, op| Box::pin(credit_statement::statement(ctx, base, op)),
    },
];

/// `$reindex`: GET reports the index state, POST rebuilds; server administration needs a
/// `system/*.` scope.
async fn reindex_op(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    ctx.guard.require_system(crate::auth::Perm::Update)?;
    match op.method {
        OperationMethod::Get | OperationMethod::Delete => reindex::status(ctx).await,
        OperationMethod::Post => {
            let all = op
                .param("all")
                .is_some_and(|v| v == Value::Bool(true) || v == "true");
            reindex::run(ctx, base, all).await
        }
    }
}

/// The operations advertised at `level` for `resource_type`: (name, canonical).
pub fn advertised(level: Level, resource_type: Option<&str>) -> Vec<(&'static str, &'static str)> {
    OPERATIONS
        .iter()
        .filter(|o| o.applies(level, resource_type))
        .map(|o| (o.name, o.canonical))
        .collect()
}

/// The OperationDefinition of one of this server's operations, by id.
pub fn definition(id: &str) -> Option<Value> {
    OPERATIONS
        .iter()
        .find(|o| o.id == id)
        .map(Operation::definition)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationMethod {
    Get,
    Post,
    /// `DELETE [base]/$bulk-status?…` (cancelling an asynchronous request).
    Delete,
}

/// An operation call: `[base]/$op`, `[base]/Type/$op`, `[base]/Type/id/$op` or
/// `[base]/Type/id/_history/vid/$op`.
#[derive(Debug, Clone)]
pub struct OperationRequest {
    /// Without the `$`.
    pub name: String,
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    pub method: OperationMethod,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// A POST body (a Parameters resource, or for `$validate` the resource itself).
    pub body: Option<Value>,
    /// The `Prefer` header (asynchronous requests: `respond-async`, `handling=lenient`).
    pub prefer: Option<String>,
    /// The `Accept` header as sent.
    pub accept: Option<String>,
}

impl OperationRequest {
    /// A parameter from the query or a Parameters body: the first `valueX` or `resource`.
    pub fn param(&self, name: &str) -> Option<Value> {
        if let Some((_, v)) = self.query.iter().find(|(k, _)| k == name) {
            return Some(Value::String(v.clone()));
        }
        let body = self.body.as_ref()?;
        if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return None;
        }
        body.get("parameter")?
            .as_array()?
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|p| {
                p.as_object()?
                    .iter()
                    .find(|(k, _)| k.starts_with("value") || *k == "resource")
                    .map(|(_, v)| v.clone())
            })
    }
}

pub(super) async fn run(
    ctx: &Context,
    base: &str,
    op: OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let level = match (&op.resource_type, &op.id) {
        (None, _) => Level::System,
        (Some(_), None) => Level::Type,
        (Some(_), Some(_)) => Level::Instance,
    };
    if op.method == OperationMethod::Delete && op.name != "bulk-status" {
        return Err(Outcome::new(
            ErrorKind::MethodNotAllowed,
            "Only an asynchronous request's status URL accepts DELETE",
        ));
    }
    match OPERATIONS
        .iter()
        .find(|o| o.name == op.name && o.applies(level, op.resource_type.as_deref()))
    {
        Some(o) => (o.handler)(ctx, base, &op).await,
        // an operation this server does not define at this level is the client's mistake
        // (HAPI answers 400 as well), not a fault of the server
        None => Err(Outcome::with_issues(
            ErrorKind::BadRequest,
            vec![crate::fhir::outcome::Issue::error(
                "not-supported",
                format!(
                    "${} is not an operation of this server at this level",
                    op.name.chars().take(40).collect::<String>()
                ),
            )],
        )),
    }
}
