//! The CapabilityStatement describes what is implemented — and every interaction it
//! advertises works.

use crate::backends;
use crate::common::{Server, official_examples};
use healporium::fhir::validation::Validator;
use healporium::interaction::capabilities::{SYSTEM_INTERACTIONS, TYPE_INTERACTIONS};
use serde_json::{Value, json};

backends!(capability_statement_is_valid_and_complete);

/// The examples reference resources outside the example set: integrity is off here.
mod lenient {
    use super::every_advertised_interaction_works;
    crate::lenient_backends!(every_advertised_interaction_works);
}

async fn capability_statement_is_valid_and_complete(s: Server) {
    let cs = s.get("metadata").await.expect(200).json();
    Validator::r4()
        .validate(&cs)
        .expect("a valid CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["kind"], "instance");
    assert_eq!(cs["implementation"]["url"], s.base.as_str());
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 146);
    let sys: Vec<&str> = cs["rest"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(sys, SYSTEM_INTERACTIONS);
    for r in resources {
        let codes: Vec<&str> = r["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, TYPE_INTERACTIONS, "{}", r["type"]);
        let params = r["searchParam"].as_array().unwrap();
        assert!(params.iter().any(|p| p["name"] == "_id"), "{}", r["type"]);
        assert!(params.iter().any(|p| p["name"] == "_lastUpdated"));
    }
    // every R4 parameter with an expression is listed on its type
    let obs = resources
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap();
    let names: Vec<&str> = obs["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in [
        "code",
        "subject",
        "patient",
        "date",
        "value-quantity",
        "code-value-quantity",
        "_tag",
        "_profile",
    ] {
        assert!(names.contains(&n), "Observation lists {n}");
    }
}

/// Runs every advertised type interaction on every type that has an official example.
async fn every_advertised_interaction_works(s: Server) {
    let cs = s.get("metadata").await.expect(200).json();
    let mut done = std::collections::BTreeSet::new();
    for (_, example) in official_examples() {
        let rt = example["resourceType"].as_str().unwrap().to_string();
        if !done.insert(rt.clone()) {
            continue;
        }
        let entry = cs["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == rt.as_str())
            .unwrap();
        for code in entry["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
        {
            exercise(&s, &rt, &example, code).await;
        }
    }
    assert!(done.len() >= 29);
    // system interactions and operations
    for code in cs["rest"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
    {
        match code {
            "history-system" => {
                let h = s.get("_history?_count=1").await.expect(200).json();
                assert_eq!(h["type"], "history");
            }
            "transaction" | "batch" => {
                let b = json!({"resourceType": "Bundle", "type": code, "entry": [
                    {"resource": {"resourceType": "Basic", "code": {"text": "x"}}, "request": {"method": "POST", "url": "Basic"}}]});
                let r = s.post("", &b).await.expect(200).json();
                assert_eq!(r["type"], format!("{code}-response"));
            }
            "search-system" => {
                let b = s.get("?_type=Basic&_count=1").await.expect(200).json();
                assert_eq!(b["type"], "searchset");
            }
            other => panic!("advertised system interaction {other} has no conformance check"),
        }
    }
    let kick = [
        ("accept", "application/fhir+json"),
        ("prefer", "respond-async"),
    ];
    let mut export_status = String::new();
    let mut ops: Vec<&str> = cs["rest"][0]["operation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["name"].as_str().unwrap())
        .collect();
    // the export first: the status and file operations need its job
    ops.sort_by_key(|n| *n != "export");
    for name in ops {
        match name {
            // Bulk Data: asynchronous (no worker runs here: the job stays queued)
            "export" => {
                let r = s.get_with("$export", &kick).await.expect(202);
                export_status = r.header("content-location").unwrap().to_string();
            }
            "bulk-status" => {
                let path = export_status.split("/fhir/").nth(1).unwrap();
                s.get(path).await.expect(202);
            }
            "import" => {
                let manifest = json!({"resourceType": "Parameters", "parameter": [{"name": "input",
                    "part": [{"name": "type", "valueCode": "Patient"},
                             {"name": "url", "valueUri": "https://example.invalid/p.ndjson"}]}]});
                s.post_with("$import", &manifest, &[("prefer", "respond-async")])
                    .await
                    .expect(202);
            }
            "bulk-file" => {
                let id = export_status.split("_jobId=").nth(1).unwrap();
                s.get(&format!("$bulk-file?_jobId={id}&file=1"))
                    .await
                    .expect(404);
            }
            _ => {
                s.get(&format!("${name}")).await.expect(200);
            }
        }
    }
    let patient = s.create(&json!({"resourceType": "Patient"})).await;
    let entry = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap();
    for op in entry["operation"].as_array().unwrap() {
        let name = op["name"].as_str().unwrap();
        let params = match name {
            "validate" => json!({"resourceType": "Patient"}),
            "break-glass" => {
                json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "emergency"}]})
            }
            "meta-add" | "meta-delete" => {
                json!({"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [{"code": "t"}]}}]})
            }
            _ => json!({"resourceType": "Parameters"}),
        };
        if name == "export" {
            s.post_with("Patient/$export", &params, &kick)
                .await
                .expect(202);
            continue;
        }
        s.post(&format!("Patient/{patient}/${name}"), &params)
            .await
            .expect(200);
    }
}

async fn exercise(s: &Server, rt: &str, example: &Value, code: &str) {
    let id = format!("cap-{}", code);
    let mut body = example.clone();
    body["id"] = json!(id);
    let path = format!("{rt}/{id}");
    match code {
        "create" => {
            s.post(rt, example).await.expect(201);
        }
        "update" => {
            s.put(&path, &body).await.expect(201);
            let mut changed = body.clone();
            changed["language"] = json!("en");
            s.put(&path, &changed).await.expect(200);
        }
        "read" => {
            s.put(&path, &body).await.expect(201);
            s.get(&path).await.expect(200);
        }
        "vread" => {
            s.put(&path, &body).await.expect(201);
            s.get(&format!("{path}/_history/1")).await.expect(200);
        }
        "patch" => {
            s.put(&path, &body).await.expect(201);
            let ops = json!([{"op": "add", "path": "/language", "value": "de"}]);
            s.patch_with(&path, "application/json-patch+json", &ops, &[])
                .await
                .expect(200);
        }
        "delete" => {
            s.put(&path, &body).await.expect(201);
            s.delete(&path).await.expect(204);
            s.get(&path).await.expect(410);
        }
        "history-instance" => {
            s.put(&path, &body).await.expect(201);
            assert_eq!(
                s.get(&format!("{path}/_history")).await.expect(200).json()["total"],
                1
            );
        }
        "history-type" => {
            s.get(&format!("{rt}/_history")).await.expect(200);
        }
        "search-type" => {
            s.put(&path, &body).await.expect(201);
            let found = s.get(&format!("{rt}?_id={id}")).await.expect(200).json();
            assert_eq!(found["total"], 1, "{rt}");
            // every advertised parameter is accepted (no warning, no error)
            let cs = s.get("metadata").await.json();
            let entry = cs["rest"][0]["resource"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["type"] == rt)
                .unwrap()
                .clone();
            for p in entry["searchParam"].as_array().unwrap() {
                let name = p["name"].as_str().unwrap();
                let r = s
                    .get_with(
                        &format!("{rt}?{name}:missing=false"),
                        &[("prefer", "handling=strict")],
                    )
                    .await
                    .expect(200)
                    .json();
                assert_eq!(r["type"], "searchset", "{rt}?{name}");
            }
        }
        other => panic!("advertised interaction {other} has no conformance check"),
    }
    // clean slate for the next interaction of this type
    s.delete(&path).await;
}
