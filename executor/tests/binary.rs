//! The `volley-executor` binary: an unreachable scheduler is a clear error,
//! and it will not start without the cluster secret unless `--insecure`.

use std::process::Command;

#[test]
fn the_executor_binary_exits_1_naming_an_unreachable_scheduler() {
    let work_dir = tempfile::tempdir().expect("work dir");
    // Port 1 on loopback: nothing listens there.
    let output = Command::new(env!("CARGO_BIN_EXE_volley-executor"))
        .args([
            "--scheduler",
            "http://127.0.0.1:1",
            "--insecure",
            "--register-timeout-secs",
            "0",
            "--work-dir",
        ])
        .arg(work_dir.path())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the scheduler at http://127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn the_executor_binary_refuses_to_start_without_the_cluster_secret_or_insecure() {
    let work_dir = tempfile::tempdir().expect("work dir");
    let output = Command::new(env!("CARGO_BIN_EXE_volley-executor"))
        .args(["--scheduler", "http://127.0.0.1:1", "--work-dir"])
        .arg(work_dir.path())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--cluster-secret-file"), "{stderr}");
}
