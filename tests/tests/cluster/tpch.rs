//! All 22 TPC-H queries at SF 0.1: the distributed result equals single-node
//! DataFusion's on the same data.

use volley_tests::{assert_same_rows, is_ordered, local_tpch_context, run_script, tpch_query};

use super::tpch_context;

async fn check_query(n: usize) {
    let sql = tpch_query(n);
    let expected = run_script(&local_tpch_context().await.expect("local context"), &sql)
        .await
        .unwrap_or_else(|e| panic!("q{n} on single-node DataFusion: {e}"));
    let ctx = tpch_context().await;
    let actual = run_script(&ctx, &sql)
        .await
        .unwrap_or_else(|e| panic!("q{n} on Volley: {e}"));
    assert_same_rows(&expected, &actual, is_ordered(&sql), &format!("TPC-H q{n}"));
    let job = ctx.last_job().expect("the query ran as a job");
    assert!(job.stages_total >= 1, "q{n} ran no stage");
}

macro_rules! tpch_tests {
    ($($name:ident => $n:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                check_query($n).await;
            }
        )*
    };
}

tpch_tests! {
    tpch_q01_matches_single_node_datafusion => 1,
    tpch_q02_matches_single_node_datafusion => 2,
    tpch_q03_matches_single_node_datafusion => 3,
    tpch_q04_matches_single_node_datafusion => 4,
    tpch_q05_matches_single_node_datafusion => 5,
    tpch_q06_matches_single_node_datafusion => 6,
    tpch_q07_matches_single_node_datafusion => 7,
    tpch_q08_matches_single_node_datafusion => 8,
    tpch_q09_matches_single_node_datafusion => 9,
    tpch_q10_matches_single_node_datafusion => 10,
    tpch_q11_matches_single_node_datafusion => 11,
    tpch_q12_matches_single_node_datafusion => 12,
    tpch_q13_matches_single_node_datafusion => 13,
    tpch_q14_matches_single_node_datafusion => 14,
    tpch_q15_matches_single_node_datafusion => 15,
    tpch_q16_matches_single_node_datafusion => 16,
    tpch_q17_matches_single_node_datafusion => 17,
    tpch_q18_matches_single_node_datafusion => 18,
    tpch_q19_matches_single_node_datafusion => 19,
    tpch_q20_matches_single_node_datafusion => 20,
    tpch_q21_matches_single_node_datafusion => 21,
    tpch_q22_matches_single_node_datafusion => 22,
}
