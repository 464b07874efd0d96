//! Live updates of the web app's pages: which resource types changed, since a position of
//! the change feed, in ways a principal may see. Each changed version is judged by the
//! principal's Guard on its own content (a deletion by the version before it), exactly as a
//! Subscription's owner is, so a page learns only "something you may read changed" — never
//! what, and nothing about resources outside its reach. Nothing is read as the user, so
//! nothing is audited here: the page the browser then reloads is.

use super::Context;
use super::guard::Guard;
use super::reader::Src;
use crate::auth::{Perm, Principal};
use crate::fhir::outcome::Outcome;
use std::collections::BTreeSet;

/// How many changes one look reads at most (a busier feed is read over several looks).
const BATCH: u32 = 500;

/// What changed since a position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The position to look from next time.
    pub position: i64,
    /// The watched types of which a version the principal may read changed.
    pub types: BTreeSet<String>,
}

/// The change feed's current position (where a new page starts watching).
pub async fn position(ctx: &Context) -> Result<i64, Outcome> {
    Ok(ctx.store.change_head().await?)
}

/// The watched types changed after `after` that `principal` may read.
pub async fn changes(
    ctx: &Context,
    principal: &Principal,
    base: &str,
    after: i64,
    watch: &[&str],
) -> Result<Changes, Outcome> {
    let store = ctx.store.as_ref();
    let batch = store.changes(after, BATCH).await?;
    let Some(last) = batch.last().map(|(p, _)| *p) else {
        return Ok(Changes {
            position: after,
            types: BTreeSet::new(),
        });
    };
    let mut types = BTreeSet::new();
    let relevant: Vec<_> = batch
        .iter()
        .filter(|(_, v)| watch.contains(&v.resource_type.as_str()))
        .collect();
    if relevant.is_empty() {
        return Ok(Changes {
            position: last,
            types,
        });
    }
    let guard = Guard::load(store, Some(principal.clone()), base).await?;
    let registry = ctx.registry.current(store).await?.params;
    for (_, v) in relevant {
        if types.contains(&v.resource_type) || guard.require(Perm::Read, &v.resource_type).is_err()
        {
            continue;
        }
        let mut src = Src::Store(store);
        let judged = if v.deleted {
            src.version(&v.resource_type, &v.id, v.version - 1).await?
        } else {
            Some(v.clone())
        };
        let Some(judged) = judged else { continue };
        if guard
            .version_visible(&mut src, &registry, Perm::Read, &judged)
            .await?
        {
            types.insert(v.resource_type.clone());
        }
    }
    Ok(Changes {
        position: last,
        types,
    })
}
