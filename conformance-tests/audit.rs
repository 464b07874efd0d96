//! The audit trail: an AuditEvent for every read, vread, search, history, write, operation
//! and refusal, naming who (user, fhirUser, client, address), what (each resource, the query
//! and the patients), when and the outcome; searchable by patient, agent and date; written in
//! the write's own transaction; hash-chained so that `healporium audit verify` finds a record
//! changed behind the server's back.

use crate::common::{Backend, Server, start_with_test_principals_and};
use healporium::app::AppOptions;
use serde_json::{Value, json};

macro_rules! audited_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some((s, url)) = super::start(crate::common::Backend::Sqlite).await {
                        super::$name(s, url).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match super::start(crate::common::Backend::Postgres).await {
                        Some((s, url)) => super::$name(s, url).await,
                        None => eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set"),
                    }
                }
            )*
        }
    };
}

audited_backends!(
    every_interaction_is_audited,
    the_hash_chain_detects_tampering
);

async fn start(backend: Backend) -> Option<(Server, String)> {
    start_with_test_principals_and(
        backend,
        AppOptions {
            audit: true,
            ..AppOptions::default()
        },
    )
    .await
}

const DOC: [(&str, &str); 3] = [
    ("x-test-scope", "user/*.cruds"),
    ("x-test-user", "house"),
    ("x-test-fhir-user", "Practitioner/doc"),
];

async fn events(s: &Server, query: &str) -> Vec<Value> {
    // read as the server itself (no principal): these searches are audited too
    let b = s
        .get(&format!("AuditEvent?{query}&_count=1000"))
        .await
        .expect(200)
        .json();
    b["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"].clone())
        .collect()
}

fn subtype(e: &Value) -> &str {
    e["subtype"][0]["code"].as_str().unwrap_or("")
}

async fn every_interaction_is_audited(s: Server, _url: String) {
    s.put_with(
        "Practitioner/doc",
        &json!({"resourceType": "Practitioner", "id": "doc"}),
        &DOC,
    )
    .await
    .expect(201);
    s.put_with(
        "Patient/A",
        &json!({"resourceType": "Patient", "id": "A"}),
        &DOC,
    )
    .await
    .expect(201);
    s.put_with(
        "Observation/o1",
        &json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/A"}}),
        &DOC,
    )
    .await
    .expect(201);
    s.get_with("Patient/A", &DOC).await.expect(200);
    s.get_with("Observation/o1/_history/1", &DOC)
        .await
        .expect(200);
    s.get_with("Observation?subject=Patient/A", &DOC)
        .await
        .expect(200);
    s.get_with("Observation/o1/_history", &DOC)
        .await
        .expect(200);
    s.get_with("Patient/A/$everything", &DOC).await.expect(200);
    // a refusal and a failed write are audited as failures; the failed write wrote nothing
    s.get_with("Patient/A", &[("x-test-scope", "user/Observation.read")])
        .await
        .expect(403);
    s.post_with(
        "Patient",
        &json!({"resourceType": "Patient", "gender": "nonsense"}),
        &DOC,
    )
    .await
    .expect(422);
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "y"}, "subject": {"reference": "Patient/A"}},
         "request": {"method": "POST", "url": "Observation"}}]});
    s.post_with("", &tx, &DOC).await.expect(200);
    s.delete_with_headers("Observation/o1", &DOC)
        .await
        .expect(204);

    let all = events(&s, "_sort=date").await;
    let kinds: Vec<&str> = all.iter().map(subtype).collect();
    for k in [
        "update",
        "read",
        "vread",
        "search-type",
        "history-instance",
        "operation",
        "create",
        "transaction",
        "delete",
    ] {
        assert!(kinds.contains(&k), "{k} audited: {kinds:?}");
    }
    // who, what, outcome
    let read = all
        .iter()
        .find(|e| subtype(e) == "read" && e["outcome"] == "0")
        .unwrap();
    assert_eq!(read["agent"][0]["who"]["reference"], "Practitioner/doc");
    assert_eq!(read["agent"][0]["name"], "house");
    assert_eq!(
        read["agent"][1]["who"]["identifier"]["value"],
        "test-client"
    );
    assert_eq!(read["action"], "R");
    assert!(read["agent"][0]["network"]["address"].is_string());
    let what: Vec<&str> = read["entity"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["what"]["reference"].as_str())
        .collect();
    assert!(what.contains(&"Patient/A/_history/1"), "{what:?}");
    // a search records its query in one event and each patient it returned in another (that
    // patient's, without the query — which could name someone else)
    let search = all
        .iter()
        .find(|e| {
            subtype(e) == "search-type"
                && e["entity"]
                    .as_array()
                    .is_some_and(|es| es.iter().any(|x| x["query"].is_string()))
        })
        .unwrap();
    assert!(
        !search["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["role"]["code"] == "1"),
        "the query's event names no patient"
    );
    let per_patient = all
        .iter()
        .find(|e| {
            subtype(e) == "search-type"
                && e["entity"]
                    .as_array()
                    .is_some_and(|es| es.iter().any(|x| x["role"]["code"] == "1"))
        })
        .unwrap();
    let query = search["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["query"].as_str())
        .unwrap();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(query)
        .unwrap();
    assert!(
        String::from_utf8(decoded)
            .unwrap()
            .contains("subject=Patient%2FA")
    );
    assert!(
        per_patient["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["what"]["reference"] == "Patient/A" && e["role"]["code"] == "1"),
        "each returned patient is named"
    );
    assert!(
        !per_patient["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["query"].is_string()),
        "a patient's event carries no query"
    );
    let refused = all
        .iter()
        .find(|e| e["outcome"] == "4" && subtype(e) == "read")
        .unwrap();
    assert_eq!(refused["outcomeDesc"], "HTTP 403");
    assert!(
        all.iter()
            .any(|e| subtype(e) == "create" && e["outcome"] == "4"),
        "the failed create is audited"
    );
    let delete = all.iter().find(|e| subtype(e) == "delete").unwrap();
    assert_eq!(delete["action"], "D");
    assert_eq!(
        delete["entity"][0]["what"]["reference"],
        "Observation/o1/_history/2"
    );
    // searchable by patient, agent, entity and date
    assert!(events(&s, "patient=A").await.len() >= 5);
    assert!(events(&s, "agent=Practitioner/doc").await.len() >= 10);
    assert!(
        events(&s, "entity=Observation/o1&subtype=delete")
            .await
            .len()
            == 1
    );
    assert!(!events(&s, "date=ge2020-01-01").await.is_empty());
    // deleting a resource is not blocked by the AuditEvents naming it
    s.put_with(
        "Patient/Z",
        &json!({"resourceType": "Patient", "id": "Z"}),
        &DOC,
    )
    .await
    .expect(201);
    s.get_with("Patient/Z", &DOC).await.expect(200);
    assert!(!events(&s, "entity=Patient/Z").await.is_empty());
    s.delete_with_headers("Patient/Z", &DOC).await.expect(204);
}

async fn the_hash_chain_detects_tampering(s: Server, url: String) {
    for i in 0..5 {
        s.put_with(
            &format!("Patient/p{i}"),
            &json!({"resourceType": "Patient", "id": format!("p{i}")}),
            &DOC,
        )
        .await
        .expect(201);
        s.get_with(&format!("Patient/p{i}"), &DOC).await.expect(200);
    }
    let ok = healporium::app::audit_verify(&url).await.expect("intact");
    assert!(ok.contains("intact: 10 AuditEvents"), "{ok}");
    if s.backend == Backend::Sqlite {
        let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_healporium"))
            .args(["audit", "verify", "--database-url", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = path;
    }
    // the API cannot change them
    let first = events(&s, "_sort=_lastUpdated&_count=1").await[0].clone();
    let id = first["id"].as_str().unwrap().to_string();
    s.delete(&format!("AuditEvent/{id}")).await.expect(405);
    // behind the server's back: drop the immutability trigger and rewrite a record
    use sqlx::Connection;
    let tamper = format!(
        "UPDATE resource_version SET body = replace(body, '\"outcome\":\"0\"', '\"outcome\":\"4\"') \
         WHERE resource_type = 'AuditEvent' AND id = '{id}'"
    );
    match s.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("DROP TRIGGER resource_version_immutable_update")
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(tamper))
                .execute(&mut c)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query("DROP TRIGGER resource_version_immutable ON resource_version")
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(tamper))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
    let err = healporium::app::audit_verify(&url)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&id) && err.contains("changed"), "{err}");
    if s.backend == Backend::Sqlite {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_healporium"))
            .args(["audit", "verify", "--database-url", &url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("broken"));
    }
}
