//! The pipelined exchange on real processes: a stage starts while the
//! stages it reads still run, and still never deadlocks, never changes an
//! answer when a producer dies mid-stream, and never buffers a stalled
//! consumer's input in memory. A stage's outputs leave the executors once
//! every reader has finished, and run again if a reader must.
//!
//! The gate function (`volley_gate`, in `volley-test-executor`) holds
//! chosen tasks mid-flight until the test creates a file; every wait here
//! is on an event the scheduler reports, never on time.

use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use volley_client::{Context, SchedulerClient, v1};
use volley_tests::processes::{Cluster, ClusterSpec, credentials, start_cluster_with};
use volley_tests::{assert_same_rows, is_ordered, local_tpch_context, tpch_dir, tpch_query, udfs};

async fn admin(url: &str) -> SchedulerClient {
    SchedulerClient::connect_with(url, credentials().link("admin"))
        .await
        .expect("connect as admin")
}

async fn connect(cluster: &Cluster) -> Context {
    let ctx = Context::remote_with(&cluster.url, credentials().link("admin"))
        .await
        .expect("connect");
    ctx.register_udfs(&udfs::registry());
    volley_client::tpch::register_tpch(ctx.session(), tpch_dir())
        .await
        .expect("register TPC-H");
    ctx
}

/// What single-node DataFusion answers to `sql` (the gate open).
async fn expected(sql: &str) -> Vec<RecordBatch> {
    let local = local_tpch_context().await.expect("local context");
    local.register_udf(udfs::gate());
    local
        .sql(sql)
        .await
        .expect("plan locally")
        .collect()
        .await
        .expect("run locally")
}

/// Runs `sql` in a task of its own: its rows and its job's last status.
fn spawn_query(
    ctx: &Context,
    sql: &str,
) -> tokio::task::JoinHandle<datafusion::error::Result<(Vec<RecordBatch>, Option<v1::JobStatus>)>> {
    let (ctx, sql) = (ctx.clone(), sql.to_string());
    tokio::spawn(async move {
        let batches = ctx.sql(&sql).await?.collect().await;
        batches.map(|b| (b, ctx.last_job()))
    })
}

/// Follows the scheduler's only running job (once `query` has submitted
/// it) until its status satisfies `done`; returns that status.
async fn until_job<T>(
    url: &str,
    query: &tokio::task::JoinHandle<T>,
    done: impl Fn(&v1::JobStatus) -> bool,
) -> v1::JobStatus {
    let client = admin(url).await;
    let job_id = loop {
        assert!(
            !query.is_finished(),
            "the query ended before it ran as a job"
        );
        let jobs = client.list_jobs().await.expect("list jobs");
        if let Some(job) = jobs
            .iter()
            .find(|j| j.state == v1::JobState::Running as i32)
        {
            break volley_client::JobId::from(job.job_id.as_str());
        }
        // Nothing announces a submission to a third party: look again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut statuses = Box::pin(client.watch(&job_id).await.expect("watch the job"));
    while let Some(status) = statuses.next().await {
        let status = status.expect("a status");
        if done(&status) {
            return status;
        }
    }
    panic!("job {job_id} ended before the awaited moment");
}

/// SIGKILLs an executor that ran a task of `stage` (so holds its output)
/// and waits for the process to exit.
async fn kill_a_runner_of(cluster: &mut Cluster, stage: &v1::StageStatus) {
    let holder = stage
        .tasks_by_executor
        .keys()
        .next()
        .expect("a finished task of the stage")
        .clone();
    let executors = admin(&cluster.url).await.executors().await.expect("list");
    let endpoint = executors
        .iter()
        .find(|e| e.executor_id == holder)
        .expect("the holder is registered")
        .endpoint
        .clone();
    let index = cluster
        .executor_endpoints
        .iter()
        .position(|e| *e == endpoint)
        .expect("the holder is one of ours");
    cluster.signal_executor(index, "KILL");
    cluster.wait_executor(index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_slot_in_the_whole_cluster_queries_of_many_stages_complete_right() {
    // Four partitions, so every exchange is a stage of four tasks.
    let cluster = start_cluster_with(&ClusterSpec {
        executors: 1,
        slots: 1,
        scheduler_args: vec!["--target-partitions".into(), "4".into()],
        ..ClusterSpec::default()
    });
    let ctx = connect(&cluster).await;
    let local = local_tpch_context().await.expect("local context");
    for query in [2, 8, 21] {
        let sql = tpch_query(query);
        let batches = volley_tests::run_script(ctx.session(), &sql)
            .await
            .unwrap_or_else(|e| panic!("q{query} on one slot: {e}"));
        let expected = volley_tests::run_script(&local, &sql)
            .await
            .expect("local run");
        assert_same_rows(&expected, &batches, is_ordered(&sql), &format!("q{query}"));
        let job = ctx.last_job().expect("ran as a job");
        assert!(job.stages.len() >= 5, "q{query} has many stages: {job:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_lost_while_its_pipelined_consumer_reads_changes_no_answer() {
    // Two executors of four slots, four partitions: the four scan tasks
    // leave room for the aggregation's four tasks to start beside them.
    let mut cluster = start_cluster_with(&ClusterSpec {
        executor_binary: "volley-test-executor",
        slots: 4,
        scheduler_args: vec!["--target-partitions".into(), "4".into()],
        ..ClusterSpec::default()
    });
    let gate_dir = tempfile::tempdir().expect("gate dir");
    let gate = gate_dir.path().join("open");
    let ctx = connect(&cluster).await;
    // The scan tasks of the first half of lineitem (by order key) finish;
    // those of the second half wait at the gate.
    let sql = format!(
        "SELECT l_orderkey % 7 AS k, count(*) AS n, sum(l_quantity) AS quantity FROM \
         (SELECT volley_gate(l_orderkey, CASE WHEN l_orderkey > 300000 \
          THEN '{}' ELSE '/' END) AS l_orderkey, l_quantity FROM lineitem) GROUP BY l_orderkey % 7",
        gate.display()
    );
    let query = spawn_query(&ctx, &sql);
    // The consumer runs while some scan outputs are finished and others
    // are still being written.
    let status = until_job(&cluster.url, &query, |job| {
        job.stages.len() == 2
            && job.stages[0].tasks_done >= 1
            && job.stages[0].tasks_done < job.stages[0].partitions
            && job.tasks_running > job.stages[0].partitions - job.stages[0].tasks_done
    })
    .await;
    // Kill an executor holding a finished scan output the consumer reads.
    kill_a_runner_of(&mut cluster, &status.stages[0]).await;
    std::fs::write(&gate, b"").expect("open the gate");
    let (batches, job) = query
        .await
        .expect("the query task")
        .expect("the query survives losing a producer mid-stream");
    assert_same_rows(&expected(&sql).await, &batches, false, "producer lost");
    let recovery = job.and_then(|j| j.recovery).unwrap_or_default();
    assert!(recovery.map_tasks_rerun >= 1, "{recovery:?}");
    assert!(
        recovery.pipelined_restarts + recovery.stages_rerun >= 1,
        "the consumer started again: {recovery:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stalled_mid_read_leaves_its_producers_output_spilled_not_in_memory() {
    // A shuffle budget far below the probe side's size.
    let cluster = start_cluster_with(&ClusterSpec {
        executor_binary: "volley-test-executor",
        slots: 4,
        scheduler_args: vec!["--target-partitions".into(), "2".into()],
        executor_args: vec!["--shuffle-memory".into(), "1M".into()],
        ..ClusterSpec::default()
    });
    let gate_dir = tempfile::tempdir().expect("gate dir");
    let gate = gate_dir.path().join("open");
    let ctx = connect(&cluster).await;
    // A partitioned join (no broadcast): the join stage reads the orders
    // side, then streams lineitem's and stops at the gate in its filter on
    // the first probe batch, while lineitem's scan writes all its output.
    for setting in [
        "SET datafusion.optimizer.hash_join_single_partition_threshold = 0",
        "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
    ] {
        ctx.sql(setting).await.expect("set");
    }
    let sql = format!(
        "SELECT count(*) AS n, sum(l_quantity) AS quantity FROM orders JOIN lineitem \
         ON o_orderkey = l_orderkey AND volley_gate(l_orderkey + o_orderkey, '{}') > 0",
        gate.display()
    );
    let query = spawn_query(&ctx, &sql);
    // Every producer stage finished while the join stage's tasks run.
    let status = until_job(&cluster.url, &query, |job| {
        let last = job.stages.len().saturating_sub(1);
        job.stages.len() >= 3
            && job.stages[..last]
                .iter()
                .filter(|s| s.plan.contains("JoinExec"))
                .all(|s| s.tasks_done < s.partitions)
            && job
                .stages
                .iter()
                .filter(|s| !s.plan.contains("JoinExec") && !s.plan.contains("ShuffleReaderExec"))
                .all(|s| s.tasks_done == s.partitions)
    })
    .await;
    assert!(status.tasks_running > 0, "{status:?}");
    // The written output waits on disk, not in memory, for the consumer.
    let client = admin(&cluster.url).await;
    let executors = loop {
        // Heartbeats carry the store's figures: wait for ones sent after
        // the producers finished.
        let executors = client.executors().await.expect("list executors");
        if executors.iter().map(|e| e.shuffle_disk_bytes).sum::<u64>() > 0 {
            break executors;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for executor in &executors {
        assert!(
            executor.shuffle_memory_bytes <= 1024 * 1024,
            "an executor holds more than its shuffle budget: {executor:?}"
        );
    }
    std::fs::write(&gate, b"").expect("open the gate");
    let (batches, _) = query
        .await
        .expect("the query task")
        .expect("the stalled query completes");
    assert_same_rows(&expected(&sql).await, &batches, false, "stalled consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_stages_outputs_leave_the_executors_while_the_job_runs_and_come_back_if_a_reader_is_lost()
 {
    let mut cluster = start_cluster_with(&ClusterSpec {
        executor_binary: "volley-test-executor",
        slots: 2,
        scheduler_args: vec!["--target-partitions".into(), "2".into()],
        ..ClusterSpec::default()
    });
    let gate_dir = tempfile::tempdir().expect("gate dir");
    let gate = gate_dir.path().join("open");
    let ctx = connect(&cluster).await;
    // Three stages: lineitem's partial aggregation; the first aggregation's
    // final side with the second one's partial side; the final stage,
    // whose tasks wait at the gate once stage 1 has finished.
    let sql = format!(
        "SELECT volley_gate(c, '{}') AS c, m FROM \
         (SELECT n % 5 AS c, count(*) AS m FROM \
          (SELECT l_orderkey % 7 AS g, count(*) AS n FROM lineitem GROUP BY l_orderkey % 7) \
          GROUP BY n % 5)",
        gate.display()
    );
    let query = spawn_query(&ctx, &sql);
    let status = until_job(&cluster.url, &query, |job| {
        job.stages.len() == 3 && job.stages[1].tasks_done == job.stages[1].partitions
    })
    .await;
    assert!(
        status.stages[0].released && !status.stages[1].released,
        "stage 0 is released once stage 1, its only reader, has finished: {status:?}"
    );
    // The executors drop stage 0's outputs: what they hold comes down to
    // stage 1's (the final stage's tasks wait at the gate). Heartbeats
    // carry the count; polled without a deadline.
    let client = admin(&cluster.url).await;
    let stage_1_outputs = status.stages[1].partitions;
    loop {
        let executors = client.executors().await.expect("list executors");
        let held: u32 = executors.iter().map(|e| e.stored_outputs).sum();
        if held == stage_1_outputs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An executor holding a stage 1 output the final stage still reads dies:
    // stage 0, released, runs again before stage 1's lost tasks can.
    kill_a_runner_of(&mut cluster, &status.stages[1]).await;
    std::fs::write(&gate, b"").expect("open the gate");
    let (batches, job) = query
        .await
        .expect("the query task")
        .expect("the query survives losing a reader of a released stage");
    assert_same_rows(
        &expected(&sql).await,
        &batches,
        false,
        "released stage re-run",
    );
    let recovery = job.and_then(|j| j.recovery).unwrap_or_default();
    assert!(recovery.released_stages_rerun >= 1, "{recovery:?}");
}
