//! Starting an executor: its work directory and memory pool, its Flight
//! server, and its control stream with the scheduler.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tracing::{error, info, warn};
use volley_dataflow::{
    EnvObjectStoreRegistry, ExecutorId, ShuffleSource, install_volley_rules, session_config,
};
use volley_proto::v1::scheduler_service_client::SchedulerServiceClient;
use volley_proto::{limits, v1};
use volley_security::{Authenticator, ClusterSecret, Link, TicketSigner, Users};

use crate::config::ExecutorConfig;
use crate::control::{ControlLoop, Ended};
use crate::error::ExecutorError;
use crate::exchange_client::ExchangeClient;
use crate::flight_service::ShuffleFlightService;
use crate::shuffle_store::ShuffleStore;
use crate::task_runner::TaskEnv;
use crate::work_dirs::OwnedDir;

/// A running executor. Dropping it stops it at once, like a killed process:
/// its Flight server, its control stream and its running tasks.
///
/// It stays in the cluster until it is drained: when its scheduler goes
/// away (or declared it lost, say behind a cut link) it registers again,
/// with backoff and a fresh id, as a new executor, reporting the map
/// outputs it still holds. A scheduler restarted from its state store takes
/// them over; the scheduler that declared it lost (which re-ran them), or
/// one without a state store, has it drop them. Unclaimed, they are dropped
/// after the orphan grace.
#[derive(Debug)]
pub struct Executor {
    id: watch::Receiver<ExecutorId>,
    endpoint: String,
    /// Removed, with all spilled files, when the executor is dropped.
    work_dir: OwnedDir,
    /// Runs the tasks; its threads are the executor's slots.
    tasks_runtime: Option<tokio::runtime::Runtime>,
    flight: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// `/metrics` (`--metrics-bind`): where, and its server's task.
    metrics: Option<(std::net::SocketAddr, JoinHandle<()>)>,
    control: Option<JoinHandle<Result<Stopped, ExecutorError>>>,
    drain: watch::Sender<bool>,
}

/// How an executor stopped on its own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Drained: its tasks finished and no job needed its output any more.
    Drained,
    /// Draining took longer than the drain timeout; it stopped anyway.
    DrainTimedOut,
}

/// What an executor keeps from one registration to the next.
struct Membership {
    state: SessionState,
    store: Arc<ShuffleStore>,
    link: Link,
    endpoint: String,
    scheduler_url: String,
    slots: usize,
    memory_limit: usize,
    heartbeat_interval: Duration,
    register_patience: Duration,
    drain_timeout: Duration,
    orphan_grace: Duration,
    /// The scheduler epochs of the last registration and the highest seen.
    epochs: std::sync::Mutex<Epochs>,
    cluster_secret: Option<ClusterSecret>,
    tasks_runtime: tokio::runtime::Handle,
    health: HealthReporter,
    id: watch::Sender<ExecutorId>,
}

/// Scheduler epochs an executor has served (0: a scheduler without a state
/// store).
#[derive(Debug, Default, Clone, Copy)]
struct Epochs {
    last: u64,
    highest: u64,
}

/// What registering with a scheduler of some epoch means for the outputs
/// an executor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// A scheduler restarted from its state store: it may take them over.
    MayTakeOver,
    /// The scheduler that declared this executor lost (it re-ran that work),
    /// or one without a state store: nobody will read them.
    DropsOutputs,
}

impl Epochs {
    /// Whether a scheduler announcing `epoch` is served: `Err(highest)` when
    /// it is older than one served before (a stale scheduler, fenced off by
    /// a newer one); epoch 0 (no state store) is always served.
    fn admit(&self, epoch: u64, registered_before: bool) -> Result<Admission, u64> {
        if epoch != 0 && epoch < self.highest {
            return Err(self.highest);
        }
        if registered_before && (epoch == 0 || epoch == self.last) {
            Ok(Admission::DropsOutputs)
        } else {
            Ok(Admission::MayTakeOver)
        }
    }

    /// A scheduler of `epoch` is now served.
    fn served(&mut self, epoch: u64) {
        self.last = epoch;
        self.highest = self.highest.max(epoch);
    }
}

/// An open control stream.
type Control = (
    mpsc::UnboundedSender<v1::ExecutorMessage>,
    tonic::Streaming<v1::SchedulerMessage>,
);

impl Membership {
    /// What the tasks of registration `id` share.
    fn task_env(&self, id: &ExecutorId) -> Arc<TaskEnv> {
        let source: Arc<dyn ShuffleSource> = Arc::new(ExchangeClient::new(
            id.clone(),
            Arc::clone(&self.store),
            self.link.clone(),
        ));
        Arc::new(TaskEnv {
            executor_id: id.clone(),
            memory_limit: self.memory_limit,
            slots: self.slots,
            state: self.state.clone(),
            store: Arc::clone(&self.store),
            source,
            epoch: self.epochs.lock().unwrap_or_else(|p| p.into_inner()).last,
        })
    }

    /// Registers as `id` (retrying while the scheduler is unreachable: for
    /// `patience` at start, without end after that) and checks that the
    /// scheduler proved it holds the cluster secret and is not stale.
    /// Registering again (`previous` names the last registration), it
    /// reports the outputs it still holds; if the scheduler is the one that
    /// dropped it, or keeps no state, it drops them.
    async fn join(
        &self,
        id: &ExecutorId,
        previous: Option<&ExecutorId>,
    ) -> Result<Control, ExecutorError> {
        let refused = |message: String| ExecutorError::Refused {
            url: self.scheduler_url.clone(),
            message,
        };
        let nonce = ClusterSecret::nonce().map_err(|e| ExecutorError::Config(e.to_string()))?;
        let epochs = *self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        let register = v1::ExecutorMessage {
            kind: Some(v1::executor_message::Kind::Register(v1::RegisterExecutor {
                executor_id: id.to_string(),
                endpoint: self.endpoint.clone(),
                slots: self.slots as u32,
                protocol_version: volley_proto::PROTOCOL_VERSION,
                nonce: nonce.clone(),
                previous_executor_id: previous.map(|p| p.to_string()).unwrap_or_default(),
                previous_epoch: epochs.last,
                held_outputs: if previous.is_some() {
                    self.store.held()
                } else {
                    Vec::new()
                },
            })),
        };
        let (outbound, mut inbound) = register_with_patience(
            &self.link,
            &self.scheduler_url,
            previous.is_none().then_some(self.register_patience),
            self.heartbeat_interval,
            register,
        )
        .await?;
        match inbound.message().await {
            Ok(Some(v1::SchedulerMessage {
                kind: Some(v1::scheduler_message::Kind::Registered(registered)),
            })) => {
                // A scheduler without the cluster secret could send this
                // executor anything (RemoveJobData, plans): it must prove it
                // holds the secret before anything else is believed.
                if let Some(secret) = &self.cluster_secret
                    && !secret.verify_proof(&nonce, &registered.proof)
                {
                    return Err(refused(
                        "the scheduler did not prove it holds the cluster secret; \
                         this executor talks only to its own cluster's scheduler"
                            .into(),
                    ));
                }
                let admission =
                    epochs
                        .admit(registered.epoch, previous.is_some())
                        .map_err(|served| ExecutorError::StaleScheduler {
                            url: self.scheduler_url.clone(),
                            epoch: registered.epoch,
                            served,
                        })?;
                if admission == Admission::DropsOutputs {
                    // The same scheduler dropped this executor (and re-ran
                    // its work), or a scheduler without a state store knows
                    // nothing of what it holds.
                    let dropped = self.store.clear();
                    if dropped > 0 {
                        info!(executor_id = %id, dropped_outputs = dropped, "the scheduler will not take over stored outputs; dropped them");
                    }
                }
                self.epochs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .served(registered.epoch);
            }
            Ok(_) => {
                return Err(refused(
                    "the scheduler did not confirm the registration".into(),
                ));
            }
            Err(status) => return Err(refused(status.message().to_string())),
        }
        info!(executor_id = %id, endpoint = %self.endpoint, slots = self.slots, memory_limit = self.memory_limit, "executor registered");
        self.health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        Ok((outbound, inbound))
    }

    /// Serves registrations until drained or until the scheduler cannot be
    /// reached again within the register patience.
    async fn serve(
        self,
        mut control: Control,
        mut drain: watch::Receiver<bool>,
    ) -> Result<Stopped, ExecutorError> {
        loop {
            let id = self.id.borrow().clone();
            let (outbound, inbound) = control;
            let session = ControlLoop::new(
                self.task_env(&id),
                self.tasks_runtime.clone(),
                Arc::clone(&self.store),
                outbound,
                self.heartbeat_interval,
                self.health.clone(),
                self.drain_timeout,
            );
            let reason = match session.run(inbound, &mut drain).await {
                Ended::Released => return Ok(Stopped::Drained),
                Ended::DrainTimedOut => return Ok(Stopped::DrainTimedOut),
                Ended::Lost(reason) => reason,
            };
            self.health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            if *drain.borrow() {
                // Nobody is left to read what it holds.
                warn!(executor_id = %id, %reason, "lost the scheduler while draining; stopping");
                return Ok(Stopped::Drained);
            }
            let new_id = ExecutorId::new_random();
            warn!(executor_id = %id, %reason, stored_outputs = self.store.len(), orphan_grace = ?self.orphan_grace, new_id = %new_id, "control stream ended; registering again, keeping stored outputs meanwhile");
            // Kept for a scheduler restarted from its state store to take
            // over; dropped if none comes within the grace.
            let orphaned = {
                let store = Arc::clone(&self.store);
                let grace = self.orphan_grace;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let dropped = store.clear();
                    warn!(
                        dropped_outputs = dropped,
                        ?grace,
                        "no scheduler took over the stored outputs in time; dropped them"
                    );
                })
            };
            let joined = loop {
                let attempt = tokio::select! {
                    joined = self.join(&new_id, Some(&id)) => joined,
                    Ok(_) = drain.wait_for(|asked| *asked) => {
                        warn!(executor_id = %id, "asked to stop while registering again; stopping");
                        orphaned.abort();
                        return Ok(Stopped::Drained);
                    }
                };
                match attempt {
                    Err(stale @ ExecutorError::StaleScheduler { .. }) => {
                        warn!(error = %stale, "registering again later");
                        tokio::time::sleep(self.heartbeat_interval.max(Duration::from_secs(1)))
                            .await;
                    }
                    other => break other,
                }
            };
            orphaned.abort();
            control = joined?;
            self.id.send_replace(new_id);
        }
    }
}

impl Executor {
    /// Starts an executor and registers it with the scheduler.
    pub async fn start(config: ExecutorConfig) -> Result<Self, ExecutorError> {
        if config.slots == 0 {
            return Err(ExecutorError::Config("--slots must be at least 1".into()));
        }
        let id = ExecutorId::new_random();
        // Named after the first registration's id, kept for the process;
        // siblings that SIGKILLed executors left behind go first.
        let (work_dir, removed) = OwnedDir::claim(&config.work_dir, "exec-", id.as_str())?;
        for dir in removed {
            tracing::info!(dir = %dir.display(), "removed the work directory of an executor that is gone");
        }

        let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
            GreedyMemoryPool::new(config.memory_limit),
            NonZeroUsize::new(5).expect("5 is not zero"),
        ));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::clone(&pool))
            .with_temp_file_path(work_dir.path().join("spill"))
            .with_object_store_registry(EnvObjectStoreRegistry::shared(
                config.security.paths.clone(),
            ))
            .build_arc()?;
        let mut state = SessionStateBuilder::new()
            .with_config(session_config())
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        install_volley_rules(&mut state)?;
        config.udfs.register_into(&mut state)?;

        let pool_for_metrics = Arc::clone(&pool);
        let store = Arc::new(ShuffleStore::new(
            pool,
            work_dir.path().join("shuffle"),
            config.shuffle_memory_bytes(),
            config.compression.for_local_files(config.memory_limit),
        ));
        let security = &config.security;
        let link = Link::new(
            security
                .cluster_secret
                .as_ref()
                .map(|s| s.credential())
                .as_ref(),
            security.client_tls.clone(),
        )
        .map_err(|status| ExecutorError::Config(status.message().to_string()))?;

        let incoming = TcpIncoming::bind(config.bind)?.with_nodelay(Some(true));
        let addr = incoming.local_addr()?;
        let host = advertised_host(
            addr,
            config.advertise_host.as_deref(),
            &config.scheduler_url,
        )?;
        let scheme = volley_security::tls::scheme(security.server_tls.is_some());
        let endpoint = format!("{scheme}://{host}:{}", addr.port());
        let flight = FlightServiceServer::new(ShuffleFlightService {
            store: Arc::clone(&store),
            compression: config.compression,
            tickets: security
                .cluster_secret
                .as_ref()
                .map(|secret| TicketSigner::new(secret, Duration::ZERO)),
        })
        .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(limits::MAX_FLIGHT_MESSAGE_BYTES);
        // The standard gRPC health service: serving while registered and
        // not draining. Only the cluster's own credential may ask.
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let authenticator = match &security.cluster_secret {
            Some(secret) => Authenticator::new(Users::default(), secret.clone()),
            None => Authenticator::insecure(),
        };
        let metrics = match config.metrics_bind {
            Some(bind) => Some(crate::metrics::serve(
                bind,
                Arc::clone(&store),
                Arc::clone(&pool_for_metrics),
                authenticator.clone(),
                security.server_tls.clone(),
            )?),
            None => None,
        };
        let health_service = InterceptedService::new(health_service, authenticator.require_known());
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &security.server_tls {
            server = server.tls_config(tls.config())?;
        }
        let flight = tokio::spawn(
            server
                .add_service(flight)
                .add_service(health_service)
                .serve_with_incoming(incoming),
        );
        let tasks_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.slots)
            .thread_name("volley-task")
            .enable_all()
            .build()?;
        let (id_sender, id_receiver) = watch::channel(id.clone());
        let (drain, drain_receiver) = watch::channel(false);
        let mut executor = Self {
            id: id_receiver,
            endpoint: endpoint.clone(),
            work_dir,
            tasks_runtime: None,
            flight: Some(flight),
            metrics,
            control: None,
            drain,
        };
        let membership = Membership {
            state,
            store,
            link,
            endpoint,
            scheduler_url: config.scheduler_url.clone(),
            slots: config.slots,
            memory_limit: config.memory_limit,
            heartbeat_interval: config.heartbeat_interval,
            register_patience: config.register_patience,
            drain_timeout: config.drain_timeout,
            orphan_grace: config.orphan_grace,
            epochs: std::sync::Mutex::default(),
            cluster_secret: config.security.cluster_secret.clone(),
            tasks_runtime: tasks_runtime.handle().clone(),
            health,
            id: id_sender,
        };
        executor.tasks_runtime = Some(tasks_runtime);
        let control = membership.join(&id, None).await?;
        executor.control = Some(tokio::spawn(async move {
            let stopped = membership.serve(control, drain_receiver).await;
            if let Err(reason) = &stopped {
                error!(%reason, "executor stopped");
            }
            stopped
        }));
        Ok(executor)
    }

    /// This executor's id in the cluster now (a new one after it had to
    /// register again).
    pub fn id(&self) -> ExecutorId {
        self.id.borrow().clone()
    }

    /// `http://host:port` of its Flight service.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `http://host:port` (`https://` with TLS) of its `/metrics`, if
    /// `--metrics-bind` was given.
    pub fn metrics_url(&self) -> Option<String> {
        let scheme = if self.endpoint.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        self.metrics
            .as_ref()
            .map(|(addr, _)| format!("{scheme}://{addr}"))
    }

    /// Its work directory (spill and shuffle files).
    pub fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    /// Asks the executor to drain: no new tasks; it stops (and [`wait`]
    /// returns) once its running tasks finished and no job needs its stored
    /// output, or after the drain timeout.
    ///
    /// [`wait`]: Executor::wait
    pub fn drain(&self) {
        self.drain.send_replace(true);
    }

    /// Serves until drained, until its scheduler cannot be reached again,
    /// or until the Flight server fails.
    pub async fn wait(&mut self) -> Result<Stopped, ExecutorError> {
        let (Some(control), Some(flight)) = (self.control.as_mut(), self.flight.as_mut()) else {
            return Err(ExecutorError::SchedulerLost(
                "executor was not running".into(),
            ));
        };
        tokio::select! {
            stopped = control => {
                self.control = None;
                stopped.unwrap_or_else(|e| Err(ExecutorError::SchedulerLost(e.to_string())))
            }
            result = flight => {
                self.flight = None;
                Err(match result {
                    Ok(Ok(())) => ExecutorError::SchedulerLost("the Flight server stopped".into()),
                    Ok(Err(e)) => ExecutorError::Transport(e),
                    Err(e) => ExecutorError::SchedulerLost(e.to_string()),
                })
            }
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(control) = self.control.take() {
            control.abort();
        }
        if let Some(flight) = self.flight.take() {
            flight.abort();
        }
        if let Some((_, metrics)) = self.metrics.take() {
            metrics.abort();
        }
        if let Some(runtime) = self.tasks_runtime.take() {
            // Dropping a runtime may block; this may run inside another one.
            runtime.shutdown_background();
        }
    }
}

/// A transport error with its causes, which tonic keeps in `source()`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        message = format!("{message}: {inner}");
        source = inner.source();
    }
    message
}

/// How one registration attempt failed.
enum Attempt {
    /// The scheduler is not there (yet): try again.
    Retry(String),
    /// The scheduler answered no: give up.
    Fatal(ExecutorError),
}

/// Opens the control stream to the scheduler and sends `register`,
/// retrying with backoff (100 ms doubling to 5 s) for up to `patience`
/// while the scheduler is not reachable: a scheduler that starts after its
/// executors is found once it listens. A refusal is final.
async fn register_with_patience(
    link: &Link,
    url: &str,
    patience: Option<Duration>,
    heartbeat_interval: Duration,
    register: v1::ExecutorMessage,
) -> Result<Control, ExecutorError> {
    // HTTP/2 pings find a cut link even when nothing else is sent.
    let endpoint = link
        .endpoint(url)
        .map_err(ExecutorError::Config)?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(heartbeat_interval.max(Duration::from_secs(1)) * 2)
        .keep_alive_timeout(heartbeat_interval.max(Duration::from_secs(1)) * 5)
        .keep_alive_while_idle(true);
    let deadline = patience.map(|p| tokio::time::Instant::now() + p);
    // Registering again, a scheduler that restarted waits for this
    // executor before placing tasks: keep the gaps short.
    let max_backoff = if patience.is_some() {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(1)
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| Attempt::Retry(error_chain(&e)))?;
            let mut client = SchedulerServiceClient::with_interceptor(channel, link.interceptor())
                .max_decoding_message_size(limits::MAX_PLAN_MESSAGE_BYTES)
                .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
            let (outbound, outbound_rx) = mpsc::unbounded_channel();
            let _ = outbound.send(register.clone());
            let inbound = client
                .executor_control(UnboundedReceiverStream::new(outbound_rx))
                .await
                .map_err(|status| {
                    // A scheduler's own answer is final; anything else (a
                    // connection refused, reset or cut short) may pass.
                    let answered = matches!(
                        status.code(),
                        tonic::Code::Unauthenticated
                            | tonic::Code::PermissionDenied
                            | tonic::Code::InvalidArgument
                            | tonic::Code::AlreadyExists
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::Unimplemented
                    );
                    if !answered {
                        Attempt::Retry(status.message().to_string())
                    } else {
                        Attempt::Fatal(ExecutorError::Refused {
                            url: url.to_string(),
                            message: status.message().to_string(),
                        })
                    }
                })?
                .into_inner();
            Ok((outbound, inbound))
        }
        .await;
        match attempt {
            Ok(opened) => return Ok(opened),
            Err(Attempt::Retry(message))
                if deadline.is_none_or(|d| tokio::time::Instant::now() + backoff < d) =>
            {
                info!(%url, error = %message, retry_in = ?backoff, "scheduler not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
            Err(Attempt::Retry(message)) => {
                return Err(ExecutorError::SchedulerUnreachable {
                    url: url.to_string(),
                    message,
                });
            }
            Err(Attempt::Fatal(error)) => return Err(error),
        }
    }
}

/// The host other executors and clients reach this one by: `advertise` if
/// given; else the bind address, unless it is a wildcard (`0.0.0.0`,
/// `::`), which nobody can connect to: then the local address this machine
/// uses to reach the scheduler.
fn advertised_host(
    bind: SocketAddr,
    advertise: Option<&str>,
    scheduler_url: &str,
) -> Result<String, ExecutorError> {
    if let Some(host) = advertise {
        return Ok(host.to_string());
    }
    let ip = if bind.ip().is_unspecified() {
        route_to(scheduler_url).ok_or_else(|| {
            ExecutorError::Config(format!(
                "bound to {bind}, and no route to the scheduler at {scheduler_url} tells which \
                 address to advertise; pass --advertise-host"
            ))
        })?
    } else {
        bind.ip()
    };
    Ok(match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    })
}

/// The local address packets to `url`'s host leave from (a UDP socket's
/// connect only picks the route; nothing is sent).
fn route_to(url: &str) -> Option<IpAddr> {
    let authority = url.split_once("://")?.1.split('/').next()?;
    let target = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()?
        .next()?;
    let unspecified: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(unspecified).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduler_older_than_one_served_is_refused_and_a_restarted_one_may_take_over() {
        let mut epochs = Epochs::default();
        assert_eq!(epochs.admit(5, false), Ok(Admission::MayTakeOver));
        epochs.served(5);
        // The store's next scheduler takes over what this executor kept.
        assert_eq!(epochs.admit(6, true), Ok(Admission::MayTakeOver));
        epochs.served(6);
        // The scheduler it already served declared it lost: it re-ran that work.
        assert_eq!(epochs.admit(6, true), Ok(Admission::DropsOutputs));
        // One fenced off by epoch 6 is stale, however often it asks.
        assert_eq!(epochs.admit(5, true), Err(6));
        assert_eq!(epochs.admit(5, false), Err(6));
        // A scheduler without a store is always served, and knows nothing.
        assert_eq!(epochs.admit(0, true), Ok(Admission::DropsOutputs));
        epochs.served(0);
        assert_eq!(epochs.admit(5, true), Err(6), "the highest is remembered");
    }

    #[test]
    fn a_wildcard_bind_advertises_the_address_that_reaches_the_scheduler() {
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(
            advertised_host(any, None, "https://127.0.0.1:50050").unwrap(),
            "127.0.0.1"
        );
        let own: SocketAddr = "10.9.0.3:7000".parse().unwrap();
        assert_eq!(
            advertised_host(own, None, "http://x:1").unwrap(),
            "10.9.0.3"
        );
        assert_eq!(
            advertised_host(any, Some("exec-1.internal"), "http://x:1").unwrap(),
            "exec-1.internal"
        );
        let v6: SocketAddr = "[::]:7000".parse().unwrap();
        assert_eq!(
            advertised_host(v6, None, "http://[::1]:50050").unwrap(),
            "[::1]"
        );
    }
}
