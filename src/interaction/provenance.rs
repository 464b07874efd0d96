//! `X-Provenance`: a Provenance resource sent with a write (or a transaction) is stored in the
//! same database transaction, its `target` filled in by the server with every version the
//! request wrote.

use super::Context;
use super::create::create_in;
use super::session::Session;
use crate::fhir::outcome::Outcome;
use serde_json::{Value, json};

/// Checks the header's resource before the write starts: a Provenance (target is the server's).
pub(super) fn prepare(_ctx: &Context, mut provenance: Value) -> Result<Value, Outcome> {
    if provenance.get("resourceType").and_then(Value::as_str) != Some("Provenance") {
        return Err(Outcome::bad_request(
            "X-Provenance must hold a Provenance resource",
        ));
    }
    if let Some(obj) = provenance.as_object_mut() {
        obj.shift_remove("id");
        obj.shift_remove("target");
    }
    Ok(provenance)
}

/// Stores the Provenance targeting every version written so far in the session.
pub(super) async fn record_in(
    ctx: &Context,
    s: &mut Session,
    mut provenance: Value,
) -> Result<(), Outcome> {
    if s.versions.is_empty() {
        return Ok(()); // nothing was written (a no-op update, a matched conditional create)
    }
    let targets: Vec<Value> = s
        .versions
        .iter()
        .map(|(t, id, v)| json!({"reference": format!("{t}/{id}/_history/{v}")}))
        .collect();
    if let Some(obj) = provenance.as_object_mut() {
        obj.insert("target".into(), Value::Array(targets));
    }
    ctx.validator.validate(&provenance).map_err(|mut o| {
        for i in &mut o.issues {
            i.diagnostics = format!("X-Provenance: {}", i.diagnostics);
        }
        o
    })?;
    create_in(s, "Provenance", provenance, None, None).await?;
    Ok(())
}
