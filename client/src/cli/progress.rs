//! A one-line progress display on a terminal's stderr, fed by a job's status
//! stream: stages done/total, tasks running/done, rows and bytes shuffled.
//! It appears only for jobs running longer than [`DELAY`] and is erased
//! before the result prints.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use volley_client::v1;

/// Quick queries never show a progress line.
pub(crate) const DELAY: Duration = Duration::from_millis(500);

/// Human-readable bytes.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The one-line summary of a running job.
pub(crate) fn describe(status: &v1::JobStatus) -> String {
    let statements = if status.statements_total > 1 {
        format!(
            "statement {}/{}  ",
            (status.statements_done + 1).min(status.statements_total),
            status.statements_total
        )
    } else {
        String::new()
    };
    format!(
        "{statements}stages {}/{}  tasks {} running, {}/{} done  shuffled {} rows, {}{}",
        status.stages_done,
        status.stages_total,
        status.tasks_running,
        status.tasks_done,
        status.tasks_total,
        status.rows_shuffled,
        human_bytes(status.bytes_shuffled),
        recovery_note(status)
            .map(|note| format!("  ({note})"))
            .unwrap_or_default()
    )
}

/// What recovery did for a job, for people: why its progress went back
/// ("1 executor lost; re-ran 6 tasks"), or `None` if nothing happened.
pub(crate) fn recovery_note(status: &v1::JobStatus) -> Option<String> {
    let r = status.recovery?;
    let mut parts = Vec::new();
    let plural = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if r.executors_lost > 0 {
        parts.push(format!(
            "{} lost",
            plural(r.executors_lost, "executor", "executors")
        ));
    }
    if r.scheduler_restarts > 0 {
        parts.push(format!(
            "scheduler restarted {}",
            plural(r.scheduler_restarts, "time", "times")
        ));
    }
    let rerun = r.tasks_retried + r.map_tasks_rerun;
    if rerun > 0 {
        parts.push(format!("re-ran {}", plural(rerun, "task", "tasks")));
    }
    if r.outputs_recovered > 0 {
        parts.push(format!(
            "took over {}",
            plural(r.outputs_recovered, "kept output", "kept outputs")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_that_lost_an_executor_says_so_and_what_it_re_ran() {
        let mut status = v1::JobStatus::default();
        assert_eq!(recovery_note(&status), None);
        status.recovery = Some(v1::JobRecovery {
            executors_lost: 1,
            tasks_retried: 2,
            map_tasks_rerun: 4,
            ..Default::default()
        });
        assert_eq!(
            recovery_note(&status).as_deref(),
            Some("1 executor lost; re-ran 6 tasks")
        );
        assert!(describe(&status).ends_with("(1 executor lost; re-ran 6 tasks)"));
    }
}

#[derive(Debug)]
struct State {
    started: Instant,
    shown: bool,
    /// The result started printing: the line stays away.
    stopped: bool,
    last: Option<v1::JobStatus>,
}

/// Draws progress on stderr; cheap to clone into a job observer.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    state: Arc<Mutex<State>>,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                started: Instant::now(),
                shown: false,
                stopped: false,
                last: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a status; draws it once the job has run for [`DELAY`].
    pub(crate) fn update(&self, status: &v1::JobStatus) {
        let mut state = self.lock();
        state.last = Some(status.clone());
        if !state.stopped && state.started.elapsed() >= DELAY {
            draw(&mut state);
        }
    }

    /// Redraws the last status (called on a timer so the line appears even
    /// when no status changes).
    pub(crate) fn tick(&self) {
        let mut state = self.lock();
        if !state.stopped && state.started.elapsed() >= DELAY && state.last.is_some() {
            draw(&mut state);
        }
    }

    /// Erases the line, if it was drawn, and draws no more: the result
    /// is printing.
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        if state.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            state.shown = false;
        }
    }
}

fn draw(state: &mut State) {
    let Some(status) = &state.last else {
        return;
    };
    let line = format!(
        "[{:>5.1}s] {}",
        state.started.elapsed().as_secs_f64(),
        describe(status)
    );
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
    state.shown = true;
}
