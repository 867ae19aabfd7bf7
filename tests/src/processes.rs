//! The real binaries as processes: a scheduler and two executors on random
//! loopback ports, and the `volley` command.
//!
//! The binaries are those `cargo test --workspace` builds next to the test
//! executables (each binary crate has an integration test, so cargo builds
//! them).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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
    /// Extra arguments of the scheduler.
    pub scheduler_args: Vec<String>,
    /// Environment of every process (e.g. `AWS_*`).
    pub env: Vec<(String, String)>,
    /// Where the scheduler's log goes (`scheduler.log`), if kept.
    pub log_dir: Option<PathBuf>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            executor_binary: "volley-executor",
            executors: 2,
            scheduler_args: Vec::new(),
            env: Vec::new(),
            log_dir: None,
        }
    }
}

/// A scheduler and executors, as separate processes; stopped on drop.
pub struct Cluster {
    /// The scheduler's URL.
    pub url: String,
    _scheduler: Process,
    executors: Vec<Process>,
    _work_dir: tempfile::TempDir,
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
    let mut scheduler = Command::new(binary("volley-scheduler"));
    scheduler
        .args(["--bind", "127.0.0.1:0"])
        .args(&spec.scheduler_args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    let log = spec.log_dir.as_ref().map(|d| d.join("scheduler.log"));
    let (scheduler, line) = start_logging(scheduler, log.as_deref());
    let addr = line
        .rsplit(' ')
        .next()
        .expect("the scheduler prints its address");
    let url = format!("http://{addr}");
    let work_dir = tempfile::tempdir().expect("work dir");
    let mut executors = Vec::new();
    for _ in 0..spec.executors {
        let mut executor = Command::new(binary(spec.executor_binary));
        executor
            .args([
                "--scheduler",
                &url,
                "--bind",
                "127.0.0.1:0",
                "--slots",
                "2",
                "--work-dir",
            ])
            .arg(work_dir.path())
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        let (executor, line) = start(executor);
        assert!(line.contains("serving on http://127.0.0.1:"), "{line}");
        executors.push(executor);
    }
    Cluster {
        url,
        _scheduler: scheduler,
        executors,
        _work_dir: work_dir,
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

/// Runs `volley` with `args` and extra environment variables.
pub fn volley_with_env(args: &[&str], data_dir: &Path, env: &[(String, String)]) -> Output {
    Command::new(binary("volley"))
        .args(args)
        .env("VOLLEY_DATA_DIR", data_dir)
        .env_remove("VOLLEY_SCHEDULER")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run volley")
}
