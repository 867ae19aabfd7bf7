//! Volley's client: run DataFusion queries on a Volley cluster.
//!
//! [`Context`] is a DataFusion `SessionContext` (it dereferences to one)
//! whose physical planner is [`VolleyQueryPlanner`]: queries are planned
//! logically here, sent to the scheduler encoded with `datafusion-proto`, run
//! on the executors, and their results stream back from the executors over
//! Arrow Flight. [`Context::remote`] connects to a running scheduler;
//! [`Context::embedded`] starts an [`EmbeddedCluster`] (the real scheduler
//! and executors, in process, over loopback gRPC).
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
//! use datafusion::prelude::{col, lit};
//! use volley_client::Context;
//!
//! let ctx = Context::embedded(2).await?;
//! let xs: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1000));
//! ctx.register_batch("numbers", RecordBatch::try_from_iter([("x", xs)])?)?;
//!
//! // DataFusion's DataFrame API; executing it runs a job on the cluster.
//! let evens = ctx.table("numbers").await?.filter((col("x") % lit(2)).eq(lit(0)))?;
//! assert_eq!(evens.count().await?, 500);
//! let job = ctx.last_job().expect("the count ran as a job");
//! assert_eq!(job.state, volley_client::v1::JobState::Succeeded as i32);
//!
//! // SQL too, on the same session.
//! let total = ctx.sql("SELECT sum(x) AS total FROM numbers").await?.collect().await?;
//! assert_eq!(total[0].num_rows(), 1);
//! # Ok(()) }
//! ```
//!
//! User functions run on executors built with them ([`UdfRegistry`]); an
//! embedded cluster takes them in its config:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use datafusion::arrow::datatypes::DataType;
//! use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
//! use volley_client::{Context, EmbeddedClusterConfig, UdfRegistry};
//!
//! let double = create_udf(
//!     "double",
//!     vec![DataType::Int64],
//!     DataType::Int64,
//!     Volatility::Immutable,
//!     Arc::new(|args: &[ColumnarValue]| {
//!         let arrays = ColumnarValue::values_to_arrays(args)?;
//!         let doubled = datafusion::arrow::compute::kernels::numeric::add(&arrays[0], &arrays[0])?;
//!         Ok(ColumnarValue::Array(doubled))
//!     }),
//! );
//! let ctx = Context::embedded_with(EmbeddedClusterConfig {
//!     udfs: UdfRegistry::new().with_udf(double),
//!     ..EmbeddedClusterConfig::with_executors(1)
//! })
//! .await?;
//! let rows = ctx
//!     .sql("SELECT double(n) AS answer FROM (VALUES (21)) AS t(n)")
//!     .await?
//!     .collect()
//!     .await?;
//! let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows)?.to_string();
//! assert!(text.contains("42"));
//! # Ok(()) }
//! ```
//!
//! Neighbours: `volley-scheduler` and `volley-executor` (the embedded
//! cluster; Flight fetches), `volley-proto` (the wire). The `volley` binary
//! (`src/main.rs`, `src/cli/`) is built on this library.
#![warn(missing_docs)]

mod analyze;
mod client_tables;
mod context;
mod distributed_exec;
mod embedded;
mod error;
mod explain;
mod job_handle;
mod result_stream;
mod round_trip;
mod scheduler_client;
mod table_factories;
pub mod tpch;

pub use analyze::DISTRIBUTED_PLAN_WITH_METRICS;
pub use context::Context;
pub use distributed_exec::{DistributedQueryExec, JobObserver, VolleyQueryPlanner};
pub use embedded::{EmbeddedCluster, EmbeddedClusterConfig, default_allowed_paths};
pub use error::{ClientError, Result, error_kind_name, find_client_error};
pub use explain::DISTRIBUTED_PLAN;
pub use job_handle::JobHandle;
pub use scheduler_client::{
    SchedulerClient, check_health, is_terminal, link_from_env, read_token_file,
};
pub use volley_dataflow::{ExecutorId, JobId, UdfRegistry};
pub use volley_executor::WireCompression;
pub use volley_proto::v1;
pub use volley_security::{Link, Secret};
