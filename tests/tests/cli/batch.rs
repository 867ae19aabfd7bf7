//! Batch jobs: `volley submit` and `volley jobs` as a CI script uses them.

use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use volley_tests::processes::{start_cluster, volley};
use volley_tests::tpch_dir;

use super::write;

/// Rows in the Parquet files of a directory, read by single-node DataFusion.
async fn parquet_rows(dir: &std::path::Path) -> usize {
    SessionContext::new()
        .read_parquet(
            dir.to_str().expect("utf-8 path"),
            ParquetReadOptions::default(),
        )
        .await
        .expect("a Parquet directory")
        .collect()
        .await
        .expect("readable Parquet")
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

fn aggregate_script() -> String {
    format!(
        "-- revenue by return flag, as of a day\n\
         CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/';\n\
         SELECT l_returnflag, l_linestatus, count(*) AS n\n\
         FROM lineitem WHERE l_shipdate <= ${{day}}\n\
         GROUP BY l_returnflag, l_linestatus;\n",
        tpch_dir().join("lineitem").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_job_outlives_its_submitter_and_its_output_is_readable_parquet() {
    let cluster = start_cluster();
    let data = tempfile::tempdir().unwrap();
    let script = write(data.path(), "daily.sql", &aggregate_script());
    let out = data.path().join("out");
    let submitted = volley(
        &[
            "submit",
            &script,
            "--scheduler",
            &cluster.url,
            "--param-date",
            "day=1998-09-02",
            "--param",
            "unused=1",
            "--output",
            out.to_str().unwrap(),
            "--name",
            "daily",
        ],
        data.path(),
    );
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let stderr = String::from_utf8_lossy(&submitted.stderr);
    assert!(stderr.contains("--param unused is not used"), "{stderr}");
    let job_id = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .to_string();
    assert!(!job_id.is_empty());

    // The submitting process has exited; the job goes on without it.
    let waited = volley(
        &[
            "jobs",
            "wait",
            &job_id,
            "--scheduler",
            &cluster.url,
            "--json",
        ],
        data.path(),
    );
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["name"], "daily");
    for key in [
        "job_id",
        "started_at",
        "ended_at",
        "elapsed_ms",
        "stages",
        "tasks",
        "rows_out",
        "bytes_shuffled",
        "output_files",
        "error",
        "recovery",
    ] {
        assert!(status.get(key).is_some(), "{key} missing from {status}");
    }
    let files = status["output_files"].as_array().unwrap();
    assert!(files.len() >= 2, "one file per partition: {files:?}");

    // Readable Parquet with the rows single-node DataFusion finds.
    let written = parquet_rows(&out).await;
    let expected = volley_tests::local_tpch_context().await.unwrap();
    let expected_rows: usize = volley_tests::run_script(
        &expected,
        "SELECT l_returnflag, l_linestatus FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' GROUP BY 1, 2",
    )
    .await
    .unwrap()
    .iter()
    .map(|b| b.num_rows())
    .sum();
    assert_eq!(written, expected_rows);
    assert_eq!(status["rows_out"], expected_rows);
    // Strings are written as plain Utf8, which every reader sorts and
    // joins, not as the Utf8View DataFusion reads them as.
    let first = std::fs::File::open(out.join("part-00000.parquet")).unwrap();
    let schema = std::sync::Arc::clone(
        ParquetRecordBatchReaderBuilder::try_new(first)
            .unwrap()
            .schema(),
    );
    let flag = schema.field_with_name("l_returnflag").unwrap();
    assert_eq!(flag.data_type(), &DataType::Utf8, "{schema:?}");

    // The job is in the history, and its status can be asked for later.
    let listed = volley(
        &["jobs", "list", "--scheduler", &cluster.url, "--json"],
        data.path(),
    );
    let jobs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["job_id"] == job_id.as_str())
    );
    let later = volley(
        &["jobs", "status", &job_id, "--scheduler", &cluster.url],
        data.path(),
    );
    assert!(String::from_utf8_lossy(&later.stdout).contains("succeeded"));
}

#[test]
fn a_script_failing_half_way_names_its_statement_and_line_and_writes_nothing() {
    let cluster = start_cluster();
    let data = tempfile::tempdir().unwrap();
    let script = format!(
        "{}SELECT no_such_column FROM lineitem;\n",
        aggregate_script()
    );
    let script = write(data.path(), "broken.sql", &script);
    let out = data.path().join("out");
    let output = volley(
        &[
            "submit",
            &script,
            "--scheduler",
            &cluster.url,
            "--param-date",
            "day=1998-09-02",
            "--output",
            out.to_str().unwrap(),
            "--wait",
            "--json",
        ],
        data.path(),
    );
    assert_eq!(output.status.code(), Some(1));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["state"], "failed");
    let message = status["error"]["message"].as_str().unwrap();
    assert!(message.contains("statement 3 (line 6)"), "{message}");
    assert!(message.contains("no_such_column"), "{message}");
    assert_eq!(status["error"]["kind"], "user");
    assert!(!out.exists(), "nothing may appear under --output");
    let leftovers: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("staging"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn an_unknown_job_id_is_a_clear_error() {
    let cluster = start_cluster();
    let data = tempfile::tempdir().unwrap();
    let output = volley(
        &["jobs", "status", "no-such-job", "--scheduler", &cluster.url],
        data.path(),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no job with id no-such-job"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_a_script_is_written_by_the_executors_in_parallel() {
    let cluster = start_cluster();
    let data = tempfile::tempdir().unwrap();
    let target = data.path().join("copied");
    let script = format!(
        "CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION '{}/';\n\
         COPY (SELECT o_orderkey, o_orderpriority FROM orders WHERE o_orderkey % 7 = 0)\n\
           TO '{}/' STORED AS PARQUET;\n",
        tpch_dir().join("orders").display(),
        target.display()
    );
    let script = write(data.path(), "copy.sql", &script);
    let output = volley(
        &[
            "submit",
            &script,
            "--scheduler",
            &cluster.url,
            "--wait",
            "--json",
        ],
        data.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(&target).unwrap().flatten().collect();
    assert!(
        files.len() >= 2,
        "one file per partition, got {}",
        files.len()
    );
    let copied = parquet_rows(&target).await;
    let local = volley_tests::local_tpch_context().await.unwrap();
    let expected = volley_tests::run_script(
        &local,
        "SELECT count(*) AS n FROM orders WHERE o_orderkey % 7 = 0",
    )
    .await
    .unwrap();
    let expected =
        datafusion::arrow::util::display::array_value_to_string(expected[0].column(0), 0).unwrap();
    assert_eq!(copied.to_string(), expected);
}
