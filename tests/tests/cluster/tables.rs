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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursive_query_over_a_cluster_table_matches_datafusion() {
    // WITH RECURSIVE was refused: its terms share the work table in
    // memory. It now runs whole in one task, reading a TPC-H table the
    // executors scan like any other.
    let sql = "WITH RECURSIVE chain(k, depth) AS ( \
                 SELECT n_nationkey, 0 FROM nation WHERE n_nationkey < 3 \
                 UNION ALL \
                 SELECT n.n_nationkey, c.depth + 1 FROM chain c \
                 JOIN nation n ON n.n_nationkey = c.k + 5 WHERE c.depth < 4) \
               SELECT k, depth FROM chain ORDER BY depth, k";
    let ctx = super::tpch_context().await;
    let actual = run_script(&ctx, sql)
        .await
        .expect("the recursive query runs");
    let local = volley_tests::local_tpch_context()
        .await
        .expect("local context");
    let expected = run_script(&local, sql).await.expect("DataFusion runs it");
    assert!(
        expected.iter().map(|b| b.num_rows()).sum::<usize>() > 3,
        "precondition: the recursion goes deeper than its start"
    );
    volley_tests::assert_same_rows(&expected, &actual, true, "recursive chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_the_rows_of_a_table_function_reads_them_all() {
    // SELECT count(*) FROM generate_series(1, 10) once failed with "number
    // of columns(1) must match number of fields(0)": the client reads the
    // function into a table, and the count projects none of its columns.
    let ctx = Context::embedded_with(small_cluster())
        .await
        .expect("start embedded cluster");
    for (sql, expected) in [
        ("SELECT count(*) AS n FROM generate_series(1, 10)", "| 10 |"),
        (
            "SELECT count(*) AS n FROM generate_series(1, 10) WHERE value > 3",
            "| 7 |",
        ),
    ] {
        let batches = run_script(&ctx, sql).await.expect("the count runs");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string();
        assert!(text.contains(expected), "{sql}: {text}");
    }
}
