//! What Volley's scheduler and executors must agree on: the newtype IDs
//! ([`JobId`], [`StageId`], [`TaskId`], [`ExecutorId`]), the two exchange
//! operators that stand at stage boundaries ([`ShuffleWriterExec`] at the
//! root of every stage, [`ShuffleReaderExec`] where an input stage was cut
//! out), the codec that carries them inside DataFusion's plan protobuf
//! ([`VolleyCodec`]), the typed exchange failures ([`ExchangeError`]) and the
//! session settings every node applies ([`session_config`]). Client plans
//! travel to the scheduler through [`encode_logical_plan`], which also
//! carries in-memory tables and user functions ([`UdfRegistry`]).
//!
//! Neighbours: `volley-scheduler` builds stage plans from these operators;
//! `volley-executor` runs them, implementing [`ShuffleSink`] and
//! [`ShuffleSource`]; `volley-proto` carries them on the wire.
#![warn(missing_docs)]

mod codec;
mod error;
mod exchange_io;
mod file_output;
mod function_calls;
mod functions;
mod guarded_store;
mod ids;
mod input_files;
mod key_filter;
mod location;
mod logging;
mod logical_codec;
mod message_slices;
mod object_stores;
mod planned_aggregate;
mod planned_window;
mod scalar_subquery;
mod script_text;
mod session;
mod shuffle_reader;
mod shuffle_writer;
mod stage_properties;
mod streamed_inputs;
mod telemetry;
mod window_functions;
mod wire_types;

pub use codec::{
    VolleyCodec, decode_plan, decode_schema, encode_plan, encode_schema, output_format_from_proto,
    output_format_to_proto,
};
pub use error::{
    ExchangeError, classify_error, find_exchange_error, find_in_error_chain, query_error,
    rebuild_query_error, volley_internal,
};
pub use exchange_io::{
    ExchangeContext, MapOutputWriter, PartitionStats, ShuffleSink, ShuffleSource, TrafficRecorder,
};
pub use file_output::{Destination, FileOutputExec, OutputFormat, SHARED_MARKER};
pub use functions::{PlannedCall, PlannedUdf, UdfRegistry};
pub use guarded_store::GuardedStore;
pub use ids::{ExecutorId, InvalidId, JobId, MapOutputId, OutputAttempt, StageId, TaskId};
pub use input_files::{describe_files, input_files};
pub use key_filter::{
    BLOOM_CONTAINS, KeySummarizer, KeySummary, bloom_bits_log2, bloom_contains, summarizable,
};
pub use location::PartitionLocation;
pub use logging::{init_logging, log_plans};
pub use logical_codec::{VolleyLogicalCodec, decode_logical_plan, encode_logical_plan};
pub use message_slices::without_message_slices;
pub use object_stores::{EnvObjectStoreRegistry, object_store_runtime, planning_runtime, s3_store};
pub use planned_aggregate::{AggregateCall, PlannedUdaf};
pub use planned_window::{PlannedUdwf, WindowCall};
pub use scalar_subquery::{
    SCALAR_SUBQUERY_VALUE, SingleRowScalarSubqueries, install_volley_rules, scalar_subquery_value,
};
pub use script_text::{Statement, split_statements};
pub use session::{
    BROADCAST_JOIN_BYTES, BROADCAST_JOIN_ROWS, PARTITION_BYTES, VolleyOptions, apply_settings,
    changed_settings, session_config, volley_options,
};
pub use shuffle_reader::{ExchangeKind, ShuffleReaderExec};
pub use shuffle_writer::ShuffleWriterExec;
pub use stage_properties::{decode_properties, encode_properties};
pub use streamed_inputs::{FinishedMaps, PieceFilter, StreamedInputs};
pub use telemetry::{TelemetryGuard, set_remote_parent, trace_context, traces_exported};
pub use wire_types::{from_wire, to_wire, wire_schema, wire_type};
