//! When periodic jobs run: every N seconds, or daily at a wall-clock time in a time zone
//! (IANA names, from the tz database built into the binary). A schedule maps any instant to
//! the start of its period; a periodic job is enqueued once per period start, with that start
//! as its idempotency key, so every node may try and exactly one succeeds.

use jiff::tz::TimeZone;
use jiff::{Timestamp, civil};

#[derive(Debug, Clone)]
pub enum Schedule {
    /// Periods of this many seconds, counted from the Unix epoch.
    Every { secs: u32 },
    /// Once a day at `hour:minute` local time in `zone`. On a day when that time does not
    /// exist (a DST gap) the job runs at the first instant after the gap.
    Daily {
        hour: i8,
        minute: i8,
        zone: TimeZone,
    },
}

impl Schedule {
    /// Every `secs` seconds (at least one).
    pub fn every(secs: u32) -> Schedule {
        Schedule::Every { secs: secs.max(1) }
    }

    /// Daily at `at` ("HH:MM") in `zone` (an IANA name such as "Europe/Berlin", or "UTC").
    pub fn daily(at: &str, zone: &str) -> Result<Schedule, String> {
        let (h, m) = at
            .split_once(':')
            .ok_or_else(|| format!("'{at}' is not a time of day (HH:MM)"))?;
        let hour: i8 = h
            .parse()
            .ok()
            .filter(|h| (0..24).contains(h))
            .ok_or_else(|| format!("'{at}' is not a time of day (HH:MM)"))?;
        let minute: i8 = m
            .parse()
            .ok()
            .filter(|m| (0..60).contains(m))
            .ok_or_else(|| format!("'{at}' is not a time of day (HH:MM)"))?;
        let zone = zone_named(zone)?;
        Ok(Schedule::Daily { hour, minute, zone })
    }

    /// The start (ms since the epoch) of the period `now_ms` falls in: the latest run time at
    /// or before it.
    pub fn period_start(&self, now_ms: i64) -> i64 {
        match self {
            Schedule::Every { secs } => {
                let len = i64::from(*secs) * 1000;
                now_ms.div_euclid(len) * len
            }
            Schedule::Daily { hour, minute, zone } => {
                daily_start(now_ms, *hour, *minute, zone).unwrap_or(now_ms)
            }
        }
    }

    /// The start of the period after the one `now_ms` falls in.
    pub fn next_start(&self, now_ms: i64) -> i64 {
        match self {
            Schedule::Every { secs } => self.period_start(now_ms) + i64::from(*secs) * 1000,
            Schedule::Daily { .. } => {
                // the next day's run is at most 26 hours away (DST changes included)
                let start = self.period_start(now_ms);
                let mut probe = start + 20 * 3_600_000;
                while self.period_start(probe) == start {
                    probe += 3_600_000;
                }
                self.period_start(probe)
            }
        }
    }
}

/// A time zone by IANA name.
pub fn zone_named(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| format!("unknown time zone '{name}' (use an IANA name)"))
}

fn daily_start(now_ms: i64, hour: i8, minute: i8, zone: &TimeZone) -> Option<i64> {
    let now = Timestamp::from_millisecond(now_ms).ok()?;
    let today = now.to_zoned(zone.clone()).date();
    let at = |d: civil::Date| -> Option<i64> {
        let t = d.at(hour, minute, 0, 0).to_zoned(zone.clone()).ok()?;
        Some(t.timestamp().as_millisecond())
    };
    let todays = at(today)?;
    if todays <= now_ms {
        Some(todays)
    } else {
        at(today.yesterday().ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn every_counts_periods_from_the_epoch() {
        let s = Schedule::every(300);
        assert_eq!(
            s.period_start(ms("2026-12-02T10:07:00Z")),
            ms("2026-12-02T10:05:00Z")
        );
        assert_eq!(
            s.period_start(ms("2026-12-02T10:05:00Z")),
            ms("2026-12-02T10:05:00Z")
        );
        assert_eq!(
            s.next_start(ms("2026-12-02T10:07:00Z")),
            ms("2026-12-02T10:10:00Z")
        );
    }

    #[test]
    fn daily_runs_at_local_time_in_its_zone() {
        let s = Schedule::daily("02:30", "Europe/Berlin").unwrap();
        // winter: UTC+1
        assert_eq!(
            s.period_start(ms("2026-12-02T12:00:00Z")),
            ms("2026-12-02T01:30:00Z")
        );
        // before today's run: yesterday's
        assert_eq!(
            s.period_start(ms("2026-12-02T01:00:00Z")),
            ms("2026-12-01T01:30:00Z")
        );
        // summer: UTC+2
        assert_eq!(
            s.period_start(ms("2026-07-01T12:00:00Z")),
            ms("2026-07-01T00:30:00Z")
        );
        assert_eq!(
            s.next_start(ms("2026-12-02T12:00:00Z")),
            ms("2026-12-03T01:30:00Z")
        );
    }

    #[test]
    fn daily_in_a_dst_gap_runs_after_the_gap() {
        // 2026-03-29 02:30 does not exist in Berlin (clocks go 02:00 → 03:00)
        let s = Schedule::daily("02:30", "Europe/Berlin").unwrap();
        let start = s.period_start(ms("2026-03-29T12:00:00Z"));
        assert_eq!(start, ms("2026-03-29T01:30:00Z")); // 03:30 CEST, after the gap
        // the short day still has exactly one run
        assert_eq!(
            s.next_start(ms("2026-03-28T12:00:00Z")),
            start,
            "the run of the day with the gap"
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(Schedule::daily("25:00", "UTC").is_err());
        assert!(Schedule::daily("0230", "UTC").is_err());
        assert!(Schedule::daily("02:30", "Mars/Olympus").is_err());
    }
}
