//! The patient's pages: home, records (a timeline, each item openable), appointments (find a
//! slot, book, change, cancel), messages and refill requests, profile, and who has seen the
//! record. Bills and credit are in [`super::bills`]-like functions below them. Everything is
//! read and written as the patient's own token, so the patient compartment bounds it.

use super::fhir::{Fhir, entries, param, parameters, problem};
use super::session::{Form, Session};
use super::view::{self, OrIfEmpty, Shell, claim_total, concept, money_of, name, text, when};
use super::{WebState, message, page, see_other};
use crate::auth::Role;
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/app/records", get(records))
        .route("/app/records/{type}/{id}", get(record))
        .route("/app/appointments", get(appointments))
        .route("/app/appointments/book", post(book))
        .route("/app/appointments/{id}/cancel", post(cancel))
        .route("/app/bills", get(bills))
        .route("/app/bills/{claim}/defer", get(defer_quote).post(defer))
        .route("/app/credit/apply", post(credit_apply))
        .route("/app/credit/pay", post(pay))
        .route("/app/credit/statement", post(statement))
        .route("/app/messages", get(messages).post(send_message))
        .route("/app/refill/{rx}", post(refill))
        .route("/app/profile", get(profile).post(save_profile))
        .route("/app/access", get(access))
}

#[derive(Debug, Default, Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// The patient of a patient's session; other roles are told these pages are not theirs.
fn own_patient(session: &Session) -> Result<String, Box<Response>> {
    match (session.role(), session.patient()) {
        (Some(Role::Patient), Some(p)) => Ok(p.to_string()),
        _ => Err(Box::new(message(
            StatusCode::NOT_FOUND,
            session,
            "Not found",
            "This page is for patients.",
        ))),
    }
}

/// A failure while loading a page, as a page.
fn failed(session: &Session, outcome: &crate::fhir::outcome::Outcome) -> Response {
    let (_, text) = problem(outcome, &[]);
    let status = if outcome.kind.is_fault() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NOT_FOUND
    };
    message(status, session, "Something is not right", &text)
}

macro_rules! tryp {
    ($session:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(o) => return failed($session, &o),
        }
    };
}

// ------------------------------------------------------------------------------------
// home

/// One line of a list: a title, details and where it opens.
pub struct Item {
    pub title: String,
    pub detail: String,
    pub when: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "patient_home.html", config = "src/web/templates/askama.toml")]
struct HomePage {
    shell: Shell,
    /// A caregiver's person.
    caring_for: Option<String>,
    next: Option<Item>,
    owed: String,
    line: Option<Line>,
    next_installment: Option<Item>,
    results: Vec<Item>,
    alerts: Vec<String>,
}

pub async fn home(state: &WebState, session: &Session) -> Response {
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, session);
    let subject = format!("Patient/{patient}");
    let now = jiff::Timestamp::now().to_string();
    let next = tryp!(
        session,
        fhir.search(
            "Appointment",
            &[
                ("patient", &subject),
                ("date", &format!("ge{now}")),
                ("status", "booked"),
                ("_sort", "date"),
                ("_count", "1"),
            ],
        )
        .await
    )
    .first()
    .map(|a| appointment_item(a, &session.zone));
    let results = tryp!(
        session,
        fhir.search(
            "Observation",
            &[("patient", &subject), ("_sort", "-date"), ("_count", "5")],
        )
        .await
    )
    .iter()
    .map(|o| observation_item(o, &session.zone))
    .collect();
    let bills = tryp!(session, load_bills(&fhir, &patient, &session.zone).await);
    let mut alerts: Vec<String> = tryp!(
        session,
        fhir.search("AllergyIntolerance", &[("patient", &subject)])
            .await
    )
    .iter()
    .map(|a| format!("Allergy: {}", concept(a.get("code"))))
    .collect();
    if bills.claims.iter().any(|c| c.queued) {
        alerts.push("A claim is being reviewed by your insurer.".to_string());
    }
    let next_installment = bills
        .installments
        .iter()
        .find(|i| i.status != "paid")
        .map(|i| Item {
            title: format!("Installment {}: {}", i.number, i.amount),
            detail: i.plan.clone(),
            when: i.due.clone(),
            href: "/app/bills#plan".into(),
        });
    let caring_for = if session.caregiver() {
        fhir.read("Patient", &patient).await.ok().map(|p| name(&p))
    } else {
        None
    };
    let shell = Shell::new(
        session,
        "Welcome",
        "Appointment,ClaimResponse,Account,Observation",
    );
    page(
        StatusCode::OK,
        &HomePage {
            shell,
            caring_for,
            next,
            owed: bills.owed_text,
            line: bills.line,
            next_installment,
            results,
            alerts,
        },
    )
}

fn appointment_item(a: &Value, zone: &jiff::tz::TimeZone) -> Item {
    let who = a
        .get("participant")
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .filter_map(|p| p.pointer("/actor/display").and_then(Value::as_str))
                .next()
        })
        .unwrap_or("Your care team");
    Item {
        title: who.to_string(),
        detail: concept(
            a.pointer("/serviceType/0")
                .or_else(|| a.pointer("/specialty/0")),
        ),
        when: when(&text(a, "/start"), zone),
        href: "/app/appointments".into(),
    }
}

fn observation_item(o: &Value, zone: &jiff::tz::TimeZone) -> Item {
    let value = if let Some(q) = o.get("valueQuantity") {
        format!(
            "{} {}",
            q.get("value").map(Value::to_string).unwrap_or_default(),
            q.get("unit").and_then(Value::as_str).unwrap_or("")
        )
    } else if let Some(parts) = o.get("component").and_then(Value::as_array) {
        parts
            .iter()
            .filter_map(|c| c.pointer("/valueQuantity/value").map(Value::to_string))
            .collect::<Vec<_>>()
            .join("/")
    } else {
        concept(o.get("valueCodeableConcept"))
    };
    Item {
        title: concept(o.get("code")),
        detail: value.trim().to_string(),
        when: when(
            o.get("effectiveDateTime")
                .or_else(|| o.pointer("/effectivePeriod/start"))
                .and_then(Value::as_str)
                .unwrap_or(""),
            zone,
        ),
        href: format!("/app/records/Observation/{}", text(o, "/id")),
    }
}

// ------------------------------------------------------------------------------------
// records

#[derive(Template)]
#[template(path = "records.html", config = "src/web/templates/askama.toml")]
struct RecordsPage {
    shell: Shell,
    items: Vec<(String, Item)>,
}

/// The types of the timeline and what each is called.
const TIMELINE: &[(&str, &str, &str)] = &[
    ("Encounter", "Visit", "date"),
    ("Condition", "Condition", "recorded-date"),
    ("MedicationRequest", "Prescription", "authoredon"),
    ("MedicationDispense", "Medicine dispensed", "whenhandedover"),
    ("Observation", "Result", "date"),
    ("AllergyIntolerance", "Allergy", "date"),
    ("Immunization", "Immunization", "date"),
];

async fn records(State(state): State<WebState>, session: Session) -> Response {
    let patient = match own_patient(&session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, &session);
    let subject = format!("Patient/{patient}");
    let mut rows: Vec<(String, String, Item)> = Vec::new();
    for (t, kind, _) in TIMELINE {
        let found = tryp!(
            &session,
            fhir.search(t, &[("patient", &subject), ("_count", "50")])
                .await
        );
        for r in found {
            let (date, title) = summary(t, &r);
            let id = text(&r, "/id");
            let detail = if *t == "MedicationRequest" {
                text(&r, "/status")
            } else if *t == "Observation" {
                observation_item(&r, &session.zone).detail
            } else {
                String::new()
            };
            rows.push((
                date.clone(),
                kind.to_string(),
                Item {
                    title,
                    detail,
                    when: when(&date, &session.zone),
                    href: format!("/app/records/{t}/{id}"),
                },
            ));
        }
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0));
    let shell = Shell::new(
        &session,
        "Records",
        "Encounter,Condition,MedicationRequest,MedicationDispense,Observation,AllergyIntolerance,Immunization",
    );
    page(
        StatusCode::OK,
        &RecordsPage {
            shell,
            items: rows.into_iter().map(|(_, k, i)| (k, i)).collect(),
        },
    )
}

/// A resource's date and title for lists.
pub fn summary(resource_type: &str, r: &Value) -> (String, String) {
    let first = |ps: &[&str]| {
        ps.iter()
            .find_map(|p| r.pointer(p).and_then(Value::as_str))
            .unwrap_or("")
            .to_string()
    };
    match resource_type {
        "Encounter" => (
            first(&["/period/start"]),
            concept(r.pointer("/type/0")).or_if_empty("Visit"),
        ),
        "Condition" => (
            first(&["/recordedDate", "/onsetDateTime"]),
            concept(r.get("code")),
        ),
        "MedicationRequest" | "MedicationDispense" => (
            first(&["/authoredOn", "/whenHandedOver", "/whenPrepared"]),
            concept(r.get("medicationCodeableConcept")),
        ),
        "Observation" => (
            first(&["/effectiveDateTime", "/effectivePeriod/start", "/issued"]),
            concept(r.get("code")),
        ),
        "AllergyIntolerance" => (
            first(&["/recordedDate", "/onsetDateTime"]),
            concept(r.get("code")),
        ),
        "Immunization" => (
            first(&["/occurrenceDateTime"]),
            concept(r.get("vaccineCode")),
        ),
        _ => (first(&["/meta/lastUpdated"]), resource_type.to_string()),
    }
}

#[derive(Template)]
#[template(path = "record.html", config = "src/web/templates/askama.toml")]
struct RecordPage {
    shell: Shell,
    facts: Vec<(String, String)>,
    refill: Option<String>,
}

async fn record(
    State(state): State<WebState>,
    session: Session,
    Path((resource_type, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = own_patient(&session) {
        return *r;
    }
    if !TIMELINE.iter().any(|(t, _, _)| *t == resource_type) && resource_type != "Invoice" {
        return super::not_found().await;
    }
    let fhir = Fhir::new(&state.ctx, &session);
    let r = match fhir.read(&resource_type, &id).await {
        Ok(r) => r,
        Err(_) => return super::not_found().await,
    };
    let (_, title) = summary(&resource_type, &r);
    let refill = (resource_type == "MedicationRequest"
        && session.role() == Some(Role::Patient)
        && text(&r, "/status") == "active")
        .then(|| id.clone());
    page(
        StatusCode::OK,
        &RecordPage {
            shell: Shell::new(&session, &format!("Records: {title}"), ""),
            facts: facts(&with_names(&fhir, r.clone()).await, &session.zone),
            refill,
        },
    )
}

/// The resource with a `display` on each top-level reference that has none, read (as the
/// person) from the resource it names — so facts say "Healporium Demo Clinic", not
/// `Organization/demo-org`. At most 10 lookups; what cannot be read stays a reference.
pub async fn with_names(fhir: &Fhir<'_>, mut r: Value) -> Value {
    let mut refs: Vec<String> = Vec::new();
    if let Some(o) = r.as_object() {
        for v in o.values() {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for item in items {
                if item.get("display").is_none()
                    && let Some(reference) = item.get("reference").and_then(Value::as_str)
                    && reference.split('/').count() == 2
                    && !refs.iter().any(|x| x == reference)
                {
                    refs.push(reference.to_string());
                }
            }
        }
    }
    let mut names = Vec::new();
    for reference in refs.into_iter().take(10) {
        if let Some((t, id)) = reference.split_once('/')
            && let Ok(target) = fhir.read(t, id).await
        {
            let n = name(&target);
            if !n.is_empty() {
                names.push((reference, n));
            }
        }
    }
    if let Some(o) = r.as_object_mut() {
        for v in o.values_mut() {
            let items: Vec<&mut Value> = match v {
                Value::Array(a) => a.iter_mut().collect(),
                other => vec![other],
            };
            for item in items {
                let reference = item
                    .get("reference")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if let Some(reference) = reference
                    && let Some((_, n)) = names.iter().find(|(x, _)| *x == reference)
                    && item.get("display").is_none()
                {
                    super::fhir::set(item, "display", json!(n));
                }
            }
        }
    }
    r
}

/// The facts of a resource in words, element by element (narrative, metadata and
/// extensions left out).
pub fn facts(r: &Value, zone: &jiff::tz::TimeZone) -> Vec<(String, String)> {
    let Some(o) = r.as_object() else {
        return Vec::new();
    };
    o.iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "resourceType" | "id" | "meta" | "text" | "extension" | "contained" | "identifier"
            )
        })
        .map(|(k, v)| (label(k), words(v, zone)))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

fn label(key: &str) -> String {
    // a choice type's value (`valueQuantity`, `valueString`…) is the value
    if key.starts_with("value") && key.len() > 5 {
        return "Value".to_string();
    }
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else if i == 0 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out.replace(" date time", " date")
}

fn words(v: &Value, zone: &jiff::tz::TimeZone) -> String {
    match v {
        Value::String(s) => {
            if s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') {
                when(s, zone)
            } else {
                s.clone()
            }
        }
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => a
            .iter()
            .map(|x| words(x, zone))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        Value::Object(o) => {
            if o.contains_key("coding") || o.contains_key("text") && !o.contains_key("value") {
                concept(Some(v))
            } else if let Some(r) = o.get("reference").and_then(Value::as_str) {
                o.get("display")
                    .and_then(Value::as_str)
                    .unwrap_or(r)
                    .to_string()
            } else if o.contains_key("value") && o.contains_key("unit") {
                format!(
                    "{} {}",
                    o.get("value").map(|x| words(x, zone)).unwrap_or_default(),
                    o.get("unit").and_then(Value::as_str).unwrap_or("")
                )
            } else if o.contains_key("value") && o.contains_key("currency") {
                money_of(Some(v))
            } else if o.contains_key("start") || o.contains_key("end") {
                let s = o.get("start").map(|x| words(x, zone)).unwrap_or_default();
                let e = o.get("end").map(|x| words(x, zone)).unwrap_or_default();
                if e.is_empty() {
                    s
                } else {
                    format!("{s} – {e}")
                }
            } else if let Some(t) = o.get("text").and_then(Value::as_str) {
                t.to_string()
            } else {
                o.iter()
                    .filter(|(k, _)| *k != "extension" && *k != "id")
                    .map(|(_, x)| words(x, zone))
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
        Value::Null => String::new(),
    }
}

// ------------------------------------------------------------------------------------
// appointments

#[derive(Debug, Default, Deserialize)]
pub struct FindQuery {
    specialty: Option<String>,
    practitioner: Option<String>,
    date: Option<String>,
    replace: Option<String>,
    done: Option<String>,
}

pub struct Visit {
    pub id: String,
    pub when: String,
    pub who: String,
    pub status: String,
    pub cancellable: bool,
}

pub struct Offer {
    pub slot: String,
    pub practitioner: String,
    pub when: String,
    pub who: String,
}

#[derive(Template)]
#[template(path = "appointments.html", config = "src/web/templates/askama.toml")]
struct AppointmentsPage {
    shell: Shell,
    visits: Vec<Visit>,
    specialties: Vec<(String, String, bool)>,
    practitioners: Vec<(String, String, bool)>,
    date: String,
    offers: Option<Vec<Offer>>,
    replace: String,
    error: Option<String>,
}

async fn appointments(
    State(state): State<WebState>,
    session: Session,
    Query(q): Query<FindQuery>,
) -> Response {
    appointments_page(&state, &session, q, None).await
}

async fn appointments_page(
    state: &WebState,
    session: &Session,
    q: FindQuery,
    error: Option<String>,
) -> Response {
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, session);
    let subject = format!("Patient/{patient}");
    let now = jiff::Timestamp::now().to_string();
    let visits = tryp!(
        session,
        fhir.search(
            "Appointment",
            &[("patient", &subject), ("_sort", "-date"), ("_count", "20")],
        )
        .await
    )
    .iter()
    .map(|a| Visit {
        id: text(a, "/id"),
        when: when(&text(a, "/start"), &session.zone),
        who: appointment_item(a, &session.zone).title,
        status: status_words(&text(a, "/status")).to_string(),
        cancellable: matches!(text(a, "/status").as_str(), "booked" | "pending")
            && text(a, "/start") > now,
    })
    .collect();
    // the doctors and specialties offered: the Schedules' actors and specialties
    let schedules = tryp!(
        session,
        fhir.search_bundle(
            "Schedule",
            &[
                ("active", "true"),
                ("_include", "Schedule:actor:Practitioner"),
                ("_count", "50")
            ],
        )
        .await
    );
    let mut specialties: Vec<(String, String, bool)> = Vec::new();
    for s in entries(&schedules, "match") {
        for sp in s
            .get("specialty")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let code = text(sp, "/coding/0/code");
            if !code.is_empty() && !specialties.iter().any(|(c, _, _)| *c == code) {
                let selected = q.specialty.as_deref() == Some(code.as_str());
                specialties.push((code, concept(Some(sp)), selected));
            }
        }
    }
    let practitioners: Vec<(String, String, bool)> = entries(&schedules, "include")
        .iter()
        .map(|p| {
            let id = text(p, "/id");
            let selected = q.practitioner.as_deref() == Some(id.as_str());
            (id, name(p), selected)
        })
        .collect();
    let today = view::today(&session.zone);
    let date = q
        .date
        .clone()
        .filter(|d| d.parse::<jiff::civil::Date>().is_ok())
        .unwrap_or_else(|| today.to_string());
    let searched = q.date.is_some() || q.practitioner.is_some() || q.specialty.is_some();
    let mut find_error = error;
    let offers = if searched {
        match find(&fhir, session, &q, &date, &practitioners).await {
            Ok(o) => Some(o),
            Err(o) => {
                find_error = Some(problem(&o, &[]).1);
                Some(Vec::new())
            }
        }
    } else {
        None
    };
    let title = if q.replace.is_some() {
        "Appointments: choose a new time"
    } else {
        "Appointments"
    };
    let shell =
        Shell::new(session, title, "Appointment,Slot").with_flash(view::flash(q.done.as_deref()));
    page(
        if find_error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &AppointmentsPage {
            shell,
            visits,
            specialties,
            practitioners,
            date,
            offers,
            replace: q.replace.unwrap_or_default(),
            error: find_error,
        },
    )
}

fn status_words(status: &str) -> &'static str {
    match status {
        "booked" => "Booked",
        "pending" => "Waiting for confirmation",
        "cancelled" => "Cancelled",
        "fulfilled" => "Done",
        "noshow" => "Missed",
        "arrived" | "checked-in" => "Checked in",
        "proposed" => "Proposed",
        _ => "Other",
    }
}

/// Free slots for a week from `date` (`$find`), as offers.
async fn find(
    fhir: &Fhir<'_>,
    session: &Session,
    q: &FindQuery,
    date: &str,
    practitioners: &[(String, String, bool)],
) -> Result<Vec<Offer>, crate::fhir::outcome::Outcome> {
    let start = view::instant(date, "", &session.zone).unwrap_or_default();
    let end = date
        .parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.checked_add(jiff::Span::new().days(7)).ok())
        .and_then(|d| view::instant(&d.to_string(), "", &session.zone))
        .unwrap_or_default();
    let now = jiff::Timestamp::now().to_string();
    let start = if start < now { now } else { start };
    let mut ps = vec![
        ("start", json!({"valueDateTime": start})),
        ("end", json!({"valueDateTime": end})),
        ("_count", json!({"valueInteger": 30})),
    ];
    if let Some(p) = q.practitioner.as_deref().filter(|p| !p.is_empty()) {
        ps.push((
            "practitioner",
            json!({"valueReference": {"reference": format!("Practitioner/{p}")}}),
        ));
    }
    if let Some(s) = q.specialty.as_deref().filter(|s| !s.is_empty()) {
        ps.push(("specialty", json!({"valueString": s})));
    }
    let found = fhir
        .operation(Some("Appointment"), None, "find", parameters(ps))
        .await?;
    Ok(entries(&found, "match")
        .iter()
        .filter_map(|a| {
            let slot = super::view::ref_id(a, "/slot/0/reference", "Slot")?;
            let practitioner = a
                .get("participant")
                .and_then(Value::as_array)?
                .iter()
                .find_map(|p| super::view::ref_id(p, "/actor/reference", "Practitioner"))
                .unwrap_or_default();
            let who = practitioners
                .iter()
                .find(|(id, _, _)| *id == practitioner)
                .map(|(_, n, _)| n.clone())
                .unwrap_or_else(|| "A doctor".to_string());
            Some(Offer {
                slot,
                practitioner,
                when: when(&text(a, "/start"), &session.zone),
                who,
            })
        })
        .collect())
}

/// `POST /app/appointments/book`: `$book` of the slot for the patient; with `replace`, the
/// old appointment is cancelled once the new one is booked (a change of time).
async fn book(State(state): State<WebState>, form: Form) -> Response {
    let session = &form.session;
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let (Some(slot), Some(practitioner)) = (form.get("slot"), form.get("practitioner")) else {
        return appointments_page(
            &state,
            session,
            FindQuery::default(),
            Some("Choose a time first.".into()),
        )
        .await;
    };
    let fhir = Fhir::new(&state.ctx, session);
    let appointment = json!({"resourceType": "Appointment", "status": "proposed",
        "slot": [{"reference": format!("Slot/{slot}")}],
        "participant": [
            {"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"},
            {"actor": {"reference": format!("Practitioner/{practitioner}")}, "status": "needs-action"}]});
    let body = parameters(vec![("appt-resource", json!({"resource": appointment}))]);
    if let Err(o) = fhir
        .operation(Some("Appointment"), None, "book", body)
        .await
    {
        let (_, text) = problem(&o, &[]);
        return appointments_page(&state, session, FindQuery::default(), Some(text)).await;
    }
    if let Some(old) = form.get("replace")
        && let Err(o) = set_status(&fhir, old, "cancelled").await
    {
        let (_, text) = problem(&o, &[]);
        return appointments_page(&state, session, FindQuery::default(), Some(text)).await;
    }
    see_other("/app/appointments?done=booked")
}

async fn set_status(
    fhir: &Fhir<'_>,
    id: &str,
    status: &str,
) -> Result<Value, crate::fhir::outcome::Outcome> {
    let mut a = fhir.read("Appointment", id).await?;
    super::fhir::set(&mut a, "status", json!(status));
    fhir.update(a).await
}

async fn cancel(State(state): State<WebState>, Path(id): Path<String>, form: Form) -> Response {
    let session = &form.session;
    if let Err(r) = own_patient(session) {
        return *r;
    }
    let fhir = Fhir::new(&state.ctx, session);
    match set_status(&fhir, &id, "cancelled").await {
        Ok(_) => see_other("/app/appointments?done=cancelled"),
        Err(o) => {
            let (_, text) = problem(&o, &[]);
            appointments_page(&state, session, FindQuery::default(), Some(text)).await
        }
    }
}

// ------------------------------------------------------------------------------------
// bills and credit

pub struct ClaimView {
    pub id: String,
    pub title: String,
    pub date: String,
    pub charged: String,
    pub insurer_paid: String,
    pub you_owe: String,
    pub queued: bool,
    pub on_plan: bool,
    pub can_defer: bool,
    pub words: String,
}

pub struct Installment {
    pub number: i64,
    pub due: String,
    pub amount: String,
    pub status: String,
    pub plan: String,
}

pub struct Line {
    pub id: String,
    pub limit: String,
    pub balance: String,
}

pub struct Bills {
    pub claims: Vec<ClaimView>,
    pub installments: Vec<Installment>,
    pub line: Option<Line>,
    pub owed_text: String,
    pub statements: Vec<Item>,
    pub next_amount: String,
    /// Explanations of benefits, in plain words.
    pub eobs: Vec<Item>,
}

fn extension<'v>(v: &'v Value, url_suffix: &str) -> Option<&'v Value> {
    v.get("extension")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| {
            e.get("url")
                .and_then(Value::as_str)
                .is_some_and(|u| u.ends_with(url_suffix))
        })
}

fn part<'v>(ext: &'v Value, name: &str) -> Option<&'v Value> {
    ext.get("extension")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(name))
        .and_then(|e| {
            e.as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value"))
                .map(|(_, v)| v)
        })
}

fn account_kind(a: &Value) -> String {
    text(a, "/type/coding/0/code")
}

/// Everything about the patient's bills, as the patient's token sees it.
pub async fn load_bills(
    fhir: &Fhir<'_>,
    patient: &str,
    zone: &jiff::tz::TimeZone,
) -> Result<Bills, crate::fhir::outcome::Outcome> {
    let subject = format!("Patient/{patient}");
    let claims = fhir
        .search(
            "Claim",
            &[
                ("patient", &subject),
                ("_sort", "-created"),
                ("_count", "50"),
            ],
        )
        .await?;
    let responses = fhir
        .search("ClaimResponse", &[("patient", &subject), ("_count", "200")])
        .await?;
    let accounts = fhir
        .search("Account", &[("patient", &subject), ("_count", "100")])
        .await?;
    let draws: Vec<&Value> = accounts
        .iter()
        .filter(|a| account_kind(a) == "credit-draw")
        .collect();
    let financed: Vec<String> = draws
        .iter()
        .filter_map(|d| extension(d, "/credit-draw").and_then(|e| part(e, "source")))
        .filter_map(|s| s.get("reference").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    let mut views = Vec::new();
    let mut owed_minor = rust_decimal::Decimal::ZERO;
    let mut currency = "USD".to_string();
    for c in &claims {
        let id = text(c, "/id");
        let newest = view::newest_response(&responses, &id);
        let queued = newest.is_none_or(|r| text(r, "/outcome") == "queued");
        let on_plan = claim_financed(&responses, &id, &financed);
        let owe = newest.and_then(|r| claim_total(r, "memberliability"));
        if let Some(m) = owe
            && !queued
            && !on_plan
        {
            if let Some(v) = m
                .get("value")
                .and_then(|v| v.to_string().parse::<rust_decimal::Decimal>().ok())
            {
                owed_minor += v;
            }
            currency = text(m, "/currency").or_if_empty("USD");
        }
        let charged = money_of(c.pointer("/total").or_else(|| c.pointer("/item/0/net")));
        let insurer_paid = newest
            .map(|r| money_of(claim_total(r, "benefit")))
            .unwrap_or_default();
        let you_owe = money_of(owe);
        let words = if queued {
            "Your insurer is reviewing this claim. You owe nothing until they decide.".to_string()
        } else if on_plan {
            format!("{you_owe} of it is on your payment plan.")
        } else {
            format!("The care cost {charged}. Your insurer paid {insurer_paid}. You owe {you_owe}.")
        };
        views.push(ClaimView {
            title: concept(c.pointer("/item/0/productOrService")).or_if_empty("Care"),
            date: when(
                &text(c, "/billablePeriod/start").or_if_empty(&text(c, "/created")),
                zone,
            ),
            can_defer: !queued
                && !on_plan
                && owe.is_some_and(|m| {
                    m.get("value").is_some_and(|v| {
                        v.as_f64().is_some_and(|x| x > 0.0)
                            || v.to_string().parse::<f64>().is_ok_and(|x| x > 0.0)
                    })
                }),
            charged,
            insurer_paid,
            you_owe,
            queued,
            on_plan,
            words,
            id,
        });
    }
    let line = accounts
        .iter()
        .find(|a| account_kind(a) == "credit-line" && text(a, "/status") == "active")
        .map(|a| {
            let ext = extension(a, "/credit-line");
            let limit = ext.and_then(|e| part(e, "limit"));
            let balance = extension(a, "extension-Account.balance").and_then(|e| part(e, "amount"));
            Line {
                id: text(a, "/id"),
                limit: money_of(limit),
                balance: money_of(balance),
            }
        });
    let mut installments = Vec::new();
    for d in &draws {
        let Some(terms) = extension(d, "/credit-draw")
            .and_then(|e| part(e, "terms"))
            .and_then(|r| super::view::ref_id(r, "/reference", "Contract"))
        else {
            continue;
        };
        let contract = fhir.read("Contract", &terms).await?;
        let plan = text(d, "/name");
        for item in contract
            .pointer("/term/0/asset/0/valuedItem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let status = extension(item, "/installment-status");
            installments.push(Installment {
                number: status
                    .and_then(|s| part(s, "number"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                due: when(&text(item, "/paymentDate"), zone),
                amount: money_of(item.get("net")),
                status: status
                    .and_then(|s| part(s, "status"))
                    .and_then(Value::as_str)
                    .unwrap_or("scheduled")
                    .to_string(),
                plan: plan.clone(),
            });
        }
    }
    let next_amount = installments
        .iter()
        .find(|i| i.status != "paid")
        .map(|i| i.amount.trim_start_matches('$').replace(',', ""))
        .unwrap_or_default();
    let statements = match &line {
        Some(l) => fhir
            .search(
                "Invoice",
                &[
                    ("account", &format!("Account/{}", l.id)),
                    ("_sort", "-date"),
                ],
            )
            .await?
            .iter()
            .map(|i| Item {
                title: "Statement".into(),
                detail: money_of(extension(i, "/statement").and_then(|e| part(e, "newBalance"))),
                when: when(&text(i, "/date"), zone),
                href: format!("/app/records/Invoice/{}", text(i, "/id")),
            })
            .collect(),
        None => Vec::new(),
    };
    let eobs = fhir
        .search(
            "ExplanationOfBenefit",
            &[
                ("patient", &subject),
                ("_sort", "-created"),
                ("_count", "50"),
            ],
        )
        .await?
        .iter()
        .map(|e| {
            let service = concept(e.pointer("/item/0/productOrService")).or_if_empty("Care");
            let provider = text(e, "/provider/display");
            Item {
                title: service,
                detail: format!(
                    "Billed {}. Your plan allows {}. Your insurer paid {}. Your share is {}{}.",
                    money_of(claim_total(e, "submitted")),
                    money_of(claim_total(e, "eligible")),
                    money_of(claim_total(e, "benefit")),
                    money_of(claim_total(e, "memberliability")),
                    if provider.is_empty() {
                        String::new()
                    } else {
                        format!(" (from {provider})")
                    }
                ),
                when: when(
                    &text(e, "/billablePeriod/start").or_if_empty(&text(e, "/created")),
                    zone,
                ),
                href: String::new(),
            }
        })
        .collect();
    let owed_text = super::view::money(&json!(owed_minor.to_string()), &currency);
    Ok(Bills {
        eobs,
        claims: views,
        installments,
        line,
        owed_text,
        statements,
        next_amount,
    })
}

fn claim_financed(responses: &[Value], claim: &str, financed: &[String]) -> bool {
    responses.iter().any(|r| {
        text(r, "/request/reference") == format!("Claim/{claim}")
            && financed.contains(&format!("ClaimResponse/{}", text(r, "/id")))
    })
}

#[derive(Template)]
#[template(path = "bills.html", config = "src/web/templates/askama.toml")]
struct BillsPage {
    shell: Shell,
    bills: Bills,
    payoff: String,
    request_id: String,
    demo_payments: bool,
    error: Option<String>,
}

async fn bills(State(state): State<WebState>, session: Session, Query(d): Query<Done>) -> Response {
    bills_page(&state, &session, d.done.as_deref(), None).await
}

async fn bills_page(
    state: &WebState,
    session: &Session,
    done: Option<&str>,
    error: Option<String>,
) -> Response {
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, session);
    let bills = tryp!(session, load_bills(&fhir, &patient, &session.zone).await);
    let payoff = match &bills.line {
        Some(l) => fhir
            .operation(Some("Account"), Some(&l.id), "payoff", parameters(vec![]))
            .await
            .map(|p| money_of(param(&p, "amount")))
            .unwrap_or_default(),
        None => String::new(),
    };
    let shell = Shell::new(
        session,
        "Bills",
        "Claim,ClaimResponse,ExplanationOfBenefit,Account,Contract,Invoice",
    )
    .with_flash(view::flash(done));
    page(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &BillsPage {
            shell,
            bills,
            payoff,
            request_id: crate::smart::crypto::random_token(12),
            demo_payments: state.demo_payments,
            error,
        },
    )
}

/// The credit line of the patient, if open.
async fn line_of(
    fhir: &Fhir<'_>,
    patient: &str,
) -> Result<Option<String>, crate::fhir::outcome::Outcome> {
    Ok(fhir
        .search(
            "Account",
            &[
                ("patient", &format!("Patient/{patient}")),
                ("status", "active"),
            ],
        )
        .await?
        .iter()
        .find(|a| account_kind(a) == "credit-line")
        .map(|a| text(a, "/id")))
}

#[derive(Debug, Default, Deserialize)]
pub struct QuoteQuery {
    term: Option<String>,
}

#[derive(Template)]
#[template(path = "defer.html", config = "src/web/templates/askama.toml")]
struct DeferPage {
    shell: Shell,
    claim: String,
    term: i64,
    terms: Vec<i64>,
    amount: String,
    installment: String,
    total: String,
    schedule: Vec<(i64, String, String)>,
    has_line: bool,
    request_id: String,
}

/// `GET /app/bills/{claim}/defer?term=N`: the quote with its full schedule, before accepting.
async fn defer_quote(
    State(state): State<WebState>,
    session: Session,
    Path(claim): Path<String>,
    Query(q): Query<QuoteQuery>,
) -> Response {
    let patient = match own_patient(&session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, &session);
    let bills = tryp!(&session, load_bills(&fhir, &patient, &session.zone).await);
    let Some(c) = bills.claims.iter().find(|c| c.id == claim && c.can_defer) else {
        return super::not_found().await;
    };
    let responses = tryp!(
        &session,
        fhir.search(
            "ClaimResponse",
            &[
                ("request", &format!("Claim/{claim}")),
                ("_sort", "-created"),
                ("_count", "1")
            ]
        )
        .await
    );
    let owe = responses
        .first()
        .and_then(|r| claim_total(r, "memberliability"))
        .cloned()
        .unwrap_or(Value::Null);
    let term = q
        .term
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|t| (3..=24).contains(t))
        .unwrap_or(6);
    let quote = tryp!(
        &session,
        fhir.operation(
            Some("Account"),
            None,
            "credit-quote",
            parameters(vec![
                ("amount", json!({"valueMoney": owe})),
                ("termMonths", json!({"valueInteger": term})),
                ("plan", json!({"valueCode": "installments-0"})),
            ]),
        )
        .await
    );
    let schedule = super::fhir::params_named(&quote, "schedule")
        .iter()
        .map(|s| {
            let parts = s.get("part").cloned().unwrap_or(Value::Null);
            let p = json!({"parameter": parts});
            (
                param(&p, "number").and_then(Value::as_i64).unwrap_or(0),
                when(
                    param(&p, "dueDate").and_then(Value::as_str).unwrap_or(""),
                    &session.zone,
                ),
                money_of(param(&p, "amount")),
            )
        })
        .collect();
    let has_line = tryp!(&session, line_of(&fhir, &patient).await).is_some();
    page(
        StatusCode::OK,
        &DeferPage {
            shell: Shell::new(&session, &format!("Bills: pay {} over time", c.title), ""),
            claim: claim.clone(),
            term,
            terms: vec![3, 6, 12, 24],
            amount: c.you_owe.clone(),
            installment: money_of(param(&quote, "installment")),
            total: money_of(param(&quote, "totalPayable")),
            schedule,
            has_line,
            request_id: crate::smart::crypto::random_token(12),
        },
    )
}

/// `POST /app/bills/{claim}/defer`: `$defer` onto the patient's credit line.
async fn defer(State(state): State<WebState>, Path(claim): Path<String>, form: Form) -> Response {
    let session = &form.session;
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, session);
    let line = match line_of(&fhir, &patient).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return bills_page(
                &state,
                session,
                None,
                Some("Open a credit line first.".into()),
            )
            .await;
        }
        Err(o) => return failed(session, &o),
    };
    let term = form
        .get("term")
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(6);
    let request_id = form.get("requestId").unwrap_or("").to_string();
    let body = parameters(vec![
        (
            "creditLine",
            json!({"valueReference": {"reference": format!("Account/{line}")}}),
        ),
        ("termMonths", json!({"valueInteger": term})),
        ("plan", json!({"valueCode": "installments-0"})),
        (
            "requestId",
            json!({"valueString": format!("web-defer-{request_id}")}),
        ),
    ]);
    match fhir
        .operation(Some("Claim"), Some(&claim), "defer", body)
        .await
    {
        Ok(_) => see_other("/app/bills?done=deferred"),
        Err(o) => {
            let (_, text) = problem(&o, &[]);
            bills_page(&state, session, None, Some(text)).await
        }
    }
}

/// `POST /app/credit/apply`: `$credit-apply` for the patient.
async fn credit_apply(State(state): State<WebState>, form: Form) -> Response {
    let session = &form.session;
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let limit = form.get("limit").unwrap_or("");
    let Ok(amount) = limit.replace(',', "").parse::<rust_decimal::Decimal>() else {
        return bills_page(
            &state,
            session,
            None,
            Some("Enter the limit you would like, such as 1000.".into()),
        )
        .await;
    };
    let fhir = Fhir::new(&state.ctx, session);
    let body = parameters(vec![
        (
            "patient",
            json!({"valueReference": {"reference": format!("Patient/{patient}")}}),
        ),
        ("product", json!({"valueCode": "standard"})),
        (
            "requestedLimit",
            json!({"valueMoney": {"value": super::fhir::decimal(amount.round_dp(2)), "currency": "USD"}}),
        ),
        (
            "requestId",
            json!({"valueString": format!("web-apply-{}", form.get("requestId").unwrap_or(""))}),
        ),
    ]);
    match fhir
        .operation(Some("Account"), None, "credit-apply", body)
        .await
    {
        Ok(out) if param(&out, "decision").and_then(Value::as_str) == Some("approved") => {
            see_other("/app/bills?done=opened")
        }
        Ok(out) => {
            let reason = param(&out, "reason")
                .and_then(Value::as_str)
                .unwrap_or("The application was not approved.");
            bills_page(&state, session, None, Some(reason.to_string())).await
        }
        Err(o) => {
            let (_, text) = problem(&o, &[]);
            bills_page(&state, session, None, Some(text)).await
        }
    }
}

/// `POST /app/credit/pay`: a card payment through the payment processor. The patient's token
/// must see the line (else 404); the processor — not the patient — then records the payment
/// with `$credit-payment`, as a payment processor's webhook would. Only the built-in demo
/// processor (`serve --demo`) exists: it accepts the test card 4242 4242 4242 4242.
async fn pay(State(state): State<WebState>, form: Form) -> Response {
    let session = &form.session;
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if !state.demo_payments {
        return bills_page(&state, session, None, Some("Card payments are not set up on this server; pay by the means your statement gives.".into())).await;
    }
    let fhir = Fhir::new(&state.ctx, session);
    let line = match line_of(&fhir, &patient).await {
        Ok(Some(l)) => l,
        Ok(None) => return super::not_found().await,
        Err(o) => return failed(session, &o),
    };
    let Ok(amount) = form
        .get("amount")
        .unwrap_or("")
        .replace(['$', ','], "")
        .parse::<rust_decimal::Decimal>()
    else {
        return bills_page(
            &state,
            session,
            None,
            Some("Enter the amount to pay, such as 106.67.".into()),
        )
        .await;
    };
    let card: String = form
        .get("card")
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if card != "4242424242424242" {
        return bills_page(&state, session, None, Some("The card was declined. The demo processor accepts the test card 4242 4242 4242 4242.".into())).await;
    }
    let request_id = form.get("requestId").unwrap_or("").to_string();
    let processor = crate::auth::Principal {
        client_id: "healporium-demo-payments".to_string(),
        ..crate::auth::Principal::system()
    };
    let as_processor = Fhir::as_principal(&state.ctx, &session.base, processor);
    let body = parameters(vec![
        (
            "amount",
            json!({"valueMoney": {"value": super::fhir::decimal(amount.round_dp(2)), "currency": "USD"}}),
        ),
        (
            "requestId",
            json!({"valueString": format!("web-pay-{request_id}")}),
        ),
        (
            "processorTransactionId",
            json!({"valueString": format!("demo-{request_id}")}),
        ),
    ]);
    match as_processor
        .operation(Some("Account"), Some(&line), "credit-payment", body)
        .await
    {
        Ok(_) => see_other("/app/bills?done=paid"),
        Err(o) => {
            let (_, text) = problem(&o, &[]);
            bills_page(&state, session, None, Some(text)).await
        }
    }
}

/// `POST /app/credit/statement`: today's statement of the credit line (`$statement`); asking
/// again the same day returns the same one.
async fn statement(State(state): State<WebState>, form: Form) -> Response {
    let session = &form.session;
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, session);
    let line = match line_of(&fhir, &patient).await {
        Ok(Some(l)) => l,
        Ok(None) => return super::not_found().await,
        Err(o) => return failed(session, &o),
    };
    match fhir
        .operation(
            Some("Account"),
            Some(&line),
            "statement",
            parameters(vec![]),
        )
        .await
    {
        Ok(_) => see_other("/app/bills?done=statement#plan"),
        Err(o) => {
            let (_, text) = problem(&o, &[]);
            bills_page(&state, session, None, Some(text)).await
        }
    }
}

// ------------------------------------------------------------------------------------
// messages and refills

#[derive(Template)]
#[template(path = "messages.html", config = "src/web/templates/askama.toml")]
struct MessagesPage {
    shell: Shell,
    messages: Vec<Item>,
    error: Option<String>,
}

async fn messages(
    State(state): State<WebState>,
    session: Session,
    Query(d): Query<Done>,
) -> Response {
    messages_page(&state, &session, d.done.as_deref(), None).await
}

async fn messages_page(
    state: &WebState,
    session: &Session,
    done: Option<&str>,
    error: Option<String>,
) -> Response {
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, session);
    let subject = format!("Patient/{patient}");
    let mut list: Vec<Item> = tryp!(
        session,
        fhir.search(
            "Communication",
            &[("subject", &subject), ("_sort", "-sent"), ("_count", "50")]
        )
        .await
    )
    .iter()
    .map(|c| Item {
        title: if text(c, "/sender/reference") == subject
            || session
                .author()
                .is_some_and(|a| text(c, "/sender/reference") == a)
        {
            "You wrote".into()
        } else {
            "Your care team wrote".into()
        },
        detail: text(c, "/payload/0/contentString"),
        when: when(&text(c, "/sent"), &session.zone),
        href: String::new(),
    })
    .collect();
    let tasks = tryp!(
        session,
        fhir.search("Task", &[("patient", &subject), ("_count", "50")])
            .await
    );
    list.extend(tasks.iter().map(|t| Item {
        title: "Refill request".into(),
        detail: format!(
            "{} — {}",
            text(t, "/description"),
            task_words(&text(t, "/status"))
        ),
        when: when(&text(t, "/authoredOn"), &session.zone),
        href: String::new(),
    }));
    page(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &MessagesPage {
            shell: Shell::new(session, "Messages", "Communication,Task")
                .with_flash(view::flash(done)),
            messages: list,
            error,
        },
    )
}

fn task_words(status: &str) -> &'static str {
    match status {
        "requested" => "waiting for your doctor",
        "accepted" | "in-progress" => "your doctor is on it",
        "completed" => "done",
        "rejected" | "cancelled" => "declined",
        _ => "open",
    }
}

/// The patient's doctors: the Patient's general practitioners.
async fn care_team(fhir: &Fhir<'_>, patient: &str) -> Vec<String> {
    fhir.read("Patient", patient)
        .await
        .ok()
        .and_then(|p| p.get("generalPractitioner").cloned())
        .and_then(|g| g.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            r.get("reference")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

async fn send_message(State(state): State<WebState>, form: Form) -> Response {
    let session = &form.session;
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some(body) = form.get("message").filter(|m| m.len() <= 4000) else {
        return messages_page(
            &state,
            session,
            None,
            Some("Write your message (up to 4,000 characters).".into()),
        )
        .await;
    };
    let fhir = Fhir::new(&state.ctx, session);
    let recipients: Vec<Value> = care_team(&fhir, &patient)
        .await
        .into_iter()
        .map(|r| json!({"reference": r}))
        .collect();
    let communication = json!({"resourceType": "Communication", "status": "completed",
        "subject": {"reference": format!("Patient/{patient}")},
        "sender": {"reference": session.author().unwrap_or_else(|| format!("Patient/{patient}"))},
        "recipient": recipients,
        "sent": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "payload": [{"contentString": body}]});
    match fhir.create(communication).await {
        Ok(_) => see_other("/app/messages?done=sent"),
        Err(o) => {
            let (_, text) = problem(&o, &[]);
            messages_page(&state, session, None, Some(text)).await
        }
    }
}

/// `POST /app/refill/{rx}`: a Task to the prescriber asking for a refill.
async fn refill(State(state): State<WebState>, Path(rx): Path<String>, form: Form) -> Response {
    let session = &form.session;
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, session);
    let Ok(request) = fhir.read("MedicationRequest", &rx).await else {
        return super::not_found().await;
    };
    let (_, medicine) = summary("MedicationRequest", &request);
    let mut task = json!({"resourceType": "Task", "status": "requested", "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}],
            "text": "Refill request"},
        "description": format!("Refill: {medicine}"),
        "focus": {"reference": format!("MedicationRequest/{rx}")},
        "for": {"reference": format!("Patient/{patient}")},
        "requester": {"reference": session.author().unwrap_or_else(|| format!("Patient/{patient}"))},
        "authoredOn": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()});
    if let Some(prescriber) = request.pointer("/requester/reference") {
        super::fhir::set(&mut task, "owner", json!({"reference": prescriber}));
    }
    match fhir.create(task).await {
        Ok(_) => see_other("/app/messages?done=refill"),
        Err(o) => {
            let (_, text) = problem(&o, &[]);
            messages_page(&state, session, None, Some(text)).await
        }
    }
}

// ------------------------------------------------------------------------------------
// profile and access

#[derive(Template)]
#[template(path = "profile.html", config = "src/web/templates/askama.toml")]
struct ProfilePage {
    shell: Shell,
    name: String,
    birth: String,
    phone: String,
    email: String,
    line: String,
    city: String,
    postal: String,
    errors: Vec<(String, String)>,
}

fn telecom(p: &Value, system: &str) -> String {
    p.get("telecom")
        .and_then(Value::as_array)
        .and_then(|ts| ts.iter().find(|t| text(t, "/system") == system))
        .map(|t| text(t, "/value"))
        .unwrap_or_default()
}

async fn profile(
    State(state): State<WebState>,
    session: Session,
    Query(d): Query<Done>,
) -> Response {
    let patient = match own_patient(&session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, &session);
    let p = tryp!(&session, fhir.read("Patient", &patient).await);
    page(
        StatusCode::OK,
        &ProfilePage {
            shell: Shell::new(&session, "Profile", "Patient")
                .with_flash(view::flash(d.done.as_deref())),
            name: name(&p),
            birth: when(&text(&p, "/birthDate"), &session.zone),
            phone: telecom(&p, "phone"),
            email: telecom(&p, "email"),
            line: text(&p, "/address/0/line/0"),
            city: text(&p, "/address/0/city"),
            postal: text(&p, "/address/0/postalCode"),
            errors: Vec::new(),
        },
    )
}

async fn save_profile(State(state): State<WebState>, form: Form) -> Response {
    let session = &form.session;
    let patient = match own_patient(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, session);
    let mut p = tryp!(session, fhir.read("Patient", &patient).await);
    let phone = form.get("phone").unwrap_or("").to_string();
    let email = form.get("email").unwrap_or("").to_string();
    let mut errors = Vec::new();
    if !email.is_empty() && (!email.contains('@') || email.len() > 200) {
        errors.push((
            "email".to_string(),
            "Enter an email address such as name@example.com.".to_string(),
        ));
    }
    if !phone.is_empty()
        && (phone.len() > 40
            || !phone
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c)))
    {
        errors.push((
            "phone".to_string(),
            "Enter a phone number of digits, spaces and + - ( ).".to_string(),
        ));
    }
    let (line, city, postal) = (
        form.get("line").unwrap_or("").to_string(),
        form.get("city").unwrap_or("").to_string(),
        form.get("postal").unwrap_or("").to_string(),
    );
    if errors.is_empty() {
        let mut telecom: Vec<Value> = p
            .get("telecom")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .filter(|t| !matches!(text(t, "/system").as_str(), "phone" | "email"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !phone.is_empty() {
            telecom.push(json!({"system": "phone", "value": phone, "use": "mobile"}));
        }
        if !email.is_empty() {
            telecom.push(json!({"system": "email", "value": email}));
        }
        if let Some(o) = p.as_object_mut() {
            o.remove("telecom");
            o.remove("address");
            if !telecom.is_empty() {
                o.insert("telecom".into(), json!(telecom));
            }
            if !(line.is_empty() && city.is_empty() && postal.is_empty()) {
                let mut a = serde_json::Map::new();
                if !line.is_empty() {
                    a.insert("line".into(), json!([line]));
                }
                if !city.is_empty() {
                    a.insert("city".into(), json!(city));
                }
                if !postal.is_empty() {
                    a.insert("postalCode".into(), json!(postal));
                }
                o.insert("address".into(), json!([a]));
            }
        }
        match fhir.update(p.clone()).await {
            Ok(_) => return see_other("/app/profile?done=saved"),
            Err(o) => {
                let (field, text) = problem(&o, &[("telecom", "phone"), ("address", "line")]);
                errors.push((field.unwrap_or("phone").to_string(), text));
            }
        }
    }
    page(
        StatusCode::UNPROCESSABLE_ENTITY,
        &ProfilePage {
            shell: Shell::new(session, "Profile", ""),
            name: name(&p),
            birth: when(&text(&p, "/birthDate"), &session.zone),
            phone,
            email,
            line,
            city,
            postal,
            errors,
        },
    )
}

#[derive(Template)]
#[template(path = "access.html", config = "src/web/templates/askama.toml")]
struct AccessPage {
    shell: Shell,
    events: Vec<Item>,
    /// How many of the latest events were the person's own.
    own: usize,
}

/// `GET /app/access`: who has seen or changed the record, from the AuditEvents of the
/// patient (which the patient's token may read), in plain words.
async fn access(State(state): State<WebState>, session: Session) -> Response {
    let patient = match own_patient(&session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, &session);
    let events = tryp!(
        &session,
        fhir.search(
            "AuditEvent",
            &[
                ("patient", &format!("Patient/{patient}")),
                ("_sort", "-date"),
                ("_count", "200")
            ]
        )
        .await
    );
    // who each requestor is, in words: a person's name where the record shows it
    let me = session.author();
    let mut names: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let mut items = Vec::new();
    let mut own = 0usize;
    for e in &events {
        let agent = e
            .get("agent")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("requestor").and_then(Value::as_bool) == Some(true))
                    .or(a.first())
            })
            .cloned()
            .unwrap_or(Value::Null);
        let reference = text(&agent, "/who/reference");
        if !reference.is_empty() && me.as_deref() == Some(reference.as_str()) {
            own += 1;
            continue;
        }
        let who = if let Some(n) = names.get(&reference) {
            n.clone()
        } else {
            let mut n = String::new();
            if let Some((t, id)) = reference.split_once('/')
                && let Ok(r) = fhir.read(t, id).await
            {
                n = name(&r);
            }
            if n.is_empty() {
                n = text(&agent, "/name");
            }
            if n.is_empty() {
                n = text(&agent, "/who/display").or_if_empty("Someone");
            }
            names.insert(reference.clone(), n.clone());
            n
        };
        let app = text(&agent, "/altId");
        let through = if app.is_empty() || app == crate::smart::WEB_CLIENT_ID {
            String::new()
        } else {
            format!(" (through the app {app})")
        };
        let action = match text(e, "/action").as_str() {
            "C" => "added to",
            "U" => "changed",
            "D" => "deleted from",
            "E" => "searched",
            _ => "looked at",
        };
        let what = e
            .get("entity")
            .and_then(Value::as_array)
            .and_then(|es| {
                es.iter()
                    .filter(|x| text(x, "/role/code") != "1")
                    .find_map(|x| x.pointer("/what/reference").and_then(Value::as_str))
            })
            .and_then(|r| r.split('/').next())
            .map(|t| crate::auth::scopes::plain_words(&format!("patient/{t}.r")))
            .map(|w| {
                w.trim_start_matches("See and search your ")
                    .trim_start_matches("See your ")
                    .to_string()
            })
            .unwrap_or_else(|| "your record".into());
        if items.len() >= 50 {
            continue;
        }
        items.push(Item {
            title: format!("{who} {action} {what}{through}"),
            detail: String::new(),
            when: when(&text(e, "/recorded"), &session.zone),
            href: String::new(),
        });
    }
    page(
        StatusCode::OK,
        &AccessPage {
            shell: Shell::new(&session, "Who has seen my record", ""),
            events: items,
            own,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_read_as_labels() {
        for (key, out) in [
            ("valueQuantity", "Value"),
            ("effectiveDateTime", "Effective date"),
            ("generalPractitioner", "General practitioner"),
            ("status", "Status"),
        ] {
            assert_eq!(label(key), out);
        }
    }
}
