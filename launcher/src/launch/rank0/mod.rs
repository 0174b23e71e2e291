//! Rank 0: the coordinator, the plan, readiness, the frontend, the benchmark (or
//! serving), and the job's ending — with rank 0's own agent alongside.
//!
//! Whatever happens after the coordinator is up — a failure, a signal, the benchmark's
//! end — the same ending runs: stop the engines on every rank (TERM, grace, KILL),
//! wait for the ranks to leave, stop the frontend, reap local ranks, write the summary
//! ([`ending`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _};
use cohort_rank::bootstrap::Method;
use cohort_rank::control::proto::agent_message::Kind;
use cohort_rank::control::{Coordinator, CoordinatorConfig, CoordinatorEvent, LostReason};
use cohort_rank::topology::Topology;
use cohort_router::{Frontend, RouterHandle, WorkerId, WorkerSpec};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::args::Launch;
use super::local::LocalRanks;
use super::node::{self, NodeInfo};
use super::results::{self, Incident, Results};
use super::signals::Signals;
use super::wire::{self, Assigned, WirePlan};
use super::{agent, Ending, EndingExt as _, Failure};
use crate::plan;

mod ending;

/// What rank 0 publishes to the ranks: the plan, or why there is none.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Published {
    #[serde(default)]
    pub(crate) plan: Option<WirePlan>,
    #[serde(default)]
    pub(crate) abort: Option<String>,
}

/// Rank 0's whole run.
pub(crate) async fn run(launch: &Launch) -> Result<Ending, Failure> {
    let mut signals = Signals::install()
        .context("cannot install signal handlers")
        .ending(Ending::Bootstrap)?;
    let started = SystemTime::now();
    let job = match &launch.boot.method {
        Method::Local => results::local_job_id(started),
        _ => launch
            .env
            .get("SLURM_JOB_ID")
            .cloned()
            .unwrap_or_else(|| results::local_job_id(started)),
    };
    let dir = std::path::absolute(launch.results_root.join(&job))
        .context("the results directory")
        .ending(Ending::Preflight)?;
    let mut res = Results::create(dir).ending(Ending::Preflight)?;
    let recipe_text = std::fs::read(&launch.recipe_path).unwrap_or_default();
    res.write("recipe.toml", &recipe_text)
        .ending(Ending::Preflight)?;
    res.event("start", json!({"job": job, "ranks": launch.boot.size}));
    let info = node::describe(launch).ending(Ending::Preflight)?;
    let addr = SocketAddr::new(info.address, launch.boot.rendezvous.port);
    let config = CoordinatorConfig::new(launch.boot.size, launch.boot.token.clone());
    let (coordinator, events) = Coordinator::serve(addr, config)
        .await
        .ending(Ending::Bootstrap)?;
    let addr = coordinator.local_addr();
    launch.say(format_args!(
        "control plane on {addr}; results in {}",
        res.dir.display()
    ));
    let mut locals = LocalRanks::default();
    if launch.boot.method == Method::Local && launch.boot.size > 1 {
        locals = LocalRanks::spawn(launch, addr).ending(Ending::Bootstrap)?;
    }
    let mut lead = Lead {
        launch,
        job,
        res,
        coordinator: Some(coordinator),
        events,
        signals: &mut signals,
        joined: BTreeSet::new(),
        lost: BTreeSet::new(),
        locals,
        started,
        clock: Instant::now(),
        incidents: Vec::new(),
        frontend: None,
        plan: None,
        ready_s: None,
        partial: false,
        published: false,
    };
    let url = format!("http://{addr}");
    // Rank 0's own agent runs beside the lead until the lead's ending stops it.
    let lead_all = async {
        let outcome = lead.run().await;
        lead.finish(outcome).await
    };
    let (ending, _own) = tokio::join!(lead_all, agent::run(launch, info, &url, None));
    Ok(ending)
}

struct Lead<'a> {
    launch: &'a Launch,
    job: String,
    res: Results,
    /// Taken at the end to close every session.
    coordinator: Option<Coordinator>,
    events: UnboundedReceiver<CoordinatorEvent>,
    /// Ranks that joined, and those lost since.
    joined: BTreeSet<u32>,
    lost: BTreeSet<u32>,
    /// The ranks this process started (`--local`).
    locals: LocalRanks,
    signals: &'a mut Signals,
    started: SystemTime,
    clock: Instant,
    incidents: Vec<Incident>,
    frontend: Option<(Frontend, Workers)>,
    plan: Option<WirePlan>,
    ready_s: Option<f64>,
    partial: bool,
    published: bool,
}

/// The frontend's workers by instance id.
type Workers = BTreeMap<String, (WorkerId, WorkerSpec)>;

impl Lead<'_> {
    fn incident(&mut self, what: String, log_tail: String) {
        let t = results::secs(self.clock.elapsed());
        self.launch.say(format_args!("{what}"));
        if !log_tail.is_empty() {
            for line in log_tail.lines() {
                self.launch.say(format_args!("  | {line}"));
            }
        }
        self.res
            .event("incident", json!({"what": what, "log_tail": log_tail}));
        self.incidents.push(Incident { t, what, log_tail });
    }

    /// Everything up to the end of the benchmark (or of serving).
    async fn run(&mut self) -> Result<Ending, Failure> {
        let nodes = self.join().await?;
        let wire = self.plan(&nodes)?;
        let ups = self.ready(&wire).await?;
        self.start_frontend(&wire, &ups).await?;
        if self.launch.serve {
            self.serve().await
        } else {
            self.bench(&wire).await
        }
    }

    /// Waits until every rank has joined.
    async fn join(&mut self) -> Result<Vec<NodeInfo>, Failure> {
        let size = self.launch.boot.size;
        let deadline = tokio::time::Instant::now() + self.launch.join_timeout;
        let mut joined = BTreeSet::new();
        let mut last_line = Instant::now();
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(CoordinatorEvent::Joined { rank, hostname }) => {
                        joined.insert(rank);
                        self.joined.insert(rank);
                        self.res.event("joined", json!({"rank": rank, "node": hostname}));
                        if size > 1 && (joined.len() as u32 == size || last_line.elapsed() > Duration::from_secs(2)) {
                            self.launch.say(format_args!("ranks joined {}/{size}", joined.len()));
                            last_line = Instant::now();
                        }
                    }
                    Some(CoordinatorEvent::AllJoined(ranks)) => {
                        let mut nodes = Vec::with_capacity(ranks.len());
                        for r in ranks {
                            let info: NodeInfo = serde_json::from_str(&r.topology_json)
                                .with_context(|| format!("rank {} ({}) sent a node description this cohort cannot read", r.rank, r.hostname))
                                .ending(Ending::Bootstrap)?;
                            nodes.push(info);
                        }
                        return Ok(nodes);
                    }
                    Some(other) => self.res.event("control", json!({"event": format!("{other:?}")})),
                    None => return Err(Failure::new(Ending::Bootstrap, anyhow!("the control plane stopped"))),
                },
                (rank, status) = self.locals.first_exit() => {
                    return Err(Failure::new(Ending::Bootstrap, anyhow!(
                        "local rank {rank} exited ({status}) before it joined; its error is above"
                    )));
                }
                () = tokio::time::sleep_until(deadline) => {
                    let missing: Vec<String> = (0..size).filter(|r| !joined.contains(r)).map(|r| r.to_string()).collect();
                    return Err(Failure::new(Ending::Bootstrap, anyhow!(
                        "{} of {size} ranks joined within {:.0?}; missing ranks: {} (did their `srun` tasks start? is rank 0's port reachable from their nodes?)",
                        joined.len(), self.launch.join_timeout, missing.join(", ")
                    )));
                }
                name = self.signals.next() => {
                    self.incident(format!("{name} while ranks were joining: stopping"), String::new());
                    return Err(Failure::new(Ending::Stopped, anyhow!("stopped by {name} before the plan")));
                }
            }
        }
    }

    /// The nodes to plan without: `--exclude`, and — when the recipe allows
    /// (`deploy.exclude_unhealthy`) — nodes whose GPUs failed their health check at join.
    /// A failed check the recipe does not allow for ends the job (preflight), naming
    /// each node and GPU. Every report goes to `gpu-health.json`.
    fn gpu_health(&mut self, nodes: &[NodeInfo]) -> Result<Vec<String>, Failure> {
        let launch = self.launch;
        let mut exclude = launch.exclude.clone();
        let reports: Vec<&cohort_rank::gpu::Report> =
            nodes.iter().filter_map(|n| n.gpu_health.as_ref()).collect();
        if reports.is_empty() {
            return Ok(exclude);
        }
        let _ = self.res.write(
            "gpu-health.json",
            &serde_json::to_vec_pretty(&reports).unwrap_or_default(),
        );
        let failed: Vec<&cohort_rank::gpu::Report> =
            reports.into_iter().filter(|r| !r.passed()).collect();
        if failed.is_empty() {
            return Ok(exclude);
        }
        let names: Vec<String> = failed.iter().map(|r| r.node.clone()).collect();
        let detail: String = failed.iter().map(|r| format!("{r}\n")).collect();
        self.res.event("gpu_health_failed", json!({"nodes": names}));
        if !launch.recipe.deploy.exclude_unhealthy {
            self.incident(
                format!("GPU health check failed on {}", names.join(", ")),
                detail.clone(),
            );
            return Err(Failure::new(
                Ending::Preflight,
                anyhow!(
                    "the GPU health check failed on {} node(s): {} (findings above, and in \
                     gpu-health.json); plan without them with `deploy.exclude_unhealthy = \
                     true` in the recipe, or `--exclude {}`",
                    names.len(),
                    names.join(", "),
                    names.join(",")
                ),
            ));
        }
        self.incident(
            format!(
                "GPU health check failed on {}: planning without {} (`deploy.exclude_unhealthy`)",
                names.join(", "),
                if names.len() == 1 { "it" } else { "them" }
            ),
            detail,
        );
        exclude.extend(names);
        Ok(exclude)
    }

    /// Plans on the joined nodes, writes the plan and publishes it.
    fn plan(&mut self, nodes: &[NodeInfo]) -> Result<WirePlan, Failure> {
        let launch = self.launch;
        let source = launch
            .emulated
            .as_ref()
            .map_or_else(|| "discovered".to_owned(), |t| t.source.clone());
        let topology = Topology {
            version: cohort_rank::topology::FORMAT_VERSION,
            source,
            nodes: nodes.iter().map(|n| n.node.clone()).collect(),
        };
        let exclude = self.gpu_health(nodes)?;
        let p = plan::plan(&topology, &launch.recipe.deploy, &exclude)
            .with_context(|| format!("no plan for `{}`", launch.recipe.name))
            .ending(Ending::Plan)?;
        let stop_grace_ms = launch.stop_grace.as_millis() as u64;
        let wire = wire::build(
            &p,
            nodes,
            &launch.recipe,
            &launch.engine,
            &self.job,
            self.res.dir.clone(),
            stop_grace_ms,
        )
        .ending(Ending::Plan)?;
        let write = |res: &Results| -> anyhow::Result<()> {
            res.write("topology.json", &serde_json::to_vec_pretty(&topology)?)?;
            res.write("plan.json", &serde_json::to_vec_pretty(&p)?)?;
            res.write("plan.svg", plan::render_svg(&p, &topology).as_bytes())?;
            res.write("instances.json", &serde_json::to_vec_pretty(&wire)?)
        };
        write(&self.res).ending(Ending::Preflight)?;
        let mut table = Vec::new();
        let _ = plan::write_table(&mut table, &p);
        launch.say(String::from_utf8_lossy(&table).trim_end());
        let renumbered = p
            .instances
            .iter()
            .zip(&wire.instances)
            .any(|(planned, started)| planned.port != started.spec.port);
        if renumbered {
            launch.say(format_args!(
                "ports: several nodes share an address here, so instances were renumbered from \
                 port {} (see instances.json)",
                launch.recipe.deploy.base_port
            ));
        }
        self.res.event(
            "planned",
            json!({"instances": p.instances.len(), "gpus": p.summary.gpus}),
        );
        let published = Published {
            plan: Some(wire.clone()),
            abort: None,
        };
        if let Some(c) = &self.coordinator {
            c.publish_plan(serde_json::to_vec(&published).unwrap_or_default());
        }
        self.published = true;
        self.plan = Some(wire.clone());
        Ok(wire)
    }

    /// Waits for every instance to be ready, showing progress.
    async fn ready(&mut self, wire: &WirePlan) -> Result<BTreeMap<String, String>, Failure> {
        let total = wire.instances.len();
        let by_id: BTreeMap<&str, &Assigned> = wire
            .instances
            .iter()
            .map(|a| (a.spec.id.as_str(), a))
            .collect();
        let mut ups: BTreeMap<String, String> = BTreeMap::new();
        let bar = self.launch.bars.then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "instances ready {pos}/{len} {bar:30} {elapsed} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        let waiting_on = |ups: &BTreeMap<String, String>| -> String {
            let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
            for a in &wire.instances {
                if !ups.contains_key(&a.spec.id) {
                    *per_node.entry(a.node.as_str()).or_default() += 1;
                }
            }
            per_node
                .iter()
                .take(8)
                .map(|(n, c)| format!("{n}: {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        while ups.len() < total {
            tokio::select! {
                ev = self.events.recv() => {
                    let Some(ev) = ev else {
                        return Err(Failure::new(Ending::Bootstrap, anyhow!("the control plane stopped")));
                    };
                    match ev {
                        CoordinatorEvent::Agent { event: Kind::InstanceUp(up), rank } => {
                            self.res.event("ready", json!({"instance": up.instance, "rank": rank, "url": up.url}));
                            ups.insert(up.instance, up.url);
                            if let Some(b) = &bar {
                                b.set_position(ups.len() as u64);
                                b.set_message(format!("waiting on {}", waiting_on(&ups)));
                            }
                        }
                        other => {
                            if let Some(f) = self.fault(other, &by_id, false) {
                                if let Some(b) = &bar { b.abandon(); }
                                return Err(f);
                            }
                        }
                    }
                }
                _ = tick.tick(), if bar.is_none() => {
                    self.launch.say(format_args!(
                        "instances ready {}/{total} after {:.0?}; waiting on {}",
                        ups.len(), self.clock.elapsed(), waiting_on(&ups)
                    ));
                }
                name = self.signals.next() => {
                    if let Some(b) = &bar { b.abandon(); }
                    self.incident(format!("{name} while engines were starting: stopping"), String::new());
                    return Err(Failure::new(Ending::Stopped, anyhow!("stopped by {name} before the engines were ready")));
                }
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let ready = self.clock.elapsed();
        self.ready_s = Some(results::secs(ready));
        self.res
            .event("all_ready", json!({"seconds": results::secs(ready)}));
        self.launch.say(format_args!(
            "instances ready {total}/{total} in {:.2} s",
            ready.as_secs_f64()
        ));
        Ok(ups)
    }

    /// A control-plane event that is not progress: a failure (returned) or an incident.
    /// `serving` says whether the frontend is up (an engine lost then is survivable).
    fn fault(
        &mut self,
        ev: CoordinatorEvent,
        by_id: &BTreeMap<&str, &Assigned>,
        serving: bool,
    ) -> Option<Failure> {
        match ev {
            CoordinatorEvent::Agent {
                event: Kind::InstanceExited(x),
                rank,
            } => {
                let node = by_id
                    .get(x.instance.as_str())
                    .map_or("?", |a| a.node.as_str());
                let how = match (x.code, x.signal) {
                    (Some(c), _) => format!("exit code {c}"),
                    (None, Some(s)) => format!("signal {s}"),
                    (None, None) => "no exit status".to_owned(),
                };
                let when = if x.was_ready {
                    "while serving"
                } else {
                    "before it was ready"
                };
                let what = format!(
                    "instance `{}` on node `{node}` (rank {rank}) ended {when} ({how}); its log: {}",
                    x.instance,
                    self.res
                        .dir
                        .join("logs")
                        .join(node)
                        .join(format!("{}.log", x.instance))
                        .display()
                );
                self.res.event(
                    "exited",
                    json!({"instance": x.instance, "node": node, "code": x.code, "signal": x.signal, "was_ready": x.was_ready}),
                );
                self.incident(what.clone(), x.log_tail.clone());
                if serving {
                    return self.lose_worker(&x.instance);
                }
                Some(Failure::new(Ending::EngineStart, anyhow!("{what}")))
            }
            CoordinatorEvent::Agent {
                event: Kind::Failed(f),
                rank,
            } => {
                let what = format!("rank {rank} failed at {}: {}", f.stage, f.message);
                self.incident(what.clone(), String::new());
                let ending = if f.stage == "preflight" {
                    Ending::Preflight
                } else {
                    Ending::EngineStart
                };
                Some(Failure::new(ending, anyhow!("{what}")))
            }
            CoordinatorEvent::RankLost { rank, reason } => {
                self.lost.insert(rank);
                let why = match reason {
                    LostReason::Silent(d) => format!("no heartbeat for {:.1} s", d.as_secs_f64()),
                    LostReason::Disconnected(Some(e)) => format!("its session broke: {e}"),
                    LostReason::Disconnected(None) => "its session ended".to_owned(),
                };
                let what = format!("rank {rank} is lost: {why}");
                self.incident(what.clone(), String::new());
                Some(Failure::new(Ending::RankLost, anyhow!("{what}")))
            }
            CoordinatorEvent::Agent { event, rank } => {
                self.res.event(
                    "agent",
                    json!({"rank": rank, "event": format!("{event:?}")}),
                );
                None
            }
            other => {
                self.res
                    .event("control", json!({"event": format!("{other:?}")}));
                None
            }
        }
    }

    /// Takes a dead instance out of routing; fails when its role has no worker left.
    fn lose_worker(&mut self, instance: &str) -> Option<Failure> {
        let (fe, workers) = self.frontend.as_mut()?;
        let (id, spec) = workers.remove(instance)?;
        let _ = fe.handle().remove_worker(id);
        let role = spec.role;
        let left = workers.values().filter(|(_, s)| s.role == role).count();
        self.res.event(
            "removed_worker",
            json!({"instance": instance, "left_in_role": left}),
        );
        if left == 0 {
            return Some(Failure::new(
                Ending::EngineDied,
                anyhow!("no {role:?} instance is left after `{instance}` ended"),
            ));
        }
        None
    }

    /// Starts the OpenAI frontend over the ready instances.
    async fn start_frontend(
        &mut self,
        wire: &WirePlan,
        ups: &BTreeMap<String, String>,
    ) -> Result<(), Failure> {
        let launch = self.launch;
        let host = node::address(launch).ending(Ending::Preflight)?;
        let port = launch
            .frontend_port
            .unwrap_or(launch.recipe.deploy.frontend.port);
        let args = cohort_router::ServeArgs {
            host: host.to_string(),
            port,
            model: Some(launch.recipe.model.name.clone()),
            block_size: launch.recipe.deploy.frontend.kv_block_size,
            log_level: cohort_router::settings::LogLevel::Error,
            handshake: wire.engine.handshake(),
            disagg_threshold: launch.recipe.deploy.frontend.disagg_threshold,
            ..cohort_router::ServeArgs::default()
        };
        let settings = args
            .resolve(|k| launch.env.get(k).cloned())
            .ending(Ending::Preflight)?;
        let fe = Frontend::start(settings)
            .await
            .with_context(|| format!("the frontend cannot start on {host}:{port} (`--frontend-port 0` picks a free port)"))
            .ending(Ending::Preflight)?;
        let handle: RouterHandle = fe.handle();
        let mut workers = Workers::new();
        for a in &wire.instances {
            let Some(url) = ups.get(&a.spec.id) else {
                continue;
            };
            let mut spec = WorkerSpec::new(
                url.clone(),
                match a.spec.role {
                    cohort_rank::engine::Role::Prefill => cohort_router::Role::Prefill,
                    cohort_rank::engine::Role::Decode => cohort_router::Role::Decode,
                    cohort_rank::engine::Role::Aggregated => cohort_router::Role::Aggregated,
                },
            );
            spec.nvlink_domain = Some(a.spec.nvlink_domain.clone()).filter(|d| !d.is_empty());
            spec.kv_events = a
                .spec
                .kv_events_port
                .map(|p| format!("tcp://{}:{p}", a.spec.host));
            if wire.engine.is_sglang() && a.spec.role == cohort_rank::engine::Role::Prefill {
                spec.bootstrap_port =
                    Some(a.spec.port + cohort_rank::engine::port_offset::KV_TRANSFER);
            }
            let id = handle.add_worker(spec.clone()).ending(Ending::Preflight)?;
            workers.insert(a.spec.id.clone(), (id, spec));
        }
        let url = format!("http://{}", fe.addr());
        self.res.event("frontend", json!({"url": url}));
        self.frontend = Some((fe, workers));
        Ok(())
    }

    fn frontend_url(&self) -> Option<String> {
        self.frontend
            .as_ref()
            .map(|(fe, _)| format!("http://{}", fe.addr()))
    }

    /// Serve mode: print how to reach the frontend, then run until a signal.
    async fn serve(&mut self) -> Result<Ending, Failure> {
        let url = self.frontend_url().unwrap_or_default();
        let port = self.frontend.as_ref().map_or(0, |(fe, _)| fe.addr().port());
        let node = &self.launch.boot.node;
        let reach = if self.launch.boot.method == Method::Local {
            "  a local run: reachable from this machine only".to_owned()
        } else {
            let ip = self
                .frontend
                .as_ref()
                .map_or(String::new(), |(fe, _)| fe.addr().ip().to_string());
            format!(
                "  from a login node: ssh -N -L {port}:{ip}:{port} {node}   then use http://localhost:{port}/v1"
            )
        };
        self.launch.say(format_args!(
            "serving `{}` at {url}/v1 (OpenAI-compatible)\n{reach}\n  stop with Ctrl-C or `scancel`",
            self.launch.recipe.model.name,
        ));
        let by_id = self.by_id();
        loop {
            tokio::select! {
                ev = self.events.recv() => {
                    let Some(ev) = ev else { return Ok(Ending::Completed) };
                    let by: BTreeMap<&str, &Assigned> = by_id.iter().map(|(k, v)| (k.as_str(), v)).collect();
                    if let Some(f) = self.fault(ev, &by, true) {
                        return Err(f);
                    }
                }
                name = self.signals.next() => {
                    self.incident(format!("{name}: stopping the service"), String::new());
                    return Ok(Ending::Completed);
                }
            }
        }
    }

    fn by_id(&self) -> BTreeMap<String, Assigned> {
        self.plan
            .iter()
            .flat_map(|p| &p.instances)
            .map(|a| (a.spec.id.clone(), a.clone()))
            .collect()
    }

    /// Batch mode: the recipe's benchmark against the frontend, with faults watched.
    async fn bench(&mut self, wire: &WirePlan) -> Result<Ending, Failure> {
        let launch = self.launch;
        let url = self.frontend_url().unwrap_or_default();
        let bench_dir = self.res.dir.join("bench");
        let total_gpus: u32 = wire
            .instances
            .iter()
            .map(|a| a.gpu_count().max(1) as u32)
            .sum();
        let table = launch.recipe.bench.clone().unwrap_or_default();
        let recipe_dir = launch
            .recipe_path
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        let mut argv: Vec<String> = vec![
            "bench".into(),
            "--url".into(),
            url.clone(),
            "--model".into(),
            launch.recipe.model.name.clone(),
            "--output".into(),
            bench_dir.display().to_string(),
            "--gpus".into(),
            total_gpus.to_string(),
        ];
        if !launch.bars {
            argv.extend(["--progress".into(), "lines".into()]);
        }
        let from_recipe = table.to_args(recipe_dir);
        argv.extend(from_recipe.iter().cloned());
        let args = <BenchCli as clap::Parser>::try_parse_from(&argv)
            .map_err(|e| {
                anyhow!(
                    "the recipe's `[bench]` table: {}",
                    e.to_string().trim_start_matches("error: ").trim_end()
                )
            })
            .ending(Ending::Bench)?
            .args;
        let settings = args
            .resolve()
            .context("the recipe's `[bench]` table")
            .ending(Ending::Bench)?;
        self.launch.say(format_args!(
            "benchmark against {url}: {}",
            from_recipe.join(" ")
        ));
        self.res.event("bench_start", json!({"args": from_recipe}));
        let cut = CancellationToken::new();
        let stop = cut.child_token();
        let run = cohort_bench::run_draining(&settings, stop.clone(), cut.clone());
        tokio::pin!(run);
        let by_id = self.by_id();
        let by: BTreeMap<&str, &Assigned> = by_id.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut failure: Option<Failure> = None;
        let mut stopped_by: Option<&'static str> = None;
        let mut cut_at: Option<tokio::time::Instant> = None;
        let result = loop {
            let cut_timer = async {
                match cut_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut run => break r,
                ev = self.events.recv() => {
                    let Some(ev) = ev else { continue };
                    if let Some(f) = self.fault(ev, &by, true) {
                        if failure.is_none() {
                            self.launch.say("stopping the benchmark");
                            stop.cancel();
                            cut.cancel();
                            failure = Some(f);
                        }
                    }
                }
                name = self.signals.next() => {
                    if stopped_by.is_some() {
                        self.incident(format!("{name} again: cutting everything now"), String::new());
                        cut.cancel();
                        return Err(Failure::new(Ending::Stopped, anyhow!("stopped at once by a second signal ({name})")));
                    }
                    stopped_by = Some(name);
                    self.incident(format!(
                        "{name}: no new requests; those in flight get {:.0?} to finish; results will be marked partial",
                        launch.drain_grace
                    ), String::new());
                    stop.cancel();
                    cut_at = Some(tokio::time::Instant::now() + launch.drain_grace);
                }
                () = cut_timer => {
                    self.incident("drain grace over: cutting the requests still in flight".to_owned(), String::new());
                    cut.cancel();
                    cut_at = None;
                }
            }
        };
        if let Some(f) = failure {
            self.partial = true;
            return Err(f);
        }
        match result {
            Ok(_) if stopped_by.is_none() => Ok(Ending::Completed),
            Ok(_) | Err(cohort_bench::BenchError::Interrupted { .. }) => {
                self.partial = true;
                Ok(Ending::Stopped)
            }
            Err(e) => Err(Failure::new(Ending::Bench, e)),
        }
    }
}

/// `cohort bench`'s arguments as a parser of their own (the recipe's `[bench]` table is
/// turned into them, so the benchmark's own checks apply).
#[derive(Debug, clap::Parser)]
#[command(name = "bench", no_binary_name = false)]
struct BenchCli {
    #[command(flatten)]
    args: cohort_bench::BenchArgs,
}
