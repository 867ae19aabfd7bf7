//! [`Context`]: a DataFusion `SessionContext` whose queries run on a Volley
//! cluster. It dereferences to the `SessionContext`, so every DataFusion
//! method (`sql`, `read_parquet`, `register_csv`, `table`, `register_udf`,
//! ...) keeps its exact signature; only execution moves to the cluster.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{DataFrame, SessionContext};
use volley_dataflow::{
    UdfRegistry, changed_settings, encode_logical_plan, install_volley_rules, object_store_runtime,
    session_config,
};
use volley_executor::FlightChannels;
use volley_proto::v1;
use volley_security::{Link, PathPolicy};

use crate::distributed_exec::{ClusterLink, JobObserver, VolleyQueryPlanner};
use crate::embedded::{EmbeddedCluster, EmbeddedClusterConfig};
use crate::error::Result;
use crate::job_handle::JobHandle;
use crate::scheduler_client::SchedulerClient;
use crate::table_factories::NamingTableFactory;

/// A session on a Volley cluster.
#[derive(Clone)]
pub struct Context {
    session: SessionContext,
    link: ClusterLink,
    cluster: Option<Arc<EmbeddedCluster>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("scheduler", &self.link.scheduler.url())
            .field("embedded", &self.cluster.is_some())
            .finish()
    }
}

impl Context {
    /// Connects to a running scheduler, e.g. `https://scheduler:50050`,
    /// with the credentials of the environment (`VOLLEY_TOKEN` or
    /// `VOLLEY_TOKEN_FILE`, and `VOLLEY_TLS_CA`).
    pub async fn remote(url: &str) -> Result<Self> {
        let scheduler = SchedulerClient::connect(url).await?;
        Ok(Self::with_scheduler(scheduler, None))
    }

    /// Connects to a running scheduler with `link`'s credential and TLS.
    pub async fn remote_with(url: &str, link: Link) -> Result<Self> {
        let scheduler = SchedulerClient::connect_with(url, link).await?;
        Ok(Self::with_scheduler(scheduler, None))
    }

    /// Starts an in-process cluster of `executors` executors and connects to
    /// it; the cluster stops when the last clone of this context drops.
    pub async fn embedded(executors: usize) -> Result<Self> {
        Self::embedded_with(EmbeddedClusterConfig::with_executors(executors)).await
    }

    /// Like [`Context::embedded`], sized by `config`.
    /// The cluster's user functions are registered in this context as well.
    pub async fn embedded_with(config: EmbeddedClusterConfig) -> Result<Self> {
        let udfs = config.udfs.clone();
        let cluster = EmbeddedCluster::start(config).await?;
        let scheduler =
            SchedulerClient::connect_with(&cluster.scheduler_url(), cluster.link()).await?;
        let context = Self::with_scheduler(scheduler, Some(Arc::new(cluster)));
        context.register_udfs(&udfs);
        Ok(context)
    }

    /// Registers every function of `udfs` in this session, so queries can
    /// call them; the executors that run those queries need the same
    /// registry (a custom executor built with `volley_executor::run_main`,
    /// or [`EmbeddedClusterConfig::udfs`]).
    pub fn register_udfs(&self, udfs: &UdfRegistry) {
        for udf in udfs.udfs() {
            self.session.register_udf(udf.as_ref().clone());
        }
        for udaf in udfs.udafs() {
            self.session.register_udaf(udaf.as_ref().clone());
        }
        for udwf in udfs.udwfs() {
            self.session.register_udwf(udwf.as_ref().clone());
        }
    }

    fn with_scheduler(scheduler: SchedulerClient, cluster: Option<Arc<EmbeddedCluster>>) -> Self {
        let link = ClusterLink {
            scheduler,
            observer: Arc::new(Mutex::new(None)),
            last_job: Arc::new(Mutex::new(None)),
            check_round_trip: Arc::default(),
            executor_channels: FlightChannels::default(),
        };
        let mut builder = SessionStateBuilder::new().with_config(session_config());
        // The client reads its own files (schema inference) with its own
        // rights: the cluster's path rules apply on the cluster.
        if let Ok(runtime) = object_store_runtime(PathPolicy::unrestricted()) {
            builder = builder.with_runtime_env(runtime);
        }
        let mut state = builder
            .with_default_features()
            .with_query_planner(Arc::new(VolleyQueryPlanner::new(link.clone())))
            .build();
        // Cannot fail: registering a function only replaces a namesake.
        let _ = install_volley_rules(&mut state);
        for factory in state.table_factories_mut().values_mut() {
            *factory = Arc::new(NamingTableFactory::new(Arc::clone(factory)));
        }
        Self {
            session: SessionContext::new_with_state(state),
            link,
            cluster,
        }
    }

    /// With `on`, every plan this context sends is first decoded and
    /// planned as the scheduler would, and a query whose plan would change
    /// on the way fails with both plans (for tests; it plans each query
    /// twice more).
    pub fn check_plan_round_trip(&self, on: bool) {
        self.link
            .check_round_trip
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The underlying DataFusion session (its catalog, settings, UDFs).
    pub fn session(&self) -> &SessionContext {
        &self.session
    }

    /// The scheduler this context submits to.
    pub fn scheduler(&self) -> &SchedulerClient {
        &self.link.scheduler
    }

    /// The embedded cluster, if this context started one.
    pub fn embedded_cluster(&self) -> Option<&EmbeddedCluster> {
        self.cluster.as_deref()
    }

    /// Calls `observer` with every status update of every job this context
    /// runs (e.g. to draw progress).
    pub fn set_job_observer(&self, observer: Option<JobObserver>) {
        *self.link.observer.lock().unwrap_or_else(|p| p.into_inner()) = observer;
    }

    /// Runs `df` on the cluster as a detached job and returns at once; the
    /// [`JobHandle`] follows or cancels it. Its result stays on the
    /// executors until the scheduler's result TTL expires; to keep the rows,
    /// write them out (`COPY`, `volley submit --output`) or `collect` the
    /// DataFrame instead.
    pub async fn submit(&self, df: DataFrame, name: &str) -> Result<JobHandle> {
        let plan = df.into_optimized_plan()?;
        let bytes = encode_logical_plan(&plan)?;
        let settings = changed_settings(self.session.state().config_options());
        let id = self
            .link
            .scheduler
            .submit(bytes, settings, name.to_string())
            .await?;
        Ok(JobHandle {
            id,
            scheduler: self.link.scheduler.clone(),
        })
    }

    /// The final status of the last job this context ran.
    pub fn last_job(&self) -> Option<v1::JobStatus> {
        self.link
            .last_job
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Deref for Context {
    type Target = SessionContext;

    fn deref(&self) -> &SessionContext {
        &self.session
    }
}
