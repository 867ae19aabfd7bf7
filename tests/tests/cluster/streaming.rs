//! `execute_stream` on the cluster streams: the first rows arrive while the
//! job still runs, and the client buffers a bounded number of batches
//! whatever the size of the result.

use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use volley_client::{Context, EmbeddedClusterConfig};
use volley_tests::tpch_dir;

/// Reads a metric of the query's root (the client's `DistributedQueryExec`).
fn metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
    plan.metrics()
        .and_then(|m| m.sum_by_name(name))
        .map(|v| v.as_usize())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_stream_yields_before_the_job_ends_and_holds_few_batches() {
    // One slot and many partitions: the final stage's tasks finish one after
    // another, so a streaming client gets rows while later ones still run.
    let ctx = Context::embedded_with(EmbeddedClusterConfig {
        slots_per_executor: 1,
        target_partitions: Some(16),
        memory_per_executor: 1 << 30,
        allowed_paths: volley_tests::test_paths(),
        ..EmbeddedClusterConfig::with_executors(1)
    })
    .await
    .expect("start embedded cluster");
    volley_client::tpch::register_tpch(&ctx, tpch_dir())
        .await
        .expect("register TPC-H tables");
    let df = ctx
        .sql("SELECT l_orderkey, l_comment, upper(l_comment) AS shout, md5(l_comment) AS h FROM lineitem")
        .await
        .unwrap();
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await.unwrap();
    let mut stream = execute_stream(Arc::clone(&plan), task_ctx).unwrap();
    let (mut rows, mut batches) = (0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        if batches == 0 {
            // A slow consumer: the executors keep the rest, not the client.
            tokio::time::sleep(Duration::from_millis(300)).await;
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
