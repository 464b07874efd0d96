//! Benchmark: search latency (p50/p99) as the store grows. A seeded generator writes ~6
//! resources per patient (Patient, Encounter, 3 Observations, MedicationRequest, plus shared
//! Organizations) through the real server as batch Bundles of PUTs, so index rows are exactly
//! production's; then token, string, date, reference, chained, `_include`, sorted, `_has`,
//! next-page and `_total=accurate` searches are timed over HTTP, first at the small size, then
//! again after loading up to the large one (200 sequential requests per kind; a kind taking
//! seconds per request stops after a minute, and is skipped at the next size when its p50
//! passed one second). On PostgreSQL the page query of each kind is EXPLAINed (ANALYZE) at
//! every size, again with `enable_seqscan=off` when it reads a table whole; at the largest
//! size, a `Seq Scan` on an index table in a token, string, date, reference or chained search
//! fails the run, after the report.
//!
//! Run: `cargo bench --bench search`. HEALPORIUM_BENCH_PATIENTS="10000,100000" (the default)
//! sets the sizes; PostgreSQL is included when HEALPORIUM_BENCH_DATABASE_URL (or
//! HEALPORIUM_TEST_DATABASE_URL) is set (a fresh schema, dropped afterwards);
//! HEALPORIUM_BENCH_BACKENDS=sqlite or =postgres runs one of them; HEALPORIUM_BENCH_KEEP=1
//! keeps the databases for a closer look. HEALPORIUM_BENCH_DIR=<dir> (SQLite) and
//! HEALPORIUM_BENCH_SCHEMA=<name> (PostgreSQL) use a database that is kept and reused: the
//! patients already in it are not loaded again, so a later run measures a grown database
//! without rebuilding it (sizes below what it holds are skipped).

// a tool, not a request path: a failed step may stop it (see .clippy.toml)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use healporium::app::{AppOptions, router};
use healporium::search::parameters::SearchParameters;
use healporium::search::query::parse_at;
use healporium::store::{SearchSpec, Store};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Timed requests per kind and size, after WARMUP untimed ones.
const SAMPLES: usize = 200;
const WARMUP: usize = 20;
/// Kinds that take seconds per request get fewer: warm-up stops after this many seconds…
const WARMUP_BUDGET_S: f64 = 2.0;
/// …and timing after this many, once MIN_SAMPLES are in.
const SAMPLE_BUDGET_S: f64 = 60.0;
const MIN_SAMPLES: usize = 5;
/// A kind whose p50 exceeded this at one size is not run at the next (it would take hours).
const SKIP_ABOVE_MS: f64 = 1000.0;
/// 83 patients × 6 resources = 498 entries per batch Bundle.
const PATIENTS_PER_BUNDLE: usize = 83;
const ORGANIZATIONS: usize = 20;
const SEED: u64 = 0x4865_616c_706f_7269;

#[rustfmt::skip]
const FAMILY: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott",
    "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera",
    "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz",
    "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy",
    "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey", "Reed",
    "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson", "Brooks", "Chavez",
    "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes", "Price", "Alvarez",
    "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez", "Powell",
    "Jenkins", "Perry", "Russell", "Sullivan", "Bell", "Coleman", "Butler", "Henderson", "Barnes",
    "Gonzales", "Fisher", "Vasquez", "Simmons", "Romero", "Jordan", "Patterson", "Alexander",
    "Hamilton", "Graham", "Reynolds", "Griffin", "Wallace", "Moreno", "West", "Cole", "Hayes",
    "Bryant", "Herrera", "Gibson", "Ellis", "Tran", "Medina", "Aguilar", "Stevens", "Murray",
    "Ford", "Castro", "Marshall", "Owens", "Harrison", "Fernandez", "McDonald", "Woods",
    "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen", "Freeman", "Webb", "Tucker",
    "Guzman", "Burns", "Crawford", "Olson", "Simpson", "Porter", "Hunter", "Gordon", "Mendez",
    "Silva", "Shaw", "Snyder", "Mason", "Dixon", "Munoz", "Hunt", "Hicks", "Holmes", "Palmer",
    "Wagner", "Black", "Robertson", "Boyd", "Rose", "Stone", "Salazar", "Fox", "Warren", "Mills",
    "Meyer", "Rice", "Schmidt", "Garza", "Daniels", "Ferguson", "Nichols", "Stephens", "Soto",
    "Weaver", "Ryan", "Gardner", "Payne", "Grant", "Dunn", "Müller", "Schäfer", "Böhm", "Núñez",
    "Peña", "Ibáñez", "Lefèvre", "Østergaard", "Dvořák", "Łukasik",
];

#[rustfmt::skip]
const GIVEN: &[&str] = &[
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony",
    "Margaret", "Mark", "Sandra", "Donald", "Ashley", "Steven", "Kimberly", "Paul", "Emily",
    "Andrew", "Donna", "Joshua", "Michelle", "Kenneth", "Carol", "Kevin", "Amanda", "Brian",
    "Dorothy", "George", "Melissa", "Timothy", "Deborah", "Ronald", "Stephanie", "Edward",
    "Rebecca", "Jason", "Sharon", "Jeffrey", "Laura", "Ryan", "Cynthia", "Jacob", "Kathleen",
    "Gary", "Amy", "Nicholas", "Angela", "Eric", "Shirley", "Jonathan", "Anna", "Stephen",
    "Brenda", "Larry", "Pamela", "Justin", "Emma", "Scott", "Nicole", "Brandon", "Helen",
    "Benjamin", "Samantha", "Samuel", "Katherine", "Gregory", "Christine", "Alexander", "Debra",
    "Frank", "Rachel", "Patrick", "Carolyn", "Raymond", "Janet", "Jack", "Catherine", "Dennis",
    "Maria", "Jerry", "Heather", "José", "Zoë", "Renée", "Björn",
];

/// LOINC code, display, UCUM unit, typical value, spread, category.
const LOINC: &[(&str, &str, &str, f64, f64, &str)] = &[
    (
        "8480-6",
        "Systolic blood pressure",
        "mm[Hg]",
        125.0,
        20.0,
        "vital-signs",
    ),
    (
        "8462-4",
        "Diastolic blood pressure",
        "mm[Hg]",
        80.0,
        12.0,
        "vital-signs",
    ),
    ("29463-7", "Body weight", "kg", 75.0, 18.0, "vital-signs"),
    ("8302-2", "Body height", "cm", 170.0, 12.0, "vital-signs"),
    ("8867-4", "Heart rate", "/min", 72.0, 12.0, "vital-signs"),
    (
        "8310-5",
        "Body temperature",
        "Cel",
        36.8,
        0.5,
        "vital-signs",
    ),
    (
        "39156-5",
        "Body mass index",
        "kg/m2",
        26.0,
        5.0,
        "vital-signs",
    ),
    (
        "2339-0",
        "Glucose [Mass/volume] in Blood",
        "mg/dL",
        100.0,
        25.0,
        "laboratory",
    ),
    (
        "2093-3",
        "Cholesterol [Mass/volume] in Serum or Plasma",
        "mg/dL",
        190.0,
        35.0,
        "laboratory",
    ),
    (
        "718-7",
        "Hemoglobin [Mass/volume] in Blood",
        "g/dL",
        14.0,
        1.5,
        "laboratory",
    ),
];

const RXNORM: &[(&str, &str)] = &[
    ("197361", "amlodipine 5 MG Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    (
        "860975",
        "metformin hydrochloride 500 MG 24HR Extended Release Oral Tablet",
    ),
    ("617312", "atorvastatin 10 MG Oral Tablet"),
    ("310798", "hydrochlorothiazide 25 MG Oral Tablet"),
    ("198211", "simvastatin 40 MG Oral Tablet"),
    ("313782", "acetaminophen 325 MG Oral Tablet"),
    ("849574", "naproxen sodium 220 MG Oral Tablet"),
    ("308136", "amlodipine 2.5 MG Oral Tablet"),
    ("966222", "levothyroxine sodium 0.075 MG Oral Tablet"),
    (
        "1049221",
        "acetaminophen 325 MG / oxycodone 5 MG Oral Tablet",
    ),
    (
        "562251",
        "amoxicillin 250 MG / clavulanate 125 MG Oral Tablet",
    ),
];

/// The tables a search must reach through an index, never by reading them whole.
const INDEX_TABLES: &[&str] = &[
    "resource",
    "resource_token",
    "resource_reference",
    "search_string",
    "search_date",
    "search_quantity",
];

/// SplitMix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ SEED)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64) as i64
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    /// Roughly normal (sum of uniforms), mean 0, deviation 1.
    fn normal(&mut self) -> f64 {
        (0..12)
            .map(|_| self.below(1 << 20) as f64 / f64::from(1 << 20))
            .sum::<f64>()
            - 6.0
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn date_time(secs: i64) -> String {
    let s = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date(secs.div_euclid(86_400)),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn one_decimal(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn organization(k: usize) -> Value {
    json!({
        "resourceType": "Organization",
        "id": format!("org{k}"),
        "identifier": [{"system": "http://bench/org", "value": format!("{k}")}],
        "active": true,
        "name": format!("Bench Hospital {k}"),
    })
}

/// The resources of patient `n`: always the same for the same `n`.
fn patient_resources(n: usize) -> Vec<Value> {
    let mut rng = Rng::new(n as u64);
    let pid = format!("p{n}");
    let subject = json!({"reference": format!("Patient/{pid}")});
    let gender = match rng.below(100) {
        0..48 => "female",
        48..96 => "male",
        96..98 => "other",
        _ => "unknown",
    };
    let birth = rng.range(days_from_civil(1930, 1, 1), days_from_civil(2021, 1, 1));
    let patient = json!({
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": "http://bench/mrn", "value": format!("{n}")}],
        "active": true,
        "name": [{"use": "official", "family": rng.pick(FAMILY), "given": [rng.pick(GIVEN)]}],
        "gender": gender,
        "birthDate": date(birth),
        "managingOrganization": {"reference": format!("Organization/org{}", n % ORGANIZATIONS)},
    });
    let start = rng.range(
        days_from_civil(2015, 1, 1) * 86_400,
        days_from_civil(2025, 1, 1) * 86_400,
    );
    let end = start + rng.range(30 * 60, 3 * 86_400);
    let eid = format!("e{n}");
    let encounter = json!({
        "resourceType": "Encounter",
        "id": eid,
        "status": if rng.below(10) == 0 { "in-progress" } else { "finished" },
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
            "display": "ambulatory",
        },
        "subject": subject,
        "period": {"start": date_time(start), "end": date_time(end)},
        "serviceProvider": {"reference": format!("Organization/org{}", n % ORGANIZATIONS)},
    });
    let mut out = vec![patient, encounter];
    for k in 0..3 {
        let (code, display, unit, mean, spread, category) = *rng.pick(LOINC);
        let value = one_decimal((mean + spread * rng.normal()).max(0.1));
        out.push(json!({
            "resourceType": "Observation",
            "id": format!("o{n}-{k}"),
            "status": if rng.below(20) == 0 { "amended" } else { "final" },
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": category,
            }]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": subject,
            "encounter": {"reference": format!("Encounter/{eid}")},
            "effectiveDateTime": date_time(start + rng.range(0, end - start)),
            "valueQuantity": {
                "value": value,
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            },
        }));
    }
    let (rx, rx_display) = *rng.pick(RXNORM);
    out.push(json!({
        "resourceType": "MedicationRequest",
        "id": format!("m{n}"),
        "status": *rng.pick(&["active", "stopped", "completed"]),
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": rx,
            "display": rx_display,
        }]},
        "subject": subject,
        "encounter": {"reference": format!("Encounter/{eid}")},
        "authoredOn": date_time(start),
    }));
    out
}

fn batch(resources: Vec<Value>) -> String {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let url = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            json!({"resource": r, "request": {"method": "PUT", "url": url}})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries}).to_string()
}

/// Posts a batch; panics naming the first entry that did not succeed.
async fn post_batch(client: &reqwest::Client, base: &str, body: String) -> usize {
    let r = client
        .post(base)
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=minimal")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "batch: {status}: {text:.2000}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let entries = body["entry"].as_array().cloned().unwrap_or_default();
    if let Some((i, e)) = entries.iter().enumerate().find(|(_, e)| {
        !e["response"]["status"]
            .as_str()
            .unwrap_or("")
            .starts_with('2')
    }) {
        panic!("batch entry {i} failed: {e}");
    }
    entries.len()
}

/// How many patients a reused database already holds.
async fn patients_in(client: &reqwest::Client, base: &str) -> usize {
    let r = client
        .get(format!("{base}/Patient?_summary=count"))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    body["total"].as_u64().unwrap_or(0) as usize
}

/// Loads patients `from..to` with `clients` concurrent posters: (resources, seconds).
async fn load(base: &str, from: usize, to: usize, clients: usize) -> (usize, f64) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut resources = 0;
    if from == 0 && from < to {
        resources += post_batch(
            &client,
            base,
            batch((0..ORGANIZATIONS).map(organization).collect()),
        )
        .await;
    }
    let next = Arc::new(AtomicUsize::new(from));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, base, next) = (client.clone(), base.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            loop {
                let lo = next.fetch_add(PATIENTS_PER_BUNDLE, Ordering::Relaxed);
                if lo >= to {
                    return n;
                }
                let hi = (lo + PATIENTS_PER_BUNDLE).min(to);
                let resources = (lo..hi).flat_map(patient_resources).collect();
                n += post_batch(&client, &base, batch(resources)).await;
            }
        }));
    }
    for t in tasks {
        resources += t.await.unwrap();
    }
    (resources, start.elapsed().as_secs_f64())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Token,
    String,
    Date,
    Reference,
    Chained,
    Include,
    Sorted,
    Has,
    NextPage,
    TotalAccurate,
}

const KINDS: &[Kind] = &[
    Kind::Token,
    Kind::String,
    Kind::Date,
    Kind::Reference,
    Kind::Chained,
    Kind::Include,
    Kind::Sorted,
    Kind::Has,
    Kind::NextPage,
    Kind::TotalAccurate,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Token => "token",
            Kind::String => "string",
            Kind::Date => "date",
            Kind::Reference => "reference",
            Kind::Chained => "chained",
            Kind::Include => "_include",
            Kind::Sorted => "sorted",
            Kind::Has => "_has",
            Kind::NextPage => "next page",
            Kind::TotalAccurate => "token, _total=accurate",
        }
    }

    fn resource_type(self) -> &'static str {
        match self {
            Kind::String | Kind::Sorted | Kind::Has => "Patient",
            Kind::Date => "Encounter",
            Kind::Include => "MedicationRequest",
            _ => "Observation",
        }
    }

    /// The page query must reach every index table through an index.
    fn index_only(self) -> bool {
        matches!(
            self,
            Kind::Token | Kind::String | Kind::Date | Kind::Reference | Kind::Chained
        )
    }

    /// A query of this kind with values drawn from the generated vocabulary.
    fn pairs(self, rng: &mut Rng, patients: usize) -> Vec<(String, String)> {
        let loinc = |rng: &mut Rng| rng.pick(LOINC).0.to_string();
        let p = |k: &str, v: String| (k.to_string(), v);
        let none = || p("_total", "none".into());
        match self {
            Kind::Token | Kind::NextPage => vec![
                p("code", format!("http://loinc.org|{}", loinc(rng))),
                p("_count", "20".into()),
                none(),
            ],
            Kind::TotalAccurate => vec![
                p("code", format!("http://loinc.org|{}", loinc(rng))),
                p("_count", "20".into()),
                p("_total", "accurate".into()),
            ],
            Kind::String => {
                let family: String = rng.pick(FAMILY).chars().take(4).collect();
                vec![p("name", family), p("_count", "20".into()), none()]
            }
            Kind::Date => {
                let (y, m) = (rng.range(2015, 2025), rng.range(1, 13));
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                vec![
                    p("date", format!("ge{y:04}-{m:02}-01")),
                    p("date", format!("lt{ny:04}-{nm:02}-01")),
                    p("_count", "20".into()),
                    none(),
                ]
            }
            Kind::Reference => vec![
                p(
                    "subject",
                    format!("Patient/p{}", rng.below(patients as u64)),
                ),
                none(),
            ],
            Kind::Chained => vec![
                p("subject:Patient.name", rng.pick(FAMILY).to_string()),
                p("code", format!("http://loinc.org|{}", loinc(rng))),
                p("_count", "20".into()),
                none(),
            ],
            Kind::Include => vec![
                p("status", "active".into()),
                p("_include", "MedicationRequest:subject".into()),
                p("_count", "20".into()),
                none(),
            ],
            Kind::Sorted => vec![
                p("gender", rng.pick(&["female", "male"]).to_string()),
                p("_sort", "-birthdate".into()),
                p("_count", "20".into()),
                none(),
            ],
            Kind::Has => vec![
                p("_has:Observation:patient:code", loinc(rng)),
                p("_count", "20".into()),
                none(),
            ],
        }
    }
}

struct Measured {
    p50: f64,
    p99: f64,
    /// Timed requests (fewer than SAMPLES when a kind exceeds its time budget).
    n: usize,
    /// Mean matches and included resources per page.
    matches: f64,
    included: f64,
}

/// Nearest-rank percentile of sorted milliseconds.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One GET: (milliseconds to the last body byte, status, body).
async fn get(client: &reqwest::Client, url: &str) -> (f64, reqwest::StatusCode, String) {
    let t0 = Instant::now();
    let r = client.get(url).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (t0.elapsed().as_secs_f64() * 1000.0, status, text)
}

fn search_url(base: &str, kind: Kind, pairs: &[(String, String)]) -> String {
    format!(
        "{base}/{}?{}",
        kind.resource_type(),
        serde_urlencoded::to_string(pairs).unwrap()
    )
}

/// Times SAMPLES requests of `kind` after WARMUP; non-200 answers go to `errors`. A kind
/// whose requests take seconds stops early: warm-up after WARMUP_BUDGET_S, timing after
/// SAMPLE_BUDGET_S once MIN_SAMPLES are in.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    kind: Kind,
    patients: usize,
    errors: &mut Vec<String>,
) -> Measured {
    let mut rng = Rng::new(0xbe9c_0000 + kind as u64);
    let mut times = Vec::with_capacity(SAMPLES);
    let (mut matches, mut included) = (0usize, 0usize);
    let (mut warm_left, mut warm_spent, mut timed_spent) = (WARMUP, 0.0f64, 0.0f64);
    loop {
        let warming = warm_left > 0 && (warm_left == WARMUP || warm_spent < WARMUP_BUDGET_S);
        if !warming {
            warm_left = 0;
            let enough = times.len() >= MIN_SAMPLES && timed_spent > SAMPLE_BUDGET_S;
            if times.len() >= SAMPLES || enough {
                break;
            }
        }
        let mut url = search_url(base, kind, &kind.pairs(&mut rng, patients));
        if kind == Kind::NextPage {
            let (_, status, text) = get(client, &url).await;
            let page: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let next = page["link"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["relation"] == "next")
                .and_then(|l| l["url"].as_str());
            match next {
                Some(n) if status == 200 => url = n.to_string(),
                _ => {
                    errors.push(format!(
                        "{} (no next link): {url} → {status}: {text:.300}",
                        kind.name()
                    ));
                    if errors.len() > 1000 {
                        panic!("too many errors: {errors:#?}");
                    }
                    continue;
                }
            }
        }
        let (ms, status, text) = get(client, &url).await;
        if warming {
            warm_left -= 1;
            warm_spent += ms / 1000.0;
        } else {
            timed_spent += ms / 1000.0;
        }
        if status != 200 {
            errors.push(format!("{}: {url} → {status}: {text:.300}", kind.name()));
            if errors.len() > 1000 {
                panic!("too many errors: {errors:#?}");
            }
            continue;
        }
        if warming {
            continue;
        }
        times.push(ms);
        let page: Value = serde_json::from_str(&text).unwrap();
        for e in page["entry"].as_array().into_iter().flatten() {
            match e["search"]["mode"].as_str() {
                Some("match") => matches += 1,
                Some("include") => included += 1,
                _ => {}
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let n = times.len().max(1) as f64;
    let pct = |p| {
        if times.is_empty() {
            f64::NAN
        } else {
            percentile(&times, p)
        }
    };
    Measured {
        p50: pct(50.0),
        p99: pct(99.0),
        n: times.len(),
        matches: matches as f64 / n,
        included: included as f64 / n,
    }
}

/// The tables a plan reads whole: the word after each `Seq Scan on`.
fn seq_scans(plan: &str) -> Vec<String> {
    plan.lines()
        .filter_map(|l| l.split_once("Seq Scan on ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The page query of each kind at `patients`, as the server would run it.
fn page_query(kind: Kind, patients: usize) -> (Vec<String>, Vec<(String, String)>) {
    let mut rng = Rng::new(0xbe9c_0000 + kind as u64);
    (
        vec![kind.resource_type().to_string()],
        kind.pairs(&mut rng, patients),
    )
}

async fn plan_of(store: &dyn Store, types: &[String], pairs: &[(String, String)]) -> String {
    let q = parse_at(SearchParameters::r4(), types, pairs, false, None)
        .unwrap_or_else(|o| panic!("{pairs:?}: {o:?}"));
    let spec = SearchSpec {
        types,
        filters: &q.filters,
        sort: &q.sort,
        anchor: None,
        backwards: false,
        limit: q.count.unwrap_or(20) + 1,
        forms: &[],
    };
    store.explain_search(&spec).await.unwrap()
}

fn execution_time(plan: &str) -> &str {
    plan.lines()
        .find_map(|l| l.trim().strip_prefix("Execution Time: "))
        .unwrap_or("?")
}

/// Prints each kind's page-query plan; with `check`, returns the `index_only` kinds whose
/// plan reads an index table whole. A plan with such a scan is run again on `no_seq`
/// (`enable_seqscan=off`) to show what the index plan would have cost.
async fn explain(
    store: &dyn Store,
    no_seq: Option<&dyn Store>,
    patients: usize,
    check: bool,
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut times = Vec::new();
    for &kind in KINDS {
        if matches!(kind, Kind::NextPage | Kind::TotalAccurate) {
            continue;
        }
        let (types, pairs) = page_query(kind, patients);
        let plan = plan_of(store, &types, &pairs).await;
        let query = format!(
            "{}?{}",
            kind.resource_type(),
            serde_urlencoded::to_string(&pairs).unwrap()
        );
        println!("--- {} plan at {}, {query}", kind.name(), label(patients));
        println!("{}", plan.trim_end());
        let whole: Vec<String> = seq_scans(&plan)
            .into_iter()
            .filter(|t| INDEX_TABLES.contains(&t.as_str()))
            .collect();
        let mut time = execution_time(&plan).to_string();
        if let (Some(no_seq), false) = (no_seq, whole.is_empty()) {
            let alt = plan_of(no_seq, &types, &pairs).await;
            println!("--- the same with enable_seqscan=off");
            println!("{}", alt.trim_end());
            time = format!("{time} (with enable_seqscan=off: {})", execution_time(&alt));
        }
        if no_seq.is_some() {
            times.push(format!("{} {time}", kind.name()));
        }
        if check && kind.index_only() && !whole.is_empty() {
            violations.push(format!(
                "{} ({query}) at {} reads {} whole:\n{plan}",
                kind.name(),
                label(patients),
                whole.join(", ")
            ));
        }
    }
    if !times.is_empty() {
        println!("SQL execution times at {}:", label(patients));
        for t in times {
            println!("  {t}");
        }
    }
    violations
}

/// PostgreSQL: fresh statistics and visibility map after a bulk load, as autovacuum would
/// leave them, so plans and timings are those of a settled database.
async fn vacuum_analyze(url: &str, schema: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1")
            .bind(schema)
            .fetch_all(&mut c)
            .await
            .unwrap();
    let t0 = Instant::now();
    for t in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "VACUUM (ANALYZE) {schema}.{t}"
        )))
        .execute(&mut c)
        .await
        .unwrap();
    }
    println!("VACUUM (ANALYZE) in {:.1} s", t0.elapsed().as_secs_f64());
}

fn label(n: usize) -> String {
    if n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct Backend {
    name: &'static str,
    url: String,
    /// PostgreSQL: (admin URL, schema), dropped afterwards.
    pg: Option<(String, String)>,
    clients: usize,
}

/// The real server on a store of `url`, on a free port: its FHIR base URL.
async fn serve(url: &str) -> String {
    let store = healporium::store::open(url).await.expect("store");
    let app = router(
        store,
        &AppOptions {
            referential_integrity: false,
            ..Default::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}/fhir")
}

/// Every kind against one server; a kind slower than SKIP_ABOVE_MS at the previous size
/// (`prev`) is skipped.
async fn measure_all(
    client: &reqwest::Client,
    base: &str,
    size: usize,
    prev: Option<&Vec<Measured>>,
    errors: &mut Vec<String>,
) -> Vec<Measured> {
    let mut row = Vec::new();
    for (k, &kind) in KINDS.iter().enumerate() {
        if let Some(p) = prev.map(|r| &r[k])
            // NaN (nothing timed) counts as too slow
            && (p.p50 > SKIP_ABOVE_MS || p.p50.is_nan())
        {
            println!(
                "  {:<24} skipped: p50 was {:.0} ms at the previous size",
                kind.name(),
                p.p50
            );
            row.push(Measured {
                p50: f64::NAN,
                p99: f64::NAN,
                n: 0,
                matches: 0.0,
                included: 0.0,
            });
            continue;
        }
        let m = measure(client, base, kind, size, errors).await;
        println!(
            "  {:<24} p50 {:>8.2} ms  p99 {:>8.2} ms  n {:>3}  matches/page {:>5.1}  \
             included/page {:>5.1}",
            kind.name(),
            m.p50,
            m.p99,
            m.n,
            m.matches,
            m.included
        );
        row.push(m);
    }
    row
}

fn table(name: &str, sizes: &[usize], results: &[Vec<Measured>]) {
    println!();
    println!(
        "### {name}: search latency, ms ({SAMPLES} sequential requests per kind unless n says)"
    );
    println!();
    let mut head = "| kind |".to_string();
    let mut rule = "|---|".to_string();
    for &s in sizes {
        head.push_str(&format!(" p50@{0} | p99@{0} |", label(s)));
        rule.push_str("---|---|");
    }
    head.push_str(&format!(
        " p50 {}/{} |",
        label(*sizes.last().unwrap()),
        label(sizes[0])
    ));
    rule.push_str("---|");
    println!("{head}\n{rule}");
    for (k, &kind) in KINDS.iter().enumerate() {
        let mut line = format!("| {} |", kind.name());
        for r in results {
            let m = &r[k];
            match m.n {
                0 => line.push_str(" skipped | skipped |"),
                n if n < SAMPLES => {
                    line.push_str(&format!(" {:.2} | {:.2} (n={n}) |", m.p50, m.p99))
                }
                _ => line.push_str(&format!(" {:.2} | {:.2} |", m.p50, m.p99)),
            }
        }
        let ratio = results.last().unwrap()[k].p50 / results[0][k].p50;
        if ratio.is_nan() {
            line.push_str(" — |");
        } else {
            line.push_str(&format!(" {ratio:.2}× |"));
        }
        println!("{line}");
    }
    println!();
}

/// Loads and measures one database at every size; returns the violations found.
async fn run(b: &Backend, sizes: &[usize], errors: &mut Vec<String>) -> Vec<String> {
    let base = serve(&b.url).await;
    let explain_store = healporium::store::open(&b.url).await.expect("second store");
    let no_seq = match b.pg {
        Some(_) => {
            let url = format!("{}%20-c%20enable_seqscan%3Doff", b.url);
            Some(healporium::store::open(&url).await.expect("third store"))
        }
        None => None,
    };
    let client = reqwest::Client::new();
    let mut loaded = patients_in(&client, &base).await;
    let mut results: Vec<Vec<Measured>> = Vec::new();
    let mut violations = Vec::new();
    println!("## {}", b.name);
    if loaded > 0 {
        println!("{}: reusing a database with {loaded} patients", b.name);
    }
    let sizes: Vec<usize> = sizes.iter().copied().filter(|&s| s >= loaded).collect();
    let sizes = &sizes[..];
    for (i, &size) in sizes.iter().enumerate() {
        let (resources, secs) = if size > loaded {
            load(&base, loaded, size, b.clients).await
        } else {
            (0, f64::NAN)
        };
        println!(
            "{}: loaded patients {loaded}..{size}: {resources} resources in {secs:.1} s, \
             {:.0} resources/s ({} clients)",
            b.name,
            resources as f64 / secs,
            b.clients
        );
        loaded = size;
        if let Some((_, schema)) = &b.pg {
            vacuum_analyze(&b.url, schema).await;
        }
        println!(
            "{}: measuring at {} patients; load average {}",
            b.name,
            label(size),
            loadavg()
        );
        let row = measure_all(&client, &base, size, results.last(), errors).await;
        results.push(row);
        let check = i + 1 == sizes.len() && b.pg.is_some();
        violations.extend(explain(&*explain_store, no_seq.as_deref(), size, check).await);
    }
    table(b.name, sizes, &results);
    violations
}

fn main() {
    let sizes: Vec<usize> = std::env::var("HEALPORIUM_BENCH_PATIENTS")
        .unwrap_or_else(|_| "10000,100000".to_string())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("HEALPORIUM_BENCH_PATIENTS: numbers")
        })
        .collect();
    assert!(
        !sizes.is_empty() && sizes.windows(2).all(|w| w[0] < w[1]),
        "HEALPORIUM_BENCH_PATIENTS must grow"
    );
    let only = std::env::var("HEALPORIUM_BENCH_BACKENDS").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|b| b == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "search latency at {} patients (~6 resources each); release build, cores: {}",
            sizes
                .iter()
                .map(|&s| label(s))
                .collect::<Vec<_>>()
                .join(", "),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let reuse_dir = std::env::var_os("HEALPORIUM_BENCH_DIR").map(PathBuf::from);
        let reuse_schema = std::env::var("HEALPORIUM_BENCH_SCHEMA").ok();
        let dir = reuse_dir.clone().unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join(format!("search-bench-{}", std::process::id()))
        });
        let mut backends = Vec::new();
        if wanted("sqlite") {
            std::fs::create_dir_all(&dir).unwrap();
            backends.push(Backend {
                name: "SQLite",
                url: format!("sqlite:{}", dir.join("search.db").display()),
                pg: None,
                clients: 2,
            });
        }
        let pg = std::env::var("HEALPORIUM_BENCH_DATABASE_URL")
            .or_else(|_| std::env::var("HEALPORIUM_TEST_DATABASE_URL"))
            .ok();
        if let Some(admin) = pg.filter(|_| wanted("postgres")) {
            use sqlx::Connection;
            let schema = reuse_schema
                .clone()
                .unwrap_or_else(|| format!("hp_search_{}", std::process::id()));
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&mut c)
            .await
            .unwrap();
            let sep = if admin.contains('?') { '&' } else { '?' };
            backends.push(Backend {
                name: "PostgreSQL",
                url: format!("{admin}{sep}options=-c%20search_path%3D{schema}"),
                pg: Some((admin, schema)),
                clients: 4,
            });
        }
        let mut errors = Vec::new();
        let mut violations = Vec::new();
        let keep = std::env::var_os("HEALPORIUM_BENCH_KEEP").is_some();
        for b in &backends {
            violations.extend(run(b, &sizes, &mut errors).await);
            let kept = match &b.pg {
                Some(_) => reuse_schema.is_some(),
                None => reuse_dir.is_some(),
            };
            match &b.pg {
                _ if keep || kept => println!("kept: {}", b.url),
                Some((admin, schema)) => {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {schema} CASCADE"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                }
                None => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        if errors.is_empty() {
            println!("No search answered other than 200.");
        } else {
            println!("{} searches answered other than 200:", errors.len());
            for e in &errors {
                println!("  {e}");
            }
        }
        assert!(
            violations.is_empty(),
            "sequential scans on index tables:\n{}",
            violations.join("\n")
        );
    });
}
