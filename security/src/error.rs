//! Errors of loading credentials and certificates, grouped by who must act.

use std::path::PathBuf;

/// What went wrong setting up security. All are the operator's to fix.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A credentials, key or certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A users file has a line that is not `name role sha256:HEX`.
    #[error("{path} line {line}: {message}")]
    UsersFile {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The cluster secret is too short or empty.
    #[error("the cluster secret in {path} is too short: it needs at least {min} bytes")]
    WeakSecret {
        /// The file.
        path: PathBuf,
        /// The minimum length.
        min: usize,
    },
    /// A user name or role is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Making certificates failed.
    #[error("cannot make certificates: {0}")]
    Certificates(String),
    /// The system's random number generator failed.
    #[error("no randomness available from the operating system")]
    Random,
}
