//! The scheduler's gRPC service: thin handlers that decode requests and call
//! into [`SchedulerState`](crate::state::SchedulerState).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};
use volley_dataflow::{ExecutorId, JobId};
use volley_proto::v1::scheduler_service_server::SchedulerService;
use volley_proto::{limits, v1};
use volley_security::Caller;

use crate::access::JobAccess;
use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
use crate::explain::explain_job;
use crate::planning::plan_job;
use crate::script;
use crate::state::SchedulerState;

/// Shared between the service handlers and the scheduler's background loops.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<SchedulerState>,
    pub(crate) config: SchedulerConfig,
    /// Readers of executors' control streams; aborted with the scheduler.
    pub(crate) streams: Mutex<JoinSet<()>>,
    /// Drivers of script jobs; aborted with the scheduler.
    pub(crate) scripts: Mutex<JoinSet<()>>,
    /// Told whenever an executor registers.
    pub(crate) executor_joined: tokio::sync::Notify,
    /// How many submissions wait for a first executor right now.
    pub(crate) waiting_for_executors: tokio::sync::watch::Sender<usize>,
    /// The state store's journal (`--state-dir`).
    pub(crate) journal: Option<crate::state_store::Journal>,
    /// Where jobs are planned: one runtime for every job, so files'
    /// statistics and Parquet metadata are read once, not per job
    /// (`volley_dataflow::planning_runtime`), and one session built once
    /// that each job's is copied from.
    pub(crate) planning: Arc<crate::planning_session::PlanningSessions>,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, SchedulerState> {
        // The state is only mutated by short synchronous methods; a panic in
        // one leaves it as consistent as the method got, which beats
        // stopping the whole scheduler.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SchedulerGrpc {
    pub(crate) shared: Arc<Shared>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn is_terminal(status: &v1::JobStatus) -> bool {
    matches!(
        v1::JobState::try_from(status.state),
        Ok(v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled)
    )
}

impl SchedulerGrpc {
    /// The partitions a job is planned with: `--target-partitions`, else
    /// the cluster's slots right now.
    fn target_partitions(&self) -> usize {
        self.shared
            .config
            .target_partitions
            .unwrap_or_else(|| self.shared.state().total_slots())
            .min(limits::MAX_PARTITIONS)
    }

    /// Who sent `request`: `Unauthenticated` unless their credential is good.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.shared
            .config
            .security
            .authenticator
            .identify(request.metadata())
    }

    /// Waits, up to the no-executor grace period, until some executor is
    /// registered: a job submitted before the cluster's executors joined is
    /// planned for them, not failed (nor planned for fewer partitions).
    async fn wait_for_executors(&self) {
        let deadline = tokio::time::Instant::now() + self.shared.config.no_executor_grace;
        let mut counted = false;
        loop {
            let joined = self.shared.executor_joined.notified();
            tokio::pin!(joined);
            joined.as_mut().enable();
            if self.shared.state().total_slots() > 0 {
                break;
            }
            if !counted {
                info!(grace = ?self.shared.config.no_executor_grace, "no executor yet; the job waits for one");
                self.shared.waiting_for_executors.send_modify(|n| *n += 1);
                counted = true;
            }
            if tokio::time::timeout_at(deadline, joined).await.is_err() {
                break;
            }
        }
        if counted {
            self.shared.waiting_for_executors.send_modify(|n| *n -= 1);
        }
    }

    /// Stores a submission before its client hears of it, so a job a client
    /// knows of survives a restart. Without a state store, does nothing.
    async fn store_submission(
        &self,
        job_id: &JobId,
        request: &v1::SubmitJobRequest,
        target_partitions: usize,
        access: &JobAccess,
        stage_partitions: Vec<u32>,
    ) -> Result<(), Status> {
        let Some(journal) = &self.shared.journal else {
            return Ok(());
        };
        let (owner, owner_token_hash) = access.stored_owner();
        let record = v1::StoredJob {
            job_id: job_id.to_string(),
            submission: Some(request.clone()),
            target_partitions: target_partitions as u32,
            owner,
            owner_token_hash,
            submitted_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default(),
            stage_partitions,
        };
        journal
            .record_durably(crate::state_store::StoreOp::Submitted(Box::new(record)))
            .await
            .map_err(|e| {
                warn!(job_id = %job_id, error = %e, "job refused: it could not be stored");
                Status::unavailable(format!(
                    "the scheduler could not store job {job_id}, so it would not survive a restart: {e}"
                ))
            })
    }

    /// Job `id`'s final status from the event log, when the scheduler no
    /// longer (or never, since its restart) held the job; refused like a
    /// held job to a caller who may not see it.
    async fn logged_job(&self, caller: &Caller, id: &str) -> Result<Option<v1::JobStatus>, Status> {
        let id = JobId::parse(id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let log = {
            let state = self.shared.state();
            if state.has_job(&id) {
                return Ok(None);
            }
            match state.event_log() {
                Some(log) => log.clone(),
                None => return Ok(None),
            }
        };
        let wanted = id.clone();
        let Ok(Some(logged)) = tokio::task::spawn_blocking(move || log.finished_job(&wanted)).await
        else {
            return Ok(None);
        };
        let access = logged_access(logged.user.as_deref(), &self.shared.config);
        access.check(caller, &id)?;
        let mut status = logged.status;
        if !access.is_owner(caller) {
            for stage in &mut status.stages {
                stage.plan.clear();
            }
        }
        Ok(Some(status))
    }

    /// The job `id` names, if `caller` may see and act on it.
    fn visible_job(&self, caller: &Caller, id: &str) -> Result<JobId, Status> {
        let id = JobId::parse(id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        match self.shared.state().job_access(&id) {
            Some(access) => access.check(caller, &id)?,
            None => return Err(SchedulerError::JobNotFound(id).into()),
        }
        Ok(id)
    }
}

/// Who may see a job the event log holds: its owner by name (no token hash
/// is logged, and its result is gone, so it signs no ticket).
pub(crate) fn logged_access(user: Option<&str>, config: &SchedulerConfig) -> JobAccess {
    let owner = user
        .and_then(|u| u.parse().ok())
        .map(|name| (name, volley_security::TokenHash::of(b"")));
    JobAccess::restored(owner, &config.security)
}

/// The jobs `held` (visible to `caller`, newest first) and those of
/// `logged` the caller may see that are not held, newest first; one page
/// of them after `before`.
fn with_logged(
    held: Vec<v1::JobStatus>,
    logged: Vec<crate::event_log::LoggedJob>,
    caller: &Caller,
    config: &SchedulerConfig,
    before: Option<&JobId>,
    limit: usize,
) -> (Vec<v1::JobStatus>, Option<String>) {
    let held_ids: std::collections::HashSet<String> =
        held.iter().map(|j| j.job_id.clone()).collect();
    let mut all = held;
    for job in logged {
        if held_ids.contains(&job.status.job_id) {
            continue;
        }
        let access = logged_access(job.user.as_deref(), config);
        if !access.visible_to(caller) {
            continue;
        }
        let mut status = job.status;
        if !access.is_owner(caller) {
            for stage in &mut status.stages {
                stage.plan.clear();
            }
        }
        all.push(status);
    }
    all.sort_by(|a, b| (b.started_at_ms, &b.job_id).cmp(&(a.started_at_ms, &a.job_id)));
    let start = match before {
        Some(id) => all
            .iter()
            .position(|j| j.job_id == id.as_str())
            .map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<v1::JobStatus> = all.iter().skip(start).take(limit).cloned().collect();
    let next = (start + page.len() < all.len())
        .then(|| page.last().map(|j| j.job_id.clone()))
        .flatten();
    (page, next)
}

/// Starts script job `job_id`: its driver plans and runs the statements.
pub(crate) fn start_script(
    shared: &Arc<Shared>,
    job_id: JobId,
    request: v1::SubmitJobRequest,
    target_partitions: usize,
    access: JobAccess,
) {
    start_script_as(shared, job_id, request, target_partitions, access, |job| {
        job
    });
}

/// [`start_script`], with `adjust` applied to the job before it starts (a
/// recovered job keeps its submission time and counts the restart).
pub(crate) fn start_script_as(
    shared: &Arc<Shared>,
    job_id: JobId,
    request: v1::SubmitJobRequest,
    target_partitions: usize,
    access: JobAccess,
    adjust: impl FnOnce(crate::job::Job) -> crate::job::Job,
) {
    match script::prepare(&job_id, &request, &shared.config.security.paths) {
        Ok((job, statements, output)) => {
            let job = job.with_access(access).with_source(request.script.clone());
            shared.state().submit_script(adjust(job));
            let driver = script::drive(
                Arc::clone(shared),
                job_id,
                statements,
                request.settings,
                output,
                target_partitions,
            );
            let mut scripts = shared.scripts.lock().unwrap_or_else(|p| p.into_inner());
            while scripts.try_join_next().is_some() {}
            scripts.spawn(driver);
        }
        Err(error) => shared.state().submit(
            crate::job::Job::failed_at_submit(job_id, request.name, error).with_access(access),
        ),
    }
}

/// Refuses a submission over the size limits of `volley_proto::limits`.
fn check_submission_limits(request: &v1::SubmitJobRequest) -> Result<(), Status> {
    let too_big = |what: &str, size: usize, limit: usize| {
        Err(Status::invalid_argument(format!(
            "the job's {what} is {size} bytes, over the limit of {limit}"
        )))
    };
    if request.name.len() > limits::MAX_JOB_NAME_BYTES {
        return too_big("name", request.name.len(), limits::MAX_JOB_NAME_BYTES);
    }
    if request.script.len() > limits::MAX_SCRIPT_BYTES {
        return too_big("script", request.script.len(), limits::MAX_SCRIPT_BYTES);
    }
    if request.settings.len() > limits::MAX_SETTINGS {
        return Err(Status::invalid_argument(format!(
            "the job has {} settings, over the limit of {}",
            request.settings.len(),
            limits::MAX_SETTINGS
        )));
    }
    if let Some((key, value)) = request
        .settings
        .iter()
        .find(|(k, v)| k.len() + v.len() > limits::MAX_SETTING_BYTES)
    {
        let shown: String = key.chars().take(64).collect();
        return too_big(
            &format!("setting `{shown}`"),
            key.len() + value.len(),
            limits::MAX_SETTING_BYTES,
        );
    }
    Ok(())
}

#[tonic::async_trait]
impl SchedulerService for SchedulerGrpc {
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let caller = self.caller(&request)?;
        let access = JobAccess::for_submitter(&caller, &self.shared.config.security)?;
        let request = request.into_inner();
        check_submission_limits(&request)?;
        let job_id = JobId::new_random();
        info!(job_id = %job_id, owner = access.owner().map_or("anonymous", |o| o.as_str()), "job submitted");
        self.wait_for_executors().await;
        let target = self.target_partitions();
        let security = &self.shared.config.security;
        if !request.script.is_empty() {
            self.store_submission(&job_id, &request, target, &access, Vec::new())
                .await?;
            start_script(&self.shared, job_id.clone(), request, target, access);
            return Ok(Response::new(v1::SubmitJobResponse {
                job_id: job_id.to_string(),
            }));
        }
        if request.logical_plan.is_empty() {
            return Err(SchedulerError::InvalidRequest("the job has no plan".into()).into());
        }
        let mut job = plan_job(
            job_id.clone(),
            request.clone(),
            target,
            &security.paths,
            Arc::clone(&self.shared.planning),
        )
        .await;
        if let Err(refused) = self
            .store_submission(&job_id, &request, target, &access, job.stage_partitions())
            .await
        {
            // It will not run: its prepared output goes.
            if let Some(target) = job.output_target.take() {
                target.abandon();
            }
            return Err(refused);
        }
        self.shared.state().submit(job.with_access(access));
        Ok(Response::new(v1::SubmitJobResponse {
            job_id: job_id.to_string(),
        }))
    }

    type WatchJobStream = BoxStream<v1::JobStatus>;

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = self.caller(&request)?;
        let id = request.into_inner().job_id;
        if let Some(status) = self.logged_job(&caller, &id).await? {
            // A job only the event log still holds: its final status.
            let stream = futures::stream::once(async move { Ok(status) });
            return Ok(Response::new(Box::pin(stream)));
        }
        let id = self.visible_job(&caller, &id)?;
        let receiver = self
            .shared
            .state()
            .watch(&id)
            .ok_or_else(|| Status::from(SchedulerError::JobNotFound(id)))?;
        let stream = futures::stream::unfold(
            (receiver, true, false),
            |(mut rx, first, done)| async move {
                if done {
                    return None;
                }
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let status = rx.borrow_and_update().clone();
                let terminal = is_terminal(&status);
                Some((Ok(status), (rx, false, terminal)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let caller = self.caller(&request)?;
        let id = self.visible_job(&caller, &request.into_inner().job_id)?;
        let cancelled = self.shared.state().cancel(&id);
        Ok(Response::new(v1::CancelJobResponse { cancelled }))
    }

    async fn release_job(
        &self,
        request: Request<v1::ReleaseJobRequest>,
    ) -> Result<Response<v1::ReleaseJobResponse>, Status> {
        let caller = self.caller(&request)?;
        let id = self.visible_job(&caller, &request.into_inner().job_id)?;
        self.shared.state().release(&id);
        Ok(Response::new(v1::ReleaseJobResponse {}))
    }

    async fn explain_job(
        &self,
        request: Request<v1::ExplainJobRequest>,
    ) -> Result<Response<v1::ExplainJobResponse>, Status> {
        let caller = self.caller(&request)?;
        JobAccess::for_submitter(&caller, &self.shared.config.security)?;
        let request = request.into_inner();
        check_submission_limits(&v1::SubmitJobRequest {
            settings: request.settings.clone(),
            ..Default::default()
        })?;
        if request.logical_plan.is_empty() {
            return Err(SchedulerError::InvalidRequest("nothing to explain".into()).into());
        }
        match explain_job(request, self.target_partitions(), &self.shared.planning).await {
            Ok(explained) => Ok(Response::new(explained)),
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        }
    }

    async fn cluster_info(
        &self,
        request: Request<v1::ClusterInfoRequest>,
    ) -> Result<Response<v1::ClusterInfoResponse>, Status> {
        self.caller(&request)?;
        Ok(Response::new(v1::ClusterInfoResponse {
            executors: self.shared.state().executors_info(),
        }))
    }

    async fn drain_executor(
        &self,
        request: Request<v1::DrainExecutorRequest>,
    ) -> Result<Response<v1::DrainExecutorResponse>, Status> {
        match self.caller(&request)? {
            Caller::User(user) if user.role().sees_all_jobs() => {}
            Caller::Anonymous => {}
            Caller::User(user) => {
                return Err(Status::permission_denied(format!(
                    "user `{}` may not drain executors (role admin only)",
                    user.name()
                )));
            }
            Caller::Executor => {
                return Err(Status::permission_denied(
                    "executors drain themselves on their control stream",
                ));
            }
        }
        let id = ExecutorId::parse(&request.get_ref().executor_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !self.shared.state().drain_executor(&id, "asked by a client") {
            return Err(Status::not_found(format!("no executor {id} is registered")));
        }
        Ok(Response::new(v1::DrainExecutorResponse {}))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let before = match request.before_job_id.as_str() {
            "" => None,
            id => Some(JobId::parse(id).map_err(|e| Status::invalid_argument(e.to_string()))?),
        };
        let limit = match request.limit {
            0 => limits::MAX_LISTED_JOBS,
            n => n.min(limits::MAX_LISTED_JOBS),
        } as usize;
        let log = if request.all {
            self.shared.state().event_log().cloned()
        } else {
            None
        };
        let (jobs, next) = match log {
            // Every job: those held, and those only the event log holds.
            Some(log) => {
                let logged = tokio::task::spawn_blocking(move || log.finished_jobs())
                    .await
                    .unwrap_or_default();
                let held = self.shared.state().list_jobs(&caller, None, usize::MAX).0;
                with_logged(
                    held,
                    logged,
                    &caller,
                    &self.shared.config,
                    before.as_ref(),
                    limit,
                )
            }
            None => self
                .shared
                .state()
                .list_jobs(&caller, before.as_ref(), limit),
        };
        Ok(Response::new(v1::ListJobsResponse {
            jobs,
            next_before_job_id: next.unwrap_or_default(),
        }))
    }

    type ExecutorControlStream = BoxStream<v1::SchedulerMessage>;

    async fn executor_control(
        &self,
        request: Request<Streaming<v1::ExecutorMessage>>,
    ) -> Result<Response<Self::ExecutorControlStream>, Status> {
        match self.caller(&request)? {
            Caller::Executor | Caller::Anonymous => {}
            Caller::User(user) => {
                return Err(Status::permission_denied(format!(
                    "user `{}` is not an executor: executors register with the cluster secret",
                    user.name()
                )));
            }
        }
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let register = match inbound.message().await? {
            Some(v1::ExecutorMessage {
                kind: Some(v1::executor_message::Kind::Register(register)),
            }) => register,
            _ => {
                return Err(SchedulerError::InvalidRequest(
                    "an executor's control stream must open with RegisterExecutor".into(),
                )
                .into());
            }
        };
        if register.protocol_version != volley_proto::PROTOCOL_VERSION {
            warn!(executor_id = %register.executor_id, version = register.protocol_version, "executor refused: protocol mismatch");
            return Err(SchedulerError::ProtocolMismatch {
                executor: register.protocol_version,
                scheduler: volley_proto::PROTOCOL_VERSION,
            }
            .into());
        }
        let id = ExecutorId::parse(&register.executor_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if register.slots == 0 || register.slots > limits::MAX_SLOTS {
            warn!(executor_id = %id, slots = register.slots, "executor refused: slots out of range");
            return Err(Status::invalid_argument(format!(
                "an executor registers with 1 to {} slots, not {}",
                limits::MAX_SLOTS,
                register.slots
            )));
        }
        check_advertised_endpoint(&register.endpoint, peer).await?;
        let proof = self
            .shared
            .config
            .security
            .authenticator
            .cluster()
            .map(|cluster| cluster.proof(&register.nonce))
            .unwrap_or_default();
        let previous = crate::state::Previous {
            id: match register.previous_executor_id.as_str() {
                "" => None,
                previous => Some(
                    ExecutorId::parse(previous)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?,
                ),
            },
            epoch: register.previous_epoch,
            held: register.held_outputs,
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        self.shared.state().register_executor(
            id.clone(),
            register.endpoint,
            register.slots as usize,
            sender,
            proof,
            previous,
        )?;
        self.shared.executor_joined.notify_waiters();
        let shared = Arc::clone(&self.shared);
        let mut streams = self
            .shared
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Reap finished readers so the set does not grow with executor churn.
        while streams.try_join_next().is_some() {}
        streams.spawn(async move {
            let reason = loop {
                match inbound.message().await {
                    Ok(Some(message)) => match message.kind {
                        Some(v1::executor_message::Kind::Heartbeat(report)) => {
                            shared.state().heartbeat_report(&id, &report)
                        }
                        Some(v1::executor_message::Kind::TaskStatus(status)) => {
                            let mut state = shared.state();
                            state.heartbeat(&id);
                            state.task_status(&id, status);
                        }
                        Some(v1::executor_message::Kind::Drain(request)) => {
                            let mut state = shared.state();
                            state.heartbeat(&id);
                            state.drain_executor(&id, &request.reason);
                        }
                        Some(v1::executor_message::Kind::Register(_)) | None => {
                            warn!(executor_id = %id, "unexpected message on control stream; ignored");
                        }
                    },
                    Ok(None) => break "its control stream closed".to_string(),
                    Err(status) => break format!("its control stream failed: {}", status.message()),
                }
            };
            info!(executor_id = %id, %reason, "executor disconnected");
            shared.state().executor_lost(&id, &reason);
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            receiver,
        ))))
    }
}

/// Refuses an executor whose advertised Flight endpoint is not an address
/// of the peer that registers it: a registration must not point clients and
/// other executors at a third machine. A host name must resolve to the
/// peer's address; loopback peers may advertise any loopback address.
async fn check_advertised_endpoint(
    endpoint: &str,
    peer: Option<std::net::SocketAddr>,
) -> Result<(), Status> {
    let refuse = |why: String| {
        warn!(%endpoint, %why, "executor refused: advertised endpoint");
        Err(Status::invalid_argument(format!(
            "the advertised endpoint {endpoint} {why}"
        )))
    };
    let Some((_, rest)) = endpoint
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
    else {
        return refuse("is not an http:// or https:// URL".into());
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let Some(peer) = peer.map(|p| p.ip()) else {
        return Ok(());
    };
    let addresses: Vec<std::net::IpAddr> = match tokio::net::lookup_host(authority).await {
        Ok(found) => found.map(|a| a.ip()).collect(),
        Err(e) => return refuse(format!("does not resolve: {e}")),
    };
    let matches = |ip: &std::net::IpAddr| {
        *ip == peer || (ip.is_loopback() && peer.is_loopback()) || canonical(*ip) == canonical(peer)
    };
    if addresses.iter().any(matches) {
        Ok(())
    } else {
        refuse(format!("is not an address of the registering peer {peer}"))
    }
}

/// An IPv4-mapped IPv6 address as IPv4.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}
