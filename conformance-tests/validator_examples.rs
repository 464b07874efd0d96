//! The validator against the official R4 examples (all must pass) and against hand-broken
//! copies of them (each must fail with the right expression).

use crate::common::official_examples;
use healporium::fhir::validation::Validator;
use serde_json::Value;

fn examples() -> Vec<(String, Value)> {
    official_examples()
}

#[test]
fn every_official_example_is_valid() {
    let all = examples();
    assert_eq!(all.len(), 278, "found {} examples", all.len());
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
        assert!(
            exprs.contains(&format!("{rt}.notAnElement").as_str()),
            "{name}: {exprs:?}"
        );
        assert!(
            exprs.contains(&format!("{rt}.id").as_str()),
            "{name}: {exprs:?}"
        );
        assert_eq!(o.status(), 400, "{name}");
    }
}
