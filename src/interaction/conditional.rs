//! Conditional interactions, once for all: criteria → at most one live resource, resolved
//! inside the caller's transaction and serialized on a lock named after the criteria.

use super::session::Session;
use crate::auth::Perm;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::search::criteria;

/// The id of the one live resource matching `query`, None for no match, 412 for several.
/// Criteria only see what the request's token may read (a confined token cannot probe, match
/// or count resources outside its reach).
pub(super) async fn resolve(
    s: &mut Session,
    resource_type: &str,
    query: &str,
) -> Result<Option<String>, Outcome> {
    let criteria = criteria::parse(resource_type, query)?;
    let lock = criteria::lock_key(resource_type, &criteria);
    let criteria = s
        .guard
        .criteria(&s.registry, Perm::Read, resource_type, criteria)?;
    let tx = s.tx();
    tx.lock_key(&lock).await?;
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
