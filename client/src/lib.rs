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
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let ctx = volley_client::Context::embedded(2).await?;
//! let df = ctx.sql("SELECT 1 + 1 AS two").await?;
//! let batches = df.collect().await?; // runs on the cluster
//! # Ok(()) }
//! ```
//!
//! Neighbours: `volley-scheduler` and `volley-executor` (the embedded
//! cluster; Flight fetches), `volley-proto` (the wire). The `volley` binary
//! (`src/main.rs`, `src/cli/`) is built on this library.
#![warn(missing_docs)]

mod context;
mod distributed_exec;
mod embedded;
mod error;
mod job_handle;
mod scheduler_client;
pub mod tpch;

pub use context::Context;
pub use distributed_exec::{DistributedQueryExec, JobObserver, VolleyQueryPlanner};
pub use embedded::{EmbeddedCluster, EmbeddedClusterConfig};
pub use error::{ClientError, Result, find_client_error};
pub use job_handle::JobHandle;
pub use scheduler_client::{SchedulerClient, is_terminal};
pub use volley_dataflow::{ExecutorId, JobId};
pub use volley_proto::v1;
