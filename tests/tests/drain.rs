//! Leaving a cluster gracefully: an executor asked to stop (SIGTERM, or
//! `volley executors drain`) takes no new tasks, finishes its running ones,
//! serves its stored output until the job that reads it is done, then exits
//! 0; the job re-runs nothing. And the gRPC health service every node
//! serves, behind the cluster's authentication, that reports draining.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use volley_client::{Context, SchedulerClient, v1};
use volley_tests::processes::{
    Cluster, ClusterSpec, credentials, start_cluster_with, volley_with_env,
};
use volley_tests::{assert_same_rows, local_tpch_context, tpch_dir, udfs};

async fn admin(url: &str) -> SchedulerClient {
    SchedulerClient::connect_with(url, credentials().link("admin"))
        .await
        .expect("connect as admin")
}

/// Polls the scheduler's executor list until `done` holds for it.
async fn until_executors(url: &str, done: impl Fn(&[v1::ExecutorInfo]) -> bool) {
    let client = admin(url).await;
    loop {
        let executors = client.executors().await.expect("list executors");
        if done(&executors) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `volley health URL` with `args`, as `user` (none: no token at all).
fn health(url: &str, user: Option<&str>, args: &[&str]) -> Output {
    let mut env = credentials().env(user.unwrap_or("admin"));
    if user.is_none() {
        env.push(("VOLLEY_TOKEN".into(), String::new()));
    }
    let mut all = vec!["health", url];
    all.extend_from_slice(args);
    volley_with_env(&all, Path::new("."), &env)
}

fn gated_cluster() -> Cluster {
    start_cluster_with(&ClusterSpec {
        executor_binary: "volley-test-executor",
        ..ClusterSpec::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_drained_by_sigterm_mid_query_finishes_its_work_and_the_job_reruns_nothing() {
    let mut cluster = gated_cluster();
    let gate_dir = tempfile::tempdir().expect("gate dir");
    let gate = gate_dir.path().join("open");
    let ctx = Context::remote_with(&cluster.url, credentials().link("admin"))
        .await
        .expect("connect");
    ctx.register_udfs(&udfs::registry());
    volley_client::tpch::register_tpch(ctx.session(), tpch_dir())
        .await
        .expect("register TPC-H");
    // Four scan tasks (four lineitem files), two on each executor, all held
    // at the gate; then a hash-partitioned aggregation stage.
    let sql = format!(
        "SELECT k, count(*) AS n, sum(l_quantity) AS quantity FROM \
         (SELECT volley_gate(l_orderkey % 7, '{}') AS k, l_quantity FROM lineitem) GROUP BY k",
        gate.display()
    );
    let query = {
        let sql = sql.clone();
        tokio::spawn(async move {
            let batches = ctx.sql(&sql).await?.collect().await;
            batches.map(|b| (b, ctx.last_job()))
        })
    };
    until_executors(&cluster.url, |executors| {
        executors.len() == 2 && executors.iter().all(|e| e.running_tasks > 0)
    })
    .await;

    // SIGTERM the first executor: it drains, and says so to probes.
    let leaving = cluster.executor_endpoints[0].clone();
    let staying = cluster.executor_endpoints[1].clone();
    cluster.signal_executor(0, "TERM");
    until_executors(&cluster.url, |executors| {
        executors
            .iter()
            .any(|e| e.endpoint == leaving && e.state == v1::ExecutorState::Draining as i32)
    })
    .await;
    let secret = credentials().file("secret");
    let secret = secret.to_str().expect("utf-8");
    let ca = credentials().ca();
    let ca = ca.to_str().expect("utf-8");
    let as_executor = ["--cluster-secret-file", secret, "--ca", ca];
    let draining = health(&leaving, None, &as_executor);
    assert_eq!(
        draining.status.code(),
        Some(1),
        "a draining executor is not serving: {}",
        String::from_utf8_lossy(&draining.stderr)
    );
    let serving = health(&staying, None, &as_executor);
    assert!(serving.status.success(), "{serving:?}");
    assert_eq!(String::from_utf8_lossy(&serving.stdout).trim(), "serving");
    // The health service asks for credentials like every other endpoint.
    assert!(health(&cluster.url, Some("reader"), &[]).status.success());
    assert_eq!(health(&cluster.url, None, &[]).status.code(), Some(6));
    assert_eq!(
        health(&staying, Some("admin"), &[]).status.code(),
        Some(6),
        "an executor answers only to the cluster's credential"
    );

    // Let the tasks go: the job completes, with nothing re-run.
    std::fs::write(&gate, b"").expect("open the gate");
    let (batches, job) = query
        .await
        .expect("the query task")
        .expect("the query succeeds while an executor drains");
    let local = local_tpch_context().await.expect("local context");
    local.register_udf(udfs::gate());
    let expected = local
        .sql(&sql)
        .await
        .expect("plan locally")
        .collect()
        .await
        .expect("run locally");
    assert_same_rows(&expected, &batches, false, "drained query");
    let recovery = job.and_then(|j| j.recovery).unwrap_or_default();
    assert_eq!(recovery, v1::JobRecovery::default(), "nothing was re-run");

    // Then it leaves on its own, successfully.
    let status = cluster.wait_executor(0);
    assert!(status.success(), "a drained executor exits 0: {status}");
    until_executors(&cluster.url, |executors| {
        executors.len() == 1 && executors[0].endpoint == staying
    })
    .await;
    assert!(cluster.logs().contains("drained"), "{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volley_executors_drain_lets_an_admin_retire_an_idle_executor_and_nobody_else() {
    let mut cluster = gated_cluster();
    let executors = admin(&cluster.url).await.executors().await.expect("list");
    let id = executors
        .iter()
        .find(|e| e.endpoint == cluster.executor_endpoints[1])
        .expect("the second executor")
        .executor_id
        .clone();
    let drain = |user: &str| {
        volley_with_env(
            &[
                "executors",
                "drain",
                &id,
                "--wait",
                "--scheduler",
                &cluster.url,
            ],
            Path::new("."),
            &credentials().env(user),
        )
    };
    let refused = drain("alice");
    assert_eq!(refused.status.code(), Some(6), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("admin"),
        "{refused:?}"
    );
    let unknown = volley_with_env(
        &[
            "executors",
            "drain",
            "nosuchexecutor",
            "--scheduler",
            &cluster.url,
        ],
        Path::new("."),
        &credentials().env("admin"),
    );
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    let drained = drain("admin");
    assert!(drained.status.success(), "{drained:?}");
    assert!(cluster.wait_executor(1).success());
    let listed = volley_with_env(
        &["executors", "list", "--json", "--scheduler", &cluster.url],
        Path::new("."),
        &credentials().env("reader"),
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(listed[0]["running_tasks"], 0);
    assert!(listed[0]["memory_limit"].as_u64().is_some_and(|m| m > 0));
}
