//! Referential integrity, checked before a session commits: every local reference of what
//! was written resolves, and nothing live references what was deleted — unless
//! `_cascade=delete` deletes the referrers too (through the write path).

use super::session::{Mark, Session, locate, relocate};
use super::write::delete_version;
use crate::fhir::outcome::{ErrorKind, Issue, Outcome};
use crate::fhir::types::VersionId;
use std::collections::{BTreeSet, HashMap};

/// Resources `_cascade=delete` may remove in one request.
const MAX_CASCADE: usize = 1000;

/// Checks referential integrity and commits; on any error nothing is committed.
pub async fn finish(mut s: Session) -> Result<(), Outcome> {
    check_since(&mut s, &Mark::default()).await?;
    s.commit().await
}

/// Referential integrity of what was written and deleted since `mark`.
pub async fn check_since(s: &mut Session, mark: &Mark) -> Result<(), Outcome> {
    if s.integrity {
        check_deletes(s, mark.deleted).await?;
        check_references(s, mark.written).await?;
    }
    Ok(())
}

/// Nothing live may reference a deleted resource (or, cascading, referrers go too).
async fn check_deletes(s: &mut Session, from: usize) -> Result<(), Outcome> {
    let mut i = from;
    while let Some((rt, id, entry)) = s.deleted.get(i).cloned() {
        i += 1;
        let referrers = s.tx.referrers(&rt, &id, 100).await?;
        let referrers: Vec<(String, String)> = referrers
            .into_iter()
            .filter(|(t, rid)| !(t == &rt && rid == &id))
            .collect();
        if referrers.is_empty() {
            continue;
        }
        // a confined token learns nothing of referrers it may not read: not their names,
        // not their number
        let readable = if s.guard.is_open() {
            referrers.iter().cloned().collect()
        } else {
            let (guard, registry) = (s.guard.clone(), s.registry.clone());
            let mut src = super::guard::Src::Tx(s.tx.as_mut());
            guard.readable(&mut src, &registry, &referrers).await?
        };
        let hidden = referrers.iter().any(|k| !readable.contains(k));
        if !s.cascade || hidden {
            let names: Vec<String> = referrers
                .iter()
                .filter(|k| readable.contains(*k))
                .take(10)
                .map(|(t, rid)| format!("{t}/{rid}"))
                .collect();
            let by = match (names.is_empty(), hidden) {
                (false, false) => format!(
                    "{}{}",
                    names.join(", "),
                    if referrers.len() > 10 { ", …" } else { "" }
                ),
                (false, true) => format!(
                    "{} and resources outside what this token may access",
                    names.join(", ")
                ),
                _ => "resources outside what this token may access".to_string(),
            };
            let advice = if hidden {
                "they must be deleted first"
            } else {
                "delete those first or use _cascade=delete"
            };
            let o = Outcome::new(
                ErrorKind::Conflict,
                format!("{rt}/{id} is referenced by {by}; {advice}"),
            );
            return Err(locate(o, entry.as_deref(), None));
        }
        for (t, rid) in referrers {
            if s.deleted.len() >= MAX_CASCADE {
                return Err(Outcome::new(
                    ErrorKind::Conflict,
                    format!("_cascade=delete would delete more than {MAX_CASCADE} resources"),
                ));
            }
            s.tx.lock_resource(&t, &rid).await?;
            if let Some(current) = s.tx.current(&t, &rid).await?
                && !current.deleted
            {
                let saved = s.entry.take();
                s.entry = entry.clone();
                delete_version(s, &current).await?;
                s.entry = saved;
            }
        }
    }
    Ok(())
}

/// Every local reference of every resource written (and still live) must resolve.
async fn check_references(s: &mut Session, from: usize) -> Result<(), Outcome> {
    let mut live: HashMap<(String, String), bool> = HashMap::new();
    let mut issues = Vec::new();
    let written = std::mem::take(&mut s.written);
    // one batched lookup for every resource written and every unversioned target
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    for w in written.iter().skip(from) {
        wanted.insert((w.resource_type.clone(), w.id.clone()));
        for l in w.links.iter().filter(|l| l.version.is_none()) {
            wanted.insert((l.target_type.clone(), l.target_id.clone()));
        }
    }
    let wanted: Vec<(String, String)> = wanted.into_iter().collect();
    let found: BTreeSet<(String, String)> = match s.tx.live_among(&wanted).await {
        Ok(f) => f.into_iter().collect(),
        Err(e) => {
            s.written = written;
            return Err(e.into());
        }
    };
    // a reference to what the token may not read resolves no more than one to nothing
    let found = if s.guard.is_open() {
        found
    } else {
        let mine: BTreeSet<(String, String)> = written
            .iter()
            .skip(from)
            .map(|w| (w.resource_type.clone(), w.id.clone()))
            .collect();
        let keys: Vec<(String, String)> = found
            .iter()
            .filter(|k| !mine.contains(*k))
            .cloned()
            .collect();
        let (guard, registry) = (s.guard.clone(), s.registry.clone());
        let mut src = super::guard::Src::Tx(s.tx.as_mut());
        match guard.readable(&mut src, &registry, &keys).await {
            Ok(mut r) => {
                // what this session wrote is judged by the write path itself
                r.extend(found.into_iter().filter(|k| mine.contains(k)));
                r
            }
            Err(e) => {
                s.written = written;
                return Err(e);
            }
        }
    };
    for k in wanted {
        let is_live = found.contains(&k);
        live.insert(k, is_live);
    }
    let mut seen = BTreeSet::new();
    for w in written.iter().skip(from).rev() {
        if !seen.insert((w.resource_type.clone(), w.id.clone())) {
            continue; // an earlier write of the same resource was superseded
        }
        if !is_live(s, &mut live, &w.resource_type, &w.id).await? {
            continue;
        }
        for l in &w.links {
            if l.target_type == w.resource_type && l.target_id == w.id {
                continue;
            }
            let resolves = match &l.version {
                None => is_live(s, &mut live, &l.target_type, &l.target_id).await?,
                Some(v) => match v.parse::<VersionId>() {
                    Ok(n) => {
                        s.tx.version(&l.target_type, &l.target_id, n)
                            .await?
                            .is_some()
                    }
                    Err(_) => false,
                },
            };
            if resolves {
                continue;
            }
            let issue = Issue::error(
                "not-found",
                format!(
                    "The reference {}/{}{} does not resolve to a resource on this server",
                    l.target_type,
                    l.target_id,
                    l.version
                        .as_deref()
                        .map(|v| format!("/_history/{v}"))
                        .unwrap_or_default()
                ),
            )
            .at(relocate(
                &l.expression,
                w.entry.as_deref(),
                &w.resource_type,
            ));
            issues.push(issue);
        }
    }
    s.written = written;
    if issues.is_empty() {
        Ok(())
    } else {
        Err(Outcome::with_issues(ErrorKind::Invalid, issues))
    }
}

async fn is_live(
    s: &mut Session,
    cache: &mut HashMap<(String, String), bool>,
    rt: &str,
    id: &str,
) -> Result<bool, Outcome> {
    let key = (rt.to_string(), id.to_string());
    if let Some(&b) = cache.get(&key) {
        return Ok(b);
    }
    let b = s.tx.current(rt, id).await?.is_some_and(|c| !c.deleted);
    cache.insert(key, b);
    Ok(b)
}
