//! The search-parameter registry a node works with: R4's parameters plus the custom
//! SearchParameter resources in the store, and which custom parameters still wait for a
//! reindex. [`Registry::current`] compares the store's registry generation (bumped in the
//! transaction of every change) with the one it loaded, so stateless nodes sharing one
//! database know each other's parameters from the moment they are committed;
//! [`Registry::cached`] trusts what it loaded for a few seconds, for the access policy (whose
//! parameters are built in).

use crate::fhir::outcome::Outcome;
use crate::search::parameters::{SearchParameters, custom_from_resource};
use crate::store::{SearchSpec, Store};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a loaded registry is trusted before it is reloaded from the store.
const RELOAD_AFTER: Duration = Duration::from_secs(5);
/// Custom SearchParameter resources read, at most.
const MAX_CUSTOM: u32 = 10_000;

/// A loaded registry and the (base, code) pairs whose index is not complete.
#[derive(Clone)]
pub struct Loaded {
    pub params: Arc<SearchParameters>,
    pub pending: Arc<HashSet<(String, String)>>,
}

pub struct Registry {
    /// What was loaded, when, and the store's generation it was loaded at.
    inner: RwLock<(Loaded, Option<Instant>, i64)>,
    /// The SearchParameters every node knows: the credit extension's.
    builtin: Vec<serde_json::Value>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::for_catalog(&crate::finance::catalog::Catalog::standard())
    }

    /// R4's parameters and those of the credit extension's `catalog`.
    pub fn for_catalog(catalog: &crate::finance::catalog::Catalog) -> Registry {
        let builtin: Vec<serde_json::Value> = catalog.search_parameters().cloned().collect();
        let loaded = Loaded {
            params: Arc::new(
                SearchParameters::r4()
                    .with_custom(builtin.iter().filter_map(custom_from_resource).collect()),
            ),
            pending: Arc::new(HashSet::new()),
        };
        Registry {
            inner: RwLock::new((loaded, None, -1)),
            builtin,
        }
    }

    /// What was loaded last, without asking the store.
    pub fn snapshot(&self) -> Loaded {
        match self.inner.read() {
            Ok(g) => g.0.clone(),
            Err(p) => p.into_inner().0.clone(),
        }
    }

    /// The next [`Registry::current`] or [`Registry::cached`] reloads.
    pub fn invalidate(&self) {
        match self.inner.write() {
            Ok(mut g) => g.1 = None,
            Err(p) => p.into_inner().1 = None,
        }
    }

    /// The registry as committed now: reloaded when the store's generation moved (one small
    /// query per call).
    pub async fn current(&self, store: &dyn Store) -> Result<Loaded, Outcome> {
        let generation = match store.registry_generation().await {
            Ok(g) => g,
            // the database did not answer that small query (a statement timeout, a pool at
            // its limit): what was loaded a moment ago serves, as before generations existed
            Err(e) => match self.inner.read() {
                Ok(g) if g.1.is_some_and(|at| at.elapsed() < RELOAD_AFTER) => {
                    return Ok(g.0.clone());
                }
                _ => return Err(e.into()),
            },
        };
        let fresh = match self.inner.read() {
            Ok(g) => g.1.is_some() && g.2 == generation,
            Err(_) => false,
        };
        if fresh {
            return Ok(self.snapshot());
        }
        self.reload(store, generation).await
    }

    /// The registry, trusted for a few seconds after it was loaded: enough for R4's and the
    /// access policy's parameters, which never change while the server runs.
    pub async fn cached(&self, store: &dyn Store) -> Result<Loaded, Outcome> {
        let fresh = match self.inner.read() {
            Ok(g) => g.1.is_some_and(|at| at.elapsed() < RELOAD_AFTER),
            Err(_) => false,
        };
        if fresh {
            return Ok(self.snapshot());
        }
        let generation = store.registry_generation().await?;
        self.reload(store, generation).await
    }

    /// Loads the registry, as of `generation` (read before the load: a change committed
    /// meanwhile makes the next call load again).
    async fn reload(&self, store: &dyn Store, generation: i64) -> Result<Loaded, Outcome> {
        let loaded = load(store, &self.builtin).await?;
        match self.inner.write() {
            Ok(mut g) => *g = (loaded.clone(), Some(Instant::now()), generation),
            Err(p) => *p.into_inner() = (loaded.clone(), Some(Instant::now()), generation),
        }
        Ok(loaded)
    }
}

async fn load(store: &dyn Store, builtin: &[serde_json::Value]) -> Result<Loaded, Outcome> {
    let types = ["SearchParameter".to_string()];
    let hits = store
        .search(&SearchSpec {
            types: &types,
            filters: &[],
            sort: &[],
            anchor: None,
            backwards: false,
            limit: MAX_CUSTOM,
            forms: &[],
        })
        .await?;
    let keys: Vec<(String, String)> = hits.into_iter().map(|h| (h.resource_type, h.id)).collect();
    let mut custom = Vec::new();
    for v in store.read_many(&keys).await? {
        let Some(body) = v.body else { continue };
        if let Ok(json) = serde_json::from_str(&body)
            && let Some(c) = custom_from_resource(&json)
        {
            custom.push(c);
        }
    }
    custom.extend(builtin.iter().filter_map(custom_from_resource));
    let params = SearchParameters::r4().with_custom(custom);
    let mut active: HashSet<(String, String)> = params.custom().into_iter().collect();
    active.extend(params.internal());
    let pending = store
        .param_states()
        .await?
        .into_iter()
        .filter(|(_, _, status)| status != "ready")
        .map(|(base, code, _)| (base, code))
        .filter(|k| active.contains(k))
        .collect();
    Ok(Loaded {
        params: Arc::new(params),
        pending: Arc::new(pending),
    })
}
