//! Bad input gets a clear error, and the cluster serves the next query.

use std::time::{Duration, Instant};

use datafusion::prelude::ParquetReadOptions;
use volley_client::{ClientError, Context, find_client_error, v1};
use volley_tests::{run_script, tpch_dir};

use super::tpch_context;

async fn error_of(ctx: &Context, sql: &str) -> String {
    match run_script(ctx, sql).await {
        Ok(batches) => panic!("expected `{sql}` to fail, it returned {batches:?}"),
        Err(e) => e.to_string(),
    }
}

async fn next_query_succeeds(ctx: &Context) {
    let batches = run_script(ctx, "SELECT count(*) AS n FROM nation")
        .await
        .expect("the cluster still serves queries");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sql_is_a_clear_error_and_the_next_query_succeeds() {
    let ctx = tpch_context().await;
    let error = error_of(&ctx, "SELEC n_name FROM nation").await;
    assert!(
        error.contains("SQL error") && error.contains("SELEC"),
        "{error}"
    );
    next_query_succeeds(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_table_is_named_in_the_error_and_the_next_query_succeeds() {
    let ctx = tpch_context().await;
    let error = error_of(&ctx, "SELECT * FROM no_such_table").await;
    assert!(
        error.contains("no_such_table") && error.contains("not found"),
        "{error}"
    );
    next_query_succeeds(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_column_is_named_in_the_error_and_the_next_query_succeeds() {
    let ctx = tpch_context().await;
    let error = error_of(&ctx, "SELECT n_no_such_column FROM nation").await;
    assert!(error.contains("n_no_such_column"), "{error}");
    next_query_succeeds(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_is_named_in_the_error_and_the_next_query_succeeds() {
    let ctx = tpch_context().await;
    let missing = "/nonexistent/volley/missing.parquet";
    let error = error_of(
        &ctx,
        &format!("CREATE EXTERNAL TABLE gone STORED AS PARQUET LOCATION '{missing}'"),
    )
    .await;
    assert!(error.contains(missing.trim_start_matches('/')), "{error}");
    next_query_succeeds(&ctx).await;

    // A file cut short after registration fails the query that reads it,
    // naming the file.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("nation.parquet");
    std::fs::copy(tpch_dir().join("nation/part-1.parquet"), &copy).expect("copy");
    let copy_path = copy.to_str().expect("utf-8");
    ctx.register_parquet("damaged", copy_path, ParquetReadOptions::default())
        .await
        .expect("register");
    let length = std::fs::metadata(&copy).expect("metadata").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .and_then(|f| f.set_len(length / 2))
        .expect("truncate");
    let error = error_of(&ctx, "SELECT n_name FROM damaged").await;
    assert!(error.contains("nation.parquet"), "{error}");
    next_query_succeeds(&ctx).await;
}

/// Starts `query` and kills executor 1 as soon as the job runs tasks.
async fn kill_executor_while(
    cluster: &mut volley_client::EmbeddedCluster,
    ctx: &Context,
    query: String,
) -> (
    datafusion::error::Result<Vec<datafusion::arrow::record_batch::RecordBatch>>,
    Instant,
) {
    let (running_tx, mut running_rx) = tokio::sync::mpsc::unbounded_channel();
    ctx.set_job_observer(Some(std::sync::Arc::new(move |status: &v1::JobStatus| {
        if status.tasks_running > 0 {
            let _ = running_tx.send(());
        }
    })));
    let query_ctx = ctx.clone();
    let task = tokio::spawn(async move { run_script(&query_ctx, &query).await });
    running_rx
        .recv()
        .await
        .expect("the job started running tasks");
    let killed_at = Instant::now();
    cluster.kill_executor(1).expect("executor 1 was running");
    let outcome = task.await.expect("query task");
    ctx.set_job_observer(None);
    (outcome, killed_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_dying_mid_job_is_recovered_from_and_the_answer_is_unchanged() {
    let mut cluster = volley_client::EmbeddedCluster::start(super::small_cluster())
        .await
        .expect("cluster");
    let ctx = Context::remote_with(&cluster.scheduler_url(), cluster.link())
        .await
        .expect("connect");
    volley_client::tpch::register_tpch(&ctx, tpch_dir())
        .await
        .expect("register");
    let query = volley_tests::tpch_query(9);
    let (outcome, _) = kill_executor_while(&mut cluster, &ctx, query.clone()).await;
    let actual = outcome.expect("the job recovers from losing an executor");
    let local = volley_tests::local_tpch_context().await.expect("local");
    let expected = run_script(&local, &query).await.expect("local q9");
    volley_tests::assert_same_rows(&expected, &actual, true, "q9 after losing an executor");
    let recovery = ctx
        .last_job()
        .and_then(|j| j.recovery)
        .expect("recovery counters");
    assert_eq!(recovery.executors_lost, 1, "{recovery:?}");
    assert!(
        recovery.tasks_retried + recovery.map_tasks_rerun > 0,
        "{recovery:?}"
    );
    next_query_succeeds(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_executor_dies_the_job_fails_after_the_grace_period_saying_so() {
    let mut cluster = volley_client::EmbeddedCluster::start(volley_client::EmbeddedClusterConfig {
        no_executor_grace: Duration::from_secs(1),
        ..super::small_cluster()
    })
    .await
    .expect("cluster");
    let ctx = Context::remote_with(&cluster.scheduler_url(), cluster.link())
        .await
        .expect("connect");
    volley_client::tpch::register_tpch(&ctx, tpch_dir())
        .await
        .expect("register");
    cluster.kill_executor(0).expect("executor 0");
    let (outcome, killed_at) =
        kill_executor_while(&mut cluster, &ctx, volley_tests::tpch_query(9)).await;
    let error = outcome.expect_err("no executor is left");
    // It waited out the grace (no upper bound: the clock of a loaded
    // machine proves nothing; the state machine's tests advance a paused
    // clock instead).
    assert!(killed_at.elapsed() >= Duration::from_secs(1));
    match find_client_error(&error) {
        Some(ClientError::JobFailed { kind, message, .. }) => {
            assert_eq!(*kind, v1::ErrorKind::NoExecutors, "{message}");
            assert!(message.contains("every executor"), "{message}");
        }
        other => panic!("expected a typed job failure, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_scheduler_is_a_clear_error_naming_its_url() {
    // Port 1 on loopback: nothing listens there.
    let url = "http://127.0.0.1:1";
    let error = Context::remote(url)
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(error, ClientError::SchedulerUnreachable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(url), "{error}");
    assert_eq!(error.exit_code(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_in_a_new_tables_directory_is_named_and_the_next_query_succeeds() {
    // CREATE EXTERNAL TABLE b STORED AS PARQUET LOCATION 'dir/' over a good
    // file and a truncated one: schema inference in the client failed
    // with "Corrupt footer" naming no file.
    let ctx = tpch_context().await;
    let dir = tempfile::tempdir().expect("scratch dir");
    let nation = std::fs::read_dir(tpch_dir().join("nation"))
        .expect("the nation table's directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a nation file");
    let good = std::fs::read(nation).expect("read the nation file");
    std::fs::write(dir.path().join("a.parquet"), &good).expect("write a good file");
    std::fs::write(dir.path().join("b.parquet"), &good[..20]).expect("write a truncated file");
    let error = error_of(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE b STORED AS PARQUET LOCATION '{}/'",
            dir.path().display()
        ),
    )
    .await;
    assert!(
        error.contains("b.parquet") && !error.contains("a.parquet"),
        "{error}"
    );
    next_query_succeeds(&ctx).await;
}
