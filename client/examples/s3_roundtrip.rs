//! A round trip through S3-compatible storage: read Parquet from a bucket,
//! aggregate it on a Volley cluster, write the result back to the bucket as
//! Parquet (the executors upload one file per partition; the client never
//! sees the rows), then read it back.
//!
//! ```sh
//! export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_REGION=us-east-1
//! # for a local S3-compatible server:
//! export AWS_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ALLOW_HTTP=true
//! cargo run -p volley-client --example s3_roundtrip -- \
//!     s3://bucket/tpch/lineitem/ s3://bucket/summary/
//! ```
//! Every node reads the same `AWS_*` variables, so start the scheduler and
//! executors with them too. `VOLLEY_SCHEDULER=http://host:port` runs it on
//! that cluster; without it, on an embedded one.

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::ParquetReadOptions;
use volley_client::Context;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: s3_roundtrip s3://bucket/input/ s3://bucket/output/");
        std::process::exit(2);
    };
    let ctx = match std::env::var("VOLLEY_SCHEDULER") {
        Ok(url) => Context::remote(&url).await?,
        Err(_) => Context::embedded(2).await?,
    };

    ctx.register_parquet("lineitem", input, ParquetReadOptions::default())
        .await?;
    let summary = ctx.table("lineitem").await?.aggregate(
        vec![col("l_returnflag"), col("l_linestatus")],
        vec![
            count(lit(1)).alias("n"),
            sum(col("l_quantity")).alias("quantity"),
        ],
    )?;
    let written = summary
        .write_parquet(output, DataFrameWriteOptions::new(), None)
        .await?;
    println!("written: {}", pretty_format_batches(&written)?);
    if let Some(job) = ctx.last_job() {
        for file in &job.output_files {
            println!("file: {file}");
        }
    }

    let back = ctx
        .read_parquet(output, ParquetReadOptions::default())
        .await?
        .sort(vec![
            col("l_returnflag").sort(true, true),
            col("l_linestatus").sort(true, true),
        ])?
        .collect()
        .await?;
    println!("{}", pretty_format_batches(&back)?);
    Ok(())
}
