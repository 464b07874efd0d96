//! A REST write (create, update, patch, delete): authorized before its body is looked at,
//! validated once, then run in its own session with its X-Provenance and AuditEvent, and
//! retried when it collided with a concurrent transaction.

use super::session::Session;
use super::{
    Context, FhirResponse, Interaction, PatchBody, Preconditions, PreferReturn, Target,
    apply_prefer, create, delete, patch, provenance, recording, refuse_audit_change, resource_type,
    update,
};
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Outcome};
use serde_json::Value;

/// Runs a write interaction to its response.
pub(super) async fn write(
    ctx: &Context,
    base: &str,
    write: Interaction,
    preconditions: &Preconditions,
    cascade: bool,
    provenance: Option<Value>,
    prefer: PreferReturn,
) -> Result<FhirResponse, Outcome> {
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
        Interaction::Update { resource_type, .. } => (&[Perm::Update, Perm::Create], resource_type),
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
            preconditions,
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
    let mut s = Session::begin(ctx, base).await?;
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
    recording::audit_in_session(ctx, &mut s, subtype, action, response.status.code()).await?;
    super::integrity::finish(s).await?;
    Ok(response)
}
