//! What a client's plan carries beyond files: user functions (their code on
//! the executors, their types planned by the client) and in-memory tables.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use volley_client::{ClientError, Context, EmbeddedClusterConfig, find_client_error, v1};
use volley_tests::{assert_same_rows, local_tpch_context, run_script, tpch_dir, udfs};

use super::small_cluster;

async fn cluster_with(udfs: volley_client::UdfRegistry) -> Context {
    let ctx = Context::embedded_with(EmbeddedClusterConfig {
        udfs,
        ..small_cluster()
    })
    .await
    .expect("start embedded cluster");
    volley_client::tpch::register_tpch(&ctx, tpch_dir())
        .await
        .expect("register TPC-H tables");
    ctx
}

const MASKED_PHONES: &str = "SELECT volley_mask(c_phone) AS masked, count(*) AS n \
     FROM customer JOIN nation ON c_nationkey = n_nationkey \
     WHERE volley_mask(c_phone) LIKE '##-###%' GROUP BY volley_mask(c_phone)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_function_runs_on_executors_built_with_it() {
    let ctx = cluster_with(udfs::registry()).await;
    let actual = run_script(&ctx, MASKED_PHONES).await.unwrap();
    let job = ctx.last_job().expect("ran as a job");
    assert!(job.stages_total >= 2, "planned across stages: {job:?}");

    let local = local_tpch_context().await.unwrap();
    local.register_udf(udfs::mask());
    let expected = run_script(&local, MASKED_PHONES).await.unwrap();
    assert_same_rows(&expected, &actual, false, "volley_mask");
    assert!(actual.iter().map(RecordBatch::num_rows).sum::<usize>() > 0);
}

const SPREAD_BY_STATUS: &str = "SELECT o_orderstatus, volley_spread(o_totalprice) AS spread, \
     volley_spread(DISTINCT o_totalprice) AS distinct_spread, count(*) AS n \
     FROM orders GROUP BY o_orderstatus";

const RUNNING_COUNTS: &str = "SELECT o_custkey, o_orderkey, \
     volley_running_count(CASE WHEN o_orderpriority = '1-URGENT' THEN o_comment END) \
     OVER (PARTITION BY o_custkey ORDER BY o_orderkey) AS urgent_so_far \
     FROM orders WHERE o_custkey < 300";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_aggregate_and_window_functions_run_on_executors_built_with_them() {
    let ctx = cluster_with(udfs::registry()).await;
    let local = local_tpch_context().await.unwrap();
    local.register_udaf(udfs::spread());
    local.register_udwf(udfs::running_count());
    for (name, sql) in [
        ("spread by status", SPREAD_BY_STATUS),
        ("running counts", RUNNING_COUNTS),
    ] {
        let actual = run_script(&ctx, sql).await.unwrap();
        let job = ctx.last_job().expect("ran as a job");
        assert!(
            job.stages_total >= 2,
            "{name} planned across stages: {job:?}"
        );
        let expected = run_script(&local, sql).await.unwrap();
        assert_same_rows(&expected, &actual, false, name);
        assert!(actual.iter().map(RecordBatch::num_rows).sum::<usize>() > 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_or_window_function_the_executors_lack_is_a_clear_user_error() {
    let ctx = cluster_with(volley_client::UdfRegistry::new()).await;
    ctx.register_udaf(udfs::spread());
    ctx.register_udwf(udfs::running_count());
    for (name, sql) in [
        ("volley_spread", SPREAD_BY_STATUS),
        ("volley_running_count", RUNNING_COUNTS),
    ] {
        let err = run_script(&ctx, sql).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(name) && message.contains("not registered on this executor"),
            "{message}"
        );
        match find_client_error(&err) {
            Some(ClientError::JobFailed { kind, .. }) => assert_eq!(*kind, v1::ErrorKind::User),
            other => panic!("expected a failed job, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_the_executors_lack_is_a_clear_user_error_and_the_next_query_runs() {
    // The client knows the function; the cluster's executors do not.
    let ctx = cluster_with(volley_client::UdfRegistry::new()).await;
    ctx.register_udf(udfs::mask());
    let err = run_script(&ctx, MASKED_PHONES).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("volley_mask") && message.contains("not registered on this executor"),
        "{message}"
    );
    match find_client_error(&err) {
        Some(ClientError::JobFailed { kind, .. }) => assert_eq!(*kind, v1::ErrorKind::User),
        other => panic!("expected a failed job, got {other:?}"),
    }
    let rows = ctx.sql("SELECT count(*) FROM nation").await.unwrap();
    assert_eq!(rows.count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_function_fails_its_query_and_the_executors_live_on() {
    let ctx = cluster_with(udfs::registry()).await;
    let before = ctx.embedded_cluster().expect("embedded").executor_ids();
    let err = run_script(
        &ctx,
        "SELECT sum(volley_panic_at(l_orderkey, 7)) FROM lineitem",
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("panicked"), "{message}");
    assert!(message.contains("volley_panic_at reached 7"), "{message}");
    assert!(
        message.contains("lineitem"),
        "names the input file: {message}"
    );
    let job = ctx.last_job().expect("ran as a job");
    assert_eq!(
        job.recovery.unwrap_or_default().tasks_retried,
        0,
        "a bug is not retried"
    );

    let after = ctx.embedded_cluster().expect("embedded").executor_ids();
    assert_eq!(before, after);
    let info = ctx.scheduler().executors().await.unwrap();
    assert_eq!(info.len(), 2, "both executors still registered: {info:?}");
    let n = run_script(&ctx, "SELECT count(*) FROM lineitem")
        .await
        .unwrap();
    assert_eq!(n[0].num_rows(), 1);
}

fn people() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("nation", DataType::Int64, false),
        Field::new("who", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![0, 1, 1, 7, 24])),
            Arc::new(StringArray::from(vec![
                Some("ana"),
                Some("bo"),
                None,
                Some("cy"),
                Some("di"),
            ])),
        ],
    )
    .expect("a valid batch")
}

const PEOPLE_BY_NATION: &str = "SELECT n_name, count(who) AS named, count(*) AS n \
     FROM people JOIN nation ON nation = n_nationkey GROUP BY n_name";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_table_travels_with_the_plan() {
    let ctx = cluster_with(volley_client::UdfRegistry::new()).await;
    ctx.register_batch("people", people()).unwrap();
    // A table made by the cluster, kept in the client, read by the cluster.
    run_script(&ctx, "CREATE TABLE big_orders AS SELECT o_orderkey, o_custkey FROM orders WHERE o_totalprice > 450000").await.unwrap();
    let actual = run_script(&ctx, PEOPLE_BY_NATION).await.unwrap();
    let big = run_script(
        &ctx,
        "SELECT count(*) AS n, sum(o_custkey) AS s FROM big_orders",
    )
    .await
    .unwrap();
    assert!(ctx.last_job().is_some());

    let local = local_tpch_context().await.unwrap();
    local.register_batch("people", people()).unwrap();
    let expected = run_script(&local, PEOPLE_BY_NATION).await.unwrap();
    assert_same_rows(&expected, &actual, false, "people by nation");
    let expected_big = run_script(
        &local,
        "SELECT count(*) AS n, sum(o_custkey) AS s FROM orders WHERE o_totalprice > 450000",
    )
    .await
    .unwrap();
    assert_same_rows(&expected_big, &big, false, "big orders");
}
