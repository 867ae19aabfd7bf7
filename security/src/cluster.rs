//! The cluster secret: shared by the scheduler and its executors, never
//! sent anywhere. What travels is derived from it: the credential executors
//! present, the scheduler's proof that it holds the secret too, and the key
//! that signs data tickets.

use std::fmt;
use std::path::Path;

use ring::hmac;

use crate::error::SecurityError;
use crate::secret::{Secret, random_bytes};

/// Bytes a cluster secret must have at least.
const MIN_SECRET_BYTES: usize = 32;

/// The secret a scheduler and its executors share.
#[derive(Clone)]
pub struct ClusterSecret {
    key: hmac::Key,
}

impl ClusterSecret {
    /// The secret `text` (at least 32 bytes once trimmed).
    fn from_text(text: &str, path: &Path) -> Result<Self, SecurityError> {
        let text = text.trim();
        if text.len() < MIN_SECRET_BYTES {
            return Err(SecurityError::WeakSecret {
                path: path.to_path_buf(),
                min: MIN_SECRET_BYTES,
            });
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, text.as_bytes()),
        })
    }

    /// Reads the secret from `path` (`--cluster-secret-file`).
    pub fn load(path: &Path) -> Result<Self, SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(&text, path)
    }

    /// A fresh random secret (the embedded cluster makes its own).
    pub fn random() -> Result<Self, SecurityError> {
        let text = Secret::random()?;
        Self::from_text(text.expose(), Path::new("(generated)"))
    }

    /// Writes a fresh random secret to `path`, readable by its owner only,
    /// and returns it. Refuses to replace an existing file.
    pub fn create_file(path: &Path) -> Result<Self, SecurityError> {
        let text = Secret::random()?;
        write_private(path, &format!("{}\n", text.expose()))?;
        Self::from_text(text.expose(), path)
    }

    fn derive(&self, label: &str) -> hmac::Tag {
        hmac::sign(&self.key, label.as_bytes())
    }

    /// What an executor presents as its bearer credential: derived from the
    /// secret, so the secret itself never leaves the machine.
    pub fn credential(&self) -> Secret {
        Secret::new(hex::encode(self.derive("volley/executor-credential/v1")))
    }

    /// What a metrics scraper (Prometheus) presents to read `/metrics` on
    /// the scheduler and every executor, and nothing else: derived from
    /// the secret (`volley secret metrics-token`).
    pub fn metrics_credential(&self) -> Secret {
        Secret::new(hex::encode(self.derive("volley/metrics-credential/v1")))
    }

    /// The key tickets are signed with.
    pub(crate) fn ticket_key(&self) -> hmac::Key {
        hmac::Key::new(
            hmac::HMAC_SHA256,
            self.derive("volley/ticket-key/v1").as_ref(),
        )
    }

    fn proof_key(&self) -> hmac::Key {
        hmac::Key::new(
            hmac::HMAC_SHA256,
            self.derive("volley/scheduler-proof/v1").as_ref(),
        )
    }

    /// A fresh nonce for an executor to challenge its scheduler with.
    pub fn nonce() -> Result<Vec<u8>, SecurityError> {
        Ok(random_bytes::<32>()?.to_vec())
    }

    /// The scheduler's answer to an executor's `nonce`.
    pub fn proof(&self, nonce: &[u8]) -> Vec<u8> {
        hmac::sign(&self.proof_key(), nonce).as_ref().to_vec()
    }

    /// Does `proof` answer `nonce`? (Constant time.)
    pub fn verify_proof(&self, nonce: &[u8], proof: &[u8]) -> bool {
        !nonce.is_empty() && hmac::verify(&self.proof_key(), nonce, proof).is_ok()
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Writes `text` to a new file at `path` that only its owner can read.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), SecurityError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = |source| SecurityError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = options.open(path).map_err(write)?;
    file.write_all(text.as_bytes()).map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_holder_of_the_same_secret_answers_a_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let secret = ClusterSecret::create_file(&path).unwrap();
        let again = ClusterSecret::load(&path).unwrap();
        let other = ClusterSecret::random().unwrap();
        let nonce = ClusterSecret::nonce().unwrap();
        assert!(again.verify_proof(&nonce, &secret.proof(&nonce)));
        assert!(!again.verify_proof(&nonce, &other.proof(&nonce)));
        assert!(!again.verify_proof(&[], &secret.proof(&[])));
        assert_eq!(secret.credential(), again.credential());
        assert_ne!(secret.credential(), other.credential());
        assert!(ClusterSecret::create_file(&path).is_err(), "never replaced");
    }

    #[test]
    fn a_short_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "short\n").unwrap();
        let message = ClusterSecret::load(&path).unwrap_err().to_string();
        assert!(message.contains("at least 32 bytes"), "{message}");
    }
}
