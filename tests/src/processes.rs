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
pub fn start(mut command: Command) -> (Process, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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

/// The scheduler and two executors, as separate processes; stopped on drop.
pub struct Cluster {
    /// The scheduler's URL.
    pub url: String,
    _processes: Vec<Process>,
    _work_dir: tempfile::TempDir,
}

/// Starts `volley-scheduler` and two `volley-executor`s on random loopback ports.
pub fn start_cluster() -> Cluster {
    let mut scheduler = Command::new(binary("volley-scheduler"));
    scheduler.args(["--bind", "127.0.0.1:0"]);
    let (scheduler, line) = start(scheduler);
    let addr = line
        .rsplit(' ')
        .next()
        .expect("the scheduler prints its address");
    let url = format!("http://{addr}");
    let work_dir = tempfile::tempdir().expect("work dir");
    let mut processes = vec![scheduler];
    for _ in 0..2 {
        let mut executor = Command::new(binary("volley-executor"));
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
            .arg(work_dir.path());
        let (executor, line) = start(executor);
        assert!(line.contains("serving on http://127.0.0.1:"), "{line}");
        processes.push(executor);
    }
    Cluster {
        url,
        _processes: processes,
        _work_dir: work_dir,
    }
}

/// Runs `volley` with `args`, TPC-H data cached in `data_dir`.
pub fn volley(args: &[&str], data_dir: &Path) -> Output {
    Command::new(binary("volley"))
        .args(args)
        .env("VOLLEY_DATA_DIR", data_dir)
        .env_remove("VOLLEY_SCHEDULER")
        .output()
        .expect("run volley")
}
