//! L3: FHIR REST semantics with no HTTP types. A [`FhirRequest`] goes in, a [`FhirResponse`]
//! (or an [`Outcome`]) comes out, so REST calls, Bundle entries, imports and the web app all
//! run exactly the same code.
//!
//! One file per interaction, named like the spec. Conditional logic lives in `conditional`
//! and runs inside the same database transaction as the write it guards.

pub mod audit;
pub mod audit_writer;
pub mod bulk;
mod bundle;
pub mod capabilities;
mod conditional;
mod create;
mod delete;
pub mod guard;
mod history;
mod integrity;
pub mod live;
pub mod notify;
pub mod operation;
mod patch;
mod provenance;
mod reach;
mod read;
mod reader;
mod recording;
pub mod registry;
mod request;
mod response;
mod retry;
pub mod scheduling;
pub mod seal;
pub mod search;
pub mod session;
pub mod slots;
pub mod subscription;
mod update;
mod vread;
pub(crate) mod write;

use crate::fhir::definitions::Definitions;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::validation::Validator;
use crate::store::Store;
use serde_json::Value;
use std::sync::Arc;

pub use history::HistoryParams;
pub use request::{FhirRequest, IfNoneMatch, Interaction, PatchBody, Preconditions, Target};
pub use response::{Body, FhirResponse, PreferReturn, Status, apply_prefer};

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
    /// The credit extension's canonical base, artifacts, products and plans.
    pub finance: Arc<crate::finance::catalog::Catalog>,
    /// The node's group commit of AuditEvents outside writes (shared by cloned contexts).
    pub audit_writer: Arc<audit_writer::AuditWriter>,
    /// Bulk Data: how long results stay, file sizes, polling interval.
    pub bulk: bulk::Settings,
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
            finance: crate::finance::catalog::Catalog::standard(),
            audit_writer: audit_writer::AuditWriter::new(),
            bulk: bulk::Settings::default(),
        }
    }
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
    // recorded AuditEvents become resources before anything can read them
    if may_return_audit_events(&interaction) {
        let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
        audit::settle(ctx.store.as_ref(), &registry).await?;
    }
    let mut record = recording::audit_record(&interaction);
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
        && let Some((r, _)) = record.take()
        && !(writes && result.is_ok())
    {
        recording::record_after(ctx, &base, r, &result).await?;
    }
    result
}

/// Whether an interaction can return AuditEvents (or count them), so that the recorded ones
/// waiting in `audit_pending` must be stored as resources first.
fn may_return_audit_events(interaction: &Interaction) -> bool {
    const AE: &str = "AuditEvent";
    match interaction {
        Interaction::Capabilities
        | Interaction::Create { .. }
        | Interaction::Update { .. }
        | Interaction::Patch { .. }
        | Interaction::Delete { .. } => false,
        Interaction::Read { resource_type, .. } | Interaction::VRead { resource_type, .. } => {
            resource_type == AE
        }
        Interaction::History { scope, .. } => match scope {
            crate::store::HistoryScope::System => true,
            crate::store::HistoryScope::Type(t) | crate::store::HistoryScope::Instance(t, _) => {
                t == AE
            }
        },
        Interaction::Bundle { .. } => true,
        // `$everything` returns them when `_type` asks
        Interaction::Operation(op) => {
            op.name == "everything" || op.resource_type.as_deref().is_none_or(|t| t == AE)
        }
        Interaction::Search(req) => match &req.scope {
            search::SearchScope::Type(t) => {
                t == AE
                    || req
                        .pairs
                        .iter()
                        .any(|(k, v)| k == "_page" || k.contains(AE) || v.contains(AE))
            }
            search::SearchScope::System | search::SearchScope::Compartment { .. } => true,
        },
    }
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
        Interaction::Capabilities => {
            // the custom SearchParameters as stored now; if the database cannot say, the
            // statement still answers with what was loaded last (R4's at least)
            let _ = ctx.registry.current(ctx.store.as_ref()).await;
            Ok(capabilities::response(ctx, base))
        }
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
            retry::write(
                ctx,
                base,
                write,
                &preconditions,
                cascade,
                provenance,
                prefer,
            )
            .await
        }
    }
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
