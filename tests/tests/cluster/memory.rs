//! Memory is a budget: past it operators and shuffle output spill to disk,
//! and work that cannot spill fails as resources-exhausted, naming the
//! operator, without taking the executor down.

use volley_client::{
    ClientError, Context, EmbeddedClusterConfig, WireCompression, find_client_error, v1,
};
use volley_tests::{assert_same_rows, local_tpch_context, run_script, tpch_dir};

async fn context_with_memory(bytes: usize, slots: usize) -> Context {
    context_with(EmbeddedClusterConfig {
        memory_per_executor: bytes,
        slots_per_executor: slots,
        ..super::small_cluster()
    })
    .await
}

async fn context_with(config: EmbeddedClusterConfig) -> Context {
    let ctx = Context::embedded_with(config).await.expect("cluster");
    volley_client::tpch::register_tpch(&ctx, tpch_dir())
        .await
        .expect("register");
    ctx
}

/// All of lineitem, sorted: several times a 16 MiB budget.
const SORT_ALL_LINEITEM: &str =
    "SELECT * FROM lineitem ORDER BY l_comment, l_orderkey, l_linenumber";

/// Runs [`SORT_ALL_LINEITEM`] on `ctx`, which must spill rather than fail,
/// and checks its rows, in order, against single-node DataFusion's.
async fn sorts_lineitem_as_datafusion_does(ctx: &Context, what: &str) {
    let actual = run_script(ctx, SORT_ALL_LINEITEM)
        .await
        .expect("the sort spills instead of failing");
    let expected = run_script(
        &local_tpch_context().await.expect("local context"),
        SORT_ALL_LINEITEM,
    )
    .await
    .expect("single-node DataFusion sorts it");
    assert_same_rows(&expected, &actual, true, what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_of_several_times_an_executors_memory_budget_completes() {
    // All of lineitem, sorted, against a 16 MiB budget per executor, which
    // also holds the sorted output until the merge stage reads it. One slot
    // per executor: two sorts sharing a small pool can starve each other's
    // merge (see the note on issue 5).
    let ctx = context_with_memory(16 << 20, 1).await;
    sorts_lineitem_as_datafusion_does(&ctx, "sort past the memory budget").await;
    // The sorted partitions passed through the shuffle: several budgets per
    // executor.
    let job = ctx.last_job().expect("ran as a job");
    let per_executor = job.bytes_shuffled / 2;
    assert!(
        per_executor > 3 * (16 << 20),
        "only {per_executor} bytes sorted per executor"
    );
    // What went to disk is reported per operator: the sort's runs, and the
    // sorted output its stage's shuffle writer could not keep in memory.
    let spilled = |name: &str| -> u64 {
        job.stages
            .iter()
            .flat_map(|s| &s.operators)
            .filter(|o| o.name == name)
            .map(|o| o.spilled_bytes)
            .sum()
    };
    assert!(spilled("SortExec") > 0, "the sort spilled nothing");
    assert!(
        spilled("ShuffleWriterExec") > 16 << 20,
        "the shuffle writers spilled only {} bytes",
        spilled("ShuffleWriterExec")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_past_the_budget_completes_with_every_file_and_fetch_lz4_compressed() {
    // LZ4 on every path: spilled files, and Flight reads on loopback too.
    // A batch decoded from LZ4 is as large as the batch that was written
    // (not cut by accident as an uncompressed one once was), and the merge
    // of four inputs must still fit 16 MiB.
    let ctx = context_with(EmbeddedClusterConfig {
        memory_per_executor: 16 << 20,
        slots_per_executor: 1,
        shuffle_compression: WireCompression::Lz4,
        ..super::small_cluster()
    })
    .await;
    sorts_lineitem_as_datafusion_does(&ctx, "sort past the memory budget, LZ4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_cannot_fit_fails_as_resources_exhausted_and_the_executors_live_on() {
    // A hash join's build side cannot spill: 1 MiB cannot hold it.
    let ctx = context_with_memory(1 << 20, 2).await;
    let error = run_script(
        &ctx,
        "SELECT count(*) FROM lineitem a JOIN orders o ON a.l_orderkey = o.o_orderkey \
         WHERE a.l_comment <> o.o_comment",
    )
    .await
    .expect_err("the join cannot fit in 1 MiB");
    match find_client_error(&error) {
        Some(ClientError::JobFailed { kind, message, .. }) => {
            assert_eq!(*kind, v1::ErrorKind::ResourcesExhausted, "{message}");
            assert!(
                message.contains("HashJoin"),
                "the operator is named: {message}"
            );
        }
        other => panic!("expected a typed job failure, got {other:?}"),
    }
    let executors = ctx.scheduler().executors().await.expect("cluster info");
    assert_eq!(executors.len(), 2, "no executor went down");
    let small = run_script(&ctx, "SELECT count(*) FROM nation")
        .await
        .expect("still serving");
    assert_eq!(small[0].num_rows(), 1);
}
