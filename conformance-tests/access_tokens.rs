//! The access matrix again, with real SMART tokens: patient A signs in through the
//! authorization-code flow (PKCE) and gets a patient-context token; every path to patient B's
//! data — read, search and totals, includes, compartments, history, `$everything`, Bundles,
//! writes — stays closed, while A's own data is open. A practitioner's user-scope token sees
//! only the patients they care for; a backend service's system token sees everything its
//! scopes grant; a v2 query-restricted token sees only its category. Runs on SQLite and
//! PostgreSQL. `access_matrix.rs` tries every path for every role.

use crate::common::secure::SecureServer;
use crate::secure_backends;
use serde_json::{Value, json};

secure_backends!(real_tokens_confine_patients);

/// What of `forbidden` appears in the returned resources (the self link may echo the query).
fn leaked(body: &Value, forbidden: &[String]) -> Vec<String> {
    let text = if body["resourceType"] == "Bundle" {
        body["entry"].to_string()
    } else {
        body.to_string()
    };
    forbidden
        .iter()
        .filter(|f| text.contains(f.as_str()))
        .cloned()
        .collect()
}

async fn real_tokens_confine_patients(s: SecureServer) {
    let admin = s.admin().await;
    let a = admin
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Alpha"}]}),
        )
        .await
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = admin
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Beta"}]}),
        )
        .await
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let obs = |p: &str, category: &str| {
        json!({"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
            "code": {"text": "x"}, "subject": {"reference": format!("Patient/{p}")}})
    };
    let mut ids = Vec::new();
    for (p, c) in [(&a, "laboratory"), (&a, "vital-signs"), (&b, "laboratory")] {
        let id = admin
            .post("Observation", &obs(p, c))
            .await
            .expect(201)
            .json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        ids.push(id);
    }
    let (a_lab, a_vital, b_lab) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let secret_b = vec![b.clone(), b_lab.clone(), "Beta".to_string()];

    // patient A signs in (authorization code + PKCE) with a patient-context token
    let alice = s.with_token(&s.patient_token(&a, "patient/*.rs patient/*.cud").await);
    alice.get(&format!("Patient/{a}")).await.expect(200);
    alice.get(&format!("Observation/{a_lab}")).await.expect(200);
    alice.get(&format!("Patient/{b}")).await.expect(404);
    alice.get(&format!("Observation/{b_lab}")).await.expect(404);
    let paths = [
        "Observation".to_string(),
        format!("Observation?subject=Patient/{b}"),
        "Patient".to_string(),
        format!("Patient/{b}/Observation"),
        "Observation?_include=Observation:subject".to_string(),
        "Patient?_revinclude=Observation:subject".to_string(),
        format!("Patient/{a}/$everything"),
        format!("Observation/{a_lab}/_history"),
        "?_type=Patient,Observation".to_string(),
    ];
    for p in &paths {
        let r = alice.get(p).await.expect(200).json();
        assert!(
            leaked(&r, &secret_b).is_empty(),
            "{p} leaks {:?}",
            leaked(&r, &secret_b)
        );
    }
    assert_eq!(alice.get("Observation").await.json()["total"], 2);
    alice
        .get(&format!("Patient/{b}/$everything"))
        .await
        .expect(404);
    alice
        .get(&format!("Observation/{b_lab}/_history"))
        .await
        .expect(404);
    alice.get("Observation/_history").await.expect(403);
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{b}")}},
        {"request": {"method": "GET", "url": "Observation"}}]});
    let r = alice.post("", &batch).await.expect(200).json();
    assert!(
        r["entry"][0]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("404")
    );
    // (the 404 of entry 0 names only the id the client sent)
    assert!(leaked(&r["entry"][1], &secret_b).is_empty());
    alice
        .post("Observation", &obs(&b, "laboratory"))
        .await
        .expect(403);
    alice
        .post("Observation", &obs(&a, "laboratory"))
        .await
        .expect(201);
    alice
        .delete(&format!("Observation/{b_lab}"))
        .await
        .expect(404);

    // a practitioner with user scopes sees the patients they care for: none yet
    let doc = s.with_token(
        &s.practitioner_token(Some("Practitioner/doc"), None, "user/*.rs")
            .await,
    );
    assert_eq!(doc.get("Patient").await.expect(200).json()["total"], 0);
    doc.post("Observation", &obs(&a, "laboratory"))
        .await
        .expect(403);

    // a backend service with a v2 query-restricted system scope sees only laboratory results
    let lab = s.with_token(
        &s.system_token("system/Observation.rs?category=laboratory")
            .await,
    );
    let r = lab.get("Observation").await.expect(200).json();
    let got: Vec<&str> = r["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(got.contains(&a_lab.as_str()) && got.contains(&b_lab.as_str()));
    assert!(!got.contains(&a_vital.as_str()));
    lab.get(&format!("Observation/{a_vital}")).await.expect(404);
    lab.get(&format!("Patient/{a}")).await.expect(403);
}

mod audited {
    use crate::common::Backend;
    use crate::common::secure::start_secure_with;
    use healporium::app::AppOptions;
    use serde_json::json;

    async fn sign_in_and_token_events_are_audited(backend: Backend) {
        let Some(s) = start_secure_with(
            backend,
            AppOptions {
                audit: true,
                ..AppOptions::default()
            },
        )
        .await
        else {
            eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set");
            return;
        };
        let admin = s.admin().await;
        let a = admin
            .post("Patient", &json!({"resourceType": "Patient"}))
            .await
            .expect(201)
            .json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let token = s.patient_token(&a, "patient/*.rs").await;
        s.with_token(&token)
            .get(&format!("Patient/{a}"))
            .await
            .expect(200);
        s.with_token("not-a-token").get("Patient").await.expect(401);
        let events = admin.get("AuditEvent?_count=200").await.expect(200).json();
        let subtypes: Vec<String> = events["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["resource"]["subtype"][0]["code"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        for k in ["login", "token", "token-rejected", "read", "create"] {
            assert!(subtypes.iter().any(|s| s == k), "{k} in {subtypes:?}");
        }
        // the patient's read names the patient and the client
        let read = events["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .find(|e| e["subtype"][0]["code"] == "read")
            .unwrap();
        assert_eq!(read["agent"][0]["who"]["reference"], format!("Patient/{a}"));
        assert!(read["agent"][0]["altId"].is_string());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        sign_in_and_token_events_are_audited(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        sign_in_and_token_events_are_audited(Backend::Postgres).await;
    }
}
