//! Multi-process tests of the real binaries: `volley-scheduler` and two
//! `volley-executor` processes on random loopback ports, queried through
//! `volley sql --scheduler`.
//!
//! The binaries are those `cargo test --workspace` builds next to this test
//! (each binary crate has an integration test, so cargo builds them).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::csv::WriterBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use volley_tests::tpch_query;

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

/// A child process killed when the test ends, pass or fail.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a process and returns it with its first stdout line.
fn start(mut command: Command) -> (Process, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read first line");
    assert!(
        !line.is_empty(),
        "{command:?} exited before announcing itself"
    );
    (Process(child), line.trim().to_string())
}

/// The scheduler and two executors, as separate processes.
struct Cluster {
    url: String,
    _processes: Vec<Process>,
    _work_dir: tempfile::TempDir,
}

fn start_cluster() -> Cluster {
    let mut scheduler = Command::new(binary("volley-scheduler"));
    scheduler.args(["--bind", "127.0.0.1:0"]);
    let (scheduler, line) = start(scheduler);
    let addr = line
        .rsplit(' ')
        .next()
        .expect("the scheduler prints its address");
    let url = format!("http://{addr}");
    let work_dir = tempfile::tempdir().expect("work dir");
    let mut processes = vec![scheduler];
    for _ in 0..2 {
        let mut executor = Command::new(binary("volley-executor"));
        executor
            .args([
                "--scheduler",
                &url,
                "--bind",
                "127.0.0.1:0",
                "--slots",
                "2",
                "--work-dir",
            ])
            .arg(work_dir.path());
        let (executor, line) = start(executor);
        assert!(line.contains("serving on http://127.0.0.1:"), "{line}");
        processes.push(executor);
    }
    Cluster {
        url,
        _processes: processes,
        _work_dir: work_dir,
    }
}

fn volley(args: &[&str], data_dir: &Path) -> Output {
    Command::new(binary("volley"))
        .args(args)
        .env("VOLLEY_DATA_DIR", data_dir)
        .env_remove("VOLLEY_SCHEDULER")
        .output()
        .expect("run volley")
}

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
        let output = volley(
            &[
                "sql",
                "--scheduler",
                &cluster.url,
                "--tpch",
                "0.01",
                "--format",
                "csv",
                "-q",
                "-c",
                &sql,
            ],
            data_dir.path(),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "q{n} failed: {stderr}");
        let actual = String::from_utf8(output.stdout).expect("utf-8");
        assert_eq!(actual, expected_csv(data_dir.path(), &sql).await, "q{n}");
    }
    // A multi-stage join query too, compared as sorted lines.
    let sql = tpch_query(5);
    let output = volley(
        &[
            "sql",
            "--scheduler",
            &cluster.url,
            "--tpch",
            "0.01",
            "--format",
            "csv",
            "-q",
            "-c",
            &sql,
        ],
        data_dir.path(),
    );
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
    let started = Instant::now();
    let output = volley(
        &["sql", "--scheduler", "http://127.0.0.1:1", "-c", "SELECT 1"],
        data_dir.path(),
    );
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http://127.0.0.1:1"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn bad_usage_exits_2() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let output = volley(&["sql", "--format", "yaml"], data_dir.path());
    assert_eq!(output.status.code(), Some(2));
}
