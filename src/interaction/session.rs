//! A write session: one database transaction that one REST write or a whole transaction
//! Bundle runs in. It remembers what was written and deleted, so that `integrity` can check
//! references before commit and every error can name the failing Bundle entry.

use super::Context;
use super::registry::Registry;
use crate::fhir::outcome::Outcome;
use crate::fhir::types::VersionId;
use crate::search::index::LinkRow;
use crate::search::parameters::SearchParameters;
use crate::store::Transaction;
use std::sync::Arc;

pub(super) struct Written {
    pub(super) resource_type: String,
    pub(super) id: String,
    pub(super) links: Vec<LinkRow>,
    pub(super) entry: Option<String>,
}

/// A position in a session's record (see [`Session::mark`]).
#[derive(Debug, Default, Clone)]
pub struct Mark {
    pub(super) written: usize,
    pub(super) deleted: usize,
    versions: usize,
}

pub struct Session {
    pub(super) tx: Box<dyn Transaction>,
    /// What the request may write (and read back).
    pub guard: super::guard::Guard,
    /// The search parameters index rows are written for.
    pub registry: Arc<SearchParameters>,
    registries: Arc<Registry>,
    /// A SearchParameter was written: reload the registry after commit.
    registry_changed: bool,
    pub base: String,
    pub(super) integrity: bool,
    pub(super) cascade: bool,
    /// The server's own bookkeeping write (a Subscription's status): client rules skipped.
    pub(super) internal: bool,
    pub(super) entry: Option<String>,
    pub(super) written: Vec<Written>,
    pub(super) deleted: Vec<(String, String, Option<String>)>,
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
            internal: false,
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

    /// Commits what was written, unchecked: `integrity::finish` checks first.
    pub(super) async fn commit(mut self) -> Result<(), Outcome> {
        if self.registry_changed {
            // every node sharing the database reloads before its next search or write
            self.tx.params().bump_registry_generation().await?;
        }
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
