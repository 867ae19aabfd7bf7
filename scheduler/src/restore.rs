//! A restarted scheduler rebuilds its jobs from its state store.
//!
//! - Finished jobs join the history with their stored final status (a
//!   succeeded job's result stays readable where executors kept it).
//! - Unfinished plan jobs are planned again from their stored submission,
//!   with the partitions they were first planned with; plans are
//!   deterministic, so their stages are the same. If the stage layout
//!   differs all the same (the tables' files changed), nothing kept is
//!   taken over and the job runs from the start.
//! - Unfinished script jobs run again from their first statement: their
//!   outputs are staged until the whole script succeeds, so nothing of the
//!   first run is visible.
//!
//! With an event log (`--event-log`), the newest finished jobs it holds
//! that the store did not (or with no store at all) join the history too,
//! their results released (`restore_logged`).
//!
//! If any job is unfinished, no task is placed until the executors
//! registered when the last scheduler stopped have re-attached (reporting
//! what they still hold) or the executor timeout has passed
//! (`SchedulerState::begin_recovery`).

use std::collections::HashSet;
use std::sync::Arc;

use tracing::{info, warn};
use volley_dataflow::JobId;
use volley_proto::v1;
use volley_security::TokenHash;

use crate::access::JobAccess;
use crate::event_log::EventLog;
use crate::job::Job;
use crate::planning::plan_job;
use crate::service::{Shared, start_script_as};
use crate::state_store::{Loaded, LoadedJob, StoreOp};

/// Rebuilds every job `loaded` holds into `shared`'s state.
pub(crate) async fn restore(shared: &Arc<Shared>, loaded: Loaded) {
    if let Some(journal) = &shared.journal {
        // They come back, if at all, under new ids.
        for id in &loaded.executors {
            journal.record(StoreOp::ExecutorLeft(id.clone()));
        }
    }
    // With nothing to resume there is nothing to wait for: new jobs run at
    // once on whichever executors register.
    if loaded.jobs.iter().any(|job| job.status.is_none()) {
        let awaited: HashSet<_> = loaded.executors.into_iter().collect();
        shared
            .state()
            .begin_recovery(shared.config.executor_timeout, awaited);
    }
    let (mut finished, mut unfinished) = (0, 0);
    for stored in loaded.jobs {
        let job_id = JobId::from(stored.record.job_id.as_str());
        let access = access_of(shared, &stored.record);
        match stored.status {
            Some(status) => {
                finished += 1;
                shared
                    .state()
                    .restore_finished(Job::restored(status, access), stored.released);
            }
            None => {
                unfinished += 1;
                resume(shared, job_id, stored, access).await;
            }
        }
    }
    info!(finished, unfinished, "jobs restored from the state store");
}

/// Plans an unfinished job again and hands it to the state machine.
async fn resume(shared: &Arc<Shared>, job_id: JobId, stored: LoadedJob, access: JobAccess) {
    let record = stored.record;
    let request = record.submission.unwrap_or_default();
    let target = (record.target_partitions as usize).max(1);
    let submitted_at = record.submitted_at_ms;
    if !request.script.is_empty() {
        start_script_as(shared, job_id, request, target, access, move |job| {
            job.submitted_at(submitted_at).restarted()
        });
        return;
    }
    let job = plan_job(
        job_id.clone(),
        request,
        target,
        &shared.config.security.paths,
        Arc::clone(&shared.planning),
    )
    .await
    .with_access(access)
    .submitted_at(submitted_at)
    .restarted();
    if job.phase().is_terminal() {
        // It can no longer be planned (a table went away): it fails saying
        // why, like at submission.
        warn!(job_id = %job_id, "a recovered job could not be planned again");
        shared.state().submit(job);
        return;
    }
    let same_layout = job.stage_partitions() == record.stage_partitions;
    if !same_layout {
        warn!(job_id = %job_id, "the job plans differently now; it runs again from the start");
    }
    let kept = if same_layout {
        stored
            .outputs
            .iter()
            .map(|(stage, map, _)| (*stage, *map))
            .collect()
    } else {
        Vec::new()
    };
    shared
        .state()
        .recover(job.taking_over_outputs(same_layout), kept);
}

/// The access a stored job had: its owner, signed as this scheduler signs.
fn access_of(shared: &Shared, record: &v1::StoredJob) -> JobAccess {
    let owner = record
        .owner
        .parse()
        .ok()
        .zip(TokenHash::from_bytes(&record.owner_token_hash));
    JobAccess::restored(owner, &shared.config.security)
}

/// Finished jobs of the event log join the history: the newest ones up to
/// the history's size, unless the state store brought them back already.
/// Their results are gone with the executors' restart or TTL, so they are
/// marked released.
pub(crate) async fn restore_logged(shared: &Arc<Shared>, log: &EventLog) {
    let reader = log.clone();
    let logged = match tokio::task::spawn_blocking(move || reader.finished_jobs()).await {
        Ok(logged) => logged,
        Err(e) => {
            warn!(error = %e, "cannot read the event log");
            return;
        }
    };
    let mut restored = 0;
    let mut state = shared.state();
    for job in logged.into_iter().take(shared.config.job_history).rev() {
        let id = JobId::from(job.status.job_id.as_str());
        if !id.is_well_formed() || state.has_job(&id) {
            continue;
        }
        // No token hash is logged; a released job signs no tickets.
        let owner = job
            .user
            .and_then(|u| u.parse().ok())
            .map(|name| (name, TokenHash::of(b"")));
        let access = JobAccess::restored(owner, &shared.config.security);
        state.restore_finished(Job::restored(job.status, access), true);
        restored += 1;
    }
    info!(jobs = restored, dir = %log.dir().display(), "finished jobs read back from the event log");
}
