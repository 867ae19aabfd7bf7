//! Multi-process tests of the real binaries: `volley-scheduler` and two
//! `volley-executor` processes on random loopback ports, queried through
//! `volley sql --scheduler`.
//!
//! The binaries are those `cargo test --workspace` builds next to this test
//! (each binary crate has an integration test, so cargo builds them).

use std::path::Path;

use datafusion::arrow::csv::WriterBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use volley_tests::processes::{start_cluster, volley, volley_tpch_csv};
use volley_tests::tpch_query;

async fn expected_csv(data_dir: &Path, sql: &str) -> String {
    let ctx = SessionContext::new();
    let tpch = data_dir.join("tpch").join("sf0.01");
    for table in volley_client::tpch::TPCH_TABLES {
        ctx.register_parquet(
            table,
            tpch.join(table).to_str().expect("utf-8"),
            ParquetReadOptions::default(),
        )
        .await
        .expect("register");
    }
    let batches = volley_tests::run_script(&ctx, sql)
        .await
        .expect("local query");
    let mut out = Vec::new();
    {
        let mut writer = WriterBuilder::new().with_header(true).build(&mut out);
        for batch in &batches {
            writer.write(batch).expect("csv");
        }
    }
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_queries_through_the_real_binaries_match_single_node_datafusion() {
    let cluster = start_cluster();
    let data_dir = tempfile::tempdir().expect("data dir");
    // q1 and q6 have exact (decimal) answers and q1 is ordered, so the CSV
    // text must match byte for byte.
    for n in [1, 6] {
        let sql = tpch_query(n);
        let output = volley_tpch_csv(&cluster.url, data_dir.path(), &[], &sql);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "q{n} failed: {stderr}");
        let actual = String::from_utf8(output.stdout).expect("utf-8");
        assert_eq!(actual, expected_csv(data_dir.path(), &sql).await, "q{n}");
    }
    // A multi-stage join query too, compared as sorted lines.
    let sql = tpch_query(5);
    let output = volley_tpch_csv(&cluster.url, data_dir.path(), &[], &sql);
    assert!(
        output.status.success(),
        "q5 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut actual: Vec<String> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(String::from)
        .collect();
    let mut expected: Vec<String> = expected_csv(data_dir.path(), &sql)
        .await
        .lines()
        .map(String::from)
        .collect();
    actual.sort();
    expected.sort();
    assert_eq!(actual, expected, "q5");
}

#[test]
fn a_failing_query_exits_1_with_a_one_line_error_and_the_cluster_keeps_serving() {
    let cluster = start_cluster();
    let data_dir = tempfile::tempdir().expect("data dir");
    let output = volley(
        &[
            "sql",
            "--scheduler",
            &cluster.url,
            "-c",
            "SELECT * FROM nowhere",
        ],
        data_dir.path(),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    assert!(error_lines[0].contains("nowhere"), "{stderr}");
    let output = volley(
        &[
            "sql",
            "--scheduler",
            &cluster.url,
            "--format",
            "csv",
            "-c",
            "SELECT 40 + 2 AS answer",
        ],
        data_dir.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "answer\n42\n");
}

#[test]
fn an_unreachable_scheduler_exits_3_naming_its_url() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let output = volley(
        &[
            "sql",
            "--scheduler",
            "https://127.0.0.1:1",
            "-c",
            "SELECT 1",
        ],
        data_dir.path(),
    );
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("https://127.0.0.1:1"), "{stderr}");
}

#[test]
fn bad_usage_exits_2() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let output = volley(&["sql", "--format", "yaml"], data_dir.path());
    assert_eq!(output.status.code(), Some(2));
}
