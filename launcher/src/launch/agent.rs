//! Every rank's part: join rank 0, start this rank's instances of the plan under the
//! supervisor, report them (up, exited with log tail, failed), and stop them when told
//! — or on its own when rank 0 is gone or a second signal arrives.

use std::net::TcpListener;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use cohort_rank::bootstrap::{Backoff, Method};
use cohort_rank::control::proto::agent_message::Kind;
use cohort_rank::control::proto::coordinator_message;
use cohort_rank::control::proto::{Failed, InstanceDown, InstanceExited, InstanceUp, JoinRequest};
use cohort_rank::control::{Agent, Session};
use cohort_rank::engine::{InstanceEvent, InstanceSpec, Supervisor, SupervisorConfig};
use tokio::sync::mpsc::UnboundedReceiver;

use super::args::Launch;
use super::node::{self, NodeInfo};
use super::rank0::Published;
use super::signals::Signals;
use super::wire::{WireEngine, WirePlan};
use super::{Ending, EndingExt as _, Failure};

/// A rank other than 0: its agent is the whole process.
pub(crate) async fn run_rank(launch: &Launch) -> Result<Ending, Failure> {
    if launch.boot.method == Method::Local {
        // A local rank must not outlive the rank 0 that started it (which may be killed
        // outright): TERM then runs the same clean stop as any other.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
            .context("cannot ask to be told when rank 0 exits")
            .ending(Ending::Bootstrap)?;
    }
    let mut signals = Signals::install()
        .context("cannot install signal handlers")
        .ending(Ending::Bootstrap)?;
    let info = node::describe(launch).ending(Ending::Preflight)?;
    let url = format!(
        "http://{}:{}",
        launch.boot.rendezvous.host, launch.boot.rendezvous.port
    );
    run(launch, info, &url, Some(&mut signals)).await
}

/// Joins the coordinator at `url` and serves this rank's instances until stopped.
/// `signals` is `None` for rank 0's own agent (rank 0 handles its signals itself).
pub(crate) async fn run(
    launch: &Launch,
    info: NodeInfo,
    url: &str,
    mut signals: Option<&mut Signals>,
) -> Result<Ending, Failure> {
    let boot = &launch.boot;
    let joining = async {
        let mut agent = Agent::connect(url, &boot.token, boot.rank, Backoff::default()).await?;
        let reply = agent
            .join(JoinRequest {
                rank: boot.rank,
                size: boot.size,
                hostname: info.node.hostname.clone(),
                topology_json: serde_json::to_string(&info)?,
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .await?;
        let published: Published = serde_json::from_slice(&reply.plan_json)
            .context("rank 0's plan cannot be read (is every rank the same cohort build?)")?;
        let plan = match (published.plan, published.abort) {
            (Some(plan), _) => plan,
            (None, reason) => anyhow::bail!(
                "rank 0 ended the job before it had a plan: {}",
                reason.unwrap_or_default()
            ),
        };
        let session = agent
            .session(Duration::from_millis(u64::from(
                reply.heartbeat_interval_ms.max(100),
            )))
            .await?;
        anyhow::Ok((plan, session))
    };
    let (plan, mut session) = tokio::select! {
        r = joining => r.ending(Ending::Bootstrap)?,
        name = next_signal(&mut signals) => {
            launch.say(format_args!("{name} before the plan arrived: leaving"));
            return Ok(Ending::Stopped);
        }
    };
    let mine = specs_of(&plan, boot.rank);
    if let Err(e) = preflight(&plan, &info, &mine) {
        let _ = session.send(Kind::Failed(Failed {
            stage: "preflight".into(),
            message: format!("{e:#}"),
        }));
        return wait_for_stop(launch, &mut session, signals).await;
    }
    let mut config = SupervisorConfig::new(
        plan.results.join("logs").join(&info.node.hostname),
        launch.env.clone().into_iter().collect(),
    );
    config.stop_grace = Duration::from_millis(plan.stop_grace_ms);
    config.numactl = which("numactl", &launch.env);
    let engine = match plan.engine_on(launch.exe.clone(), &launch.boot.node) {
        Ok(e) => e,
        Err(e) => {
            let _ = session.send(Kind::Failed(Failed {
                stage: "preflight".into(),
                message: format!("the recipe's container cannot be used on this node: {e}"),
            }));
            return wait_for_stop(launch, &mut session, signals).await;
        }
    };
    let (supervisor, events) = Supervisor::new(engine, config);
    let followers: std::collections::BTreeSet<String> = mine
        .iter()
        .filter(|s| s.is_follower())
        .map(|s| s.id.clone())
        .collect();
    for spec in &mine {
        if let Err(e) = supervisor.start(spec.clone()).await {
            let _ = session.send(Kind::Failed(Failed {
                stage: "engine-start".into(),
                message: format!("{:#}", anyhow!(e)),
            }));
            break;
        }
    }
    let ending = supervise(
        launch,
        &mut session,
        &supervisor,
        events,
        &mut signals,
        &Followers {
            ids: followers,
            node: info.node.hostname.clone(),
        },
    )
    .await;
    supervisor.shutdown().await;
    Ok(ending)
}

/// Relays instance events and obeys commands until told to stop (or rank 0 is gone).
async fn supervise(
    launch: &Launch,
    session: &mut Session,
    supervisor: &Supervisor,
    mut events: UnboundedReceiver<InstanceEvent>,
    signals: &mut Option<&mut Signals>,
    followers: &Followers,
) -> Ending {
    // After a first signal a rank waits for rank 0's stop, but not forever.
    let mut own_deadline: Option<tokio::time::Instant> = None;
    loop {
        let deadline = async {
            match own_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(event) = events.recv() => {
                if let Some(kind) = followers.relay(&event) {
                    let _ = session.send(kind);
                }
            }
            command = session.next_command() => match command {
                Ok(Some(c)) => match c.kind {
                    Some(coordinator_message::Kind::Stop(stop)) if stop.instances.is_empty() => {
                        return Ending::Completed;
                    }
                    Some(coordinator_message::Kind::Stop(stop)) => {
                        for i in stop.instances {
                            supervisor.stop(&i).await;
                        }
                    }
                    Some(coordinator_message::Kind::Drain(_) | coordinator_message::Kind::Start(_))
                    | None => {}
                },
                Ok(None) | Err(_) => {
                    if !launch.boot.is_rank0() {
                        launch.say("rank 0 is gone: stopping this rank's engines");
                    }
                    return Ending::RankLost;
                }
            },
            name = next_signal(signals) => {
                let n = signals.as_ref().map_or(0, |s| s.received());
                if n >= 2 {
                    launch.say(format_args!("{name} again: stopping at once"));
                    return Ending::Stopped;
                }
                let wait = launch.drain_grace + launch.stop_grace + Duration::from_secs(5);
                launch.say(format_args!(
                    "{name}: waiting up to {}s for rank 0 to stop the job",
                    wait.as_secs()
                ));
                own_deadline = Some(tokio::time::Instant::now() + wait);
            }
            () = deadline => {
                launch.say("rank 0 did not stop the job in time: stopping this rank's engines");
                return Ending::Stopped;
            }
        }
    }
}

/// Waits for the stop after this rank failed (rank 0 ends the job on the failure).
async fn wait_for_stop(
    launch: &Launch,
    session: &mut Session,
    mut signals: Option<&mut Signals>,
) -> Result<Ending, Failure> {
    let bound = launch.join_timeout;
    tokio::select! {
        _ = session.next_command() => {}
        _ = next_signal(&mut signals) => {}
        () = tokio::time::sleep(bound) => {}
    }
    Ok(Ending::Preflight)
}

async fn next_signal(signals: &mut Option<&mut Signals>) -> &'static str {
    match signals {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// The multi-node instances this rank follows: their leaders report them ready, and
/// rank 0 hears from a follower only when its part fails.
struct Followers {
    ids: std::collections::BTreeSet<String>,
    /// This node, named in a follower's failure (its log is under `logs/<node>/`).
    node: String,
}

impl Followers {
    /// The control-plane message for a supervisor event on this rank.
    fn relay(&self, event: &InstanceEvent) -> Option<Kind> {
        let instance = match event {
            InstanceEvent::Started { instance, .. }
            | InstanceEvent::Ready { instance, .. }
            | InstanceEvent::NotReady { instance, .. }
            | InstanceEvent::Exited { instance, .. }
            | InstanceEvent::Stopped { instance, .. } => instance,
        };
        if !self.ids.contains(instance) {
            return relay(event);
        }
        match relay(event)? {
            Kind::InstanceExited(mut x) => {
                x.log_tail = format!(
                    "its part on node `{}` (a follower) ended; that part's log is \
                     logs/{}/{}.log\n{}",
                    self.node, self.node, x.instance, x.log_tail
                );
                Some(Kind::InstanceExited(x))
            }
            _ => None,
        }
    }
}

/// The control-plane message for a supervisor event (`Started` stays local).
fn relay(event: &InstanceEvent) -> Option<Kind> {
    Some(match event {
        InstanceEvent::Started { .. } => return None,
        InstanceEvent::Ready {
            instance,
            endpoints,
        } => Kind::InstanceUp(InstanceUp {
            instance: instance.clone(),
            url: endpoints.url.clone(),
            metrics_url: endpoints.metrics_url.clone().unwrap_or_default(),
            kv_events_url: endpoints.kv_events_url.clone().unwrap_or_default(),
        }),
        InstanceEvent::NotReady {
            instance,
            deadline,
            last_probe,
            log_tail,
        } => Kind::InstanceExited(InstanceExited {
            instance: instance.clone(),
            code: None,
            signal: None,
            was_ready: false,
            log_tail: format!(
                "not ready after {:.0?} (last probe: {last_probe}); stopped\n{log_tail}",
                deadline
            ),
        }),
        InstanceEvent::Exited {
            instance,
            exit,
            was_ready,
            log_tail,
        } => Kind::InstanceExited(InstanceExited {
            instance: instance.clone(),
            code: exit.code,
            signal: exit.signal,
            was_ready: *was_ready,
            log_tail: log_tail.clone(),
        }),
        InstanceEvent::Stopped { instance, stopped } => Kind::InstanceDown(InstanceDown {
            instance: instance.clone(),
            reason: format!(
                "stopped ({}{})",
                stopped.exit,
                if stopped.escalated {
                    ", killed after the grace period"
                } else {
                    ""
                }
            ),
        }),
    })
}

/// What this rank starts: the instances it leads, and its part of multi-node instances
/// led elsewhere.
fn specs_of(plan: &WirePlan, rank: u32) -> Vec<InstanceSpec> {
    let mut mine = Vec::new();
    for a in &plan.instances {
        if a.rank == rank {
            mine.push(a.spec.clone());
        }
        mine.extend(
            a.followers
                .iter()
                .filter(|f| f.rank == rank)
                .map(|f| f.spec.clone()),
        );
    }
    mine
}

/// This rank's checks before it starts anything: the log directory is writable and
/// every port its instances need is free on its address (a follower's engine serves
/// nothing there: its ports are its leader's).
fn preflight(plan: &WirePlan, info: &NodeInfo, mine: &[InstanceSpec]) -> anyhow::Result<()> {
    let logs = plan.results.join("logs").join(&info.node.hostname);
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("cannot create the log directory `{}`", logs.display()))?;
    for spec in mine.iter().filter(|s| !s.is_follower()) {
        let ports = std::iter::once(spec.port).chain(spec.kv_events_port);
        for port in ports {
            TcpListener::bind((info.address, port)).with_context(|| {
                format!(
                    "instance `{}` needs port {port} on {} (node `{}`), which is taken; \
                     stop what holds it or change `deploy.base_port`",
                    spec.id, info.address, info.node.hostname
                )
            })?;
        }
    }
    gpu_preflight(plan, info, mine, &logs)
}

/// The GPU checks of a real node before real engines start (`docs/preflight.md`): the
/// plan's GPUs present, no uncorrectable ECC error or pending retirement, fabric and
/// NVLink cliques complete, memory free, IMEX for instances across nodes. The report
/// goes to `logs/<node>/gpu-preflight.json` either way; errors fail the rank.
fn gpu_preflight(
    plan: &WirePlan,
    info: &NodeInfo,
    mine: &[InstanceSpec],
    logs: &std::path::Path,
) -> anyhow::Result<()> {
    use cohort_rank::gpu::{self, CliqueGroup, NvmlSource, Requirements};
    use cohort_rank::topology::NvlinkDomain;
    if info.emulated || matches!(plan.engine, WireEngine::Sim { .. }) {
        return Ok(());
    }
    let mut gpus: Vec<u32> = mine.iter().flat_map(|s| s.gpus.iter().copied()).collect();
    gpus.sort_unstable();
    gpus.dedup();
    if gpus.is_empty() {
        return Ok(());
    }
    let fabric = info
        .node
        .gpus
        .iter()
        .any(|g| matches!(g.nvlink_domain, NvlinkDomain::Fabric { .. }));
    let reqs = Requirements {
        gpus,
        gpus_on_node: Some(info.node.gpus.len() as u32),
        min_free_fraction: Some(super::node::GPU_MIN_FREE_FRACTION),
        cliques: mine
            .iter()
            .filter(|s| fabric && !s.gpus.is_empty())
            .map(|s| CliqueGroup {
                instance: s.id.clone(),
                gpus: s.gpus.clone(),
                expected: None,
            })
            .collect(),
        needs_imex: fabric && mine.iter().any(|s| s.multi_node.is_some()),
        ..Requirements::default()
    };
    let source = NvmlSource::open().map_err(|e| {
        anyhow!(
            "node `{}` has GPUs in the plan but NVML cannot be read: {e}",
            info.node.hostname
        )
    })?;
    let report = gpu::preflight(
        &info.node.hostname,
        &source,
        std::path::Path::new("/"),
        &reqs,
    );
    if let Ok(json) = serde_json::to_vec_pretty(&report) {
        let _ = std::fs::write(logs.join("gpu-preflight.json"), json);
    }
    anyhow::ensure!(
        report.passed(),
        "GPU preflight failed on node `{}`:\n{report}",
        info.node.hostname
    );
    Ok(())
}

/// `program` on the environment's `PATH`.
fn which(
    program: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> Option<std::path::PathBuf> {
    let path = env.get("PATH")?;
    std::env::split_paths(path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
