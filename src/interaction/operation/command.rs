//! What every finance state change shares: who may run it for which patient, the write
//! session it runs in (the server writes the projections; the caller was authorized here),
//! and its idempotency — a replay of a requestId returns the stored result, the same
//! requestId with a different input is a 409.

use super::OperationRequest;
use crate::auth::{Perm, Role};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::interaction::session::Session;
use crate::interaction::{Body, Context, FhirResponse, Status, guard};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// 403 unless the token may run operation `name` for `patient`: its scopes grant `perm` on
/// every type in `types` (`patient/Account.c`, `user/…`, `system/…`), its role is one of
/// `roles` (a backend service has no role and needs `system/` scopes), and the patient is
/// one it may see — a patient it may not see answers 404 like an unknown one.
pub(super) async fn authorize(
    ctx: &Context,
    name: &str,
    perm: Perm,
    types: &[&str],
    roles: &[Role],
    patient: &str,
) -> Result<(), Outcome> {
    if let Some(p) = ctx.guard.principal() {
        for t in types {
            p.require(perm, t)
                .map_err(|d| Outcome::new(ErrorKind::Forbidden, d.message().to_string()))?;
        }
        if let Some(role) = p.role
            && !roles.contains(&role)
        {
            return Err(Outcome::new(
                ErrorKind::Forbidden,
                format!("The {} role may not run ${name}", role.as_str()),
            ));
        }
    }
    match ctx.store.read("Patient", patient).await? {
        Some(v) if !v.deleted => {
            ctx.guard
                .check_stored(ctx, Perm::Read, "Patient", patient)
                .await
        }
        _ => Err(guard::hidden("Patient", patient)),
    }
}

/// A write session in which the server itself writes what a command projects (the caller
/// was authorized by [`authorize`]; its own token may not write Accounts directly).
pub(super) async fn session(ctx: &Context, base: &str) -> Result<Session, Outcome> {
    let server = Context {
        guard: guard::Guard::open(),
        ..ctx.clone()
    };
    Session::begin(&server, base).await
}

/// The fingerprint of a command's input: its body and query, as sent.
pub(super) fn fingerprint(op: &OperationRequest) -> String {
    let mut h = Sha256::new();
    h.update(
        op.body
            .as_ref()
            .map(|b| serde_json::to_string(b).unwrap_or_default())
            .unwrap_or_default(),
    );
    for (k, v) in &op.query {
        h.update([0]);
        h.update(k);
        h.update([1]);
        h.update(v);
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// The stored answer of an earlier run of this command, or None when it is new; 409 when
/// the request id was used with a different input.
pub(super) async fn replay(
    s: &mut Session,
    scope: &str,
    request_id: &str,
    fingerprint: &str,
) -> Result<Option<FhirResponse>, Outcome> {
    let Some(done) = s.tx().ledger().command(scope, request_id).await? else {
        return Ok(None);
    };
    if done.fingerprint != fingerprint {
        return Err(Outcome::new(
            ErrorKind::Conflict,
            format!(
                "requestId '{}' was used for a different request",
                request_id.chars().take(64).collect::<String>()
            ),
        )
        .at("Parameters.parameter.where(name = 'requestId')"));
    }
    let value: Value = serde_json::from_str(&done.result)
        .map_err(|_| Outcome::internal("A stored command result is not JSON"))?;
    Ok(Some(answer(value)))
}

/// Records the command's result in its session (it commits with what it wrote).
pub(super) async fn record(
    s: &mut Session,
    scope: &str,
    request_id: &str,
    fingerprint: &str,
    result: &Value,
) -> Result<(), Outcome> {
    let text = serde_json::to_string(result)
        .map_err(|_| Outcome::internal("Cannot serialize a command result"))?;
    let now = crate::fhir::types::Instant::now().millis();
    if !s
        .tx()
        .ledger()
        .record_command(scope, request_id, fingerprint, &text, now)
        .await?
    {
        // a concurrent run of the same command committed first: this one is undone
        return Err(Outcome::new(
            ErrorKind::Conflict,
            "The same requestId is being processed by another request; retry to get its result",
        ));
    }
    Ok(())
}

/// A 200 with a Parameters body.
pub(super) fn answer(parameters: Value) -> FhirResponse {
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(parameters));
    r
}
