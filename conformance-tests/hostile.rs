//! A server that survives hostile input: each finding of the hostile-input review as a
//! regression test named after it — requests over the limits, index values too long for an
//! index, NUL characters, duplicate JSON keys, bdl-7, and searches that run past the
//! statement timeout while reads stay fast — on both databases.

use crate::backends;
use crate::common::{Backend, Server, start_pair};
use healporium::app::AppOptions;
use healporium::fhir::limits::Limits;
use healporium::store::StoreOptions;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

backends!(
    five_hundred_ored_names_are_refused_naming_the_limit,
    too_many_parameters_sort_keys_includes_and_chain_levels_are_refused,
    json_patch_of_copies_doubling_an_array_stops_at_the_size_limit,
    patch_with_too_many_operations_is_refused,
    bundle_over_the_entry_limit_is_refused,
    duplicate_full_url_in_a_transaction_is_bdl_7,
    a_2800_character_family_name_is_stored_and_found,
    an_identifier_too_long_for_an_index_is_found_exactly,
    nul_in_a_string_a_search_value_or_an_id_is_400_not_500,
    duplicate_json_keys_are_refused_even_for_resource_type,
    post_create_with_a_query_string_is_400_not_a_duplicate,
    put_and_delete_on_the_base_are_405_with_an_outcome,
    an_arbitrary_host_header_never_makes_links_or_locations,
    an_unreferenced_contained_resource_is_dom_3,
    a_reference_with_dot_segments_is_422,
    a_40_kb_url_is_414_with_an_outcome,
);

async fn a_40_kb_url_is_414_with_an_outcome(s: Server) {
    let r = s
        .get(&format!("Patient?name={}", "x".repeat(40 * 1024)))
        .await
        .expect(414);
    assert_eq!(r.json()["resourceType"], "OperationOutcome", "{}", r.text);
    assert_eq!(r.json()["issue"][0]["code"], "too-long");
}

async fn an_unreferenced_contained_resource_is_dom_3(s: Server) {
    let r = s
        .post(
            "Patient",
            &json!({"resourceType": "Patient",
                "contained": [{"resourceType": "Organization", "id": "o", "name": "Nobody's"}]}),
        )
        .await
        .expect(422);
    assert_eq!(r.expressions(), vec!["Patient.contained[0]"]);
    assert!(r.text.contains("dom-3"), "{}", r.text);
    // referenced, it is fine
    s.post(
        "Patient",
        &json!({"resourceType": "Patient",
            "contained": [{"resourceType": "Organization", "id": "o", "name": "Mine"}],
            "managingOrganization": {"reference": "#o"}}),
    )
    .await
    .expect(201);
}

async fn a_reference_with_dot_segments_is_422(s: Server) {
    let org = s
        .create(&json!({"resourceType": "Organization", "name": "O"}))
        .await;
    for reference in [
        format!("Organization/../Organization/{org}"),
        format!("Organization/./{org}"),
    ] {
        let r = s
            .post(
                "Patient",
                &json!({"resourceType": "Patient", "managingOrganization": {"reference": reference}}),
            )
            .await
            .expect(422);
        assert_eq!(
            r.expressions(),
            vec!["Patient.managingOrganization.reference"],
            "{}",
            r.text
        );
    }
}

/// Runs `f` on a server whose requests carry test principals, on both databases.
macro_rules! principal_backends {
    ($($name:ident),* $(,)?) => {
        mod with_principals {
            $(
                mod $name {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn sqlite() {
                        if let Some(s) = $crate::common::start_with_test_principals($crate::common::Backend::Sqlite).await {
                            super::super::$name(s).await;
                        }
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn postgres() {
                        if let Some(s) = $crate::common::start_with_test_principals($crate::common::Backend::Postgres).await {
                            super::super::$name(s).await;
                        }
                    }
                }
            )*
        }
    };
}

principal_backends!(
    a_token_without_create_rights_gets_403_before_422,
    a_next_link_followed_by_another_principal_hides_the_first_query,
);

async fn a_next_link_followed_by_another_principal_hides_the_first_query(s: Server) {
    for _ in 0..3 {
        s.create(&json!({"resourceType": "Patient", "name": [{"family": "Secretname"}]}))
            .await;
    }
    // the first principal (the server itself here) searches by a name
    let page = s
        .get("Patient?family=Secretname&_count=1")
        .await
        .expect(200)
        .json();
    let next = page["link"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
        .and_then(|l| l["url"].as_str())
        .expect("a next link")
        .to_string();
    let path = next
        .split_once("/fhir")
        .map(|(_, rest)| rest.to_string())
        .expect("relative");
    let h = [("x-test-scope", "user/*.rs")];
    let other = s.get_with(&path, &h).await.expect(200).json();
    let self_link = other["link"][0]["url"].as_str().unwrap_or_default();
    assert!(!self_link.contains("Secretname"), "{self_link}");
    // its own pages keep the query
    let own = s.get(&path).await.expect(200).json();
    assert!(
        own["link"][0]["url"]
            .as_str()
            .unwrap_or_default()
            .contains("Secretname")
    );
}

async fn a_token_without_create_rights_gets_403_before_422(s: Server) {
    let h = [("x-test-scope", "patient/*.rs"), ("x-test-patient", "A")];
    let invalid = json!({"resourceType": "Observation", "status": "not-a-status"});
    s.post_with("Observation", &invalid, &h).await.expect(403);
    s.put_with("Observation/x", &invalid, &h).await.expect(403);
    // with create rights the same body is judged: 422
    let h = [("x-test-scope", "patient/*.cruds"), ("x-test-patient", "A")];
    s.post_with("Observation", &invalid, &h).await.expect(422);
}

async fn post_create_with_a_query_string_is_400_not_a_duplicate(s: Server) {
    let body =
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}]});
    s.create(&body).await;
    let before = s.version_count().await;
    let r = s
        .post("Patient?identifier=urn:x|1", &body)
        .await
        .expect(400);
    assert!(r.text.contains("If-None-Exist"), "{}", r.text);
    assert_eq!(s.version_count().await, before);
    // _format is a result parameter, not a search
    s.post("Patient?_format=json", &body).await.expect(201);
}

async fn put_and_delete_on_the_base_are_405_with_an_outcome(s: Server) {
    for m in [Method::PUT, Method::DELETE, Method::PATCH] {
        let r = s.send(m, "", &[], None).await.expect(405);
        assert_eq!(r.json()["resourceType"], "OperationOutcome", "{}", r.text);
        let r = s.send(Method::PUT, "/", &[], None).await;
        assert_eq!(r.status.as_u16(), 405);
        assert_eq!(r.json()["resourceType"], "OperationOutcome", "{}", r.text);
    }
}

fn outcome_names(r: &crate::common::Reply, limit: &str) {
    let v = r.json();
    assert_eq!(v["resourceType"], "OperationOutcome", "{}", r.text);
    assert_eq!(v["issue"][0]["code"], "too-costly", "{}", r.text);
    let d = v["issue"][0]["diagnostics"].as_str().unwrap_or("");
    assert!(d.contains(limit), "{d} should name {limit}");
}

async fn five_hundred_ored_names_are_refused_naming_the_limit(s: Server) {
    let names: Vec<String> = (0..500).map(|i| format!("n{i}")).collect();
    let r = s
        .get(&format!("Patient?name={}", names.join(",")))
        .await
        .expect(400);
    outcome_names(&r, "or-values");
    // 500 parameters of one value each: the parameter limit
    let q: Vec<String> = (0..500).map(|i| format!("name=n{i}")).collect();
    let r = s.get(&format!("Patient?{}", q.join("&"))).await.expect(400);
    outcome_names(&r, "search-params");
    // at the limit it runs
    let names: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    s.get(&format!("Patient?name={}", names.join(",")))
        .await
        .expect(200);
}

async fn too_many_parameters_sort_keys_includes_and_chain_levels_are_refused(s: Server) {
    let r = s
        .get("Patient?_sort=name,birthdate,gender,_id,-_lastUpdated,family")
        .await
        .expect(400);
    outcome_names(&r, "sort-keys");
    let inc: Vec<&str> = std::iter::repeat_n("_include=*", 11).collect();
    let r = s
        .get(&format!("Observation?{}", inc.join("&")))
        .await
        .expect(400);
    outcome_names(&r, "includes");
    let r = s
        .get("Patient?_has:Observation:patient:_has:Provenance:target:_has:AuditEvent:entity:_has:Provenance:target:agent=x")
        .await
        .expect(400);
    outcome_names(&r, "chain-depth");
    // three levels are allowed
    s.get("Patient?_has:Observation:patient:_has:Provenance:target:agent=x")
        .await
        .expect(200);
}

async fn json_patch_of_copies_doubling_an_array_stops_at_the_size_limit(s: Server) {
    let id = s
        .create(&json!({"resourceType": "Patient",
            "name": [{"family": "Doubling", "given": ["a".repeat(100)]}]}))
        .await;
    let before = s.get(&format!("Patient/{id}")).await.expect(200).json();
    // each copy appends the whole array to itself: 2^20 names after 20 operations
    let ops: Vec<Value> = (0..20)
        .map(|_| json!({"op": "copy", "from": "/name", "path": "/name/-"}))
        .collect();
    let start = Instant::now();
    let r = s
        .patch_with(
            &format!("Patient/{id}"),
            "application/json-patch+json",
            &Value::Array(ops),
            &[],
        )
        .await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // copying an array into itself is invalid FHIR after the first copy (name is a list of
    // HumanName, not of lists): either way it must be refused, and nothing may change
    assert!(matches!(r.status.as_u16(), 413 | 422), "{}", r.text);
    let ops: Vec<Value> = (0..20)
        .map(|_| json!({"op": "copy", "from": "/name/0/given", "path": "/name/0/given/-"}))
        .collect();
    let r = s
        .patch_with(
            &format!("Patient/{id}"),
            "application/json-patch+json",
            &Value::Array(ops),
            &[],
        )
        .await;
    assert!(matches!(r.status.as_u16(), 413 | 422), "{}", r.text);
    // a 1 kB contact doubled 20 times would be 1 GB: refused at the size limit (16 MB)
    let mut ops = vec![json!({"op": "add", "path": "/contact",
        "value": [{"name": {"text": "x".repeat(1000)}}]})];
    for _ in 0..20 {
        ops.push(json!({"op": "copy", "from": "/contact", "path": "/contact/-"}));
    }
    let r = s
        .patch_with(
            &format!("Patient/{id}"),
            "application/json-patch+json",
            &Value::Array(ops),
            &[],
        )
        .await
        .expect(413);
    assert!(r.text.contains("resource-bytes"), "{}", r.text);
    let after = s.get(&format!("Patient/{id}")).await.expect(200).json();
    assert_eq!(before, after, "a refused patch changes nothing");
}

async fn patch_with_too_many_operations_is_refused(s: Server) {
    let id = s.create(&json!({"resourceType": "Patient"})).await;
    let ops: Vec<Value> = (0..101)
        .map(|_| json!({"op": "test", "path": "/id", "value": id}))
        .collect();
    let r = s
        .patch_with(
            &format!("Patient/{id}"),
            "application/json-patch+json",
            &Value::Array(ops),
            &[],
        )
        .await
        .expect(400);
    outcome_names(&r, "patch-operations");
}

async fn bundle_over_the_entry_limit_is_refused(s: Server) {
    let entries: Vec<Value> = (0..10_001)
        .map(|_| json!({"request": {"method": "GET", "url": "metadata"}}))
        .collect();
    let r = s
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "batch", "entry": entries}),
        )
        .await
        .expect(400);
    outcome_names(&r, "bundle-entries");
}

async fn duplicate_full_url_in_a_transaction_is_bdl_7(s: Server) {
    let before = s.version_count().await;
    let entry = json!({"fullUrl": "urn:uuid:8b7a1a5e-0000-4000-8000-000000000001",
        "resource": {"resourceType": "Patient"},
        "request": {"method": "POST", "url": "Patient"}});
    let r = s
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction",
                "entry": [entry.clone(), entry]}),
        )
        .await
        .expect(422);
    assert_eq!(r.expressions(), vec!["Bundle.entry[1].fullUrl"]);
    assert!(r.text.contains("bdl-7"), "{}", r.text);
    assert_eq!(s.version_count().await, before);
}

async fn a_2800_character_family_name_is_stored_and_found(s: Server) {
    let family = format!("Longname{}", "ä".repeat(1400));
    let id = s
        .create(&json!({"resourceType": "Patient", "name": [{"family": family}]}))
        .await;
    let found = |r: &crate::common::Reply| -> Vec<String> {
        r.json()["entry"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let r = s.get("Patient?family=longname").await.expect(200);
    assert_eq!(found(&r), vec![id.clone()]);
    let r = s
        .get(&format!("Patient?family:exact={family}"))
        .await
        .expect(200);
    assert_eq!(found(&r), vec![id.clone()]);
    let r = s.get("Patient?_sort=family").await.expect(200);
    assert_eq!(found(&r), vec![id]);
}

async fn an_identifier_too_long_for_an_index_is_found_exactly(s: Server) {
    let a = format!("{}a", "9".repeat(3000));
    let b = format!("{}b", "9".repeat(3000));
    let id_a = s
        .create(&json!({"resourceType": "Patient",
            "identifier": [{"system": "urn:x", "value": a}]}))
        .await;
    let id_b = s
        .create(&json!({"resourceType": "Patient",
            "identifier": [{"system": "urn:x", "value": b}]}))
        .await;
    for (value, id) in [(&a, &id_a), (&b, &id_b)] {
        let r = s
            .get(&format!("Patient?identifier=urn:x|{value}"))
            .await
            .expect(200);
        let ids: Vec<&str> = r.json()["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["resource"]["id"].as_str())
            .map(|_| "")
            .collect();
        assert_eq!(ids.len(), 1, "exactly one match for {}", &value[2995..]);
        assert!(r.text.contains(id.as_str()));
    }
}

async fn nul_in_a_string_a_search_value_or_an_id_is_400_not_500(s: Server) {
    let before = s.version_count().await;
    let ct = [("content-type", "application/fhir+json")];
    let r = s
        .send(
            Method::POST,
            "Patient",
            &ct,
            Some(r#"{"resourceType":"Patient","name":[{"family":"a\u0000b"}]}"#.to_string()),
        )
        .await
        .expect(400);
    assert_eq!(r.expressions(), vec!["Patient.name[0].family"]);
    let r = s.get("Patient?name=a%00b").await.expect(400);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    let r = s.get("Patient/a%00b").await.expect(400);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    s.send(
        Method::PUT,
        "Patient/a%00b",
        &ct,
        Some(r#"{"resourceType":"Patient","id":"a"}"#.to_string()),
    )
    .await
    .expect(400);
    assert_eq!(s.version_count().await, before);
}

async fn duplicate_json_keys_are_refused_even_for_resource_type(s: Server) {
    let before = s.version_count().await;
    let ct = [("content-type", "application/fhir+json")];
    let r = s
        .send(
            Method::POST,
            "Patient",
            &ct,
            Some(r#"{"resourceType":"Patient","resourceType":"Patient","active":true}"#.into()),
        )
        .await
        .expect(400);
    assert_eq!(r.expressions(), vec!["Patient.resourceType"]);
    let r = s
        .send(
            Method::POST,
            "Patient",
            &ct,
            Some(r#"{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}"#.into()),
        )
        .await
        .expect(400);
    assert_eq!(r.expressions(), vec!["Patient.name[0].family"]);
    assert_eq!(s.version_count().await, before);
}

/// A server whose store stops statements after `ms`, on a database holding `n` Patients
/// (loaded through a second server without the timeout); with the id of one of them.
async fn tuned(backend: Backend, ms: u64, n: usize) -> Option<(Server, String)> {
    let options = AppOptions {
        limits: Limits {
            statement_timeout_ms: ms,
            ..Limits::default()
        },
        ..AppOptions::default()
    };
    let (loader, s) = start_pair(
        backend,
        options,
        StoreOptions {
            statement_timeout_ms: ms,
            ..StoreOptions::default()
        },
    )
    .await?;
    let id = load(&loader, n).await;
    Some((s, id))
}

/// Loads `n` Patients with long names in one transaction.
async fn load(s: &Server, n: usize) -> String {
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            json!({"resource": {"resourceType": "Patient",
                "name": [{"family": format!("F{i}{}", "q".repeat(400)), "given": ["G".repeat(300)]}],
                "address": [{"text": "w".repeat(400)}]},
                "request": {"method": "POST", "url": "Patient"}})
        })
        .collect();
    let r = s
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await
        .expect(200);
    let location = r.json()["entry"][0]["response"]["location"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let after = location.split("Patient/").nth(1).unwrap_or_default();
    after.split('/').next().unwrap_or_default().to_string()
}

/// A costly search: three unanchored substring scans over every Patient, counted.
const COSTLY: &str =
    "Patient?name:contains=zz&address:contains=zz&given:contains=zz&_total=accurate";

async fn a_search_past_the_statement_timeout_is_cancelled(backend: Backend) {
    // SQLite checks its deadline every 1000 steps: 0 ms means at the first check
    let ms = if backend == Backend::Sqlite { 0 } else { 1 };
    let Some((s, _)) = tuned(backend, ms, 1000).await else {
        return;
    };
    let r = s.get(COSTLY).await.expect(400);
    let v = r.json();
    assert_eq!(v["issue"][0]["code"], "too-costly", "{}", r.text);
    assert!(r.text.contains("statement-timeout"), "{}", r.text);
    // the server goes on: the read pool was not left with an interrupted connection
    s.get("metadata").await.expect(200);
}

async fn sixteen_hostile_searches_do_not_delay_a_read(backend: Backend) {
    let Some((s, id)) = tuned(backend, 300, 1000).await else {
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let r = s.get(&format!("{COSTLY}&_count={}", 10 + i)).await;
            (r.status.as_u16(), start.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    s.get(&format!("Patient/{id}")).await.expect(200);
    let read = start.elapsed();
    for t in tasks {
        let (status, took) = t.await.expect("task");
        assert!(matches!(status, 200 | 400 | 503), "status {status}");
        assert!(
            took < Duration::from_secs(10),
            "a hostile search took {took:?}"
        );
    }
    assert!(read < Duration::from_secs(1), "a read by id took {read:?}");
}

mod timeouts {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_search_past_the_statement_timeout_is_cancelled() {
        a_search_past_the_statement_timeout_is_cancelled(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_search_past_the_statement_timeout_is_cancelled() {
        a_search_past_the_statement_timeout_is_cancelled(Backend::Postgres).await;
    }

    /// A search blocked on a lock (a statement that would run for as long as the lock is
    /// held) whose client goes away is cancelled by PostgreSQL within seconds: the server
    /// closes its connection instead of returning it to the pool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_a_search_whose_client_left_is_cancelled() {
        use sqlx::Connection;
        let Some((url, dir, schema)) = crate::common::fresh_database(Backend::Postgres).await
        else {
            return;
        };
        let store = healporium::store::open(&url).await.expect("store");
        let s = crate::common::serve(
            Backend::Postgres,
            store,
            &AppOptions::default(),
            dir,
            schema,
        )
        .await;
        s.create(&json!({"resourceType": "Patient", "name": [{"family": "Locked"}]}))
            .await;
        let mut locker = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::query("BEGIN")
            .execute(&mut locker)
            .await
            .expect("begin");
        sqlx::query("LOCK TABLE search_string IN ACCESS EXCLUSIVE MODE")
            .execute(&mut locker)
            .await
            .expect("lock");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .expect("client");
        let gone = client.get(s.url("Patient?family=locked")).send().await;
        assert!(gone.is_err(), "the search waits on the lock");
        let mut observer = sqlx::PgConnection::connect(&url).await.expect("connect");
        let mut left = i64::MAX;
        for _ in 0..50 {
            left = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND wait_event = 'relation' \
                 AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut observer)
            .await
            .expect("activity");
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sqlx::query("ROLLBACK")
            .execute(&mut locker)
            .await
            .expect("rollback");
        assert_eq!(
            left, 0,
            "the abandoned search still waits on the lock after 5 s"
        );
        // and the server goes on
        s.get("Patient?family=locked").await.expect(200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_sixteen_hostile_searches_do_not_delay_a_read() {
        sixteen_hostile_searches_do_not_delay_a_read(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_sixteen_hostile_searches_do_not_delay_a_read() {
        sixteen_hostile_searches_do_not_delay_a_read(Backend::Postgres).await;
    }
}

async fn an_arbitrary_host_header_never_makes_links_or_locations(s: Server) {
    let evil = [
        ("host", "evil.example:8080"),
        ("content-type", "application/fhir+json"),
    ];
    let r = s
        .send(
            Method::POST,
            "Patient",
            &evil,
            Some(json!({"resourceType": "Patient"}).to_string()),
        )
        .await
        .expect(201);
    let location = r.header("location").unwrap_or_default().to_string();
    assert!(!location.contains("evil"), "{location}");
    assert!(
        location.starts_with("http://localhost/fhir/Patient/"),
        "{location}"
    );
    let r = s.get_with("Patient?_count=1", &evil[..1]).await.expect(200);
    assert!(!r.text.contains("evil.example"), "{}", r.text);
    // a loopback Host is trusted as it is (the tests' own links use it)
    let r = s.get("Patient?_count=1").await.expect(200);
    assert!(r.text.contains(&s.base), "{}", r.text);
}

mod bodies {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_authorization_route_answers_413_with_an_outcome_and_bad_forms_with_errors() {
        super::every_auth_route().await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_every_body_route_answers_413_415_and_400_with_an_outcome() {
        super::every_body_route(crate::common::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_every_body_route_answers_413_415_and_400_with_an_outcome() {
        super::every_body_route(crate::common::Backend::Postgres).await;
    }
}

/// Every authorization-server route that takes a body (OAuth endpoints and the browser's sign-in
/// forms): an oversized body is 413 with an OperationOutcome like every other route; a wrong
/// media type or a malformed form gets the error its protocol defines — RFC 6749's JSON
/// `error` for the OAuth endpoints, the error page for the browser forms — never a 5xx or
/// axum's plain text.
async fn every_auth_route() {
    let options = AppOptions {
        max_body_bytes: 2048,
        auth: healporium::app::AuthMode::On,
        ..AppOptions::default()
    };
    let Some((s, _)) =
        crate::common::start_tuned(Backend::Sqlite, options, StoreOptions::default()).await
    else {
        return;
    };
    let client = reqwest::Client::new();
    let oauth = ["token", "introspect", "revoke", "launch"];
    let forms = ["authorize", "login", "consent"];
    for name in oauth.iter().chain(forms.iter()) {
        let url = format!("{}/auth/{name}", s.origin());
        let send = |ct: &'static str, body: String| {
            client
                .post(&url)
                .header("content-type", ct)
                .body(body)
                .send()
        };
        let big = format!("a={}", "x".repeat(5000));
        let r = send("application/x-www-form-urlencoded", big)
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 413, "{name}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["resourceType"], "OperationOutcome", "{name}: {v}");
        assert_eq!(v["issue"][0]["code"], "too-long", "{name}: {v}");
        for (ct, body) in [
            ("text/plain", "x"),
            ("application/x-www-form-urlencoded", "%%%=&&=%zz"),
        ] {
            let r = send(ct, body.to_string()).await.expect("send");
            let status = r.status().as_u16();
            let content_type = r
                .headers()
                .get("content-type")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            let text = r.text().await.unwrap_or_default();
            assert!((400..500).contains(&status), "{name} {ct}: {status} {text}");
            if oauth.contains(name) {
                let v: Value = serde_json::from_str(&text).expect("an OAuth error is JSON");
                assert!(v["error"].is_string(), "{name} {ct}: {text}");
            } else {
                assert!(content_type.starts_with("text/html"), "{name} {ct}: {text}");
                assert!(text.contains("<html"), "{name} {ct}: {text}");
            }
        }
    }
}

/// Every FHIR route that takes a body, with an oversized body (413), a wrong media type
/// (415) and a malformed body (400): each answer is an OperationOutcome.
async fn every_body_route(backend: Backend) {
    let options = AppOptions {
        max_body_bytes: 2048,
        ..AppOptions::default()
    };
    let Some((s, _)) = crate::common::start_tuned(backend, options, StoreOptions::default()).await
    else {
        return;
    };
    let id = s.create(&json!({"resourceType": "Patient"})).await;
    // every route and method of api::router that reads a body (DELETE and GET do not)
    let routes: Vec<(Method, String, &str)> = vec![
        (Method::POST, String::new(), "application/fhir+json"),
        (Method::POST, "/".into(), "application/fhir+json"),
        (Method::POST, "$reindex".into(), "application/fhir+json"),
        (
            Method::POST,
            "_search".into(),
            "application/x-www-form-urlencoded",
        ),
        (Method::POST, "Patient".into(), "application/fhir+json"),
        (
            Method::PUT,
            "Patient?identifier=x".into(),
            "application/fhir+json",
        ),
        (
            Method::PATCH,
            "Patient?identifier=x".into(),
            "application/json-patch+json",
        ),
        (
            Method::POST,
            "Patient/_search".into(),
            "application/x-www-form-urlencoded",
        ),
        (
            Method::POST,
            "Patient/$validate".into(),
            "application/fhir+json",
        ),
        (
            Method::PUT,
            format!("Patient/{id}"),
            "application/fhir+json",
        ),
        (
            Method::PATCH,
            format!("Patient/{id}"),
            "application/json-patch+json",
        ),
        (
            Method::POST,
            format!("Patient/{id}/$validate"),
            "application/fhir+json",
        ),
        (
            Method::POST,
            format!("Patient/{id}/$meta-add"),
            "application/fhir+json",
        ),
        (
            Method::POST,
            format!("Patient/{id}/_history/1/$meta-add"),
            "application/fhir+json",
        ),
    ];
    let is_outcome = |r: &crate::common::Reply| {
        serde_json::from_str::<Value>(&r.text)
            .is_ok_and(|v| v["resourceType"] == "OperationOutcome")
    };
    for (method, path, ct) in routes {
        let big = format!(
            "{{\"resourceType\":\"Patient\",\"text\":\"{}\"}}",
            "x".repeat(4096)
        );
        let r = s
            .send(method.clone(), &path, &[("content-type", ct)], Some(big))
            .await;
        assert_eq!(r.status.as_u16(), 413, "{method} {path}: {}", r.text);
        assert!(is_outcome(&r), "{method} {path} 413: {}", r.text);
        let r = s
            .send(
                method.clone(),
                &path,
                &[("content-type", "text/plain")],
                Some("{}".into()),
            )
            .await;
        assert_eq!(r.status.as_u16(), 415, "{method} {path}: {}", r.text);
        assert!(is_outcome(&r), "{method} {path} 415: {}", r.text);
        let r = s
            .send(
                method.clone(),
                &path,
                &[("content-type", ct)],
                Some("{\"resourceType\":".into()),
            )
            .await;
        assert!(
            matches!(r.status.as_u16(), 400 | 422),
            "{method} {path}: {} {}",
            r.status,
            r.text
        );
        assert!(is_outcome(&r), "{method} {path} malformed: {}", r.text);
    }
}
