//! FHIR dates, dateTimes and instants as inclusive millisecond ranges (UTC): `2020` is the
//! whole year, `2020-03-04T10:00+01:00` the whole minute. A time without a zone is taken as
//! UTC. Index rows and search values use the same ranges.

use time::{Date, Month};

/// The open ends of a Period without start or end.
pub const MIN: i64 = -62_135_596_800_000; // 0001-01-01T00:00:00Z
pub const MAX: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// The range a date, dateTime or instant covers, or None when it is not one.
pub fn range(s: &str) -> Option<(i64, i64)> {
    let p = Parsed::parse(s)?;
    Some((p.low()?, p.high()?))
}

/// The precision-aware parts of a date or dateTime.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    year: i32,
    month: Option<u8>,
    day: Option<u8>,
    hour: Option<u8>,
    minute: Option<u8>,
    second: Option<u8>,
    /// Milliseconds and the number of fraction digits written.
    millis: Option<(u16, u8)>,
    /// Offset in minutes.
    tz: i64,
}

fn num<T: std::str::FromStr>(s: &str, len: usize) -> Option<T> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

impl Parsed {
    fn parse(s: &str) -> Option<Parsed> {
        let (date, time) = match s.split_once('T') {
            Some((d, t)) => (d, Some(t)),
            None => (s, None),
        };
        let mut parts = date.split('-');
        let year: i32 = num(parts.next()?, 4)?;
        let month: Option<u8> = parts
            .next()
            .map(|m| num(m, 2))
            .map_or(Some(None), |m| m.map(Some))?;
        let day: Option<u8> = parts
            .next()
            .map(|d| num(d, 2))
            .map_or(Some(None), |d| d.map(Some))?;
        if parts.next().is_some() || (day.is_some() && month.is_none()) {
            return None;
        }
        let mut p = Parsed {
            year,
            month,
            day,
            hour: None,
            minute: None,
            second: None,
            millis: None,
            tz: 0,
        };
        if let Some(time) = time {
            day?;
            let (clock, tz) = if let Some(c) = time.strip_suffix('Z') {
                (c, 0)
            } else if let Some(i) = time.rfind(['+', '-']) {
                let (c, z) = time.split_at(i);
                let sign = if z.starts_with('-') { -1 } else { 1 };
                let (h, m) = z[1..].split_once(':')?;
                let h: i64 = num(h, 2)?;
                let m: i64 = num(m, 2)?;
                if h > 14 || m > 59 {
                    return None;
                }
                (c, sign * (h * 60 + m))
            } else {
                (time, 0)
            };
            p.tz = tz;
            let mut hms = clock.split(':');
            p.hour = Some(num(hms.next()?, 2)?);
            p.minute = Some(num(hms.next()?, 2)?);
            if let Some(sec) = hms.next() {
                let (whole, frac) = match sec.split_once('.') {
                    Some((w, f)) => (w, Some(f)),
                    None => (sec, None),
                };
                p.second = Some(num(whole, 2)?);
                if let Some(f) = frac {
                    if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    let digits = f.len().min(3);
                    let ms: u16 = format!("{:0<3}", &f[..digits]).parse().ok()?;
                    p.millis = Some((ms, f.len() as u8));
                }
            }
            if hms.next().is_some() || p.hour? > 23 || p.minute? > 59 || p.second.unwrap_or(0) > 60
            {
                return None;
            }
        }
        // checks the calendar date
        Date::from_calendar_date(
            year,
            Month::try_from(month.unwrap_or(1)).ok()?,
            day.unwrap_or(1),
        )
        .ok()?;
        Some(p)
    }

    fn epoch_ms(&self, month: u8, day: u8, h: u8, m: u8, s: u8, ms: u16) -> Option<i64> {
        let date = Date::from_calendar_date(self.year, Month::try_from(month).ok()?, day).ok()?;
        let days = i64::from(date.to_julian_day()) - 2_440_588; // 1970-01-01
        let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s.min(59));
        Some(secs * 1000 + i64::from(ms) - self.tz * 60_000)
    }

    fn low(&self) -> Option<i64> {
        self.epoch_ms(
            self.month.unwrap_or(1),
            self.day.unwrap_or(1),
            self.hour.unwrap_or(0),
            self.minute.unwrap_or(0),
            self.second.unwrap_or(0),
            self.millis.map_or(0, |m| m.0),
        )
    }

    fn high(&self) -> Option<i64> {
        let month = self.month.unwrap_or(12);
        let day = match self.day {
            Some(d) => d,
            None => Month::try_from(month).ok()?.length(self.year),
        };
        let end_ms = match (self.second, self.millis) {
            (Some(_), Some((ms, _))) => ms,
            _ => 999,
        };
        self.epoch_ms(
            month,
            day,
            self.hour.unwrap_or(23),
            self.minute.unwrap_or(59),
            self.second.unwrap_or(59),
            end_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str, low: &str, high: &str) {
        let (l, h) = range(s).unwrap_or_else(|| panic!("{s}"));
        let fmt = |ms: i64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        assert_eq!((fmt(l).as_str(), fmt(h).as_str()), (low, high), "{s}");
    }

    #[test]
    fn ranges_follow_precision_and_zone() {
        check("2020", "2020-01-01T00:00:00Z", "2020-12-31T23:59:59.999Z");
        check(
            "2020-02",
            "2020-02-01T00:00:00Z",
            "2020-02-29T23:59:59.999Z",
        );
        check(
            "2021-02-28",
            "2021-02-28T00:00:00Z",
            "2021-02-28T23:59:59.999Z",
        );
        check(
            "2020-03-04T10:00+01:00",
            "2020-03-04T09:00:00Z",
            "2020-03-04T09:00:59.999Z",
        );
        check(
            "2020-03-04T10:00:05Z",
            "2020-03-04T10:00:05Z",
            "2020-03-04T10:00:05.999Z",
        );
        check(
            "2020-03-04T10:00:05.5-02:30",
            "2020-03-04T12:30:05.5Z",
            "2020-03-04T12:30:05.5Z",
        );
        check("0001", "0001-01-01T00:00:00Z", "0001-12-31T23:59:59.999Z");
        assert_eq!(range("9999").map(|r| r.1), Some(MAX));
        assert_eq!(range("0001").map(|r| r.0), Some(MIN));
        for bad in [
            "",
            "20",
            "2020-13",
            "2020-02-30",
            "2020-01-01T25:00",
            "x",
            "2020-1-1",
            "2020-01-01T10",
            "2020-01-01T10:00+15:00",
            "2020--01",
        ] {
            assert!(range(bad).is_none(), "{bad}");
        }
    }
}
