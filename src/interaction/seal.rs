//! The audit chain's seal: a server key outside the database that keys every link (HMAC-
//! SHA-256 over the previous link and the AuditEvent's exact text), and a signed head
//! (the newest committed link) kept beside the key. Whoever can write the database but not
//! read the key cannot re-hash the chain, and cannot cut its end or empty it without the
//! head pointing at a link that is gone.

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The prefix of a keyed link's hash (unkeyed links from before the seal are bare hex).
pub const KEYED: &str = "hmac:";

/// The key and where the signed head is kept.
pub struct Seal {
    key: Vec<u8>,
    head: PathBuf,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seal(head: {})", self.head.display())
    }
}

/// The newest committed link as the server last saw it, with its MAC.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    hash: String,
    mac: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Seal {
    /// The seal of the key file at `path`, which is created (32 random bytes, hex, readable
    /// only by its owner) when missing; the head lives at `<path>.head`.
    pub fn open(path: &Path) -> Result<Seal, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let text = hex(&key);
                write_private(path, &text)
                    .map_err(|e| format!("cannot create the audit key {}: {e}", path.display()))?;
                text
            }
            Err(e) => return Err(format!("cannot read the audit key {}: {e}", path.display())),
        };
        let key = text.trim().as_bytes().to_vec();
        if key.len() < 32 {
            return Err(format!(
                "the audit key {} is shorter than 32 characters",
                path.display()
            ));
        }
        let mut head = path.as_os_str().to_owned();
        head.push(".head");
        Ok(Seal {
            key,
            head: PathBuf::from(head),
        })
    }

    /// The seal of an existing key file (verification never makes a key); None when absent.
    pub fn read(path: &Path) -> Result<Option<Seal>, String> {
        if !path.exists() {
            return Ok(None);
        }
        Seal::open(path).map(Some)
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let Ok(mut m) = HmacSha256::new_from_slice(&self.key) else {
            return String::new();
        };
        for p in parts {
            m.update(p);
            // a separator, so (a, bc) and (ab, c) differ
            m.update(&[0]);
        }
        hex(&m.finalize().into_bytes())
    }

    /// The keyed hash of an event's exact text after the link `prev`.
    pub fn link(&self, prev: &str, text: &str) -> String {
        format!("{KEYED}{}", self.mac(&[prev.as_bytes(), text.as_bytes()]))
    }

    /// Records `hash` (a committed link) as the head. Best effort: a head that cannot be
    /// written is logged, and the next append writes it again.
    pub fn record_head(&self, hash: &str) {
        if !hash.starts_with(KEYED) {
            return;
        }
        let head = Head {
            hash: hash.to_string(),
            mac: self.mac(&[b"head", hash.as_bytes()]),
        };
        let Ok(text) = serde_json::to_string(&head) else {
            return;
        };
        let tmp = self.head.with_extension("head.tmp");
        let written = write_private(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &self.head));
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot record the audit chain's head");
        }
    }

    /// The recorded head: None when there is none yet; Err when it was forged or damaged.
    pub fn head(&self) -> Result<Option<String>, String> {
        let text = match std::fs::read_to_string(&self.head) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.head.display())),
        };
        let head: Head = serde_json::from_str(&text)
            .map_err(|_| format!("{} is damaged", self.head.display()))?;
        if self.mac(&[b"head", head.hash.as_bytes()]) != head.mac {
            return Err(format!(
                "{} does not carry this key's signature",
                self.head.display()
            ));
        }
        Ok(Some(head.hash))
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_keyed_and_the_head_is_signed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.key");
        let a = Seal::open(&path).expect("created");
        let b = Seal::open(&path).expect("read back");
        assert_eq!(a.link("p", "t"), b.link("p", "t"));
        assert!(a.link("p", "t").starts_with(KEYED));
        assert_ne!(a.link("p", "t"), a.link("pt", ""));
        std::fs::write(dir.path().join("other.key"), "x".repeat(40)).expect("write");
        let other = Seal::open(&dir.path().join("other.key")).expect("other");
        assert_ne!(a.link("p", "t"), other.link("p", "t"));
        assert_eq!(a.head(), Ok(None));
        let h = a.link("p", "t");
        a.record_head(&h);
        assert_eq!(b.head(), Ok(Some(h.clone())));
        // a head written without the key is refused
        std::fs::write(&a.head, format!("{{\"hash\":\"{h}\",\"mac\":\"00\"}}")).expect("forge");
        assert!(a.head().is_err());
    }
}
