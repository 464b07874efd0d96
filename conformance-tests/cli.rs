//! The `healporium` binary as a newcomer meets it: --help, clear one-line errors for bad
//! configuration, and `serve` creating and migrating its SQLite file on first start.

use crate::common::{Backend, fresh_database};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_healporium"))
}

#[test]
fn help_explains_serve() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve"), "{text}");
    let out = bin().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--database-url",
        "127.0.0.1:8080",
        "sqlite:healporium.db",
        "DATABASE_URL",
    ] {
        assert!(text.contains(flag), "serve --help mentions {flag}: {text}");
    }
}

#[test]
fn bad_configuration_is_one_clear_line() {
    // a credit catalog whose product has an APR that is not a number
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    std::fs::write(
        &catalog,
        r#"{"resourceType": "CodeSystem", "id": "credit-product", "concept": [{"code": "x",
          "property": [{"code": "currency", "valueCode": "EUR"},
                       {"code": "apr", "valueString": "cheap"}]}]}"#,
    )
    .unwrap();
    let catalog_path = catalog.display().to_string();
    let config = dir.path().join("healporium.toml");
    std::fs::write(&config, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let config_path = config.display().to_string();
    let short_token = dir.path().join("short.toml");
    std::fs::write(&short_token, "metrics-token = \"short\"\n").unwrap();
    let short_token_path = short_token.display().to_string();
    for args in [
        vec!["serve", "--config", &config_path],
        vec!["serve", "--config", "/nonexistent/healporium.toml"],
        vec!["serve", "--config", &short_token_path],
        vec!["serve", "--metrics-listen", "nowhere"],
        vec!["serve", "--listen", "nowhere"],
        vec![
            "serve",
            "--database-url",
            "mysql://root:secret@localhost/db",
        ],
        vec!["serve", "--base-url", "not a url"],
        vec!["serve", "--canonical-base", "ftp://nowhere"],
        vec!["serve", "--credit-catalog", &catalog_path],
        vec!["serve", "--mappings", "/nonexistent/mappings"],
        vec!["serve", "--mllp", "nowhere"],
        vec!["serve", "--feed-zone", "CET"],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("secret"), "secrets never print: {err}");
        assert!(!err.contains("panicked"));
    }
    let out = bin()
        .args(["serve", "--config", &config_path])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'lisen' is not a setting of serve"), "{err}");
    let out = bin()
        .args(["serve", "--credit-catalog", &catalog_path])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("catalog.json: CodeSystem/credit-product concept[0] ('x') property apr"),
        "{err}"
    );
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `healporium serve` and waits until /fhir/metadata answers.
fn serve(
    dir: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = bin();
    cmd.current_dir(dir)
        .args(["serve", "--listen", &listen])
        .args(extra)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let url = format!("http://{listen}/fhir/metadata");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(&listen).is_ok() {
            return (child, url);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().ok();
    child.wait().ok();
    panic!("server did not start");
}

#[tokio::test]
async fn serve_creates_and_migrates_sqlite_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = serve(dir.path(), &[], &[]);
    let cs: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert!(
        cs["implementation"]["description"]
            .as_str()
            .unwrap()
            .contains("sqlite")
    );
    assert!(
        dir.path().join("healporium.db").exists(),
        "the default SQLite file is created"
    );
    child.kill().ok();
    child.wait().ok();
    // second start on the same file: already migrated
    let (mut child, url) = serve(dir.path(), &[], &[]);
    assert!(reqwest::get(&url).await.unwrap().status().is_success());
    child.kill().ok();
    child.wait().ok();
}

#[tokio::test]
async fn database_url_env_switches_to_postgres() {
    let Some((pg, _, _schema)) = fresh_database(Backend::Postgres).await else {
        eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = serve(dir.path(), &[], &[("DATABASE_URL", &pg)]);
    let cs: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert!(
        cs["implementation"]["description"]
            .as_str()
            .unwrap()
            .contains("postgres")
    );
    assert!(!dir.path().join("healporium.db").exists());
    child.kill().ok();
    child.wait().ok();
}

#[test]
fn unreachable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "sqlite:/nonexistent-dir/x/healporium.db",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot open the SQLite database"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[tokio::test]
async fn reindex_runs_online_next_to_a_serving_node() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = serve(dir.path(), &["--insecure-no-auth"], &[]);
    let base = url.trim_end_matches("/metadata").to_string();
    let client = reqwest::Client::new();
    let put = |path: String, body: serde_json::Value| {
        let client = client.clone();
        async move {
            client
                .put(path)
                .header("content-type", "application/fhir+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let p = serde_json::json!({"resourceType": "Patient", "id": "r1", "birthDate": "1970",
        "deceasedBoolean": true});
    assert_eq!(put(format!("{base}/Patient/r1"), p).await, 201);
    let sp = serde_json::json!({"resourceType": "SearchParameter", "id": "dead",
        "url": "http://example.org/sp/dead", "name": "dead", "status": "active",
        "description": "x", "code": "dead", "base": ["Patient"], "type": "token",
        "expression": "Patient.deceased"});
    assert_eq!(put(format!("{base}/SearchParameter/dead"), sp).await, 201);
    let out = bin()
        .current_dir(dir.path())
        .args(["reindex", "--database-url", "sqlite:healporium.db"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("reindexed 1 resources") && text.contains("Patient.dead"),
        "{text}"
    );
    // the running node sees the rebuilt rows (and, within seconds, the new state)
    let mut found = serde_json::Value::Null;
    for _ in 0..80 {
        found = client
            .get(format!("{base}/Patient?dead=true"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let warned = found["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["search"]["mode"] == "outcome");
        if found["total"] == 1 && !warned {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(found["total"], 1, "{found}");
    child.kill().ok();
    child.wait().ok();
}
