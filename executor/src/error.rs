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
    /// A scheduler answered whose state-store epoch is older than one this
    /// executor already served: a stale scheduler, which it does not obey.
    #[error(
        "the scheduler at {url} is stale (epoch {epoch}, but this executor served epoch {served}); waiting for the current one"
    )]
    StaleScheduler {
        /// The scheduler's URL.
        url: String,
        /// The epoch it announced.
        epoch: u64,
        /// The highest epoch served before.
        served: u64,
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
