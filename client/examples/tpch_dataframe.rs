//! TPC-H query 3 written with DataFusion's DataFrame API, run on an embedded
//! Volley cluster, then the same DataFrame run as a detached job.
//!
//! ```sh
//! cargo run --release -p volley-client --example tpch_dataframe
//! ```
//! (`VOLLEY_SCHEDULER=http://host:port` runs it on a real cluster instead.)

use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::JoinType;
use datafusion::scalar::ScalarValue;
use volley_client::Context;
use volley_client::tpch::{default_tpch_dir, generate_tpch, register_tpch};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = match std::env::var("VOLLEY_SCHEDULER") {
        Ok(url) => Context::remote(&url).await?,
        Err(_) => Context::embedded(2).await?,
    };
    let dir = default_tpch_dir(0.01);
    generate_tpch(0.01, &dir, 4)?;
    register_tpch(&ctx, &dir).await?;

    let date = |d: &str| lit(ScalarValue::Date32(Some(days_since_epoch(d))));
    let customer = ctx
        .table("customer")
        .await?
        .filter(col("c_mktsegment").eq(lit("BUILDING")))?;
    let orders = ctx
        .table("orders")
        .await?
        .filter(col("o_orderdate").lt(date("1995-03-15")))?;
    let lineitem = ctx
        .table("lineitem")
        .await?
        .filter(col("l_shipdate").gt(date("1995-03-15")))?;
    let q3 = customer
        .join(
            orders,
            JoinType::Inner,
            &["c_custkey"],
            &["o_custkey"],
            None,
        )?
        .join(
            lineitem,
            JoinType::Inner,
            &["o_orderkey"],
            &["l_orderkey"],
            None,
        )?
        .aggregate(
            vec![col("l_orderkey"), col("o_orderdate"), col("o_shippriority")],
            vec![sum(col("l_extendedprice") * (lit(1) - col("l_discount"))).alias("revenue")],
        )?
        .sort(vec![
            col("revenue").sort(false, true),
            col("o_orderdate").sort(true, true),
        ])?
        .limit(0, Some(10))?;

    // Runs on the cluster; rows stream back from the executors.
    q3.clone().show().await?;
    if let Some(job) = ctx.last_job() {
        println!("job {} ran {} stages", job.job_id, job.stages_total);
    }

    // The same DataFrame as a detached job.
    let handle = ctx.submit(q3, "q3-detached").await?;
    let status = handle.wait().await?;
    println!(
        "detached job {} ended: {} stages, {} rows",
        handle.id(),
        status.stages_total,
        status.rows_out
    );
    Ok(())
}

/// Days from 1970-01-01 to an ISO date.
fn days_since_epoch(iso: &str) -> i32 {
    let date = chrono::NaiveDate::parse_from_str(iso, "%Y-%m-%d").expect("ISO date");
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    (date - epoch).num_days() as i32
}
