//! Credit products and repayment plans, as data: read from the CodeSystems `credit-product`
//! and `repayment-plan` (fhir-profiles/healporium/, or an operator's `--credit-catalog`),
//! whose concept properties carry the terms. Also the calendar of a schedule: installment k
//! falls due k months after the start (the day clamped to the month's end).

use crate::fhir::money::{Currency, Money};
use rust_decimal::Decimal;
use serde_json::Value;

/// A credit-line product (a concept of CodeSystem `credit-product`).
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub code: String,
    pub currency: Currency,
    /// The standard APR, percent.
    pub apr: Decimal,
    /// The reduced APR its `aprFrom: reducedApr` plans charge.
    pub reduced_apr: Decimal,
    /// The highest limit a line of this product may get, in minor units.
    pub max_limit_minor: i64,
    /// Deferred-interest promotions (regulated; off unless a product enables them).
    pub deferred_interest: bool,
}

/// Where a plan's APR comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanApr {
    Fixed(Decimal),
    /// The line product's reduced APR.
    Reduced,
}

/// A repayment plan (a concept of CodeSystem `repayment-plan`).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub code: String,
    pub apr: PlanApr,
    pub min_term: u32,
    pub max_term: u32,
    /// No interest during the term, but the product's APR accrues in the shadow from the
    /// draw date and is all assessed if anything is left at the end (deferred interest).
    pub deferred: bool,
}

impl Plan {
    /// The APR this plan charges on a line of `product`, percent (a reduced-APR plan with no
    /// product known — a quote outside any line — takes `fallback`'s).
    pub fn apr_on(&self, product: Option<&Product>, fallback: Option<&Product>) -> Decimal {
        match &self.apr {
            PlanApr::Fixed(d) => *d,
            PlanApr::Reduced => product
                .or(fallback)
                .map(|p| p.reduced_apr)
                .unwrap_or(Decimal::ZERO),
        }
    }
}

/// The value `value[x]` of property `code` of a concept.
fn property<'a>(concept: &'a Value, code: &str) -> Option<(&'a str, &'a Value)> {
    concept
        .get("property")?
        .as_array()?
        .iter()
        .find(|p| p.get("code").and_then(Value::as_str) == Some(code))?
        .as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .map(|(k, v)| (k.as_str(), v))
}

/// Where in the CodeSystem, for error messages.
fn at(system: &str, i: usize, code: &str, field: &str) -> String {
    format!("CodeSystem/{system} concept[{i}] ('{code}') property {field}")
}

fn decimal(
    concept: &Value,
    system: &str,
    i: usize,
    code: &str,
    field: &str,
) -> Result<Option<Decimal>, String> {
    match property(concept, field) {
        None => Ok(None),
        Some(("valueDecimal", v)) => v
            .to_string()
            .parse::<Decimal>()
            .map(Some)
            .map_err(|_| format!("{}: not a decimal", at(system, i, code, field))),
        Some(_) => Err(format!(
            "{}: must be a valueDecimal",
            at(system, i, code, field)
        )),
    }
}

fn boolean(
    concept: &Value,
    system: &str,
    i: usize,
    code: &str,
    field: &str,
) -> Result<bool, String> {
    match property(concept, field) {
        None => Ok(false),
        Some(("valueBoolean", Value::Bool(b))) => Ok(*b),
        Some(_) => Err(format!(
            "{}: must be a valueBoolean",
            at(system, i, code, field)
        )),
    }
}

fn apr_in_range(d: Decimal, where_: String) -> Result<Decimal, String> {
    if d < Decimal::ZERO || d > Decimal::from(100) {
        return Err(format!("{where_}: an APR is a percent from 0 to 100"));
    }
    Ok(d)
}

fn concepts<'a>(cs: &'a Value, system: &str) -> Result<&'a [Value], String> {
    let list = cs
        .get("concept")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("CodeSystem/{system}: concept is missing"))?;
    let mut seen = std::collections::HashSet::new();
    for (i, c) in list.iter().enumerate() {
        let code = c.get("code").and_then(Value::as_str).unwrap_or("");
        if code.is_empty() {
            return Err(format!("CodeSystem/{system} concept[{i}]: code is missing"));
        }
        if !seen.insert(code) {
            return Err(format!(
                "CodeSystem/{system} concept[{i}]: code '{code}' is given twice"
            ));
        }
    }
    Ok(list)
}

/// The products of a `credit-product` CodeSystem; an error names the concept and property.
pub fn products_from(cs: &Value) -> Result<Vec<Product>, String> {
    let system = "credit-product";
    let mut out = Vec::new();
    for (i, c) in concepts(cs, system)?.iter().enumerate() {
        let code = c.get("code").and_then(Value::as_str).unwrap_or("");
        let currency = match property(c, "currency") {
            Some(("valueCode", Value::String(s))) => Currency::parse(s).map_err(|_| {
                format!(
                    "{}: '{s}' is not an ISO 4217 currency",
                    at(system, i, code, "currency")
                )
            })?,
            _ => {
                return Err(format!(
                    "{}: a valueCode is needed",
                    at(system, i, code, "currency")
                ));
            }
        };
        let need = |field: &str| -> Result<Decimal, String> {
            decimal(c, system, i, code, field)?
                .ok_or_else(|| format!("{}: is needed", at(system, i, code, field)))
        };
        let apr = apr_in_range(need("apr")?, at(system, i, code, "apr"))?;
        let reduced_apr = apr_in_range(need("reducedApr")?, at(system, i, code, "reducedApr"))?;
        let max = need("maxLimit")?;
        let max_limit_minor = Money::new(max, currency)
            .and_then(|m| m.minor_units())
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| {
                format!(
                    "{}: a positive amount with at most {} decimals",
                    at(system, i, code, "maxLimit"),
                    currency.exponent()
                )
            })?;
        out.push(Product {
            code: code.to_string(),
            currency,
            apr,
            reduced_apr,
            max_limit_minor,
            deferred_interest: boolean(c, system, i, code, "deferredInterest")?,
        });
    }
    Ok(out)
}

/// The plans of a `repayment-plan` CodeSystem; an error names the concept and property.
pub fn plans_from(cs: &Value) -> Result<Vec<Plan>, String> {
    let system = "repayment-plan";
    let mut out = Vec::new();
    for (i, c) in concepts(cs, system)?.iter().enumerate() {
        let code = c.get("code").and_then(Value::as_str).unwrap_or("");
        let apr = match (decimal(c, system, i, code, "apr")?, property(c, "aprFrom")) {
            (Some(d), None) => PlanApr::Fixed(apr_in_range(d, at(system, i, code, "apr"))?),
            (None, Some(("valueCode", Value::String(s)))) if s == "reducedApr" => PlanApr::Reduced,
            (None, Some(_)) => {
                return Err(format!(
                    "{}: the only source is valueCode 'reducedApr'",
                    at(system, i, code, "aprFrom")
                ));
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{}: give apr or aprFrom, not both",
                    at(system, i, code, "apr")
                ));
            }
            (None, None) => {
                return Err(format!(
                    "{}: apr or aprFrom is needed",
                    at(system, i, code, "apr")
                ));
            }
        };
        let term = |field: &str| -> Result<u32, String> {
            match property(c, field) {
                Some(("valueInteger", v)) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=600).contains(n))
                    .ok_or_else(|| format!("{}: months from 1 to 600", at(system, i, code, field))),
                _ => Err(format!(
                    "{}: a valueInteger is needed",
                    at(system, i, code, field)
                )),
            }
        };
        let (min_term, max_term) = (term("minTerm")?, term("maxTerm")?);
        if min_term > max_term {
            return Err(format!(
                "{}: is below minTerm",
                at(system, i, code, "maxTerm")
            ));
        }
        out.push(Plan {
            code: code.to_string(),
            apr,
            min_term,
            max_term,
            deferred: boolean(c, system, i, code, "deferredInterest")?,
        });
    }
    Ok(out)
}

/// The due date of installment `number`: `number` months after `start`, the day clamped to
/// the end of a shorter month (Jan 31 → Feb 28).
pub fn due_date(start: jiff::civil::Date, number: u32) -> Option<jiff::civil::Date> {
    start
        .checked_add(jiff::Span::new().try_months(i64::from(number)).ok()?)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn due_dates_clamp_to_the_end_of_the_month() {
        let start = jiff::civil::date(2026, 1, 31);
        assert_eq!(due_date(start, 1), Some(jiff::civil::date(2026, 2, 28)));
        assert_eq!(due_date(start, 2), Some(jiff::civil::date(2026, 3, 31)));
        assert_eq!(due_date(start, 13), Some(jiff::civil::date(2027, 2, 28)));
    }

    #[test]
    fn bad_terms_name_the_concept_and_property() {
        let cs = json!({"concept": [{"code": "p", "property": [
            {"code": "currency", "valueCode": "USD"}, {"code": "apr", "valueDecimal": 150},
            {"code": "reducedApr", "valueDecimal": 1}, {"code": "maxLimit", "valueDecimal": 10}]}]});
        let e = products_from(&cs).unwrap_err();
        assert!(e.contains("concept[0] ('p') property apr"), "{e}");
        let cs = json!({"concept": [{"code": "p", "property": [
            {"code": "currency", "valueCode": "JPY"}, {"code": "apr", "valueDecimal": 1},
            {"code": "reducedApr", "valueDecimal": 1}, {"code": "maxLimit", "valueDecimal": 10.5}]}]});
        assert!(products_from(&cs).unwrap_err().contains("maxLimit"));
        let cs = json!({"concept": [{"code": "x", "property": [{"code": "apr", "valueDecimal": 0},
            {"code": "minTerm", "valueInteger": 12}, {"code": "maxTerm", "valueInteger": 6}]}]});
        assert!(plans_from(&cs).unwrap_err().contains("maxTerm"));
        let cs = json!({"concept": [{"code": "x"}, {"code": "x"}]});
        assert!(plans_from(&cs).unwrap_err().contains("twice"));
    }
}
