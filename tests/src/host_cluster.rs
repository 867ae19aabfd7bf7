//! A Volley cluster on many hosts ([`crate::hosts`]): the scheduler, three
//! executors, an S3 server (moto) and a client, each in its own network
//! namespace. The TPC-H test tables live in the S3 server; executors bind
//! the wildcard address without `--advertise-host`, so each advertises the
//! address it reaches the scheduler by; TLS certificates name the hosts'
//! addresses. Every Volley process is the real binary.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use crate::hosts::{Host, Network};
use crate::processes::{Process, binary, credentials, start_logging};
use crate::{compare_rows, is_ordered, local_tpch_context, run_script, tpch_dir};

/// The bucket the tables live in.
pub const BUCKET: &str = "volley-hosts";

/// The scheduler's port on its host.
const SCHEDULER_PORT: u16 = 50050;

/// A cluster of hosts; processes stop and namespaces go on drop.
pub struct HostCluster {
    // Processes first: fields drop in order, and they must be gone before
    // their namespaces.
    _scheduler: Process,
    executors: Vec<Option<Process>>,
    _s3: Process,
    /// The scheduler's URL, `https://10.201.N.10:50050`.
    pub url: String,
    /// Each executor's Flight endpoint as it announced it, in start order.
    pub executor_endpoints: Vec<String>,
    /// The hosts.
    pub network: Network,
    s3_env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

/// Host names: the scheduler, the S3 server, the client, then executors.
fn host_names(executors: usize) -> Vec<String> {
    let mut names: Vec<String> = ["scheduler", "s3", "client"]
        .into_iter()
        .map(String::from)
        .collect();
    names.extend((1..=executors).map(|i| format!("executor-{i}")));
    names
}

impl HostCluster {
    /// Starts everything on fresh hosts and loads the TPC-H test tables
    /// into the S3 server. `executor_env` is added to each executor's
    /// environment (e.g. `RUST_LOG`).
    pub fn start(executors: usize, executor_env: &[(&str, &str)]) -> HostCluster {
        let names = host_names(executors);
        let network = Network::create(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let dir = tempfile::Builder::new()
            .prefix("volley-hosts-")
            .tempdir()
            .expect("cluster dir");
        let mut hosts: Vec<String> = network.addresses().iter().map(|a| a.to_string()).collect();
        hosts.push("localhost".into());
        volley_security::tls::generate(&dir.path().join("tls"), &hosts).expect("certificates");

        // The S3 server, with the tables.
        let s3_host = network.host("s3").clone();
        let endpoint = format!("http://{}:5000", s3_host.address);
        let s3 = network
            .command(&s3_host, "moto_server")
            .args(["-H", &s3_host.address.to_string(), "-p", "5000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server ({e}); pip install 'moto[server]'")
            });
        let s3 = Process(s3);
        let client = network.host("client").clone();
        let setup = moto_setup(&network, &client, &["setup", &endpoint, BUCKET]);
        let key: serde_json::Value = serde_json::from_slice(&setup.stdout).expect("key JSON");
        let tables = tpch_dir().to_str().expect("utf-8 path").to_string();
        moto_setup(
            &network,
            &client,
            &["upload", &endpoint, BUCKET, &tables, "tpch"],
        );
        let s3_env: Vec<(String, String)> = [
            (
                "AWS_ACCESS_KEY_ID",
                key["access_key_id"].as_str().unwrap_or(""),
            ),
            (
                "AWS_SECRET_ACCESS_KEY",
                key["secret_access_key"].as_str().unwrap_or(""),
            ),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let tls = dir.path().join("tls");
        let credentials = credentials();
        let allow_url = format!("s3://{BUCKET}/");
        let scheduler_host = network.host("scheduler").clone();
        let mut scheduler = network.command(&scheduler_host, binary("volley-scheduler"));
        scheduler
            .arg("--bind")
            .arg(format!("{}:{SCHEDULER_PORT}", scheduler_host.address))
            .args(["--executor-timeout-secs", "3", "--allow-url", &allow_url])
            .args(credentials.scheduler_args_with_tls(&tls))
            .envs(s3_env.iter().map(|(k, v)| (k, v)));
        let (scheduler, line) = start_logging(scheduler, Some(&logs.join("scheduler.log")));
        let url = line.rsplit(' ').next().expect("the URL").to_string();
        assert_eq!(
            url,
            format!("https://{}:{SCHEDULER_PORT}", scheduler_host.address),
            "{line}"
        );

        let mut cluster = HostCluster {
            _scheduler: scheduler,
            executors: Vec::new(),
            _s3: s3,
            url,
            executor_endpoints: Vec::new(),
            network,
            s3_env,
            dir,
        };
        for i in 1..=executors {
            cluster.start_executor(i, executor_env);
        }
        cluster
    }

    fn start_executor(&mut self, i: usize, env: &[(&str, &str)]) {
        let host = self.network.host(&format!("executor-{i}")).clone();
        let tls = self.dir.path().join("tls");
        let mut executor = self.network.command(&host, binary("volley-test-executor"));
        executor
            .args(["--scheduler", &self.url])
            // The wildcard, and no --advertise-host: it must advertise the
            // address it reaches the scheduler by.
            .args(["--bind", "0.0.0.0:50060", "--slots", "2"])
            .arg("--work-dir")
            .arg(self.dir.path().join(format!("work-{i}")))
            .args(credentials().executor_args_with_tls(&tls))
            .args(["--allow-url", &format!("s3://{BUCKET}/")])
            .envs(self.s3_env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied());
        let log = self.log_dir().join(format!("executor-{i}.log"));
        let (process, line) = start_logging(executor, Some(&log));
        let expected = format!("serving on https://{}:50060", host.address);
        assert!(line.ends_with(&expected), "{line}");
        self.executor_endpoints
            .push(line.rsplit(' ').next().unwrap_or_default().to_string());
        self.executors.push(Some(process));
    }

    /// Where the processes log.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Executor `i`'s log (1-based, as the hosts are named).
    pub fn executor_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_dir().join(format!("executor-{i}.log")))
            .unwrap_or_default()
    }

    /// Every log so far.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.log_dir()) {
            for entry in entries.flatten() {
                text.push_str(&format!("== {}\n", entry.path().display()));
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Host {
        self.network.host(name).clone()
    }

    /// `volley ARGS` on the client host, as `admin`, trusting the cluster's
    /// CA, with the S3 server's settings.
    pub fn volley_command(&self, args: &[&str]) -> Command {
        let client = self.network.host("client").clone();
        let mut command = self.network.command(&client, binary("volley"));
        command
            .args(args)
            .env("VOLLEY_TOKEN", credentials().token("admin"))
            .env("VOLLEY_TLS_CA", self.dir.path().join("tls/ca.pem"))
            .env("VOLLEY_DATA_DIR", self.dir.path().join("client-data"))
            .env_remove("VOLLEY_TOKEN_FILE")
            .env_remove("VOLLEY_SCHEDULER")
            .envs(self.s3_env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs `volley ARGS` on the client host.
    pub fn volley(&self, args: &[&str]) -> Output {
        self.volley_command(args).output().expect("run volley")
    }

    /// The statements that make the TPC-H tables of the S3 server known.
    pub fn tpch_tables_sql() -> String {
        volley_client::tpch::TPCH_TABLES
            .iter()
            .map(|t| {
                format!(
                    "CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION 's3://{BUCKET}/tpch/{t}/';\n"
                )
            })
            .collect()
    }

    /// `volley sql` of `script` (after the table statements) on the client
    /// host, as CSV.
    pub fn sql_command(&self, script: &str) -> Command {
        let script = format!("{}{script}", Self::tpch_tables_sql());
        self.volley_command(&[
            "sql",
            "--scheduler",
            &self.url,
            "--format",
            "csv",
            "-q",
            "-c",
            &script,
        ])
    }

    /// `volley-test-client` (the test functions registered) running
    /// `script` after the table statements, on the client host.
    pub fn test_client_command(&self, script: &str) -> Command {
        let client = self.network.host("client").clone();
        let script = format!("{}{script}", Self::tpch_tables_sql());
        let mut command = self.network.command(&client, binary("volley-test-client"));
        command
            .arg(&self.url)
            .arg(script)
            .env("VOLLEY_TOKEN", credentials().token("admin"))
            .env("VOLLEY_TLS_CA", self.dir.path().join("tls/ca.pem"))
            .env_remove("VOLLEY_TOKEN_FILE")
            .envs(self.s3_env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// The registered executors, from `volley executors list --json` on
    /// the client host.
    pub fn executors(&self) -> Vec<serde_json::Value> {
        let output = self.volley(&["executors", "list", "--json", "--scheduler", &self.url]);
        assert!(
            output.status.success(),
            "volley executors list: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listed: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("executors JSON");
        listed.as_array().cloned().unwrap_or_default()
    }

    /// Polls the executor list until `done` holds for it.
    pub fn until_executors(&self, done: impl Fn(&[serde_json::Value]) -> bool) {
        while !done(&self.executors()) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

fn moto_setup(network: &Network, host: &Host, args: &[&str]) -> Output {
    run_moto_setup(network.command(host, "python3"), args)
}

/// Runs `tests/s3/moto_setup.py ARGS` with `python3` (a command that may
/// run it on another host); panics with its error unless it succeeds.
pub fn run_moto_setup(mut python3: Command, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("s3/moto_setup.py");
    let output = python3
        .arg(script)
        .args(args)
        .output()
        .expect("run moto_setup.py");
    assert!(
        output.status.success(),
        "moto_setup.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Checks the CSV a `volley sql` run printed for `sql` (a TPC-H query)
/// against single-node DataFusion's answer on the same data.
pub async fn check_csv_answer(sql: &str, csv: &[u8]) -> Result<(), String> {
    let local = local_tpch_context().await.map_err(|e| e.to_string())?;
    local.register_udf(crate::udfs::gate());
    let expected = run_script(&local, sql).await.map_err(|e| e.to_string())?;
    let expected_rows: usize = expected.iter().map(RecordBatch::num_rows).sum();
    let Some(first) = expected.first().filter(|_| expected_rows > 0) else {
        // No rows: at most a header line.
        let lines = String::from_utf8_lossy(csv).lines().count();
        return if lines <= 1 {
            Ok(())
        } else {
            Err(format!("expected no rows, got {}", lines - 1))
        };
    };
    // The CSV reader makes plain Utf8 of string views.
    let fields: Vec<Field> = first
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => {
                Field::new(f.name(), DataType::Utf8, f.is_nullable())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let reader = ReaderBuilder::new(schema)
        .with_header(true)
        .build(Cursor::new(csv))
        .map_err(|e| e.to_string())?;
    let actual: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the output is not the expected CSV: {e}"))?;
    compare_rows(&expected, &actual, is_ordered(sql))
}
