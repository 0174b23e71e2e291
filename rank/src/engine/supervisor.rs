//! The supervisor: an actor that starts a rank's engine instances and watches them.
//!
//! [`Supervisor`] is a cloneable handle; one task owns the instances, and each instance
//! has a task that owns its process. Events (started, ready, exited) arrive on the
//! receiver [`Supervisor::new`] returns. [`Supervisor::shutdown`] stops everything
//! gracefully; dropping the last handle kills every process group at once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::logtail::tail;
use super::process::{self, ExitInfo, SpawnError, SpawnSpec, Spawned, Stopped};
use super::{probe, Endpoints, Engine, EngineContext, InstanceSpec, LaunchSpec};

/// Settings of a supervisor, resolved once at the program's edge.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// One log file per instance: `<log_dir>/<instance>.log`.
    pub log_dir: PathBuf,
    /// The environment engines start from, before sanitising (the launcher passes its
    /// own, `std::env::vars()`); `SLURM_CPU_BIND*` and the other variables
    /// `cohort_slurm::hygiene` lists are removed.
    pub base_env: Vec<(String, String)>,
    /// `numactl`, when installed: memory binding to the plan's NUMA nodes. Without it
    /// memory is not bound (first-touch from the bound CPUs keeps most of it local) and
    /// [`InstanceEvent::Started`] says so.
    pub numactl: Option<PathBuf>,
    /// TERM → KILL grace when stopping. Default 10 s.
    pub stop_grace: Duration,
    /// Log lines kept in exit reports. Default 20.
    pub log_tail_lines: usize,
}

impl SupervisorConfig {
    /// Defaults for everything but the log directory and environment.
    pub fn new(log_dir: PathBuf, base_env: Vec<(String, String)>) -> Self {
        Self {
            log_dir,
            base_env,
            numactl: None,
            stop_grace: Duration::from_secs(10),
            log_tail_lines: 20,
        }
    }
}

/// Whether an instance's memory is bound to its NUMA nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryBinding {
    /// `numactl --membind` to these nodes.
    Bound(Vec<u32>),
    /// The plan asked for none.
    NotRequested,
    /// The plan asked for these nodes but `numactl` is not installed.
    NotApplied(Vec<u32>),
}

/// What happens to an instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum InstanceEvent {
    /// Its process is running (not yet ready).
    Started {
        instance: String,
        pid: u32,
        log: PathBuf,
        memory: MemoryBinding,
    },
    /// Its health endpoint answered.
    Ready {
        instance: String,
        endpoints: Endpoints,
    },
    /// It did not become ready in time; it has been stopped.
    NotReady {
        instance: String,
        deadline: Duration,
        last_probe: String,
        log_tail: String,
    },
    /// Its process ended on its own, before or after it was ready.
    Exited {
        instance: String,
        exit: ExitInfo,
        was_ready: bool,
        log_tail: String,
    },
    /// It was stopped on request.
    Stopped { instance: String, stopped: Stopped },
}

impl InstanceEvent {
    /// The instance it is about.
    pub fn instance(&self) -> &str {
        match self {
            Self::Started { instance, .. }
            | Self::Ready { instance, .. }
            | Self::NotReady { instance, .. }
            | Self::Exited { instance, .. }
            | Self::Stopped { instance, .. } => instance,
        }
    }
}

/// An instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("instance `{instance}` is already running")]
    Duplicate { instance: String },
    #[error("instance `{instance}`: `{id}` cannot name a log file; use letters, digits, `-`, `_` and `.`", id = instance)]
    BadId { instance: String },
    #[error("instance `{instance}` ({engine}) cannot be started")]
    Spawn {
        instance: String,
        engine: &'static str,
        #[source]
        source: SpawnError,
    },
    #[error("the supervisor has stopped")]
    Closed,
}

enum Command {
    Start {
        spec: Box<InstanceSpec>,
        reply: oneshot::Sender<Result<(), StartError>>,
    },
    Stop {
        instance: String,
        reply: oneshot::Sender<Option<Stopped>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Process groups alive, killed synchronously when the last handle goes.
type Groups = Arc<Mutex<BTreeMap<String, i32>>>;

struct Shared {
    actor: tokio::task::JoinHandle<()>,
    groups: Groups,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        for &pgid in groups.values() {
            let _ = process::kill_group(pgid, Signal::SIGKILL);
        }
        self.actor.abort();
    }
}

/// A handle to the supervisor actor.
#[derive(Clone)]
pub struct Supervisor {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Starts the actor on the current runtime; events arrive on the receiver.
    pub fn new(
        engine: Arc<dyn Engine>,
        config: SupervisorConfig,
    ) -> (Self, mpsc::UnboundedReceiver<InstanceEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let groups = Groups::default();
        let actor = Actor {
            engine,
            config: Arc::new(config),
            events,
            groups: groups.clone(),
            running: HashMap::new(),
            tasks: JoinSet::new(),
        };
        let actor = tokio::spawn(actor.run(rx));
        let shared = Arc::new(Shared { actor, groups });
        (Self { tx, shared }, events_rx)
    }

    /// Starts an instance; returns once its process runs (readiness is an event).
    pub async fn start(&self, spec: InstanceSpec) -> Result<(), StartError> {
        let (reply, rx) = oneshot::channel();
        let spec = Box::new(spec);
        self.tx
            .send(Command::Start { spec, reply })
            .map_err(|_| StartError::Closed)?;
        rx.await.map_err(|_| StartError::Closed)?
    }

    /// Stops an instance (TERM, grace, KILL); `None` if it was not running.
    pub async fn stop(&self, instance: &str) -> Option<Stopped> {
        let (reply, rx) = oneshot::channel();
        let instance = instance.to_owned();
        self.tx.send(Command::Stop { instance, reply }).ok()?;
        rx.await.ok().flatten()
    }

    /// Stops every instance, in parallel, and waits for them.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    /// Process groups of the running instances (for diagnostics and tests).
    pub fn process_groups(&self) -> BTreeMap<String, i32> {
        self.shared
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Actor {
    engine: Arc<dyn Engine>,
    config: Arc<SupervisorConfig>,
    events: mpsc::UnboundedSender<InstanceEvent>,
    groups: Groups,
    /// Per running instance: how to ask it to stop.
    running: HashMap<String, mpsc::UnboundedSender<oneshot::Sender<Option<Stopped>>>>,
    tasks: JoinSet<String>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Start { spec, reply }) => {
                        let _ = reply.send(self.start(*spec).await);
                    }
                    Some(Command::Stop { instance, reply }) => match self.running.get(&instance) {
                        Some(stop) => { let _ = stop.send(reply); }
                        None => { let _ = reply.send(None); }
                    },
                    Some(Command::Shutdown { reply }) => {
                        self.stop_all().await;
                        let _ = reply.send(());
                    }
                    None => {
                        self.stop_all().await;
                        return;
                    }
                },
                Some(Ok(instance)) = self.tasks.join_next() => {
                    self.running.remove(&instance);
                }
            }
        }
    }

    async fn stop_all(&mut self) {
        let waits: Vec<_> = self
            .running
            .values()
            .map(|stop| {
                let (reply, rx) = oneshot::channel();
                let _ = stop.send(reply);
                rx
            })
            .collect();
        for wait in waits {
            let _ = wait.await;
        }
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(instance) = done {
                self.running.remove(&instance);
            }
        }
    }

    async fn start(&mut self, spec: InstanceSpec) -> Result<(), StartError> {
        let id = spec.id.clone();
        if self.running.contains_key(&id) {
            return Err(StartError::Duplicate { instance: id });
        }
        let id_ok = !id.is_empty()
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !id_ok {
            return Err(StartError::BadId { instance: id });
        }
        let ctx = EngineContext { instance: &spec };
        let endpoints = self.engine.endpoints(&ctx);
        let deadline = self.engine.ready_deadline(&ctx);
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        let watch = Watch {
            instance: id.clone(),
            config: self.config.clone(),
            events: self.events.clone(),
            groups: self.groups.clone(),
            endpoints,
            deadline,
            stop: stop_rx,
        };
        let Some(launch) = self.engine.launch(&ctx) else {
            self.tasks.spawn(watch.attached());
            self.running.insert(id, stop_tx);
            return Ok(());
        };
        let log = self.config.log_dir.join(format!("{id}.log"));
        let (program, args, memory) = self.wrap_numactl(&spec, launch.program, launch.args);
        let env = child_env(&self.config.base_env, &spec, &launch.env);
        let spawned = process::spawn(SpawnSpec {
            program: &program,
            args: &args,
            env: &env,
            log: &log,
            cpus: spec.cpus.as_ref(),
        })
        .await
        .map_err(|source| StartError::Spawn {
            instance: id.clone(),
            engine: self.engine.name(),
            source,
        })?;
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), spawned.group.id());
        let _ = self.events.send(InstanceEvent::Started {
            instance: id.clone(),
            pid: spawned.pid,
            log: log.clone(),
            memory,
        });
        self.tasks.spawn(watch.process(spawned, log));
        self.running.insert(id, stop_tx);
        Ok(())
    }

    fn wrap_numactl(
        &self,
        spec: &InstanceSpec,
        program: PathBuf,
        args: Vec<String>,
    ) -> (PathBuf, Vec<String>, MemoryBinding) {
        wrap_numactl(self.config.numactl.as_ref(), spec, program, args)
    }
}

/// What the supervisor would run for `spec` with `engine`: the program and arguments
/// (under `numactl` when given and the plan binds memory) and the variables it sets on
/// top of the node's sanitised environment — the GPU binding, the recipe's, the
/// engine's. `None` when the engine starts nothing. For `cohort plan --commands`.
pub fn preview(
    engine: &dyn Engine,
    spec: &InstanceSpec,
    numactl: Option<&PathBuf>,
) -> Option<LaunchSpec> {
    let launch = engine.launch(&EngineContext { instance: spec })?;
    let env = child_env(&[], spec, &launch.env);
    let (program, args, _) = wrap_numactl(numactl, spec, launch.program, launch.args);
    Some(LaunchSpec { program, args, env })
}

/// `program args` under `numactl --membind` to the plan's NUMA nodes, when it asks for
/// some and `numactl` is installed.
fn wrap_numactl(
    numactl: Option<&PathBuf>,
    spec: &InstanceSpec,
    program: PathBuf,
    args: Vec<String>,
) -> (PathBuf, Vec<String>, MemoryBinding) {
    if spec.mem_nodes.is_empty() {
        return (program, args, MemoryBinding::NotRequested);
    }
    let Some(numactl) = numactl else {
        return (
            program,
            args,
            MemoryBinding::NotApplied(spec.mem_nodes.clone()),
        );
    };
    let nodes: Vec<String> = spec.mem_nodes.iter().map(u32::to_string).collect();
    let mut wrapped = vec![
        format!("--membind={}", nodes.join(",")),
        "--".to_owned(),
        program.display().to_string(),
    ];
    wrapped.extend(args);
    (
        numactl.clone(),
        wrapped,
        MemoryBinding::Bound(spec.mem_nodes.clone()),
    )
}

/// The child's whole environment: the base sanitised, then the GPUs, the recipe's
/// variables and the engine's.
pub(crate) fn child_env(
    base: &[(String, String)],
    spec: &InstanceSpec,
    engine_env: &[(String, String)],
) -> Vec<(String, String)> {
    let (kept, _removed) = cohort_slurm::hygiene::sanitize(base.iter().cloned());
    // Ascending indices are PCI bus order, which `CUDA_DEVICE_ORDER=PCI_BUS_ID` makes
    // the numbering CUDA uses.
    let mut indices = spec.gpus.clone();
    indices.sort_unstable();
    indices.dedup();
    let gpus: Vec<String> = indices.iter().map(u32::to_string).collect();
    let mut env: BTreeMap<String, String> = kept.into_iter().collect();
    env.insert("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into());
    env.insert("CUDA_VISIBLE_DEVICES".into(), gpus.join(","));
    env.extend(spec.env.iter().cloned());
    env.extend(engine_env.iter().cloned());
    env.into_iter().collect()
}

/// Watches one instance; owned by the supervisor's task set.
struct Watch {
    instance: String,
    config: Arc<SupervisorConfig>,
    events: mpsc::UnboundedSender<InstanceEvent>,
    groups: Groups,
    endpoints: Endpoints,
    deadline: Duration,
    stop: mpsc::UnboundedReceiver<oneshot::Sender<Option<Stopped>>>,
}

impl Watch {
    fn emit(&self, event: InstanceEvent) {
        let _ = self.events.send(event);
    }

    /// An engine started by someone else: readiness only.
    async fn attached(mut self) -> String {
        tokio::select! {
            ready = probe::wait_ready(&self.endpoints.health_url, self.deadline) => {
                match ready {
                    Ok(()) => self.emit(InstanceEvent::Ready {
                        instance: self.instance.clone(),
                        endpoints: self.endpoints.clone(),
                    }),
                    Err(last_probe) => self.emit(InstanceEvent::NotReady {
                        instance: self.instance.clone(),
                        deadline: self.deadline,
                        last_probe,
                        log_tail: String::new(),
                    }),
                }
                // Stay until asked to stop, like a started instance.
                if let Some(reply) = self.stop.recv().await {
                    let _ = reply.send(None);
                }
            }
            Some(reply) = self.stop.recv() => { let _ = reply.send(None); }
        }
        self.instance
    }

    async fn process(mut self, mut spawned: Spawned, log: PathBuf) -> String {
        let mut was_ready = false;
        let ready = probe::wait_ready(&self.endpoints.health_url, self.deadline);
        tokio::pin!(ready);
        loop {
            tokio::select! {
                status = spawned.child.wait() => {
                    // Kill what the engine forked before reporting: nothing outlives it.
                    spawned.group.signal(Signal::SIGKILL);
                    let exit = status.map(ExitInfo::from).unwrap_or(ExitInfo { code: None, signal: None });
                    self.emit(InstanceEvent::Exited {
                        instance: self.instance.clone(),
                        exit,
                        was_ready,
                        log_tail: self.tail(&log),
                    });
                    break;
                }
                result = &mut ready, if !was_ready => match result {
                    Ok(()) => {
                        was_ready = true;
                        self.emit(InstanceEvent::Ready {
                            instance: self.instance.clone(),
                            endpoints: self.endpoints.clone(),
                        });
                    }
                    Err(last_probe) => {
                        process::stop(&mut spawned, self.config.stop_grace).await;
                        self.emit(InstanceEvent::NotReady {
                            instance: self.instance.clone(),
                            deadline: self.deadline,
                            last_probe,
                            log_tail: self.tail(&log),
                        });
                        break;
                    }
                },
                Some(reply) = self.stop.recv() => {
                    let stopped = process::stop(&mut spawned, self.config.stop_grace).await;
                    self.emit(InstanceEvent::Stopped { instance: self.instance.clone(), stopped });
                    let _ = reply.send(Some(stopped));
                    break;
                }
            }
        }
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.instance);
        // Late stop requests (sent while it was exiting) get "not running".
        self.stop.close();
        while let Ok(reply) = self.stop.try_recv() {
            let _ = reply.send(None);
        }
        self.instance
    }

    fn tail(&self, log: &Path) -> String {
        tail(log, self.config.log_tail_lines)
    }
}
