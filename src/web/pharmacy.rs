//! The pharmacist's pages: the queue of prescriptions to fill (those the pharmacy's reach
//! shows: sent to it, or to no pharmacy), one prescription with the patient's medication
//! history and allergies beside it, dispensing (a MedicationDispense), and sending an issue
//! back to the prescriber (a dispense declined with its reason, which the prescriber's chart
//! shows).

use super::fhir::{Fhir, entries, problem};
use super::patient::Item;
use super::session::{Form, Session};
use super::view::{self, Shell, concept, name, text, when};
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
        .route("/app/rx/{id}", get(prescription))
        .route("/app/rx/{id}/dispense", post(dispense))
        .route("/app/rx/{id}/issue", post(issue))
}

fn pharmacist(session: &Session) -> Result<Option<String>, Box<Response>> {
    match session.role() {
        Some(Role::Pharmacist) => Ok(session.own("Practitioner").map(str::to_string)),
        _ => Err(Box::new(message(
            StatusCode::NOT_FOUND,
            session,
            "Not found",
            "This page is for pharmacists.",
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Done {
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "pharmacy_home.html", config = "src/web/templates/askama.toml")]
struct QueuePage {
    shell: Shell,
    queue: Vec<Item>,
    done_list: Vec<Item>,
}

pub async fn home(state: &WebState, session: &Session) -> Response {
    if let Err(r) = pharmacist(session) {
        return *r;
    }
    home_page(state, session, None).await
}

async fn home_page(state: &WebState, session: &Session, done: Option<&str>) -> Response {
    let fhir = Fhir::new(&state.ctx, session);
    let found = match fhir
        .search_bundle(
            "MedicationRequest",
            &[
                ("status", "active"),
                ("_sort", "-authoredon"),
                ("_count", "100"),
                ("_include", "MedicationRequest:subject"),
            ],
        )
        .await
    {
        Ok(b) => b,
        Err(o) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                session,
                "Prescriptions to fill",
                &problem(&o, &[]).1,
            );
        }
    };
    let dispensed: Vec<String> = fhir
        .search("MedicationDispense", &[("_count", "500")])
        .await
        .unwrap_or_default()
        .iter()
        .filter(|d| matches!(text(d, "/status").as_str(), "completed" | "declined"))
        .filter_map(|d| {
            view::ref_id(
                d,
                "/authorizingPrescription/0/reference",
                "MedicationRequest",
            )
        })
        .collect();
    let people = entries(&found, "include");
    let mut queue = Vec::new();
    let mut done_list = Vec::new();
    for rx in entries(&found, "match") {
        let id = text(&rx, "/id");
        let pid = view::ref_id(&rx, "/subject/reference", "Patient").unwrap_or_default();
        let who = people
            .iter()
            .find(|p| text(p, "/id") == pid)
            .map(name)
            .unwrap_or_default();
        let item = Item {
            title: concept(rx.get("medicationCodeableConcept")),
            detail: who,
            when: when(&text(&rx, "/authoredOn"), &session.zone),
            href: format!("/app/rx/{id}"),
        };
        if dispensed.contains(&id) {
            done_list.push(item);
        } else {
            queue.push(item);
        }
    }
    page(
        StatusCode::OK,
        &QueuePage {
            shell: Shell::new(
                session,
                "Prescriptions to fill",
                "MedicationRequest,MedicationDispense",
            )
            .with_flash(view::flash(done)),
            queue,
            done_list,
        },
    )
}

#[derive(Template)]
#[template(path = "prescription.html", config = "src/web/templates/askama.toml")]
struct RxPage {
    shell: Shell,
    id: String,
    patient: String,
    medicine: String,
    dosage: String,
    prescribed: String,
    history: Vec<Item>,
    allergies: Vec<String>,
    dispensed: bool,
}

async fn prescription(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
    Query(d): Query<Done>,
) -> Response {
    if let Err(r) = pharmacist(&session) {
        return *r;
    }
    let fhir = Fhir::new(&state.ctx, &session);
    let Ok(rx) = fhir.read("MedicationRequest", &id).await else {
        return super::not_found().await;
    };
    let pid = view::ref_id(&rx, "/subject/reference", "Patient").unwrap_or_default();
    let patient = fhir
        .read("Patient", &pid)
        .await
        .map(|p| name(&p))
        .unwrap_or_default();
    let subject = format!("Patient/{pid}");
    let mut history: Vec<(String, Item)> = Vec::new();
    for t in ["MedicationDispense", "MedicationRequest"] {
        for r in fhir
            .search(t, &[("patient", &subject), ("_count", "100")])
            .await
            .unwrap_or_default()
        {
            let (date, title) = super::patient::summary(t, &r);
            history.push((
                date.clone(),
                Item {
                    title,
                    detail: if t == "MedicationDispense" {
                        format!("dispensed ({})", text(&r, "/status"))
                    } else {
                        format!("prescribed ({})", text(&r, "/status"))
                    },
                    when: when(&date, &session.zone),
                    href: String::new(),
                },
            ));
        }
    }
    history.sort_by(|a, b| b.0.cmp(&a.0));
    let allergies = fhir
        .search("AllergyIntolerance", &[("patient", &subject)])
        .await
        .unwrap_or_default()
        .iter()
        .map(|a| concept(a.get("code")))
        .collect();
    let dispensed = fhir
        .search(
            "MedicationDispense",
            &[("prescription", &format!("MedicationRequest/{id}"))],
        )
        .await
        .unwrap_or_default()
        .iter()
        .any(|d| matches!(text(d, "/status").as_str(), "completed" | "declined"));
    let medicine = concept(rx.get("medicationCodeableConcept"));
    page(
        StatusCode::OK,
        &RxPage {
            shell: Shell::new(
                &session,
                &format!("Prescriptions to fill: {medicine}"),
                "MedicationDispense",
            )
            .with_flash(view::flash(d.done.as_deref())),
            id,
            patient,
            medicine,
            dosage: text(&rx, "/dosageInstruction/0/text"),
            prescribed: when(&text(&rx, "/authoredOn"), &session.zone),
            history: history.into_iter().map(|(_, i)| i).collect(),
            allergies,
            dispensed,
        },
    )
}

/// The MedicationDispense of prescription `rx` with `status`.
fn dispense_of(rx: &Value, id: &str, me: Option<&str>, status: &str) -> Value {
    let mut d = json!({"resourceType": "MedicationDispense", "status": status,
        "medicationCodeableConcept": rx.get("medicationCodeableConcept").cloned().unwrap_or(json!({"text": "medicine"})),
        "subject": rx.get("subject").cloned().unwrap_or(Value::Null),
        "authorizingPrescription": [{"reference": format!("MedicationRequest/{id}")}]});
    if let Some(p) = me {
        super::fhir::set(
            &mut d,
            "performer",
            json!([{"actor": {"reference": format!("Practitioner/{p}")}}]),
        );
    }
    if let Some(dosage) = rx.get("dosageInstruction") {
        super::fhir::set(&mut d, "dosageInstruction", dosage.clone());
    }
    d
}

async fn dispense(State(state): State<WebState>, Path(id): Path<String>, form: Form) -> Response {
    let session = &form.session;
    let me = match pharmacist(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let fhir = Fhir::new(&state.ctx, session);
    let Ok(rx) = fhir.read("MedicationRequest", &id).await else {
        return super::not_found().await;
    };
    let quantity = form
        .get("quantity")
        .and_then(|q| q.parse::<u32>().ok())
        .filter(|q| (1..=1000).contains(q));
    let days = form
        .get("days")
        .and_then(|q| q.parse::<u32>().ok())
        .filter(|q| (1..=365).contains(q));
    let (Some(quantity), Some(days)) = (quantity, days) else {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            session,
            "Not dispensed",
            "Give the quantity (1–1000) and the days it lasts (1–365).",
        );
    };
    let mut d = dispense_of(&rx, &id, me.as_deref(), "completed");
    super::fhir::set(
        &mut d,
        "quantity",
        json!({"value": quantity, "unit": "tablet", "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm", "code": "TAB"}),
    );
    super::fhir::set(
        &mut d,
        "daysSupply",
        json!({"value": days, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}),
    );
    super::fhir::set(
        &mut d,
        "whenHandedOver",
        json!(
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        ),
    );
    match fhir.create(d).await {
        Ok(_) => see_other(&format!("/app/rx/{id}?done=dispensed")),
        Err(o) => message(
            StatusCode::UNPROCESSABLE_ENTITY,
            session,
            "Not dispensed",
            &problem(&o, &[]).1,
        ),
    }
}

async fn issue(State(state): State<WebState>, Path(id): Path<String>, form: Form) -> Response {
    let session = &form.session;
    let me = match pharmacist(session) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some(reason) = form.get("reason").filter(|r| r.len() <= 2000) else {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            session,
            "Not sent",
            "Say what the issue is.",
        );
    };
    let fhir = Fhir::new(&state.ctx, session);
    let Ok(rx) = fhir.read("MedicationRequest", &id).await else {
        return super::not_found().await;
    };
    let mut d = dispense_of(&rx, &id, me.as_deref(), "declined");
    super::fhir::set(
        &mut d,
        "statusReasonCodeableConcept",
        json!({"text": reason}),
    );
    super::fhir::set(&mut d, "note", json!([{"text": reason}]));
    super::fhir::set(
        &mut d,
        "whenPrepared",
        json!(
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        ),
    );
    match fhir.create(d).await {
        Ok(_) => see_other(&format!("/app/rx/{id}?done=flagged")),
        Err(o) => message(
            StatusCode::UNPROCESSABLE_ENTITY,
            session,
            "Not sent",
            &problem(&o, &[]).1,
        ),
    }
}
