//! System-level FHIRPath values that JSON cannot represent faithfully: exact decimals,
//! partial-precision dates/times, and UCUM/calendar quantities, with their arithmetic.

use std::cmp::Ordering;
use std::fmt;
use std::rc::Rc;

/// Largest number of fractional digits a [`Decimal`] keeps.
const MAX_SCALE: u32 = 28;
/// Fractional digits produced by division and by functions computed in floating point.
const DIV_SCALE: u32 = 8;

/// An exact decimal number: `mant / 10^scale`. The scale is kept, so `1.50` prints as `1.50`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    mant: i128,
    scale: u32,
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl Decimal {
    /// Builds a decimal from a mantissa and a number of fractional digits.
    pub fn new(mant: i128, scale: u32) -> Decimal {
        Decimal { mant, scale }
    }

    /// Parses `[-+]?digits[.digits][e[-+]digits]`; `None` for anything else or when too large.
    pub fn parse(s: &str) -> Option<Decimal> {
        let s = s.trim();
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, s.get(1..)?),
            b'+' => (false, s.get(1..)?),
            _ => (false, s),
        };
        let (num, exp) = match body.find(['e', 'E']) {
            Some(i) => (body.get(..i)?, body.get(i + 1..)?.parse::<i32>().ok()?),
            None => (body, 0),
        };
        let (int_part, frac_part) = match num.find('.') {
            Some(i) => (num.get(..i)?, num.get(i + 1..)?),
            None => (num, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
            || (num.contains('.') && frac_part.is_empty())
        {
            return None;
        }
        let mut mant: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            mant = mant.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        let mut scale = i64::try_from(frac_part.len()).ok()? - i64::from(exp);
        while scale < 0 {
            mant = mant.checked_mul(10)?;
            scale += 1;
        }
        let mut d = Decimal {
            mant: if neg { -mant } else { mant },
            scale: u32::try_from(scale).ok()?,
        };
        if d.scale > MAX_SCALE {
            d = d.round(MAX_SCALE);
        }
        Some(d)
    }

    pub fn from_i64(i: i64) -> Decimal {
        Decimal {
            mant: i128::from(i),
            scale: 0,
        }
    }

    /// Converts a float, keeping at most 8 fractional digits and no trailing zeros.
    pub fn from_f64(f: f64) -> Option<Decimal> {
        if !f.is_finite() {
            return None;
        }
        Decimal::parse(&format!("{f:.8}")).map(Decimal::normalized)
    }

    pub fn to_f64(self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }

    pub fn scale(self) -> u32 {
        self.scale
    }

    pub fn is_zero(self) -> bool {
        self.mant == 0
    }

    pub fn is_negative(self) -> bool {
        self.mant < 0
    }

    /// The value as an integer when it has no fractional part.
    pub fn to_i64(self) -> Option<i64> {
        let p = pow10(self.scale)?;
        if self.mant % p != 0 {
            return None;
        }
        i64::try_from(self.mant / p).ok()
    }

    /// Drops trailing fractional zeros (`2.500` → `2.5`, `2.0` → `2`).
    pub fn normalized(self) -> Decimal {
        let mut d = self;
        while d.scale > 0 && d.mant % 10 == 0 {
            d.mant /= 10;
            d.scale -= 1;
        }
        d
    }

    fn with_scale_up(self, scale: u32) -> Option<Decimal> {
        if scale <= self.scale {
            return Some(self);
        }
        Some(Decimal {
            mant: self.mant.checked_mul(pow10(scale - self.scale)?)?,
            scale,
        })
    }

    fn align(self, o: Decimal) -> Option<(i128, i128, u32)> {
        let s = self.scale.max(o.scale);
        Some((self.with_scale_up(s)?.mant, o.with_scale_up(s)?.mant, s))
    }

    pub fn checked_add(self, o: Decimal) -> Option<Decimal> {
        let (a, b, s) = self.align(o)?;
        Some(Decimal {
            mant: a.checked_add(b)?,
            scale: s,
        })
    }

    pub fn checked_sub(self, o: Decimal) -> Option<Decimal> {
        self.checked_add(o.negated())
    }

    pub fn checked_mul(self, o: Decimal) -> Option<Decimal> {
        let d = Decimal {
            mant: self.mant.checked_mul(o.mant)?,
            scale: self.scale + o.scale,
        };
        Some(if d.scale > MAX_SCALE {
            d.round(MAX_SCALE)
        } else {
            d
        })
    }

    /// Division to 8 fractional digits (trailing zeros dropped); `None` on zero divisor.
    pub fn checked_div(self, o: Decimal) -> Option<Decimal> {
        if o.mant == 0 {
            return None;
        }
        let num = self.mant.checked_mul(pow10(o.scale + DIV_SCALE + 1)?)?;
        let den = o.mant.checked_mul(pow10(self.scale)?)?;
        let q = num / den; // one extra digit for rounding
        let rounded = if q >= 0 {
            q.checked_add(5)? / 10
        } else {
            q.checked_sub(5)? / 10
        };
        Some(
            Decimal {
                mant: rounded,
                scale: DIV_SCALE,
            }
            .normalized(),
        )
    }

    /// Integer part of the quotient (`div`), `None` on zero divisor.
    pub fn div_trunc(self, o: Decimal) -> Option<Decimal> {
        if o.mant == 0 {
            return None;
        }
        let (a, b, _) = self.align(o)?;
        Some(Decimal {
            mant: a.checked_div(b)?,
            scale: 0,
        })
    }

    /// Remainder after truncated division (`mod`), `None` on zero divisor.
    pub fn checked_rem(self, o: Decimal) -> Option<Decimal> {
        if o.mant == 0 {
            return None;
        }
        let (a, b, s) = self.align(o)?;
        Some(Decimal {
            mant: a.checked_rem(b)?,
            scale: s,
        })
    }

    /// The negated value (saturating at the representable range).
    pub fn negated(self) -> Decimal {
        Decimal {
            mant: self.mant.checked_neg().unwrap_or(i128::MAX),
            scale: self.scale,
        }
    }

    pub fn abs(self) -> Decimal {
        Decimal {
            mant: self.mant.saturating_abs(),
            scale: self.scale,
        }
    }

    /// Rounds half away from zero to `digits` fractional digits (never adds digits).
    pub fn round(self, digits: u32) -> Decimal {
        if digits >= self.scale {
            return self;
        }
        let Some(p) = pow10(self.scale - digits) else {
            return Decimal {
                mant: 0,
                scale: digits,
            };
        };
        let q = self.mant / p;
        let r = self.mant % p;
        let adj = if r.abs() * 2 >= p { r.signum() } else { 0 };
        Decimal {
            mant: q + adj,
            scale: digits,
        }
    }

    fn to_digits(self, digits: u32, mode: Ordering) -> Option<Decimal> {
        if digits >= self.scale {
            return self.with_scale_up(digits);
        }
        let p = pow10(self.scale - digits)?;
        let q = self.mant / p;
        let r = self.mant % p;
        let q = match mode {
            Ordering::Less if r < 0 => q - 1,
            Ordering::Greater if r > 0 => q + 1,
            _ => q,
        };
        Some(Decimal {
            mant: q,
            scale: digits,
        })
    }

    /// Rounds toward negative infinity to `digits` fractional digits (padding with zeros).
    pub fn floor_to(self, digits: u32) -> Option<Decimal> {
        self.to_digits(digits, Ordering::Less)
    }

    /// Rounds toward positive infinity to `digits` fractional digits (padding with zeros).
    pub fn ceil_to(self, digits: u32) -> Option<Decimal> {
        self.to_digits(digits, Ordering::Greater)
    }

    /// Truncates toward zero to `digits` fractional digits.
    pub fn trunc_to(self, digits: u32) -> Option<Decimal> {
        self.to_digits(digits, Ordering::Equal)
    }

    pub fn cmp_value(self, o: Decimal) -> Ordering {
        match self.align(o) {
            Some((a, b, _)) => a.cmp(&b),
            None => self.to_f64().total_cmp(&o.to_f64()),
        }
    }

    /// Equivalence: both rounded to the precision of the less precise operand.
    pub fn equivalent(self, o: Decimal) -> bool {
        let s = self.scale.min(o.scale);
        self.round(s).cmp_value(o.round(s)) == Ordering::Equal
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mant.unsigned_abs().to_string();
        let sign = if self.mant < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = if digits.len() <= scale {
            format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
        } else {
            digits
        };
        let split = padded.len() - scale;
        let (i, fr) = padded.split_at(split);
        write!(f, "{sign}{i}.{fr}")
    }
}

/// Which of the three FHIRPath temporal types a [`Temporal`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemporalKind {
    Date,
    DateTime,
    Time,
}

/// Precision levels shared by dates, datetimes and times.
pub const P_YEAR: u8 = 1;
pub const P_MONTH: u8 = 2;
pub const P_DAY: u8 = 3;
pub const P_HOUR: u8 = 4;
pub const P_MINUTE: u8 = 5;
pub const P_SECOND: u8 = 6;

/// A date, datetime or time with the precision it was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Temporal {
    pub kind: TemporalKind,
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub millis: u16,
    /// Number of fractional-second digits written (0 = none).
    pub frac_digits: u8,
    /// Highest component present (P_YEAR..=P_SECOND).
    pub prec: u8,
    /// Offset from UTC in minutes, when given.
    pub tz: Option<i16>,
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = y + i64::from(m <= 2);
    (
        i32::try_from(y).unwrap_or(i32::MAX),
        u8::try_from(m).unwrap_or(1),
        u8::try_from(d).unwrap_or(1),
    )
}

fn take_digits(s: &str, n: usize) -> Option<(u32, &str)> {
    let head = s.get(..n)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, s.get(n..)?))
}

fn parse_tz(s: &str) -> Option<(Option<i16>, &str)> {
    if let Some(rest) = s.strip_prefix('Z') {
        return Some((Some(0), rest));
    }
    let sign = match s.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Some((None, s)),
    };
    let (h, rest) = take_digits(s.get(1..)?, 2)?;
    let rest = rest.strip_prefix(':')?;
    let (m, rest) = take_digits(rest, 2)?;
    if h > 14 || m > 59 {
        return None;
    }
    let off = i16::try_from(h * 60 + m).ok()? * sign;
    Some((Some(off), rest))
}

impl Temporal {
    fn empty(kind: TemporalKind) -> Temporal {
        Temporal {
            kind,
            year: 0,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            millis: 0,
            frac_digits: 0,
            prec: P_YEAR,
            tz: None,
        }
    }

    /// Parses the time part `hh[:mm[:ss[.fff]]]`, returning the rest of the input.
    fn parse_time_part<'s>(t: &mut Temporal, s: &'s str) -> Option<&'s str> {
        let (h, mut rest) = take_digits(s, 2)?;
        t.hour = u8::try_from(h).ok()?;
        t.prec = P_HOUR;
        if let Some(r) = rest.strip_prefix(':') {
            let (mi, r) = take_digits(r, 2)?;
            t.minute = u8::try_from(mi).ok()?;
            t.prec = P_MINUTE;
            rest = r;
            if let Some(r) = rest.strip_prefix(':') {
                let (se, r) = take_digits(r, 2)?;
                t.second = u8::try_from(se).ok()?;
                t.prec = P_SECOND;
                rest = r;
                if let Some(r) = rest.strip_prefix('.') {
                    let n = r.bytes().take_while(u8::is_ascii_digit).count();
                    if n == 0 {
                        return None;
                    }
                    let frac = r.get(..n)?;
                    let mut ms = 0u16;
                    for (i, b) in frac.bytes().take(3).enumerate() {
                        ms += u16::from(b - b'0') * [100, 10, 1].get(i).copied().unwrap_or(0);
                    }
                    t.millis = ms;
                    t.frac_digits = u8::try_from(n.min(3)).ok()?;
                    rest = r.get(n..)?;
                }
            }
        }
        if t.hour > 23 || t.minute > 59 || t.second > 59 {
            return None;
        }
        Some(rest)
    }

    /// Parses `YYYY[-MM[-DD]][T[hh[:mm[:ss[.fff]]]][tz]]`. A `T` (even a bare trailing
    /// one, as in the literal `@2015T`) makes it a DateTime, otherwise it is a Date.
    pub fn parse_date_or_datetime(s: &str) -> Option<Temporal> {
        let mut t = Temporal::empty(TemporalKind::Date);
        let (y, mut rest) = take_digits(s, 4)?;
        t.year = i32::try_from(y).ok()?;
        if let Some(r) = rest.strip_prefix('-') {
            let (m, r) = take_digits(r, 2)?;
            t.month = u8::try_from(m).ok()?;
            t.prec = P_MONTH;
            rest = r;
            if let Some(r) = rest.strip_prefix('-') {
                let (d, r) = take_digits(r, 2)?;
                t.day = u8::try_from(d).ok()?;
                t.prec = P_DAY;
                rest = r;
            }
        }
        if !(1..=12).contains(&t.month) || t.day < 1 || t.day > days_in_month(t.year, t.month) {
            return None;
        }
        if let Some(r) = rest.strip_prefix('T') {
            t.kind = TemporalKind::DateTime;
            rest = r;
            if !rest.is_empty() {
                if t.prec != P_DAY {
                    return None;
                }
                rest = Temporal::parse_time_part(&mut t, rest)?;
                let (tz, r) = parse_tz(rest)?;
                t.tz = tz;
                rest = r;
            }
        }
        if !rest.is_empty() {
            return None;
        }
        Some(t)
    }

    /// Parses a FHIR `dateTime`/`instant` value (always a DateTime, even without a time).
    pub fn parse_datetime(s: &str) -> Option<Temporal> {
        let mut t = Temporal::parse_date_or_datetime(s)?;
        t.kind = TemporalKind::DateTime;
        Some(t)
    }

    /// Parses a FHIR `date` value.
    pub fn parse_date(s: &str) -> Option<Temporal> {
        Temporal::parse_date_or_datetime(s).filter(|t| t.kind == TemporalKind::Date)
    }

    /// Parses `hh[:mm[:ss[.fff]]]` (no timezone allowed).
    pub fn parse_time(s: &str) -> Option<Temporal> {
        let mut t = Temporal::empty(TemporalKind::Time);
        let rest = Temporal::parse_time_part(&mut t, s)?;
        rest.is_empty().then_some(t)
    }

    /// The current moment (UTC) at millisecond precision.
    pub fn now() -> Temporal {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or(0);
        let days = ms.div_euclid(86_400_000);
        let rem = ms.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        Temporal {
            kind: TemporalKind::DateTime,
            year,
            month,
            day,
            hour: u8::try_from(rem / 3_600_000).unwrap_or(0),
            minute: u8::try_from(rem / 60_000 % 60).unwrap_or(0),
            second: u8::try_from(rem / 1000 % 60).unwrap_or(0),
            millis: u16::try_from(rem % 1000).unwrap_or(0),
            frac_digits: 3,
            prec: P_SECOND,
            tz: Some(0),
        }
    }

    /// The date part of a DateTime.
    pub fn date_part(self) -> Temporal {
        Temporal {
            kind: TemporalKind::Date,
            prec: self.prec.min(P_DAY),
            tz: None,
            hour: 0,
            minute: 0,
            second: 0,
            millis: 0,
            frac_digits: 0,
            ..self
        }
    }

    /// The time part of a DateTime.
    pub fn time_part(self) -> Temporal {
        Temporal {
            kind: TemporalKind::Time,
            tz: None,
            ..self
        }
    }

    fn ms_of_day(self) -> i64 {
        i64::from(self.hour) * 3_600_000
            + i64::from(self.minute) * 60_000
            + i64::from(self.second) * 1000
            + i64::from(self.millis)
    }

    fn set_from(&mut self, days: i64, ms: i64) {
        let (y, m, d) = civil_from_days(days);
        self.year = y;
        self.month = m;
        self.day = d;
        self.hour = u8::try_from(ms / 3_600_000).unwrap_or(0);
        self.minute = u8::try_from(ms / 60_000 % 60).unwrap_or(0);
        self.second = u8::try_from(ms / 1000 % 60).unwrap_or(0);
        self.millis = u16::try_from(ms % 1000).unwrap_or(0);
    }

    /// Shifts to UTC (only meaningful when a time and an offset are present).
    fn to_utc(self) -> Temporal {
        let Some(off) = self.tz else { return self };
        if self.prec < P_HOUR || self.kind == TemporalKind::Time {
            return self;
        }
        let total = days_from_civil(self.year, self.month, self.day) * 86_400_000
            + self.ms_of_day()
            - i64::from(off) * 60_000;
        let mut t = self;
        t.set_from(total.div_euclid(86_400_000), total.rem_euclid(86_400_000));
        t.tz = Some(0);
        t
    }

    fn components(self) -> [i64; 6] {
        [
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
            i64::from(self.hour),
            i64::from(self.minute),
            i64::from(self.second) * 1000 + i64::from(self.millis),
        ]
    }

    /// FHIRPath comparison. `Err(())` when the kinds cannot be compared at all
    /// (a Time against a date), `Ok(None)` when precision or timezones make the answer unknown.
    #[allow(clippy::result_unit_err)]
    pub fn compare(self, o: Temporal) -> Result<Option<Ordering>, ()> {
        let a_time = self.kind == TemporalKind::Time;
        let b_time = o.kind == TemporalKind::Time;
        if a_time != b_time {
            return Err(());
        }
        let (mut a, mut b) = (self, o);
        if a.prec >= P_HOUR && b.prec >= P_HOUR && !a_time {
            match (a.tz, b.tz) {
                (Some(_), Some(_)) => {
                    a = a.to_utc();
                    b = b.to_utc();
                }
                (None, None) => {}
                _ => return Ok(None),
            }
        }
        let start = if a_time { 3 } else { 0 };
        let ca = a.components();
        let cb = b.components();
        let common = usize::from(a.prec.min(b.prec));
        for i in start..common {
            let (x, y) = (ca.get(i), cb.get(i));
            if x != y {
                return Ok(x.partial_cmp(&y));
            }
        }
        if a.prec == b.prec {
            Ok(Some(Ordering::Equal))
        } else {
            Ok(None)
        }
    }

    /// Adds `amount` of a calendar unit; `None` on unsupported unit or overflow.
    pub fn add(self, amount: i64, unit: CalUnit) -> Option<Temporal> {
        let mut t = self;
        match unit {
            CalUnit::Year | CalUnit::Month => {
                if t.kind == TemporalKind::Time {
                    return None;
                }
                let months = if unit == CalUnit::Year {
                    amount.checked_mul(12)?
                } else {
                    amount
                };
                let total =
                    (i64::from(t.year) * 12 + i64::from(t.month) - 1).checked_add(months)?;
                t.year = i32::try_from(total.div_euclid(12)).ok()?;
                t.month = u8::try_from(total.rem_euclid(12) + 1).ok()?;
                t.day = t.day.min(days_in_month(t.year, t.month));
            }
            _ => {
                let ms_unit: i64 = match unit {
                    CalUnit::Week => 7 * 86_400_000,
                    CalUnit::Day => 86_400_000,
                    CalUnit::Hour => 3_600_000,
                    CalUnit::Minute => 60_000,
                    CalUnit::Second => 1000,
                    _ => 1,
                };
                let delta = amount.checked_mul(ms_unit)?;
                if t.kind == TemporalKind::Time {
                    // rem first: `delta` may be near i64::MAX
                    let total =
                        (t.ms_of_day() + delta.rem_euclid(86_400_000)).rem_euclid(86_400_000);
                    t.set_from(0, total);
                    t.year = self.year;
                    t.month = self.month;
                    t.day = self.day;
                } else {
                    let delta = if t.kind == TemporalKind::Date || t.prec <= P_DAY {
                        delta / 86_400_000 * 86_400_000
                    } else {
                        delta
                    };
                    let total = days_from_civil(t.year, t.month, t.day)
                        .checked_mul(86_400_000)?
                        .checked_add(t.ms_of_day())?
                        .checked_add(delta)?;
                    t.set_from(total.div_euclid(86_400_000), total.rem_euclid(86_400_000));
                }
            }
        }
        (1..=9999).contains(&t.year).then_some(t)
    }

    /// Number of digits of precision as reported by `precision()`.
    pub fn precision_digits(self) -> i64 {
        let ms = self.frac_digits > 0;
        if self.kind == TemporalKind::Time {
            return match self.prec {
                P_HOUR => 2,
                P_MINUTE => 4,
                _ if ms => 9,
                _ => 6,
            };
        }
        match self.prec {
            P_YEAR => 4,
            P_MONTH => 6,
            P_DAY => 8,
            P_HOUR => 10,
            P_MINUTE => 12,
            _ if ms => 17,
            _ => 14,
        }
    }

    /// `lowBoundary`/`highBoundary` to a digit precision (4,6,8,10,12,14,17 or 2,4,6,9 for times).
    pub fn boundary(self, digits: i64, high: bool) -> Option<Temporal> {
        let mut t = self;
        let level = if t.kind == TemporalKind::Time {
            match digits {
                2 => P_HOUR,
                4 => P_MINUTE,
                6 | 9 => P_SECOND,
                _ => return None,
            }
        } else {
            match digits {
                4 => P_YEAR,
                6 => P_MONTH,
                8 => P_DAY,
                10 => P_HOUR,
                12 => P_MINUTE,
                14 | 17 => P_SECOND,
                _ => return None,
            }
        };
        let fill = |t: &mut Temporal, from: u8| {
            if from < P_MONTH {
                t.month = if high { 12 } else { 1 };
            }
            if from < P_DAY {
                t.day = if high {
                    days_in_month(t.year, t.month)
                } else {
                    1
                };
            }
            if from < P_HOUR {
                t.hour = if high { 23 } else { 0 };
            }
            if from < P_MINUTE {
                t.minute = if high { 59 } else { 0 };
            }
            if from < P_SECOND {
                t.second = if high { 59 } else { 0 };
                t.millis = if high { 999 } else { 0 };
            } else if t.frac_digits == 0 {
                t.millis = if high { 999 } else { 0 };
            }
        };
        let from = t.prec;
        fill(&mut t, from);
        t.prec = level;
        t.frac_digits = if digits == 17 || digits == 9 { 3 } else { 0 };
        if t.kind == TemporalKind::DateTime && level >= P_HOUR && t.tz.is_none() {
            t.tz = Some(if high { -12 * 60 } else { 14 * 60 });
        }
        if t.kind == TemporalKind::DateTime && level <= P_DAY {
            t.kind = TemporalKind::Date;
            t.tz = None;
        }
        Some(t)
    }
}

impl fmt::Display for Temporal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != TemporalKind::Time {
            write!(f, "{:04}", self.year)?;
            if self.prec >= P_MONTH {
                write!(f, "-{:02}", self.month)?;
            }
            if self.prec >= P_DAY {
                write!(f, "-{:02}", self.day)?;
            }
            if self.kind == TemporalKind::Date || self.prec < P_HOUR {
                return Ok(());
            }
            f.write_str("T")?;
        }
        write!(f, "{:02}", self.hour)?;
        if self.prec >= P_MINUTE {
            write!(f, ":{:02}", self.minute)?;
        }
        if self.prec >= P_SECOND {
            write!(f, ":{:02}", self.second)?;
            match self.frac_digits {
                0 => {}
                1 => write!(f, ".{}", self.millis / 100)?,
                2 => write!(f, ".{:02}", self.millis / 10)?,
                _ => write!(f, ".{:03}", self.millis)?,
            }
        }
        if self.kind == TemporalKind::DateTime {
            match self.tz {
                None => {}
                Some(0) => f.write_str("Z")?,
                Some(off) => {
                    let sign = if off < 0 { '-' } else { '+' };
                    let a = off.unsigned_abs();
                    write!(f, "{sign}{:02}:{:02}", a / 60, a % 60)?;
                }
            }
        }
        Ok(())
    }
}

/// Calendar duration units usable in date arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalUnit {
    Year,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

/// Maps a calendar keyword (`days`, `week`, …) to its unit.
pub fn calendar_keyword(word: &str) -> Option<CalUnit> {
    Some(match word {
        "year" | "years" => CalUnit::Year,
        "month" | "months" => CalUnit::Month,
        "week" | "weeks" => CalUnit::Week,
        "day" | "days" => CalUnit::Day,
        "hour" | "hours" => CalUnit::Hour,
        "minute" | "minutes" => CalUnit::Minute,
        "second" | "seconds" => CalUnit::Second,
        "millisecond" | "milliseconds" => CalUnit::Millisecond,
        _ => return None,
    })
}

/// Unit usable for date arithmetic: calendar keywords and the definite UCUM time units.
pub fn arithmetic_unit(unit: &str) -> Option<CalUnit> {
    calendar_keyword(unit).or(match unit {
        "wk" => Some(CalUnit::Week),
        "d" => Some(CalUnit::Day),
        "h" => Some(CalUnit::Hour),
        "min" => Some(CalUnit::Minute),
        "s" => Some(CalUnit::Second),
        "ms" => Some(CalUnit::Millisecond),
        _ => None,
    })
}

/// A quantity: a decimal value with a UCUM code or a calendar keyword (`calendar`).
#[derive(Clone, Debug, PartialEq)]
pub struct Quantity {
    pub value: Decimal,
    pub unit: Rc<str>,
    pub calendar: bool,
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.calendar {
            write!(f, "{} {}", self.value, self.unit)
        } else {
            write!(f, "{} '{}'", self.value, self.unit)
        }
    }
}

/// Base dimensions: m, g, s, K, mol, A, cd, calendar year, calendar month.
type Dims = [i8; 9];

struct Canonical {
    factor: Decimal,
    dims: Dims,
}

fn dec(s: &str) -> Decimal {
    Decimal::parse(s).unwrap_or(Decimal::from_i64(1))
}

/// Base atoms known to the mini UCUM table: (code, factor, dims, metric).
fn ucum_atom(code: &str) -> Option<(Decimal, Dims, bool)> {
    const M: Dims = [1, 0, 0, 0, 0, 0, 0, 0, 0];
    const G: Dims = [0, 1, 0, 0, 0, 0, 0, 0, 0];
    const S: Dims = [0, 0, 1, 0, 0, 0, 0, 0, 0];
    const K: Dims = [0, 0, 0, 1, 0, 0, 0, 0, 0];
    const MOL: Dims = [0, 0, 0, 0, 1, 0, 0, 0, 0];
    const A: Dims = [0, 0, 0, 0, 0, 1, 0, 0, 0];
    const CD: Dims = [0, 0, 0, 0, 0, 0, 1, 0, 0];
    const ONE: Dims = [0; 9];
    const L: Dims = [3, 0, 0, 0, 0, 0, 0, 0, 0];
    const PA: Dims = [-1, 1, -2, 0, 0, 0, 0, 0, 0];
    Some(match code {
        "m" => (dec("1"), M, true),
        "g" => (dec("1"), G, true),
        "s" => (dec("1"), S, true),
        "K" => (dec("1"), K, true),
        "mol" => (dec("1"), MOL, true),
        "A" => (dec("1"), A, true),
        "cd" => (dec("1"), CD, true),
        "L" | "l" => (dec("0.001"), L, true),
        "Pa" => (dec("1000"), PA, true),
        "bar" => (dec("100000000"), PA, true),
        "mm[Hg]" => (dec("133322"), PA, false),
        "min" => (dec("60"), S, false),
        "h" => (dec("3600"), S, false),
        "d" => (dec("86400"), S, false),
        "wk" => (dec("604800"), S, false),
        "mo" => (dec("2629800"), S, false),
        "a" => (dec("31557600"), S, false),
        "[lb_av]" => (dec("453.59237"), G, false),
        "[oz_av]" => (dec("28.349523125"), G, false),
        "[in_i]" => (dec("0.0254"), M, false),
        "[ft_i]" => (dec("0.3048"), M, false),
        "[mi_i]" => (dec("1609.344"), M, false),
        "%" => (dec("0.01"), ONE, false),
        "1" => (dec("1"), ONE, false),
        "U" | "[iU]" | "[IU]" => (dec("1"), [0, 0, 0, 0, 0, 0, 0, 0, 0], false),
        "Cel" | "[degF]" => return None,
        _ => return None,
    })
}

fn ucum_prefix(p: &str) -> Option<Decimal> {
    Some(dec(match p {
        "Y" => "1000000000000000000000000",
        "Z" => "1000000000000000000000",
        "E" => "1000000000000000000",
        "P" => "1000000000000000",
        "T" => "1000000000000",
        "G" => "1000000000",
        "M" => "1000000",
        "k" => "1000",
        "h" => "100",
        "da" => "10",
        "d" => "0.1",
        "c" => "0.01",
        "m" => "0.001",
        "u" => "0.000001",
        "n" => "0.000000001",
        "p" => "0.000000000001",
        "f" => "0.000000000000001",
        _ => return None,
    }))
}

fn ucum_component(c: &str) -> Option<(Decimal, Dims)> {
    // strip annotations like {score}
    let mut s = String::new();
    let mut depth = 0;
    for ch in c.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth == 0 => s.push(ch),
            _ => {}
        }
    }
    if s.is_empty() {
        return Some((dec("1"), [0; 9]));
    }
    let digits_at = s
        .char_indices()
        .rev()
        .take_while(|(_, ch)| ch.is_ascii_digit() || *ch == '-' || *ch == '+')
        .last()
        .map(|(i, _)| i)
        .filter(|i| *i > 0 && !s.ends_with(']'));
    let (atom, exp) = match digits_at {
        Some(i) => (s.get(..i)?, s.get(i..)?.parse::<i8>().ok()?),
        None => (s.as_str(), 1),
    };
    if let Ok(n) = atom.parse::<i64>()
        && digits_at.is_none()
    {
        return Some((Decimal::from_i64(n), [0; 9]));
    }
    let (factor, dims) = if let Some((f, d, _)) = ucum_atom(atom) {
        (f, d)
    } else {
        let mut found = None;
        for plen in [1usize, 2] {
            if let (Some(p), Some(rest)) = (atom.get(..plen), atom.get(plen..))
                && let (Some(pf), Some((f, d, true))) = (ucum_prefix(p), ucum_atom(rest))
            {
                found = Some((pf.checked_mul(f)?, d));
                break;
            }
        }
        found?
    };
    let mut f = dec("1");
    for _ in 0..exp.unsigned_abs() {
        f = f.checked_mul(factor)?;
    }
    if exp < 0 {
        f = dec("1").checked_div(f)?;
    }
    let mut d = [0i8; 9];
    for (o, i) in d.iter_mut().zip(dims) {
        *o = i.checked_mul(exp)?;
    }
    Some((f, d))
}

fn canonical_unit(unit: &str, calendar: bool) -> Option<Canonical> {
    if calendar {
        let cu = calendar_keyword(unit)?;
        let (code, dims): (&str, Option<Dims>) = match cu {
            CalUnit::Year => ("1", Some([0, 0, 0, 0, 0, 0, 0, 1, 0])),
            CalUnit::Month => ("1", Some([0, 0, 0, 0, 0, 0, 0, 0, 1])),
            CalUnit::Week => ("wk", None),
            CalUnit::Day => ("d", None),
            CalUnit::Hour => ("h", None),
            CalUnit::Minute => ("min", None),
            CalUnit::Second => ("s", None),
            CalUnit::Millisecond => ("ms", None),
        };
        if let Some(d) = dims {
            return Some(Canonical {
                factor: dec(code),
                dims: d,
            });
        }
        return canonical_unit(code, false);
    }
    let mut factor = dec("1");
    let mut dims = [0i8; 9];
    let mut divide = false;
    let mut rest = unit;
    if let Some(r) = rest.strip_prefix('/') {
        divide = true;
        rest = r;
    }
    loop {
        let end = rest.find(['.', '/']).unwrap_or(rest.len());
        let comp = rest.get(..end)?;
        let (f, d) = ucum_component(comp)?;
        if divide {
            factor = factor.checked_div(f)?;
            for (o, i) in dims.iter_mut().zip(d) {
                *o = o.checked_sub(i)?;
            }
        } else {
            factor = factor.checked_mul(f)?;
            for (o, i) in dims.iter_mut().zip(d) {
                *o = o.checked_add(i)?;
            }
        }
        if end >= rest.len() {
            break;
        }
        divide = rest.get(end..end + 1)? == "/";
        rest = rest.get(end + 1..)?;
    }
    Some(Canonical { factor, dims })
}

impl Quantity {
    pub fn new(value: Decimal, unit: &str) -> Quantity {
        let calendar = calendar_keyword(unit).is_some();
        Quantity {
            value,
            unit: Rc::from(unit),
            calendar,
        }
    }

    fn canonical(&self) -> Option<(Decimal, Dims)> {
        let c = canonical_unit(&self.unit, self.calendar)?;
        Some((self.value.checked_mul(c.factor)?, c.dims))
    }

    /// Compares after converting to base units; `None` when the units are not comparable.
    pub fn compare(&self, o: &Quantity) -> Option<Ordering> {
        if self.unit == o.unit && self.calendar == o.calendar {
            return Some(self.value.cmp_value(o.value));
        }
        let (a, da) = self.canonical()?;
        let (b, db) = o.canonical()?;
        (da == db).then(|| a.cmp_value(b))
    }

    /// Equivalence: compare at the precision of the less precise value.
    pub fn equivalent(&self, o: &Quantity) -> Option<bool> {
        if self.unit == o.unit && self.calendar == o.calendar {
            return Some(self.value.equivalent(o.value));
        }
        let (a, da) = self.canonical()?;
        let (b, db) = o.canonical()?;
        if da != db {
            return Some(false);
        }
        let s = self.value.scale().min(o.value.scale());
        Some(a.round(s).cmp_value(b.round(s)) == Ordering::Equal)
    }

    /// True when both units can be converted into each other.
    pub fn comparable(&self, o: &Quantity) -> bool {
        match (self.canonical(), o.canonical()) {
            (Some((_, a)), Some((_, b))) => a == b,
            _ => false,
        }
    }

    fn ucum_code(&self) -> Rc<str> {
        if !self.calendar {
            return self.unit.clone();
        }
        Rc::from(match calendar_keyword(&self.unit) {
            Some(CalUnit::Year) => "a",
            Some(CalUnit::Month) => "mo",
            Some(CalUnit::Week) => "wk",
            Some(CalUnit::Day) => "d",
            Some(CalUnit::Hour) => "h",
            Some(CalUnit::Minute) => "min",
            Some(CalUnit::Second) => "s",
            _ => "ms",
        })
    }

    pub fn mul(&self, o: &Quantity) -> Option<Quantity> {
        let (a, b) = (self.ucum_code(), o.ucum_code());
        let unit = match (&*a, &*b) {
            ("1", _) => b.to_string(),
            (_, "1") => a.to_string(),
            _ => format!("{a}.{b}"),
        };
        Some(Quantity::new(self.value.checked_mul(o.value)?, &unit))
    }

    pub fn div(&self, o: &Quantity) -> Option<Quantity> {
        let (a, b) = (self.ucum_code(), o.ucum_code());
        let unit = if a == b {
            "1".to_string()
        } else if &*b == "1" {
            a.to_string()
        } else {
            let inv: String = b
                .chars()
                .map(|c| match c {
                    '.' => '/',
                    '/' => '.',
                    c => c,
                })
                .collect();
            format!("{a}/{inv}")
        };
        Some(Quantity::new(self.value.checked_div(o.value)?, &unit))
    }

    /// Converts `o` to this quantity's unit (for + and -).
    pub fn convert_value(&self, o: &Quantity) -> Option<Decimal> {
        if self.unit == o.unit {
            return Some(o.value);
        }
        let ca = canonical_unit(&self.unit, self.calendar)?;
        let (b, db) = o.canonical()?;
        if ca.dims != db {
            return None;
        }
        b.checked_div(ca.factor)
    }
}

/// Parses a quantity string as `toQuantity()` accepts: `number`, `number 'unit'` or `number calendar-word`.
pub fn parse_quantity_text(s: &str) -> Option<Quantity> {
    let s = s.trim();
    let (num, rest) = match s.find(' ') {
        Some(i) => (s.get(..i)?, s.get(i + 1..)?.trim()),
        None => (s, ""),
    };
    let value = Decimal::parse(num)?;
    if num.starts_with('+') || num.contains(['e', 'E']) {
        return None;
    }
    if rest.is_empty() {
        return Some(Quantity::new(value, "1"));
    }
    if let Some(u) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Some(Quantity {
            value,
            unit: Rc::from(u),
            calendar: false,
        });
    }
    calendar_keyword(rest).map(|_| Quantity::new(value, rest))
}
