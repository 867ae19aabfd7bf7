//! The `volley-scheduler` binary: starts on a free port, says where, and
//! serves the scheduler API there; refuses to start without credentials
//! unless told `--insecure`, and says so loudly when it is.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use volley_proto::v1;
use volley_proto::v1::scheduler_service_client::SchedulerServiceClient;

#[tokio::test]
async fn the_scheduler_binary_announces_its_address_and_serves_cluster_info_there() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_volley-scheduler"))
        .args(["--bind", "127.0.0.1:0", "--insecure"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn volley-scheduler");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let url = line.trim().rsplit(' ').next().expect("URL").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let mut warning = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut warning)
        .expect("read");
    assert!(warning.contains("WARNING: --insecure"), "{warning}");
    let mut client = SchedulerServiceClient::connect(url).await.expect("connect");
    let info = client
        .cluster_info(v1::ClusterInfoRequest {})
        .await
        .expect("cluster info")
        .into_inner();
    assert!(info.executors.is_empty());
    child.kill().expect("kill");
    child.wait().expect("wait");
}

#[test]
fn the_scheduler_binary_rejects_a_bad_bind_address_with_usage_exit_code_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_volley-scheduler"))
        .args(["--bind", "not-an-address"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn the_scheduler_binary_refuses_to_start_without_credentials_or_insecure() {
    let output = Command::new(env!("CARGO_BIN_EXE_volley-scheduler"))
        .args(["--bind", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to start without authentication")
            && stderr.contains("--users")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
}

#[test]
fn the_scheduler_binary_refuses_a_network_address_without_tls() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("users"), "").expect("users");
    std::fs::write(dir.path().join("secret"), "s".repeat(40)).expect("secret");
    let output = Command::new(env!("CARGO_BIN_EXE_volley-scheduler"))
        .args(["--bind", "0.0.0.0:0", "--users"])
        .arg(dir.path().join("users"))
        .arg("--cluster-secret-file")
        .arg(dir.path().join("secret"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without TLS"), "{stderr}");
}
