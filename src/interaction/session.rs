//! A write session: one database transaction that one REST write or a whole transaction
//! Bundle runs in. It remembers what was written and deleted so that, before commit, it can
//! enforce referential integrity (every local reference resolves; nothing live references a
//! deleted resource, unless `_cascade=delete` deletes the referrers too) and name the failing
//! Bundle entry in every error.

use super::Context;
use super::registry::Registry;
use super::write::delete_version;
use crate::fhir::outcome::{ErrorKind, Issue, Outcome};
use crate::fhir::types::VersionId;
use crate::search::index::LinkRow;
use crate::search::parameters::SearchParameters;
use crate::store::Transaction;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Resources `_cascade=delete` may remove in one request.
const MAX_CASCADE: usize = 1000;

struct Written {
    resource_type: String,
    id: String,
    links: Vec<LinkRow>,
    entry: Option<String>,
}

/// A position in a session's record (see [`Session::mark`]).
#[derive(Debug, Default, Clone)]
pub struct Mark {
    written: usize,
    deleted: usize,
    versions: usize,
}

pub struct Session {
    tx: Box<dyn Transaction>,
    /// What the request may write (and read back).
    pub guard: super::guard::Guard,
    /// The search parameters index rows are written for.
    pub registry: Arc<SearchParameters>,
    registries: Arc<Registry>,
    /// A SearchParameter was written: reload the registry after commit.
    registry_changed: bool,
    pub base: String,
    integrity: bool,
    cascade: bool,
    entry: Option<String>,
    written: Vec<Written>,
    deleted: Vec<(String, String, Option<String>)>,
    /// Every version written, in order: (type, id, version).
    pub versions: Vec<(String, String, VersionId)>,
    /// The patients each version written concerns (parallel to `versions`), for the audit.
    pub patients: Vec<Vec<String>>,
}

impl Session {
    pub async fn begin(ctx: &Context, base: &str) -> Result<Session, Outcome> {
        let loaded = ctx.registry.current(ctx.store.as_ref()).await?;
        Ok(Session {
            guard: ctx.guard.clone(),
            registry: loaded.params,
            registries: ctx.registry.clone(),
            registry_changed: false,
            tx: ctx.store.begin().await?,
            base: base.to_string(),
            integrity: ctx.integrity,
            cascade: false,
            entry: None,
            written: Vec::new(),
            deleted: Vec::new(),
            versions: Vec::new(),
            patients: Vec::new(),
        })
    }

    pub fn tx(&mut self) -> &mut dyn Transaction {
        self.tx.as_mut()
    }

    /// Deletes in this session also delete the resources that reference what they delete.
    pub fn cascade_deletes(&mut self, on: bool) {
        self.cascade = on;
    }

    /// Names the Bundle entry being processed (`Bundle.entry[3]`), for error locations.
    pub fn set_entry(&mut self, entry: Option<String>) {
        self.entry = entry;
    }

    pub(super) fn record_write(
        &mut self,
        resource_type: &str,
        id: &str,
        version: VersionId,
        links: Vec<LinkRow>,
        patients: Vec<String>,
    ) {
        self.versions
            .push((resource_type.to_string(), id.to_string(), version));
        self.patients.push(patients);
        self.written.push(Written {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            links,
            entry: self.entry.clone(),
        });
    }

    pub(super) fn record_delete(
        &mut self,
        resource_type: &str,
        id: &str,
        version: VersionId,
        patients: Vec<String>,
    ) {
        self.versions
            .push((resource_type.to_string(), id.to_string(), version));
        self.patients.push(patients);
        self.deleted.push((
            resource_type.to_string(),
            id.to_string(),
            self.entry.clone(),
        ));
    }

    /// Checks referential integrity and commits; on any error nothing is committed.
    pub async fn finish(mut self) -> Result<(), Outcome> {
        let start = Mark::default();
        self.check_since(&start).await?;
        self.tx.commit().await?;
        if self.registry_changed {
            self.registries.invalidate();
        }
        Ok(())
    }

    /// Notes that a SearchParameter was written or deleted.
    pub fn registry_changed(&mut self) {
        self.registry_changed = true;
    }

    /// Where the session stands, to check or undo what comes after (batch savepoints).
    pub fn mark(&self) -> Mark {
        Mark {
            written: self.written.len(),
            deleted: self.deleted.len(),
            versions: self.versions.len(),
        }
    }

    /// Forgets what was recorded after `mark` (its writes were rolled back).
    pub fn reset(&mut self, mark: Mark) {
        self.written.truncate(mark.written);
        self.deleted.truncate(mark.deleted);
        self.versions.truncate(mark.versions);
        self.patients.truncate(mark.versions);
    }

    /// Referential integrity of what was written and deleted since `mark`.
    pub async fn check_since(&mut self, mark: &Mark) -> Result<(), Outcome> {
        if self.integrity {
            self.check_deletes(mark.deleted).await?;
            self.check_references(mark.written).await?;
        }
        Ok(())
    }

    /// Nothing live may reference a deleted resource (or, cascading, referrers go too).
    async fn check_deletes(&mut self, from: usize) -> Result<(), Outcome> {
        let mut i = from;
        while let Some((rt, id, entry)) = self.deleted.get(i).cloned() {
            i += 1;
            let referrers = self.tx.referrers(&rt, &id, 100).await?;
            let referrers: Vec<(String, String)> = referrers
                .into_iter()
                .filter(|(t, rid)| !(t == &rt && rid == &id))
                .collect();
            if referrers.is_empty() {
                continue;
            }
            // a confined token learns nothing of referrers it may not read: not their names,
            // not their number
            let readable = if self.guard.is_open() {
                referrers.iter().cloned().collect()
            } else {
                let (guard, registry) = (self.guard.clone(), self.registry.clone());
                let mut src = super::guard::Src::Tx(self.tx.as_mut());
                guard.readable(&mut src, &registry, &referrers).await?
            };
            let hidden = referrers.iter().any(|k| !readable.contains(k));
            if !self.cascade || hidden {
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
                if self.deleted.len() >= MAX_CASCADE {
                    return Err(Outcome::new(
                        ErrorKind::Conflict,
                        format!("_cascade=delete would delete more than {MAX_CASCADE} resources"),
                    ));
                }
                self.tx.lock_resource(&t, &rid).await?;
                if let Some(current) = self.tx.current(&t, &rid).await?
                    && !current.deleted
                {
                    let saved = self.entry.take();
                    self.entry = entry.clone();
                    delete_version(self, &current).await?;
                    self.entry = saved;
                }
            }
        }
        Ok(())
    }

    /// Every local reference of every resource written (and still live) must resolve.
    async fn check_references(&mut self, from: usize) -> Result<(), Outcome> {
        let mut live: HashMap<(String, String), bool> = HashMap::new();
        let mut issues = Vec::new();
        let written = std::mem::take(&mut self.written);
        // one batched lookup for every resource written and every unversioned target
        let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
        for w in written.iter().skip(from) {
            wanted.insert((w.resource_type.clone(), w.id.clone()));
            for l in w.links.iter().filter(|l| l.version.is_none()) {
                wanted.insert((l.target_type.clone(), l.target_id.clone()));
            }
        }
        let wanted: Vec<(String, String)> = wanted.into_iter().collect();
        let found: BTreeSet<(String, String)> = match self.tx.live_among(&wanted).await {
            Ok(f) => f.into_iter().collect(),
            Err(e) => {
                self.written = written;
                return Err(e.into());
            }
        };
        // a reference to what the token may not read resolves no more than one to nothing
        let found = if self.guard.is_open() {
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
            let (guard, registry) = (self.guard.clone(), self.registry.clone());
            let mut src = super::guard::Src::Tx(self.tx.as_mut());
            match guard.readable(&mut src, &registry, &keys).await {
                Ok(mut r) => {
                    // what this session wrote is judged by the write path itself
                    r.extend(found.into_iter().filter(|k| mine.contains(k)));
                    r
                }
                Err(e) => {
                    self.written = written;
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
            if !self.is_live(&mut live, &w.resource_type, &w.id).await? {
                continue;
            }
            for l in &w.links {
                if l.target_type == w.resource_type && l.target_id == w.id {
                    continue;
                }
                let resolves = match &l.version {
                    None => {
                        self.is_live(&mut live, &l.target_type, &l.target_id)
                            .await?
                    }
                    Some(v) => match v.parse::<VersionId>() {
                        Ok(n) => self
                            .tx
                            .version(&l.target_type, &l.target_id, n)
                            .await?
                            .is_some(),
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
        self.written = written;
        if issues.is_empty() {
            Ok(())
        } else {
            Err(Outcome::with_issues(ErrorKind::Invalid, issues))
        }
    }

    async fn is_live(
        &mut self,
        cache: &mut HashMap<(String, String), bool>,
        rt: &str,
        id: &str,
    ) -> Result<bool, Outcome> {
        let key = (rt.to_string(), id.to_string());
        if let Some(&b) = cache.get(&key) {
            return Ok(b);
        }
        let b = self.tx.current(rt, id).await?.is_some_and(|c| !c.deleted);
        cache.insert(key, b);
        Ok(b)
    }
}

/// Rewrites a resource-relative FHIRPath (`Observation.subject`) to the Bundle entry it came
/// from (`Bundle.entry[3].resource.subject`); unchanged outside a Bundle.
pub fn relocate(expression: &str, entry: Option<&str>, resource_type: &str) -> String {
    let Some(entry) = entry else {
        return expression.to_string();
    };
    let rest = expression
        .strip_prefix(resource_type)
        .filter(|r| r.is_empty() || r.starts_with('.') || r.starts_with('['));
    match rest {
        Some(r) => format!("{entry}.resource{r}"),
        None if expression.is_empty() => entry.to_string(),
        None => format!("{entry}.resource.{expression}"),
    }
}

/// Points every issue of `outcome` at Bundle entry `entry` (expressions relative to the
/// entry's resource of type `resource_type`, or the entry itself).
pub fn locate(mut outcome: Outcome, entry: Option<&str>, resource_type: Option<&str>) -> Outcome {
    let Some(entry) = entry else {
        return outcome;
    };
    for issue in &mut outcome.issues {
        if issue.expression.is_empty() {
            issue.expression.push(entry.to_string());
        } else if !issue.expression.iter().any(|e| e.starts_with("Bundle.")) {
            issue.expression = issue
                .expression
                .iter()
                .map(|e| relocate(e, Some(entry), resource_type.unwrap_or("")))
                .collect();
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocation() {
        let e = Some("Bundle.entry[3]");
        assert_eq!(
            relocate("Observation.subject", e, "Observation"),
            "Bundle.entry[3].resource.subject"
        );
        assert_eq!(
            relocate("Observation", e, "Observation"),
            "Bundle.entry[3].resource"
        );
        assert_eq!(
            relocate("resourceType", e, "Observation"),
            "Bundle.entry[3].resource.resourceType"
        );
        assert_eq!(
            relocate("Observation.subject", None, "Observation"),
            "Observation.subject"
        );
        let o = locate(Outcome::bad_request("x"), e, Some("Patient"));
        assert_eq!(o.issues[0].expression, vec!["Bundle.entry[3]"]);
    }
}
