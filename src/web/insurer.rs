//! The insurer's pages: the claims queue (queued first: a pend rule sent them for review),
//! one claim with its adjudication and EOBs, finishing a queued claim (the insurer's own
//! ClaimResponse, which the patient's bill then shows), and the members covered with a
//! coverage lookup — only the insurer's members, as the Guard's reach decides.

use super::fhir::{Fhir, entries, problem};
use super::patient::Item;
use super::session::{Form, Session};
use super::view::{
    self, OrIfEmpty, Shell, claim_total, concept, money_of, name, newest_response, text, when,
};
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
        .route("/app/claims/{id}", get(claim))
        .route("/app/claims/{id}/finish", post(finish))
        .route("/app/members", get(members))
}

fn insurer(session: &Session) -> Result<(), Box<Response>> {
    match session.role() {
        Some(Role::Insurer) => Ok(()),
        _ => Err(Box::new(message(
            StatusCode::NOT_FOUND,
            session,
            "Not found",
            "This page is for insurers.",
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Q {
    q: Option<String>,
    done: Option<String>,
}

pub struct Row {
    pub item: Item,
    pub state: &'static str,
    pub queued: bool,
}

#[derive(Template)]
#[template(path = "insurer_home.html", config = "src/web/templates/askama.toml")]
struct QueuePage {
    shell: Shell,
    rows: Vec<Row>,
}

pub async fn home(state: &WebState, session: &Session) -> Response {
    if let Err(r) = insurer(session) {
        return *r;
    }
    let fhir = Fhir::new(&state.ctx, session);
    let found = match fhir
        .search_bundle(
            "Claim",
            &[
                ("_sort", "-created"),
                ("_count", "100"),
                ("_include", "Claim:patient"),
            ],
        )
        .await
    {
        Ok(b) => b,
        Err(o) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                session,
                "Claims to review",
                &problem(&o, &[]).1,
            );
        }
    };
    let responses = fhir
        .search("ClaimResponse", &[("_count", "500")])
        .await
        .unwrap_or_default();
    let people = entries(&found, "include");
    let mut rows: Vec<Row> = entries(&found, "match")
        .iter()
        .map(|c| {
            let id = text(c, "/id");
            let cr = newest_response(&responses, &id);
            let (state, queued) = match cr.map(|r| text(r, "/outcome")).as_deref() {
                Some("queued") => ("Waiting for review", true),
                Some("complete") => ("Finished", false),
                Some("partial") => ("Partly paid", false),
                Some("error") => ("Refused", false),
                _ => ("Not adjudicated", true),
            };
            let pid = view::ref_id(c, "/patient/reference", "Patient").unwrap_or_default();
            Row {
                item: Item {
                    title: concept(c.pointer("/item/0/productOrService")),
                    detail: people
                        .iter()
                        .find(|p| text(p, "/id") == pid)
                        .map(name)
                        .unwrap_or_default(),
                    when: when(&text(c, "/created"), &session.zone),
                    href: format!("/app/claims/{id}"),
                },
                state,
                queued,
            }
        })
        .collect();
    rows.sort_by_key(|r| !r.queued);
    page(
        StatusCode::OK,
        &QueuePage {
            shell: Shell::new(session, "Claims to review", "Claim,ClaimResponse"),
            rows,
        },
    )
}

pub struct ClaimItem {
    pub sequence: i64,
    pub service: String,
    pub charged: String,
    pub net: String,
}

#[derive(Template)]
#[template(path = "claim.html", config = "src/web/templates/askama.toml")]
struct ClaimPage {
    shell: Shell,
    id: String,
    patient: String,
    items: Vec<ClaimItem>,
    adjudication: Vec<(String, String)>,
    outcome: String,
    queued: bool,
    eobs: Vec<Item>,
}

async fn claim(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<Q>,
) -> Response {
    if let Err(r) = insurer(&session) {
        return *r;
    }
    let fhir = Fhir::new(&state.ctx, &session);
    let Ok(c) = fhir.read("Claim", &id).await else {
        return super::not_found().await;
    };
    let responses = fhir
        .search("ClaimResponse", &[("request", &format!("Claim/{id}"))])
        .await
        .unwrap_or_default();
    let cr = newest_response(&responses, &id);
    let pid = view::ref_id(&c, "/patient/reference", "Patient").unwrap_or_default();
    let patient = fhir
        .read("Patient", &pid)
        .await
        .map(|p| name(&p))
        .unwrap_or_default();
    let items = c
        .get("item")
        .and_then(Value::as_array)
        .map(|is| {
            is.iter()
                .map(|i| ClaimItem {
                    sequence: i.get("sequence").and_then(Value::as_i64).unwrap_or(0),
                    service: concept(i.get("productOrService")),
                    charged: money_of(i.get("net")),
                    net: i
                        .pointer("/net/value")
                        .map(Value::to_string)
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let adjudication = cr
        .and_then(|r| r.get("total").and_then(Value::as_array))
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        category_words(&text(t, "/category/coding/0/code")),
                        money_of(t.get("amount")),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let outcome = cr
        .map(|r| text(r, "/outcome"))
        .unwrap_or_else(|| "none".into());
    let eobs = fhir
        .search("ExplanationOfBenefit", &[("claim", &format!("Claim/{id}"))])
        .await
        .unwrap_or_default()
        .iter()
        .map(|e| Item {
            title: format!(
                "Explanation of benefits: paid {}",
                money_of(claim_total(e, "benefit"))
            ),
            detail: format!(
                "member pays {}",
                money_of(claim_total(e, "memberliability"))
            ),
            when: when(&text(e, "/created"), &session.zone),
            href: String::new(),
        })
        .collect();
    page(
        StatusCode::OK,
        &ClaimPage {
            shell: Shell::new(
                &session,
                &format!("Claims to review: {patient}"),
                "ClaimResponse",
            )
            .with_flash(view::flash(q.done.as_deref())),
            queued: outcome == "queued" || cr.is_none(),
            id,
            patient,
            items,
            adjudication,
            outcome,
            eobs,
        },
    )
}

fn category_words(code: &str) -> String {
    match code {
        "submitted" => "Charged",
        "eligible" => "Allowed",
        "deductible" => "Deductible",
        "copay" => "Copay",
        "coinsurance" => "Coinsurance",
        "benefit" => "Insurer pays",
        "memberliability" => "Member pays",
        other => other,
    }
    .to_string()
}

/// `POST /app/claims/{id}/finish`: the insurer's ClaimResponse for a queued claim — per item,
/// what the insurer pays; the member pays the rest.
async fn finish(State(state): State<WebState>, Path(id): Path<String>, form: Form) -> Response {
    let session = &form.session;
    if let Err(r) = insurer(session) {
        return *r;
    }
    let fhir = Fhir::new(&state.ctx, session);
    let Ok(c) = fhir.read("Claim", &id).await else {
        return super::not_found().await;
    };
    let responses = fhir
        .search("ClaimResponse", &[("request", &format!("Claim/{id}"))])
        .await
        .unwrap_or_default();
    let insurer_ref = newest_response(&responses, &id)
        .and_then(|r| r.get("insurer").cloned())
        .or_else(|| c.get("insurer").cloned())
        .unwrap_or(json!({"display": "Insurer"}));
    let adj = "http://terminology.hl7.org/CodeSystem/adjudication";
    let carin = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication";
    let line = |system: &str, code: &str, value: rust_decimal::Decimal, currency: &str| json!({"category": {"coding": [{"system": system, "code": code}]}, "amount": {"value": super::fhir::decimal(money2(value)), "currency": currency}});
    let mut items = Vec::new();
    let (mut submitted, mut benefit, mut member) = (
        rust_decimal::Decimal::ZERO,
        rust_decimal::Decimal::ZERO,
        rust_decimal::Decimal::ZERO,
    );
    let mut currency = "USD".to_string();
    for i in c
        .get("item")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let seq = i.get("sequence").and_then(Value::as_i64).unwrap_or(0);
        let charged: rust_decimal::Decimal = i
            .pointer("/net/value")
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or_default();
        currency = text(i, "/net/currency").or_if_empty("USD");
        let Some(pays) = form
            .get(&format!("pays-{seq}"))
            .and_then(|v| {
                v.replace(['$', ','], "")
                    .parse::<rust_decimal::Decimal>()
                    .ok()
            })
            .filter(|v| !v.is_sign_negative() && *v <= charged)
        else {
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                session,
                "Not finished",
                "For each item, enter what the insurer pays: from 0 up to what was charged.",
            );
        };
        let pays = pays.round_dp(2);
        submitted += charged;
        benefit += pays;
        member += charged - pays;
        items.push(json!({"itemSequence": seq, "adjudication": [
            line(adj, "submitted", charged, &currency), line(adj, "benefit", pays, &currency),
            line(carin, "memberliability", charged - pays, &currency)]}));
    }
    let cr = json!({"resourceType": "ClaimResponse", "status": "active",
        "type": c.get("type").cloned().unwrap_or(json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]})),
        "use": "claim",
        "patient": c.get("patient").cloned().unwrap_or(Value::Null),
        "created": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "insurer": insurer_ref,
        "request": {"reference": format!("Claim/{id}")},
        "outcome": "complete",
        "disposition": form.get("note").unwrap_or("Reviewed and finished"),
        "item": items,
        "total": [line(adj, "submitted", submitted, &currency), line(adj, "benefit", benefit, &currency),
            line(carin, "memberliability", member, &currency)]});
    match fhir.create(cr).await {
        Ok(_) => see_other(&format!("/app/claims/{id}?done=finished")),
        Err(o) => message(
            StatusCode::UNPROCESSABLE_ENTITY,
            session,
            "Not finished",
            &problem(&o, &[]).1,
        ),
    }
}

/// An amount with two decimals (USD cents), as ClaimResponses carry it.
fn money2(value: rust_decimal::Decimal) -> rust_decimal::Decimal {
    let mut v = value.round_dp(2);
    v.rescale(2);
    v
}

#[derive(Template)]
#[template(path = "members.html", config = "src/web/templates/askama.toml")]
struct MembersPage {
    shell: Shell,
    q: String,
    members: Vec<Item>,
}

/// `GET /app/members[?q=name]`: the coverages of the insurer's members, by name.
async fn members(State(state): State<WebState>, session: Session, Query(q): Query<Q>) -> Response {
    if let Err(r) = insurer(&session) {
        return *r;
    }
    let fhir = Fhir::new(&state.ctx, &session);
    let query = q.q.clone().unwrap_or_default();
    let mut params = vec![("_count", "100"), ("_include", "Coverage:beneficiary")];
    if !query.trim().is_empty() {
        params.push(("beneficiary:Patient.name", query.trim()));
    }
    let found = match fhir.search_bundle("Coverage", &params).await {
        Ok(b) => b,
        Err(o) => {
            return message(
                StatusCode::UNPROCESSABLE_ENTITY,
                &session,
                "Members",
                &problem(&o, &[]).1,
            );
        }
    };
    let people = entries(&found, "include");
    let members = entries(&found, "match")
        .iter()
        .map(|c| {
            let pid = view::ref_id(c, "/beneficiary/reference", "Patient").unwrap_or_default();
            Item {
                title: people
                    .iter()
                    .find(|p| text(p, "/id") == pid)
                    .map(name)
                    .unwrap_or_default(),
                detail: format!(
                    "{} — {}",
                    text(c, "/class/0/name").or_if_empty("plan"),
                    text(c, "/status")
                ),
                when: when(&text(c, "/period/start"), &session.zone),
                href: String::new(),
            }
        })
        .collect();
    page(
        StatusCode::OK,
        &MembersPage {
            shell: Shell::new(&session, "Members", "Coverage"),
            q: query,
            members,
        },
    )
}
