//! How a job recovers from failures, keyed on their types.
//!
//! - A task that fails retryably (environment, resources exhausted) runs
//!   again, elsewhere if possible, up to `max_task_attempts`.
//! - A lost executor: its running tasks run again; its finished map outputs
//!   that an unfinished stage still needs are lost, so those map tasks run
//!   again; and every runnable consumer of a stage that lost outputs is
//!   re-planned (a new stage attempt) once its inputs are whole again.
//!   Stages whose outputs are intact are not re-run.
//! - A fetch failure names the map output a consumer could not read: that
//!   map task runs again and the consumer stage is re-planned, up to
//!   `max_stage_attempts` times.
//!
//! - A released stage (its outputs dropped once every reader had finished,
//!   `volley.release_outputs`) whose reader must run again is no longer
//!   released: each of its map tasks runs again, after the released
//!   stages it reads in turn (its lineage), and its readers are re-planned.
//!
//! Re-running a map task yields the same output (plans are deterministic),
//! so consumer tasks that already finished keep their results. Every step is
//! counted in the job's `JobRecovery`, so tests can assert that recovery ran.

use volley_dataflow::{ExecutorId, StageId};
use volley_proto::v1;

use crate::job::Job;
use crate::stage::{FinishedOutput, TaskSlot, TooManyAttempts};

/// Limits of recovery.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecoveryLimits {
    pub(crate) max_task_attempts: u32,
    pub(crate) max_stage_attempts: u32,
}

impl Default for RecoveryLimits {
    fn default() -> Self {
        Self {
            max_task_attempts: 4,
            max_stage_attempts: 4,
        }
    }
}

/// Is a failure of this kind worth another attempt?
pub(crate) fn is_retryable(kind: i32) -> bool {
    matches!(
        v1::ErrorKind::try_from(kind),
        Ok(v1::ErrorKind::Environment
            | v1::ErrorKind::ResourcesExhausted
            | v1::ErrorKind::ExecutorLost
            | v1::ErrorKind::FetchFailed)
    )
}

impl Job {
    /// Stages that read `stage`'s output.
    fn consumers_of(&self, stage: StageId) -> Vec<usize> {
        self.stages
            .iter()
            .enumerate()
            .filter(|(_, s)| s.inputs().contains(&stage))
            .map(|(i, _)| i)
            .collect()
    }

    /// Re-plans a stage whose inputs changed: a new attempt, its plan to be
    /// resolved and sent again, its running tasks to be launched again (and
    /// the old ones cancelled where they run). Fails when the stage has
    /// been re-planned too often.
    fn replan(&mut self, index: usize, limits: RecoveryLimits) -> Result<(), v1::JobError> {
        let stage = &mut self.stages[index];
        match stage.supersede(limits.max_stage_attempts) {
            Ok(None) => Ok(()),
            Ok(Some(superseded)) => {
                self.recovery.tasks_retried += superseded.len() as u32;
                self.superseded.extend(superseded);
                self.recovery.stages_rerun += 1;
                Ok(())
            }
            Err(TooManyAttempts(reruns)) => Err(v1::JobError {
                kind: v1::ErrorKind::FetchFailed as i32,
                message: format!(
                    "stage {} lost its inputs {reruns} times; giving up",
                    stage.id()
                ),
                query_error: None,
            }),
        }
    }

    /// Marks a finished map output lost and re-plans its runnable consumers.
    fn lose_output(
        &mut self,
        stage: usize,
        partition: usize,
        limits: RecoveryLimits,
    ) -> Result<(), v1::JobError> {
        if !matches!(
            self.stages[stage].slot(partition),
            Some(TaskSlot::Done { .. })
        ) {
            return Ok(());
        }
        self.stages[stage].requeue(partition);
        self.recovery.map_tasks_rerun += 1;
        // The stage has work again: what it reads must be there.
        self.restore_inputs(stage, limits)?;
        let id = self.stages[stage].id();
        for consumer in self.consumers_of(id) {
            self.replan(consumer, limits)?;
        }
        Ok(())
    }

    /// Stage `index` has tasks to run again: each released stage it reads
    /// runs again first.
    fn restore_inputs(&mut self, index: usize, limits: RecoveryLimits) -> Result<(), v1::JobError> {
        let inputs: Vec<usize> = self.stages[index]
            .inputs()
            .iter()
            .filter_map(|input| self.stage_index(*input))
            .collect();
        for input in inputs {
            if self.stages[input].unrelease() {
                self.recovery.released_stages_rerun += 1;
                for partition in 0..self.stages[input].partitions() {
                    // Each Done slot names an output that is gone.
                    self.lose_output(input, partition, limits)?;
                }
                // Slots that never ran (released after a scheduler
                // restart) need their inputs too.
                self.restore_inputs(input, limits)?;
                // Its reader reads the new outputs (a no-op if re-planned
                // above, or never resolved).
                self.replan(index, limits)?;
            }
        }
        Ok(())
    }

    /// Stage `finished` has just finished: each stage it reads whose every
    /// reader has now finished is released, if it releases its outputs
    /// (never the final stage, whose outputs are the result). Returns the
    /// released stages and the executors holding their outputs.
    pub(crate) fn release_inputs_of(&mut self, finished: usize) -> Vec<(StageId, Vec<ExecutorId>)> {
        let last = self.stages.len().saturating_sub(1);
        let inputs: Vec<usize> = self.stages[finished]
            .inputs()
            .iter()
            .filter_map(|input| self.stage_index(*input))
            .filter(|&input| input != last)
            .collect();
        let mut released = Vec::new();
        for input in inputs {
            let stage = &self.stages[input];
            if !stage.releases_outputs() || stage.is_released() || !stage.is_finished() {
                continue;
            }
            if !self.readers_finished(stage.id()) {
                continue;
            }
            if let Some(holders) = self.stages[input].release() {
                released.push((self.stages[input].id(), holders));
            }
        }
        released
    }

    /// Whether every stage reading `stage` has finished (and some does).
    fn readers_finished(&self, stage: StageId) -> bool {
        let readers = self.consumers_of(stage);
        !readers.is_empty() && readers.iter().all(|&c| self.stages[c].is_finished())
    }

    /// After a scheduler restart, once the kept outputs are taken over:
    /// a stage every reader of which has finished is not needed. One with
    /// tasks still to run is released rather than run; a finished one is
    /// released if it releases its outputs. Readers come after the stages
    /// they read, so one pass from the end releases whole chains. Returns
    /// the released stages and the executors holding their outputs.
    pub(crate) fn release_unneeded(&mut self) -> Vec<(StageId, Vec<ExecutorId>)> {
        let last = self.stages.len().saturating_sub(1);
        let mut released = Vec::new();
        for index in (0..last).rev() {
            let stage = &self.stages[index];
            if stage.is_released()
                || (stage.is_finished() && !stage.releases_outputs())
                || !self.readers_finished(stage.id())
            {
                continue;
            }
            if let Some(holders) = self.stages[index].release() {
                released.push((self.stages[index].id(), holders));
            }
        }
        released
    }

    /// An executor is gone: recovers what it ran and held (it counts as lost
    /// for the job if it had worked for it). Returns whether anything had to
    /// be recovered.
    pub(crate) fn executor_lost(
        &mut self,
        executor: &ExecutorId,
        limits: RecoveryLimits,
    ) -> Result<bool, v1::JobError> {
        // Counted even when fetch failures already recovered its outputs.
        if self.executors_used.contains(executor) {
            self.recovery.executors_lost += 1;
        }
        let mut touched = false;
        let last = self.stages.len().saturating_sub(1);
        for index in 0..self.stages.len() {
            let id = self.stages[index].id();
            let needed = index != last
                && self
                    .consumers_of(id)
                    .iter()
                    .any(|&c| !self.stages[c].is_finished());
            for partition in 0..self.stages[index].partitions() {
                match self.stages[index].slot(partition) {
                    Some(TaskSlot::Running { executor: on, .. }) if on == executor => {
                        self.stages[index].requeue(partition);
                        self.recovery.tasks_retried += 1;
                        touched = true;
                    }
                    Some(TaskSlot::Done { executor: on, .. })
                        if on == executor && (needed || index == last) =>
                    {
                        if index == last {
                            // The result lived there; the job cannot finish
                            // without running that partition again.
                            self.stages[index].requeue(partition);
                            self.recovery.tasks_retried += 1;
                            self.restore_inputs(index, limits)?;
                        } else {
                            self.lose_output(index, partition, limits)?;
                        }
                        touched = true;
                    }
                    _ => {}
                }
            }
        }
        Ok(touched)
    }

    /// Whether this job runs a task on `executor` or still needs output
    /// stored there: a running job needs a finished map output while a
    /// consumer of it is unfinished, and its result until it ends; a
    /// finished job needs its result until the client released it (the
    /// caller knows which finished jobs were released).
    pub(crate) fn needs_executor(&self, executor: &ExecutorId) -> bool {
        let last = self.stages.len().saturating_sub(1);
        let running = !self.phase.is_terminal();
        self.stages.iter().enumerate().any(|(index, stage)| {
            let needed = if index == last {
                running || self.phase == crate::job::JobPhase::Succeeded
            } else {
                running
                    && self
                        .consumers_of(stage.id())
                        .iter()
                        .any(|&c| !self.stages[c].is_finished())
            };
            stage.slots().iter().any(|slot| match slot {
                TaskSlot::Running { executor: on, .. } => running && on == executor,
                TaskSlot::Done { executor: on, .. } => needed && on == executor,
                TaskSlot::Pending => false,
            })
        })
    }

    /// After a scheduler restart: an executor still holds `output`, the
    /// finished output of map task `(stage, map)`. If that task is pending
    /// (not running, not done elsewhere) and the sizes fit the stage, the
    /// output is taken over instead of run again (plans are deterministic,
    /// so it is what the task would write); its readers name the attempt
    /// that wrote it. Returns whether it was taken over.
    pub(crate) fn adopt_output(
        &mut self,
        stage: StageId,
        map: usize,
        output: FinishedOutput,
    ) -> bool {
        if !self.takes_over_outputs() {
            return false;
        }
        let Some(index) = self.stage_index(stage) else {
            return false;
        };
        let executor = output.executor.clone();
        if !self.stages[index].adopt(map, output) {
            return false;
        }
        self.executors_used.insert(executor);
        self.recovery.outputs_recovered += 1;
        true
    }

    /// After a scheduler restart: map outputs the store knew of that no
    /// executor brought back are run again; counts them.
    pub(crate) fn count_lost_outputs(&mut self, stored: &[(u32, u32)]) {
        for (stage, map) in stored {
            // A released stage's pending slots will not run.
            let pending = self.stage_index(StageId(*stage)).is_some_and(|i| {
                !self.stages[i].is_released()
                    && matches!(self.stages[i].slot(*map as usize), Some(TaskSlot::Pending))
            });
            if pending {
                self.recovery.map_tasks_rerun += 1;
            }
        }
    }

    /// A task failed retryably: it runs again, elsewhere if possible.
    pub(crate) fn retry_task(
        &mut self,
        stage: usize,
        partition: usize,
        executor: &ExecutorId,
        error: v1::JobError,
        limits: RecoveryLimits,
    ) -> Result<(), v1::JobError> {
        match self.stages[stage].retry(partition, executor, limits.max_task_attempts) {
            Ok(()) => {
                self.recovery.tasks_retried += 1;
                Ok(())
            }
            Err(attempts) => Err(v1::JobError {
                kind: error.kind,
                message: format!("{} (after {attempts} attempts)", error.message),
                query_error: None,
            }),
        }
    }

    /// A consumer could not read map output `(map_stage, map_partition)`
    /// from `holder`. As in Spark, every output on that executor is taken
    /// for lost (it is most likely gone, and finding that out one fetch
    /// failure at a time would re-plan the consumer once per output): those
    /// map tasks run again and their consumers are re-planned once.
    pub(crate) fn fetch_failed(
        &mut self,
        consumer: usize,
        partition: usize,
        map_stage: StageId,
        map_partition: usize,
        holder: &ExecutorId,
        limits: RecoveryLimits,
    ) -> Result<(), v1::JobError> {
        self.stages[consumer].requeue(partition);
        let named_still_there = matches!(
            self.stage_index(map_stage).and_then(|i| self.stages[i].slot(map_partition)),
            Some(TaskSlot::Done { executor, .. }) if executor == holder
        );
        if !named_still_there {
            // Already recomputed elsewhere: re-plan against where it is now.
            return self.replan(consumer, limits);
        }
        let last = self.stages.len().saturating_sub(1);
        for index in 0..last {
            let id = self.stages[index].id();
            let needed = self
                .consumers_of(id)
                .iter()
                .any(|&c| !self.stages[c].is_finished());
            if !needed {
                continue;
            }
            for map in 0..self.stages[index].partitions() {
                if matches!(self.stages[index].slot(map), Some(TaskSlot::Done { executor, .. }) if executor == holder)
                {
                    self.lose_output(index, map, limits)?;
                }
            }
        }
        Ok(())
    }
}
