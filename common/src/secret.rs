//! Bearer tokens: read from files only the owner may read, never printed,
//! compared in constant time (length included: both sides are hashed
//! first).

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Group or others may read or write it.
    #[error("token file {path} is accessible by group or others (mode {mode:04o}); run: chmod 600 {path}")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Its first line is empty, too short or has non-token characters.
    #[error("token file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the token itself).
        reason: String,
    },
}

/// Shortest token accepted, in characters.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted, in characters.
pub const MAX_TOKEN_LEN: usize = 512;
/// Largest token file read, bytes.
const MAX_FILE: u64 = 4096;

/// The permission bits of a file that group or others may access (None:
/// only its owner may). Token files and private keys must be owner-only.
pub fn open_to_others(meta: &std::fs::Metadata) -> Option<u32> {
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// A bearer token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    digest: [u8; 32],
}

impl Secret {
    /// A token from its text (checked like a file's first line).
    pub fn new(value: &str) -> Result<Secret, String> {
        let v = value.trim();
        if v.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token is shorter than {MIN_TOKEN_LEN} characters"
            ));
        }
        if v.len() > MAX_TOKEN_LEN {
            return Err(format!(
                "the token is longer than {MAX_TOKEN_LEN} characters"
            ));
        }
        if !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token has characters other than printable ASCII".into());
        }
        Ok(Secret {
            value: v.to_string(),
            digest: Sha256::digest(v.as_bytes()).into(),
        })
    }

    /// Reads the first line of `path`, refusing a file that group or others
    /// may access.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let read = |source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if let Some(mode) = open_to_others(&meta) {
            return Err(SecretError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() > MAX_FILE {
            return Err(SecretError::Invalid {
                path: path.to_path_buf(),
                reason: format!("larger than {MAX_FILE} bytes"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Secret::new(text.lines().next().unwrap_or("")).map_err(|reason| SecretError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The token, to present it (an `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether `presented` is this token, in time independent of where
    /// they differ and of their lengths.
    pub fn matches(&self, presented: &str) -> bool {
        self.matches_digest(&Presented::new(presented))
    }

    /// Whether `presented` is this token (as [`Secret::matches`], with the
    /// presented token hashed once for comparing it with many secrets).
    pub fn matches_digest(&self, presented: &Presented) -> bool {
        presented
            .0
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// A presented token, hashed (SHA-256) once: compared with every known
/// secret by [`Secret::matches_digest`] without hashing it again for each.
#[derive(Clone)]
pub struct Presented([u8; 32]);

impl Presented {
    /// Hashes `token`.
    pub fn new(token: &str) -> Self {
        Presented(Sha256::digest(token.as_bytes()).into())
    }
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Presented(<redacted>)")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A fresh random token (32 bytes from the OS, hex): the one-time peer
/// token of a migration.
pub fn random_token() -> Result<Secret, String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Secret::new(&hex)
}

/// The bearer token of an `Authorization: Bearer …` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let v = header?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(mode: u32, text: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "shoal-secret-{}-{mode:o}-{}",
            std::process::id(),
            text.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.token");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, p)
    }

    #[test]
    fn matches_only_the_same_token() {
        let s = Secret::new("0123456789abcdef-xyz").unwrap();
        assert!(s.matches("0123456789abcdef-xyz"));
        assert!(!s.matches("0123456789abcdef-xy"));
        assert!(!s.matches("0123456789abcdef-xyzz"));
        assert!(!s.matches(""));
        assert!(!s.matches("1123456789abcdef-xyz"));
    }

    #[test]
    fn a_presented_digest_matches_as_the_token_does() {
        let s = Secret::new("0123456789abcdef-xyz").unwrap();
        for (t, ok) in [
            ("0123456789abcdef-xyz", true),
            ("0123456789abcdef-xy", false),
            ("", false),
        ] {
            assert_eq!(s.matches_digest(&Presented::new(t)), ok, "{t}");
            assert_eq!(s.matches(t), ok, "{t}");
        }
        assert!(!format!("{:?}", Presented::new("0123456789abcdef-xyz")).contains("0123"));
    }

    #[test]
    fn never_printed() {
        let s = Secret::new("0123456789abcdef-xyz").unwrap();
        assert!(!format!("{s:?} {s}").contains("0123"));
    }

    #[test]
    fn short_or_odd_tokens_are_refused() {
        assert!(Secret::new("short").is_err());
        assert!(Secret::new("0123456789abcdef\u{7f}").is_err());
        assert!(Secret::new("0123456789 abcdef").is_err());
        assert!(Secret::new(&"x".repeat(600)).is_err());
    }

    #[test]
    fn files_open_to_others_are_refused() {
        let (d, p) = file(0o644, "0123456789abcdef-xyz\n");
        let e = Secret::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("group or others") && e.contains("0644"), "{e}");
        assert!(!e.contains("0123456789abcdef"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Secret::from_file(&p)
            .unwrap()
            .matches("0123456789abcdef-xyz"));
        std::fs::remove_dir_all(d).unwrap();
        let (d, p) = file(0o600, "\n");
        assert!(Secret::from_file(&p).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn random_tokens_differ() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(!a.matches(b.expose()));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
    }
}
