//! Harness for the typed-client check: starts the real `healporium` binary on a free port with a
//! fresh database (a SQLite file, or a new PostgreSQL schema) and stops it again, also when a test
//! fails. Plain std only: the FHIR side of the check lives in tests/typed_client.rs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the server may take to answer `GET /fhir/metadata` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The server binary: `HEALPORIUM_BIN`, else the main workspace's `target/debug/healporium`.
pub fn server_binary() -> PathBuf {
    let path = match std::env::var_os("HEALPORIUM_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/healporium"),
    };
    assert!(
        path.is_file(),
        "server binary not found at {}: run `cargo build` in the repository root first \
         (this check talks to the built binary), or point HEALPORIUM_BIN at it",
        path.display()
    );
    path
}

/// A fresh, empty scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("healporium-typed-client-{}", unique()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process-unique token for names of scratch dirs and schemas.
fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The PostgreSQL URL to test against (`HEALPORIUM_TEST_DATABASE_URL`); `None` means skip, which
/// is not allowed under `CI=true`.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("HEALPORIUM_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but HEALPORIUM_TEST_DATABASE_URL is not set: the PostgreSQL half of \
                 the typed-client check must run in CI"
            );
            None
        }
    }
}

/// A fresh PostgreSQL schema in the database at the admin URL, dropped (with everything in it)
/// on drop. Created and dropped with `psql`, so this workspace needs no database driver.
#[derive(Debug)]
pub struct PgSchema {
    admin_url: String,
    name: String,
}

impl PgSchema {
    pub fn create(admin_url: &str) -> Self {
        let name = format!("hp_typed_{}", unique());
        psql(admin_url, &format!("CREATE SCHEMA {name}"));
        Self {
            admin_url: admin_url.to_owned(),
            name,
        }
    }

    /// The database URL that makes the server work inside this schema only.
    pub fn database_url(&self) -> String {
        let sep = if self.admin_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.admin_url, self.name
        )
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let ok = Command::new("psql")
            .env("PGOPTIONS", "-c client_min_messages=warning")
            .args([
                self.admin_url.as_str(),
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                &drop_schema,
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not drop test schema {}", self.name);
        }
    }
}

/// Runs one SQL command with psql, panicking with psql's error output if it fails.
fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .env("PGOPTIONS", "-c client_min_messages=warning")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .unwrap_or_else(|e| panic!("cannot run psql (needed for the PostgreSQL half): {e}"));
    assert!(
        out.status.success(),
        "psql `{sql}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A running `healporium serve`; killed on drop. If the test is panicking, the server's log is
/// printed so the failure can be read next to what the server said.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Server {
    /// Starts the server on a free port with `--database-url`, logging into `scratch`, and waits
    /// until `GET /fhir/metadata` answers 200.
    pub fn start(database_url: &str, scratch: &Scratch) -> Self {
        let bin = server_binary();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = scratch.path().join("server.log");
        let log_file = std::fs::File::create(&log).expect("create server log");
        let child = Command::new(&bin)
            .args(["serve", "--listen", &addr, "--database-url", database_url])
            // the typed client checks FHIR semantics, not authorization
            .arg("--insecure-no-auth")
            .env_remove("DATABASE_URL")
            .env_remove("HEALPORIUM_LISTEN")
            .env_remove("HEALPORIUM_BASE_URL")
            .env("NO_COLOR", "1")
            .current_dir(scratch.path())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Self { child, addr, log };
        server.wait_until_ready();
        server
    }

    /// The FHIR base URL, with the trailing slash fhir-sdk wants.
    pub fn base_url(&self) -> String {
        format!("http://{}/fhir/", self.addr)
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll server process") {
                panic!(
                    "the server exited during start-up ({status}); its log:\n{}",
                    self.log_text()
                );
            }
            if metadata_answers(&self.addr) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "GET /fhir/metadata did not answer 200 within {START_TIMEOUT:?}; server log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- server log ----\n{}---- end of server log ----",
                self.log_text()
            );
        }
    }
}

/// A port nobody listens on right now (the OS picks it; the server binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// One raw HTTP/1.1 `GET /fhir/metadata`: true when the status line says 200.
fn metadata_answers(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "GET /fhir/metadata HTTP/1.1\r\nHost: {addr}\r\nAccept: application/fhir+json\r\n\
         Connection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
