//! The executor's error type, grouped by who must act.

/// Errors that stop an executor from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    // -- The user must act --------------------------------------------------
    /// The scheduler refused the registration (e.g. protocol mismatch).
    #[error("the scheduler at {url} refused this executor: {message}")]
    Refused {
        /// The scheduler's URL.
        url: String,
        /// The scheduler's reason.
        message: String,
    },
    /// A flag or setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    // -- The environment --------------------------------------------------
    /// The scheduler could not be reached.
    #[error("cannot reach the scheduler at {url}: {message}")]
    SchedulerUnreachable {
        /// The scheduler's URL.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// The scheduler closed the control stream.
    #[error("lost the scheduler: {0}")]
    SchedulerLost(String),
    /// Binding, the work directory, or another I/O failure.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The Flight server failed.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),

    // -- A bug ------------------------------------------------------------------
    /// DataFusion could not be set up.
    #[error("internal error: {0}")]
    Internal(#[from] datafusion::error::DataFusionError),
}
