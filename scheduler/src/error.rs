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
            SchedulerError::Transport(_) | SchedulerError::Io(_) => {
                tonic::Status::unavailable(message)
            }
        }
    }
}
