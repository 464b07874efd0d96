//! The authorization features of the `healporium` binary: `user add`, `client add`,
//! `key rotate`, `serve` requiring tokens by default, `--insecure-no-auth` warning at start
//! and in the CapabilityStatement, and `--demo` printing how to sign in.

use crate::cli::{bin, free_port};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = bin();
    cmd.current_dir(dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("HEALPORIUM_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// reqwest without its `form` feature: a form body by hand.
trait FormBody {
    fn form_body(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body(self, pairs: &[(&str, &str)]) -> Self {
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(pairs).unwrap())
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// `serve` with output going to files in `dir`; waits until the port answers.
fn spawn_serve(dir: &Path, extra: &[&str]) -> (Child, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let out = std::fs::File::create(dir.join("stdout.txt")).unwrap();
    let err = std::fs::File::create(dir.join("stderr.txt")).unwrap();
    let mut child = bin()
        .current_dir(dir)
        .args([
            "serve",
            "--listen",
            &listen,
            "--database-url",
            "sqlite:auth.db",
        ])
        .args(extra)
        .env_remove("DATABASE_URL")
        .env_remove("HEALPORIUM_BASE_URL")
        .env_remove("HEALPORIUM_INSECURE_NO_AUTH")
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(&listen).is_ok() {
            return (child, format!("http://{listen}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().ok();
    child.wait().ok();
    panic!(
        "server did not start: {}",
        std::fs::read_to_string(dir.join("stderr.txt")).unwrap()
    );
}

fn stop(mut child: Child) {
    child.kill().ok();
    child.wait().ok();
}

#[tokio::test]
async fn user_client_and_key_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = ["--database-url", "sqlite:auth.db"];
    let with_db = |args: &[&'static str]| -> Vec<&'static str> {
        let mut v = args.to_vec();
        v.extend_from_slice(&db);
        v
    };
    // password from standard input
    let out = run(
        d,
        &with_db(&[
            "user",
            "add",
            "--username",
            "alice",
            "--role",
            "patient",
            "--fhir-user",
            "Patient/p1",
        ]),
        &[],
        Some("alice-secret-pw\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("added user alice (patient, Patient/p1)"));
    // password from the environment
    let out = run(
        d,
        &with_db(&[
            "user",
            "add",
            "--username",
            "doc",
            "--role",
            "practitioner",
            "--fhir-user",
            "Practitioner/7",
        ]),
        &[("HEALPORIUM_PASSWORD", "doc-secret-pw")],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // mistakes are one line, and nothing secret is printed
    for (args, env, code, needle) in [
        (
            vec![
                "user",
                "add",
                "--username",
                "alice",
                "--role",
                "patient",
                "--fhir-user",
                "Patient/p1",
            ],
            vec![("HEALPORIUM_PASSWORD", "another-pw-1")],
            1,
            "exists already",
        ),
        (
            vec!["user", "add", "--username", "x", "--role", "nurse"],
            vec![("HEALPORIUM_PASSWORD", "another-pw-1")],
            2,
            "unknown role",
        ),
        (
            vec!["user", "add", "--username", "y", "--role", "patient"],
            vec![("HEALPORIUM_PASSWORD", "another-pw-1")],
            1,
            "Patient/<id>",
        ),
        (
            vec!["user", "add", "--username", "z", "--role", "admin"],
            vec![("HEALPORIUM_PASSWORD", "short")],
            1,
            "at least 8",
        ),
        (
            vec![
                "client",
                "add",
                "--type",
                "public",
                "--scope",
                "patient/*.rs",
            ],
            vec![],
            1,
            "redirect-uri",
        ),
        (
            vec![
                "client",
                "add",
                "--type",
                "backend",
                "--scope",
                "system/*.rs",
            ],
            vec![],
            1,
            "jwks",
        ),
    ] {
        let mut args = args.clone();
        args.extend_from_slice(&db);
        let out = run(d, &args, &env, Some(""));
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("another-pw-1"));
    }
    // a confidential client: the secret is printed once
    let out = run(
        d,
        &with_db(&[
            "client",
            "add",
            "--type",
            "confidential",
            "--client-id",
            "svc",
            "--name",
            "Service",
            "--scope",
            "system/*.rs",
        ]),
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    // a backend client with a JWKS file; a public app
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "k1",
        "x": "iA7lWQLzVrKGEFjfGMfMHfTEZ2KnLiKU7JuNT3E7ygsfE7ygsfE7ygsfE7ygsfE7",
        "y": "ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsf"}]});
    std::fs::write(d.join("jwks.json"), jwks.to_string()).unwrap();
    let out = run(
        d,
        &with_db(&[
            "client",
            "add",
            "--type",
            "backend",
            "--client-id",
            "bulk",
            "--scope",
            "system/*.rs",
            "--jwks-file",
            "jwks.json",
        ]),
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("client_secret"));
    let out = run(
        d,
        &with_db(&[
            "client",
            "add",
            "--type",
            "public",
            "--scope",
            "openid launch/patient patient/*.rs",
            "--redirect-uri",
            "https://app.example.org/cb",
        ]),
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("client_id: "));
    // two rotations: two keys
    let mut kids = Vec::new();
    for _ in 0..2 {
        let out = run(d, &with_db(&["key", "rotate"]), &[], None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let line = text(&out.stdout);
        let kid = line
            .strip_prefix("new signing key ")
            .and_then(|r| r.split(';').next())
            .unwrap_or_else(|| panic!("{line}"))
            .to_string();
        kids.push(kid);
    }
    // the server uses what the commands stored
    let (child, origin) = spawn_serve(d, &[]);
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{origin}/fhir/Patient"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "serve requires tokens by default");
    let t: Value = http
        .post(format!("{origin}/auth/token"))
        .basic_auth("svc", Some(&secret))
        .form_body(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.rs"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = t["access_token"].as_str().unwrap_or_else(|| panic!("{t}"));
    assert_eq!(
        jsonwebtoken::decode_header(token).unwrap().kid.as_deref(),
        Some(kids[1].as_str()),
        "the newest key signs"
    );
    let r = http
        .get(format!("{origin}/fhir/Patient"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwks: Value = http
        .get(format!("{origin}/auth/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for kid in &kids {
        assert!(jwks.to_string().contains(kid.as_str()), "{kid} in {jwks}");
    }
    stop(child);
    let log = std::fs::read_to_string(d.join("stderr.txt")).unwrap();
    assert!(
        !log.contains(&secret) && !log.contains(token),
        "no secrets in logs"
    );
}

#[tokio::test]
async fn insecure_no_auth_warns_at_start_and_in_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (child, origin) = spawn_serve(dir.path(), &["--insecure-no-auth"]);
    let http = reqwest::Client::new();
    let cs: Value = http
        .get(format!("{origin}/fhir/metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        cs["implementation"]["description"]
            .as_str()
            .unwrap()
            .contains("WARNING")
    );
    assert!(
        cs["rest"][0]["security"]["description"]
            .as_str()
            .unwrap()
            .contains("--insecure-no-auth")
    );
    let r = http
        .get(format!("{origin}/fhir/Patient"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{origin}/fhir/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["authorization_required"], false, "{doc}");
    assert!(doc.get("authorization_endpoint").is_none(), "{doc}");
    assert!(
        doc["description"]
            .as_str()
            .unwrap()
            .contains("--insecure-no-auth")
    );
    // browser apps can try it: preflights are answered
    let r = http
        .request(reqwest::Method::OPTIONS, format!("{origin}/fhir/Patient"))
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    stop(child);
    let err = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
    assert!(err.contains("WARNING: authorization is off"), "{err}");
}

#[tokio::test]
async fn demo_seeds_data_and_prints_how_to_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let (child, origin) = spawn_serve(dir.path(), &["--demo"]);
    let mut out = String::new();
    for _ in 0..100 {
        out = std::fs::read_to_string(dir.path().join("stdout.txt")).unwrap();
        if out.contains("Discovery:") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for needle in [
        "alice",
        "drsmith",
        "admin",
        "insurer",
        "pharmacist",
        "demo-app",
        "/auth/authorize?",
        "code_challenge_method=S256",
        "/auth/token",
    ] {
        assert!(out.contains(needle), "{needle} in {out}");
    }
    // sign in as the demo patient through the printed URL
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("1. open "))
        .unwrap()
        .to_string();
    let html = http.get(&url).send().await.unwrap().text().await.unwrap();
    let request = crate::common::secure::request_field(&html);
    let consent = http
        .post(format!("{origin}/auth/login"))
        .form_body(&[
            ("request", request.as_str()),
            ("username", "alice"),
            ("password", "alice-demo-pw"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(consent.status(), 200);
    let done = http
        .post(format!("{origin}/auth/consent"))
        .form_body(&[("request", request.as_str()), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let code = crate::common::secure::redirect_params(done.headers()["location"].to_str().unwrap())
        .into_iter()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1;
    let t: Value = http
        .post(format!("{origin}/auth/token"))
        .form_body(&[
            ("grant_type", "authorization_code"),
            ("client_id", "demo-app"),
            ("redirect_uri", "http://localhost:9000/callback"),
            (
                "code_verifier",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            ),
            ("code", code.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["patient"], "demo-alice", "{t}");
    let r = http
        .get(format!("{origin}/fhir/Patient/demo-alice"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // the demo insurer adjudicated alice's MRI: what she owes is ready to defer
    let responses: Value = http
        .get(format!(
            "{origin}/fhir/ClaimResponse?patient=Patient/demo-alice"
        ))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = &responses["entry"][0]["resource"];
    assert_eq!(response["outcome"], "complete", "{responses}");
    let owed = response["total"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["category"]["coding"][0]["code"] == "memberliability")
        .unwrap();
    assert_eq!(owed["amount"]["value"].to_string(), "640.00");
    assert!(out.contains("$defer"), "{out}");
    // the doctors' schedules have free slots (generated by the job a moment after start);
    // the demo app's read-only token finds them but may not book
    let token = t["access_token"].as_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let at = |ms: i64| healporium::fhir::types::Instant::from_millis(ms).to_fhir();
    let find = serde_json::json!({"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDateTime": at(now)},
        {"name": "end", "valueDateTime": at(now + 14 * 86_400_000)},
        {"name": "practitioner", "valueReference": {"reference": "Practitioner/demo-practitioner"}}]});
    let mut proposals = Value::Null;
    for _ in 0..100 {
        proposals = http
            .post(format!("{origin}/fhir/Appointment/$find"))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body(find.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if proposals["total"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = proposals["total"].as_u64().unwrap_or(0);
    assert!(total > 0, "no free demo slots: {proposals}");
    let proposal = &proposals["entry"][0]["resource"];
    let r = http
        .post(format!("{origin}/fhir/Appointment/$book"))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(
            serde_json::json!({"resourceType": "Parameters", "parameter": [
                {"name": "appt-resource", "resource": proposal}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    assert!(out.contains("Appointment/$find"), "{out}");
    stop(child);
}
