//! FHIR `Money` parsed once into an exact decimal amount and an ISO 4217 currency, so finance
//! code never sees a float, a currency it cannot count, or more decimals than the currency has.
//!
//! Rules, decided here once:
//! - `value` is taken from the JSON number's text with every digit kept (serde_json's
//!   `arbitrary_precision`), never through `f64`; exponent forms (`1.2345e2`) are exact too.
//! - A value with more decimals than the currency's minor unit allows is an error (`12.345` USD),
//!   never rounded. Extra decimals that are all zeros are accepted (`12.300` USD equals `12.30`):
//!   FHIR decimals keep their precision, and the sender's precision is kept for `to_fhir`.
//! - `currency` is required (FHIR allows it to be absent; an amount in no currency is not money
//!   here) and must be an active ISO 4217 code with a minor unit (`N.A.` codes such as XAU,
//!   XDR, XTS or XXX are refused: they cannot be counted in minor units).
//! - `value` is required.
//! - Sums and differences are checked: an overflow or two different currencies is an error.

use crate::fhir::outcome::{ErrorKind, Outcome};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;
use std::fmt;

/// The largest scale rust_decimal represents.
const MAX_SCALE: u32 = 28;

/// Active ISO 4217 codes (List One, 2024-06-25, plus XCG from 2025-03-31) with the number of
/// digits of their minor unit. Codes whose minor unit is `N.A.` are deliberately absent.
const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2), // replaced by XCG in 2025; kept while it is still in the published list
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// An active ISO 4217 currency with a minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

impl Currency {
    /// The currency with this code (exact, upper case: FHIR's binding is to the ISO code).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        ISO_4217
            .binary_search_by(|(c, _)| (*c).cmp(code))
            .ok()
            .and_then(|i| ISO_4217.get(i))
            .map(|&(code, exponent)| Currency { code, exponent })
            .ok_or_else(|| MoneyError::UnknownCurrency(clip(code)))
    }

    /// The three-letter code, e.g. `USD`.
    pub fn code(self) -> &'static str {
        self.code
    }

    /// The digits of the minor unit: 2 for USD, 0 for JPY, 3 for KWD, 4 for CLF.
    pub fn exponent(self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// An amount of money: an exact decimal with no more (non-zero) decimals than its currency has.
///
/// Equality is numeric: `12.30 USD == 12.300 USD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    value: Decimal,
    currency: Currency,
}

/// Why a FHIR Money is not one; `field()` names the element for an OperationOutcome expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("Money must be a JSON object")]
    NotAnObject,
    #[error("Money has no value")]
    MissingValue,
    #[error("Money.value must be a JSON number")]
    ValueNotANumber,
    #[error("Money.value '{0}' is not a decimal")]
    InvalidValue(String),
    #[error("Money.value {0} is out of range")]
    OutOfRange(String),
    #[error("Money.value {value} has more decimals than {currency} allows ({exponent})")]
    TooManyDecimals {
        value: String,
        currency: &'static str,
        exponent: u8,
    },
    #[error("Money has no currency")]
    MissingCurrency,
    #[error("Money.currency must be a string")]
    CurrencyNotAString,
    #[error("'{0}' is not an ISO 4217 currency with a minor unit")]
    UnknownCurrency(String),
    #[error("Cannot combine {left} with {right}")]
    CurrencyMismatch {
        left: &'static str,
        right: &'static str,
    },
}

impl MoneyError {
    /// The element at fault relative to the Money: `value`, `currency`, or `$this` for the
    /// Money itself.
    pub fn field(&self) -> &'static str {
        match self {
            MoneyError::NotAnObject => "$this",
            MoneyError::MissingValue
            | MoneyError::ValueNotANumber
            | MoneyError::InvalidValue(_)
            | MoneyError::OutOfRange(_)
            | MoneyError::TooManyDecimals { .. } => "value",
            MoneyError::MissingCurrency
            | MoneyError::CurrencyNotAString
            | MoneyError::UnknownCurrency(_)
            | MoneyError::CurrencyMismatch { .. } => "currency",
        }
    }

    /// An `Invalid` outcome pointing at the field under `element`, the FHIRPath of the Money
    /// (e.g. `Claim.total` gives `Claim.total.currency`).
    pub fn to_outcome(&self, element: &str) -> Outcome {
        let at = match self.field() {
            "$this" => element.to_string(),
            field => format!("{element}.{field}"),
        };
        Outcome::new(ErrorKind::Invalid, self.to_string()).at(at)
    }
}

impl Money {
    /// Reads a FHIR Money (`{"value": 12.30, "currency": "USD"}`).
    pub fn parse(json: &Value) -> Result<Money, MoneyError> {
        let Value::Object(map) = json else {
            return Err(MoneyError::NotAnObject);
        };
        let value = match map.get("value") {
            None | Some(Value::Null) => return Err(MoneyError::MissingValue),
            Some(Value::Number(n)) => parse_decimal(&n.to_string())?,
            Some(_) => return Err(MoneyError::ValueNotANumber),
        };
        let currency = match map.get("currency") {
            None | Some(Value::Null) => return Err(MoneyError::MissingCurrency),
            Some(Value::String(s)) => Currency::parse(s)?,
            Some(_) => return Err(MoneyError::CurrencyNotAString),
        };
        Money::new(value, currency)
    }

    /// An amount in `currency`; more non-zero decimals than the currency has is an error.
    pub fn new(value: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        if value.normalize().scale() > u32::from(currency.exponent) {
            return Err(MoneyError::TooManyDecimals {
                value: value.to_string(),
                currency: currency.code,
                exponent: currency.exponent,
            });
        }
        Ok(Money { value, currency })
    }

    /// The amount of `minor` minor units (cents for USD): `from_minor_units(1230, USD)` is 12.30.
    pub fn from_minor_units(minor: i64, currency: Currency) -> Money {
        Money {
            value: Decimal::new(minor, u32::from(currency.exponent)),
            currency,
        }
    }

    pub fn value(&self) -> Decimal {
        self.value
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount in whole minor units (1230 for 12.30 USD); an amount too large for i64 is an
    /// error.
    pub fn minor_units(&self) -> Result<i64, MoneyError> {
        let out_of_range = || MoneyError::OutOfRange(self.value.to_string());
        let factor = Decimal::from(10i64.pow(u32::from(self.currency.exponent)));
        let scaled = self.value.checked_mul(factor).ok_or_else(out_of_range)?;
        // exact by construction: no non-zero digits beyond the exponent
        scaled.trunc().to_i64().ok_or_else(out_of_range)
    }

    /// The FHIR JSON form, with the value's precision as it was read.
    pub fn to_fhir(&self) -> Value {
        let number = self
            .value
            .to_string()
            .parse::<serde_json::Number>()
            .map(Value::Number)
            // a Decimal always prints as a JSON number; keep the text if that ever changes
            .unwrap_or_else(|_| Value::String(self.value.to_string()));
        let mut map = serde_json::Map::new();
        map.insert("value".to_string(), number);
        map.insert(
            "currency".to_string(),
            Value::String(self.currency.code.to_string()),
        );
        Value::Object(map)
    }

    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.combine(other, Decimal::checked_add)
    }

    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.combine(other, Decimal::checked_sub)
    }

    fn combine(
        &self,
        other: &Money,
        op: fn(Decimal, Decimal) -> Option<Decimal>,
    ) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency.code,
                right: other.currency.code,
            });
        }
        let value = op(self.value, other.value)
            .ok_or_else(|| MoneyError::OutOfRange(format!("{} and {}", self.value, other.value)))?;
        Ok(Money {
            value,
            currency: self.currency,
        })
    }
}

/// `12.30 USD`: always with the currency's number of decimals.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.value.normalize();
        shown.rescale(u32::from(self.currency.exponent));
        write!(f, "{shown} {}", self.currency.code)
    }
}

/// The exact decimal of a JSON number's text: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    let invalid = || MoneyError::InvalidValue(clip(text));
    let out_of_range = || MoneyError::OutOfRange(clip(text));
    let (unsigned, negative) = match text.strip_prefix('-') {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (mantissa, ""),
    };
    let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(int) || (mantissa.contains('.') && !digits_only(frac)) {
        return Err(invalid());
    }
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if !digits_only(digits) {
                return Err(invalid());
            }
            // an exponent beyond any representable scale is out of range either way
            e.parse().map_err(|_| out_of_range())?
        }
    };
    let all: String = int.chars().chain(frac.chars()).collect();
    let significant = all.trim_start_matches('0');
    let mut scale = frac.len() as i64 - exponent;
    let mut coefficient = significant.to_string();
    if scale < 0 {
        if significant.is_empty() {
            scale = 0;
        } else {
            // 1.5e3 is 1500: move the point right by padding zeros
            let pad = usize::try_from(-scale).map_err(|_| out_of_range())?;
            if significant.len() + pad > 29 {
                return Err(out_of_range());
            }
            coefficient.push_str(&"0".repeat(pad));
            scale = 0;
        }
    }
    if coefficient.is_empty() {
        coefficient.push('0');
    }
    // zeros beyond rust_decimal's scale carry no value (1.000…0 with 40 zeros is 1)
    while scale > i64::from(MAX_SCALE) && coefficient.len() > 1 && coefficient.ends_with('0') {
        coefficient.pop();
        scale -= 1;
    }
    if coefficient == "0" && scale > i64::from(MAX_SCALE) {
        scale = i64::from(MAX_SCALE);
    }
    let scale = u32::try_from(scale).map_err(|_| out_of_range())?;
    if scale > MAX_SCALE {
        // non-zero digits that fine-grained are more decimals than any currency has
        return Err(MoneyError::InvalidValue(clip(text)));
    }
    let magnitude: i128 = coefficient.parse().map_err(|_| out_of_range())?;
    let signed = if negative { -magnitude } else { magnitude };
    Decimal::try_from_i128_with_scale(signed, scale).map_err(|_| out_of_range())
}

/// At most 40 characters of a value, for an error message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn money(json: &str) -> Result<Money, MoneyError> {
        Money::parse(&serde_json::from_str(json).unwrap())
    }

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn the_table_is_sorted_unique_and_upper_case() {
        for pair in ISO_4217.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (code, exponent) in ISO_4217 {
            assert!(code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(matches!(exponent, 0 | 2 | 3 | 4), "{code}");
        }
        assert_eq!(ISO_4217.len(), 167);
    }

    #[test]
    fn exponents_of_known_currencies() {
        let cases = [
            ("USD", 2),
            ("EUR", 2),
            ("GBP", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("ISK", 0),
            ("CLP", 0),
            ("UYI", 0),
            ("KWD", 3),
            ("BHD", 3),
            ("OMR", 3),
            ("TND", 3),
            ("IQD", 3),
            ("JOD", 3),
            ("LYD", 3),
            ("CLF", 4),
            ("UYW", 4),
            ("XCG", 2),
        ];
        for (code, exponent) in cases {
            assert_eq!(
                Currency::parse(code).unwrap().exponent(),
                exponent,
                "{code}"
            );
        }
    }

    #[test]
    fn codes_without_a_minor_unit_and_unknown_codes_are_refused() {
        for code in [
            "XAU", "XAG", "XDR", "XTS", "XXX", "HRK", "usd", "US", "USDD", "",
        ] {
            assert_eq!(
                Currency::parse(code),
                Err(MoneyError::UnknownCurrency(code.to_string())),
                "{code}"
            );
        }
    }

    #[test]
    fn golden_values() {
        // (FHIR JSON, Display, minor units, to_fhir text)
        let cases = [
            (
                r#"{"value": 12.30, "currency": "USD"}"#,
                "12.30 USD",
                1230,
                "12.30",
            ),
            (
                r#"{"value": 12.3, "currency": "USD"}"#,
                "12.30 USD",
                1230,
                "12.3",
            ),
            (
                r#"{"value": 12, "currency": "USD"}"#,
                "12.00 USD",
                1200,
                "12",
            ),
            (
                r#"{"value": 12.300, "currency": "USD"}"#,
                "12.30 USD",
                1230,
                "12.300",
            ),
            (
                r#"{"value": -0.05, "currency": "EUR"}"#,
                "-0.05 EUR",
                -5,
                "-0.05",
            ),
            (r#"{"value": 0, "currency": "EUR"}"#, "0.00 EUR", 0, "0"),
            (
                r#"{"value": 1200, "currency": "JPY"}"#,
                "1200 JPY",
                1200,
                "1200",
            ),
            (
                r#"{"value": 1200.00, "currency": "JPY"}"#,
                "1200 JPY",
                1200,
                "1200.00",
            ),
            (
                r#"{"value": 1.234, "currency": "KWD"}"#,
                "1.234 KWD",
                1234,
                "1.234",
            ),
            (
                r#"{"value": 0.001, "currency": "BHD"}"#,
                "0.001 BHD",
                1,
                "0.001",
            ),
            (
                r#"{"value": 39012.5678, "currency": "CLF"}"#,
                "39012.5678 CLF",
                390125678,
                "39012.5678",
            ),
            (
                r#"{"value": 1.2345e2, "currency": "USD"}"#,
                "123.45 USD",
                12345,
                "123.45",
            ),
            (
                r#"{"value": 15E2, "currency": "JPY"}"#,
                "1500 JPY",
                1500,
                "1500",
            ),
            (
                r#"{"value": 1230e-2, "currency": "USD"}"#,
                "12.30 USD",
                1230,
                "12.30",
            ),
            (
                r#"{"value": 92233720368547758.07, "currency": "USD"}"#,
                "92233720368547758.07 USD",
                i64::MAX,
                "92233720368547758.07",
            ),
            (
                r#"{"value": 1.00000000000000000000000000000000000000, "currency": "USD"}"#,
                "1.00 USD",
                100,
                "1.0000000000000000000000000000",
            ),
        ];
        for (json, display, minor, fhir) in cases {
            let m = money(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(m.to_string(), display, "{json}");
            assert_eq!(m.minor_units(), Ok(minor), "{json}");
            let out = m.to_fhir();
            assert_eq!(out["value"].to_string(), fhir, "{json}");
            assert_eq!(out["currency"], json!(m.currency().code()), "{json}");
            assert_eq!(Money::parse(&out), Ok(m), "{json} round trip");
        }
    }

    #[test]
    fn to_fhir_keeps_the_exact_text_and_key_order() {
        let m = money(r#"{"value": 135.50, "currency": "EUR"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&m.to_fhir()).unwrap(),
            r#"{"value":135.50,"currency":"EUR"}"#
        );
    }

    #[test]
    fn no_float_on_the_way() {
        // 0.1 + 0.2 is 0.30000000000000004 in f64; here it is 0.30
        let a = money(r#"{"value": 0.1, "currency": "USD"}"#).unwrap();
        let b = money(r#"{"value": 0.2, "currency": "USD"}"#).unwrap();
        let sum = a.checked_add(&b).unwrap();
        assert_eq!(sum.to_string(), "0.30 USD");
        assert_eq!(sum.minor_units(), Ok(30));
        // more digits than an f64 holds
        let big = money(r#"{"value": 12345678901234567.89, "currency": "USD"}"#).unwrap();
        assert_eq!(big.minor_units(), Ok(1_234_567_890_123_456_789));
    }

    #[test]
    fn numeric_equality_ignores_trailing_zeros() {
        let a = money(r#"{"value": 12.30, "currency": "USD"}"#).unwrap();
        let b = money(r#"{"value": 12.300, "currency": "USD"}"#).unwrap();
        assert_eq!(a, b);
        let c = money(r#"{"value": 12.30, "currency": "EUR"}"#).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn errors_name_their_field() {
        let too_many =
            |value: &str, currency: &'static str, exponent| MoneyError::TooManyDecimals {
                value: value.to_string(),
                currency,
                exponent,
            };
        let cases: Vec<(&str, MoneyError, &str)> = vec![
            (
                r#"{"value": 12.345, "currency": "USD"}"#,
                too_many("12.345", "USD", 2),
                "value",
            ),
            (
                r#"{"value": 12.3450, "currency": "USD"}"#,
                too_many("12.3450", "USD", 2),
                "value",
            ),
            (
                r#"{"value": 0.5, "currency": "JPY"}"#,
                too_many("0.5", "JPY", 0),
                "value",
            ),
            (
                r#"{"value": 1.2345, "currency": "KWD"}"#,
                too_many("1.2345", "KWD", 3),
                "value",
            ),
            (
                r#"{"value": 1.23456, "currency": "CLF"}"#,
                too_many("1.23456", "CLF", 4),
                "value",
            ),
            (
                r#"{"value": 1.2345e1, "currency": "USD"}"#,
                too_many("12.345", "USD", 2),
                "value",
            ),
            (
                r#"{"value": 1e-3, "currency": "USD"}"#,
                too_many("0.001", "USD", 2),
                "value",
            ),
            (
                r#"{"value": 1.0000000000000000000000000000001, "currency": "USD"}"#,
                MoneyError::InvalidValue("1.0000000000000000000000000000001".to_string()),
                "value",
            ),
            (r#"{"currency": "USD"}"#, MoneyError::MissingValue, "value"),
            (
                r#"{"value": null, "currency": "USD"}"#,
                MoneyError::MissingValue,
                "value",
            ),
            (
                r#"{"value": "12.30", "currency": "USD"}"#,
                MoneyError::ValueNotANumber,
                "value",
            ),
            (
                r#"{"value": 1e400, "currency": "USD"}"#,
                MoneyError::OutOfRange("1e+400".to_string()), // serde_json writes the sign
                "value",
            ),
            (
                r#"{"value": 123456789012345678901234567890, "currency": "USD"}"#,
                MoneyError::OutOfRange("123456789012345678901234567890".to_string()),
                "value",
            ),
            (
                r#"{"value": 12.30}"#,
                MoneyError::MissingCurrency,
                "currency",
            ),
            (
                r#"{"value": 12.30, "currency": null}"#,
                MoneyError::MissingCurrency,
                "currency",
            ),
            (
                r#"{"value": 12.30, "currency": 840}"#,
                MoneyError::CurrencyNotAString,
                "currency",
            ),
            (
                r#"{"value": 12.30, "currency": "ZZZ"}"#,
                MoneyError::UnknownCurrency("ZZZ".to_string()),
                "currency",
            ),
            (
                r#"{"value": 12.30, "currency": "usd"}"#,
                MoneyError::UnknownCurrency("usd".to_string()),
                "currency",
            ),
            (
                r#"{"value": 1, "currency": "XAU"}"#,
                MoneyError::UnknownCurrency("XAU".to_string()),
                "currency",
            ),
            (r#"12.30"#, MoneyError::NotAnObject, "$this"),
            (r#"[]"#, MoneyError::NotAnObject, "$this"),
        ];
        for (json, expected, field) in cases {
            let got = money(json);
            assert_eq!(got, Err(expected), "{json}");
            if let Err(e) = got {
                assert_eq!(e.field(), field, "{json}");
            }
        }
    }

    #[test]
    fn the_first_problem_is_the_value() {
        // both wrong: the value is reported (it is read first)
        assert_eq!(
            money(r#"{"currency": "ZZZ"}"#),
            Err(MoneyError::MissingValue)
        );
    }

    #[test]
    fn an_outcome_points_at_the_field() {
        let e = money(r#"{"value": 12.345, "currency": "USD"}"#).unwrap_err();
        let outcome = e.to_outcome("Claim.total");
        assert_eq!(outcome.kind, ErrorKind::Invalid);
        assert_eq!(outcome.issues[0].expression, vec!["Claim.total.value"]);
        let outcome = MoneyError::NotAnObject.to_outcome("Claim.total");
        assert_eq!(outcome.issues[0].expression, vec!["Claim.total"]);
        let outcome = money(r#"{"value": 1}"#)
            .unwrap_err()
            .to_outcome("Invoice.totalNet");
        assert_eq!(
            outcome.issues[0].expression,
            vec!["Invoice.totalNet.currency"]
        );
    }

    #[test]
    fn minor_units_overflow_is_an_error() {
        let m = money(r#"{"value": 92233720368547758.08, "currency": "USD"}"#).unwrap();
        assert_eq!(
            m.minor_units(),
            Err(MoneyError::OutOfRange("92233720368547758.08".to_string()))
        );
        let m = money(r#"{"value": 7922816251426433759354395033, "currency": "CLF"}"#).unwrap();
        assert!(matches!(m.minor_units(), Err(MoneyError::OutOfRange(_))));
        let m = money(r#"{"value": -92233720368547758.08, "currency": "USD"}"#).unwrap();
        assert_eq!(m.minor_units(), Ok(i64::MIN));
    }

    #[test]
    fn from_minor_units_round_trips() {
        let cases = [
            (1230, "USD", "12.30 USD"),
            (-5, "EUR", "-0.05 EUR"),
            (1200, "JPY", "1200 JPY"),
            (1, "KWD", "0.001 KWD"),
            (10000, "CLF", "1.0000 CLF"),
        ];
        for (minor, code, display) in cases {
            let m = Money::from_minor_units(minor, Currency::parse(code).unwrap());
            assert_eq!(m.to_string(), display);
            assert_eq!(m.minor_units(), Ok(minor));
        }
    }

    #[test]
    fn sums_and_differences() {
        let a = money(r#"{"value": 10.05, "currency": "USD"}"#).unwrap();
        let b = money(r#"{"value": 2.5, "currency": "USD"}"#).unwrap();
        assert_eq!(a.checked_add(&b).unwrap().to_string(), "12.55 USD");
        assert_eq!(a.checked_sub(&b).unwrap().to_string(), "7.55 USD");
        assert_eq!(b.checked_sub(&a).unwrap().to_string(), "-7.55 USD");
        assert_eq!(b.checked_sub(&a).unwrap().minor_units(), Ok(-755));
        let yen = money(r#"{"value": 100, "currency": "JPY"}"#).unwrap();
        let mismatch = MoneyError::CurrencyMismatch {
            left: "USD",
            right: "JPY",
        };
        assert_eq!(a.checked_add(&yen), Err(mismatch.clone()));
        assert_eq!(a.checked_sub(&yen), Err(mismatch.clone()));
        assert_eq!(mismatch.field(), "currency");
    }

    #[test]
    fn sums_overflow_is_an_error() {
        let max = Money::new(Decimal::MAX, Currency::parse("JPY").unwrap()).unwrap();
        let one = Money::from_minor_units(1, Currency::parse("JPY").unwrap());
        assert!(matches!(
            max.checked_add(&one),
            Err(MoneyError::OutOfRange(_))
        ));
        let min = Money::new(Decimal::MIN, Currency::parse("JPY").unwrap()).unwrap();
        assert!(matches!(
            min.checked_sub(&one),
            Err(MoneyError::OutOfRange(_))
        ));
    }

    #[test]
    fn new_checks_the_decimals() {
        assert!(Money::new(Decimal::new(12345, 3), usd()).is_err());
        assert!(Money::new(Decimal::new(12340, 3), usd()).is_ok());
    }
}
