//! The `volley-executor` command line, as a library function so a custom
//! executor binary (one that registers user functions) is a few lines:
//!
//! ```no_run
//! use volley_dataflow::UdfRegistry;
//!
//! fn main() -> std::process::ExitCode {
//!     let udfs = UdfRegistry::new(); // .with_udf(f).with_udaf(g).with_udwf(h)
//!     volley_executor::run_main(udfs)
//! }
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use volley_dataflow::UdfRegistry;

use volley_security::tls::{ClientTls, ServerTls};
use volley_security::{ClusterSecret, PathPolicy};

use crate::config::{
    ExecutorConfig, ExecutorSecurity, WireCompression, default_memory_limit, parse_size,
};
use crate::executor::{Executor, Stopped};

/// Volley's executor: runs stage tasks with DataFusion and serves shuffle output over Arrow Flight.
#[derive(Debug, Parser)]
#[command(name = "volley-executor", version)]
struct Args {
    /// URL of the scheduler.
    #[arg(
        long,
        env = "VOLLEY_SCHEDULER",
        default_value = "http://127.0.0.1:50050"
    )]
    scheduler: String,
    /// Address of the Flight service (port 0 picks a free one and registers it).
    #[arg(long, env = "VOLLEY_EXECUTOR_BIND", default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Host name to advertise to other executors and clients (default: the
    /// bind IP; for a wildcard bind such as 0.0.0.0, the address this
    /// machine reaches the scheduler from).
    #[arg(long, env = "VOLLEY_EXECUTOR_HOST")]
    advertise_host: Option<String>,
    /// Seconds to keep trying to reach a scheduler that does not answer yet,
    /// with backoff, before exiting 1. Only at start: an executor that lost
    /// its scheduler keeps trying until it is back.
    #[arg(long, env = "VOLLEY_REGISTER_TIMEOUT_SECS", default_value_t = 60.0)]
    register_timeout_secs: f64,
    /// Seconds a draining executor (SIGTERM, or `volley executors drain`)
    /// waits for its running tasks and for the jobs that read its stored
    /// output before it stops anyway (exit 0 either way).
    #[arg(
        long = "drain-timeout-secs",
        env = "VOLLEY_DRAIN_TIMEOUT_SECS",
        default_value_t = 300.0
    )]
    drain_timeout_secs: f64,
    /// Seconds the executor keeps its stored shuffle output after losing
    /// the scheduler, for a scheduler restarted with its --state-dir to take
    /// over.
    #[arg(
        long = "orphan-grace-secs",
        env = "VOLLEY_ORPHAN_GRACE_SECS",
        default_value_t = 600.0
    )]
    orphan_grace_secs: f64,
    /// Tasks run at once (default: the number of CPUs).
    #[arg(long, env = "VOLLEY_EXECUTOR_SLOTS")]
    slots: Option<usize>,
    /// Directory for spilled shuffle output and operator spill files.
    #[arg(long, env = "VOLLEY_WORK_DIR", default_value_os_t = std::env::temp_dir().join("volley"))]
    work_dir: PathBuf,
    /// Memory budget for tasks and shuffle buffers, e.g. 512M or 4G
    /// (default: half of the machine's or cgroup's memory). Operators spill
    /// and shuffle output goes to the work dir past it.
    #[arg(long, env = "VOLLEY_MEMORY_LIMIT", value_parser = parse_size)]
    memory_limit: Option<usize>,
    /// Shuffle output kept in memory, all outputs together, e.g. 256M
    /// (default: a sixteenth of the memory budget); the rest is written to
    /// files in the work dir.
    #[arg(long, env = "VOLLEY_SHUFFLE_MEMORY", value_parser = parse_size)]
    shuffle_memory: Option<usize>,
    /// Compression of shuffle and result data sent to readers, and of
    /// spilled shuffle files: auto (none to readers on this machine, LZ4 to
    /// others; spilled files uncompressed until a quarter of the memory
    /// limit is held in them, then LZ4), none (nowhere), lz4 or zstd.
    #[arg(long, env = "VOLLEY_SHUFFLE_COMPRESSION", default_value = "auto")]
    shuffle_compression: WireCompression,
    /// Address of Prometheus `/metrics` (HTTPS with --tls-cert; readable
    /// with the cluster's metrics token, `volley secret metrics-token`),
    /// e.g. 127.0.0.1:50090. Off unless given.
    #[arg(long, env = "VOLLEY_METRICS_BIND")]
    metrics_bind: Option<std::net::SocketAddr>,
    /// The file holding the secret shared with the scheduler.
    #[arg(long, env = "VOLLEY_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Run without the cluster secret, against a scheduler started with
    /// --insecure: anyone who reaches the Flight port may fetch data.
    #[arg(long)]
    insecure: bool,
    /// PEM certificate chain the Flight server presents (enables TLS).
    #[arg(long, env = "VOLLEY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "VOLLEY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate the scheduler and other executors are checked
    /// against (https:// URLs); with it, executors that present a client
    /// certificate signed by it are checked too.
    #[arg(long, env = "VOLLEY_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate to present to the scheduler and other
    /// executors (mutual TLS).
    #[arg(long, env = "VOLLEY_TLS_CLIENT_CERT", requires_all = ["tls_client_key", "tls_ca"])]
    tls_client_cert: Option<PathBuf>,
    /// PEM private key of --tls-client-cert.
    #[arg(long, env = "VOLLEY_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    tls_client_key: Option<PathBuf>,
    /// Local directory tasks may read tables from and write output to
    /// (repeatable). Without any, no local path is allowed.
    #[arg(long = "allow-path", env = "VOLLEY_ALLOW_PATHS", value_delimiter = ',')]
    allow_paths: Vec<PathBuf>,
    /// Object-store bucket or prefix tasks may use (repeatable).
    #[arg(long = "allow-url", env = "VOLLEY_ALLOW_URLS", value_delimiter = ',')]
    allow_urls: Vec<String>,
}

fn security(args: &Args) -> Result<ExecutorSecurity, String> {
    let cluster_secret = match (&args.cluster_secret_file, args.insecure) {
        (Some(path), _) => Some(ClusterSecret::load(path).map_err(|e| e.to_string())?),
        (None, true) => None,
        (None, false) => {
            return Err(
                "refusing to start without the cluster secret: pass --cluster-secret-file \
                 FILE (the scheduler's), or --insecure against an insecure scheduler"
                    .into(),
            );
        }
    };
    let server_tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(ServerTls::load(cert, key, args.tls_ca.as_deref()).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let client_tls = match &args.tls_ca {
        Some(ca) => {
            let tls = ClientTls::load(ca).map_err(|e| e.to_string())?;
            Some(match (&args.tls_client_cert, &args.tls_client_key) {
                (Some(cert), Some(key)) => {
                    tls.with_identity(cert, key).map_err(|e| e.to_string())?
                }
                _ => tls,
            })
        }
        None => None,
    };
    if let Some(metrics) = args.metrics_bind
        && server_tls.is_none()
        && !metrics.ip().is_loopback()
        && !args.insecure
    {
        return Err(format!(
            "refusing to serve /metrics on {metrics} without TLS; pass --tls-cert and \
             --tls-key, or --insecure"
        ));
    }
    if server_tls.is_none() && !args.bind.ip().is_loopback() && !args.insecure {
        return Err(format!(
            "refusing to serve data on {} without TLS; pass --tls-cert and --tls-key, or \
             --insecure",
            args.bind
        ));
    }
    let paths = PathPolicy::from_flags(&args.allow_paths, &args.allow_urls)?;
    Ok(ExecutorSecurity {
        cluster_secret,
        server_tls,
        client_tls,
        paths,
    })
}

/// Runs an executor with the command-line flags of `volley-executor`, able
/// to run the functions of `udfs`, until its scheduler goes away (exit 1) or
/// it is interrupted (exit 0).
pub fn run_main(udfs: UdfRegistry) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("volley-executor: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(udfs))
}

async fn run(udfs: UdfRegistry) -> ExitCode {
    let _telemetry = volley_dataflow::init_logging("volley-executor", "info");
    let args = Args::parse();
    let security = match security(&args) {
        Ok(security) => security,
        Err(e) => {
            eprintln!("volley-executor: {e}");
            return ExitCode::from(2);
        }
    };
    if security.cluster_secret.is_none() {
        eprintln!(
            "volley-executor: WARNING: --insecure: anyone who reaches {} can fetch the data it holds.",
            args.bind
        );
    }
    let mut config = ExecutorConfig::new(args.scheduler, args.work_dir);
    config.bind = args.bind;
    config.advertise_host = args.advertise_host;
    config.register_patience =
        std::time::Duration::from_secs_f64(args.register_timeout_secs.max(0.0));
    config.drain_timeout = std::time::Duration::from_secs_f64(args.drain_timeout_secs.max(0.0));
    config.orphan_grace = std::time::Duration::from_secs_f64(args.orphan_grace_secs.max(0.0));
    if let Some(slots) = args.slots {
        config.slots = slots;
    }
    config.memory_limit = args.memory_limit.unwrap_or_else(default_memory_limit);
    config.compression = args.shuffle_compression;
    config.metrics_bind = args.metrics_bind;
    config.shuffle_memory = args.shuffle_memory;
    config.udfs = udfs;
    config.security = security;
    let mut executor = match Executor::start(config).await {
        Ok(executor) => executor,
        Err(e) => {
            eprintln!("volley-executor: {e}");
            return ExitCode::from(1);
        }
    };
    // A closed stdout (a supervisor that read this line) must not stop it.
    let _ = writeln!(
        std::io::stdout(),
        "volley-executor {} serving on {}",
        executor.id(),
        executor.endpoint()
    );
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(e) => {
            eprintln!("volley-executor: cannot watch for SIGTERM: {e}");
            return ExitCode::from(1);
        }
    };
    let mut draining = false;
    let code = loop {
        tokio::select! {
            stopped = executor.wait() => match stopped {
                Ok(Stopped::Drained) => {
                    eprintln!("volley-executor: drained; stopping");
                    break ExitCode::SUCCESS;
                }
                Ok(Stopped::DrainTimedOut) => {
                    eprintln!("volley-executor: drain timed out; stopping");
                    break ExitCode::SUCCESS;
                }
                Err(reason) => {
                    eprintln!("volley-executor: {reason}");
                    break ExitCode::from(1);
                }
            },
            _ = terminate.recv() => {
                if draining {
                    eprintln!("volley-executor: asked again to stop; stopping now");
                    break ExitCode::SUCCESS;
                }
                eprintln!("volley-executor: SIGTERM: draining (a second SIGTERM stops at once)");
                draining = true;
                executor.drain();
            }
            _ = tokio::signal::ctrl_c() => break ExitCode::SUCCESS,
        }
    };
    // A stop, clean or on an error, leaves nothing behind in the work
    // directory: dropping the executor removes its own. What a SIGKILL
    // leaves, the next executor started on the same --work-dir removes.
    drop(executor);
    code
}
