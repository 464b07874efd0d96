//! Bulk Data 2.0 `$export` on both databases, with the checks the ONC Inferno bulk-data kit
//! makes: the kick-off's headers and parameters (400 for what cannot be honoured, unless
//! `handling=lenient`), 202 with Content-Location, status with X-Progress and Retry-After,
//! the manifest's fields, downloads as `application/fhir+ndjson` where every line is a
//! resource of the announced type, `_type`, `_since`, `_typeFilter` and `_elements`, a
//! patient-context export confined to its compartment, Group membership (inactive members
//! and ended periods left out), cancel, expiry, files split by size, and a job whose node died
//! mid-export restarted from scratch. Jobs are run by a node's worker, as `serve` runs them.

use crate::common::{Backend, Server};
use healporium::app::AppOptions;
use healporium::interaction::bulk::Settings;
use healporium::store::Store;
use serde_json::{Value, json};
use std::sync::Arc;

const KICK: &[(&str, &str)] = &[
    ("accept", "application/fhir+json"),
    ("prefer", "respond-async"),
];

/// Runs every due job of the server's kinds to its end, as a node's worker does.
pub async fn run_jobs(store: &Arc<dyn Store>, settings: Settings) -> usize {
    let ctx = healporium::interaction::Context {
        bulk: settings,
        ..healporium::interaction::Context::new(store.clone())
    };
    let config = healporium::config::JobConfig {
        worker: Default::default(),
        cleanup_every_secs: 300,
        time_zone: "UTC".into(),
        drain_ms: 1000,
    };
    let registry = healporium::app::job_kinds(&ctx, &config).unwrap();
    let worker = healporium::jobs::Worker::new(
        store.clone(),
        registry,
        Arc::new(healporium::jobs::SystemClock),
        healporium::jobs::WorkerOptions {
            node: "bulk-test".into(),
            ..Default::default()
        },
    );
    let mut ran = 0;
    loop {
        let n = worker.tick().await;
        if n == 0 {
            return ran;
        }
        ran += n;
    }
}

/// A server (authorization off) with its store and bulk settings.
struct Bulk {
    s: Server,
    store: Arc<dyn Store>,
    settings: Settings,
}

async fn start(backend: Backend, settings: Settings) -> Option<Bulk> {
    let options = AppOptions {
        bulk: settings,
        ..AppOptions::default()
    };
    let (s, store) = crate::common::start_store(backend, options).await?;
    Some(Bulk { s, store, settings })
}

/// The path (under the FHIR base) of an absolute URL of this server.
fn rel(s: &Server, url: &str) -> String {
    url.strip_prefix(&s.url(""))
        .unwrap_or_else(|| panic!("{url} is not under {}", s.url("")))
        .trim_start_matches('/')
        .to_string()
}

/// Kicks off an export; returns the status path.
async fn kick(s: &Server, path: &str) -> String {
    let r = s.get_with(path, KICK).await.expect(202);
    let location = r
        .header("content-location")
        .unwrap_or_else(|| panic!("no Content-Location: {}", r.text))
        .to_string();
    rel(s, &location)
}

/// Runs the jobs and polls until the manifest is there.
async fn manifest(b: &Bulk, status: &str) -> Value {
    manifest_on(&b.s, &b.store, b.settings, status).await
}

async fn manifest_on(
    s: &Server,
    store: &Arc<dyn Store>,
    settings: Settings,
    status: &str,
) -> Value {
    for _ in 0..50 {
        run_jobs(store, settings).await;
        let r = s.get(status).await;
        match r.status.as_u16() {
            200 => return r.json(),
            202 => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            other => panic!("status {other}: {}", r.text),
        }
    }
    panic!("the export did not finish");
}

/// Every line of every output file, checked as Inferno does: NDJSON, each line a resource
/// of the announced type, as many lines as the manifest's count.
async fn outputs(s: &Server, manifest: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    for o in manifest["output"].as_array().unwrap() {
        let r = s
            .get_with(
                &rel(s, o["url"].as_str().unwrap()),
                &[("accept", "application/fhir+ndjson")],
            )
            .await
            .expect(200);
        assert_eq!(r.header("content-type"), Some("application/fhir+ndjson"));
        let lines: Vec<&str> = r.text.lines().collect();
        assert_eq!(lines.len() as u64, o["count"].as_u64().unwrap(), "{o}");
        for line in lines {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["resourceType"], o["type"], "{line}");
            all.push(v);
        }
    }
    all
}

fn keys(resources: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = resources
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

fn patient(id: &str, family: &str, gender: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "gender": gender, "name": [{"family": family}]})
}

fn observation(id: &str, patient: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
           "subject": {"reference": format!("Patient/{patient}")}})
}

async fn put(s: &Server, r: &Value) {
    let path = format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap(),
        r["id"].as_str().unwrap()
    );
    let status = s.put(&path, r).await.status.as_u16();
    assert!(status == 200 || status == 201, "{path}: {status}");
}

async fn world(s: &Server) {
    for (id, family, gender) in [
        ("p1", "Ames", "female"),
        ("p2", "Baker", "male"),
        ("p3", "Cole", "female"),
    ] {
        put(s, &patient(id, family, gender)).await;
    }
    for (id, p) in [("o1", "p1"), ("o2", "p1"), ("o3", "p2"), ("o4", "p3")] {
        put(s, &observation(id, p)).await;
    }
    put(
        s,
        &json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Who"}]}),
    )
    .await;
}

/// One test per backend for each `async fn name(b: Bulk)`, with `settings`.
macro_rules! bulk_backends {
    ($settings:expr; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(b) = super::super::start($crate::common::Backend::Sqlite, $settings).await {
                        super::super::$name(b).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match super::super::start($crate::common::Backend::Postgres, $settings).await {
                        Some(b) => super::super::$name(b).await,
                        None => eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set"),
                    }
                }
            )*
        }
    };
}

mod defaults {
    bulk_backends!(
        healporium::interaction::bulk::Settings::default();
        system_export_kick_off_status_manifest_and_download,
        kick_off_refuses_what_it_cannot_honour,
        type_since_and_type_filter_select_resources,
        elements_subset_resources,
        patient_and_group_exports_return_compartments,
        cancel_removes_the_job_and_its_files,
        a_job_restarted_after_its_node_died_starts_over,
        a_job_that_cannot_run_fails_visibly,
    );
}

mod small_files {
    bulk_backends!(
        healporium::interaction::bulk::Settings {
            file_bytes: 300,
            ttl_ms: 1500,
            ..healporium::interaction::bulk::Settings::default()
        };
        files_split_by_size_and_expire,
    );
}

async fn system_export_kick_off_status_manifest_and_download(b: Bulk) {
    world(&b.s).await;
    let before = healporium::fhir::types::Instant::now().millis();
    let kicked = b.s.get_with("$export", KICK).await.expect(202);
    assert_eq!(kicked.json()["resourceType"], "OperationOutcome");
    let status = rel(&b.s, kicked.header("content-location").unwrap());
    // no worker has run yet: 202 with progress and when to ask again
    let waiting = b.s.get(&status).await.expect(202);
    assert!(waiting.header("x-progress").is_some_and(|p| !p.is_empty()));
    assert!(
        waiting
            .header("retry-after")
            .is_some_and(|r| r.parse::<u64>().is_ok())
    );
    let m = manifest(&b, &status).await;
    let tt = healporium::fhir::types::Instant::parse_fhir(m["transactionTime"].as_str().unwrap())
        .unwrap()
        .millis();
    assert!(tt >= before - 1000, "{m}");
    assert_eq!(m["request"], b.s.url("$export"));
    assert_eq!(m["requiresAccessToken"], false);
    assert_eq!(m["error"], json!([]));
    let types: Vec<&str> = m["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    for t in ["Observation", "Patient", "Practitioner"] {
        assert!(types.contains(&t), "{m}");
    }
    let all = outputs(&b.s, &m).await;
    let k = keys(&all);
    for expected in [
        "Patient/p1",
        "Patient/p2",
        "Patient/p3",
        "Observation/o4",
        "Practitioner/dr",
    ] {
        assert!(k.contains(&expected.to_string()), "{k:?}");
    }
    // POST kick-off with a Parameters body works the same
    let r =
        b.s.post_with(
            "$export",
            &json!({"resourceType": "Parameters", "parameter": [
                {"name": "_type", "valueString": "Practitioner"}]}),
            KICK,
        )
        .await
        .expect(202);
    let status = rel(&b.s, r.header("content-location").unwrap());
    let m = manifest(&b, &status).await;
    assert_eq!(keys(&outputs(&b.s, &m).await), vec!["Practitioner/dr"]);
    let url = rel(&b.s, m["output"][0]["url"].as_str().unwrap());
    // NDJSON is for files: a resource asked for as NDJSON only is 406
    b.s.get_with("Patient/p1", &[("accept", "application/fhir+ndjson")])
        .await
        .expect(406);
    // unknown jobs and files are 404
    b.s.get("$bulk-status?_jobId=nosuchjob").await.expect(404);
    b.s.get(&format!("{url}9")).await.expect(404);
    // the CapabilityStatement advertises the three export operations by their canonicals
    let cs = b.s.get("metadata").await.expect(200).json();
    let text = cs.to_string();
    for c in [
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
    ] {
        assert!(text.contains(c), "{c}");
    }
}

async fn kick_off_refuses_what_it_cannot_honour(b: Bulk) {
    world(&b.s).await;
    let s = &b.s;
    // the headers
    let r = s
        .get_with("$export", &[("accept", "application/fhir+json")])
        .await
        .expect(400);
    assert!(r.text.contains("respond-async"), "{}", r.text);
    s.get_with("$export", &[("prefer", "respond-async")])
        .await
        .expect(400);
    s.get_with(
        "$export",
        &[("prefer", "respond-async"), ("accept", "application/xml")],
    )
    .await
    .expect(400);
    // the parameters: each names itself in the OperationOutcome
    for (query, at) in [
        ("_outputFormat=text/csv", "_outputFormat"),
        ("_since=yesterday", "_since"),
        ("_type=Patient,NoSuchType", "_type"),
        ("_typeFilter=Patient%3Fnosuchparam%3D1", "_typeFilter"),
        ("_typeFilter=justtext", "_typeFilter"),
        ("_elements=Bad-Name", "_elements"),
        (
            "includeAssociatedData=LatestProvenanceResources",
            "includeAssociatedData",
        ),
        ("_wat=1", "_wat"),
    ] {
        let r = s
            .get_with(&format!("$export?{query}"), KICK)
            .await
            .expect(400);
        assert!(
            r.expressions().contains(&at.to_string()),
            "{query}: {}",
            r.text
        );
    }
    // patient is a POST parameter of Patient and Group level only
    s.get_with("Patient/$export?patient=Patient/p1", KICK)
        .await
        .expect(400);
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/p1"}}]});
    s.post_with("$export", &body, KICK).await.expect(400);
    // a type outside the Patient compartment at Patient level
    s.get_with("Patient/$export?_type=Practitioner", KICK)
        .await
        .expect(400);
    // levels the operation is not defined at
    s.get_with("Patient/p1/$export", KICK).await.expect(400);
    s.get_with("Group/$export", KICK).await.expect(400);
    s.get_with("Group/nosuchgroup/$export", KICK)
        .await
        .expect(404);
    // lenient: what cannot be honoured is reported in the error file instead
    let r = s
        .get_with(
            "$export?_type=Patient&_wat=1&includeAssociatedData=x",
            &[
                ("accept", "application/fhir+json"),
                ("prefer", "respond-async, handling=lenient"),
            ],
        )
        .await
        .expect(202);
    let status = rel(s, r.header("content-location").unwrap());
    let m = manifest(&b, &status).await;
    assert_eq!(m["error"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["error"][0]["type"], "OperationOutcome");
    let err = s
        .get(&rel(s, m["error"][0]["url"].as_str().unwrap()))
        .await
        .expect(200);
    assert_eq!(err.text.lines().count(), 2, "{}", err.text);
    for line in err.text.lines() {
        assert_eq!(
            serde_json::from_str::<Value>(line).unwrap()["resourceType"],
            "OperationOutcome"
        );
    }
    assert_eq!(
        keys(&outputs(s, &m).await),
        vec!["Patient/p1", "Patient/p2", "Patient/p3"]
    );
    // DELETE on anything but a status URL
    s.delete("$export").await.expect(405);
    // nothing of the refused kick-offs left a job behind
    assert_eq!(run_jobs(&b.store, b.settings).await, 0);
}

async fn type_since_and_type_filter_select_resources(b: Bulk) {
    world(&b.s).await;
    let s = &b.s;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let since = healporium::fhir::types::Instant::now().to_fhir();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    put(s, &patient("p4", "Dunn", "male")).await;
    put(s, &observation("o5", "p4")).await;
    let q =
        serde_urlencoded::to_string([("_type", "Patient"), ("_since", since.as_str())]).unwrap();
    let m = manifest(&b, &kick(s, &format!("$export?{q}")).await).await;
    assert_eq!(keys(&outputs(s, &m).await), vec!["Patient/p4"]);
    // _typeFilter through the search engine; alternatives are ORed
    let m = manifest(
        &b,
        &kick(
            s,
            "$export?_type=Patient,Observation&_typeFilter=Patient%3Fgender%3Dfemale",
        )
        .await,
    )
    .await;
    let k = keys(&outputs(s, &m).await);
    assert!(k.contains(&"Patient/p1".to_string()) && k.contains(&"Patient/p3".to_string()));
    assert!(!k.contains(&"Patient/p2".to_string()), "{k:?}");
    assert!(
        k.contains(&"Observation/o3".to_string()),
        "no filter on Observation: {k:?}"
    );
    let m = manifest(
        &b,
        &kick(
            s,
            "$export?_type=Patient&_typeFilter=Patient%3Ffamily%3DAmes&_typeFilter=Patient%3Ffamily%3DDunn",
        )
        .await,
    )
    .await;
    assert_eq!(
        keys(&outputs(s, &m).await),
        vec!["Patient/p1", "Patient/p4"]
    );
    // a type with nothing to export has no file
    let m = manifest(&b, &kick(s, "$export?_type=Medication").await).await;
    assert_eq!(m["output"], json!([]));
}

async fn elements_subset_resources(b: Bulk) {
    world(&b.s).await;
    let s = &b.s;
    let m = manifest(
        &b,
        &kick(
            s,
            "$export?_type=Patient,Practitioner&_elements=Patient.gender",
        )
        .await,
    )
    .await;
    for r in outputs(s, &m).await {
        if r["resourceType"] == "Patient" {
            assert!(r.get("name").is_none(), "{r}");
            assert!(r["gender"].is_string(), "{r}");
            assert_eq!(r["meta"]["tag"][0]["code"], "SUBSETTED", "{r}");
        } else {
            assert!(r["name"].is_array(), "Practitioner is not subsetted: {r}");
        }
    }
}

async fn patient_and_group_exports_return_compartments(b: Bulk) {
    world(&b.s).await;
    let s = &b.s;
    // Patient level: every patient's compartment, nothing else
    let m = manifest(&b, &kick(s, "Patient/$export").await).await;
    let k = keys(&outputs(s, &m).await);
    assert!(k.contains(&"Observation/o3".to_string()), "{k:?}");
    assert!(!k.iter().any(|x| x.starts_with("Practitioner/")), "{k:?}");
    // POST with patient: only theirs
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": "Patient/p1"}}]});
    let r = s
        .post_with("Patient/$export", &body, KICK)
        .await
        .expect(202);
    let m = manifest(&b, &rel(s, r.header("content-location").unwrap())).await;
    assert_eq!(
        keys(&outputs(s, &m).await),
        vec!["Observation/o1", "Observation/o2", "Patient/p1"]
    );
    // a Group: active members whose period covers now
    put(
        s,
        &json!({"resourceType": "Group", "id": "g", "type": "person", "actual": true,
                "member": [
                    {"entity": {"reference": "Patient/p1"}},
                    {"entity": {"reference": "Patient/p2"}, "inactive": true},
                    {"entity": {"reference": "Patient/p3"}, "period": {"end": "2001-01"}},
                    {"entity": {"reference": "Practitioner/dr"}}]}),
    )
    .await;
    let m = manifest(&b, &kick(s, "Group/g/$export").await).await;
    // (the Group itself is in p1's compartment: it names p1 as a member)
    assert_eq!(
        keys(&outputs(s, &m).await),
        vec!["Group/g", "Observation/o1", "Observation/o2", "Patient/p1"]
    );
    assert_eq!(m["request"], s.url("Group/g/$export"));
    // a member whose period begins later is not one yet
    put(
        s,
        &json!({"resourceType": "Group", "id": "g2", "type": "person", "actual": true,
                "member": [{"entity": {"reference": "Patient/p2"}, "period": {"start": "2999-01-01"}}]}),
    )
    .await;
    let m = manifest(&b, &kick(s, "Group/g2/$export").await).await;
    assert_eq!(m["output"], json!([]));
}

async fn cancel_removes_the_job_and_its_files(b: Bulk) {
    world(&b.s).await;
    let s = &b.s;
    // cancelled before it ran
    let status = kick(s, "$export").await;
    s.delete(&status).await.expect(202);
    s.get(&status).await.expect(404);
    s.delete(&status).await.expect(404);
    run_jobs(&b.store, b.settings).await;
    s.get(&status).await.expect(404);
    // cancelled after it finished: the files go too
    let status = kick(s, "$export?_type=Patient").await;
    let m = manifest(&b, &status).await;
    let file = rel(s, m["output"][0]["url"].as_str().unwrap());
    s.get(&file).await.expect(200);
    s.delete(&status).await.expect(202);
    s.get(&file).await.expect(404);
    s.get(&status).await.expect(404);
}

async fn a_job_restarted_after_its_node_died_starts_over(b: Bulk) {
    world(&b.s).await;
    let s = &b.s;
    let status = kick(s, "$export?_type=Patient").await;
    let id = status.split("_jobId=").nth(1).unwrap().to_string();
    // a node began it, wrote part of a file and died: the job is running, with a stray file
    let bulk = b.store.bulk();
    assert!(
        bulk.transition(&id, &["accepted"], "running", None, None, None)
            .await
            .unwrap()
    );
    bulk.add_chunk(
        &id,
        1,
        0,
        "{\"resourceType\":\"Patient\",\"id\":\"half\"}\n",
    )
    .await
    .unwrap();
    bulk.add_file(
        &id,
        &healporium::store::BulkFileRow {
            file_no: 1,
            kind: "output".into(),
            resource_type: "Patient".into(),
            count: 1,
            bytes: 40,
        },
    )
    .await
    .unwrap();
    s.get(&status).await.expect(202);
    // the queue hands the job to another attempt, which begins again
    let m = manifest(&b, &status).await;
    assert_eq!(
        keys(&outputs(s, &m).await),
        vec!["Patient/p1", "Patient/p2", "Patient/p3"]
    );
}

async fn a_job_that_cannot_run_fails_visibly(b: Bulk) {
    world(&b.s).await;
    let s = &b.s;
    put(
        s,
        &json!({"resourceType": "Group", "id": "gone", "type": "person", "actual": true,
                   "member": [{"entity": {"reference": "Patient/p1"}}]}),
    )
    .await;
    let status = kick(s, "Group/gone/$export").await;
    assert!(s.delete("Group/gone").await.status.is_success());
    run_jobs(&b.store, b.settings).await;
    let r = s.get(&status).await;
    assert_eq!(r.status.as_u16(), 500, "{}", r.text);
    assert!(r.text.contains("Group/gone"), "{}", r.text);
}

async fn files_split_by_size_and_expire(b: Bulk) {
    world(&b.s).await;
    let s = &b.s;
    for i in 0..12 {
        put(s, &patient(&format!("x{i}"), "Many", "other")).await;
    }
    let status = kick(s, "$export?_type=Patient").await;
    let m = manifest(&b, &status).await;
    let files = m["output"].as_array().unwrap();
    assert!(files.len() > 2, "{m}");
    let total: u64 = files.iter().map(|f| f["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 15);
    assert_eq!(outputs(s, &m).await.len(), 15);
    let r = s.get(&status).await.expect(200);
    assert!(r.header("expires").is_some());
    // after the configured time, the job and its files are gone
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    s.get(&status).await.expect(404);
    s.get(&rel(s, files[0]["url"].as_str().unwrap()))
        .await
        .expect(404);
}
