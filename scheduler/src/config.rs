//! The scheduler's configuration: one typed struct, filled from command-line
//! flags or environment variables by the binary, or built in code by the
//! embedded cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use volley_security::{Authenticator, PathPolicy, tls::ServerTls};

/// How a scheduler authenticates callers, encrypts connections and
/// confines the files jobs touch.
#[derive(Clone, Debug)]
pub struct SchedulerSecurity {
    /// Who is calling; insecure (everyone anonymous) only with `--insecure`.
    pub authenticator: Authenticator,
    /// TLS the scheduler's gRPC server presents.
    pub tls: Option<ServerTls>,
    /// Local roots and URLs jobs may read and write on the scheduler
    /// (planning lists files; scripts read schemas; outputs are moved
    /// into place here).
    pub paths: PathPolicy,
    /// How long the tickets the scheduler signs stay valid: shuffle tickets
    /// from the moment their stage is ready, result tickets from each
    /// status. Longer than any task should wait to start.
    pub ticket_ttl: Duration,
    /// Unreleased results one user may leave on the executors; past it,
    /// the oldest is released.
    pub max_unread_results_per_user: usize,
}

impl SchedulerSecurity {
    /// No authentication, no TLS, every path allowed: for tests of other
    /// features, and `--insecure` with `--allow-path /`.
    pub fn insecure_unrestricted() -> Self {
        Self {
            authenticator: Authenticator::insecure(),
            tls: None,
            paths: PathPolicy::unrestricted(),
            ticket_ttl: Duration::from_secs(6 * 3600),
            max_unread_results_per_user: 64,
        }
    }
}

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Partitions per stage; `None`: the cluster's total slots at submit time.
    pub target_partitions: Option<usize>,
    /// An executor silent for this long is declared lost (a closed control
    /// stream counts at once).
    pub executor_timeout: Duration,
    /// How long a finished job's result stays on the executors if its client
    /// never releases it.
    pub result_ttl: Duration,
    /// How many finished jobs' status the scheduler remembers.
    pub job_history: usize,
    /// Attempts of one task before its job fails (retryable failures only).
    pub max_task_attempts: u32,
    /// Times one stage may be re-planned after lost inputs before its job fails.
    pub max_stage_attempts: u32,
    /// How long running jobs wait for executors when none are left.
    pub no_executor_grace: Duration,
    /// Authentication, TLS and path rules.
    pub security: SchedulerSecurity,
    /// Where jobs are kept across restarts (`--state-dir`); `None`: in
    /// memory only, lost with the process.
    pub state_dir: Option<PathBuf>,
    /// Begin with an empty state store, keeping a damaged one aside.
    pub fresh_state: bool,
    /// Where each job's events are appended as JSON lines (`--event-log`),
    /// and finished jobs read back from after a restart; `None`: no log.
    pub event_log: Option<PathBuf>,
    /// Where the web UI and `/metrics` listen (`--http-bind`); `None`: no
    /// HTTP port.
    pub http_bind: Option<SocketAddr>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 50050)),
            target_partitions: None,
            executor_timeout: Duration::from_secs(10),
            result_ttl: Duration::from_secs(600),
            job_history: 1000,
            max_task_attempts: 4,
            max_stage_attempts: 4,
            no_executor_grace: Duration::from_secs(30),
            security: SchedulerSecurity::insecure_unrestricted(),
            state_dir: None,
            fresh_state: false,
            event_log: None,
            http_bind: None,
        }
    }
}
