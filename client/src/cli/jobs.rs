//! `volley jobs list|status|wait|cancel`, and following a job to its end
//! (shared with `volley submit --wait`): progress on a terminal, one plain
//! line per finished stage otherwise, the final status as text or JSON, and
//! the job's outcome as the exit code.

use std::io::IsTerminal;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use volley_client::{ClientError, JobId, SchedulerClient, is_terminal, v1};
use volley_proto::{error_kind_name_of, job_state_name};

use super::connection::ClusterArgs;
use super::json_report::{print_json, timed_out};
use super::progress::{Progress, describe, human_bytes, recovery_note};

/// Arguments of `volley jobs`.
#[derive(Debug, clap::Args)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum JobsCommand {
    /// List running and recently finished jobs, newest first.
    List {
        /// Print JSON (an array of job statuses).
        #[arg(long)]
        json: bool,
        /// Also the finished jobs only the scheduler's event log
        /// (`volley-scheduler --event-log DIR`) still holds.
        #[arg(long)]
        all: bool,
    },
    /// Show one job's status.
    Status {
        /// The job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wait for a job to end; the exit code is the job's (4 when --timeout
    /// fires first).
    Wait {
        /// The job id.
        id: String,
        /// Stop waiting after this long, e.g. 90s, 5m, 1h; the job goes on
        /// unless --cancel-on-timeout.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// When --timeout fires, also cancel the job.
        #[arg(long, requires = "timeout")]
        cancel_on_timeout: bool,
        /// Print the final status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: its tasks stop on every executor.
    Cancel {
        /// The job id.
        id: String,
    },
}

/// Parses `250ms`, `90s`, `5m`, `1h` or a plain number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((text, ""), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 90s, 5m, 1h)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}` has an unknown unit (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub(crate) async fn run(args: JobsArgs) -> Result<(), ClientError> {
    let client = args.cluster.connect().await?;
    match args.command {
        JobsCommand::List { json, all } => {
            let jobs = if all {
                client.list_all_jobs().await?
            } else {
                client.list_jobs().await?
            };
            if json {
                print_json(&Value::Array(jobs.iter().map(status_json).collect()));
            } else {
                print_table(&jobs);
            }
            Ok(())
        }
        JobsCommand::Status { id, json } => {
            let status = client.status(&JobId::from(id)).await.map_err(unknown_job)?;
            print_status(&status, json);
            Ok(())
        }
        JobsCommand::Wait {
            id,
            timeout,
            cancel_on_timeout,
            json,
        } => {
            let job_id = JobId::from(id);
            let wait = Wait {
                timeout,
                cancel_on_timeout,
            };
            match follow(&client, &job_id, wait).await.map_err(unknown_job) {
                Ok(status) => {
                    print_status(&status, json);
                    outcome(&status)
                }
                Err(e @ ClientError::Timeout { .. }) => {
                    if json {
                        print_timed_out(&client, &job_id, &e).await;
                    }
                    Err(e)
                }
                Err(e) => Err(e),
            }
        }
        JobsCommand::Cancel { id } => {
            let job_id = JobId::from(id);
            let cancelled = client.cancel(&job_id).await.map_err(unknown_job)?;
            if cancelled {
                println!("job {job_id} cancelled");
            } else {
                println!("job {job_id} had already ended");
            }
            Ok(())
        }
    }
}

fn unknown_job(error: ClientError) -> ClientError {
    match error {
        ClientError::Scheduler(status) if status.code() == tonic::Code::NotFound => {
            ClientError::Usage(status.message().to_string())
        }
        other => other,
    }
}

/// Prints the `--json` answer of a wait that timed out: the job's status
/// as the scheduler has it, marked `timed_out`.
pub(crate) async fn print_timed_out(client: &SchedulerClient, job_id: &JobId, error: &ClientError) {
    let status = match client.status(job_id).await {
        Ok(status) => status_json(&status),
        Err(_) => json!({"job_id": job_id.as_str(), "state": Value::Null}),
    };
    print_json(&timed_out(status, error));
}

fn timestamp(ms: u64) -> Value {
    if ms == 0 {
        return Value::Null;
    }
    chrono::DateTime::from_timestamp_millis(ms as i64).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

fn elapsed_ms(status: &v1::JobStatus) -> u64 {
    let end = if status.ended_at_ms > 0 {
        status.ended_at_ms
    } else {
        chrono::Utc::now().timestamp_millis().max(0) as u64
    };
    end.saturating_sub(status.started_at_ms)
}

/// A job status as the JSON object `--json` prints.
pub(crate) fn status_json(status: &v1::JobStatus) -> Value {
    json!({
        "job_id": status.job_id,
        "name": status.name,
        "state": job_state_name(status.state),
        "started_at": timestamp(status.started_at_ms),
        "ended_at": timestamp(status.ended_at_ms),
        "elapsed_ms": elapsed_ms(status),
        "stages": {"done": status.stages_done, "total": status.stages_total},
        "tasks": {"done": status.tasks_done, "total": status.tasks_total, "running": status.tasks_running},
        "statements": {"done": status.statements_done, "total": status.statements_total},
        "rows_out": status.rows_out,
        "rows_shuffled": status.rows_shuffled,
        "bytes_shuffled": status.bytes_shuffled,
        "output_files": status.output_files,
        "error": status.error.as_ref().map(|e| json!({"kind": error_kind_name_of(e.kind), "message": e.message})),
        "recovery": status.recovery.map(|r| json!({
            "tasks_retried": r.tasks_retried,
            "map_tasks_rerun": r.map_tasks_rerun,
            "stages_rerun": r.stages_rerun,
            "executors_lost": r.executors_lost,
            "scheduler_restarts": r.scheduler_restarts,
            "outputs_recovered": r.outputs_recovered,
        })),
    })
}

fn print_status(status: &v1::JobStatus, json: bool) {
    if json {
        print_json(&status_json(status));
        return;
    }
    let name = if status.name.is_empty() {
        String::new()
    } else {
        format!(" ({})", status.name)
    };
    println!(
        "job {}{name}: {}",
        status.job_id,
        job_state_name(status.state)
    );
    println!("  elapsed   {:.3}s", elapsed_ms(status) as f64 / 1000.0);
    println!("  progress  {}", describe(status));
    println!("  rows out  {}", status.rows_out);
    if !status.output_files.is_empty() {
        println!(
            "  output    {} files, e.g. {}",
            status.output_files.len(),
            status.output_files[0]
        );
    }
    if let Some(error) = &status.error {
        println!(
            "  error     [{}] {}",
            error_kind_name_of(error.kind),
            error.message
        );
    }
}

fn print_table(jobs: &[v1::JobStatus]) {
    println!(
        "{:<14} {:<20} {:<10} {:>9} {:>12} {:>10}",
        "JOB", "NAME", "STATE", "STAGES", "ROWS OUT", "ELAPSED"
    );
    for job in jobs {
        let mut name = job.name.clone();
        name.truncate(20);
        println!(
            "{:<14} {:<20} {:<10} {:>9} {:>12} {:>9.1}s",
            job.job_id,
            name,
            job_state_name(job.state),
            format!("{}/{}", job.stages_done, job.stages_total),
            job.rows_out,
            elapsed_ms(job) as f64 / 1000.0
        );
    }
}

/// The exit status of a finished job: failed jobs are errors (exit 1),
/// cancelled ones exit 5.
pub(crate) fn outcome(status: &v1::JobStatus) -> Result<(), ClientError> {
    if status.state == v1::JobState::Succeeded as i32 {
        return Ok(());
    }
    Err(
        ClientError::from_failed_job(status).unwrap_or_else(|| ClientError::JobFailed {
            job_id: JobId::from(status.job_id.as_str()),
            kind: v1::ErrorKind::Internal,
            message: format!("job {} has not ended", status.job_id),
            query_error: None,
        }),
    )
}

/// How long to follow a job, and what to do when that time is up.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Wait {
    /// Stop after this long (no limit: `None`).
    pub(crate) timeout: Option<Duration>,
    /// Cancel the job when `timeout` fires.
    pub(crate) cancel_on_timeout: bool,
}

/// Follows a job to its end. Past `wait.timeout` the result is a
/// [`ClientError::Timeout`], and the job is cancelled on the cluster if
/// `wait.cancel_on_timeout`.
pub(crate) async fn follow(
    client: &SchedulerClient,
    job_id: &JobId,
    wait: Wait,
) -> Result<v1::JobStatus, ClientError> {
    let timeout = wait.timeout;
    let progress = std::io::stderr().is_terminal().then(Progress::new);
    let mut updates = Box::pin(client.watch(job_id).await?);
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut last_stages = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let result = loop {
        let next = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, updates.next()).await.ok(),
                None => Some(updates.next().await),
            }
        };
        tokio::select! {
            item = next => match item {
                None => {
                    if wait.cancel_on_timeout {
                        client.cancel(job_id).await?;
                    }
                    break Err(ClientError::Timeout {
                        job_id: job_id.clone(),
                        after: timeout.unwrap_or_default(),
                        cancelled: wait.cancel_on_timeout,
                    });
                }
                Some(None) => break Err(ClientError::SchedulerUnreachable {
                    url: client.url().to_string(),
                    message: format!("the status stream of job {job_id} ended early"),
                }),
                Some(Some(status)) => {
                    let status = status?;
                    match &progress {
                        Some(progress) => progress.update(&status),
                        None => {
                            let stages = (status.statements_done, status.stages_done);
                            if last_stages != Some(stages) && status.stages_total > 0 {
                                eprintln!("job {job_id}: {}", describe(&status));
                                last_stages = Some(stages);
                            }
                        }
                    }
                    if is_terminal(status.state) {
                        break Ok(status);
                    }
                }
            },
            _ = tick.tick() => if let Some(progress) = &progress { progress.tick() },
        }
    };
    if let Some(progress) = &progress {
        progress.stop();
    }
    result
}

/// One line about a finished job, for people.
pub(crate) fn summary(status: &v1::JobStatus) -> String {
    let mut line = format!(
        "job {} {} in {:.3}s ({} stages, {} shuffled)",
        status.job_id,
        job_state_name(status.state),
        elapsed_ms(status) as f64 / 1000.0,
        status.stages_total,
        human_bytes(status.bytes_shuffled)
    );
    if !status.output_files.is_empty() {
        line.push_str(&format!(
            "; wrote {} rows to {} files",
            status.rows_out,
            status.output_files.len()
        ));
    }
    if let Some(note) = recovery_note(status) {
        line.push_str(&format!("; {note}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }
}
