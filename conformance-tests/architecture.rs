//! Architecture invariants of docs/ARCHITECTURE.md, checked on the source text:
//! layers import only downwards; axum/http only at the edge; sqlx only in store/;
//! the process environment only in config.rs; every file says why it exists.

use std::path::{Path, PathBuf};

fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The layer of a source file; lower layers must not import higher ones.
fn layer(rel: &str) -> Option<(u8, &'static str)> {
    let top = rel.split('/').next().unwrap_or(rel).trim_end_matches(".rs");
    Some(match top {
        "fhir" => (0, "fhir"),
        "fhirpath" => (0, "fhirpath"),
        "search" => (1, "search"),
        "hl7v2" => (1, "hl7v2"),
        "auth" => (1, "auth"),
        "store" => (2, "store"),
        "interaction" => (3, "interaction"),
        "smart" => (3, "smart"),
        "finance" => (3, "finance"),
        "api" => (4, "api"),
        "web" => (4, "web"),
        _ => return None, // lib.rs, main.rs, app.rs, config.rs, telemetry.rs: wiring
    })
}

#[test]
fn layers_import_only_downwards() {
    let modules = [
        ("fhir", 0),
        ("fhirpath", 0),
        ("search", 1),
        ("hl7v2", 1),
        ("auth", 1),
        ("store", 2),
        ("interaction", 3),
        ("smart", 3),
        ("finance", 3),
        ("api", 4),
        ("web", 4),
        ("app", 5),
        ("config", 5),
        ("telemetry", 5),
    ];
    let mut violations = Vec::new();
    for (rel, text) in sources() {
        let Some((level, own)) = layer(&rel) else {
            continue;
        };
        for (module, module_level) in modules {
            if module == own {
                continue;
            }
            let used = text.contains(&format!("crate::{module}::"))
                || text.contains(&format!("crate::{module};"))
                || text.contains(&format!("crate::{{{module}"));
            if used && module_level >= level && !(module_level == level && level == 0) {
                violations.push(format!(
                    "{rel} (layer {level}) uses crate::{module} (layer {module_level})"
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn edge_types_stay_at_the_edge() {
    let mut violations = Vec::new();
    for (rel, text) in sources() {
        let edge = rel.starts_with("api/")
            || rel.starts_with("web/")
            || ["app.rs", "telemetry.rs", "main.rs"].contains(&rel.as_str());
        if !edge
            && (text.contains("axum::") || text.contains("tower_http::") || text.contains("http::"))
        {
            violations.push(format!("{rel} uses HTTP types"));
        }
        if !rel.starts_with("store/") && text.contains("sqlx::") {
            violations.push(format!("{rel} uses sqlx"));
        }
        if rel != "config.rs" && (text.contains("std::env") || text.contains("env::var")) {
            violations.push(format!("{rel} reads the environment"));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn every_file_says_why_it_exists() {
    for (rel, text) in sources() {
        assert!(
            text.trim_start().starts_with("//!"),
            "{rel} must start with a //! line"
        );
    }
}

#[test]
fn no_unwrap_outside_tests() {
    for (rel, text) in sources() {
        // code before the first #[cfg(test)] is production code
        let production = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in production.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("//") {
                continue;
            }
            assert!(!l.contains(".unwrap()"), "{rel}:{} uses unwrap()", i + 1);
            let expects = l.matches(".expect(").count() - l.matches("self.expect(").count();
            assert_eq!(expects, 0, "{rel}:{} uses expect()", i + 1);
        }
    }
}
