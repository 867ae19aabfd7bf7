//! The scheduler's Prometheus metrics, served at `/metrics` on
//! `--http-bind` (OpenMetrics text). One registry per scheduler, so an
//! embedded cluster's scheduler and executors never mix. Counters and
//! histograms move as the state machine does; gauges (jobs, executors and
//! slots by state) are read from the state when scraped.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A `state` label: of a job, an executor, or a slot.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    state: String,
}

/// A `kind` label: why a task failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    kind: String,
}

/// Every metric the scheduler exports.
#[derive(Clone, Debug)]
pub(crate) struct SchedulerMetrics {
    registry: Arc<Registry>,
    jobs_submitted: Counter,
    jobs_finished: Family<StateLabel, Counter>,
    jobs: Family<StateLabel, Gauge>,
    job_duration: Histogram,
    task_duration: Histogram,
    tasks_launched: Counter,
    task_failures: Family<KindLabel, Counter>,
    executors: Family<StateLabel, Gauge>,
    slots: Family<StateLabel, Gauge>,
    placement_latency: Histogram,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SchedulerMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("volley");
        let metrics = Self {
            registry: Arc::default(),
            jobs_submitted: Counter::default(),
            jobs_finished: Family::default(),
            jobs: Family::default(),
            // 10 ms to ~3 h.
            job_duration: Histogram::new(exponential_buckets(0.01, 4.0, 11)),
            // 1 ms to ~17 min.
            task_duration: Histogram::new(exponential_buckets(0.001, 4.0, 11)),
            tasks_launched: Counter::default(),
            task_failures: Family::default(),
            executors: Family::default(),
            slots: Family::default(),
            // 1 µs to ~4 s.
            placement_latency: Histogram::new(exponential_buckets(0.000_001, 4.0, 12)),
        };
        registry.register(
            "jobs_submitted",
            "Jobs submitted",
            metrics.jobs_submitted.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs that ended, by final state (succeeded, failed, cancelled)",
            metrics.jobs_finished.clone(),
        );
        registry.register(
            "jobs",
            "Jobs the scheduler holds now, by state (queued, running, succeeded, failed, cancelled)",
            metrics.jobs.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Time from submission to the end of each job",
            metrics.job_duration.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Time from launch to reported success of each task",
            metrics.task_duration.clone(),
        );
        registry.register(
            "tasks_launched",
            "Task attempts launched on executors",
            metrics.tasks_launched.clone(),
        );
        registry.register(
            "task_failures",
            "Task attempts that failed, by kind (user, executor_lost, fetch_failed, resources_exhausted, environment, internal, ...)",
            metrics.task_failures.clone(),
        );
        registry.register(
            "executors",
            "Registered executors, by state (active, draining)",
            metrics.executors.clone(),
        );
        registry.register(
            "slots",
            "Task slots of the registered executors, by state (busy, free)",
            metrics.slots.clone(),
        );
        registry.register(
            "placement_latency_seconds",
            "Time of each scheduling pass that launched tasks",
            metrics.placement_latency.clone(),
        );
        Self {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    pub(crate) fn job_submitted(&self) {
        self.jobs_submitted.inc();
    }

    pub(crate) fn job_finished(&self, state: &str, took: Duration) {
        self.jobs_finished
            .get_or_create(&StateLabel {
                state: state.into(),
            })
            .inc();
        self.job_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn task_succeeded(&self, took: Duration) {
        self.task_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn tasks_failed(&self, kind: &str, n: u64) {
        self.task_failures
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc_by(n);
    }

    pub(crate) fn placed(&self, tasks: u64, took: Duration) {
        self.tasks_launched.inc_by(tasks);
        self.placement_latency.observe(took.as_secs_f64());
    }

    /// Sets the gauges to what the state holds now: jobs, executors and
    /// slots, each by state.
    pub(crate) fn set_gauges(
        &self,
        jobs: &[(&str, i64)],
        executors: &[(&str, i64)],
        slots: &[(&str, i64)],
    ) {
        for (family, values) in [
            (&self.jobs, jobs),
            (&self.executors, executors),
            (&self.slots, slots),
        ] {
            for (state, value) in values {
                family
                    .get_or_create(&StateLabel {
                        state: (*state).into(),
                    })
                    .set(*value);
            }
        }
    }

    /// Every metric in the OpenMetrics text format.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
