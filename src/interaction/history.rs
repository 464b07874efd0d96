//! history at instance, type and system level: a Bundle of type `history`, newest first,
//! deletes as entries without a resource, `_since`, `_count`, and keyset paging links that
//! stay correct while other clients write.

use super::guard::Src;
use super::{Body, Context, FhirResponse, Status, resource_type};
use crate::auth::Perm;
use crate::fhir::outcome::Outcome;
use crate::fhir::types::{Id, Instant, etag};
use crate::store::{Cursor, HistoryQuery, HistoryScope, Method, StoredVersion};
use serde_json::{Map, Value, json};

pub const DEFAULT_COUNT: u32 = 50;
pub const MAX_COUNT: u32 = 1000;

/// The parameters of a history request.
#[derive(Debug, Clone, Default)]
pub struct HistoryParams {
    pub since: Option<Instant>,
    pub count: Option<u32>,
    pub cursor: Option<Cursor>,
    /// `_since` as the client wrote it, for the links.
    since_text: Option<String>,
}

impl HistoryParams {
    /// Parses query parameters; unknown ones are ignored, `_at` and `_list` are refused.
    pub fn parse(pairs: &[(String, String)]) -> Result<HistoryParams, Outcome> {
        let mut p = HistoryParams::default();
        for (name, value) in pairs {
            match name.as_str() {
                "_since" => {
                    p.since = Some(Instant::parse_fhir(value).ok_or_else(|| {
                        Outcome::bad_request("_since must be a FHIR instant").at("_since")
                    })?);
                    p.since_text = Some(value.clone());
                }
                "_count" => {
                    let n: u32 = value.parse().map_err(|_| {
                        Outcome::bad_request("_count must be a non-negative integer")
                    })?;
                    p.count = Some(n.min(MAX_COUNT));
                }
                "_page" => {
                    p.cursor = Some(parse_cursor(value).ok_or_else(|| {
                        Outcome::bad_request("_page is not a page token of this server")
                    })?);
                }
                "_at" | "_list" => {
                    return Err(Outcome::new(
                        crate::fhir::outcome::ErrorKind::NotImplemented,
                        format!("History parameter {name} is not supported"),
                    ));
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

fn parse_cursor(s: &str) -> Option<Cursor> {
    let (dir, n) = s.split_at_checked(1)?;
    let n: i64 = n.parse().ok()?;
    match dir {
        "b" => Some(Cursor::Before(n)),
        "a" => Some(Cursor::After(n)),
        _ => None,
    }
}

/// Type and system history would show versions outside a confined token's reach.
fn confined_history() -> Outcome {
    Outcome::new(
        crate::fhir::outcome::ErrorKind::Forbidden,
        "Type and system history are not available to patient-context or query-restricted \
         tokens; use instance history",
    )
}

fn cursor_token(c: Cursor) -> String {
    match c {
        Cursor::Before(n) => format!("b{n}"),
        Cursor::After(n) => format!("a{n}"),
    }
}

pub(super) async fn history(
    ctx: &Context,
    base: &str,
    scope: &HistoryScope,
    params: &HistoryParams,
) -> Result<FhirResponse, Outcome> {
    let (scope, path) = match scope {
        HistoryScope::System => {
            // every type's history: needs read on every type, unconfined
            ctx.guard.require(Perm::Read, "*")?;
            if ctx.guard.confined(Perm::Read, "*") {
                return Err(confined_history());
            }
            (HistoryScope::System, format!("{base}/_history"))
        }
        HistoryScope::Type(t) => {
            let rt = resource_type(ctx, t)?;
            ctx.guard.require(Perm::Read, rt)?;
            if ctx.guard.confined(Perm::Read, rt) {
                return Err(confined_history());
            }
            (
                HistoryScope::Type(rt.to_string()),
                format!("{base}/{rt}/_history"),
            )
        }
        HistoryScope::Instance(t, id) => {
            let rt = resource_type(ctx, t)?;
            let id = Id::parse(id)?;
            ctx.guard.require(Perm::Read, rt)?;
            if ctx.store.read(rt, id.as_str()).await?.is_none() {
                return Err(super::guard::hidden(rt, id.as_str()));
            }
            ctx.guard
                .check_stored(ctx, Perm::Read, rt, id.as_str())
                .await?;
            (
                HistoryScope::Instance(rt.to_string(), id.to_string()),
                format!("{base}/{rt}/{id}/_history"),
            )
        }
    };
    let count = params.count.unwrap_or(DEFAULT_COUNT);
    let query = HistoryQuery {
        since: params.since,
        cursor: params.cursor,
        count,
    };
    let mut page = ctx.store.history(&scope, &query).await?;
    // a confined token sees only the versions that were within its reach; the total would
    // count the others, so it is left out
    let mut confined = false;
    if let HistoryScope::Instance(rt, _) = &scope
        && ctx.guard.confined(Perm::Read, rt)
    {
        confined = true;
        let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
        let mut src = Src::Store(ctx.store.as_ref());
        let mut kept = Vec::with_capacity(page.entries.len());
        for (seq, v) in std::mem::take(&mut page.entries) {
            if ctx
                .guard
                .version_visible(&mut src, &registry, Perm::Read, &v)
                .await?
            {
                kept.push((seq, v));
            }
        }
        page.entries = kept;
    }
    let link = |cursor: Option<Cursor>| {
        let mut q = Vec::new();
        if let Some(s) = &params.since_text {
            q.push(("_since", s.clone()));
        }
        q.push(("_count", count.to_string()));
        if let Some(c) = cursor {
            q.push(("_page", cursor_token(c)));
        }
        let qs = serde_urlencoded::to_string(&q).unwrap_or_default();
        format!("{path}?{qs}")
    };
    let mut links = vec![
        json!({"relation": "self", "url": link(params.cursor)}),
        json!({"relation": "first", "url": link(None)}),
    ];
    if page.has_newer
        && let Some((seq, _)) = page.entries.first()
    {
        links.push(json!({"relation": "previous", "url": link(Some(Cursor::After(*seq)))}));
    }
    if page.has_older
        && let Some((seq, _)) = page.entries.last()
    {
        links.push(json!({"relation": "next", "url": link(Some(Cursor::Before(*seq)))}));
    }
    let entries = page
        .entries
        .iter()
        .map(|(_, v)| entry(base, v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "history",
        "total": page.total,
        "link": links,
        "entry": entries,
    });
    if confined && let Some(obj) = bundle.as_object_mut() {
        obj.shift_remove("total");
    }
    if entries_is_empty(&bundle)
        && let Some(obj) = bundle.as_object_mut()
    {
        obj.shift_remove("entry");
    }
    let mut response = FhirResponse::new(Status::Ok);
    response.body = Some(Body::Json(bundle));
    Ok(response)
}

fn entries_is_empty(bundle: &Value) -> bool {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
}

fn entry(base: &str, v: &StoredVersion) -> Result<Value, Outcome> {
    let full_url = format!("{base}/{}/{}", v.resource_type, v.id);
    let (url, status) = match v.method {
        Method::Post => (v.resource_type.clone(), "201 Created"),
        Method::Put if v.version == 1 => (format!("{}/{}", v.resource_type, v.id), "201 Created"),
        Method::Put | Method::Patch => (format!("{}/{}", v.resource_type, v.id), "200 OK"),
        Method::Delete => (format!("{}/{}", v.resource_type, v.id), "204 No Content"),
    };
    let mut e = Map::new();
    e.insert("fullUrl".into(), json!(full_url));
    if let Some(body) = &v.body {
        let resource: Value = serde_json::from_str(body)
            .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?;
        e.insert("resource".into(), resource);
    }
    e.insert(
        "request".into(),
        json!({"method": v.method.as_str(), "url": url}),
    );
    e.insert(
        "response".into(),
        json!({
            "status": status,
            "etag": etag(v.version),
            "lastModified": v.last_updated.to_fhir(),
        }),
    );
    Ok(Value::Object(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let p = HistoryParams::parse(&[
            ("_count".into(), "5000".into()),
            ("_page".into(), "b42".into()),
            ("_since".into(), "2020-01-01".into()),
            ("other".into(), "x".into()),
        ])
        .unwrap();
        assert_eq!(p.count, Some(MAX_COUNT));
        assert_eq!(p.cursor, Some(Cursor::Before(42)));
        assert!(p.since.is_some());
        assert!(HistoryParams::parse(&[("_page".into(), "zz".into())]).is_err());
        assert!(HistoryParams::parse(&[("_since".into(), "yesterday".into())]).is_err());
        assert!(HistoryParams::parse(&[("_at".into(), "2020".into())]).is_err());
        assert!(HistoryParams::parse(&[("_count".into(), "-1".into())]).is_err());
    }
}
