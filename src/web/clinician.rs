//! The doctor's pages: today's schedule, finding a patient (only those in their care — the
//! Guard's reach decides), the patient chart (timeline, health-log charts, problems,
//! medicines) with vitals, an encounter note and prescribing, the inbox of patient messages
//! and refill requests, and their weekly availability.

use super::fhir::{Fhir, entries, problem};
use super::health::KINDS;
use super::patient::{Item, facts, summary};
use super::session::{Form, Session};
use super::view::{self, OrIfEmpty, Shell, concept, name, text, when};
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
        .route("/app/patients", get(patients))
        .route("/app/patients/{id}", get(chart))
        .route("/app/patients/{id}/prescribe", post(prescribe))
        .route("/app/patients/{id}/note", post(note))
        .route("/app/inbox", get(inbox))
        .route("/app/inbox/task/{id}", post(answer_task))
        .route(
            "/app/availability",
            get(availability).post(save_availability),
        )
}

/// Medicines a doctor picks from (RxNorm), searchable as a list.
pub const MEDICINES: &[(&str, &str)] = &[
    ("860975", "metformin 500 MG Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("197361", "amlodipine 5 MG Oral Tablet"),
    ("617312", "atorvastatin 10 MG Oral Tablet"),
    ("308136", "amoxicillin 500 MG Oral Capsule"),
    ("310965", "ibuprofen 200 MG Oral Tablet"),
    ("313782", "acetaminophen 325 MG Oral Tablet"),
    ("966222", "levothyroxine sodium 0.05 MG Oral Tablet"),
    ("312961", "simvastatin 20 MG Oral Tablet"),
    ("198211", "simvastatin 40 MG Oral Tablet"),
    ("311989", "nitrofurantoin 100 MG Oral Capsule"),
    ("896209", "salbutamol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    ("849574", "naproxen sodium 220 MG Oral Tablet"),
    (
        "1049221",
        "acetaminophen 325 MG / oxycodone hydrochloride 5 MG Oral Tablet",
    ),
    ("198405", "omeprazole 20 MG Delayed Release Oral Capsule"),
];

fn practitioner(session: &Session) -> Result<String, Box<Response>> {
    match (session.role(), session.own("Practitioner")) {
        (Some(Role::Practitioner), Some(p)) => Ok(p.to_string()),
        _ => Err(Box::new(message(
            StatusCode::NOT_FOUND,
            session,
            "Not found",
            "This page is for doctors.",
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Q {
    q: Option<String>,
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "doctor_home.html", config = "src/web/templates/askama.toml")]
struct HomePage {
    shell: Shell,
    visits: Vec<Item>,
    open_tasks: usize,
}

pub async fn home(state: &WebState, session: &Session) -> Response {
    let me = match practitioner(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, session);
    let today = view::today(&session.zone);
    let tomorrow = today.tomorrow().unwrap_or(today);
    let from = view::instant(&today.to_string(), "", &session.zone).unwrap_or_default();
    let to = view::instant(&tomorrow.to_string(), "", &session.zone).unwrap_or_default();
    let found = match fhir
        .search_bundle(
            "Appointment",
            &[
                ("practitioner", &format!("Practitioner/{me}")),
                ("date", &format!("ge{from}")),
                ("date", &format!("lt{to}")),
                ("_sort", "date"),
                ("_include", "Appointment:patient"),
            ],
        )
        .await
    {
        Ok(b) => b,
        Err(o) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                session,
                "Today's schedule",
                &problem(&o, &[]).1,
            );
        }
    };
    let people = entries(&found, "include");
    let visits = entries(&found, "match")
        .iter()
        .map(|a| {
            let pid = a
                .get("participant")
                .and_then(Value::as_array)
                .and_then(|ps| {
                    ps.iter()
                        .find_map(|p| view::ref_id(p, "/actor/reference", "Patient"))
                })
                .unwrap_or_default();
            let who = people
                .iter()
                .find(|p| text(p, "/id") == pid)
                .map(name)
                .unwrap_or_else(|| "A patient".into());
            Item {
                title: who,
                detail: text(a, "/status"),
                when: when(&text(a, "/start"), &session.zone),
                href: format!("/app/patients/{pid}"),
            }
        })
        .collect();
    let open_tasks = fhir
        .search(
            "Task",
            &[
                ("owner", &format!("Practitioner/{me}")),
                ("status", "requested"),
            ],
        )
        .await
        .map(|t| t.len())
        .unwrap_or(0);
    page(
        StatusCode::OK,
        &HomePage {
            shell: Shell::new(session, "Today's schedule", "Appointment,Task"),
            visits,
            open_tasks,
        },
    )
}

#[derive(Template)]
#[template(path = "patients.html", config = "src/web/templates/askama.toml")]
struct PatientsPage {
    shell: Shell,
    q: String,
    found: Vec<Item>,
}

/// `GET /app/patients?q=`: the patients the doctor may see, by name.
async fn patients(State(state): State<WebState>, session: Session, Query(q): Query<Q>) -> Response {
    if let Err(r) = practitioner(&session) {
        return *r;
    }
    let fhir = Fhir::new(&state.ctx, &session);
    let query = q.q.clone().unwrap_or_default();
    let mut params = vec![("_count", "50"), ("_sort", "family")];
    if !query.trim().is_empty() {
        params.push(("name", query.trim()));
    }
    let found = match fhir.search("Patient", &params).await {
        Ok(f) => f,
        Err(o) => {
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                &session,
                "Patients",
                &problem(&o, &[]).1,
            );
        }
    };
    page(
        StatusCode::OK,
        &PatientsPage {
            shell: Shell::new(&session, "Patients", ""),
            q: query,
            found: found
                .iter()
                .map(|p| Item {
                    title: name(p),
                    detail: text(p, "/gender"),
                    when: when(&text(p, "/birthDate"), &session.zone),
                    href: format!("/app/patients/{}", text(p, "/id")),
                })
                .collect(),
        },
    )
}

pub struct Vital {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub two: bool,
}

#[derive(Template)]
#[template(path = "chart.html", config = "src/web/templates/askama.toml")]
struct ChartPage {
    shell: Shell,
    entered: Entered,
    patient: String,
    born: String,
    problems: Vec<String>,
    medicines: Vec<Item>,
    timeline: Vec<Item>,
    charts: Vec<(&'static str, &'static str)>,
    vitals: Vec<Vital>,
    medicines_list: Vec<(&'static str, &'static str)>,
    pharmacies: Vec<(String, String)>,
    date: String,
    time: String,
    facts: Vec<(String, String)>,
}

/// `GET /app/patients/{id}`: the chart. A patient outside the doctor's care is not found.
async fn chart(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<Q>,
) -> Response {
    chart_page(&state, &session, &id, q.done.as_deref(), Entered::default()).await
}

/// What the doctor entered in the chart's forms, kept when it is refused, with the
/// problem beside its field (`medicine`, `dosage`, `note`).
#[derive(Default)]
pub struct Entered {
    pub medicine: String,
    pub dosage: String,
    pub note: String,
    pub errors: Vec<(&'static str, String)>,
}

impl Entered {
    fn error(field: &'static str, text: impl Into<String>, form: &Form) -> Entered {
        Entered {
            medicine: form.get("medicine").unwrap_or("").to_string(),
            dosage: form.get("dosage").unwrap_or("").to_string(),
            note: form.get("note").unwrap_or("").to_string(),
            errors: vec![(field, text.into())],
        }
    }

    /// The problem with `field`, if any.
    pub fn error_of(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, e)| e.as_str())
    }
}

async fn chart_page(
    state: &WebState,
    session: &Session,
    id: &str,
    done: Option<&str>,
    entered: Entered,
) -> Response {
    if let Err(r) = practitioner(session) {
        return *r;
    }
    let session = session.clone();
    let id = id.to_string();
    let fhir = Fhir::new(&state.ctx, &session);
    let Ok(p) = fhir.read("Patient", &id).await else {
        return super::not_found().await;
    };
    let subject = format!("Patient/{id}");
    let get = |t: &'static str, extra: Vec<(&'static str, String)>| {
        let subject = subject.clone();
        let fhir = &fhir;
        async move {
            let mut params: Vec<(&str, String)> =
                vec![("patient", subject), ("_count", "50".into())];
            params.extend(extra);
            let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            fhir.search(t, &refs).await.unwrap_or_default()
        }
    };
    let problems = get("Condition", vec![])
        .await
        .iter()
        .map(|c| concept(c.get("code")))
        .collect();
    let medicines = get("MedicationRequest", vec![("status", "active".into())])
        .await
        .iter()
        .map(|m| Item {
            title: concept(m.get("medicationCodeableConcept")),
            detail: text(m, "/dosageInstruction/0/text"),
            when: when(&text(m, "/authoredOn"), &session.zone),
            href: String::new(),
        })
        .collect();
    let mut timeline: Vec<(String, Item)> = Vec::new();
    for t in [
        "Encounter",
        "ClinicalImpression",
        "MedicationDispense",
        "Observation",
    ] {
        for r in get(t, vec![("_sort", "-_lastUpdated".into())]).await {
            let (date, title) = summary(t, &r);
            let title = match t {
                "ClinicalImpression" => format!("Note: {}", text(&r, "/summary")),
                "MedicationDispense" if text(&r, "/status") == "declined" => format!(
                    "{title} — held by the pharmacy: {}",
                    concept(r.get("statusReasonCodeableConcept"))
                ),
                _ => title,
            };
            let kind = match t {
                "Encounter" => "Visit",
                "ClinicalImpression" => "Note",
                "MedicationDispense" => "Pharmacy",
                _ => "Result",
            };
            timeline.push((
                date.clone(),
                Item {
                    title,
                    detail: kind.to_string(),
                    when: when(&date, &session.zone),
                    href: String::new(),
                },
            ));
        }
    }
    timeline.sort_by(|a, b| b.0.cmp(&a.0));
    let pharmacies = fhir
        .search(
            "Organization",
            &[("name:contains", "pharmacy"), ("_count", "20")],
        )
        .await
        .unwrap_or_default()
        .iter()
        .map(|o| (text(o, "/id"), text(o, "/name")))
        .collect();
    let facts = facts(
        &super::patient::with_names(&fhir, p.clone()).await,
        &session.zone,
    );
    let now = jiff::Timestamp::now().to_zoned(session.zone.clone());
    let shell = Shell::new(
        &session,
        &format!("Patients: {}", name(&p)),
        "Observation,MedicationRequest,MedicationDispense,Encounter",
    )
    .with_flash(view::flash(done));
    page(
        if entered.errors.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        },
        &ChartPage {
            shell,
            entered,
            patient: id.clone(),
            born: when(&text(&p, "/birthDate"), &session.zone),
            problems,
            medicines,
            timeline: timeline.into_iter().take(30).map(|(_, i)| i).collect(),
            charts: KINDS.iter().take(4).map(|k| (k.key, k.label)).collect(),
            vitals: KINDS
                .iter()
                .take(3)
                .map(|k| Vital {
                    key: k.key,
                    label: k.label,
                    unit: k.unit,
                    two: k.components.is_some(),
                })
                .collect(),
            medicines_list: MEDICINES.to_vec(),
            pharmacies,
            date: now.date().to_string(),
            time: now.time().strftime("%H:%M").to_string(),
            facts,
        },
    )
}

/// `POST /app/patients/{id}/prescribe`: a MedicationRequest with a coded medicine and a
/// dosage, to a pharmacy.
async fn prescribe(State(state): State<WebState>, Path(id): Path<String>, form: Form) -> Response {
    let session = &form.session;
    let me = match practitioner(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let chosen = form.get("medicine").unwrap_or("");
    let Some((code, display)) = MEDICINES
        .iter()
        .find(|(c, d)| *c == chosen || d.eq_ignore_ascii_case(chosen))
    else {
        let e = Entered::error("medicine", "Choose a medicine from the list.", &form);
        return chart_page(&state, session, &id, None, e).await;
    };
    let Some(dosage) = form.get("dosage").filter(|d| d.len() <= 500) else {
        let e = Entered::error(
            "dosage",
            "Write the dosage, such as \"1 tablet twice a day\".",
            &form,
        );
        return chart_page(&state, session, &id, None, e).await;
    };
    let mut rx = json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": code, "display": display}], "text": display},
        "subject": {"reference": format!("Patient/{id}")},
        "requester": {"reference": format!("Practitioner/{me}")},
        "authoredOn": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "dosageInstruction": [{"text": dosage}]});
    if let Some(ph) = form
        .get("pharmacy")
        .filter(|p| crate::fhir::types::is_valid_id(p))
    {
        super::fhir::set(
            &mut rx,
            "dispenseRequest",
            json!({"performer": {"reference": format!("Organization/{ph}")}}),
        );
    }
    let fhir = Fhir::new(&state.ctx, session);
    match fhir.create(rx).await {
        Ok(_) => see_other(&format!("/app/patients/{id}?done=prescribed")),
        Err(o) => {
            let (field, text) = problem(&o, &[("dosage", "dosage"), ("medication", "medicine")]);
            let e = Entered::error(field.unwrap_or("medicine"), text, &form);
            chart_page(&state, session, &id, None, e).await
        }
    }
}

/// `POST /app/patients/{id}/note`: a finished visit and its note (an Encounter and a
/// ClinicalImpression, in one transaction).
async fn note(State(state): State<WebState>, Path(id): Path<String>, form: Form) -> Response {
    let session = &form.session;
    let me = match practitioner(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some(summary) = form.get("note").filter(|n| n.len() <= 4000) else {
        let e = Entered::error("note", "Write the note (up to 4,000 characters).", &form);
        return chart_page(&state, session, &id, None, e).await;
    };
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let enc = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let entries = vec![
        json!({"fullUrl": enc, "request": {"method": "POST", "url": "Encounter"},
            "resource": {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
            "subject": {"reference": format!("Patient/{id}")},
            "participant": [{"individual": {"reference": format!("Practitioner/{me}")}}],
            "period": {"start": now, "end": now}}}),
        json!({"request": {"method": "POST", "url": "ClinicalImpression"},
            "resource": {"resourceType": "ClinicalImpression", "status": "completed",
            "subject": {"reference": format!("Patient/{id}")},
            "encounter": {"reference": enc},
            "assessor": {"reference": format!("Practitioner/{me}")},
            "date": now, "summary": summary}}),
    ];
    let fhir = Fhir::new(&state.ctx, session);
    match fhir.transaction(entries).await {
        Ok(_) => see_other(&format!("/app/patients/{id}?done=recorded")),
        Err(o) => {
            let e = Entered::error("note", problem(&o, &[]).1, &form);
            chart_page(&state, session, &id, None, e).await
        }
    }
}

#[derive(Template)]
#[template(path = "inbox.html", config = "src/web/templates/askama.toml")]
struct InboxPage {
    shell: Shell,
    messages: Vec<Item>,
    tasks: Vec<(String, Item)>,
}

async fn inbox(State(state): State<WebState>, session: Session, Query(q): Query<Q>) -> Response {
    let me = match practitioner(&session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, &session);
    let messages = fhir
        .search(
            "Communication",
            &[
                ("recipient", &format!("Practitioner/{me}")),
                ("_sort", "-sent"),
                ("_count", "50"),
            ],
        )
        .await
        .unwrap_or_default()
        .iter()
        .map(|c| Item {
            title: text(c, "/sender/display").or_if_empty("A patient"),
            detail: text(c, "/payload/0/contentString"),
            when: when(&text(c, "/sent"), &session.zone),
            href: view::ref_id(c, "/subject/reference", "Patient")
                .map(|p| format!("/app/patients/{p}"))
                .unwrap_or_default(),
        })
        .collect();
    let tasks = fhir
        .search(
            "Task",
            &[
                ("owner", &format!("Practitioner/{me}")),
                ("status", "requested"),
            ],
        )
        .await
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                text(t, "/id"),
                Item {
                    title: text(t, "/description"),
                    detail: String::new(),
                    when: when(&text(t, "/authoredOn"), &session.zone),
                    href: view::ref_id(t, "/for/reference", "Patient")
                        .map(|p| format!("/app/patients/{p}"))
                        .unwrap_or_default(),
                },
            )
        })
        .collect();
    page(
        StatusCode::OK,
        &InboxPage {
            shell: Shell::new(&session, "Inbox", "Communication,Task")
                .with_flash(view::flash(q.done.as_deref())),
            messages,
            tasks,
        },
    )
}

/// `POST /app/inbox/task/{id}`: approve (completed) or decline (rejected) a refill request.
async fn answer_task(
    State(state): State<WebState>,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    let session = &form.session;
    if let Err(r) = practitioner(session) {
        return *r;
    }
    let status = if form.get("decision") == Some("approve") {
        "completed"
    } else {
        "rejected"
    };
    let fhir = Fhir::new(&state.ctx, session);
    let result = async {
        let mut t = fhir.read("Task", &id).await?;
        super::fhir::set(&mut t, "status", json!(status));
        fhir.update(t).await
    }
    .await;
    match result {
        Ok(_) => see_other("/app/inbox?done=updated"),
        Err(o) => message(
            StatusCode::UNPROCESSABLE_ENTITY,
            session,
            "Not updated",
            &problem(&o, &[]).1,
        ),
    }
}

pub struct Availability {
    pub id: String,
    pub title: String,
    pub days: Vec<(&'static str, &'static str, bool)>,
    pub start: String,
    pub end: String,
}

#[derive(Template)]
#[template(path = "availability.html", config = "src/web/templates/askama.toml")]
struct AvailabilityPage {
    shell: Shell,
    schedules: Vec<Availability>,
}

const DAYS: [(&str, &str); 7] = [
    ("mon", "Monday"),
    ("tue", "Tuesday"),
    ("wed", "Wednesday"),
    ("thu", "Thursday"),
    ("fri", "Friday"),
    ("sat", "Saturday"),
    ("sun", "Sunday"),
];

fn availability_parts(s: &Value) -> Vec<Value> {
    s.get("extension")
        .and_then(Value::as_array)
        .and_then(|es| {
            es.iter()
                .find(|e| text(e, "/url") == crate::interaction::scheduling::AVAILABILITY_URL)
        })
        .and_then(|e| e.get("extension"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

async fn availability(
    State(state): State<WebState>,
    session: Session,
    Query(q): Query<Q>,
) -> Response {
    let me = match practitioner(&session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, &session);
    let schedules = fhir
        .search("Schedule", &[("actor", &format!("Practitioner/{me}"))])
        .await
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let parts = availability_parts(s);
            let windows: Vec<&Value> = parts
                .iter()
                .filter(|p| text(p, "/url") == "available")
                .collect();
            let days: Vec<String> = windows
                .iter()
                .flat_map(|w| {
                    w.get("extension")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter(|p| text(p, "/url") == "daysOfWeek")
                .map(|p| text(&p, "/valueCode"))
                .collect();
            let part = |name: &str, pick: fn(Vec<String>) -> Option<String>| {
                pick(
                    windows
                        .iter()
                        .flat_map(|w| {
                            w.get("extension")
                                .and_then(Value::as_array)
                                .cloned()
                                .unwrap_or_default()
                        })
                        .filter(|p| text(p, "/url") == name)
                        .map(|p| text(&p, "/valueTime"))
                        .collect(),
                )
                .unwrap_or_default()
            };
            Availability {
                id: text(s, "/id"),
                title: concept(s.pointer("/specialty/0")).or_if_empty("Schedule"),
                days: DAYS
                    .iter()
                    .map(|(c, l)| (*c, *l, days.iter().any(|d| d == c)))
                    .collect(),
                start: part("start", |v| v.into_iter().min())
                    .chars()
                    .take(5)
                    .collect(),
                end: part("end", |v| v.into_iter().max())
                    .chars()
                    .take(5)
                    .collect(),
            }
        })
        .collect();
    page(
        StatusCode::OK,
        &AvailabilityPage {
            shell: Shell::new(&session, "Availability", "Schedule")
                .with_flash(view::flash(q.done.as_deref())),
            schedules,
        },
    )
}

/// `POST /app/availability`: the schedule's working days and hours (one window a day).
async fn save_availability(State(state): State<WebState>, form: Form) -> Response {
    let session = &form.session;
    if let Err(r) = practitioner(session) {
        return *r;
    }
    let Some(id) = form.get("schedule") else {
        return super::not_found().await;
    };
    let (Some(start), Some(end)) = (form.get("start"), form.get("end")) else {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            session,
            "Not saved",
            "Give the start and end of the working hours.",
        );
    };
    let days: Vec<&str> = DAYS
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| form.get(&format!("day-{c}")).is_some())
        .collect();
    let fhir = Fhir::new(&state.ctx, session);
    let result = async {
        let mut s = fhir.read("Schedule", id).await?;
        let mut parts: Vec<Value> = availability_parts(&s)
            .into_iter()
            .filter(|p| text(p, "/url") != "available")
            .collect();
        if !days.is_empty() {
            let mut window: Vec<Value> = days
                .iter()
                .map(|d| json!({"url": "daysOfWeek", "valueCode": d}))
                .collect();
            window.push(json!({"url": "start", "valueTime": format!("{start}:00")}));
            window.push(json!({"url": "end", "valueTime": format!("{end}:00")}));
            parts.push(json!({"url": "available", "extension": window}));
        }
        let mut others: Vec<Value> = s
            .get("extension")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| text(e, "/url") != crate::interaction::scheduling::AVAILABILITY_URL)
            .collect();
        others.push(
            json!({"url": crate::interaction::scheduling::AVAILABILITY_URL, "extension": parts}),
        );
        super::fhir::set(&mut s, "extension", json!(others));
        fhir.update(s).await
    }
    .await;
    match result {
        Ok(_) => see_other("/app/availability?done=saved"),
        Err(o) => message(
            StatusCode::UNPROCESSABLE_ENTITY,
            session,
            "Not saved",
            &problem(&o, &[]).1,
        ),
    }
}
