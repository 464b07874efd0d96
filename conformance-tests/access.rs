//! The enforcement point, as an access matrix: with patient A's token, try to reach patient B's
//! data through every path — read, vread, search (totals, chains, `_has`, compartments, system
//! search, paging links), `_include`/`_revinclude`/`:iterate`, history, `$everything`, `$meta`,
//! batch and transaction entries, conditional operations, writes — and assert nothing leaks;
//! then SMART v1 and v2 scope cases. Principals come from test headers here (the SMART tests
//! drive the same enforcement with real tokens).

use crate::common::{Backend, Server};
use serde_json::{Value, json};

macro_rules! access_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = $crate::common::start_with_test_principals($crate::common::Backend::Sqlite).await {
                        super::$name(s).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match $crate::common::start_with_test_principals($crate::common::Backend::Postgres).await {
                        Some(s) => super::$name(s).await,
                        None => eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set"),
                    }
                }
            )*
        }
    };
}

access_backends!(
    patient_a_cannot_reach_patient_b,
    smart_v1_and_v2_scopes,
    audit_events_are_immutable,
);

/// Requests as one principal.
struct As<'s> {
    s: &'s Server,
    headers: Vec<(&'static str, String)>,
}

impl<'s> As<'s> {
    fn new(s: &'s Server, scope: &str, patient: Option<&str>) -> As<'s> {
        let mut headers = vec![("x-test-scope", scope.to_string())];
        if let Some(p) = patient {
            headers.push(("x-test-patient", p.to_string()));
        }
        As { s, headers }
    }

    fn h(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    async fn get(&self, path: &str) -> crate::common::Reply {
        self.s.get_with(path, &self.h()).await
    }

    async fn post(&self, path: &str, body: &Value) -> crate::common::Reply {
        self.s.post_with(path, body, &self.h()).await
    }

    async fn put(&self, path: &str, body: &Value) -> crate::common::Reply {
        self.s.put_with(path, body, &self.h()).await
    }

    async fn delete(&self, path: &str) -> crate::common::Reply {
        let mut h = self.h();
        h.push(("content-type", "application/fhir+json"));
        self.s.send(reqwest::Method::DELETE, path, &h, None).await
    }
}

fn put(rt: &str, id: &str, mut body: Value) -> Value {
    body["resourceType"] = json!(rt);
    body["id"] = json!(id);
    json!({"resource": body, "request": {"method": "PUT", "url": format!("{rt}/{id}")}})
}

fn obs(patient: &str, code: &str, category: &str) -> Value {
    json!({"status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "performer": [{"reference": "Practitioner/doc"}]})
}

async fn load(s: &Server) {
    let entries = vec![
        put(
            "Practitioner",
            "doc",
            json!({"name": [{"family": "House"}]}),
        ),
        put(
            "Patient",
            "A",
            json!({"name": [{"family": "Alpha"}], "generalPractitioner": [{"reference": "Practitioner/doc"}]}),
        ),
        put(
            "Patient",
            "B",
            json!({"name": [{"family": "Beta"}], "generalPractitioner": [{"reference": "Practitioner/doc"}], "link": [{"other": {"reference": "Patient/A"}, "type": "seealso"}]}),
        ),
        put("Observation", "a1", obs("A", "1111-1", "laboratory")),
        put("Observation", "a2", obs("A", "2222-2", "vital-signs")),
        put("Observation", "b1", obs("B", "1111-1", "laboratory")),
        put("Observation", "b2", obs("B", "2222-2", "vital-signs")),
        put(
            "Encounter",
            "ea",
            json!({"status": "finished", "class": {"code": "AMB"}, "subject": {"reference": "Patient/A"}}),
        ),
        put(
            "Encounter",
            "eb",
            json!({"status": "finished", "class": {"code": "AMB"}, "subject": {"reference": "Patient/B"}}),
        ),
        put(
            "Provenance",
            "pb",
            json!({"target": [{"reference": "Observation/b1"}, {"reference": "Patient/B"}], "recorded": "2020-01-01T00:00:00Z",
            "agent": [{"who": {"reference": "Practitioner/doc"}}]}),
        ),
        put(
            "List",
            "l",
            json!({"status": "current", "mode": "working", "entry": [{"item": {"reference": "Patient/A"}}, {"item": {"reference": "Patient/B"}}]}),
        ),
    ];
    s.post(
        "",
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
    )
    .await
    .expect(200);
}

fn ids(b: &Value, mode: &str) -> Vec<String> {
    let mut out: Vec<String> = b["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect();
    out.sort();
    out
}

/// Every resource key anywhere in a response body (entries, nested bundles).
fn keys_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let (Some(Value::String(t)), Some(Value::String(id))) =
                (o.get("resourceType"), o.get("id"))
                && t != "Bundle"
                && t != "OperationOutcome"
            {
                out.push(format!("{t}/{id}"));
            }
            o.values().for_each(|x| keys_in(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| keys_in(x, out)),
        _ => {}
    }
}

fn assert_no_b(label: &str, body: &Value) {
    let mut keys = Vec::new();
    keys_in(body, &mut keys);
    let leaked: Vec<&String> = keys
        .iter()
        .filter(|k| {
            matches!(
                k.as_str(),
                "Patient/B"
                    | "Observation/b1"
                    | "Observation/b2"
                    | "Encounter/eb"
                    | "Provenance/pb"
            )
        })
        .collect();
    assert!(leaked.is_empty(), "{label} leaks {leaked:?}");
}

async fn patient_a_cannot_reach_patient_b(s: Server) {
    load(&s).await;
    let a = As::new(&s, "patient/*.read launch/patient", Some("A"));
    // read and vread
    a.get("Patient/A").await.expect(200);
    a.get("Observation/a1").await.expect(200);
    for path in [
        "Patient/B",
        "Observation/b1",
        "Encounter/eb",
        "Observation/b1/_history/1",
        "Provenance/pb",
    ] {
        // forbidden looks exactly like unknown
        let r = a.get(path).await.expect(404);
        assert_eq!(r.json()["resourceType"], "OperationOutcome", "{path}");
    }
    // non-patient data stays readable
    a.get("Practitioner/doc").await.expect(200);
    // searches, totals, chains, _has, compartments, system search, lists
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("Observation", vec!["Observation/a1", "Observation/a2"]),
        ("Observation?subject=Patient/B", vec![]),
        ("Observation?code=1111-1", vec!["Observation/a1"]),
        ("Observation?subject:Patient.name=beta", vec![]),
        ("Patient", vec!["Patient/A"]),
        (
            "Patient?_has:Observation:patient:code=1111-1",
            vec!["Patient/A"],
        ),
        ("Patient?link=Patient/A", vec![]),
        ("Patient/B/Observation", vec![]),
        ("Patient/B/*", vec![]),
        (
            "Patient/A/*",
            vec![
                "Encounter/ea",
                "Observation/a1",
                "Observation/a2",
                "Patient/A",
            ],
        ),
        (
            "?_type=Observation,Patient,Encounter",
            vec![
                "Encounter/ea",
                "Observation/a1",
                "Observation/a2",
                "Patient/A",
            ],
        ),
        // List l names A and B but is nobody's: a List the token may not read selects nothing
        ("Patient?_list=l", vec![]),
        ("Provenance", vec![]),
        ("Encounter?_sort=-_lastUpdated", vec!["Encounter/ea"]),
    ];
    for (q, want) in cases {
        let b = a.get(q).await.expect(200).json();
        assert_eq!(ids(&b, "match"), want, "{q}");
        assert_eq!(
            b["total"],
            want.len(),
            "{q}: totals count only what is visible"
        );
        assert_no_b(q, &b);
    }
    // includes, revincludes and :iterate never add B's resources
    for q in [
        "Observation?_include=Observation:subject&_include=Observation:performer",
        "Patient?_revinclude=Observation:subject&_revinclude=Provenance:target",
        "Practitioner?_revinclude=Patient:general-practitioner&_revinclude:iterate=Observation:subject",
        "Patient?_include=Patient:link&_revinclude=Patient:link",
        "Observation?_include=*&_revinclude=*",
        "List?_include=List:item",
    ] {
        let b = a.get(q).await.expect(200).json();
        assert_no_b(q, &b);
    }
    let b = a
        .get("Practitioner?_revinclude=Patient:general-practitioner")
        .await
        .expect(200)
        .json();
    assert_eq!(ids(&b, "include"), ["Patient/A"]);
    // POST _search is the same search
    let r = s
        .client
        .post(s.url("Observation/_search"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-test-scope", "patient/*.read")
        .header("x-test-patient", "A")
        .body("subject=Patient/B")
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["total"], 0);
    // a paging link made by an unconfined search shows A's token only A's data
    let open = s.get("Observation?_count=1").await.expect(200).json();
    let next = open["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .strip_prefix(&s.base)
        .unwrap()
        .to_string();
    let b = a.get(&next).await.expect(200).json();
    assert_no_b("paging link", &b);
    // history
    a.get("Observation/a1/_history").await.expect(200);
    a.get("Observation/b1/_history").await.expect(404);
    a.get("Observation/_history").await.expect(403);
    a.get("_history").await.expect(403);
    // $everything and $meta
    let e = a.get("Patient/A/$everything").await.expect(200).json();
    assert_no_b("$everything", &e);
    assert!(ids(&e, "match").contains(&"Observation/a1".to_string()));
    a.get("Patient/B/$everything").await.expect(404);
    // type-level $everything covers only the token's own patient
    let all = a.get("Patient/$everything").await.expect(200).json();
    assert_no_b("Patient/$everything", &all);
    a.get("Observation/b1/$meta").await.expect(404);
    a.get("Observation/$meta").await.expect(403);
    // system search without _type
    a.get("?_id=B").await.expect(403);
    // batch entries: each is checked
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/B"}},
        {"request": {"method": "GET", "url": "Observation?subject=Patient/B"}},
        {"request": {"method": "GET", "url": "Observation/b1/_history/1"}},
        {"request": {"method": "GET", "url": "Patient/A"}}]});
    let r = a.post("", &batch).await.expect(200).json();
    assert!(
        r["entry"][0]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("404")
    );
    assert_eq!(r["entry"][1]["resource"]["total"], 0);
    assert!(
        r["entry"][2]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("404")
    );
    assert!(
        r["entry"][3]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("200")
    );
    assert_no_b("batch", &r);
    // writes: a read-only token writes nothing; a write token only inside the compartment
    let new_b = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/B"}});
    a.post("Observation", &new_b).await.expect(403);
    let w = As::new(&s, "patient/*.read patient/*.write", Some("A"));
    w.post("Observation", &new_b).await.expect(403);
    let mut new_a = new_b.clone();
    new_a["subject"] = json!({"reference": "Patient/A"});
    w.post("Observation", &new_a).await.expect(201);
    let mut moved = s.get("Observation/b2").await.json();
    moved["subject"] = json!({"reference": "Patient/A"});
    w.put("Observation/b2", &moved).await.expect(404);
    w.delete("Observation/b1").await.expect(404);
    // conditional criteria only see what the token may read: nothing matches, nothing is deleted
    w.delete("Observation?subject=Patient/B").await.expect(204);
    // a transaction that touches B fails whole
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": new_a, "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "DELETE", "url": "Observation/b1"}}]});
    w.post("", &tx).await.expect(404);
    // conditional create cannot match (and hand out) B's resource: it creates A's own
    let r =
        w.s.post_with(
            "Observation",
            &new_a,
            &[
                ("x-test-scope", "patient/*.read patient/*.write"),
                ("x-test-patient", "A"),
                ("if-none-exist", "_id=b1"),
            ],
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    assert_no_b("conditional create", &r.json());
    // B's data is unchanged by all of this
    assert_eq!(
        s.get("Observation/b1").await.expect(200).json()["subject"]["reference"],
        "Patient/B"
    );
    // a patient scope without a patient in context sees no patient data
    let nobody = As::new(&s, "patient/*.read", None);
    assert_eq!(
        nobody.get("Observation").await.expect(200).json()["total"],
        0
    );
    nobody.get("Observation/a1").await.expect(404);
    let _ = Backend::Sqlite;
}

async fn smart_v1_and_v2_scopes(s: Server) {
    load(&s).await;
    // v1: user/Observation.read reads every Observation, nothing else
    let u = As::new(&s, "user/Observation.read", None);
    assert_eq!(u.get("Observation").await.expect(200).json()["total"], 4);
    u.get("Observation/b1").await.expect(200);
    u.get("Patient/A").await.expect(403);
    u.get("Patient").await.expect(403);
    u.post(
        "Observation",
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
    )
    .await
    .expect(403);
    // a missing scope is a 403 with an OperationOutcome
    let r = u.get("Encounter?subject=Patient/A").await.expect(403);
    assert_eq!(r.json()["issue"][0]["code"], "forbidden");
    // v2 query restriction: only laboratory Observations of A
    let lab = As::new(&s, "patient/Observation.rs?category=laboratory", Some("A"));
    let b = lab.get("Observation").await.expect(200).json();
    assert_eq!(ids(&b, "match"), ["Observation/a1"]);
    lab.get("Observation/a1").await.expect(200);
    lab.get("Observation/a2").await.expect(404);
    lab.get("Observation/b1").await.expect(404);
    // v2 letters: read without search, create/update without read
    let r_only = As::new(&s, "user/Observation.r", None);
    r_only.get("Observation/b1").await.expect(200);
    r_only.get("Observation").await.expect(403);
    let cu = As::new(&s, "user/Patient.cu", None);
    let created = cu
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "New"}]}),
        )
        .await
        .expect(201);
    let id = created.json()["id"].as_str().unwrap().to_string();
    cu.get(&format!("Patient/{id}")).await.expect(403);
    cu.delete(&format!("Patient/{id}")).await.expect(403);
    cu.put(
        &format!("Patient/{id}"),
        &json!({"resourceType": "Patient", "id": id, "active": true}),
    )
    .await
    .expect(200);
    // system scopes and administration
    let sys = As::new(&s, "system/*.cruds", None);
    assert_eq!(sys.get("Observation").await.expect(200).json()["total"], 4);
    sys.get("_history").await.expect(200);
    sys.get("$reindex").await.expect(200);
    As::new(&s, "user/*.cruds", None)
        .get("$reindex")
        .await
        .expect(403);
    // v1 wildcard write
    let w = As::new(&s, "user/*.write", None);
    w.delete("Observation/a2").await.expect(204);
    w.get("Observation/a1").await.expect(403);
}

async fn audit_events_are_immutable(s: Server) {
    let ev = json!({"resourceType": "AuditEvent", "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2020-01-01T00:00:00Z", "agent": [{"requestor": true, "who": {"display": "x"}}],
        "source": {"observer": {"display": "y"}}});
    let id = s.create(&ev).await;
    let mut changed = ev.clone();
    changed["id"] = json!(id);
    changed["outcome"] = json!("4");
    s.put(&format!("AuditEvent/{id}"), &changed)
        .await
        .expect(405);
    s.delete(&format!("AuditEvent/{id}")).await.expect(405);
    s.patch_with(
        &format!("AuditEvent/{id}"),
        "application/json-patch+json",
        &json!([{"op": "add", "path": "/outcome", "value": "4"}]),
        &[],
    )
    .await
    .expect(405);
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": format!("AuditEvent/{id}")}}]});
    s.post("", &tx).await.expect(405);
    assert_eq!(
        s.get(&format!("AuditEvent/{id}")).await.expect(200).json()["meta"]["versionId"],
        "1"
    );
}
