//! Where access checks read: the store, or the write's own transaction (so that a check
//! sees what that transaction wrote). The guard and the role reach both read through it.

use crate::fhir::outcome::Outcome;
use crate::search::query::Filter;
use crate::store::{SearchSpec, Store, StoredVersion, Transaction};

/// A filter that matches nothing.
pub fn nothing() -> Filter {
    Filter::Id {
        ids: Vec::new(),
        negate: true,
    }
}

/// Where a guard reads what it needs to decide: the store, or a write transaction (which
/// sees its own writes).
pub enum Src<'a> {
    Store(&'a dyn Store),
    Tx(&'a mut dyn Transaction),
}

impl Src<'_> {
    /// Ids of live `resource_type` resources matching every filter (at most `limit`).
    pub async fn find(
        &mut self,
        resource_type: &str,
        filters: &[Filter],
        limit: u32,
    ) -> Result<Vec<String>, Outcome> {
        match self {
            Src::Tx(tx) => Ok(tx.find(resource_type, filters, limit).await?),
            Src::Store(store) => {
                let types = [resource_type.to_string()];
                let hits = store
                    .search(&SearchSpec {
                        types: &types,
                        filters,
                        sort: &[],
                        anchor: None,
                        backwards: false,
                        limit,
                        forms: &[],
                    })
                    .await?;
                Ok(hits.into_iter().map(|h| h.id).collect())
            }
        }
    }

    pub(super) async fn version(
        &mut self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<StoredVersion>, Outcome> {
        match self {
            Src::Tx(tx) => Ok(tx.version(resource_type, id, version).await?),
            Src::Store(store) => Ok(store.vread(resource_type, id, version).await?),
        }
    }

    pub(super) async fn current(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredVersion>, Outcome> {
        match self {
            Src::Tx(tx) => Ok(tx.current(resource_type, id).await?),
            Src::Store(store) => Ok(store.read(resource_type, id).await?),
        }
    }
}
