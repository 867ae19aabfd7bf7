//! Integration tests on in-process clusters: the real scheduler and
//! executors, over real gRPC and Flight on 127.0.0.1 with random ports.

mod bad_input;
mod dataframes;
mod distribution;
mod explain;
mod functions;
mod memory;
mod runtime_filters;
mod startup;
mod streaming;
mod tables;
mod tls;
mod tpch;

use volley_client::{Context, EmbeddedClusterConfig};

/// Two executors of two slots each; four partitions per stage.
fn small_cluster() -> EmbeddedClusterConfig {
    EmbeddedClusterConfig {
        slots_per_executor: 2,
        target_partitions: Some(4),
        memory_per_executor: 1 << 30,
        allowed_paths: volley_tests::test_paths(),
        ..EmbeddedClusterConfig::with_executors(2)
    }
}

/// A context on a fresh small cluster with the TPC-H test tables registered.
async fn tpch_context() -> Context {
    let ctx = Context::embedded_with(small_cluster())
        .await
        .expect("start embedded cluster");
    volley_client::tpch::register_tpch(&ctx, volley_tests::tpch_dir())
        .await
        .expect("register TPC-H tables");
    ctx
}
