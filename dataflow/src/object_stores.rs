//! Where tables and outputs live: the local filesystem, or S3-compatible
//! storage at `s3://bucket/path`. Every node (client, scheduler, executors)
//! resolves stores through [`EnvObjectStoreRegistry`], which builds an S3
//! store for a bucket the first time it is named, from the standard AWS
//! environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL` for an
//! S3-compatible server, `AWS_ALLOW_HTTP=true` for a plain-HTTP one), so a
//! cluster reads and writes buckets with no Volley-specific configuration.
//! Every store is wrapped in a [`GuardedStore`] that enforces the node's
//! [`PathPolicy`] (`--allow-path`, `--allow-url`).

use std::sync::Arc;

use datafusion::common::DataFusionError;
use datafusion::error::Result;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, RetryConfig};
use url::Url;
use volley_security::PathPolicy;

use crate::guarded_store::GuardedStore;

/// Local files, plus S3 buckets configured from the environment on first
/// use, all as far as a [`PathPolicy`] allows.
#[derive(Debug)]
pub struct EnvObjectStoreRegistry {
    inner: DefaultObjectStoreRegistry,
    policy: Arc<PathPolicy>,
}

impl EnvObjectStoreRegistry {
    /// A registry with the local filesystem registered, guarded by `policy`.
    pub fn new(policy: PathPolicy) -> Self {
        let policy = Arc::new(policy);
        let inner = DefaultObjectStoreRegistry::new();
        let local: Arc<dyn ObjectStore> = Arc::new(GuardedStore::local(Arc::clone(&policy)));
        // The default registry's `file://` store is replaced by a guarded one.
        if let Ok(url) = Url::parse("file://") {
            inner.register_store(&url, local);
        }
        Self { inner, policy }
    }

    /// The registry as DataFusion's runtime takes it.
    pub fn shared(policy: PathPolicy) -> Arc<dyn ObjectStoreRegistry> {
        Arc::new(Self::new(policy))
    }
}

impl ObjectStoreRegistry for EnvObjectStoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.inner.get_store(url) {
            return Ok(store);
        }
        if !matches!(url.scheme(), "s3" | "s3a") {
            return Err(DataFusionError::Plan(format!(
                "no object store for {url}: Volley reads and writes local paths and s3:// URLs"
            )));
        }
        let Some(bucket) = url.host_str().filter(|b| !b.is_empty()) else {
            return Err(DataFusionError::Plan(format!("no bucket in {url}")));
        };
        let store: Arc<dyn ObjectStore> = Arc::new(GuardedStore::url(
            s3_store(bucket)?,
            format!("{}://{bucket}", url.scheme()),
            Arc::clone(&self.policy),
        ));
        self.inner.register_store(url, Arc::clone(&store));
        Ok(store)
    }
}

/// A DataFusion runtime that resolves stores through
/// [`EnvObjectStoreRegistry`] guarded by `policy` (for sessions that need
/// no memory limit).
pub fn object_store_runtime(policy: PathPolicy) -> Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_object_store_registry(EnvObjectStoreRegistry::shared(policy))
        .build_arc()
}

/// A runtime for planning job after job, as the scheduler does: object
/// stores as [`object_store_runtime`], and DataFusion's caches of files'
/// statistics and Parquet metadata kept from one job to the next (an entry
/// is used only while the file's size and modification time are those it
/// was read with). File listings are not cached: files added to a table
/// are seen by the next job.
pub fn planning_runtime(policy: PathPolicy) -> Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_object_store_registry(EnvObjectStoreRegistry::shared(policy))
        .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
        .build_arc()
}

/// An S3 store for `bucket`, configured from the `AWS_*` environment.
pub fn s3_store(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    // Bounded retries: a wrong endpoint or credentials should fail a query
    // in seconds, not after object_store's default three minutes.
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(30),
    };
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .build()
        .map_err(|e| DataFusionError::Configuration(format!("S3 bucket `{bucket}`: {e}")))?;
    Ok(Arc::new(store))
}
