//! The scheduler's state machine: executors, jobs, and the placement of
//! tasks on free slots. Every method is synchronous and its only side
//! effects are non-blocking sends (to executors' control streams and to job
//! watchers), so the whole machine can be driven deterministically in unit
//! tests with channel-backed fake executors.
//!
//! Placement: tasks of runnable stages, oldest job first, go to the executor
//! with the most free slots (ties broken by id), so a stage spreads over the
//! cluster. A stage's plan goes to an executor with its first task there;
//! later launches refer to it by `(job, stage, attempt)`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::sync::mpsc;
// The state machine's clock: tokio's, which tests pause and advance.
use tokio::time::Instant;
use tracing::{debug, info, warn};
use volley_dataflow::{ExecutorId, JobId, OutputAttempt, PartitionStats, StageId, TaskId};
use volley_proto::{error_kind_name_of, v1};
use volley_security::Caller;

use crate::access::JobAccess;
use crate::config::SchedulerConfig;
use crate::event_log::EventLog;
use crate::job::{Job, JobPhase};
use crate::metrics::SchedulerMetrics;
use crate::output_target::{Commit, OutputTarget};
use crate::recovery::{RecoveryLimits, is_retryable};
use crate::stage::{FinishedOutput, TaskSlot};
use crate::state_store::{Epoch, Journal, StoreOp};

/// What the scheduler sends down an executor's control stream.
pub(crate) type ExecutorSender = mpsc::UnboundedSender<Result<v1::SchedulerMessage, tonic::Status>>;

#[derive(Debug)]
struct ExecutorEntry {
    endpoint: String,
    slots: usize,
    running: HashMap<TaskId, (JobId, StageId)>,
    sender: ExecutorSender,
    last_seen: Instant,
    stored_outputs: u32,
    memory_reserved: u64,
    memory_limit: u64,
    /// Shuffle output in memory and on disk, and bytes spilled so far.
    shuffle: (u64, u64, u64),
    drain: Drain,
}

/// Where an executor is in leaving the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// It takes tasks.
    Active,
    /// It takes no new tasks; its running tasks finish and its stored output
    /// is served until no job needs it.
    Draining,
    /// Nothing on it is needed any more and it was told it may stop; its
    /// leaving is not a loss.
    Released,
}

impl ExecutorEntry {
    fn free_slots(&self) -> usize {
        if self.drain != Drain::Active {
            return 0;
        }
        self.slots.saturating_sub(self.running.len())
    }

    fn send(&self, kind: v1::scheduler_message::Kind) {
        // A closed channel means the executor's stream is gone; its loss is
        // handled where the stream ends.
        let _ = self
            .sender
            .send(Ok(v1::SchedulerMessage { kind: Some(kind) }));
    }
}

/// All of the scheduler's mutable state.
#[derive(Debug, Default)]
pub(crate) struct SchedulerState {
    executors: BTreeMap<ExecutorId, ExecutorEntry>,
    jobs: HashMap<JobId, Job>,
    /// Running jobs in submission order.
    active: VecDeque<JobId>,
    /// Finished jobs, oldest first, with whether their result was released.
    history: VecDeque<JobId>,
    released: HashSet<JobId>,
    next_task_id: u64,
    job_history: usize,
    /// Unreleased results one user may leave on the executors.
    max_unread: usize,
    limits: RecoveryLimits,
    /// How long running jobs wait when no executor is left.
    grace: Duration,
    /// Since when no executor is left.
    no_executors_since: Option<Instant>,
    /// When executors' silence was last checked (`expire_executors`).
    last_expiry_check: Option<Instant>,
    /// Commits object-store outputs outside the lock (`server.rs`).
    committer: Option<Committer>,
    /// Where changes go to be stored (`--state-dir`), and this scheduler's
    /// epoch on that store (0: none).
    journal: Option<Journal>,
    /// Where jobs' events go (`--event-log`).
    event_log: Option<EventLog>,
    epoch: u64,
    /// What `/metrics` exports.
    pub(crate) metrics: SchedulerMetrics,
    /// Set while a restarted scheduler waits for the executors of its
    /// previous life to re-attach before it places any task.
    recovering: Option<Recovering>,
}

/// A restarted scheduler waiting for executors to re-attach.
#[derive(Debug)]
struct Recovering {
    /// When it stops waiting.
    deadline: Instant,
    /// Executors registered when the previous scheduler stopped (their ids
    /// then) that have not re-attached yet.
    awaited: HashSet<ExecutorId>,
    /// Map outputs the store knew of, per recovered job.
    stored: HashMap<JobId, Vec<(u32, u32)>>,
}

/// What an executor registering again brings from its last registration.
#[derive(Debug, Default)]
pub(crate) struct Previous {
    pub(crate) id: Option<ExecutorId>,
    pub(crate) epoch: u64,
    pub(crate) held: Vec<v1::HeldOutput>,
}

/// Where succeeded jobs' outputs go to be committed (`server.rs`).
pub(crate) type Committer = mpsc::UnboundedSender<(JobId, Commit)>;

impl SchedulerState {
    pub(crate) fn new(config: &SchedulerConfig) -> Self {
        Self {
            job_history: config.job_history,
            max_unread: config.security.max_unread_results_per_user,
            limits: RecoveryLimits {
                max_task_attempts: config.max_task_attempts.max(1),
                max_stage_attempts: config.max_stage_attempts.max(1),
            },
            grace: config.no_executor_grace,
            ..Default::default()
        }
    }

    /// Logs the events of every job submitted from now on in `log`.
    pub(crate) fn set_event_log(&mut self, log: EventLog) {
        self.event_log = Some(log);
    }

    /// The event log, if there is one.
    pub(crate) fn event_log(&self) -> Option<&EventLog> {
        self.event_log.as_ref()
    }

    /// Stores every change through `journal`, as the scheduler of `epoch`.
    pub(crate) fn set_journal(&mut self, journal: Journal, epoch: Epoch) {
        self.journal = Some(journal);
        self.epoch = epoch.0;
    }

    /// This scheduler's epoch, without a store (for tests of restarts).
    #[cfg(test)]
    fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    fn record(&self, op: StoreOp) {
        if let Some(journal) = &self.journal {
            journal.record(op);
        }
    }

    /// Whether job `id` is known (running, or in the history).
    pub(crate) fn has_job(&self, id: &JobId) -> bool {
        self.jobs.contains_key(id)
    }

    /// A finished job kept by the state store joins the history.
    pub(crate) fn restore_finished(&mut self, job: Job, released: bool) {
        let id = job.id.clone();
        if released {
            self.released.insert(id.clone());
        }
        self.jobs.insert(id.clone(), job);
        self.history.push_back(id);
    }

    /// Starts waiting, until `deadline` at the latest, for the executors
    /// registered when the previous scheduler stopped (`awaited`) to
    /// re-attach; no task is placed meanwhile.
    pub(crate) fn begin_recovery(&mut self, wait: Duration, awaited: HashSet<ExecutorId>) {
        info!(
            executors = awaited.len(),
            ?wait,
            "waiting for the previous scheduler's executors to re-attach"
        );
        self.recovering = Some(Recovering {
            deadline: Instant::now() + wait,
            awaited,
            stored: HashMap::new(),
        });
    }

    /// An unfinished job, planned again from the state store, resumes;
    /// `stored` names the map outputs the store knew had finished.
    pub(crate) fn recover(&mut self, job: Job, stored: Vec<(u32, u32)>) {
        let id = job.id.clone();
        info!(job_id = %id, stages = job.stages().len(), "job recovered from the state store");
        if let Some(recovering) = &mut self.recovering {
            recovering.stored.insert(id.clone(), stored);
        }
        self.jobs.insert(id.clone(), job);
        self.active.push_back(id);
    }

    /// Stops waiting for executors to re-attach: outputs nobody brought
    /// back run again, and every job resumes.
    fn end_recovery(&mut self) {
        let Some(recovering) = self.recovering.take() else {
            return;
        };
        for id in &recovering.awaited {
            warn!(executor_id = %id, "an executor of the previous scheduler did not re-attach");
        }
        for (job_id, stored) in &recovering.stored {
            if let Some(job) = self.jobs.get_mut(job_id) {
                // What no unfinished stage reads is not run again.
                let released = job.release_unneeded();
                job.count_lost_outputs(stored);
                self.drop_released(job_id, released);
            }
        }
        info!(jobs = self.active.len(), "recovery over; placing tasks");
        let active: Vec<JobId> = self.active.iter().cloned().collect();
        for id in active {
            self.advance(&id);
        }
        self.schedule();
    }

    /// Slots of the executors that take tasks (not draining ones).
    pub(crate) fn total_slots(&self) -> usize {
        self.executors
            .values()
            .filter(|e| e.drain == Drain::Active)
            .map(|e| e.slots)
            .sum()
    }

    pub(crate) fn executors_info(&self) -> Vec<v1::ExecutorInfo> {
        self.executors
            .iter()
            .map(|(id, e)| v1::ExecutorInfo {
                executor_id: id.to_string(),
                endpoint: e.endpoint.clone(),
                slots: e.slots as u32,
                free_slots: e.free_slots() as u32,
                stored_outputs: e.stored_outputs,
                running_tasks: e.running.len() as u32,
                memory_reserved: e.memory_reserved,
                memory_limit: e.memory_limit,
                shuffle_memory_bytes: e.shuffle.0,
                shuffle_disk_bytes: e.shuffle.1,
                shuffle_spilled_bytes: e.shuffle.2,
                state: match e.drain {
                    Drain::Active => v1::ExecutorState::Active,
                    Drain::Draining | Drain::Released => v1::ExecutorState::Draining,
                } as i32,
            })
            .collect()
    }

    /// Registers an executor and confirms it with `proof` (the answer to its
    /// nonce). An id already connected cannot be taken over.
    pub(crate) fn register_executor(
        &mut self,
        id: ExecutorId,
        endpoint: String,
        slots: usize,
        sender: ExecutorSender,
        proof: Vec<u8>,
        previous: Previous,
    ) -> Result<(), tonic::Status> {
        if let Some(existing) = self.executors.get(&id)
            && !existing.sender.is_closed()
        {
            warn!(executor_id = %id, "registration refused: the id is connected already");
            return Err(tonic::Status::already_exists(format!(
                "executor {id} is connected already; an executor registers with a fresh id"
            )));
        }
        info!(executor_id = %id, %endpoint, slots, "executor registered");
        let entry = ExecutorEntry {
            endpoint,
            slots,
            running: HashMap::new(),
            sender,
            last_seen: Instant::now(),
            stored_outputs: 0,
            memory_reserved: 0,
            memory_limit: 0,
            shuffle: (0, 0, 0),
            drain: Drain::Active,
        };
        entry.send(v1::scheduler_message::Kind::Registered(v1::Registered {
            protocol_version: volley_proto::PROTOCOL_VERSION,
            proof,
            epoch: self.epoch,
        }));
        let endpoint = entry.endpoint.clone();
        self.executors.insert(id.clone(), entry);
        self.record(StoreOp::ExecutorJoined(id.clone()));
        self.no_executors_since = None;
        self.take_over_outputs(&id, &endpoint, previous);
        self.schedule();
        Ok(())
    }

    /// An executor registering again after this scheduler restarted keeps
    /// what it held: outputs of recovered jobs that are still to be made are
    /// taken over, results of finished jobs not yet read are kept, and
    /// everything else is dropped. After a registration with the same
    /// scheduler (which lost it and re-ran its work) or without a state
    /// store, the executor drops everything itself.
    fn take_over_outputs(&mut self, id: &ExecutorId, endpoint: &str, previous: Previous) {
        let restarted = self.epoch != 0 && previous.epoch != self.epoch;
        if !restarted || previous.id.is_none() {
            return;
        }
        let mut by_job: BTreeMap<String, Vec<v1::HeldOutput>> = BTreeMap::new();
        for held in previous.held {
            by_job.entry(held.job_id.clone()).or_default().push(held);
        }
        let mut taken = 0;
        let mut touched = Vec::new();
        for (job_id, held) in by_job {
            let job_id = JobId::from(job_id.as_str());
            let keep = match self.jobs.get_mut(&job_id) {
                // A job that plans differently now cannot use what was kept
                // (and its tasks must not find it): dropped below.
                Some(job) if !job.phase().is_terminal() && job.takes_over_outputs() => {
                    for output in held {
                        let attempt = OutputAttempt::from(output.attempt.as_ref());
                        let kept = FinishedOutput {
                            executor: id.clone(),
                            endpoint: endpoint.to_string(),
                            stats: partition_stats(&output.partition_rows, &output.partition_bytes),
                            attempt,
                        };
                        if job.offer_output(
                            StageId(output.stage_id),
                            output.map_partition as usize,
                            kept,
                        ) {
                            taken += 1;
                            let journal = self.journal.as_ref();
                            journal.inspect(|j| {
                                j.record(StoreOp::Output {
                                    job: job_id.clone(),
                                    stage: output.stage_id,
                                    map: output.map_partition,
                                    output: v1::StoredMapOutput {
                                        stage_attempt: attempt.stage_attempt,
                                        epoch: attempt.epoch,
                                        executor_id: id.to_string(),
                                        endpoint: endpoint.to_string(),
                                        partition_rows: output.partition_rows,
                                        partition_bytes: output.partition_bytes,
                                    },
                                })
                            });
                        }
                    }
                    touched.push(job_id.clone());
                    true
                }
                Some(job) if job.phase().is_terminal() => {
                    *job.phase() == JobPhase::Succeeded && !self.released.contains(&job_id)
                }
                Some(_) => false,
                None => false,
            };
            if !keep && let Some(entry) = self.executors.get(id) {
                entry.send(v1::scheduler_message::Kind::RemoveJobData(
                    v1::RemoveJobData {
                        job_id: job_id.to_string(),
                        stage_ids: Vec::new(),
                    },
                ));
            }
        }
        info!(executor_id = %id, previous_id = ?previous.id.as_ref().map(|p| p.to_string()), outputs = taken, "executor re-attached after a scheduler restart");
        for job_id in touched {
            self.advance(&job_id);
        }
        let all_back = self.recovering.as_mut().is_some_and(|recovering| {
            if let Some(previous) = &previous.id {
                recovering.awaited.remove(previous);
            }
            recovering.awaited.is_empty()
        });
        if all_back {
            self.end_recovery();
        }
    }

    /// Any message from an executor shows it is alive.
    pub(crate) fn heartbeat(&mut self, id: &ExecutorId) {
        if let Some(entry) = self.executors.get_mut(id) {
            entry.last_seen = Instant::now();
        }
    }

    /// A heartbeat also reports how much the executor holds.
    pub(crate) fn heartbeat_report(&mut self, id: &ExecutorId, report: &v1::Heartbeat) {
        if let Some(entry) = self.executors.get_mut(id) {
            entry.last_seen = Instant::now();
            entry.stored_outputs = report.stored_outputs;
            entry.memory_reserved = report.memory_reserved;
            entry.memory_limit = report.memory_limit;
            entry.shuffle = (
                report.shuffle_memory_bytes,
                report.shuffle_disk_bytes,
                report.shuffle_spilled_bytes,
            );
        }
    }

    /// Starts draining executor `id`: it takes no new tasks, and once
    /// nothing on it is needed it is told it may stop (`Released`). Returns
    /// false for an unknown executor.
    pub(crate) fn drain_executor(&mut self, id: &ExecutorId, reason: &str) -> bool {
        let Some(entry) = self.executors.get_mut(id) else {
            return false;
        };
        if entry.drain == Drain::Active {
            info!(executor_id = %id, %reason, running = entry.running.len(), "executor draining");
            entry.drain = Drain::Draining;
            entry.send(v1::scheduler_message::Kind::Drain(v1::Drain {}));
        }
        self.release_drained();
        true
    }

    /// Tells each draining executor that nothing on it is needed any more
    /// (no task runs there, and no job still needs output stored only
    /// there) that it may stop.
    fn release_drained(&mut self) {
        let draining: Vec<ExecutorId> = self
            .executors
            .iter()
            .filter(|(_, e)| e.drain == Drain::Draining && e.running.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in draining {
            let needed_by = self
                .active
                .iter()
                .chain(self.history.iter().filter(|j| !self.released.contains(*j)))
                .find(|job_id| {
                    self.jobs
                        .get(*job_id)
                        .is_some_and(|job| job.needs_executor(&id))
                });
            if let Some(job_id) = needed_by {
                debug!(executor_id = %id, %job_id, "draining executor still holds needed output");
                continue;
            }
            if let Some(entry) = self.executors.get_mut(&id) {
                info!(executor_id = %id, "executor drained: nothing on it is needed");
                entry.drain = Drain::Released;
                entry.send(v1::scheduler_message::Kind::Released(v1::Released {}));
            }
        }
    }

    /// Declares executors silent for longer than `timeout` lost.
    ///
    /// It is called every tenth of `timeout`, at least every 100 ms
    /// (`server.rs`). Called more than half a timeout (and a second) after
    /// the last time, the scheduler itself did not run in between (its
    /// process or machine stalled: in `volley-bench` at TPC-H SF 100, work
    /// that blocked the runtime it shares with an embedded cluster held it
    /// for 18 to 22 s), so heartbeats may be waiting unread and the silence
    /// is not the executors'. Each then gets a whole timeout from now to be
    /// heard from; one really gone is declared lost that much later.
    pub(crate) fn expire_executors(&mut self, timeout: Duration) {
        let now = Instant::now();
        let stall = (timeout / 2).max(Duration::from_secs(1));
        if let Some(last) = self.last_expiry_check.replace(now)
            && now.duration_since(last) > stall
        {
            warn!(
                stalled = ?now.duration_since(last),
                "the scheduler did not run for a while; every executor gets a whole timeout to be heard from"
            );
            for executor in self.executors.values_mut() {
                executor.last_seen = executor.last_seen.max(now);
            }
        }
        if self.recovering.as_ref().is_some_and(|r| now >= r.deadline) {
            self.end_recovery();
        }
        let expired: Vec<ExecutorId> = self
            .executors
            .iter()
            .filter(|(_, e)| now.duration_since(e.last_seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.executor_lost(&id, &format!("no heartbeat for {timeout:?}"));
        }
        if let Some(since) = self.no_executors_since
            && now.duration_since(since) > self.grace
        {
            let waiting: Vec<JobId> = self.active.iter().cloned().collect();
            for job_id in waiting {
                self.fail_job(
                    &job_id,
                    v1::JobError {
                        kind: v1::ErrorKind::NoExecutors as i32,
                        message: format!(
                            "every executor of job {job_id} was lost and none came back within {:?}",
                            self.grace
                        ), query_error: None, },
                );
            }
        }
    }

    /// An executor is gone: every running job recovers what it ran and held
    /// there (see `recovery`); with no executor left, jobs wait for one for
    /// the grace period.
    pub(crate) fn executor_lost(&mut self, id: &ExecutorId, reason: &str) {
        let Some(entry) = self.executors.remove(id) else {
            return;
        };
        self.record(StoreOp::ExecutorLeft(id.clone()));
        if entry.drain == Drain::Released {
            info!(executor_id = %id, endpoint = %entry.endpoint, "drained executor left");
            self.schedule();
            return;
        }
        warn!(executor_id = %id, endpoint = %entry.endpoint, %reason, "executor lost");
        self.metrics
            .tasks_failed("executor_lost", entry.running.len() as u64);
        let active: Vec<JobId> = self.active.iter().cloned().collect();
        for job_id in active {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            job.withdraw_offers(id);
            match job.executor_lost(id, self.limits) {
                Ok(false) => {}
                Ok(true) => {
                    info!(job_id = %job_id, executor_id = %id, "recovering from a lost executor");
                    self.advance(&job_id);
                }
                Err(mut error) => {
                    error.message = format!(
                        "executor {id} ({}) was lost ({reason}) and job {job_id} could not recover: {}",
                        entry.endpoint, error.message
                    );
                    self.fail_job(&job_id, error);
                }
            }
        }
        if self.executors.is_empty() && !self.active.is_empty() {
            warn!(grace = ?self.grace, "no executors left; running jobs wait for new ones");
            self.no_executors_since.get_or_insert_with(Instant::now);
        }
        self.schedule();
    }

    /// Adds a planned job and starts what can start.
    pub(crate) fn submit(&mut self, mut job: Job) {
        let id = job.id.clone();
        self.metrics.job_submitted();
        job.start_trace();
        if let Some(log) = &self.event_log {
            job.log_events(log.clone());
        }
        if job.phase().is_terminal() {
            self.metrics
                .job_finished(job.phase().name(), job.run_time());
            self.record(StoreOp::Ended {
                job: id.clone(),
                status: Box::new(job.status()),
            });
            self.jobs.insert(id.clone(), job);
            self.remember_finished(id);
            return;
        }
        if self.executors.is_empty() && self.recovering.is_none() {
            job.finish(JobPhase::Failed(v1::JobError {
                kind: v1::ErrorKind::NoExecutors as i32,
                message: "no executor registered with the scheduler within the grace period \
                          (--no-executor-grace-secs)"
                    .into(),
                query_error: None,
            }));
            self.metrics
                .job_finished(job.phase().name(), job.run_time());
            self.record(StoreOp::Ended {
                job: id.clone(),
                status: Box::new(job.status()),
            });
            self.jobs.insert(id.clone(), job);
            self.remember_finished(id);
            return;
        }
        info!(job_id = %id, stages = job.stages().len(), "job submitted");
        self.jobs.insert(id.clone(), job);
        self.active.push_back(id.clone());
        self.advance(&id);
        self.schedule();
    }

    /// Adds a script job; its driver feeds it one statement at a time.
    pub(crate) fn submit_script(&mut self, mut job: Job) {
        let id = job.id.clone();
        self.metrics.job_submitted();
        job.start_trace();
        if let Some(log) = &self.event_log {
            job.log_events(log.clone());
        }
        info!(job_id = %id, "script job submitted");
        self.jobs.insert(id.clone(), job);
        self.active.push_back(id);
    }

    /// Starts the next statement of a running script job; `false` if the
    /// job has ended (failed or cancelled) meanwhile.
    pub(crate) fn begin_statement(
        &mut self,
        id: &JobId,
        number: u32,
        line: u32,
        stages: Vec<crate::stage_planner::StagePlan>,
        result_schema: Vec<u8>,
        done: tokio::sync::oneshot::Sender<()>,
    ) -> bool {
        let Some(job) = self.jobs.get_mut(id).filter(|j| !j.phase().is_terminal()) else {
            return false;
        };
        let previous = job.stage_ids();
        job.begin_statement(number, line, stages, result_schema, done);
        if !previous.is_empty() {
            // The last statement's data and plans are not read again (its
            // stage ids are its own: outputs kept for a later statement of
            // a restarted script stay).
            self.broadcast(v1::scheduler_message::Kind::RemoveJobData(
                v1::RemoveJobData {
                    job_id: id.to_string(),
                    stage_ids: previous,
                },
            ));
        }
        if self.executors.is_empty() && self.recovering.is_none() {
            self.fail_job(
                id,
                v1::JobError {
                    kind: v1::ErrorKind::NoExecutors as i32,
                    message: "no executor registered with the scheduler within the grace period \
                          (--no-executor-grace-secs)"
                        .into(),
                    query_error: None,
                },
            );
            return false;
        }
        self.advance(id);
        self.schedule();
        true
    }

    /// A script statement that ran on the scheduler alone is done.
    pub(crate) fn local_statement_done(&mut self, id: &JobId) {
        if let Some(job) = self.jobs.get_mut(id) {
            job.local_statement_done();
        }
    }

    /// A script job ran all its statements.
    /// A script job prepared `target`: if the job fails, it goes with it.
    pub(crate) fn attach_script_output(&mut self, id: &JobId, target: OutputTarget) {
        match self.jobs.get_mut(id) {
            Some(job) if !job.phase().is_terminal() => job.script_outputs.push(target),
            _ => target.abandon(),
        }
    }

    /// A script job ran all its statements; its outputs (`commit`) are
    /// moved into place like a plan job's, then it succeeds.
    pub(crate) fn finish_script(&mut self, id: &JobId, commit: Commit) {
        let Some(job) = self.jobs.get_mut(id).filter(|j| !j.phase().is_terminal()) else {
            commit.abandon();
            return;
        };
        // The committer owns them now.
        job.script_outputs.clear();
        if commit.targets.is_empty() {
            info!(job_id = %id, "script job succeeded");
            self.end_job(id, JobPhase::Succeeded);
        } else {
            self.commit(id, commit);
        }
    }

    /// Fails a running job with `error`.
    pub(crate) fn fail(&mut self, id: &JobId, error: v1::JobError) {
        self.fail_job(id, error);
        self.schedule();
    }

    /// The statuses of the jobs `caller` may see, newest first: at most
    /// `limit`, starting after `before` (a job id from the previous page).
    /// Stage plans (with their literals and paths) are shown to a job's
    /// owner only, and result tickets to nobody. Also returns the id to
    /// pass as `before` for the next page, if more remain.
    pub(crate) fn list_jobs(
        &self,
        caller: &Caller,
        before: Option<&JobId>,
        limit: usize,
    ) -> (Vec<v1::JobStatus>, Option<String>) {
        let visible = self.jobs_visible_to(caller);
        let start = match before {
            Some(id) => visible
                .iter()
                .position(|job| job.id == *id)
                .map_or(visible.len(), |i| i + 1),
            None => 0,
        };
        let page: Vec<&Job> = visible.iter().skip(start).take(limit).copied().collect();
        let next = (start + page.len() < visible.len())
            .then(|| page.last().map(|job| job.id.to_string()))
            .flatten();
        let jobs = page
            .into_iter()
            .map(|job| {
                let mut status = job.status();
                status.result.clear();
                if !job.access.is_owner(caller) {
                    for stage in &mut status.stages {
                        stage.plan.clear();
                    }
                }
                status
            })
            .collect();
        (jobs, next)
    }

    /// The jobs `caller` may see, newest first.
    pub(crate) fn jobs_visible_to(&self, caller: &Caller) -> Vec<&Job> {
        let mut visible: Vec<&Job> = self
            .jobs
            .values()
            .filter(|job| job.access.visible_to(caller))
            .collect();
        visible.sort_by(|a, b| b.started_key().cmp(&a.started_key()));
        visible
    }

    /// Job `id`, if it is known.
    pub(crate) fn job(&self, id: &JobId) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// Who may see job `id`, if it is known.
    pub(crate) fn job_access(&self, id: &JobId) -> Option<&JobAccess> {
        self.jobs.get(id).map(|job| &job.access)
    }

    /// A watcher for a job's status.
    pub(crate) fn watch(&self, id: &JobId) -> Option<tokio::sync::watch::Receiver<v1::JobStatus>> {
        self.jobs.get(id).map(|j| j.watch.subscribe())
    }

    pub(crate) fn cancel(&mut self, id: &JobId) -> bool {
        let running = self.jobs.get(id).is_some_and(|j| !j.phase().is_terminal());
        if running {
            info!(job_id = %id, "job cancelled");
            self.end_job(id, JobPhase::Cancelled);
            self.schedule();
        }
        running
    }

    /// The client has read the result: drop it from the executors.
    pub(crate) fn release(&mut self, id: &JobId) {
        if self.jobs.contains_key(id) && self.released.insert(id.clone()) {
            self.record(StoreOp::Released(id.clone()));
            self.broadcast(v1::scheduler_message::Kind::RemoveJobData(
                v1::RemoveJobData {
                    job_id: id.to_string(),
                    stage_ids: Vec::new(),
                },
            ));
            self.release_drained();
        }
    }

    /// Releases results of jobs that ended more than `ttl` ago.
    pub(crate) fn expire_results(&mut self, ttl: Duration) {
        let now = Instant::now();
        let expired: Vec<JobId> = self
            .history
            .iter()
            .filter(|id| !self.released.contains(*id))
            .filter(|id| {
                self.jobs
                    .get(*id)
                    .and_then(|j| j.ended_instant)
                    .is_some_and(|t| now.duration_since(t) > ttl)
            })
            .cloned()
            .collect();
        for id in expired {
            self.release(&id);
        }
    }

    pub(crate) fn task_status(&mut self, from: &ExecutorId, status: v1::TaskStatus) {
        let task_id = TaskId(status.task_id);
        let freed = self
            .executors
            .get_mut(from)
            .and_then(|e| e.running.remove(&task_id));
        let Some(key) = status.stage.as_ref() else {
            warn!(executor_id = %from, %task_id, "task status without a stage key");
            return;
        };
        let job_id = JobId::from(key.job_id.as_str());
        let stage_id = StageId(key.stage_id);
        if freed.is_none() {
            debug!(executor_id = %from, %task_id, "status of a task not running here; ignored");
            self.schedule();
            return;
        }
        let Some(job) = self.jobs.get_mut(&job_id) else {
            self.schedule();
            return;
        };
        if job.phase().is_terminal() {
            self.schedule();
            return;
        }
        let Some(stage_index) = job.stage_index(stage_id) else {
            self.schedule();
            return;
        };
        let stage = job.stage_mut(stage_index);
        let partition = status.partition as usize;
        if !stage.is_current(partition, task_id, key.stage_attempt) {
            debug!(job_id = %job_id, stage = %stage_id, %task_id, "stale task status ignored");
            self.schedule();
            return;
        }
        match status.result {
            Some(v1::task_status::Result::Success(success)) => {
                let endpoint = self
                    .executors
                    .get(from)
                    .map(|e| e.endpoint.clone())
                    .unwrap_or_default();
                let stats = partition_stats(&success.partition_rows, &success.partition_bytes);
                // The executor named the output with the task's stage
                // attempt under this scheduler's epoch.
                let attempt = OutputAttempt::new(self.epoch, key.stage_attempt);
                if let Some(journal) = &self.journal {
                    journal.record(StoreOp::Output {
                        job: job_id.clone(),
                        stage: stage_id.0,
                        map: partition as u32,
                        output: v1::StoredMapOutput {
                            stage_attempt: attempt.stage_attempt,
                            epoch: attempt.epoch,
                            executor_id: from.to_string(),
                            endpoint: endpoint.clone(),
                            partition_rows: success.partition_rows.clone(),
                            partition_bytes: success.partition_bytes.clone(),
                        },
                    });
                }
                if let Some(TaskSlot::Running { launched, .. }) = stage.slot(partition) {
                    self.metrics.task_succeeded(launched.elapsed());
                }
                let output = FinishedOutput {
                    executor: from.clone(),
                    endpoint,
                    stats,
                    attempt,
                };
                if stage.succeed(partition, output) {
                    stage.add_operator_metrics(from, &success.operators);
                    stage.add_key_summaries(partition, &success.key_summaries);
                }
                for fetch in success.fetches {
                    let entry = job
                        .traffic
                        .entry((ExecutorId::from(fetch.from_executor), from.clone()))
                        .or_default();
                    entry.0 += fetch.bytes;
                    entry.1 += fetch.fetches;
                }
                // Pipelined consumers already running read it now.
                for (executor, ready) in job.announce_map_output(stage_index, partition) {
                    if let Some(entry) = self.executors.get(&executor) {
                        entry.send(v1::scheduler_message::Kind::MapOutputsReady(ready));
                    }
                }
                let last = job.stages().len().saturating_sub(1);
                if stage_index != last && job.stages()[stage_index].is_finished() {
                    // The final stage's inputs go when the job ends.
                    let released = job.release_inputs_of(stage_index);
                    self.drop_released(&job_id, released);
                }
                debug!(job_id = %job_id, stage = %stage_id, %task_id, executor_id = %from, "task succeeded");
                self.advance(&job_id);
            }
            Some(v1::task_status::Result::Failure(failure)) => {
                let fetch = match &failure.reason {
                    Some(v1::task_failure::Reason::FetchFailed(fetch)) => Some(fetch.clone()),
                    _ => None,
                };
                let error = task_failure_to_job_error(&job_id, stage_id, partition, from, failure);
                job.log_task_failure(stage_id, status.partition, status.attempt, from, &error);
                self.metrics.tasks_failed(error_kind_name_of(error.kind), 1);
                warn!(job_id = %job_id, stage = %stage_id, %task_id, executor_id = %from, error = %error.message, "task failed");
                if let Some(fetch) = &fetch {
                    // The holder is alive, yet `from` could not read from
                    // it: a partition between the two, or a broken Flight
                    // service there. Retrying on the same pair would fail
                    // again, so the job stops using the holder, while
                    // another executor is left for it.
                    let holder = ExecutorId::from(fetch.executor_id.as_str());
                    let others = self
                        .executors
                        .keys()
                        .filter(|id| **id != holder && !job.is_excluded(id))
                        .count();
                    if holder != *from
                        && self.executors.contains_key(&holder)
                        && !job.is_excluded(from)
                        && !job.is_excluded(&holder)
                        && others > 0
                    {
                        warn!(job_id = %job_id, reader = %from, %holder, "an executor cannot read from a live one; the job stops placing tasks on the holder");
                        job.exclude(holder);
                    }
                }
                let recovered = match fetch {
                    Some(fetch) => job.fetch_failed(
                        stage_index,
                        partition,
                        StageId(fetch.map_stage),
                        fetch.map_partition as usize,
                        &ExecutorId::from(fetch.executor_id),
                        self.limits,
                    ),
                    None if is_retryable(error.kind) => {
                        job.retry_task(stage_index, partition, from, error, self.limits)
                    }
                    None => Err(error),
                };
                match recovered {
                    Ok(()) => self.advance(&job_id),
                    Err(error) => self.fail_job(&job_id, error),
                }
            }
            None => {
                warn!(job_id = %job_id, %task_id, "task status without a result");
            }
        }
        self.schedule();
    }

    /// Resolves newly runnable stages; finishes the job when its final stage
    /// is done.
    fn advance(&mut self, id: &JobId) {
        if let Some(job) = self.jobs.get_mut(id) {
            job.withdraw_stalled_pipelines();
        }
        self.cancel_superseded(id);
        if self.resolve_stages(id).is_none() {
            return;
        }
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        if job.final_stage().is_none_or(|s| s.is_finished()) {
            if let Some(script) = &mut job.script {
                // A script's statement is done; its driver decides what next.
                if let Some(done) = script.statement_done.take() {
                    script.statements_done += 1;
                    let _ = done.send(());
                }
                job.publish();
                return;
            }
            if let Some(target) = job.output_target.take() {
                self.commit(
                    id,
                    Commit {
                        targets: vec![target],
                        lists_files: true,
                    },
                );
                return;
            }
            info!(job_id = %id, "job succeeded");
            self.end_job(id, JobPhase::Succeeded);
        } else {
            job.publish();
        }
    }

    /// Makes job `id`'s stages that can run now runnable; one that cannot
    /// be prepared fails the job. Returns how many became runnable, `None`
    /// when the job is gone or failed.
    fn resolve_stages(&mut self, id: &JobId) -> Option<usize> {
        let job = self.jobs.get_mut(id)?;
        match job.resolve_ready_stages() {
            Ok(ready) => {
                for stage in &ready {
                    debug!(job_id = %id, %stage, "stage runnable");
                }
                Some(ready.len())
            }
            Err(e) => {
                let error = v1::JobError {
                    kind: v1::ErrorKind::Internal as i32,
                    message: format!("could not prepare a stage of job {id}: {e}"),
                    query_error: None,
                };
                self.fail_job(id, error);
                None
            }
        }
    }

    /// Stops the tasks of job `id`'s superseded attempts where they run and
    /// frees their slots; their late statuses are ignored.
    fn cancel_superseded(&mut self, id: &JobId) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let mut by_executor: BTreeMap<ExecutorId, Vec<u64>> = BTreeMap::new();
        for (executor, task_id) in job.superseded.drain(..) {
            by_executor.entry(executor).or_default().push(task_id.0);
        }
        for (executor, task_ids) in by_executor {
            if let Some(entry) = self.executors.get_mut(&executor) {
                for task_id in &task_ids {
                    entry.running.remove(&TaskId(*task_id));
                }
                debug!(job_id = %id, executor_id = %executor, tasks = task_ids.len(), "cancelling superseded tasks");
                entry.send(v1::scheduler_message::Kind::CancelTasks(v1::CancelTasks {
                    task_ids,
                }));
            }
        }
    }

    /// Where a job whose last stage finished sends its object-store output
    /// to be committed.
    pub(crate) fn set_committer(&mut self, committer: Committer) {
        self.committer = Some(committer);
    }

    /// The one way a succeeded job's outputs are moved into place, for plan
    /// and script jobs: the committer does it outside this lock and reports
    /// back (`output_committed`); the job succeeds only then.
    fn commit(&mut self, id: &JobId, commit: Commit) {
        match &self.committer {
            Some(committer) => {
                info!(job_id = %id, outputs = commit.targets.len(), "committing the output");
                if let Some(job) = self.jobs.get_mut(id) {
                    job.publish();
                }
                let _ = committer.send((id.clone(), commit));
            }
            None => {
                commit.abandon();
                self.fail_job(
                    id,
                    v1::JobError {
                        kind: v1::ErrorKind::Internal as i32,
                        message: "this scheduler has no committer for job outputs".into(),
                        query_error: None,
                    },
                );
            }
        }
    }

    /// The committer moved job `id`'s outputs into place (the files of its
    /// output, if it lists them) or could not; the job ends accordingly.
    /// Returns false when the job had ended meanwhile (cancelled): the
    /// caller removes the outputs.
    pub(crate) fn output_committed(
        &mut self,
        id: &JobId,
        result: Result<Option<Vec<String>>, String>,
    ) -> bool {
        let Some(job) = self.jobs.get_mut(id).filter(|j| !j.phase().is_terminal()) else {
            return false;
        };
        match result {
            Ok(files) => {
                job.output_files = files;
                info!(job_id = %id, "job succeeded");
                self.end_job(id, JobPhase::Succeeded);
            }
            Err(e) => self.fail_job(
                id,
                v1::JobError {
                    kind: v1::ErrorKind::Environment as i32,
                    message: format!("cannot move the output into place: {e}"),
                    query_error: None,
                },
            ),
        }
        true
    }

    fn fail_job(&mut self, id: &JobId, error: v1::JobError) {
        if self.jobs.get(id).is_some_and(|j| !j.phase().is_terminal()) {
            warn!(job_id = %id, error = %error.message, "job failed");
            self.end_job(id, JobPhase::Failed(error));
        }
    }

    /// Ends a running job: stops its tasks and drops the data no one will
    /// read (everything but a successful job's result).
    fn end_job(&mut self, id: &JobId, phase: JobPhase) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let succeeded = phase == JobPhase::Succeeded;
        if let Some(target) = job.output_target.take() {
            // Failed or cancelled: nothing appears at the output path.
            target.abandon();
        }
        for target in job.script_outputs.drain(..) {
            // Only a script that did not finish still holds any.
            target.abandon();
        }
        job.finish(phase);
        self.metrics
            .job_finished(job.phase().name(), job.run_time());
        if let Some(journal) = &self.journal {
            journal.record(StoreOp::Ended {
                job: id.clone(),
                status: Box::new(job.status()),
            });
        }
        let intermediate = job.intermediate_stage_ids();
        self.active.retain(|j| j != id);
        if succeeded {
            if !intermediate.is_empty() {
                self.broadcast(v1::scheduler_message::Kind::RemoveJobData(
                    v1::RemoveJobData {
                        job_id: id.to_string(),
                        stage_ids: intermediate,
                    },
                ));
            }
        } else {
            self.broadcast(v1::scheduler_message::Kind::CancelJobTasks(
                v1::CancelJobTasks {
                    job_id: id.to_string(),
                },
            ));
            self.broadcast(v1::scheduler_message::Kind::RemoveJobData(
                v1::RemoveJobData {
                    job_id: id.to_string(),
                    stage_ids: Vec::new(),
                },
            ));
            self.released.insert(id.clone());
            // Slots of cancelled tasks free now; late statuses are ignored.
            for entry in self.executors.values_mut() {
                entry.running.retain(|_, (job, _)| job != id);
            }
        }
        self.remember_finished(id.clone());
    }

    fn remember_finished(&mut self, id: JobId) {
        self.release_unread_beyond_limit(&id);
        self.history.push_back(id);
        while self.history.len() > self.job_history {
            if let Some(old) = self.history.pop_front() {
                if !self.released.contains(&old) {
                    self.release(&old);
                }
                self.released.remove(&old);
                self.jobs.remove(&old);
                self.record(StoreOp::Forgotten(old));
            }
        }
    }

    /// Results nobody reads are bounded per user: when job `id` ends, the
    /// owner's oldest unreleased results beyond the limit are released.
    fn release_unread_beyond_limit(&mut self, id: &JobId) {
        let Some(owner) = self.jobs.get(id).map(|j| j.access.owner().cloned()) else {
            return;
        };
        let unread: Vec<JobId> = self
            .history
            .iter()
            .filter(|old| !self.released.contains(*old))
            .filter(|old| {
                self.jobs
                    .get(*old)
                    .is_some_and(|j| j.access.owner().cloned() == owner)
            })
            .cloned()
            .collect();
        // With `id` about to join them, keep at most `max_unread` unread.
        let excess = (unread.len() + 1).saturating_sub(self.max_unread.max(1));
        for old in unread.into_iter().take(excess) {
            info!(job_id = %old, "result released: its owner left too many unread");
            self.release(&old);
        }
    }

    /// Tells the executors holding released stages' outputs to drop them.
    fn drop_released(&self, job_id: &JobId, released: Vec<(StageId, Vec<ExecutorId>)>) {
        let mut by_executor: BTreeMap<ExecutorId, Vec<u32>> = BTreeMap::new();
        for (stage, holders) in released {
            debug!(job_id = %job_id, %stage, "every reader finished; stage outputs released");
            for holder in holders {
                by_executor.entry(holder).or_default().push(stage.0);
            }
        }
        for (executor, stage_ids) in by_executor {
            if let Some(entry) = self.executors.get(&executor) {
                entry.send(v1::scheduler_message::Kind::RemoveJobData(
                    v1::RemoveJobData {
                        job_id: job_id.to_string(),
                        stage_ids,
                    },
                ));
            }
        }
    }

    fn broadcast(&self, kind: v1::scheduler_message::Kind) {
        for entry in self.executors.values() {
            entry.send(kind.clone());
        }
    }

    /// Places pending tasks of runnable stages on free slots.
    pub(crate) fn schedule(&mut self) {
        if self.recovering.is_some() {
            // Executors of the previous scheduler may still bring back what
            // pending tasks would make.
            return;
        }
        let pass_began = Instant::now();
        let mut launched = 0u64;
        let mut launches: BTreeMap<(ExecutorId, JobId, StageId), Vec<v1::TaskDefinition>> =
            BTreeMap::new();
        for job_id in self.active.iter() {
            let Some(job) = self.jobs.get_mut(job_id) else {
                continue;
            };
            let excluded = job.excluded().clone();
            for stage in job.stages_mut() {
                for partition in stage.pending_partitions() {
                    if self.executors.values().all(|e| e.free_slots() == 0) {
                        break;
                    }
                    // Most free slots first. A partition that failed on an
                    // executor waits for another one, unless that executor
                    // is the only one (a full disk or a broken node would
                    // fail it again).
                    let avoid = stage.avoided(partition).cloned();
                    let avoid = avoid.as_ref();
                    let alone = avoid.is_some_and(|x| {
                        self.executors
                            .keys()
                            .all(|id| id == x || excluded.contains(id))
                    });
                    let Some((executor_id, entry)) = self
                        .executors
                        .iter_mut()
                        .filter(|(id, e)| {
                            e.free_slots() > 0
                                && !excluded.contains(*id)
                                && (alone || Some(*id) != avoid)
                        })
                        .max_by_key(|(id, e)| (e.free_slots(), std::cmp::Reverse((*id).clone())))
                    else {
                        continue;
                    };
                    let task_id = TaskId(self.next_task_id);
                    let Some(attempt) = stage.start(partition, task_id, executor_id) else {
                        continue;
                    };
                    self.next_task_id += 1;
                    launched += 1;
                    entry.running.insert(task_id, (job_id.clone(), stage.id()));
                    launches
                        .entry((executor_id.clone(), job_id.clone(), stage.id()))
                        .or_default()
                        .push(v1::TaskDefinition {
                            task_id: task_id.0,
                            partition: partition as u32,
                            attempt,
                        });
                }
            }
        }
        let mut touched = HashSet::new();
        for ((executor_id, job_id, stage_id), tasks) in launches {
            let (Some(job), Some(entry)) =
                (self.jobs.get_mut(&job_id), self.executors.get(&executor_id))
            else {
                continue;
            };
            let trace_context = job.stage_trace_context(stage_id);
            let Some(index) = job.stage_index(stage_id) else {
                continue;
            };
            job.executors_used.insert(executor_id.clone());
            let key = job.stage_key(&job.stages()[index]);
            let plan = job.stage_mut(index).plan_for(&executor_id);
            let first_here = !plan.is_empty();
            debug!(job_id = %job_id, stage = %stage_id, executor_id = %executor_id, tasks = tasks.len(), "launching tasks");
            entry.send(v1::scheduler_message::Kind::LaunchTasks(v1::LaunchTasks {
                stage: Some(key),
                plan,
                tasks,
                settings: job.settings.clone(),
                trace_context,
            }));
            if first_here {
                // A pipelined stage's tasks here learn what its running
                // inputs finished so far; the rest is announced as it ends.
                for ready in job.catch_up(index) {
                    entry.send(v1::scheduler_message::Kind::MapOutputsReady(ready));
                }
            }
            touched.insert(job_id);
        }
        // Placing a stage's last tasks can make its pipelined consumers
        // runnable: they take the slots left in another pass.
        let mut more = false;
        for job_id in touched {
            let Some(ready) = self.resolve_stages(&job_id) else {
                continue;
            };
            more |= ready > 0;
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.publish();
            }
        }
        if launched > 0 {
            self.metrics.placed(launched, pass_began.elapsed());
        }
        if more && self.executors.values().any(|e| e.free_slots() > 0) {
            self.schedule();
            return;
        }
        self.release_drained();
    }

    /// The metrics, their gauges of jobs, executors and slots by state set
    /// to what they are now; encode them after the state lock is released.
    pub(crate) fn metrics_now(&self) -> SchedulerMetrics {
        let mut jobs: BTreeMap<&str, i64> = ["running", "succeeded", "failed", "cancelled"]
            .into_iter()
            .map(|state| (state, 0))
            .collect();
        for job in self.jobs.values() {
            *jobs.entry(job.phase().name()).or_default() += 1;
        }
        let draining = self
            .executors
            .values()
            .filter(|e| e.drain != Drain::Active)
            .count() as i64;
        let busy: i64 = self
            .executors
            .values()
            .map(|e| e.running.len() as i64)
            .sum();
        let free: i64 = self.executors.values().map(|e| e.free_slots() as i64).sum();
        let jobs: Vec<(&str, i64)> = jobs.into_iter().collect();
        self.metrics.set_gauges(
            &jobs,
            &[
                ("active", self.executors.len() as i64 - draining),
                ("draining", draining),
            ],
            &[("busy", busy), ("free", free)],
        );
        self.metrics.clone()
    }
}

fn task_failure_to_job_error(
    job_id: &JobId,
    stage: StageId,
    partition: usize,
    executor: &ExecutorId,
    failure: v1::TaskFailure,
) -> v1::JobError {
    match failure.reason {
        Some(v1::task_failure::Reason::FetchFailed(fetch)) => v1::JobError {
            kind: v1::ErrorKind::FetchFailed as i32,
            message: format!(
                "stage {stage} of job {job_id} could not read the output of stage {} partition {} on executor {}: {}",
                fetch.map_stage, fetch.map_partition, fetch.executor_id, fetch.message
            ),
            query_error: None,
        },
        Some(v1::task_failure::Reason::ExecutionFailed(failed)) => v1::JobError {
            kind: failed.kind,
            message: if failed.kind == v1::ErrorKind::User as i32 {
                failed.message
            } else {
                format!(
                    "task {partition} of stage {stage} failed on executor {executor}: {}",
                    failed.message
                )
            },
            query_error: failed.query_error.clone(),
        },
        None => v1::JobError {
            kind: v1::ErrorKind::Internal as i32,
            message: format!("task {partition} of stage {stage} failed without a reason"),
            query_error: None,
        },
    }
}

/// Rows and bytes per output partition, as an executor reports them.
fn partition_stats(rows: &[u64], bytes: &[u64]) -> Vec<PartitionStats> {
    rows.iter()
        .zip(bytes)
        .map(|(rows, bytes)| PartitionStats {
            rows: *rows,
            bytes: *bytes,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::error::Result;
    use tokio::sync::mpsc::UnboundedReceiver;

    use super::*;
    use crate::stage::StageState;
    use crate::test_support::stages;

    type Inbox = UnboundedReceiver<Result<v1::SchedulerMessage, tonic::Status>>;

    fn executor(state: &mut SchedulerState, name: &str, slots: usize) -> (ExecutorId, Inbox) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let id = ExecutorId::from(name);
        state
            .register_executor(
                id.clone(),
                format!("http://{name}"),
                slots,
                sender,
                Vec::new(),
                Default::default(),
            )
            .expect("a fresh id");
        (id, receiver)
    }

    fn drain(inbox: &mut Inbox) -> Vec<v1::scheduler_message::Kind> {
        let mut out = Vec::new();
        while let Ok(Ok(message)) = inbox.try_recv() {
            out.extend(message.kind);
        }
        out
    }

    fn launches(messages: &[v1::scheduler_message::Kind]) -> Vec<v1::LaunchTasks> {
        messages
            .iter()
            .filter_map(|m| match m {
                v1::scheduler_message::Kind::LaunchTasks(l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    fn success(
        launch: &v1::LaunchTasks,
        task: &v1::TaskDefinition,
        outputs: usize,
    ) -> v1::TaskStatus {
        v1::TaskStatus {
            stage: launch.stage.clone(),
            task_id: task.task_id,
            partition: task.partition,
            attempt: task.attempt,
            result: Some(v1::task_status::Result::Success(v1::TaskSuccess {
                partition_rows: vec![10; outputs],
                partition_bytes: vec![100; outputs],
                fetches: Vec::new(),
                operators: Vec::new(),
                key_summaries: Vec::new(),
            })),
        }
    }

    /// Succeeds every task of `launches` on `executor`.
    fn succeed_all(
        state: &mut SchedulerState,
        executor: &ExecutorId,
        launches: &[v1::LaunchTasks],
        outputs: usize,
    ) {
        for launch in launches {
            for task in &launch.tasks {
                state.task_status(executor, success(launch, task, outputs));
            }
        }
    }

    /// A job whose stages wait for their inputs to finish (barriers, as
    /// with `volley.pipelined_exchange = false`), so a test can follow its
    /// stages one after the other.
    async fn job(sql: &str) -> Result<Job> {
        job_releasing(sql, true).await
    }

    /// [`job`], with `volley.release_outputs` as given.
    async fn job_releasing(sql: &str, releases_outputs: bool) -> Result<Job> {
        let mut stages = stages(sql).await?;
        for stage in &mut stages {
            stage.pipelined = false;
            stage.releases_outputs = releases_outputs;
        }
        Ok(Job::new(
            JobId::from("test-job"),
            "test".into(),
            stages,
            HashMap::new(),
            Vec::new(),
        ))
    }

    /// A job with the pipelined exchange (the default).
    async fn pipelined_job(sql: &str) -> Result<Job> {
        Ok(Job::new(
            JobId::from("test-job"),
            "test".into(),
            stages(sql).await?,
            HashMap::new(),
            Vec::new(),
        ))
    }

    fn announced(messages: &[v1::scheduler_message::Kind]) -> Vec<(u32, u32, Vec<u32>)> {
        messages
            .iter()
            .filter_map(|m| match m {
                v1::scheduler_message::Kind::MapOutputsReady(r) => Some((
                    r.consumer.as_ref().map_or(0, |k| k.stage_id),
                    r.input_stage,
                    r.map_partitions.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn with_one_slot_in_the_cluster_a_consumer_waits_for_its_input_and_the_job_completes()
    -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox) = executor(&mut state, "a", 1);
        let job = pipelined_job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        // One task at a time: a consumer task never takes the only slot
        // while a map task still waits for it.
        let mut order = Vec::new();
        for _ in 0..20 {
            let mut any = false;
            for launch in launches(&drain(&mut inbox)) {
                let stage = launch.stage.as_ref().map_or(0, |s| s.stage_id);
                assert_eq!(launch.tasks.len(), 1, "one slot, one task");
                for task in &launch.tasks {
                    order.push(stage);
                    let outputs = if stage == 0 { 4 } else { 1 };
                    state.task_status(&a, success(&launch, task, outputs));
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        assert_eq!(order, [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(watch.borrow().state, v1::JobState::Succeeded as i32);
        Ok(())
    }

    #[tokio::test]
    async fn a_consumer_starts_on_free_slots_while_its_input_runs_and_hears_of_each_map_output()
    -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox_a) = executor(&mut state, "a", 4);
        let (b, mut inbox_b) = executor(&mut state, "b", 4);
        // Four map tasks and four consumer tasks on eight slots.
        let job = pipelined_job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        let (ma, mb) = (drain(&mut inbox_a), drain(&mut inbox_b));
        let (la, lb) = (launches(&ma), launches(&mb));
        let stages_launched = |l: &[v1::LaunchTasks]| -> Vec<u32> {
            l.iter()
                .map(|l| l.stage.as_ref().map_or(0, |s| s.stage_id))
                .collect()
        };
        assert_eq!(stages_launched(&la), [0, 1], "the consumer starts at once");
        assert_eq!(stages_launched(&lb), [0, 1]);
        assert_eq!(
            announced(&ma),
            [(1, 0, vec![])],
            "with its plan, what stage 0 finished so far: nothing"
        );
        let stage_0 = &la[0];
        state.task_status(&a, success(stage_0, &stage_0.tasks[0], 4));
        let map = stage_0.tasks[0].partition;
        assert_eq!(announced(&drain(&mut inbox_a)), [(1, 0, vec![map])]);
        assert_eq!(
            announced(&drain(&mut inbox_b)),
            [(1, 0, vec![map])],
            "every executor running the consumer hears of it"
        );
        for task in &stage_0.tasks[1..] {
            state.task_status(&a, success(stage_0, task, 4));
        }
        for task in &lb[0].tasks {
            state.task_status(&b, success(&lb[0], task, 4));
        }
        succeed_all(&mut state, &a, &la[1..=1], 1);
        succeed_all(&mut state, &b, &lb[1..=1], 1);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        assert_eq!(status.recovery.map_or(0, |r| r.pipelined_restarts), 0);
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_producer_task_makes_its_running_consumer_give_back_its_slots_and_start_again()
    -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox_a) = executor(&mut state, "a", 4);
        let (b, mut inbox_b) = executor(&mut state, "b", 4);
        let job = pipelined_job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        let (la, lb) = (
            launches(&drain(&mut inbox_a)),
            launches(&drain(&mut inbox_b)),
        );
        assert_eq!(la.len(), 2, "stage 0 and its pipelined consumer");
        // One map task of stage 0 fails retryably while the consumer waits.
        state.task_status(&a, failure(&la[0], &la[0].tasks[0], environment_error()));
        let cancelled = |messages: &[v1::scheduler_message::Kind]| -> usize {
            messages
                .iter()
                .map(|m| match m {
                    v1::scheduler_message::Kind::CancelTasks(c) => c.task_ids.len(),
                    _ => 0,
                })
                .sum()
        };
        let (ma, mb) = (drain(&mut inbox_a), drain(&mut inbox_b));
        assert_eq!(
            cancelled(&ma) + cancelled(&mb),
            la[1].tasks.len() + lb[1].tasks.len(),
            "every consumer task is stopped"
        );
        assert_eq!(
            watch.borrow().recovery.map_or(0, |r| r.pipelined_restarts),
            1
        );
        // The map task runs again; the consumer comes back as attempt 1
        // once it is placed, and the job completes.
        let relaunched: Vec<v1::LaunchTasks> =
            launches(&ma).into_iter().chain(launches(&mb)).collect();
        assert!(
            relaunched.iter().any(|l| l
                .stage
                .as_ref()
                .is_some_and(|s| s.stage_id == 1 && s.stage_attempt == 1)),
            "{relaunched:?}"
        );
        for launch in &relaunched {
            let executor = if launches(&ma).contains(launch) {
                &a
            } else {
                &b
            };
            let stage = launch.stage.as_ref().map_or(0, |s| s.stage_id);
            for task in &launch.tasks {
                state.task_status(
                    executor,
                    success(launch, task, if stage == 0 { 4 } else { 1 }),
                );
            }
        }
        succeed_all(&mut state, &a, &la[0..=0], 4);
        succeed_all(&mut state, &b, &lb[0..=0], 4);
        let mut inboxes = vec![(a, inbox_a), (b, inbox_b)];
        run_to_end(&mut state, &mut inboxes, &[4, 1]);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        Ok(())
    }

    const GROUP_BY: &str = "SELECT k % 3 AS g, count(*) FROM t GROUP BY k % 3";

    #[test]
    fn a_user_who_leaves_too_many_results_unread_loses_the_oldest() {
        let mut config = SchedulerConfig::default();
        config.security.max_unread_results_per_user = 2;
        let mut state = SchedulerState::new(&config);
        let (_, mut inbox) = executor(&mut state, "a", 2);
        drain(&mut inbox);
        let ids: Vec<JobId> = (0..3).map(|i| JobId::from(format!("job{i}"))).collect();
        for id in &ids {
            let error = v1::JobError::default();
            state.submit(Job::failed_at_submit(id.clone(), String::new(), error));
        }
        let released: Vec<String> = drain(&mut inbox)
            .into_iter()
            .filter_map(|m| match m {
                v1::scheduler_message::Kind::RemoveJobData(r) => Some(r.job_id),
                _ => None,
            })
            .collect();
        assert_eq!(released, vec!["job0".to_string()]);
    }

    #[tokio::test]
    async fn a_job_runs_stage_by_stage_spread_over_executors_and_cleans_up() -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox_a) = executor(&mut state, "a", 2);
        let (b, mut inbox_b) = executor(&mut state, "b", 2);
        drain(&mut inbox_a);
        drain(&mut inbox_b);
        let job = job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);

        // Stage 0: four tasks, two per executor, each executor gets the plan once.
        let (la, lb) = (
            launches(&drain(&mut inbox_a)),
            launches(&drain(&mut inbox_b)),
        );
        assert_eq!((la.len(), lb.len()), (1, 1));
        assert_eq!((la[0].tasks.len(), lb[0].tasks.len()), (2, 2));
        assert!(!la[0].plan.is_empty() && !lb[0].plan.is_empty());
        assert_eq!(la[0].stage.as_ref().map(|s| s.stage_id), Some(0));

        succeed_all(&mut state, &a, &la[0..=0], 4);
        succeed_all(&mut state, &b, &lb[0..=0], 4);
        // Stage 1 became runnable only now.
        let (la, lb) = (
            launches(&drain(&mut inbox_a)),
            launches(&drain(&mut inbox_b)),
        );
        assert_eq!(la[0].stage.as_ref().map(|s| s.stage_id), Some(1));
        assert_eq!(la[0].tasks.len() + lb[0].tasks.len(), 4);
        succeed_all(&mut state, &a, &la[0..=0], 1);
        succeed_all(&mut state, &b, &lb[0..=0], 1);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32);
        assert_eq!((status.stages_done, status.stages_total), (2, 2));
        assert_eq!(status.result.len(), 4, "one result piece per final task");
        assert_eq!(status.rows_shuffled, 4 * 4 * 10);
        // The map outputs of stage 0 are dropped; the result stays until released.
        let removals: Vec<_> = drain(&mut inbox_a)
            .into_iter()
            .filter_map(|m| match m {
                v1::scheduler_message::Kind::RemoveJobData(r) => Some(r.stage_ids),
                _ => None,
            })
            .collect();
        assert_eq!(removals, vec![vec![0]]);
        state.release(&JobId::from("test-job"));
        assert!(drain(&mut inbox_b).iter().any(|m| matches!(
            m,
            v1::scheduler_message::Kind::RemoveJobData(r) if r.stage_ids.is_empty()
        )));
        Ok(())
    }

    fn failure(
        launch: &v1::LaunchTasks,
        task: &v1::TaskDefinition,
        reason: v1::task_failure::Reason,
    ) -> v1::TaskStatus {
        v1::TaskStatus {
            stage: launch.stage.clone(),
            task_id: task.task_id,
            partition: task.partition,
            attempt: task.attempt,
            result: Some(v1::task_status::Result::Failure(v1::TaskFailure {
                reason: Some(reason),
            })),
        }
    }

    fn environment_error() -> v1::task_failure::Reason {
        v1::task_failure::Reason::ExecutionFailed(v1::ExecutionFailed {
            kind: v1::ErrorKind::Environment as i32,
            message: "disk hiccup".into(),
            query_error: None,
        })
    }

    /// Completes every task launched to the executors, until the job ends.
    fn run_to_end(
        state: &mut SchedulerState,
        inboxes: &mut [(ExecutorId, Inbox)],
        outputs: &[usize],
    ) {
        for _ in 0..20 {
            let mut launched = false;
            for (executor, inbox) in inboxes.iter_mut() {
                for launch in launches(&drain(inbox)) {
                    let stage = launch.stage.as_ref().map_or(0, |s| s.stage_id as usize);
                    for task in &launch.tasks {
                        state.task_status(executor, success(&launch, task, outputs[stage]));
                        launched = true;
                    }
                }
            }
            if !launched {
                return;
            }
        }
    }

    #[tokio::test]
    async fn losing_an_executor_reruns_its_map_outputs_elsewhere_and_the_job_succeeds() -> Result<()>
    {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox_a) = executor(&mut state, "a", 2);
        let (b, inbox_b) = executor(&mut state, "b", 2);
        let job = job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        // Stage 0 finishes on a only; b's tasks are still running.
        let la = launches(&drain(&mut inbox_a));
        for task in &la[0].tasks {
            state.task_status(&a, success(&la[0], task, 4));
        }
        state.executor_lost(&a, "killed");
        assert_eq!(watch.borrow().state, v1::JobState::Running as i32);
        let mut inboxes = vec![(b, inbox_b)];
        run_to_end(&mut state, &mut inboxes, &[4, 1]);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        let recovery = status.recovery.expect("recovery counters");
        assert_eq!(recovery.map_tasks_rerun, 2, "{recovery:?}");
        assert_eq!(recovery.executors_lost, 1);
        Ok(())
    }

    /// Three stages: the first aggregation's map side, its final side
    /// feeding the second aggregation's map side, and the final stage.
    const TWO_GROUP_BYS: &str = "SELECT c, count(*) FROM \
        (SELECT k % 3 AS g, count(*) AS c FROM t GROUP BY k % 3) GROUP BY c";

    /// The stage lists of the `RemoveJobData` messages among `messages`.
    fn removals(messages: &[v1::scheduler_message::Kind]) -> Vec<Vec<u32>> {
        messages
            .iter()
            .filter_map(|m| match m {
                v1::scheduler_message::Kind::RemoveJobData(r) => Some(r.stage_ids.clone()),
                _ => None,
            })
            .collect()
    }

    /// Executors a and b (2 slots each) ran stages 0 and 1 of the
    /// TWO_GROUP_BYS job (barriers); returns what each was sent once
    /// stage 1 finished, and what a and b ran of stage 1.
    struct PastStage1 {
        state: SchedulerState,
        watch: tokio::sync::watch::Receiver<v1::JobStatus>,
        a: (ExecutorId, Inbox),
        b: (ExecutorId, Inbox),
        stage_1: (Vec<v1::LaunchTasks>, Vec<v1::LaunchTasks>),
        /// What a and b were sent once stage 1 finished.
        after: (
            Vec<v1::scheduler_message::Kind>,
            Vec<v1::scheduler_message::Kind>,
        ),
    }

    async fn past_stage_1(epoch: u64, releases_outputs: bool) -> Result<PastStage1> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        state.set_epoch(epoch);
        let (a, mut inbox_a) = executor(&mut state, "a", 2);
        let (b, mut inbox_b) = executor(&mut state, "b", 2);
        let job = job_releasing(TWO_GROUP_BYS, releases_outputs).await?;
        assert_eq!(job.stages().len(), 3, "the test needs three stages");
        let watch = job.watch.subscribe();
        state.submit(job);
        for stage in 0..2 {
            let (ma, mb) = (drain(&mut inbox_a), drain(&mut inbox_b));
            assert!(
                removals(&ma).is_empty() && removals(&mb).is_empty(),
                "nothing is dropped while stage {stage} runs"
            );
            let (la, lb) = (launches(&ma), launches(&mb));
            succeed_all(&mut state, &a, &la, 4);
            succeed_all(&mut state, &b, &lb, 4);
            if stage == 1 {
                return Ok(PastStage1 {
                    after: (drain(&mut inbox_a), drain(&mut inbox_b)),
                    state,
                    watch,
                    a: (a, inbox_a),
                    b: (b, inbox_b),
                    stage_1: (la, lb),
                });
            }
        }
        unreachable!("returned after stage 1")
    }

    #[tokio::test]
    async fn a_stages_outputs_are_dropped_once_every_reader_finished_not_when_the_job_ends()
    -> Result<()> {
        let PastStage1 {
            mut state,
            watch,
            a,
            b,
            after,
            ..
        } = past_stage_1(1, true).await?;
        assert_eq!(
            (removals(&after.0), removals(&after.1)),
            (vec![vec![0]], vec![vec![0]]),
            "stage 0's holders drop it as soon as stage 1 has read it"
        );
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Running as i32);
        let released: Vec<bool> = status.stages.iter().map(|s| s.released).collect();
        assert_eq!(released, vec![true, false, false]);
        assert_eq!(status.stages_done, 2, "a released stage is done");
        succeed_all(&mut state, &a.0, &launches(&after.0), 1);
        succeed_all(&mut state, &b.0, &launches(&after.1), 1);
        assert_eq!(watch.borrow().state, v1::JobState::Succeeded as i32);
        Ok(())
    }

    #[tokio::test]
    async fn with_release_outputs_off_stage_outputs_stay_until_the_job_ends() -> Result<()> {
        let PastStage1 {
            mut state,
            watch,
            a,
            b,
            after,
            ..
        } = past_stage_1(1, false).await?;
        assert!(removals(&after.0).is_empty() && removals(&after.1).is_empty());
        succeed_all(&mut state, &a.0, &launches(&after.0), 1);
        succeed_all(&mut state, &b.0, &launches(&after.1), 1);
        let (mut inbox_a, mut inbox_b) = (a.1, b.1);
        assert_eq!(watch.borrow().state, v1::JobState::Succeeded as i32);
        assert_eq!(
            (
                removals(&drain(&mut inbox_a)),
                removals(&drain(&mut inbox_b))
            ),
            (vec![vec![0, 1]], vec![vec![0, 1]]),
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_reader_that_must_run_again_reruns_its_released_input_first() -> Result<()> {
        let PastStage1 {
            mut state,
            watch,
            a,
            b,
            ..
        } = past_stage_1(1, true).await?;
        // a holds half of stage 1's outputs, which stage 2 still reads; stage
        // 0, which they were made from, is gone everywhere.
        state.executor_lost(&a.0, "killed");
        let status = watch.borrow().clone();
        assert!(!status.stages[0].released, "stage 0 is needed again");
        let job = state.jobs.get(&JobId::from("test-job")).expect("running");
        assert_eq!(
            (job.stages()[0].running_count(), job.stages()[1].state()),
            (2, StageState::Waiting),
            "stage 0 runs again (on b's two slots) before stage 1 can"
        );
        let (b, mut inbox_b) = b;
        let relaunched = launches(&drain(&mut inbox_b));
        assert!(
            relaunched
                .iter()
                .all(|l| l.stage.as_ref().map(|s| s.stage_id) == Some(0) && !l.plan.is_empty()),
            "b dropped stage 0's plan with its outputs: the launch carries it again"
        );
        succeed_all(&mut state, &b, &relaunched, 4);
        let mut inboxes = vec![(b, inbox_b)];
        run_to_end(&mut state, &mut inboxes, &[4, 4, 1]);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        let recovery = status.recovery.expect("counters");
        assert_eq!(
            (recovery.released_stages_rerun, recovery.map_tasks_rerun),
            (1, 2 + 4),
            "a's two stage-1 outputs and all four of stage 0: {recovery:?}"
        );
        Ok(())
    }

    fn released(messages: &[v1::scheduler_message::Kind]) -> bool {
        messages
            .iter()
            .any(|m| matches!(m, v1::scheduler_message::Kind::Released(_)))
    }

    #[tokio::test]
    async fn a_draining_executor_gets_no_new_tasks_and_is_released_once_its_output_is_read()
    -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox_a) = executor(&mut state, "a", 2);
        let (b, mut inbox_b) = executor(&mut state, "b", 2);
        let job = job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        let (la, lb) = (
            launches(&drain(&mut inbox_a)),
            launches(&drain(&mut inbox_b)),
        );
        // a is asked to stop while its two map tasks run.
        assert!(state.drain_executor(&a, "SIGTERM"));
        let told = drain(&mut inbox_a);
        assert!(
            told.iter()
                .any(|m| matches!(m, v1::scheduler_message::Kind::Drain(_)))
        );
        assert!(!released(&told), "its tasks still run");
        assert_eq!(state.total_slots(), 2, "a's slots no longer count");
        succeed_all(&mut state, &a, &la[0..=0], 4);
        succeed_all(&mut state, &b, &lb[0..=0], 4);
        // Stage 1 runs on b only, reading a's stored output: a must stay.
        let to_a = drain(&mut inbox_a);
        assert!(
            launches(&to_a).is_empty(),
            "no new task for a draining executor"
        );
        assert!(!released(&to_a), "stage 1 still needs a's map outputs");
        let info = state.executors_info();
        assert_eq!(info[0].state, v1::ExecutorState::Draining as i32);
        assert_eq!(info[0].free_slots, 0);
        let mut inboxes = vec![(b.clone(), inbox_b)];
        run_to_end(&mut state, &mut inboxes, &[4, 1]);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        assert!(released(&drain(&mut inbox_a)), "nothing on a is needed now");
        // Its leaving is not a loss.
        state.executor_lost(&a, "drained");
        let recovery = watch.borrow().recovery.expect("counters");
        assert_eq!(recovery, v1::JobRecovery::default());
        Ok(())
    }

    #[tokio::test]
    async fn a_draining_executor_holding_an_unread_result_stays_until_it_is_released() -> Result<()>
    {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox_a) = executor(&mut state, "a", 4);
        let job = job(GROUP_BY).await?;
        let id = job.id.clone();
        state.submit(job);
        let mut inboxes = vec![(a.clone(), inbox_a)];
        run_to_end(&mut state, &mut inboxes, &[4, 1]);
        let (_, inbox) = inboxes.pop().expect("a's inbox");
        inbox_a = inbox;
        drain(&mut inbox_a);
        state.drain_executor(&a, "SIGTERM");
        assert!(
            !released(&drain(&mut inbox_a)),
            "the client has not read the result"
        );
        state.release(&id);
        assert!(released(&drain(&mut inbox_a)));
        Ok(())
    }

    #[tokio::test]
    async fn a_fetch_failure_reruns_that_executors_map_tasks_only_and_replans_the_consumer()
    -> Result<()> {
        // Stage 0: two map tasks on each executor.
        let PastStage0 {
            mut state,
            watch,
            a: (a, mut inbox_a),
            b: (b, mut inbox_b),
            stage_0,
        } = past_stage_0(0).await?;
        let on_a: Vec<u32> = stage_0.0.tasks.iter().map(|t| t.partition).collect();
        // A stage-1 task on b cannot read a map output held by a.
        let l1 = launches(&drain(&mut inbox_b));
        assert_eq!(
            l1[0].stage.as_ref().map(|s| (s.stage_id, s.stage_attempt)),
            Some((1, 0))
        );
        let l1_on_a = launches(&drain(&mut inbox_a));
        let lost = v1::task_failure::Reason::FetchFailed(v1::FetchFailed {
            executor_id: "a".into(),
            map_stage: 0,
            map_partition: on_a[0],
            message: "connection refused".into(),
        });
        state.task_status(&b, failure(&l1[0], &l1[0].tasks[0], lost));
        let recovery = watch.borrow().recovery.expect("counters");
        // a held two map outputs; b's two are kept.
        assert_eq!(
            (recovery.map_tasks_rerun, recovery.stages_rerun),
            (2, 1),
            "{recovery:?}"
        );
        // The other attempt-0 consumer tasks end; their results are stale.
        let done_before = watch.borrow().tasks_done;
        for launch in l1_on_a.iter().chain(&l1) {
            for task in &launch.tasks {
                let executor = if l1_on_a.contains(launch) { &a } else { &b };
                state.task_status(executor, success(launch, task, 1));
            }
        }
        assert_eq!(
            watch.borrow().tasks_done,
            done_before,
            "stale results count for nothing"
        );
        // The consumer comes back as attempt 1 and the job succeeds.
        let mut inboxes = vec![(a, inbox_a), (b, inbox_b)];
        run_to_end(&mut state, &mut inboxes, &[4, 1]);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_holder_its_peer_cannot_read_while_both_are_alive_gets_no_more_tasks_of_the_job()
    -> Result<()> {
        let PastStage0 {
            mut state,
            watch,
            a: (a, mut inbox_a),
            b: (b, mut inbox_b),
            stage_0,
        } = past_stage_0(0).await?;
        let on_a = stage_0.0.tasks[0].partition;
        let l1 = launches(&drain(&mut inbox_b));
        let l1_on_a = launches(&drain(&mut inbox_a));
        // b cannot reach a, though a is alive (it heartbeats).
        let cut = v1::task_failure::Reason::FetchFailed(v1::FetchFailed {
            executor_id: "a".into(),
            map_stage: 0,
            map_partition: on_a,
            message: "connect timed out".into(),
        });
        state.task_status(&b, failure(&l1[0], &l1[0].tasks[0], cut));
        for task in &l1_on_a[0].tasks {
            state.task_status(&a, success(&l1_on_a[0], task, 1));
        }
        let mut inboxes = vec![(b, inbox_b)];
        run_to_end(&mut state, &mut inboxes, &[4, 1]);
        assert!(
            launches(&drain(&mut inbox_a)).is_empty(),
            "the job placed nothing more on a"
        );
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        // Another job may still use a.
        let other = Job::new(
            JobId::from("other-job"),
            "test".into(),
            stages(GROUP_BY).await?,
            HashMap::new(),
            Vec::new(),
        );
        state.submit(other);
        assert!(!launches(&drain(&mut inbox_a)).is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_retryable_failure_runs_again_elsewhere_and_a_user_error_fails_at_once() -> Result<()>
    {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox_a) = executor(&mut state, "a", 2);
        let (_b, mut inbox_b) = executor(&mut state, "b", 2);
        let job = job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        let la = launches(&drain(&mut inbox_a));
        drain(&mut inbox_b);
        state.task_status(&a, failure(&la[0], &la[0].tasks[0], environment_error()));
        // Retried, but not on a, although a has a free slot now: it waits
        // for b.
        let failed = (la[0].stage.clone(), la[0].tasks[0].partition);
        let again_on_a = launches(&drain(&mut inbox_a));
        assert!(
            again_on_a.iter().all(|l| l
                .tasks
                .iter()
                .all(|t| (l.stage.clone(), t.partition) != failed)),
            "{again_on_a:?}"
        );
        assert_eq!(watch.borrow().state, v1::JobState::Running as i32);
        assert_eq!(watch.borrow().recovery.expect("counters").tasks_retried, 1);
        let user = v1::task_failure::Reason::ExecutionFailed(v1::ExecutionFailed {
            kind: v1::ErrorKind::User as i32,
            message: "no field named x".into(),
            query_error: None,
        });
        state.task_status(&a, failure(&la[0], &la[0].tasks[1], user));
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Failed as i32);
        assert_eq!(status.error.expect("error").message, "no field named x");
        Ok(())
    }

    #[tokio::test]
    async fn a_task_failing_on_every_attempt_fails_the_job_after_four() -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox_a) = executor(&mut state, "a", 4);
        let job = job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        let mut attempts = 0;
        while watch.borrow().state == v1::JobState::Running as i32 && attempts < 10 {
            for launch in launches(&drain(&mut inbox_a)) {
                for task in launch.tasks.iter().filter(|t| t.partition == 0) {
                    attempts += 1;
                    state.task_status(&a, failure(&launch, task, environment_error()));
                }
            }
        }
        assert_eq!(attempts, 4);
        let error = watch.borrow().error.clone().expect("failed");
        assert!(
            error.message.contains("after 4 attempts"),
            "{}",
            error.message
        );
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_silence_the_scheduler_itself_slept_through_loses_no_executor() {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, _inbox) = executor(&mut state, "a", 1);
        let timeout = Duration::from_secs(10);
        state.expire_executors(timeout);
        // No check ran for longer than the timeout: the scheduler stalled.
        tokio::time::advance(Duration::from_secs(15)).await;
        state.expire_executors(timeout);
        assert!(state.executors.contains_key(&a), "lost for a stall");
        // Checked on time from then on, its own silence counts, from the
        // end of the stall.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            state.expire_executors(timeout);
        }
        assert!(state.executors.contains_key(&a), "silent only 10 s");
        tokio::time::advance(Duration::from_millis(1)).await;
        state.expire_executors(timeout);
        assert!(!state.executors.contains_key(&a), "silent past the timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_executor_gone_a_job_waits_out_the_grace_period_then_fails_saying_so()
    -> Result<()> {
        let config = SchedulerConfig {
            no_executor_grace: Duration::from_millis(50),
            ..SchedulerConfig::default()
        };
        let mut state = SchedulerState::new(&config);
        let (a, _inbox) = executor(&mut state, "a", 2);
        let job = job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        state.executor_lost(&a, "killed");
        state.expire_executors(Duration::from_secs(60));
        assert_eq!(
            watch.borrow().state,
            v1::JobState::Running as i32,
            "waits for executors"
        );
        tokio::time::advance(Duration::from_millis(49)).await;
        state.expire_executors(Duration::from_secs(60));
        assert_eq!(
            watch.borrow().state,
            v1::JobState::Running as i32,
            "still within the grace"
        );
        tokio::time::advance(Duration::from_millis(2)).await;
        state.expire_executors(Duration::from_secs(60));
        let error = watch.borrow().error.clone().expect("failed");
        assert_eq!(error.kind, v1::ErrorKind::NoExecutors as i32);
        assert!(
            error.message.contains("every executor"),
            "{}",
            error.message
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_status_from_an_unknown_or_stale_task_changes_nothing() -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox_a) = executor(&mut state, "a", 4);
        let job = job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        let la = launches(&drain(&mut inbox_a));
        let mut stale = success(&la[0], &la[0].tasks[0], 4);
        stale.task_id += 1000;
        state.task_status(&a, stale);
        assert_eq!(watch.borrow().tasks_done, 0);
        assert_eq!(watch.borrow().tasks_running, 4);
        Ok(())
    }

    #[tokio::test]
    async fn cancelling_a_job_stops_its_tasks_everywhere_and_frees_their_slots() -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (_a, mut inbox_a) = executor(&mut state, "a", 4);
        let job = job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        drain(&mut inbox_a);
        assert!(
            watch.borrow().tasks_running > 0,
            "precondition: tasks were launched"
        );
        assert!(state.cancel(&JobId::from("test-job")));
        assert_eq!(watch.borrow().state, v1::JobState::Cancelled as i32);
        assert_eq!(
            watch.borrow().tasks_running,
            0,
            "a cancelled job's status shows no running task"
        );
        let messages = drain(&mut inbox_a);
        assert!(
            messages
                .iter()
                .any(|m| matches!(m, v1::scheduler_message::Kind::CancelJobTasks(_)))
        );
        assert_eq!(state.executors_info()[0].free_slots, 4);
        assert!(!state.cancel(&JobId::from("test-job")), "already ended");
        Ok(())
    }

    /// What an executor that ran `launch` to the end holds (4 output
    /// partitions per map task).
    fn held(launch: &v1::LaunchTasks) -> Vec<v1::HeldOutput> {
        launch
            .tasks
            .iter()
            .map(|t| v1::HeldOutput {
                job_id: "test-job".into(),
                stage_id: launch.stage.as_ref().map_or(0, |s| s.stage_id),
                map_partition: t.partition,
                partition_rows: vec![10; 4],
                partition_bytes: vec![100; 4],
                // Written under the first scheduler, epoch 1.
                attempt: Some(v1::OutputAttempt {
                    epoch: 1,
                    stage_attempt: launch.stage.as_ref().map_or(0, |s| s.stage_attempt),
                }),
            })
            .collect()
    }

    /// Executors a and b (2 slots each) that ran stage 0 of the GROUP_BY
    /// job (two map tasks each) to the end; stage 1 is being launched.
    struct PastStage0 {
        state: SchedulerState,
        watch: tokio::sync::watch::Receiver<v1::JobStatus>,
        a: (ExecutorId, Inbox),
        b: (ExecutorId, Inbox),
        /// What a and b ran of stage 0.
        stage_0: (v1::LaunchTasks, v1::LaunchTasks),
    }

    async fn past_stage_0(epoch: u64) -> Result<PastStage0> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        state.set_epoch(epoch);
        let (a, mut inbox_a) = executor(&mut state, "a", 2);
        let (b, mut inbox_b) = executor(&mut state, "b", 2);
        let job = job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        let (mut la, mut lb) = (
            launches(&drain(&mut inbox_a)),
            launches(&drain(&mut inbox_b)),
        );
        succeed_all(&mut state, &a, &la[0..=0], 4);
        succeed_all(&mut state, &b, &lb[0..=0], 4);
        Ok(PastStage0 {
            state,
            watch,
            a: (a, inbox_a),
            b: (b, inbox_b),
            stage_0: (la.remove(0), lb.remove(0)),
        })
    }

    /// Runs stage 0 of the GROUP_BY job on a and b (two tasks each), then
    /// "restarts": a new scheduler of epoch 2 recovers the job, waiting for
    /// a and b. Returns it with what a and b hold.
    async fn restarted_after_stage_0()
    -> Result<(SchedulerState, Vec<v1::HeldOutput>, Vec<v1::HeldOutput>)> {
        let before = past_stage_0(1).await?;
        let mut after = SchedulerState::new(&SchedulerConfig::default());
        after.set_epoch(2);
        after.begin_recovery(
            Duration::from_secs(10),
            [before.a.0, before.b.0].into_iter().collect(),
        );
        let stored = (0..4).map(|map| (0, map)).collect();
        after.recover(job(GROUP_BY).await?.restarted(), stored);
        Ok((after, held(&before.stage_0.0), held(&before.stage_0.1)))
    }

    fn reattach(
        state: &mut SchedulerState,
        name: &str,
        previous: &str,
        epoch: u64,
        held: Vec<v1::HeldOutput>,
    ) -> (ExecutorId, Inbox) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let id = ExecutorId::from(name);
        state
            .register_executor(
                id.clone(),
                format!("http://{name}"),
                2,
                sender,
                Vec::new(),
                Previous {
                    id: Some(ExecutorId::from(previous)),
                    epoch,
                    held,
                },
            )
            .expect("a fresh id");
        (id, receiver)
    }

    #[tokio::test]
    async fn a_restarted_scheduler_takes_over_kept_outputs_and_reruns_no_finished_stage()
    -> Result<()> {
        let (mut state, held_a, held_b) = restarted_after_stage_0().await?;
        let watch = state.watch(&JobId::from("test-job")).expect("recovered");
        let (a2, mut inbox_a) = reattach(&mut state, "a2", "a", 1, held_a);
        assert!(
            launches(&drain(&mut inbox_a)).is_empty(),
            "nothing is placed while b may still come back"
        );
        let (b2, mut inbox_b) = reattach(&mut state, "b2", "b", 1, held_b);
        let (la, lb) = (
            launches(&drain(&mut inbox_a)),
            launches(&drain(&mut inbox_b)),
        );
        let stages: HashSet<u32> = la
            .iter()
            .chain(&lb)
            .filter_map(|l| l.stage.as_ref().map(|s| s.stage_id))
            .collect();
        assert_eq!(stages, HashSet::from([1]), "only the unfinished stage runs");
        let job = state.jobs.get(&JobId::from("test-job")).expect("recovered");
        for map in 0..4 {
            let pieces = job.stages()[0]
                .map_output_pieces(&job.id, map, |_| Vec::new())
                .expect("taken over");
            assert!(
                pieces.iter().all(|p| p.attempt == OutputAttempt::new(1, 0)),
                "readers name the attempt that wrote the kept output: {pieces:?}"
            );
        }
        let mut inboxes = vec![(a2, inbox_a), (b2, inbox_b)];
        for (executor, launch) in [(&inboxes[0].0, &la[0]), (&inboxes[1].0, &lb[0])] {
            for task in &launch.tasks {
                state.task_status(executor, success(launch, task, 1));
            }
        }
        run_to_end(&mut state, &mut inboxes, &[4, 1]);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        assert!(
            !status.result.is_empty()
                && status.result.iter().all(|l| l.attempt
                    == Some(v1::OutputAttempt {
                        epoch: 2,
                        stage_attempt: 0
                    })),
            "what the restarted scheduler ran is named with its epoch: {:?}",
            status.result
        );
        let recovery = status.recovery.expect("counters");
        assert_eq!(
            (
                recovery.outputs_recovered,
                recovery.map_tasks_rerun,
                recovery.stages_rerun,
                recovery.scheduler_restarts
            ),
            (4, 0, 0, 1),
            "{recovery:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_restarted_scheduler_runs_no_released_stage_whose_readers_outputs_were_kept()
    -> Result<()> {
        let before = past_stage_1(1, true).await?;
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        state.set_epoch(2);
        state.begin_recovery(
            Duration::from_secs(10),
            [before.a.0, before.b.0].into_iter().collect(),
        );
        // The store knew of both stages' outputs; stage 0's were dropped.
        let stored = (0..2)
            .flat_map(|stage| (0..4).map(move |map| (stage, map)))
            .collect();
        state.recover(job(TWO_GROUP_BYS).await?.restarted(), stored);
        let watch = state.watch(&JobId::from("test-job")).expect("recovered");
        let held_of = |launches: &[v1::LaunchTasks]| -> Vec<v1::HeldOutput> {
            launches.iter().flat_map(held).collect()
        };
        let a = reattach(&mut state, "a2", "a", 1, held_of(&before.stage_1.0));
        let b = reattach(&mut state, "b2", "b", 1, held_of(&before.stage_1.1));
        let mut inboxes = vec![a, b];
        let sent: Vec<Vec<v1::LaunchTasks>> = inboxes
            .iter_mut()
            .map(|(_, inbox)| launches(&drain(inbox)))
            .collect();
        let launched: HashSet<u32> = sent
            .iter()
            .flatten()
            .filter_map(|l| l.stage.as_ref().map(|s| s.stage_id))
            .collect();
        assert_eq!(launched, HashSet::from([2]), "only the final stage runs");
        let status = watch.borrow().clone();
        assert!(status.stages[0].released, "stage 0 is not needed");
        assert_eq!(
            (status.tasks_done, status.stages_done),
            (8, 2),
            "what ran before the restart is done"
        );
        for ((executor, _), launches) in inboxes.iter().zip(&sent) {
            succeed_all(&mut state, executor, launches, 1);
        }
        run_to_end(&mut state, &mut inboxes, &[4, 4, 1]);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        let recovery = status.recovery.expect("counters");
        assert_eq!(
            (
                recovery.outputs_recovered,
                recovery.map_tasks_rerun,
                recovery.stages_rerun,
                recovery.released_stages_rerun
            ),
            (4, 0, 0, 0),
            "{recovery:?}"
        );
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn outputs_of_an_executor_that_never_comes_back_run_again_once_the_wait_is_over()
    -> Result<()> {
        let (mut state, held_a, _) = restarted_after_stage_0().await?;
        let watch = state.watch(&JobId::from("test-job")).expect("recovered");
        let (a2, mut inbox_a) = reattach(&mut state, "a2", "a", 1, held_a.clone());
        state.expire_executors(Duration::from_secs(60));
        assert!(
            launches(&drain(&mut inbox_a)).is_empty(),
            "still waiting for b"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        state.expire_executors(Duration::from_secs(60));
        let again = launches(&drain(&mut inbox_a));
        let rerun: Vec<u32> = again
            .iter()
            .flat_map(|l| l.tasks.iter().map(|t| t.partition))
            .collect();
        let kept: Vec<u32> = held_a.iter().map(|h| h.map_partition).collect();
        assert_eq!(again[0].stage.as_ref().map(|s| s.stage_id), Some(0));
        assert!(
            rerun.len() == 2 && rerun.iter().all(|p| !kept.contains(p)),
            "only b's two map tasks run again: {rerun:?}"
        );
        let mut inboxes = vec![(a2, inbox_a)];
        for task in &again[0].tasks {
            state.task_status(&inboxes[0].0, success(&again[0], task, 4));
        }
        run_to_end(&mut state, &mut inboxes, &[4, 1]);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        let recovery = status.recovery.expect("counters");
        assert_eq!(
            (recovery.outputs_recovered, recovery.map_tasks_rerun),
            (2, 2)
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_executor_back_at_the_scheduler_that_dropped_it_brings_nothing_back() -> Result<()> {
        let (mut state, held_a, held_b) = restarted_after_stage_0().await?;
        let watch = state.watch(&JobId::from("test-job")).expect("recovered");
        // Registered with epoch 2 already, then cut off and back: the
        // scheduler of epoch 2 had re-planned what it held.
        let (_, mut inbox_a) = reattach(&mut state, "a3", "a2", 2, held_a);
        let (_, mut inbox_b) = reattach(&mut state, "b3", "b2", 2, held_b);
        assert_eq!(
            watch.borrow().recovery.expect("counters").outputs_recovered,
            0
        );
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(10)).await;
        state.expire_executors(Duration::from_secs(60));
        let placed: usize = [&mut inbox_a, &mut inbox_b]
            .into_iter()
            .flat_map(|inbox| launches(&drain(inbox)))
            .filter(|l| l.stage.as_ref().is_some_and(|s| s.stage_id == 0))
            .map(|l| l.tasks.len())
            .sum();
        assert_eq!(placed, 4, "stage 0 runs again in full");
        Ok(())
    }

    #[tokio::test]
    async fn a_kept_output_of_a_job_nobody_knows_is_dropped_on_re_attaching() -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        state.set_epoch(2);
        let held = vec![v1::HeldOutput {
            job_id: "forgotten-job".into(),
            ..Default::default()
        }];
        let (_, mut inbox) = reattach(&mut state, "a2", "a", 1, held);
        let removed: Vec<String> = drain(&mut inbox)
            .into_iter()
            .filter_map(|m| match m {
                v1::scheduler_message::Kind::RemoveJobData(r) => Some(r.job_id),
                _ => None,
            })
            .collect();
        assert_eq!(removed, vec!["forgotten-job".to_string()]);
        Ok(())
    }

    #[tokio::test]
    async fn a_replanned_stages_running_tasks_are_cancelled_where_they_run_and_free_their_slots()
    -> Result<()> {
        let PastStage0 {
            mut state,
            watch,
            a: (a, mut inbox_a),
            b: (b, mut inbox_b),
            stage_0,
        } = past_stage_0(0).await?;
        let on_a = stage_0.0.tasks[0].partition;
        let (l1_a, l1_b) = (
            launches(&drain(&mut inbox_a)),
            launches(&drain(&mut inbox_b)),
        );
        // b cannot read a's output: stage 1 is re-planned as attempt 1, and
        // the attempt-0 tasks still running on a are superseded.
        let lost = v1::task_failure::Reason::FetchFailed(v1::FetchFailed {
            executor_id: "a".into(),
            map_stage: 0,
            map_partition: on_a,
            message: "connection refused".into(),
        });
        state.task_status(&b, failure(&l1_b[0], &l1_b[0].tasks[0], lost));
        let mut cancelled: Vec<u64> = drain(&mut inbox_a)
            .into_iter()
            .filter_map(|m| match m {
                v1::scheduler_message::Kind::CancelTasks(c) => Some(c.task_ids),
                _ => None,
            })
            .flatten()
            .collect();
        cancelled.sort_unstable();
        let mut running_on_a: Vec<u64> = l1_a[0].tasks.iter().map(|t| t.task_id).collect();
        running_on_a.sort_unstable();
        assert_eq!(cancelled, running_on_a, "a is told to stop them");
        assert_eq!(
            state.executors_info()[0].free_slots,
            2,
            "their slots are free at once"
        );
        // A cancelled task that finished all the same changes nothing.
        let done_before = watch.borrow().tasks_done;
        state.task_status(&a, success(&l1_a[0], &l1_a[0].tasks[0], 1));
        assert_eq!(watch.borrow().tasks_done, done_before);
        let mut inboxes = vec![(b, inbox_b)];
        run_to_end(&mut state, &mut inboxes, &[4, 1]);
        let status = watch.borrow().clone();
        assert_eq!(status.state, v1::JobState::Succeeded as i32, "{status:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_scripts_statements_never_share_stage_ids_and_each_drops_only_the_last_ones_data()
    -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let (a, mut inbox_a) = executor(&mut state, "a", 4);
        let id = JobId::from("test-job");
        state.submit_script(Job::new_script(
            id.clone(),
            "script".into(),
            2,
            HashMap::new(),
        ));
        let (done, mut first_done) = tokio::sync::oneshot::channel();
        assert!(state.begin_statement(&id, 1, 1, stages(GROUP_BY).await?, Vec::new(), done));
        let mut inboxes = vec![(a, inbox_a)];
        run_to_end(&mut state, &mut inboxes, &[4, 1]);
        assert!(first_done.try_recv().is_ok(), "statement 1 is done");
        let second = crate::test_support::stages_from(GROUP_BY, 2).await?;
        let ids: Vec<u32> = second.iter().map(|s| s.id.0).collect();
        assert_eq!(ids, vec![2, 3], "numbered on from statement 1's");
        let (done, _second_done) = tokio::sync::oneshot::channel();
        assert!(state.begin_statement(&id, 2, 2, second, Vec::new(), done));
        let (_, inbox) = inboxes.pop().expect("a's inbox");
        inbox_a = inbox;
        let messages = drain(&mut inbox_a);
        let removed: Vec<Vec<u32>> = messages
            .iter()
            .filter_map(|m| match m {
                v1::scheduler_message::Kind::RemoveJobData(r) => Some(r.stage_ids.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(removed, vec![vec![0, 1]], "only statement 1's stages go");
        let launched: Vec<u32> = launches(&messages)
            .iter()
            .filter_map(|l| l.stage.as_ref().map(|s| s.stage_id))
            .collect();
        assert_eq!(launched, vec![2], "statement 2 starts at its first stage");
        Ok(())
    }

    #[tokio::test]
    async fn a_job_submitted_to_an_empty_cluster_fails_saying_so() -> Result<()> {
        let mut state = SchedulerState::new(&SchedulerConfig::default());
        let job = job(GROUP_BY).await?;
        let watch = job.watch.subscribe();
        state.submit(job);
        let error = watch.borrow().error.clone().expect("an error");
        assert_eq!(error.kind, v1::ErrorKind::NoExecutors as i32);
        Ok(())
    }
}
