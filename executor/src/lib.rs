//! Volley's executor. It registers with the scheduler over a long-lived
//! control stream (`control`), receives task launches (each stage plan once,
//! decoded with `volley-dataflow`'s codec and cached), runs them with
//! DataFusion (`task_runner`), keeps their shuffle output in a memory-budgeted
//! store that spills to Arrow IPC files (`shuffle_store`), and serves that
//! output to other executors and clients over Arrow Flight
//! (`flight_service`). Reads of output it holds itself skip the network
//! (`exchange_client`).
//!
//! Entry points: [`Executor::start`] with an [`ExecutorConfig`], or
//! [`run_main`], the whole `volley-executor` command, for a custom executor
//! binary that registers user functions. Neighbours:
//! `volley-scheduler` (the other end of the control stream),
//! `volley-dataflow` (operators, codec, IDs), `volley-client` (fetches results
//! with [`fetch_location`]).
#![warn(missing_docs)]

mod cli;
mod config;
mod control;
mod error;
mod exchange_client;
mod executor;
mod flight_channels;
mod flight_encode;
mod flight_fetch;
mod flight_service;
mod metrics;
mod operator_metrics;
mod shuffle_store;
mod spill_codec;
mod task_runner;
mod work_dirs;

pub use cli::run_main;
pub use config::{
    ExecutorConfig, ExecutorSecurity, SHUFFLE_MEMORY_SHARE, WireCompression, default_memory_limit,
    parse_size,
};
pub use error::ExecutorError;
pub use executor::{Executor, Stopped};
pub use flight_channels::FlightChannels;
pub use flight_fetch::{fetch_location, flight_channel};
pub use work_dirs::OwnedDir;
