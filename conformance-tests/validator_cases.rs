//! `$validate` against HL7's validator test cases (../shared/fhir/validator: inputs with the
//! Java validator's verdicts on base R4) — the agreement rate on every case, printed and held
//! as a floor (24 of 34 today; raise it as rules are fixed). SQLite and PostgreSQL.

use crate::backends;
use crate::common::fhir_xml::{parse, resource_to_json};
use crate::common::{Server, shared};
use serde_json::{Value, json};

backends!(agreement_with_the_java_validator);

/// The cases where we agree with the Java validator on the verdict (valid or not), at least.
const AGREEMENT_FLOOR: usize = 24;

/// The resources of a case's input file (several for NDJSON); None when it does not parse.
fn inputs(path: &std::path::Path, format: &str) -> Option<Vec<Value>> {
    let text = std::fs::read_to_string(path).ok()?;
    match format {
        "xml" => {
            let roots = std::panic::catch_unwind(|| parse(&text)).ok()?;
            let root = roots.first()?;
            Some(vec![resource_to_json(root)])
        }
        _ if path.extension().is_some_and(|e| e == "ndjson") => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).ok())
            .collect(),
        _ => Some(vec![serde_json::from_str(&text).ok()?]),
    }
}

/// The error issues `$validate` reports for `resource` (a 4xx refusal counts as one).
async fn errors(s: &Server, resource: &Value) -> Vec<String> {
    let rt = resource["resourceType"].as_str().unwrap_or("Basic");
    let r = s.post(&format!("{rt}/$validate"), resource).await;
    let v: Value = serde_json::from_str(&r.text).unwrap_or(json!({}));
    if r.status.as_u16() >= 400 {
        return vec![format!("{}: {}", r.status.as_u16(), r.text)];
    }
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    v["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| matches!(i["severity"].as_str(), Some("error" | "fatal")))
        .map(|i| {
            format!(
                "{} {}",
                i["expression"][0].as_str().unwrap_or(""),
                i["diagnostics"].as_str().unwrap_or("")
            )
        })
        .collect()
}

async fn agreement_with_the_java_validator(s: Server) {
    let dir = shared().join("validator");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    let mut agree = 0;
    let mut report = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let expected = case["expectedErrorCount"].as_u64().unwrap();
        let format = case["format"].as_str().unwrap();
        let ours = match inputs(&dir.join(case["input"].as_str().unwrap()), format) {
            None => vec!["the input does not parse".to_string()],
            Some(resources) => {
                let mut all = Vec::new();
                for r in &resources {
                    all.extend(errors(&s, r).await);
                }
                all
            }
        };
        let same = (expected > 0) != ours.is_empty();
        if same {
            agree += 1;
        }
        report.push(format!(
            "{} {name} ({format}): java {expected} errors, ours {}{}",
            if same { "agree   " } else { "DISAGREE" },
            ours.len(),
            if same {
                String::new()
            } else {
                format!(
                    ": {}",
                    ours.iter().take(3).cloned().collect::<Vec<_>>().join(" | ")
                )
            }
        ));
    }
    println!(
        "$validate agrees with the Java validator on {agree} of {} cases:\n{}",
        cases.len(),
        report.join("\n")
    );
    assert!(
        agree >= AGREEMENT_FLOOR,
        "agreement fell to {agree} of {}:\n{}",
        cases.len(),
        report.join("\n")
    );
}
