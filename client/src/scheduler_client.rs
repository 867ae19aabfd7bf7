//! A typed client of the scheduler's gRPC service: submit, follow, cancel
//! and release jobs.

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use volley_dataflow::JobId;
use volley_proto::v1::scheduler_service_client::SchedulerServiceClient;
use volley_proto::{limits, v1};
use volley_security::bearer::BearerInterceptor;
use volley_security::tls::ClientTls;
use volley_security::{Link, Secret};

use crate::error::{ClientError, Result};

/// A connection to a Volley scheduler; cheap to clone.
#[derive(Clone, Debug)]
pub struct SchedulerClient {
    url: String,
    inner: SchedulerServiceClient<InterceptedService<Channel, BearerInterceptor>>,
    link: Link,
}

/// A job's status stream from the scheduler.
type Statuses = tonic::Streaming<v1::JobStatus>;

/// Following a job's status across broken streams.
struct Follow {
    client: SchedulerClient,
    job_id: JobId,
    stream: Option<Statuses>,
    ended: bool,
}

/// How long a client following a job keeps trying to reach a scheduler
/// that went away (it may be restarting): `VOLLEY_RECONNECT_SECS`, else 120
/// seconds.
pub(crate) fn reconnect_patience() -> Duration {
    std::env::var("VOLLEY_RECONNECT_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(120), Duration::from_secs_f64)
}

/// Whether a failed call may succeed when tried again: the scheduler was
/// unreachable or the connection broke, rather than the scheduler refusing.
fn is_transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
    )
}

/// Refuses a plan the scheduler would refuse for its size, saying why.
fn check_plan_size(bytes: usize) -> Result<()> {
    // Room for the rest of the request (settings, name).
    let limit = limits::MAX_PLAN_MESSAGE_BYTES - (1 << 20);
    if bytes > limit {
        return Err(ClientError::Usage(format!(
            "the query's plan is {} MiB, over the cluster's limit of {} MiB; in-memory \
             tables (register_batch, VALUES, CREATE TABLE AS) travel inside the plan, so \
             write large data to files and read those instead",
            bytes >> 20,
            limit >> 20
        )));
    }
    Ok(())
}

/// The client's error for a status the scheduler answered with.
fn map_status(url: &str, status: tonic::Status) -> ClientError {
    match status.code() {
        tonic::Code::Unavailable => ClientError::SchedulerUnreachable {
            url: url.to_string(),
            message: status.message().to_string(),
        },
        tonic::Code::Unauthenticated => ClientError::Unauthenticated(status.message().to_string()),
        tonic::Code::PermissionDenied => {
            ClientError::PermissionDenied(status.message().to_string())
        }
        _ => ClientError::Scheduler(status),
    }
}

/// A connected channel to `url` with `link`'s TLS.
async fn connect_channel(url: &str, link: &Link) -> Result<tonic::transport::Channel> {
    let endpoint = link
        .endpoint(url)
        .map_err(ClientError::Usage)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    endpoint.connect().await.map_err(|e| {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            message = format!("{message}: {inner}");
            source = inner.source();
        }
        ClientError::SchedulerUnreachable {
            url: url.to_string(),
            message: with_tls_hint(url, message),
        }
    })
}

/// Asks the standard gRPC health service (`grpc.health.v1`) of a scheduler
/// or executor at `url` whether it serves: true when serving, false when
/// not (starting, or draining). A scheduler takes any user's token; an
/// executor only the cluster's credential.
pub async fn check_health(url: &str, link: &Link) -> Result<bool> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = connect_channel(url, link).await?;
    let mut client = HealthClient::with_interceptor(channel, link.interceptor());
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| map_status(url, status))?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}

/// A failed connection's message, with the likely cause when the URL's
/// scheme may not match the server's TLS.
fn with_tls_hint(url: &str, message: String) -> String {
    if url.starts_with("http://") {
        format!(
            "{message} (if the scheduler uses TLS, connect to https:// with --tls-ca or \
             VOLLEY_TLS_CA)"
        )
    } else {
        format!("{message} (check that the scheduler uses TLS with a certificate --tls-ca trusts)")
    }
}

/// The credentials of the environment: the token in `VOLLEY_TOKEN`, or in
/// the file `VOLLEY_TOKEN_FILE` names, and the CA certificate in the file
/// `VOLLEY_TLS_CA` names (which makes every connection TLS).
pub fn link_from_env() -> Result<Link> {
    let token = match (
        std::env::var("VOLLEY_TOKEN").ok().filter(|t| !t.is_empty()),
        std::env::var_os("VOLLEY_TOKEN_FILE"),
    ) {
        (Some(token), _) => Some(Secret::new(token)),
        (None, Some(path)) => Some(read_token_file(std::path::Path::new(&path))?),
        (None, None) => None,
    };
    let tls = match std::env::var_os("VOLLEY_TLS_CA") {
        Some(ca) if !ca.is_empty() => Some(
            ClientTls::load(std::path::Path::new(&ca))
                .map_err(|e| ClientError::Usage(e.to_string()))?,
        ),
        _ => None,
    };
    Link::new(token.as_ref(), tls).map_err(|s| ClientError::Usage(s.message().to_string()))
}

/// The token in a file (`--token-file`), trimmed.
pub fn read_token_file(path: &std::path::Path) -> Result<Secret> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Usage(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    Ok(Secret::new(text.trim()))
}

/// Is this job state terminal?
pub fn is_terminal(state: i32) -> bool {
    matches!(
        v1::JobState::try_from(state),
        Ok(v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled)
    )
}

impl SchedulerClient {
    /// Connects to the scheduler at `url` with the credentials of the
    /// environment ([`link_from_env`]: `VOLLEY_TOKEN`, `VOLLEY_TOKEN_FILE`,
    /// `VOLLEY_TLS_CA`); an unreachable scheduler is a
    /// [`ClientError::SchedulerUnreachable`] naming it.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, link_from_env()?).await
    }

    /// Connects to the scheduler at `url`, presenting `link`'s credential
    /// and speaking its TLS.
    pub async fn connect_with(url: &str, link: Link) -> Result<Self> {
        let channel = connect_channel(url, &link).await?;
        let inner = SchedulerServiceClient::with_interceptor(channel, link.interceptor())
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_PLAN_MESSAGE_BYTES);
        let mut client = Self {
            url: url.to_string(),
            inner,
            link,
        };
        // A handshake: fails fast when something else listens there, or the
        // credential is refused.
        client
            .inner
            .cluster_info(v1::ClusterInfoRequest {})
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    map_status(url, status)
                }
                _ => ClientError::SchedulerUnreachable {
                    url: url.to_string(),
                    message: with_tls_hint(url, status.message().to_string()),
                },
            })?;
        Ok(client)
    }

    /// The scheduler's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn map_status(&self, status: tonic::Status) -> ClientError {
        map_status(&self.url, status)
    }

    /// How this client connects: its credential and TLS, which result
    /// fetches from executors use too.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Submits an encoded logical plan; returns the new job's id.
    pub async fn submit(
        &self,
        logical_plan: Vec<u8>,
        settings: HashMap<String, String>,
        name: String,
    ) -> Result<JobId> {
        self.submit_plan(logical_plan, settings, name, false).await
    }

    /// [`SchedulerClient::submit`] for an interactive query: while the
    /// scheduler is unreachable (restarting), tries again with backoff for
    /// up to [`reconnect_patience`]. If a submission reached a scheduler
    /// that went away before answering, that job may run as well; its
    /// unread result expires on the executors.
    pub async fn submit_retrying(
        &self,
        logical_plan: Vec<u8>,
        settings: HashMap<String, String>,
        name: String,
    ) -> Result<JobId> {
        self.submit_plan(logical_plan, settings, name, true).await
    }

    async fn submit_plan(
        &self,
        logical_plan: Vec<u8>,
        settings: HashMap<String, String>,
        name: String,
        retry: bool,
    ) -> Result<JobId> {
        check_plan_size(logical_plan.len())?;
        let request = v1::SubmitJobRequest {
            logical_plan,
            settings,
            name,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + reconnect_patience();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.inner.clone().submit_job(request.clone()).await {
                Ok(response) => return Ok(JobId::from(response.into_inner().job_id)),
                Err(status)
                    if retry
                        && is_transient(&status)
                        && tokio::time::Instant::now() + backoff < deadline =>
                {
                    tracing::info!(error = %status.message(), retry_in = ?backoff, "scheduler unreachable; submitting again soon");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(status) => return Err(self.map_status(status)),
            }
        }
    }

    /// Submits a SQL script the scheduler plans and runs itself (a detached
    /// job); `output` asks the executors to write the last query's result.
    pub async fn submit_script(
        &self,
        script: String,
        name: String,
        settings: HashMap<String, String>,
        output: Option<v1::OutputSpec>,
    ) -> Result<JobId> {
        let response = self
            .inner
            .clone()
            .submit_job(v1::SubmitJobRequest {
                logical_plan: Vec::new(),
                settings,
                name,
                script,
                output,
            })
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(JobId::from(response.into_inner().job_id))
    }

    /// The current status of a job.
    pub async fn status(&self, job_id: &JobId) -> Result<v1::JobStatus> {
        let mut updates = Box::pin(self.watch(job_id).await?);
        match updates.next().await {
            Some(status) => status,
            None => Err(ClientError::Scheduler(tonic::Status::not_found(format!(
                "no job with id {job_id}"
            )))),
        }
    }

    /// Recent jobs this client's user may see, newest first (every page).
    pub async fn list_jobs(&self) -> Result<Vec<v1::JobStatus>> {
        self.list_jobs_with(false).await
    }

    /// Every job this client's user may see, newest first: also those only
    /// the scheduler's event log still holds (`--event-log`).
    pub async fn list_all_jobs(&self) -> Result<Vec<v1::JobStatus>> {
        self.list_jobs_with(true).await
    }

    async fn list_jobs_with(&self, all: bool) -> Result<Vec<v1::JobStatus>> {
        let mut jobs = Vec::new();
        let mut before = String::new();
        loop {
            let page = self
                .inner
                .clone()
                .list_jobs(v1::ListJobsRequest {
                    limit: 0,
                    before_job_id: before,
                    all,
                })
                .await
                .map_err(|s| self.map_status(s))?
                .into_inner();
            jobs.extend(page.jobs);
            if page.next_before_job_id.is_empty() {
                return Ok(jobs);
            }
            before = page.next_before_job_id;
        }
    }

    /// Opens a job's status stream.
    async fn open_watch(&self, job_id: &JobId) -> std::result::Result<Statuses, tonic::Status> {
        Ok(self
            .inner
            .clone()
            .watch_job(v1::WatchJobRequest {
                job_id: job_id.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Opens a job's status stream again after it broke, with backoff while
    /// the scheduler is unreachable (restarting), for up to
    /// [`reconnect_patience`].
    async fn reopen_watch(&self, job_id: &JobId) -> Result<Statuses> {
        let patience = reconnect_patience();
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.open_watch(job_id).await {
                Ok(stream) => return Ok(stream),
                Err(status) if status.code() == tonic::Code::NotFound => {
                    return Err(ClientError::SchedulerUnreachable {
                        url: self.url.clone(),
                        message: format!(
                            "the scheduler restarted and no longer knows job {job_id} (it keeps \
                             jobs across restarts only with --state-dir)"
                        ),
                    });
                }
                Err(status)
                    if is_transient(&status)
                        && tokio::time::Instant::now() + backoff < deadline =>
                {
                    tracing::info!(%job_id, error = %status.message(), retry_in = ?backoff, "scheduler unreachable; following the job again soon");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(status) if is_transient(&status) => {
                    return Err(ClientError::SchedulerUnreachable {
                        url: self.url.clone(),
                        message: format!(
                            "lost the status stream of job {job_id} and could not reach the \
                             scheduler again within {patience:?}: {}",
                            status.message()
                        ),
                    });
                }
                Err(status) => return Err(self.map_status(status)),
            }
        }
    }

    /// The job's status changes, ending after a terminal state. If the
    /// stream breaks before (the scheduler restarted, a link was cut), it is
    /// opened again, with backoff, for up to [`reconnect_patience`]: a
    /// scheduler restarted with its `--state-dir` still knows the job.
    pub async fn watch(
        &self,
        job_id: &JobId,
    ) -> Result<impl Stream<Item = Result<v1::JobStatus>> + Send + use<>> {
        let first = match self.open_watch(job_id).await {
            Ok(stream) => stream,
            // The scheduler went away right after the submission: follow
            // the job once it is back.
            Err(status) if is_transient(&status) => self.reopen_watch(job_id).await?,
            Err(status) => return Err(self.map_status(status)),
        };
        let follow = Follow {
            client: self.clone(),
            job_id: job_id.clone(),
            stream: Some(first),
            ended: false,
        };
        Ok(futures::stream::unfold(follow, |mut follow| async move {
            if follow.ended {
                return None;
            }
            loop {
                if let Some(stream) = &mut follow.stream {
                    match stream.message().await {
                        Ok(Some(status)) => {
                            follow.ended = is_terminal(status.state);
                            return Some((Ok(status), follow));
                        }
                        // Ended or broken before the job did: follow again.
                        Ok(None) => follow.stream = None,
                        Err(status) if is_transient(&status) => follow.stream = None,
                        Err(status) => {
                            follow.ended = true;
                            let error = follow.client.map_status(status);
                            return Some((Err(error), follow));
                        }
                    }
                }
                match follow.client.reopen_watch(&follow.job_id).await {
                    Ok(stream) => follow.stream = Some(stream),
                    Err(error) => {
                        follow.ended = true;
                        return Some((Err(error), follow));
                    }
                }
            }
        }))
    }

    /// Follows a job to its end, calling `observe` with every status; a job
    /// that did not succeed is a [`ClientError::JobFailed`].
    pub async fn wait(
        &self,
        job_id: &JobId,
        mut observe: impl FnMut(&v1::JobStatus),
    ) -> Result<v1::JobStatus> {
        let mut updates = Box::pin(self.watch(job_id).await?);
        while let Some(status) = updates.next().await {
            let status = status?;
            observe(&status);
            if is_terminal(status.state) {
                return match ClientError::from_failed_job(&status) {
                    Some(failure) => Err(failure),
                    None => Ok(status),
                };
            }
        }
        Err(self.status_stream_ended(job_id))
    }

    /// The error when a job's status stream ends before the job does.
    pub(crate) fn status_stream_ended(&self, job_id: &JobId) -> ClientError {
        ClientError::SchedulerUnreachable {
            url: self.url.clone(),
            message: format!("the status stream of job {job_id} ended before the job did"),
        }
    }

    /// Plans the encoded `plan` as a job would be planned, without running
    /// it, and describes its stages (`EXPLAIN`).
    pub async fn explain(
        &self,
        plan: Vec<u8>,
        settings: HashMap<String, String>,
    ) -> Result<v1::ExplainJobResponse> {
        Ok(self
            .inner
            .clone()
            .explain_job(v1::ExplainJobRequest {
                logical_plan: plan,
                settings,
            })
            .await
            .map_err(|s| self.map_status(s))?
            .into_inner())
    }

    /// Cancels a job; `false` if it had already ended.
    pub async fn cancel(&self, job_id: &JobId) -> Result<bool> {
        Ok(self
            .inner
            .clone()
            .cancel_job(v1::CancelJobRequest {
                job_id: job_id.to_string(),
            })
            .await
            .map_err(|s| self.map_status(s))?
            .into_inner()
            .cancelled)
    }

    /// Tells the scheduler the job's result has been read.
    pub async fn release(&self, job_id: &JobId) -> Result<()> {
        self.inner
            .clone()
            .release_job(v1::ReleaseJobRequest {
                job_id: job_id.to_string(),
            })
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(())
    }

    /// The registered executors.
    pub async fn executors(&self) -> Result<Vec<v1::ExecutorInfo>> {
        Ok(self
            .inner
            .clone()
            .cluster_info(v1::ClusterInfoRequest {})
            .await
            .map_err(|s| self.map_status(s))?
            .into_inner()
            .executors)
    }

    /// Drains an executor (role admin): it takes no new tasks and stops
    /// once nothing on it is needed.
    pub async fn drain_executor(&self, executor_id: &str) -> Result<()> {
        self.inner
            .clone()
            .drain_executor(v1::DrainExecutorRequest {
                executor_id: executor_id.to_string(),
            })
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(())
    }
}
