//! The real binaries as processes: a scheduler and two executors on random
//! loopback ports, and the `volley` command. Every process cluster is
//! secure as in production: users and a cluster secret, TLS on every port,
//! and local paths confined to the test directories ([`credentials`]).
//!
//! The binaries are those `cargo test --workspace` builds next to the test
//! executables (each binary crate has an integration test, so cargo builds
//! them).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use volley_security::tls::ClientTls;
use volley_security::{ClusterSecret, Link, Role, Secret, Users};

/// The credentials every process cluster of this test binary uses, made
/// once: users `admin`, `alice` and `bob` (role submit) and `reader` (role
/// read), a cluster secret, and a development CA with a certificate for
/// `127.0.0.1` and `localhost`.
pub struct Credentials {
    dir: tempfile::TempDir,
    tokens: HashMap<&'static str, Secret>,
}

/// The test binary's [`Credentials`].
pub fn credentials() -> &'static Credentials {
    static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();
    CREDENTIALS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("volley-test-credentials-")
            .tempdir()
            .expect("credentials dir");
        let mut lines = String::new();
        let mut tokens = HashMap::new();
        for (name, role) in [
            ("admin", Role::Admin),
            ("alice", Role::Submit),
            ("bob", Role::Submit),
            ("reader", Role::Read),
        ] {
            let (user, token) =
                Users::create(name.parse().expect("a user name"), role).expect("random token");
            lines.push_str(&user.to_line());
            lines.push('\n');
            tokens.insert(name, token);
        }
        std::fs::write(dir.path().join("users"), lines).expect("write users");
        ClusterSecret::create_file(&dir.path().join("secret")).expect("write secret");
        volley_security::tls::generate(
            &dir.path().join("tls"),
            &["127.0.0.1".to_string(), "localhost".to_string()],
        )
        .expect("make certificates");
        Credentials { dir, tokens }
    })
}

impl Credentials {
    /// A file of the credentials directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate clients trust.
    pub fn ca(&self) -> PathBuf {
        self.file("tls/ca.pem")
    }

    /// The token of test user `user`.
    pub fn token(&self, user: &str) -> &str {
        self.tokens
            .get(user)
            .unwrap_or_else(|| panic!("no test user {user}"))
            .expose()
    }

    /// The environment a `volley` command runs as `user` with.
    pub fn env(&self, user: &str) -> Vec<(String, String)> {
        vec![
            ("VOLLEY_TOKEN".to_string(), self.token(user).to_string()),
            ("VOLLEY_TLS_CA".to_string(), self.ca().display().to_string()),
        ]
    }

    /// How a client in the test process connects as `user`.
    pub fn link(&self, user: &str) -> Link {
        let tls = ClientTls::load(&self.ca()).expect("load the CA");
        Link::new(self.tokens.get(user), Some(tls)).expect("a link")
    }

    /// The cluster's own credential, which executors present.
    pub fn cluster_secret(&self) -> ClusterSecret {
        ClusterSecret::load(&self.file("secret")).expect("the cluster secret")
    }

    /// Every secret a log must never show: the tokens, the cluster secret
    /// and the executor credential derived from it.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self
            .tokens
            .values()
            .map(|t| t.expose().to_string())
            .collect();
        let secret = std::fs::read_to_string(self.file("secret")).expect("the secret file");
        secrets.push(secret.trim().to_string());
        secrets.push(self.cluster_secret().credential().expose().to_string());
        secrets.push(
            self.cluster_secret()
                .metrics_credential()
                .expose()
                .to_string(),
        );
        secrets
    }

    /// `--allow-path` arguments for the test directories.
    fn allow_paths() -> Vec<OsString> {
        let mut args = Vec::new();
        for path in crate::test_paths() {
            args.push(OsString::from("--allow-path"));
            args.push(path.into_os_string());
        }
        args
    }

    /// The security arguments of `volley-scheduler`.
    pub fn scheduler_args(&self) -> Vec<OsString> {
        self.scheduler_args_with_tls(&self.file("tls"))
    }

    /// The security arguments of `volley-scheduler` with the certificates
    /// of `tls` (made by `volley_security::tls::generate`).
    pub fn scheduler_args_with_tls(&self, tls: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--users".into(),
            self.file("users").into(),
            "--cluster-secret-file".into(),
            self.file("secret").into(),
        ];
        args.extend(Self::tls_args(tls));
        args.extend(Self::allow_paths());
        args
    }

    /// `--tls-cert` and `--tls-key` of a node with the certificates of `tls`.
    fn tls_args(tls: &Path) -> Vec<OsString> {
        vec![
            "--tls-cert".into(),
            tls.join("node.pem").into(),
            "--tls-key".into(),
            tls.join("node-key.pem").into(),
        ]
    }

    /// [`Credentials::executor_args`] quoted for `sh -c`.
    pub fn executor_args_for_shell(&self) -> String {
        self.executor_args()
            .iter()
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The security arguments of `volley-executor`.
    pub fn executor_args(&self) -> Vec<OsString> {
        self.executor_args_with_tls(&self.file("tls"))
    }

    /// The security arguments of `volley-executor` with the certificates
    /// (and CA) of `tls`.
    pub fn executor_args_with_tls(&self, tls: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--cluster-secret-file".into(),
            self.file("secret").into(),
            "--tls-ca".into(),
            tls.join("ca.pem").into(),
        ];
        args.extend(Self::tls_args(tls));
        args.extend(Self::allow_paths());
        args
    }
}

/// The path of a workspace binary built next to the running executable
/// (a test in `target/<profile>/deps/`, or a binary in `target/<profile>/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    let candidates = [dir.join(name), dir.parent().unwrap_or(dir).join(name)];
    let found = candidates.iter().find(|p| p.exists());
    match found {
        Some(path) => path.clone(),
        None => panic!(
            "{name} is not built next to {}; run `cargo build --workspace --bins` (or `cargo test --workspace`) first",
            exe.display()
        ),
    }
}

/// The path of an example built by `cargo test --workspace`
/// (`target/<profile>/examples/<name>`).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "the example {name} is not built at {}; run `cargo test --workspace`",
        path.display()
    );
    path
}

/// A free loopback port below the kernel's ephemeral range (32768 and up
/// by default), for a process that is killed and started again on the same
/// port: no other process's bind to port 0 can take it in between.
pub fn restartable_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    // Each test process starts elsewhere in the span.
    let offset = (std::process::id() % u32::from(SPAN)) as u16;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (offset.wrapping_add(n.wrapping_mul(37))) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child process killed when the test ends, pass or fail.
pub struct Process(
    /// The process.
    pub Child,
);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a process and returns it with its first stdout line.
pub fn start(command: Command) -> (Process, String) {
    start_logging(command, None)
}

/// Like [`start`], with the process's stderr (its log) written to `log`.
pub fn start_logging(mut command: Command, log: Option<&Path>) -> (Process, String) {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("create log file")),
        None => Stdio::null(),
    };
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read first line");
    assert!(
        !line.is_empty(),
        "{command:?} exited before announcing itself"
    );
    (Process(child), line.trim().to_string())
}

/// How to start a multi-process cluster.
pub struct ClusterSpec {
    /// The executor binary (`volley-executor`, or a custom one).
    pub executor_binary: &'static str,
    /// Executors to start.
    pub executors: usize,
    /// Task slots of each executor.
    pub slots: usize,
    /// Extra arguments of every executor.
    pub executor_args: Vec<String>,
    /// Extra arguments of the scheduler.
    pub scheduler_args: Vec<String>,
    /// Environment of every process (e.g. `AWS_*`).
    pub env: Vec<(String, String)>,
    /// Where the processes' logs go (`scheduler.log`, `executor-N.log`);
    /// default: inside the cluster's work dir.
    pub log_dir: Option<PathBuf>,
    /// Object-store prefixes the scheduler and executors may use
    /// (`--allow-url`).
    pub allow_urls: Vec<String>,
    /// Serve the scheduler's web UI and every node's `/metrics`
    /// (`--http-bind`, `--metrics-bind`) on free ports.
    pub http: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            executor_binary: "volley-executor",
            executors: 2,
            slots: 2,
            executor_args: Vec::new(),
            scheduler_args: Vec::new(),
            env: Vec::new(),
            log_dir: None,
            allow_urls: Vec::new(),
            http: false,
        }
    }
}

/// A scheduler and executors, as separate processes; stopped on drop.
pub struct Cluster {
    /// The scheduler's URL (`https://127.0.0.1:port`).
    pub url: String,
    _scheduler: Process,
    executors: Vec<Process>,
    /// The executors' Flight endpoints, in start order.
    pub executor_endpoints: Vec<String>,
    _work_dir: tempfile::TempDir,
    /// Where the scheduler's and executors' logs go.
    pub log_dir: PathBuf,
    /// With [`ClusterSpec::http`]: the scheduler's web UI
    /// (`https://127.0.0.1:port`), and each executor's `/metrics` base URL.
    pub http_url: Option<String>,
    /// With [`ClusterSpec::http`]: each executor's `/metrics` base URL.
    pub executor_metrics_urls: Vec<String>,
}

impl Cluster {
    /// The executors' process ids.
    pub fn executor_pids(&self) -> Vec<u32> {
        self.executors.iter().map(|p| p.0.id()).collect()
    }

    /// Whether every executor process is still running.
    pub fn executors_alive(&mut self) -> bool {
        self.executors
            .iter_mut()
            .all(|p| matches!(p.0.try_wait(), Ok(None)))
    }

    /// Everything the cluster's processes logged so far.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.log_dir) {
            for entry in entries.flatten() {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    /// Sends executor `index` (in start order) a signal, e.g. `TERM`.
    pub fn signal_executor(&self, index: usize, signal: &str) {
        let pid = self.executors[index].0.id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits for executor `index` (in start order) to exit.
    pub fn wait_executor(&mut self, index: usize) -> std::process::ExitStatus {
        self.executors[index]
            .0
            .wait()
            .expect("wait for the executor")
    }

    /// Sends the scheduler a signal, e.g. `INT`, and waits for it to exit.
    pub fn stop_scheduler(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self._scheduler.0.id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
        self._scheduler.0.wait().expect("wait for the scheduler")
    }

    /// SIGKILLs every executor.
    pub fn kill_executors(&mut self) {
        for executor in &mut self.executors {
            let _ = executor.0.kill();
            let _ = executor.0.wait();
        }
    }
}

/// Starts `volley-scheduler` and two `volley-executor`s on random loopback ports.
pub fn start_cluster() -> Cluster {
    start_cluster_with(&ClusterSpec::default())
}

/// Starts a scheduler and executors as `spec` says, on random loopback ports.
pub fn start_cluster_with(spec: &ClusterSpec) -> Cluster {
    let work_dir = tempfile::tempdir().expect("work dir");
    let log_dir = spec
        .log_dir
        .clone()
        .unwrap_or_else(|| work_dir.path().join("logs"));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let credentials = credentials();
    let mut scheduler = Command::new(binary("volley-scheduler"));
    scheduler
        .args(["--bind", "127.0.0.1:0"])
        .args(credentials.scheduler_args())
        .args(
            spec.allow_urls
                .iter()
                .flat_map(|u| ["--allow-url", u.as_str()]),
        )
        .args(&spec.scheduler_args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    let http_url = spec.http.then(|| {
        let port = restartable_port();
        scheduler.args(["--http-bind", &format!("127.0.0.1:{port}")]);
        format!("https://127.0.0.1:{port}")
    });
    let (scheduler, line) = start_logging(scheduler, Some(&log_dir.join("scheduler.log")));
    let url = line
        .rsplit(' ')
        .next()
        .expect("the scheduler prints its URL")
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");
    let mut executors = Vec::new();
    let mut executor_endpoints = Vec::new();
    let mut executor_metrics_urls = Vec::new();
    for i in 0..spec.executors {
        let mut executor = Command::new(binary(spec.executor_binary));
        executor
            .args([
                "--scheduler",
                &url,
                "--bind",
                "127.0.0.1:0",
                "--slots",
                &spec.slots.to_string(),
                "--work-dir",
            ])
            .arg(work_dir.path().join("executors"))
            .args(&spec.executor_args)
            .args(credentials.executor_args())
            .args(
                spec.allow_urls
                    .iter()
                    .flat_map(|u| ["--allow-url", u.as_str()]),
            )
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        if spec.http {
            let port = restartable_port();
            executor.args(["--metrics-bind", &format!("127.0.0.1:{port}")]);
            executor_metrics_urls.push(format!("https://127.0.0.1:{port}"));
        }
        let (executor, line) =
            start_logging(executor, Some(&log_dir.join(format!("executor-{i}.log"))));
        assert!(line.contains("serving on https://127.0.0.1:"), "{line}");
        executor_endpoints.push(line.rsplit(' ').next().unwrap_or_default().to_string());
        executors.push(executor);
    }
    Cluster {
        url,
        _scheduler: scheduler,
        executors,
        executor_endpoints,
        _work_dir: work_dir,
        log_dir,
        http_url,
        executor_metrics_urls,
    }
}

/// Runs `volley` with `args`, TPC-H data cached in `data_dir`.
pub fn volley(args: &[&str], data_dir: &Path) -> Output {
    volley_with_env(args, data_dir, &[])
}

/// Runs `volley sql --scheduler URL --tpch 0.01 --format csv -q -c SQL`
/// (TPC-H tables generated and cached in `data_dir`) with extra environment
/// variables.
pub fn volley_tpch_csv(url: &str, data_dir: &Path, env: &[(String, String)], sql: &str) -> Output {
    volley_with_env(
        &[
            "sql",
            "--scheduler",
            url,
            "--tpch",
            "0.01",
            "--format",
            "csv",
            "-q",
            "-c",
            sql,
        ],
        data_dir,
        env,
    )
}

/// Runs `volley` with `args` and extra environment variables (an empty
/// value removes the variable), as the test user `admin` of
/// [`credentials`] unless `env` says otherwise.
pub fn volley_with_env(args: &[&str], data_dir: &Path, env: &[(String, String)]) -> Output {
    let mut command = Command::new(binary("volley"));
    command
        .args(args)
        .env("VOLLEY_DATA_DIR", data_dir)
        .env_remove("VOLLEY_SCHEDULER")
        .env_remove("VOLLEY_TOKEN_FILE")
        .envs(credentials().env("admin"));
    for (key, value) in env {
        if value.is_empty() {
            command.env_remove(key);
        } else {
            command.env(key, value);
        }
    }
    command.output().expect("run volley")
}
