//! The Synthea bundles in ../shared/fhir/synthea load completely (the hospital and practitioner
//! batches first, then each patient's transaction with its conditional references),
//! `$everything` returns every resource of each patient's bundle, and realistic searches
//! (a patient's Encounters in a year, Observations by LOINC code and value, the latest
//! one, MedicationRequests by status, a chain on the patient's name) return exactly what an
//! independent count over the bundle's JSON says.

use crate::backends;
use crate::common::{FHIR_JSON, Server, shared};
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeSet;

backends!(every_synthea_bundle_loads_and_everything_returns_it);

async fn post_file(s: &Server, name: &str) -> Value {
    let text = std::fs::read_to_string(shared().join("synthea").join(name)).expect("bundle");
    let r = s
        .send(
            Method::POST,
            "",
            &[("content-type", FHIR_JSON), ("prefer", "return=minimal")],
            Some(text),
        )
        .await
        .expect(200);
    let body = r.json();
    let bad: Vec<&Value> = body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["response"]["status"].as_str().unwrap().starts_with('2'))
        .collect();
    assert!(
        bad.is_empty(),
        "{name}: {} entries failed, first: {}",
        bad.len(),
        bad[0]
    );
    body
}

async fn every_synthea_bundle_loads_and_everything_returns_it(s: Server) {
    let mut files: Vec<String> = std::fs::read_dir(shared().join("synthea"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    let (shared_bundles, patients): (Vec<String>, Vec<String>) = files
        .into_iter()
        .partition(|f| f.starts_with("hospital") || f.starts_with("practitioner"));
    assert_eq!(shared_bundles.len(), 2);
    assert_eq!(patients.len(), 8);
    // hospitals before practitioners (PractitionerRoles reference Organizations)
    let mut shared_bundles = shared_bundles;
    shared_bundles.sort_by_key(|f| !f.starts_with("hospital"));
    for f in &shared_bundles {
        let body = post_file(&s, f).await;
        assert_eq!(body["type"], "batch-response");
    }
    let mut loaded = 0;
    for f in &patients {
        let body = post_file(&s, f).await;
        assert_eq!(body["type"], "transaction-response");
        let written: BTreeSet<String> = body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let loc = e["response"]["location"].as_str().unwrap();
                let rel = loc.strip_prefix(&format!("{}/", s.base)).unwrap();
                rel.split("/_history/").next().unwrap().to_string()
            })
            .collect();
        loaded += written.len();
        let patient = written
            .iter()
            .find(|k| k.starts_with("Patient/"))
            .expect("a Patient")
            .clone();
        let everything = s
            .get(&format!("{patient}/$everything?_count=1000"))
            .await
            .expect(200)
            .json();
        let got: BTreeSet<String> = everything["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect();
        let missing: Vec<&String> = written.difference(&got).collect();
        assert!(
            missing.is_empty(),
            "{f}: $everything misses {} of {}: {:?}",
            missing.len(),
            written.len(),
            &missing[..missing.len().min(5)]
        );
        // and only this patient: no other Patient
        assert_eq!(got.iter().filter(|k| k.starts_with("Patient/")).count(), 1);
        realistic_searches(&s, f, &body, &patient).await;
    }
    assert!(loaded > 1000, "{loaded} patient resources loaded");
}

/// The bundle's resources as stored: (type, server id, JSON), in entry order.
fn stored_resources(file: &str, response: &Value, base: &str) -> Vec<(String, String, Value)> {
    let text = std::fs::read_to_string(shared().join("synthea").join(file)).unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .zip(response["entry"].as_array().unwrap())
        .map(|(e, r)| {
            let loc = r["response"]["location"].as_str().unwrap();
            let rel = loc.strip_prefix(&format!("{base}/")).unwrap();
            let mut parts = rel.split('/');
            let rt = parts.next().unwrap().to_string();
            let id = parts.next().unwrap().to_string();
            (rt, id, e["resource"].clone())
        })
        .collect()
}

async fn total(s: &Server, query: &str) -> u64 {
    let b = s.get(query).await.expect(200).json();
    b["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("{query}: {b}"))
}

async fn realistic_searches(s: &Server, file: &str, response: &Value, patient: &str) {
    use healporium::search::dates::range;
    let resources = stored_resources(file, response, &s.base);
    let of = |t: &str| -> Vec<&(String, String, Value)> {
        resources.iter().filter(|(rt, _, _)| rt == t).collect()
    };
    // 1. the patient's Encounters within one year (periods fully inside it)
    let encounters = of("Encounter");
    if let Some((_, _, first)) = encounters.first() {
        let year = &first["period"]["start"].as_str().unwrap()[..4];
        let (yl, yh) = range(year).unwrap();
        let expected = encounters
            .iter()
            .filter(|(_, _, e)| {
                let start = e["period"]["start"].as_str().and_then(range);
                let end = e["period"]["end"].as_str().and_then(range);
                matches!((start, end), (Some((l, _)), Some((_, h))) if l >= yl && h <= yh)
            })
            .count() as u64;
        assert!(expected > 0);
        let got = total(s, &format!("Encounter?patient={patient}&date={year}")).await;
        assert_eq!(got, expected, "{file}: Encounters in {year}");
        let all = total(s, &format!("Encounter?subject={patient}&_summary=count")).await;
        assert_eq!(all, encounters.len() as u64);
    }
    // 2. Observations by LOINC code and value: the most frequent quantity code, above its median
    let observations = of("Observation");
    let mut by_code: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for (_, _, o) in &observations {
        let (Some(code), Some(v)) = (
            o["code"]["coding"][0]["code"].as_str(),
            o["valueQuantity"]["value"].as_f64(),
        ) else {
            continue;
        };
        if o["code"]["coding"][0]["system"] == "http://loinc.org" {
            by_code.entry(code.to_string()).or_default().push(v);
        }
    }
    if let Some((code, values)) = by_code.iter().max_by_key(|(_, v)| v.len()) {
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let expected = values.iter().filter(|v| **v > median).count() as u64;
        let q = format!(
            "Observation?patient={patient}&code=http://loinc.org|{code}&value-quantity=gt{median}"
        );
        assert_eq!(total(s, &q).await, expected, "{file}: {q}");
        let q = format!("Observation?patient={patient}&code=http://loinc.org|{code}");
        assert_eq!(total(s, &q).await, values.len() as u64, "{file}: {q}");
        // the latest of them, by _sort=-date
        let latest = observations
            .iter()
            .filter(|(_, _, o)| {
                o["code"]["coding"][0]["code"] == code.as_str() && o["valueQuantity"].is_object()
            })
            .max_by_key(|(_, _, o)| o["effectiveDateTime"].as_str().and_then(range).map(|r| r.1))
            .unwrap();
        let b = s
            .get(&format!(
                "Observation?patient={patient}&code=http://loinc.org|{code}&_sort=-date&_count=1"
            ))
            .await
            .expect(200)
            .json();
        let got_date = b["entry"][0]["resource"]["effectiveDateTime"].clone();
        assert_eq!(
            got_date, latest.2["effectiveDateTime"],
            "{file}: latest {code}"
        );
    }
    // 3. MedicationRequests by status
    let requests = of("MedicationRequest");
    for status in ["active", "stopped", "completed"] {
        let expected = requests
            .iter()
            .filter(|(_, _, r)| r["status"] == status)
            .count() as u64;
        let got = total(
            s,
            &format!("MedicationRequest?patient={patient}&status={status}"),
        )
        .await;
        assert_eq!(got, expected, "{file}: MedicationRequests {status}");
    }
    // 4. a chain on the patient's Synthea identifier and family name, and a reverse chain
    let p = &of("Patient")[0].2;
    let ident = p["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["system"] == "https://github.com/synthetichealth/synthea")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let family = p["name"][0]["family"].as_str().unwrap().to_string();
    let chained = total(
        s,
        &format!(
            "Encounter?subject:Patient.identifier=https://github.com/synthetichealth/synthea|{ident}&_summary=count"
        ),
    )
    .await;
    assert_eq!(
        chained,
        encounters.len() as u64,
        "{file}: chain on the identifier"
    );
    let by_name = total(
        s,
        &format!(
            "Encounter?subject:Patient.family:exact={family}&subject={patient}&_summary=count"
        ),
    )
    .await;
    assert_eq!(
        by_name,
        encounters.len() as u64,
        "{file}: chain on {family}"
    );
    if !requests.is_empty() {
        let b = s
            .get(&format!(
                "Patient?identifier={ident}&_has:MedicationRequest:patient:intent=order"
            ))
            .await
            .expect(200)
            .json();
        assert_eq!(b["total"], 1, "{file}: _has");
    }
}

/// Loads every Synthea bundle: the hospital and practitioner batches, then each patient's
/// transaction (for tests that need the data set, such as the Bulk Data round trip).
pub async fn load_all(s: &Server) {
    let mut files: Vec<String> = std::fs::read_dir(shared().join("synthea"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    files.sort_by_key(|f| {
        (
            !f.starts_with("hospital"),
            !f.starts_with("practitioner"),
            f.clone(),
        )
    });
    for f in &files {
        post_file(s, f).await;
    }
}
