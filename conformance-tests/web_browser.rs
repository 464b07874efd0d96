//! The web app in real Chromium (Debian's `chromium` over `chromedriver`), on SQLite and on
//! PostgreSQL: each role's journeys end to end, the live updates one person sees while
//! another works, a patient editing a URL, accessibility checks on every page visited and
//! screenshots of each page at a phone's width (390 px) and a desktop's (1280 px).
//!
//! Screenshots go to `target/screenshots/<backend>/`; the user guide's are regenerated with
//! `HEALPORIUM_SCREENSHOTS=docs/screenshots cargo test --test conformance web_browser::sqlite`.
//! Without Chromium the tests are skipped, except under `CI=true`, where that is a failure.

use crate::common::browser::{self, Browser};
use crate::common::secure::{PASSWORD, SecureServer, start_secure_with};
use crate::common::web::demo_world;
use crate::common::{Backend, postgres_url};
use healporium::app::AppOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    journeys(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    if postgres_url().is_none() {
        eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set");
        return;
    }
    journeys(Backend::Postgres).await;
}

/// With JavaScript switched off, the core journeys work the same: sign in, log a weight and
/// see it charted, book a visit, defer a bill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript() {
    if !browser_present() {
        return;
    }
    let s: SecureServer = start_secure_with(Backend::Sqlite, AppOptions::default())
        .await
        .unwrap();
    demo_world(&s).await;
    let ctx = healporium::interaction::Context::new(s.store.clone());
    healporium::interaction::slots::run_slots_job(&ctx, None, healporium::smart::now_ms())
        .await
        .unwrap();
    let origin = s.origin();
    let mut p = Person {
        b: Browser::start_with(390, 844, false).await,
        origin: origin.clone(),
        shots: shots(Backend::Sqlite),
        problems: Vec::new(),
    };
    p.sign_in("alice").await;
    let script = p.b.execute("return 1;", vec![]).await;
    assert_eq!(
        script.as_u64(),
        Some(1),
        "WebDriver itself still runs scripts"
    );
    let cookie = p.b.execute("return document.cookie;", vec![]).await;
    assert!(
        !cookie.as_str().unwrap_or("").contains("hp_tz"),
        "the page's own script did not run"
    );
    p.go("/app/health", "health log without script").await;
    p.type_in("#weight-value", "70.1").await;
    p.click("#log-weight button[type=submit]").await;
    p.b.wait_for_text("Saved to your health log", WAIT).await;
    assert!(p.b.page_text().await.contains("from 70.1 to 70.1 kg"));
    p.go("/app/appointments", "appointments without script")
        .await;
    p.click("form.grid button[type=submit]").await;
    p.click("#offers button").await;
    p.b.wait_for_text("Your appointment is booked", WAIT).await;
    p.go("/app/bills", "bills without script").await;
    p.click("form[action=\"/app/credit/apply\"] button").await;
    p.b.wait_for_text("Your credit line is open", WAIT).await;
    p.click("a.button[href$=\"/defer\"]").await;
    p.click("main form[method=post][action$=\"/defer\"] button")
        .await;
    p.b.wait_for_text("The bill is now on your payment plan", WAIT)
        .await;
    assert!(p.problems.is_empty(), "{:#?}", p.problems);
    p.b.quit().await;
}

/// Whether the browser is there; under CI its absence fails the run.
fn browser_present() -> bool {
    if browser::available() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but chromium/chromedriver are missing (apt-get install chromium chromium-driver)"
    );
    eprintln!("skipped: chromium and chromedriver are not installed");
    false
}

/// Where screenshots go.
fn shots(backend: Backend) -> PathBuf {
    match std::env::var("HEALPORIUM_SCREENSHOTS") {
        Ok(dir) if backend == Backend::Sqlite => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir)
        }
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/screenshots")
            .join(format!("{backend:?}").to_lowercase()),
    }
}

/// One person's browser, checking every page it lands on.
struct Person {
    b: Browser,
    origin: String,
    shots: PathBuf,
    problems: Vec<String>,
}

impl Person {
    async fn new(origin: &str, shots: &Path, width: u32) -> Person {
        Person {
            b: Browser::start(width, if width < 600 { 844 } else { 900 }).await,
            origin: origin.to_string(),
            shots: shots.to_path_buf(),
            problems: Vec::new(),
        }
    }

    /// The page is checked for accessibility problems (which are collected).
    async fn check(&mut self, name: &str) {
        for p in self.b.accessibility_problems().await {
            self.problems.push(format!("{name}: {p}"));
        }
    }

    async fn go(&mut self, path: &str, name: &str) {
        self.b.goto(&format!("{}{path}", self.origin)).await;
        self.check(name).await;
    }

    /// Screenshots of the page at both widths (the browser ends at its own width).
    async fn shoot(&mut self, name: &str, own_width: u32) {
        for (w, h) in [(390, 844), (1280, 900)] {
            self.b.set_size(w, h).await;
            self.b
                .full_page_screenshot(&self.shots.join(format!("{name}-{w}.png")))
                .await;
            self.check(&format!("{name} at {w} px")).await;
        }
        let h = if own_width < 600 { 844 } else { 900 };
        self.b.set_size(own_width, h).await;
    }

    async fn sign_in(&mut self, user: &str) {
        self.b.goto(&format!("{}/app/", self.origin)).await;
        self.b.wait_for_text("Sign in", WAIT).await;
        self.check("sign-in page").await;
        self.b
            .find("input[name=username]")
            .await
            .send_keys(user)
            .await;
        self.b
            .find("input[name=password]")
            .await
            .send_keys(PASSWORD)
            .await;
        self.b.find("button[type=submit]").await.click().await;
        self.b.wait_for_text("Sign out", WAIT).await;
    }

    async fn sign_out(&mut self) {
        self.b.find("form.signout button").await.click().await;
        self.b.wait_for_text("You are signed out", WAIT).await;
    }

    /// Marks the page, so that a later check can tell it was updated without a reload.
    async fn mark(&self) {
        self.b
            .execute("window.__still_here = 42; return 1;", vec![])
            .await;
    }

    async fn not_reloaded(&self) -> bool {
        self.b
            .execute("return window.__still_here === 42;", vec![])
            .await
            .as_bool()
            .unwrap_or(false)
    }

    async fn click(&self, css: &str) {
        self.b.find(css).await.click().await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let e = self.b.find(css).await;
        e.clear().await;
        e.send_keys(text).await;
    }
}

async fn journeys(backend: Backend) {
    if !browser_present() {
        return;
    }
    // as `serve --demo` runs: auditing on, the demo card processor
    let options = AppOptions {
        demo_payments: true,
        audit: true,
        ..AppOptions::default()
    };
    let s: SecureServer = start_secure_with(backend, options).await.unwrap();
    demo_world(&s).await;
    let ctx = healporium::interaction::Context::new(s.store.clone());
    healporium::interaction::slots::run_slots_job(&ctx, None, healporium::smart::now_ms())
        .await
        .unwrap();
    let origin = s.origin();
    let dir = shots(backend);
    let mut patient = Person::new(&origin, &dir, 390).await;
    let mut staff = Person::new(&origin, &dir, 1280).await;

    // ---- a patient signs in, logs her weight and sees it on the chart
    patient.sign_in("alice").await;
    patient.check("patient home").await;
    patient.shoot("patient-home", 390).await;
    patient.go("/app/health", "health log").await;
    patient.type_in("#weight-value", "72.5").await;
    patient.click("#log-weight button[type=submit]").await;
    patient
        .b
        .wait_for_text("Saved to your health log", WAIT)
        .await;
    patient.check("health log after saving").await;
    let alt = patient
        .b
        .find("#chart-weight img")
        .await
        .attr("alt")
        .await
        .unwrap();
    assert!(alt.contains("from 72.5 to 72.5 kg"), "{alt}");
    let drawn = patient
        .b
        .execute(
            "const i = document.querySelector('#chart-weight img'); return i.complete && i.naturalWidth;",
            vec![],
        )
        .await;
    assert_eq!(drawn.as_u64(), Some(640), "the chart image loads");
    patient.shoot("health-log", 390).await;
    // imports what her phone exported
    let export = tempfile::tempdir().unwrap();
    let csv = export.path().join("steps.csv");
    std::fs::write(
        &csv,
        "Date,Step count,Move Minutes count,Activity\n2026-12-01,8200,35,walking\n",
    )
    .unwrap();
    patient
        .b
        .find("#import-file")
        .await
        .send_keys(&csv.to_string_lossy())
        .await;
    patient.click("#import button").await;
    patient
        .b
        .wait_for_text("Imported 2 new readings", WAIT)
        .await;
    patient.check("import").await;
    patient.shoot("health-import", 390).await;

    // ---- books a visit and cancels it
    patient.go("/app/appointments", "appointments").await;
    patient.click("form.grid button[type=submit]").await;
    patient.b.find("#offers button").await;
    patient.check("appointment offers").await;
    patient.shoot("appointments-find", 390).await;
    patient.click("#offers button").await;
    patient
        .b
        .wait_for_text("Your appointment is booked", WAIT)
        .await;
    patient.check("appointment booked").await;
    patient.shoot("appointments-booked", 390).await;
    patient
        .click("button[aria-label^=\"Cancel the visit\"]")
        .await;
    patient
        .b
        .wait_for_text("The appointment is cancelled", WAIT)
        .await;
    assert!(patient.b.page_text().await.contains("Cancelled"));

    // ---- opens a credit line, defers her bill and pays an installment
    patient.go("/app/bills", "bills").await;
    patient.shoot("bills", 390).await;
    patient
        .click("form[action=\"/app/credit/apply\"] button")
        .await;
    patient
        .b
        .wait_for_text("Your credit line is open", WAIT)
        .await;
    patient.click("a.button[href$=\"/defer\"]").await;
    patient.b.wait_for_text("Schedule", WAIT).await;
    patient.check("quote").await;
    let quote = patient.b.page_text().await;
    assert!(
        quote.contains("$106.67 a month") && quote.contains("$640.00 in all"),
        "{quote}"
    );
    patient.shoot("bills-quote", 390).await;
    patient
        .click("main form[method=post][action$=\"/defer\"] button")
        .await;
    patient
        .b
        .wait_for_text("The bill is now on your payment plan", WAIT)
        .await;
    patient.type_in("#card", "4242 4242 4242 4242").await;
    patient
        .click("form[action=\"/app/credit/pay\"] button")
        .await;
    patient
        .b
        .wait_for_text("your payment is recorded", WAIT)
        .await;
    patient.check("paid").await;
    let paid = patient.b.find_all("td.status-paid").await;
    assert_eq!(paid.len(), 1, "one installment paid");
    patient.shoot("bills-plan", 390).await;
    patient.go("/app/records", "records").await;
    patient.click("ol.timeline a").await;
    patient.b.wait_for_text("Back to records", WAIT).await;
    patient.check("a record").await;
    patient.shoot("record", 390).await;
    for (page, name) in [
        ("/app/records", "records"),
        ("/app/messages", "messages"),
        ("/app/profile", "profile"),
    ] {
        patient.go(page, name).await;
        patient.shoot(name, 390).await;
    }

    // ---- a doctor prescribes
    staff.sign_in("drsmith").await;
    staff.check("doctor home").await;
    staff.shoot("doctor-today", 1280).await;
    staff.go("/app/patients", "patients").await;
    staff.click("#found a").await;
    staff.b.wait_for_text("Prescribe", WAIT).await;
    staff.check("chart").await;
    staff
        .type_in("#medicine", "lisinopril 10 MG Oral Tablet")
        .await;
    staff.type_in("#dosage", "1 tablet every morning").await;
    staff
        .b
        .find("#pharmacy")
        .await
        .select_by_value("demo-pharmacy")
        .await;
    staff.click("#prescribe button").await;
    staff
        .b
        .wait_for_text("The prescription is sent", WAIT)
        .await;
    assert!(staff.b.page_text().await.contains("lisinopril"));
    staff.shoot("doctor-chart", 1280).await;
    for (page, name) in [
        ("/app/inbox", "doctor-inbox"),
        ("/app/availability", "doctor-availability"),
    ] {
        staff.go(page, name).await;
        staff.shoot(name, 1280).await;
    }
    staff.sign_out().await;

    // ---- a pharmacist dispenses, and the patient sees it without reloading
    patient.go("/app/records", "records").await;
    patient.mark().await;
    staff.sign_in("pharmacist").await;
    staff.check("pharmacy queue").await;
    staff.shoot("pharmacy-queue", 1280).await;
    let rx = staff.b.find_all("#queue a").await;
    let mut opened = false;
    for a in rx {
        if a.text().await.contains("lisinopril") {
            a.click().await;
            opened = true;
            break;
        }
    }
    assert!(opened, "the new prescription is in the queue");
    staff.b.wait_for_text("Medication history", WAIT).await;
    staff.check("prescription").await;
    staff.shoot("pharmacy-dispense", 1280).await;
    staff.click("#dispense button").await;
    staff
        .b
        .wait_for_text("Dispensed. The patient can see it now", WAIT)
        .await;
    patient.b.wait_for_text("Medicine dispensed", WAIT).await;
    assert!(
        patient.not_reloaded().await,
        "the records page updated in place"
    );
    // who has seen her record: the doctor and the pharmacist, by name
    patient.go("/app/access", "access").await;
    let seen = patient.b.page_text().await;
    assert!(
        seen.contains("Dr. Dana Smith looked at") && seen.contains("Sam Okafor"),
        "{seen}"
    );
    patient.shoot("access", 390).await;
    staff.sign_out().await;

    // ---- an insurer finishes a queued claim, and the patient's bill changes live
    patient.sign_out().await;
    patient.sign_in("bob").await;
    patient.go("/app/bills", "bob's bills").await;
    assert!(patient.b.page_text().await.contains("reviewing this claim"));
    patient.mark().await;
    staff.sign_in("insurer").await;
    staff.check("claims queue").await;
    staff.shoot("insurer-queue", 1280).await;
    staff.click("#claims li.attention a").await;
    staff.b.wait_for_text("Finish this claim", WAIT).await;
    staff.check("claim").await;
    staff.shoot("insurer-claim", 1280).await;
    staff.type_in("#pays-1", "30000").await;
    staff.click("#finish button").await;
    staff.b.wait_for_text("The claim is finished", WAIT).await;
    patient
        .b
        .wait_for_text("Your insurer paid $30,000.00. You owe $2,000.00.", WAIT)
        .await;
    assert!(patient.not_reloaded().await, "the bill updated in place");
    staff.go("/app/members", "members").await;
    staff.shoot("insurer-members", 1280).await;
    staff.sign_out().await;

    // ---- a patient cannot reach another patient's page by editing the URL
    patient
        .go("/app/records/Observation/demo-alice-hr", "edited URL")
        .await;
    let text = patient.b.page_text().await;
    assert!(text.contains("Not found") && !text.contains("72"), "{text}");
    patient
        .go("/app/records/Encounter/demo-alice-visit", "edited URL")
        .await;
    assert!(patient.b.page_text().await.contains("Not found"));

    // ---- an administrator's overview
    staff.sign_in("admin").await;
    staff.check("admin").await;
    staff.shoot("admin", 1280).await;
    let focus = staff.b.focus_visible_problems().await;
    assert!(focus.is_empty(), "focus rings: {focus:?}");

    let mut problems = patient.problems.clone();
    problems.extend(staff.problems.clone());
    problems.dedup();
    assert!(problems.is_empty(), "accessibility: {problems:#?}");
    patient.b.quit().await;
    staff.b.quit().await;
}
