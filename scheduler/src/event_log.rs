//! The event log (`--event-log DIR`): each job's events as JSON lines in
//! `DIR/<job id>.jsonl`, appended as they happen — submitted, each stage
//! attempt started and finished (with its rows, bytes, task times and
//! operator metrics), each task failure, and finished. A person reads them
//! with `jq`; the scheduler reads the `job_finished` lines back, so
//! finished jobs stay in `volley jobs list` and the web UI after a
//! restart, and `volley jobs list --all` lists every job the log holds.
//!
//! `job_finished` carries the final status twice: as readable fields, and
//! as the protobuf `JobStatus` the state store also keeps (base64,
//! `status_pb`), which is what the scheduler reads back: one format for a
//! job's final status, wherever it is kept. Result tickets are cleared
//! first; no token or token hash is written.
//!
//! Lines are written by a thread of their own, so the state machine never
//! waits on the disk; each line is one `write` in append mode, so a crash
//! loses at most the lines not yet written, never a line's half.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message;
use serde_json::{Value, json};
use tracing::warn;
use volley_dataflow::JobId;
use volley_proto::{error_kind_name_of, job_state_name, v1};

use crate::error::SchedulerError;

/// What the writer thread is asked to do.
enum Command {
    Append {
        job: JobId,
        line: String,
        last: bool,
    },
    /// Answers once every line sent before it is written.
    Flush(mpsc::Sender<()>),
}

/// A handle on the event log; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct EventLog {
    dir: PathBuf,
    tx: mpsc::Sender<Command>,
}

/// A finished job as the event log holds it.
#[derive(Debug, Clone)]
pub(crate) struct LoggedJob {
    /// Who submitted it (`None`: anonymous, no authentication).
    pub(crate) user: Option<String>,
    pub(crate) status: v1::JobStatus,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl EventLog {
    /// Opens (creating) `dir` and starts the writer.
    pub(crate) fn open(dir: &Path) -> Result<EventLog, SchedulerError> {
        let refused = |e: std::io::Error| SchedulerError::EventLog {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(refused)?;
        // It holds every user's SQL, plans and errors: its owner's only,
        // as the state store.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(refused)?;
        }
        let (tx, rx) = mpsc::channel();
        let writer_dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("volley-event-log".into())
            .spawn(move || write_lines(&writer_dir, rx))
            .map_err(|e| SchedulerError::EventLog {
                path: dir.display().to_string(),
                message: format!("cannot start its writer: {e}"),
            })?;
        Ok(EventLog {
            dir: dir.to_path_buf(),
            tx,
        })
    }

    /// The directory of the log.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `event` (an object) to job `job`'s file, with the time and
    /// the job's id.
    fn append(&self, job: &JobId, mut event: Value, last: bool) {
        if let Some(object) = event.as_object_mut() {
            object.insert("at_ms".into(), json!(now_ms()));
            object.insert("job_id".into(), json!(job.as_str()));
        }
        let _ = self.tx.send(Command::Append {
            job: job.clone(),
            line: event.to_string(),
            last,
        });
    }

    /// Waits until every event appended so far is written.
    pub(crate) fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Command::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Every finished job the log holds, newest first. Unreadable files
    /// and lines are skipped (and said in the log).
    pub(crate) fn finished_jobs(&self) -> Vec<LoggedJob> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut jobs: Vec<LoggedJob> = entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
            .filter_map(|path| read_finished(&path))
            .collect();
        jobs.sort_by(|a, b| {
            (b.status.started_at_ms, &b.status.job_id)
                .cmp(&(a.status.started_at_ms, &a.status.job_id))
        });
        jobs
    }

    /// Job `id`'s final status, if the log holds it.
    pub(crate) fn finished_job(&self, id: &JobId) -> Option<LoggedJob> {
        if !id.is_well_formed() {
            return None;
        }
        read_finished(&self.dir.join(format!("{}.jsonl", id.as_str())))
    }
}

/// The `job_finished` event of one job's file, decoded.
fn read_finished(path: &Path) -> Option<LoggedJob> {
    let file = File::open(path).ok()?;
    let mut found = None;
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else {
            break;
        };
        if !line.contains("\"job_finished\"") {
            continue;
        }
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            warn!(file = %path.display(), "an unreadable line in the event log; skipped");
            continue;
        };
        let decoded = event["status_pb"]
            .as_str()
            .and_then(|pb| BASE64.decode(pb).ok())
            .and_then(|bytes| v1::JobStatus::decode(bytes.as_slice()).ok());
        match decoded {
            Some(status) => {
                found = Some(LoggedJob {
                    user: event["user"].as_str().map(str::to_string),
                    status,
                });
            }
            None => {
                warn!(file = %path.display(), "a job_finished event without a readable status; skipped")
            }
        }
    }
    found
}

/// The writer thread: appends each line to its job's file, keeping a job's
/// file open until its last event.
fn write_lines(dir: &Path, rx: mpsc::Receiver<Command>) {
    let mut open: HashMap<JobId, File> = HashMap::new();
    let mut failed: HashSet<JobId> = HashSet::new();
    for command in rx {
        match command {
            Command::Flush(done) => {
                let _ = done.send(());
            }
            Command::Append { job, line, last } => {
                if !job.is_well_formed() || failed.contains(&job) {
                    continue;
                }
                let path = dir.join(format!("{}.jsonl", job.as_str()));
                let file = match open.entry(job.clone()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let mut options = OpenOptions::new();
                        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                        match options.create(true).append(true).open(&path) {
                            Ok(file) => e.insert(file),
                            Err(error) => {
                                warn!(file = %path.display(), %error, "cannot open the event log file; this job's events are not kept");
                                failed.insert(job);
                                continue;
                            }
                        }
                    }
                };
                let mut bytes = line.into_bytes();
                bytes.push(b'\n');
                if let Err(error) = file.write_all(&bytes) {
                    warn!(file = %path.display(), %error, "cannot write the event log; this job's later events are not kept");
                    open.remove(&job);
                    failed.insert(job);
                    continue;
                }
                if last {
                    open.remove(&job);
                }
            }
        }
    }
}

/// What one job has logged so far, so each event is written once.
#[derive(Debug)]
pub(crate) struct JobEvents {
    log: EventLog,
    user: Option<String>,
    /// (statement, stage, attempt) started, and finished.
    started: HashSet<(u32, u32, u32)>,
    finished: HashSet<(u32, u32, u32)>,
    ended: bool,
}

/// One stage as [`JobEvents::observe`] needs it.
pub(crate) struct StageView<'a> {
    pub(crate) status: &'a v1::StageStatus,
    pub(crate) attempt: u32,
    pub(crate) started: bool,
    pub(crate) finished: bool,
}

impl JobEvents {
    /// Starts job `job`'s events with `job_submitted`.
    pub(crate) fn submitted(
        log: EventLog,
        job: &JobId,
        name: &str,
        user: Option<String>,
        script: bool,
        source: &str,
    ) -> JobEvents {
        log.append(
            job,
            json!({
                "event": "job_submitted",
                "name": name,
                "user": user,
                "kind": if script { "script" } else { "plan" },
                "source": source,
            }),
            false,
        );
        JobEvents {
            log,
            user,
            started: HashSet::new(),
            finished: HashSet::new(),
            ended: false,
        }
    }

    /// Logs what changed since the last call: stages started and finished,
    /// and the job's end. `statement` is the script statement the stages
    /// belong to (from 1; 0 for a plan job).
    pub(crate) fn observe(
        &mut self,
        status: &v1::JobStatus,
        statement: u32,
        stages: &[StageView<'_>],
    ) {
        if self.ended {
            return;
        }
        let job = JobId::from(status.job_id.as_str());
        for stage in stages {
            let key = (statement, stage.status.stage_id, stage.attempt);
            if stage.started && self.started.insert(key) {
                self.log.append(
                    &job,
                    json!({
                        "event": "stage_started",
                        "statement": statement,
                        "stage": stage.status.stage_id,
                        "attempt": stage.attempt,
                        "partitions": stage.status.partitions,
                        "input_stages": stage.status.input_stages,
                    }),
                    false,
                );
            }
            if stage.finished && self.finished.insert(key) {
                let s = stage.status;
                let operators: Vec<Value> = s
                    .operators
                    .iter()
                    .map(|o| {
                        json!({
                            "depth": o.depth,
                            "name": o.name,
                            "output_rows": o.output_rows,
                            "elapsed_compute_ns": o.elapsed_compute_ns,
                            "spill_count": o.spill_count,
                            "spilled_bytes": o.spilled_bytes,
                        })
                    })
                    .collect();
                self.log.append(
                    &job,
                    json!({
                        "event": "stage_finished",
                        "statement": statement,
                        "stage": s.stage_id,
                        "attempt": stage.attempt,
                        "partitions": s.partitions,
                        "rows_out": s.rows_out,
                        "bytes_out": s.bytes_out,
                        "task_busy_us": s.task_busy_us,
                        "median_task_us": s.median_task_us,
                        "longest_task_us": s.longest_task_us,
                        "tasks_by_executor": s.tasks_by_executor,
                        "operators": operators,
                    }),
                    false,
                );
            }
        }
        let state = v1::JobState::try_from(status.state).unwrap_or(v1::JobState::Running);
        if matches!(
            state,
            v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled
        ) {
            self.ended = true;
            let mut kept = status.clone();
            // Tickets to read the result are not history.
            kept.result.clear();
            let error = status.error.as_ref().map(|e| {
                json!({
                    "kind": error_kind_name_of(e.kind),
                    "message": e.message,
                })
            });
            self.log.append(
                &job,
                json!({
                    "event": "job_finished",
                    "name": status.name,
                    "user": self.user,
                    "state": job_state_name(status.state),
                    "error": error,
                    "started_at_ms": status.started_at_ms,
                    "ended_at_ms": status.ended_at_ms,
                    "stages": status.stages_total,
                    "tasks": status.tasks_total,
                    "rows_out": status.rows_out,
                    "rows_shuffled": status.rows_shuffled,
                    "bytes_shuffled": status.bytes_shuffled,
                    "output_files": status.output_files,
                    "status_pb": BASE64.encode(kept.encode_to_vec()),
                }),
                true,
            );
        }
    }

    /// Logs a task attempt that failed.
    pub(crate) fn task_failed(
        &self,
        job: &JobId,
        stage: u32,
        partition: u32,
        attempt: u32,
        executor: &str,
        error: &v1::JobError,
    ) {
        if self.ended {
            return;
        }
        self.log.append(
            job,
            json!({
                "event": "task_failed",
                "stage": stage,
                "partition": partition,
                "attempt": attempt,
                "executor": executor,
                "kind": error_kind_name_of(error.kind),
                "message": error.message,
            }),
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(id: u32) -> v1::StageStatus {
        v1::StageStatus {
            stage_id: id,
            partitions: 2,
            rows_out: 10,
            operators: vec![v1::OperatorMetrics {
                name: "ShuffleWriterExec".into(),
                output_rows: 10,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_jobs_events_are_written_once_each_and_its_final_status_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        let id = JobId::from("job1");
        let mut events = JobEvents::submitted(
            log.clone(),
            &id,
            "nightly",
            Some("alice".into()),
            true,
            "SELECT 1;",
        );
        let s0 = stage(0);
        let mut status = v1::JobStatus {
            job_id: "job1".into(),
            name: "nightly".into(),
            state: v1::JobState::Running as i32,
            started_at_ms: 5,
            stages: vec![s0.clone()],
            result: vec![v1::PartitionLocation::default()],
            ..Default::default()
        };
        let view = |started, finished| StageView {
            status: &s0,
            attempt: 0,
            started,
            finished,
        };
        events.observe(&status, 1, &[view(true, false)]);
        events.observe(&status, 1, &[view(true, false)]);
        events.task_failed(
            &id,
            0,
            1,
            0,
            "e1",
            &v1::JobError {
                kind: v1::ErrorKind::ExecutorLost as i32,
                message: "gone".into(),
                query_error: None,
            },
        );
        events.observe(&status, 1, &[view(true, true)]);
        status.state = v1::JobState::Succeeded as i32;
        events.observe(&status, 1, &[view(true, true)]);
        events.observe(&status, 1, &[view(true, true)]);
        log.flush();

        let text = std::fs::read_to_string(dir.path().join("job1.jsonl")).unwrap();
        let kinds: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "job_submitted",
                "stage_started",
                "task_failed",
                "stage_finished",
                "job_finished"
            ]
        );
        assert!(text.contains("\"output_rows\":10"), "{text}");
        let logged = log.finished_job(&id).expect("the job's final status");
        assert_eq!(logged.user.as_deref(), Some("alice"));
        assert_eq!(logged.status.state, v1::JobState::Succeeded as i32);
        assert!(
            logged.status.result.is_empty(),
            "no result tickets in history"
        );
        assert_eq!(log.finished_jobs().len(), 1);
        assert!(log.finished_job(&JobId::from("../job1")).is_none());
    }

    #[test]
    fn a_damaged_line_is_skipped_and_an_unfinished_job_is_not_history() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.jsonl"),
            "{\"event\":\"job_finished\", broken\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.jsonl"),
            "{\"event\":\"job_submitted\",\"job_id\":\"b\"}\n",
        )
        .unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        assert!(log.finished_jobs().is_empty());
    }
}
