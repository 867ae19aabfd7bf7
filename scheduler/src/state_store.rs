//! What the scheduler keeps across restarts (`--state-dir`), behind a small
//! trait so that another store (a shared one, for two schedulers) can
//! replace the embedded one.
//!
//! What is stored when:
//! - a job's submission (plan bytes or script, settings, name, output, its
//!   owner and the partitions it was planned with): before the client hears
//!   its id, so a job a client knows of is never lost;
//! - each finished map output's location and sizes: as its task succeeds;
//! - a job's final status (with its result's locations): as it ends;
//! - that its result was released, and that it left the history.
//!
//! All but the submission go through the [`Journal`], which the state
//! machine feeds without blocking; a writer thread commits what has queued
//! up in one transaction, so placement never waits for a disk. A crash
//! loses at most the last batch, and every loss is safe: a map output the
//! store missed is taken over anyway if an executor still holds it, or run
//! again; a final status the store missed makes the job run again.
//!
//! Fencing: opening a store claims it with a new epoch, one more than the
//! last scheduler's. Every batch is written only if the store's epoch is
//! still this scheduler's, and executors refuse a scheduler whose epoch is
//! lower than one they already served, so a stale scheduler can neither
//! write nor command.

use std::fmt::Debug;
use std::sync::mpsc;

use tokio::sync::oneshot;
use tracing::{debug, error};
use volley_dataflow::{ExecutorId, JobId};
use volley_proto::v1;

use crate::error::SchedulerError;

/// A scheduler's claim on a store: above every claim before it on that
/// store, and at least the claim's time in Unix milliseconds (so a fresh
/// store outranks the old one's schedulers too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Epoch(pub(crate) u64);

/// One change to the stored state.
#[derive(Debug, Clone)]
pub(crate) enum StoreOp {
    /// A job was submitted.
    Submitted(Box<v1::StoredJob>),
    /// A map task of `job` succeeded; where its output is.
    Output {
        job: JobId,
        stage: u32,
        map: u32,
        output: v1::StoredMapOutput,
    },
    /// A job ended with this final status; its map outputs are no longer
    /// needed.
    Ended {
        job: JobId,
        status: Box<v1::JobStatus>,
    },
    /// A finished job's result was released.
    Released(JobId),
    /// A job left the history.
    Forgotten(JobId),
    /// An executor registered.
    ExecutorJoined(ExecutorId),
    /// An executor left or was lost.
    ExecutorLeft(ExecutorId),
}

/// Everything a store holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded {
    /// Every job kept, oldest submission first.
    pub(crate) jobs: Vec<LoadedJob>,
    /// Executors registered when the last scheduler stopped.
    pub(crate) executors: Vec<ExecutorId>,
}

/// A job as loaded from the store.
#[derive(Debug, Clone)]
pub(crate) struct LoadedJob {
    pub(crate) record: v1::StoredJob,
    /// Its final status, if it ended.
    pub(crate) status: Option<v1::JobStatus>,
    pub(crate) released: bool,
    /// Finished map outputs `(stage, map, where)`, for an unfinished job.
    pub(crate) outputs: Vec<(u32, u32, v1::StoredMapOutput)>,
}

/// A durable home for the scheduler's state.
pub(crate) trait StateStore: Send + Debug {
    /// Claims the store for this scheduler: the new epoch.
    fn claim(&mut self) -> Result<Epoch, SchedulerError>;
    /// Everything kept.
    fn load(&self) -> Result<Loaded, SchedulerError>;
    /// Applies `ops` atomically, unless another scheduler claimed the store
    /// after `epoch` ([`SchedulerError::Fenced`]).
    fn write(&mut self, epoch: Epoch, ops: &[StoreOp]) -> Result<(), SchedulerError>;
}

struct Entry {
    /// `None`: only asks to be told when what came before is committed.
    op: Option<StoreOp>,
    /// Told once `op` is committed (or could not be).
    committed: Option<Committed>,
}

/// Who waits for a change to be committed: a task, or a thread.
enum Committed {
    Task(oneshot::Sender<Result<(), String>>),
    Thread(mpsc::Sender<Result<(), String>>),
}

impl Committed {
    fn tell(self, result: Result<(), String>) {
        // A waiter that went away no longer needs to know.
        let _ = match self {
            Committed::Task(sender) => sender.send(result).map_err(|_| ()),
            Committed::Thread(sender) => sender.send(result).map_err(|_| ()),
        };
    }
}

/// Where the state machine sends changes to be stored.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    sender: mpsc::Sender<Entry>,
}

impl Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.op.fmt(f)
    }
}

/// The most changes one transaction commits.
const MAX_BATCH: usize = 8192;

impl Journal {
    /// Starts the writer thread that applies changes to `store` as this
    /// scheduler (`epoch`).
    pub(crate) fn start(mut store: Box<dyn StateStore>, epoch: Epoch) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Entry>();
        std::thread::Builder::new()
            .name("volley-state-store".into())
            .spawn(move || {
                let mut fenced = false;
                while let Ok(first) = receiver.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(entry) => batch.push(entry),
                            Err(_) => break,
                        }
                    }
                    let ops: Vec<StoreOp> = batch.iter().filter_map(|e| e.op.clone()).collect();
                    let result = if ops.is_empty() {
                        Ok(())
                    } else if fenced {
                        Err("this scheduler was fenced off the state store".to_string())
                    } else {
                        store.write(epoch, &ops).map_err(|e| {
                            if matches!(e, SchedulerError::Fenced { .. }) {
                                fenced = true;
                            }
                            error!(error = %e, changes = ops.len(), "state store write failed");
                            e.to_string()
                        })
                    };
                    debug!(changes = ops.len(), "state store batch committed");
                    for entry in batch {
                        if let Some(committed) = entry.committed {
                            committed.tell(result.clone());
                        }
                    }
                }
            })?;
        Ok(Self { sender })
    }

    /// Queues a change; it is committed with the next batch.
    pub(crate) fn record(&self, op: StoreOp) {
        // The writer only stops with the process.
        let _ = self.sender.send(Entry {
            op: Some(op),
            committed: None,
        });
    }

    /// Waits, blocking the thread, until every change queued so far is
    /// committed (for benchmarks and tests).
    pub(crate) fn flush_blocking(&self) -> Result<(), String> {
        let (committed, done) = mpsc::channel();
        self.sender
            .send(Entry {
                op: None,
                committed: Some(Committed::Thread(committed)),
            })
            .map_err(|_| "the state store's writer stopped".to_string())?;
        done.recv()
            .unwrap_or_else(|_| Err("the state store's writer stopped".to_string()))
    }

    /// Queues a change and waits until it is committed.
    pub(crate) async fn record_durably(&self, op: StoreOp) -> Result<(), String> {
        let (committed, done) = oneshot::channel();
        self.sender
            .send(Entry {
                op: Some(op),
                committed: Some(Committed::Task(committed)),
            })
            .map_err(|_| "the state store's writer stopped".to_string())?;
        done.await
            .unwrap_or_else(|_| Err("the state store's writer stopped".to_string()))
    }
}
