//! Criteria of conditional interactions (If-None-Exist, conditional update/patch/delete,
//! conditional references): any search criteria, parsed strictly — an unknown parameter is
//! an error here, since ignoring it could match (and overwrite or delete) the wrong resource.

use crate::fhir::outcome::Outcome;
use crate::search::parameters::SearchParameters;
use crate::search::query::{self, Filter};

/// Parses a criteria query string (`identifier=http://x|123&birthdate=1970`) for `resource_type`.
pub fn parse(resource_type: &str, query: &str) -> Result<Vec<Filter>, Outcome> {
    let query = query.trim_start_matches('?');
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| Outcome::bad_request("The criteria are not a valid query string"))?;
    let parsed = query::parse(
        SearchParameters::r4(),
        &[resource_type.to_string()],
        &pairs,
        true,
    )?;
    if parsed.filters.is_empty() {
        return Err(Outcome::bad_request(
            "A conditional interaction needs at least one criterion",
        ));
    }
    if parsed.filters.iter().any(uses_value_sets) {
        return Err(Outcome::bad_request(
            "Conditional criteria cannot use :in, :not-in, or :above/:below on a token \
             (they need the store's ValueSets and CodeSystems)",
        ));
    }
    Ok(parsed.filters)
}

fn uses_value_sets(f: &Filter) -> bool {
    match f {
        Filter::Param { param, .. } => [":in", ":not-in", ":above", ":below"]
            .iter()
            .any(|m| param.ends_with(m)),
        Filter::Chain { targets, .. } => targets.iter().any(|(_, f)| uses_value_sets(f)),
        Filter::Has { filter, .. } => uses_value_sets(filter),
        _ => false,
    }
}

/// A canonical form of the criteria, used as a lock key for conditional creates.
pub fn lock_key(resource_type: &str, criteria: &[Filter]) -> String {
    format!("{resource_type}?{criteria:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_criteria_strictly() {
        assert_eq!(
            parse("Patient", "identifier=http://x|1,|2&_id=a")
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse("Patient", "name=x&birthdate=ge1970&_format=json")
                .unwrap()
                .len(),
            2
        );
        assert!(parse("Patient", "bogus=x").is_err());
        assert!(parse("Patient", "").is_err());
        assert!(parse("Patient", "_format=json").is_err());
        assert!(parse("Patient", "identifier=").is_err());
        assert!(parse("Observation", "code:in=http://vs").is_err());
        assert!(parse("Observation", "code:below=http://loinc.org|x").is_err());
        // uri :below is a plain index match
        assert!(parse("ValueSet", "url:below=http://example.org").is_ok());
    }
}
