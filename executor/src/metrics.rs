//! The executor's Prometheus metrics, served at `/metrics` on
//! `--metrics-bind` (OpenMetrics text, the same credentials as the
//! scheduler's: the cluster's executor or metrics credential). One registry
//! per executor, so the executors of an embedded cluster never mix.
//! Counters move where the work happens (the shuffle store, the Flight
//! service, the task runner); the memory pool and stored outputs are read
//! when scraped.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::execution::memory_pool::MemoryPool;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use volley_security::tls::ServerTls;
use volley_security::{Authenticator, HttpServer, may_read_metrics};

use crate::shuffle_store::ShuffleStore;

/// An `outcome` label of a task.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// A `source` label of shuffle data read: `local` (this executor's own
/// store) or `remote` (over Flight).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// Every metric an executor exports.
#[derive(Clone, Debug)]
pub(crate) struct ExecutorMetrics {
    registry: Arc<Registry>,
    memory_reserved: Gauge,
    memory_limit: Gauge,
    stored_outputs: Gauge,
    spill_data_held: Gauge,
    spill_disk_held: Gauge,
    pub(crate) shuffle_bytes_written: Counter,
    pub(crate) shuffle_bytes_spilled: Counter,
    pub(crate) shuffle_bytes_served: Counter,
    shuffle_bytes_read: Family<SourceLabel, Counter>,
    pub(crate) fetch_failures: Counter,
    pub(crate) flight_bytes_in: Counter,
    pub(crate) flight_bytes_out: Counter,
    tasks: Family<OutcomeLabel, Counter>,
}

impl Default for ExecutorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ExecutorMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("volley_executor");
        let metrics = Self {
            registry: Arc::default(),
            memory_reserved: Gauge::default(),
            memory_limit: Gauge::default(),
            stored_outputs: Gauge::default(),
            spill_data_held: Gauge::default(),
            spill_disk_held: Gauge::default(),
            shuffle_bytes_written: Counter::default(),
            shuffle_bytes_spilled: Counter::default(),
            shuffle_bytes_served: Counter::default(),
            shuffle_bytes_read: Family::default(),
            fetch_failures: Counter::default(),
            flight_bytes_in: Counter::default(),
            flight_bytes_out: Counter::default(),
            tasks: Family::default(),
        };
        registry.register(
            "memory_pool_reserved_bytes",
            "Bytes reserved in the executor's memory pool",
            metrics.memory_reserved.clone(),
        );
        registry.register(
            "memory_pool_limit_bytes",
            "The executor's memory pool limit (--memory-limit)",
            metrics.memory_limit.clone(),
        );
        registry.register(
            "stored_outputs",
            "Map outputs (shuffle and result data) the executor holds",
            metrics.stored_outputs.clone(),
        );
        registry.register(
            "spill_data_bytes",
            "Bytes of shuffle data held in spill files now, before compression \
             (past a quarter of the memory limit, new spill files are LZ4 by default)",
            metrics.spill_data_held.clone(),
        );
        registry.register(
            "spill_file_bytes",
            "Bytes of stored outputs' spill files on disk now",
            metrics.spill_disk_held.clone(),
        );
        registry.register(
            "shuffle_bytes_written",
            "Bytes of shuffle output its tasks wrote (in memory or to files)",
            metrics.shuffle_bytes_written.clone(),
        );
        registry.register(
            "shuffle_bytes_spilled",
            "Bytes of shuffle output written to files because memory was short",
            metrics.shuffle_bytes_spilled.clone(),
        );
        registry.register(
            "shuffle_bytes_served",
            "Bytes of stored output served over Flight to other executors and clients",
            metrics.shuffle_bytes_served.clone(),
        );
        registry.register(
            "shuffle_bytes_read",
            "Bytes of shuffle data its tasks read, by source (local, remote)",
            metrics.shuffle_bytes_read.clone(),
        );
        registry.register(
            "fetch_failures",
            "Tasks that failed because a map output could not be read",
            metrics.fetch_failures.clone(),
        );
        registry.register(
            "flight_bytes_in",
            "Bytes received over Flight (encoded, as on the wire)",
            metrics.flight_bytes_in.clone(),
        );
        registry.register(
            "flight_bytes_out",
            "Bytes sent over Flight (encoded, as on the wire)",
            metrics.flight_bytes_out.clone(),
        );
        registry.register(
            "tasks",
            "Tasks that ended on this executor, by outcome (succeeded, failed)",
            metrics.tasks.clone(),
        );
        Self {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    pub(crate) fn task_ended(&self, succeeded: bool) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.tasks
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub(crate) fn shuffle_read(&self, local: bool, bytes: u64) {
        let source = if local { "local" } else { "remote" };
        self.shuffle_bytes_read
            .get_or_create(&SourceLabel {
                source: source.into(),
            })
            .inc_by(bytes);
    }

    /// Every metric in the OpenMetrics text format, the gauges read from
    /// `pool` and `store` now.
    pub(crate) fn encode(&self, pool: &dyn MemoryPool, store: &ShuffleStore) -> String {
        self.memory_reserved.set(pool.reserved() as i64);
        if let datafusion::execution::memory_pool::MemoryLimit::Finite(limit) = pool.memory_limit()
        {
            self.memory_limit.set(limit as i64);
        }
        self.stored_outputs.set(store.len() as i64);
        self.spill_data_held
            .set(i64::try_from(store.spilled_data_held()).unwrap_or(i64::MAX));
        self.spill_disk_held
            .set(i64::try_from(store.disk_held()).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[derive(Clone)]
struct Scrape {
    store: Arc<ShuffleStore>,
    pool: Arc<dyn MemoryPool>,
    authenticator: Authenticator,
}

async fn metrics(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    if !may_read_metrics(&scrape.authenticator, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "not authenticated: present the cluster's metrics token (volley secret metrics-token)",
        )
            .into_response();
    }
    let text = scrape
        .store
        .metrics()
        .encode(scrape.pool.as_ref(), &scrape.store);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Serves `/metrics` on `bind`; returns the address and the server's task.
pub(crate) fn serve(
    bind: SocketAddr,
    store: Arc<ShuffleStore>,
    pool: Arc<dyn MemoryPool>,
    authenticator: Authenticator,
    tls: Option<ServerTls>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let server = HttpServer::bind(bind)?;
    let addr = server.addr();
    let router = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Scrape {
            store,
            pool,
            authenticator,
        });
    let task = tokio::spawn(async move {
        if let Err(e) = server.serve(router, tls.as_ref()).await {
            warn!(error = %e, "the metrics server stopped");
        }
    });
    info!(%addr, "executor /metrics listening");
    Ok((addr, task))
}
