//! Starting and stopping the instances of one `cohort sim` process: for each, a
//! listener, an accept loop that owns its connections, an engine actor and optionally
//! a KV-event publisher — all owned by one [`SimServer`].

use super::config::SimConfig;
use super::engine::{self, EngineIdentity};
use super::events::Publisher;
use super::http::{self, Instance};
use super::metrics::HttpStats;
use super::SimError;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Where one started instance listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Its HTTP address.
    pub addr: SocketAddr,
    /// Its KV-event port, when publishing.
    pub kv_events_port: Option<u16>,
    /// Its engine id (`remote_engine_id` in `kv_transfer_params`).
    pub engine_id: String,
}

/// Running instances; [`SimServer::shutdown`] stops them and waits for every task.
#[derive(Debug)]
pub struct SimServer {
    instances: Vec<InstanceInfo>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl SimServer {
    /// Binds every instance and starts serving (on the current Tokio runtime).
    pub async fn start(cfg: SimConfig) -> Result<SimServer, SimError> {
        let cfg = Arc::new(cfg);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let model: Arc<str> = Arc::from(cfg.served_name.as_str());
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut instances = Vec::new();
        for (index, &port) in cfg.ports.iter().enumerate() {
            let index = index as u32;
            let listener =
                TcpListener::bind((cfg.host.as_str(), port))
                    .await
                    .map_err(|source| SimError::Bind {
                        addr: format!("{}:{port}", cfg.host),
                        source,
                    })?;
            let addr = listener.local_addr().map_err(|source| SimError::Bind {
                addr: format!("{}:{port}", cfg.host),
                source,
            })?;
            let (events, kv_events_port) = match &cfg.kv_events_ports {
                Some(ports) => {
                    let publisher = Publisher::bind(&cfg.host, ports[index as usize]).await?;
                    let port = publisher.port();
                    let (tx, rx) = mpsc::unbounded_channel();
                    tasks.spawn(publisher.run(rx, cfg.sched.block_size));
                    (Some(tx), Some(port))
                }
                None => (None, None),
            };
            let me = EngineIdentity {
                engine_id: format!("cohort-sim-{}-{}-{index}", std::process::id(), addr.port()),
                index,
                port: addr.port(),
            };
            let http_stats = Arc::new(HttpStats::default());
            let handle = engine::spawn(
                cfg.clone(),
                me.clone(),
                http_stats.clone(),
                events,
                shutdown_rx.clone(),
                &mut tasks,
            );
            let inst = Arc::new(Instance {
                cfg: cfg.clone(),
                tokenizer: cfg.tokenizer.clone(),
                model: model.clone(),
                engine: handle,
                http: http_stats,
                me: me.clone(),
                next_id: AtomicU64::new(0),
                started,
            });
            tasks.spawn(accept_loop(listener, inst, shutdown_rx.clone()));
            instances.push(InstanceInfo {
                addr,
                kv_events_port,
                engine_id: me.engine_id,
            });
        }
        Ok(SimServer {
            instances,
            shutdown,
            tasks,
        })
    }

    /// The instances, in `--port-base` order.
    pub fn instances(&self) -> &[InstanceInfo] {
        &self.instances
    }

    /// Stops accepting, closes connections, stops the engines and waits for all of it.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Accepts connections until `shutdown`; dropping its `JoinSet` closes them all.
async fn accept_loop(
    listener: TcpListener,
    inst: Arc<Instance>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let inst = inst.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| http::handle(inst.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    conns.shutdown().await;
}
