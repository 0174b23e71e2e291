//! `cohort plan --commands`: every engine command a job would start, without starting
//! anything — the plan laid onto one rank per node exactly as `cohort launch` lays it,
//! each instance's command, environment and binding as its rank's supervisor would run
//! them, bare or inside the recipe's container.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::Context as _;
use cohort_rank::engine::{self, InstanceSpec};
use cohort_rank::topology::Topology;
use cohort_slurm::render::shell_quote;

use super::args::{sim_hardware, EngineChoice};
use super::node::NodeInfo;
use super::wire;
use crate::plan::Plan;
use crate::recipe::{EngineKind, Recipe};

/// What a preview shows: the recipe's container or the bare engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrapping {
    /// As the recipe says (`[engine.container]` when it has one).
    AsRecipe,
    /// The engine as installed on the nodes.
    Bare,
}

/// The job id and results directory the preview shows.
const JOB: &str = "JOB";

/// The commands of every instance of `plan` (made from `recipe` over `topology`), one
/// block per node's part, leaders first.
pub(crate) fn commands(
    plan: &Plan,
    topology: &Topology,
    recipe: &Recipe,
    wrapping: Wrapping,
) -> anyhow::Result<String> {
    let choice = match recipe.engine.kind {
        EngineKind::Sim => EngineChoice::Sim {
            hardware: sim_hardware(Some(topology)),
            speedup: "1".to_owned(),
        },
        EngineKind::External => {
            anyhow::bail!("the recipe's engine is `external`: cohort starts no command for it")
        }
        kind => EngineChoice::Real(kind),
    };
    // Stand-in addresses, one per node, shown as the node's name afterwards.
    let nodes: Vec<NodeInfo> = topology
        .nodes
        .iter()
        .enumerate()
        .map(|(k, n)| NodeInfo {
            node: n.clone(),
            address: stand_in(k),
            emulated: false,
            gpu_health: None,
        })
        .collect();
    let results = PathBuf::from("/results").join(JOB);
    let mut wire = wire::build(plan, &nodes, recipe, &choice, JOB, results, 30_000)
        .context("the plan cannot be laid onto one rank per node")?;
    if wrapping == Wrapping::Bare {
        wire.container = None;
    }
    let numactl = PathBuf::from("numactl");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# `{}`: {} instance(s), engine {}{}",
        recipe.name,
        wire.instances.len(),
        wire.engine.describe(),
        wire.container.as_ref().map_or(String::new(), |c| format!(
            ", from `{}` ({})",
            c.image,
            c.runtime.name()
        )),
    );
    out.push_str(
        "# Node addresses are shown as node names (a job uses each node's cluster-facing\n\
         # address); every engine also gets its node's environment, sanitised; results go to\n\
         # /results/JOB. CPUs are bound by cohort itself (sched_setaffinity), not by the command.\n",
    );
    for a in &wire.instances {
        let parts = std::iter::once((&a.node, &a.spec))
            .chain(a.followers.iter().map(|f| (&f.node, &f.spec)));
        for (node, spec) in parts {
            let engine = wire
                .engine_on(PathBuf::from("cohort"), node)
                .with_context(|| format!("the recipe's container, on node `{node}`"))?;
            block(
                &mut out,
                node,
                spec,
                engine::preview(&*engine, spec, Some(&numactl)),
            );
        }
    }
    let names: Vec<(String, &str)> = nodes
        .iter()
        .map(|n| (n.address.to_string(), n.node.hostname.as_str()))
        .collect();
    Ok(names_for_addresses(&out, names))
}

/// One instance part: a header, then `VAR=value \` lines and the command, one flag with
/// its value per line.
fn block(out: &mut String, node: &str, spec: &InstanceSpec, launch: Option<engine::LaunchSpec>) {
    let place = match &spec.multi_node {
        Some(m) => format!(", node {} of {}", m.node_rank + 1, m.nnodes),
        None => String::new(),
    };
    let gpus: Vec<String> = spec.gpus.iter().map(u32::to_string).collect();
    let cpus = spec
        .cpus
        .as_ref()
        .map_or(String::new(), |c| format!(", CPUs {c}"));
    let _ = writeln!(
        out,
        "\n## {} ({}) on {node}{place}: GPUs {}{cpus}",
        spec.id,
        spec.role.name(),
        if gpus.is_empty() {
            "none".to_owned()
        } else {
            gpus.join(",")
        },
    );
    let Some(l) = launch else {
        let _ = writeln!(out, "# nothing started here: the leader's node serves it");
        return;
    };
    for (k, v) in &l.env {
        let _ = writeln!(out, "{k}={} \\", shell_quote(v));
    }
    let mut line = shell_quote(&l.program.display().to_string());
    for arg in &l.args {
        // A new line for each engine flag; `numactl --membind=0 --` stays on one.
        let flag = arg.starts_with("--") && arg != "--" && !arg.contains('=');
        if flag && !line.trim().is_empty() {
            let _ = writeln!(out, "{line} \\");
            line = "  ".to_owned();
        } else {
            line.push(' ');
        }
        line.push_str(&shell_quote(arg));
    }
    let _ = writeln!(out, "{line}");
}

/// Node `k`'s stand-in address: 10.255.x.y, never a real node's in a preview.
fn stand_in(k: usize) -> IpAddr {
    let k = k as u32 + 1;
    IpAddr::V4(Ipv4Addr::new(10, 255, (k >> 8) as u8, (k & 0xff) as u8))
}

/// `text` with each stand-in address replaced by its node's name (longest first, so
/// `10.255.0.1` does not match inside `10.255.0.12`).
fn names_for_addresses(text: &str, mut pairs: Vec<(String, &str)>) -> String {
    pairs.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
    let mut out = text.to_owned();
    for (addr, name) in pairs {
        out = out.replace(&addr, name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_become_names_without_prefix_clashes() {
        let names: Vec<String> = (0..12).map(|k| format!("n{k:02}")).collect();
        let pairs = (0..12)
            .map(|k| (stand_in(k).to_string(), names[k].as_str()))
            .collect();
        let text = format!("--host {} --master-addr {}:1", stand_in(0), stand_in(11));
        assert_eq!(
            names_for_addresses(&text, pairs),
            "--host n00 --master-addr n11:1"
        );
    }
}
