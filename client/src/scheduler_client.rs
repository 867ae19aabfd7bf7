//! A typed client of the scheduler's gRPC service: submit, follow, cancel
//! and release jobs.

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use volley_dataflow::JobId;
use volley_proto::v1;
use volley_proto::v1::scheduler_service_client::SchedulerServiceClient;

use crate::error::{ClientError, Result};

/// A connection to a Volley scheduler; cheap to clone.
#[derive(Clone, Debug)]
pub struct SchedulerClient {
    url: String,
    inner: SchedulerServiceClient<Channel>,
}

/// Is this job state terminal?
pub fn is_terminal(state: i32) -> bool {
    matches!(
        v1::JobState::try_from(state),
        Ok(v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled)
    )
}

impl SchedulerClient {
    /// Connects to the scheduler at `url`; an unreachable scheduler is a
    /// [`ClientError::SchedulerUnreachable`] naming it.
    pub async fn connect(url: &str) -> Result<Self> {
        let unreachable = |message: String| ClientError::SchedulerUnreachable {
            url: url.to_string(),
            message,
        };
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| unreachable(format!("invalid URL: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                message = format!("{message}: {inner}");
                source = inner.source();
            }
            unreachable(message)
        })?;
        let inner = SchedulerServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut client = Self {
            url: url.to_string(),
            inner,
        };
        // A handshake: fails fast when something else listens there.
        client
            .inner
            .cluster_info(v1::ClusterInfoRequest {})
            .await
            .map_err(|status| unreachable(status.message().to_string()))?;
        Ok(client)
    }

    /// The scheduler's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn map_status(&self, status: tonic::Status) -> ClientError {
        match status.code() {
            tonic::Code::Unavailable => ClientError::SchedulerUnreachable {
                url: self.url.clone(),
                message: status.message().to_string(),
            },
            _ => ClientError::Scheduler(status),
        }
    }

    /// Submits an encoded logical plan; returns the new job's id.
    pub async fn submit(
        &self,
        logical_plan: Vec<u8>,
        settings: HashMap<String, String>,
        name: String,
    ) -> Result<JobId> {
        let response = self
            .inner
            .clone()
            .submit_job(v1::SubmitJobRequest {
                logical_plan,
                settings,
                name,
                ..Default::default()
            })
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(JobId::from(response.into_inner().job_id))
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

    /// Recent jobs, newest first.
    pub async fn list_jobs(&self) -> Result<Vec<v1::JobStatus>> {
        Ok(self
            .inner
            .clone()
            .list_jobs(v1::ListJobsRequest {})
            .await
            .map_err(|s| self.map_status(s))?
            .into_inner()
            .jobs)
    }

    /// The job's status changes, ending after a terminal state.
    pub async fn watch(
        &self,
        job_id: &JobId,
    ) -> Result<impl Stream<Item = Result<v1::JobStatus>> + Send + use<>> {
        let stream = self
            .inner
            .clone()
            .watch_job(v1::WatchJobRequest {
                job_id: job_id.to_string(),
            })
            .await
            .map_err(|s| self.map_status(s))?
            .into_inner();
        let this = self.clone();
        Ok(stream.map(move |item| item.map_err(|s| this.map_status(s))))
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
}
