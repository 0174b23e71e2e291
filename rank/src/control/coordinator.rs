//! Rank 0's side of the control plane.
//!
//! [`Coordinator::serve`] runs the gRPC server and a heartbeat watchdog, both owned by
//! the returned handle (dropping it stops them). Joins wait until every rank has joined
//! and the launcher has called [`Coordinator::publish_plan`]; what the ranks report
//! arrives as [`CoordinatorEvent`]s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::auth::CheckToken;
use super::proto::agent_message::Kind;
use super::proto::coordinator_server::{Coordinator as CoordinatorRpc, CoordinatorServer};
use super::proto::{AgentMessage, CoordinatorMessage, JoinReply, JoinRequest};
use super::ControlError;
use crate::bootstrap::JobToken;

/// Settings of the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Ranks expected to join.
    pub size: u32,
    pub token: JobToken,
    /// How often agents send heartbeats. Default 1 s.
    pub heartbeat_interval: Duration,
    /// Silence after which a rank is lost. Default 5 s: five missed heartbeats, long
    /// enough for a GC pause or a busy node, short enough to fail a batch job fast.
    pub heartbeat_timeout: Duration,
    /// This cohort's version; agents of another version are refused.
    pub version: String,
}

impl CoordinatorConfig {
    /// Defaults for the heartbeat; `version` is this crate's.
    pub fn new(size: u32, token: JobToken) -> Self {
        Self {
            size,
            token,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// A rank that joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedRank {
    pub rank: u32,
    pub hostname: String,
    pub topology_json: String,
}

/// Why a rank is considered gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// No heartbeat for this long (more than the configured timeout).
    Silent(Duration),
    /// Its session stream ended or failed (the agent exited or its node dropped).
    Disconnected(Option<String>),
}

/// What the coordinator reports.
#[derive(Debug, Clone, PartialEq)]
pub enum CoordinatorEvent {
    Joined {
        rank: u32,
        hostname: String,
    },
    /// Every rank has joined: plan, then [`Coordinator::publish_plan`].
    AllJoined(Vec<JoinedRank>),
    /// An event a rank sent (instance up, down, exited, load).
    Agent {
        rank: u32,
        event: Kind,
    },
    RankLost {
        rank: u32,
        reason: LostReason,
    },
}

struct SessionState {
    commands: mpsc::UnboundedSender<CoordinatorMessage>,
    last_seen: Instant,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SessionState {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Default)]
struct State {
    joined: BTreeMap<u32, JoinedRank>,
    sessions: BTreeMap<u32, SessionState>,
}

struct Shared {
    config: CoordinatorConfig,
    state: Mutex<State>,
    plan: watch::Sender<Option<Vec<u8>>>,
    events: mpsc::UnboundedSender<CoordinatorEvent>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: CoordinatorEvent) {
        let _ = self.events.send(event);
    }

    /// Forgets a session and reports the rank lost, unless it was already.
    fn lose(&self, rank: u32, reason: LostReason) {
        if self.state().sessions.remove(&rank).is_some() {
            self.emit(CoordinatorEvent::RankLost { rank, reason });
        }
    }
}

/// The coordinator: a handle owning the server and the watchdog.
pub struct Coordinator {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    watchdog: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.server.abort();
        self.watchdog.abort();
    }
}

impl Coordinator {
    /// Binds `addr` (port 0 picks one) and serves; events arrive on the receiver.
    pub async fn serve(
        addr: SocketAddr,
        config: CoordinatorConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<CoordinatorEvent>), ControlError> {
        let listen_err = |source| ControlError::Listen { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(listen_err)?;
        let local_addr = listener.local_addr().map_err(listen_err)?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            plan: watch::Sender::new(None),
            events,
            config,
        });
        let service = CoordinatorServer::with_interceptor(
            Service(shared.clone()),
            CheckToken(shared.config.token.clone()),
        );
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = shutdown_rx.await;
                }),
        );
        let watchdog = tokio::spawn(watchdog(shared.clone()));
        let coordinator = Self {
            shared,
            local_addr,
            shutdown: Some(shutdown),
            server,
            watchdog,
        };
        Ok((coordinator, events_rx))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Answers every join, waiting and future, with the plan.
    pub fn publish_plan(&self, plan_json: Vec<u8>) {
        self.shared.plan.send_replace(Some(plan_json));
    }

    /// Sends a command to one rank; `Closed` if it has no session.
    pub fn send(&self, rank: u32, command: CoordinatorMessage) -> Result<(), ControlError> {
        let state = self.shared.state();
        let session = state.sessions.get(&rank).ok_or(ControlError::Closed)?;
        session
            .commands
            .send(command)
            .map_err(|_| ControlError::Closed)
    }

    /// Sends a command to every rank with a session; returns the ranks reached.
    pub fn broadcast(&self, command: &CoordinatorMessage) -> Vec<u32> {
        let state = self.shared.state();
        state
            .sessions
            .iter()
            .filter(|(_, s)| s.commands.send(command.clone()).is_ok())
            .map(|(rank, _)| *rank)
            .collect()
    }

    /// Stops serving, closing every session.
    pub async fn shutdown(mut self) {
        self.shared.state().sessions.clear();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.server).await;
    }
}

/// Declares silent ranks lost.
async fn watchdog(shared: Arc<Shared>) {
    let timeout = shared.config.heartbeat_timeout;
    let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let silent: Vec<(u32, Duration)> = shared
            .state()
            .sessions
            .iter()
            .map(|(rank, s)| (*rank, s.last_seen.elapsed()))
            .filter(|(_, silent)| *silent > timeout)
            .collect();
        for (rank, silent) in silent {
            shared.lose(rank, LostReason::Silent(silent));
        }
    }
}

struct Service(Arc<Shared>);

type CommandStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl CoordinatorRpc for Service {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let shared = &self.0;
        let req = request.into_inner();
        let config = &shared.config;
        if req.size != config.size || req.rank >= config.size {
            return Err(Status::invalid_argument(format!(
                "rank {} of {} joined a job of {} ranks; were ranks started with different `--local`/step sizes?",
                req.rank, req.size, config.size
            )));
        }
        if req.version != config.version {
            return Err(Status::failed_precondition(format!(
                "rank {} runs cohort {}, rank 0 runs {}; use the same binary on every node",
                req.rank, req.version, config.version
            )));
        }
        let joined = JoinedRank {
            rank: req.rank,
            hostname: req.hostname.clone(),
            topology_json: req.topology_json,
        };
        let all = {
            let mut state = shared.state();
            state.joined.insert(req.rank, joined);
            (state.joined.len() == config.size as usize)
                .then(|| state.joined.values().cloned().collect::<Vec<_>>())
        };
        shared.emit(CoordinatorEvent::Joined {
            rank: req.rank,
            hostname: req.hostname,
        });
        if let Some(all) = all {
            shared.emit(CoordinatorEvent::AllJoined(all));
        }
        let mut plan = shared.plan.subscribe();
        let plan = plan
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Status::unavailable("rank 0 is shutting down"))?
            .clone()
            .unwrap_or_default();
        let interval = config.heartbeat_interval.as_millis();
        Ok(Response::new(JoinReply {
            plan_json: plan,
            heartbeat_interval_ms: u32::try_from(interval).unwrap_or(u32::MAX),
        }))
    }

    type SessionStream = CommandStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let shared = self.0.clone();
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("the session closed before its first message")
        })?;
        let rank = first.rank;
        if !shared.state().joined.contains_key(&rank) {
            return Err(Status::failed_precondition(format!(
                "rank {rank} opened a session without joining first"
            )));
        }
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_session(shared.clone(), rank, inbound));
        let session = SessionState {
            commands,
            last_seen: Instant::now(),
            reader,
        };
        // A reconnecting rank replaces its old session (whose reader is aborted).
        shared.state().sessions.insert(rank, session);
        if let Some(kind) = first.kind.filter(|k| !matches!(k, Kind::Heartbeat(_))) {
            shared.emit(CoordinatorEvent::Agent { rank, event: kind });
        }
        let stream = UnboundedReceiverStream::new(commands_rx).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Reads one rank's session until it ends: heartbeats refresh it, events are relayed.
async fn read_session(shared: Arc<Shared>, rank: u32, mut inbound: Streaming<AgentMessage>) {
    let end = loop {
        match inbound.message().await {
            Ok(Some(message)) => {
                if message.rank != rank {
                    break Some(format!(
                        "the session of rank {rank} carried a message from rank {}",
                        message.rank
                    ));
                }
                if let Some(session) = shared.state().sessions.get_mut(&rank) {
                    session.last_seen = Instant::now();
                }
                match message.kind {
                    Some(Kind::Heartbeat(_)) | None => {}
                    Some(event) => shared.emit(CoordinatorEvent::Agent { rank, event }),
                }
            }
            Ok(None) => break None,
            Err(status) => break Some(status.message().to_owned()),
        }
    };
    // Dropping the session aborts this task, which is finishing anyway.
    shared.lose(rank, LostReason::Disconnected(end));
}
