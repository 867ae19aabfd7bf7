//! One stage of a job: its state, its task slots, and every transition
//! between them, each a method that checks its precondition. Nothing
//! outside this file changes a stage's fields.
//!
//! ```text
//! Waiting ──(inputs finished, or with the pipelined exchange finished or
//!            all placed: readers resolved, plan encoded; resolve)──▶ Ready
//! Ready ──(a task starts)──▶ Running ──(none runs, some pending)──▶ Ready
//! Running ──(every slot Done)──▶ Finished
//! Finished ──(an output was lost: requeue)──▶ Ready
//! Ready | Running ──(an input lost an output; supersede: attempt + 1)──▶ Waiting
//! Ready | Running ──(an input it streams from has tasks to place again;
//!                    withdraw: attempt + 1)──▶ Waiting
//! Finished ──(every reader finished; release: outputs dropped)──▶ Released
//! Released ──(a reader must run again; unrelease, then each Done slot
//!             requeued)──▶ Ready, or Waiting if its inputs run again too
//! ```
//!
//! A released stage counts as finished for its readers and the job (its
//! work is done) but holds no outputs. After a scheduler restart, a stage
//! every reader of which has finished is released without running, even
//! with pending slots: nothing needs what it would write.
//!
//! The state is derived from the current attempt (resolved or not: the
//! encoded plan lives inside `Attempt::Resolved`) and the slot counts, so
//! it cannot disagree with them. A stage has no failed state: a failure
//! recovery cannot absorb fails the job (`JobPhase::Failed`), which stops
//! all of its tasks.
//!
//! ```text
//! slot: Pending ──start──▶ Running ──succeed──▶ Done
//!       Running ──requeue (failed, executor lost, superseded)──▶ Pending
//!       Done ──requeue (its output was lost)──▶ Pending
//!       Pending ──adopt (kept across a scheduler restart)──▶ Done
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_plan::{ExecutionPlan, displayable};
// The state machine's clock: tokio's, which tests pause and advance.
use tokio::time::Instant;
use volley_dataflow::{
    ExecutorId, JobId, KeySummary, MapOutputId, OutputAttempt, PartitionLocation, PartitionStats,
    StageId, TaskId,
};
use volley_proto::v1;

use crate::runtime_filters::RuntimeFilter;
use crate::stage_planner::StagePlan;

/// Where a stage is: derived from its current attempt (resolved or not)
/// and its slot counts, never stored beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StageState {
    /// Its current attempt is not resolved: some input is not ready.
    Waiting,
    /// Resolved (its plan encoded): its pending tasks may be placed; none
    /// runs now.
    Ready,
    /// Resolved, and some of its tasks run now.
    Running,
    /// Every task is done.
    Finished,
    /// Finished, and its outputs dropped because every stage reading them
    /// has finished.
    Released,
}

/// What the current attempt of a stage has been given.
#[derive(Debug)]
enum Attempt {
    /// Nothing yet: its readers wait for their inputs.
    Unresolved,
    /// Its readers are resolved.
    Resolved {
        /// The encoded plan every task of the attempt runs.
        encoded: Arc<Vec<u8>>,
        /// Inputs it streams from (pipelined exchange): they were still
        /// running when it was resolved.
        streams_from: Vec<StageId>,
        /// Executors that already hold the plan.
        plan_sent_to: HashSet<ExecutorId>,
    },
}

/// Why a stage cannot be resolved: its current attempt already is.
#[derive(Debug)]
pub(crate) struct AlreadyResolved(pub(crate) StageId);

/// One partition of a stage.
#[derive(Clone, Debug)]
pub(crate) enum TaskSlot {
    Pending,
    Running {
        task_id: TaskId,
        executor: ExecutorId,
        launched: Instant,
    },
    Done {
        executor: ExecutorId,
        endpoint: String,
        stats: Vec<PartitionStats>,
        /// The attempt that wrote the output: its readers name it.
        attempt: OutputAttempt,
    },
}

/// A map task's finished output: where it is, its rows and bytes per output
/// partition, and the attempt that wrote it.
#[derive(Clone, Debug)]
pub(crate) struct FinishedOutput {
    pub(crate) executor: ExecutorId,
    pub(crate) endpoint: String,
    pub(crate) stats: Vec<PartitionStats>,
    pub(crate) attempt: OutputAttempt,
}

impl From<FinishedOutput> for TaskSlot {
    fn from(output: FinishedOutput) -> Self {
        TaskSlot::Done {
            executor: output.executor,
            endpoint: output.endpoint,
            stats: output.stats,
            attempt: output.attempt,
        }
    }
}

/// How many slots of a stage are in each state.
#[derive(Debug, Clone, Copy, Default)]
struct SlotCounts {
    pending: usize,
    running: usize,
    done: usize,
}

impl SlotCounts {
    fn of(slot: &TaskSlot) -> fn(&mut SlotCounts) -> &mut usize {
        match slot {
            TaskSlot::Pending => |c| &mut c.pending,
            TaskSlot::Running { .. } => |c| &mut c.running,
            TaskSlot::Done { .. } => |c| &mut c.done,
        }
    }

    /// A slot went from `old` to `new`.
    fn moved(&mut self, old: &TaskSlot, new: &TaskSlot) {
        *Self::of(old)(self) -= 1;
        *Self::of(new)(self) += 1;
    }
}

/// How one task attempt ended, for the web UI's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunOutcome {
    Running,
    Succeeded,
    /// It failed, or its executor was lost, and the task ran again.
    Failed,
    /// Its stage was re-planned while it ran; it was cancelled.
    Superseded,
}

impl RunOutcome {
    pub(crate) fn name(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Superseded => "superseded",
        }
    }
}

/// One attempt of one task: where and when it ran, and how it ended.
#[derive(Clone, Debug)]
pub(crate) struct TaskRun {
    pub(crate) partition: usize,
    /// The task's attempt (0 first).
    pub(crate) attempt: u32,
    pub(crate) executor: ExecutorId,
    pub(crate) launched: Instant,
    pub(crate) ended: Option<Instant>,
    pub(crate) outcome: RunOutcome,
}

/// Why a stage cannot be re-planned again.
#[derive(Debug)]
pub(crate) struct TooManyAttempts(pub(crate) u32);

#[derive(Debug)]
pub(crate) struct Stage {
    id: StageId,
    plan: Arc<dyn ExecutionPlan>,
    inputs: Vec<StageId>,
    output_partitions: usize,
    tasks: Vec<TaskSlot>,
    /// Slots per state, kept with every change (read on every status and
    /// placement pass; counting 10,000 slots each time cost 10% of the
    /// scheduler's task rate).
    counts: SlotCounts,
    attempt: u32,
    /// What the current attempt has been given.
    resolved: Attempt,
    /// Attempts started so far, per partition.
    task_attempts: Vec<u32>,
    /// Where a partition last failed, to try elsewhere next.
    avoid: Vec<Option<ExecutorId>>,
    /// How often the stage was re-planned after lost inputs.
    reruns: u32,
    /// When a task of this stage was first launched, and its last task
    /// finished.
    first_launch: Option<Instant>,
    last_finish: Option<Instant>,
    /// Launch-to-success time of its tasks, summed, and the longest.
    task_busy: Duration,
    longest_task: Duration,
    display: String,
    /// Every task attempt launched, in launch order.
    runs: Vec<TaskRun>,
    /// What each operator (pre-order) has done on each executor, by
    /// attempt: the latest running total each reported.
    operators: HashMap<(ExecutorId, u32), Vec<v1::OperatorMetrics>>,
    /// Launch-to-success times of the succeeded tasks, sorted: the median
    /// is read on every status, so it is kept, not computed.
    succeeded_times: Vec<Duration>,
    /// Filters on its scans from other stages' build keys.
    filters: Vec<RuntimeFilter>,
    /// Whether it may stream from inputs that still run.
    pipelined: bool,
    /// How many of them this attempt's plan applies.
    filters_applied: usize,
    /// What its tasks wrote of the columns its writer summarizes, merged,
    /// and which partitions' tasks reported it (a summary is used only
    /// once every partition's is in).
    summaries: HashMap<usize, KeySummary>,
    summarized: Vec<bool>,
    /// Whether its outputs go once every reader has finished.
    releases_outputs: bool,
    /// Whether they went: its work is done, its outputs are gone.
    released: bool,
}

impl Stage {
    pub(crate) fn new(plan: StagePlan) -> Self {
        let display = displayable(plan.plan.as_ref()).indent(false).to_string();
        Self {
            id: plan.id,
            plan: plan.plan,
            inputs: plan.inputs,
            output_partitions: plan.output_partitions,
            tasks: vec![TaskSlot::Pending; plan.partitions],
            counts: SlotCounts {
                pending: plan.partitions,
                ..SlotCounts::default()
            },
            attempt: 0,
            resolved: Attempt::Unresolved,
            task_attempts: vec![0; plan.partitions],
            avoid: vec![None; plan.partitions],
            reruns: 0,
            first_launch: None,
            last_finish: None,
            task_busy: Duration::ZERO,
            longest_task: Duration::ZERO,
            display,
            runs: Vec::new(),
            operators: HashMap::new(),
            succeeded_times: Vec::new(),
            summarized: vec![false; plan.partitions],
            filters: plan.filters,
            pipelined: plan.pipelined,
            filters_applied: 0,
            summaries: HashMap::new(),
            releases_outputs: plan.releases_outputs,
            released: false,
        }
    }

    /// Whether it may start while the stages it reads still run.
    pub(crate) fn pipelined(&self) -> bool {
        self.pipelined
    }

    /// Filters on its scans from other stages' build keys.
    pub(crate) fn filters(&self) -> &[RuntimeFilter] {
        &self.filters
    }

    /// The stages its filters come from: it waits for them to finish.
    pub(crate) fn filter_sources(&self) -> impl Iterator<Item = StageId> + '_ {
        self.filters.iter().map(|f| f.source)
    }

    /// How many filters this attempt's plan applies.
    pub(crate) fn filters_applied(&self) -> usize {
        self.filters_applied
    }

    /// Merges what partition `partition`'s task wrote of the summarized
    /// columns; the partition counts as reported only if every summary is
    /// well formed and fits.
    pub(crate) fn add_key_summaries(&mut self, partition: usize, reported: &[v1::KeySummary]) {
        if reported.is_empty() {
            return;
        }
        let mut whole = true;
        for summary in reported {
            let Some(summary) = KeySummary::from_task(summary.clone()) else {
                whole = false;
                continue;
            };
            match self.summaries.get_mut(&summary.column()) {
                Some(merged) => whole &= merged.merge(&summary),
                None => {
                    self.summaries.insert(summary.column(), summary);
                }
            }
        }
        if let Some(flag) = self.summarized.get_mut(partition) {
            *flag |= whole;
        }
    }

    /// The merged summary of writer input column `column`, once every
    /// partition's task reported it.
    pub(crate) fn key_summary(&self, column: usize) -> Option<&KeySummary> {
        self.summarized
            .iter()
            .all(|s| *s)
            .then(|| self.summaries.get(&column))
            .flatten()
    }

    pub(crate) fn id(&self) -> StageId {
        self.id
    }

    /// Stages whose output this stage reads.
    pub(crate) fn inputs(&self) -> &[StageId] {
        &self.inputs
    }

    /// Its tasks: one per partition.
    pub(crate) fn partitions(&self) -> usize {
        self.tasks.len()
    }

    /// Its current attempt (re-plans so far).
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The plan as cut, with unresolved readers.
    pub(crate) fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// The plan as DataFusion displays it.
    pub(crate) fn display(&self) -> &str {
        &self.display
    }

    pub(crate) fn state(&self) -> StageState {
        if self.released {
            StageState::Released
        } else if self.is_finished() {
            StageState::Finished
        } else if !self.is_resolved() {
            StageState::Waiting
        } else if self.counts.running > 0 {
            StageState::Running
        } else {
            StageState::Ready
        }
    }

    /// Whether the current attempt's readers are resolved.
    fn is_resolved(&self) -> bool {
        matches!(self.resolved, Attempt::Resolved { .. })
    }

    /// Whether its work is done: every slot is, or it was released.
    pub(crate) fn is_finished(&self) -> bool {
        self.released || self.counts.done == self.tasks.len()
    }

    /// Whether its outputs were dropped (see [`StageState::Released`]).
    pub(crate) fn is_released(&self) -> bool {
        self.released
    }

    /// Whether its outputs go as soon as every reader has finished
    /// (`volley.release_outputs`).
    pub(crate) fn releases_outputs(&self) -> bool {
        self.releases_outputs
    }

    /// Finished (or, after a scheduler restart, not needed) -> Released:
    /// nothing will read its outputs. Returns the executors holding them,
    /// to drop them; `None` if it was released already.
    pub(crate) fn release(&mut self) -> Option<Vec<ExecutorId>> {
        if self.released {
            return None;
        }
        self.released = true;
        // Executors drop a stage's plan with its outputs: if it runs
        // again, its tasks carry the plan again.
        if let Attempt::Resolved { plan_sent_to, .. } = &mut self.resolved {
            plan_sent_to.clear();
        }
        let mut holders: Vec<ExecutorId> = self
            .tasks
            .iter()
            .filter_map(|slot| match slot {
                TaskSlot::Done { executor, .. } => Some(executor.clone()),
                _ => None,
            })
            .collect();
        holders.sort();
        holders.dedup();
        Some(holders)
    }

    /// Released -> Finished (or, with slots that never ran, Ready or
    /// Waiting): a reader must run again. Its Done slots still name
    /// outputs that are gone: the caller requeues each. Returns whether it
    /// was released.
    pub(crate) fn unrelease(&mut self) -> bool {
        std::mem::replace(&mut self.released, false)
    }

    /// Puts `new` in slot `partition`, keeping the counts; returns what was
    /// there.
    fn set_slot(&mut self, partition: usize, new: TaskSlot) -> TaskSlot {
        let old = std::mem::replace(&mut self.tasks[partition], new);
        self.counts.moved(&old, &self.tasks[partition]);
        old
    }

    /// Waiting -> Ready: its readers resolved, `encoded` is what every
    /// task of this attempt runs; `streams_from` are the inputs still
    /// running, whose map outputs its tasks get as they finish. Refused
    /// once the attempt is resolved.
    pub(crate) fn resolve(
        &mut self,
        encoded: Vec<u8>,
        streams_from: Vec<StageId>,
        filters_applied: usize,
    ) -> Result<(), AlreadyResolved> {
        if self.is_resolved() {
            return Err(AlreadyResolved(self.id));
        }
        self.resolved = Attempt::Resolved {
            encoded: Arc::new(encoded),
            streams_from,
            plan_sent_to: HashSet::new(),
        };
        self.filters_applied = filters_applied;
        Ok(())
    }

    /// Inputs this attempt streams from (empty unless pipelined).
    pub(crate) fn streams_from(&self) -> &[StageId] {
        match &self.resolved {
            Attempt::Resolved { streams_from, .. } => streams_from,
            Attempt::Unresolved => &[],
        }
    }

    /// Whether every task has been placed: none waits for a slot.
    pub(crate) fn all_placed(&self) -> bool {
        self.is_resolved() && self.counts.pending == 0
    }

    /// Executors holding this attempt's plan, which its tasks run on.
    pub(crate) fn plan_holders(&self) -> impl Iterator<Item = &ExecutorId> {
        match &self.resolved {
            Attempt::Resolved { plan_sent_to, .. } => Some(plan_sent_to.iter()),
            Attempt::Unresolved => None,
        }
        .into_iter()
        .flatten()
    }

    /// One slot, to read.
    pub(crate) fn slot(&self, partition: usize) -> Option<&TaskSlot> {
        self.tasks.get(partition)
    }

    /// Every slot, to read.
    pub(crate) fn slots(&self) -> &[TaskSlot] {
        &self.tasks
    }

    pub(crate) fn done_count(&self) -> usize {
        self.counts.done
    }

    /// Tasks whose work is done, as a status reports them: all of them
    /// once the stage is released (one released after a scheduler restart
    /// without running did its work before it).
    pub(crate) fn tasks_done(&self) -> usize {
        if self.released {
            self.tasks.len()
        } else {
            self.counts.done
        }
    }

    pub(crate) fn running_count(&self) -> usize {
        self.counts.running
    }

    /// Partitions whose tasks wait to be placed, if the stage is resolved
    /// (and needed: not released).
    pub(crate) fn pending_partitions(&self) -> Vec<usize> {
        if !self.is_resolved() || self.released {
            return Vec::new();
        }
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches!(slot, TaskSlot::Pending))
            .map(|(partition, _)| partition)
            .collect()
    }

    /// Where `partition` last failed, to be placed elsewhere.
    pub(crate) fn avoided(&self, partition: usize) -> Option<&ExecutorId> {
        self.avoid.get(partition).and_then(Option::as_ref)
    }

    /// Whether `task_id` of `attempt` is the task running `partition` now.
    pub(crate) fn is_current(&self, partition: usize, task_id: TaskId, attempt: u32) -> bool {
        matches!(
            self.tasks.get(partition),
            Some(TaskSlot::Running { task_id: t, .. }) if *t == task_id
        ) && self.attempt == attempt
    }

    /// Pending -> Running on `executor` as `task_id`; returns the task's
    /// attempt number. `None` (nothing changes) unless the stage is
    /// runnable and the slot pending.
    pub(crate) fn start(
        &mut self,
        partition: usize,
        task_id: TaskId,
        executor: &ExecutorId,
    ) -> Option<u32> {
        if !self.is_resolved() || !matches!(self.tasks.get(partition), Some(TaskSlot::Pending)) {
            return None;
        }
        let launched = Instant::now();
        self.first_launch.get_or_insert(launched);
        self.task_attempts[partition] += 1;
        self.set_slot(
            partition,
            TaskSlot::Running {
                task_id,
                executor: executor.clone(),
                launched,
            },
        );
        self.runs.push(TaskRun {
            partition,
            attempt: self.task_attempts[partition] - 1,
            executor: executor.clone(),
            launched,
            ended: None,
            outcome: RunOutcome::Running,
        });
        Some(self.task_attempts[partition] - 1)
    }

    /// Running -> Done: the task wrote `output`. Returns false (nothing
    /// changes) unless the slot was running.
    pub(crate) fn succeed(&mut self, partition: usize, output: FinishedOutput) -> bool {
        let Some(TaskSlot::Running { launched, .. }) = self.tasks.get(partition) else {
            return false;
        };
        let now = Instant::now();
        let took = now.saturating_duration_since(*launched);
        let at = self.succeeded_times.partition_point(|t| *t <= took);
        self.succeeded_times.insert(at, took);
        self.task_busy += took;
        self.longest_task = self.longest_task.max(took);
        self.last_finish = Some(now);
        self.close_run(partition, RunOutcome::Succeeded, now);
        self.set_slot(partition, output.into());
        true
    }

    /// Pending -> Done without running: after a scheduler restart, an
    /// executor kept this output. Only for a pending slot, and sizes that
    /// fit the stage.
    pub(crate) fn adopt(&mut self, partition: usize, output: FinishedOutput) -> bool {
        if self.released
            || output.stats.len() != self.output_partitions
            || !matches!(self.tasks.get(partition), Some(TaskSlot::Pending))
        {
            return false;
        }
        self.set_slot(partition, output.into());
        true
    }

    /// Running or Done -> Pending: the task runs again (it failed, its
    /// executor was lost, or its output was). Returns what it was.
    pub(crate) fn requeue(&mut self, partition: usize) -> Option<TaskSlot> {
        if matches!(self.tasks.get(partition)?, TaskSlot::Pending) {
            return None;
        }
        let was = self.set_slot(partition, TaskSlot::Pending);
        if matches!(was, TaskSlot::Running { .. }) {
            self.close_run(partition, RunOutcome::Failed, Instant::now());
        }
        Some(was)
    }

    /// Ends the running attempt of `partition` in the timeline.
    fn close_run(&mut self, partition: usize, outcome: RunOutcome, at: Instant) {
        if let Some(run) = self
            .runs
            .iter_mut()
            .rev()
            .find(|r| r.partition == partition && r.outcome == RunOutcome::Running)
        {
            run.outcome = outcome;
            run.ended = Some(at);
        }
    }

    /// Every task attempt launched, in launch order.
    pub(crate) fn runs(&self) -> &[TaskRun] {
        &self.runs
    }

    /// A task failed retryably on `executor`: it runs again elsewhere if
    /// possible. `Err(attempts)` when it has had `max_attempts` already.
    pub(crate) fn retry(
        &mut self,
        partition: usize,
        executor: &ExecutorId,
        max_attempts: u32,
    ) -> Result<(), u32> {
        let attempts = self.task_attempts.get(partition).copied().unwrap_or(0);
        if attempts >= max_attempts {
            return Err(attempts);
        }
        self.requeue(partition);
        if let Some(avoid) = self.avoid.get_mut(partition) {
            *avoid = Some(executor.clone());
        }
        Ok(())
    }

    /// Ready or Running -> Waiting as a new attempt: its inputs changed.
    /// Its running tasks go back to pending and are returned, to be
    /// cancelled where they run. `Ok(None)`: nothing to do (waiting, or
    /// finished). `Err` once it has been re-planned `max_attempts` times.
    pub(crate) fn supersede(
        &mut self,
        max_attempts: u32,
    ) -> Result<Option<Vec<(ExecutorId, TaskId)>>, TooManyAttempts> {
        if !self.is_resolved() || self.is_finished() {
            return Ok(None);
        }
        self.reruns += 1;
        if self.reruns >= max_attempts {
            return Err(TooManyAttempts(self.reruns));
        }
        Ok(Some(self.next_attempt()))
    }

    /// Ready or Running -> Waiting as a new attempt, not counted as a
    /// re-plan: an
    /// input it streams from has a task to place again (it failed, or its
    /// executor was lost), and this attempt's tasks, which may wait for
    /// that output while holding slots, give their slots back. Returns the
    /// running tasks, to be cancelled where they run; `None` unless the
    /// stage is resolved, unfinished and streaming.
    pub(crate) fn withdraw(&mut self) -> Option<Vec<(ExecutorId, TaskId)>> {
        if self.is_finished() || self.streams_from().is_empty() {
            return None;
        }
        Some(self.next_attempt())
    }

    /// Starts the next attempt: the plan is resolved again; running tasks
    /// go back to pending and are returned.
    fn next_attempt(&mut self) -> Vec<(ExecutorId, TaskId)> {
        self.attempt += 1;
        self.resolved = Attempt::Unresolved;
        let mut superseded = Vec::new();
        let now = Instant::now();
        for partition in 0..self.tasks.len() {
            if let TaskSlot::Running {
                task_id, executor, ..
            } = &self.tasks[partition]
            {
                superseded.push((executor.clone(), *task_id));
                self.set_slot(partition, TaskSlot::Pending);
            }
        }
        for run in &mut self.runs {
            if run.outcome == RunOutcome::Running {
                run.outcome = RunOutcome::Superseded;
                run.ended = Some(now);
            }
        }
        superseded
    }

    /// The encoded plan for a launch on `executor`: whole the first time
    /// this attempt goes there, empty after (the executor cached it).
    pub(crate) fn plan_for(&mut self, executor: &ExecutorId) -> Vec<u8> {
        match &mut self.resolved {
            Attempt::Resolved {
                encoded,
                plan_sent_to,
                ..
            } => {
                if plan_sent_to.insert(executor.clone()) {
                    encoded.as_ref().clone()
                } else {
                    Vec::new()
                }
            }
            Attempt::Unresolved => Vec::new(),
        }
    }

    /// Where each piece of this stage's finished output lives, by output
    /// partition then map partition; empty pieces are left out.
    pub(crate) fn output_locations(
        &self,
        job_id: &JobId,
        mut grant: impl FnMut(&v1::ShuffleTicket) -> Vec<u8>,
    ) -> Vec<Vec<PartitionLocation>> {
        let mut by_output = vec![Vec::new(); self.output_partitions];
        for map_partition in 0..self.tasks.len() {
            for location in self
                .map_output_pieces(job_id, map_partition, &mut grant)
                .unwrap_or_default()
            {
                if let Some(pieces) = by_output.get_mut(location.output_partition as usize) {
                    pieces.push(location);
                }
            }
        }
        by_output
    }

    /// The non-empty pieces of map task `map_partition`'s output, by output
    /// partition; `None` unless that task is done.
    pub(crate) fn map_output_pieces(
        &self,
        job_id: &JobId,
        map_partition: usize,
        mut grant: impl FnMut(&v1::ShuffleTicket) -> Vec<u8>,
    ) -> Option<Vec<PartitionLocation>> {
        let Some(TaskSlot::Done {
            executor,
            endpoint,
            stats,
            attempt,
        }) = self.tasks.get(map_partition)
        else {
            return None;
        };
        let mut pieces = Vec::new();
        for (out, stat) in stats.iter().enumerate() {
            if stat.rows > 0 {
                let mut location = PartitionLocation {
                    map_output: MapOutputId {
                        job_id: job_id.clone(),
                        stage_id: self.id,
                        map_partition: map_partition as u32,
                    },
                    attempt: *attempt,
                    output_partition: out as u32,
                    executor_id: executor.clone(),
                    endpoint: endpoint.clone(),
                    grant: Vec::new(),
                };
                location.grant = grant(&location.ticket());
                pieces.push(location);
            }
        }
        Some(pieces)
    }

    /// Rows and bytes of its finished output.
    pub(crate) fn rows_and_bytes(&self) -> (u64, u64) {
        let mut totals = (0, 0);
        for slot in &self.tasks {
            if let TaskSlot::Done { stats, .. } = slot {
                for s in stats {
                    totals.0 += s.rows;
                    totals.1 += s.bytes;
                }
            }
        }
        totals
    }

    /// Finished tasks per executor.
    pub(crate) fn tasks_by_executor(&self) -> HashMap<String, u32> {
        let mut tasks = HashMap::new();
        for slot in &self.tasks {
            if let TaskSlot::Done { executor, .. } = slot {
                *tasks.entry(executor.to_string()).or_insert(0) += 1;
            }
        }
        tasks
    }

    /// Records what the operators of the current attempt's plan have done
    /// on `executor` so far, as a succeeded task there reported it. It is
    /// a running total, so it only grows; but two tasks ending together
    /// may report out of order, so each counter keeps the highest value
    /// reported rather than the last.
    pub(crate) fn add_operator_metrics(
        &mut self,
        executor: &ExecutorId,
        report: &[v1::OperatorMetrics],
    ) {
        if report.is_empty() {
            return;
        }
        let kept = self
            .operators
            .entry((executor.clone(), self.attempt))
            .or_default();
        let same_shape = kept.len() == report.len()
            && kept
                .iter()
                .zip(report)
                .all(|(a, b)| a.depth == b.depth && a.name == b.name);
        if !same_shape {
            *kept = report.to_vec();
            return;
        }
        for (kept, new) in kept.iter_mut().zip(report) {
            kept.output_rows = kept.output_rows.max(new.output_rows);
            kept.elapsed_compute_ns = kept.elapsed_compute_ns.max(new.elapsed_compute_ns);
            kept.spill_count = kept.spill_count.max(new.spill_count);
            kept.spilled_bytes = kept.spilled_bytes.max(new.spilled_bytes);
        }
    }

    /// Each operator with its metrics summed over the executors (and
    /// attempts) that ran the stage. Reports whose shape differs from the
    /// first one's (they cannot, for one plan) are left out rather than
    /// summed into the wrong operators.
    pub(crate) fn operators(&self) -> Vec<v1::OperatorMetrics> {
        let mut reports: Vec<(&(ExecutorId, u32), &Vec<v1::OperatorMetrics>)> =
            self.operators.iter().collect();
        reports.sort_by(|a, b| a.0.cmp(b.0));
        let mut sums: Vec<v1::OperatorMetrics> = Vec::new();
        for (_, report) in reports {
            if sums.is_empty() {
                sums = report.clone();
                continue;
            }
            let same_shape = sums.len() == report.len()
                && sums
                    .iter()
                    .zip(report)
                    .all(|(a, b)| a.depth == b.depth && a.name == b.name);
            if !same_shape {
                continue;
            }
            for (sum, one) in sums.iter_mut().zip(report) {
                sum.output_rows += one.output_rows;
                sum.elapsed_compute_ns += one.elapsed_compute_ns;
                sum.spill_count += one.spill_count;
                sum.spilled_bytes += one.spilled_bytes;
            }
        }
        sums
    }

    /// The median launch-to-success time of the succeeded tasks.
    pub(crate) fn median_task(&self) -> Duration {
        self.succeeded_times
            .get(self.succeeded_times.len() / 2)
            .copied()
            .unwrap_or_default()
    }

    /// When its first task was launched and its last finished; its tasks'
    /// summed and longest launch-to-success times.
    pub(crate) fn timings(&self) -> (Option<Instant>, Option<Instant>, Duration, Duration) {
        (
            self.first_launch,
            self.last_finish,
            self.task_busy,
            self.longest_task,
        )
    }
}

#[cfg(test)]
mod tests {
    use datafusion::error::Result;

    use super::*;
    use crate::test_support::stages;

    async fn map_stage() -> Result<Stage> {
        let mut planned = stages("SELECT k % 3 AS g, count(*) FROM t GROUP BY k % 3").await?;
        Ok(Stage::new(planned.remove(0)))
    }

    fn stats(stage: &Stage) -> Vec<PartitionStats> {
        vec![PartitionStats { rows: 1, bytes: 8 }; stage.output_partitions]
    }

    /// `stats` written on `executor` by the stage's current attempt.
    fn written(stage: &Stage, executor: &ExecutorId, stats: Vec<PartitionStats>) -> FinishedOutput {
        FinishedOutput {
            executor: executor.clone(),
            endpoint: format!("http://{executor}"),
            stats,
            attempt: OutputAttempt::new(0, stage.attempt()),
        }
    }

    #[tokio::test]
    async fn a_task_starts_only_on_a_pending_slot_of_a_runnable_stage_and_succeeds_only_running()
    -> Result<()> {
        let mut stage = map_stage().await?;
        let a = ExecutorId::from("a");
        assert_eq!(stage.state(), StageState::Waiting);
        assert_eq!(stage.start(0, TaskId(1), &a), None, "not runnable yet");
        assert!(
            !stage.succeed(0, written(&stage, &a, stats(&stage))),
            "not running"
        );
        stage
            .resolve(vec![1, 2, 3], Vec::new(), 0)
            .expect("a waiting stage resolves");
        assert_eq!(stage.state(), StageState::Ready);
        assert!(
            stage.resolve(vec![4], Vec::new(), 0).is_err(),
            "an attempt is resolved once"
        );
        assert_eq!(stage.start(0, TaskId(1), &a), Some(0));
        assert_eq!(stage.state(), StageState::Running);
        assert_eq!(stage.start(0, TaskId(2), &a), None, "already running");
        assert!(stage.is_current(0, TaskId(1), 0));
        assert!(!stage.is_current(0, TaskId(2), 0), "another task");
        assert_eq!(stage.plan_for(&a), vec![1, 2, 3], "the plan goes once");
        assert!(stage.plan_for(&a).is_empty());
        let stats = stats(&stage);
        assert!(stage.succeed(0, written(&stage, &a, stats.clone())));
        assert!(!stage.adopt(0, written(&stage, &a, stats)), "done already");
        assert_eq!(stage.done_count(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn operator_metrics_keep_each_executors_highest_total_and_sum_over_executors()
    -> Result<()> {
        let mut stage = map_stage().await?;
        let op = |depth: u32, name: &str, rows: u64| v1::OperatorMetrics {
            depth,
            name: name.into(),
            output_rows: rows,
            elapsed_compute_ns: 1_000,
            ..Default::default()
        };
        let (a, b, c) = (
            ExecutorId::from("a"),
            ExecutorId::from("b"),
            ExecutorId::from("c"),
        );
        // a's second report is its running total: it replaces the first;
        // a third, older one that arrived late changes nothing.
        stage.add_operator_metrics(
            &a,
            &[op(0, "ShuffleWriterExec", 1), op(1, "DataSourceExec", 2)],
        );
        stage.add_operator_metrics(
            &a,
            &[op(0, "ShuffleWriterExec", 3), op(1, "DataSourceExec", 5)],
        );
        stage.add_operator_metrics(
            &a,
            &[op(0, "ShuffleWriterExec", 2), op(1, "DataSourceExec", 4)],
        );
        stage.add_operator_metrics(
            &b,
            &[op(0, "ShuffleWriterExec", 4), op(1, "DataSourceExec", 6)],
        );
        stage.add_operator_metrics(&c, &[op(0, "ShuffleWriterExec", 100)]);
        let sums: Vec<(u64, u64)> = stage
            .operators()
            .iter()
            .map(|o| (o.output_rows, o.elapsed_compute_ns))
            .collect();
        assert_eq!(sums, [(7, 2_000), (11, 2_000)]);
        Ok(())
    }

    #[tokio::test]
    async fn a_superseded_stage_is_a_new_attempt_and_hands_back_its_running_tasks() -> Result<()> {
        let mut stage = map_stage().await?;
        let (a, b) = (ExecutorId::from("a"), ExecutorId::from("b"));
        stage
            .resolve(vec![1], Vec::new(), 0)
            .expect("a waiting stage resolves");
        stage.start(0, TaskId(1), &a);
        stage.start(1, TaskId(2), &b);
        let stats = stats(&stage);
        stage.succeed(1, written(&stage, &b, stats));
        let superseded = stage.supersede(4).ok().flatten().unwrap_or_default();
        assert_eq!(superseded, vec![(a.clone(), TaskId(1))]);
        assert_eq!((stage.attempt(), stage.state()), (1, StageState::Waiting));
        assert!(
            !stage.is_current(0, TaskId(1), 0),
            "the old attempt's status is stale"
        );
        assert!(
            stage.pending_partitions().is_empty(),
            "nothing runs until resolved"
        );
        assert!(
            matches!(stage.supersede(4), Ok(None)),
            "a waiting stage has nothing to supersede"
        );
        stage
            .resolve(vec![2], Vec::new(), 0)
            .expect("a waiting stage resolves");
        assert_eq!(
            stage.plan_for(&a),
            vec![2],
            "the new attempt's plan goes again"
        );
        for _ in 0..2 {
            stage.supersede(4).ok();
            stage
                .resolve(vec![3], Vec::new(), 0)
                .expect("a waiting stage resolves");
        }
        assert!(
            matches!(stage.supersede(4), Err(TooManyAttempts(4))),
            "the fourth re-plan is refused"
        );
        Ok(())
    }
}
