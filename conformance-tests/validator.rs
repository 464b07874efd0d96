//! The validator against the official R4 examples (all must pass) and against hand-broken
//! copies of them (each must fail with the right expression).

use healporium::fhir::validation::Validator;
use serde_json::Value;
use std::path::PathBuf;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fhir")
}

fn examples() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let dir = shared().join("examples");
    let mut types: Vec<_> = std::fs::read_dir(&dir)
        .expect("../shared/fhir/examples is readable")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .collect();
    types.sort_by_key(|e| e.path());
    for t in types {
        let mut files: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .filter_map(Result::ok)
            .collect();
        files.sort_by_key(|e| e.path());
        for f in files {
            let text = std::fs::read_to_string(f.path()).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            out.push((f.file_name().to_string_lossy().to_string(), v));
        }
    }
    out
}

#[test]
fn every_official_example_is_valid() {
    let all = examples();
    assert!(all.len() >= 278, "found {} examples", all.len());
    let mut failures = Vec::new();
    for (name, v) in &all {
        if let Err(o) = Validator::r4().validate(v) {
            let issues: Vec<String> = o
                .issues
                .iter()
                .map(|i| format!("{} {} {}", i.code, i.expression.join("|"), i.diagnostics))
                .collect();
            failures.push(format!("{name}: {}", issues.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} examples fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn broken_copies_of_every_example_are_rejected_with_expressions() {
    for (name, v) in examples() {
        let rt = v["resourceType"].as_str().unwrap().to_string();
        let mut broken = v.clone();
        broken["notAnElement"] = Value::Bool(true);
        broken["id"] = Value::String("bad id!".into());
        let o = Validator::r4()
            .validate(&broken)
            .expect_err(&format!("{name} with junk must fail"));
        let exprs: Vec<&str> = o
            .issues
            .iter()
            .flat_map(|i| i.expression.iter().map(String::as_str))
            .collect();
        assert!(exprs.contains(&format!("{rt}.notAnElement").as_str()), "{name}: {exprs:?}");
        assert!(exprs.contains(&format!("{rt}.id").as_str()), "{name}: {exprs:?}");
        assert_eq!(o.status(), 400, "{name}");
    }
}
