//! PATCH with JSON Patch and FHIRPath Patch, including the official FHIRPath Patch cases in
//! ../shared/fhir/patch/fhir-patch-tests.xml and the JSON Patch cases of json-patch-tests.json.

use crate::backends;
use crate::common::fhir_xml::{XmlElement, parse, resource_to_json};
use crate::common::{Server, shared, without_meta};
use serde_json::{Value, json};

const JSON_PATCH: &str = "application/json-patch+json";

backends!(
    json_patch_updates_and_validates,
    patch_errors,
    conditional_patch
);

/// The official cases reference resources they do not define: integrity is off here.
mod lenient {
    use super::official_fhirpath_patch_cases;
    crate::lenient_backends!(official_fhirpath_patch_cases);
}

async fn json_patch_updates_and_validates(s: Server) {
    let id = s
        .create(&json!({"resourceType": "Patient", "name": [{"family": "A"}]}))
        .await;
    let p = format!("Patient/{id}");
    let ops = json!([
        {"op": "replace", "path": "/name/0/family", "value": "B"},
        {"op": "add", "path": "/gender", "value": "female"},
        {"op": "test", "path": "/name/0/family", "value": "B"}
    ]);
    let r = s.patch_with(&p, JSON_PATCH, &ops, &[]).await.expect(200);
    assert_eq!(r.json()["name"][0]["family"], "B");
    assert_eq!(r.json()["gender"], "female");
    assert_eq!(r.etag(), Some("W/\"2\""));
    let h = s.get(&format!("{p}/_history")).await.json();
    assert_eq!(h["entry"][0]["request"]["method"], "PATCH");
    // the patched result is validated: a bad code is 422 and names the element
    let bad = json!([{"op": "replace", "path": "/gender", "value": "nope"}]);
    let r = s.patch_with(&p, JSON_PATCH, &bad, &[]).await.expect(422);
    assert_eq!(r.expressions(), vec!["Patient.gender"]);
    // a failed test op changes nothing
    let failed = json!([{"op": "replace", "path": "/gender", "value": "male"}, {"op": "test", "path": "/name/0/family", "value": "Z"}]);
    s.patch_with(&p, JSON_PATCH, &failed, &[]).await.expect(422);
    assert_eq!(s.get(&p).await.json()["gender"], "female");
    // If-Match
    s.patch_with(&p, JSON_PATCH, &ops, &[("if-match", "W/\"1\"")])
        .await
        .expect(412);
    // changing the id is refused
    let id_change = json!([{"op": "replace", "path": "/id", "value": "other"}]);
    s.patch_with(&p, JSON_PATCH, &id_change, &[])
        .await
        .expect(422);
    assert_eq!(s.get(&p).await.etag(), Some("W/\"2\""));
}

async fn patch_errors(s: Server) {
    let ops = json!([{"op": "add", "path": "/active", "value": true}]);
    s.patch_with("Patient/missing", JSON_PATCH, &ops, &[])
        .await
        .expect(404);
    let id = s.create(&json!({"resourceType": "Patient"})).await;
    let p = format!("Patient/{id}");
    s.patch_with(&p, JSON_PATCH, &json!({"not": "a patch"}), &[])
        .await
        .expect(400);
    s.patch_with(&p, "text/plain", &ops, &[]).await.expect(415);
    s.patch_with(
        &p,
        "application/fhir+json",
        &json!({"resourceType": "Patient"}),
        &[],
    )
    .await
    .expect(400);
    s.delete(&p).await.expect(204);
    s.patch_with(&p, JSON_PATCH, &ops, &[]).await.expect(410);
}

async fn conditional_patch(s: Server) {
    let id = s
        .create(&json!({"resourceType": "Patient", "identifier": [{"system": "s", "value": "p"}]}))
        .await;
    let ops = json!([{"op": "add", "path": "/active", "value": true}]);
    let r = s
        .patch_with("Patient?identifier=s|p", JSON_PATCH, &ops, &[])
        .await
        .expect(200);
    assert_eq!(r.json()["id"], id.as_str());
    s.patch_with("Patient?identifier=s|none", JSON_PATCH, &ops, &[])
        .await
        .expect(404);
}

/// One official case: (name, input, diff, expected output or error).
struct Case {
    name: String,
    input: Value,
    diff: Value,
    output: Option<Value>,
}

fn cases() -> Vec<Case> {
    let text =
        std::fs::read_to_string(shared().join("patch/fhir-patch-tests.xml")).expect("patch tests");
    let roots = parse(&text);
    let tests = roots.iter().find(|r| r.name == "tests").expect("<tests>");
    let first = |el: &XmlElement, name: &str| -> Option<Value> {
        el.child(name)
            .and_then(|c| c.children.first())
            .map(resource_to_json)
    };
    tests
        .children
        .iter()
        .filter(|c| c.name == "case")
        .map(|c| Case {
            name: c.attr("name").unwrap_or("?").to_string(),
            input: first(c, "input").expect("input"),
            diff: first(c, "diff").expect("diff"),
            output: first(c, "output"),
        })
        .collect()
}

/// Narrative divs compare without formatting whitespace.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if k == "div" {
                        Value::String(
                            v.as_str()
                                .unwrap_or("")
                                .split_whitespace()
                                .collect::<Vec<_>>()
                                .join(" ")
                                .replace("&quot;", "\""),
                        )
                    } else {
                        normalize(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        v => v.clone(),
    }
}

async fn official_fhirpath_patch_cases(s: Server) {
    let cases = cases();
    assert_eq!(cases.len(), 33);
    let mut passed = 0;
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let id = format!("case{i}");
        let mut input = case.input.clone();
        input["id"] = json!(id);
        s.put(&format!("Patient/{id}"), &input).await.expect(201);
        let r = s
            .patch_with(
                &format!("Patient/{id}"),
                "application/fhir+json",
                &case.diff,
                &[],
            )
            .await;
        let ok = match &case.output {
            Some(expected) => {
                let got = if r.status.as_u16() == 200 {
                    Some(r.json())
                } else {
                    None
                };
                got.is_some_and(|g| {
                    normalize(&without_meta(&g)) == normalize(&without_meta(expected))
                })
            }
            None => r.status.as_u16() == 422,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!("{}: {} {}", case.name, r.status, r.text));
        }
    }
    assert!(
        failures.is_empty(),
        "{passed}/33 official FHIRPath Patch cases pass; failing:\n{}",
        failures.join("\n")
    );
}

#[test]
fn official_json_patch_cases_hold_for_the_patch_engine() {
    // The server's JSON Patch engine (json-patch) against the official JSON Patch cases.
    let text =
        std::fs::read_to_string(shared().join("patch/json-patch-tests.json")).expect("cases");
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 16);
    for c in cases {
        let mut doc = c["doc"].clone();
        let patch: Result<json_patch::Patch, _> = serde_json::from_value(c["patch"].clone());
        let result = patch
            .map_err(|e| e.to_string())
            .and_then(|p| json_patch::patch(&mut doc, &p).map_err(|e| e.to_string()));
        match c.get("expected") {
            Some(expected) => {
                assert!(result.is_ok(), "{}: {result:?}", c["comment"]);
                assert_eq!(&doc, expected, "{}", c["comment"]);
            }
            None => assert!(result.is_err(), "{} should fail", c["comment"]),
        }
    }
}
