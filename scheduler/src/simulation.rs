//! The scheduler's placement without executors or data, for benchmarks:
//! a job of `tasks` tasks placed on `executors` simulated executors, and
//! the same job run to its end, with or without a state store.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::physical_plan::empty::EmptyExec;
use tokio::sync::mpsc;
use volley_dataflow::{ExecutorId, JobId, ShuffleWriterExec, StageId};
use volley_proto::v1;

use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
use crate::job::Job;
use crate::sqlite_store::SqliteStore;
use crate::stage_planner::StagePlan;
use crate::state::SchedulerState;
use crate::state_store::{Journal, StateStore, StoreOp};

type Inbox = mpsc::UnboundedReceiver<Result<v1::SchedulerMessage, tonic::Status>>;

/// A scheduler with simulated executors.
struct SimulatedCluster {
    state: SchedulerState,
    /// Its state store's journal, if it keeps one.
    journal: Option<Journal>,
    /// Each executor with what the scheduler sent it.
    inboxes: Vec<(ExecutorId, Inbox)>,
}

/// A scheduler with `executors` simulated executors of `slots` slots each,
/// keeping its state in `state_dir` if given.
fn simulated_cluster(
    executors: usize,
    slots: usize,
    state_dir: Option<&Path>,
) -> Result<SimulatedCluster, SchedulerError> {
    let mut state = SchedulerState::new(&SchedulerConfig::default());
    let journal = match state_dir {
        Some(dir) => {
            let mut store = SqliteStore::open(dir, true)?;
            let epoch = store.claim()?;
            let journal = Journal::start(Box::new(store), epoch)?;
            state.set_journal(journal.clone(), epoch);
            Some(journal)
        }
        None => None,
    };
    let mut inboxes = Vec::with_capacity(executors);
    for i in 0..executors {
        let (sender, receiver) = mpsc::unbounded_channel();
        let id = ExecutorId::from(format!("sim-{i}"));
        state
            .register_executor(
                id.clone(),
                format!("http://sim-{i}"),
                slots,
                sender,
                Vec::new(),
                Default::default(),
            )
            .map_err(|status| SchedulerError::InvalidRequest(status.message().to_string()))?;
        inboxes.push((id, receiver));
    }
    Ok(SimulatedCluster {
        state,
        journal,
        inboxes,
    })
}

/// A job of one stage of `tasks` tasks.
fn simulated_job(tasks: usize) -> Result<Job, SchedulerError> {
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
        filters: Vec::new(),
        pipelined: true,
        releases_outputs: true,
    };
    Ok(Job::new(
        job_id,
        "simulated".into(),
        vec![stage],
        Default::default(),
        Vec::new(),
    ))
}

/// Places one stage of `tasks` tasks on `executors` simulated executors of
/// `slots` slots each (messages go to channels nobody reads); with
/// `state_dir`, the submission is kept in a state store there, as the
/// service keeps it, and the time includes committing it. Returns how many
/// tasks were placed and how long placement took.
pub fn simulate_placement(
    tasks: usize,
    executors: usize,
    slots: usize,
    state_dir: Option<&Path>,
) -> Result<(usize, Duration), SchedulerError> {
    let SimulatedCluster {
        mut state,
        journal,
        inboxes,
    } = simulated_cluster(executors, slots, state_dir)?;
    let job = simulated_job(tasks)?;
    let watch = job.watch.subscribe();
    let started = Instant::now();
    record_submission(journal.as_ref(), &job, tasks);
    state.submit(job);
    flush(journal.as_ref(), state_dir)?;
    let elapsed = started.elapsed();
    let placed = watch.borrow().tasks_running as usize;
    drop(inboxes);
    Ok((placed, elapsed))
}

/// Keeps the job's submission in the store, as the service does before it
/// answers a submission.
fn record_submission(journal: Option<&Journal>, job: &crate::job::Job, tasks: usize) {
    if let Some(journal) = journal {
        journal.record(StoreOp::Submitted(Box::new(v1::StoredJob {
            job_id: job.id.to_string(),
            target_partitions: tasks as u32,
            stage_partitions: job.stage_partitions(),
            ..Default::default()
        })));
    }
}

/// Waits until everything recorded is committed to the store.
fn flush(journal: Option<&Journal>, state_dir: Option<&Path>) -> Result<(), SchedulerError> {
    match journal {
        Some(journal) => journal
            .flush_blocking()
            .map_err(|message| SchedulerError::StateStore {
                path: state_dir
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                message,
            }),
        None => Ok(()),
    }
}

/// Places one stage of `tasks` tasks and reports every task finished, as
/// executors would, until the job has succeeded; with `state_dir`, every
/// change is kept in a state store there, and the time includes committing
/// the last of them. Returns how many tasks finished and how long it took.
pub fn simulate_tasks(
    tasks: usize,
    executors: usize,
    slots: usize,
    state_dir: Option<&Path>,
) -> Result<(usize, Duration), SchedulerError> {
    let SimulatedCluster {
        mut state,
        journal,
        mut inboxes,
    } = simulated_cluster(executors, slots, state_dir)?;
    let job = simulated_job(tasks)?;
    let watch = job.watch.subscribe();
    let started = Instant::now();
    record_submission(journal.as_ref(), &job, tasks);
    state.submit(job);
    loop {
        let mut finished_any = false;
        for (executor, inbox) in &mut inboxes {
            while let Ok(Ok(message)) = inbox.try_recv() {
                let Some(v1::scheduler_message::Kind::LaunchTasks(launch)) = message.kind else {
                    continue;
                };
                for task in &launch.tasks {
                    finished_any = true;
                    state.task_status(
                        executor,
                        v1::TaskStatus {
                            stage: launch.stage.clone(),
                            task_id: task.task_id,
                            partition: task.partition,
                            attempt: task.attempt,
                            // Empty outputs: the job's status lists no
                            // result piece, so publishing it stays cheap
                            // (each status lists the final stage's pieces).
                            result: Some(v1::task_status::Result::Success(v1::TaskSuccess {
                                partition_rows: vec![0],
                                partition_bytes: vec![0],
                                fetches: Vec::new(),
                                operators: Vec::new(),
                                key_summaries: Vec::new(),
                            })),
                        },
                    );
                }
            }
        }
        if !finished_any {
            break;
        }
    }
    flush(journal.as_ref(), state_dir)?;
    let elapsed = started.elapsed();
    let finished = watch.borrow().tasks_done as usize;
    Ok((finished, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_is_placed_when_there_are_slots_for_all() -> Result<(), SchedulerError> {
        let (placed, _) = simulate_placement(1000, 10, 100, None)?;
        assert_eq!(placed, 1000);
        let (placed, _) = simulate_placement(1000, 10, 20, None)?;
        assert_eq!(placed, 200, "no more tasks than slots");
        let dir = tempfile::tempdir()?;
        let (placed, _) = simulate_placement(1000, 10, 100, Some(dir.path()))?;
        assert_eq!(placed, 1000, "a state store changes nothing placed");
        Ok(())
    }

    #[test]
    fn a_simulated_job_runs_to_its_end_with_or_without_a_state_store() -> Result<(), SchedulerError>
    {
        let (finished, _) = simulate_tasks(500, 5, 10, None)?;
        assert_eq!(finished, 500);
        let dir = tempfile::tempdir()?;
        let (finished, _) = simulate_tasks(500, 5, 10, Some(dir.path()))?;
        assert_eq!(finished, 500);
        let mut store = SqliteStore::open(dir.path(), false)?;
        store.claim()?;
        let loaded = store.load()?;
        assert_eq!(loaded.executors.len(), 5, "the executors were stored");
        assert_eq!(loaded.jobs.len(), 1, "so was the job");
        assert!(loaded.jobs[0].status.is_some(), "which ended");
        Ok(())
    }
}
