//! `$everything`, `$validate`, `$meta`, `$meta-add`, `$meta-delete`.

use crate::backends;
use crate::common::Server;
use serde_json::{Value, json};
use std::collections::BTreeSet;

backends!(
    everything,
    everything_paging_and_filters,
    validate,
    meta_operations,
    every_operation_in_the_table_is_reachable_and_advertised
);

/// The operation table is the one source: every operation it lists answers through the
/// router at each of its levels (whatever the outcome, never "not an operation of this
/// server"), is advertised in the CapabilityStatement at those levels and no other, and its
/// OperationDefinition is served at `OperationDefinition/[id]`; every advertised operation is
/// in the table.
async fn every_operation_in_the_table_is_reachable_and_advertised(s: Server) {
    use healporium::interaction::operation::{Level, OPERATIONS};
    let pid = s
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Op"}]}))
        .await;
    let cs = s.get("metadata").await.expect(200).json();
    let rest = &cs["rest"][0];
    let advertised_at = |t: Option<&str>| -> BTreeSet<String> {
        let ops = match t {
            None => &rest["operation"],
            Some(t) => &rest["resource"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["type"] == t)
                .unwrap()["operation"],
        };
        ops.as_array()
            .unwrap()
            .iter()
            .map(|o| o["definition"].as_str().unwrap().to_string())
            .collect()
    };
    let mut in_table = BTreeSet::new();
    for op in OPERATIONS {
        in_table.insert(op.canonical.to_string());
        for level in op.levels {
            let t = op.types.map_or("Patient", |t| t[0]);
            let path = match level {
                Level::System => format!("${}", op.name),
                Level::Type => format!("{t}/${}", op.name),
                Level::Instance => format!("{t}/{pid}/${}", op.name),
            };
            let r = s.post(&path, &json!({"resourceType": "Parameters"})).await;
            assert!(
                !r.text.contains("is not an operation of this server"),
                "{path}: unreachable: {}",
                r.text
            );
            assert!(
                !r.status.is_server_error(),
                "{path}: {} {}",
                r.status,
                r.text
            );
            let scope = match level {
                Level::System => None,
                _ => Some(t),
            };
            assert!(
                advertised_at(scope).contains(op.canonical),
                "{path} is not advertised"
            );
        }
        if !op.levels.contains(&Level::System) {
            assert!(
                !advertised_at(None).contains(op.canonical),
                "${} at system",
                op.name
            );
        }
        let def = s
            .get(&format!("OperationDefinition/{}", op.id))
            .await
            .expect(200)
            .json();
        assert_eq!(def["url"], op.canonical);
        assert_eq!(def["code"], op.name);
        assert_eq!(def["system"], op.levels.contains(&Level::System));
        assert_eq!(def["instance"], op.levels.contains(&Level::Instance));
        let checked = s.post("OperationDefinition/$validate", &def).await.json();
        assert!(
            !checked.to_string().contains("\"error\""),
            "{} is not a valid OperationDefinition: {checked}",
            op.id
        );
    }
    // nothing advertised that the table does not hold
    let mut all = advertised_at(None);
    for r in rest["resource"].as_array().unwrap() {
        all.extend(advertised_at(r["type"].as_str()));
    }
    assert_eq!(all, in_table);
    // a name at the wrong level is the client's mistake
    let r = s
        .post("$everything", &json!({"resourceType": "Parameters"}))
        .await;
    assert_eq!(r.status.as_u16(), 400);
    let r = s
        .post(
            "Observation/$everything",
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
}

fn keys(bundle: &Value) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

async fn setup(s: &Server) -> (String, String, BTreeSet<String>) {
    let org = s
        .create(&json!({"resourceType": "Organization", "name": "Clinic"}))
        .await;
    let doc = s
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Doc"}]}))
        .await;
    let med = s
        .create(&json!({"resourceType": "Medication", "code": {"text": "aspirin"}}))
        .await;
    let p = s.create(&json!({"resourceType": "Patient", "managingOrganization": {"reference": format!("Organization/{org}")}})).await;
    let other = s.create(&json!({"resourceType": "Patient"})).await;
    let enc = s.create(&json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
        "subject": {"reference": format!("Patient/{p}")}, "participant": [{"individual": {"reference": format!("Practitioner/{doc}")}}]})).await;
    let obs = s.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
        "subject": {"reference": format!("Patient/{p}")}, "encounter": {"reference": format!("Encounter/{enc}")}})).await;
    let mr = s.create(&json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationReference": {"reference": format!("Medication/{med}")}, "subject": {"reference": format!("Patient/{p}")}})).await;
    // the other patient's data stays out
    s.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"}, "subject": {"reference": format!("Patient/{other}")}})).await;
    let expected: BTreeSet<String> = [
        format!("Patient/{p}"),
        format!("Organization/{org}"),
        format!("Practitioner/{doc}"),
        format!("Medication/{med}"),
        format!("Encounter/{enc}"),
        format!("Observation/{obs}"),
        format!("MedicationRequest/{mr}"),
    ]
    .into_iter()
    .collect();
    (p, other, expected)
}

async fn everything(s: Server) {
    let (p, other, expected) = setup(&s).await;
    let b = s
        .get(&format!("Patient/{p}/$everything"))
        .await
        .expect(200)
        .json();
    assert_eq!(b["type"], "searchset");
    assert_eq!(keys(&b), expected);
    assert_eq!(b["total"], expected.len());
    let post = s
        .post(
            &format!("Patient/{p}/$everything"),
            &json!({"resourceType": "Parameters"}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(keys(&post), expected);
    let all = s
        .get("Patient/$everything?_count=1000")
        .await
        .expect(200)
        .json();
    let all_keys = keys(&all);
    assert!(all_keys.is_superset(&expected));
    assert!(all_keys.contains(&format!("Patient/{other}")));
    s.get("Patient/unknown/$everything").await.expect(404);
    s.get("Observation/x/$everything").await.expect(400);
    s.get("Patient/x/$nope").await.expect(400);
}

async fn everything_paging_and_filters(s: Server) {
    let (p, _, expected) = setup(&s).await;
    let mut seen = BTreeSet::new();
    let mut url = format!("Patient/{p}/$everything?_count=3");
    let mut pages = 0;
    loop {
        let b = s.get(&url).await.expect(200).json();
        assert_eq!(b["total"], expected.len());
        seen.extend(keys(&b));
        pages += 1;
        let next = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str());
        match next {
            Some(n) => url = n.strip_prefix(&format!("{}/", s.base)).unwrap().to_string(),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);
    let typed = s
        .get(&format!(
            "Patient/{p}/$everything?_type=Observation,Encounter"
        ))
        .await
        .expect(200)
        .json();
    assert!(
        keys(&typed)
            .iter()
            .all(|k| k.starts_with("Observation/") || k.starts_with("Encounter/"))
    );
    assert_eq!(keys(&typed).len(), 2);
    let later = s
        .get(&format!("Patient/{p}/$everything?_since=2999-01-01"))
        .await
        .expect(200)
        .json();
    assert_eq!(later["total"], 0);
    s.get(&format!("Patient/{p}/$everything?_type=Nope"))
        .await
        .expect(404);
}

async fn validate(s: Server) {
    let ok = s
        .post(
            "Patient/$validate",
            &json!({"resourceType": "Patient", "gender": "female"}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(ok["resourceType"], "OperationOutcome");
    assert_eq!(ok["issue"][0]["severity"], "information");
    let bad = s
        .post(
            "Patient/$validate",
            &json!({"resourceType": "Patient", "gender": "x", "foo": 1}),
        )
        .await
        .expect(200)
        .json();
    let exprs: BTreeSet<&str> = bad["issue"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            i["expression"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap())
        })
        .collect();
    assert_eq!(
        exprs,
        ["Patient.foo", "Patient.gender"].into_iter().collect()
    );
    // Parameters form, mode update on an instance
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "id": "other"}},
        {"name": "mode", "valueCode": "update"}]});
    let r = s
        .post("Patient/p1/$validate", &params)
        .await
        .expect(200)
        .json();
    assert_eq!(r["issue"][0]["expression"][0], "Patient.id");
    // references are judged by form, and checked as a write would check them when a mode asks
    let dangling = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/none"}});
    let r = s
        .post("Observation/$validate", &dangling)
        .await
        .expect(200)
        .json();
    assert_eq!(r["issue"][0]["severity"], "information");
    let r = s
        .post("Observation/$validate?mode=create", &dangling)
        .await
        .expect(200)
        .json();
    assert_eq!(r["issue"][0]["code"], "not-found");
    // mode delete: would integrity refuse it?
    let p = s.create(&json!({"resourceType": "Patient"})).await;
    let free = s.post(&format!("Patient/{p}/$validate"), &json!({"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]})).await.expect(200).json();
    assert_eq!(free["issue"][0]["severity"], "information");
    s.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": format!("Patient/{p}")}})).await;
    let blocked = s.post(&format!("Patient/{p}/$validate"), &json!({"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]})).await.expect(200).json();
    assert_eq!(blocked["issue"][0]["code"], "conflict");
    // profiles: the base one only
    let prof = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient"}},
        {"name": "profile", "valueUri": "http://example.org/StructureDefinition/custom"}]});
    let r = s.post("Patient/$validate", &prof).await.expect(200).json();
    assert_eq!(r["issue"][0]["code"], "not-supported");
    let base_prof = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient"}},
        {"name": "profile", "valueUri": "http://hl7.org/fhir/StructureDefinition/Patient"}]});
    let r = s
        .post("Patient/$validate", &base_prof)
        .await
        .expect(200)
        .json();
    assert_eq!(r["issue"][0]["severity"], "information");
    s.post("Patient/$validate", &json!({"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "bogus"}]})).await.expect(400);
    assert_eq!(
        s.get("Patient/_history?_count=0").await.json()["total"],
        1,
        "validation writes nothing"
    );
}

async fn meta_operations(s: Server) {
    let id = s
        .create(
            &json!({"resourceType": "Patient", "meta": {"tag": [{"system": "s", "code": "a"}]}}),
        )
        .await;
    let m = s
        .get(&format!("Patient/{id}/$meta"))
        .await
        .expect(200)
        .json();
    assert_eq!(m["parameter"][0]["name"], "return");
    assert_eq!(m["parameter"][0]["valueMeta"]["tag"][0]["code"], "a");
    let add = json!({"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {
        "tag": [{"system": "s", "code": "a", "display": "dup"}, {"system": "s", "code": "b"}],
        "profile": ["http://example.org/p"], "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}}]});
    let r = s
        .post(&format!("Patient/{id}/$meta-add"), &add)
        .await
        .expect(200)
        .json();
    let meta = &r["parameter"][0]["valueMeta"];
    assert_eq!(
        meta["tag"].as_array().unwrap().len(),
        2,
        "tags are a set by system+code"
    );
    assert_eq!(meta["profile"][0], "http://example.org/p");
    assert_eq!(meta["versionId"], "2");
    // adding again changes nothing: no new version
    s.post(&format!("Patient/{id}/$meta-add"), &add)
        .await
        .expect(200);
    assert_eq!(
        s.get(&format!("Patient/{id}")).await.etag(),
        Some("W/\"2\"")
    );
    let del = json!({"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [{"system": "s", "code": "a"}]}}]});
    let r = s
        .post(&format!("Patient/{id}/$meta-delete"), &del)
        .await
        .expect(200)
        .json();
    assert_eq!(
        r["parameter"][0]["valueMeta"]["tag"],
        json!([{"system": "s", "code": "b"}])
    );
    // earlier versions keep their meta
    let v1 = s
        .get(&format!("Patient/{id}/_history/1/$meta"))
        .await
        .expect(200)
        .json();
    assert_eq!(v1["parameter"][0]["valueMeta"]["tag"][0]["code"], "a");
    // type and system level: the union
    s.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "meta": {"tag": [{"system": "s", "code": "obs"}]}})).await;
    let t = s.get("Patient/$meta").await.expect(200).json();
    assert!(
        t["parameter"][0]["valueMeta"]["tag"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["code"] != "obs")
    );
    let sys = s.get("$meta").await.expect(200).json();
    let codes: BTreeSet<&str> = sys["parameter"][0]["valueMeta"]["tag"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["b", "obs"].into_iter().collect());
    s.post(
        &format!("Patient/{id}/$meta-add"),
        &json!({"resourceType": "Parameters"}),
    )
    .await
    .expect(400);
    s.post("Patient/nope/$meta-add", &add).await.expect(404);
}
