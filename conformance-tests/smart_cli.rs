//! The authorization features of the `healporium` binary: `user add`, `client add`,
//! `key rotate`, `serve` requiring tokens by default, `--insecure-no-auth` warning at start
//! and in the CapabilityStatement, and `--demo` printing how to sign in; and, on both
//! databases, managing accounts and clients beside a running server (`user list|show|
//! disable|enable|remove|reset-password`, `client list|show|disable|enable|remove|
//! rotate-secret`) with what each change does to sign-ins, token requests and issued tokens.

use crate::cli::{bin, free_port};
use crate::common::secure::{
    APP_SCOPES, PASSWORD, REDIRECT_URI, SecureServer, TokenSet, pkce, request_field, unique,
};
use crate::secure_backends;
use healporium::smart::accounts::ClientKind;
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
    spawn_serve_at(dir, &format!("127.0.0.1:{}", free_port()), extra)
}

/// [`spawn_serve`] on `listen` (a restart on the same address).
fn spawn_serve_at(dir: &Path, listen: &str, extra: &[&str]) -> (Child, String) {
    spawn_serve_on(dir, listen, "sqlite:auth.db", extra)
}

/// [`spawn_serve_at`] on the database `database_url`.
fn spawn_serve_on(dir: &Path, listen: &str, database_url: &str, extra: &[&str]) -> (Child, String) {
    let listen = listen.to_string();
    let out = std::fs::File::create(dir.join("stdout.txt")).unwrap();
    let err = std::fs::File::create(dir.join("stderr.txt")).unwrap();
    let mut child = bin()
        .current_dir(dir)
        .args(["serve", "--listen", &listen, "--database-url", database_url])
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

/// The line printed after the one containing `label`, trimmed.
fn printed_line_after(out: &str, label: &str) -> String {
    let mut lines = out.lines().skip_while(|l| !l.contains(label));
    lines.next();
    lines
        .next()
        .unwrap_or_else(|| panic!("{label} in {out}"))
        .trim()
        .to_string()
}

/// The first printed line (trimmed) that starts with `start` and contains `needle`.
fn printed_line(out: &str, start: &str, needle: &str) -> String {
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with(start) && l.contains(needle))
        .unwrap_or_else(|| panic!("{start} … {needle} in {out}"))
        .to_string()
}

/// Runs `script` with bash, as a user pasting the demo's commands would; its standard output.
fn bash(script: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Waits until `--demo` has printed its instructions; what it printed.
async fn demo_output(dir: &Path) -> String {
    let mut out = String::new();
    for _ in 0..300 {
        out = std::fs::read_to_string(dir.join("stdout.txt")).unwrap();
        if out.contains("Discovery:") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

/// The demo, as a newcomer runs it: the printed doctor's link opened on `localhost`, the
/// printed curl lines pasted into a shell (the code exchange, a read, a write), an edit, and
/// a restart of `--demo` on the same database that keeps the edit and what was written.
#[tokio::test]
async fn demo_signs_in_on_localhost_writes_with_the_printed_commands_and_keeps_edits() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (child, origin) = spawn_serve_at(dir.path(), &listen, &["--demo"]);
    let out = demo_output(dir.path()).await;
    let link = printed_line_after(&out, "to read and write, as a doctor");
    assert!(
        link.starts_with(&format!("{origin}/auth/authorize?")),
        "{link}"
    );
    // the browser uses localhost, for the page and for the audience
    let link = link.replace("127.0.0.1", "localhost");
    let local = origin.replace("127.0.0.1", "localhost");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let code = browser_code(&http, &local, &link, "drsmith", "drsmith-demo-pw").await;
    // the web app is served at / → /app/, its sign-in on the same authorization server
    assert!(
        out.contains(&format!("The web app: {origin}/app/")),
        "{out}"
    );
    let root = http.get(format!("{origin}/")).send().await.unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/app/");
    let app = http.get(format!("{origin}/app/")).send().await.unwrap();
    assert_eq!(app.headers()["location"], "/app/signin");
    let css = http
        .get(format!("{origin}/app/static/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    // step 3 as printed (on 127.0.0.1), with the code pasted between the quotes
    assert!(out.contains("CODE='paste-the-code-here'"), "{out}");
    let exchange = printed_line(&out, "curl -s '", "/auth/token");
    let answer = bash(&format!("CODE='{code}'\n{exchange}"));
    let t: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    let token = t["access_token"].as_str().unwrap_or_else(|| panic!("{t}"));
    assert!(t["scope"].as_str().unwrap().contains("user/"), "{t}");
    // step 4 as printed: a read and a write
    let read = printed_line(&out, "curl -s '", "/Patient/demo-alice'");
    let alice: Value = serde_json::from_str(&bash(&format!("TOKEN='{token}'\n{read}"))).unwrap();
    assert_eq!(alice["id"], "demo-alice", "{alice}");
    let write = printed_line(&out, "curl -s '", "/Observation'");
    let written = bash(&format!("TOKEN='{token}'\n{write} -w '\\n%{{http_code}}'"));
    assert!(written.ends_with("\n201"), "{written}");
    // an edit, then a restart of --demo on the same database and address
    let mut edited = alice.clone();
    edited["telecom"] = json!([{"system": "phone", "value": "+1 555 0100"}]);
    let r = http
        .put(format!("{origin}/fhir/Patient/demo-alice"))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(edited.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    stop(child);
    let (child, _) = spawn_serve_at(dir.path(), &listen, &["--demo"]);
    let again = demo_output(dir.path()).await;
    assert!(again.contains("Discovery:"), "{again}");
    let now: Value = http
        .get(format!("{origin}/fhir/Patient/demo-alice"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["telecom"][0]["value"], "+1 555 0100", "{now}");
    assert_eq!(now["meta"]["versionId"], "2", "{now}");
    let hr: Value = http
        .get(format!(
            "{origin}/fhir/Observation?subject=Patient/demo-alice&code=8867-4"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        hr["total"], 2,
        "the seeded and the written heart rate: {hr}"
    );
    // the demo claim was not submitted twice
    let claims: Value = http
        .get(format!("{origin}/fhir/Claim?patient=Patient/demo-alice"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claims["total"], 1, "{claims}");
    stop(child);
}

/// Signs in through the browser pages at `origin` with the authorization link `link`; the code.
async fn browser_code(
    http: &reqwest::Client,
    origin: &str,
    link: &str,
    user: &str,
    pw: &str,
) -> String {
    let page = http.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200, "{link}");
    let request = crate::common::secure::request_field(&page.text().await.unwrap());
    let consent = http
        .post(format!("{origin}/auth/login"))
        .form_body(&[
            ("request", request.as_str()),
            ("username", user),
            ("password", pw),
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
    crate::common::secure::redirect_params(done.headers()["location"].to_str().unwrap())
        .into_iter()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
}

/// Scale-out with real processes: three `healporium serve` on one PostgreSQL database with
/// one `--base-url` (the load balancer's), each started with `--demo` (the second and third
/// find the demo there and add nothing). A sign-in on one node, its code exchanged on another
/// and the token used on the third; a custom SearchParameter stored through one node is
/// described by another at once; a search's paging cursor made by one is followed on another;
/// failed sign-ins counted on every node lock the account on all; a key rotated by the CLI
/// signs the refreshed token one node issues and the others verify.
#[tokio::test]
async fn three_serve_processes_share_one_postgres_database() {
    let Some((url, _, _)) = crate::common::fresh_database(crate::common::Backend::Postgres).await
    else {
        eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set");
        return;
    };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let listens: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let base = format!("http://{}/fhir", listens[0]);
    // stopped when the test ends, passed or failed
    struct Nodes(Vec<Child>);
    impl Drop for Nodes {
        fn drop(&mut self) {
            for child in &mut self.0 {
                child.kill().ok();
                child.wait().ok();
            }
        }
    }
    let mut nodes = Nodes(Vec::new());
    let mut origins = Vec::new();
    let mut printed = String::new();
    for (dir, listen) in dirs.iter().zip(&listens) {
        let (child, origin) =
            spawn_serve_on(dir.path(), listen, &url, &["--demo", "--base-url", &base]);
        nodes.0.push(child);
        printed = demo_output(dir.path()).await;
        assert!(printed.contains("Discovery:"), "{printed}");
        origins.push(origin);
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // sign in on node 0, exchange the code on node 1, use the token on node 2
    let link = printed_line_after(&printed, "to read and write, as a doctor");
    let code = browser_code(&http, &origins[0], &link, "admin", "admin-demo-pw").await;
    let exchange = |origin: String, form: Vec<(&'static str, String)>| {
        let http = http.clone();
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = http
                .post(format!("{origin}/auth/token"))
                .form_body(&form)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let t: Value = r.json().await.unwrap();
            assert_eq!(status, 200, "{t}");
            t
        }
    };
    let t = exchange(
        origins[1].clone(),
        vec![
            ("grant_type", "authorization_code".into()),
            ("client_id", "demo-app".into()),
            ("redirect_uri", "http://localhost:9000/callback".into()),
            (
                "code_verifier",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            ),
            ("code", code),
        ],
    )
    .await;
    let token = t["access_token"].as_str().unwrap().to_string();
    let get = |origin: &str, path: &str, token: &str| {
        http.get(format!("{origin}/fhir/{path}"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        get(&origins[2], "Patient/demo-alice", &token)
            .await
            .unwrap()
            .status(),
        200
    );
    // a custom SearchParameter written through node 0 is known to node 1 at once
    let sp = json!({"resourceType": "SearchParameter", "url": "http://example.org/sp/nickname",
        "name": "nickname", "status": "active", "code": "nickname", "base": ["Patient"],
        "type": "string", "expression": "Patient.name.where(use = 'nickname').given",
        "description": "a nickname"});
    let r = http
        .post(format!("{}/fhir/SearchParameter", origins[0]))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(sp.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let doc: Value = http
        .get(format!("{}/openapi.json", origins[1]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let params = doc["paths"]["/fhir/Patient"]["get"]["parameters"].to_string();
    assert!(
        params.contains("\"nickname\""),
        "node 1 does not know it yet"
    );
    // a paging cursor made by node 0 is followed on node 2
    let first: Value = get(&origins[0], "Patient?_count=1", &token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap_or_else(|| panic!("{first}"))["url"]
        .as_str()
        .unwrap()
        .to_string();
    let rest = next.strip_prefix(&base).unwrap_or_else(|| panic!("{next}"));
    let second: Value = http
        .get(format!("{}/fhir{rest}", origins[2]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = |b: &Value| {
        b["entry"][0]["resource"]["id"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(!id(&second).is_empty(), "{second}");
    assert_ne!(id(&first), id(&second));
    // five wrong passwords for bob, spread over the nodes, lock him out on every node
    let reader = printed_line_after(&printed, "to read, as a patient");
    for i in 0..5 {
        let origin = &origins[i % 3];
        let page = http
            .get(reader.replace(&listens[0], &listens[i % 3]))
            .send()
            .await
            .unwrap();
        let request = crate::common::secure::request_field(&page.text().await.unwrap());
        let r = http
            .post(format!("{origin}/auth/login"))
            .form_body(&[
                ("request", request.as_str()),
                ("username", "bob"),
                ("password", "wrong"),
            ])
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 303);
    }
    let origin = &origins[2];
    let page = http
        .get(reader.replace(&listens[0], &listens[2]))
        .send()
        .await
        .unwrap();
    let request = crate::common::secure::request_field(&page.text().await.unwrap());
    let r = http
        .post(format!("{origin}/auth/login"))
        .form_body(&[
            ("request", request.as_str()),
            ("username", "bob"),
            ("password", "bob-demo-pw"),
        ])
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(html.contains("Too many failed sign-ins"), "{html}");
    // a key rotated by the CLI: node 1 refreshes the token with it, nodes 0 and 2 verify it
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["key", "rotate", "--database-url", &url],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kid = |token: &str| {
        let header = token.split('.').next().unwrap().to_string();
        use base64::Engine;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        serde_json::from_slice::<Value>(&json).unwrap()["kid"].clone()
    };
    let mut refreshed = Value::Null;
    let mut refresh = t["refresh_token"].as_str().unwrap().to_string();
    // a node signs with the key it loaded for up to 5 s (the old key keeps verifying)
    for _ in 0..60 {
        refreshed = exchange(
            origins[1].clone(),
            vec![
                ("grant_type", "refresh_token".into()),
                ("client_id", "demo-app".into()),
                ("refresh_token", refresh.clone()),
            ],
        )
        .await;
        // refresh tokens rotate: the next exchange uses the new one
        refresh = refreshed["refresh_token"].as_str().unwrap().to_string();
        if kid(refreshed["access_token"].as_str().unwrap()) != kid(&token) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let new = refreshed["access_token"].as_str().unwrap();
    assert_ne!(kid(new), kid(&token), "the new key signs");
    for origin in [&origins[0], &origins[2]] {
        assert_eq!(
            get(origin, "Patient/demo-alice", new)
                .await
                .unwrap()
                .status(),
            200
        );
        // the old key keeps verifying until its tokens expire
        assert_eq!(
            get(origin, "Patient/demo-alice", &token)
                .await
                .unwrap()
                .status(),
            200
        );
    }
    drop(nodes);
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
    let url = printed_line_after(&out, "to read, as a patient");
    let code = browser_code(&http, &origin, &url, "alice", "alice-demo-pw").await;
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

secure_backends!(
    user_list_and_show_print_no_secrets_and_unknown_names_fail,
    a_disabled_user_cannot_sign_in_refresh_or_use_tokens_until_enabled,
    a_removed_users_tokens_are_refused,
    reset_password_refuses_the_old_one_and_revokes_refresh_tokens,
    client_list_and_show_print_no_secrets_and_unknown_ids_fail,
    a_disabled_client_gets_no_tokens_and_its_tokens_are_refused_until_enabled,
    a_removed_clients_tokens_are_refused,
    rotate_secret_replaces_a_confidential_clients_secret,
);

/// `healporium ARGS --database-url <the server's database>`, standard input `stdin`.
async fn cli(s: &SecureServer, args: &[&str], stdin: Option<&str>) -> Output {
    cli_with(s, args, None, stdin).await
}

/// [`cli`] with `HEALPORIUM_PASSWORD` set to `password`.
async fn cli_with(
    s: &SecureServer,
    args: &[&str],
    password: Option<&str>,
    stdin: Option<&str>,
) -> Output {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--database-url".to_string(), s.database_url.clone()]);
    let password = password.map(str::to_string);
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = password
            .iter()
            .map(|p| ("HEALPORIUM_PASSWORD", p.as_str()))
            .collect();
        run(dir.path(), &args, &env, stdin.as_deref())
    })
    .await
    .unwrap()
}

/// Runs a command that must succeed; its standard output.
async fn ok(s: &SecureServer, args: &[&str]) -> String {
    let out = cli(s, args, None).await;
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Runs a command that must fail with one line on standard error containing `needle`.
async fn fails(s: &SecureServer, args: &[&str], needle: &str) {
    let out = cli(s, args, Some("")).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}");
}

/// What output about accounts and clients must never contain.
fn assert_no_secrets(out: &str, secrets: &[&str]) {
    assert!(!out.contains("argon2"), "a hash in {out}");
    for secret in secrets {
        assert!(!out.contains(secret), "a secret in {out}");
    }
}

/// Status of a FHIR search with `token`.
async fn fhir_status(s: &SecureServer, token: &str) -> u16 {
    s.with_token(token).get("Patient").await.status.as_u16()
}

/// Opens a sign-in page of `app` and signs in: the status of the answer (200: consent).
async fn sign_in(s: &SecureServer, app: &str, user: &str, password: &str) -> (u16, String) {
    let (_, challenge) = pkce();
    let query = [
        ("response_type", "code"),
        ("client_id", app),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "openid user/*.rs"),
        ("state", "x"),
        ("aud", s.base.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let url = format!(
        "{}/auth/authorize?{}",
        s.origin(),
        serde_urlencoded::to_string(query).unwrap()
    );
    let page = s.client.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let request = request_field(&page.text().await.unwrap());
    let r = s
        .auth_post(
            "login",
            &[
                ("request", request.as_str()),
                ("username", user),
                ("password", password),
            ],
            None,
        )
        .await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// A refresh of a public app's token: (status, JSON).
async fn refresh(s: &SecureServer, app: &str, token: &str) -> (u16, Value) {
    let r = s
        .auth_post(
            "token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", app),
            ],
            None,
        )
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A new practitioner signed in to a new public app with offline_access: (user, app, tokens).
async fn signed_in(s: &SecureServer) -> (String, String, TokenSet) {
    let user = unique("doc");
    s.add_user(&user, "practitioner", Some("Practitioner/7"))
        .await;
    let app = s.add_public_app().await;
    let t = s
        .authorize(&app, &user, "openid offline_access user/*.rs", None, None)
        .await;
    assert_eq!(fhir_status(s, &t.access_token).await, 200);
    assert!(t.refresh_token.is_some());
    (user, app, t)
}

/// client_credentials with a client secret: (status, JSON).
async fn client_token(s: &SecureServer, id: &str, secret: &str) -> (u16, Value) {
    let r = s
        .auth_post(
            "token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/*.rs"),
            ],
            Some((id, secret)),
        )
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn user_list_and_show_print_no_secrets_and_unknown_names_fail(s: SecureServer) {
    s.add_user("alice", "patient", Some("Patient/p1")).await;
    s.add_user("bob", "practitioner", None).await;
    let list = ok(&s, &["user", "list"]).await;
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("username"), "{list}");
    for column in ["role", "fhirUser", "created", "disabled"] {
        assert!(lines[0].contains(column), "{list}");
    }
    let alice = lines.iter().find(|l| l.starts_with("alice ")).unwrap();
    for field in ["patient", "Patient/p1", "no"] {
        assert!(alice.contains(field), "{alice}");
    }
    let bob = lines.iter().find(|l| l.starts_with("bob ")).unwrap();
    assert!(bob.contains("practitioner") && bob.ends_with("no"), "{bob}");
    assert!(list.contains("(2 user(s))"), "{list}");
    assert_no_secrets(&list, &[PASSWORD]);
    let show = ok(&s, &["user", "show", "alice"]).await;
    for line in [
        "username: alice",
        "role: patient",
        "fhirUser: Patient/p1",
        "disabled: no",
    ] {
        assert!(show.contains(line), "{line} in {show}");
    }
    assert!(show.contains("created: 20"), "{show}");
    assert_no_secrets(&show, &[PASSWORD]);
    // unknown names: one line, exit code 1, for every command
    for command in ["show", "disable", "enable", "remove"] {
        fails(&s, &["user", command, "nobody"], "no user 'nobody'").await;
    }
    let out = cli(
        &s,
        &["user", "reset-password", "nobody"],
        Some("a-long-password-1\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no user 'nobody'"));
    // a too short new password is refused before anything changes
    let out = cli(&s, &["user", "reset-password", "alice"], Some("short\n")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("at least 8"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("short"));
    let app = s.add_public_app().await;
    assert_eq!(sign_in(&s, &app, "bob", PASSWORD).await.0, 200);
}

async fn a_disabled_user_cannot_sign_in_refresh_or_use_tokens_until_enabled(s: SecureServer) {
    let (user, app, t) = signed_in(&s).await;
    let refresh_token = t.refresh_token.clone().unwrap();
    let out = ok(&s, &["user", "disable", &user]).await;
    assert!(out.contains(&format!("disabled user {user}")), "{out}");
    assert!(
        ok(&s, &["user", "show", &user])
            .await
            .contains("disabled: yes")
    );
    let list = ok(&s, &["user", "list"]).await;
    let line = list.lines().find(|l| l.starts_with(&user)).unwrap();
    assert!(line.ends_with("yes"), "{line}");
    // the access token issued before is refused on the next request
    let r = s.with_token(&t.access_token).get("Patient").await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token"),
        "{:?}",
        r.headers
    );
    // no refresh
    let (status, body) = refresh(&s, &app, &refresh_token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // sign-in is refused exactly like a wrong password (nothing says the account exists)
    let (status, page) = sign_in(&s, &app, &user, PASSWORD).await;
    let (wrong_status, wrong_page) = sign_in(&s, &app, "no-such-user", PASSWORD).await;
    assert_eq!(status, 401);
    assert_eq!(status, wrong_status);
    assert!(page.contains("Wrong user name or password"), "{page}");
    let (strip_a, strip_b) = (
        page.replace(&request_field(&page), ""),
        wrong_page.replace(&request_field(&wrong_page), ""),
    );
    assert_eq!(strip_a, strip_b.replace("no-such-user", &user));
    // enabled: everything works again, the same tokens included
    let out = ok(&s, &["user", "enable", &user]).await;
    assert!(out.contains(&format!("enabled user {user}")), "{out}");
    assert_eq!(fhir_status(&s, &t.access_token).await, 200);
    let (status, body) = refresh(&s, &app, &refresh_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sign_in(&s, &app, &user, PASSWORD).await.0, 200);
}

async fn a_removed_users_tokens_are_refused(s: SecureServer) {
    let (user, app, t) = signed_in(&s).await;
    let out = ok(&s, &["user", "remove", &user]).await;
    assert!(out.contains(&format!("removed user {user}")), "{out}");
    assert_eq!(fhir_status(&s, &t.access_token).await, 401);
    let (status, _) = refresh(&s, &app, t.refresh_token.as_deref().unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(sign_in(&s, &app, &user, PASSWORD).await.0, 401);
    fails(&s, &["user", "show", &user], "no user").await;
    assert!(!ok(&s, &["user", "list"]).await.contains(&user));
}

async fn reset_password_refuses_the_old_one_and_revokes_refresh_tokens(s: SecureServer) {
    let (user, app, t) = signed_in(&s).await;
    let new_password = "a-brand-new-password-2";
    let out = cli(
        &s,
        &["user", "reset-password", &user],
        Some(&format!("{new_password}\n")),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("new password for user {user}")));
    assert!(!text(&out.stdout).contains(new_password));
    assert_eq!(sign_in(&s, &app, &user, PASSWORD).await.0, 401);
    assert_eq!(sign_in(&s, &app, &user, new_password).await.0, 200);
    let (status, body) = refresh(&s, &app, t.refresh_token.as_deref().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // the password also comes from HEALPORIUM_PASSWORD, like `user add`
    let out = cli_with(
        &s,
        &["user", "reset-password", &user],
        Some("third-password-3"),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sign_in(&s, &app, &user, new_password).await.0, 401);
    assert_eq!(sign_in(&s, &app, &user, "third-password-3").await.0, 200);
}

async fn client_list_and_show_print_no_secrets_and_unknown_ids_fail(s: SecureServer) {
    let secret = s
        .add_client(
            "svc",
            ClientKind::Confidential,
            &[],
            "system/*.rs",
            None,
            None,
        )
        .await
        .unwrap();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "k1",
        "x": "iA7lWQLzVrKGEFjfGMfMHfTEZ2KnLiKU7JuNT3E7ygsfE7ygsfE7ygsfE7ygsfE7",
        "y": "ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsfE7ygsf"}]});
    s.add_client(
        "bulk",
        ClientKind::Backend,
        &[],
        "system/*.rs",
        Some(&jwks),
        None,
    )
    .await;
    s.add_client(
        "web",
        ClientKind::Public,
        &[REDIRECT_URI],
        APP_SCOPES,
        None,
        None,
    )
    .await;
    let list = ok(&s, &["client", "list"]).await;
    for (id, kind) in [
        ("svc", "confidential"),
        ("bulk", "backend"),
        ("web", "public"),
    ] {
        let line = list
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} in {list}"));
        assert!(line.contains(kind) && line.contains(" no "), "{line}");
    }
    assert!(list.contains("(3 client(s))"), "{list}");
    assert_no_secrets(&list, &[&secret]);
    let show = ok(&s, &["client", "show", "svc"]).await;
    for line in [
        "client_id: svc",
        "type: confidential",
        "scopes: system/*.rs",
        "disabled: no",
    ] {
        assert!(show.contains(line), "{line} in {show}");
    }
    assert_no_secrets(&show, &[&secret]);
    let show = ok(&s, &["client", "show", "bulk"]).await;
    assert!(show.contains("keys: k1 (EC)"), "{show}");
    assert!(!show.contains("iA7lWQ"), "key material in {show}");
    let show = ok(&s, &["client", "show", "web"]).await;
    assert!(
        show.contains(&format!("redirect URIs: {REDIRECT_URI}")),
        "{show}"
    );
    for command in ["show", "disable", "enable", "remove", "rotate-secret"] {
        fails(&s, &["client", command, "nope"], "no client 'nope'").await;
    }
}

async fn a_disabled_client_gets_no_tokens_and_its_tokens_are_refused_until_enabled(
    s: SecureServer,
) {
    let secret = s
        .add_client(
            "svc",
            ClientKind::Confidential,
            &[],
            "system/*.rs",
            None,
            None,
        )
        .await
        .unwrap();
    let (status, t) = client_token(&s, "svc", &secret).await;
    assert_eq!(status, 200, "{t}");
    let token = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(fhir_status(&s, &token).await, 200);
    // a public app with a user's code and refresh token in hand
    let (_, app, user_tokens) = signed_in(&s).await;
    let user = unique("doc");
    s.add_user(&user, "practitioner", None).await;
    let (code, verifier) = s
        .code(&app, &user, "openid offline_access user/*.rs", None, None)
        .await;

    let out = ok(&s, &["client", "disable", "svc"]).await;
    assert!(out.contains("disabled client svc"), "{out}");
    ok(&s, &["client", "disable", &app]).await;
    assert!(
        ok(&s, &["client", "show", "svc"])
            .await
            .contains("disabled: yes")
    );
    let r = s.with_token(&token).get("Patient").await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("client"), "{}", r.text);
    assert_eq!(fhir_status(&s, &user_tokens.access_token).await, 401);
    let (status, body) = client_token(&s, "svc", &secret).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = s.exchange(&app, None, &code, &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = refresh(&s, &app, user_tokens.refresh_token.as_deref().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let out = ok(&s, &["client", "enable", "svc"]).await;
    assert!(out.contains("enabled client svc"), "{out}");
    ok(&s, &["client", "enable", &app]).await;
    assert_eq!(fhir_status(&s, &token).await, 200);
    assert_eq!(fhir_status(&s, &user_tokens.access_token).await, 200);
    let (status, t) = client_token(&s, "svc", &secret).await;
    assert_eq!(status, 200, "{t}");
    let (status, body) = refresh(&s, &app, user_tokens.refresh_token.as_deref().unwrap()).await;
    assert_eq!(status, 200, "{body}");
}

async fn a_removed_clients_tokens_are_refused(s: SecureServer) {
    let secret = s
        .add_client(
            "svc",
            ClientKind::Confidential,
            &[],
            "system/*.rs",
            None,
            None,
        )
        .await
        .unwrap();
    let (_, t) = client_token(&s, "svc", &secret).await;
    let token = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(fhir_status(&s, &token).await, 200);
    let out = ok(&s, &["client", "remove", "svc"]).await;
    assert!(out.contains("removed client svc"), "{out}");
    assert_eq!(fhir_status(&s, &token).await, 401);
    let (status, body) = client_token(&s, "svc", &secret).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    fails(&s, &["client", "show", "svc"], "no client 'svc'").await;
}

async fn rotate_secret_replaces_a_confidential_clients_secret(s: SecureServer) {
    let old = s
        .add_client(
            "svc",
            ClientKind::Confidential,
            &[],
            "system/*.rs",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(client_token(&s, "svc", &old).await.0, 200);
    let out = ok(&s, &["client", "rotate-secret", "svc"]).await;
    let new = out
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert_ne!(new, old);
    let (status, body) = client_token(&s, "svc", &old).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = client_token(&s, "svc", &new).await;
    assert_eq!(status, 200, "{body}");
    // shown once: show and list do not repeat it
    assert_no_secrets(&ok(&s, &["client", "show", "svc"]).await, &[&new]);
    assert_no_secrets(&ok(&s, &["client", "list"]).await, &[&new]);
    // only confidential clients have a secret
    let app = s.add_public_app().await;
    fails(
        &s,
        &["client", "rotate-secret", &app],
        "only confidential clients have a secret",
    )
    .await;
}
