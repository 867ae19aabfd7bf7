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
        location: Box<PartitionLocation>,
        /// What the transport said.
        reason: String,
    },
    /// Environment: the executor's memory or disk could not hold an output.
    #[error("shuffle output could not be stored: {0}")]
    ResourcesExhausted(String),
    /// User: the plan calls a function the executor was not built with; a
    /// custom executor binary must register it (see `UdfRegistry`).
    #[error(
        "function `{name}` is not registered on this executor: run an executor built with it \
         (volley_executor::run_main with a UdfRegistry that contains it)"
    )]
    UnknownFunction {
        /// The function's name.
        name: String,
    },
    /// Bug: a stage plan ran without the exchange context the executor
    /// installs in every task.
    #[error("internal error: no exchange context in the task's session config")]
    MissingContext,
    /// Bug: a shuffle reader ran before the scheduler resolved its inputs.
    #[error("internal error: shuffle reader of stage {0} ran before its inputs were resolved")]
    Unresolved(u32),
    /// Bug: one of Volley's own invariants does not hold. Volley's, not
    /// DataFusion's: DataFusion's `Internal` error asks users to report
    /// the bug to DataFusion.
    #[error("Volley internal error: {0}. This is a bug in Volley; please report it with the query")]
    Internal(String),
}

/// A Volley bug as a DataFusion error (see [`ExchangeError::Internal`]).
pub fn volley_internal(message: impl Into<String>) -> DataFusionError {
    ExchangeError::Internal(message.into()).into()
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

/// The most specific kind of I/O error in `error`'s source chain. DataFusion
/// turns its own errors into `io::Error::other` (kind `Other`) on the way
/// through writers, so an `Other` error's payload is searched too.
fn io_error_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut fallback = None;
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() != std::io::ErrorKind::Other {
                return Some(io.kind());
            }
            fallback = Some(io.kind());
            if let Some(kind) = io.get_ref().and_then(|inner| io_error_kind(inner)) {
                return Some(kind);
            }
        }
        if let Some(DataFusionError::Shared(inner)) = e.downcast_ref::<DataFusionError>() {
            current = Some(inner.as_ref());
            continue;
        }
        current = e.source();
    }
    fallback
}

/// Who must act on a DataFusion error: the one place Volley maps errors to
/// its typed [`v1::ErrorKind`] (and so to retryability).
pub fn classify_error(error: &DataFusionError) -> v1::ErrorKind {
    if let Some(exchange) = find_exchange_error(error) {
        return match exchange {
            ExchangeError::FetchFailed { .. } => v1::ErrorKind::FetchFailed,
            ExchangeError::ResourcesExhausted(_) => v1::ErrorKind::ResourcesExhausted,
            ExchangeError::UnknownFunction { .. } => v1::ErrorKind::User,
            ExchangeError::MissingContext
            | ExchangeError::Unresolved(_)
            | ExchangeError::Internal(_) => v1::ErrorKind::Internal,
        };
    }
    // An I/O error anywhere in the chain (Arrow and Parquet wrap them too):
    // a full disk is resources-exhausted, a missing or corrupt input the
    // user's, anything else the environment's.
    if let Some(kind) = io_error_kind(error) {
        use std::io::ErrorKind;
        return match kind {
            ErrorKind::StorageFull
            | ErrorKind::QuotaExceeded
            | ErrorKind::FileTooLarge
            | ErrorKind::OutOfMemory => v1::ErrorKind::ResourcesExhausted,
            ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::InvalidData
            | ErrorKind::UnexpectedEof => v1::ErrorKind::User,
            _ => v1::ErrorKind::Environment,
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

/// The DataFusion error at the root of `error` (through context, sharing,
/// diagnostics and exchange wrappers), by variant, for a client to rebuild
/// with [`rebuild_query_error`]. `None` for errors that are not DataFusion's
/// own (exchange failures, I/O, external errors).
pub fn query_error(error: &DataFusionError) -> Option<v1::QueryError> {
    use datafusion::arrow::error::ArrowError;
    use v1::QueryErrorClass as Class;
    let (class, message) = match error {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            return query_error(inner);
        }
        DataFusionError::Shared(inner) => return query_error(inner),
        DataFusionError::External(inner) => {
            return inner
                .downcast_ref::<DataFusionError>()
                .and_then(query_error);
        }
        DataFusionError::Plan(m) => (Class::Plan, m.clone()),
        DataFusionError::Execution(m) => (Class::Execution, m.clone()),
        DataFusionError::NotImplemented(m) => (Class::NotImplemented, m.clone()),
        DataFusionError::Configuration(m) => (Class::Configuration, m.clone()),
        DataFusionError::ResourcesExhausted(m) => (Class::ResourcesExhausted, m.clone()),
        DataFusionError::Internal(m) => (Class::Internal, m.clone()),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::ComputeError(m) => (Class::ArrowCompute, m.clone()),
            ArrowError::InvalidArgumentError(m) => (Class::ArrowInvalidArgument, m.clone()),
            ArrowError::CastError(m) => (Class::ArrowCast, m.clone()),
            ArrowError::ParseError(m) => (Class::ArrowParse, m.clone()),
            ArrowError::DivideByZero => (Class::ArrowDivideByZero, String::new()),
            ArrowError::ArithmeticOverflow(m) => (Class::ArrowArithmeticOverflow, m.clone()),
            ArrowError::CsvError(m) => (Class::ArrowCsv, m.clone()),
            ArrowError::JsonError(m) => (Class::ArrowJson, m.clone()),
            ArrowError::NotYetImplemented(m) => (Class::ArrowNotYetImplemented, m.clone()),
            _ => return None,
        },
        _ => return None,
    };
    Some(v1::QueryError {
        class: class as i32,
        message,
    })
}

/// The DataFusion error a [`query_error`] describes.
pub fn rebuild_query_error(error: &v1::QueryError) -> Option<DataFusionError> {
    use datafusion::arrow::error::ArrowError;
    use v1::QueryErrorClass as Class;
    let m = error.message.clone();
    let arrow = |e: ArrowError| DataFusionError::ArrowError(Box::new(e), None);
    Some(match Class::try_from(error.class).ok()? {
        Class::Unspecified => return None,
        Class::Plan => DataFusionError::Plan(m),
        Class::Execution => DataFusionError::Execution(m),
        Class::NotImplemented => DataFusionError::NotImplemented(m),
        Class::Configuration => DataFusionError::Configuration(m),
        Class::ResourcesExhausted => DataFusionError::ResourcesExhausted(m),
        Class::Internal => DataFusionError::Internal(m),
        Class::ArrowCompute => arrow(ArrowError::ComputeError(m)),
        Class::ArrowInvalidArgument => arrow(ArrowError::InvalidArgumentError(m)),
        Class::ArrowCast => arrow(ArrowError::CastError(m)),
        Class::ArrowParse => arrow(ArrowError::ParseError(m)),
        Class::ArrowDivideByZero => arrow(ArrowError::DivideByZero),
        Class::ArrowArithmeticOverflow => arrow(ArrowError::ArithmeticOverflow(m)),
        Class::ArrowCsv => arrow(ArrowError::CsvError(m)),
        Class::ArrowJson => arrow(ArrowError::JsonError(m)),
        Class::ArrowNotYetImplemented => arrow(ArrowError::NotYetImplemented(m)),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ids::{ExecutorId, JobId, MapOutputId, StageId};

    #[test]
    fn a_query_error_crosses_the_wire_and_reads_as_datafusion_wrote_it() {
        let original = DataFusionError::Plan("no such column".into());
        let wrapped = DataFusionError::Shared(Arc::new(original.context("planning")));
        let rebuilt = query_error(&wrapped)
            .and_then(|q| rebuild_query_error(&q))
            .expect("a plan error is rebuilt");
        assert_eq!(
            rebuilt.to_string(),
            DataFusionError::Plan("no such column".into()).to_string()
        );
        let io = DataFusionError::IoError(std::io::Error::other("disk"));
        assert!(query_error(&io).is_none());
    }

    #[test]
    fn a_full_disk_under_an_arrow_error_is_resources_exhausted() {
        use datafusion::arrow::error::ArrowError;
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let error = DataFusionError::ArrowError(
            Box::new(ArrowError::IoError("spilling".into(), full)),
            None,
        );
        assert_eq!(classify_error(&error), v1::ErrorKind::ResourcesExhausted);
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        let corrupt =
            DataFusionError::ArrowError(Box::new(ArrowError::IoError("reading".into(), eof)), None);
        assert_eq!(classify_error(&corrupt), v1::ErrorKind::User);
        // As DataFusion's spill writer wraps it: its own error inside an
        // `io::Error::other` inside an Arrow I/O error.
        let inner = DataFusionError::IoError(std::io::Error::from(std::io::ErrorKind::StorageFull));
        let wrapped = DataFusionError::ArrowError(
            Box::new(ArrowError::from(std::io::Error::other(inner))),
            None,
        );
        assert_eq!(classify_error(&wrapped), v1::ErrorKind::ResourcesExhausted);
    }

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
            grant: Vec::new(),
            attempt: Default::default(),
        };
        let error: DataFusionError = ExchangeError::FetchFailed {
            location: Box::new(location.clone()),
            reason: "connection refused".into(),
        }
        .into();
        let wrapped = DataFusionError::Shared(Arc::new(error.context("reading input")));
        match find_exchange_error(&wrapped) {
            Some(ExchangeError::FetchFailed {
                location: found, ..
            }) => {
                assert_eq!(found.as_ref(), &location)
            }
            other => panic!("expected a fetch failure, got {other:?}"),
        }
    }
}
