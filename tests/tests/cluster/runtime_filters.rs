//! Runtime filters across stages: a selective join's build keys prune the
//! scan of its probe side, in the join's stage (a broadcast join) or in
//! another one (a partitioned join), and the answer stays DataFusion's.

use datafusion::arrow::array::Int64Array;
use volley_client::{Context, v1};
use volley_tests::{assert_same_rows, local_tpch_context};

use super::tpch_context;

/// Rows in the TPC-H test data's `table`.
async fn rows_of(ctx: &Context, table: &str) -> u64 {
    let batches = ctx
        .sql(&format!("SELECT count(*) FROM {table}"))
        .await
        .expect("plan")
        .collect()
        .await
        .expect("count");
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("a count")
        .value(0) as u64
}

/// What the stage scanning lineitem did: rows out of its scan, rows out of
/// the operator right above the scan (the runtime filter, when there is
/// one), and its status.
struct Scanned {
    scan: u64,
    above_scan: u64,
    stage: v1::StageStatus,
}

/// Runs `sql` on the cluster, checks its answer against single-node
/// DataFusion's, and returns what the stage scanning lineitem did.
async fn run(ctx: &Context, sql: &str) -> Scanned {
    let batches = ctx
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let local = local_tpch_context().await.expect("local context");
    let expected = local
        .sql(sql)
        .await
        .expect("plan locally")
        .collect()
        .await
        .expect("run locally");
    assert_same_rows(&expected, &batches, false, sql);
    let job = ctx.last_job().expect("ran as a job");
    let stage = job
        .stages
        .iter()
        .find(|s| s.plan.contains("lineitem") && s.plan.contains("DataSourceExec"))
        .expect("a stage scans lineitem")
        .clone();
    let operators = &stage.operators;
    let at = operators
        .iter()
        .position(|o| o.name == "DataSourceExec")
        .expect("the scan's metrics");
    let depth = operators[at].depth;
    let parent = operators[..at]
        .iter()
        .rev()
        .find(|o| o.depth + 1 == depth)
        .expect("the scan's parent");
    Scanned {
        scan: operators[at].output_rows,
        above_scan: parent.output_rows,
        stage,
    }
}

async fn set(ctx: &Context, setting: &str) {
    ctx.sql(&format!("SET {setting}")).await.expect(setting);
}

/// Every join partitioned: no build side is small enough to broadcast.
async fn no_broadcast_joins(ctx: &Context) {
    set(
        ctx,
        "datafusion.optimizer.hash_join_single_partition_threshold = 0",
    )
    .await;
    set(
        ctx,
        "datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_joins_build_keys_prune_the_probe_scan_in_the_stage_below() {
    let ctx = tpch_context().await;
    let all = rows_of(&ctx, "lineitem").await;
    // No broadcast: the orders side and the lineitem side are both
    // shuffled, lineitem's scan in a stage of its own.
    no_broadcast_joins(&ctx).await;
    // Orders of the first order keys (in a form DataFusion does not carry
    // over to lineitem's key itself) and a few dates: lineitem's files
    // hold order key ranges, so the bounds prune most of them unread, and
    // the Bloom filter drops most rows of the rest.
    let sql = "SELECT count(*) AS n, sum(l_quantity) AS quantity FROM orders JOIN lineitem \
               ON o_orderkey = l_orderkey \
               WHERE o_orderkey / 1000 < 20 AND o_orderdate < DATE '1994-01-01'";
    let filtered = run(&ctx, sql).await;
    assert_eq!(filtered.stage.runtime_filters, 1, "{:?}", filtered.stage);
    assert!(
        !filtered.stage.plan.contains("JoinExec"),
        "the scan's own stage"
    );
    assert!(
        filtered.scan * 3 < all,
        "the scan read {} of {all} rows",
        filtered.scan
    );
    assert!(
        filtered.above_scan * 20 < all,
        "{} rows passed the filter",
        filtered.above_scan
    );
    set(&ctx, "volley.runtime_filters = false").await;
    let unfiltered = run(&ctx, sql).await;
    assert_eq!(unfiltered.stage.runtime_filters, 0);
    assert_eq!(
        unfiltered.scan, all,
        "without the filter the scan reads everything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_joins_build_keys_filter_the_probe_scan_beside_it() {
    let ctx = tpch_context().await;
    let all = rows_of(&ctx, "lineitem").await;
    let sql = "SELECT count(*) AS n, sum(l_extendedprice) AS price FROM part JOIN lineitem \
               ON p_partkey = l_partkey WHERE p_brand = 'Brand#42' AND p_container = 'LG BAG'";
    let filtered = run(&ctx, sql).await;
    assert_eq!(filtered.stage.runtime_filters, 1, "{:?}", filtered.stage);
    assert!(
        filtered.stage.plan.contains("HashJoinExec"),
        "the join's own stage"
    );
    // Part keys are spread over every file: nothing is pruned, but the
    // filter right above the scan lets few rows through to the join.
    assert!(
        filtered.above_scan * 10 < all,
        "{} of {all} rows passed the filter",
        filtered.above_scan
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anti_join_that_returns_unmatched_probe_rows_gets_no_filter() {
    let ctx = tpch_context().await;
    let all = rows_of(&ctx, "lineitem").await;
    // Lineitem rows of no selected part: filtering the probe side by the
    // build keys would drop exactly the answer.
    let sql = "SELECT count(*) AS n FROM lineitem WHERE l_partkey NOT IN \
               (SELECT p_partkey FROM part WHERE p_brand = 'Brand#42')";
    let scanned = run(&ctx, sql).await;
    assert_eq!(scanned.stage.runtime_filters, 0, "{:?}", scanned.stage);
    assert_eq!(scanned.scan, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_keys_written_by_a_stage_that_reads_other_stages_filter_tpch_q21s_lineitem_scan() {
    let ctx = tpch_context().await;
    let all = rows_of(&ctx, "lineitem").await;
    let sql = volley_tests::tpch_query(21);
    let batches = volley_tests::run_script(&ctx, &sql).await.expect("q21");
    let local = local_tpch_context().await.expect("local context");
    let expected = volley_tests::run_script(&local, &sql)
        .await
        .expect("q21 locally");
    assert_same_rows(&expected, &batches, true, "q21");
    let job = ctx.last_job().expect("ran as a job");
    let filtered = job
        .stages
        .iter()
        .find(|s| !s.filtered_by.is_empty() && !s.plan.contains("JoinExec"))
        .expect("a scan stage filtered by a join stage's keys");
    assert_eq!(filtered.runtime_filters, 1, "{filtered:?}");
    assert!(
        filtered.rows_out * 2 < all,
        "{} of {all} lineitem rows shuffled",
        filtered.rows_out
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semi_joins_keys_filter_a_scan_below_an_inner_join_in_another_stage_in_tpch_q18() {
    let ctx = tpch_context().await;
    // Broadcast joins: the semi join's keys are read from the stage that
    // computes them.
    q18_ships_few_orders(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_semi_joins_having_keys_get_a_stage_of_their_own_and_filter_tpch_q18s_scans()
{
    let ctx = tpch_context().await;
    // Partitioned joins, as at SF 10 and above: the HAVING result would be
    // computed in the join's own stage, after the scans it could filter
    // had run; cut into a stage of its own, its keys filter them first.
    no_broadcast_joins(&ctx).await;
    let job = q18_ships_few_orders(&ctx).await;
    assert!(
        job.stages
            .iter()
            .any(|s| s.plan.starts_with("ShuffleWriterExec")
                && s.plan.contains("FilterExec")
                && s.plan.contains("AggregateExec")
                && !s.plan.contains("JoinExec")),
        "the HAVING result is a stage: {:#?}",
        job.stages
    );
    // Lineitem's scan is filtered in turn, by the few orders.
    let lineitem = job
        .stages
        .iter()
        .find(|s| {
            s.plan.contains("lineitem")
                && !s.plan.contains("AggregateExec")
                && !s.plan.contains("JoinExec")
        })
        .unwrap_or_else(|| panic!("a stage scans lineitem alone: {:#?}", job.stages));
    assert_eq!(lineitem.runtime_filters, 1, "{lineitem:?}");
    assert!(
        lineitem.rows_out * 100 < rows_of(&ctx, "lineitem").await,
        "{} lineitem rows shipped",
        lineitem.rows_out
    );
}

/// Runs TPC-H q18 (with a quantity the small test data has orders above)
/// and checks the answer against DataFusion's and that the stage scanning
/// orders ships few of them: the semi join's keys, traced through the
/// inner joins below it, filtered its scan. Returns the job.
async fn q18_ships_few_orders(ctx: &Context) -> v1::JobStatus {
    let orders = rows_of(ctx, "orders").await;
    // The test data is small: the quantity is lower than q18's 313, so
    // that some orders qualify.
    let sql = volley_tests::tpch_query(18).replace("> 313", "> 250");
    assert_ne!(sql, volley_tests::tpch_query(18), "q18's threshold moved");
    let batches = volley_tests::run_script(ctx, &sql).await.expect("q18");
    let local = local_tpch_context().await.expect("local context");
    let expected = volley_tests::run_script(&local, &sql)
        .await
        .expect("q18 locally");
    assert!(
        !expected.is_empty() && expected[0].num_rows() > 0,
        "q18 has rows"
    );
    assert_same_rows(&expected, &batches, true, "q18");
    let job = ctx.last_job().expect("ran as a job");
    let filtered = job
        .stages
        .iter()
        .find(|s| !s.filtered_by.is_empty() && s.plan.contains("orders"))
        .unwrap_or_else(|| panic!("a stage scanning orders is filtered: {:#?}", job.stages));
    assert_eq!(filtered.runtime_filters, 1, "{filtered:?}");
    assert!(
        filtered.rows_out * 100 < orders,
        "{} of {orders} orders shipped",
        filtered.rows_out
    );
    job
}
