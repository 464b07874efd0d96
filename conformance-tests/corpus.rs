//! A corpus of hostile and odd requests over every route — malformed and hostile JSON,
//! headers, ids, search values, patches and Bundles — asserting that none gets a 5xx, every
//! error is an OperationOutcome, and a refused request changes no stored data. Run on both
//! databases; the count of requests is printed (`--nocapture`).

use crate::backends;
use crate::common::Server;
use reqwest::Method;
use serde_json::json;

backends!(the_hostile_corpus_gets_no_5xx_and_changes_nothing);

/// One request of the corpus.
struct Case {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
}

fn bodies() -> Vec<String> {
    let deep_array = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_object = format!(
        "{{\"resourceType\":\"Patient\",\"extension\":{}{}}}",
        "[{\"extension\":".repeat(300),
        "[]}]".repeat(300)
    );
    vec![
        String::new(),
        "{".into(),
        "}".into(),
        "null".into(),
        "[]".into(),
        "\"Patient\"".into(),
        "{\"resourceType\":\"Patient\",".into(),
        "{\"resourceType\":\"Patient\"}garbage".into(),
        "\u{feff}{\"resourceType\":\"Patient\"}".into(),
        deep_array,
        deep_object,
        "{\"resourceType\":\"Patient\",\"resourceType\":\"Observation\"}".into(),
        "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"a\\u0000\"}]}".into(),
        "{\"resourceType\":\"Patient\",\"id\":\"../../etc/passwd\"}".into(),
        "{\"resourceType\":\"Patient\",\"id\":\"a%00b\"}".into(),
        format!("{{\"resourceType\":\"Patient\",\"id\":\"{}\"}}", "a".repeat(65)),
        "{\"resourceType\":\"Patient\",\"birthDate\":\"2020-13-45\"}".into(),
        "{\"resourceType\":\"Patient\",\"birthDate\":1e999999}".into(),
        "{\"resourceType\":\"Patient\",\"multipleBirthInteger\":1e400}".into(),
        "{\"resourceType\":\"Patient\",\"multipleBirthInteger\":99999999999999999999999}".into(),
        "{\"resourceType\":\"Patient\",\"active\":\"true\"}".into(),
        "{\"resourceType\":\"Patient\",\"name\":{\"family\":\"x\"}}".into(),
        "{\"resourceType\":\"Patient\",\"name\":[]}".into(),
        "{\"resourceType\":\"Patient\",\"name\":[null]}".into(),
        "{\"resourceType\":\"Patient\",\"__proto__\":{\"admin\":true}}".into(),
        "{\"resourceType\":\"Patient\",\"meta\":{\"versionId\":\"-1\",\"lastUpdated\":\"x\"}}".into(),
        "{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Patient\"}]}]}".into(),
        "{\"resourceType\":\"Patient\",\"managingOrganization\":{\"reference\":\"Organization/../../x\"}}".into(),
        "{\"resourceType\":\"Patient\",\"managingOrganization\":{\"reference\":\"Organization/nonexistent\"}}".into(),
        "{\"resourceType\":\"Patient\",\"generalPractitioner\":[{\"reference\":\"#nope\"}]}".into(),
        "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":{}}".into(),
        "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{}]}".into(),
        "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{\"request\":{\"method\":\"POST\",\"url\":\"Patient\"}}]}".into(),
        "{\"resourceType\":\"Bundle\",\"type\":\"batch\",\"entry\":[{\"request\":{\"method\":\"GET\",\"url\":\"Patient?name=%00\"}}]}".into(),
        "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{\"fullUrl\":\"urn:uuid:1\",\"resource\":{\"resourceType\":\"Patient\",\"link\":[{\"other\":{\"reference\":\"urn:uuid:2\"},\"type\":\"seealso\"}]},\"request\":{\"method\":\"POST\",\"url\":\"Patient\"}},{\"fullUrl\":\"urn:uuid:2\",\"resource\":{\"resourceType\":\"Patient\",\"birthDate\":\"bad\"},\"request\":{\"method\":\"POST\",\"url\":\"Patient\"}}]}".into(),
        "{\"resourceType\":\"Bundle\",\"type\":\"document\"}".into(),
        "[{\"op\":\"add\",\"path\":\"/nope/deeper\",\"value\":1}]".into(),
        "[{\"op\":\"remove\",\"path\":\"/id\"}]".into(),
        "[{\"op\":\"replace\",\"path\":\"/resourceType\",\"value\":\"Group\"}]".into(),
        "[{\"op\":\"move\",\"from\":\"/\",\"path\":\"/x\"}]".into(),
        "[{\"op\":\"copy\",\"from\":\"/meta\",\"path\":\"/meta/x\"}]".into(),
        "[{\"op\":\"nonsense\"}]".into(),
        "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"operation\",\"part\":[{\"name\":\"type\",\"valueCode\":\"delete\"},{\"name\":\"path\",\"valueString\":\"Patient.id\"}]}]}".into(),
        "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"operation\",\"part\":[{\"name\":\"type\",\"valueCode\":\"add\"},{\"name\":\"path\",\"valueString\":\"Patient.(((\"}]}]}".into(),
        "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"resource\",\"resource\":{\"resourceType\":\"Nope\"}}]}".into(),
    ]
}

fn paths(seed: &str) -> Vec<String> {
    let ids = [
        seed.to_string(),
        "nonexistent".into(),
        "..".into(),
        "%2e%2e".into(),
        "a%00b".into(),
        "a%20b".into(),
        "%C3%BF".into(),
        "a".repeat(65),
        "%".into(),
        "_history".into(),
        "$everything".into(),
    ];
    let mut out = vec![
        String::new(),
        "metadata".into(),
        "_history".into(),
        "_search".into(),
        "Patient".into(),
        "Patient/_search".into(),
        "Patient/_history".into(),
        "Patient/$validate".into(),
        "Patient/$meta".into(),
        "$meta".into(),
        "Nope".into(),
        "patient".into(),
        "Patient/x/y/z/w/v".into(),
    ];
    for id in &ids {
        out.push(format!("Patient/{id}"));
        out.push(format!("Patient/{id}/_history"));
        out.push(format!("Patient/{id}/_history/1"));
        out.push(format!("Patient/{id}/_history/x"));
        out.push(format!("Patient/{id}/$everything"));
        out.push(format!("Patient/{id}/$meta-add"));
        out.push(format!("Patient/{id}/*"));
    }
    out
}

fn queries() -> Vec<String> {
    let long = "x".repeat(3000);
    vec![
        "name=%ff%fe".into(),
        "name=%00".into(),
        "birthdate=ge".into(),
        "birthdate=2020-13-45".into(),
        "birthdate=xx2020".into(),
        "_count=-1".into(),
        "_count=99999999999999999999".into(),
        "_count=abc".into(),
        "_sort=-".into(),
        "_sort=,,,".into(),
        "_sort=nope".into(),
        "_include=:::".into(),
        "_include=Patient:nope".into(),
        "_revinclude=*&_include:iterate=*".into(),
        "_has:::=1".into(),
        "_has:Observation:nope:code=1".into(),
        "general-practitioner:Practitioner.name.x=1".into(),
        "organization.name.x.y.z=1".into(),
        "_lastUpdated=gt2020&_lastUpdated=lt".into(),
        format!("_id={}", ",".repeat(1000)),
        format!("name={long}"),
        format!("identifier={long}|{long}"),
        "identifier=|||".into(),
        "_total=maybe".into(),
        "_summary=perhaps".into(),
        "_elements=...".into(),
        "name:nope=x".into(),
        "name:missing=maybe".into(),
        "_text=x".into(),
        "_content=x".into(),
        "_list=x".into(),
        "_type=Nope".into(),
        "_format=xml".into(),
        "_page=x".into(),
        "address-postalcode:contains=%25%25%25".into(),
        "name=\\".into(),
        "name=a\\,b\\".into(),
        "family:exact=%E2%80%8F".into(),
        "_filter=name eq x".into(),
    ]
}

fn cases(seed: &str) -> Vec<Case> {
    let json = ("content-type", "application/fhir+json".to_string());
    let jpatch = ("content-type", "application/json-patch+json".to_string());
    let mut out = Vec::new();
    let paths = paths(seed);
    for path in &paths {
        for method in [Method::GET, Method::DELETE, Method::HEAD] {
            out.push(Case {
                method,
                path: path.clone(),
                headers: vec![],
                body: None,
            });
        }
    }
    let writes = [
        "".to_string(),
        "Patient".into(),
        format!("Patient/{seed}"),
        "Patient/nonexistent".into(),
        "Patient/$validate".into(),
        format!("Patient/{seed}/$validate"),
        format!("Patient/{seed}/$meta-add"),
    ];
    for path in &writes {
        for body in bodies() {
            for method in [Method::POST, Method::PUT] {
                out.push(Case {
                    method,
                    path: path.clone(),
                    headers: vec![json.clone()],
                    body: Some(body.clone()),
                });
            }
        }
        for body in bodies().into_iter().step_by(3) {
            out.push(Case {
                method: Method::PATCH,
                path: path.clone(),
                headers: vec![jpatch.clone()],
                body: Some(body.clone()),
            });
        }
    }
    for q in queries() {
        for base in [
            "Patient",
            "",
            "Observation",
            &format!("Patient/{seed}/Observation"),
        ] {
            out.push(Case {
                method: Method::GET,
                path: format!("{base}?{q}"),
                headers: vec![],
                body: None,
            });
        }
        out.push(Case {
            method: Method::POST,
            path: "Patient/_search".into(),
            headers: vec![(
                "content-type",
                "application/x-www-form-urlencoded".to_string(),
            )],
            body: Some(q.clone()),
        });
        out.push(Case {
            method: Method::DELETE,
            path: format!("Patient?{q}"),
            headers: vec![],
            body: None,
        });
    }
    let header_cases: Vec<(&'static str, &str)> = vec![
        ("if-match", "W/\"abc\""),
        ("if-match", "\"1"),
        ("if-match", "W/\"99999999999999999999\""),
        ("if-none-match", "garbage"),
        ("if-none-exist", "%%%"),
        ("if-none-exist", "name:nope=x"),
        ("if-modified-since", "yesterday"),
        ("prefer", "return=everything"),
        ("prefer", "handling=strict"),
        ("accept", "application/fhir+xml"),
        ("accept", "text/html"),
        ("accept", "application/fhir+json; fhirVersion=3.0"),
        ("content-type", "application/xml"),
        ("content-type", "application/fhir+json; charset=latin1"),
        ("content-type", "application/fhir+json; fhirVersion=5.0"),
        ("content-type", "text/plain"),
        ("x-provenance", "{not json"),
        ("x-provenance", "{\"resourceType\":\"Patient\"}"),
    ];
    let valid = json!({"resourceType": "Patient", "id": seed, "active": false}).to_string();
    for (name, value) in header_cases {
        for (method, path) in [
            (Method::GET, format!("Patient/{seed}")),
            (Method::GET, "Patient".to_string()),
            (Method::PUT, format!("Patient/{seed}")),
            (Method::POST, "Patient".to_string()),
        ] {
            let mut headers = vec![(name, value.to_string())];
            if name != "content-type" && method != Method::GET {
                headers.push(json.clone());
            }
            out.push(Case {
                method,
                path,
                headers,
                body: Some(valid.clone()),
            });
        }
    }
    out
}

async fn the_hostile_corpus_gets_no_5xx_and_changes_nothing(s: Server) {
    let seed = s
        .create(&json!({"resourceType": "Patient", "active": true, "name": [{"family": "Seed"}]}))
        .await;
    let snapshot = |s: Server, seed: String| async move {
        let p = s.get(&format!("Patient/{seed}")).await.json();
        (s.version_count().await, p)
    };
    let cases = cases(&seed);
    let mut faults = Vec::new();
    let mut without_outcome = Vec::new();
    let mut changed = Vec::new();
    let mut before = snapshot(s.clone(), seed.clone()).await;
    for c in &cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = s
            .send(c.method.clone(), &c.path, &headers, c.body.clone())
            .await;
        let status = r.status.as_u16();
        let label = format!("{} {} {:?}", c.method, clip(&c.path), c.headers);
        if status >= 500 {
            faults.push(format!("{status} {label}: {}", clip(&r.text)));
        }
        if status >= 400 && c.method != Method::HEAD {
            let is_outcome = serde_json::from_str::<serde_json::Value>(&r.text)
                .is_ok_and(|v| v["resourceType"] == "OperationOutcome");
            if !is_outcome {
                without_outcome.push(format!("{status} {label}: {}", clip(&r.text)));
            }
        }
        if status >= 400 {
            let after = snapshot(s.clone(), seed.clone()).await;
            if after != before {
                changed.push(format!("{status} {label}"));
            }
            before = after;
        } else {
            before = snapshot(s.clone(), seed.clone()).await;
        }
    }
    println!(
        "corpus on {:?}: {} requests, {} 5xx, {} errors without an OperationOutcome, {} refused requests that changed data",
        s.backend,
        cases.len(),
        faults.len(),
        without_outcome.len(),
        changed.len()
    );
    assert!(faults.is_empty(), "5xx:\n{}", faults.join("\n"));
    assert!(
        without_outcome.is_empty(),
        "errors without an OperationOutcome:\n{}",
        without_outcome.join("\n")
    );
    assert!(
        changed.is_empty(),
        "refused but changed:\n{}",
        changed.join("\n")
    );
}

fn clip(s: &str) -> String {
    s.chars().take(160).collect()
}
