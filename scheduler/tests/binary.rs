//! The `volley-scheduler` binary: starts on a free port, says where, and
//! serves the scheduler API there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use volley_proto::v1;
use volley_proto::v1::scheduler_service_client::SchedulerServiceClient;

#[tokio::test]
async fn the_scheduler_binary_announces_its_address_and_serves_cluster_info_there() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_volley-scheduler"))
        .args(["--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn volley-scheduler");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let addr = line.trim().rsplit(' ').next().expect("address").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    let mut client = SchedulerServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
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
