//! The DataFusion session settings Volley runs with, and how a client's
//! changed settings travel with a job.

use std::collections::HashMap;
use std::sync::LazyLock;

use datafusion::common::extensions_options;
use datafusion::config::{ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::error::Result;
use datafusion::prelude::SessionConfig;

extensions_options! {
    /// Volley's own settings, beside DataFusion's: `SET volley.<name> =
    /// <value>` in a client; they travel with the job like DataFusion's.
    pub struct VolleyOptions {
        /// Scans of at least as many files as partitions read whole files,
        /// spread over the partitions by size (largest first to the least
        /// loaded), instead of DataFusion's byte ranges. A byte range reads
        /// the Parquet row groups that *start* in it, so a range cut just
        /// after a file's start reads that file's whole first row group:
        /// tasks of a TPC-H SF 1 lineitem scan did 4M and 2M rows. In one
        /// process idle partitions steal from their siblings; here each
        /// task must read exactly its own group.
        pub balance_file_groups: bool, default = true
        /// Files a job writes keep Arrow's view types (Utf8View,
        /// BinaryView), which DataFusion reads Parquet strings as. Off by
        /// default: they are written as plain Utf8 and Binary, which every
        /// reader sorts and joins (pyarrow cannot sort `binary_view`).
        pub output_view_types: bool, default = false
        /// A stage starts as soon as every stage it reads has finished or
        /// has all its tasks running, when slots are free, and reads each
        /// map output of a running input as it finishes, instead of
        /// waiting for the whole input stage (a barrier). Off: every stage
        /// waits for its inputs to finish, as Spark and Ballista do.
        pub pipelined_exchange: bool, default = true
        /// A hash join's build keys, once their stage has finished, filter
        /// the scan feeding its probe side, in whatever stage it runs:
        /// rows without a partner are pruned by row group and dropped in
        /// the scan, before they are joined or shuffled. The scan's stage
        /// waits for the build stage.
        pub runtime_filters: bool, default = true
        /// A stage's map outputs are dropped from the executors as soon as
        /// every stage reading them has finished, not when the job ends:
        /// early stages' outputs no longer sit in memory beside later
        /// stages' joins. If a reader must run again (its output was lost
        /// with its executor), the released stage runs again from its own
        /// inputs first, as Spark re-runs a lost shuffle's lineage. Off:
        /// outputs stay until the job ends.
        pub release_outputs: bool, default = true
        /// Bytes of input files one partition of a job may read: a job
        /// whose scans read more than its partitions times this is planned
        /// with more partitions, a multiple of the cluster's slots, so each
        /// task's share of a hash join's build side (which cannot spill)
        /// stays small. 0: never. Set
        /// `datafusion.execution.target_partitions` in a job and it keeps
        /// that.
        pub partition_bytes: u64, default = PARTITION_BYTES
    }
}

impl ConfigExtension for VolleyOptions {
    const PREFIX: &'static str = "volley";
}

/// The Volley options of a session config (the defaults if it has none).
pub fn volley_options(config: &SessionConfig) -> VolleyOptions {
    config
        .options()
        .extensions
        .get::<VolleyOptions>()
        .cloned()
        .unwrap_or_default()
}

/// The default of `volley.partition_bytes`: 2 GiB of files per partition.
/// TPC-H SF 100 q18 and q21 (40 and 56 GB of Parquet read) then get 20 and
/// 28 partitions on two slots, where two ran out of memory and sixteen
/// completed; every SF 10 query but q21 (5.4 GB: four) keeps two.
pub const PARTITION_BYTES: u64 = 2 << 30;

/// The estimated size up to which a join's build side is broadcast (see
/// [`session_config`]). Measured: at TPC-H SF 10 on two executors this took
/// Volley from 1.13x to 0.87x of single-node DataFusion's time, at SF 1 from
/// 1.22x to 1.15x (`benchmarks/README.md`).
pub const BROADCAST_JOIN_BYTES: usize = 64 * 1024 * 1024;

/// The estimated rows up to which a join's build side is broadcast, when
/// the planner has no byte estimate.
pub const BROADCAST_JOIN_ROWS: usize = 4_000_000;

/// The base session config of every Volley client, scheduler and executor.
///
/// Round-robin repartitioning is off: in one process it spreads a narrow scan
/// over more threads, but here every repartition is a stage boundary, and a
/// shuffle costs more than the parallelism it buys. Scans are still split
/// into as many partitions as there are slots.
///
/// File-stream work stealing is off: in one process an idle scan partition
/// reads files assigned to its siblings, but here each partition is a task
/// of its own and must read exactly its own file group, or files are read
/// twice.
///
/// Uncorrelated scalar subqueries are planned as joins, not run by a
/// `ScalarSubqueryExec`: that operator hands its result to expressions
/// deeper in its input through shared memory, which a stage boundary cuts.
/// (A join cannot tell that the subquery returned two rows;
/// `SingleRowScalarSubqueries` makes it fail then, as DataFusion does.)
///
/// Join dynamic filters are off: a partitioned hash join waits for every
/// build partition to report its bounds before probing, and here the other
/// partitions run in other tasks, so it would wait forever.
///
/// Joins broadcast larger build sides than DataFusion's defaults (1 MiB or
/// 128Ki rows): up to [`BROADCAST_JOIN_BYTES`] or [`BROADCAST_JOIN_ROWS`] by
/// the planner's estimate. In one process a partitioned join only hashes
/// rows into channels; here it shuffles *both* sides through the exchange,
/// while a broadcast moves only the build side, once per executor (the
/// tasks of a stage on one executor share the built table), and the probe
/// side streams through its scan's stage unmoved. A client's `SET` of
/// `datafusion.optimizer.hash_join_single_partition_threshold[_rows]` still
/// applies.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_round_robin_repartition(false)
        .with_option_extension(VolleyOptions::default());
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.hash_join_single_partition_threshold = BROADCAST_JOIN_BYTES;
    optimizer.hash_join_single_partition_threshold_rows = BROADCAST_JOIN_ROWS;
    pin_distributed_settings(config.options_mut());
    config
}

/// The settings without which partitions cannot run as separate tasks (see
/// [`session_config`]), and those that would plan operators executors
/// cannot receive; a client's `SET` cannot turn them back on.
fn pin_distributed_settings(options: &mut ConfigOptions) {
    // Operators datafusion-proto 55 cannot carry to executors
    // (`PartitionedTopKExec`, `PiecewiseMergeJoinExec`); without them the
    // same query is planned with a window and a filter, or a nested-loop
    // join, which give the same answers.
    options.optimizer.enable_window_topn = false;
    options.optimizer.enable_piecewise_merge_join = false;
    options.execution.enable_file_stream_work_stealing = false;
    options.optimizer.enable_join_dynamic_filter_pushdown = false;
    options
        .optimizer
        .enable_physical_uncorrelated_scalar_subquery = false;
}

/// The settings in `options` that differ from [`session_config`]'s, as
/// `key = value` strings: what a client sends with a job.
pub fn changed_settings(options: &ConfigOptions) -> HashMap<String, String> {
    // Listed once: every query a client sends asks.
    static DEFAULTS: LazyLock<HashMap<String, Option<String>>> = LazyLock::new(|| {
        entries(session_config().options())
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    });
    let defaults = &*DEFAULTS;
    entries(options)
        .into_iter()
        .filter_map(|e| {
            let value = e.value?;
            match defaults.get(&e.key) {
                Some(Some(default)) if *default == value => None,
                _ => Some((e.key, value)),
            }
        })
        .collect()
}

/// DataFusion's entries and Volley's, each under its full key (DataFusion
/// lists an extension's entries without their prefix).
fn entries(options: &ConfigOptions) -> Vec<datafusion::config::ConfigEntry> {
    let mut entries: Vec<_> = options
        .entries()
        .into_iter()
        .filter(|e| e.key.starts_with("datafusion."))
        .collect();
    if let Some(volley) = options.extensions.get::<VolleyOptions>() {
        entries.extend(volley.entries().into_iter().map(|mut e| {
            e.key = format!("{}.{}", VolleyOptions::PREFIX, e.key);
            e
        }));
    }
    entries
}

/// Applies settings a client sent to a session config; an unknown key or a
/// bad value is an error naming it.
pub fn apply_settings(
    mut config: SessionConfig,
    settings: &HashMap<String, String>,
) -> Result<SessionConfig> {
    let options = config.options_mut();
    let mut keys: Vec<_> = settings.keys().collect();
    // Apply in a stable order so errors are reproducible.
    keys.sort();
    for key in keys {
        options.set(key, &settings[key])?;
    }
    pin_distributed_settings(options);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_settings_travel_and_they_apply_on_the_other_side() -> Result<()> {
        // SET datafusion.execution.batch_size = 1024;
        let mut client = session_config();
        client
            .options_mut()
            .set("datafusion.execution.batch_size", "1024")?;
        let changed = changed_settings(client.options());
        assert_eq!(
            changed,
            HashMap::from([(
                "datafusion.execution.batch_size".to_string(),
                "1024".to_string()
            )])
        );
        let server = apply_settings(session_config(), &changed)?;
        assert_eq!(server.batch_size(), 1024);
        Ok(())
    }

    #[test]
    fn an_unknown_setting_is_an_error_naming_it() {
        let settings = HashMap::from([("datafusion.nope".to_string(), "1".to_string())]);
        let err = apply_settings(session_config(), &settings).unwrap_err();
        assert!(err.to_string().contains("datafusion.nope"), "{err}");
    }

    #[test]
    fn a_changed_volley_setting_travels_under_its_full_key_and_applies() -> Result<()> {
        // SET volley.balance_file_groups = false;
        let mut client = session_config();
        client
            .options_mut()
            .set("volley.balance_file_groups", "false")?;
        let changed = changed_settings(client.options());
        assert_eq!(
            changed,
            HashMap::from([(
                "volley.balance_file_groups".to_string(),
                "false".to_string()
            )])
        );
        let server = apply_settings(session_config(), &changed)?;
        assert!(!volley_options(&server).balance_file_groups);
        assert!(volley_options(&session_config()).balance_file_groups);
        Ok(())
    }
}
