//! Detached jobs from the Rust API: [`Context::submit`](crate::Context::submit)
//! runs a DataFrame on the cluster without waiting for it, and a
//! [`JobHandle`] follows, inspects or cancels it later. These are the same
//! jobs `volley jobs` lists.

use volley_dataflow::JobId;
use volley_proto::v1;

use crate::error::Result;
use crate::scheduler_client::SchedulerClient;

/// A job running on the cluster.
#[derive(Debug, Clone)]
pub struct JobHandle {
    pub(crate) id: JobId,
    pub(crate) scheduler: SchedulerClient,
}

impl JobHandle {
    /// The job's id, as `volley jobs` shows it.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// The job's current status.
    pub async fn status(&self) -> Result<v1::JobStatus> {
        self.scheduler.status(&self.id).await
    }

    /// Waits for the job to end; a job that failed or was cancelled is a
    /// [`ClientError::JobFailed`](crate::ClientError::JobFailed).
    pub async fn wait(&self) -> Result<v1::JobStatus> {
        self.scheduler.wait(&self.id, |_| {}).await
    }

    /// Cancels the job: its tasks stop on every executor. `false` if it had
    /// already ended.
    pub async fn cancel(&self) -> Result<bool> {
        self.scheduler.cancel(&self.id).await
    }
}
