//! A cluster's processes started in any order: executors before their
//! scheduler, and a script that waits for readiness with `volley executors
//! wait` instead of sleeping.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;

use volley_tests::processes::{binary, credentials, start, volley};

/// A free loopback port outside the kernel's ephemeral range, so no
/// outgoing connection takes it before the scheduler binds it.
fn quiet_port() -> SocketAddr {
    (30_000..32_000)
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
