//! A rank's side of the control plane: connect to rank 0 with backoff, join, then keep a
//! session with heartbeats.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use super::auth::AttachToken;
use super::proto::agent_message::Kind;
use super::proto::coordinator_client::CoordinatorClient;
use super::proto::{AgentMessage, CoordinatorMessage, Heartbeat, JoinReply, JoinRequest};
use super::ControlError;
use crate::bootstrap::{retry, Backoff, JobToken};

type Client = CoordinatorClient<InterceptedService<Channel, AttachToken>>;

/// A connection to rank 0's coordinator.
#[derive(Debug, Clone)]
pub struct Agent {
    client: Client,
    rank: u32,
}

impl Agent {
    /// Connects to `url` (`http://host:port`), retrying with `backoff` while rank 0 is
    /// not up yet.
    pub async fn connect(
        url: &str,
        token: &JobToken,
        rank: u32,
        backoff: Backoff,
    ) -> Result<Self, ControlError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| ControlError::Address {
                url: url.to_owned(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let what = format!("rank 0 at {url}");
        let channel = retry(backoff, &what, || endpoint.connect()).await?;
        let client = CoordinatorClient::with_interceptor(channel, AttachToken::new(token));
        Ok(Self { client, rank })
    }

    /// Joins; returns once every rank has joined and rank 0 has the plan.
    pub async fn join(&mut self, request: JoinRequest) -> Result<JoinReply, ControlError> {
        self.client
            .join(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| ControlError::Refused {
                call: "join",
                status,
            })
    }

    /// Opens the session; a task owned by the returned [`Session`] sends a heartbeat
    /// every `heartbeat`.
    pub async fn session(&mut self, heartbeat: Duration) -> Result<Session, ControlError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rank = self.rank;
        // The coordinator reads the first message to learn the rank before answering.
        let hello = AgentMessage {
            rank,
            kind: Some(Kind::Heartbeat(Heartbeat { seq: 0 })),
        };
        tx.send(hello).map_err(|_| ControlError::Closed)?;
        let commands = self
            .client
            .session(UnboundedReceiverStream::new(rx))
            .await
            .map_err(|status| ControlError::Refused {
                call: "session",
                status,
            })?
            .into_inner();
        let beat = tx.clone();
        let heartbeats = tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            tick.tick().await;
            for seq in 1.. {
                tick.tick().await;
                let kind = Some(Kind::Heartbeat(Heartbeat { seq }));
                if beat.send(AgentMessage { rank, kind }).is_err() {
                    break;
                }
            }
        });
        Ok(Session {
            tx,
            commands,
            rank,
            heartbeats,
        })
    }
}

/// An open session: send events, receive commands. Dropping it stops the heartbeats
/// and closes the stream.
#[derive(Debug)]
pub struct Session {
    tx: mpsc::UnboundedSender<AgentMessage>,
    commands: Streaming<CoordinatorMessage>,
    rank: u32,
    heartbeats: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

impl Session {
    /// Sends an event (instance up, down, exited, load) to rank 0.
    pub fn send(&self, event: Kind) -> Result<(), ControlError> {
        let message = AgentMessage {
            rank: self.rank,
            kind: Some(event),
        };
        self.tx.send(message).map_err(|_| ControlError::Closed)
    }

    /// The next command; `None` when rank 0 closed the session.
    pub async fn next_command(&mut self) -> Result<Option<CoordinatorMessage>, ControlError> {
        self.commands
            .message()
            .await
            .map_err(|status| ControlError::Refused {
                call: "session",
                status,
            })
    }

    /// Stops sending heartbeats while keeping the stream open: how a hung rank looks to
    /// rank 0 (for tests of loss detection).
    pub fn stop_heartbeats(&self) {
        self.heartbeats.abort();
    }
}
