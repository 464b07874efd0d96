//! Architecture invariants of docs/ARCHITECTURE.md, checked on the source text: layers
//! import only downwards (every top-level module has a layer); axum/http only at the edge;
//! sqlx only in store/; the process environment only in config.rs; every file says why it
//! exists; the deny lints that keep `unwrap()` out of request paths stay switched on. Each rule
//! is also run on planted violations, so a checker that stops seeing them fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules and their layers; lower layers must not import higher ones, and modules
/// of one layer above L0 do not import each other. A module missing here is a violation.
const LAYERS: &[(&str, u8)] = &[
    ("fhir", 0),
    ("fhirpath", 0),
    ("search", 1),
    ("hl7v2", 1),
    ("auth", 1),
    ("store", 2),
    ("interaction", 3),
    ("smart", 3),
    ("finance", 1),
    ("jobs", 3),
    ("feeds", 3),
    ("api", 4),
    ("web", 4),
    // wiring: assembles the layers, imports anything, imported by nothing below it
    ("app", 5),
    ("config", 5),
    ("telemetry", 5),
    ("demo", 5),
];

/// Files that are crate roots, not modules.
const ROOTS: &[&str] = &["lib.rs", "main.rs"];

fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).expect("read src/");
        for e in entries.filter_map(Result::ok) {
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
                .expect("under src/")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).expect("read source");
            (rel, text)
        })
        .collect()
}

/// The source with comments, string and char literals blanked out (kept the same length,
/// newlines kept), so that paths inside them are not taken for imports.
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !b
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // raw string r"…" or r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let start = j + 1;
            let rest: String = b[start..].iter().collect();
            let end = rest
                .find(&close)
                .map(|k| start + rest[..k].chars().count() + close.chars().count())
                .unwrap_or(b.len());
            for &ch in &b[i..end] {
                out.push(blank(ch));
            }
            i = end;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') && next.is_some_and(|n| n != '\\') {
            out.push_str("   ");
            i += 3;
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\'', '\u{..}'
            let mut j = i + 2;
            while j < b.len() && b[j] != '\'' && j < i + 12 {
                j += 1;
            }
            for _ in i..=j.min(b.len() - 1) {
                out.push(' ');
            }
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The module path of a file: `store/search/mod.rs` → [store, search].
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && !ROOTS.contains(&last.as_str()) {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    fn go(prefix: &str, s: &str, out: &mut Vec<String>) {
        // split s at top-level commas
        let mut depth = 0;
        let mut start = 0;
        let mut items = Vec::new();
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&s[start..]);
        for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
            if let Some(open) = item.find('{') {
                let head = item[..open].trim().trim_end_matches("::").trim();
                let inner = item[open + 1..].trim().trim_end_matches('}');
                let p = join(prefix, head);
                go(&p, inner, out);
            } else {
                let name = item.split(" as ").next().unwrap_or(item).trim();
                out.push(join(prefix, &name.replace(' ', "")));
            }
        }
    }
    fn join(a: &str, b: &str) -> String {
        match (a.is_empty(), b.is_empty()) {
            (true, _) => b.to_string(),
            (_, true) => a.to_string(),
            _ => format!("{a}::{b}"),
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// Every path a file names: the expanded `use` declarations and the `crate::…`/`super::…`
/// paths written inline in code.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let at_word = i == 0 || !is_ident(bytes[i - 1]);
        let rest = &bytes[i..];
        let semicolon = rest.iter().position(|&c| c == b';');
        if at_word
            && rest.starts_with(b"use")
            && rest.get(3).is_some_and(u8::is_ascii_whitespace)
            && let Some(end) = semicolon
        {
            let tree = String::from_utf8_lossy(&rest[3..end]);
            out.extend(expand_use(&tree));
            i += end + 1;
            continue;
        }
        if at_word
            && [&b"crate::"[..], b"super::", b"self::"]
                .iter()
                .any(|h| rest.starts_with(h))
        {
            let end = rest
                .iter()
                .position(|&c| !(is_ident(c) || c == b':'))
                .unwrap_or(rest.len());
            let path = String::from_utf8_lossy(&rest[..end]);
            out.push(path.trim_end_matches(':').to_string());
            i += end;
            continue;
        }
        i += 1;
    }
    out
}

/// The top-level module a path names from inside `here` (a file's module path), if any.
fn target_of(path: &str, here: &[String]) -> Option<String> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = match segments.first()? {
        &"crate" => Vec::new(),
        &"super" | &"self" => here.to_vec(),
        _ => return None, // an external crate or a name in scope
    };
    let mut rest = &segments[..];
    if segments.first() == Some(&"crate") {
        rest = &segments[1..];
    }
    for s in rest {
        match *s {
            "super" => {
                base.pop()?;
            }
            "self" => {}
            name => {
                base.push(name.to_string());
                break;
            }
        }
    }
    base.first().cloned()
}

fn layer_of(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// Every layer violation in a tree of (path under src/, text).
fn layer_violations(files: &[(String, String)]) -> Vec<String> {
    let mut violations = Vec::new();
    for (rel, text) in files {
        if ROOTS.contains(&rel.as_str()) {
            continue;
        }
        let here = module_path(rel);
        let Some(own) = here.first().cloned() else {
            continue;
        };
        let Some(level) = layer_of(&own) else {
            violations.push(format!(
                "{rel}: top-level module `{own}` has no layer (add it to LAYERS and docs/ARCHITECTURE.md)"
            ));
            continue;
        };
        let mut seen = std::collections::BTreeSet::new();
        for path in paths_in(&code_only(text)) {
            let Some(target) = target_of(&path, &here) else {
                continue;
            };
            if target == own || !seen.insert(target.clone()) {
                continue;
            }
            let Some(target_level) = layer_of(&target) else {
                continue; // reported for its own files
            };
            let upward = target_level > level;
            // modules of one layer stay apart, except the L0 basics and the wiring
            let sideways = target_level == level && (1..=4).contains(&level);
            if upward || sideways {
                violations.push(format!(
                    "{rel} (layer {level}) uses crate::{target} (layer {target_level})"
                ));
            }
        }
    }
    violations
}

/// Every edge rule violation: HTTP types, sqlx and the environment where they do not belong.
fn edge_violations(files: &[(String, String)]) -> Vec<String> {
    let mut violations = Vec::new();
    for (rel, text) in files {
        let code = code_only(text);
        let top = module_path(rel).first().cloned().unwrap_or_default();
        let edge = ["api", "web", "app", "telemetry"].contains(&top.as_str()) || rel == "main.rs";
        let http = ["axum::", "tower_http::", "http::", "hyper::"]
            .iter()
            .any(|p| code.contains(p));
        if !edge && http {
            violations.push(format!("{rel} uses HTTP types"));
        }
        if !["api", "web"].contains(&top.as_str()) && code.contains("askama") {
            violations.push(format!("{rel} renders HTML"));
        }
        if top != "store" && code.contains("sqlx") {
            violations.push(format!("{rel} uses sqlx"));
        }
        let env = code.contains("std::env") || code.contains("env::var");
        if top != "config" && env {
            violations.push(format!("{rel} reads the environment"));
        }
    }
    violations
}

fn why_violations(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(rel, _)| format!("{rel} must start with a //! line"))
        .collect()
}

/// The module a path names from inside `here`, as the module path of a file in `modules`
/// (the longest prefix of the path that is a file).
fn file_of(path: &str, here: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut full: Vec<String> = match segments.first()? {
        &"crate" => Vec::new(),
        &"super" | &"self" => here.to_vec(),
        _ => return None,
    };
    let skip = usize::from(segments.first() == Some(&"crate"));
    let mut leading = true;
    for s in segments.iter().skip(skip) {
        match *s {
            "super" if leading => {
                full.pop()?;
            }
            "self" if leading => {}
            name => {
                leading = false;
                full.push(name.to_string());
            }
        }
    }
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// Import cycles between files: A uses B and B (through any chain) uses A. A file using its
/// own ancestors (`super::Context`) is not an edge — a parent declares and re-exports its
/// children by nature.
fn cycle_violations(files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(r, _)| module_path(r)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (rel, text) in files {
        let here = module_path(rel);
        for path in paths_in(&code_only(text)) {
            let Some(target) = file_of(&path, &here, &modules) else {
                continue;
            };
            let ancestor = here.starts_with(&target);
            if !ancestor && target != here {
                edges.entry(here.clone()).or_default().insert(target);
            }
        }
    }
    // a cycle through `from`: a path from one of its targets back to it
    let mut cycles = BTreeSet::new();
    for from in edges.keys() {
        let mut stack: Vec<(Vec<String>, Vec<Vec<String>>)> = vec![(from.clone(), vec![])];
        let mut seen = BTreeSet::new();
        while let Some((node, trail)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                let mut trail = trail.clone();
                trail.push(next.clone());
                if next == from {
                    // one report per cycle, whichever of its files it was found from
                    let mut key: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                    key.sort();
                    cycles.insert(key);
                } else if seen.insert(next.clone()) {
                    stack.push((next.clone(), trail));
                }
            }
        }
    }
    cycles
        .into_iter()
        .map(|k| format!("import cycle between {}", k.join(", ")))
        .collect()
}

fn all_violations(files: &[(String, String)]) -> Vec<String> {
    let mut v = layer_violations(files);
    v.extend(cycle_violations(files));
    v.extend(edge_violations(files));
    v.extend(why_violations(files));
    v
}

/// The module files reachable from the crate roots by `mod` declarations: every source
/// file must be one of them (and `sources()` must have read them all).
fn declared_modules(files: &[(String, String)]) -> BTreeSet<String> {
    let by_path: BTreeMap<&str, &str> = files
        .iter()
        .map(|(r, t)| (r.as_str(), t.as_str()))
        .collect();
    let mut found = BTreeSet::new();
    let mut todo: Vec<String> = ROOTS.iter().map(|r| r.to_string()).collect();
    while let Some(rel) = todo.pop() {
        let Some(text) = by_path.get(rel.as_str()) else {
            continue;
        };
        if !found.insert(rel.clone()) {
            continue;
        }
        let dir = match rel.rsplit_once('/') {
            _ if ROOTS.contains(&rel.as_str()) => String::new(),
            Some((d, "mod.rs")) => format!("{d}/"),
            Some((d, f)) => format!("{d}/{}/", f.trim_end_matches(".rs")),
            None => format!("{}/", rel.trim_end_matches(".rs")),
        };
        for line in code_only(text).lines() {
            let l = line.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or(l.strip_prefix("pub(super) "))
                .unwrap_or(l);
            let l = l.strip_prefix("pub ").unwrap_or(l);
            if let Some(name) = l.strip_prefix("mod ").and_then(|n| n.strip_suffix(';')) {
                todo.push(format!("{dir}{name}.rs"));
                todo.push(format!("{dir}{name}/mod.rs"));
            }
        }
    }
    found
}

#[test]
fn every_source_file_is_read_and_is_a_module() {
    let files = sources();
    let declared = declared_modules(&files);
    let read: BTreeSet<String> = files.iter().map(|(r, _)| r.clone()).collect();
    let orphans: Vec<&String> = read.difference(&declared).collect();
    assert!(orphans.is_empty(), "files no `mod` declares: {orphans:?}");
    // an independent count of the files on disk (not the walk above)
    let out = std::process::Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "src/*.rs",
            "src/**/*.rs",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Ok(out) = out
        && out.status.success()
    {
        let listed = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(
            read.len(),
            listed,
            "the checks read {} of {listed} source files",
            read.len()
        );
    }
    assert!(read.len() > 100, "only {} source files read", read.len());
}

#[test]
fn the_source_tree_keeps_the_architecture() {
    let v = all_violations(&sources());
    assert!(v.is_empty(), "{}", v.join("\n"));
}

fn tree(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

/// One planted violation each; the checker must report exactly what is expected.
#[test]
fn planted_violations_are_found() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "store/sql.rs",
            "//! x\nuse crate::{fhir::Id, interaction::Context};\n",
            "store/sql.rs (layer 2) uses crate::interaction (layer 3)",
        ),
        (
            "store/sql.rs",
            "//! x\nuse crate::{\n    fhir::{Id, Meta},\n    api::{self},\n};\n",
            "store/sql.rs (layer 2) uses crate::api (layer 4)",
        ),
        (
            "interaction/operation/x.rs",
            "//! x\nuse super::super::super::api::Thing;\n",
            "interaction/operation/x.rs (layer 3) uses crate::api (layer 4)",
        ),
        (
            "store/search/mod.rs",
            "//! x\nfn f() { super::super::interaction::go() }\n",
            "store/search/mod.rs (layer 2) uses crate::interaction (layer 3)",
        ),
        (
            "fhir/x.rs",
            "//! x\nfn f() -> crate::store::Error { todo!() }\n",
            "fhir/x.rs (layer 0) uses crate::store (layer 2)",
        ),
        (
            "jobs/mod.rs",
            "//! x\nuse crate::interaction as i;\n",
            "jobs/mod.rs (layer 3) uses crate::interaction (layer 3)",
        ),
        (
            "gadgets/mod.rs",
            "//! x\npub fn f() {}\n",
            "gadgets/mod.rs: top-level module `gadgets` has no layer",
        ),
        (
            "interaction/x.rs",
            "//! x\nuse axum::Json;\n",
            "interaction/x.rs uses HTTP types",
        ),
        (
            "search/x.rs",
            "//! x\nfn f(p: &sqlx::PgPool) {}\n",
            "search/x.rs uses sqlx",
        ),
        (
            "smart/x.rs",
            "//! x\n#[derive(askama::Template)]\nstruct Page;\n",
            "smart/x.rs renders HTML",
        ),
        (
            "store/x.rs",
            "//! x\nfn f() { let _ = std::env::var(\"X\"); }\n",
            "store/x.rs reads the environment",
        ),
        (
            "fhir/y.rs",
            "use crate::fhir::Id;\n",
            "fhir/y.rs must start with a //! line",
        ),
    ];
    for (path, text, expected) in cases {
        let v = all_violations(&tree(&[(path, text)]));
        assert!(
            v.iter().any(|x| x.starts_with(expected)),
            "planted in {path}:\n{text}\nexpected `{expected}`, found {v:?}"
        );
    }
    // import cycles between files, found from any file, reported once
    let cycle = tree(&[
        (
            "interaction/session.rs",
            "//! x\nuse super::write::delete_version;\n",
        ),
        (
            "interaction/write.rs",
            "//! x\nuse super::session::Session;\n",
        ),
        ("fhirpath/eval.rs", "//! x\nuse super::functions;\n"),
        (
            "fhirpath/functions.rs",
            "//! x\nfn f() { crate::fhirpath::value::g() }\n",
        ),
        (
            "fhirpath/value.rs",
            "//! x\nuse super::{eval::Ev, parser};\n",
        ),
        ("fhirpath/parser.rs", "//! x\n"),
        ("app.rs", "//! x\nuse crate::config::Config;\n"),
        ("config.rs", "//! x\npub use crate::app::AuthMode;\n"),
    ]);
    let v = cycle_violations(&cycle);
    assert_eq!(
        v,
        [
            "import cycle between app, config",
            "import cycle between fhirpath::eval, fhirpath::functions, fhirpath::value",
            "import cycle between interaction::session, interaction::write",
        ],
        "{v:?}"
    );
    // and what is allowed stays allowed: downward imports, own-module paths, names in
    // comments and strings, L0 modules using each other, a child using its parent
    let clean = tree(&[
        (
            "interaction/read.rs",
            "//! x\nuse crate::{fhir::Id, store::{Store, search::Query}};\nuse super::Context;\n\
             // crate::api::Router is only mentioned\nconst S: &str = \"crate::api::x\";\n\
             const R: &str = r#\"use crate::web;\"#;\nfn c() -> char { '\"' }\n",
        ),
        ("fhirpath/eval.rs", "//! x\nuse crate::fhir::Id;\n"),
        ("fhir/validation.rs", "//! x\nuse crate::fhirpath::eval;\n"),
        ("app.rs", "//! x\nuse crate::{api, interaction, store};\n"),
        (
            "interaction/mod.rs",
            "//! x\nmod read;\npub use read::read;\n",
        ),
        (
            "interaction/retry.rs",
            "//! x\nuse super::{Context, read};\n",
        ),
    ]);
    let v = all_violations(&clean);
    assert!(v.is_empty(), "{v:?}");
}

/// `unwrap()`, `expect()`, `panic!` and indexing or slicing that may panic on request paths
/// are compile errors (Cargo.toml `[lints.clippy]`, run by `cargo clippy -- -D warnings` in
/// .ci/run), with tests exempted by .clippy.toml; reading the environment outside config.rs is a disallowed method. This test
/// keeps those switches from being turned off quietly.
#[test]
fn the_deny_lints_stay_on() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let lints = cargo
        .split("[lints.clippy]")
        .nth(1)
        .expect("Cargo.toml has [lints.clippy]");
    let lints = lints.split("\n[").next().unwrap_or(lints);
    for lint in ["unwrap_used", "expect_used", "panic", "indexing_slicing"] {
        assert!(
            lints
                .lines()
                .any(|l| l.trim().starts_with(lint) && l.contains("deny")),
            "Cargo.toml [lints.clippy] must deny {lint}"
        );
    }
    let clippy = std::fs::read_to_string(root.join(".clippy.toml")).expect(".clippy.toml");
    assert!(
        clippy.contains("std::env::var"),
        "env::var is a disallowed method"
    );
    // the only exemptions from the deny lints are tests and said-why allows
    for (rel, text) in sources() {
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            let allows = (l.starts_with("#![allow") || l.starts_with("#[allow"))
                && ["unwrap_used", "expect_used", "panic", "indexing_slicing"]
                    .iter()
                    .any(|x| l.contains(x));
            if allows {
                let before = text.lines().nth(i.wrapping_sub(1)).unwrap_or("");
                assert!(
                    l.contains("//") || before.trim().starts_with("//"),
                    "{rel}:{}: an allow of a deny lint says why",
                    i + 1
                );
            }
        }
    }
}
