//! Level-payment amortization, exact to the minor unit: the monthly rate is APR/100/12, the
//! level payment PV·r / (1 − (1+r)^−n) rounded up to the minor unit (PV/n at 0 %), each
//! period's interest rounded half-up on the balance, the final installment the balance left
//! plus its interest. Σ installments = principal + interest, to the minor unit, always.

use crate::fhir::money::Currency;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

/// Longest term a schedule may have (30 years).
pub const MAX_TERM_MONTHS: u32 = 360;

/// One installment of a schedule, amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installment {
    /// 1-based.
    pub number: u32,
    pub amount: i64,
    pub principal: i64,
    pub interest: i64,
    /// The principal left after this installment.
    pub balance: i64,
}

/// A repayment schedule in minor units of one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub currency: Currency,
    pub principal: i64,
    /// The level payment (every installment but possibly the last).
    pub installment: i64,
    pub final_installment: i64,
    pub total_interest: i64,
    pub installments: Vec<Installment>,
}

impl Schedule {
    pub fn total_payable(&self) -> i64 {
        self.principal + self.total_interest
    }
}

/// Why a schedule cannot be made; each names the input at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("The amount must be more than zero")]
    NotPositive,
    #[error("The term must be between 1 and {MAX_TERM_MONTHS} months")]
    Term,
    #[error("The APR must be between 0 and 100 percent")]
    Apr,
    #[error(
        "{amount} over {months} months would need installments smaller than the currency's \
         minor unit; choose a shorter term"
    )]
    TooSmall { amount: String, months: u32 },
    #[error("The amounts are too large to compute exactly")]
    Overflow,
}

impl ScheduleError {
    /// The input parameter at fault.
    pub fn parameter(&self) -> &'static str {
        match self {
            ScheduleError::NotPositive | ScheduleError::Overflow => "amount",
            ScheduleError::Term | ScheduleError::TooSmall { .. } => "termMonths",
            ScheduleError::Apr => "apr",
        }
    }
}

/// The monthly rate of an APR in percent.
pub fn monthly_rate(apr: Decimal) -> Decimal {
    apr / Decimal::from(1200)
}

/// The schedule of `principal` minor units over `months` at `apr` percent.
pub fn schedule(
    principal: i64,
    currency: Currency,
    months: u32,
    apr: Decimal,
) -> Result<Schedule, ScheduleError> {
    if principal <= 0 {
        return Err(ScheduleError::NotPositive);
    }
    if months == 0 || months > MAX_TERM_MONTHS {
        return Err(ScheduleError::Term);
    }
    if apr < Decimal::ZERO || apr > Decimal::from(100) {
        return Err(ScheduleError::Apr);
    }
    let r = monthly_rate(apr);
    let pv = Decimal::from(principal);
    let n = Decimal::from(months);
    let exact = if r.is_zero() {
        pv / n
    } else {
        // (1+r)^n by repeated multiplication: n ≤ 360 keeps 28 significant digits
        let mut growth = Decimal::ONE;
        for _ in 0..months {
            growth = growth
                .checked_mul(Decimal::ONE + r)
                .ok_or(ScheduleError::Overflow)?;
        }
        let denominator = growth - Decimal::ONE;
        pv.checked_mul(r)
            .and_then(|x| x.checked_mul(growth))
            .and_then(|x| x.checked_div(denominator))
            .ok_or(ScheduleError::Overflow)?
    };
    // amounts are in minor units already: round up to a whole unit
    let level = exact
        .round_dp_with_strategy(0, RoundingStrategy::ToPositiveInfinity)
        .to_i64()
        .ok_or(ScheduleError::Overflow)?;
    let too_small = || ScheduleError::TooSmall {
        amount: crate::fhir::money::Money::from_minor_units(principal, currency).to_string(),
        months,
    };
    let mut balance = principal;
    let mut installments = Vec::with_capacity(months as usize);
    let mut total_interest = 0i64;
    for number in 1..=months {
        let interest = (Decimal::from(balance) * r)
            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
            .to_i64()
            .ok_or(ScheduleError::Overflow)?;
        let (amount, principal_part) = if number == months {
            (balance + interest, balance)
        } else {
            (level, level - interest)
        };
        if principal_part <= 0 || (principal_part > balance && number < months) {
            // the level payment would not amortize (or would pay off before the term)
            return Err(too_small());
        }
        balance -= principal_part;
        total_interest += interest;
        installments.push(Installment {
            number,
            amount,
            principal: principal_part,
            interest,
            balance,
        });
    }
    let final_installment = installments.last().map_or(0, |i| i.amount);
    if final_installment <= 0 {
        return Err(too_small());
    }
    Ok(Schedule {
        currency,
        principal,
        installment: level,
        final_installment,
        total_interest,
        installments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    fn check(principal: i64, months: u32, apr: &str, level: i64, last: i64, interest: i64) {
        let s = schedule(principal, usd(), months, apr.parse().unwrap()).unwrap();
        assert_eq!(s.installment, level, "level payment");
        assert_eq!(s.final_installment, last, "final installment");
        assert_eq!(s.total_interest, interest, "total interest");
        let sum: i64 = s.installments.iter().map(|i| i.amount).sum();
        assert_eq!(sum, principal + interest, "installments sum exactly");
        let principal_sum: i64 = s.installments.iter().map(|i| i.principal).sum();
        assert_eq!(principal_sum, principal);
        assert_eq!(s.installments.last().unwrap().balance, 0);
        assert_eq!(s.installments.len(), months as usize);
    }

    /// The design note's golden values.
    #[test]
    fn golden_values() {
        check(10_000, 3, "0", 3_334, 3_332, 0);
        check(120_000, 24, "17.90", 5_986, 5_958, 23_636);
        check(250_000, 24, "14.90", 12_110, 12_103, 40_633);
    }

    #[test]
    fn refusals_name_their_input() {
        let e = schedule(5, usd(), 12, Decimal::ZERO).unwrap_err();
        assert!(matches!(e, ScheduleError::TooSmall { .. }), "{e}");
        assert_eq!(e.parameter(), "termMonths");
        assert!(e.to_string().contains("0.05 USD"), "{e}");
        assert_eq!(
            schedule(0, usd(), 3, Decimal::ZERO),
            Err(ScheduleError::NotPositive)
        );
        assert_eq!(
            schedule(100, usd(), 0, Decimal::ZERO),
            Err(ScheduleError::Term)
        );
        assert_eq!(
            schedule(100, usd(), 361, Decimal::ZERO),
            Err(ScheduleError::Term)
        );
        assert_eq!(
            schedule(100, usd(), 3, Decimal::from(-1)),
            Err(ScheduleError::Apr)
        );
    }

    #[test]
    fn zero_exponent_currencies_amortize_in_whole_units() {
        let jpy = Currency::parse("JPY").unwrap();
        let s = schedule(100_000, jpy, 12, "9.9".parse().unwrap()).unwrap();
        let sum: i64 = s.installments.iter().map(|i| i.amount).sum();
        assert_eq!(sum, s.total_payable());
        let kwd = Currency::parse("KWD").unwrap();
        let s = schedule(1_000_000, kwd, 6, "5".parse().unwrap()).unwrap();
        assert_eq!(s.installments.last().unwrap().balance, 0);
    }
}
