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
    // A URL without a scheme is a mistake of the command line, not a
    // scheduler that cannot be reached.
    let no_scheme = volley(
        &["jobs", "list", "--scheduler", "127.0.0.1:50050"],
        data.path(),
    );
    assert_eq!(no_scheme.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&no_scheme.stderr);
    assert!(stderr.contains("http://127.0.0.1:50050"), "{stderr}");
}

/// The one JSON object a `--json` command printed on stdout.
fn one_json_object(output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut values = serde_json::Deserializer::from_str(&stdout).into_iter::<serde_json::Value>();
    let first = values
        .next()
        .unwrap_or_else(|| {
            panic!(
                "no JSON on stdout; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .expect("valid JSON");
    assert!(values.next().is_none(), "one JSON value only: {stdout}");
    first
}

#[test]
fn with_json_every_failure_still_prints_one_object_with_its_kind_and_message() {
    let data = tempfile::tempdir().unwrap();
    let cases: [(&[&str], i32, &str); 4] = [
        (&["jobs", "list", "--json", "--no-such-flag"], 2, "usage"),
        (
            &["jobs", "wait", "x", "--timeout", "soon", "--json"],
            2,
            "usage",
        ),
        (
            &[
                "submit",
                "missing.sql",
                "--json",
                "--scheduler",
                "https://127.0.0.1:1",
            ],
            2,
            "usage",
        ),
        (
            &[
                "jobs",
                "list",
                "--json",
                "--scheduler",
                "https://127.0.0.1:1",
            ],
            3,
            "scheduler_unreachable",
        ),
    ];
    for (args, code, kind) in cases {
        let output = volley(args, data.path());
        assert_eq!(output.status.code(), Some(code), "{args:?}");
        let object = one_json_object(&output);
        assert_eq!(object["error"]["kind"], kind, "{args:?}: {object}");
        let message = object["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.trim().is_empty(), "{args:?}: {object}");
        assert_eq!(object["exit_code"], code, "{object}");
    }
}

#[test]
fn without_a_scheduler_url_the_command_says_which_one_it_uses() {
    let data = tempfile::tempdir().unwrap();
    // Nothing listens on the default port in the tests' sandbox, or if
    // something does, the note is printed all the same.
    let output = volley(&["jobs", "list"], data.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no --scheduler or VOLLEY_SCHEDULER given; using http://127.0.0.1:50050"),
        "{stderr}"
    );
}

#[test]
fn writing_into_a_closed_pipe_ends_quietly_without_a_panic() {
    use std::process::{Command, Stdio};
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(volley_tests::processes::binary("volley"))
        .args([
            "sql",
            "-q",
            "--format",
            "csv",
            "-c",
            "SELECT * FROM generate_series(1, 200000)",
        ])
        .env("VOLLEY_DATA_DIR", data.path())
        .env_remove("VOLLEY_SCHEDULER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start volley");
    // `| head -0`: the reader goes away before anything is read.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("volley ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.code(),
        Some(141),
        "128 + SIGPIPE, as a shell reports `seq | head`: {stderr}"
    );
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
    let status = one_json_object(&output);
    assert_eq!(status["state"], "timed_out", "{status}");
    assert_eq!(status["job_state"], "cancelled", "{status}");
    assert_eq!(status["error"]["kind"], "timeout", "{status}");
}

#[test]
fn waiting_with_a_timeout_stops_waiting_and_cancels_only_when_asked() {
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
    let wait = |extra: &[&str]| {
        let mut args = vec!["jobs", "wait", job_id.as_str(), "--scheduler", &cluster.url];
        args.extend_from_slice(&["--timeout", "1s", "--json"]);
        args.extend_from_slice(extra);
        volley(&args, data.path())
    };
    let gave_up = wait(&[]);
    assert_eq!(
        gave_up.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&gave_up.stderr)
    );
    let status = one_json_object(&gave_up);
    assert_eq!(status["state"], "timed_out", "{status}");
    assert_eq!(status["error"]["kind"], "timeout", "{status}");
    assert_ne!(
        status["job_state"], "cancelled",
        "only stopped waiting: {status}"
    );
    let still = volley(
        &[
            "jobs",
            "status",
            &job_id,
            "--scheduler",
            &cluster.url,
            "--json",
        ],
        data.path(),
    );
    let still = one_json_object(&still);
    assert!(
        still["state"] == "running" || still["state"] == "queued",
        "the job goes on: {still}"
    );

    let cancelled = wait(&["--cancel-on-timeout"]);
    assert_eq!(cancelled.status.code(), Some(4));
    let status = one_json_object(&cancelled);
    assert_eq!(status["state"], "timed_out", "{status}");
    assert_eq!(status["job_state"], "cancelled", "{status}");
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
