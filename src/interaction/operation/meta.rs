//! `$meta`, `$meta-add`, `$meta-delete`: a resource's (or a type's, or the server's) profiles,
//! tags and security labels. Versions are immutable here, so `$meta-add` and `$meta-delete`
//! write a new version (R4B dropped R4's in-place wording) — and none when nothing changes.

use super::OperationRequest;
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::Id;
use crate::interaction::session::Session;
use crate::interaction::write::{existing, put_version};
use crate::interaction::{Body, Context, FhirResponse, Status, resource_type};
use crate::store::{Method, StoredVersion};
use serde_json::{Map, Value, json};

fn parameters(meta: Value) -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "return", "valueMeta": meta}]})
}

fn meta_of(body: &str) -> Result<Value, Outcome> {
    let v: Value = serde_json::from_str(body)
        .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?;
    Ok(v.get("meta").cloned().unwrap_or_else(|| json!({})))
}

/// The identity of a tag or security label (system + code), or a profile (its URL).
fn key(kind: &str, v: &Value) -> String {
    match kind {
        "profile" => v.as_str().unwrap_or("").to_string(),
        _ => format!(
            "{}|{}",
            v.get("system").and_then(Value::as_str).unwrap_or(""),
            v.get("code").and_then(Value::as_str).unwrap_or("")
        ),
    }
}

/// Adds (or removes) `meta`'s profiles, tags and security labels to (from) `into`.
fn merge(into: &mut Map<String, Value>, meta: &Value, add: bool) {
    for kind in ["profile", "tag", "security"] {
        let Some(items) = meta.get(kind).and_then(Value::as_array) else {
            continue;
        };
        let mut list: Vec<Value> = into
            .get(kind)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for item in items {
            let k = key(kind, item);
            let present = list.iter().any(|x| key(kind, x) == k);
            if add && !present {
                list.push(item.clone());
            } else if !add {
                list.retain(|x| key(kind, x) != k);
            }
        }
        if list.is_empty() {
            into.shift_remove(kind);
        } else {
            into.insert(kind.to_string(), Value::Array(list));
        }
    }
}

fn response(meta: Value) -> FhirResponse {
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(parameters(meta)));
    r
}

pub(super) async fn meta(ctx: &Context, op: &OperationRequest) -> Result<FhirResponse, Outcome> {
    match (&op.resource_type, &op.id) {
        (Some(t), Some(id)) => {
            let rt = resource_type(ctx, t)?;
            let id = Id::parse(id)?;
            ctx.guard.require(Perm::Read, rt)?;
            ctx.guard
                .check_stored(ctx, Perm::Read, rt, id.as_str())
                .await?;
            let v = match &op.version {
                None => ctx.store.read(rt, id.as_str()).await?,
                Some(vid) => match vid.parse::<i64>() {
                    Ok(n) => ctx.store.vread(rt, id.as_str(), n).await?,
                    Err(_) => None,
                },
            };
            let v = live(v, rt, id.as_str())?;
            if op.version.is_some() {
                // an old version is judged by its own content
                let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
                let mut src = crate::interaction::guard::Src::Store(ctx.store.as_ref());
                if !ctx
                    .guard
                    .version_visible(&mut src, &registry, Perm::Read, &v)
                    .await?
                {
                    return Err(Outcome::not_found(format!(
                        "{rt}/{id} (or that version) is not known"
                    )));
                }
            }
            Ok(response(meta_of(v.body.as_deref().unwrap_or("{}"))?))
        }
        (t, None) => {
            // the union over every live resource of the type (or of the server)
            let types: Vec<String> = match t {
                Some(t) => vec![resource_type(ctx, t)?.to_string()],
                None => ctx.defs.resource_types().to_vec(),
            };
            // the union over resources a confined token may not see would leak their tags
            let scope = t.as_deref().unwrap_or("*");
            ctx.guard.require(Perm::Search, scope)?;
            if ctx.guard.confined(Perm::Search, scope) {
                return Err(Outcome::new(
                    ErrorKind::Forbidden,
                    "$meta over a type or the server is not available to confined tokens",
                ));
            }
            let mut union = Map::new();
            for t in types {
                let ids = ctx.store.live_ids(&t).await?;
                let keys: Vec<(String, String)> =
                    ids.into_iter().map(|id| (t.clone(), id)).collect();
                for v in ctx.store.read_many(&keys).await? {
                    let m = meta_of(v.body.as_deref().unwrap_or("{}"))?;
                    merge(&mut union, &m, true);
                }
            }
            Ok(response(Value::Object(union)))
        }
        (None, Some(_)) => Err(Outcome::bad_request("$meta on an id needs a type")),
    }
}

fn live(v: Option<StoredVersion>, rt: &str, id: &str) -> Result<StoredVersion, Outcome> {
    match v {
        None => Err(Outcome::not_found(format!(
            "{rt}/{id} (or that version) is not known"
        ))),
        Some(v) if v.deleted => Err(Outcome::new(
            ErrorKind::Gone,
            format!("{rt}/{id} is deleted"),
        )),
        Some(v) => Ok(v),
    }
}

pub(super) async fn change(
    ctx: &Context,
    base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let rt = resource_type(ctx, op.resource_type.as_deref().unwrap_or(""))?;
    let id = Id::parse(op.id.as_deref().unwrap_or(""))?;
    if op.version.is_some() {
        return Err(Outcome::new(
            ErrorKind::NotImplemented,
            "Versions are immutable here: $meta-add/$meta-delete apply to the current version",
        ));
    }
    let Some(meta) = op.param("meta").filter(Value::is_object) else {
        return Err(Outcome::bad_request(
            "A Parameters body with a valueMeta named meta is needed",
        ));
    };
    let add = op.name == "meta-add";
    let mut s = Session::begin(ctx, base).await?;
    s.tx().lock_resource(rt, id.as_str()).await?;
    {
        // what the token may not see answers like what does not exist
        let (guard, registry) = (s.guard.clone(), s.registry.clone());
        guard
            .check_in_tx(s.tx(), &registry, Perm::Update, rt, id.as_str())
            .await?;
    }
    let current = live(s.tx().current(rt, id.as_str()).await?, rt, id.as_str())?;
    let mut resource: Value = serde_json::from_str(current.body.as_deref().unwrap_or("{}"))
        .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?;
    let mut m = resource
        .get("meta")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    merge(&mut m, &meta, add);
    let Some(obj) = resource.as_object_mut() else {
        return Err(Outcome::internal("A stored resource is not a JSON object"));
    };
    obj.insert("meta".into(), Value::Object(m));
    ctx.validator.validate(&resource).map_err(|mut o| {
        o.kind = ErrorKind::Invalid;
        o
    })?;
    let written = put_version(
        &mut s,
        rt,
        id.as_str(),
        resource,
        Method::Patch,
        Some(&current),
    )
    .await?;
    super::super::integrity::finish(s).await?;
    let body = match &written.body {
        Some(Body::Raw(b)) => b.to_string(),
        _ => {
            let e = existing(base, &current, Status::Ok);
            match e.body {
                Some(Body::Raw(b)) => b.to_string(),
                _ => "{}".to_string(),
            }
        }
    };
    Ok(response(meta_of(&body)?))
}
