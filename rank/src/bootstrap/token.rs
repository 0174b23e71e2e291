//! The job token: a shared secret every control-plane call carries.
//!
//! It comes from a file the job script writes with mode 0600
//! ([`vars::JOB_TOKEN_FILE`](super::vars::JOB_TOKEN_FILE)) or from an environment
//! variable ([`vars::JOB_TOKEN`](super::vars::JOB_TOKEN)), never from a command line: a
//! command line is world-readable in `/proc/<pid>/cmdline` and in `ps`.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Shortest token accepted, in bytes: shorter ones are guessable.
pub const MIN_LEN: usize = 16;

/// A job token. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JobToken(String);

/// A token that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the job token file `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the job token file `{path}` has mode {mode:03o}: group or others may read it; \
         it must be 0600 (`chmod 600 {path}`)",
        path = path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the job token from {origin} is {len} bytes; it must be at least {MIN_LEN} printable ASCII characters without spaces")]
    Invalid { origin: String, len: usize },
    #[error("cannot generate a job token from `/dev/urandom`")]
    Random(#[source] std::io::Error),
}

impl JobToken {
    /// Checks a token's text: printable ASCII without whitespace (it travels in gRPC
    /// metadata), at least [`MIN_LEN`] bytes.
    pub fn new(text: &str, origin: &str) -> Result<Self, TokenError> {
        let ok = text.len() >= MIN_LEN && text.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(TokenError::Invalid {
                origin: origin.to_owned(),
                len: text.len(),
            });
        }
        Ok(Self(text.to_owned()))
    }

    /// Reads a token file, refusing one that group or others can read or write.
    /// Surrounding whitespace (a trailing newline) is ignored.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let read_err = |source| TokenError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read_err)?;
        Self::new(text.trim(), &format!("`{}`", path.display()))
    }

    /// A fresh random token (32 bytes from `/dev/urandom`, hex): for `--local` runs,
    /// where cohort starts every rank itself.
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(TokenError::Random)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(hex))
    }

    /// Writes the token to a new file with mode 0600, as a job script would.
    pub fn write_file(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(self.0.as_bytes())
    }

    /// Whether `given` is this token, in time independent of where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(given).into()
    }

    /// The secret, to put into a request's metadata.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JobToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens_only() {
        let t = JobToken::new("0123456789abcdef", "test").unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeX"));
        assert!(!t.matches(b"0123456789abcde"));
        assert!(!t.matches(b""));
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert!(JobToken::new("short", "test").is_err());
        assert!(JobToken::new("0123456789 abcdef", "test").is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = JobToken::new("0123456789abcdef", "test").unwrap();
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn generated_tokens_differ_and_are_valid() {
        let a = JobToken::generate().unwrap();
        let b = JobToken::generate().unwrap();
        assert_ne!(a, b);
        assert!(JobToken::new(a.expose(), "generated").is_ok());
    }
}
