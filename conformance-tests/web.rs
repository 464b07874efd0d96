//! The web app over HTTP, on both databases: signing in through the server's own
//! authorization server, the session's cookies and headers, CSRF, sign-out and idle expiry,
//! live updates confined by the Guard. Every page for every role is the web row of the
//! access matrix (`access_matrix::web_pages_follow_the_roles`); the journeys in a real
//! browser are in `web_browser.rs`.

use crate::common::secure::{SecureServer, start_secure_with};
use crate::common::web::{Web, demo_world};
use crate::common::{Backend, Server};
use crate::secure_backends;
use healporium::app::AppOptions;
use serde_json::{Value, json};
use std::time::Duration;

secure_backends!(
    signing_in_makes_a_guarded_session,
    forms_without_the_csrf_token_change_nothing,
    signing_out_revokes_the_tokens,
    a_patient_cannot_reach_another_patients_pages,
    health_log_entries_are_coded_observations,
    live_updates_tell_only_what_the_session_may_read,
    finance_journey_over_http,
    a_caregiver_acts_only_for_the_person_they_care_for,
    refill_requests_and_messages_reach_the_doctor,
    phone_and_watch_exports_are_imported_once,
    staff_forms_answer_beside_the_field,
    the_administrator_manages_accounts_and_apps,
    dates_show_in_the_chosen_zone,
);

/// Sign-in: `/` leads to the app, the app to the sign-in page of the authorization server, and
/// back with a session held in HttpOnly, SameSite cookies on `/app` only; every page has a
/// CSP without inline script; the consent page is skipped for the server's own app only.
async fn signing_in_makes_a_guarded_session(s: SecureServer) {
    demo_world(&s).await;
    let origin = s.origin();
    let web = Web::new(&origin);
    let root = web.get("/").await;
    assert_eq!(root.status, 303);
    assert_eq!(root.location(), "/app/");
    let app = web.get("/app/").await;
    assert_eq!(app.location(), "/app/signin");
    let start = web.get("/app/signin").await;
    let authorize = start.location().to_string();
    assert!(
        authorize.starts_with(&format!("{origin}/auth/authorize?")),
        "{authorize}"
    );
    for part in [
        "client_id=healporium-web",
        "code_challenge_method=S256",
        "redirect_uri=http%3A%2F%2F127.0.0.1",
    ] {
        assert!(authorize.contains(part), "{part} in {authorize}");
    }
    let flow = start
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        flow.contains("HttpOnly") && flow.contains("SameSite=Lax") && flow.contains("Path=/app"),
        "{flow}"
    );

    let web = Web::sign_in(&origin, "alice").await;
    let home = web.get("/app/").await;
    assert_eq!(home.status, 200);
    assert!(
        home.text.contains("Next appointment") && home.text.contains("$640.00"),
        "{}",
        home.text
    );
    let csp = home
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(home.headers.get("cache-control").unwrap(), "no-store");
    assert_eq!(home.headers.get("x-frame-options").unwrap(), "DENY");
    // the session's token is alice's, for the web client, confined to her record
    let token = web.cookie("hp_at").unwrap();
    let mine = Server::at(&s.base).with_token(&token);
    mine.get("Patient/demo-alice").await.expect(200);
    mine.get("Patient/demo-bob").await.expect(404);
    // the script and style are files
    let js = web.get("/app/static/app.js").await;
    assert_eq!(js.status, 200);
    assert!(
        js.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(web.get("/app/static/nothing.js").await.status, 404);
    // a page outside the app's routes is a page, not JSON
    let missing = web.get("/app/no/such/page").await;
    assert_eq!(missing.status, 404);
    assert!(missing.text.contains("<h1>Not found</h1>"));
    // another app still gets the consent page, which says in words what each scope grants
    let app_id = s.add_public_app().await;
    let other = Web::new(&origin);
    let authorize = format!(
        "/auth/authorize?response_type=code&client_id={app_id}&redirect_uri={}&scope={}&state=s&aud={}&code_challenge={}&code_challenge_method=S256",
        "http%3A%2F%2Flocalhost%3A9999%2Fcallback",
        "openid%20patient%2FObservation.rs%20patient%2FAccount.r",
        s.base.replace(':', "%3A").replace('/', "%2F"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    let login = other.get(&authorize).await;
    assert_eq!(login.status, 200, "{}", login.text);
    let consent = other
        .post(
            "/auth/login",
            &[
                ("request", &login.field("request")),
                ("username", "alice"),
                ("password", crate::common::secure::PASSWORD),
            ],
        )
        .await;
    assert_eq!(consent.status, 200, "{}", consent.text);
    for words in [
        "See and search your results, vital signs and health logs",
        "See your accounts and credit lines",
        "Know who you are",
    ] {
        assert!(consent.text.contains(words), "{words}: {}", consent.text);
    }
}

/// A form posted without the CSRF token, or with another session's, is refused (403) and
/// writes nothing.
async fn forms_without_the_csrf_token_change_nothing(s: SecureServer) {
    demo_world(&s).await;
    let origin = s.origin();
    let alice = Web::sign_in(&origin, "alice").await;
    let bob = Web::sign_in(&origin, "bob").await;
    let admin = s.admin().await;
    let count = || async {
        admin
            .get("Observation?code=http://loinc.org|29463-7&_summary=count")
            .await
            .json()["total"]
            .as_u64()
            .unwrap()
    };
    let before = count().await;
    let entry = [
        ("kind", "weight"),
        ("value", "72.5"),
        ("date", "2026-12-01"),
        ("time", "08:00"),
    ];
    let none = alice.post("/app/health/log", &entry).await;
    assert_eq!(none.status, 403, "{}", none.text);
    let bobs = bob.get("/app/health").await.field("csrf");
    let mut forged = vec![("csrf", bobs.as_str())];
    forged.extend_from_slice(&entry);
    assert_eq!(alice.post("/app/health/log", &forged).await.status, 403);
    assert_eq!(count().await, before);
    // with her own token it is written
    let ok = alice.submit("/app/health", "/app/health/log", &entry).await;
    assert_eq!(ok.status, 303, "{}", ok.text);
    assert_eq!(count().await, before + 1);
}

/// Dates show in the person's zone: set by the script from the browser, or by the form at
/// the foot of every page without it.
async fn dates_show_in_the_chosen_zone(s: SecureServer) {
    demo_world(&s).await;
    let alice = Web::sign_in(&s.origin(), "alice").await;
    // alice's visit was at 09:00 UTC on 10 Jan 2026
    assert!(
        alice
            .get("/app/records")
            .await
            .text
            .contains("Sat 10 Jan 2026, 09:00")
    );
    let set = alice
        .submit("/app/", "/app/zone", &[("zone", "America/New_York")])
        .await;
    assert_eq!(set.location(), "/app/?done=zone");
    assert!(
        alice
            .get("/app/records")
            .await
            .text
            .contains("Sat 10 Jan 2026, 04:00")
    );
    let bad = alice
        .submit("/app/", "/app/zone", &[("zone", "Mars/Olympus")])
        .await;
    assert_eq!(bad.status, 422);
    assert!(
        alice
            .get("/app/")
            .await
            .text
            .contains("value=\"America/New_York\"")
    );
}

/// Signing out revokes the access and refresh tokens: the old cookie no longer opens a page
/// nor the FHIR API. An idle session ends with its token; an active one is refreshed.
async fn signing_out_revokes_the_tokens(s: SecureServer) {
    demo_world(&s).await;
    let origin = s.origin();
    let web = Web::sign_in(&origin, "alice").await;
    let token = web.cookie("hp_at").unwrap();
    let out = web.submit("/app/", "/app/signout", &[]).await;
    assert_eq!(out.status, 200);
    assert!(out.text.contains("You are signed out"));
    assert!(web.cookie("hp_at").is_none());
    web.set_cookie("hp_at", &token);
    assert_eq!(web.get("/app/").await.location(), "/app/signin");
    Server::at(&s.base)
        .with_token(&token)
        .get("Patient/demo-alice")
        .await
        .expect(401);
}

/// Idle sessions expire: with 4-second tokens, a page loaded in the second half of a token's
/// life refreshes it (a new cookie), and a session left alone longer than a lifetime ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_and_active_ones_are_refreshed() {
    let mut options = AppOptions::default();
    options.smart.access_token_ttl_secs = 4;
    let s = start_secure_with(Backend::Sqlite, options).await.unwrap();
    demo_world(&s).await;
    let web = Web::sign_in(&s.origin(), "alice").await;
    let first = web.cookie("hp_at").unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(web.get("/app/").await.status, 200);
    let second = web.cookie("hp_at").unwrap();
    assert_ne!(first, second, "an active session gets a fresh token");
    tokio::time::sleep(Duration::from_millis(5600)).await;
    assert_eq!(
        web.get("/app/").await.location(),
        "/app/signin",
        "an idle session ends"
    );
}

/// Editing a URL reaches nothing of another patient: records, charts, bills and the
/// appointment and refill forms answer "not found" and change nothing.
async fn a_patient_cannot_reach_another_patients_pages(s: SecureServer) {
    demo_world(&s).await;
    let alice = Web::sign_in(&s.origin(), "alice").await;
    for page in [
        "/app/records/Observation/demo-bob-hr",
        "/app/records/Encounter/demo-bob-visit",
        "/app/records/Patient/demo-bob",
        "/app/health/chart.svg?kind=hr&patient=demo-bob",
    ] {
        let got = alice.get(page).await;
        if page.contains("chart.svg") {
            // a patient's chart is always her own: the patient parameter is ignored
            assert!(!got.text.contains("72 beats/min on"), "{page}");
        } else {
            assert_eq!(got.status, 404, "{page}");
            assert!(!got.text.contains("Meyer"), "{page}");
        }
    }
    let bob_rx = s
        .admin()
        .await
        .post("MedicationRequest", &json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": "bob's medicine"}, "subject": {"reference": "Patient/demo-bob"}}))
        .await
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        alice
            .submit("/app/", &format!("/app/refill/{bob_rx}"), &[])
            .await
            .status,
        404
    );
    let bill = s
        .admin()
        .await
        .get("Claim?patient=Patient/demo-bob")
        .await
        .json()["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        alice.get(&format!("/app/bills/{bill}/defer")).await.status,
        404
    );
    let tasks = s.admin().await.get("Task?_summary=count").await.json()["total"]
        .as_u64()
        .unwrap();
    assert_eq!(tasks, 0);
}

/// A weight and a blood pressure logged on the health page are vital-signs Observations
/// with LOINC codes and UCUM units, and the chart shows them; bad values are refused beside
/// their field.
async fn health_log_entries_are_coded_observations(s: SecureServer) {
    demo_world(&s).await;
    let alice = Web::sign_in(&s.origin(), "alice").await;
    let today = alice.get("/app/health").await.field("date");
    let w = alice
        .submit(
            "/app/health",
            "/app/health/log",
            &[
                ("kind", "weight"),
                ("value", "72.5"),
                ("date", &today),
                ("time", "00:00"),
            ],
        )
        .await;
    assert_eq!(w.status, 303, "{}", w.text);
    let bp = alice
        .submit(
            "/app/health",
            "/app/health/log",
            &[
                ("kind", "bp"),
                ("value", "128"),
                ("value2", "84"),
                ("date", &today),
                ("time", "00:01"),
            ],
        )
        .await;
    assert_eq!(bp.status, 303);
    let admin = s.admin().await;
    let weight = admin
        .get("Observation?code=http://loinc.org|29463-7&patient=Patient/demo-alice")
        .await
        .json();
    let o = &weight["entry"][0]["resource"];
    assert_eq!(o["valueQuantity"]["code"], "kg");
    assert_eq!(o["valueQuantity"]["value"].to_string(), "72.5");
    assert_eq!(
        o["meta"]["profile"][0],
        "http://hl7.org/fhir/StructureDefinition/vitalsigns"
    );
    assert_eq!(o["performer"][0]["reference"], "Patient/demo-alice");
    let bp = admin
        .get("Observation?code=http://loinc.org|85354-6&patient=Patient/demo-alice")
        .await
        .json();
    let comps = &bp["entry"][0]["resource"]["component"];
    assert_eq!(comps[0]["code"]["coding"][0]["code"], "8480-6");
    assert_eq!(comps[1]["valueQuantity"]["value"].to_string(), "84");
    let page = alice.get("/app/health?range=week").await.text;
    assert!(
        page.contains("Weight over the last week: 1 entry, from 72.5 to 72.5 kg"),
        "{page}"
    );
    let svg = alice
        .get("/app/health/chart.svg?kind=weight&range=week")
        .await;
    assert_eq!(
        svg.headers.get("content-type").unwrap(),
        "image/svg+xml; charset=utf-8"
    );
    assert!(
        svg.text.contains("<circle") && svg.text.contains("72.5 kg on"),
        "{}",
        svg.text
    );
    for (value, says) in [
        ("heavy", "as a number"),
        ("900", "between 0 and 500"),
        ("72.55", "at most 1 decimal"),
    ] {
        let bad = alice
            .submit(
                "/app/health",
                "/app/health/log",
                &[("kind", "weight"), ("value", value), ("date", &today)],
            )
            .await;
        assert_eq!(bad.status, 422, "{value}");
        assert!(
            bad.text.contains(says) && bad.text.contains("id=\"weight-error\""),
            "{value}: {}",
            bad.text
        );
        assert!(!bad.text.contains("OperationOutcome"));
    }
    // the doctor records vitals in the chart and sees the patient's log
    let smith = Web::sign_in(&s.origin(), "drsmith").await;
    let hr = smith
        .submit(
            "/app/patients/demo-alice",
            "/app/health/log",
            &[
                ("kind", "hr"),
                ("value", "66"),
                ("patient", "demo-alice"),
                ("date", &today),
                ("time", "00:02"),
            ],
        )
        .await;
    assert_eq!(hr.status, 303, "{}", hr.text);
    assert_eq!(hr.location(), "/app/patients/demo-alice?done=recorded");
    let svg = smith
        .get("/app/health/chart.svg?kind=weight&range=week&patient=demo-alice")
        .await;
    assert!(svg.text.contains("72.5 kg on"));
    let hidden = smith
        .get("/app/health/chart.svg?kind=hr&range=year&patient=demo-carol")
        .await;
    assert_eq!(hidden.status, 404);
}

/// Live updates: a stream watching Observations says `changed` when one the session may read
/// changes, and says nothing about other patients' — nor about types it does not watch.
async fn live_updates_tell_only_what_the_session_may_read(s: SecureServer) {
    demo_world(&s).await;
    let origin = s.origin();
    let alice = Web::sign_in(&origin, "alice").await;
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("{origin}/app/events?watch=Observation"))
        .header(
            "cookie",
            format!("hp_at={}", alice.cookie("hp_at").unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let admin = s.admin().await;
    let obs = |patient: &str| {
        json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": 70, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
    };
    admin
        .post("Observation", &obs("demo-bob"))
        .await
        .expect(201);
    admin
        .post(
            "Encounter",
            &json!({"resourceType": "Encounter", "status": "planned",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/demo-alice"}}),
        )
        .await
        .expect(201);
    let quiet = tokio::time::timeout(Duration::from_millis(2500), stream.chunk()).await;
    let said: String = match quiet {
        Ok(Ok(Some(b))) => String::from_utf8_lossy(&b).to_string(),
        _ => String::new(),
    };
    assert!(
        !said.contains("changed"),
        "bob's observation and an unwatched type said: {said}"
    );
    admin
        .post("Observation", &obs("demo-alice"))
        .await
        .expect(201);
    let mut got = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.contains("event: changed") && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Some(b))) = tokio::time::timeout(Duration::from_secs(3), stream.chunk()).await
        {
            got.push_str(&String::from_utf8_lossy(&b));
        }
    }
    assert!(got.contains("event: changed\ndata: Observation"), "{got}");
    // without a session there is no stream
    assert_eq!(
        client
            .get(format!("{origin}/app/events?watch=Observation"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // a session holds a bounded number of streams on a node (behind a round-robin proxy of
    // several nodes, the streams spread over them)
    if crate::common::test_nodes(s.backend) > 1 {
        return;
    }
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            client
                .get(format!("{origin}/app/events?watch=Observation"))
                .header(
                    "cookie",
                    format!("hp_at={}", alice.cookie("hp_at").unwrap()),
                )
                .send()
                .await
                .unwrap(),
        );
    }
    let over = client
        .get(format!("{origin}/app/events?watch=Observation"))
        .header(
            "cookie",
            format!("hp_at={}", alice.cookie("hp_at").unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 429);
}

/// The finance journey over HTTP: open a credit line, see the quote with its schedule, defer
/// alice's bill, pay the first installment with the demo card (refused with another card),
/// and the insurer finishing bob's queued claim changes what bob owes.
async fn finance_journey_over_http(s: SecureServer) {
    demo_world(&s).await;
    let origin = s.origin();
    let alice = Web::sign_in(&origin, "alice").await;
    let opened = alice
        .submit(
            "/app/bills",
            "/app/credit/apply",
            &[("limit", "1000"), ("requestId", "t1")],
        )
        .await;
    assert_eq!(
        opened.location(),
        "/app/bills?done=opened",
        "{}",
        opened.text
    );
    let admin = s.admin().await;
    let claim = admin.get("Claim?patient=Patient/demo-alice").await.json()["entry"][0]["resource"]
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    let quote = alice.get(&format!("/app/bills/{claim}/defer?term=6")).await;
    assert_eq!(quote.status, 200, "{}", quote.text);
    assert!(
        quote.text.contains("$106.67</strong> a month")
            && quote.text.contains("$640.00</strong> in all"),
        "{}",
        quote.text
    );
    assert_eq!(quote.text.matches("<tr><td>").count(), 6);
    let deferred = alice
        .submit(
            &format!("/app/bills/{claim}/defer"),
            &format!("/app/bills/{claim}/defer"),
            &[("term", "6"), ("requestId", "t2")],
        )
        .await;
    assert_eq!(
        deferred.location(),
        "/app/bills?done=deferred",
        "{}",
        deferred.text
    );
    let bills = alice.get("/app/bills").await.text;
    assert!(
        bills.contains("On your plan")
            && bills.contains("you owe <strong id=\"line-balance\">$640.00"),
        "{bills}"
    );
    assert!(
        bills.contains("What your insurer explained")
            && bills.contains("Billed $1,500.00. Your plan allows $1,200.00. Your insurer paid $560.00. Your share is $640.00"),
        "{bills}"
    );
    let statement = alice
        .submit("/app/bills", "/app/credit/statement", &[])
        .await;
    assert_eq!(statement.location(), "/app/bills?done=statement#plan");
    let bills = alice.get("/app/bills").await.text;
    assert!(bills.contains("Statement of"), "{bills}");
    let declined = alice
        .submit(
            "/app/bills",
            "/app/credit/pay",
            &[
                ("amount", "106.67"),
                ("card", "4000 0000 0000 0002"),
                ("requestId", "t3"),
            ],
        )
        .await;
    assert_eq!(declined.status, 422);
    // demo payments are off on this server: no payment is taken at all
    assert!(declined.text.contains("not set up"), "{}", declined.text);
    let line = admin
        .get("Account?patient=Patient/demo-alice&type=credit-line")
        .await
        .json();
    assert!(line["total"].as_u64().unwrap_or(1) >= 1);
    // bob's claim waits for review; the insurer finishes it and bob's bill changes
    let bob = Web::sign_in(&origin, "bob").await;
    assert!(
        bob.get("/app/bills")
            .await
            .text
            .contains("reviewing this claim")
    );
    let bob_claim =
        admin.get("Claim?patient=Patient/demo-bob").await.json()["entry"][0]["resource"]["id"]
            .as_str()
            .unwrap()
            .to_string();
    let insurer = Web::sign_in(&origin, "insurer").await;
    let queue = insurer.get("/app/").await.text;
    assert!(
        queue.find("Total knee replacement").unwrap() < queue.find("MRI brain").unwrap(),
        "queued first: {queue}"
    );
    let finished = insurer
        .submit(
            &format!("/app/claims/{bob_claim}"),
            &format!("/app/claims/{bob_claim}/finish"),
            &[("pays-1", "30000"), ("note", "ok")],
        )
        .await;
    assert_eq!(finished.status, 303, "{}", finished.text);
    let after = bob.get("/app/bills").await.text;
    assert!(
        after.contains("Your insurer paid $30,000.00. You owe $2,000.00."),
        "{after}"
    );
    let value: Value = admin
        .get(&format!(
            "ClaimResponse?request=Claim/{bob_claim}&outcome=complete"
        ))
        .await
        .json();
    assert_eq!(
        value["entry"][0]["resource"]["total"][2]["amount"]["value"].to_string(),
        "2000.00"
    );
}

/// With the demo processor (`--demo`), a card payment pays the installment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_card_payments_pay_installments() {
    let options = AppOptions {
        demo_payments: true,
        ..AppOptions::default()
    };
    let s = start_secure_with(Backend::Sqlite, options).await.unwrap();
    demo_world(&s).await;
    let alice = Web::sign_in(&s.origin(), "alice").await;
    alice
        .submit(
            "/app/bills",
            "/app/credit/apply",
            &[("limit", "1000"), ("requestId", "p1")],
        )
        .await;
    let admin = s.admin().await;
    let claim = admin.get("Claim?patient=Patient/demo-alice").await.json()["entry"][0]["resource"]
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    alice
        .submit(
            &format!("/app/bills/{claim}/defer"),
            &format!("/app/bills/{claim}/defer"),
            &[("term", "6"), ("requestId", "p2")],
        )
        .await;
    let declined = alice
        .submit(
            "/app/bills",
            "/app/credit/pay",
            &[
                ("amount", "106.67"),
                ("card", "4000 0000 0000 0002"),
                ("requestId", "p3"),
            ],
        )
        .await;
    assert!(declined.text.contains("declined"), "{}", declined.text);
    let paid = alice
        .submit(
            "/app/bills",
            "/app/credit/pay",
            &[
                ("amount", "106.67"),
                ("card", "4242 4242 4242 4242"),
                ("requestId", "p4"),
            ],
        )
        .await;
    assert_eq!(paid.location(), "/app/bills?done=paid", "{}", paid.text);
    let bills = alice.get("/app/bills").await.text;
    assert!(bills.contains("class=\"status-paid\">paid"), "{bills}");
    assert!(bills.contains("$533.33"), "{bills}");
    // recorded by the processor, not by alice's token
    let pr = admin.get("PaymentReconciliation").await.json();
    assert_eq!(pr["entry"].as_array().unwrap().len(), 1);
}

/// A caregiver (a patient-role account whose record is a RelatedPerson) signs in to the
/// record of the person they look after, confined like that patient's own token: nobody
/// else's record, and nothing once the RelatedPerson is no longer active.
async fn a_caregiver_acts_only_for_the_person_they_care_for(s: SecureServer) {
    demo_world(&s).await;
    let admin = s.admin().await;
    let mut rp = json!({"resourceType": "RelatedPerson", "id": "carol-parent", "active": true,
        "patient": {"reference": "Patient/demo-carol"},
        "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PRN"}]}],
        "name": [{"family": "Nguyen", "given": ["Linh"]}]});
    admin
        .put("RelatedPerson/carol-parent", &rp)
        .await
        .expect(201);
    s.add_user("linh", "patient", Some("RelatedPerson/carol-parent"))
        .await;
    let linh = Web::sign_in(&s.origin(), "linh").await;
    let home = linh.get("/app/").await.text;
    assert!(
        home.contains("You are looking after Carol Nguyen") && home.contains("caregiver"),
        "{home}"
    );
    assert_eq!(
        linh.get("/app/records/Observation/demo-carol-hr")
            .await
            .status,
        200
    );
    assert_eq!(
        linh.get("/app/records/Observation/demo-alice-hr")
            .await
            .status,
        404
    );
    let records = linh.get("/app/records").await.text;
    assert!(
        records.contains("Heart rate") && !records.contains("metformin"),
        "{records}"
    );
    // what the caregiver logs is the patient's, performed by the caregiver
    let today = linh.get("/app/health").await.field("date");
    let w = linh
        .submit(
            "/app/health",
            "/app/health/log",
            &[
                ("kind", "weight"),
                ("value", "31.5"),
                ("date", &today),
                ("time", "00:00"),
            ],
        )
        .await;
    assert_eq!(w.status, 303, "{}", w.text);
    let o = admin
        .get("Observation?code=http://loinc.org|29463-7&patient=Patient/demo-carol")
        .await
        .json();
    assert_eq!(
        o["entry"][0]["resource"]["performer"][0]["reference"],
        "RelatedPerson/carol-parent"
    );
    // the relationship ends: so does the access, at the next request
    rp["active"] = json!(false);
    admin
        .put("RelatedPerson/carol-parent", &rp)
        .await
        .expect(200);
    assert_eq!(
        linh.get("/app/records/Observation/demo-carol-hr")
            .await
            .status,
        404
    );
    // and signing in again gives no record at all
    let again = Web::new(&s.origin());
    let login = again.visit("/app/").await;
    let back = again
        .post(
            "/auth/login",
            &[
                ("request", &login.field("request")),
                ("username", "linh"),
                ("password", crate::common::secure::PASSWORD),
            ],
        )
        .await;
    let page = again.visit(back.location()).await;
    assert_eq!(page.status, 404, "{}", page.text);
}

/// A patient's refill request (a Task to the prescriber) and message reach the doctor's
/// inbox; the doctor approves the refill and the patient sees it.
async fn refill_requests_and_messages_reach_the_doctor(s: SecureServer) {
    demo_world(&s).await;
    let alice = Web::sign_in(&s.origin(), "alice").await;
    let rx = alice
        .get("/app/records/MedicationRequest/demo-alice-rx")
        .await;
    // references read as names: the prescriber, the clinic of a visit
    assert!(rx.text.contains("Dr. Dana Smith"), "{}", rx.text);
    let visit = alice
        .get("/app/records/Encounter/demo-alice-visit")
        .await
        .text;
    assert!(
        visit.contains("Healporium Demo Clinic") && !visit.contains("Organization/demo-org"),
        "{visit}"
    );
    assert!(
        rx.text.contains("Ask my doctor for a refill"),
        "{}",
        rx.text
    );
    let sent = alice
        .submit(
            "/app/records/MedicationRequest/demo-alice-rx",
            "/app/refill/demo-alice-rx",
            &[],
        )
        .await;
    assert_eq!(
        sent.location(),
        "/app/messages?done=refill",
        "{}",
        sent.text
    );
    let msg = alice
        .submit(
            "/app/messages",
            "/app/messages",
            &[("message", "My ankle is swollen since Monday.")],
        )
        .await;
    assert_eq!(msg.location(), "/app/messages?done=sent");
    let too_long = "x".repeat(4001);
    let refused = alice
        .submit("/app/messages", "/app/messages", &[("message", &too_long)])
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused.text.contains("id=\"message-error\""));
    let smith = Web::sign_in(&s.origin(), "drsmith").await;
    let inbox = smith.get("/app/inbox").await;
    assert!(
        inbox.text.contains("Refill: metformin") && inbox.text.contains("My ankle is swollen"),
        "{}",
        inbox.text
    );
    let task = s
        .admin()
        .await
        .get("Task?patient=Patient/demo-alice")
        .await
        .json()["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = smith
        .submit(
            "/app/inbox",
            &format!("/app/inbox/task/{task}"),
            &[("decision", "approve")],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.text);
    assert!(alice.get("/app/messages").await.text.contains("done"));
    // a patient changes no Task, even her own
    let own = s.admin().await.get(&format!("Task/{task}")).await.json();
    let token = alice.cookie("hp_at").unwrap();
    crate::common::Server::at(&s.base)
        .with_token(&token)
        .put(&format!("Task/{task}"), &own)
        .await
        .expect(403);
}

/// A CSV of steps and workouts and Apple Health's export.xml are imported into the health
/// log as coded Observations; importing the same file again adds nothing; a bad file is
/// refused beside the form; only a patient imports, with the CSRF token.
async fn phone_and_watch_exports_are_imported_once(s: SecureServer) {
    demo_world(&s).await;
    let alice = Web::sign_in(&s.origin(), "alice").await;
    let csrf = alice.get("/app/health").await.field("csrf");
    let csv = "Date,Step count,Move Minutes count,Activity\n2026-11-30,8200,35,walking\n2026-12-01,10450,,\n";
    let first = alice
        .post_file("/app/health/import", &[("csrf", &csrf)], "fit.csv", csv)
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(
        first
            .text
            .contains("Imported 3 new readings; 0 were already"),
        "{}",
        first.text
    );
    let again = alice
        .post_file("/app/health/import", &[("csrf", &csrf)], "fit.csv", csv)
        .await;
    assert!(
        again
            .text
            .contains("Imported 0 new readings; 3 were already"),
        "{}",
        again.text
    );
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<HealthData locale="en_US">
 <Record type="HKQuantityTypeIdentifierStepCount" unit="count" value="1200" startDate="2026-12-02 08:00:00 +0000" endDate="2026-12-02 08:10:00 +0000"/>
 <Record type="HKQuantityTypeIdentifierBodyMass" unit="kg" value="71.8" startDate="2026-12-02 07:00:00 +0000" endDate="2026-12-02 07:00:00 +0000"/>
 <Record type="HKQuantityTypeIdentifierBloodPressureSystolic" unit="mmHg" value="118" startDate="2026-12-02 07:05:00 +0000" endDate="2026-12-02 07:05:00 +0000"/>
 <Record type="HKQuantityTypeIdentifierBloodPressureDiastolic" unit="mmHg" value="76" startDate="2026-12-02 07:05:00 +0000" endDate="2026-12-02 07:05:00 +0000"/>
 <Workout workoutActivityType="HKWorkoutActivityTypeSwimming" duration="40" durationUnit="min" startDate="2026-12-02 18:00:00 +0000" endDate="2026-12-02 18:40:00 +0000"/>
</HealthData>"#;
    let apple = alice
        .post_file("/app/health/import", &[("csrf", &csrf)], "export.xml", xml)
        .await;
    assert!(
        apple.text.contains("Imported 4 new readings"),
        "{}",
        apple.text
    );
    let again = alice
        .post_file("/app/health/import", &[("csrf", &csrf)], "export.xml", xml)
        .await;
    assert!(
        again
            .text
            .contains("Imported 0 new readings; 4 were already"),
        "{}",
        again.text
    );
    let admin = s.admin().await;
    let count = |code: &'static str| {
        let admin = admin.clone();
        async move {
            admin.get(&format!("Observation?patient=Patient/demo-alice&code=http://loinc.org|{code}&_summary=count")).await.json()["total"].as_u64().unwrap()
        }
    };
    assert_eq!(
        count("55423-8").await,
        3,
        "steps: two days from the CSV, one from the watch"
    );
    assert_eq!(count("55411-3").await, 2, "a walk and a swim");
    assert_eq!(count("29463-7").await, 1);
    assert_eq!(count("85354-6").await, 1);
    let swim = admin
        .get("Observation?patient=Patient/demo-alice&code=http://loinc.org|55411-3&date=2026-12-02")
        .await
        .json();
    let o = &swim["entry"][0]["resource"];
    assert_eq!(o["valueQuantity"]["code"], "min");
    assert_eq!(
        o["component"][0]["valueCodeableConcept"]["text"],
        "Swimming"
    );
    assert_eq!(o["identifier"][0]["system"], "urn:healporium:device-import");
    // refusals: not a health export, no CSRF token, not a patient
    let bad = alice
        .post_file(
            "/app/health/import",
            &[("csrf", &csrf)],
            "notes.csv",
            "hello,world\n1,2\n",
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.text.contains("id=\"import-error\"") && bad.text.contains("date column"),
        "{}",
        bad.text
    );
    let forged = alice
        .post_file("/app/health/import", &[("csrf", "nope")], "fit.csv", csv)
        .await;
    assert_eq!(forged.status, 403);
    let smith = Web::sign_in(&s.origin(), "drsmith").await;
    let theirs = smith.get("/app/patients").await.field("csrf");
    assert_eq!(
        smith
            .post_file("/app/health/import", &[("csrf", &theirs)], "fit.csv", csv)
            .await
            .status,
        404
    );
    assert_eq!(count("55423-8").await, 3);
}

/// The doctor's and pharmacist's forms: a refused prescription keeps what was typed and says
/// what is wrong beside the field; a pharmacist's issue reaches the prescriber's chart.
async fn staff_forms_answer_beside_the_field(s: SecureServer) {
    demo_world(&s).await;
    let smith = Web::sign_in(&s.origin(), "drsmith").await;
    let chart = "/app/patients/demo-alice";
    let bad = smith
        .submit(
            chart,
            "/app/patients/demo-alice/prescribe",
            &[("medicine", "unicorn dust"), ("dosage", "twice")],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.text.contains("id=\"medicine-error\"")
            && bad.text.contains("Choose a medicine from the list"),
        "{}",
        bad.text
    );
    assert!(bad.text.contains("value=\"unicorn dust\"") && bad.text.contains("value=\"twice\""));
    let empty = smith
        .submit(chart, "/app/patients/demo-alice/note", &[("note", "")])
        .await;
    assert_eq!(empty.status, 422);
    assert!(empty.text.contains("id=\"note-error\""));
    let ok = smith
        .submit(
            chart,
            "/app/patients/demo-alice/prescribe",
            &[
                ("medicine", "amoxicillin 500 MG Oral Capsule"),
                ("dosage", "1 capsule 3 times a day"),
                ("pharmacy", "demo-pharmacy"),
            ],
        )
        .await;
    assert_eq!(ok.location(), "/app/patients/demo-alice?done=prescribed");
    let note = smith
        .submit(
            chart,
            "/app/patients/demo-alice/note",
            &[("note", "Ear infection; antibiotics for a week.")],
        )
        .await;
    assert_eq!(note.status, 303);
    let rx = s
        .admin()
        .await
        .get("MedicationRequest?patient=Patient/demo-alice&code=308136")
        .await
        .json()["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.admin()
            .await
            .get(&format!("MedicationRequest/{rx}"))
            .await
            .json()["medicationCodeableConcept"]["coding"][0]["system"],
        "http://www.nlm.nih.gov/research/umls/rxnorm"
    );
    let pharmacist = Web::sign_in(&s.origin(), "pharmacist").await;
    let held = pharmacist
        .submit(
            &format!("/app/rx/{rx}"),
            &format!("/app/rx/{rx}/issue"),
            &[("reason", "Allergic to penicillin per the patient")],
        )
        .await;
    assert_eq!(held.status, 303, "{}", held.text);
    let page = smith.get(chart).await.text;
    assert!(
        page.contains("held by the pharmacy: Allergic to penicillin per the patient"),
        "{page}"
    );
    assert!(page.contains("Note: Ear infection"), "{page}");
}

/// The administrator adds an account, disables it (it can no longer sign in), enables it,
/// sets a new password; adds a confidential app whose secret is shown once, gives it a new
/// one, and disables it. The overview shows jobs and verifications.
async fn the_administrator_manages_accounts_and_apps(s: SecureServer) {
    demo_world(&s).await;
    let origin = s.origin();
    let admin = Web::sign_in(&origin, "admin").await;
    let home = admin.get("/app/").await.text;
    assert!(
        home.contains("Accounts") && home.contains("Jobs") && home.contains("Verifications"),
        "{home}"
    );
    let added = admin
        .submit(
            "/app/",
            "/app/admin/users",
            &[
                ("username", "nurse1"),
                ("password", crate::common::secure::PASSWORD),
                ("role", "practitioner"),
                ("record", "Practitioner/demo-practitioner-2"),
            ],
        )
        .await;
    assert_eq!(added.location(), "/app/?done=saved", "{}", added.text);
    Web::sign_in(&origin, "nurse1").await;
    let off = admin
        .submit("/app/", "/app/admin/users/nurse1/disable", &[])
        .await;
    assert_eq!(off.status, 303);
    let refused = Web::new(&origin);
    let login = refused.visit("/app/").await;
    let back = refused
        .post(
            "/auth/login",
            &[
                ("request", &login.field("request")),
                ("username", "nurse1"),
                ("password", crate::common::secure::PASSWORD),
            ],
        )
        .await;
    assert_eq!(back.status, 401, "a disabled account cannot sign in");
    admin
        .submit("/app/", "/app/admin/users/nurse1/enable", &[])
        .await;
    let short = admin
        .submit(
            "/app/",
            "/app/admin/users/nurse1/password",
            &[("password", "x")],
        )
        .await;
    assert_eq!(short.status, 422);
    assert!(short.text.contains("class=\"error\""));
    let own = admin
        .submit("/app/", "/app/admin/users/admin/disable", &[])
        .await;
    assert!(own.text.contains("You cannot disable your own account"));
    // an app with a secret, shown once
    let app = admin
        .submit(
            "/app/",
            "/app/admin/clients",
            &[
                ("client_id", "billing-sync"),
                ("name", "Billing sync"),
                ("kind", "confidential"),
                ("redirect_uri", "https://billing.example/cb"),
                ("scopes", "system/Claim.rs"),
            ],
        )
        .await;
    assert_eq!(app.status, 200, "{}", app.text);
    assert!(
        app.text
            .contains("The secret of <strong>billing-sync</strong> is <code>"),
        "{}",
        app.text
    );
    assert!(
        !admin.get("/app/").await.text.contains("The secret of"),
        "shown only once"
    );
    let again = admin
        .submit("/app/", "/app/admin/clients/billing-sync/secret", &[])
        .await;
    assert!(
        again
            .text
            .contains("The secret of <strong>billing-sync</strong>")
    );
    let disabled = admin
        .submit("/app/", "/app/admin/clients/billing-sync/disable", &[])
        .await;
    assert_eq!(disabled.status, 303);
    let web_itself = admin
        .submit("/app/", "/app/admin/clients/healporium-web/disable", &[])
        .await;
    assert!(web_itself.text.contains("cannot disable itself"));
}

/// Behind https (a base URL with https), the session's cookies are `Secure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_behind_https() {
    let options = AppOptions {
        base_url: Some("https://healporium.example/fhir".into()),
        ..AppOptions::default()
    };
    let s = start_secure_with(Backend::Sqlite, options).await.unwrap();
    let web = Web::new(&s.origin());
    let start = web.get("/app/signin").await;
    let cookie = start.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(
        start
            .location()
            .starts_with("https://healporium.example/auth/authorize?"),
        "{}",
        start.location()
    );
    assert!(
        start
            .location()
            .contains("redirect_uri=https%3A%2F%2Fhealporium.example%2Fapp%2Fcallback")
    );
}

/// "Who has seen my record" reads the audit trail in words: the doctor who opened the chart by
/// name, an app by its id, and the patient's own visits only counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_has_seen_my_record_reads_the_audit_trail() {
    let options = AppOptions {
        audit: true,
        ..AppOptions::default()
    };
    let s = start_secure_with(Backend::Sqlite, options).await.unwrap();
    demo_world(&s).await;
    let alice = Web::sign_in(&s.origin(), "alice").await;
    alice.get("/app/records").await;
    let smith = Web::sign_in(&s.origin(), "drsmith").await;
    assert_eq!(smith.get("/app/patients/demo-alice").await.status, 200);
    let app = s.add_public_app().await;
    let token = s
        .authorize(
            &app,
            "drsmith",
            "openid fhirUser user/Observation.rs",
            None,
            None,
        )
        .await;
    Server::at(&s.base)
        .with_token(&token.access_token)
        .get("Observation?patient=Patient/demo-alice")
        .await
        .expect(200);
    let page = alice.get("/app/access").await.text;
    assert!(
        page.contains("Dr. Dana Smith looked at patient details"),
        "{page}"
    );
    assert!(page.contains("Dr. Dana Smith searched"), "{page}");
    assert!(page.contains(&format!("(through the app {app})")), "{page}");
    assert!(
        !page.contains("Alice Lopez looked at"),
        "her own visits are only counted: {page}"
    );
    assert!(page.contains("of those 200 were you"), "{page}");
    // bob's record was not opened by anyone but the set-up
    let bob = Web::sign_in(&s.origin(), "bob").await;
    assert!(!bob.get("/app/access").await.text.contains("Dana Smith"));
}
