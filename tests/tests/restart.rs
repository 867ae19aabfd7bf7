//! A scheduler killed (SIGKILL) mid-job and restarted with the same
//! `--state-dir`: `volley submit --wait`, started before the kill, sees its
//! job complete with DataFusion's answer; stages whose outputs the executors
//! kept are not run again; finished jobs and their statuses are still
//! listed; a damaged store stops the start with an error naming its file.
//! Also: a DataFrame `JobHandle` follows its job across a restart; outputs
//! kept past `--orphan-grace-secs` are dropped and run again; executors
//! join a scheduler started on a fresh store; and without `--state-dir` the
//! scheduler says so.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use serde_json::Value;
use volley_client::{SchedulerClient, v1};
use volley_tests::chaos::next_random;
use volley_tests::processes::{
    Process, binary, credentials, restartable_port, start_logging, volley_with_env,
};
use volley_tests::{compare_rows, local_tpch_context, run_script, tpch_dir, tpch_query};

/// A scheduler with a state store and executors, as processes, on
/// loopback; the scheduler can be killed and started again on its port.
struct DurableCluster {
    url: String,
    port: u16,
    work: tempfile::TempDir,
    scheduler: Option<Process>,
    starts: usize,
    executors: Vec<Process>,
}

impl DurableCluster {
    fn start(executors: usize) -> Self {
        Self::start_with(executors, &[])
    }

    /// Like [`DurableCluster::start`], each executor also given `args`.
    fn start_with(executors: usize, args: &[&str]) -> Self {
        let mut cluster = Self {
            url: String::new(),
            // Not from the ephemeral range: nothing else can take it while
            // the scheduler restarts.
            port: restartable_port(),
            work: tempfile::tempdir().expect("work dir"),
            scheduler: None,
            starts: 0,
            executors: Vec::new(),
        };
        std::fs::create_dir_all(cluster.logs_dir()).expect("log dir");
        cluster.start_scheduler();
        for i in 0..executors {
            let mut executor = Command::new(binary("volley-executor"));
            executor
                .args(["--scheduler", &cluster.url, "--bind", "127.0.0.1:0"])
                .args(["--slots", "2", "--work-dir"])
                .arg(cluster.work.path().join("executors"))
                .args(args)
                .args(credentials().executor_args());
            let log = cluster.logs_dir().join(format!("executor-{i}.log"));
            let (process, line) = start_logging(executor, Some(&log));
            assert!(line.contains("serving on"), "{line}");
            cluster.executors.push(process);
        }
        cluster
    }

    fn logs_dir(&self) -> PathBuf {
        self.work.path().join("logs")
    }

    fn state_dir(&self) -> PathBuf {
        self.work.path().join("state")
    }

    /// Starts the scheduler (again) on its port, with its state store.
    fn start_scheduler(&mut self) {
        self.start_scheduler_with(&[]);
    }

    /// Starts the scheduler (again) on its port, with its state store and
    /// `args`.
    fn start_scheduler_with(&mut self, args: &[&str]) {
        let mut scheduler = Command::new(binary("volley-scheduler"));
        scheduler
            .args(["--bind", &format!("127.0.0.1:{}", self.port)])
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(["--executor-timeout-secs", "3"])
            .args(args)
            .args(credentials().scheduler_args());
        let log = self
            .logs_dir()
            .join(format!("scheduler-{}.log", self.starts));
        self.starts += 1;
        let (process, line) = start_logging(scheduler, Some(&log));
        let url = line
            .rsplit(' ')
            .next()
            .expect("the scheduler prints its URL");
        self.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the URL");
        self.url = url.to_string();
        self.scheduler = Some(process);
    }

    fn kill_scheduler(&mut self) {
        if let Some(mut scheduler) = self.scheduler.take() {
            let _ = scheduler.0.kill();
            let _ = scheduler.0.wait();
        }
    }

    fn kill_executor(&mut self, index: usize) {
        let _ = self.executors[index].0.kill();
        let _ = self.executors[index].0.wait();
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.logs_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            text.push_str(&format!("--- {}\n", entry.path().display()));
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        text
    }

    /// Waits until an executor's log shows `text` `times` times.
    async fn wait_for_executor_log(&self, index: usize, text: &str, times: usize) {
        let log = self.logs_dir().join(format!("executor-{index}.log"));
        while std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(text)
            .count()
            < times
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn admin(&self) -> SchedulerClient {
        SchedulerClient::connect_with(&self.url, credentials().link("admin"))
            .await
            .expect("connect as admin")
    }
}

/// The TPC-H tables and query `n`, as a script.
fn tpch_script(n: usize) -> String {
    let mut script = String::new();
    for table in [
        "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
    ] {
        script.push_str(&format!(
            "CREATE EXTERNAL TABLE {table} STORED AS PARQUET LOCATION '{}/';\n",
            tpch_dir().join(table).display()
        ));
    }
    script.push_str(&tpch_query(n));
    script
}

/// `volley submit SCRIPT --wait --json --output OUT --name NAME`, started
/// and left running.
fn submit(url: &str, script: &Path, out: &Path, name: &str) -> Child {
    Command::new(binary("volley"))
        .arg("submit")
        .arg(script)
        .args(["--scheduler", url, "--wait", "--json", "--name", name])
        .arg("--output")
        .arg(out)
        .env_remove("VOLLEY_SCHEDULER")
        .env_remove("VOLLEY_TOKEN_FILE")
        .envs(credentials().env("admin"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn volley submit")
}

/// Waits for `volley submit` to end; its exit status, stdout and stderr.
fn finish(mut child: Child) -> (std::process::ExitStatus, String, String) {
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(out) = child.stdout.as_mut() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(err) = child.stderr.as_mut() {
        let _ = BufReader::new(err).read_to_string(&mut stderr);
    }
    (
        child.wait().expect("wait for volley submit"),
        stdout,
        stderr,
    )
}

/// The id of the job named `name`, once the scheduler lists it.
async fn job_named(client: &SchedulerClient, name: &str) -> volley_client::JobId {
    loop {
        let jobs = client.list_jobs().await.expect("list jobs");
        if let Some(job) = jobs.iter().find(|j| j.name == name) {
            return volley_client::JobId::from(job.job_id.as_str());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `volley submit --wait --json` to end and checks it succeeded
/// with DataFusion's answer to `query` in `out`; its printed status.
async fn finished_right(
    cluster: &DurableCluster,
    submitted: Child,
    query: usize,
    out: &Path,
    what: &str,
) -> Value {
    let (exit, stdout, stderr) = finish(submitted);
    assert!(
        exit.success(),
        "{what}: volley submit failed: {stderr}\n{}",
        cluster.logs()
    );
    let status: Value = serde_json::from_str(stdout.trim()).expect("--json prints a status");
    assert_eq!(status["state"], "succeeded", "{what}: {status}");
    if let Err(difference) = check_answer(query, out).await {
        panic!("{what}: {difference}");
    }
    status
}

/// Follows the job named `name` until a seeded share (below `at_most`) of
/// its tasks are done; the status then (the job may have ended already).
async fn at_seeded_moment(
    cluster: &DurableCluster,
    name: &str,
    seed: u64,
    at_most: f64,
) -> v1::JobStatus {
    let client = cluster.admin().await;
    let job_id = job_named(&client, name).await;
    let mut random = seed;
    let mut updates = Box::pin(client.watch(&job_id).await.expect("watch"));
    let mut goal = None;
    let mut last = v1::JobStatus::default();
    while let Some(status) = updates.next().await {
        let status = status.expect("a status");
        let ended = volley_client::is_terminal(status.state);
        if goal.is_none() && status.tasks_total > 0 {
            let bound = (f64::from(status.tasks_total) * at_most).max(1.0) as u64;
            goal = Some(next_random(&mut random) % bound);
        }
        last = status;
        if ended || goal.is_some_and(|g| u64::from(last.tasks_done) >= g) {
            break;
        }
    }
    last
}

/// Map outputs of finished stages (not the final one) in `status`: what
/// the executors hold for a restarted scheduler to take over.
fn finished_map_outputs(status: &v1::JobStatus) -> u64 {
    let last = status.stages.iter().map(|s| s.stage_id).max();
    status
        .stages
        .iter()
        .filter(|s| Some(s.stage_id) != last && s.tasks_done == s.partitions)
        .map(|s| u64::from(s.partitions))
        .sum()
}

/// Checks the Parquet files in `out` against single-node DataFusion.
async fn check_answer(query: usize, out: &Path) -> Result<(), String> {
    let local = local_tpch_context().await.map_err(|e| e.to_string())?;
    let expected = run_script(&local, &tpch_query(query))
        .await
        .map_err(|e| e.to_string())?;
    let actual = SessionContext::new()
        .read_parquet(
            out.to_str().unwrap_or_default(),
            ParquetReadOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    compare_rows(&expected, &actual, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_killed_mid_query_and_restarted_finishes_every_job_right_rerunning_no_kept_stage()
 {
    let mut cluster = DurableCluster::start(2);
    let data = tempfile::tempdir().expect("data dir");
    let mut finished_jobs = Vec::new();
    let (mut killed_mid_job, mut taken_over) = (0, 0);
    for (seed, query) in [3usize, 5, 9, 18, 21].into_iter().enumerate() {
        let name = format!("q{query}");
        let script = data.path().join(format!("{name}.sql"));
        std::fs::write(&script, tpch_script(query)).expect("write the script");
        let out = data.path().join(format!("{name}-out"));
        let submitted = submit(&cluster.url, &script, &out, &name);
        // In the first half of the job: even a slow machine, whose client sees
        // fewer status changes, kills it mid-job.
        let before = at_seeded_moment(&cluster, &name, 1000 + seed as u64, 0.5).await;
        cluster.kill_scheduler();
        cluster.start_scheduler();
        let what = format!("{name} after a scheduler restart");
        let status = finished_right(&cluster, submitted, query, &out, &what).await;
        let recovery = &status["recovery"];
        eprintln!(
            "{name}: killed at {}/{} tasks; after the restart: {recovery}",
            before.tasks_done, before.tasks_total
        );
        if !volley_client::is_terminal(before.state) {
            killed_mid_job += 1;
            taken_over += recovery["outputs_recovered"].as_u64().unwrap_or_default();
            assert_eq!(recovery["scheduler_restarts"], 1, "{name}: {status}");
            // Both executors lived: nothing they held is run again.
            assert_eq!(recovery["map_tasks_rerun"], 0, "{name}: {status}");
            assert_eq!(recovery["stages_rerun"], 0, "{name}: {status}");
            assert!(
                recovery["outputs_recovered"].as_u64() >= Some(finished_map_outputs(&before)),
                "{name}: every output of a stage finished before the kill is taken over; \
                 before the kill: {before:?}; after: {status}"
            );
        }
        finished_jobs.push(status["job_id"].as_str().unwrap_or_default().to_string());
    }
    // The moments are seeded shares of each job's tasks: most fall mid-job,
    // and the executors' kept outputs were taken over.
    assert!(
        killed_mid_job >= 3,
        "only {killed_mid_job} of 5 kills fell mid-job"
    );
    assert!(taken_over > 0, "no kept output was taken over");
    // History: a scheduler started again still lists the finished jobs, and
    // knows how each ended.
    cluster.kill_scheduler();
    cluster.start_scheduler();
    let listed = volley_with_env(
        &["jobs", "list", "--json", "--scheduler", &cluster.url],
        data.path(),
        &[],
    );
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed = String::from_utf8_lossy(&listed.stdout);
    for id in &finished_jobs {
        assert!(listed.contains(id.as_str()), "job {id} is listed: {listed}");
        let shown = volley_with_env(
            &["jobs", "status", id, "--json", "--scheduler", &cluster.url],
            data.path(),
            &[],
        );
        let shown: Value = serde_json::from_slice(&shown.stdout).expect("a JSON status");
        assert_eq!(shown["state"], "succeeded", "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_and_an_executor_killed_together_still_finish_the_job_right() {
    let mut cluster = DurableCluster::start(2);
    let data = tempfile::tempdir().expect("data dir");
    let script = data.path().join("q9.sql");
    std::fs::write(&script, tpch_script(9)).expect("write the script");
    let out = data.path().join("q9-out");
    let submitted = submit(&cluster.url, &script, &out, "q9");
    // In the first half of the job, so the executor dies holding output
    // the job still needs.
    let before = at_seeded_moment(&cluster, "q9", 7, 0.5).await;
    // The scheduler first: it cannot record that the executor left, so the
    // restarted one waits for it and then re-runs what it held.
    cluster.kill_scheduler();
    cluster.kill_executor(1);
    cluster.start_scheduler();
    let what = "q9 after losing the scheduler and an executor";
    let status = finished_right(&cluster, submitted, 9, &out, what).await;
    if !volley_client::is_terminal(before.state) {
        assert_eq!(status["recovery"]["scheduler_restarts"], 1, "{status}");
        assert!(
            cluster.logs().contains("did not re-attach"),
            "the restarted scheduler noticed the dead executor"
        );
    } else {
        eprintln!("q9 had ended before the kill: {before:?}");
    }
}

#[test]
fn a_damaged_state_store_stops_the_start_naming_its_file_and_fresh_state_starts_over() {
    let work = tempfile::tempdir().expect("work dir");
    let state = work.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let file = state.join("state.sqlite");
    std::fs::write(&file, vec![0xA5u8; 64 * 1024]).expect("write garbage");
    let start = |fresh: bool| {
        let mut scheduler = Command::new(binary("volley-scheduler"));
        scheduler
            .args(["--bind", "127.0.0.1:0", "--state-dir"])
            .arg(&state)
            .args(credentials().scheduler_args());
        if fresh {
            scheduler.arg("--fresh-state");
        }
        scheduler
    };
    let refused = start(false).output().expect("run the scheduler");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("corrupted"),
        "{stderr}"
    );
    assert!(stderr.contains("--fresh-state"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut fresh = start(true);
    fresh.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = Process(fresh.spawn().expect("spawn the scheduler"));
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the first line");
    assert!(line.contains("listening on"), "{line}");
    assert!(state.join("state.sqlite.corrupt").exists(), "kept aside");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataframe_job_handle_follows_its_job_across_a_scheduler_restart() {
    let mut cluster = DurableCluster::start(2);
    let out = tempfile::tempdir().expect("output dir");
    let target = out.path().join("q3");
    let ctx = volley_client::Context::remote_with(&cluster.url, credentials().link("admin"))
        .await
        .expect("connect");
    volley_client::tpch::register_tpch(&ctx, tpch_dir())
        .await
        .expect("register TPC-H tables");
    // A detached job: it writes its answer to files, so nothing is lost
    // with the client's connection to the scheduler.
    let copy = format!(
        "COPY ({}) TO '{}/' STORED AS PARQUET",
        tpch_query(3).trim().trim_end_matches(';'),
        target.display()
    );
    let df = ctx.sql(&copy).await.expect("plan the COPY");
    let handle = ctx.submit(df, "handle-q3").await.expect("submit");
    let before = at_seeded_moment(&cluster, "handle-q3", 31, 0.5).await;
    cluster.kill_scheduler();
    cluster.start_scheduler();
    let status = handle
        .wait()
        .await
        .unwrap_or_else(|e| panic!("the handle lost its job: {e}\n{}", cluster.logs()));
    assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
    if let Err(difference) = check_answer(3, &target).await {
        panic!("q3 through a JobHandle across a restart: {difference}");
    }
    if !volley_client::is_terminal(before.state) {
        let recovery = status.recovery.expect("counters");
        assert_eq!(recovery.scheduler_restarts, 1, "{recovery:?}");
        assert_eq!(recovery.map_tasks_rerun, 0, "{recovery:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_kept_past_the_orphan_grace_are_dropped_and_the_restarted_scheduler_reruns_them() {
    // A grace of nothing: the executors drop what they hold as soon as the
    // scheduler is gone.
    let mut cluster = DurableCluster::start_with(2, &["--orphan-grace-secs", "0"]);
    let data = tempfile::tempdir().expect("data dir");
    let script = data.path().join("q5.sql");
    std::fs::write(&script, tpch_script(5)).expect("write the script");
    let out = data.path().join("q5-out");
    let submitted = submit(&cluster.url, &script, &out, "q5");
    // Once some stage has finished, so the executors hold output it needs.
    let client = cluster.admin().await;
    let job_id = job_named(&client, "q5").await;
    let mut updates = Box::pin(client.watch(&job_id).await.expect("watch"));
    let mut before = v1::JobStatus::default();
    while let Some(status) = updates.next().await {
        before = status.expect("a status");
        if finished_map_outputs(&before) > 0 || volley_client::is_terminal(before.state) {
            break;
        }
    }
    drop(updates);
    cluster.kill_scheduler();
    for executor in 0..2 {
        cluster
            .wait_for_executor_log(
                executor,
                "no scheduler took over the stored outputs in time",
                1,
            )
            .await;
    }
    cluster.start_scheduler();
    let what = "q5 after the executors dropped their outputs";
    let status = finished_right(&cluster, submitted, 5, &out, what).await;
    if !volley_client::is_terminal(before.state) {
        // Every output finished before the kill was held then, and dropped.
        let dropped: u64 = cluster
            .logs()
            .lines()
            .filter(|l| l.contains("no scheduler took over the stored outputs in time"))
            .filter_map(|l| {
                let count = l.split("dropped_outputs=").nth(1)?;
                count
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert!(
            dropped >= finished_map_outputs(&before),
            "dropped {dropped}; finished before the kill: {before:?}"
        );
        assert_eq!(status["recovery"]["scheduler_restarts"], 1, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_that_served_a_scheduler_join_one_started_on_a_fresh_store() {
    let mut cluster = DurableCluster::start(1);
    // The executor serves a second scheduler of the same store, then the
    // store is started afresh (as after a lost disk).
    cluster.kill_scheduler();
    cluster.start_scheduler();
    cluster
        .wait_for_executor_log(0, "executor registered", 2)
        .await;
    cluster.kill_scheduler();
    cluster.start_scheduler_with(&["--fresh-state"]);
    let client = cluster.admin().await;
    // Registered again, or refused as stale: whichever the log shows first.
    loop {
        if !client.executors().await.expect("executors").is_empty() {
            break;
        }
        let log =
            std::fs::read_to_string(cluster.logs_dir().join("executor-0.log")).unwrap_or_default();
        assert!(
            !log.contains("is stale"),
            "a scheduler on a fresh store was refused as stale:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = volley_with_env(
        &[
            "sql",
            "--scheduler",
            &cluster.url,
            "-c",
            "SELECT 40 + 2 AS n",
        ],
        cluster.work.path(),
        &[],
    );
    assert!(
        String::from_utf8_lossy(&answer.stdout).contains("42"),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
}

#[test]
fn a_scheduler_without_a_state_dir_says_at_start_that_jobs_live_in_memory_only() {
    let work = tempfile::tempdir().expect("work dir");
    let log = work.path().join("scheduler.log");
    let mut scheduler = Command::new(binary("volley-scheduler"));
    scheduler
        .args(["--bind", "127.0.0.1:0"])
        .args(credentials().scheduler_args());
    // The log line comes before the scheduler listens and announces itself.
    let (_running, line) = start_logging(scheduler, Some(&log));
    assert!(line.contains("listening on"), "{line}");
    let said = std::fs::read_to_string(&log).expect("the log");
    assert!(
        said.contains(
            "no --state-dir: jobs live in memory only and are lost if the scheduler stops"
        ),
        "{said}"
    );
}
