//! Search predicates evaluated in memory against one version's index rows — the same
//! semantics as the SQL the store compiles (store/search.rs), for versions that have no rows
//! in the index: an old version served by vread or history, the last live version of a
//! deleted resource, content about to be written. The access Guard uses it to decide whether
//! such a version lies within a token's reach. Filters that reach other resources (chains,
//! `_has`, `_list`, compartments) are the Guard's to evaluate; here they do not match.

use crate::search::index::{IndexRows, ReferenceRow};
use crate::search::query::{Filter, Pred, Prefix, StrMatch, Table};

/// Whether any row of `param` matches one of `preds` (negated: none does).
pub fn param_matches(rows: &IndexRows, param: &str, preds: &[Pred], negate: bool) -> bool {
    let any = preds.iter().any(|p| pred_matches(rows, param, p));
    any != negate
}

/// Whether `param` has rows in any of `tables` (`:missing=false`).
pub fn has_rows(rows: &IndexRows, param: &str, tables: &[Table]) -> bool {
    tables.iter().any(|t| match t {
        Table::String => rows.strings.iter().any(|r| r.param == param),
        Table::Token => rows.tokens.iter().any(|r| r.param == param),
        Table::Reference => rows.references.iter().any(|r| r.param == param),
        Table::Date => rows.dates.iter().any(|r| r.param == param),
        Table::Number => rows.numbers.iter().any(|r| r.param == param),
        Table::Quantity => rows.quantities.iter().any(|r| r.param == param),
        Table::Uri => rows.uris.iter().any(|r| r.param == param),
    })
}

/// The reference rows of `param`.
pub fn references<'a>(
    rows: &'a IndexRows,
    param: &'a str,
) -> impl Iterator<Item = &'a ReferenceRow> {
    rows.references.iter().filter(move |r| r.param == param)
}

/// Evaluates the parts of `filter` that need nothing but the version itself: ids, types,
/// `_lastUpdated`, parameter values and `:missing`, combined with AND/OR. None when the
/// filter reaches other resources (the caller decides those).
pub fn local_matches(
    filter: &Filter,
    resource_type: &str,
    id: &str,
    last_updated: i64,
    rows: &IndexRows,
) -> Option<bool> {
    Some(match filter {
        Filter::Id { ids, negate } => {
            if ids.is_empty() {
                // the engine's convention: an empty negated list matches nothing
                !*negate
            } else {
                ids.iter().any(|i| i == id) != *negate
            }
        }
        Filter::OfType(types) => types.iter().any(|t| t == resource_type),
        Filter::LastUpdated(preds) => preds.iter().any(|p| match p {
            Pred::Date(prefix, low, high) => {
                date_matches(*prefix, *low, *high, last_updated, last_updated)
            }
            _ => false,
        }),
        Filter::Param {
            param,
            preds,
            negate,
        } => param_matches(rows, param, preds, *negate),
        Filter::Missing {
            param,
            tables,
            missing,
        } => has_rows(rows, param, tables) != *missing,
        Filter::Any(alternatives) => {
            let mut any = false;
            for alt in alternatives {
                let mut all = true;
                for f in alt {
                    if !local_matches(f, resource_type, id, last_updated, rows)? {
                        all = false;
                        break;
                    }
                }
                if all {
                    any = true;
                    break;
                }
            }
            any
        }
        Filter::Composite { .. }
        | Filter::Chain { .. }
        | Filter::Has { .. }
        | Filter::List(_)
        | Filter::Compartment { .. } => return None,
    })
}

fn pred_matches(rows: &IndexRows, param: &str, p: &Pred) -> bool {
    match p {
        Pred::Str(m, v) => rows
            .strings
            .iter()
            .filter(|r| r.param == param)
            .any(|r| match m {
                StrMatch::Starts => r.norm.starts_with(v.as_str()),
                StrMatch::Exact => r.exact == *v,
                StrMatch::Contains => r.norm.contains(v.as_str()),
            }),
        Pred::Token { system, code } => rows.tokens.iter().filter(|r| r.param == param).any(|r| {
            code.as_ref().is_none_or(|c| *c == r.code)
                && match system {
                    None => true,
                    Some(None) => r.system.is_none(),
                    Some(Some(s)) => r.system.as_deref() == Some(s.as_str()),
                }
        }),
        Pred::TokenIn(codes) => rows.tokens.iter().filter(|r| r.param == param).any(|r| {
            codes.iter().any(|(s, c)| {
                *c == r.code && s.as_ref().is_none_or(|s| r.system.as_deref() == Some(s))
            })
        }),
        Pred::Ref { target_type, id } => references(rows, param).any(|r| {
            r.target_id == *id && target_type.as_ref().is_none_or(|t| *t == r.target_type)
        }),
        Pred::Uri(v) => rows.uris.iter().any(|r| r.param == param && r.value == *v),
        Pred::UriBelow(v) => rows
            .uris
            .iter()
            .any(|r| r.param == param && r.value.starts_with(v.as_str())),
        Pred::UriAbove(v) => rows.uris.iter().any(|r| {
            r.param == param
                && (r.value == *v
                    || (v.starts_with(r.value.as_str())
                        && r.value.len() > "https://".len()
                        && v[r.value.len()..].starts_with('/')))
        }),
        Pred::Date(prefix, low, high) => rows
            .dates
            .iter()
            .filter(|r| r.param == param)
            .any(|r| date_matches(*prefix, *low, *high, r.low, r.high)),
        Pred::Number(prefix, value, low, high) => rows
            .numbers
            .iter()
            .filter(|r| r.param == param)
            .any(|r| number_matches(*prefix, *value, *low, *high, r.value)),
        Pred::Quantity {
            prefix,
            value,
            low,
            high,
            system,
            code,
            canonical,
        } => rows
            .quantities
            .iter()
            .filter(|r| r.param == param)
            .any(|r| {
                if *canonical {
                    r.cvalue
                        .is_some_and(|cv| number_matches(*prefix, *value, *low, *high, cv))
                        && r.ccode.as_deref() == Some(code.as_deref().unwrap_or(""))
                } else {
                    number_matches(*prefix, *value, *low, *high, r.value)
                        && system
                            .as_ref()
                            .is_none_or(|s| r.system.as_deref() == Some(s.as_str()))
                        && code.as_ref().is_none_or(|c| {
                            r.code.as_deref() == Some(c.as_str())
                                || r.unit.as_deref() == Some(c.as_str())
                        })
                }
            }),
    }
}

/// R4 date prefixes over inclusive ranges: the row [low, high] against the search [sl, sh]
/// (store/search.rs `date_pred`).
pub fn date_matches(p: Prefix, sl: i64, sh: i64, low: i64, high: i64) -> bool {
    let contained = low >= sl && high <= sh;
    match p {
        Prefix::Eq => contained,
        Prefix::Ne => !contained,
        Prefix::Gt => high > sh,
        Prefix::Lt => low < sl,
        Prefix::Ge => high > sh || contained,
        Prefix::Le => low < sl || contained,
        Prefix::Sa => low > sh,
        Prefix::Eb => high < sl,
        Prefix::Ap => {
            let now = crate::fhir::types::Instant::now().millis();
            let d = ((now - sl).abs() / 10).max(86_400_000);
            low <= sh.saturating_add(d) && high >= sl.saturating_sub(d)
        }
    }
}

/// R4 number prefixes (store/search.rs `number_pred`).
pub fn number_matches(p: Prefix, v: f64, low: f64, high: f64, x: f64) -> bool {
    match p {
        Prefix::Eq => x >= low && x < high,
        Prefix::Ne => !(x >= low && x < high),
        Prefix::Ap => {
            let d = (v.abs() * 0.1).max(high - low);
            x >= v - d && x <= v + d
        }
        Prefix::Gt | Prefix::Sa => x > v,
        Prefix::Lt | Prefix::Eb => x < v,
        Prefix::Ge => x >= v,
        Prefix::Le => x <= v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::index::extract;
    use crate::search::parameters::SearchParameters;
    use crate::search::query::parse;
    use serde_json::json;

    fn check(resource: serde_json::Value, query: &str, expected: bool) {
        let rt = resource["resourceType"].as_str().unwrap().to_string();
        let rows = extract(&resource, None);
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
        let q = parse(
            SearchParameters::r4(),
            std::slice::from_ref(&rt),
            &pairs,
            true,
        )
        .unwrap();
        let got = q
            .filters
            .iter()
            .all(|f| local_matches(f, &rt, "x", 0, &rows) == Some(true));
        assert_eq!(got, expected, "{query}");
    }

    #[test]
    fn in_memory_matching_follows_the_search_semantics() {
        let obs = json!({"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}], "text": "Glucose"},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-03-05",
            "valueQuantity": {"value": 5.4, "system": "http://unitsofmeasure.org", "code": "mmol/L"}});
        check(obs.clone(), "category=laboratory", true);
        check(obs.clone(), "category=vital-signs", false);
        check(obs.clone(), "category=laboratory,vital-signs", true);
        check(obs.clone(), "code=http://loinc.org|1234-5", true);
        check(obs.clone(), "code=http://snomed.info/sct|1234-5", false);
        check(obs.clone(), "code:not=1234-5", false);
        check(obs.clone(), "subject=Patient/p1", true);
        check(obs.clone(), "subject=Patient/p2", false);
        check(obs.clone(), "date=2024-03", true);
        check(obs.clone(), "date=ge2024-04", false);
        check(obs.clone(), "date=lt2025", true);
        check(obs.clone(), "value-quantity=gt5", true);
        check(obs.clone(), "value-quantity=lt5", false);
        check(obs.clone(), "status=final&category=laboratory", true);
        check(obs.clone(), "focus:missing=true", true);
        check(obs.clone(), "subject:missing=true", false);
        let pat =
            json!({"resourceType": "Patient", "name": [{"family": "Müller", "given": ["Ann"]}]});
        check(pat.clone(), "name=mul", true);
        check(pat.clone(), "name:exact=Müller", true);
        check(pat.clone(), "name:exact=muller", false);
        check(pat.clone(), "name:contains=ull", true);
        check(pat.clone(), "family=smith", false);
    }
}
