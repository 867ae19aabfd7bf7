//! The error type of the exchange: what can go wrong moving data between
//! stages, typed so the scheduler can act on it (a lost map output is
//! re-computable; an unresolved reader is a bug).

use datafusion::error::DataFusionError;

use datafusion::object_store;
use volley_proto::v1;

use crate::location::PartitionLocation;

/// Errors raised by the exchange operators, grouped by who must act.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Environment: a map output could not be read from where the scheduler
    /// said it lives (executor gone, network failure, output lost). The
    /// scheduler may re-run the map task that produced it.
    #[error("could not fetch {location}: {reason}")]
    FetchFailed {
        /// The map output that could not be read.
        location: PartitionLocation,
        /// What the transport said.
        reason: String,
    },
    /// Environment: the executor's memory or disk could not hold an output.
    #[error("shuffle output could not be stored: {0}")]
    ResourcesExhausted(String),
    /// Bug: a stage plan ran without the exchange context the executor
    /// installs in every task.
    #[error("internal error: no exchange context in the task's session config")]
    MissingContext,
    /// Bug: a shuffle reader ran before the scheduler resolved its inputs.
    #[error("internal error: shuffle reader of stage {0} ran before its inputs were resolved")]
    Unresolved(u32),
}

impl From<ExchangeError> for DataFusionError {
    fn from(value: ExchangeError) -> Self {
        DataFusionError::External(Box::new(value))
    }
}

/// Finds an error of type `T` anywhere in the source chain of a DataFusion
/// error, however DataFusion wrapped it (context, shared, arrow external).
pub fn find_in_error_chain<T: std::error::Error + 'static>(error: &DataFusionError) -> Option<&T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(DataFusionError::Shared(inner)) = e.downcast_ref::<DataFusionError>() {
            current = Some(inner.as_ref());
            continue;
        }
        current = e.source();
    }
    None
}

/// Finds an [`ExchangeError`] anywhere in a DataFusion error's source chain.
pub fn find_exchange_error(error: &DataFusionError) -> Option<&ExchangeError> {
    find_in_error_chain(error)
}

/// Who must act on a DataFusion error: the one place Volley maps errors to
/// its typed [`v1::ErrorKind`] (and so to retryability).
pub fn classify_error(error: &DataFusionError) -> v1::ErrorKind {
    if let Some(exchange) = find_exchange_error(error) {
        return match exchange {
            ExchangeError::FetchFailed { .. } => v1::ErrorKind::FetchFailed,
            ExchangeError::ResourcesExhausted(_) => v1::ErrorKind::ResourcesExhausted,
            ExchangeError::MissingContext | ExchangeError::Unresolved(_) => v1::ErrorKind::Internal,
        };
    }
    match error {
        DataFusionError::Context(_, inner) => classify_error(inner),
        DataFusionError::Shared(inner) => classify_error(inner),
        DataFusionError::Diagnostic(_, inner) => classify_error(inner),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ParquetError(_)
        | DataFusionError::ArrowError(..) => v1::ErrorKind::User,
        // A missing or unreadable input file is the user's to fix.
        DataFusionError::ObjectStore(e) => match e.as_ref() {
            object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::PermissionDenied { .. } => v1::ErrorKind::User,
            _ => v1::ErrorKind::Environment,
        },
        DataFusionError::IoError(e) => match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                v1::ErrorKind::User
            }
            _ => v1::ErrorKind::Environment,
        },
        DataFusionError::ResourcesExhausted(_) => v1::ErrorKind::ResourcesExhausted,
        DataFusionError::ExecutionJoin(_) | DataFusionError::Internal(_) => v1::ErrorKind::Internal,
        DataFusionError::External(_) => v1::ErrorKind::Environment,
        _ => v1::ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ids::{ExecutorId, JobId, MapOutputId, StageId};

    #[test]
    fn a_fetch_failure_is_found_through_datafusion_wrappers() {
        let location = PartitionLocation {
            map_output: MapOutputId {
                job_id: JobId::from("j"),
                stage_id: StageId(2),
                map_partition: 3,
            },
            output_partition: 1,
            executor_id: ExecutorId::from("e1"),
            endpoint: "http://127.0.0.1:1".into(),
        };
        let error: DataFusionError = ExchangeError::FetchFailed {
            location: location.clone(),
            reason: "connection refused".into(),
        }
        .into();
        let wrapped = DataFusionError::Shared(Arc::new(error.context("reading input")));
        match find_exchange_error(&wrapped) {
            Some(ExchangeError::FetchFailed {
                location: found, ..
            }) => {
                assert_eq!(found, &location)
            }
            other => panic!("expected a fetch failure, got {other:?}"),
        }
    }
}
