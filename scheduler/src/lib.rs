//! Volley's scheduler. Clients submit logical plans (encoded with
//! `datafusion-proto`) over the `volley.v1.SchedulerService`; the scheduler
//! plans them physically for the cluster's size, cuts them into stages at
//! exchanges (`stage_planner`), and pushes each stage's tasks to executors'
//! free slots over their control streams (`state`). Finished stages resolve
//! their consumers' shuffle readers with the locations of their output.
//! It never touches row data: results go from executors to clients over
//! Arrow Flight. With a state directory it keeps its jobs in an embedded
//! store (`state_store`, `sqlite_store`) and resumes them after a restart
//! (`restore`), taking over the shuffle output executors kept.
//!
//! Entry point: [`SchedulerServer::start`] with a [`SchedulerConfig`].
//! Neighbours: `volley-dataflow` (operators, codec, IDs), `volley-proto`
//! (wire), `volley-executor` (the other end of the control stream).
#![warn(missing_docs)]

mod access;
mod config;
mod error;
mod event_log;
mod explain;
mod job;
mod job_trace;
mod metrics;
mod output_target;
mod partition_safety;
mod partition_sizing;
mod planning;
mod planning_session;
// Recovery is `Job`'s own (`job/recovery`): it sees the job's private fields.
use job::recovery;
mod restore;
mod runtime_filters;
mod scan_balance;
mod script;
mod server;
mod service;
mod simulation;
mod sqlite_store;
mod stage;
mod stage_planner;
mod state;
mod state_store;
#[cfg(test)]
mod test_support;
mod web_pages;
mod web_ui;
mod wire_memory;

pub use config::{SchedulerConfig, SchedulerSecurity};
pub use error::SchedulerError;
pub use server::SchedulerServer;
pub use simulation::{simulate_placement, simulate_tasks};
