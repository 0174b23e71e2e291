//! The control plane: gRPC (tonic) between rank 0's [`coordinator`] and the [`agent`]
//! on every rank, from `rank/proto/control.proto`.
//!
//! A rank joins with its node's topology and gets the plan once every rank has joined;
//! then it keeps a session: heartbeats and instance events up, commands (start, drain,
//! stop) down. Every call carries the job token ([`auth`]); a rank whose heartbeats stop
//! is reported lost. Where rank 0 listens is chosen in [`listen`].

pub mod agent;
pub mod auth;
pub mod coordinator;
pub mod listen;

/// The generated messages, client and server.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod proto {
    tonic::include_proto!("cohort.control.v1");
}

pub use agent::{Agent, Session};
pub use coordinator::{Coordinator, CoordinatorConfig, CoordinatorEvent, JoinedRank, LostReason};

/// Control-plane failures, on either side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("`{url}` is not a valid control-plane address")]
    Address {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    Connect(#[from] crate::bootstrap::RetryError<tonic::transport::Error>),
    #[error("rank 0 refused `{call}`: {}", status.message())]
    Refused {
        call: &'static str,
        #[source]
        status: tonic::Status,
    },
    #[error("cannot listen on `{addr}`")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the control-plane session is closed")]
    Closed,
}
