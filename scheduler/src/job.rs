//! A job: its stages (`stage.rs`: their states and transitions), and the
//! job status derived from them.
//!
//! A stage is *waiting* until every input stage has finished, then
//! *runnable*: its readers are resolved against the inputs' map outputs and
//! its plan is encoded once (`Job::resolve_ready_stages`). With the
//! pipelined exchange (`volley.pipelined_exchange`, on by default) it is
//! runnable as soon as every input has finished or has all its tasks
//! placed: readers of a running input are *streamed*, and get each of its
//! map outputs as it finishes (`Job::announce_map_output`,
//! `Job::catch_up`). Its tasks then take only slots nobody else waits for,
//! and wait only for tasks already running, so no set of stages can hold
//! every slot waiting for each other; should an input have a task to place
//! again, the consumer gives its slots back (`Job::withdraw_stalled_pipelines`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::watch;
// The state machine's clock: tokio's, which tests pause and advance.
use tokio::time::Instant;
use volley_dataflow::{
    ExchangeKind, ExecutorId, JobId, KeySummary, ShuffleReaderExec, StageId, TaskId, encode_plan,
    volley_internal,
};
use volley_proto::v1;

use crate::access::JobAccess;
use crate::event_log::{EventLog, JobEvents, StageView};
use crate::job_trace::JobTrace;
use crate::runtime_filters::{RuntimeFilter, apply_runtime_filters};
use crate::stage::{FinishedOutput, Stage, StageState};

/// How a job recovers from failures: methods of `Job` kept in their own
/// file, a child module so they reach the job's private fields.
#[path = "recovery.rs"]
pub(crate) mod recovery;
use crate::stage_planner::StagePlan;

/// Where a job is in its life.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum JobPhase {
    Running,
    Succeeded,
    Failed(v1::JobError),
    Cancelled,
}

impl JobPhase {
    pub(crate) fn is_terminal(&self) -> bool {
        !matches!(self, JobPhase::Running)
    }

    /// The phase as metrics and the web UI name it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Succeeded => "succeeded",
            JobPhase::Failed(_) => "failed",
            JobPhase::Cancelled => "cancelled",
        }
    }
}

/// Totals of what a script's finished statements did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    stages: u32,
    tasks: u32,
    rows_shuffled: u64,
    bytes_shuffled: u64,
}

/// Where a script job is: which statement runs, and how to tell its driver
/// that the statement's stages have finished.
#[derive(Debug)]
pub(crate) struct ScriptProgress {
    pub(crate) statements_total: u32,
    pub(crate) statements_done: u32,
    /// The running statement: its number (from 1) and line in the script.
    pub(crate) current: Option<(u32, u32)>,
    pub(crate) statement_done: Option<tokio::sync::oneshot::Sender<()>>,
    finished: Totals,
}

/// A submitted job.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: JobId,
    pub(crate) name: String,
    /// Where it is; changed only by its own methods.
    phase: JobPhase,
    /// Its stages in order (the final one last), current statement's for
    /// a script; each changes only through its own transitions.
    stages: Vec<Stage>,
    pub(crate) settings: HashMap<String, String>,
    result_schema: Vec<u8>,
    pub(crate) traffic: BTreeMap<(ExecutorId, ExecutorId), (u64, u64)>,
    started_at: SystemTime,
    started_instant: Instant,
    ended_at: Option<SystemTime>,
    pub(crate) ended_instant: Option<Instant>,
    pub(crate) watch: watch::Sender<v1::JobStatus>,
    /// Set for jobs that run a SQL script on the scheduler.
    pub(crate) script: Option<ScriptProgress>,
    /// Set when the result goes to files: the files written.
    pub(crate) output_files: Option<Vec<String>>,
    /// Where a (non-script) job's final stage writes, to be moved into
    /// place when the job succeeds.
    pub(crate) output_target: Option<crate::output_target::OutputTarget>,
    /// What recovery did.
    pub(crate) recovery: v1::JobRecovery,
    /// Executors that ran any task of the job.
    pub(crate) executors_used: HashSet<ExecutorId>,
    /// Who owns the job, and how its tickets are signed.
    pub(crate) access: JobAccess,
    /// What the job runs, for people: a script's SQL, or a plan job's
    /// logical plan (the client sends a plan, not its SQL).
    source: String,
    /// Its events in the event log (`--event-log`), if there is one.
    events: Option<JobEvents>,
    /// Its spans, when traces are exported.
    trace: Option<JobTrace>,
    /// The owner's tickets for result pieces, by (stage, map, output
    /// partition, attempt): a piece written again by another attempt gets
    /// a new ticket, since tickets name the attempt whose output they read.
    result_grants: std::sync::Mutex<HashMap<ResultPiece, Vec<u8>>>,
    /// A script job's outputs (`--output`, `COPY ... TO 'dir/'`) once
    /// prepared: removed as the job fails, before anyone hears it failed.
    pub(crate) script_outputs: Vec<crate::output_target::OutputTarget>,
    /// Executors this job no longer places tasks on: another executor could
    /// not read their output while they were alive (a network partition
    /// between executors, or a broken Flight service).
    excluded: HashSet<ExecutorId>,
    /// A finished job loaded from the state store: its final status as
    /// stored (it has no stages any more).
    restored: Option<v1::JobStatus>,
    /// Whether map outputs executors kept across a scheduler restart may
    /// stand in for its tasks (not when it plans differently now).
    takes_over_outputs: bool,
    /// Map outputs executors kept across a scheduler restart for stages a
    /// restarted script has not reached again yet.
    offered: Vec<Offered>,
    /// Running tasks of attempts that were superseded (their stage was
    /// re-planned), to be cancelled where they run.
    pub(crate) superseded: Vec<(ExecutorId, TaskId)>,
}

/// A piece of a job's result as its tickets name it: stage, map and output
/// partition, and the attempt that wrote it.
type ResultPiece = (u32, u32, u32, volley_dataflow::OutputAttempt);

/// A kept map output waiting for its stage.
#[derive(Debug)]
struct Offered {
    stage: StageId,
    map: usize,
    output: FinishedOutput,
}

impl Job {
    pub(crate) fn new(
        id: JobId,
        name: String,
        stages: Vec<StagePlan>,
        settings: HashMap<String, String>,
        result_schema: Vec<u8>,
    ) -> Self {
        let (watch, _) = watch::channel(v1::JobStatus::default());
        let mut job = Self {
            id,
            name,
            phase: JobPhase::Running,
            stages: stages.into_iter().map(Stage::new).collect(),
            settings,
            result_schema,
            traffic: BTreeMap::new(),
            started_at: SystemTime::now(),
            started_instant: Instant::now(),
            ended_at: None,
            ended_instant: None,
            watch,
            script: None,
            output_files: None,
            output_target: None,
            recovery: v1::JobRecovery::default(),
            executors_used: HashSet::new(),
            access: JobAccess::default(),
            source: String::new(),
            events: None,
            trace: None,
            result_grants: std::sync::Mutex::default(),
            script_outputs: Vec::new(),
            excluded: HashSet::new(),
            restored: None,
            takes_over_outputs: true,
            offered: Vec::new(),
            superseded: Vec::new(),
        };
        job.publish();
        job
    }

    /// Starts logging the job's events in `log`, with `job_submitted`.
    pub(crate) fn log_events(&mut self, log: EventLog) {
        self.events = Some(JobEvents::submitted(
            log,
            &self.id,
            &self.name,
            self.access.owner().map(|u| u.to_string()),
            self.script.is_some(),
            &self.source,
        ));
        self.publish();
    }

    /// Opens the job's trace (when traces are exported).
    pub(crate) fn start_trace(&mut self) {
        if volley_dataflow::traces_exported() {
            self.trace = Some(JobTrace::start(&self.id, &self.name));
        }
    }

    /// The script statement whose stages the job holds now (0: a plan job).
    fn statement(&self) -> u32 {
        self.script
            .as_ref()
            .and_then(|s| s.current)
            .map_or(0, |(number, _)| number)
    }

    /// The trace context to launch tasks of stage `stage_id` with (empty
    /// when traces are not exported).
    pub(crate) fn stage_trace_context(
        &mut self,
        stage_id: StageId,
    ) -> std::collections::HashMap<String, String> {
        let statement = self.statement();
        let Some(stage) = self.stage_index(stage_id).map(|i| &self.stages[i]) else {
            return Default::default();
        };
        let (key, partitions) = ((statement, stage_id.0, stage.attempt()), stage.partitions());
        match &mut self.trace {
            Some(trace) => trace.stage_context(key, partitions),
            None => Default::default(),
        }
    }

    /// Logs a failed task attempt in the event log.
    pub(crate) fn log_task_failure(
        &self,
        stage: StageId,
        partition: u32,
        attempt: u32,
        executor: &ExecutorId,
        error: &v1::JobError,
    ) {
        if let Some(events) = &self.events {
            events.task_failed(
                &self.id,
                stage.0,
                partition,
                attempt,
                executor.as_str(),
                error,
            );
        }
    }

    /// A finished job as the state store kept it.
    pub(crate) fn restored(status: v1::JobStatus, access: JobAccess) -> Self {
        let phase = match v1::JobState::try_from(status.state) {
            Ok(v1::JobState::Succeeded) => JobPhase::Succeeded,
            Ok(v1::JobState::Cancelled) => JobPhase::Cancelled,
            _ => JobPhase::Failed(status.error.clone().unwrap_or_default()),
        };
        let mut job = Self::new(
            JobId::from(status.job_id.as_str()),
            status.name.clone(),
            Vec::new(),
            HashMap::new(),
            Vec::new(),
        )
        .with_access(access);
        job.phase = phase;
        job.started_at = UNIX_EPOCH + Duration::from_millis(status.started_at_ms);
        job.ended_at = Some(UNIX_EPOCH + Duration::from_millis(status.ended_at_ms));
        // Its result's time to live starts again with this scheduler.
        job.ended_instant = Some(Instant::now());
        job.restored = Some(status);
        job.publish();
        job
    }

    /// Dates a job planned again after a restart from its first submission.
    pub(crate) fn submitted_at(mut self, millis: u64) -> Self {
        self.started_at = UNIX_EPOCH + Duration::from_millis(millis);
        self
    }

    /// Counts a scheduler restart the job lived through.
    pub(crate) fn restarted(mut self) -> Self {
        self.recovery.scheduler_restarts += 1;
        self
    }

    /// Whether kept map outputs may stand in for this job's tasks.
    pub(crate) fn taking_over_outputs(mut self, allowed: bool) -> Self {
        self.takes_over_outputs = allowed;
        self
    }

    /// Whether kept map outputs may stand in for this job's tasks.
    pub(crate) fn takes_over_outputs(&self) -> bool {
        self.takes_over_outputs
    }

    /// Partitions of each stage.
    pub(crate) fn stage_partitions(&self) -> Vec<u32> {
        self.stages.iter().map(|s| s.partitions() as u32).collect()
    }
    /// Orders jobs by when they started (ties by id).
    pub(crate) fn started_key(&self) -> (SystemTime, &JobId) {
        (self.started_at, &self.id)
    }

    /// Gives the job its owner and ticket signing (before it is submitted).
    /// Whether this job places no more tasks on `executor`.
    pub(crate) fn is_excluded(&self, executor: &ExecutorId) -> bool {
        self.excluded.contains(executor)
    }

    /// The executors this job places no more tasks on.
    pub(crate) fn excluded(&self) -> &HashSet<ExecutorId> {
        &self.excluded
    }

    /// Places no more tasks of this job on `executor`.
    pub(crate) fn exclude(&mut self, executor: ExecutorId) {
        self.excluded.insert(executor);
    }

    pub(crate) fn with_access(mut self, access: JobAccess) -> Self {
        self.access = access;
        self
    }

    /// The job with what it runs, as people read it (see [`Job::source`]).
    pub(crate) fn with_source(mut self, source: String) -> Self {
        self.source = source;
        self
    }

    /// A script's SQL, or a plan job's logical plan; empty for a job
    /// restored from the state store.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// A job that runs a script of `statements` statements; its stages come
    /// one statement at a time through [`Job::begin_statement`].
    pub(crate) fn new_script(
        id: JobId,
        name: String,
        statements: u32,
        settings: HashMap<String, String>,
    ) -> Self {
        let mut job = Self::new(id, name, Vec::new(), settings, Vec::new());
        job.script = Some(ScriptProgress {
            statements_total: statements,
            statements_done: 0,
            current: None,
            statement_done: None,
            finished: Totals::default(),
        });
        job.publish();
        job
    }

    /// Replaces the stages of a script job with those of its next
    /// statement; the previous statement's stages count in the totals.
    pub(crate) fn begin_statement(
        &mut self,
        number: u32,
        line: u32,
        stages: Vec<StagePlan>,
        result_schema: Vec<u8>,
        done: tokio::sync::oneshot::Sender<()>,
    ) {
        let previous = self.current_totals();
        if let Some(script) = &mut self.script {
            script.finished.stages += previous.stages;
            script.finished.tasks += previous.tasks;
            script.finished.rows_shuffled += previous.rows_shuffled;
            script.finished.bytes_shuffled += previous.bytes_shuffled;
            script.current = Some((number, line));
            script.statement_done = Some(done);
        }
        self.stages = stages.into_iter().map(Stage::new).collect();
        self.result_schema = result_schema;
        self.traffic.clear();
        self.adopt_offered();
    }

    /// Ids of every stage.
    pub(crate) fn stage_ids(&self) -> Vec<u32> {
        self.stages.iter().map(|s| s.id().0).collect()
    }

    /// What the current stages did (every stage's output counts as
    /// shuffled here: a script's intermediate results are not returned).
    fn current_totals(&self) -> Totals {
        let mut totals = Totals::default();
        for stage in &self.stages {
            let (rows, bytes) = stage.rows_and_bytes();
            totals.stages += 1;
            totals.tasks += stage.partitions() as u32;
            totals.rows_shuffled += rows;
            totals.bytes_shuffled += bytes;
        }
        totals
    }

    /// A statement that ran on the scheduler alone (DDL, SET) is done.
    pub(crate) fn local_statement_done(&mut self) {
        if let Some(script) = &mut self.script {
            script.statements_done += 1;
        }
        self.publish();
    }

    /// A job that failed before it could be planned.
    pub(crate) fn failed_at_submit(id: JobId, name: String, error: v1::JobError) -> Self {
        let mut job = Self::new(id, name, Vec::new(), HashMap::new(), Vec::new());
        job.finish(JobPhase::Failed(error));
        job
    }

    /// Where stage `id` is in `stages` (a script's statements number their
    /// stages on from the last one's).
    /// Where the job is in its life.
    pub(crate) fn phase(&self) -> &JobPhase {
        &self.phase
    }

    /// Its stages, in order: the final one last.
    pub(crate) fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Stage `index`, to make one of its transitions.
    pub(crate) fn stage_mut(&mut self, index: usize) -> &mut Stage {
        &mut self.stages[index]
    }

    /// Every stage, to make their transitions (placement).
    pub(crate) fn stages_mut(&mut self) -> impl Iterator<Item = &mut Stage> {
        self.stages.iter_mut()
    }

    pub(crate) fn stage_index(&self, id: StageId) -> Option<usize> {
        let first = self.stages.first()?.id().0;
        let index = id.0.checked_sub(first)? as usize;
        (index < self.stages.len()).then_some(index)
    }

    /// A kept map output an executor brought back after a scheduler
    /// restart: taken over now if its stage is there ([`Job::adopt_output`]);
    /// for a script, kept for when its statement's stages come. Returns
    /// whether it was taken over now.
    pub(crate) fn offer_output(
        &mut self,
        stage: StageId,
        map: usize,
        output: FinishedOutput,
    ) -> bool {
        if self.stage_index(stage).is_none() && self.script.is_some() {
            self.offered.push(Offered { stage, map, output });
            return false;
        }
        self.adopt_output(stage, map, output)
    }

    /// Takes over kept outputs offered for the stages now current.
    fn adopt_offered(&mut self) {
        let offered = std::mem::take(&mut self.offered);
        for offer in offered {
            if self.stage_index(offer.stage).is_some() {
                self.adopt_output(offer.stage, offer.map, offer.output);
            } else {
                self.offered.push(offer);
            }
        }
    }

    /// `executor` is gone: what it offered is gone with it.
    pub(crate) fn withdraw_offers(&mut self, executor: &ExecutorId) {
        self.offered.retain(|o| o.output.executor != *executor);
    }

    /// Ids of every stage but the final one.
    pub(crate) fn intermediate_stage_ids(&self) -> Vec<u32> {
        let last = self.stages.len().saturating_sub(1);
        self.stages[..last].iter().map(|s| s.id().0).collect()
    }

    pub(crate) fn final_stage(&self) -> Option<&Stage> {
        self.stages.last()
    }

    /// Makes every waiting stage whose inputs have all finished runnable,
    /// and with the pipelined exchange also those whose unfinished inputs
    /// have every task placed (their readers are streamed). Returns the
    /// stages that became runnable.
    pub(crate) fn resolve_ready_stages(&mut self) -> Result<Vec<StageId>> {
        let mut ready = Vec::new();
        for i in 0..self.stages.len() {
            let stage = &self.stages[i];
            if stage.state() != StageState::Waiting {
                continue;
            }
            let mut streamed = Vec::new();
            let mut inputs_ready = true;
            let filter_sources: Vec<StageId> = stage.filter_sources().collect();
            for input in stage.inputs() {
                match self.stage_index(*input).map(|i| &self.stages[i]) {
                    Some(input) if input.is_finished() => {}
                    // A stage a runtime filter comes from must finish first.
                    Some(input)
                        if stage.pipelined()
                            && input.all_placed()
                            && !filter_sources.contains(&input.id()) =>
                    {
                        streamed.push(input.id());
                    }
                    _ => inputs_ready = false,
                }
            }
            let sources_done = filter_sources.iter().all(|source| {
                self.stage_index(*source)
                    .is_some_and(|i| self.stages[i].is_finished())
            });
            if !inputs_ready || !sources_done {
                continue;
            }
            let resolved = Arc::clone(stage.plan())
                .transform_up(|node| {
                    let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
                        return Ok(Transformed::no(node));
                    };
                    let Some(input) = self
                        .stage_index(reader.input_stage())
                        .map(|i| &self.stages[i])
                    else {
                        return Err(volley_dataflow::volley_internal(format!(
                            "a reader of job {} names stage {}, which it does not have",
                            self.id,
                            reader.input_stage()
                        )));
                    };
                    if streamed.contains(&input.id()) {
                        return Ok(Transformed::yes(
                            Arc::new(reader.streamed(input.partitions())) as Arc<dyn ExecutionPlan>,
                        ));
                    }
                    let by_output =
                        input.output_locations(&self.id, |t| self.access.cluster_grant(t));
                    let locations = match reader.kind() {
                        ExchangeKind::Repartition => by_output,
                        ExchangeKind::Passthrough => {
                            let mut per_map = vec![Vec::new(); reader.partition_count()];
                            for location in by_output.into_iter().flatten() {
                                let map = location.map_output.map_partition as usize;
                                if let Some(slot) = per_map.get_mut(map) {
                                    slot.push(location);
                                }
                            }
                            per_map
                        }
                    };
                    Ok(Transformed::yes(
                        Arc::new(reader.with_locations(locations)?) as Arc<dyn ExecutionPlan>,
                    ))
                })?
                .data;
            // Each runtime filter whose build keys every task summarized.
            let filters: Vec<(RuntimeFilter, KeySummary)> = stage
                .filters()
                .iter()
                .filter_map(|filter| {
                    let source = &self.stages[self.stage_index(filter.source)?];
                    let summary = source.key_summary(filter.source_column)?;
                    Some((filter.clone(), summary.clone()))
                })
                .collect();
            let (resolved, applied) = if filters.is_empty() {
                (resolved, 0)
            } else {
                apply_runtime_filters(resolved, &filters)?
            };
            let encoded = encode_plan(resolved)?;
            self.stages[i]
                .resolve(encoded, streamed, applied)
                .map_err(|e| volley_internal(format!("stage {} resolved twice", e.0)))?;
            ready.push(self.stages[i].id());
        }
        Ok(ready)
    }

    /// Pipelined consumers whose streamed inputs have a task to place
    /// again (failed, or lost with its executor; or re-planned) give back
    /// their slots as a new attempt, to be resolved again once the input
    /// has every task placed: a consumer never holds a slot while waiting
    /// for a task that has none. Their running tasks join `superseded`.
    pub(crate) fn withdraw_stalled_pipelines(&mut self) {
        // A withdrawn stage stalls those streaming from it in turn.
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..self.stages.len() {
                let stalled = self.stages[i].streams_from().iter().any(|input| {
                    self.stage_index(*input)
                        .map(|i| &self.stages[i])
                        .is_none_or(|input| !input.is_finished() && !input.all_placed())
                });
                if stalled && let Some(cancelled) = self.stages[i].withdraw() {
                    self.recovery.pipelined_restarts += 1;
                    self.superseded.extend(cancelled);
                    changed = true;
                }
            }
        }
    }

    /// Map task `map` of the stage at `input` finished: the announcement
    /// for each executor running tasks of a consumer that streams from it.
    pub(crate) fn announce_map_output(
        &self,
        input: usize,
        map: usize,
    ) -> Vec<(ExecutorId, v1::MapOutputsReady)> {
        let Some(producer) = self.stages.get(input) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for consumer in &self.stages {
            if !consumer.streams_from().contains(&producer.id()) {
                continue;
            }
            let holders: Vec<&ExecutorId> = consumer.plan_holders().collect();
            if holders.is_empty() {
                continue;
            }
            let Some(pieces) =
                producer.map_output_pieces(&self.id, map, |t| self.access.cluster_grant(t))
            else {
                continue;
            };
            let message = v1::MapOutputsReady {
                consumer: Some(self.stage_key(consumer)),
                input_stage: producer.id().0,
                map_partitions: vec![map as u32],
                locations: pieces.iter().map(v1::PartitionLocation::from).collect(),
            };
            out.extend(holders.into_iter().map(|e| (e.clone(), message.clone())));
        }
        out
    }

    /// Every map output finished so far of each input the stage at
    /// `consumer` streams from: sent to an executor with the stage's plan.
    pub(crate) fn catch_up(&self, consumer: usize) -> Vec<v1::MapOutputsReady> {
        let Some(stage) = self.stages.get(consumer) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for input in stage.streams_from() {
            let Some(producer) = self.stage_index(*input).map(|i| &self.stages[i]) else {
                continue;
            };
            let mut message = v1::MapOutputsReady {
                consumer: Some(self.stage_key(stage)),
                input_stage: input.0,
                ..Default::default()
            };
            for map in 0..producer.partitions() {
                if let Some(pieces) =
                    producer.map_output_pieces(&self.id, map, |t| self.access.cluster_grant(t))
                {
                    message.map_partitions.push(map as u32);
                    message
                        .locations
                        .extend(pieces.iter().map(v1::PartitionLocation::from));
                }
            }
            out.push(message);
        }
        out
    }

    /// The key tasks of `stage`'s current attempt are launched under.
    pub(crate) fn stage_key(&self, stage: &Stage) -> v1::StageKey {
        v1::StageKey {
            job_id: self.id.to_string(),
            stage_id: stage.id().0,
            stage_attempt: stage.attempt(),
        }
    }

    pub(crate) fn finish(&mut self, phase: JobPhase) {
        if self.phase.is_terminal() {
            return;
        }
        let phase = match (phase, self.script.as_ref().and_then(|s| s.current)) {
            (JobPhase::Failed(mut error), Some((number, line)))
                if !error.message.starts_with("statement ") =>
            {
                error.message =
                    format!("statement {number} (line {line}) failed: {}", error.message);
                JobPhase::Failed(error)
            }
            (phase, _) => phase,
        };
        self.phase = phase;
        self.ended_at = Some(SystemTime::now());
        self.ended_instant = Some(Instant::now());
        self.publish();
    }

    /// How long the job has run: to its end, or until now.
    pub(crate) fn run_time(&self) -> Duration {
        self.ended_instant
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(self.started_instant)
    }

    /// Milliseconds from the job's start to `at`.
    pub(crate) fn millis_at(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started_instant)
            .as_secs_f64()
            * 1000.0
    }

    /// Microseconds from the job's start to `at` (0 for none).
    fn micros_since_start(&self, at: Option<Instant>) -> u64 {
        at.map_or(0, |at| {
            at.saturating_duration_since(self.started_instant)
                .as_micros()
                .max(1) as u64
        })
    }

    /// The job's status as clients see it.
    pub(crate) fn status(&self) -> v1::JobStatus {
        if let Some(status) = &self.restored {
            return status.clone();
        }
        let state = match self.phase {
            JobPhase::Running => v1::JobState::Running,
            JobPhase::Succeeded => v1::JobState::Succeeded,
            JobPhase::Failed(_) => v1::JobState::Failed,
            JobPhase::Cancelled => v1::JobState::Cancelled,
        };
        let mut status = v1::JobStatus {
            job_id: self.id.to_string(),
            name: self.name.clone(),
            state: state as i32,
            stages_total: self.stages.len() as u32,
            result_schema: self.result_schema.clone(),
            started_at_ms: millis(self.started_at),
            ended_at_ms: self.ended_at.map(millis).unwrap_or_default(),
            ..Default::default()
        };
        let last = self.stages.len().saturating_sub(1);
        for (i, stage) in self.stages.iter().enumerate() {
            let done = stage.tasks_done();
            if matches!(stage.state(), StageState::Finished | StageState::Released) {
                status.stages_done += 1;
            }
            status.tasks_total += stage.partitions() as u32;
            status.tasks_done += done as u32;
            // An ended job runs nothing: its leftover tasks were told to
            // stop, and their late statuses are ignored.
            if !self.phase.is_terminal() {
                status.tasks_running += stage.running_count() as u32;
            }
            let (rows, bytes) = stage.rows_and_bytes();
            if i != last {
                status.rows_shuffled += rows;
                status.bytes_shuffled += bytes;
            }
            let (first_launch, last_finish, task_busy, longest_task) = stage.timings();
            status.stages.push(v1::StageStatus {
                stage_id: stage.id().0,
                plan: stage.display().to_string(),
                partitions: stage.partitions() as u32,
                tasks_done: done as u32,
                input_stages: stage.inputs().iter().map(|s| s.0).collect(),
                tasks_by_executor: stage.tasks_by_executor(),
                rows_out: rows,
                bytes_out: bytes,
                started_after_us: self.micros_since_start(first_launch),
                finished_after_us: self.micros_since_start(last_finish),
                task_busy_us: task_busy.as_micros() as u64,
                longest_task_us: longest_task.as_micros() as u64,
                median_task_us: stage.median_task().as_micros() as u64,
                operators: stage.operators(),
                runtime_filters: stage.filters_applied() as u32,
                filtered_by: stage.filter_sources().map(|s| s.0).collect(),
                released: stage.is_released(),
            });
        }
        if let Some(stage) = self.final_stage() {
            status.rows_out = stage.rows_and_bytes().0;
        }
        if let Some(script) = &self.script {
            status.statements_total = script.statements_total;
            status.statements_done = script.statements_done;
            status.stages_total += script.finished.stages;
            status.stages_done += script.finished.stages;
            status.tasks_total += script.finished.tasks;
            status.tasks_done += script.finished.tasks;
            status.rows_shuffled += script.finished.rows_shuffled;
            status.bytes_shuffled += script.finished.bytes_shuffled;
        }
        status.output_files = self.output_files.clone().unwrap_or_default();
        status.recovery = Some(self.recovery);
        // The result's partitions are published as the final stage finishes
        // them, so a client streams them while the rest still run.
        let publishes_result = self.output_files.is_none()
            && self.output_target.is_none()
            && (self.phase == JobPhase::Succeeded
                || (self.phase == JobPhase::Running && self.script.is_none()));
        if publishes_result && let Some(stage) = self.final_stage() {
            // Signed once per piece: a status is published on every task
            // that finishes, and re-signing every piece each time would
            // cost the square of the final stage's width.
            let mut signed = self.result_grants.lock().unwrap_or_else(|p| p.into_inner());
            status.result = stage
                .output_locations(&self.id, |t| {
                    let attempt = volley_dataflow::OutputAttempt::from(t.attempt.as_ref());
                    let key = (t.stage_id, t.map_partition, t.output_partition, attempt);
                    signed
                        .entry(key)
                        .or_insert_with(|| self.access.owner_grant(t))
                        .clone()
                })
                .into_iter()
                .flatten()
                .map(|l| v1::PartitionLocation::from(&l))
                .collect();
        }
        match &self.phase {
            JobPhase::Succeeded => {}
            JobPhase::Failed(error) => status.error = Some(error.clone()),
            JobPhase::Cancelled => {
                status.error = Some(v1::JobError {
                    kind: v1::ErrorKind::Cancelled as i32,
                    message: format!("job {} was cancelled", self.id),
                    query_error: None,
                })
            }
            JobPhase::Running => {}
        }
        status.traffic = self
            .traffic
            .iter()
            .map(|((from, to), (bytes, fetches))| v1::ExchangeTraffic {
                from_executor: from.to_string(),
                to_executor: to.to_string(),
                bytes: *bytes,
                fetches: *fetches,
            })
            .collect();
        status
    }

    /// Sends the current status to every watcher (and logs what changed).
    pub(crate) fn publish(&mut self) {
        let status = self.status();
        let statement = self.statement();
        if let Some(events) = &mut self.events {
            let stages: Vec<StageView<'_>> = self
                .stages
                .iter()
                .zip(&status.stages)
                .map(|(stage, stage_status)| StageView {
                    status: stage_status,
                    attempt: stage.attempt(),
                    started: stage.running_count() > 0 || stage.done_count() > 0,
                    finished: stage.is_finished(),
                })
                .collect();
            events.observe(&status, statement, &stages);
        }
        if let Some(trace) = &mut self.trace {
            // Spans of finished stages, and of attempts no longer current,
            // close.
            let open: Vec<(u32, u32, u32)> = self
                .stages
                .iter()
                .filter(|stage| !stage.is_finished())
                .map(|stage| (statement, stage.id().0, stage.attempt()))
                .collect();
            trace.keep_only(&open);
            if self.phase.is_terminal() {
                trace.ended(self.phase.name());
                self.trace = None;
            }
        }
        self.watch.send_replace(status);
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
