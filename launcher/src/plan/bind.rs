//! CPU sets, memory binding and ports for placed instances.

use std::collections::{BTreeMap, BTreeSet};

use cohort_rank::topology::{CpuSet, Node, Topology};

use super::{FrontendPlacement, Instance, NodeCpus, PlanError};
use crate::recipe::Deploy;

/// Physical cores of a NUMA node that this process may use, as CPU groups (SMT siblings
/// together), in CPU order.
fn cores(node: &Node, numa: usize) -> Vec<CpuSet> {
    let n = &node.numa_nodes[numa];
    let usable = match &node.usable_cpus {
        Some(u) => n.cpus.intersection(u),
        None => n.cpus.clone(),
    };
    // CPU → its sibling group, built once (this runs for every node of a large plan).
    let mut sibling_of: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, s) in n.smt_siblings.iter().enumerate() {
        for &c in s.cpus() {
            sibling_of.insert(c, i);
        }
    }
    let mut done: BTreeSet<u32> = BTreeSet::new();
    let mut out = Vec::new();
    for &c in usable.cpus() {
        if done.contains(&c) {
            continue;
        }
        let group = match sibling_of.get(&c) {
            Some(&i) => n.smt_siblings[i].intersection(&usable),
            None => CpuSet::from_cpus([c]),
        };
        done.extend(group.cpus().iter().copied());
        out.push(group);
    }
    out
}

/// Takes whole cores from the front of `pool` until at least `cpus` CPUs are taken.
fn take(pool: &mut Vec<CpuSet>, cpus: u32) -> CpuSet {
    let mut got: Vec<u32> = Vec::new();
    let mut k = 0;
    while (got.len() as u32) < cpus && k < pool.len() {
        got.extend_from_slice(pool[k].cpus());
        k += 1;
    }
    pool.drain(..k);
    CpuSet::from_cpus(got)
}

/// Binds every shard to cores of its GPUs' NUMA nodes. Returns the CPUs kept for
/// cohort per node, and the frontend's CPUs on rank 0's node.
pub(super) fn bind_cpus(
    topo: &Topology,
    instances: &mut [Instance],
    deploy: &Deploy,
    rank0: usize,
) -> Result<(Vec<NodeCpus>, CpuSet), PlanError> {
    let index: BTreeMap<&str, usize> = topo
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.hostname.as_str(), i))
        .collect();
    // Shards per node: (instance, shard).
    let mut by_node: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for (ii, inst) in instances.iter().enumerate() {
        for (si, s) in inst.shards.iter().enumerate() {
            by_node
                .entry(index[s.node.as_str()])
                .or_default()
                .push((ii, si));
        }
    }
    by_node.entry(rank0).or_default();
    let mut reserved = Vec::new();
    let mut frontend = CpuSet::new();
    for (&ni, shards) in &by_node {
        let node = &topo.nodes[ni];
        let mut pools: Vec<Vec<CpuSet>> =
            (0..node.numa_nodes.len()).map(|m| cores(node, m)).collect();
        // cohort's own CPUs (and the frontend's on rank 0) from the lowest NUMA nodes.
        let mut keep = |want: u32| {
            let mut got = CpuSet::new();
            for pool in pools.iter_mut() {
                if got.len() as u32 >= want {
                    break;
                }
                got = got.union(&take(pool, want - got.len() as u32));
            }
            got
        };
        let mine = keep(deploy.reserved_cpus);
        if ni == rank0 {
            frontend = keep(deploy.frontend.cpus);
        }
        reserved.push(NodeCpus {
            node: node.hostname.clone(),
            cpus: mine,
        });
        // Each NUMA node's cores go to the shards with GPUs there, by GPU count.
        let numa_pos = |id: u32| node.numa_nodes.iter().position(|n| n.id == id);
        let mut weights: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); node.numa_nodes.len()];
        for &(ii, si) in shards {
            let mut per: BTreeMap<usize, usize> = BTreeMap::new();
            for &g in &instances[ii].shards[si].gpus {
                // A GPU of unknown affinity counts against the first NUMA node.
                let m = node.gpus[g as usize]
                    .numa_node
                    .and_then(numa_pos)
                    .unwrap_or(0);
                *per.entry(m).or_default() += 1;
            }
            for (m, w) in per {
                weights[m].push((ii, si, w));
            }
        }
        let mut cpus: BTreeMap<(usize, usize), (Vec<u32>, BTreeSet<u32>)> = BTreeMap::new();
        for (m, ws) in weights.iter().enumerate() {
            if ws.is_empty() {
                continue;
            }
            let units = std::mem::take(&mut pools[m]);
            let total_w: usize = ws.iter().map(|w| w.2).sum();
            let n = units.len();
            let mut shares: Vec<usize> = ws.iter().map(|w| n * w.2 / total_w).collect();
            let mut rest = n - shares.iter().sum::<usize>();
            for s in shares.iter_mut() {
                if rest == 0 {
                    break;
                }
                *s += 1;
                rest -= 1;
            }
            if let Some(k) = shares.iter().position(|s| *s == 0) {
                return Err(PlanError::Infeasible(format!(
                    "node `{}`: NUMA node {} has {n} free cores for {} instances (after {} CPUs kept \
                     for cohort{}); `{}` gets none — lower `deploy.reserved_cpus` or \
                     `deploy.frontend.cpus`, or place fewer instances",
                    node.hostname,
                    node.numa_nodes[m].id,
                    ws.len(),
                    deploy.reserved_cpus,
                    if ni == rank0 { " and the frontend" } else { "" },
                    instances[ws[k].0].id
                )));
            }
            let mut it = units.into_iter();
            for (w, share) in ws.iter().zip(shares) {
                let e = cpus.entry((w.0, w.1)).or_default();
                for unit in it.by_ref().take(share) {
                    e.0.extend_from_slice(unit.cpus());
                }
                e.1.insert(node.numa_nodes[m].id);
            }
        }
        for ((ii, si), (set, mems)) in cpus {
            let s = &mut instances[ii].shards[si];
            s.cpus = CpuSet::from_cpus(set);
            s.mem_nodes = mems.into_iter().collect();
        }
    }
    Ok((reserved, frontend))
}

/// Gives each instance a port block `[port, port + stride)` free on all its nodes and
/// clear of the frontend's port on rank 0's node.
pub(super) fn assign_ports(
    instances: &mut [Instance],
    deploy: &Deploy,
    frontend: &FrontendPlacement,
) -> Result<(), PlanError> {
    let stride = u32::from(deploy.port_stride);
    let base = u32::from(deploy.base_port);
    let mut used: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for inst in instances.iter_mut() {
        let mut k = 0u32;
        loop {
            let start = base + k * stride;
            let end = start + stride;
            if end > u32::from(u16::MAX) + 1 {
                return Err(PlanError::Infeasible(format!(
                    "`{}` gets no port block: blocks of {stride} from `deploy.base_port` {base} run past \
                     65535; lower `deploy.base_port` or `deploy.port_stride`",
                    inst.id
                )));
            }
            let clash_frontend = inst.shards.iter().any(|s| s.node == frontend.node)
                && (start..end).contains(&u32::from(frontend.port));
            let taken = inst
                .shards
                .iter()
                .any(|s| used.get(&s.node).is_some_and(|u| u.contains(&k)));
            if !clash_frontend && !taken {
                break;
            }
            k += 1;
        }
        for s in &inst.shards {
            used.entry(s.node.clone()).or_default().insert(k);
        }
        inst.port = (base + k * stride) as u16;
    }
    Ok(())
}
