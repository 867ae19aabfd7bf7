//! Volley's benchmarks. `volley-bench tpch` runs TPC-H queries on
//! single-node DataFusion and on Volley in the same process, on the same
//! data and the same total number of cores, interleaved, checks that both
//! return the same rows (with `volley-tests`' differential comparison), and
//! reports per-query times and the Volley/DataFusion ratio. Speed is only
//! ever reported as that ratio: absolute times on shared machines are noise.
#![warn(missing_docs)]

pub mod peak_memory;

use std::path::Path;
use std::time::{Duration, Instant};

use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{SessionConfig, SessionContext};
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

/// Runs the comparison over the TPC-H tables in `data`.
pub async fn run_tpch(data: &Path, run: &TpchRun) -> Result<Vec<QueryResult>> {
    let partitions = (run.executors * run.slots).max(1);
    let local =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    prepare(&local, &run.datafusion_settings, data).await?;
    let to_df = |e: volley_client::ClientError| DataFusionError::External(Box::new(e));
    let volley = match &run.scheduler {
        Some(url) => Context::remote(url).await.map_err(to_df)?,
        None => Context::embedded_with(EmbeddedClusterConfig {
            slots_per_executor: run.slots,
            target_partitions: Some(partitions),
            shuffle_memory_per_executor: run.shuffle_memory,
            tls: run.tls,
            allowed_paths: {
                let mut paths = volley_client::default_allowed_paths();
                paths.push(data.to_path_buf());
                paths
            },
            ..EmbeddedClusterConfig::with_executors(run.executors)
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
        };
        for iteration in 0..run.iterations.max(1) {
            let meter = PeakMeter::start();
            let started = Instant::now();
            let expected = run_script(&local, &sql).await?;
            result.datafusion.push(started.elapsed());
            result.datafusion_peak = result.datafusion_peak.max(meter.finish());
            let meter = PeakMeter::start();
            let started = Instant::now();
            let actual = run_script(&volley, &sql).await?;
            result.volley.push(started.elapsed());
            if run.scheduler.is_none() {
                result.volley_peak = result.volley_peak.max(meter.finish());
            }
            if iteration == 0 {
                compare_rows(&expected, &actual, is_ordered(&sql)).map_err(|difference| {
                    DataFusionError::Execution(format!(
                        "q{query}: Volley's result differs from DataFusion's: {difference}"
                    ))
                })?;
                result.stages = volley.last_job().map_or(0, |j| j.stages_total);
            }
        }
        if run.stages
            && let Some(job) = volley.last_job()
        {
            result.timeline = stage_timeline(&job);
            eprint!("{}", result.timeline);
        }
        eprintln!(
            "q{query:02}: datafusion {:>8.1} ms  volley {:>8.1} ms  ({} stages)",
            ms(best(&result.datafusion)),
            ms(best(&result.volley)),
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
        "  job {} ms; stage  tasks  start ms    end ms  busy ms  longest ms       rows  operators\n",
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
        out.push_str(&format!(
            "  {:>17} {:>6} {:>9.1} {:>9.1} {:>8.1} {:>11.1} {:>10}  {}\n",
            stage.stage_id,
            stage.partitions,
            ms(stage.started_after_us),
            ms(stage.finished_after_us),
            ms(stage.task_busy_us),
            ms(stage.longest_task_us),
            stage.rows_out,
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
pub fn report(results: &[QueryResult]) -> String {
    let mut out = String::from(
        "query  datafusion best  datafusion median  volley best  volley median  ratio (best)  stages  df peak MiB  volley peak MiB\n",
    );
    let (mut df_total, mut volley_total) = (Duration::ZERO, Duration::ZERO);
    let (mut df_peak, mut volley_peak) = (0, 0);
    for r in results {
        let (df, vo) = (best(&r.datafusion), best(&r.volley));
        df_total += df;
        volley_total += vo;
        df_peak = df_peak.max(r.datafusion_peak);
        volley_peak = volley_peak.max(r.volley_peak);
        out.push_str(&format!(
            "q{:02}    {:>12.1} ms  {:>14.1} ms  {:>8.1} ms  {:>10.1} ms  {:>11.2}x  {:>6}  {:>11.1}  {:>15.1}\n",
            r.query,
            ms(df),
            ms(median(&r.datafusion)),
            ms(vo),
            ms(median(&r.volley)),
            vo.as_secs_f64() / df.as_secs_f64().max(1e-9),
            r.stages,
            mib(r.datafusion_peak),
            mib(r.volley_peak),
        ));
    }
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
    out.push_str(&format!(
        "peak memory (highest of any query): Volley/DataFusion {:.2}x\n",
        volley_peak as f64 / (df_peak as f64).max(1.0)
    ));
    out
}

/// The results as JSON, for tracking over commits.
pub fn to_json(results: &[QueryResult]) -> String {
    let times = |t: &[Duration]| {
        t.iter()
            .map(|d| format!("{:.3}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let entries: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "  {{\"query\": {}, \"stages\": {}, \"datafusion_ms\": [{}], \"volley_ms\": [{}], \"datafusion_peak_bytes\": {}, \"volley_peak_bytes\": {}}}",
                r.query,
                r.stages,
                times(&r.datafusion),
                times(&r.volley),
                r.datafusion_peak,
                r.volley_peak
            )
        })
        .collect();
    format!("[\n{}\n]\n", entries.join(",\n"))
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
