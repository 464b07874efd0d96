//! `$reindex` (system level): rebuilds the index rows of custom search parameters that were
//! defined after resources of their base types were written (and of the access policy's
//! internal parameters, after an upgrade). It works online — one small
//! transaction per batch of resources, each resource locked and re-read as current — so reads
//! and writes go on meanwhile. `GET [base]/$reindex` reports each custom parameter's state;
//! `POST` (or `healporium reindex`) runs it. Searches on a parameter whose reindex has not
//! finished carry a warning instead of silently returning partial results.

use super::super::{Body, Context, FhirResponse, Status};
use crate::fhir::outcome::Outcome;
use crate::search::index::extract_params;
use serde_json::{Value, json};

/// Resources re-indexed per transaction.
const BATCH: usize = 100;

/// What a reindex did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// (base, code) of the parameters rebuilt.
    pub params: Vec<(String, String)>,
    /// Resources whose rows were rebuilt.
    pub resources: u64,
}

/// Rebuilds the rows of pending custom parameters (every custom parameter with `all`).
/// `base` makes absolute references to this server local, as the write path does.
pub async fn reindex(ctx: &Context, base: Option<&str>, all: bool) -> Result<Report, Outcome> {
    ctx.registry.invalidate();
    let loaded = ctx.registry.current(ctx.store.as_ref()).await?;
    // custom parameters, and the access policy's internal ones (pending after an upgrade)
    let mut targets: Vec<(String, String)> = loaded.params.custom();
    targets.extend(loaded.params.internal());
    targets.retain(|k| all || loaded.pending.contains(k));
    let mut report = Report::default();
    for (param_base, code) in &targets {
        ctx.store
            .set_param_state(param_base, code, "reindexing")
            .await?;
        let types: Vec<String> = if matches!(param_base.as_str(), "Resource" | "DomainResource") {
            ctx.defs.resource_types().to_vec()
        } else {
            vec![param_base.clone()]
        };
        // the rows a parameter owns: its code, derived rows and composite components
        let mut owned = vec![
            code.clone(),
            format!("{code}:text"),
            format!("{code}:identifier"),
        ];
        owned.extend((0..10).map(|i| format!("{code}${i}")));
        for t in &types {
            let ids = ctx.store.live_ids(t).await?;
            for chunk in ids.chunks(BATCH) {
                let mut tx = ctx.store.begin().await?;
                for id in chunk {
                    tx.lock_resource(t, id).await?;
                    let Some(current) = tx.current(t, id).await? else {
                        continue;
                    };
                    let Some(body) = current.body.filter(|_| !current.deleted) else {
                        continue;
                    };
                    let Ok(json) = serde_json::from_str::<Value>(&body) else {
                        continue;
                    };
                    let rows = extract_params(&json, base, &loaded.params, |p| p.code == *code);
                    tx.replace_index_rows(t, id, &owned, &rows).await?;
                    report.resources += 1;
                }
                tx.commit().await?;
            }
        }
        ctx.store.set_param_state(param_base, code, "ready").await?;
        report.params.push((param_base.clone(), code.clone()));
    }
    ctx.registry.invalidate();
    Ok(report)
}

/// `POST [base]/$reindex`: runs it and answers a Parameters resource.
pub(super) async fn run(ctx: &Context, base: &str, all: bool) -> Result<FhirResponse, Outcome> {
    let report = reindex(ctx, Some(base), all).await?;
    let mut parameter = vec![json!({"name": "resources", "valueInteger": report.resources})];
    for (b, c) in &report.params {
        parameter.push(json!({"name": "parameter", "valueString": format!("{b}.{c}")}));
    }
    respond(json!({"resourceType": "Parameters", "parameter": parameter}))
}

/// `GET [base]/$reindex`: the index state of every custom parameter.
pub(super) async fn status(ctx: &Context) -> Result<FhirResponse, Outcome> {
    ctx.registry.invalidate();
    let loaded = ctx.registry.current(ctx.store.as_ref()).await?;
    // the access policy's internal parameters show only while they wait for a reindex
    let mut listed = loaded.params.custom();
    listed.extend(
        loaded
            .params
            .internal()
            .into_iter()
            .filter(|k| loaded.pending.contains(k)),
    );
    let parameter: Vec<Value> = listed
        .into_iter()
        .map(|(b, c)| {
            let state = if loaded.pending.contains(&(b.clone(), c.clone())) {
                "pending"
            } else {
                "ready"
            };
            json!({"name": "parameter", "part": [
                {"name": "name", "valueString": format!("{b}.{c}")},
                {"name": "state", "valueCode": state}]})
        })
        .collect();
    let mut body = json!({"resourceType": "Parameters"});
    if !parameter.is_empty()
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert("parameter".into(), Value::Array(parameter));
    }
    respond(body)
}

fn respond(body: Value) -> Result<FhirResponse, Outcome> {
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(body));
    Ok(r)
}
