//! Tables registered in the client read on the executors exactly the
//! files single-node DataFusion would read.

use volley_client::Context;
use volley_tests::run_script;

use super::small_cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_location_reads_only_the_matching_files_on_the_cluster() {
    // CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/dir/*.key': the glob
    // was lost on the way to the cluster, which read every file.
    let dir = tempfile::tempdir().expect("scratch dir");
    std::fs::write(dir.path().join("match.key"), "a\n1\n").expect("write");
    std::fs::write(dir.path().join("other.txt"), "a\n2\n").expect("write");
    let ctx = Context::embedded_with(small_cluster())
        .await
        .expect("start embedded cluster");
    let script = format!(
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{}/*.key' \
         OPTIONS ('format.has_header' 'true');
         SELECT sum(a) AS s, count(*) AS n FROM t;",
        dir.path().display()
    );
    let batches = run_script(&ctx, &script).await.expect("the query runs");
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    assert!(text.contains("| 1 | 1 |"), "{text}");
}
