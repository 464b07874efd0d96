//! Imports of what a phone or watch exports into the health log: a CSV of steps and workouts
//! (a header row naming the columns, as Google Fit and most step counters write) and Apple
//! Health's `export.xml`. Readings become the health log's Observations; each carries an
//! identifier made of the patient, the kind and its day or start, and is written by a
//! conditional update on it, so importing the same export again — or a longer one — adds
//! nothing twice. Steps are summed per day, sleep per night, heart rate averaged per day;
//! weights, blood pressures, glucose readings and workouts are kept one by one.

use super::fhir::{Fhir, problem};
use super::health::{Kind, kind, observation, subject};
use super::session::Session;
use super::view::{self, Shell};
use super::{WebState, page};
use crate::auth::Role;
use askama::Template;
use axum::Router;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub fn routes() -> Router<WebState> {
    Router::new().route("/app/health/import", post(import))
}

/// The identifier system of imported readings.
pub const IDENTIFIER_SYSTEM: &str = "urn:healporium:device-import";

/// At most this many readings in one import.
pub const MAX_READINGS: usize = 5000;

/// One reading to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub kind: &'static Kind,
    /// When: a FHIR instant.
    pub at: String,
    pub values: Vec<f64>,
    pub activity: Option<String>,
    /// What makes it the same reading on a second import (kind and day, or start).
    pub key: String,
}

fn the(key: &str) -> Result<&'static Kind, String> {
    kind(key).ok_or_else(|| format!("unknown kind {key}"))
}

/// Noon of `day` in `zone`, as an instant (daily totals are placed mid-day).
fn noon(day: jiff::civil::Date, zone: &jiff::tz::TimeZone) -> Option<String> {
    super::view::instant(&day.to_string(), "12:00", zone)
}

fn instant(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A date or date-time from an export: RFC 3339, `YYYY-MM-DD HH:MM[:SS] [+HHMM]`, or a date.
/// Returns the instant (None for a bare date) and the local date.
fn when(
    raw: &str,
    zone: &jiff::tz::TimeZone,
) -> Option<(Option<jiff::Timestamp>, jiff::civil::Date)> {
    let raw = raw.trim();
    if let Ok(ts) = raw.parse::<jiff::Timestamp>() {
        return Some((Some(ts), ts.to_zoned(zone.clone()).date()));
    }
    for format in ["%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M %z"] {
        if let Ok(z) = jiff::Zoned::strptime(format, raw) {
            return Some((Some(z.timestamp()), z.date()));
        }
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = jiff::civil::DateTime::strptime(format, raw)
            && let Ok(z) = dt.to_zoned(zone.clone())
        {
            return Some((Some(z.timestamp()), z.date()));
        }
    }
    raw.parse::<jiff::civil::Date>().ok().map(|d| (None, d))
}

/// Readings from a CSV of steps and workouts: a header row with a date column (`date`,
/// `day`, `start`, `start time`) and any of steps (`steps`, `step count`), minutes
/// (`minutes`, `duration`, `move minutes count`, `active minutes`) and the activity
/// (`activity`, `type`, `workout`). A row with a date only counts for its day; a row with a
/// time is one workout.
pub fn from_csv(text: &str, zone: &jiff::tz::TimeZone) -> Result<Vec<Reading>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|_| "The file is not a CSV with a header row.".to_string())?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let column = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
    let date = column(&[
        "date",
        "day",
        "start",
        "start time",
        "start_time",
        "startdate",
    ])
    .ok_or("The CSV needs a date column (date, day or start).")?;
    let steps = column(&["steps", "step count", "step_count"]);
    let minutes = column(&[
        "minutes",
        "duration",
        "duration (min)",
        "move minutes count",
        "active minutes",
        "exercise minutes",
    ]);
    let activity = column(&["activity", "type", "workout", "activity type"]);
    if steps.is_none() && minutes.is_none() {
        return Err("The CSV needs a steps or a minutes column.".to_string());
    }
    let mut out = Vec::new();
    for (n, row) in reader.records().enumerate() {
        let line = n + 2;
        let row = row.map_err(|_| format!("Line {line} cannot be read."))?;
        let field = |i: Option<usize>| i.and_then(|i| row.get(i)).filter(|v| !v.is_empty());
        let Some(raw_date) = field(Some(date)) else {
            continue;
        };
        let (ts, day) = when(raw_date, zone)
            .ok_or(format!("Line {line}: the date {raw_date:?} is not a date."))?;
        let number = |i: Option<usize>, what: &str| -> Result<Option<f64>, String> {
            match field(i) {
                None => Ok(None),
                Some(v) => v
                    .replace(',', "")
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| format!("Line {line}: {what} {v:?} is not a number.")),
            }
        };
        let at = match ts {
            Some(t) => instant(t),
            None => noon(day, zone).ok_or(format!("Line {line}: no such day"))?,
        };
        if let Some(v) = number(steps, "steps")?.filter(|v| *v > 0.0) {
            out.push(Reading {
                kind: the("steps")?,
                at: at.clone(),
                values: vec![v.round()],
                activity: None,
                key: format!("steps|{day}"),
            });
        }
        if let Some(v) = number(minutes, "minutes")?.filter(|v| *v > 0.0) {
            out.push(Reading {
                kind: the("exercise")?,
                at: at.clone(),
                values: vec![v.round()],
                activity: field(activity).map(str::to_string),
                key: match ts {
                    Some(t) => format!("exercise|{}", instant(t)),
                    None => format!("exercise|{day}"),
                },
            });
        }
    }
    merge_days(out)
}

/// Readings of the same key are one: daily totals from several rows are added up.
fn merge_days(readings: Vec<Reading>) -> Result<Vec<Reading>, String> {
    let mut by_key: BTreeMap<String, Reading> = BTreeMap::new();
    for r in readings {
        match by_key.get_mut(&r.key) {
            Some(existing) if r.key.starts_with("steps|") || !r.key.contains('T') => {
                if let (Some(a), Some(b)) = (existing.values.first_mut(), r.values.first()) {
                    *a += b;
                }
            }
            Some(_) => {}
            None => {
                by_key.insert(r.key.clone(), r);
            }
        }
    }
    let out: Vec<Reading> = by_key.into_values().collect();
    if out.len() > MAX_READINGS {
        return Err(format!(
            "The export holds {} readings; import at most {MAX_READINGS} at a time (export a shorter period).",
            out.len()
        ));
    }
    Ok(out)
}

/// Apple Health's record types the log takes.
const STEPS: &str = "HKQuantityTypeIdentifierStepCount";
const WEIGHT: &str = "HKQuantityTypeIdentifierBodyMass";
const HEART: &str = "HKQuantityTypeIdentifierHeartRate";
const GLUCOSE: &str = "HKQuantityTypeIdentifierBloodGlucose";
const SYSTOLIC: &str = "HKQuantityTypeIdentifierBloodPressureSystolic";
const DIASTOLIC: &str = "HKQuantityTypeIdentifierBloodPressureDiastolic";
const SLEEP: &str = "HKCategoryTypeIdentifierSleepAnalysis";

/// Readings from Apple Health's `export.xml`: steps summed per day, heart rate averaged per
/// day, sleep (the asleep stages) summed per night by the day it ended, weight (kg or lb),
/// glucose (mg/dL or mmol/L), blood pressure (systolic and diastolic of the same moment) and
/// workouts (minutes and activity) one by one.
pub fn from_apple_health(xml: &str, zone: &jiff::tz::TimeZone) -> Result<Vec<Reading>, String> {
    use quick_xml::Reader;
    use quick_xml::events::Event;
    let mut reader = Reader::from_str(xml);
    let mut steps: BTreeMap<jiff::civil::Date, f64> = BTreeMap::new();
    let mut heart: BTreeMap<jiff::civil::Date, (f64, u32)> = BTreeMap::new();
    let mut sleep: BTreeMap<jiff::civil::Date, f64> = BTreeMap::new();
    let mut pressure: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    let mut out: Vec<Reading> = Vec::new();
    let mut seen_root = false;
    loop {
        let event = reader.read_event().map_err(|_| {
            "The file is not Apple Health's export.xml (it is not well-formed XML).".to_string()
        })?;
        let e = match &event {
            Event::Start(e) | Event::Empty(e) => e,
            Event::Eof => break,
            _ => continue,
        };
        let name = e.name();
        let tag: &str = name.as_ref();
        if tag == "HealthData" {
            seen_root = true;
            continue;
        }
        if tag != "Record" && tag != "Workout" {
            continue;
        }
        let attrs: BTreeMap<String, String> = e
            .attributes()
            .filter_map(Result::ok)
            .map(|a| {
                let key: &str = a.key.as_ref();
                (
                    key.to_string(),
                    a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let get = |k: &str| attrs.get(k).map(String::as_str).unwrap_or("");
        let Some((Some(start), day)) = when(get("startDate"), zone) else {
            continue;
        };
        let value: Option<f64> = get("value").parse().ok();
        if tag == "Workout" {
            let minutes: f64 = get("duration").parse().unwrap_or(0.0);
            let minutes = match get("durationUnit") {
                "s" => minutes / 60.0,
                "hr" | "h" => minutes * 60.0,
                _ => minutes,
            };
            if minutes > 0.0 {
                let activity = get("workoutActivityType")
                    .trim_start_matches("HKWorkoutActivityType")
                    .to_string();
                out.push(Reading {
                    kind: the("exercise")?,
                    at: instant(start),
                    values: vec![minutes.round()],
                    activity: (!activity.is_empty()).then_some(activity),
                    key: format!("exercise|{}", instant(start)),
                });
            }
            continue;
        }
        match get("type") {
            STEPS => *steps.entry(day).or_default() += value.unwrap_or(0.0),
            HEART => {
                if let Some(v) = value {
                    let e = heart.entry(day).or_default();
                    e.0 += v;
                    e.1 += 1;
                }
            }
            WEIGHT => {
                if let Some(v) = value {
                    let kg = if get("unit") == "lb" {
                        v * 0.453_592_37
                    } else {
                        v
                    };
                    out.push(Reading {
                        kind: the("weight")?,
                        at: instant(start),
                        values: vec![(kg * 10.0).round() / 10.0],
                        activity: None,
                        key: format!("weight|{}", instant(start)),
                    });
                }
            }
            GLUCOSE => {
                if let Some(v) = value {
                    let mg = if get("unit").starts_with("mmol") {
                        v * 18.0156
                    } else {
                        v
                    };
                    out.push(Reading {
                        kind: the("glucose")?,
                        at: instant(start),
                        values: vec![mg.round()],
                        activity: None,
                        key: format!("glucose|{}", instant(start)),
                    });
                }
            }
            t @ (SYSTOLIC | DIASTOLIC) => {
                let e = pressure.entry(instant(start)).or_default();
                if t == SYSTOLIC {
                    e.0 = value;
                } else {
                    e.1 = value;
                }
            }
            SLEEP if get("value").starts_with("HKCategoryValueSleepAnalysisAsleep") => {
                if let Some((Some(end), end_day)) = when(get("endDate"), zone) {
                    let hours = (end.as_second() - start.as_second()) as f64 / 3600.0;
                    if hours > 0.0 {
                        *sleep.entry(end_day).or_default() += hours;
                    }
                }
            }
            _ => {}
        }
    }
    if !seen_root {
        return Err(
            "The file is not Apple Health's export.xml (no HealthData element).".to_string(),
        );
    }
    for (day, total) in steps {
        if let Some(at) = noon(day, zone).filter(|_| total > 0.0) {
            out.push(Reading {
                kind: the("steps")?,
                at,
                values: vec![total.round()],
                activity: None,
                key: format!("steps|{day}"),
            });
        }
    }
    for (day, (sum, n)) in heart {
        if let Some(at) = noon(day, zone).filter(|_| n > 0) {
            out.push(Reading {
                kind: the("hr")?,
                at,
                values: vec![(sum / f64::from(n)).round()],
                activity: None,
                key: format!("hr|{day}"),
            });
        }
    }
    for (day, hours) in sleep {
        if let Some(at) = noon(day, zone) {
            out.push(Reading {
                kind: the("sleep")?,
                at,
                values: vec![(hours * 10.0).round() / 10.0],
                activity: None,
                key: format!("sleep|{day}"),
            });
        }
    }
    for (at, pair) in pressure {
        if let (Some(s), Some(d)) = pair {
            out.push(Reading {
                kind: the("bp")?,
                key: format!("bp|{at}"),
                at,
                values: vec![s.round(), d.round()],
                activity: None,
            });
        }
    }
    merge_days(out)
}

#[derive(Template)]
#[template(path = "imported.html", config = "src/web/templates/askama.toml")]
struct ImportedPage {
    shell: Shell,
    new: usize,
    same: usize,
    kinds: Vec<(&'static str, usize)>,
    error: Option<String>,
}

/// `POST /app/health/import` (multipart: `csrf`, `file`): a phone's or watch's export into
/// the health log, in one transaction of conditional updates on each reading's identifier.
async fn import(
    State(state): State<WebState>,
    session: Session,
    mut multipart: Multipart,
) -> Response {
    let Some(patient) = subject(&session, None).filter(|_| session.role() == Some(Role::Patient))
    else {
        return super::not_found().await;
    };
    let mut csrf = String::new();
    let mut file: Option<(String, Vec<u8>)> = None;
    let too_large = || {
        imported(
            &session,
            Err("The file is too large or did not arrive whole; export a shorter period.".into()),
        )
    };
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => return too_large(),
        };
        match field.name() {
            Some("csrf") => csrf = field.text().await.unwrap_or_default(),
            Some("file") => {
                let name = field.file_name().unwrap_or("").to_ascii_lowercase();
                match field.bytes().await {
                    Ok(b) => file = Some((name, b.to_vec())),
                    Err(_) => return too_large(),
                }
            }
            _ => {}
        }
    }
    if !crate::smart::crypto::constant_time_eq(&csrf, &session.csrf) {
        return super::message(
            StatusCode::FORBIDDEN,
            &session,
            "This form has expired",
            "Go back, reload the page and send it again. Nothing was changed.",
        );
    }
    let Some((name, bytes)) = file.filter(|(_, b)| !b.is_empty()) else {
        return imported(
            &session,
            Err("Choose the file your phone or watch exported.".into()),
        );
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return imported(&session, Err("The file is not text (CSV or XML).".into()));
    };
    let apple = name.ends_with(".xml") || text.trim_start().starts_with('<');
    let readings = if apple {
        from_apple_health(text, &session.zone)
    } else {
        from_csv(text, &session.zone)
    };
    let readings = match readings {
        Ok(r) if r.is_empty() => {
            return imported(
                &session,
                Err("The file holds no readings the health log takes.".into()),
            );
        }
        Ok(r) => r,
        Err(e) => return imported(&session, Err(e)),
    };
    let performer = session.author();
    let entries: Vec<Value> = readings
        .iter()
        .map(|r| {
            let value = format!("{patient}-{}", r.key.replace('|', "-"));
            let mut o = observation(
                r.kind,
                &patient,
                performer.as_deref(),
                &r.values,
                &r.at,
                r.activity.as_deref(),
            );
            super::fhir::set(
                &mut o,
                "identifier",
                json!([{"system": IDENTIFIER_SYSTEM, "value": value}]),
            );
            json!({"resource": o, "request": {"method": "PUT",
                "url": format!("Observation?identifier={}|{value}", IDENTIFIER_SYSTEM)}})
        })
        .collect();
    let fhir = Fhir::new(&state.ctx, &session);
    let result = match fhir.transaction(entries).await {
        Ok(r) => r,
        Err(o) => return imported(&session, Err(problem(&o, &[]).1)),
    };
    let statuses: Vec<String> = super::fhir::entries_raw(&result)
        .iter()
        .map(|e| view::text(e, "/response/status"))
        .collect();
    let new = statuses.iter().filter(|s| s.starts_with("201")).count();
    let mut kinds: Vec<(&'static str, usize)> = Vec::new();
    for r in &readings {
        match kinds.iter_mut().find(|(l, _)| *l == r.kind.label) {
            Some(k) => k.1 += 1,
            None => kinds.push((r.kind.label, 1)),
        }
    }
    imported(&session, Ok((new, readings.len() - new, kinds)))
}

type Counts = (usize, usize, Vec<(&'static str, usize)>);

fn imported(session: &Session, result: Result<Counts, String>) -> Response {
    let (status, page_data) = match result {
        Ok((new, same, kinds)) => (
            StatusCode::OK,
            ImportedPage {
                shell: Shell::new(session, "Health log: import", ""),
                new,
                same,
                kinds,
                error: None,
            },
        ),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            ImportedPage {
                shell: Shell::new(session, "Health log: import", ""),
                new: 0,
                same: 0,
                kinds: Vec::new(),
                error: Some(e),
            },
        ),
    };
    page(status, &page_data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::UTC
    }

    #[test]
    fn csv_days_and_workouts() {
        let csv = "Date,Step count,Move Minutes count,Activity\n\
                   2026-12-01,8200,35,walking\n\
                   2026-12-02,\"10,450\",,\n\
                   2026-12-02 18:30,,42,cycling\n";
        let r = from_csv(csv, &utc()).unwrap();
        let keys: Vec<&str> = r.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "exercise|2026-12-01",
                "exercise|2026-12-02T18:30:00Z",
                "steps|2026-12-01",
                "steps|2026-12-02"
            ]
        );
        assert_eq!(r[3].values, vec![10450.0]);
        assert_eq!(r[1].activity.as_deref(), Some("cycling"));
        assert_eq!(r[2].at, "2026-12-01T12:00:00Z");
        assert!(
            from_csv("when,what\n1,2\n", &utc())
                .unwrap_err()
                .contains("date column")
        );
        assert!(
            from_csv("date,steps\nyesterday,5\n", &utc())
                .unwrap_err()
                .contains("Line 2")
        );
    }

    #[test]
    fn apple_health_records_are_summed_averaged_and_paired() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE HealthData [<!ELEMENT HealthData (Record*)>]>
<HealthData locale="en_US">
 <Record type="HKQuantityTypeIdentifierStepCount" unit="count" value="1200" startDate="2026-12-01 08:00:00 +0000" endDate="2026-12-01 08:10:00 +0000"/>
 <Record type="HKQuantityTypeIdentifierStepCount" unit="count" value="800" startDate="2026-12-01 17:00:00 +0000" endDate="2026-12-01 17:10:00 +0000"/>
 <Record type="HKQuantityTypeIdentifierHeartRate" unit="count/min" value="60" startDate="2026-12-01 08:00:00 +0000" endDate="2026-12-01 08:00:00 +0000"/>
 <Record type="HKQuantityTypeIdentifierHeartRate" unit="count/min" value="80" startDate="2026-12-01 09:00:00 +0000" endDate="2026-12-01 09:00:00 +0000"/>
 <Record type="HKQuantityTypeIdentifierBodyMass" unit="lb" value="160" startDate="2026-12-01 07:00:00 +0000" endDate="2026-12-01 07:00:00 +0000"/>
 <Record type="HKQuantityTypeIdentifierBloodGlucose" unit="mmol&lt;180.1558800000541&gt;/L" value="5.5" startDate="2026-12-01 07:30:00 +0000" endDate="2026-12-01 07:30:00 +0000"/>
 <Record type="HKQuantityTypeIdentifierBloodPressureSystolic" unit="mmHg" value="121" startDate="2026-12-01 07:05:00 +0000" endDate="2026-12-01 07:05:00 +0000"/>
 <Record type="HKQuantityTypeIdentifierBloodPressureDiastolic" unit="mmHg" value="79" startDate="2026-12-01 07:05:00 +0000" endDate="2026-12-01 07:05:00 +0000"/>
 <Record type="HKCategoryTypeIdentifierSleepAnalysis" value="HKCategoryValueSleepAnalysisAsleepCore" startDate="2026-11-30 23:00:00 +0000" endDate="2026-12-01 05:30:00 +0000"/>
 <Record type="HKCategoryTypeIdentifierSleepAnalysis" value="HKCategoryValueSleepAnalysisInBed" startDate="2026-11-30 22:30:00 +0000" endDate="2026-12-01 06:00:00 +0000"/>
 <Workout workoutActivityType="HKWorkoutActivityTypeRunning" duration="31.6" durationUnit="min" startDate="2026-12-01 18:00:00 +0000" endDate="2026-12-01 18:32:00 +0000"/>
</HealthData>"#;
        let r = from_apple_health(xml, &utc()).unwrap();
        let find = |k: &str| r.iter().find(|x| x.key.starts_with(k)).unwrap();
        assert_eq!(find("steps|2026-12-01").values, vec![2000.0]);
        assert_eq!(find("hr|2026-12-01").values, vec![70.0]);
        assert_eq!(find("weight|").values, vec![72.6]);
        assert_eq!(find("glucose|").values, vec![99.0]);
        assert_eq!(find("bp|").values, vec![121.0, 79.0]);
        assert_eq!(find("sleep|2026-12-01").values, vec![6.5]);
        let run = find("exercise|");
        assert_eq!(
            (run.values.clone(), run.activity.as_deref()),
            (vec![32.0], Some("Running"))
        );
        assert_eq!(r.len(), 7);
        assert!(
            from_apple_health("<a/>", &utc())
                .unwrap_err()
                .contains("HealthData")
        );
        assert!(from_apple_health("<HealthData><Record", &utc()).is_err());
    }
}
