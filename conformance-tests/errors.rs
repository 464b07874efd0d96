//! Every error is an OperationOutcome with the right status, and a failed request leaves the
//! store exactly as it was.

use crate::backends;
use crate::common::{Backend, Server, start_with};
use healporium::app::AppOptions;
use reqwest::Method;
use serde_json::json;

backends!(
    malformed_requests_get_operation_outcomes,
    validation_reports_every_issue_with_expressions,
    failed_writes_leave_the_store_unchanged,
    unknown_routes_and_methods,
);

async fn malformed_requests_get_operation_outcomes(s: Server) {
    let ct = [("content-type", "application/fhir+json")];
    for (body, status) in [
        ("{\"resourceType\": \"Patient\", ", 400),
        ("[1, 2]", 400),
        ("", 400),
        ("\"text\"", 400),
        ("{\"resourceType\": \"Observation\"}", 400),
        ("{\"resourceType\": \"Nope\"}", 400),
        ("{\"active\": true}", 400),
    ] {
        s.send(Method::POST, "Patient", &ct, Some(body.to_string()))
            .await
            .expect(status);
    }
    s.post("NotAType", &json!({"resourceType": "NotAType"}))
        .await
        .expect(404);
    s.post("patient", &json!({"resourceType": "Patient"}))
        .await
        .expect(404);
}

async fn validation_reports_every_issue_with_expressions(s: Server) {
    let r = s
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "gender": "unknown-gender",
            "birthDate": "1990-02-30", "name": [{"given": ["A"], "use": "nickname-x"}],
            "contact": [{"gender": "x"}]}),
        )
        .await
        .expect(422);
    let mut e = r.expressions();
    e.sort();
    assert_eq!(
        e,
        vec![
            "Patient.birthDate",
            "Patient.contact[0].gender",
            "Patient.gender",
            "Patient.name[0].use"
        ]
    );
    for issue in r.json()["issue"].as_array().unwrap() {
        assert_eq!(issue["severity"], "error");
    }
    let r = s
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "unknownThing": 1, "name": {"family": "x"}}),
        )
        .await
        .expect(400);
    let mut e = r.expressions();
    e.sort();
    assert_eq!(e, vec!["Patient.name", "Patient.unknownThing"]);
    let r = s
        .post(
            "Observation",
            &json!({"resourceType": "Observation", "code": {"text": "x"}}),
        )
        .await
        .expect(422);
    assert_eq!(r.expressions(), vec!["Observation.status"]);
    let r = s
        .post(
            "Observation",
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "valueString": "a", "valueInteger": 1}),
        )
        .await
        .expect(422);
    assert_eq!(r.expressions(), vec!["Observation.value"]);
    let r = s
        .post("Patient", &json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "name": 5}]}))
        .await
        .expect(400);
    assert_eq!(r.expressions(), vec!["Patient.contained[0].name"]);
}

async fn failed_writes_leave_the_store_unchanged(s: Server) {
    let id = s
        .create(&json!({"resourceType": "Patient", "active": true}))
        .await;
    let p = format!("Patient/{id}");
    let before = s.version_count().await;
    let before_body = s.get(&p).await.text;
    s.put(
        &p,
        &json!({"resourceType": "Patient", "id": id, "gender": "bad"}),
    )
    .await
    .expect(422);
    s.put(
        &p,
        &json!({"resourceType": "Patient", "id": id, "bogus": 1}),
    )
    .await
    .expect(400);
    s.put_with(
        &p,
        &json!({"resourceType": "Patient", "id": id}),
        &[("if-match", "W/\"5\"")],
    )
    .await
    .expect(412);
    s.post(
        "Patient",
        &json!({"resourceType": "Patient", "gender": "bad"}),
    )
    .await
    .expect(422);
    s.patch_with(
        &p,
        "application/json-patch+json",
        &json!([{"op": "remove", "path": "/nothing"}]),
        &[],
    )
    .await
    .expect(422);
    assert_eq!(s.version_count().await, before);
    assert_eq!(s.get(&p).await.text, before_body);
}

async fn unknown_routes_and_methods(s: Server) {
    s.send(Method::POST, "Patient/1", &[], None)
        .await
        .expect(405);
    s.send(Method::DELETE, "metadata", &[], None)
        .await
        .expect(405);
    s.get("Patient/1/_history/1/extra").await.expect(404);
    let outside = s
        .client
        .get(s.base.replace("/fhir", "/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status().as_u16(), 404);
    let v: serde_json::Value = outside.json().await.unwrap();
    assert_eq!(v["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let options = AppOptions {
            max_body_bytes: 4096,
            ..AppOptions::default()
        };
        let Some(s) = start_with(backend, options).await else {
            continue;
        };
        let big = json!({"resourceType": "Patient", "name": [{"text": "x".repeat(10_000)}]});
        s.post("Patient", &big).await.expect(413);
        s.post("Patient", &json!({"resourceType": "Patient"}))
            .await
            .expect(201);
        assert_eq!(s.version_count().await, 1);
    }
}
