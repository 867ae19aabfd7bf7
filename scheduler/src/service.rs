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
use volley_proto::v1;
use volley_proto::v1::scheduler_service_server::SchedulerService;

use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
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

#[tonic::async_trait]
impl SchedulerService for SchedulerGrpc {
    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let request = request.into_inner();
        let job_id = JobId::new_random();
        let target = self
            .shared
            .config
            .target_partitions
            .unwrap_or_else(|| self.shared.state().total_slots());
        if !request.script.is_empty() {
            match script::prepare(&job_id, &request) {
                Ok((job, statements, output)) => {
                    self.shared.state().submit_script(job);
                    let driver = script::drive(
                        Arc::clone(&self.shared),
                        job_id.clone(),
                        statements,
                        request.settings,
                        output,
                        target,
                    );
                    let mut scripts = self
                        .shared
                        .scripts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    while scripts.try_join_next().is_some() {}
                    scripts.spawn(driver);
                }
                Err(error) => self
                    .shared
                    .state()
                    .submit(crate::job::Job::failed_at_submit(
                        job_id.clone(),
                        request.name,
                        error,
                    )),
            }
            return Ok(Response::new(v1::SubmitJobResponse {
                job_id: job_id.to_string(),
            }));
        }
        if request.logical_plan.is_empty() {
            return Err(SchedulerError::InvalidRequest("the job has no plan".into()).into());
        }
        let job = plan_job(job_id.clone(), request, target).await;
        self.shared.state().submit(job);
        Ok(Response::new(v1::SubmitJobResponse {
            job_id: job_id.to_string(),
        }))
    }

    type WatchJobStream = BoxStream<v1::JobStatus>;

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = JobId::from(request.into_inner().job_id);
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
        let id = JobId::from(request.into_inner().job_id);
        let mut state = self.shared.state();
        if state.status(&id).is_none() {
            return Err(SchedulerError::JobNotFound(id).into());
        }
        let cancelled = state.cancel(&id);
        Ok(Response::new(v1::CancelJobResponse { cancelled }))
    }

    async fn release_job(
        &self,
        request: Request<v1::ReleaseJobRequest>,
    ) -> Result<Response<v1::ReleaseJobResponse>, Status> {
        let id = JobId::from(request.into_inner().job_id);
        self.shared.state().release(&id);
        Ok(Response::new(v1::ReleaseJobResponse {}))
    }

    async fn cluster_info(
        &self,
        _request: Request<v1::ClusterInfoRequest>,
    ) -> Result<Response<v1::ClusterInfoResponse>, Status> {
        Ok(Response::new(v1::ClusterInfoResponse {
            executors: self.shared.state().executors_info(),
        }))
    }

    async fn list_jobs(
        &self,
        _request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        Ok(Response::new(v1::ListJobsResponse {
            jobs: self.shared.state().list_jobs(),
        }))
    }

    type ExecutorControlStream = BoxStream<v1::SchedulerMessage>;

    async fn executor_control(
        &self,
        request: Request<Streaming<v1::ExecutorMessage>>,
    ) -> Result<Response<Self::ExecutorControlStream>, Status> {
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
        let id = ExecutorId::from(register.executor_id);
        let (sender, receiver) = mpsc::unbounded_channel();
        self.shared.state().register_executor(
            id.clone(),
            register.endpoint,
            register.slots.max(1) as usize,
            sender,
        );
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
