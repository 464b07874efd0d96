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
    the_hash_chain_detects_tampering,
    concurrent_reads_share_one_audit_commit
);

mod refusals {
    /// Without a metrics token the page is not on the main listener at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_metrics_without_a_token() {
        let (s, _) = crate::common::start_with_test_principals_and(
            crate::common::Backend::Sqlite,
            healporium::app::AppOptions::default(),
        )
        .await
        .unwrap();
        let r = s
            .client
            .get(format!("{}/metrics", s.origin()))
            .bearer_auth("anything-at-all-here")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_every_refusal_is_audited() {
        super::every_refusal_is_audited(crate::common::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_every_refusal_is_audited() {
        super::every_refusal_is_audited(crate::common::Backend::Postgres).await;
    }
}

/// Malformed JSON, 405, 406, 413, 415 and a bad If-Match are refused before they are
/// interactions; each still leaves an AuditEvent with its status.
async fn every_refusal_is_audited(backend: Backend) {
    use reqwest::Method;
    let Some((s, _)) = start_with_test_principals_and(
        backend,
        AppOptions {
            audit: true,
            max_body_bytes: 4096,
            ..AppOptions::default()
        },
    )
    .await
    else {
        return;
    };
    let json = ("content-type", "application/fhir+json");
    s.send(
        Method::POST,
        "Patient",
        &[json],
        Some("{\"resourceType\":".into()),
    )
    .await
    .expect(400);
    s.send(Method::PUT, "", &[], None).await.expect(405);
    s.get_with("Patient", &[("accept", "application/fhir+xml")])
        .await
        .expect(406);
    s.send(
        Method::POST,
        "Patient",
        &[json],
        Some(format!(
            "{{\"resourceType\":\"Patient\",\"text\":\"{}\"}}",
            "x".repeat(8000)
        )),
    )
    .await
    .expect(413);
    s.send(
        Method::POST,
        "Patient",
        &[("content-type", "text/plain")],
        Some("{}".into()),
    )
    .await
    .expect(415);
    s.send(
        Method::PUT,
        "Patient/x",
        &[json, ("if-match", "not-an-etag")],
        Some("{\"resourceType\":\"Patient\",\"id\":\"x\"}".into()),
    )
    .await
    .expect(400);
    let refused: Vec<String> = events(&s, "_count=1000")
        .await
        .iter()
        .filter(|e| subtype(e) == "refused")
        .map(|e| e["outcomeDesc"].as_str().unwrap_or("").to_string())
        .collect();
    for status in ["HTTP 400", "HTTP 405", "HTTP 406", "HTTP 413", "HTTP 415"] {
        assert!(
            refused.iter().any(|d| d == status),
            "{status} not audited: {refused:?}"
        );
    }
    assert_eq!(
        refused.iter().filter(|d| *d == "HTTP 400").count(),
        2,
        "{refused:?}"
    );
}

/// A key file that does not exist: verification of an unkeyed chain.
fn no_key() -> std::path::PathBuf {
    std::path::PathBuf::from("/nonexistent/healporium-audit.key")
}

mod sealed {
    use super::*;

    macro_rules! sealed_cases {
        ($($name:ident),* $(,)?) => {
            $(
                mod $name {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn sqlite() {
                        super::run(crate::common::Backend::Sqlite, super::Tamper::$name).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn postgres() {
                        super::run(crate::common::Backend::Postgres, super::Tamper::$name).await;
                    }
                }
            )*
        };
    }

    #[allow(non_camel_case_types)]
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Tamper {
        the_newest_events_cut_off,
        an_audit_event_inserted_without_a_link,
        the_chain_rehashed_without_the_key,
        the_chain_truncated,
    }

    sealed_cases!(
        the_newest_events_cut_off,
        an_audit_event_inserted_without_a_link,
        the_chain_rehashed_without_the_key,
        the_chain_truncated,
    );

    /// Ten audited requests on a server whose chain is sealed with a key in a temp dir; the
    /// tampering `how` behind the server's back; then `audit verify` must fail.
    async fn run(backend: Backend, how: Tamper) {
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("audit.key");
        let seal = healporium::interaction::seal::Seal::open(&key).expect("seal");
        let Some((s, url)) = start_with_test_principals_and(
            backend,
            AppOptions {
                audit: true,
                seal: Some(std::sync::Arc::new(seal)),
                ..AppOptions::default()
            },
        )
        .await
        else {
            return;
        };
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
        let ok = healporium::app::audit_verify(&url, &key)
            .await
            .expect("intact");
        assert!(ok.contains("intact: 10 AuditEvents"), "{ok}");
        // without the key a keyed chain cannot be vouched for
        assert!(
            healporium::app::audit_verify(&url, &no_key())
                .await
                .is_err()
        );
        let statements: Vec<String> = match how {
            Tamper::the_newest_events_cut_off => {
                let mut v = drop_triggers(backend);
                v.push(
                    "DELETE FROM resource_version WHERE resource_type = 'AuditEvent' AND id IN \
                     (SELECT audit_id FROM audit_chain ORDER BY seq DESC LIMIT 3)"
                        .into(),
                );
                v.push(
                    "DELETE FROM resource WHERE resource_type = 'AuditEvent' AND id IN \
                     (SELECT audit_id FROM audit_chain ORDER BY seq DESC LIMIT 3)"
                        .into(),
                );
                v.push(
                    "DELETE FROM audit_chain WHERE seq IN \
                     (SELECT seq FROM audit_chain ORDER BY seq DESC LIMIT 3)"
                        .into(),
                );
                v
            }
            Tamper::an_audit_event_inserted_without_a_link => {
                let (bool_false, now) = ("0", "1700000000000");
                vec![
                    format!(
                        "INSERT INTO resource_version (resource_type, id, version, last_updated, \
                         method, deleted, body) VALUES ('AuditEvent', 'forged', 1, {now}, 'POST', \
                         {f}, '{{\"resourceType\":\"AuditEvent\",\"id\":\"forged\"}}')",
                        f = if backend == Backend::Sqlite {
                            bool_false
                        } else {
                            "FALSE"
                        }
                    ),
                    format!(
                        "INSERT INTO resource (resource_type, id, version, deleted, last_updated) \
                         VALUES ('AuditEvent', 'forged', 1, {f}, {now})",
                        f = if backend == Backend::Sqlite {
                            bool_false
                        } else {
                            "FALSE"
                        }
                    ),
                ]
            }
            Tamper::the_chain_rehashed_without_the_key => {
                // every link recomputed as plain SHA-256, as someone without the key can
                let mut v = drop_triggers(backend);
                v.extend(rehash(&url, backend).await);
                v
            }
            Tamper::the_chain_truncated => {
                if backend == Backend::Postgres {
                    // the statement trigger refuses TRUNCATE…
                    assert!(
                        exec(&url, backend, &["TRUNCATE audit_chain".into()])
                            .await
                            .is_err()
                    );
                    // …so it takes dropping it first
                    vec![
                        "DROP TRIGGER audit_chain_no_truncate ON audit_chain".into(),
                        "TRUNCATE audit_chain".into(),
                    ]
                } else {
                    let mut v = drop_triggers(backend);
                    v.push("DELETE FROM audit_chain".into());
                    v
                }
            }
        };
        exec(&url, backend, &statements).await.expect("tamper");
        let err = healporium::app::audit_verify(&url, &key)
            .await
            .expect_err(&format!("{how:?} must be caught"))
            .to_string();
        assert!(err.contains("broken"), "{err}");
    }

    fn drop_triggers(backend: Backend) -> Vec<String> {
        match backend {
            Backend::Sqlite => vec![
                "DROP TRIGGER resource_version_immutable_delete".into(),
                "DROP TRIGGER audit_chain_immutable_update".into(),
                "DROP TRIGGER audit_chain_immutable_delete".into(),
            ],
            Backend::Postgres => vec![
                "DROP TRIGGER resource_version_immutable ON resource_version".into(),
                "DROP TRIGGER audit_chain_immutable ON audit_chain".into(),
            ],
        }
    }

    /// The UPDATEs that re-link the whole chain with unkeyed SHA-256.
    async fn rehash(url: &str, backend: Backend) -> Vec<String> {
        use sqlx::Row;
        let rows: Vec<(i64, String, String)> = match backend {
            Backend::Sqlite => {
                use sqlx::Connection;
                let mut c = sqlx::SqliteConnection::connect(url).await.expect("connect");
                sqlx::query(
                    // recorded events are stored as resources, or still wait in audit_pending
                    "SELECT c.seq, c.audit_id, COALESCE(v.body, p.body) FROM audit_chain c \
                     LEFT JOIN resource_version v ON v.resource_type = 'AuditEvent' AND v.id = c.audit_id \
                     LEFT JOIN audit_pending p ON p.audit_id = c.audit_id ORDER BY c.seq",
                )
                .fetch_all(&mut c)
                .await
                .expect("chain")
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::query(
                    // recorded events are stored as resources, or still wait in audit_pending
                    "SELECT c.seq, c.audit_id, COALESCE(v.body, p.body) FROM audit_chain c \
                     LEFT JOIN resource_version v ON v.resource_type = 'AuditEvent' AND v.id = c.audit_id \
                     LEFT JOIN audit_pending p ON p.audit_id = c.audit_id ORDER BY c.seq",
                )
                .fetch_all(&mut c)
                .await
                .expect("chain")
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
            }
        };
        let mut prev = healporium::interaction::audit::GENESIS.to_string();
        let mut out = Vec::new();
        for (seq, _, body) in rows {
            let hash = healporium::interaction::audit::chain_hash(&prev, &body);
            out.push(format!(
                "UPDATE audit_chain SET prev_hash = '{prev}', hash = '{hash}' WHERE seq = {seq}"
            ));
            prev = hash;
        }
        out
    }

    async fn exec(url: &str, backend: Backend, statements: &[String]) -> Result<(), String> {
        use sqlx::Connection;
        match backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                for st in statements {
                    sqlx::query(sqlx::AssertSqlSafe(st.clone()))
                        .execute(&mut c)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                for st in statements {
                    sqlx::query(sqlx::AssertSqlSafe(st.clone()))
                        .execute(&mut c)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }
}

/// The operator's metrics token of these servers.
const METRICS: &str = "audit-tests-metrics-token";

async fn start(backend: Backend) -> Option<(Server, String)> {
    start_with_test_principals_and(
        backend,
        AppOptions {
            audit: true,
            metrics_token: Some(METRICS.to_string()),
            ..AppOptions::default()
        },
    )
    .await
}

/// A node counter's sum over the server's nodes (0 where absent).
async fn metric(s: &Server, name: &str) -> f64 {
    crate::common::metrics_pages(s, METRICS)
        .await
        .iter()
        .map(|page| value_on(page, name))
        .sum()
}

/// A gauge of the whole database (every node reports the same), from one node.
async fn gauge(s: &Server, name: &str) -> f64 {
    let page = s
        .client
        .get(format!("{}/metrics", s.origin()))
        .bearer_auth(METRICS)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    value_on(&page, name)
}

fn value_on(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Reads that arrive while the audit writer waits for the database share one transaction:
/// 24 reads held behind a lock on the chain commit in at most two transactions, every one of
/// them still answered only after its AuditEvent is durable, each AuditEvent searchable and
/// the chain intact. Then the indexer has left nothing waiting.
async fn concurrent_reads_share_one_audit_commit(s: Server, url: String) {
    s.put_with(
        "Patient/shared",
        &json!({"resourceType": "Patient", "id": "shared"}),
        &DOC,
    )
    .await
    .expect(201);
    let commits = metric(&s, "healporium_audit_commits_total").await;
    let recorded = metric(&s, "healporium_audit_events_total").await;
    // hold what the audit writer needs: SQLite's write lock, PostgreSQL's chain lock
    use sqlx::Connection;
    enum Held {
        Sqlite(sqlx::SqliteConnection),
        Postgres(sqlx::PgConnection),
    }
    let lock_pg = "SELECT pg_advisory_lock(hashtextextended('key:audit-chain', 0))";
    let mut held = match s.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut c)
                .await
                .unwrap();
            Held::Sqlite(c)
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(lock_pg).execute(&mut c).await.unwrap();
            Held::Postgres(c)
        }
    };
    let reads: Vec<_> = (0..24)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.get_with("Patient/shared", &DOC).await.status })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(
        reads.iter().all(|r| !r.is_finished()),
        "a read answered before its AuditEvent could be stored"
    );
    match &mut held {
        Held::Sqlite(c) => {
            sqlx::query("COMMIT").execute(c).await.unwrap();
        }
        Held::Postgres(c) => {
            sqlx::query("SELECT pg_advisory_unlock(hashtextextended('key:audit-chain', 0))")
                .execute(c)
                .await
                .unwrap();
        }
    }
    for r in reads {
        assert_eq!(r.await.unwrap().as_u16(), 200);
    }
    let commits = metric(&s, "healporium_audit_commits_total").await - commits;
    let recorded = metric(&s, "healporium_audit_events_total").await - recorded;
    assert!(recorded >= 24.0, "{recorded} events recorded");
    // per node: each node's writer groups the reads it answers
    let nodes = crate::common::test_nodes(s.backend) as f64;
    assert!(
        commits <= 3.0 * nodes,
        "{commits} transactions for {recorded} events"
    );
    let reads = events(&s, "entity=Patient/shared&subtype=read").await;
    assert_eq!(reads.len(), 24);
    // moved before the search ran; only the search's own AuditEvents (one for the patient it
    // returned, one for the query) wait now
    let pending = gauge(&s, "healporium_audit_pending").await;
    assert!(pending <= 2.0, "{pending} waiting");
    let ok = healporium::app::audit_verify(&url, &no_key())
        .await
        .expect("intact");
    assert!(ok.contains("intact"), "{ok}");
    assert_eq!(
        gauge(&s, "healporium_verification_ok{kind=\"audit\"}").await,
        1.0
    );
    assert!(gauge(&s, "healporium_verification_age_seconds{kind=\"audit\"}").await >= 0.0);
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
    let ok = healporium::app::audit_verify(&url, &no_key())
        .await
        .expect("intact");
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
    let err = healporium::app::audit_verify(&url, &no_key())
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
