//! The KV-event subscriber: one task per engine endpoint, from ZMQ frames to the
//! indexer actor.
//!
//! Each task connects a SUB socket to the engine's publisher, decodes and hashes every
//! message (the per-token cost is paid here, in parallel across engines) and sends the
//! batches to the [`IndexerHandle`]. It keeps the engine's sequence position and the
//! hash of the last message applied:
//!
//! * **Start and reconnect**: ask the replay endpoint from the last applied sequence
//!   number. The engine must still hold that message, byte for byte: then the rest of
//!   the answer is what was missed. Anything else (an engine restarted, whose numbers
//!   started again at 0, or a buffer that has moved past us) resets the worker and
//!   applies what the engine still buffers from 0. With no known position, the
//!   buffer from 0 is applied.
//! * **A gap** (a live number above the next expected): the same resync.
//! * **Silence**: after `idle_probe` without messages, the same resync, which also
//!   probes the engine: it catches a lost last message, a dead connection (the ZMQ crate
//!   reports no SUB disconnection) and a restart; if the probe fails or finds missed
//!   messages, the SUB socket is reconnected.
//! * **Without a replay endpoint**, a gap resets the worker (missing blocks only cost
//!   routing quality, stale ones would misroute); after a reconnect the first live
//!   number is checked the same way, and an idle SUB socket is simply reconnected.
//! * **A live number at or below the last one received live** means the publisher
//!   started again (PUB/SUB neither reorders nor repeats): the worker is reset.
//!
//! Reconnects back off exponentially, bounded and jittered ([`BackoffConfig`]).

mod backoff;
mod replay;

pub use backoff::BackoffConfig;
pub use replay::ReplayError;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use xxhash_rust::xxh3::xxh3_64;
use zeromq::{Socket, SocketRecv, SubSocket};

use crate::decode::{decode_message, decode_payload, Dialect};
use crate::event::{to_ops, EventBatch};
use crate::index::WorkerId;
use crate::service::{IndexerGone, IndexerHandle};
use backoff::Backoff;

/// Settings of one engine's subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberConfig {
    /// The worker the events are about.
    pub worker: WorkerId,
    /// The engine's publisher, e.g. `tcp://10.0.0.5:5557` (vLLM binds `tcp://*:5557`
    /// plus the data-parallel rank).
    pub endpoint: String,
    /// The engine's replay ROUTER, e.g. `tcp://10.0.0.5:5558`; `None` if it has none.
    pub replay_endpoint: Option<String>,
    /// Whose wire format.
    pub dialect: Dialect,
    /// Tokens per block; must equal the engine's.
    pub block_size: u32,
    /// Topic prefix to subscribe to. Default: `""` (every topic).
    pub topic: String,
    /// Longest wait for a TCP connection and ZMQ handshake. Default: 2 s.
    pub connect_timeout: Duration,
    /// Longest wait for a complete replay answer. Default: 5 s.
    pub replay_timeout: Duration,
    /// Silence after which the engine is probed (see the module docs). Default: 5 s.
    pub idle_probe: Duration,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
}

impl SubscriberConfig {
    /// Settings with the defaults above.
    pub fn new(
        worker: WorkerId,
        endpoint: impl Into<String>,
        replay_endpoint: Option<String>,
        dialect: Dialect,
        block_size: u32,
    ) -> Self {
        SubscriberConfig {
            worker,
            endpoint: endpoint.into(),
            replay_endpoint,
            dialect,
            block_size,
            topic: String::new(),
            connect_timeout: Duration::from_secs(2),
            replay_timeout: Duration::from_secs(5),
            idle_probe: Duration::from_secs(5),
            backoff: BackoffConfig::default(),
        }
    }
}

/// What a subscriber has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Whether the SUB socket is connected now.
    pub connected: bool,
    /// Successful connections.
    pub connects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Messages received live.
    pub live: u64,
    /// Messages applied to the index (live or replayed).
    pub applied: u64,
    /// Live messages already applied from a replay, skipped.
    pub duplicates: u64,
    /// Live sequence gaps detected.
    pub gaps: u64,
    /// Replay requests answered.
    pub replays: u64,
    /// Messages applied from replays.
    pub replayed: u64,
    /// Times the worker's blocks were forgotten (restart, or a gap no replay covered).
    pub resets: u64,
    /// Messages that could not be decoded or hashed (each also resets the worker).
    pub bad_messages: u64,
    /// The next sequence number expected; `None` before the first message.
    pub next_seq: Option<u64>,
    /// The last error, with its causes.
    pub last_error: Option<String>,
}

/// A cloneable view of a running subscriber: its stats, and a way to stop it.
#[derive(Debug, Clone)]
pub struct SubscriberHandle {
    stats: watch::Receiver<SubscriberStats>,
    cancel: CancellationToken,
}

impl SubscriberHandle {
    /// The current stats.
    pub fn stats(&self) -> SubscriberStats {
        self.stats.borrow().clone()
    }

    /// Waits until the stats satisfy `f`; `None` if the subscriber ended first.
    pub async fn wait_for(
        &self,
        f: impl FnMut(&SubscriberStats) -> bool,
    ) -> Option<SubscriberStats> {
        let mut rx = self.stats.clone();
        let got = rx.wait_for(f).await.ok()?.clone();
        Some(got)
    }

    /// Asks the subscriber to stop (the owner's [`Subscriber::stop`] waits for it).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// One engine's subscriber task, owned: [`stop`](Self::stop) ends and awaits it;
/// dropping it cancels it.
#[derive(Debug)]
pub struct Subscriber {
    handle: SubscriberHandle,
    task: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// Starts subscribing on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(config: SubscriberConfig, indexer: IndexerHandle) -> Self {
        let (tx, rx) = watch::channel(SubscriberStats::default());
        let cancel = CancellationToken::new();
        let seed = config.worker.0;
        let task = Task {
            backoff: Backoff::new(config.backoff, seed),
            config,
            indexer,
            stats: tx,
            last: None,
            last_live: None,
        };
        let join = tokio::spawn(task.run(cancel.clone()));
        Subscriber {
            handle: SubscriberHandle { stats: rx, cancel },
            task: Some(join),
        }
    }

    /// A cloneable view of this subscriber.
    pub fn handle(&self) -> SubscriberHandle {
        self.handle.clone()
    }

    /// Stops the task and waits for it to end; returns the final stats.
    pub async fn stop(mut self) -> SubscriberStats {
        self.handle.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.handle.stats()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.handle.cancel();
    }
}

/// Why a connection ended.
enum Exit {
    Cancelled,
    /// The indexer is gone: nothing left to feed.
    IndexerGone,
    /// Reconnect (after a backoff delay if the connection brought nothing).
    Reconnect {
        productive: bool,
    },
}

impl From<IndexerGone> for Exit {
    fn from(_: IndexerGone) -> Self {
        Exit::IndexerGone
    }
}

/// The position in the engine's stream: the last message applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    seq: u64,
    /// XXH3 of its payload: a restarted engine reuses numbers, not payloads.
    payload_hash: u64,
}

struct Task {
    config: SubscriberConfig,
    indexer: IndexerHandle,
    stats: watch::Sender<SubscriberStats>,
    backoff: Backoff,
    last: Option<Position>,
    /// The last sequence number received live: a live number at or below it means the
    /// publisher started again (PUB/SUB delivers in order, without duplicates).
    last_live: Option<u64>,
}

/// What a resync found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resync {
    /// Nothing was missed.
    Current,
    /// Missed messages were applied, or the worker was reset.
    Repaired,
}

impl Task {
    async fn run(mut self, cancel: CancellationToken) {
        loop {
            let exit = match cancel.run_until_cancelled(self.connection(&cancel)).await {
                None => Exit::Cancelled,
                Some(exit) => exit,
            };
            self.stats.send_modify(|s| s.connected = false);
            match exit {
                Exit::Cancelled | Exit::IndexerGone => return,
                Exit::Reconnect { productive } => {
                    if productive {
                        self.backoff.reset();
                    }
                    let delay = self.backoff.next_delay();
                    if cancel
                        .run_until_cancelled(tokio::time::sleep(delay))
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
        }
    }

    /// One connection: connect, resync, receive until something goes wrong.
    async fn connection(&mut self, cancel: &CancellationToken) -> Exit {
        let mut sub = SubSocket::new();
        let connected = async {
            sub.subscribe(&self.config.topic).await?;
            sub.connect(&self.config.endpoint).await
        };
        match tokio::time::timeout(self.config.connect_timeout, connected).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let msg = format!("connecting to `{}`: {}", self.config.endpoint, chain(&e));
                self.stats.send_modify(|s| {
                    s.connect_failures += 1;
                    s.last_error = Some(msg);
                });
                return Exit::Reconnect { productive: false };
            }
            Err(_) => {
                let msg = format!(
                    "connecting to `{}`: no ZMQ handshake within {:?}",
                    self.config.endpoint, self.config.connect_timeout
                );
                self.stats.send_modify(|s| {
                    s.connect_failures += 1;
                    s.last_error = Some(msg);
                });
                return Exit::Reconnect { productive: false };
            }
        }
        self.stats.send_modify(|s| {
            s.connected = true;
            s.connects += 1;
        });
        // Catch up with what was published while we were away. Without a replay
        // endpoint, the first live number tells whether anything was missed.
        if self.config.replay_endpoint.is_some() {
            match self.resync().await {
                Ok(_) => {}
                Err(ResyncError::Indexer) => return Exit::IndexerGone,
                Err(ResyncError::Replay) => return Exit::Reconnect { productive: false },
            }
        }
        let mut productive = false;
        let mut deadline = Instant::now() + self.config.idle_probe;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Exit::Cancelled,
                msg = sub.recv() => {
                    let msg = match msg {
                        Ok(m) => m,
                        Err(e) => {
                            let msg = format!("receiving from `{}`: {}", self.config.endpoint, chain(&e));
                            self.stats.send_modify(|s| s.last_error = Some(msg));
                            return Exit::Reconnect { productive };
                        }
                    };
                    productive = true;
                    deadline = Instant::now() + self.config.idle_probe;
                    let parts = msg.into_vec();
                    if let Err(e) = self.on_live(&parts).await {
                        return e;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    deadline = Instant::now() + self.config.idle_probe;
                    match self.probe().await {
                        Ok(Resync::Current) => productive = true,
                        // Something was missed or the engine restarted: this SUB
                        // connection is not to be trusted.
                        Ok(Resync::Repaired) => return Exit::Reconnect { productive: true },
                        Err(ResyncError::Indexer) => return Exit::IndexerGone,
                        Err(ResyncError::Replay) => return Exit::Reconnect { productive },
                    }
                }
            }
        }
    }

    /// The idle probe: a resync with a replay endpoint; without one, a fresh SUB
    /// connection (the module docs say why).
    async fn probe(&mut self) -> Result<Resync, ResyncError> {
        if self.config.replay_endpoint.is_some() {
            self.resync().await
        } else {
            Ok(Resync::Repaired)
        }
    }

    /// One live message; counted once handled, so that the stats are consistent.
    async fn on_live(&mut self, parts: &[Bytes]) -> Result<(), Exit> {
        let r = self.handle_live(parts).await;
        self.stats.send_modify(|s| s.live += 1);
        r
    }

    async fn handle_live(&mut self, parts: &[Bytes]) -> Result<(), Exit> {
        let Some(seq) = seq_of(parts) else {
            let parts: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            let e = decode_message(&parts, self.config.dialect)
                .expect_err("a message without a sequence part does not decode");
            self.stats.send_modify(|s| {
                s.bad_messages += 1;
                s.last_error = Some(format!("a live message: {}", chain(&e)));
            });
            return Ok(());
        };
        let restarted = self.last_live.is_some_and(|l| seq <= l);
        self.last_live = Some(seq);
        let next = self.last.map(|p| p.seq.wrapping_add(1));
        match next {
            _ if restarted => {
                // The publisher's numbers went back: a new engine process, whose cache
                // started empty.
                self.reset().await?;
            }
            None => {}
            Some(n) if seq == n => {}
            Some(n) if seq < n => {
                self.stats.send_modify(|s| s.duplicates += 1);
                return Ok(());
            }
            Some(_) => {
                self.stats.send_modify(|s| s.gaps += 1);
                match self.resync().await {
                    Ok(_) => {}
                    Err(ResyncError::Indexer) => return Err(Exit::IndexerGone),
                    Err(ResyncError::Replay) => self.reset().await?,
                }
                let next = self.last.map(|p| p.seq.wrapping_add(1));
                match next {
                    Some(n) if seq < n => {
                        self.stats.send_modify(|s| s.duplicates += 1);
                        return Ok(());
                    }
                    None => {}
                    Some(n) if seq == n => {}
                    // Still missing what lies between: give up on it.
                    Some(_) => self.reset().await?,
                }
            }
        }
        self.apply(seq, &parts[parts.len() - 1]).await?;
        Ok(())
    }

    /// Catches up through the replay endpoint (see the module docs).
    async fn resync(&mut self) -> Result<Resync, ResyncError> {
        let Some(endpoint) = self.config.replay_endpoint.clone() else {
            return Err(ResyncError::Replay);
        };
        let from = self.last.map_or(0, |p| p.seq);
        let mut answer = self.replay(&endpoint, from).await?;
        let mut outcome = Resync::Current;
        if let Some(last) = self.last {
            let anchored = answer
                .first()
                .is_some_and(|(seq, p)| *seq == last.seq && xxh3_64(p) == last.payload_hash);
            if anchored {
                answer.remove(0);
            } else {
                // Restarted, or moved past us: start over from what the engine holds.
                self.reset().await.map_err(|_| ResyncError::Indexer)?;
                outcome = Resync::Repaired;
                if from != 0 {
                    answer = self.replay(&endpoint, 0).await?;
                }
            }
        }
        for (seq, payload) in answer {
            if let Some(last) = self.last {
                if seq != last.seq.wrapping_add(1) {
                    // A hole in the engine's own buffer.
                    self.reset().await.map_err(|_| ResyncError::Indexer)?;
                }
            }
            self.apply(seq, &payload)
                .await
                .map_err(|_| ResyncError::Indexer)?;
            self.stats.send_modify(|s| s.replayed += 1);
            outcome = Resync::Repaired;
        }
        Ok(outcome)
    }

    async fn replay(
        &mut self,
        endpoint: &str,
        from: u64,
    ) -> Result<Vec<(u64, Bytes)>, ResyncError> {
        match replay::request(endpoint, from, self.config.replay_timeout).await {
            Ok(answer) => {
                self.stats.send_modify(|s| s.replays += 1);
                Ok(answer)
            }
            Err(e) => {
                let msg = chain(&e);
                self.stats.send_modify(|s| s.last_error = Some(msg));
                Err(ResyncError::Replay)
            }
        }
    }

    /// Decodes, hashes and sends one message's events; records the position.
    async fn apply(&mut self, seq: u64, payload: &Bytes) -> Result<(), Exit> {
        let position = Position {
            seq,
            payload_hash: xxh3_64(payload),
        };
        let ops = decode_payload(payload, self.config.dialect)
            .map_err(|e| chain(&e))
            .and_then(|p| to_ops(&p.events, self.config.block_size).map_err(|e| chain(&e)));
        match ops {
            Ok(ops) => {
                let batch = EventBatch { event_id: seq, ops };
                self.indexer.apply(self.config.worker, batch).await?;
                self.stats.send_modify(|s| s.applied += 1);
            }
            Err(msg) => {
                // Its events are lost: what the worker holds is no longer known.
                self.stats.send_modify(|s| {
                    s.bad_messages += 1;
                    s.last_error = Some(format!("message {seq}: {msg}"));
                });
                self.reset().await?;
            }
        }
        self.last = Some(position);
        self.stats
            .send_modify(|s| s.next_seq = Some(seq.wrapping_add(1)));
        Ok(())
    }

    /// Forgets the worker's blocks and the stream position.
    async fn reset(&mut self) -> Result<(), Exit> {
        self.indexer.reset_worker(self.config.worker).await?;
        self.last = None;
        self.stats.send_modify(|s| {
            s.resets += 1;
            s.next_seq = None;
        });
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResyncError {
    /// The replay failed (already recorded in the stats).
    Replay,
    Indexer,
}

impl From<Exit> for ResyncError {
    fn from(_: Exit) -> Self {
        ResyncError::Indexer
    }
}

/// The sequence number of a `[topic, seq, payload]` message.
fn seq_of(parts: &[Bytes]) -> Option<u64> {
    match parts {
        [_, seq, _] => Some(u64::from_be_bytes(seq[..].try_into().ok()?)),
        _ => None,
    }
}

/// An error and its causes on one line: `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
