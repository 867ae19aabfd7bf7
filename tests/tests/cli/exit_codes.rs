//! Every exit code `volley --help` documents, provoked for real.

use volley_tests::processes::{start_cluster, volley};

use super::{endless_script, write};

#[test]
fn a_successful_query_exits_0_and_a_failing_one_exits_1() {
    let data = tempfile::tempdir().unwrap();
    assert_eq!(
        volley(&["sql", "-q", "-c", "SELECT 1"], data.path())
            .status
            .code(),
        Some(0)
    );
    let failed = volley(
        &["sql", "-q", "-c", "SELECT * FROM missing_table"],
        data.path(),
    );
    assert_eq!(failed.status.code(), Some(1));
}

#[test]
fn continue_on_error_runs_every_statement_and_still_exits_1() {
    let data = tempfile::tempdir().unwrap();
    let output = volley(
        &[
            "sql",
            "-q",
            "--format",
            "csv",
            "--continue-on-error",
            "-c",
            "SELECT 1 AS a; SELECT * FROM nope; SELECT 3 AS c",
        ],
        data.path(),
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "a\n1\nc\n3\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("statement 2 (line 1)"), "{stderr}");
}

#[test]
fn bad_usage_exits_2_and_an_unreachable_scheduler_exits_3() {
    let data = tempfile::tempdir().unwrap();
    assert_eq!(
        volley(&["sql", "--no-such-flag"], data.path())
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        volley(&["jobs", "wait", "x", "--timeout", "soon"], data.path())
            .status
            .code(),
        Some(2)
    );
    let unreachable = volley(
        &["jobs", "list", "--scheduler", "https://127.0.0.1:1"],
        data.path(),
    );
    assert_eq!(unreachable.status.code(), Some(3));
}

#[test]
fn a_job_past_its_timeout_is_cancelled_on_the_cluster_and_exits_4() {
    let cluster = start_cluster();
    let data = tempfile::tempdir().unwrap();
    let script = write(data.path(), "endless.sql", &endless_script());
    let output = volley(
        &[
            "submit",
            &script,
            "--scheduler",
            &cluster.url,
            "--wait",
            "--timeout",
            "2s",
            "--json",
        ],
        data.path(),
    );
    assert_eq!(
        output.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(status["state"], "cancelled", "{status}");
}

#[test]
fn waiting_on_a_job_that_is_cancelled_elsewhere_exits_5() {
    let cluster = start_cluster();
    let data = tempfile::tempdir().unwrap();
    let script = write(data.path(), "endless.sql", &endless_script());
    let submitted = volley(
        &["submit", &script, "--scheduler", &cluster.url],
        data.path(),
    );
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let job_id = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .to_string();
    let waiter = std::process::Command::new(volley_tests::processes::binary("volley"))
        .args(["jobs", "wait", &job_id, "--scheduler", &cluster.url])
        .envs(volley_tests::processes::credentials().env("admin"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start volley jobs wait");
    // Cancel from another process; the endless job ends only so, and the
    // waiter sees it end whether it began following before or after.
    let url = cluster.url.clone();
    let id = job_id.clone();
    let data_path = data.path().to_path_buf();
    let canceller = std::thread::spawn(move || {
        volley(&["jobs", "cancel", &id, "--scheduler", &url], &data_path)
    });
    let waited = waiter.wait_with_output().expect("volley jobs wait");
    let cancelled = canceller.join().expect("canceller");
    assert!(
        cancelled.status.success(),
        "{}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    assert_eq!(
        waited.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
}
