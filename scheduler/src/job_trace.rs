//! A job's trace (when traces are exported, `volley_dataflow::telemetry`):
//! a `job` span from submission to the end, and a `stage` span per stage
//! attempt from its first task launch until it finishes, a child of the
//! job's. Each launch carries its stage span's context to the executors,
//! whose `task` spans are its children.

use std::collections::HashMap;

use tracing::{Span, info_span};
use volley_dataflow::JobId;

/// A stage attempt: (script statement, stage id, attempt).
type StageKey = (u32, u32, u32);

#[derive(Debug)]
pub(crate) struct JobTrace {
    /// Open stage spans and their context as sent to executors. Declared
    /// first, so they close before the job's span when this is dropped.
    stages: HashMap<StageKey, (Span, HashMap<String, String>)>,
    span: Span,
}

impl JobTrace {
    /// Opens job `id`'s span.
    pub(crate) fn start(id: &JobId, name: &str) -> JobTrace {
        JobTrace {
            stages: HashMap::new(),
            span: info_span!("job", job_id = %id, name = %name, state = tracing::field::Empty),
        }
    }

    /// The context the tasks of a stage attempt are launched with, opening
    /// its span on its first launch.
    pub(crate) fn stage_context(
        &mut self,
        key: StageKey,
        partitions: usize,
    ) -> HashMap<String, String> {
        let job = &self.span;
        let (_, context) = self.stages.entry(key).or_insert_with(|| {
            let span = info_span!(
                parent: job,
                "stage",
                statement = key.0,
                stage = key.1,
                attempt = key.2,
                partitions
            );
            let context = volley_dataflow::trace_context(&span);
            (span, context)
        });
        context.clone()
    }

    /// Closes every stage span not in `open`.
    pub(crate) fn keep_only(&mut self, open: &[StageKey]) {
        self.stages.retain(|key, _| open.contains(key));
    }

    /// Records how the job ended; the spans close when this is dropped.
    pub(crate) fn ended(&self, state: &str) {
        self.span.record("state", state);
    }
}
