//! A cluster's processes started in any order: executors before their
//! scheduler, and a script that waits for readiness with `volley executors
//! wait` instead of sleeping.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;

use volley_tests::processes::{binary, credentials, start, volley};

/// A free loopback port outside the kernel's ephemeral range, so no
/// outgoing connection takes it before the scheduler binds it.
fn quiet_port() -> SocketAddr {
    // Each call starts its search elsewhere, so tests running at once do
    // not pick the same port before either binds it.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let offset = (std::process::id().wrapping_mul(7) + call * 211) % 2_000;
    (0..2_000u32)
        .map(|i| 30_000 + ((offset + i) % 2_000) as u16)
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .find(|addr| TcpListener::bind(addr).is_ok())
        .expect("a free port below the ephemeral range")
}

#[test]
fn executors_started_before_their_scheduler_join_it_and_a_script_waits_for_them() {
    let addr = quiet_port();
    let url = format!("https://{addr}");
    let data = tempfile::tempdir().expect("dir");
    let credentials = credentials();
    // Executors first: nothing listens at the URL yet.
    let mut executors = Vec::new();
    for i in 0..2 {
        let mut executor = Command::new(binary("volley-executor"));
        executor
            .args([
                "--scheduler",
                &url,
                "--bind",
                "127.0.0.1:0",
                "--slots",
                "1",
                "--work-dir",
            ])
            .arg(data.path().join(format!("executor-{i}")))
            .args(credentials.executor_args())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        executors.push(executor.spawn().expect("spawn an executor"));
    }
    // Readiness is asked for, not slept for; it also waits for the scheduler.
    let waiter = Command::new(binary("volley"))
        .args([
            "executors",
            "wait",
            "--count",
            "2",
            "--timeout",
            "60s",
            "--scheduler",
            &url,
        ])
        .envs(credentials.env("admin"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn volley executors wait");
    let mut scheduler = Command::new(binary("volley-scheduler"));
    scheduler
        .args(["--bind", &addr.to_string()])
        .args(credentials.scheduler_args());
    let (_scheduler, line) = start(scheduler);
    assert!(line.ends_with(&url), "{line}");
    let waited = waiter.wait_with_output().expect("volley executors wait");
    let stderr = String::from_utf8_lossy(&waited.stderr).to_string();
    for mut executor in executors {
        let _ = executor.kill();
        let _ = executor.wait();
    }
    assert!(waited.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&waited.stdout).contains("2 executors registered"));
    let too_many = volley(
        &[
            "executors",
            "wait",
            "--count",
            "3",
            "--timeout",
            "1s",
            "--scheduler",
            &url,
        ],
        data.path(),
    );
    assert_eq!(too_many.status.code(), Some(4));
}

/// The lines of README.md's "A real cluster from the three binaries", as a
/// newcomer pastes them: one script, no sleeps, ten runs in a row. Only the
/// build line goes (the binaries are the ones under test) and the port is
/// a free one.
#[test]
fn the_readme_real_cluster_lines_pasted_as_one_script_pass_ten_times_in_a_row() {
    let readme = include_str!("../../../README.md");
    let block = readme
        .split("## A real cluster from the three binaries")
        .nth(1)
        .and_then(|section| section.split("```sh\n").nth(1))
        .and_then(|code| code.split("```").next())
        .expect("the README's real-cluster block");
    let lines: Vec<&str> = block
        .lines()
        .filter(|l| !l.starts_with("cargo build") && !l.starts_with("export PATH="))
        .collect();
    assert!(lines.iter().any(|l| l.starts_with("volley sql")), "{block}");
    let bin = binary("volley");
    let bin = bin.parent().expect("the binaries' directory");
    for run in 1..=10 {
        let home = tempfile::tempdir().expect("a fresh home");
        let port = quiet_port().port().to_string();
        let script = format!(
            "set -euo pipefail\n\
             trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n\
             export PATH=\"{}:$PATH\"\n{}\n",
            bin.display(),
            lines.join("\n").replace("50050", &port)
        );
        let output = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("HOME", home.path())
            .env_remove("VOLLEY_TOKEN")
            .env_remove("VOLLEY_TOKEN_FILE")
            .env_remove("VOLLEY_TLS_CA")
            .env_remove("VOLLEY_SCHEDULER")
            .env_remove("VOLLEY_DATA_DIR")
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("150000"),
            "run {run} of the README's lines failed:\n{script}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
