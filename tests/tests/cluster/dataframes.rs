//! The Rust DataFrame API on the cluster: DataFusion's own DataFrame
//! methods, executed by Volley, give single-node DataFusion's answers; and a
//! DataFrame can run as a detached job.

use std::time::Duration;

use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::{avg, count, sum};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{ExprFunctionExt, col, lit};
use datafusion::prelude::{DataFrame, JoinType, SessionContext};
use volley_client::{ClientError, v1};
use volley_tests::{assert_same_rows, local_tpch_context};

use super::tpch_context;

/// The pipelines, each built the same way on any session.
async fn pipelines(ctx: &SessionContext) -> Result<Vec<(&'static str, DataFrame, bool)>> {
    let lineitem = ctx.table("lineitem").await?;
    let orders = ctx.table("orders").await?;
    let nation = ctx.table("nation").await?;
    Ok(vec![
        (
            "filter + aggregate",
            lineitem
                .clone()
                .filter(col("l_quantity").gt(lit(30)))?
                .aggregate(
                    vec![col("l_returnflag")],
                    vec![count(lit(1)).alias("n"), avg(col("l_discount")).alias("d")],
                )?,
            false,
        ),
        (
            "join + aggregate + sort + limit",
            orders
                .clone()
                .join(
                    lineitem.clone(),
                    JoinType::Inner,
                    &["o_orderkey"],
                    &["l_orderkey"],
                    None,
                )?
                .aggregate(
                    vec![col("o_orderpriority")],
                    vec![sum(col("l_extendedprice")).alias("revenue")],
                )?
                .sort(vec![col("revenue").sort(false, true)])?
                .limit(0, Some(3))?,
            true,
        ),
        (
            "window",
            nation.clone().select(vec![
                col("n_name"),
                col("n_regionkey"),
                row_number()
                    .partition_by(vec![col("n_regionkey")])
                    .order_by(vec![col("n_name").sort(true, true)])
                    .build()?
                    .alias("rank_in_region"),
            ])?,
            false,
        ),
        (
            "union + distinct",
            nation
                .clone()
                .select(vec![col("n_regionkey")])?
                .union(
                    orders
                        .clone()
                        .select(vec![(col("o_custkey") % lit(5)).alias("n_regionkey")])?,
                )?
                .distinct()?,
            false,
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataframe_pipelines_on_the_cluster_match_a_local_session() {
    let cluster = tpch_context().await;
    let local = local_tpch_context().await.unwrap();
    let remote = pipelines(cluster.session()).await.unwrap();
    let expected = pipelines(&local).await.unwrap();
    for ((name, df, ordered), (_, local_df, _)) in remote.into_iter().zip(expected) {
        let actual = df
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{name} on Volley: {e}"));
        let expected = local_df.collect().await.unwrap();
        assert_same_rows(&expected, &actual, ordered, name);
        let job = cluster.last_job().expect("ran as a job");
        assert!(job.stages_total >= 1, "{name} did not run on the cluster");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataframe_runs_as_a_detached_job_that_volley_jobs_lists() {
    let ctx = tpch_context().await;
    let df = ctx
        .table("lineitem")
        .await
        .unwrap()
        .aggregate(vec![col("l_linestatus")], vec![count(lit(1))])
        .unwrap();
    let handle = ctx.submit(df, "nightly").await.unwrap();
    let status = handle.wait().await.unwrap();
    assert_eq!(status.state, v1::JobState::Succeeded as i32);
    assert!(status.stages_total >= 2);
    let jobs = ctx.scheduler().list_jobs().await.unwrap();
    assert!(
        jobs.iter()
            .any(|j| j.job_id == handle.id().as_str() && j.name == "nightly")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_dataframe_job_can_be_cancelled() {
    let ctx = tpch_context().await;
    let a = ctx.table("lineitem").await.unwrap();
    let b = ctx
        .table("lineitem")
        .await
        .unwrap()
        .select(vec![col("l_linestatus").alias("s")])
        .unwrap();
    // A join of hundreds of billions of rows: it runs until cancelled.
    let endless = a
        .join(b, JoinType::Inner, &["l_linestatus"], &["s"], None)
        .unwrap()
        .aggregate(vec![], vec![count(lit(1))])
        .unwrap();
    let handle = ctx.submit(endless, "endless").await.unwrap();
    // Cancelled once it runs, however long it takes to start.
    while handle.status().await.unwrap().tasks_running == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(handle.cancel().await.unwrap());
    match handle.wait().await {
        Err(ClientError::JobFailed { kind, .. }) => assert_eq!(kind, v1::ErrorKind::Cancelled),
        other => panic!("expected a cancelled job, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_parquet_is_done_by_the_executors_one_file_per_partition() {
    let ctx = tpch_context().await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("orders-third");
    let df = ctx
        .table("orders")
        .await
        .unwrap()
        .filter((col("o_orderkey") % lit(3)).eq(lit(0)))
        .unwrap();
    let answer = df
        .write_parquet(
            &format!("{}/", target.display()),
            datafusion::dataframe::DataFrameWriteOptions::new(),
            None,
        )
        .await
        .unwrap();
    // The client got a count, not the rows; the executors wrote the files.
    let job = ctx.last_job().expect("ran as a job");
    assert!(
        job.stages.iter().any(|s| s.plan.contains("FileOutputExec")),
        "{job:?}"
    );
    assert!(
        job.output_files.len() >= 2,
        "one file per partition: {:?}",
        job.output_files
    );
    let files = std::fs::read_dir(&target).unwrap().count();
    assert_eq!(files, job.output_files.len());

    let local = local_tpch_context().await.unwrap();
    let expected = local
        .sql("SELECT count(*) FROM orders WHERE o_orderkey % 3 = 0")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let count = |batches: &[datafusion::arrow::record_batch::RecordBatch]| {
        datafusion::arrow::util::display::array_value_to_string(batches[0].column(0), 0).unwrap()
    };
    assert_eq!(count(&answer), count(&expected));
    let read_back = SessionContext::new()
        .read_parquet(target.to_str().unwrap(), Default::default())
        .await
        .unwrap()
        .count()
        .await
        .unwrap();
    assert_eq!(read_back.to_string(), count(&expected));
}
