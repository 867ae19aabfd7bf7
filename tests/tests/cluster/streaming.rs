//! `execute_stream` on the cluster streams: the first rows arrive while the
//! job still runs, and the client buffers a bounded number of batches
//! whatever the size of the result.

use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use volley_client::{Context, EmbeddedClusterConfig};
use volley_tests::{tpch_dir, udfs};

/// Reads a metric of the query's root (the client's `DistributedQueryExec`).
fn metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
    plan.metrics()
        .and_then(|m| m.sum_by_name(name))
        .map(|v| v.as_usize())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_stream_yields_before_the_job_ends_and_holds_few_batches() {
    // One slot and many partitions: the final stage's tasks run one after
    // another. Those reading the upper half of lineitem's order keys wait at
    // a gate, which the client opens only once it has read a batch: so the
    // job cannot end before the client has rows, and while the client is
    // held, the executors keep the rest, not the client.
    let ctx = Context::embedded_with(EmbeddedClusterConfig {
        slots_per_executor: 1,
        target_partitions: Some(16),
        memory_per_executor: 1 << 30,
        allowed_paths: volley_tests::test_paths(),
        udfs: udfs::registry(),
        ..EmbeddedClusterConfig::with_executors(1)
    })
    .await
    .expect("start embedded cluster");
    volley_client::tpch::register_tpch(&ctx, tpch_dir())
        .await
        .expect("register TPC-H tables");
    let gate_dir = tempfile::tempdir().expect("gate dir");
    let gate = gate_dir.path().join("open");
    let middle: i64 = {
        let local = volley_tests::local_tpch_context().await.unwrap();
        let max = local
            .sql("SELECT max(l_orderkey) FROM lineitem")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let max = max[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .expect("an integer key")
            .value(0);
        max / 2
    };
    let df = ctx
        .sql(&format!(
            "SELECT volley_gate(l_orderkey, CASE WHEN l_orderkey > {middle} THEN '{}' END) AS l_orderkey, \
             l_comment, upper(l_comment) AS shout, md5(l_comment) AS h FROM lineitem",
            gate.display()
        ))
        .await
        .unwrap();
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await.unwrap();
    let mut stream = execute_stream(Arc::clone(&plan), task_ctx).unwrap();
    let (mut rows, mut batches) = (0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        if batches == 0 {
            // The job is held at the gate until now: this batch came
            // before its end.
            std::fs::write(&gate, b"").expect("open the gate");
        }
        rows += batch.num_rows();
        batches += 1;
    }
    let lineitems = volley_tests::local_tpch_context()
        .await
        .unwrap()
        .table("lineitem")
        .await
        .unwrap()
        .count()
        .await
        .unwrap();
    assert_eq!(rows, lineitems);
    assert!(batches >= 50, "a large result: {batches} batches");
    let early = metric(&plan, "batches_before_job_end");
    assert!(early > 0, "no batch arrived before the job ended");
    let peak = metric(&plan, "peak_buffered_batches");
    assert!(peak <= 2, "the client buffered {peak} batches");
}
