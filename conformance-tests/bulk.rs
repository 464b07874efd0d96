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
pub async fn run_jobs(store: &Arc<dyn Store>, settings: &Settings) -> usize {
    let ctx = healporium::interaction::Context {
        bulk: settings.clone(),
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

/// Jobs of `kind` on the queue, in any state.
async fn bulk_jobs(store: &Arc<dyn Store>, kind: &str) -> usize {
    store
        .jobs()
        .list(None, Some(kind), 1000)
        .await
        .unwrap()
        .len()
}

/// A server (authorization off) with its store and bulk settings.
struct Bulk {
    s: Server,
    store: Arc<dyn Store>,
    settings: Settings,
}

async fn start(backend: Backend, settings: Settings) -> Option<Bulk> {
    let options = AppOptions {
        bulk: settings.clone(),
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
    manifest_on(&b.s, &b.store, &b.settings, status).await
}

async fn manifest_on(
    s: &Server,
    store: &Arc<dyn Store>,
    settings: &Settings,
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
    // nothing of the refused kick-offs left a job behind (one export: the lenient one)
    assert_eq!(bulk_jobs(&b.store, "bulk-export").await, 1);
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
    run_jobs(&b.store, &b.settings).await;
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
    run_jobs(&b.store, &b.settings).await;
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

mod imports {
    bulk_backends!(
        healporium::interaction::bulk::Settings::default();
        import_refuses_what_it_cannot_read,
        synthea_exported_and_imported_into_a_fresh_database_is_the_same,
    );
}

/// A server whose `$import` reads files from a directory of its own.
async fn start_with_import_dir(backend: Backend) -> Option<(Bulk, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        import_dir: Some(dir.path().to_path_buf()),
        ..Settings::default()
    };
    Some((start(backend, settings).await?, dir))
}

fn import_manifest(inputs: &[(&str, &str)]) -> Value {
    let mut parameter =
        vec![json!({"name": "inputFormat", "valueCode": "application/fhir+ndjson"})];
    for (t, url) in inputs {
        parameter.push(json!({"name": "input", "part": [
            {"name": "type", "valueCode": t}, {"name": "url", "valueUri": url}]}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter})
}

/// Kicks off an import; runs it; returns its manifest.
async fn import(b: &Bulk, body: &Value) -> Value {
    let r =
        b.s.post_with("$import", body, &[("prefer", "respond-async")])
            .await
            .expect(202);
    let status = rel(&b.s, r.header("content-location").unwrap());
    manifest(b, &status).await
}

async fn lines_of(s: &Server, files: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for f in files.as_array().unwrap() {
        let r = s.get(&rel(s, f["url"].as_str().unwrap())).await.expect(200);
        out.extend(
            r.text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    out
}

macro_rules! import_backends {
    ($($name:ident),* $(,)?) => {
        mod import_files {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        if let Some((b, dir)) = super::super::start_with_import_dir($crate::common::Backend::Sqlite).await {
                            super::super::$name(b, dir).await;
                        }
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        match super::super::start_with_import_dir($crate::common::Backend::Postgres).await {
                            Some((b, dir)) => super::super::$name(b, dir).await,
                            None => eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set"),
                        }
                    }
                )*
            }
        }
    };
}

import_backends!(import_reads_files_and_reports_every_failed_line);

async fn import_reads_files_and_reports_every_failed_line(b: Bulk, dir: tempfile::TempDir) {
    let s = &b.s;
    let patients = [
        patient("a", "Ames", "female").to_string(),
        patient("b", "Baker", "male").to_string(),
        "{not json".to_string(),
        json!({"resourceType": "Patient", "id": "c", "gender": "robot"}).to_string(),
        observation("wrong-file", "a").to_string(),
        String::new(),
        json!({"resourceType": "Patient", "name": [{"family": "NoId"}]}).to_string(),
    ];
    std::fs::write(dir.path().join("patients.ndjson"), patients.join("\n")).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let observations = [
        observation("o1", "a").to_string(),
        observation("o2", "b").to_string(),
        observation("o3", "nobody").to_string(),
    ];
    std::fs::write(
        dir.path().join("sub/obs.ndjson"),
        observations.join("\n") + "\n",
    )
    .unwrap();
    let obs_url = format!("file://{}", dir.path().join("sub/obs.ndjson").display());
    let m = import(
        &b,
        &import_manifest(&[("Patient", "patients.ndjson"), ("Observation", &obs_url)]),
    )
    .await;
    assert_eq!(m["request"], s.url("$import"));
    // what was written
    for p in [
        "Patient/a",
        "Patient/b",
        "Observation/o1",
        "Observation/o2",
        "Observation/o3",
    ] {
        s.get(p).await.expect(200);
    }
    s.get("Patient/c").await.expect(404);
    s.get("Observation/wrong-file").await.expect(404);
    let noid = s.get("Patient?family=NoId").await.expect(200).json();
    assert_eq!(noid["entry"].as_array().map(Vec::len), Some(1), "{noid}");
    // one summary per input
    let summaries = lines_of(s, &m["output"]).await;
    assert_eq!(summaries.len(), 2);
    let first = summaries[0]["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        first.contains("3 resources imported, 3 lines failed"),
        "{first}"
    );
    // every failure by input and line, and the dangling reference
    let errors = lines_of(s, &m["error"]).await;
    let text: Vec<String> = errors
        .iter()
        .map(|e| e["issue"][0]["diagnostics"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(errors.len(), 4, "{text:?}");
    for (needle, at) in [
        ("patients.ndjson line 3", None),
        ("patients.ndjson line 4", Some("Patient.gender")),
        ("patients.ndjson line 5", None),
        ("Observation/o3 refers to Patient/nobody", None),
    ] {
        let e = errors
            .iter()
            .find(|e| {
                e["issue"][0]["diagnostics"]
                    .as_str()
                    .unwrap()
                    .contains(needle)
            })
            .unwrap_or_else(|| panic!("no {needle}: {text:?}"));
        if let Some(at) = at {
            assert!(e.to_string().contains(at), "{e}");
        }
    }
    // importing again changes nothing that matters: the same ids
    import(&b, &import_manifest(&[("Observation", "sub/obs.ndjson")])).await;
    let all = s
        .get("Observation?_total=accurate")
        .await
        .expect(200)
        .json();
    assert_eq!(all["total"], 3);
    // nothing outside the directory
    for url in [
        "../outside.ndjson",
        "/etc/passwd",
        "file:///etc/passwd",
        "missing.ndjson",
    ] {
        let r = s
            .post_with(
                "$import",
                &import_manifest(&[("Patient", url)]),
                &[("prefer", "respond-async")],
            )
            .await
            .expect(400);
        assert!(
            r.expressions().contains(&"input.url".to_string()),
            "{url}: {}",
            r.text
        );
    }
}

async fn import_refuses_what_it_cannot_read(b: Bulk) {
    let s = &b.s;
    let body = import_manifest(&[("Patient", "p.ndjson")]);
    // asynchronous only
    s.post("$import", &body).await.expect(400);
    // no import directory: files are refused, and nothing is queued
    let r = s
        .post_with("$import", &body, &[("prefer", "respond-async")])
        .await
        .expect(400);
    assert!(r.text.contains("import directory"), "{}", r.text);
    let r = s
        .post_with(
            "$import",
            &import_manifest(&[("NoSuchType", "https://example.org/x.ndjson")]),
            &[("prefer", "respond-async")],
        )
        .await
        .expect(400);
    assert!(r.expressions().contains(&"input.type".to_string()));
    s.post_with(
        "$import",
        &json!({"resourceType": "Parameters"}),
        &[("prefer", "respond-async")],
    )
    .await
    .expect(400);
    s.get_with("$import", &[("prefer", "respond-async")])
        .await
        .expect(400);
    assert_eq!(bulk_jobs(&b.store, "bulk-import").await, 0);
    // a source that cannot be fetched is reported, not fatal
    let m = import(
        &b,
        &import_manifest(&[("Patient", &format!("{}/nosuchfile", s.origin()))]),
    )
    .await;
    let errors = lines_of(s, &m["error"]).await;
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("404"), "{}", errors[0]);
}

/// Every resource (type and id → JSON without meta) in an export's files.
async fn exported_bodies(s: &Server, m: &Value) -> std::collections::BTreeMap<String, Value> {
    outputs(s, m)
        .await
        .into_iter()
        .map(|mut r| {
            let key = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            r.as_object_mut().unwrap().remove("meta");
            (key, r)
        })
        .collect()
}

async fn synthea_exported_and_imported_into_a_fresh_database_is_the_same(a: Bulk) {
    crate::synthea::load_all(&a.s).await;
    let m = manifest(&a, &kick(&a.s, "$export").await).await;
    let original = exported_bodies(&a.s, &m).await;
    assert!(original.len() > 6000, "{}", original.len());
    // a fresh database pulls the files from the first server (ping and pull)
    let b = start(a.s.backend, Settings::default()).await.unwrap();
    let inputs: Vec<(String, String)> = m["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().to_string(),
                o["url"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = inputs
        .iter()
        .map(|(t, u)| (t.as_str(), u.as_str()))
        .collect();
    let im = import(&b, &import_manifest(&refs)).await;
    assert_eq!(lines_of(&b.s, &im["error"]).await, Vec::<Value>::new());
    let again = manifest(&b, &kick(&b.s, "$export").await).await;
    let copied = exported_bodies(&b.s, &again).await;
    assert_eq!(copied.len(), original.len());
    for (k, v) in &original {
        assert_eq!(copied.get(k), Some(v), "{k}");
    }
}

/// `healporium import ndjson DIR` does what `$import` does, from the command line: ids kept,
/// each failed line named by file and line, exit code 1 when something failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_ndjson_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("import.db").display());
    let files = dir.path().join("in");
    std::fs::create_dir(&files).unwrap();
    let patients = [
        patient("a", "Ames", "female"),
        patient("b", "Baker", "male"),
    ];
    let text: Vec<String> = patients.iter().map(Value::to_string).collect();
    std::fs::write(files.join("1-patients.ndjson"), text.join("\n")).unwrap();
    std::fs::write(
        files.join("2-obs.ndjson"),
        format!(
            "{}\n{{\"resourceType\": \"Observation\"}}\n",
            observation("o1", "a")
        ),
    )
    .unwrap();
    std::fs::write(files.join("notes.txt"), "not NDJSON").unwrap();
    let out = crate::cli::bin()
        .args([
            "import",
            "ndjson",
            &files.display().to_string(),
            "--database-url",
            &db,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("3 resources imported, 1 lines failed, 0 dangling"),
        "{err}"
    );
    assert!(err.contains("2-obs.ndjson line 2"), "{err}");
    let store = healporium::store::open(&db).await.unwrap();
    for (t, id) in [("Patient", "a"), ("Patient", "b"), ("Observation", "o1")] {
        assert!(store.read(t, id).await.unwrap().is_some(), "{t}/{id}");
    }
}

mod throttled {
    bulk_backends!(
        healporium::interaction::bulk::Settings::default();
        a_client_has_at_most_five_jobs_in_progress,
    );
}

/// Each job copies data and holds a worker: a client may have five queued or running; the
/// sixth kick-off is 429 until one finishes or is cancelled.
async fn a_client_has_at_most_five_jobs_in_progress(b: Bulk) {
    world(&b.s).await;
    let s = &b.s;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(kick(s, "$export?_type=Patient").await);
    }
    let r = s.get_with("$export?_type=Patient", KICK).await.expect(429);
    assert!(
        r.text.contains("five") || r.text.contains('5'),
        "{}",
        r.text
    );
    s.post_with(
        "$import",
        &import_manifest(&[("Patient", "https://example.invalid/p.ndjson")]),
        &[("prefer", "respond-async")],
    )
    .await
    .expect(429);
    s.delete(&statuses[0]).await.expect(202);
    kick(s, "$export?_type=Patient").await;
    // finished jobs do not count
    manifest(&b, &statuses[1]).await;
    kick(s, "$export?_type=Patient").await;
}
