//! Chaos: TPC-H queries on a scheduler and three executor processes, one
//! executor killed (SIGKILL) at a seeded random moment of each run; every
//! answer must equal the fault-free one, and the job's recovery counters must
//! show the recovery ran whenever the killed executor had worked for the job.
//! A killed executor is replaced by a new process before the next run, so
//! every run starts with three.
//!
//! With [`Victim::Scheduler`], the scheduler is killed instead and started
//! again on its port with its `--state-dir`: the client follows the job
//! across the restart, and the job's counters must show the restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use volley_client::Context;

use crate::processes::{Process, binary, credentials, restartable_port, start};
use crate::{compare_rows, is_ordered, run_script, tpch_query};

/// One chaos run's outcome.
#[derive(Debug)]
pub struct ChaosRun {
    /// The TPC-H query.
    pub query: usize,
    /// The seed that chose the moment.
    pub seed: u64,
    /// When the executor was killed, after the job started.
    pub killed_after: Duration,
    /// Whether the answer equalled the fault-free one.
    pub correct: bool,
    /// Whether the job's counters show recovery (or the killed executor had
    /// done nothing the job still needed).
    pub recovered: bool,
    /// What went wrong, if anything.
    pub problem: Option<String>,
    /// The job's recovery counters, when it answered.
    pub counters: Option<volley_client::v1::JobRecovery>,
}

/// A small deterministic generator (SplitMix64), so runs are repeatable.
pub fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a chaos run kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    /// One executor, chosen by the seed.
    Executor,
    /// The scheduler, restarted with its state store.
    Scheduler,
}

/// The chaos cluster: a scheduler and three executors as processes.
pub struct ChaosCluster {
    /// The scheduler's URL.
    pub url: String,
    scheduler: Process,
    /// Each executor process with its id.
    executors: Vec<(Process, String)>,
    work_dir: tempfile::TempDir,
}

impl ChaosCluster {
    /// Starts the scheduler (executor timeout of 2s) and three executors.
    pub fn start() -> Self {
        Self::with_executors(3)
    }

    /// Starts the scheduler (executor timeout of 2s, a state store, TLS and
    /// the test users) and `executors` executors of 2 slots each.
    pub fn with_executors(executors: usize) -> Self {
        let work_dir = tempfile::tempdir().expect("work dir");
        // A port nothing else takes while the scheduler restarts on it.
        let bind = format!("127.0.0.1:{}", restartable_port());
        let (scheduler, url) = Self::scheduler(work_dir.path(), &bind);
        let mut cluster = Self {
            url,
            scheduler,
            executors: Vec::new(),
            work_dir,
        };
        while cluster.executors.len() < executors {
            cluster.add_executor();
        }
        cluster
    }

    /// Starts a scheduler bound to `bind` with its state store in `work`.
    fn scheduler(work: &Path, bind: &str) -> (Process, String) {
        let mut scheduler = Command::new(binary("volley-scheduler"));
        scheduler
            .args([
                "--bind",
                bind,
                "--executor-timeout-secs",
                "2",
                "--state-dir",
            ])
            .arg(work.join("state"))
            .args(credentials().scheduler_args());
        let (scheduler, line) = start(scheduler);
        let url = line.rsplit(' ').next().expect("URL").to_string();
        (scheduler, url)
    }

    /// Kills the scheduler with SIGKILL and starts it again on its port.
    fn kill_and_restart_scheduler(&mut self) {
        let _ = self.scheduler.0.kill();
        let _ = self.scheduler.0.wait();
        let bind = self.url.rsplit("//").next().unwrap_or_default().to_string();
        let (scheduler, url) = Self::scheduler(self.work_dir.path(), &bind);
        self.scheduler = scheduler;
        self.url = url;
    }

    fn add_executor(&mut self) {
        let mut executor = Command::new(binary("volley-executor"));
        executor
            .args([
                "--scheduler",
                &self.url,
                "--bind",
                "127.0.0.1:0",
                "--slots",
                "2",
                "--work-dir",
            ])
            .arg(self.work_dir.path())
            .args(credentials().executor_args());
        let (process, line) = start(executor);
        // "volley-executor <id> serving on <endpoint>"
        let id = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        self.executors.push((process, id));
    }

    /// Kills executor `index` with SIGKILL, starts a replacement, and
    /// returns the killed executor's id.
    fn kill_and_replace(&mut self, index: usize) -> String {
        let (mut victim, id) = self.executors.remove(index);
        let _ = victim.0.kill();
        let _ = victim.0.wait();
        self.add_executor();
        id
    }
}

async fn run(ctx: &Context, sql: &str) -> datafusion::error::Result<Vec<RecordBatch>> {
    run_script(ctx, sql).await
}

/// Runs every query with every seed, killing `victim`; `data` holds the
/// TPC-H tables.
pub async fn run_chaos(
    data: &Path,
    queries: &[usize],
    seeds: &[u64],
    victim: Victim,
) -> Vec<ChaosRun> {
    let mut cluster = ChaosCluster::start();
    let ctx = Context::remote_with(&cluster.url, credentials().link("admin"))
        .await
        .expect("connect to the chaos cluster");
    volley_client::tpch::register_tpch(&ctx, data)
        .await
        .expect("register TPC-H");
    let mut runs = Vec::new();
    for &query in queries {
        let sql = tpch_query(query);
        let started = Instant::now();
        let expected = run(&ctx, &sql).await.expect("fault-free run");
        let fault_free = started.elapsed();
        for &seed in seeds {
            let mut random = seed ^ (query as u64) << 32;
            let killed_after = Duration::from_secs_f64(
                fault_free.as_secs_f64() * (next_random(&mut random) % 1000) as f64 / 1000.0,
            );
            let executor = (next_random(&mut random) % 3) as usize;
            let query_ctx = ctx.clone();
            let query_sql = sql.clone();
            let task = tokio::spawn(async move { run(&query_ctx, &query_sql).await });
            tokio::time::sleep(killed_after).await;
            let kill_started_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let killed = match victim {
                Victim::Executor => cluster.kill_and_replace(executor),
                Victim::Scheduler => {
                    cluster.kill_and_restart_scheduler();
                    String::new()
                }
            };
            let killed_at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            // No deadline: a job that hangs fails the run by never ending.
            let outcome = task.await;
            let mut run = ChaosRun {
                query,
                seed,
                killed_after,
                correct: false,
                recovered: false,
                problem: None,
                counters: None,
            };
            match outcome {
                Err(e) => run.problem = Some(format!("the query task panicked: {e}")),
                Ok(Err(e)) => run.problem = Some(format!("the job failed: {e}")),
                Ok(Ok(actual)) => match compare_rows(&expected, &actual, is_ordered(&sql)) {
                    Err(difference) => run.problem = Some(format!("wrong answer: {difference}")),
                    Ok(()) => {
                        run.correct = true;
                        let job = ctx.last_job().unwrap_or_default();
                        let recovery = job.recovery.unwrap_or_default();
                        run.counters = Some(recovery);
                        // The victim worked for the job if any of its
                        // finished tasks ran there; then the scheduler must
                        // have noticed and recovered.
                        // A job submitted only to the restarted scheduler
                        // (the kill came before its submission arrived) had
                        // nothing to recover.
                        let victim_worked = (victim == Victim::Scheduler
                            && job.started_at_ms < kill_started_ms)
                            || job
                                .stages
                                .iter()
                                .any(|s| s.tasks_by_executor.contains_key(&killed));
                        // A job that had ended before the kill needed nothing.
                        let ended_before_kill =
                            job.ended_at_ms > 0 && job.ended_at_ms <= killed_at_ms;
                        let noticed = match victim {
                            Victim::Executor => recovery.executors_lost > 0,
                            Victim::Scheduler => recovery.scheduler_restarts > 0,
                        };
                        run.recovered = noticed || !victim_worked || ended_before_kill;
                        if !run.recovered {
                            let what = match victim {
                                Victim::Executor => format!("executor {killed}"),
                                Victim::Scheduler => "the scheduler".to_string(),
                            };
                            run.problem = Some(format!(
                                "{what} was killed {killed_after:?} into the job, which had run tasks, \
                                 but recovery counted nothing: {recovery:?}"
                            ));
                        }
                    }
                },
            }
            runs.push(run);
        }
    }
    runs
}
