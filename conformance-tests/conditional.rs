//! Conditional create, update, patch and delete, and conditional references: any search
//! criteria (identifier, _id, strings, dates, tokens, chains), parsed strictly.

use crate::backends;
use crate::common::Server;
use serde_json::json;

backends!(
    conditional_create,
    conditional_update,
    conditional_delete,
    conditional_criteria_errors,
    concurrent_conditional_creates_make_one_resource,
    conditional_with_any_criteria,
);

fn patient(system: &str, value: &str) -> serde_json::Value {
    json!({"resourceType": "Patient", "identifier": [{"system": system, "value": value}]})
}

async fn conditional_create(s: Server) {
    let body = patient("http://hospital/mrn", "123");
    let h = [("if-none-exist", "identifier=http://hospital/mrn|123")];
    let first = s.post_with("Patient", &body, &h).await.expect(201);
    let id = first.json()["id"].as_str().unwrap().to_string();
    let again = s.post_with("Patient", &body, &h).await.expect(200);
    assert_eq!(
        again.json()["id"],
        id.as_str(),
        "one match returns the existing resource"
    );
    assert_eq!(again.etag(), Some("W/\"1\""));
    assert_eq!(s.get("Patient/_history").await.json()["total"], 1);
    // other identifier forms
    s.post_with("Patient", &body, &[("if-none-exist", "identifier=123")])
        .await
        .expect(200);
    s.post_with(
        "Patient",
        &body,
        &[("if-none-exist", "identifier=http://hospital/mrn|")],
    )
    .await
    .expect(200);
    s.post_with("Patient", &body, &[("if-none-exist", &format!("_id={id}"))])
        .await
        .expect(200);
    s.post_with(
        "Patient",
        &body,
        &[(
            "if-none-exist",
            "Patient?identifier=http://hospital/mrn|123",
        )],
    )
    .await
    .expect(200);
    // a second resource with the same identifier makes the criteria ambiguous
    s.post("Patient", &body).await.expect(201);
    s.post_with("Patient", &body, &h).await.expect(412);
    // identifiers without a system match `|value`
    s.post_with(
        "Patient",
        &json!({"resourceType": "Patient", "identifier": [{"value": "nosys"}]}),
        &[("if-none-exist", "identifier=|nosys")],
    )
    .await
    .expect(201);
    s.post_with(
        "Patient",
        &json!({"resourceType": "Patient", "identifier": [{"value": "nosys"}]}),
        &[("if-none-exist", "identifier=|nosys")],
    )
    .await
    .expect(200);
    // deleted resources do not match
    let lonely = s
        .post_with(
            "Patient",
            &patient("s", "gone"),
            &[("if-none-exist", "identifier=s|gone")],
        )
        .await
        .expect(201);
    let lonely = lonely.json()["id"].as_str().unwrap().to_string();
    s.delete(&format!("Patient/{lonely}")).await.expect(204);
    s.post_with(
        "Patient",
        &patient("s", "gone"),
        &[("if-none-exist", "identifier=s|gone")],
    )
    .await
    .expect(201);
}

async fn conditional_update(s: Server) {
    // no match, no id: created
    let r = s
        .put("Patient?identifier=s|1", &patient("s", "1"))
        .await
        .expect(201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    // one match: updated
    let mut body = patient("s", "1");
    body["active"] = json!(true);
    let r = s.put("Patient?identifier=s|1", &body).await.expect(200);
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.etag(), Some("W/\"2\""));
    // one match, different id in the body
    let mut wrong = body.clone();
    wrong["id"] = json!("other");
    s.put("Patient?identifier=s|1", &wrong).await.expect(400);
    // no match, client id: update-as-create
    let mut with_id = patient("s", "2");
    with_id["id"] = json!("chosen");
    s.put("Patient?identifier=s|2", &with_id).await.expect(201);
    s.get("Patient/chosen").await.expect(200);
    // no match, but the id is taken by a resource the criteria do not match
    let mut taken = patient("s", "3");
    taken["id"] = json!("chosen");
    s.put("Patient?identifier=s|3", &taken).await.expect(409);
    // several matches
    s.post("Patient", &patient("s", "1")).await.expect(201);
    s.put("Patient?identifier=s|1", &body).await.expect(412);
    // If-Match applies to the matched resource
    s.put_with("Patient?_id=chosen", &with_id, &[("if-match", "W/\"9\"")])
        .await
        .expect(412);
}

async fn conditional_delete(s: Server) {
    let id = s.create(&patient("s", "del")).await;
    s.delete("Patient?identifier=s|nothing").await.expect(204);
    s.delete("Patient?identifier=s|del").await.expect(204);
    s.get(&format!("Patient/{id}")).await.expect(410);
    s.create(&patient("s", "two")).await;
    s.create(&patient("s", "two")).await;
    s.delete("Patient?identifier=s|two").await.expect(412);
    assert_eq!(
        s.get("Patient/_history").await.json()["total"],
        4,
        "the refused delete wrote nothing"
    );
}

async fn conditional_criteria_errors(s: Server) {
    // unknown parameters are errors in criteria (ignoring one could match the wrong resource)
    s.put("Patient?bogus=smith", &patient("s", "1"))
        .await
        .expect(400);
    s.put("Patient?name:nope=smith", &patient("s", "1"))
        .await
        .expect(400);
    s.put("Patient", &patient("s", "1")).await.expect(400);
    s.delete("Patient").await.expect(400);
    s.post_with(
        "Patient",
        &patient("s", "1"),
        &[("if-none-exist", "family:bogus=x")],
    )
    .await
    .expect(400);
    s.delete("Parameters?identifier=x").await.expect(400);
}

async fn concurrent_conditional_creates_make_one_resource(s: Server) {
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.post_with(
                "Patient",
                &patient("race", "1"),
                &[("if-none-exist", "identifier=race|1")],
            )
            .await
            .status
            .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|&&c| c == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&c| c == 200 || c == 201),
        "{statuses:?}"
    );
    assert_eq!(s.get("Patient/_history").await.json()["total"], 1);
}

async fn conditional_with_any_criteria(s: Server) {
    let ann = json!({"resourceType": "Patient", "name": [{"family": "Ångström", "given": ["Ann"]}],
        "birthDate": "1970-03-04", "gender": "female"});
    let h = [("if-none-exist", "family=angstrom&birthdate=1970-03-04")];
    let created = s.post_with("Patient", &ann, &h).await.expect(201);
    let id = created.json()["id"].as_str().unwrap().to_string();
    s.post_with("Patient", &ann, &h).await.expect(200);
    // a string + date criterion that does not match creates
    s.post_with(
        "Patient",
        &ann,
        &[("if-none-exist", "family=angstrom&birthdate=1971")],
    )
    .await
    .expect(201);
    // conditional update by gender + birthdate (one match)
    let mut updated = ann.clone();
    updated["active"] = json!(true);
    s.put("Patient?gender=female&family:exact=Ångström", &updated)
        .await
        .expect(412); // two female Ångströms now
    s.put(&format!("Patient?_id={id}&birthdate=1970"), &updated)
        .await
        .expect(200);
    // a chained criterion in a conditional reference inside a transaction
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient?active=true&birthdate=1970-03-04"}});
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs, "request": {"method": "POST", "url": "Observation"}}]});
    let r = s.post("", &tx).await.expect(200);
    let loc = r.json()["entry"][0]["response"]["location"]
        .as_str()
        .unwrap()
        .to_string();
    let obs_id = loc
        .split("Observation/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let stored = s
        .get(&format!("Observation/{obs_id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(stored["subject"]["reference"], format!("Patient/{id}"));
    // conditional delete with a chain: the Observation whose subject is active
    s.delete("Observation?subject:Patient.active=true")
        .await
        .expect(204);
    s.get(&format!("Observation/{obs_id}")).await.expect(410);
}
