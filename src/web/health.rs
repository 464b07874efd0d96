//! The health log: weight, blood pressure, heart rate, glucose, sleep, steps and exercise
//! entered as Observations with their LOINC and UCUM codes (the vital-signs profile where it
//! applies), and charts of each over a week, a month or a year with the reference range and
//! the trend — SVG images drawn by a template, so they need no script. A patient logs for
//! themself; a doctor records vitals in a patient's chart through the same form.

use super::fhir::{Fhir, problem};
use super::session::{Form, Session};
use super::view::{self, Shell};
use super::{WebState, page, see_other};
use crate::auth::Role;
use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/app/health", get(health))
        .route("/app/health/log", post(log))
        .route("/app/health/chart.svg", get(chart))
}

/// A kind of entry: its LOINC code, unit, category and reference range.
#[derive(Debug, PartialEq)]
pub struct Kind {
    pub key: &'static str,
    pub label: &'static str,
    pub loinc: &'static str,
    pub display: &'static str,
    pub unit: &'static str,
    pub ucum: &'static str,
    pub category: &'static str,
    /// The usual range (low, high), when there is one.
    pub range: Option<(f64, f64)>,
    /// Blood pressure: systolic and diastolic components.
    pub components: Option<[(&'static str, &'static str); 2]>,
    /// Decimals accepted.
    pub decimals: u32,
    pub max: f64,
}

const VITAL: &str = "vital-signs";

pub const KINDS: &[Kind] = &[
    Kind {
        key: "weight",
        label: "Weight",
        loinc: "29463-7",
        display: "Body weight",
        unit: "kg",
        ucum: "kg",
        category: VITAL,
        range: None,
        components: None,
        decimals: 1,
        max: 500.0,
    },
    Kind {
        key: "bp",
        label: "Blood pressure",
        loinc: "85354-6",
        display: "Blood pressure panel with all children optional",
        unit: "mmHg",
        ucum: "mm[Hg]",
        category: VITAL,
        range: Some((60.0, 120.0)),
        components: Some([
            ("8480-6", "Systolic blood pressure"),
            ("8462-4", "Diastolic blood pressure"),
        ]),
        decimals: 0,
        max: 300.0,
    },
    Kind {
        key: "hr",
        label: "Heart rate",
        loinc: "8867-4",
        display: "Heart rate",
        unit: "beats/min",
        ucum: "/min",
        category: VITAL,
        range: Some((60.0, 100.0)),
        components: None,
        decimals: 0,
        max: 300.0,
    },
    Kind {
        key: "glucose",
        label: "Blood glucose",
        loinc: "41653-7",
        display: "Glucose [Mass/volume] in Capillary blood by Glucometer",
        unit: "mg/dL",
        ucum: "mg/dL",
        category: "laboratory",
        range: Some((70.0, 140.0)),
        components: None,
        decimals: 0,
        max: 1000.0,
    },
    Kind {
        key: "sleep",
        label: "Sleep",
        loinc: "93832-4",
        display: "Sleep duration",
        unit: "hours",
        ucum: "h",
        category: "activity",
        range: Some((7.0, 9.0)),
        components: None,
        decimals: 1,
        max: 24.0,
    },
    Kind {
        key: "steps",
        label: "Steps",
        loinc: "55423-8",
        display: "Number of steps in unspecified time Pedometer",
        unit: "steps",
        ucum: "{steps}",
        category: "activity",
        range: Some((7000.0, 20000.0)),
        components: None,
        decimals: 0,
        max: 200000.0,
    },
    Kind {
        key: "exercise",
        label: "Exercise",
        loinc: "55411-3",
        display: "Exercise duration",
        unit: "minutes",
        ucum: "min",
        category: "activity",
        range: Some((30.0, 90.0)),
        components: None,
        decimals: 0,
        max: 1440.0,
    },
];

pub fn kind(key: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.key == key)
}

/// The Observation of one entry.
pub fn observation(
    k: &Kind,
    patient: &str,
    performer: Option<&str>,
    values: &[f64],
    when: &str,
    activity: Option<&str>,
) -> Value {
    let quantity = |v: f64| json!({"value": json_number(v, k.decimals), "unit": k.unit, "system": "http://unitsofmeasure.org", "code": k.ucum});
    let coding = |code: &str, display: &str| json!({"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display});
    let mut o = json!({"resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": k.category}]}],
        "code": coding(k.loinc, k.display),
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": when});
    if k.category == VITAL {
        super::fhir::set(
            &mut o,
            "meta",
            json!({"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]}),
        );
    }
    if let Some(p) = performer {
        super::fhir::set(&mut o, "performer", json!([{"reference": p}]));
    }
    match k.components {
        Some(parts) => {
            super::fhir::set(&mut o, "component", json!(parts
                .iter()
                .zip(values)
                .map(|((code, display), v)| json!({"code": coding(code, display), "valueQuantity": quantity(*v)}))
                .collect::<Vec<_>>()));
        }
        None => {
            super::fhir::set(
                &mut o,
                "valueQuantity",
                quantity(values.first().copied().unwrap_or_default()),
            );
        }
    }
    if let Some(a) = activity.filter(|a| !a.is_empty()) {
        super::fhir::set(
            &mut o,
            "component",
            json!([{"code": coding("73985-4", "Exercise activity"), "valueCodeableConcept": {"text": a}}]),
        );
    }
    o
}

fn json_number(v: f64, decimals: u32) -> Value {
    let text = format!("{v:.*}", decimals as usize);
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The values of an Observation of kind `k` (two for blood pressure).
fn values_of(k: &Kind, o: &Value) -> Vec<f64> {
    let num = |v: Option<&Value>| v.and_then(|x| x.to_string().parse::<f64>().ok());
    match k.components {
        Some(parts) => parts
            .iter()
            .filter_map(|(code, _)| {
                o.get("component")
                    .and_then(Value::as_array)?
                    .iter()
                    .find(|c| view::text(c, "/code/coding/0/code") == *code)
                    .and_then(|c| num(c.pointer("/valueQuantity/value")))
            })
            .collect(),
        None => num(o.pointer("/valueQuantity/value")).into_iter().collect(),
    }
}

/// The patient a health page is about: the patient's own, or for a doctor the one named.
pub(super) fn subject(session: &Session, named: Option<&str>) -> Option<String> {
    match session.role() {
        Some(Role::Patient) => session.patient().map(str::to_string),
        _ => named
            .filter(|p| crate::fhir::types::is_valid_id(p))
            .map(str::to_string),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct HealthQuery {
    range: Option<String>,
    done: Option<String>,
}

pub struct Chart {
    pub key: &'static str,
    pub label: &'static str,
    pub alt: String,
    pub latest: String,
}

pub struct LogForm {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub two: bool,
    pub activity: bool,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "health.html", config = "src/web/templates/askama.toml")]
struct HealthPage {
    shell: Shell,
    forms: Vec<LogForm>,
    charts: Vec<Chart>,
    range: &'static str,
    ranges: Vec<(&'static str, &'static str, bool)>,
    date: String,
    time: String,
    patient_param: String,
}

fn range_of(q: Option<&str>) -> (&'static str, i64) {
    match q {
        Some("week") => ("week", 7),
        Some("year") => ("year", 365),
        _ => ("month", 31),
    }
}

async fn health(
    State(state): State<WebState>,
    session: Session,
    Query(q): Query<HealthQuery>,
) -> Response {
    health_page(
        &state,
        &session,
        q.range.as_deref(),
        q.done.as_deref(),
        None,
    )
    .await
}

async fn health_page(
    state: &WebState,
    session: &Session,
    range: Option<&str>,
    done: Option<&str>,
    error: Option<(&str, String)>,
) -> Response {
    let Some(patient) = subject(session, None) else {
        return super::message(
            StatusCode::NOT_FOUND,
            session,
            "Not found",
            "The health log is for patients; doctors find it in a patient's chart.",
        );
    };
    let fhir = Fhir::new(&state.ctx, session);
    let (range, days) = range_of(range);
    let mut charts = Vec::new();
    for k in KINDS {
        let series = match load(&fhir, k, &patient, days).await {
            Ok(s) => s,
            Err(o) => {
                return super::message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    session,
                    "Health log",
                    &problem(&o, &[]).1,
                );
            }
        };
        if let Some(last) = series.last() {
            charts.push(Chart {
                key: k.key,
                label: k.label,
                alt: describe(k, &series, range),
                latest: format!(
                    "{} {} ({})",
                    join(&last.1, k.decimals),
                    k.unit,
                    view::when(&last.0, &session.zone)
                ),
            });
        }
    }
    let now = jiff::Timestamp::now().to_zoned(session.zone.clone());
    let forms = KINDS
        .iter()
        .map(|k| LogForm {
            key: k.key,
            label: k.label,
            unit: k.unit,
            two: k.components.is_some(),
            activity: k.key == "exercise",
            error: error
                .as_ref()
                .filter(|(key, _)| *key == k.key)
                .map(|(_, e)| e.clone()),
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    page(
        status,
        &HealthPage {
            shell: Shell::new(session, "Health log", "Observation").with_flash(view::flash(done)),
            forms,
            charts,
            range,
            ranges: [("week", "Week"), ("month", "Month"), ("year", "Year")]
                .iter()
                .map(|(k, l)| (*k, *l, *k == range))
                .collect(),
            date: now.date().to_string(),
            time: now.time().strftime("%H:%M").to_string(),
            patient_param: String::new(),
        },
    )
}

/// The entries of kind `k` over the last `days`, oldest first: (effective, values).
async fn load(
    fhir: &Fhir<'_>,
    k: &Kind,
    patient: &str,
    days: i64,
) -> Result<Vec<(String, Vec<f64>)>, crate::fhir::outcome::Outcome> {
    let since = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(days * 24))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string();
    let found = fhir
        .search(
            "Observation",
            &[
                ("patient", &format!("Patient/{patient}")),
                ("code", &format!("http://loinc.org|{}", k.loinc)),
                ("date", &format!("ge{since}")),
                ("_sort", "date"),
                ("_count", "500"),
            ],
        )
        .await?;
    Ok(found
        .iter()
        .filter_map(|o| {
            let v = values_of(k, o);
            let t = view::text(o, "/effectiveDateTime");
            (!v.is_empty() && !t.is_empty()).then_some((t, v))
        })
        .collect())
}

fn join(values: &[f64], decimals: u32) -> String {
    values
        .iter()
        .map(|v| format!("{v:.*}", decimals as usize))
        .collect::<Vec<_>>()
        .join("/")
}

/// The chart in words (its alt text): how many entries, from what to what, and the trend.
fn describe(k: &Kind, series: &[(String, Vec<f64>)], range: &str) -> String {
    let first = series
        .first()
        .map(|s| join(&s.1, k.decimals))
        .unwrap_or_default();
    let last = series
        .last()
        .map(|s| join(&s.1, k.decimals))
        .unwrap_or_default();
    let trend = trend(series);
    format!(
        "{} over the last {range}: {} entr{}, from {first} to {last} {}, {trend}.",
        k.label,
        series.len(),
        if series.len() == 1 { "y" } else { "ies" },
        k.unit
    )
}

/// Rising, falling or steady: the mean of the last third against the first third (more than
/// 3 % apart).
fn trend(series: &[(String, Vec<f64>)]) -> &'static str {
    if series.len() < 2 {
        return "one reading so far";
    }
    let first_values: Vec<f64> = series.iter().filter_map(|s| s.1.first().copied()).collect();
    let third = (first_values.len() / 3).max(1);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let a = mean(first_values.get(..third).unwrap_or(&[]));
    let b = mean(
        first_values
            .get(first_values.len() - third..)
            .unwrap_or(&[]),
    );
    if a == 0.0 {
        return "steady";
    }
    let change = (b - a) / a.abs();
    if change > 0.03 {
        "rising"
    } else if change < -0.03 {
        "falling"
    } else {
        "steady"
    }
}

/// `POST /app/health/log`: one entry as an Observation.
async fn log(State(state): State<WebState>, form: Form) -> Response {
    let session = &form.session;
    let Some(k) = form.get("kind").and_then(kind) else {
        return health_page(
            &state,
            session,
            None,
            None,
            Some(("weight", "Choose what to log.".into())),
        )
        .await;
    };
    let Some(patient) = subject(session, form.get("patient")) else {
        return super::not_found().await;
    };
    let back = |done: &str| match session.role() {
        Some(Role::Patient) => see_other(&format!("/app/health?done={done}")),
        _ => see_other(&format!("/app/patients/{patient}?done=recorded")),
    };
    let parse = |field: &str| -> Result<f64, String> {
        let raw = form.get(field).unwrap_or("").replace(',', ".");
        let v: f64 = raw.parse().map_err(|_| {
            format!(
                "Enter {} as a number, such as {}.",
                k.label.to_lowercase(),
                example(k)
            )
        })?;
        if !(v > 0.0 && v <= k.max) {
            return Err(format!(
                "{} must be between 0 and {} {}.",
                k.label, k.max, k.unit
            ));
        }
        let places = raw.split_once('.').map_or(0, |(_, f)| f.len());
        if places > k.decimals as usize {
            return Err(format!(
                "{} takes at most {} decimal{}.",
                k.label,
                k.decimals,
                if k.decimals == 1 { "" } else { "s" }
            ));
        }
        Ok(v)
    };
    let mut values = Vec::new();
    let fields: &[&str] = if k.components.is_some() {
        &["value", "value2"]
    } else {
        &["value"]
    };
    for f in fields {
        match parse(f) {
            Ok(v) => values.push(v),
            Err(e) => return health_error(&state, session, k, e).await,
        }
    }
    let zone = &session.zone;
    let date = form
        .get("date")
        .map(str::to_string)
        .unwrap_or_else(|| view::today(zone).to_string());
    let Some(when) = view::instant(&date, form.get("time").unwrap_or(""), zone) else {
        return health_error(
            &state,
            session,
            k,
            "Enter the date as YYYY-MM-DD and the time as HH:MM.".into(),
        )
        .await;
    };
    if when > jiff::Timestamp::now().to_string() {
        return health_error(&state, session, k, "The time is in the future.".into()).await;
    }
    let performer = session.principal.fhir_user.clone();
    let o = observation(
        k,
        &patient,
        performer.as_deref(),
        &values,
        &when,
        form.get("activity"),
    );
    let fhir = Fhir::new(&state.ctx, session);
    match fhir.create(o).await {
        Ok(_) => back("logged"),
        Err(o) => health_error(&state, session, k, problem(&o, &[]).1).await,
    }
}

fn example(k: &Kind) -> &'static str {
    match k.key {
        "weight" => "72.5",
        "bp" => "120 and 80",
        "hr" => "64",
        "glucose" => "95",
        "sleep" => "7.5",
        "steps" => "8000",
        _ => "30",
    }
}

async fn health_error(state: &WebState, session: &Session, k: &Kind, e: String) -> Response {
    if session.role() == Some(Role::Patient) {
        health_page(state, session, None, None, Some((k.key, e))).await
    } else {
        super::message(
            StatusCode::UNPROCESSABLE_ENTITY,
            session,
            "Not recorded",
            &e,
        )
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ChartQuery {
    kind: Option<String>,
    range: Option<String>,
    patient: Option<String>,
}

/// One line of a chart: its points and its class (colour).
pub struct Line {
    pub points: String,
    pub dots: Vec<(f64, f64, String)>,
    pub class: &'static str,
}

#[derive(Template)]
#[template(
    path = "chart.svg",
    config = "src/web/templates/askama.toml",
    escape = "html"
)]
struct ChartSvg {
    title: String,
    lines: Vec<Line>,
    band: Option<(f64, f64)>,
    y_labels: Vec<(f64, String)>,
    /// (x, label, text-anchor): the first label starts at its tick, the last ends at it.
    x_labels: Vec<(f64, String, &'static str)>,
    empty: bool,
}

const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 32.0;

/// `GET /app/health/chart.svg?kind=&range=[&patient=]`: the chart as an SVG image.
async fn chart(
    State(state): State<WebState>,
    session: Session,
    Query(q): Query<ChartQuery>,
) -> Response {
    let Some(k) = q.kind.as_deref().and_then(kind) else {
        return super::not_found().await;
    };
    let Some(patient) = subject(&session, q.patient.as_deref()) else {
        return super::not_found().await;
    };
    let (range, days) = range_of(q.range.as_deref());
    let fhir = Fhir::new(&state.ctx, &session);
    // someone else's chart: only a patient the session may see (else, as if there were none)
    if session.role() != Some(Role::Patient) && fhir.read("Patient", &patient).await.is_err() {
        return super::not_found().await;
    }
    let Ok(series) = load(&fhir, k, &patient, days).await else {
        return super::not_found().await;
    };
    let now = jiff::Timestamp::now().as_second() as f64;
    let start = now - days as f64 * 86400.0;
    let all: Vec<f64> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let (mut lo, mut hi) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    if let Some((rl, rh)) = k.range {
        lo = lo.min(rl);
        hi = hi.max(rh);
    }
    if all.is_empty() {
        (lo, hi) = k.range.unwrap_or((0.0, 1.0));
    }
    let pad = ((hi - lo) * 0.1).max(1.0);
    let (lo, hi) = ((lo - pad).max(0.0), hi + pad);
    let x = |t: f64| LEFT + (t - start) / (now - start) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    let count = series.iter().map(|s| s.1.len()).max().unwrap_or(0);
    let classes = ["line-a", "line-b"];
    let lines = (0..count)
        .map(|i| {
            let pts: Vec<(f64, f64, String)> = series
                .iter()
                .filter_map(|(t, vs)| {
                    let ts = t.parse::<jiff::Timestamp>().ok()?.as_second() as f64;
                    let v = *vs.get(i)?;
                    Some((
                        round(x(ts)),
                        round(y(v)),
                        format!(
                            "{} {} on {}",
                            join(&[v], k.decimals),
                            k.unit,
                            view::when(t, &session.zone)
                        ),
                    ))
                })
                .collect();
            Line {
                points: pts
                    .iter()
                    .map(|(a, b, _)| format!("{a},{b}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                dots: pts,
                class: classes.get(i).copied().unwrap_or("line-a"),
            }
        })
        .collect();
    let y_labels = (0..=4)
        .map(|i| {
            let v = lo + (hi - lo) * f64::from(i) / 4.0;
            let places = if hi - lo < 10.0 { 1 } else { 0 };
            (round(y(v)), format!("{v:.places$}"))
        })
        .collect();
    let x_labels = (0..=3)
        .map(|i| {
            let t = start + (now - start) * f64::from(i) / 3.0;
            let label = jiff::Timestamp::from_second(t as i64)
                .map(|ts| {
                    ts.to_zoned(session.zone.clone())
                        .strftime("%-d %b")
                        .to_string()
                })
                .unwrap_or_default();
            let anchor = match i {
                0 => "start",
                3 => "end",
                _ => "middle",
            };
            (round(x(t)), label, anchor)
        })
        .collect();
    let svg = ChartSvg {
        title: describe(k, &series, range),
        lines,
        band: k
            .range
            .map(|(rl, rh)| (round(y(rh.min(hi))), round(y(rl.max(lo)) - y(rh.min(hi))))),
        y_labels,
        x_labels,
        empty: series.is_empty(),
    };
    match svg.render() {
        Ok(text) => (
            [
                (CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
                (CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Err(_) => super::not_found().await,
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_loinc_and_ucum() {
        let bp = observation(
            kind("bp").unwrap(),
            "p1",
            Some("Patient/p1"),
            &[120.0, 80.0],
            "2026-12-08T09:00:00Z",
            None,
        );
        assert_eq!(bp["code"]["coding"][0]["code"], "85354-6");
        assert_eq!(bp["component"][0]["code"]["coding"][0]["code"], "8480-6");
        assert_eq!(bp["component"][1]["valueQuantity"]["code"], "mm[Hg]");
        assert_eq!(
            bp["meta"]["profile"][0],
            "http://hl7.org/fhir/StructureDefinition/vitalsigns"
        );
        let w = observation(
            kind("weight").unwrap(),
            "p1",
            None,
            &[72.5],
            "2026-12-08T09:00:00Z",
            None,
        );
        assert_eq!(w["valueQuantity"]["value"].to_string(), "72.5");
        assert_eq!(w["valueQuantity"]["code"], "kg");
        let steps = observation(
            kind("steps").unwrap(),
            "p1",
            None,
            &[8000.0],
            "2026-12-08T09:00:00Z",
            None,
        );
        assert_eq!(steps["category"][0]["coding"][0]["code"], "activity");
        assert!(steps.get("meta").is_none());
    }

    #[test]
    fn trends_read_from_the_first_and_last_thirds() {
        let s = |vs: &[f64]| {
            vs.iter()
                .map(|v| (String::new(), vec![*v]))
                .collect::<Vec<_>>()
        };
        assert_eq!(trend(&s(&[80.0, 79.0, 78.0, 77.0, 76.0, 75.0])), "falling");
        assert_eq!(trend(&s(&[60.0, 61.0, 70.0])), "rising");
        assert_eq!(trend(&s(&[70.0, 70.5, 70.2])), "steady");
        assert_eq!(trend(&s(&[70.0])), "one reading so far");
    }
}
