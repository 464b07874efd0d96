//! L3: FHIR REST semantics with no HTTP types. A [`FhirRequest`] goes in, a [`FhirResponse`]
//! (or an [`Outcome`]) comes out, so REST calls, Bundle entries, imports and the web app all
//! run exactly the same code.
//!
//! One file per interaction, named like the spec. Conditional logic lives in `conditional`
//! and runs inside the same database transaction as the write it guards.

pub mod audit;
mod bundle;
pub mod capabilities;
mod conditional;
mod create;
mod delete;
pub mod guard;
mod history;
pub mod operation;
mod patch;
mod provenance;
mod reach;
mod read;
pub mod registry;
pub mod seal;
pub mod search;
pub mod session;
mod update;
mod vread;
pub(crate) mod write;

use crate::auth::Perm;
use crate::fhir::definitions::Definitions;
use crate::fhir::outcome::{ErrorKind, Issue, Outcome};
use crate::fhir::types::{Instant, VersionId};
use crate::fhir::validation::Validator;
use crate::store::{HistoryScope, Store};
use serde_json::Value;
use std::sync::Arc;

pub use history::HistoryParams;

/// How long a break-glass grant lasts by default (`--break-glass-ttl`): 30 minutes.
pub const BREAK_GLASS_TTL_MS: i64 = 30 * 60 * 1000;

/// What the interactions need: the store and the definitions.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<dyn Store>,
    pub defs: &'static Definitions,
    pub validator: &'static Validator,
    /// Enforce referential integrity on writes and deletes.
    pub integrity: bool,
    /// How long search paging cursors keep working (ms).
    pub page_ttl_ms: i64,
    /// How long a break-glass grant lasts (ms).
    pub break_glass_ttl_ms: i64,
    /// Search parameters: R4's and the stored custom ones.
    pub registry: Arc<registry::Registry>,
    /// What the current request may access (open when authorization is off).
    pub guard: guard::Guard,
    /// Record an AuditEvent for every interaction.
    pub audit: bool,
    /// Who the current request comes from, for its AuditEvent.
    pub requester: audit::Requester,
    /// Whether SMART tokens are required (the CapabilityStatement's security block).
    pub security: crate::auth::discovery::Security,
    /// The path prefix of the FHIR API (`/fhir`), to derive the authorization endpoints.
    pub prefix: String,
    /// What one request may ask of the server.
    pub limits: crate::fhir::limits::Limits,
    /// The audit chain's key and signed head (none: unkeyed SHA-256 links).
    pub seal: Option<Arc<seal::Seal>>,
}

impl Context {
    pub fn new(store: Arc<dyn Store>) -> Context {
        Context {
            store,
            defs: Definitions::r4(),
            validator: Validator::r4(),
            integrity: true,
            page_ttl_ms: search::CURSOR_TTL_MS,
            break_glass_ttl_ms: BREAK_GLASS_TTL_MS,
            registry: Arc::new(registry::Registry::new()),
            guard: guard::Guard::open(),
            audit: false,
            requester: audit::Requester::default(),
            security: crate::auth::discovery::Security::Off,
            prefix: "/fhir".to_string(),
            limits: crate::fhir::limits::Limits::default(),
            seal: None,
        }
    }
}

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
}

impl Body {
    pub fn to_value(&self) -> Result<Value, Outcome> {
        match self {
            Body::Json(v) => Ok(v.clone()),
            Body::Raw(s) => serde_json::from_str(s)
                .map_err(|_| Outcome::internal("A stored resource is not valid JSON")),
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
}

impl FhirResponse {
    pub fn new(status: Status) -> FhirResponse {
        FhirResponse {
            status,
            body: None,
            location: None,
            version: None,
            last_modified: None,
            issues: Vec::new(),
            content_location: None,
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

/// Runs one interaction, and records its AuditEvent when auditing is on (writes inside their
/// own transaction, everything else before the response is returned).
pub async fn handle(ctx: &Context, req: FhirRequest) -> Result<FhirResponse, Outcome> {
    let FhirRequest {
        base,
        interaction,
        preconditions,
        cascade,
        provenance,
        prefer,
        principal,
        source,
    } = req;
    // every path below consults this request's guard
    let guard = guard::Guard::load(ctx.store.as_ref(), principal.clone(), &base).await?;
    let ctx = &Context {
        guard,
        requester: audit::Requester {
            principal,
            address: source,
        },
        ..ctx.clone()
    };
    let mut record = audit_record(&interaction);
    let writes = record.as_ref().is_some_and(|r| r.1);
    let result = run(
        ctx,
        &base,
        interaction,
        preconditions,
        cascade,
        provenance,
        prefer,
    )
    .await;
    if ctx.audit
        && let Some((mut r, _)) = record.take()
        && !(writes && result.is_ok())
    {
        r.status = match &result {
            Ok(resp) => resp.status.code(),
            Err(o) => o.status(),
        };
        let mut items: Vec<(String, Vec<String>)> = Vec::new();
        if let Ok(resp) = &result
            && let Some(body) = &resp.body
            && r.status < 300
        {
            let value = match body {
                Body::Json(v) => Some(v.clone()),
                Body::Raw(text) => serde_json::from_str::<Value>(text).ok(),
            };
            if let Some(v) = value {
                let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
                for (key, resource) in audit::resources_of(&v) {
                    let patients = guard::resource_patients(&registry, &base, resource);
                    items.push((key, patients));
                }
            }
        }
        let events: Vec<Value> = audit::split(r, &items, requester_patient(ctx))
            .iter()
            .map(|part| audit::event(&ctx.requester, part))
            .collect();
        audit::append_all(ctx, events).await?;
    }
    result
}

/// The Patient the requester is (a patient user), whose own requests need no split audit.
fn requester_patient(ctx: &Context) -> Option<&str> {
    ctx.requester
        .principal
        .as_ref()
        .and_then(|p| p.fhir_user.as_deref())
        .and_then(|f| f.strip_prefix("Patient/"))
}

/// The AuditEvent skeleton of an interaction, and whether it writes (audited in its own
/// transaction by the write path). None: not audited (the CapabilityStatement).
fn audit_record(interaction: &Interaction) -> Option<(audit::Record, bool)> {
    let (subtype, action, writes, description, query) = match interaction {
        Interaction::Capabilities => return None,
        Interaction::Read { resource_type, id } => (
            "read",
            "R",
            false,
            Some(format!("{resource_type}/{id}")),
            None,
        ),
        Interaction::VRead {
            resource_type, id, ..
        } => (
            "vread",
            "R",
            false,
            Some(format!("{resource_type}/{id}")),
            None,
        ),
        Interaction::Create { resource_type, .. } => {
            ("create", "C", true, Some(resource_type.clone()), None)
        }
        Interaction::Update { resource_type, .. } => {
            ("update", "U", true, Some(resource_type.clone()), None)
        }
        Interaction::Patch { resource_type, .. } => {
            ("patch", "U", true, Some(resource_type.clone()), None)
        }
        Interaction::Delete { resource_type, .. } => {
            ("delete", "D", true, Some(resource_type.clone()), None)
        }
        Interaction::History { scope, .. } => match scope {
            crate::store::HistoryScope::System => ("history-system", "R", false, None, None),
            crate::store::HistoryScope::Type(t) => {
                ("history-type", "R", false, Some(t.clone()), None)
            }
            crate::store::HistoryScope::Instance(t, id) => (
                "history-instance",
                "R",
                false,
                Some(format!("{t}/{id}")),
                None,
            ),
        },
        Interaction::Bundle { bundle } => {
            let batch = bundle.get("type").and_then(Value::as_str) == Some("batch");
            (
                if batch { "batch" } else { "transaction" },
                "E",
                true,
                None,
                None,
            )
        }
        Interaction::Operation(op) => (
            "operation",
            "E",
            false,
            Some(format!("${}", op.name.chars().take(40).collect::<String>())),
            None,
        ),
        Interaction::Search(req) => {
            let (subtype, what) = match &req.scope {
                search::SearchScope::System => ("search-system", String::new()),
                search::SearchScope::Type(t) => ("search-type", t.clone()),
                search::SearchScope::Compartment {
                    owner_type,
                    owner_id,
                    target,
                } => ("search-type", format!("{owner_type}/{owner_id}/{target}")),
            };
            let qs = serde_urlencoded::to_string(&req.pairs).unwrap_or_default();
            (
                subtype,
                "E",
                false,
                Some(what.clone()),
                Some(format!("{what}?{qs}")),
            )
        }
    };
    Some((
        audit::Record {
            subtype: subtype.to_string(),
            action,
            status: 0,
            entities: Vec::new(),
            query,
            patients: Vec::new(),
            description,
        },
        writes,
    ))
}

/// Records the AuditEvent of a successful write inside its session (same transaction).
pub(crate) async fn audit_in_session(
    ctx: &Context,
    s: &mut session::Session,
    subtype: &str,
    action: &'static str,
    status: u16,
) -> Result<(), Outcome> {
    if !ctx.audit {
        return Ok(());
    }
    let items: Vec<(String, Vec<String>)> = s
        .versions
        .iter()
        .zip(s.patients.iter())
        .map(|((t, id, v), ps)| (format!("{t}/{id}/_history/{v}"), ps.clone()))
        .collect();
    let record = audit::Record {
        subtype: subtype.to_string(),
        action,
        status,
        ..audit::Record::default()
    };
    // one record per patient whose data the write touched (and one for the rest)
    let registry = s.registry.clone();
    for part in audit::split(record, &items, requester_patient(ctx)) {
        let ev = audit::event(&ctx.requester, &part);
        audit::append_in(s.tx(), &registry, ctx.seal.as_deref(), ev).await?;
    }
    Ok(())
}

async fn run(
    ctx: &Context,
    base: &str,
    interaction: Interaction,
    preconditions: Preconditions,
    cascade: bool,
    provenance: Option<Value>,
    prefer: PreferReturn,
) -> Result<FhirResponse, Outcome> {
    match interaction {
        Interaction::Capabilities => Ok(capabilities::response(ctx, base)),
        Interaction::Read { resource_type, id } => {
            read::read(ctx, &resource_type, &id, &preconditions).await
        }
        Interaction::VRead {
            resource_type,
            id,
            version,
        } => vread::vread(ctx, &resource_type, &id, &version).await,
        Interaction::History { scope, params } => {
            history::history(ctx, base, &scope, &params).await
        }
        Interaction::Bundle { bundle } => {
            bundle::process(ctx, base, bundle, prefer, provenance).await
        }
        Interaction::Operation(op) => operation::run(ctx, base, op).await,
        Interaction::Search(req) => search::search(ctx, base, req).await,
        write => {
            let subtype = match &write {
                Interaction::Create { .. } => ("create", "C"),
                Interaction::Update { .. } => ("update", "U"),
                Interaction::Patch { .. } => ("patch", "U"),
                _ => ("delete", "D"),
            };
            // authorization before validation: a token that may not write the type learns
            // 403, not what is wrong with its body
            let (perms, rt): (&[Perm], &str) = match &write {
                Interaction::Create { resource_type, .. } => (&[Perm::Create], resource_type),
                Interaction::Update { resource_type, .. } => {
                    (&[Perm::Update, Perm::Create], resource_type)
                }
                Interaction::Patch { resource_type, .. } => (&[Perm::Update], resource_type),
                Interaction::Delete { resource_type, .. } => (&[Perm::Delete], resource_type),
                _ => (&[], ""),
            };
            if !perms.is_empty() {
                let rt = resource_type(ctx, rt)?;
                let mut denied = None;
                for perm in perms {
                    match ctx.guard.require(*perm, rt) {
                        Ok(()) => {
                            denied = None;
                            break;
                        }
                        Err(o) => denied = denied.or(Some(o)),
                    }
                }
                if let Some(o) = denied {
                    return Err(o);
                }
            }
            let prepared = Prepared::new(ctx, write)?;
            let provenance = provenance
                .map(|p| provenance::prepare(ctx, p))
                .transpose()?;
            let mut attempt = 0;
            loop {
                let result = write_once(
                    ctx,
                    base,
                    &prepared,
                    &preconditions,
                    cascade,
                    provenance.as_ref(),
                    subtype,
                )
                .await;
                match result {
                    Err(o) if o.kind == ErrorKind::Contention && attempt < MAX_RETRIES => {
                        attempt += 1;
                    }
                    r => return r.map(|r| apply_prefer(r, prefer)),
                }
            }
        }
    }
}

/// How often a write that collided with a concurrent transaction is retried.
const MAX_RETRIES: u32 = 4;

/// A write interaction, checked and validated before its transaction opens.
enum Prepared {
    Create(String, Value),
    Update(String, Target, Value),
    Patch(String, Target, PatchBody),
    Delete(String, Target),
}

impl Prepared {
    fn new(ctx: &Context, interaction: Interaction) -> Result<Prepared, Outcome> {
        if let Interaction::Update { resource_type, .. }
        | Interaction::Patch { resource_type, .. }
        | Interaction::Delete { resource_type, .. } = &interaction
        {
            refuse_audit_change(resource_type)?;
        }
        Ok(match interaction {
            Interaction::Create {
                resource_type,
                resource,
            } => {
                let (rt, resource) = create::prepare(ctx, &resource_type, resource)?;
                Prepared::Create(rt.to_string(), resource)
            }
            Interaction::Update {
                resource_type,
                target,
                resource,
            } => {
                let rt = update::prepare(ctx, &resource_type, &target, &resource)?;
                Prepared::Update(rt.to_string(), target, resource)
            }
            Interaction::Patch {
                resource_type,
                target,
                patch,
            } => Prepared::Patch(resource_type_of(ctx, &resource_type)?, target, patch),
            Interaction::Delete {
                resource_type,
                target,
            } => Prepared::Delete(resource_type_of(ctx, &resource_type)?, target),
            _ => return Err(Outcome::internal("not a write interaction")),
        })
    }
}

fn resource_type_of(ctx: &Context, name: &str) -> Result<String, Outcome> {
    resource_type(ctx, name).map(str::to_string)
}

/// One attempt at a write in its own session, with its X-Provenance.
async fn write_once(
    ctx: &Context,
    base: &str,
    prepared: &Prepared,
    pre: &Preconditions,
    cascade: bool,
    provenance: Option<&Value>,
    (subtype, action): (&str, &'static str),
) -> Result<FhirResponse, Outcome> {
    let mut s = session::Session::begin(ctx, base).await?;
    s.cascade_deletes(cascade);
    let response = match prepared {
        Prepared::Create(rt, resource) => {
            create::create_in(
                &mut s,
                rt,
                resource.clone(),
                pre.if_none_exist.as_deref(),
                None,
            )
            .await?
        }
        Prepared::Update(rt, target, resource) => {
            let id = update::resolve_target(&mut s, rt, target, resource).await?;
            update::update_in(&mut s, rt, &id, resource.clone(), pre.if_match).await?
        }
        Prepared::Patch(rt, target, patch) => {
            patch::patch_in(ctx, &mut s, rt, target, patch, pre.if_match).await?
        }
        Prepared::Delete(rt, target) => delete::delete_in(&mut s, rt, target, pre.if_match).await?,
    };
    if let Some(p) = provenance {
        provenance::record_in(ctx, &mut s, p.clone()).await?;
    }
    audit_in_session(ctx, &mut s, subtype, action, response.status.code()).await?;
    s.finish().await?;
    Ok(response)
}

/// AuditEvents are immutable through the API: 405 for update, patch and delete.
pub(crate) fn refuse_audit_change(resource_type: &str) -> Result<(), Outcome> {
    if resource_type == "AuditEvent" {
        return Err(Outcome::new(
            ErrorKind::MethodNotAllowed,
            "AuditEvents cannot be changed or deleted",
        ));
    }
    Ok(())
}

/// The canonical resource type named in a URL, or 404.
pub fn resource_type<'a>(ctx: &'a Context, name: &str) -> Result<&'a str, Outcome> {
    ctx.defs.resource_type(name).ok_or_else(|| {
        Outcome::new(
            crate::fhir::outcome::ErrorKind::UnknownType,
            format!("'{}' is not a FHIR R4 resource type", clip(name)),
        )
    })
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}
