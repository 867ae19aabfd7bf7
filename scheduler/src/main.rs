//! `volley-scheduler`: runs a Volley scheduler until interrupted.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use volley_scheduler::{SchedulerConfig, SchedulerSecurity, SchedulerServer};
use volley_security::tls::ServerTls;
use volley_security::{Authenticator, ClusterSecret, PathPolicy, Users};

/// Volley's scheduler: plans jobs into stages and places their tasks on executors.
#[derive(Debug, Parser)]
#[command(name = "volley-scheduler", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one; the chosen address is
    /// printed on stdout).
    #[arg(long, env = "VOLLEY_SCHEDULER_BIND", default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
    /// Partitions per stage (default: the cluster's total slots).
    #[arg(long, env = "VOLLEY_TARGET_PARTITIONS")]
    target_partitions: Option<usize>,
    /// Seconds without a heartbeat after which an executor is declared lost.
    #[arg(long, env = "VOLLEY_EXECUTOR_TIMEOUT_SECS", default_value_t = 10.0)]
    executor_timeout_secs: f64,
    /// Seconds a running job waits for executors when none is left before
    /// it fails.
    #[arg(long, env = "VOLLEY_NO_EXECUTOR_GRACE_SECS", default_value_t = 30.0)]
    no_executor_grace_secs: f64,
    /// How many finished jobs the scheduler keeps (status, and results not
    /// yet read) before forgetting the oldest.
    #[arg(long, env = "VOLLEY_JOB_HISTORY", default_value_t = 1000)]
    job_history: usize,
    /// The users file: `name role sha256:HEX` per line (make one with
    /// `volley users add`).
    #[arg(long, env = "VOLLEY_USERS")]
    users: Option<PathBuf>,
    /// The file holding the secret executors share with the scheduler (make
    /// one with `volley secret generate`).
    #[arg(long, env = "VOLLEY_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Run without authentication: anyone who reaches the port may submit
    /// jobs and register executors. For a trusted single-user machine only.
    #[arg(long)]
    insecure: bool,
    /// PEM certificate chain the scheduler presents (enables TLS).
    #[arg(long, env = "VOLLEY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "VOLLEY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Local directory jobs may read tables from and write output to
    /// (repeatable). Without any, no local path is allowed.
    #[arg(long = "allow-path", env = "VOLLEY_ALLOW_PATHS", value_delimiter = ',')]
    allow_paths: Vec<PathBuf>,
    /// Object-store bucket or prefix jobs may use, e.g. s3://bucket/prefix
    /// (repeatable).
    #[arg(long = "allow-url", env = "VOLLEY_ALLOW_URLS", value_delimiter = ',')]
    allow_urls: Vec<String>,
    /// Directory of the scheduler's state store: jobs, their progress and
    /// their history survive a restart with the same directory. Without it,
    /// jobs live in memory only.
    #[arg(long, env = "VOLLEY_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Begin with an empty state store: an existing (say, damaged) one is
    /// kept aside as state.sqlite.corrupt.
    #[arg(long, requires = "state_dir")]
    fresh_state: bool,
    /// Directory where each job's events (submitted, stages started and
    /// finished with their metrics, task failures, finished) are appended
    /// as JSON lines, one file per job. Finished jobs are read back from it
    /// after a restart; `volley jobs list --all` lists all it holds.
    #[arg(long, env = "VOLLEY_EVENT_LOG", value_name = "DIR")]
    event_log: Option<PathBuf>,
    /// Address of the web UI and Prometheus `/metrics` (HTTP, or HTTPS with
    /// --tls-cert; the same tokens as gRPC), e.g. 127.0.0.1:50080. Off
    /// unless given.
    #[arg(long, env = "VOLLEY_HTTP_BIND")]
    http_bind: Option<SocketAddr>,
    /// Seconds a signed shuffle or result ticket stays valid.
    #[arg(long, env = "VOLLEY_TICKET_TTL_SECS", default_value_t = 6 * 3600)]
    ticket_ttl_secs: u64,
}

fn security(args: &Args) -> Result<SchedulerSecurity, String> {
    let authenticator = match (&args.users, &args.cluster_secret_file, args.insecure) {
        (Some(users), Some(secret), _) => Authenticator::new(
            Users::load(users).map_err(|e| e.to_string())?,
            ClusterSecret::load(secret).map_err(|e| e.to_string())?,
        ),
        (None, None, true) => Authenticator::insecure(),
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err("--users and --cluster-secret-file go together".into());
        }
        (None, None, false) => {
            return Err(
                "refusing to start without authentication: pass --users FILE and \
                 --cluster-secret-file FILE (see `volley users add` and `volley secret \
                 generate`), or --insecure on a trusted single-user machine"
                    .into(),
            );
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(ServerTls::load(cert, key, None).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    if let Some(http) = args.http_bind
        && tls.is_none()
        && !http.ip().is_loopback()
        && !args.insecure
    {
        return Err(format!(
            "refusing to serve the web UI on {http} without TLS: tokens would cross the \
             network in clear text; pass --tls-cert and --tls-key, or --insecure"
        ));
    }
    if tls.is_none() && !args.bind.ip().is_loopback() && !args.insecure {
        return Err(format!(
            "refusing to listen on {} without TLS: credentials would cross the network in \
             clear text; pass --tls-cert and --tls-key (see `volley certs generate`), or \
             --insecure",
            args.bind
        ));
    }
    let paths = PathPolicy::from_flags(&args.allow_paths, &args.allow_urls)?;
    Ok(SchedulerSecurity {
        authenticator,
        tls,
        paths,
        ticket_ttl: Duration::from_secs(args.ticket_ttl_secs.max(1)),
        ..SchedulerSecurity::insecure_unrestricted()
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = volley_dataflow::init_logging("volley-scheduler", "info");
    let args = Args::parse();
    let security = match security(&args) {
        Ok(security) => security,
        Err(e) => {
            eprintln!("volley-scheduler: {e}");
            return ExitCode::from(2);
        }
    };
    if !security.authenticator.is_secure() {
        eprintln!(
            "volley-scheduler: WARNING: --insecure: no authentication. Anyone who reaches \
             {} can submit jobs, read their results and register executors.",
            args.bind
        );
    }
    let config = SchedulerConfig {
        bind: args.bind,
        target_partitions: args.target_partitions,
        executor_timeout: Duration::from_secs_f64(args.executor_timeout_secs.max(0.1)),
        no_executor_grace: Duration::from_secs_f64(args.no_executor_grace_secs.max(0.0)),
        job_history: args.job_history.max(1),
        security,
        state_dir: args.state_dir.clone(),
        fresh_state: args.fresh_state,
        event_log: args.event_log.clone(),
        http_bind: args.http_bind,
        ..SchedulerConfig::default()
    };
    let server = match SchedulerServer::start(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("volley-scheduler: cannot start on {}: {e}", args.bind);
            return ExitCode::from(1);
        }
    };
    // One line on stdout, which a supervisor may read and then close: a
    // closed stdout must not stop the scheduler, so errors are ignored.
    // The gRPC URL stays the line's last word, which scripts read.
    let line = match server.http_url() {
        Some(http) => format!(
            "volley-scheduler (web UI and /metrics on {http}) listening on {}",
            server.url()
        ),
        None => format!("volley-scheduler listening on {}", server.url()),
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    tokio::select! {
        result = server.wait() => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("volley-scheduler: {e}");
                ExitCode::from(1)
            }
        },
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}
