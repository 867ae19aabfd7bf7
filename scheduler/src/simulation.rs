//! The scheduler's placement without executors or data, for benchmarks:
//! a job of `tasks` tasks placed on `executors` simulated executors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::physical_plan::empty::EmptyExec;
use tokio::sync::mpsc;
use volley_dataflow::{ExecutorId, JobId, ShuffleWriterExec, StageId};

use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
use crate::job::Job;
use crate::stage_planner::StagePlan;
use crate::state::SchedulerState;

/// Places one stage of `tasks` tasks on `executors` simulated executors of
/// `slots` slots each (messages go to channels nobody reads). Returns how
/// many tasks were placed and how long placement took.
pub fn simulate_placement(
    tasks: usize,
    executors: usize,
    slots: usize,
) -> Result<(usize, Duration), SchedulerError> {
    let mut state = SchedulerState::new(&SchedulerConfig::default());
    let mut inboxes = Vec::with_capacity(executors);
    for i in 0..executors {
        let (sender, receiver) = mpsc::unbounded_channel();
        inboxes.push(receiver);
        state
            .register_executor(
                ExecutorId::from(format!("sim-{i}")),
                format!("http://sim-{i}"),
                slots,
                sender,
                Vec::new(),
                Default::default(),
            )
            .map_err(|status| SchedulerError::InvalidRequest(status.message().to_string()))?;
    }
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let scan = Arc::new(EmptyExec::new(schema).with_partitions(tasks));
    let job_id = JobId::from("simulated");
    let writer = ShuffleWriterExec::try_new(job_id.clone(), StageId(0), scan, None)?;
    let stage = StagePlan {
        id: StageId(0),
        plan: Arc::new(writer),
        partitions: tasks,
        output_partitions: 1,
        inputs: Vec::new(),
    };
    let job = Job::new(
        job_id,
        "simulated".into(),
        vec![stage],
        Default::default(),
        Vec::new(),
    );
    let watch = job.watch.subscribe();
    let started = Instant::now();
    state.submit(job);
    let elapsed = started.elapsed();
    let placed = watch.borrow().tasks_running as usize;
    drop(inboxes);
    Ok((placed, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_is_placed_when_there_are_slots_for_all() -> Result<(), SchedulerError> {
        let (placed, _) = simulate_placement(1000, 10, 100)?;
        assert_eq!(placed, 1000);
        let (placed, _) = simulate_placement(1000, 10, 20)?;
        assert_eq!(placed, 200, "no more tasks than slots");
        Ok(())
    }
}
