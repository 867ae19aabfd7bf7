//! The executor's side of its control stream with the scheduler: it
//! registers, heartbeats, receives task launches (decoding each stage plan
//! once and caching it by `(job, stage, attempt)`), runs tasks on its slots,
//! and reports every outcome. A task that panics is reported as failed; the
//! executor carries on.
//!
//! Draining: asked to stop (the executor's drain signal, e.g. SIGTERM) it
//! tells the scheduler, which sends no new tasks; told to drain by the
//! scheduler (`volley executors drain`) it does the same. It goes on
//! serving its stored output until the scheduler says nothing on it is
//! needed (`Released`), or until the drain timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_plan::{ExecutionPlan, displayable};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tonic::Streaming;
use tracing::Instrument;
use tracing::{debug, info, warn};
use volley_dataflow::{
    JobId, PartitionLocation, StageId, StreamedInputs, decode_plan, describe_files, input_files,
};
use volley_proto::v1;

use crate::error::ExecutorError;
use crate::shuffle_store::ShuffleStore;
use crate::task_runner::{
    StageRun, TaskEnv, failure_from_error, make_interruptible, panic_failure, run_task,
};

type StageKey = (JobId, StageId, u32);

/// Why a control loop ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The stream to the scheduler ended or failed.
    Lost(ExecutorError),
    /// Drained: nothing on this executor is needed any more.
    Released,
    /// Draining took longer than the drain timeout.
    DrainTimedOut,
}

/// A finished task and its outcome, ready to report.
struct Finished {
    status: v1::TaskStatus,
}

pub(crate) struct ControlLoop {
    pub(crate) env: Arc<TaskEnv>,
    /// Where tasks run: a runtime of their own, so that CPU-bound operators
    /// that never yield cannot starve heartbeats or the Flight service.
    tasks_runtime: tokio::runtime::Handle,
    pub(crate) store: Arc<ShuffleStore>,
    pub(crate) outbound: mpsc::UnboundedSender<v1::ExecutorMessage>,
    pub(crate) heartbeat_interval: Duration,
    plans: HashMap<StageKey, Arc<dyn ExecutionPlan>>,
    /// Map outputs announced for each pipelined stage attempt's tasks
    /// here (kept and dropped with its plan).
    streamed: HashMap<StageKey, Arc<StreamedInputs>>,
    running: JoinSet<Finished>,
    by_job: HashMap<JobId, Vec<AbortHandle>>,
    /// Each running task by id, to cancel one attempt alone.
    by_task: HashMap<u64, AbortHandle>,
    /// Reports `grpc.health.v1` status: not serving while draining.
    health: tonic_health::server::HealthReporter,
    drain_timeout: Duration,
    /// When draining must end, once it started.
    drain_deadline: Option<tokio::time::Instant>,
}

impl ControlLoop {
    pub(crate) fn new(
        env: Arc<TaskEnv>,
        tasks_runtime: tokio::runtime::Handle,
        store: Arc<ShuffleStore>,
        outbound: mpsc::UnboundedSender<v1::ExecutorMessage>,
        heartbeat_interval: Duration,
        health: tonic_health::server::HealthReporter,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            env,
            tasks_runtime,
            store,
            outbound,
            heartbeat_interval,
            plans: HashMap::new(),
            streamed: HashMap::new(),
            running: JoinSet::new(),
            by_job: HashMap::new(),
            by_task: HashMap::new(),
            health,
            drain_timeout,
            drain_deadline: None,
        }
    }

    /// Starts draining (once): not serving, and a deadline.
    async fn start_draining(&mut self) {
        if self.drain_deadline.is_none() {
            info!(running = self.running.len(), stored = self.store.len(), timeout = ?self.drain_timeout, "draining");
            self.drain_deadline = Some(tokio::time::Instant::now() + self.drain_timeout);
            self.health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
    }

    fn send(&self, kind: v1::executor_message::Kind) {
        // If the stream is gone the loop ends on the inbound side.
        let _ = self.outbound.send(v1::ExecutorMessage { kind: Some(kind) });
    }

    /// Runs until the scheduler closes the stream, or draining ends;
    /// returns why it ended. `drain` turning true asks for a drain.
    pub(crate) async fn run(
        mut self,
        mut inbound: Streaming<v1::SchedulerMessage>,
        drain: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Ended {
        let mut heartbeat = tokio::time::interval(self.heartbeat_interval);
        let mut drain_asked = false;
        loop {
            if !drain_asked && *drain.borrow_and_update() {
                drain_asked = true;
                self.send(v1::executor_message::Kind::Drain(v1::DrainRequest {
                    reason: "the executor was asked to stop".into(),
                }));
                self.start_draining().await;
            }
            let deadline = self.drain_deadline;
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(v1::SchedulerMessage { kind: Some(v1::scheduler_message::Kind::Drain(_)) })) => {
                        self.start_draining().await;
                    }
                    Ok(Some(v1::SchedulerMessage { kind: Some(v1::scheduler_message::Kind::Released(_)) })) => {
                        info!("drained: the scheduler needs nothing more from this executor");
                        return Ended::Released;
                    }
                    Ok(Some(message)) => self.on_message(message),
                    Ok(None) => return Ended::Lost(ExecutorError::SchedulerLost("the scheduler closed the control stream".into())),
                    Err(status) => return Ended::Lost(ExecutorError::SchedulerLost(status.message().to_string())),
                },
                changed = drain.changed(), if !drain_asked => {
                    if changed.is_err() {
                        // Nobody can ask for a drain any more.
                        drain_asked = true;
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    warn!(running = self.running.len(), stored = self.store.len(), "drain timed out; stopping anyway");
                    return Ended::DrainTimedOut;
                }
                _ = heartbeat.tick() => {
                    let pool = &self.env.state.runtime_env().memory_pool;
                    self.send(v1::executor_message::Kind::Heartbeat(v1::Heartbeat {
                        running_tasks: self.running.len() as u32,
                        stored_outputs: self.store.len() as u32,
                        memory_reserved: pool.reserved() as u64,
                        memory_limit: self.env.memory_limit as u64,
                        shuffle_memory_bytes: self.store.memory_held() as u64,
                        shuffle_disk_bytes: self.store.disk_held(),
                        shuffle_spilled_bytes: self.store.metrics().shuffle_bytes_spilled.get(),
                    }));
                }
                Some(joined) = self.running.join_next(), if !self.running.is_empty() => {
                    match joined {
                        Ok(finished) => {
                            self.by_task.remove(&finished.status.task_id);
                            self.send(v1::executor_message::Kind::TaskStatus(finished.status));
                        }
                        // Aborted tasks belong to cancelled jobs: nothing to report.
                        Err(e) if e.is_cancelled() => {}
                        Err(e) => warn!(error = %e, "a task ended abnormally outside its panic guard"),
                    }
                }
            }
        }
    }

    fn on_message(&mut self, message: v1::SchedulerMessage) {
        match message.kind {
            Some(v1::scheduler_message::Kind::LaunchTasks(launch)) => self.launch(launch),
            Some(v1::scheduler_message::Kind::CancelTasks(cancel)) => {
                // A superseded attempt: it reports nothing, and a writer it
                // had open is dropped, never stored.
                for task_id in cancel.task_ids {
                    if let Some(handle) = self.by_task.remove(&task_id) {
                        debug!(task_id, "cancelling a superseded task");
                        handle.abort();
                    }
                }
            }
            Some(v1::scheduler_message::Kind::CancelJobTasks(cancel)) => {
                let job_id = JobId::from(cancel.job_id);
                if let Some(handles) = self.by_job.remove(&job_id) {
                    info!(job_id = %job_id, tasks = handles.len(), "cancelling tasks");
                    for handle in handles {
                        handle.abort();
                    }
                }
                self.plans.retain(|(job, _, _), _| *job != job_id);
                self.streamed.retain(|(job, _, _), _| *job != job_id);
            }
            Some(v1::scheduler_message::Kind::MapOutputsReady(ready)) => {
                let Some(key) = ready.consumer else {
                    warn!("map outputs announced without a consumer; ignored");
                    return;
                };
                let key = (
                    JobId::from(key.job_id.as_str()),
                    StageId(key.stage_id),
                    key.stage_attempt,
                );
                let pieces = ready
                    .locations
                    .iter()
                    .map(PartitionLocation::from)
                    .collect();
                self.streamed.entry(key).or_default().announce(
                    StageId(ready.input_stage),
                    &ready.map_partitions,
                    pieces,
                );
            }
            Some(v1::scheduler_message::Kind::RemoveJobData(remove)) => {
                let job_id = match JobId::parse(&remove.job_id) {
                    Ok(id) => id,
                    Err(e) => {
                        warn!(error = %e, "RemoveJobData refused");
                        return;
                    }
                };
                let stages: Vec<StageId> = remove.stage_ids.into_iter().map(StageId).collect();
                let removed = self.store.remove_job(&job_id, &stages);
                debug!(job_id = %job_id, removed, "removed shuffle data");
                self.plans.retain(|(job, stage, _), _| {
                    !(*job == job_id && (stages.is_empty() || stages.contains(stage)))
                });
                self.streamed.retain(|(job, stage, _), _| {
                    !(*job == job_id && (stages.is_empty() || stages.contains(stage)))
                });
                if stages.is_empty() {
                    self.by_job.remove(&job_id);
                }
            }
            Some(
                v1::scheduler_message::Kind::Registered(_)
                | v1::scheduler_message::Kind::Drain(_)
                | v1::scheduler_message::Kind::Released(_),
            )
            | None => {}
        }
    }

    fn launch(&mut self, launch: v1::LaunchTasks) {
        let Some(key) = launch.stage else {
            warn!("launch without a stage key; ignored");
            return;
        };
        let job_id = JobId::from(key.job_id.as_str());
        let stage_id = StageId(key.stage_id);
        let cache_key = (job_id.clone(), stage_id, key.stage_attempt);
        let streamed = Arc::clone(self.streamed.entry(cache_key.clone()).or_default());
        let plan = if launch.plan.is_empty() {
            self.plans.get(&cache_key).cloned().ok_or_else(|| {
                volley_dataflow::volley_internal(format!(
                    "stage {stage_id} of job {job_id} was launched without its plan"
                ))
            })
        } else {
            decode_plan(&launch.plan, &self.env.state.task_ctx())
                .and_then(make_interruptible)
                .inspect(|plan| {
                if volley_dataflow::log_plans() {
                    debug!(job_id = %job_id, stage = %stage_id, plan = %displayable(plan.as_ref()).indent(false), "stage plan received");
                }
                self.plans.insert(cache_key, Arc::clone(plan));
            })
        };
        let settings = Arc::new(launch.settings);
        let trace_context = launch.trace_context;
        let stage_attempt = key.stage_attempt;
        self.by_task.retain(|_, h| !h.is_finished());
        let handles = self.by_job.entry(job_id.clone()).or_default();
        handles.retain(|h| !h.is_finished());
        for task in launch.tasks {
            let task_name = format!("{job_id}/{stage_id}/{}#{}", task.partition, task.task_id);
            let mut status = v1::TaskStatus {
                stage: Some(key.clone()),
                task_id: task.task_id,
                partition: task.partition,
                attempt: task.attempt,
                result: None,
            };
            let plan = match &plan {
                Ok(plan) => Arc::clone(plan),
                Err(e) => {
                    status.result = Some(v1::task_status::Result::Failure(failure_from_error(e)));
                    let _ = self.outbound.send(v1::ExecutorMessage {
                        kind: Some(v1::executor_message::Kind::TaskStatus(status)),
                    });
                    continue;
                }
            };
            debug!(job_id = %job_id, stage = %stage_id, partition = task.partition, task_id = task.task_id, "task started");
            let env = Arc::clone(&self.env);
            let settings = Arc::clone(&settings);
            let tasks_runtime = self.tasks_runtime.clone();
            let task_plan = Arc::clone(&plan);
            let streamed = Arc::clone(&streamed);
            // With traces exported, the task's span is a child of its
            // stage's span on the scheduler.
            let span = if volley_dataflow::traces_exported() {
                let span = tracing::info_span!(
                    "task",
                    job_id = %job_id,
                    stage = stage_id.0,
                    partition = task.partition,
                    attempt = task.attempt,
                    executor_id = %self.env.executor_id,
                );
                volley_dataflow::set_remote_parent(&span, &trace_context);
                span
            } else {
                tracing::Span::none()
            };
            let handle = self.running.spawn(async move {
                // The task runs in its own tokio task so a panic in a kernel
                // is caught here and reported, not carried to the executor.
                let inner = tasks_runtime.spawn(
                    run_task(
                        env,
                        StageRun {
                            plan,
                            attempt: stage_attempt,
                            streamed,
                        },
                        task.partition as usize,
                        settings,
                        task_name.clone(),
                    )
                    .instrument(span),
                );
                let abort = inner.abort_handle();
                let _guard = AbortOnDrop(abort);
                status.result = Some(match inner.await {
                    Ok(result) => result,
                    Err(e) if e.is_panic() => {
                        let panic = e.into_panic();
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into());
                        // Name what the task was reading: a corrupt file
                        // that trips a decoder is the usual cause.
                        let files = input_files(&task_plan, task.partition as usize);
                        let message = if files.is_empty() {
                            message
                        } else {
                            format!("{message} (while reading {})", describe_files(&files))
                        };
                        warn!(task = %task_name, %message, "task panicked");
                        v1::task_status::Result::Failure(panic_failure(&task_name, &message))
                    }
                    Err(e) => {
                        v1::task_status::Result::Failure(panic_failure(&task_name, &e.to_string()))
                    }
                });
                Finished { status }
            });
            self.by_task.insert(task.task_id, handle.clone());
            handles.push(handle);
        }
    }
}

/// Aborts a spawned task when the future awaiting it is dropped (cancelled).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
