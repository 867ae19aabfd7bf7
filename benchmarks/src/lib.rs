//! Volley's benchmarks. `volley-bench tpch` runs TPC-H queries on
//! single-node DataFusion and on Volley in the same process, on the same
//! data and the same total number of cores, interleaved, checks that both
//! return the same rows (with `volley-tests`' differential comparison), and
//! reports per-query times and the Volley/DataFusion ratio. Speed is only
//! ever reported as that ratio: absolute times on shared machines are noise.
#![warn(missing_docs)]

pub mod peak_memory;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;
use volley_client::tpch::register_tpch;
use volley_client::{Context, EmbeddedClusterConfig};
use volley_tests::{compare_rows, is_ordered, run_script, tpch_query};

use crate::peak_memory::PeakMeter;

/// How to run the TPC-H comparison.
#[derive(Debug, Clone)]
pub struct TpchRun {
    /// Queries to run (1 to 22).
    pub queries: Vec<usize>,
    /// Runs of each query on each side.
    pub iterations: usize,
    /// Executors of the embedded cluster.
    pub executors: usize,
    /// Slots per executor; DataFusion gets `executors * slots` partitions.
    pub slots: usize,
    /// A running scheduler to use instead of an embedded cluster.
    pub scheduler: Option<String>,
    /// Print each query's stage timeline (of its last Volley run).
    pub stages: bool,
    /// `key = value` settings for the Volley side (`SET` in its session).
    pub volley_settings: Vec<(String, String)>,
    /// `key = value` settings for the DataFusion side.
    pub datafusion_settings: Vec<(String, String)>,
    /// Shuffle output each embedded executor keeps in memory (`None`: the
    /// executor's default).
    pub shuffle_memory: Option<usize>,
    /// TLS on every connection of the embedded cluster.
    pub tls: bool,
    /// Memory for the whole of each side: DataFusion's memory pool, and
    /// the embedded cluster's executors' pools together (each gets its
    /// share). `None`: DataFusion unbounded, executors at their default.
    pub memory_limit: Option<usize>,
    /// Record a query that fails on one side and go on with the next,
    /// instead of stopping the run.
    pub keep_going: bool,
    /// How the embedded executors compress shuffle data.
    pub shuffle_compression: volley_executor::WireCompression,
}

/// Times of one query on both sides.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// The TPC-H query number.
    pub query: usize,
    /// Single-node DataFusion, one entry per iteration.
    pub datafusion: Vec<Duration>,
    /// Volley, one entry per iteration.
    pub volley: Vec<Duration>,
    /// Peak heap bytes above the start of the run, highest over the
    /// iterations: single-node DataFusion.
    pub datafusion_peak: usize,
    /// The same for Volley: the embedded cluster's client, scheduler and
    /// executors together (0 against a remote cluster: not measured).
    pub volley_peak: usize,
    /// Stages of Volley's job.
    pub stages: u32,
    /// The stage timeline of the last Volley run (see [`stage_timeline`]).
    pub timeline: String,
    /// Bytes DataFusion's operators spilled to disk, highest over the
    /// iterations.
    pub datafusion_spilled: u64,
    /// Bytes Volley's operators and shuffle writers spilled to disk, over
    /// every stage of its last job, highest over the iterations.
    pub volley_spilled: u64,
    /// Why DataFusion could not run the query (with `keep_going`).
    pub datafusion_failure: Option<String>,
    /// Why Volley could not run the query (with `keep_going`).
    pub volley_failure: Option<String>,
}

impl QueryResult {
    /// Did both sides run the query?
    pub fn completed(&self) -> bool {
        self.datafusion_failure.is_none() && self.volley_failure.is_none()
    }
}

/// The best of a set of times.
pub fn best(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap_or_default()
}

/// The median of a set of times.
pub fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// Applies `settings` to one side's session and registers the TPC-H tables
/// in `data` there.
async fn prepare(ctx: &SessionContext, settings: &[(String, String)], data: &Path) -> Result<()> {
    for (key, value) in settings {
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .set(key, value)?;
    }
    register_tpch(ctx, data).await
}

/// Runs each statement of `script` on single-node DataFusion and returns
/// the last one's rows and the bytes its operators spilled in all.
pub async fn run_measured(ctx: &SessionContext, script: &str) -> Result<(Vec<RecordBatch>, u64)> {
    let mut last = Vec::new();
    let mut spilled = 0;
    for statement in DFParser::parse_sql(script)? {
        let plan = ctx.state().statement_to_plan(statement).await?;
        let frame = ctx.execute_logical_plan(plan).await?;
        let task_ctx = Arc::new(frame.task_ctx());
        let physical = frame.create_physical_plan().await?;
        last = datafusion::physical_plan::collect(Arc::clone(&physical), task_ctx).await?;
        spilled += spilled_bytes(&physical);
    }
    Ok((last, spilled))
}

/// The bytes every operator of `plan` spilled.
fn spilled_bytes(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let own = plan.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0) as u64;
    own + plan.children().into_iter().map(spilled_bytes).sum::<u64>()
}

/// The bytes every operator of every stage of `job` spilled, summed over
/// the executors that ran them (shuffle writers' files included).
pub fn job_spilled_bytes(job: &volley_client::v1::JobStatus) -> u64 {
    job.stages
        .iter()
        .flat_map(|s| &s.operators)
        .map(|o| o.spilled_bytes)
        .sum()
}

/// An error as one line of at most 300 characters, for a report.
fn one_line(e: &DataFusionError) -> String {
    let text = e.to_string().replace('\n', " ");
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

/// Single-node DataFusion with `partitions` target partitions and, given a
/// memory limit, a pool of that size (the kind Volley's executors use:
/// greedy, reporting its largest consumers when it refuses).
fn local_context(partitions: usize, memory_limit: Option<usize>) -> Result<SessionContext> {
    let config = SessionConfig::new().with_target_partitions(partitions);
    let Some(limit) = memory_limit else {
        return Ok(SessionContext::new_with_config(config));
    };
    let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
        GreedyMemoryPool::new(limit),
        NonZeroUsize::new(5).expect("5 is not zero"),
    ));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(pool)
        .build_arc()?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// Runs the comparison over the TPC-H tables in `data`.
pub async fn run_tpch(data: &Path, run: &TpchRun) -> Result<Vec<QueryResult>> {
    let partitions = (run.executors * run.slots).max(1);
    let local = local_context(partitions, run.memory_limit)?;
    prepare(&local, &run.datafusion_settings, data).await?;
    let to_df = |e: volley_client::ClientError| DataFusionError::External(Box::new(e));
    let volley = match &run.scheduler {
        Some(url) => Context::remote(url).await.map_err(to_df)?,
        None => Context::embedded_with({
            let base = EmbeddedClusterConfig::with_executors(run.executors);
            EmbeddedClusterConfig {
                slots_per_executor: run.slots,
                target_partitions: Some(partitions),
                shuffle_memory_per_executor: run.shuffle_memory,
                tls: run.tls,
                shuffle_compression: run.shuffle_compression,
                memory_per_executor: run.memory_limit.map_or(base.memory_per_executor, |limit| {
                    limit / run.executors.max(1)
                }),
                allowed_paths: {
                    let mut paths = volley_client::default_allowed_paths();
                    paths.push(data.to_path_buf());
                    paths
                },
                ..base
            }
        })
        .await
        .map_err(to_df)?,
    };
    prepare(&volley, &run.volley_settings, data).await?;

    let mut results = Vec::new();
    for &query in &run.queries {
        let sql = tpch_query(query);
        let mut result = QueryResult {
            query,
            datafusion: Vec::new(),
            volley: Vec::new(),
            datafusion_peak: 0,
            volley_peak: 0,
            stages: 0,
            timeline: String::new(),
            datafusion_spilled: 0,
            volley_spilled: 0,
            datafusion_failure: None,
            volley_failure: None,
        };
        for iteration in 0..run.iterations.max(1) {
            let mut expected = None;
            if result.datafusion_failure.is_none() {
                let meter = PeakMeter::start();
                let started = Instant::now();
                match run_measured(&local, &sql).await {
                    Ok((rows, spilled)) => {
                        result.datafusion.push(started.elapsed());
                        result.datafusion_spilled = result.datafusion_spilled.max(spilled);
                        expected = Some(rows);
                    }
                    Err(e) if run.keep_going => result.datafusion_failure = Some(one_line(&e)),
                    Err(e) => return Err(e),
                }
                result.datafusion_peak = result.datafusion_peak.max(meter.finish());
            }
            if result.volley_failure.is_none() {
                let meter = PeakMeter::start();
                let started = Instant::now();
                match run_script(&volley, &sql).await {
                    Ok(actual) => {
                        result.volley.push(started.elapsed());
                        let job = volley.last_job();
                        result.volley_spilled = result
                            .volley_spilled
                            .max(job.as_ref().map_or(0, job_spilled_bytes));
                        if iteration == 0 {
                            result.stages = job.map_or(0, |j| j.stages_total);
                        }
                        if let Some(expected) = &expected
                            && iteration == 0
                        {
                            // A wrong answer is never a failure to go past.
                            compare_rows(expected, &actual, is_ordered(&sql)).map_err(
                                |difference| {
                                    DataFusionError::Execution(format!(
                                        "q{query}: Volley's result differs from DataFusion's: {difference}"
                                    ))
                                },
                            )?;
                        }
                    }
                    Err(e) if run.keep_going => result.volley_failure = Some(one_line(&e)),
                    Err(e) => return Err(e),
                }
                if run.scheduler.is_none() {
                    result.volley_peak = result.volley_peak.max(meter.finish());
                }
            }
        }
        if run.stages
            && let Some(job) = volley.last_job()
        {
            result.timeline = stage_timeline(&job);
            eprint!("{}", result.timeline);
        }
        let side = |times: &[Duration], failure: &Option<String>| match failure {
            Some(why) => format!("failed: {why}"),
            None => format!("{:>8.1} ms", ms(best(times))),
        };
        eprintln!(
            "q{query:02}: datafusion {}  volley {}  ({} stages)",
            side(&result.datafusion, &result.datafusion_failure),
            side(&result.volley, &result.volley_failure),
            result.stages
        );
        results.push(result);
    }
    Ok(results)
}

/// A job's stages as a timeline: when each started and finished (from the
/// job's start), how long its tasks ran in all, its rows out, and the
/// operators it runs (the top of its plan, writer first).
pub fn stage_timeline(job: &volley_client::v1::JobStatus) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let total = job.ended_at_ms.saturating_sub(job.started_at_ms);
    let mut out = format!(
        "  job {} ms; stage  tasks  start ms    end ms  busy ms  longest ms       rows  filters  operators\n",
        total
    );
    for stage in &job.stages {
        let operators: Vec<&str> = stage
            .plan
            .lines()
            .map(|l| {
                let l = l.trim();
                l.split([':', ' ']).next().unwrap_or(l)
            })
            .collect();
        // Runtime filters applied, and the stages whose keys they are
        // (the stage waited for them).
        let filters = match stage.filtered_by.as_slice() {
            [] => "-".to_string(),
            by => format!(
                "{} by {}",
                stage.runtime_filters,
                by.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            ),
        };
        out.push_str(&format!(
            "  {:>17} {:>6} {:>9.1} {:>9.1} {:>8.1} {:>11.1} {:>10}  {:>7}  {}\n",
            stage.stage_id,
            stage.partitions,
            ms(stage.started_after_us),
            ms(stage.finished_after_us),
            ms(stage.task_busy_us),
            ms(stage.longest_task_us),
            stage.rows_out,
            filters,
            operators.join(" < ")
        ));
    }
    out
}

/// Mebibytes, for printing.
pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The results as a table with totals and the Volley/DataFusion ratio.
/// Totals and ratios cover the queries both sides completed; a query one
/// side could not run is listed with why, below the table.
pub fn report(results: &[QueryResult]) -> String {
    let mut out = String::from(
        "query  datafusion best  datafusion median  volley best  volley median  ratio (best)  stages  df peak MiB  volley peak MiB  df spill MiB  volley spill MiB\n",
    );
    let (mut df_total, mut volley_total) = (Duration::ZERO, Duration::ZERO);
    let (mut df_peak, mut volley_peak) = (0, 0);
    let time = |times: &[Duration], failure: &Option<String>, pick: fn(&[Duration]) -> Duration| {
        match failure {
            Some(_) => "failed".to_string(),
            None => format!("{:.1} ms", ms(pick(times))),
        }
    };
    for r in results {
        let (df, vo) = (best(&r.datafusion), best(&r.volley));
        if r.completed() {
            df_total += df;
            volley_total += vo;
        }
        df_peak = df_peak.max(r.datafusion_peak);
        volley_peak = volley_peak.max(r.volley_peak);
        let ratio = if r.completed() {
            format!("{:.2}x", vo.as_secs_f64() / df.as_secs_f64().max(1e-9))
        } else {
            "-".to_string()
        };
        out.push_str(&format!(
            "q{:02}    {:>15}  {:>17}  {:>11}  {:>13}  {:>12}  {:>6}  {:>11.1}  {:>15.1}  {:>12.1}  {:>16.1}\n",
            r.query,
            time(&r.datafusion, &r.datafusion_failure, best),
            time(&r.datafusion, &r.datafusion_failure, median),
            time(&r.volley, &r.volley_failure, best),
            time(&r.volley, &r.volley_failure, median),
            ratio,
            r.stages,
            mib(r.datafusion_peak),
            mib(r.volley_peak),
            mib(r.datafusion_spilled as usize),
            mib(r.volley_spilled as usize),
        ));
    }
    let completed = results.iter().filter(|r| r.completed()).count();
    out.push_str(&format!(
        "total  {:>12.1} ms  {:>17}  {:>8.1} ms  {:>13}  {:>11.2}x  {:>6}  {:>11.1}  {:>15.1}\n",
        ms(df_total),
        "",
        ms(volley_total),
        "",
        volley_total.as_secs_f64() / df_total.as_secs_f64().max(1e-9),
        "",
        mib(df_peak),
        mib(volley_peak),
    ));
    if completed < results.len() {
        out.push_str(&format!(
            "(totals over the {completed} of {} queries both sides completed)\n",
            results.len()
        ));
    }
    out.push_str(&format!(
        "peak memory (highest of any query): Volley/DataFusion {:.2}x\n",
        volley_peak as f64 / (df_peak as f64).max(1.0)
    ));
    for r in results {
        for (side, failure) in [
            ("DataFusion", &r.datafusion_failure),
            ("Volley", &r.volley_failure),
        ] {
            if let Some(why) = failure {
                out.push_str(&format!("q{:02} failed on {side}: {why}\n", r.query));
            }
        }
    }
    out
}

/// The results as JSON, for tracking over commits.
pub fn to_json(results: &[QueryResult]) -> String {
    let times = |t: &[Duration]| -> Vec<f64> {
        t.iter()
            .map(|d| (ms(*d) * 1000.0).round() / 1000.0)
            .collect()
    };
    let entries: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "query": r.query,
                "stages": r.stages,
                "datafusion_ms": times(&r.datafusion),
                "volley_ms": times(&r.volley),
                "datafusion_peak_bytes": r.datafusion_peak,
                "volley_peak_bytes": r.volley_peak,
                "datafusion_spilled_bytes": r.datafusion_spilled,
                "volley_spilled_bytes": r.volley_spilled,
                "datafusion_failure": r.datafusion_failure,
                "volley_failure": r.volley_failure,
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&entries).unwrap_or_default();
    text.push('\n');
    text
}

/// End-to-end times of `runs` runs of `sql` through `ctx`, after `warmup`
/// unmeasured runs.
pub async fn run_latency(
    ctx: &Context,
    sql: &str,
    runs: usize,
    warmup: usize,
) -> Result<Vec<Duration>> {
    for _ in 0..warmup {
        run_script(ctx, sql).await?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        run_script(ctx, sql).await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

/// The `q`-quantile (0.0 to 1.0) of a set of times.
pub fn quantile(times: &[Duration], q: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}
