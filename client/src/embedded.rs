//! The embedded cluster: the real scheduler and executors, started in this
//! process and talking real gRPC and Flight over loopback. `volley sql`
//! without `--scheduler`, `Context::embedded` and the tests all use it:
//! there is no separate local mode.

use std::path::PathBuf;
use std::time::Duration;

use volley_dataflow::{ExecutorId, UdfRegistry};
use volley_executor::{
    Executor, ExecutorConfig, ExecutorSecurity, OwnedDir, WireCompression, default_memory_limit,
};
use volley_scheduler::{SchedulerConfig, SchedulerSecurity, SchedulerServer};
use volley_security::tls;
use volley_security::{
    Authenticator, ClusterSecret, Link, PathPolicy, Role, Secret, UserName, Users,
};

use crate::error::{ClientError, Result};

/// How to size an embedded cluster.
#[derive(Clone, Debug)]
pub struct EmbeddedClusterConfig {
    /// Executors to start.
    pub executors: usize,
    /// Task slots per executor (default: the number of CPUs).
    pub slots_per_executor: usize,
    /// Partitions per stage (default: all slots).
    pub target_partitions: Option<usize>,
    /// Memory budget per executor (default: half the machine's memory,
    /// shared out among the executors).
    pub memory_per_executor: usize,
    /// Shuffle output each executor keeps in memory (default: its share of
    /// `memory_per_executor`, see `volley_executor::SHUFFLE_MEMORY_SHARE`).
    pub shuffle_memory_per_executor: Option<usize>,
    /// How long a silent executor has before it is declared lost.
    pub executor_timeout: Duration,
    /// How long running jobs wait for executors when none are left.
    pub no_executor_grace: Duration,
    /// User functions the executors can run (the client context registers
    /// them too).
    pub udfs: UdfRegistry,
    /// Local directories jobs may read and write (default: the working
    /// directory and the TPC-H data cache).
    pub allowed_paths: Vec<PathBuf>,
    /// TLS on every connection, with certificates made for the cluster
    /// (default off: everything stays on loopback in this process).
    pub tls: bool,
    /// How the executors compress shuffle data they send and spill
    /// (default: `auto`, see [`WireCompression`]).
    pub shuffle_compression: WireCompression,
}

impl Default for EmbeddedClusterConfig {
    fn default() -> Self {
        Self::with_executors(2)
    }
}

impl EmbeddedClusterConfig {
    /// `executors` executors with default slots and memory.
    pub fn with_executors(executors: usize) -> Self {
        let executors = executors.max(1);
        Self {
            executors,
            slots_per_executor: std::thread::available_parallelism().map_or(2, |n| n.get()),
            target_partitions: None,
            memory_per_executor: default_memory_limit() / executors,
            shuffle_memory_per_executor: None,
            executor_timeout: SchedulerConfig::default().executor_timeout,
            no_executor_grace: SchedulerConfig::default().no_executor_grace,
            udfs: UdfRegistry::default(),
            allowed_paths: default_allowed_paths(),
            tls: false,
            shuffle_compression: WireCompression::Auto,
        }
    }
}

/// The directories an embedded cluster allows by default: the working
/// directory and the TPC-H data cache (those that exist).
pub fn default_allowed_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        paths.push(cwd);
    }
    let cache = crate::tpch::data_dir();
    if std::fs::create_dir_all(&cache).is_ok() {
        paths.push(cache);
    }
    paths
}

/// A scheduler and executors running in this process. Dropping it stops
/// them and deletes their work directory.
#[derive(Debug)]
pub struct EmbeddedCluster {
    // Field order is drop order: executors stop before the scheduler.
    executors: Vec<Option<Executor>>,
    scheduler: SchedulerServer,
    /// The admin token generated for this cluster.
    token: Secret,
    /// What a client trusts, when the cluster uses TLS.
    client_tls: Option<tls::ClientTls>,
    /// Removed when the cluster is dropped; if the process is killed
    /// instead, by the next embedded cluster started on this machine.
    _work_dir: OwnedDir,
}

impl EmbeddedCluster {
    /// Starts a scheduler on a free loopback port and the executors, and
    /// waits until every executor has registered.
    pub async fn start(config: EmbeddedClusterConfig) -> Result<Self> {
        let name = format!("volley-embedded-{}", uuid::Uuid::new_v4().simple());
        let (work_dir, _) = OwnedDir::claim(&std::env::temp_dir(), "volley-embedded-", &name)?;
        // Its own random cluster secret and one admin token, so nobody else
        // on this machine can use its ports.
        let embedded = |e: volley_security::SecurityError| ClientError::Embedded(e.to_string());
        let secret = ClusterSecret::random().map_err(embedded)?;
        let name: UserName = "embedded".parse().map_err(embedded)?;
        let (user, token) = Users::create(name, Role::Admin).map_err(embedded)?;
        let paths =
            PathPolicy::from_flags(&config.allowed_paths, &[]).map_err(ClientError::Embedded)?;
        let tls = match config.tls {
            true => {
                let dir = work_dir.path().join("tls");
                tls::generate(&dir, &["127.0.0.1".to_string()]).map_err(embedded)?;
                let server =
                    tls::ServerTls::load(&dir.join("node.pem"), &dir.join("node-key.pem"), None)
                        .map_err(embedded)?;
                let client = tls::ClientTls::load(&dir.join("ca.pem")).map_err(embedded)?;
                Some((server, client))
            }
            false => None,
        };
        let scheduler = SchedulerServer::start(SchedulerConfig {
            bind: ([127, 0, 0, 1], 0).into(),
            target_partitions: config.target_partitions,
            executor_timeout: config.executor_timeout,
            no_executor_grace: config.no_executor_grace,
            security: SchedulerSecurity {
                authenticator: Authenticator::new(Users::new(vec![user]), secret.clone()),
                paths: paths.clone(),
                tls: tls.as_ref().map(|(server, _)| server.clone()),
                ..SchedulerSecurity::insecure_unrestricted()
            },
            ..SchedulerConfig::default()
        })
        .await
        .map_err(|e| ClientError::Embedded(e.to_string()))?;
        let mut executors = Vec::with_capacity(config.executors);
        for _ in 0..config.executors {
            let mut executor_config = ExecutorConfig::new(scheduler.url(), work_dir.path());
            executor_config.slots = config.slots_per_executor.max(1);
            executor_config.memory_limit = config.memory_per_executor;
            executor_config.shuffle_memory = config.shuffle_memory_per_executor;
            executor_config.compression = config.shuffle_compression;
            executor_config.udfs = config.udfs.clone();
            executor_config.security = ExecutorSecurity {
                cluster_secret: Some(secret.clone()),
                server_tls: tls.as_ref().map(|(server, _)| server.clone()),
                client_tls: tls.as_ref().map(|(_, client)| client.clone()),
                paths: paths.clone(),
            };
            let executor = Executor::start(executor_config)
                .await
                .map_err(|e| ClientError::Embedded(e.to_string()))?;
            executors.push(Some(executor));
        }
        Ok(Self {
            executors,
            scheduler,
            token,
            client_tls: tls.map(|(_, client)| client),
            _work_dir: work_dir,
        })
    }

    /// The admin token of this cluster, which its own context presents.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// How a client in this process connects to this cluster: its admin
    /// token, and its CA when it uses TLS.
    pub fn link(&self) -> Link {
        // A random hex token is always a valid header value.
        Link::new(Some(&self.token), self.client_tls.clone()).unwrap_or_default()
    }

    /// `http://127.0.0.1:port` of the scheduler.
    pub fn scheduler_url(&self) -> String {
        self.scheduler.url()
    }

    /// The ids of the executors still running, in start order.
    pub fn executor_ids(&self) -> Vec<ExecutorId> {
        self.executors
            .iter()
            .flatten()
            .map(|e| e.id().clone())
            .collect()
    }

    /// Stops executor `index` at once, as if its process were killed: its
    /// control stream drops, its Flight server and tasks stop.
    pub fn kill_executor(&mut self, index: usize) -> Option<ExecutorId> {
        let executor = self.executors.get_mut(index)?.take()?;
        let id = executor.id().clone();
        drop(executor);
        Some(id)
    }
}
