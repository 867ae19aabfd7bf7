//! Bad input and lost executors against real processes: a scheduler and
//! `volley-test-executor`s (the executor command built with the test
//! functions, as a user builds a custom executor). A bad file or a panicking
//! kernel fails its query with an error naming the file, is not retried,
//! and no executor process dies; losing every executor fails a job after the
//! grace period, saying so; a SIGKILLed executor's work directory is
//! removed by the next executor started on the same `--work-dir`.

use std::path::Path;
use std::time::{Duration, Instant};

use datafusion::arrow::array::Int64Array;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::{JoinType, ParquetReadOptions};
use std::process::Command;
use volley_client::{ClientError, Context, v1};

use volley_tests::processes::{ClusterSpec, binary, credentials, start, start_cluster_with};
use volley_tests::{tpch_dir, udfs};

async fn client(url: &str) -> Context {
    let ctx = Context::remote_with(url, credentials().link("admin"))
        .await
        .expect("connect");
    ctx.register_udfs(&udfs::registry());
    ctx
}

/// Registers the Parquet file or directory at `path` as `table`.
async fn register_parquet(ctx: &Context, table: &str, path: &Path) {
    ctx.register_parquet(
        table,
        path.to_str().expect("utf-8"),
        ParquetReadOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("register {table}: {e}"));
}

/// Runs `sql`, which must fail; returns the error text after checking the
/// job was not retried.
async fn failure(ctx: &Context, sql: &str) -> String {
    let error = match ctx.sql(sql).await {
        Ok(df) => df.collect().await.expect_err(sql),
        Err(e) => return e.to_string(),
    };
    // The job failed for the query's own reason, and was not retried.
    let job = ctx.last_job().expect("the query ran as a job");
    assert_eq!(job.state, v1::JobState::Failed as i32, "{sql}");
    let recovery = job.recovery.unwrap_or_default();
    assert_eq!(
        recovery.tasks_retried, 0,
        "{sql}: a bad input is not retried"
    );
    let kind = job.error.map(|e| e.kind).unwrap_or_default();
    assert!(
        kind == v1::ErrorKind::User as i32 || kind == v1::ErrorKind::Internal as i32,
        "{sql}: {kind}"
    );
    error.to_string()
}

async fn next_query_succeeds(ctx: &Context) {
    let batches = ctx
        .sql("SELECT 40 + 2 AS answer")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("the next query runs");
    let answer = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("int64")
        .value(0);
    assert_eq!(answer, 42);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write test file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_inputs_and_panics_fail_their_query_naming_the_file_and_no_executor_restarts() {
    let mut cluster = start_cluster_with(&ClusterSpec {
        executor_binary: "volley-test-executor",
        ..ClusterSpec::default()
    });
    let pids = cluster.executor_pids();
    let ctx = client(&cluster.url).await;
    let dir = tempfile::tempdir().expect("temp dir");

    // Parquet cut short, and Parquet replaced by text, after registration.
    for (name, damage) in [("short.parquet", "truncate"), ("text.parquet", "text")] {
        let path = dir.path().join(name);
        std::fs::copy(tpch_dir().join("nation/part-1.parquet"), &path).expect("copy");
        let table = name.replace('.', "_");
        register_parquet(&ctx, &table, &path).await;
        match damage {
            "truncate" => {
                let length = std::fs::metadata(&path).expect("metadata").len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(length / 2))
                    .expect("truncate");
            }
            _ => write(&path, "n_nationkey,n_name\n1,not parquet at all\n"),
        }
        let error = failure(&ctx, &format!("SELECT n_name FROM {table}")).await;
        assert!(error.contains(name), "{error}");
        next_query_succeeds(&ctx).await;
    }

    // A CSV value that is not of its column's type.
    let csv = dir.path().join("bad.csv");
    write(&csv, "a,b\n1,x\n2,y\nthree,z\n");
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE bad_csv (a BIGINT, b VARCHAR) STORED AS CSV LOCATION '{}' \
         OPTIONS ('format.has_header' 'true')",
        csv.display()
    ))
    .await
    .expect("register CSV");
    let error = failure(&ctx, "SELECT sum(a) FROM bad_csv").await;
    assert!(error.contains("bad.csv"), "{error}");
    next_query_succeeds(&ctx).await;

    // A JSON line cut in the middle.
    let json = dir.path().join("bad.json");
    write(
        &json,
        "{\"a\": 1, \"b\": \"x\"}\n{\"a\": 2, \"b\"\n{\"a\": 3, \"b\": \"z\"}\n",
    );
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE bad_json (a BIGINT, b VARCHAR) STORED AS JSON LOCATION '{}'",
        json.display()
    ))
    .await
    .expect("register JSON");
    let error = failure(&ctx, "SELECT sum(a) FROM bad_json").await;
    assert!(error.contains("bad.json"), "{error}");
    next_query_succeeds(&ctx).await;

    // A kernel that panics, reading a file.
    let nation = tpch_dir().join("nation");
    register_parquet(&ctx, "nation", &nation).await;
    let error = failure(&ctx, "SELECT volley_panic_at(n_nationkey, 3) FROM nation").await;
    assert!(error.contains("panicked"), "{error}");
    assert!(error.contains("nation"), "names the input file: {error}");
    next_query_succeeds(&ctx).await;

    assert!(cluster.executors_alive(), "an executor process died");
    assert_eq!(cluster.executor_pids(), pids);
    let executors = ctx.scheduler().executors().await.expect("executors");
    assert_eq!(executors.len(), 2, "{executors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_executor_process_fails_the_job_after_the_grace_period() {
    let mut cluster = start_cluster_with(&ClusterSpec {
        scheduler_args: vec!["--no-executor-grace-secs".into(), "2".into()],
        ..ClusterSpec::default()
    });
    let ctx = client(&cluster.url).await;
    let lineitem = tpch_dir().join("lineitem");
    register_parquet(&ctx, "lineitem", &lineitem).await;
    // A join of hundreds of billions of rows: it runs until stopped.
    let a = ctx.table("lineitem").await.expect("table");
    let b = a
        .clone()
        .select(vec![col("l_linestatus").alias("s")])
        .expect("select");
    let endless = a
        .join(b, JoinType::Inner, &["l_linestatus"], &["s"], None)
        .expect("join")
        .aggregate(vec![], vec![count(lit(1))])
        .expect("count");
    let handle = ctx.submit(endless, "endless").await.expect("submit");
    // Polled without a deadline: the condition is the synchronization.
    while handle.status().await.expect("status").tasks_running == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.kill_executors();
    let killed_at = Instant::now();
    match handle.wait().await {
        Err(ClientError::JobFailed { kind, message, .. }) => {
            assert_eq!(kind, v1::ErrorKind::NoExecutors, "{message}");
            assert!(message.contains("every executor"), "{message}");
        }
        other => panic!("expected the job to fail, got {other:?}"),
    }
    let waited = killed_at.elapsed();
    // At least the grace; no upper bound (a loaded machine's clock proves
    // nothing; the state machine's tests advance a paused clock).
    assert!(
        waited >= Duration::from_secs(1),
        "failed {waited:?} after the executors died, before the grace of 2s"
    );
}

/// Bytes in regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spill_disk_fails_its_tasks_which_run_again_elsewhere_and_the_executor_lives_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = start_cluster_with(&ClusterSpec {
        executors: 1,
        log_dir: Some(dir.path().to_path_buf()),
        ..ClusterSpec::default()
    });
    // A second executor whose work dir is a 2 MiB tmpfs in a mount namespace
    // of its own, with a memory budget its sorts and shuffle output overflow.
    let small_disk = dir.path().join("small-disk");
    std::fs::create_dir(&small_disk).expect("mount point");
    let script = format!(
        "mount -t tmpfs -o size=2m tmpfs '{disk}' && exec '{exe}' --scheduler {url} \
         --bind 127.0.0.1:0 --slots 2 --memory-limit 16M --work-dir '{disk}' {security}",
        disk = small_disk.display(),
        exe = binary("volley-executor").display(),
        url = cluster.url,
        security = credentials().executor_args_for_shell(),
    );
    let mut command = Command::new("unshare");
    command.args(["--mount", "sh", "-c", &script]);
    let (mut full_disk, line) = start(command);
    assert!(line.contains("serving on"), "{line}");
    let pid = full_disk.0.id();
    let id = executor_id(&line);

    let ctx = client(&cluster.url).await;
    while ctx.scheduler().executors().await.expect("executors").len() < 2 {
        assert!(
            matches!(full_disk.0.try_wait(), Ok(None)),
            "the small-disk executor exited before it registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lineitem = tpch_dir().join("lineitem");
    register_parquet(&ctx, "lineitem", &lineitem).await;
    let sql = "SELECT l_orderkey, l_linenumber, l_comment FROM lineitem ORDER BY l_orderkey, l_linenumber";
    let actual = ctx
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("the job completes on the executor with room");
    let local = volley_tests::local_tpch_context().await.expect("local");
    let expected = local
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("local run");
    volley_tests::assert_same_rows(&expected, &actual, true, "sorted lineitem");

    let job = ctx.last_job().expect("ran as a job");
    let recovery = job.recovery.unwrap_or_default();
    assert!(recovery.tasks_retried > 0, "no task failed: {recovery:?}");
    let log = std::fs::read_to_string(dir.path().join("scheduler.log")).expect("scheduler log");
    assert!(
        log.contains("No space left on device"),
        "the tasks did not fail for a full disk:\n{log}"
    );

    // The executor lives on, and what it half-wrote is gone.
    assert!(
        matches!(full_disk.0.try_wait(), Ok(None)),
        "the executor died"
    );
    // Its own directory on that disk (beside it, its lock file).
    let its_disk = Path::new("/proc")
        .join(pid.to_string())
        .join("root")
        .join(small_disk.strip_prefix("/").expect("absolute"))
        .join(&id);
    // The failed tasks' partial files go as their writers are dropped.
    while bytes_under(&its_disk) > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    next_query_succeeds(&ctx).await;
    assert_eq!(
        ctx.scheduler().executors().await.expect("executors").len(),
        2
    );
}

#[test]
fn a_local_output_the_executors_cannot_see_fails_the_job_and_nothing_appears() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = start_cluster_with(&ClusterSpec {
        executors: 0,
        ..ClusterSpec::default()
    });
    // The only executor runs in a mount namespace of its own where `dir` is
    // an empty tmpfs: it does not share the scheduler's view of `dir`.
    let script = format!(
        "mount -t tmpfs -o size=64m tmpfs '{dir}' && exec '{exe}' --scheduler {url} \
         --bind 127.0.0.1:0 --slots 2 --work-dir '{dir}/work' {security}",
        dir = dir.path().display(),
        exe = binary("volley-executor").display(),
        url = cluster.url,
        security = credentials().executor_args_for_shell(),
    );
    let mut command = Command::new("unshare");
    command.args(["--mount", "sh", "-c", &script]);
    let (_executor, line) = start(command);
    assert!(line.contains("serving on"), "{line}");

    let query = dir.path().join("q.sql");
    std::fs::write(&query, "SELECT 1 AS x").expect("write the script");
    let out = dir.path().join("out");
    let submitted = volley_tests::processes::volley(
        &[
            "submit",
            query.to_str().expect("utf-8"),
            "--scheduler",
            &cluster.url,
            "--output",
            out.to_str().expect("utf-8"),
            "--wait",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(submitted.status.code(), Some(1));
    let status = String::from_utf8_lossy(&submitted.stdout);
    assert!(
        status.contains("not on a filesystem this executor shares with the scheduler"),
        "{status}"
    );
    assert!(!out.exists(), "nothing is reported in place");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| name.contains("volley-staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The id in an executor's first line, "volley-executor <id> serving on …".
fn executor_id(line: &str) -> String {
    line.split_whitespace().nth(1).expect("id").to_string()
}

#[test]
fn a_killed_executors_work_directory_is_removed_by_the_next_executor_started_on_it() {
    let cluster = start_cluster_with(&ClusterSpec {
        executors: 0,
        ..ClusterSpec::default()
    });
    let work = tempfile::tempdir().expect("work dir");
    let executor = || {
        let mut command = Command::new(binary("volley-executor"));
        command
            .args(["--scheduler", &cluster.url, "--bind", "127.0.0.1:0"])
            .arg("--work-dir")
            .arg(work.path())
            .args(credentials().executor_args());
        let (process, line) = start(command);
        assert!(line.contains("serving on"), "{line}");
        (process, executor_id(&line))
    };
    // Something else's directory in the same place is never touched.
    let foreign = work.path().join("exec-not-volleys");
    std::fs::create_dir(&foreign).expect("foreign dir");
    std::fs::write(foreign.join("keep"), "precious\n").expect("write");

    let (mut killed, killed_id) = executor();
    let (_living, living_id) = executor();
    let leftover = work.path().join(&killed_id);
    std::fs::write(leftover.join("spilled.arrow"), vec![7u8; 1 << 20]).expect("spill");
    killed.0.kill().expect("SIGKILL");
    killed.0.wait().expect("reaped");
    assert!(leftover.is_dir(), "a SIGKILLed executor cannot clean up");

    // Claimed before it serves: once it announces itself, the sweep is done.
    let (_next, next_id) = executor();
    assert!(
        !leftover.exists(),
        "the dead executor's directory is still there"
    );
    assert!(
        work.path().join(&living_id).is_dir(),
        "a living executor's was removed"
    );
    assert!(work.path().join(&next_id).is_dir());
    assert_eq!(
        std::fs::read_to_string(foreign.join("keep")).expect("kept"),
        "precious\n"
    );
}
