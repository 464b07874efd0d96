//! Credit products and repayment plans, as data: the default line product `standard` and its
//! two plans, `installments-0` (no interest, 3–24 months) and `installments-apr` (a fixed term
//! at the product's reduced APR), so `product` and `plan` work on a fresh server. Also the
//! calendar of a schedule: installment k falls due k months after the start (the day clamped
//! to the month's end).

use crate::fhir::money::Currency;
use rust_decimal::Decimal;
use serde_json::Value;

/// The canonical base of Healporium's finance artifacts (extensions, profiles, code systems).
pub const CANONICAL_BASE: &str = "https://healporium.example/fhir";

/// The URL of the `credit-line` extension on a line Account.
pub fn credit_line_url() -> String {
    extension_url("credit-line")
}

/// A credit-line product.
#[derive(Debug)]
pub struct Product {
    pub code: &'static str,
    pub currency: &'static str,
    /// The standard APR, percent: (mantissa, scale).
    apr: (i64, u32),
    /// The reduced APR of its `installments-apr` plan.
    reduced_apr: (i64, u32),
    /// The highest limit a line of this product may get, in minor units.
    pub max_limit_minor: i64,
    /// Deferred-interest promotions (regulated; off unless a product enables them).
    pub deferred_interest: bool,
}

impl Product {
    pub fn apr(&self) -> Decimal {
        Decimal::new(self.apr.0, self.apr.1)
    }
    pub fn reduced_apr(&self) -> Decimal {
        Decimal::new(self.reduced_apr.0, self.reduced_apr.1)
    }
}

/// Where a plan's APR comes from.
#[derive(Debug)]
enum PlanApr {
    Fixed(i64, u32),
    /// The product's reduced APR.
    Reduced(&'static str),
}

/// A repayment plan.
#[derive(Debug)]
pub struct Plan {
    pub code: &'static str,
    apr: PlanApr,
    pub min_term: u32,
    pub max_term: u32,
    /// No interest during the term, but the product's APR accrues in the shadow from the
    /// draw date and is all assessed if anything is left at the end (deferred interest).
    pub deferred: bool,
}

impl Plan {
    /// The plan's APR in percent.
    pub fn apr(&self) -> Decimal {
        match self.apr {
            PlanApr::Fixed(m, s) => Decimal::new(m, s),
            PlanApr::Reduced(product) => product_named(product)
                .map(Product::reduced_apr)
                .unwrap_or(Decimal::ZERO),
        }
    }
}

static PRODUCTS: &[Product] = &[
    Product {
        code: "standard",
        currency: "USD",
        apr: (1790, 2),
        reduced_apr: (990, 2),
        max_limit_minor: 500_000,
        deferred_interest: false,
    },
    // the same terms in a currency without a minor unit and in one with three decimals
    // a deferred-interest promotion: regulated (US TILA / Regulation Z), so only a product
    // that says so offers the `deferred-12` plan
    Product {
        code: "promo",
        currency: "USD",
        apr: (2699, 2),
        reduced_apr: (990, 2),
        max_limit_minor: 500_000,
        deferred_interest: true,
    },
    Product {
        code: "standard-jpy",
        currency: "JPY",
        apr: (1790, 2),
        reduced_apr: (990, 2),
        max_limit_minor: 750_000,
        deferred_interest: false,
    },
    Product {
        code: "standard-kwd",
        currency: "KWD",
        apr: (1790, 2),
        reduced_apr: (990, 2),
        max_limit_minor: 1_500_000,
        deferred_interest: false,
    },
];

static PLANS: &[Plan] = &[
    Plan {
        code: "installments-0",
        apr: PlanApr::Fixed(0, 0),
        min_term: 3,
        max_term: 24,
        deferred: false,
    },
    Plan {
        code: "installments-apr",
        apr: PlanApr::Reduced("standard"),
        min_term: 6,
        max_term: 36,
        deferred: false,
    },
    Plan {
        code: "deferred-12",
        apr: PlanApr::Fixed(0, 0),
        min_term: 12,
        max_term: 12,
        deferred: true,
    },
];

pub fn product_named(code: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.code == code)
}

pub fn plan(code: &str) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.code == code)
}

pub fn plan_codes() -> Vec<&'static str> {
    PLANS.iter().map(|p| p.code).collect()
}

/// The URL of one of the credit extension's extensions (`credit-draw`, `statement`, …).
pub fn extension_url(name: &str) -> String {
    format!("{CANONICAL_BASE}/StructureDefinition/{name}")
}

/// The value (`value[x]` under `value_key`) of part `part` of the complex extension
/// `extension` (one of ours, by name) of `resource`.
pub fn extension_part<'a>(
    resource: &'a Value,
    extension: &str,
    part: &str,
    value_key: &str,
) -> Option<&'a Value> {
    let url = extension_url(extension);
    resource
        .get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(url.as_str()))?
        .get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(part))?
        .get(value_key)
}

/// The currency of a credit-line Account (its `credit-line` extension's `limit`), if it is one.
pub fn line_currency(account: &Value) -> Option<Currency> {
    extension_part(account, "credit-line", "limit", "valueMoney")?
        .get("currency")?
        .as_str()
        .and_then(|c| Currency::parse(c).ok())
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

    #[test]
    fn default_plans_and_their_aprs() {
        assert_eq!(plan("installments-0").unwrap().apr(), Decimal::ZERO);
        assert_eq!(
            plan("installments-apr").unwrap().apr(),
            "9.90".parse::<Decimal>().unwrap()
        );
        assert!(plan("nope").is_none());
        assert!(!product_named("standard").unwrap().deferred_interest);
    }

    #[test]
    fn due_dates_clamp_to_the_end_of_the_month() {
        let start = jiff::civil::date(2026, 1, 31);
        assert_eq!(due_date(start, 1), Some(jiff::civil::date(2026, 2, 28)));
        assert_eq!(due_date(start, 2), Some(jiff::civil::date(2026, 3, 31)));
        assert_eq!(due_date(start, 13), Some(jiff::civil::date(2027, 2, 28)));
    }
}
