//! fhir-profiles/ matches what fhir-profiles/generate.rs derives from ../shared today, so the
//! compiled-in tables cannot drift from the specification.

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
        150,
        "elements, search parameters, compartment, datatypes + 146 schemas"
    );
}
