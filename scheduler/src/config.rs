//! The scheduler's configuration: one typed struct, filled from command-line
//! flags or environment variables by the binary, or built in code by the
//! embedded cluster.

use std::net::SocketAddr;
use std::time::Duration;

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
        }
    }
}
