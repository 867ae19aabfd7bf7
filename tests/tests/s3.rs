//! Tables and outputs in S3-compatible storage, against a real S3 server
//! (moto, from the Python package `moto[server]`, which `./test.sh` installs)
//! started on 127.0.0.1 by the test: the real scheduler and executor
//! processes, configured by the standard `AWS_*` environment variables
//! only, read Parquet from a bucket and write results back to it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use volley_tests::host_cluster::run_moto_setup;
use volley_tests::udfs;

use datafusion::dataframe::DataFrameWriteOptions;
use volley_client::Context;
use volley_tests::processes::{
    ClusterSpec, Process, credentials, example, start_cluster_with, volley_tpch_csv,
    volley_with_env,
};

const BUCKET: &str = "volley-test";

/// A moto S3 server with one bucket and one user; stopped on drop.
struct S3Server {
    endpoint: String,
    key_id: String,
    secret: String,
    _process: Process,
}

impl S3Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start moto_server ({e}); the S3 tests need it: \
                     pip install 'moto[server]' (./test.sh installs it)"
                )
            });
        let mut process = Process(child);
        let endpoint = format!("http://127.0.0.1:{port}");
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                matches!(process.0.try_wait(), Ok(None)),
                "moto_server exited before it listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let output = moto_setup(&["setup", &endpoint, BUCKET]);
        let key: serde_json::Value = serde_json::from_slice(&output.stdout).expect("key JSON");
        Self {
            endpoint,
            key_id: key["access_key_id"].as_str().expect("key id").to_string(),
            secret: key["secret_access_key"]
                .as_str()
                .expect("secret")
                .to_string(),
            _process: process,
        }
    }

    /// The keys under `prefix`, sorted.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let output = moto_setup(&["list", &self.endpoint, BUCKET, prefix]);
        serde_json::from_slice(&output.stdout).expect("keys JSON")
    }

    /// From now on, refuse requests whose key moto does not know.
    fn enable_auth(&self) {
        moto_setup(&["enable-auth", &self.endpoint]);
    }

    /// The environment every Volley process gets: nothing Volley-specific.
    fn env(&self) -> Vec<(String, String)> {
        self.env_with_key(&self.key_id, &self.secret)
    }

    fn env_with_key(&self, key_id: &str, secret: &str) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", key_id),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// Runs `tests/s3/moto_setup.py` with `args`.
fn moto_setup(args: &[&str]) -> std::process::Output {
    run_moto_setup(Command::new("python3"), args)
}

/// Runs `volley sql --scheduler URL --tpch 0.01 -q --format csv -c SQL`.
fn sql(url: &str, data: &Path, env: &[(String, String)], script: &str) -> (bool, String, String) {
    let output = volley_tpch_csv(url, data, env, script);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

const SUMMARY: &str = "SELECT l_returnflag, l_linestatus, count(*) AS n, sum(l_quantity) AS quantity \
     FROM {table} GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus";

#[test]
fn parquet_goes_to_a_bucket_and_back_through_sql_submit_and_the_dataframe_api() {
    let s3 = S3Server::start();
    let cluster = start_cluster_with(&ClusterSpec {
        env: s3.env(),
        allow_urls: vec![format!("s3://{BUCKET}")],
        ..ClusterSpec::default()
    });
    let data = tempfile::tempdir().expect("data dir");
    let env = s3.env();

    // 1. The executors write a table into the bucket: one object per partition.
    let (ok, out, err) = sql(
        &cluster.url,
        data.path(),
        &env,
        &format!(
            "COPY (SELECT * FROM lineitem) TO 's3://{BUCKET}/tpch/lineitem/' STORED AS PARQUET"
        ),
    );
    assert!(ok, "COPY to S3 failed: {err}");
    let copied: u64 = out
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect(&out);
    assert!(copied > 50_000, "{out}");

    // 2. Read it from the bucket and aggregate: the same answer as the local files.
    let remote = SUMMARY.replace("{table}", "s3_lineitem");
    let (ok, from_s3, err) = sql(
        &cluster.url,
        data.path(),
        &env,
        &format!(
            "CREATE EXTERNAL TABLE s3_lineitem STORED AS PARQUET LOCATION 's3://{BUCKET}/tpch/lineitem/';\n{remote}"
        ),
    );
    assert!(ok, "reading S3 failed: {err}");
    let (ok, local, err) = sql(
        &cluster.url,
        data.path(),
        &env,
        &SUMMARY.replace("{table}", "lineitem"),
    );
    assert!(ok, "{err}");
    assert_eq!(from_s3, local);
    assert_eq!(
        from_s3.lines().count(),
        5,
        "header and four groups: {from_s3}"
    );

    // 3. A batch job's output to the bucket, read back.
    let script = data.path().join("summary.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://{BUCKET}/tpch/lineitem/';\n{};\n",
            SUMMARY.replace("{table}", "t")
        ),
    )
    .expect("write script");
    let submitted = volley_with_env(
        &[
            "submit",
            script.to_str().expect("utf-8"),
            "--scheduler",
            &cluster.url,
            "--wait",
            "--output",
            &format!("s3://{BUCKET}/jobs/summary/"),
        ],
        data.path(),
        &env,
    );
    assert!(
        submitted.status.success(),
        "submit --output s3:// failed: {}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let (ok, back, err) = sql(
        &cluster.url,
        data.path(),
        &env,
        &format!(
            "CREATE EXTERNAL TABLE summary STORED AS PARQUET LOCATION 's3://{BUCKET}/jobs/summary/';\n\
             SELECT * FROM summary ORDER BY l_returnflag, l_linestatus"
        ),
    );
    assert!(ok, "{err}");
    assert_eq!(back, local);

    // 4. The DataFrame example: read from the bucket, aggregate, write back, read back.
    let run = Command::new(example("s3_roundtrip"))
        .args([
            &format!("s3://{BUCKET}/tpch/lineitem/"),
            &format!("s3://{BUCKET}/dataframe/summary/"),
        ])
        .env("VOLLEY_SCHEDULER", &cluster.url)
        .envs(volley_tests::processes::credentials().env("admin"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run the s3_roundtrip example");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "s3_roundtrip failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let files: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("file: s3://"))
        .collect();
    assert!(files.len() >= 2, "one object per partition: {stdout}");
    for line in local.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        assert!(
            stdout.lines().any(|l| cells.iter().all(|c| l.contains(c))),
            "the row {line} is not in the read-back result:\n{stdout}"
        );
    }
}

#[test]
fn a_missing_bucket_or_bad_credentials_are_clear_errors() {
    let s3 = S3Server::start();
    let cluster = start_cluster_with(&ClusterSpec {
        env: s3.env(),
        executors: 1,
        allow_urls: vec![format!("s3://{BUCKET}"), "s3://no-such-bucket".to_string()],
        ..ClusterSpec::default()
    });
    let data = tempfile::tempdir().expect("data dir");
    let env = s3.env();

    let (ok, _, err) = sql(
        &cluster.url,
        data.path(),
        &env,
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://no-such-bucket/data/'",
    );
    assert!(!ok);
    assert!(
        err.contains("no-such-bucket") || err.contains("NoSuchBucket"),
        "{err}"
    );

    let (ok, _, err) = sql(
        &cluster.url,
        data.path(),
        &env,
        "COPY (SELECT * FROM nation) TO 's3://no-such-bucket/out/' STORED AS PARQUET",
    );
    assert!(!ok);
    assert!(
        err.contains("NoSuchBucket") || err.contains("does not exist"),
        "{err}"
    );

    // With authentication on, an unknown key is refused, clearly.
    s3.enable_auth();
    let bad = s3.env_with_key("AKIAVOLLEYUNKNOWNKEY", "not-a-secret");
    let (ok, _, err) = sql(
        &cluster.url,
        data.path(),
        &bad,
        &format!("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://{BUCKET}/data/'"),
    );
    assert!(!ok);
    assert!(
        err.contains("InvalidAccessKeyId") && err.contains("403"),
        "{err}"
    );

    // The cluster is fine: a query with good credentials still runs.
    let (ok, out, err) = sql(
        &cluster.url,
        data.path(),
        &env,
        "SELECT count(*) AS n FROM nation",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "n\n25\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_output_appears_whole_only_after_the_job_succeeded_and_never_after_a_failure() {
    let s3 = S3Server::start();
    let cluster = start_cluster_with(&ClusterSpec {
        executor_binary: "volley-test-executor",
        env: s3.env(),
        allow_urls: vec![format!("s3://{BUCKET}")],
        ..ClusterSpec::default()
    });
    let ctx = Context::remote_with(&cluster.url, credentials().link("admin"))
        .await
        .expect("connect");
    ctx.register_udfs(&udfs::registry());
    volley_client::tpch::register_tpch(ctx.session(), volley_tests::tpch_dir())
        .await
        .expect("register TPC-H");
    let gate_dir = tempfile::tempdir().expect("gate dir");
    let gate = gate_dir.path().join("open");
    // The final stage is hash-partitioned on k: only the task holding k = 0
    // waits at the gate, the others write their files meanwhile.
    let sql = format!(
        "SELECT k, volley_gate(n, CASE WHEN k = 0 THEN '{}' END) AS n FROM \
         (SELECT l_orderkey % 8 AS k, count(*) AS n FROM lineitem GROUP BY l_orderkey % 8)",
        gate.display()
    );
    let target = format!("s3://{BUCKET}/atomic/counts");
    let write = {
        let df = ctx.sql(&sql).await.expect("plan");
        let target = target.clone();
        tokio::spawn(async move {
            df.write_parquet(&target, DataFrameWriteOptions::new(), None)
                .await
        })
    };
    // Files are written, but staged beside the target, not under it.
    let staged = loop {
        let staged: Vec<String> = s3
            .keys("atomic/")
            .into_iter()
            .filter(|k| k.ends_with(".parquet"))
            .collect();
        if !staged.is_empty() {
            break staged;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        staged
            .iter()
            .all(|k| k.starts_with("atomic/.counts.volley-staging-")),
        "{staged:?}"
    );
    assert!(
        s3.keys("atomic/counts/").is_empty(),
        "nothing under the target yet"
    );
    std::fs::write(&gate, b"").expect("open the gate");
    write
        .await
        .expect("the write task")
        .expect("the write succeeds");
    let keys = s3.keys("atomic/");
    assert!(
        keys.iter().all(|k| k.starts_with("atomic/counts/")),
        "no staging objects are left: {keys:?}"
    );
    assert!(
        keys.contains(&"atomic/counts/_SUCCESS".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.iter().filter(|k| k.ends_with(".parquet")).count() >= 2,
        "{keys:?}"
    );

    // A job that fails after some of its files were written leaves nothing.
    let failing = "SELECT volley_panic_at(k, 3) AS k, n FROM \
         (SELECT l_orderkey % 8 AS k, count(*) AS n FROM lineitem GROUP BY l_orderkey % 8)";
    let df = ctx.sql(failing).await.expect("plan");
    let failed = df
        .write_parquet(
            &format!("s3://{BUCKET}/failing/counts"),
            DataFrameWriteOptions::new(),
            None,
        )
        .await;
    assert!(failed.is_err(), "the job fails");
    // Its clean-up runs as the job ends; wait for it to be done.
    while !s3.keys("failing/").is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s3.keys("failing/counts/").is_empty());
}
