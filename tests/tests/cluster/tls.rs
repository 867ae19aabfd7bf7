//! An embedded cluster with TLS on every connection: the client to the
//! scheduler, executors to the scheduler, and every shuffle and result fetch.

use datafusion::arrow::record_batch::RecordBatch;
use volley_client::{Context, EmbeddedClusterConfig};
use volley_tests::{assert_same_rows, local_tpch_context, run_script, tpch_dir};

const REVENUE_BY_NATION: &str = "SELECT n_name, sum(o_totalprice) AS revenue, count(*) AS n \
     FROM orders JOIN customer ON o_custkey = c_custkey JOIN nation ON c_nationkey = n_nationkey \
     GROUP BY n_name";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_everywhere_answers_as_single_node_datafusion() {
    let ctx = Context::embedded_with(EmbeddedClusterConfig {
        tls: true,
        ..super::small_cluster()
    })
    .await
    .expect("start a TLS cluster");
    let url = ctx.embedded_cluster().expect("embedded").scheduler_url();
    assert!(url.starts_with("https://"), "{url}");
    volley_client::tpch::register_tpch(&ctx, tpch_dir())
        .await
        .expect("register TPC-H");
    let actual = run_script(&ctx, REVENUE_BY_NATION).await.expect("query");
    let job = ctx.last_job().expect("ran as a job");
    assert!(job.stages_total >= 3, "shuffled between executors: {job:?}");
    let local = local_tpch_context().await.expect("local");
    let expected = run_script(&local, REVENUE_BY_NATION)
        .await
        .expect("local query");
    assert_same_rows(&expected, &actual, false, "revenue by nation over TLS");
    assert_eq!(actual.iter().map(RecordBatch::num_rows).sum::<usize>(), 25);
}
