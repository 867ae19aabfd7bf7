//! Volley's wire protocol: the `volley.v1` protobuf package and the gRPC
//! services generated from it. The scheduler serves [`v1::scheduler_service_server`];
//! executors and clients talk to it through [`v1::scheduler_service_client`].
//! Shuffle and result data does not travel here but over Arrow Flight, with a
//! [`v1::ShuffleTicket`] as the ticket. This crate holds no logic.
#![warn(missing_docs)]

/// The protocol version executors announce when they register. Bump it on
/// any change to `volley.proto` that old peers cannot read.
pub const PROTOCOL_VERSION: u32 = 6;

/// Size limits of what every node decodes or accepts, the same everywhere,
/// so that no peer can make another allocate without bound.
pub mod limits {
    /// A gRPC message carrying a plan: `SubmitJob` (a client's plan with its
    /// in-memory tables, or a script) and the task launches that carry
    /// stage plans to executors.
    pub const MAX_PLAN_MESSAGE_BYTES: usize = 256 << 20;
    /// Any other gRPC message: job statuses, executor reports, listings.
    pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
    /// One Arrow Flight message of shuffle or result data (one batch).
    pub const MAX_FLIGHT_MESSAGE_BYTES: usize = 64 << 20;
    /// A job's name.
    pub const MAX_JOB_NAME_BYTES: usize = 1024;
    /// A script job's SQL text.
    pub const MAX_SCRIPT_BYTES: usize = 16 << 20;
    /// Session settings sent with one job.
    pub const MAX_SETTINGS: usize = 512;
    /// One setting's key plus value.
    pub const MAX_SETTING_BYTES: usize = 8192;
    /// Slots one executor may register with.
    pub const MAX_SLOTS: u32 = 1024;
    /// Partitions of one stage.
    pub const MAX_PARTITIONS: usize = 8192;
    /// Jobs one `ListJobs` answer holds at most.
    pub const MAX_LISTED_JOBS: u32 = 500;
}

/// Generated code of the `volley.v1` package.
// Generated code is not ours to lint; which lints fire depends on the
// generator's version, so `allow` rather than `expect`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::clone_on_ref_ptr,
    clippy::unwrap_used
)]
pub mod v1 {
    tonic::include_proto!("volley.v1");
}

/// The name of a failure kind, as `volley ... --json`, `volley jobs status`
/// and the metrics' `kind` label print it.
pub fn error_kind_name(kind: v1::ErrorKind) -> &'static str {
    match kind {
        v1::ErrorKind::User => "user",
        v1::ErrorKind::ExecutorLost => "executor_lost",
        v1::ErrorKind::FetchFailed => "fetch_failed",
        v1::ErrorKind::ResourcesExhausted => "resources_exhausted",
        v1::ErrorKind::Cancelled => "cancelled",
        v1::ErrorKind::Environment => "environment",
        v1::ErrorKind::NoExecutors => "no_executors",
        _ => "internal",
    }
}

/// The name of a failure kind as it travels (a `JobError.kind`); a kind
/// this build does not know reads as `internal`.
pub fn error_kind_name_of(kind: i32) -> &'static str {
    error_kind_name(v1::ErrorKind::try_from(kind).unwrap_or(v1::ErrorKind::Internal))
}

/// The name of a job state (a `JobStatus.state`), as `--json`, `volley jobs`
/// and the web UI print it.
pub fn job_state_name(state: i32) -> &'static str {
    match v1::JobState::try_from(state) {
        Ok(v1::JobState::Queued) => "queued",
        Ok(v1::JobState::Running) => "running",
        Ok(v1::JobState::Succeeded) => "succeeded",
        Ok(v1::JobState::Failed) => "failed",
        Ok(v1::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// The name of an executor state (an `ExecutorInfo.state`), as `volley
/// executors` and the web UI print it.
pub fn executor_state_name(state: i32) -> &'static str {
    match v1::ExecutorState::try_from(state) {
        Ok(v1::ExecutorState::Draining) => "draining",
        _ => "active",
    }
}

/// A duration given in microseconds, in the unit that reads best.
pub fn duration_text(micros: u64) -> String {
    match micros {
        0..1_000 => format!("{micros}µs"),
        1_000..1_000_000 => format!("{:.1}ms", micros as f64 / 1e3),
        _ => format!("{:.2}s", micros as f64 / 1e6),
    }
}

/// The name an indented plan line starts with: `FilterExec` of
/// `    FilterExec: a@0 > 1`.
fn line_operator(line: &str) -> &str {
    let line = line.trim_start();
    line.split([':', ' ']).next().unwrap_or(line)
}

/// The metrics of one operator, as DataFusion's `EXPLAIN ANALYZE` writes
/// them.
fn metrics_text(op: &v1::OperatorMetrics) -> String {
    format!(
        "metrics=[output_rows={}, elapsed_compute={}, spill_count={}, spilled_bytes={}]",
        op.output_rows,
        duration_text(op.elapsed_compute_ns / 1_000),
        op.spill_count,
        op.spilled_bytes
    )
}

/// A stage's plan as `displayable(..).indent()` prints it, each line
/// followed by its operator's metrics (`operators`, in pre-order, as
/// executors report them and the scheduler sums them). An operator the
/// executors add around joins (`CooperativeExec`) is skipped; a line whose
/// operator cannot be matched is left bare rather than given another's
/// numbers.
pub fn annotated_plan(plan: &str, operators: &[v1::OperatorMetrics]) -> Vec<String> {
    let mut operators = operators.iter().peekable();
    let mut lines = Vec::new();
    for line in plan.lines().filter(|l| !l.trim().is_empty()) {
        let name = line_operator(line);
        while operators
            .peek()
            .is_some_and(|op| op.name != name && op.name == "CooperativeExec")
        {
            operators.next();
        }
        // Some operators print a shorter name than they report
        // (`SortMergeJoin:` for `SortMergeJoinExec`).
        let same = |op: &&v1::OperatorMetrics| {
            op.name == name || op.name.trim_end_matches("Exec") == name.trim_end_matches("Exec")
        };
        match operators.next_if(same) {
            Some(op) => lines.push(format!("{line}, {}", metrics_text(op))),
            None => lines.push(line.to_string()),
        }
    }
    lines
}
