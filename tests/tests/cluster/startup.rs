//! Start-up order does not matter: an executor started before its
//! scheduler finds it once it listens, and a job submitted before any
//! executor registered waits for one instead of failing.

use std::net::{SocketAddr, TcpListener};

use datafusion::arrow::record_batch::RecordBatch;
use volley_client::{Context, Link};
use volley_executor::{Executor, ExecutorConfig};
use volley_scheduler::{SchedulerConfig, SchedulerServer};

/// A free loopback port outside the kernel's range of ephemeral ports, so
/// no outgoing connection of another test takes it between our check and
/// the scheduler's bind.
fn quiet_port() -> SocketAddr {
    (20_000..30_000)
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .find(|addr| TcpListener::bind(addr).is_ok())
        .expect("a free port below the ephemeral range")
}

fn executor_config(url: &str, dir: &std::path::Path) -> ExecutorConfig {
    let mut config = ExecutorConfig::new(url, dir);
    config.slots = 2;
    config.memory_limit = 1 << 30;
    config
}

async fn sum_of(ctx: &Context) -> Vec<RecordBatch> {
    ctx.sql("SELECT x, count(*) AS n FROM (VALUES (1), (2), (3), (4)) AS t(x) GROUP BY x")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("the job runs once an executor joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_started_before_its_scheduler_registers_once_it_listens() {
    let addr = quiet_port();
    let url = format!("http://{addr}");
    let dir = tempfile::tempdir().expect("dir");
    // Something that is not a scheduler holds the port first: the executor's
    // first attempt reaches it and fails; then the scheduler starts there.
    let impostor = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let executor = tokio::spawn(Executor::start(executor_config(&url, dir.path())));
    let (first_attempt, _) = impostor.accept().await.expect("the executor tries");
    drop(first_attempt);
    drop(impostor);
    let scheduler = SchedulerServer::start(SchedulerConfig {
        bind: addr,
        ..SchedulerConfig::default()
    })
    .await
    .expect("the scheduler binds the port");
    let executor = executor
        .await
        .expect("join")
        .expect("the executor registered after retrying");
    assert_eq!(scheduler.executor_count(), 1);
    let ctx = Context::remote_with(&scheduler.url(), Link::insecure())
        .await
        .expect("connect");
    let rows = sum_of(&ctx).await;
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
    drop(executor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_before_any_executor_waits_for_one_and_uses_its_slots() {
    let scheduler = SchedulerServer::start(SchedulerConfig {
        bind: ([127, 0, 0, 1], 0).into(),
        ..SchedulerConfig::default()
    })
    .await
    .expect("scheduler");
    let url = scheduler.url();
    let ctx = Context::remote_with(&url, Link::insecure())
        .await
        .expect("connect");
    let query = tokio::spawn({
        let ctx = ctx.clone();
        async move { sum_of(&ctx).await }
    });
    // The submission is waiting before the executor exists.
    scheduler.submissions_waiting_for_executors(1).await;
    assert_eq!(scheduler.executor_count(), 0);
    let dir = tempfile::tempdir().expect("dir");
    let _executor = Executor::start(executor_config(&url, dir.path()))
        .await
        .expect("executor");
    let rows = query.await.expect("join");
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
    let job = ctx.last_job().expect("ran as a job");
    assert!(
        job.stages.iter().any(|s| s.partitions == 2),
        "planned for the executor's two slots, not for an empty cluster: {job:?}"
    );
}
