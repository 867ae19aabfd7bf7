//! Starting and stopping a scheduler: the gRPC server plus the loop that
//! expires silent executors and unclaimed results.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::task::JoinSet;
use tonic::transport::server::TcpIncoming;
use tracing::info;
use volley_dataflow::JobId;
use volley_proto::limits;
use volley_proto::v1::scheduler_service_server::SchedulerServiceServer;

use crate::config::SchedulerConfig;
use crate::error::SchedulerError;
use crate::event_log::EventLog;
use crate::output_target::Commit;
use crate::planning_session::PlanningSessions;
use crate::restore::{restore, restore_logged};
use crate::service::{SchedulerGrpc, Shared};
use crate::sqlite_store::SqliteStore;
use crate::state::SchedulerState;
use crate::state_store::{Journal, StateStore};

/// A running scheduler. Dropping it stops it.
#[derive(Debug)]
pub struct SchedulerServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    reaper: JoinHandle<()>,
    /// The web UI and `/metrics` (`--http-bind`): where, and its task.
    http: Option<(SocketAddr, JoinHandle<()>)>,
    shared: Arc<Shared>,
}

impl SchedulerServer {
    /// Binds `config.bind` and starts serving.
    pub async fn start(config: SchedulerConfig) -> Result<Self, SchedulerError> {
        // The store first: a damaged one stops the start before anything
        // listens.
        let stored = match &config.state_dir {
            Some(dir) => {
                let dir = dir.clone();
                let fresh = config.fresh_state;
                let opened = tokio::task::spawn_blocking(move || {
                    let mut store = SqliteStore::open(&dir, fresh)?;
                    let epoch = store.claim()?;
                    let loaded = store.load()?;
                    Ok::<_, SchedulerError>((store, epoch, loaded))
                })
                .await
                .map_err(|e| SchedulerError::Io(std::io::Error::other(e)))??;
                Some(opened)
            }
            None => {
                info!(
                    "no --state-dir: jobs live in memory only and are lost if the scheduler stops"
                );
                None
            }
        };
        let incoming = TcpIncoming::bind(config.bind)?.with_nodelay(Some(true));
        let addr = incoming.local_addr()?;
        let mut state = SchedulerState::new(&config);
        let event_log = match &config.event_log {
            Some(dir) => {
                let log = EventLog::open(dir)?;
                state.set_event_log(log.clone());
                Some(log)
            }
            None => None,
        };
        let (journal, loaded) = match stored {
            Some((store, epoch, loaded)) => {
                let journal = Journal::start(Box::new(store), epoch)?;
                state.set_journal(journal.clone(), epoch);
                info!(
                    epoch = epoch.0,
                    jobs = loaded.jobs.len(),
                    "state store opened"
                );
                (Some(journal), Some(loaded))
            }
            None => (None, None),
        };
        let planning = Arc::new(PlanningSessions::new(volley_dataflow::planning_runtime(
            config.security.paths.clone(),
        )?));
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            config: config.clone(),
            streams: Mutex::new(JoinSet::new()),
            scripts: Mutex::new(JoinSet::new()),
            executor_joined: tokio::sync::Notify::new(),
            waiting_for_executors: tokio::sync::watch::Sender::new(0),
            journal,
            planning,
        });
        if let Some(loaded) = loaded {
            restore(&shared, loaded).await;
        }
        if let Some(log) = &event_log {
            restore_logged(&shared, log).await;
        }
        // Object-store outputs are committed outside the state lock: the
        // state machine queues them, this commits each and reports back.
        let (commits, mut commit_queue) = tokio::sync::mpsc::unbounded_channel::<(JobId, Commit)>();
        shared.state().set_committer(commits);
        {
            let committer = Arc::clone(&shared);
            shared
                .scripts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .spawn(async move {
                    while let Some((job_id, commit)) = commit_queue.recv().await {
                        let shared = Arc::clone(&committer);
                        committer
                            .scripts
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .spawn(async move {
                                let result = commit.run().await;
                                let committed = result.is_ok();
                                if !shared.state().output_committed(&job_id, result) || !committed {
                                    // Cancelled while committing, or a commit
                                    // failed midway: nothing of it stays.
                                    commit.abandon();
                                }
                            });
                    }
                });
        }
        let service = SchedulerServiceServer::new(SchedulerGrpc {
            shared: Arc::clone(&shared),
        })
        .max_decoding_message_size(limits::MAX_PLAN_MESSAGE_BYTES)
        .max_encoding_message_size(limits::MAX_PLAN_MESSAGE_BYTES);
        let (shutdown, signal) = oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &config.security.tls {
            builder = builder.tls_config(tls.config())?;
        }
        // The standard gRPC health service, for probes: serving while the
        // scheduler runs. Open to any user or executor of the cluster.
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let health_service = tonic::service::interceptor::InterceptedService::new(
            health_service,
            config.security.authenticator.require_known(),
        );
        let server = tokio::spawn(
            builder
                .add_service(service)
                .add_service(health_service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = signal.await;
                }),
        );
        let reaper = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                // Check often enough that a lost executor is noticed within
                // a small fraction of its timeout.
                let period = (shared.config.executor_timeout / 10).max(Duration::from_millis(100));
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    let mut state = shared.state();
                    state.expire_executors(shared.config.executor_timeout);
                    state.expire_results(shared.config.result_ttl);
                }
            })
        };
        let http = match config.http_bind {
            Some(bind) => Some(crate::web_ui::start(Arc::clone(&shared), bind)?),
            None => None,
        };
        info!(%addr, "scheduler listening");
        Ok(Self {
            addr,
            shutdown: Some(shutdown),
            server: Some(server),
            reaper,
            http,
            shared,
        })
    }

    /// The address the scheduler listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` (`https://` with TLS), what clients and executors
    /// connect to.
    pub fn url(&self) -> String {
        let scheme = volley_security::tls::scheme(self.shared.config.security.tls.is_some());
        format!("{scheme}://{}", self.addr)
    }

    /// `http://host:port` (`https://` with TLS) of the web UI and
    /// `/metrics`, if `--http-bind` was given.
    pub fn http_url(&self) -> Option<String> {
        let scheme = volley_security::tls::scheme(self.shared.config.security.tls.is_some());
        self.http
            .as_ref()
            .map(|(addr, _)| format!("{scheme}://{addr}"))
    }

    /// Waits until `n` submissions are waiting for a first executor (for
    /// tests of start-up order).
    pub async fn submissions_waiting_for_executors(&self, n: usize) {
        let mut waiting = self.shared.waiting_for_executors.subscribe();
        let _ = waiting.wait_for(|w| *w >= n).await;
    }

    /// How many executors are registered now.
    pub fn executor_count(&self) -> usize {
        self.shared.state().executors_info().len()
    }

    /// Serves until the server fails or is stopped.
    pub async fn wait(mut self) -> Result<(), SchedulerError> {
        match self.server.take() {
            Some(server) => match server.await {
                Ok(result) => Ok(result?),
                Err(e) => Err(SchedulerError::Io(std::io::Error::other(e))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for SchedulerServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.reaper.abort();
        if let Some((_, http)) = &self.http {
            http.abort();
        }
        for set in [&self.shared.streams, &self.shared.scripts] {
            set.lock().unwrap_or_else(|p| p.into_inner()).abort_all();
        }
        // Every event so far reaches the disk before the process may end.
        let log = self.shared.state().event_log().cloned();
        if let Some(log) = log {
            log.flush();
        }
    }
}
