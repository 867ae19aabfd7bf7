//! The map outputs of input stages that were still running when a
//! pipelined consumer started: the scheduler announces each map output as
//! its task finishes (`MapOutputsReady`), the executor puts it here, and
//! the consumer's [`ShuffleReaderExec`](crate::ShuffleReaderExec) reads the
//! pieces it needs as they arrive.
//!
//! A map output is announced only once it is whole and stored, so a reader
//! never sees part of one: the pipelining is by map output, and a piece is
//! read once, whoever announces it again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use futures::Stream;
use tokio::sync::watch;

use crate::error::ExchangeError;
use crate::ids::StageId;
use crate::location::PartitionLocation;

/// The finished map outputs of one input stage: each map partition with
/// its non-empty pieces (an empty output has none, but is finished).
#[derive(Debug, Default)]
pub struct FinishedMaps {
    by_map: BTreeMap<u32, Vec<PartitionLocation>>,
}

/// Map outputs announced so far, per input stage, for the tasks of one
/// consumer stage attempt on this executor.
#[derive(Debug, Default)]
pub struct StreamedInputs {
    stages: Mutex<HashMap<StageId, watch::Sender<FinishedMaps>>>,
}

/// Which pieces of an input stage a reader partition reads.
#[derive(Clone, Copy, Debug)]
pub enum PieceFilter {
    /// Output partition `p` of every map output (a repartition).
    OutputPartition(u32),
    /// Every piece of map output `m` (a pass-through), or its output
    /// partition `p` only (one sorted run of an order-preserving
    /// repartition).
    Map(u32, Option<u32>),
}

impl PieceFilter {
    fn wants_map(self, map: u32) -> bool {
        match self {
            PieceFilter::OutputPartition(_) => true,
            PieceFilter::Map(m, _) => m == map,
        }
    }

    fn wants(self, piece: &PartitionLocation) -> bool {
        match self {
            PieceFilter::OutputPartition(p) => piece.output_partition == p,
            PieceFilter::Map(_, None) => true,
            PieceFilter::Map(_, Some(p)) => piece.output_partition == p,
        }
    }

    /// How many map outputs a reader with this filter waits for.
    fn maps_needed(self, map_tasks: usize) -> usize {
        match self {
            PieceFilter::OutputPartition(_) => map_tasks,
            PieceFilter::Map(..) => 1,
        }
    }
}

impl StreamedInputs {
    /// Runs `f` on `stage`'s channel, made on first use (by a reader or
    /// by the first announcement, whichever comes first).
    fn with_channel<T>(
        &self,
        stage: StageId,
        f: impl FnOnce(&watch::Sender<FinishedMaps>) -> T,
    ) -> T {
        let mut stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        f(stages
            .entry(stage)
            .or_insert_with(|| watch::channel(FinishedMaps::default()).0))
    }

    fn subscribe(&self, stage: StageId) -> watch::Receiver<FinishedMaps> {
        self.with_channel(stage, watch::Sender::subscribe)
    }

    /// Map outputs `maps` of `stage` finished; `pieces` are their
    /// non-empty pieces. A map output announced before keeps its first
    /// pieces (readers may have read them).
    pub fn announce(&self, stage: StageId, maps: &[u32], pieces: Vec<PartitionLocation>) {
        self.with_channel(stage, |sender| {
            sender.send_modify(|finished| {
                let mut fresh: BTreeMap<u32, Vec<PartitionLocation>> = maps
                    .iter()
                    .filter(|m| !finished.by_map.contains_key(m))
                    .map(|m| (*m, Vec::new()))
                    .collect();
                for piece in pieces {
                    if let Some(list) = fresh.get_mut(&piece.map_output.map_partition) {
                        list.push(piece);
                    }
                }
                finished.by_map.extend(fresh);
            })
        });
    }

    /// The pieces of `stage` (of `map_tasks` map tasks) that `filter`
    /// selects, each once, as their map outputs are announced; the stream
    /// ends once every map output it needs was announced.
    pub fn pieces(
        &self,
        stage: StageId,
        map_tasks: usize,
        filter: PieceFilter,
    ) -> impl Stream<Item = Result<PartitionLocation, ExchangeError>> + Send + 'static {
        let state = Waiting {
            receiver: self.subscribe(stage),
            seen: HashSet::new(),
            ready: VecDeque::new(),
            needed: filter.maps_needed(map_tasks),
            filter,
            stage,
        };
        futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(piece) = state.ready.pop_front() {
                    return Some((Ok(piece), state));
                }
                if state.seen.len() >= state.needed {
                    return None;
                }
                state.take_new();
                if !state.ready.is_empty() || state.seen.len() >= state.needed {
                    continue;
                }
                if state.receiver.changed().await.is_err() {
                    let error = ExchangeError::Internal(format!(
                        "the map outputs of stage {} stopped arriving",
                        state.stage
                    ));
                    state.needed = 0;
                    return Some((Err(error), state));
                }
            }
        })
    }
}

/// A reader's progress through an input stage's announcements.
struct Waiting {
    receiver: watch::Receiver<FinishedMaps>,
    seen: HashSet<u32>,
    ready: VecDeque<PartitionLocation>,
    needed: usize,
    filter: PieceFilter,
    stage: StageId,
}

impl Waiting {
    /// Queues the pieces of map outputs announced since the last look.
    fn take_new(&mut self) {
        let finished = self.receiver.borrow_and_update();
        for (map, pieces) in &finished.by_map {
            if !self.filter.wants_map(*map) || !self.seen.insert(*map) {
                continue;
            }
            self.ready
                .extend(pieces.iter().filter(|p| self.filter.wants(p)).cloned());
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::ids::{ExecutorId, JobId, MapOutputId};

    fn piece(map: u32, output: u32) -> PartitionLocation {
        PartitionLocation {
            map_output: MapOutputId {
                job_id: JobId::from("j"),
                stage_id: StageId(1),
                map_partition: map,
            },
            output_partition: output,
            executor_id: ExecutorId::from("e"),
            endpoint: "http://e".into(),
            grant: Vec::new(),
            attempt: Default::default(),
        }
    }

    fn names(pieces: &[Result<PartitionLocation, ExchangeError>]) -> Vec<(u32, u32)> {
        pieces
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .map(|p| (p.map_output.map_partition, p.output_partition))
            .collect()
    }

    #[tokio::test]
    async fn a_reader_gets_each_map_outputs_piece_once_as_announced_and_ends_after_the_last()
    -> Result<(), ExchangeError> {
        let inputs = std::sync::Arc::new(StreamedInputs::default());
        let stage = StageId(1);
        // Announced before the reader looks.
        inputs.announce(stage, &[1], vec![piece(1, 0), piece(1, 1)]);
        let reader = tokio::spawn({
            let inputs = std::sync::Arc::clone(&inputs);
            async move {
                inputs
                    .pieces(stage, 3, PieceFilter::OutputPartition(1))
                    .collect::<Vec<_>>()
                    .await
            }
        });
        // Map 0 wrote nothing; map 1 again (a late duplicate) is ignored.
        inputs.announce(stage, &[0, 1], vec![piece(1, 1)]);
        inputs.announce(stage, &[2], vec![piece(2, 0), piece(2, 1)]);
        let read = reader
            .await
            .map_err(|e| ExchangeError::Internal(e.to_string()))?;
        assert_eq!(names(&read), [(1, 1), (2, 1)]);
        Ok(())
    }

    #[tokio::test]
    async fn a_pass_through_reader_waits_for_its_own_map_output_only() {
        let inputs = StreamedInputs::default();
        let stage = StageId(1);
        inputs.announce(stage, &[1], vec![piece(1, 0)]);
        let read: Vec<_> = inputs
            .pieces(stage, 2, PieceFilter::Map(1, None))
            .collect()
            .await;
        assert_eq!(names(&read), [(1, 0)], "map 0 is not waited for");
    }
}
