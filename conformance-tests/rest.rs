//! The instance and type interactions of http.html: read, vread, create, update (and
//! update-as-create), delete, conditional read, If-Match, Prefer, formats and headers.

use crate::backends;
use crate::common::{FHIR_JSON, Server};
use serde_json::{Value, json};

backends!(
    discovery_and_cors_without_authorization,
    create_assigns_id_and_headers,
    read_and_vread,
    update_makes_versions,
    update_as_create_with_client_id,
    update_rejects_bad_ids,
    noop_update_makes_no_version,
    delete_is_logical_and_idempotent,
    conditional_read,
    if_match_versioned_update,
    prefer_return,
    formats_and_content_types,
    decimals_round_trip_exactly,
    every_type_is_served,
);

async fn create_assigns_id_and_headers(s: Server) {
    let r = s
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "id": "client-chosen", "active": true}),
        )
        .await
        .expect(201);
    let body = r.json();
    let id = body["id"].as_str().unwrap();
    assert_ne!(id, "client-chosen", "a create ignores the body id");
    assert_eq!(body["meta"]["versionId"], "1");
    assert!(body["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r.etag(), Some("W/\"1\""));
    assert_eq!(
        r.header("location"),
        Some(format!("{}/Patient/{id}/_history/1", s.base).as_str())
    );
    assert!(r.header("last-modified").unwrap().ends_with("GMT"));
    assert_eq!(
        r.header("content-type"),
        Some("application/fhir+json; charset=utf-8")
    );
    assert!(r.header("x-request-id").is_some());
    s.get("Patient/client-chosen").await.expect(404);
}

async fn read_and_vread(s: Server) {
    let id = s
        .create(&json!({"resourceType": "Patient", "active": true}))
        .await;
    let r = s.get(&format!("Patient/{id}")).await.expect(200);
    assert_eq!(r.etag(), Some("W/\"1\""));
    assert!(r.header("last-modified").is_some());
    assert_eq!(r.json()["active"], true);
    s.put(
        &format!("Patient/{id}"),
        &json!({"resourceType": "Patient", "id": id, "active": false}),
    )
    .await
    .expect(200);
    let v1 = s.get(&format!("Patient/{id}/_history/1")).await.expect(200);
    assert_eq!(v1.json()["active"], true);
    assert_eq!(v1.etag(), Some("W/\"1\""));
    let v2 = s.get(&format!("Patient/{id}/_history/2")).await.expect(200);
    assert_eq!(v2.json()["active"], false);
    s.get(&format!("Patient/{id}/_history/3")).await.expect(404);
    s.get(&format!("Patient/{id}/_history/x")).await.expect(404);
    s.get("Patient/nope").await.expect(404);
    s.get("Patient/nope/_history/1").await.expect(404);
    s.get("Observation/bad$id").await.expect(400);
    s.get("NotAType/1").await.expect(404);
    s.get(&format!("Observation/{id}")).await.expect(404);
}

async fn update_makes_versions(s: Server) {
    let id = s
        .create(&json!({"resourceType": "Patient", "gender": "male"}))
        .await;
    let r = s
        .put(&format!("Patient/{id}"), &json!({"resourceType": "Patient", "id": id, "gender": "female",
            "meta": {"versionId": "77", "lastUpdated": "2001-01-01T00:00:00Z", "tag": [{"code": "keep"}]}}))
        .await
        .expect(200);
    let body = r.json();
    assert_eq!(
        body["meta"]["versionId"], "2",
        "the server ignores a client versionId"
    );
    assert_ne!(body["meta"]["lastUpdated"], "2001-01-01T00:00:00Z");
    assert_eq!(body["meta"]["tag"][0]["code"], "keep");
    assert_eq!(r.etag(), Some("W/\"2\""));
    assert_eq!(
        r.header("location"),
        Some(format!("{}/Patient/{id}/_history/2", s.base).as_str())
    );
}

async fn update_as_create_with_client_id(s: Server) {
    let r = s
        .put(
            "Patient/pat-1",
            &json!({"resourceType": "Patient", "id": "pat-1"}),
        )
        .await
        .expect(201);
    assert_eq!(r.json()["id"], "pat-1");
    assert_eq!(r.etag(), Some("W/\"1\""));
    s.get("Patient/pat-1").await.expect(200);
    // an update after a delete brings the resource back as a new version
    s.delete("Patient/pat-1").await.expect(204);
    let r = s
        .put(
            "Patient/pat-1",
            &json!({"resourceType": "Patient", "id": "pat-1"}),
        )
        .await
        .expect(201);
    assert_eq!(r.etag(), Some("W/\"3\""));
}

async fn update_rejects_bad_ids(s: Server) {
    let r = s
        .put("Patient/a", &json!({"resourceType": "Patient", "id": "b"}))
        .await
        .expect(400);
    assert_eq!(r.expressions(), vec!["Patient.id"]);
    s.put("Patient/a", &json!({"resourceType": "Patient"}))
        .await
        .expect(400);
    let r = s
        .put(
            "Patient/a",
            &json!({"resourceType": "Observation", "id": "a"}),
        )
        .await
        .expect(400);
    assert_eq!(r.expressions(), vec!["resourceType"]);
    s.put(
        "Patient/bad%20id",
        &json!({"resourceType": "Patient", "id": "bad id"}),
    )
    .await
    .expect(400);
    s.get("Patient/a").await.expect(404);
}

async fn noop_update_makes_no_version(s: Server) {
    let body = json!({"resourceType": "Patient", "name": [{"family": "Same"}]});
    let id = s.create(&body).await;
    let mut same = body.clone();
    same["id"] = json!(id);
    let r = s.put(&format!("Patient/{id}"), &same).await.expect(200);
    assert_eq!(
        r.etag(),
        Some("W/\"1\""),
        "identical content makes no new version"
    );
    let h = s
        .get(&format!("Patient/{id}/_history"))
        .await
        .expect(200)
        .json();
    assert_eq!(h["total"], 1);
    // key order does not matter, content does
    let reordered = json!({"name": [{"family": "Same"}], "id": id, "resourceType": "Patient"});
    s.put(&format!("Patient/{id}"), &reordered)
        .await
        .expect(200);
    assert_eq!(
        s.get(&format!("Patient/{id}")).await.etag(),
        Some("W/\"1\"")
    );
}

async fn delete_is_logical_and_idempotent(s: Server) {
    let id = s.create(&json!({"resourceType": "Patient"})).await;
    let r = s.delete(&format!("Patient/{id}")).await.expect(204);
    assert_eq!(r.etag(), Some("W/\"2\""));
    assert!(r.text.is_empty());
    assert_eq!(r.header("content-type"), None, "a 204 has no Content-Type");
    s.get(&format!("Patient/{id}")).await.expect(410);
    s.get(&format!("Patient/{id}/_history/2")).await.expect(410);
    s.get(&format!("Patient/{id}/_history/1")).await.expect(200);
    let before = s.version_count().await;
    s.delete(&format!("Patient/{id}")).await.expect(204);
    s.delete("Patient/never-existed").await.expect(204);
    assert_eq!(
        s.version_count().await,
        before,
        "repeated deletes write nothing"
    );
    s.delete("NotAType/1").await.expect(404);
}

async fn conditional_read(s: Server) {
    let id = s.create(&json!({"resourceType": "Patient"})).await;
    let path = format!("Patient/{id}");
    let r = s.get_with(&path, &[("if-none-match", "W/\"1\"")]).await;
    assert_eq!(r.status.as_u16(), 304);
    assert!(r.text.is_empty());
    assert_eq!(r.etag(), Some("W/\"1\""));
    s.get_with(&path, &[("if-none-match", "W/\"0\"")])
        .await
        .expect(200);
    s.get_with(&path, &[("if-none-match", "*")])
        .await
        .expect(304);
    let lm = s
        .get(&path)
        .await
        .header("last-modified")
        .unwrap()
        .to_string();
    s.get_with(&path, &[("if-modified-since", &lm)])
        .await
        .expect(304);
    s.get_with(
        &path,
        &[("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT")],
    )
    .await
    .expect(200);
    s.get_with(&path, &[("if-modified-since", "not a date")])
        .await
        .expect(200);
    // If-None-Match decides alone when both are present
    s.get_with(
        &path,
        &[("if-none-match", "W/\"9\""), ("if-modified-since", &lm)],
    )
    .await
    .expect(200);
}

async fn if_match_versioned_update(s: Server) {
    let id = s.create(&json!({"resourceType": "Patient"})).await;
    let path = format!("Patient/{id}");
    let body = json!({"resourceType": "Patient", "id": id, "active": true});
    s.put_with(&path, &body, &[("if-match", "W/\"1\"")])
        .await
        .expect(200);
    let stale = json!({"resourceType": "Patient", "id": id, "active": false});
    s.put_with(&path, &stale, &[("if-match", "W/\"1\"")])
        .await
        .expect(412);
    assert_eq!(
        s.get(&path).await.json()["active"],
        true,
        "a stale update changes nothing"
    );
    s.put_with(&path, &stale, &[("if-match", "garbage")])
        .await
        .expect(400);
    s.put_with(
        "Patient/new-one",
        &json!({"resourceType": "Patient", "id": "new-one"}),
        &[("if-match", "W/\"1\"")],
    )
    .await
    .expect(412);
    let d = s
        .send(
            reqwest::Method::DELETE,
            &path,
            &[("if-match", "W/\"1\"")],
            None,
        )
        .await;
    assert_eq!(d.status.as_u16(), 412);
    let d = s
        .send(
            reqwest::Method::DELETE,
            &path,
            &[("if-match", "W/\"2\"")],
            None,
        )
        .await;
    assert_eq!(d.status.as_u16(), 204);
}

async fn prefer_return(s: Server) {
    let body = json!({"resourceType": "Patient"});
    let r = s
        .post_with("Patient", &body, &[("prefer", "return=minimal")])
        .await
        .expect(201);
    assert!(r.text.is_empty());
    assert!(r.header("location").is_some());
    assert!(r.etag().is_some());
    let r = s
        .post_with("Patient", &body, &[("prefer", "return=OperationOutcome")])
        .await
        .expect(201);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    let r = s
        .post_with("Patient", &body, &[("prefer", "return=representation")])
        .await
        .expect(201);
    assert_eq!(r.json()["resourceType"], "Patient");
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = s
        .send(
            reqwest::Method::DELETE,
            &format!("Patient/{id}"),
            &[("prefer", "return=OperationOutcome")],
            None,
        )
        .await
        .expect(200);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
}

async fn formats_and_content_types(s: Server) {
    let id = s
        .create(&json!({"resourceType": "Patient", "active": true}))
        .await;
    let path = format!("Patient/{id}");
    let r = s.get(&format!("{path}?_pretty=true")).await.expect(200);
    assert!(r.text.contains("\n  \"resourceType\""));
    s.get(&format!("{path}?_format=json")).await.expect(200);
    s.get(&format!("{path}?_format=application/fhir%2Bjson"))
        .await
        .expect(200);
    s.get(&format!("{path}?_format=xml")).await.expect(406);
    s.get_with(&path, &[("accept", "application/fhir+xml")])
        .await
        .expect(406);
    s.get_with(
        &path,
        &[("accept", "application/fhir+json; fhirVersion=4.0")],
    )
    .await
    .expect(200);
    s.get_with(
        &path,
        &[("accept", "application/fhir+json; fhirVersion=4.3")],
    )
    .await
    .expect(200);
    s.get_with(
        &path,
        &[("accept", "application/fhir+json; fhirVersion=5.0")],
    )
    .await
    .expect(406);
    let r = s
        .get_with(&path, &[("accept", "application/json")])
        .await
        .expect(200);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    s.get_with(&path, &[("accept", "text/html,*/*;q=0.8")])
        .await
        .expect(200);
    let body = json!({"resourceType": "Patient"}).to_string();
    for (ct, status) in [
        ("application/json", 201),
        ("application/fhir+json; charset=utf-8", 201),
        ("application/fhir+json; fhirVersion=4.3", 201),
        ("application/fhir+json; fhirVersion=3.0", 415),
        ("application/xml", 415),
        ("text/plain", 415),
        ("application/fhir+json; charset=latin1", 415),
    ] {
        let r = s
            .send(
                reqwest::Method::POST,
                "Patient",
                &[("content-type", ct)],
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status.as_u16(), status, "{ct}");
    }
    s.send(reqwest::Method::POST, "Patient", &[], Some(body))
        .await
        .expect(415);
    assert_eq!(FHIR_JSON, "application/fhir+json");
}

async fn decimals_round_trip_exactly(s: Server) {
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"weight"},"valueQuantity":{"value":135.50,"unit":"kg"},"component":[{"code":{"text":"x"},"valueQuantity":{"value":1.0E+2}},{"code":{"text":"y"},"valueQuantity":{"value":0.000000000000000000001}}]}"#;
    let r = s
        .send(
            reqwest::Method::POST,
            "Observation",
            &[("content-type", FHIR_JSON)],
            Some(text.to_string()),
        )
        .await
        .expect(201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let back = s.get(&format!("Observation/{id}")).await.expect(200);
    assert!(back.text.contains(r#""value":135.50"#), "{}", back.text);
    // digits and scale are kept; serde_json writes the exponent marker in lower case
    assert!(back.text.contains(r#""value":1.0e+2"#), "{}", back.text);
    assert!(
        back.text.contains(r#""value":0.000000000000000000001"#),
        "{}",
        back.text
    );
    let pretty = s
        .get(&format!("Observation/{id}?_pretty=true"))
        .await
        .expect(200);
    assert!(pretty.text.contains("135.50"));
}

async fn every_type_is_served(s: Server) {
    // every R4 resource type accepts the interactions (a minimal valid instance each)
    let defs = healporium::fhir::definitions::Definitions::r4();
    let mut served = 0;
    for t in defs.resource_types() {
        let r = s.get(&format!("{t}/x")).await.expect(404);
        let issue = &r.json()["issue"][0];
        assert_eq!(issue["code"], "not-found", "{t} is a known type");
        let r = s.get(&format!("{t}/_history")).await.expect(200);
        assert_eq!(r.json()["type"], "history");
        served += 1;
    }
    assert_eq!(served, 146);
    let _: Value = s.get("metadata").await.expect(200).json();
}

/// With authorization off, the smart-configuration says so, unknown discovery documents are
/// plain 404s, and browser preflights are answered.
async fn discovery_and_cors_without_authorization(s: Server) {
    let doc = s
        .get(".well-known/smart-configuration")
        .await
        .expect(200)
        .json();
    assert_eq!(doc["authorization_required"], false, "{doc}");
    assert!(doc.get("token_endpoint").is_none());
    assert_eq!(doc["capabilities"], json!([]));
    let r = s.get(".well-known/udap").await.expect(404);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    assert!(r.text.contains("No such discovery document"), "{}", r.text);
    s.post(".well-known/smart-configuration", &json!({}))
        .await
        .expect(405);
    let pre = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, s.url("Patient/x"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type, if-match")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 200);
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    let got = reqwest::Client::new()
        .get(s.url("metadata"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["access-control-allow-origin"], "*");
    assert!(
        got.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("etag")
    );
}
