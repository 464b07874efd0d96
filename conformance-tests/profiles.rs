//! fhir-profiles/ matches what fhir-profiles/generate.rs derives from ../shared today, so the
//! compiled-in tables cannot drift from the specification; the access policy covers every R4
//! type, and docs/security.md's role table says what the policy does.

#[allow(dead_code)]
#[path = "../fhir-profiles/generate.rs"]
mod generate;

use std::path::PathBuf;

#[test]
fn fhir_profiles_are_generated_from_shared() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = generate::generate(&root.join("../shared/fhir")).expect("generate");
    let mut stale = Vec::new();
    for (rel, content) in &files {
        let on_disk =
            std::fs::read_to_string(root.join("fhir-profiles").join(rel)).unwrap_or_default();
        if &on_disk != content {
            stale.push(rel.display().to_string());
        }
    }
    let schemas = std::fs::read_dir(root.join("fhir-profiles/schemas"))
        .unwrap()
        .count();
    assert_eq!(
        schemas,
        files.keys().filter(|k| k.starts_with("schemas")).count(),
        "no stray schema files"
    );
    assert!(
        stale.is_empty(),
        "regenerate with `cargo run --example gen-profiles -- ../shared/fhir`: {stale:?}"
    );
    assert_eq!(
        files.len(),
        151,
        "elements, search parameters, code systems, compartment, datatypes + 146 schemas"
    );
}

#[test]
fn the_type_policy_covers_every_r4_type_once() {
    use healporium::auth::Policy;
    let defs = healporium::fhir::definitions::Definitions::r4();
    let mut r4: Vec<String> = defs.resource_types().to_vec();
    r4.sort();
    let mut policy: Vec<String> = Policy::get().types().map(|(t, _)| t.to_string()).collect();
    policy.sort();
    assert_eq!(policy, r4, "every R4 resource type in exactly one class");
}

#[test]
fn the_role_table_in_security_md_matches_the_policy() {
    use healporium::auth::{Class, Policy, Role};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let start = doc.find("<!-- role-table").expect("role table marker");
    let end = doc.find("<!-- /role-table -->").expect("role table end");
    let rows: Vec<Vec<String>> = doc[start..end]
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    let header = &rows[0];
    let roles: Vec<Role> = header[1..]
        .iter()
        .map(|r| Role::parse(r).unwrap())
        .collect();
    assert_eq!(rows.len() - 1, Class::ALL.len(), "one row per class");
    for row in &rows[1..] {
        let class = Class::ALL
            .into_iter()
            .find(|c| c.as_str() == row[0])
            .unwrap_or_else(|| panic!("unknown class {}", row[0]));
        for (i, role) in roles.iter().enumerate() {
            let want = Policy::get().class_letters(*role, class);
            let got = if row[i + 1] == "—" { "" } else { &row[i + 1] };
            assert_eq!(got, want, "{} × {}", role.as_str(), class.as_str());
        }
    }
}
