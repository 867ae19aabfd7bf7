//! The scheduler's error type, grouped by who must act, and its one mapping
//! onto gRPC status codes.

use datafusion::error::DataFusionError;
use volley_dataflow::JobId;

/// Errors the scheduler returns to clients and executors.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    // -- The user must act --------------------------------------------------
    /// The plan cannot be planned or run: unsupported operator, unknown
    /// setting, a file that cannot be read at planning time.
    #[error("{0}")]
    Plan(#[from] DataFusionError),
    /// No job with this id is known (never submitted, or forgotten).
    #[error("no job with id {0}")]
    JobNotFound(JobId),
    /// A request was malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// An executor speaks another protocol version.
    #[error("executor protocol version {executor} does not match the scheduler's {scheduler}")]
    ProtocolMismatch {
        /// The executor's version.
        executor: u32,
        /// The scheduler's version.
        scheduler: u32,
    },

    // -- The environment --------------------------------------------------
    /// The scheduler could not bind or serve.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// An I/O error, e.g. binding the listen address.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The event log directory (`--event-log`) cannot be created or used.
    #[error("the event log {path} cannot be used: {message}")]
    EventLog {
        /// The directory.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The state store (`--state-dir`) cannot be opened, read or written.
    #[error("the state store {path} cannot be used: {message}")]
    StateStore {
        /// The store's file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The state store is damaged; the scheduler will not guess at what it
    /// held.
    #[error(
        "the state store {path} is corrupted ({message}); move it aside, or start with \
         --fresh-state to keep it as {path}.corrupt and begin with no jobs"
    )]
    CorruptStateStore {
        /// The store's file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Another scheduler claimed the state store after this one.
    #[error("another scheduler took over the state store (epoch {current} > ours, {ours})")]
    Fenced {
        /// This scheduler's epoch.
        ours: u64,
        /// The store's epoch now.
        current: u64,
    },
}

impl From<SchedulerError> for tonic::Status {
    fn from(value: SchedulerError) -> Self {
        let message = value.to_string();
        match value {
            SchedulerError::Plan(_) | SchedulerError::InvalidRequest(_) => {
                tonic::Status::invalid_argument(message)
            }
            SchedulerError::JobNotFound(_) => tonic::Status::not_found(message),
            SchedulerError::ProtocolMismatch { .. } => tonic::Status::failed_precondition(message),
            SchedulerError::Transport(_)
            | SchedulerError::Io(_)
            | SchedulerError::StateStore { .. }
            | SchedulerError::EventLog { .. }
            | SchedulerError::CorruptStateStore { .. }
            | SchedulerError::Fenced { .. } => tonic::Status::unavailable(message),
        }
    }
}
