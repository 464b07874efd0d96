//! search at type, system and compartment level (GET or POST `_search`, same code): parses
//! the query with the registry, resolves `:in` ValueSets from the store, asks the store for
//! one keyset page, adds `_include`/`_revinclude` resources (mode include, not counted),
//! applies `_summary`/`_elements`, and answers a `searchset` Bundle whose paging links are
//! opaque cursor ids (the query and position stay in the database, never in the URL).

use super::guard::patient_links;
use super::{Body, Context, FhirResponse, Status, resource_type};
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Issue, Outcome, operation_outcome};
use crate::fhir::types::Instant;
use crate::search::parameters::SearchParameters;
use crate::search::query::{
    self, DEFAULT_COUNT, Filter, Include, Pred, SearchQuery, Summary, Total,
};
use crate::store::{Anchor, Hit, SearchSpec, StoredVersion};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

/// How long a paging link keeps working by default (`--search-page-ttl`).
pub const CURSOR_TTL_MS: i64 = 60 * 60 * 1000;
/// Cursors older than this are deleted (their links answer 400 instead of 410).
const CURSOR_PURGE_MS: i64 = 24 * 60 * 60 * 1000;
/// `:iterate` follows references at most this deep.
const MAX_ITERATIONS: usize = 5;

/// Where a search runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SearchScope {
    /// `[base]/[type]`
    Type(String),
    /// `[base]` (with `_type` or across every type)
    System,
    /// `[base]/Patient/123/[type]` (`*` for every type in the compartment)
    Compartment {
        owner_type: String,
        owner_id: String,
        target: String,
    },
}

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub scope: SearchScope,
    pub pairs: Vec<(String, String)>,
    /// `Prefer: handling=strict`: unknown parameters are errors.
    pub strict: bool,
    /// Store paging cursors (false inside Bundles: a transaction holds SQLite's one writer).
    pub paging: bool,
}

/// What a paging link stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CursorState {
    scope: SearchScope,
    pairs: Vec<(String, String)>,
    strict: bool,
    anchor: Option<Anchor>,
    backwards: bool,
    /// The cursor of the first page.
    first: Option<String>,
    /// The total counted for the first page, and for whom (later pages of the same
    /// principal reuse it instead of counting again; another principal counts its own).
    #[serde(default)]
    total: Option<(u64, String)>,
    /// Who ran the first page: another principal following its links does not see its
    /// query in the self link.
    #[serde(default)]
    creator: Option<String>,
}

pub async fn search(
    ctx: &Context,
    base: &str,
    req: SearchRequest,
) -> Result<FhirResponse, Outcome> {
    let page_token = req
        .pairs
        .iter()
        .find(|(k, _)| k == "_page")
        .map(|(_, v)| v.clone());
    let paging = req.paging;
    let state = match page_token {
        Some(token) if paging => load_cursor(ctx, &token).await?,
        Some(_) => {
            return Err(Outcome::bad_request(
                "_page cannot be followed inside a Bundle",
            ));
        }
        None => CursorState {
            scope: req.scope,
            pairs: req.pairs,
            strict: req.strict,
            anchor: None,
            backwards: false,
            first: None,
            total: None,
            creator: None,
        },
    };
    run(ctx, base, state, paging).await
}

async fn load_cursor(ctx: &Context, token: &str) -> Result<CursorState, Outcome> {
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Outcome::bad_request("_page is not a page token of this server").at("_page"));
    }
    let Some((created, payload)) = ctx.store.load_cursor(token).await? else {
        return Err(Outcome::bad_request(
            "_page names no search of this server (unknown, tampered or long expired)",
        )
        .at("_page"));
    };
    if Instant::now().millis() - created > ctx.page_ttl_ms {
        return Err(Outcome::new(
            ErrorKind::Gone,
            "This paging link has expired; run the search again",
        )
        .at("_page"));
    }
    serde_json::from_str(&payload)
        .map_err(|_| Outcome::internal("A stored paging cursor cannot be read"))
}

/// A new paging cursor for `state`, added to `rows` (saved with the page's others); its id.
fn new_cursor(
    rows: &mut Vec<(String, i64, String)>,
    state: &CursorState,
) -> Result<String, Outcome> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let payload = serde_json::to_string(state)
        .map_err(|_| Outcome::internal("A paging cursor cannot be written"))?;
    rows.push((id.clone(), Instant::now().millis(), payload));
    Ok(id)
}

/// Deletes the paging cursors no link can use any more (the clean-up job): those older than
/// the cursor lifetime, and at least a day old (an "expired" answer beats "unknown").
pub async fn purge_cursors(ctx: &Context, now: i64) -> Result<u64, Outcome> {
    Ok(ctx
        .store
        .purge_cursors(now - CURSOR_PURGE_MS.max(ctx.page_ttl_ms))
        .await?)
}

/// The types and extra filters a scope implies.
fn scope_types(
    ctx: &Context,
    registry: &SearchParameters,
    scope: &SearchScope,
    pairs: &[(String, String)],
) -> Result<(Vec<String>, Vec<Filter>), Outcome> {
    match scope {
        SearchScope::Type(t) => Ok((vec![resource_type(ctx, t)?.to_string()], Vec::new())),
        SearchScope::System => {
            let mut types = Vec::new();
            for (k, v) in pairs {
                if k == "_type" {
                    for t in v.split(',').filter(|t| !t.is_empty()) {
                        let t = resource_type(ctx, t).map_err(|o| {
                            let diagnostics = o.issues.into_iter().next().map(|i| i.diagnostics);
                            Outcome::bad_request(diagnostics.unwrap_or_default()).at("_type")
                        })?;
                        if !types.iter().any(|x| x == t) {
                            types.push(t.to_string());
                        }
                    }
                }
            }
            Ok((types, Vec::new()))
        }
        SearchScope::Compartment {
            owner_type,
            owner_id,
            target,
        } => {
            let owner = resource_type(ctx, owner_type)?;
            if owner != "Patient" {
                return Err(Outcome::new(
                    ErrorKind::NotImplemented,
                    format!("Only the Patient compartment is supported, not {owner}"),
                ));
            }
            if !crate::fhir::types::is_valid_id(owner_id) {
                return Err(Outcome::bad_request("The compartment id is not a valid id"));
            }
            let targets: Vec<String> = if target == "*" {
                // every type tied to a patient, that the token may search
                let mut all: Vec<String> = ctx
                    .defs
                    .resource_types()
                    .iter()
                    .filter(|t| {
                        (*t == "Patient" || !patient_links(registry, t).is_empty())
                            && ctx.guard.require(Perm::Search, t).is_ok()
                    })
                    .cloned()
                    .collect();
                all.sort();
                all
            } else {
                let t = resource_type(ctx, target)?;
                if t != "Patient" && patient_links(registry, t).is_empty() {
                    return Err(Outcome::bad_request(format!(
                        "{t} is not in the Patient compartment"
                    )));
                }
                vec![t.to_string()]
            };
            let params: Vec<(String, Vec<String>)> = targets
                .iter()
                .map(|t| (t.clone(), patient_links(registry, t).to_vec()))
                .collect();
            Ok((
                targets,
                vec![Filter::Compartment {
                    owner_type: owner.to_string(),
                    owners: query::Owners::Id(owner_id.clone()),
                    params,
                }],
            ))
        }
    }
}

async fn run(
    ctx: &Context,
    base: &str,
    state: CursorState,
    paging: bool,
) -> Result<FhirResponse, Outcome> {
    let loaded = ctx.registry.current(ctx.store.as_ref()).await?;
    let (types, scope_filters) = scope_types(ctx, &loaded.params, &state.scope, &state.pairs)?;
    let access = access_filters(ctx, &loaded.params, &types)?;
    let mut q = query::parse_limited(
        &loaded.params,
        &types,
        &state.pairs,
        state.strict,
        Some(base),
        &ctx.limits,
    )?;
    // custom parameters whose index is still being built: say so rather than look complete
    let mut partial: Vec<String> = Vec::new();
    for (t, code) in &q.params_used {
        let pending = [t.as_str(), "DomainResource", "Resource"]
            .iter()
            .any(|b| loaded.pending.contains(&(b.to_string(), code.clone())));
        if pending && !partial.contains(code) {
            partial.push(code.clone());
            q.warnings.push(format!(
                "The index of search parameter '{code}' is not complete until $reindex has \
                 run: resources written before it was defined are not found yet"
            ));
        }
    }
    // chains, `_has` and `_list` see only what the token may search
    ctx.guard.confine(&loaded.params, &mut q.filters)?;
    q.filters.splice(0..0, scope_filters);
    q.filters.extend(access);
    resolve_value_sets(ctx, &mut q.filters).await?;
    let count = q.count.unwrap_or(DEFAULT_COUNT);
    let counting = q.summary == Some(Summary::Count) || count == 0;
    let who = ctx
        .guard
        .principal()
        .map(|p| {
            format!(
                "{}|{:?}|{}|{:?}",
                p.client_id, p.user, p.scope, p.patient_context
            )
        })
        .unwrap_or_default();
    let total = if counting || q.total != Total::None {
        match &state.total {
            Some((t, w)) if *w == who && !counting => Some(*t),
            _ => Some(ctx.store.count(&types, &q.filters).await?),
        }
    } else {
        None
    };
    let creator = state.creator.clone().unwrap_or_else(|| who.clone());
    let foreign = creator != who;
    let state = CursorState {
        total: total.map(|t| (t, who.clone())),
        creator: Some(creator),
        ..state
    };
    let mut hits: Vec<Hit> = Vec::new();
    let mut more = false;
    if !counting {
        let spec = SearchSpec {
            types: &types,
            filters: &q.filters,
            sort: &q.sort,
            anchor: state.anchor.as_ref(),
            backwards: state.backwards,
            limit: count + 1,
            // an ordered page's successors keep its order
            forms: state.anchor.as_ref().map_or(&[], |a| &a.plan),
        };
        hits = ctx.store.search(&spec).await?;
        more = hits.len() > count as usize;
        hits.truncate(count as usize);
        if state.backwards {
            hits.reverse();
        }
    }
    // links: self (the query as used), first/next/previous (opaque cursors, saved together;
    // a search whose first page is its only page has no other page to link to, and no cursor)
    let (has_next, has_prev) = if state.backwards {
        (state.anchor.is_some(), more)
    } else {
        (more, state.anchor.is_some())
    };
    let scope_url = scope_url(base, &state.scope);
    let page_url = |id: &str| format!("{base}?_page={id}");
    // a page of someone else's search: its query is theirs
    let self_link = if foreign {
        scope_url.clone()
    } else {
        self_url(&scope_url, &q, &state)
    };
    let mut links = vec![json!({"relation": "self", "url": self_link})];
    let counting = counting || !paging; // no paging links without cursors
    let mut cursors: Vec<(String, i64, String)> = Vec::new();
    let only_page = state.first.is_none() && !has_next && !has_prev;
    if !counting && !only_page {
        let first_id = match &state.first {
            Some(f) => f.clone(),
            None => {
                let first = CursorState {
                    anchor: None,
                    backwards: false,
                    first: None,
                    ..state.clone()
                };
                new_cursor(&mut cursors, &first)?
            }
        };
        links.push(json!({"relation": "first", "url": page_url(&first_id)}));
        if has_prev && let Some(h) = hits.first() {
            let prev = CursorState {
                anchor: Some(anchor_of(h)),
                backwards: true,
                first: Some(first_id.clone()),
                ..state.clone()
            };
            let id = new_cursor(&mut cursors, &prev)?;
            links.push(json!({"relation": "previous", "url": page_url(&id)}));
        }
        if has_next && let Some(h) = hits.last() {
            let next = CursorState {
                anchor: Some(anchor_of(h)),
                backwards: false,
                first: Some(first_id),
                ..state.clone()
            };
            let id = new_cursor(&mut cursors, &next)?;
            links.push(json!({"relation": "next", "url": page_url(&id)}));
        }
    }
    ctx.store.save_cursors(&cursors).await?;
    // the resources of the page, in hit order
    let keys: Vec<(String, String)> = hits
        .iter()
        .map(|h| (h.resource_type.clone(), h.id.clone()))
        .collect();
    let found = ordered(ctx.store.read_many(&keys).await?, &keys);
    let included = includes(ctx, &q, &found).await?;
    let mut entries = Vec::new();
    for v in &found {
        entries.push(entry(ctx, base, v, "match", &q)?);
    }
    for v in &included {
        entries.push(entry(ctx, base, v, "include", &q)?);
    }
    if !q.warnings.is_empty() {
        let issues: Vec<Issue> = q
            .warnings
            .iter()
            .map(|w| Issue::warning("not-supported", w.clone()))
            .collect();
        entries.push(json!({
            "resource": operation_outcome(&issues),
            "search": {"mode": "outcome"},
        }));
    }
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    bundle.insert(
        "meta".into(),
        json!({"lastUpdated": Instant::now().to_fhir()}),
    );
    bundle.insert("type".into(), json!("searchset"));
    if let Some(t) = total {
        bundle.insert("total".into(), json!(t));
    }
    bundle.insert("link".into(), Value::Array(links));
    if !entries.is_empty() {
        bundle.insert("entry".into(), Value::Array(entries));
    }
    let mut response = FhirResponse::new(Status::Ok);
    response.body = Some(Body::Json(Value::Object(bundle)));
    Ok(response)
}

/// The enforcement point of search: scopes must grant search on every type searched, and a
/// confined token's filters (patient compartment, v2 scope queries) join the query itself, so
/// matches, totals and pages never include what it may not see.
fn access_filters(
    ctx: &Context,
    registry: &SearchParameters,
    types: &[String],
) -> Result<Vec<Filter>, Outcome> {
    if ctx.guard.is_open() {
        return Ok(Vec::new());
    }
    if types.is_empty() {
        ctx.guard.require(Perm::Search, "*")?;
        if ctx.guard.confined(Perm::Search, "*") {
            return Err(Outcome::new(
                ErrorKind::Forbidden,
                "A patient-context or query-restricted token must name the types it searches \
                 (_type)",
            ));
        }
        return Ok(Vec::new());
    }
    let mut alternatives = Vec::new();
    let mut confined = false;
    for t in types {
        ctx.guard.require(Perm::Search, t)?;
        let mut alt = vec![Filter::OfType(vec![t.clone()])];
        let filters = ctx.guard.filters(registry, Perm::Search, t)?;
        confined |= !filters.is_empty();
        alt.extend(filters);
        alternatives.push(alt);
    }
    Ok(if confined {
        vec![Filter::Any(alternatives)]
    } else {
        Vec::new()
    })
}

/// Included resources the token may read (scope and confinement), in order.
pub(crate) async fn permitted(
    ctx: &Context,
    versions: Vec<StoredVersion>,
) -> Result<Vec<StoredVersion>, Outcome> {
    if ctx.guard.is_open() || versions.is_empty() {
        return Ok(versions);
    }
    let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
    let keys: Vec<(String, String)> = versions
        .iter()
        .map(|v| (v.resource_type.clone(), v.id.clone()))
        .collect();
    let mut src = super::guard::Src::Store(ctx.store.as_ref());
    let allowed = ctx.guard.readable(&mut src, &registry, &keys).await?;
    Ok(versions
        .into_iter()
        .filter(|v| allowed.contains(&(v.resource_type.clone(), v.id.clone())))
        .collect())
}

fn anchor_of(h: &Hit) -> Anchor {
    Anchor {
        keys: h.keys.clone(),
        resource_type: h.resource_type.clone(),
        id: h.id.clone(),
        plan: h.plan.clone(),
    }
}

fn scope_url(base: &str, scope: &SearchScope) -> String {
    match scope {
        SearchScope::Type(t) => format!("{base}/{t}"),
        SearchScope::System => base.to_string(),
        SearchScope::Compartment {
            owner_type,
            owner_id,
            target,
        } => format!("{base}/{owner_type}/{owner_id}/{target}"),
    }
}

/// The self link: the parameters the server used (unknown ones left out).
fn self_url(scope_url: &str, q: &SearchQuery, state: &CursorState) -> String {
    let mut used = q.used.clone();
    if let SearchScope::System = state.scope {
        used.extend(state.pairs.iter().filter(|(k, _)| k == "_type").cloned());
    }
    if used.is_empty() {
        return scope_url.to_string();
    }
    let qs = serde_urlencoded::to_string(&used).unwrap_or_default();
    format!("{scope_url}?{qs}")
}

/// Orders versions like `keys` (read_many returns them in any order).
fn ordered(found: Vec<StoredVersion>, keys: &[(String, String)]) -> Vec<StoredVersion> {
    let mut by_key: HashMap<(String, String), StoredVersion> = found
        .into_iter()
        .map(|v| ((v.resource_type.clone(), v.id.clone()), v))
        .collect();
    keys.iter().filter_map(|k| by_key.remove(k)).collect()
}

/// `_include` and `_revinclude` (with `:iterate`), each resource once, never one of the matches.
async fn includes(
    ctx: &Context,
    q: &SearchQuery,
    matches: &[StoredVersion],
) -> Result<Vec<StoredVersion>, Outcome> {
    if q.includes.is_empty() && q.revincludes.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<(String, String)> = matches
        .iter()
        .map(|v| (v.resource_type.clone(), v.id.clone()))
        .collect();
    let mut out: Vec<StoredVersion> = Vec::new();
    let mut frontier: Vec<(String, String)> = seen.iter().cloned().collect();
    frontier.sort();
    let max = ctx.limits.included;
    for round in 0..=MAX_ITERATIONS {
        // rows already seen count against the store's limit; what is new is cut to `max`
        let limit = max.saturating_sub(out.len()) + seen.len();
        let mut wanted: Vec<(String, String)> = Vec::new();
        let active = |i: &&Include| round == 0 || i.iterate;
        for inc in q.includes.iter().filter(active) {
            let sources: Vec<(String, String)> = frontier
                .iter()
                .filter(|(t, _)| inc.source_type == "*" || *t == inc.source_type)
                .cloned()
                .collect();
            if sources.is_empty() {
                continue;
            }
            let found = ctx
                .store
                .include_targets(
                    &sources,
                    inc.param.as_deref(),
                    inc.target_type.as_deref(),
                    limit,
                )
                .await?;
            wanted.extend(found);
        }
        for inc in q.revincludes.iter().filter(active) {
            if frontier.is_empty() {
                break;
            }
            let source = (inc.source_type != "*").then_some(inc.source_type.as_str());
            let found = ctx
                .store
                .revinclude_sources(&frontier, source, inc.param.as_deref(), limit)
                .await?;
            wanted.extend(found.into_iter().filter(|(t, _)| {
                inc.target_type.is_none() || inc.target_type.as_deref() == Some(t)
            }));
        }
        wanted.retain(|k| seen.insert(k.clone()));
        wanted.truncate(max.saturating_sub(out.len()));
        if wanted.is_empty() {
            break;
        }
        // only what the token may read is included, and only that is followed further
        let mut versions =
            permitted(ctx, ordered(ctx.store.read_many(&wanted).await?, &wanted)).await?;
        frontier = versions
            .iter()
            .map(|v| (v.resource_type.clone(), v.id.clone()))
            .collect();
        out.append(&mut versions);
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// The filters of a search of `resource_type` by `pairs` as the request's token may read it:
/// the query parsed strictly, its chains and `_has` confined, the guard's filters joined and
/// value sets resolved — what a bulk export runs per type.
pub(crate) async fn export_filters(
    ctx: &Context,
    registry: &SearchParameters,
    resource_type: &str,
    pairs: &[(String, String)],
) -> Result<Vec<Filter>, Outcome> {
    ctx.guard.require(Perm::Read, resource_type)?;
    let types = [resource_type.to_string()];
    let mut q = query::parse_limited(registry, &types, pairs, true, None, &ctx.limits)?;
    ctx.guard.confine(registry, &mut q.filters)?;
    q.filters
        .extend(ctx.guard.filters(registry, Perm::Read, resource_type)?);
    resolve_value_sets(ctx, &mut q.filters).await?;
    Ok(q.filters)
}

/// Replaces `code:in=url` / `code:not-in=url` with the codes of the stored ValueSet, and
/// `code:above=system|code` / `code:below=…` with the codes related in the stored CodeSystem.
async fn resolve_value_sets(ctx: &Context, filters: &mut [Filter]) -> Result<(), Outcome> {
    for f in filters.iter_mut() {
        match f {
            Filter::Param { param, preds, .. }
                if param.ends_with(":in") || param.ends_with(":not-in") =>
            {
                let code = param
                    .rsplit_once(':')
                    .map(|(c, _)| c.to_string())
                    .unwrap_or_default();
                let mut codes = Vec::new();
                for p in preds.iter() {
                    let Pred::Uri(url) = p else { continue };
                    codes.extend(
                        value_set_codes(ctx, url)
                            .await
                            .map_err(|o| o.at(param.clone()))?,
                    );
                }
                *param = code;
                *preds = vec![Pred::TokenIn(codes)];
            }
            Filter::Param { param, preds, .. }
                if param.ends_with(":above") || param.ends_with(":below") =>
            {
                let (code, modifier) = param
                    .rsplit_once(':')
                    .map(|(c, m)| (c.to_string(), m.to_string()))
                    .unwrap_or_default();
                let mut codes = Vec::new();
                for p in preds.iter() {
                    let Pred::Token {
                        system: Some(Some(system)),
                        code: Some(c),
                    } = p
                    else {
                        continue;
                    };
                    let related = code_system_closure(ctx, system, c, modifier == "above")
                        .await
                        .map_err(|o| o.at(param.clone()))?;
                    codes.extend(related.into_iter().map(|c| (Some(system.clone()), c)));
                }
                *param = code;
                *preds = vec![Pred::TokenIn(codes)];
            }
            Filter::Chain { targets, .. } => {
                for (_, inner) in targets.iter_mut() {
                    Box::pin(resolve_value_sets(
                        ctx,
                        std::slice::from_mut(inner.as_mut()),
                    ))
                    .await?;
                }
            }
            Filter::Has { filter, .. } => {
                Box::pin(resolve_value_sets(
                    ctx,
                    std::slice::from_mut(filter.as_mut()),
                ))
                .await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `code` and the codes it subsumes (`above` false: `:below`) or that subsume it (`above`:
/// `:above`) in the stored CodeSystem whose url is `system`: its nested `concept` tree and
/// `parent`/`child` concept properties. A code the CodeSystem does not define matches itself.
async fn code_system_closure(
    ctx: &Context,
    system: &str,
    code: &str,
    above: bool,
) -> Result<Vec<String>, Outcome> {
    let Some(body) = stored_by_url(ctx, "CodeSystem", system).await? else {
        return Err(Outcome::bad_request(format!(
            "No CodeSystem with url '{}' is stored on this server (:above and :below follow \
             a stored CodeSystem's hierarchy)",
            system.chars().take(100).collect::<String>()
        )));
    };
    // child → parents, from nesting and from parent/child properties
    let mut parents: Vec<(String, String)> = Vec::new();
    fn walk(concepts: &Value, parent: Option<&str>, out: &mut Vec<(String, String)>) {
        for c in concepts.as_array().into_iter().flatten() {
            let Some(code) = c.get("code").and_then(Value::as_str) else {
                continue;
            };
            if let Some(p) = parent {
                out.push((code.to_string(), p.to_string()));
            }
            for prop in c
                .get("property")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let value = prop.get("valueCode").and_then(Value::as_str);
                match (prop.get("code").and_then(Value::as_str), value) {
                    (Some("parent"), Some(v)) => out.push((code.to_string(), v.to_string())),
                    (Some("child"), Some(v)) => out.push((v.to_string(), code.to_string())),
                    _ => {}
                }
            }
            if let Some(children) = c.get("concept") {
                walk(children, Some(code), out);
            }
        }
    }
    if let Some(concepts) = body.get("concept") {
        walk(concepts, None, &mut parents);
    }
    // the transitive closure from `code`, guarded against cycles
    let mut out = vec![code.to_string()];
    let mut i = 0;
    while let Some(current) = out.get(i).cloned() {
        for (child, parent) in &parents {
            let next = if above {
                (child == &current).then_some(parent)
            } else {
                (parent == &current).then_some(child)
            };
            if let Some(n) = next
                && !out.contains(n)
            {
                out.push(n.clone());
            }
        }
        i += 1;
    }
    Ok(out)
}

/// The body of the stored resource of `resource_type` whose `url` is `url`.
pub(super) async fn stored_by_url(
    ctx: &Context,
    resource_type: &str,
    url: &str,
) -> Result<Option<Value>, Outcome> {
    let types = [resource_type.to_string()];
    let filters = [Filter::Param {
        param: "url".to_string(),
        preds: vec![Pred::Uri(url.to_string())],
        negate: false,
    }];
    let hits = ctx
        .store
        .search(&SearchSpec {
            types: &types,
            filters: &filters,
            sort: &[],
            anchor: None,
            backwards: false,
            limit: 1,
            forms: &[],
        })
        .await?;
    let Some(hit) = hits.first() else {
        return Ok(None);
    };
    let Some(found) = ctx.store.read(&hit.resource_type, &hit.id).await? else {
        return Ok(None);
    };
    Ok(Some(
        Body::Raw(found.body.unwrap_or_else(|| "{}".into())).to_value()?,
    ))
}

/// The (system, code) pairs a stored ValueSet names: its expansion and the concepts listed
/// in compose.include (filters and whole-system includes need a terminology server).
async fn value_set_codes(
    ctx: &Context,
    url: &str,
) -> Result<Vec<(Option<String>, String)>, Outcome> {
    let Some(body) = stored_by_url(ctx, "ValueSet", url).await? else {
        return Err(Outcome::bad_request(format!(
            "No ValueSet with url '{}' is stored on this server",
            url.chars().take(100).collect::<String>()
        )));
    };
    let mut codes = Vec::new();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    fn walk(v: &Value, out: &mut Vec<(Option<String>, String)>) {
        for c in v
            .get("contains")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(code) = c.get("code").and_then(Value::as_str) {
                out.push((
                    c.get("system").and_then(Value::as_str).map(str::to_string),
                    code.to_string(),
                ));
            }
            walk(c, out);
        }
    }
    if let Some(exp) = body.get("expansion") {
        walk(exp, &mut codes);
    }
    for inc in body
        .pointer("/compose/include")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let system = s(inc, "system");
        for c in inc
            .get("concept")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(code) = s(c, "code") {
                codes.push((system.clone(), code));
            }
        }
    }
    Ok(codes)
}

/// One Bundle entry, shaped by `_summary`/`_elements`.
fn entry(
    ctx: &Context,
    base: &str,
    v: &StoredVersion,
    mode: &str,
    q: &SearchQuery,
) -> Result<Value, Outcome> {
    let body = v.body.clone().unwrap_or_else(|| "{}".into());
    let resource = Body::Raw(body).to_value()?;
    let resource = shape(ctx, resource, q.summary, q.elements.as_deref());
    Ok(json!({
        "fullUrl": format!("{base}/{}/{}", v.resource_type, v.id),
        "resource": resource,
        "search": {"mode": mode},
    }))
}

/// Applies `_summary` (true, text, data) or `_elements`, tagging the result SUBSETTED.
pub fn shape(
    ctx: &Context,
    resource: Value,
    summary: Option<Summary>,
    elements: Option<&[String]>,
) -> Value {
    let Value::Object(map) = resource else {
        return resource;
    };
    let rt = map
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let always = |k: &str| matches!(k, "resourceType" | "id" | "meta");
    let mandatory = |k: &str| {
        let name = k.trim_start_matches('_');
        ctx.defs
            .property(&rt, name)
            .is_some_and(|p| p.element.min > 0)
    };
    let keep: Box<dyn Fn(&str) -> bool> = match (summary, elements) {
        (Some(Summary::True), _) => Box::new(|k: &str| {
            let name = k.trim_start_matches('_');
            always(k)
                || ctx
                    .defs
                    .property(&rt, name)
                    .is_some_and(|p| p.element.summary)
        }),
        (Some(Summary::Text), _) => Box::new(|k: &str| always(k) || k == "text" || mandatory(k)),
        (Some(Summary::Data), _) => Box::new(|k: &str| k != "text"),
        (_, Some(list)) => Box::new(move |k: &str| {
            always(k) || mandatory(k) || list.iter().any(|e| e == k.trim_start_matches('_'))
        }),
        _ => return Value::Object(map),
    };
    let mut out = Map::new();
    for (k, v) in map.iter() {
        if keep(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    drop(keep);
    let meta = out.entry("meta").or_insert_with(|| json!({}));
    if let Value::Object(m) = meta {
        let tags = m.entry("tag").or_insert_with(|| json!([]));
        if let Value::Array(a) = tags {
            a.push(json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "subsetted"
            }));
        }
    }
    Value::Object(out)
}
