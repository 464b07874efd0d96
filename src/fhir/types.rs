//! Parse-don't-validate newtypes for FHIR basics: logical ids, version ids and instants.
//!
//! Once a value is one of these types it is valid; the REST edge and the store never see a raw
//! string where an id or a timestamp belongs.

use crate::fhir::outcome::Outcome;
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, Weekday};

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    pub fn parse(s: &str) -> Result<Id, Outcome> {
        if is_valid_id(s) {
            Ok(Id(s.to_string()))
        } else {
            Err(Outcome::bad_request(format!(
                "'{}' is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)",
                truncate(s, 80)
            )))
        }
    }

    /// A fresh server-assigned id (a random UUID).
    pub fn generate() -> Id {
        Id(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A version id: the n of `W/"n"`, starting at 1.
pub type VersionId = i64;

/// Parses an ETag / If-Match value (`W/"3"`, `"3"` or `3`) into a version id.
pub fn parse_etag(s: &str) -> Option<VersionId> {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    let v: VersionId = s.parse().ok()?;
    (v >= 1).then_some(v)
}

pub fn etag(version: VersionId) -> String {
    format!("W/\"{version}\"")
}

/// A point in time with millisecond precision, in UTC: FHIR `instant` and `meta.lastUpdated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(i64);

impl Instant {
    pub fn now() -> Instant {
        let now = OffsetDateTime::now_utc();
        Instant((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn from_millis(ms: i64) -> Instant {
        Instant(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    fn to_offset(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// `2026-11-25T19:17:53.123Z`
    pub fn to_fhir(self) -> String {
        let t = self.to_offset();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }

    /// IMF-fixdate, as HTTP wants it: `Wed, 25 Nov 2026 19:17:53 GMT`.
    pub fn to_http_date(self) -> String {
        let t = self.to_offset();
        let day = match t.weekday() {
            Weekday::Monday => "Mon",
            Weekday::Tuesday => "Tue",
            Weekday::Wednesday => "Wed",
            Weekday::Thursday => "Thu",
            Weekday::Friday => "Fri",
            Weekday::Saturday => "Sat",
            Weekday::Sunday => "Sun",
        };
        let month = match t.month() {
            Month::January => "Jan",
            Month::February => "Feb",
            Month::March => "Mar",
            Month::April => "Apr",
            Month::May => "May",
            Month::June => "Jun",
            Month::July => "Jul",
            Month::August => "Aug",
            Month::September => "Sep",
            Month::October => "Oct",
            Month::November => "Nov",
            Month::December => "Dec",
        };
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            day,
            t.day(),
            month,
            t.year(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    /// The whole second this instant falls in (HTTP dates have second precision).
    pub fn truncate_to_second(self) -> Instant {
        Instant(self.0.div_euclid(1000) * 1000)
    }

    /// Parses an HTTP IMF-fixdate. Invalid dates give None (and are ignored, as HTTP says).
    pub fn parse_http_date(s: &str) -> Option<Instant> {
        // "Wed, 25 Nov 2026 19:17:53 GMT"
        let s = s.trim();
        let rest = s.split_once(", ")?.1;
        let mut parts = rest.split(' ');
        let day: u8 = parts.next()?.parse().ok()?;
        let month = match parts.next()? {
            "Jan" => Month::January,
            "Feb" => Month::February,
            "Mar" => Month::March,
            "Apr" => Month::April,
            "May" => Month::May,
            "Jun" => Month::June,
            "Jul" => Month::July,
            "Aug" => Month::August,
            "Sep" => Month::September,
            "Oct" => Month::October,
            "Nov" => Month::November,
            "Dec" => Month::December,
            _ => return None,
        };
        let year: i32 = parts.next()?.parse().ok()?;
        let mut hms = parts.next()?.split(':');
        let h: u8 = hms.next()?.parse().ok()?;
        let m: u8 = hms.next()?.parse().ok()?;
        let sec: u8 = hms.next()?.parse().ok()?;
        if parts.next()? != "GMT" {
            return None;
        }
        let date = Date::from_calendar_date(year, month, day).ok()?;
        let time = Time::from_hms(h, m, sec).ok()?;
        let t = PrimitiveDateTime::new(date, time).assume_utc();
        Some(Instant((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    /// Parses a FHIR instant or dateTime (`2026-11-25`, `2026-11-25T10:00:00+01:00`, …);
    /// a partial date means its start. A dateTime with a time needs a zone.
    pub fn parse_fhir(s: &str) -> Option<Instant> {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Some(Instant((t.unix_timestamp_nanos() / 1_000_000) as i64));
        }
        let (year, month, day) = match s.len() {
            4 => (s.parse().ok()?, 1, 1),
            7 => (s.get(0..4)?.parse().ok()?, s.get(5..7)?.parse().ok()?, 1),
            10 => (
                s.get(0..4)?.parse().ok()?,
                s.get(5..7)?.parse().ok()?,
                s.get(8..10)?.parse().ok()?,
            ),
            _ => return None,
        };
        let date = Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()?;
        let t = PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_offset(UtcOffset::UTC);
        Some(Instant((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

/// Whether the date part of a FHIR date/dateTime/instant string that already matches the
/// type's regex is a real calendar date (the regex accepts `2023-02-30`).
pub fn is_calendar_valid(s: &str) -> bool {
    if s.len() < 10 {
        return true; // year or year-month: the regex is enough
    }
    let (Some(y), Some(m), Some(d)) = (s.get(0..4), s.get(5..7), s.get(8..10)) else {
        return false;
    };
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i32>(), m.parse::<u8>(), d.parse::<u8>()) else {
        return false;
    };
    match Month::try_from(m) {
        Ok(month) => Date::from_calendar_date(y, month, d).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "123", "A-b.c", &"x".repeat(64)] {
            assert!(Id::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", "a_b", &"x".repeat(65)] {
            assert!(Id::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn etags() {
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag("7"), Some(7));
        assert_eq!(parse_etag("W/\"x\""), None);
        assert_eq!(parse_etag("W/\"0\""), None);
        assert_eq!(etag(4), "W/\"4\"");
    }

    #[test]
    fn instants_round_trip() {
        let i = Instant::parse_fhir("2026-11-25T19:17:53.123Z").unwrap();
        assert_eq!(i.to_fhir(), "2026-11-25T19:17:53.123Z");
        assert_eq!(i.to_http_date(), "Wed, 25 Nov 2026 19:17:53 GMT");
        let h = Instant::parse_http_date(&i.to_http_date()).unwrap();
        assert_eq!(h, i.truncate_to_second());
        assert_eq!(
            Instant::parse_fhir("2026-11-25T20:17:53.123+01:00"),
            Some(i)
        );
        assert_eq!(
            Instant::parse_fhir("2026-11").unwrap().to_fhir(),
            "2026-11-01T00:00:00.000Z"
        );
        assert_eq!(Instant::parse_fhir("2026-13"), None);
        assert_eq!(Instant::parse_http_date("yesterday"), None);
    }

    #[test]
    fn calendar() {
        assert!(is_calendar_valid("2024-02-29"));
        assert!(!is_calendar_valid("2023-02-29"));
        assert!(!is_calendar_valid("2023-04-31T10:00:00Z"));
        assert!(is_calendar_valid("2023"));
        assert!(is_calendar_valid("2023-04"));
    }
}
