//! The Synthea bundles in ../shared/fhir/synthea load completely (the hospital and practitioner
//! batches first, then each patient's transaction with its conditional references), and
//! `$everything` returns every resource of each patient's bundle.

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
    }
    assert!(loaded > 1000, "{loaded} patient resources loaded");
}
