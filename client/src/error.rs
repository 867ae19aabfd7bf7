//! The client's error type, grouped by who must act, and the process exit
//! code each maps to (documented in `volley --help`).

use datafusion::error::DataFusionError;
use volley_dataflow::JobId;
use volley_proto::v1;

/// Errors a Volley client returns.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // -- The user must act --------------------------------------------------
    /// The query could not be planned or run: bad SQL, unknown table, ...
    #[error("{0}")]
    Query(#[from] DataFusionError),
    /// The job ran and failed; `kind` says who must act.
    #[error("{message}")]
    JobFailed {
        /// The job.
        job_id: JobId,
        /// The typed failure reason.
        kind: v1::ErrorKind,
        /// What went wrong.
        message: String,
        /// For an error of the query itself, DataFusion's own error (see
        /// [`ClientError::into_datafusion`]).
        query_error: Option<v1::QueryError>,
    },
    /// The command line was wrong (an unknown parameter, a bad duration).
    #[error("{0}")]
    Usage(String),
    /// The cluster does not know the credential (none, or a wrong token).
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The credential is good but may not do this (a `read` user
    /// submitting, another user's job).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Something waited for did not happen in time (`volley executors wait`).
    #[error("{0}")]
    WaitTimedOut(String),
    /// A job did not finish in time: waiting for it stopped, and it was
    /// cancelled on the cluster if `cancelled`.
    #[error(
        "job {job_id} did not finish within {after:?}; {}",
        if *cancelled { "it was cancelled".to_string() } else {
            format!("it goes on (cancel it with `volley jobs cancel {job_id}`)")
        }
    )]
    Timeout {
        /// The job.
        job_id: JobId,
        /// The time allowed.
        after: std::time::Duration,
        /// Whether the job was cancelled when the time ran out.
        cancelled: bool,
    },

    // -- The environment --------------------------------------------------
    /// The scheduler could not be reached.
    #[error("cannot reach the Volley scheduler at {url}: {message}")]
    SchedulerUnreachable {
        /// The URL tried.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// The scheduler answered with an error.
    #[error("the scheduler answered: {0}")]
    Scheduler(#[from] tonic::Status),
    /// A scheduler or executor answers but does not serve (it is starting,
    /// or draining): `volley health`.
    #[error("{0} answers but is not serving (starting, or draining)")]
    NotServing(String),
    /// The embedded cluster could not start.
    #[error("cannot start the embedded cluster: {0}")]
    Embedded(String),
    /// Local I/O (writing output, generating data).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The failure a finished job's status reports; `None` if it succeeded
    /// (or has not ended).
    pub fn from_failed_job(status: &v1::JobStatus) -> Option<ClientError> {
        let ended_badly = crate::scheduler_client::is_terminal(status.state)
            && status.state != v1::JobState::Succeeded as i32;
        if !ended_badly {
            return None;
        }
        let error = status.error.clone().unwrap_or_default();
        Some(ClientError::JobFailed {
            job_id: JobId::from(status.job_id.as_str()),
            kind: v1::ErrorKind::try_from(error.kind).unwrap_or(v1::ErrorKind::Internal),
            message: error.message,
            query_error: error.query_error,
        })
    }

    /// The process exit code for this error: 1 a query or job failed, 2
    /// bad usage, 3 the scheduler is unreachable, 4 timed out, 5 the job was
    /// cancelled, 6 not authenticated or not allowed.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => 2,
            ClientError::Unauthenticated(_) | ClientError::PermissionDenied(_) => 6,
            ClientError::SchedulerUnreachable { .. } => 3,
            ClientError::Timeout { .. } | ClientError::WaitTimedOut(_) => 4,
            ClientError::JobFailed {
                kind: v1::ErrorKind::Cancelled,
                ..
            } => 5,
            ClientError::Query(e) => match find_client_error(e) {
                Some(inner) => inner.exit_code(),
                None => 1,
            },
            _ => 1,
        }
    }

    /// A short, stable name for this error: the `error.kind` of `volley
    /// ... --json`. A failed job's is the kind its status reports.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Query(e) => find_client_error(e).map_or("query", ClientError::kind),
            ClientError::JobFailed { kind, .. } => error_kind_name(*kind),
            ClientError::Usage(_) => "usage",
            ClientError::Unauthenticated(_) => "unauthenticated",
            ClientError::PermissionDenied(_) => "permission_denied",
            ClientError::WaitTimedOut(_) | ClientError::Timeout { .. } => "timeout",
            ClientError::SchedulerUnreachable { .. } => "scheduler_unreachable",
            ClientError::Scheduler(_) => "scheduler",
            ClientError::NotServing(_) => "not_serving",
            ClientError::Embedded(_) => "embedded",
            ClientError::Io(_) => "io",
        }
    }

    /// Moves a client error into a DataFusion error (to cross DataFusion's
    /// stream APIs) without losing its type.
    ///
    /// A job that failed because of the query itself (bad SQL semantics,
    /// bad data: [`v1::ErrorKind::User`]) becomes the DataFusion error the
    /// cluster raised, so it reads exactly as single-node DataFusion's.
    pub fn into_datafusion(self) -> DataFusionError {
        if let ClientError::JobFailed {
            kind: v1::ErrorKind::User,
            query_error: Some(query_error),
            ..
        } = &self
            && let Some(error) = volley_dataflow::rebuild_query_error(query_error)
        {
            return error;
        }
        match self {
            ClientError::Query(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// Finds a [`ClientError`] DataFusion wrapped on its way out.
pub fn find_client_error(error: &DataFusionError) -> Option<&ClientError> {
    volley_dataflow::find_in_error_chain(error)
}

pub use volley_proto::error_kind_name;

/// Result with a [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
