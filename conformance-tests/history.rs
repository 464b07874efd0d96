//! history at instance, type and system level: Bundle type history, newest first, deletes,
//! `_since`, `_count`, and paging links that stay correct while others write.

use crate::backends;
use crate::common::Server;
use serde_json::{Value, json};

backends!(
    instance_history_lists_every_version_newest_first,
    type_and_system_history,
    since_filters_by_time,
    paging_follows_links_under_concurrent_writes,
    bad_history_parameters,
);

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str().map(str::to_string))
}

/// `http://host/fhir/x?y` → `x?y`, for the test client.
fn relative(s: &Server, url: &str) -> String {
    url.strip_prefix(&s.base)
        .expect("link under the base")
        .trim_start_matches('/')
        .to_string()
}

async fn instance_history_lists_every_version_newest_first(s: Server) {
    let id = s
        .create(&json!({"resourceType": "Patient", "active": true}))
        .await;
    let p = format!("Patient/{id}");
    s.put(
        &p,
        &json!({"resourceType": "Patient", "id": id, "active": false}),
    )
    .await
    .expect(200);
    s.delete(&p).await.expect(204);
    let h = s.get(&format!("{p}/_history")).await.expect(200).json();
    assert_eq!(h["resourceType"], "Bundle");
    assert_eq!(h["type"], "history");
    assert_eq!(h["total"], 3);
    let e = h["entry"].as_array().unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0]["request"]["method"], "DELETE");
    assert!(e[0].get("resource").is_none());
    assert_eq!(e[0]["response"]["etag"], "W/\"3\"");
    assert_eq!(e[1]["request"]["method"], "PUT");
    assert_eq!(e[1]["request"]["url"], format!("Patient/{id}"));
    assert_eq!(e[1]["resource"]["active"], false);
    assert_eq!(e[2]["request"]["method"], "POST");
    assert_eq!(e[2]["request"]["url"], "Patient");
    assert_eq!(e[2]["response"]["status"], "201 Created");
    assert_eq!(e[2]["fullUrl"], format!("{}/Patient/{id}", s.base));
    assert_eq!(e[2]["resource"]["meta"]["versionId"], "1");
    s.get("Patient/unknown/_history").await.expect(404);
}

async fn type_and_system_history(s: Server) {
    let p = s.create(&json!({"resourceType": "Patient"})).await;
    let o = s
        .create(&json!({"resourceType": "Organization", "name": "Acme"}))
        .await;
    s.put(
        &format!("Patient/{p}"),
        &json!({"resourceType": "Patient", "id": p, "active": true}),
    )
    .await
    .expect(200);
    let t = s.get("Patient/_history").await.expect(200).json();
    assert_eq!(t["total"], 2);
    assert!(
        t["entry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["resource"]["resourceType"] == "Patient")
    );
    let sys = s.get("_history").await.expect(200).json();
    assert_eq!(sys["total"], 3);
    let ids: Vec<&str> = sys["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![p.as_str(), o.as_str(), p.as_str()],
        "newest first"
    );
    let empty = s.get("Claim/_history").await.expect(200).json();
    assert_eq!(empty["total"], 0);
    assert!(empty.get("entry").is_none());
}

async fn since_filters_by_time(s: Server) {
    let a = s.create(&json!({"resourceType": "Patient"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let since = s.get(&format!("Patient/{a}")).await.json()["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let b = s.create(&json!({"resourceType": "Patient"})).await;
    let h = s
        .get(&format!("Patient/_history?_since={}", urlencode(&since)))
        .await
        .expect(200)
        .json();
    let ids: Vec<&str> = h["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![b.as_str(), a.as_str()],
        "_since includes versions at or after the instant"
    );
    let later = s.get(&format!("Patient/{b}")).await.json()["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .to_string();
    let h = s
        .get(&format!("Patient/_history?_since={}", urlencode(&later)))
        .await
        .expect(200)
        .json();
    assert_eq!(h["total"], 1);
    let h = s.get("_history?_since=2999-01-01").await.expect(200).json();
    assert_eq!(h["total"], 0);
    let self_link = link(&h, "self").unwrap();
    assert!(self_link.contains("_since=2999-01-01"));
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

async fn paging_follows_links_under_concurrent_writes(s: Server) {
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            s.create(&json!({"resourceType": "Patient", "name": [{"family": format!("P{i}")}]}))
                .await,
        );
    }
    let first = s.get("Patient/_history?_count=3").await.expect(200).json();
    assert_eq!(first["total"], 7);
    assert_eq!(first["entry"].as_array().unwrap().len(), 3);
    assert!(link(&first, "previous").is_none());
    // writes after the first page must not shift what the next pages contain
    s.create(&json!({"resourceType": "Patient"})).await;
    let mut seen: Vec<String> = first["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    let mut next = link(&first, "next");
    let mut pages = 1;
    let mut last_page = first.clone();
    while let Some(url) = next {
        let page = s.get(&relative(&s, &url)).await.expect(200).json();
        for e in page["entry"].as_array().into_iter().flatten() {
            seen.push(e["resource"]["id"].as_str().unwrap().to_string());
        }
        assert!(link(&page, "previous").is_some());
        next = link(&page, "next");
        last_page = page;
        pages += 1;
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    let mut expected = created.clone();
    expected.reverse();
    assert_eq!(seen, expected, "every version exactly once, newest first");
    // previous from the last page leads back to the middle page
    let prev = link(&last_page, "previous").unwrap();
    let middle = s.get(&relative(&s, &prev)).await.expect(200).json();
    let mid_ids: Vec<&str> = middle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        mid_ids,
        expected[3..6]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    let zero = s.get("Patient/_history?_count=0").await.expect(200).json();
    assert_eq!(zero["total"], 8);
    assert!(zero.get("entry").is_none());
}

async fn bad_history_parameters(s: Server) {
    s.get("_history?_since=yesterday").await.expect(400);
    s.get("_history?_count=many").await.expect(400);
    s.get("_history?_page=tampered").await.expect(400);
    s.get("_history?_at=2020").await.expect(501);
    s.get("NotAType/_history").await.expect(404);
    s.get("_history?unknown=1").await.expect(200);
}
