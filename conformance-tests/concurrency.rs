//! Concurrent writers never lose an update: parallel read-modify-write loops with If-Match
//! retries end with every increment applied and one version per increment.

use crate::backends;
use crate::common::Server;
use serde_json::json;
use std::sync::Arc;

backends!(
    parallel_if_match_updates_lose_nothing,
    parallel_blind_updates_serialize
);

const WRITERS: usize = 6;
const INCREMENTS: usize = 5;

async fn parallel_if_match_updates_lose_nothing(s: Server) {
    let id = s
        .create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "counter"}, "valueInteger": 0}))
        .await;
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let s = s.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("Observation/{id}");
            let mut conflicts = 0;
            for _ in 0..INCREMENTS {
                loop {
                    let r = s.get(&path).await.expect(200);
                    let etag = r.etag().unwrap().to_string();
                    let mut body = r.json();
                    let n = body["valueInteger"].as_i64().unwrap();
                    body["valueInteger"] = json!(n + 1);
                    let w = s.put_with(&path, &body, &[("if-match", &etag)]).await;
                    match w.status.as_u16() {
                        200 => break,
                        412 => conflicts += 1,
                        other => panic!("unexpected {other}: {}", w.text),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let total = (WRITERS * INCREMENTS) as i64;
    let r = s.get(&format!("Observation/{id}")).await.expect(200);
    assert_eq!(
        r.json()["valueInteger"],
        total,
        "no increment lost ({conflicts} conflicts retried)"
    );
    assert_eq!(r.etag(), Some(format!("W/\"{}\"", total + 1).as_str()));
    let h = s
        .get(&format!("Observation/{id}/_history?_count=1000"))
        .await
        .json();
    assert_eq!(h["total"], total + 1);
    let mut versions: Vec<i64> = h["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["resource"]["meta"]["versionId"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        (1..=total + 1).collect::<Vec<_>>(),
        "versions are dense and unique"
    );
}

async fn parallel_blind_updates_serialize(s: Server) {
    let s = Arc::new(s);
    s.put(
        "Patient/shared",
        &json!({"resourceType": "Patient", "id": "shared"}),
    )
    .await
    .expect(201);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put("Patient/shared", &json!({"resourceType": "Patient", "id": "shared", "name": [{"family": format!("W{i}")}]}))
                .await
                .expect(200)
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let h = s.get("Patient/shared/_history").await.json();
    assert_eq!(h["total"], 9, "every write became exactly one version");
}
