//! Deferred interest (a regulated product, off unless a product enables it): from the draw
//! date a shadow interest accrues every day at the APR on the balance of that day (simple,
//! actual/365, kept exact); at the promotion's end a balance of zero waives it, any balance
//! left assesses the whole shadow, rounded half-up once. Statements show the shadow accrued so
//! far and the amount that avoids it (the promotional balance).

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

/// A change of the promotional balance on a day (a draw: positive, a payment: negative), in
/// minor units.
pub type Event = (jiff::civil::Date, i64);

/// The exact shadow interest (minor units, unrounded) on the balance `events` make, from the
/// first event to `until` (exclusive), at `apr` percent.
pub fn shadow(events: &[Event], apr: Decimal, until: jiff::civil::Date) -> Decimal {
    let mut sorted: Vec<Event> = events.to_vec();
    sorted.sort_by_key(|e| e.0);
    let mut total = Decimal::ZERO;
    let mut balance = 0i64;
    let mut iter = sorted.iter().peekable();
    while let Some((day, change)) = iter.next() {
        balance += change;
        let next = iter.peek().map_or(until, |(d, _)| (*d).min(until));
        if *day >= until {
            break;
        }
        let days = i64::from((next - *day).get_days()).max(0);
        total += Decimal::from(balance.max(0)) * apr / Decimal::from(100) * Decimal::from(days)
            / Decimal::from(365);
    }
    total
}

/// What is assessed at the promotion's end: nothing when the balance is paid off, else the
/// whole shadow interest rounded half-up to the minor unit.
pub fn assess(events: &[Event], apr: Decimal, promo_end: jiff::civil::Date) -> i64 {
    let balance: i64 = events
        .iter()
        .filter(|(d, _)| *d <= promo_end)
        .map(|(_, c)| c)
        .sum();
    if balance <= 0 {
        return 0;
    }
    shadow(events, apr, promo_end)
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    /// 1,200.00 on a 12-month promotion at 26.99 % from 2026-01-01, paying 99.99 on the
    /// first of every month: 0.12 is left at the promotion's end, which assesses 174.75.
    fn golden(last_payment: i64) -> (Vec<Event>, jiff::civil::Date) {
        let mut events = vec![(date(2026, 1, 1), 120_000)];
        for m in 1..=12i8 {
            let d = if m == 12 {
                date(2027, 1, 1)
            } else {
                date(2026, m + 1, 1)
            };
            events.push((d, if m == 12 { -last_payment } else { -9_999 }));
        }
        (events, date(2027, 1, 1))
    }

    #[test]
    fn the_design_notes_golden_value() {
        let (events, end) = golden(9_999);
        let left: i64 = events.iter().map(|e| e.1).sum();
        assert_eq!(left, 12, "0.12 left at the promotion's end");
        assert_eq!(assess(&events, "26.99".parse().unwrap(), end), 17_475);
    }

    #[test]
    fn paying_it_all_by_the_end_waives_it_and_one_cent_less_does_not() {
        // the last payment clears the 0.12 too: nothing is assessed
        let (events, end) = golden(9_999 + 12);
        assert_eq!(assess(&events, "26.99".parse().unwrap(), end), 0);
        // one cent short: the whole shadow interest
        let (events, end) = golden(9_999 + 11);
        assert_eq!(assess(&events, "26.99".parse().unwrap(), end), 17_475);
    }
}
