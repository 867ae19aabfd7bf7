//! Volley on many hosts: a scheduler, three executors, an S3 server and a
//! client, each in its own network namespace on a private subnet, reaching
//! each other only by those addresses (`volley_tests::hosts`). Tables live
//! in the S3 server. Every answer is checked against single-node
//! DataFusion's on the same data.
//!
//! Needs root, iproute2 and nftables (the test script installs them); it
//! fails, never skips, without them. The tests take turns: each starts six
//! processes and a Python S3 server on a 2-core machine.

use std::io::Read;
use std::process::Stdio;

use serde_json::Value;
use volley_tests::host_cluster::{HostCluster, check_csv_answer};
use volley_tests::tpch_query;

/// One multi-host cluster at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn endpoint_of(executor: &Value) -> &str {
    executor["endpoint"].as_str().unwrap_or_default()
}

/// The `job {...}` line `volley-test-client` prints on stderr.
fn job_line(stderr: &str) -> Value {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("job "))
        .unwrap_or_else(|| panic!("no job line in: {stderr}"));
    serde_json::from_str(line).expect("job JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_on_hosts_over_shaped_links_matches_datafusion_and_compresses_with_lz4() {
    let _turn = TURN.lock().await;
    let cluster = HostCluster::start(
        3,
        &[("RUST_LOG", "info,volley_executor::flight_service=debug")],
    );
    // Latency and bandwidth on every executor's link.
    let mut shaped = Vec::new();
    for i in 1..=3 {
        let host = cluster.host(&format!("executor-{i}"));
        shaped.push(cluster.network.shape(&host, 5, "1gbit"));
    }
    eprintln!("executor links: {shaped:?}");

    // Each executor bound the wildcard and advertises its own address.
    let executors = cluster.executors();
    assert_eq!(executors.len(), 3, "{executors:?}");
    for i in 1..=3 {
        let address = cluster.host(&format!("executor-{i}")).address;
        let expected = format!("https://{address}:50060");
        assert!(
            executors.iter().any(|e| endpoint_of(e) == expected),
            "no executor advertises {expected}: {executors:?}"
        );
    }

    for n in [3, 5, 9, 18] {
        let sql = tpch_query(n);
        let output = cluster.sql_command(&sql).output().expect("run volley sql");
        assert!(
            output.status.success(),
            "q{n} failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            cluster.logs()
        );
        if let Err(difference) = check_csv_answer(&sql, &output.stdout).await {
            panic!("q{n} on hosts differs from DataFusion: {difference}");
        }
    }
    // `auto` compression: LZ4 between hosts.
    let served: String = (1..=3).map(|i| cluster.executor_log(i)).collect();
    assert!(
        served.contains("serving shuffle data") && served.contains("LZ4_FRAME"),
        "shuffle data between hosts is LZ4-compressed"
    );
    assert!(
        !served
            .lines()
            .filter(|l| l.contains("serving shuffle data"))
            .any(|l| l.contains("compression=None")),
        "nothing between hosts is sent uncompressed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_cut_off_mid_query_is_fenced_the_job_completes_and_it_rejoins_as_new() {
    let _turn = TURN.lock().await;
    let cluster = HostCluster::start(3, &[]);
    let gate_dir = tempfile::tempdir().expect("gate dir");
    let gate = gate_dir.path().join("open");
    // Four scan tasks over three executors, held at the gate.
    let sql = format!(
        "SELECT k, count(*) AS n, sum(l_quantity) AS quantity FROM \
         (SELECT volley_gate(l_orderkey % 7, '{}') AS k, l_quantity FROM lineitem) GROUP BY k",
        gate.display()
    );
    let mut query = cluster
        .test_client_command(&sql)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    cluster.until_executors(|executors| {
        executors.len() == 3
            && executors
                .iter()
                .all(|e| e["running_tasks"].as_u64().unwrap_or(0) > 0)
    });
    let cut = cluster.host("executor-1");
    let cut_endpoint = format!("https://{}:50060", cut.address);
    let old_id = cluster
        .executors()
        .iter()
        .find(|e| endpoint_of(e) == cut_endpoint)
        .map(|e| e["executor_id"].clone())
        .expect("executor-1 is registered");

    // Pull its cable for longer than the heartbeat timeout (3 s): the
    // scheduler declares it lost and runs its work elsewhere.
    cluster.network.cut(&cut);
    cluster.until_executors(|executors| executors.iter().all(|e| e["executor_id"] != old_id));
    std::fs::write(&gate, b"").expect("open the gate");
    let mut stdout = Vec::new();
    let mut stderr = String::new();
    query
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut stdout)
        .expect("read the rows");
    query
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = query.wait().expect("the client ends");
    assert!(status.success(), "{stderr}\n{}", cluster.logs());
    if let Err(difference) = check_csv_answer(&sql, &stdout).await {
        panic!("the answer after a cut link differs from DataFusion: {difference}");
    }
    let job = job_line(&stderr);
    assert!(job["executors_lost"].as_u64() >= Some(1), "{job}");
    assert!(job["tasks_retried"].as_u64() >= Some(1), "{job}");

    // Plugged back in, it finds its old registration fenced and joins again
    // under a new id, at the same address.
    cluster.network.restore(&cut);
    cluster.until_executors(|executors| {
        executors.len() == 3
            && executors
                .iter()
                .any(|e| endpoint_of(e) == cut_endpoint && e["executor_id"] != old_id)
    });
    assert!(
        cluster.executor_log(1).contains("registering again"),
        "{}",
        cluster.executor_log(1)
    );
    // And takes work again: a query that needs all six slots succeeds.
    let sql = tpch_query(5);
    let output = cluster.sql_command(&sql).output().expect("run volley sql");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    check_csv_answer(&sql, &output.stdout)
        .await
        .expect("q5 after the executor rejoined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_that_cannot_reach_each_other_recover_instead_of_hanging_and_answer_right() {
    let _turn = TURN.lock().await;
    let cluster = HostCluster::start(3, &[]);
    // Executors 1 and 2 lose each other; both still reach the scheduler,
    // the S3 server and executor 3.
    let (one, two) = (cluster.host("executor-1"), cluster.host("executor-2"));
    cluster.network.separate(&one, &two);
    for n in [5, 9] {
        let sql = tpch_query(n);
        let output = cluster
            .test_client_command(&sql)
            .output()
            .expect("run the client");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "q{n} failed: {stderr}\n{}",
            cluster.logs()
        );
        if let Err(difference) = check_csv_answer(&sql, &output.stdout).await {
            panic!("q{n} across a partition differs from DataFusion: {difference}");
        }
        let job = job_line(&stderr);
        assert!(
            job["map_tasks_rerun"].as_u64() >= Some(1) || job["stages_rerun"].as_u64() >= Some(1),
            "q{n} read across the partition and recovered: {job}"
        );
    }
    // Nobody was declared lost: it was the link between them.
    assert_eq!(cluster.executors().len(), 3);
}
