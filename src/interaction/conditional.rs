//! Conditional interactions, once for all: criteria → at most one live resource, resolved
//! inside the caller's transaction and serialized on a lock named after the criteria.

use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::search::criteria;
use crate::store::Transaction;

/// The id of the one live resource matching `query`, None for no match, 412 for several.
pub(super) async fn resolve(
    tx: &mut dyn Transaction,
    resource_type: &str,
    query: &str,
) -> Result<Option<String>, Outcome> {
    let criteria = criteria::parse(resource_type, query)?;
    tx.lock_key(&criteria::lock_key(resource_type, &criteria))
        .await?;
    let mut ids = tx.find(resource_type, &criteria, 2).await?;
    match ids.len() {
        0 => Ok(None),
        1 => Ok(ids.pop()),
        _ => Err(Outcome::new(
            ErrorKind::MultipleMatches,
            format!("The criteria match more than one {resource_type}"),
        )),
    }
}
