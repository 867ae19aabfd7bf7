//! `volley-bench`: generate TPC-H data and compare Volley with single-node
//! DataFusion on it. See `benchmarks/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use volley_benchmarks::{TpchRun, report, run_tpch, to_json};
use volley_client::tpch::generate_tpch;

/// Counts live heap bytes, for the peak memory `tpch` reports.
#[global_allocator]
static ALLOCATOR: &peakmem_alloc::PeakMemAlloc<std::alloc::System> =
    &peakmem_alloc::INSTRUMENTED_SYSTEM;

/// Volley's benchmarks.
#[derive(Debug, Parser)]
#[command(name = "volley-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate TPC-H Parquet data with the tpchgen crates.
    Gen {
        /// Scale factor.
        #[arg(long)]
        sf: f64,
        /// Output directory (one subdirectory per table).
        #[arg(long)]
        out: PathBuf,
        /// Files per large table.
        #[arg(long, default_value_t = 4)]
        parts: usize,
    },
    /// Run TPC-H queries on DataFusion and on Volley, interleaved, and compare.
    Tpch {
        /// Directory written by `volley-bench gen`.
        #[arg(long)]
        data: PathBuf,
        /// Comma-separated query numbers (default: all 22).
        #[arg(long, value_delimiter = ',')]
        queries: Option<Vec<usize>>,
        /// Runs of each query on each side.
        #[arg(long, default_value_t = 3)]
        iterations: usize,
        /// Executors of the embedded cluster.
        #[arg(long, default_value_t = 2)]
        executors: usize,
        /// Slots per executor (DataFusion gets executors x slots partitions).
        #[arg(long, default_value_t = 1)]
        slots: usize,
        /// Use a running scheduler instead of an embedded cluster.
        #[arg(long)]
        scheduler: Option<String>,
        /// Also write the times as JSON here.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Print each query's stage timeline (of its last Volley run).
        #[arg(long)]
        stages: bool,
        /// A DataFusion setting for the Volley side, `key=value`
        /// (repeatable), as `SET` in its session.
        #[arg(long = "volley-set", value_parser = parse_setting)]
        volley_settings: Vec<(String, String)>,
        /// A DataFusion setting for the single-node side, `key=value`
        /// (repeatable).
        #[arg(long = "datafusion-set", value_parser = parse_setting)]
        datafusion_settings: Vec<(String, String)>,
        /// Shuffle output each embedded executor keeps in memory, e.g. 256M
        /// (default: the executor's).
        #[arg(long, value_parser = volley_executor::parse_size)]
        shuffle_memory: Option<usize>,
        /// TLS on every connection of the embedded cluster (to measure its
        /// cost against a run without).
        #[arg(long)]
        tls: bool,
        /// Memory for each side, e.g. 12G: single-node DataFusion's memory
        /// pool, and the embedded executors' pools together (each gets its
        /// share). Past it, operators that can spill do; others fail.
        #[arg(long, value_parser = volley_executor::parse_size)]
        memory_limit: Option<usize>,
        /// Record a query that fails on one side and go on with the next
        /// (a wrong answer still stops the run).
        #[arg(long)]
        keep_going: bool,
        /// How the embedded executors compress shuffle data they send and
        /// spill: auto, none, lz4 or zstd (as `volley-executor`'s flag).
        #[arg(long, default_value = "auto")]
        shuffle_compression: volley_executor::WireCompression,
    },
    /// End-to-end latency of `SELECT 1` and of a one-stage scan through a
    /// client, p50/p99.
    Latency {
        /// Directory written by `volley-bench gen` (for the scan).
        #[arg(long)]
        data: PathBuf,
        /// Measured runs of each query.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Use a running scheduler instead of an embedded cluster.
        #[arg(long, conflicts_with = "processes")]
        scheduler: Option<String>,
        /// Start a scheduler and two executors as processes (the volley
        /// binaries built next to this one, with TLS and a token as
        /// deployed) and measure through a remote client.
        #[arg(long)]
        processes: bool,
    },
    /// Task placement rate of the scheduler alone: one job of TASKS tasks on
    /// EXECUTORS simulated executors (no execution, no network).
    Scheduler {
        /// Tasks in the job.
        #[arg(long, default_value_t = 100_000)]
        tasks: usize,
        /// Simulated executors.
        #[arg(long, default_value_t = 100)]
        executors: usize,
        /// Runs (the best is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Kill an executor process at a seeded random moment of TPC-H queries
    /// and check every answer; prints `recovered K/N`. Needs the volley
    /// binaries built next to this one.
    Chaos {
        /// Directory written by `volley-bench gen`.
        #[arg(long)]
        data: PathBuf,
        /// Seeds per query (1..=N).
        #[arg(long, default_value_t = 4)]
        seeds: u64,
        /// Comma-separated query numbers.
        #[arg(long, value_delimiter = ',', default_value = "3,5,8,9,18,21")]
        queries: Vec<usize>,
        /// What to kill: an `executor`, or the `scheduler` (restarted with
        /// its --state-dir).
        #[arg(long, default_value = "executor")]
        kill: String,
    },
}

/// `key=value` as a setting.
fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not key=value"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

#[tokio::main]
async fn main() -> ExitCode {
    volley_benchmarks::peak_memory::install(ALLOCATOR);
    // Warnings on stderr; with OTEL_EXPORTER_OTLP_ENDPOINT set, the
    // embedded cluster's jobs are traced, to measure what that costs.
    let _telemetry = volley_dataflow::init_logging("volley-bench", "warn");
    match Cli::parse().command {
        Command::Gen { sf, out, parts } => match generate_tpch(sf, &out, parts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("volley-bench: {e}");
                ExitCode::from(1)
            }
        },
        Command::Latency {
            data,
            runs,
            scheduler,
            processes,
        } => {
            let outcome = async {
                // Kept alive until the runs end; dropping it stops the processes.
                let cluster =
                    processes.then(|| volley_tests::chaos::ChaosCluster::with_executors(2));
                let to_df = |e: volley_client::ClientError| {
                    datafusion::error::DataFusionError::External(Box::new(e))
                };
                let ctx = match (&cluster, &scheduler) {
                    (Some(cluster), _) => volley_client::Context::remote_with(
                        &cluster.url,
                        volley_tests::processes::credentials().link("admin"),
                    )
                    .await
                    .map_err(to_df)?,
                    (None, Some(url)) => {
                        volley_client::Context::remote(url).await.map_err(to_df)?
                    }
                    (None, None) => volley_client::Context::embedded_with(
                        volley_client::EmbeddedClusterConfig {
                            allowed_paths: {
                                let mut paths = volley_client::default_allowed_paths();
                                paths.push(data.clone());
                                paths
                            },
                            ..volley_client::EmbeddedClusterConfig::with_executors(2)
                        },
                    )
                    .await
                    .map_err(to_df)?,
                };
                volley_client::tpch::register_tpch(&ctx, &data).await?;
                let mut lines = vec![match (&cluster, &scheduler) {
                    (Some(_), _) => {
                        "a scheduler and 2 executors as processes, TLS and a token".to_string()
                    }
                    (None, Some(url)) => format!("the scheduler at {url}"),
                    (None, None) => "an embedded cluster of 2 executors".to_string(),
                }];
                for (what, sql) in [
                    ("SELECT 1", "SELECT 1"),
                    (
                        "one-stage scan (nation)",
                        "SELECT n_name FROM nation WHERE n_regionkey = 1",
                    ),
                ] {
                    let times = volley_benchmarks::run_latency(&ctx, sql, runs, 10).await?;
                    lines.push(format!(
                        "{what:<26} p50 {:>7.2} ms  p99 {:>7.2} ms  ({runs} runs)",
                        volley_benchmarks::ms(volley_benchmarks::quantile(&times, 0.5)),
                        volley_benchmarks::ms(volley_benchmarks::quantile(&times, 0.99)),
                    ));
                }
                Ok::<_, datafusion::error::DataFusionError>(lines)
            };
            match outcome.await {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("volley-bench: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Scheduler {
            tasks,
            executors,
            runs,
        } => {
            // Enough slots for every task, so all of them are placed at once.
            let slots = tasks.div_ceil(executors.max(1));
            let state_dir =
                std::env::temp_dir().join(format!("volley-bench-state-{}", std::process::id()));
            for (what, dir) in [
                ("in memory", None),
                ("with a state store", Some(state_dir.as_path())),
            ] {
                let mut best = None;
                for _ in 0..runs.max(1) {
                    match volley_scheduler::simulate_placement(tasks, executors, slots, dir) {
                        Ok((placed, elapsed)) => {
                            best =
                                Some(best.map_or(elapsed, |b: std::time::Duration| b.min(elapsed)));
                            if placed != tasks {
                                eprintln!("volley-bench: placed {placed} of {tasks} tasks");
                                return ExitCode::from(1);
                            }
                        }
                        Err(e) => {
                            eprintln!("volley-bench: {e}");
                            let _ = std::fs::remove_dir_all(&state_dir);
                            return ExitCode::from(1);
                        }
                    }
                }
                let best = best.unwrap_or_default();
                println!(
                    "placed {tasks} tasks on {executors} executors {what} in {:.1} ms (best of {runs}): {:.0} tasks/s",
                    best.as_secs_f64() * 1000.0,
                    tasks as f64 / best.as_secs_f64().max(1e-9)
                );
            }
            // Run to the end: placement plus every task's status, in memory
            // and with a state store.
            let run_tasks = tasks.min(10_000);
            for (what, dir) in [
                ("in memory", None),
                ("with a state store", Some(state_dir.as_path())),
            ] {
                let mut best = None;
                for _ in 0..runs.max(1) {
                    match volley_scheduler::simulate_tasks(run_tasks, executors, slots, dir) {
                        Ok((_, elapsed)) => {
                            best =
                                Some(best.map_or(elapsed, |b: std::time::Duration| b.min(elapsed)))
                        }
                        Err(e) => {
                            eprintln!("volley-bench: {e}");
                            let _ = std::fs::remove_dir_all(&state_dir);
                            return ExitCode::from(1);
                        }
                    }
                }
                let best = best.unwrap_or_default();
                println!(
                    "ran {run_tasks} tasks to the end {what} in {:.1} ms (best of {runs}): {:.0} tasks/s",
                    best.as_secs_f64() * 1000.0,
                    run_tasks as f64 / best.as_secs_f64().max(1e-9)
                );
            }
            let _ = std::fs::remove_dir_all(&state_dir);
            println!(
                "(this binary counts every allocation for `tpch`'s peak memory; \
                 `cargo bench -p volley-benchmarks` places without that cost)"
            );
            ExitCode::SUCCESS
        }
        Command::Chaos {
            data,
            seeds,
            queries,
            kill,
        } => {
            let victim = match kill.as_str() {
                "executor" => volley_tests::chaos::Victim::Executor,
                "scheduler" => volley_tests::chaos::Victim::Scheduler,
                other => {
                    eprintln!("volley-bench: --kill takes executor or scheduler, not {other}");
                    return ExitCode::from(2);
                }
            };
            let seeds: Vec<u64> = (1..=seeds).collect();
            let runs = volley_tests::chaos::run_chaos(&data, &queries, &seeds, victim).await;
            let mut recovered = 0;
            for run in &runs {
                let ok = run.correct && run.recovered;
                recovered += usize::from(ok);
                let counters = run.counters.map_or(String::new(), |c| {
                    format!(
                        " (executors lost {}, scheduler restarts {}, outputs taken over {}, map tasks re-run {}, stages re-run {}, released stages re-run {}, tasks retried {})",
                        c.executors_lost,
                        c.scheduler_restarts,
                        c.outputs_recovered,
                        c.map_tasks_rerun,
                        c.stages_rerun,
                        c.released_stages_rerun,
                        c.tasks_retried
                    )
                });
                println!(
                    "q{:02} seed {:>3} killed after {:>8.1} ms: {}{counters}",
                    run.query,
                    run.seed,
                    run.killed_after.as_secs_f64() * 1000.0,
                    run.problem.as_deref().unwrap_or("recovered")
                );
            }
            println!("recovered {recovered}/{}", runs.len());
            if recovered == runs.len() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Tpch {
            data,
            queries,
            iterations,
            executors,
            slots,
            scheduler,
            output,
            stages,
            volley_settings,
            datafusion_settings,
            shuffle_memory,
            tls,
            memory_limit,
            keep_going,
            shuffle_compression,
        } => {
            let run = TpchRun {
                queries: queries.unwrap_or_else(|| (1..=22).collect()),
                iterations,
                executors,
                slots,
                scheduler,
                stages,
                volley_settings,
                datafusion_settings,
                shuffle_memory,
                tls,
                memory_limit,
                keep_going,
                shuffle_compression,
            };
            match run_tpch(&data, &run).await {
                Ok(results) => {
                    println!(
                        "TPC-H on {} ({} executors x {} slots{}; DataFusion with {} partitions{}), best of {}",
                        data.display(),
                        run.executors,
                        run.slots,
                        if run.tls { ", TLS" } else { "" },
                        run.executors * run.slots,
                        run.memory_limit.map_or(String::new(), |limit| format!(
                            "; {:.1} GiB of memory a side",
                            limit as f64 / (1u64 << 30) as f64
                        )),
                        run.iterations
                    );
                    print!("{}", report(&results));
                    if let Some(path) = output
                        && let Err(e) = std::fs::write(&path, to_json(&results))
                    {
                        eprintln!("volley-bench: cannot write {}: {e}", path.display());
                        return ExitCode::from(1);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("volley-bench: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
