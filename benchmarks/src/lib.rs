//! Volley's benchmarks. `volley-bench tpch` runs TPC-H queries on
//! single-node DataFusion and on Volley in the same process, on the same
//! data and the same total number of cores, interleaved, checks that both
//! return the same rows (with `volley-tests`' differential comparison), and
//! reports per-query times and the Volley/DataFusion ratio. Speed is only
//! ever reported as that ratio: absolute times on shared machines are noise.
#![warn(missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{SessionConfig, SessionContext};
use volley_client::tpch::register_tpch;
use volley_client::{Context, EmbeddedClusterConfig};
use volley_tests::{compare_rows, is_ordered, run_script, tpch_query};

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
    /// Stages of Volley's job.
    pub stages: u32,
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

/// Runs the comparison over the TPC-H tables in `data`.
pub async fn run_tpch(data: &Path, run: &TpchRun) -> Result<Vec<QueryResult>> {
    let partitions = (run.executors * run.slots).max(1);
    let local =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    register_tpch(&local, data).await?;
    let to_df = |e: volley_client::ClientError| DataFusionError::External(Box::new(e));
    let volley = match &run.scheduler {
        Some(url) => Context::remote(url).await.map_err(to_df)?,
        None => Context::embedded_with(EmbeddedClusterConfig {
            slots_per_executor: run.slots,
            target_partitions: Some(partitions),
            ..EmbeddedClusterConfig::with_executors(run.executors)
        })
        .await
        .map_err(to_df)?,
    };
    register_tpch(&volley, data).await?;

    let mut results = Vec::new();
    for &query in &run.queries {
        let sql = tpch_query(query);
        let mut result = QueryResult {
            query,
            datafusion: Vec::new(),
            volley: Vec::new(),
            stages: 0,
        };
        for iteration in 0..run.iterations.max(1) {
            let started = Instant::now();
            let expected = run_script(&local, &sql).await?;
            result.datafusion.push(started.elapsed());
            let started = Instant::now();
            let actual = run_script(&volley, &sql).await?;
            result.volley.push(started.elapsed());
            if iteration == 0 {
                compare_rows(&expected, &actual, is_ordered(&sql)).map_err(|difference| {
                    DataFusionError::Execution(format!(
                        "q{query}: Volley's result differs from DataFusion's: {difference}"
                    ))
                })?;
                result.stages = volley.last_job().map_or(0, |j| j.stages_total);
            }
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

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The results as a table with totals and the Volley/DataFusion ratio.
pub fn report(results: &[QueryResult]) -> String {
    let mut out = String::from(
        "query  datafusion best  datafusion median  volley best  volley median  ratio (best)  stages\n",
    );
    let (mut df_total, mut volley_total) = (Duration::ZERO, Duration::ZERO);
    for r in results {
        let (df, vo) = (best(&r.datafusion), best(&r.volley));
        df_total += df;
        volley_total += vo;
        out.push_str(&format!(
            "q{:02}    {:>12.1} ms  {:>14.1} ms  {:>8.1} ms  {:>10.1} ms  {:>11.2}x  {:>6}\n",
            r.query,
            ms(df),
            ms(median(&r.datafusion)),
            ms(vo),
            ms(median(&r.volley)),
            vo.as_secs_f64() / df.as_secs_f64().max(1e-9),
            r.stages
        ));
    }
    out.push_str(&format!(
        "total  {:>12.1} ms  {:>17}  {:>8.1} ms  {:>13}  {:>11.2}x\n",
        ms(df_total),
        "",
        ms(volley_total),
        "",
        volley_total.as_secs_f64() / df_total.as_secs_f64().max(1e-9)
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
                "  {{\"query\": {}, \"stages\": {}, \"datafusion_ms\": [{}], \"volley_ms\": [{}]}}",
                r.query,
                r.stages,
                times(&r.datafusion),
                times(&r.volley)
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
