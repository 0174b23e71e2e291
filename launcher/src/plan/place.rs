//! GPU placement: NVLink domains, free GPUs, and where each instance goes.

use std::collections::{BTreeMap, BTreeSet};

use cohort_rank::topology::{NvlinkDomain, Topology};
use cohort_slurm::hostlist;

use super::{DomainSummary, Instance, PlanError, Role};

/// What the recipe asks for one role.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) role: Role,
    pub(super) gpus: usize,
    pub(super) count: Option<usize>,
    pub(super) per_domain: Option<usize>,
}

/// The GPUs of one node that belong to one domain.
#[derive(Debug, Clone)]
struct Slot {
    node: usize,
    gpus: Vec<u32>,
    free: Vec<bool>,
}

#[derive(Debug, Clone)]
pub(super) struct Dom {
    pub(super) label: String,
    slots: Vec<Slot>,
    free: usize,
    total: usize,
}

/// An instance placed: its domain and, per node, its GPU indices.
#[derive(Debug, Clone)]
pub(super) struct Placed {
    role: Role,
    domain: usize,
    shards: Vec<(usize, Vec<u32>)>,
}

/// All domains of the allocation, with what is still free.
#[derive(Debug)]
pub(super) struct Domains {
    pub(super) list: Vec<Dom>,
    hostnames: Vec<String>,
}

impl Domains {
    pub(super) fn new(topo: &Topology, excluded: &BTreeSet<&str>) -> Self {
        let mut list = Vec::new();
        for (domain, members) in topo.domains() {
            let mut slots: Vec<Slot> = Vec::new();
            for (node, gpu) in members {
                if excluded.contains(topo.nodes[node].hostname.as_str()) {
                    continue;
                }
                match slots.last_mut() {
                    Some(s) if s.node == node => {
                        s.gpus.push(gpu);
                        s.free.push(true);
                    }
                    _ => slots.push(Slot {
                        node,
                        gpus: vec![gpu],
                        free: vec![true],
                    }),
                }
            }
            if slots.is_empty() {
                continue;
            }
            let label = label(topo, &domain, slots.iter().map(|s| s.node), excluded);
            let total = slots.iter().map(|s| s.gpus.len()).sum();
            list.push(Dom {
                label,
                slots,
                free: total,
                total,
            });
        }
        Self {
            list,
            hostnames: topo.nodes.iter().map(|n| n.hostname.clone()).collect(),
        }
    }

    pub(super) fn total_gpus(&self) -> usize {
        self.list.iter().map(|d| d.total).sum()
    }

    /// Places every request, or says in numbers why it cannot be done.
    pub(super) fn place_all(&mut self, reqs: &[Request]) -> Result<Vec<Placed>, PlanError> {
        self.precheck(reqs)?;
        // Bigger instances first: they fragment least when placed early.
        let mut order: Vec<&Request> = reqs.iter().collect();
        order.sort_by_key(|r| (std::cmp::Reverse(r.gpus), r.role));
        let mut placed = Vec::new();
        if reqs.iter().all(|r| r.per_domain.is_some()) {
            for d in 0..self.list.len() {
                for r in &order {
                    for k in 0..r.per_domain.unwrap_or(0) {
                        let shards = alloc(&mut self.list[d], r.gpus).ok_or_else(|| {
                            let dom = &self.list[d];
                            PlanError::Infeasible(format!(
                                "`per_domain` cannot be met in NVLink domain `{}`: {} instance {} of {} \
                                 needs {} GPUs; the domain has {} of {} GPUs free{}",
                                dom.label,
                                r.role.name(),
                                k + 1,
                                r.per_domain.unwrap_or(0),
                                r.gpus,
                                dom.free,
                                dom.total,
                                fragmented_hint(dom, r.gpus),
                            ))
                        })?;
                        placed.push(Placed {
                            role: r.role,
                            domain: d,
                            shards,
                        });
                    }
                }
            }
            return Ok(placed);
        }
        let counts: Vec<usize> = order.iter().map(|r| r.count.unwrap_or(0)).collect();
        let groups = counts.iter().copied().fold(0, gcd).max(1);
        let per_group: Vec<usize> = counts.iter().map(|c| c / groups).collect();
        let mut left = counts.clone();
        // Whole groups first: each inside one domain, the emptiest domain first.
        'groups: for _ in 0..groups {
            for d in self.by_free() {
                if let Some((trial, got)) = try_group(&self.list[d], d, &order, &per_group) {
                    self.list[d] = trial;
                    for (l, n) in left.iter_mut().zip(&per_group) {
                        *l -= n;
                    }
                    placed.extend(got);
                    continue 'groups;
                }
            }
            break;
        }
        // What no whole group could take: one instance at a time, anywhere it fits.
        while left.iter().any(|&l| l > 0) {
            let i = (0..left.len())
                .filter(|&i| left[i] > 0)
                .max_by_key(|&i| (left[i] * 1000 / counts[i].max(1), std::cmp::Reverse(i)))
                .unwrap_or(0);
            let r = order[i];
            let mut done = false;
            for d in self.by_free() {
                if let Some(shards) = alloc(&mut self.list[d], r.gpus) {
                    placed.push(Placed {
                        role: r.role,
                        domain: d,
                        shards,
                    });
                    done = true;
                    break;
                }
            }
            if !done {
                let largest = self.list.iter().map(|d| d.free).max().unwrap_or(0);
                return Err(PlanError::Infeasible(format!(
                    "cannot place {} instance {} of {} ({} GPUs in one NVLink domain): the free GPUs \
                     are fragmented; the domain with most free GPUs has {largest}",
                    r.role.name(),
                    counts[i] - left[i] + 1,
                    counts[i],
                    r.gpus
                )));
            }
            left[i] -= 1;
        }
        Ok(placed)
    }

    /// Domain indices, most free GPUs first, then in topology order.
    fn by_free(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.list.len()).collect();
        idx.sort_by_key(|&d| (std::cmp::Reverse(self.list[d].free), d));
        idx
    }

    fn precheck(&self, reqs: &[Request]) -> Result<(), PlanError> {
        let largest = self.list.iter().map(|d| d.total).max().unwrap_or(0);
        let largest_label = self
            .list
            .iter()
            .max_by_key(|d| d.total)
            .map_or("-", |d| d.label.as_str());
        if largest == 0 {
            let r = &reqs[0];
            return Err(PlanError::Infeasible(format!(
                "{} instances need {} GPU{} each; this allocation has no GPUs",
                r.role.name(),
                r.gpus,
                if r.gpus == 1 { "" } else { "s" }
            )));
        }
        for r in reqs {
            if r.gpus > largest {
                return Err(PlanError::Infeasible(format!(
                    "{} instances need {} GPUs in one NVLink domain; the largest domain in this \
                     allocation has {largest} (`{largest_label}`)",
                    r.role.name(),
                    r.gpus,
                )));
            }
        }
        if reqs.iter().all(|r| r.per_domain.is_some()) {
            let need: usize = reqs
                .iter()
                .map(|r| r.gpus * r.per_domain.unwrap_or(0))
                .sum();
            if let Some(small) = self
                .list
                .iter()
                .filter(|d| d.total < need)
                .min_by_key(|d| d.total)
            {
                let parts: Vec<String> = reqs
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} × {}",
                            r.per_domain.unwrap_or(0),
                            r.role.name(),
                            r.gpus
                        )
                    })
                    .collect();
                return Err(PlanError::Infeasible(format!(
                    "`per_domain` asks for {need} GPUs in every NVLink domain ({}); domain `{}` has {}",
                    parts.join(" + "),
                    small.label,
                    small.total
                )));
            }
            return Ok(());
        }
        let need: usize = reqs.iter().map(|r| r.gpus * r.count.unwrap_or(0)).sum();
        let have = self.total_gpus();
        if need > have {
            let parts: Vec<String> = reqs
                .iter()
                .map(|r| format!("{} {} × {}", r.count.unwrap_or(0), r.role.name(), r.gpus))
                .collect();
            return Err(PlanError::Infeasible(format!(
                "the recipe needs {need} GPUs ({}); the allocation has {have}",
                parts.join(" + ")
            )));
        }
        Ok(())
    }

    /// Per-domain counts, for the summary.
    pub(super) fn summaries(&self, instances: &[Instance]) -> Vec<DomainSummary> {
        let mut counts: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
        for i in instances {
            counts.entry(i.domain.as_str()).or_default()[i.role as usize] += 1;
        }
        self.list
            .iter()
            .map(|d| {
                let c = counts.get(d.label.as_str()).copied().unwrap_or_default();
                DomainSummary {
                    label: d.label.clone(),
                    gpus: d.total,
                    prefill: c[Role::Prefill as usize],
                    decode: c[Role::Decode as usize],
                    aggregated: c[Role::Aggregated as usize],
                    idle_gpus: d.free,
                }
            })
            .collect()
    }
}

/// Places one group (`per_group[i]` instances of `order[i]`) in a copy of the domain;
/// `None` if it does not fit whole.
fn try_group(
    dom: &Dom,
    d: usize,
    order: &[&Request],
    per_group: &[usize],
) -> Option<(Dom, Vec<Placed>)> {
    let mut trial = dom.clone();
    let mut got = Vec::new();
    for (r, n) in order.iter().zip(per_group) {
        for _ in 0..*n {
            got.push(Placed {
                role: r.role,
                domain: d,
                shards: alloc(&mut trial, r.gpus)?,
            });
        }
    }
    Some((trial, got))
}

/// How a domain is named: a multi-node domain by the hostlist of its nodes (excluded
/// ones left out, unless all are), others by node (and PCI bus for a lone GPU).
pub(super) fn label(
    topo: &Topology,
    domain: &NvlinkDomain,
    nodes: impl Iterator<Item = usize>,
    excluded: &BTreeSet<&str>,
) -> String {
    match domain {
        NvlinkDomain::Fabric { .. } => {
            let all: Vec<&str> = nodes.map(|n| topo.nodes[n].hostname.as_str()).collect();
            let kept: Vec<&str> = all
                .iter()
                .copied()
                .filter(|h| !excluded.contains(h))
                .collect();
            hostlist::compress(if kept.is_empty() { &all } else { &kept })
        }
        other => other.to_string(),
    }
}

fn fragmented_hint(dom: &Dom, gpus: usize) -> String {
    if dom.free >= gpus {
        " (not in one node or adjacent free nodes)".to_owned()
    } else {
        String::new()
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Takes `gpus` GPUs of one domain: inside one node when they fit in one (an aligned
/// block, on the fullest node that has one, so big blocks stay whole); else whole
/// adjacent free nodes.
fn alloc(dom: &mut Dom, gpus: usize) -> Option<Vec<(usize, Vec<u32>)>> {
    if gpus == 0 || gpus > dom.free {
        return None;
    }
    let widest = dom.slots.iter().map(|s| s.gpus.len()).max().unwrap_or(0);
    if gpus <= widest {
        let mut best: Option<(usize, usize, Vec<usize>)> = None;
        for (si, s) in dom.slots.iter().enumerate() {
            let free = s.free.iter().filter(|f| **f).count();
            if free < gpus || best.as_ref().is_some_and(|(_, f, _)| *f <= free) {
                continue;
            }
            if let Some(pos) = block(&s.free, gpus) {
                best = Some((si, free, pos));
            }
        }
        let (si, _, pos) = best?;
        let s = &mut dom.slots[si];
        for &p in &pos {
            s.free[p] = false;
        }
        dom.free -= gpus;
        return Some(vec![(s.node, pos.iter().map(|&p| s.gpus[p]).collect())]);
    }
    // Multi-node: a window of wholly free, adjacent nodes.
    let n = dom.slots.len();
    for start in 0..n {
        let mut take = 0;
        let mut end = start;
        while end < n && take < gpus && dom.slots[end].free.iter().all(|f| *f) {
            take += dom.slots[end].gpus.len();
            end += 1;
        }
        if take >= gpus {
            let mut left = gpus;
            let mut shards = Vec::new();
            for s in &mut dom.slots[start..end] {
                let k = left.min(s.gpus.len());
                for f in &mut s.free[..k] {
                    *f = false;
                }
                shards.push((s.node, s.gpus[..k].to_vec()));
                left -= k;
            }
            dom.free -= gpus;
            return Some(shards);
        }
    }
    None
}

/// Positions of a free block of `k`: aligned to `k` where `k` divides the node's GPU
/// count (so a 4-GPU instance on HGX takes 0–3 or 4–7: one NUMA node), else the first
/// contiguous run, else the first `k` free.
fn block(free: &[bool], k: usize) -> Option<Vec<usize>> {
    let n = free.len();
    if n.is_multiple_of(k) {
        if let Some(start) = (0..n)
            .step_by(k)
            .find(|&s| free[s..s + k].iter().all(|f| *f))
        {
            return Some((start..start + k).collect());
        }
    }
    if let Some(start) = (0..=n - k).find(|&s| free[s..s + k].iter().all(|f| *f)) {
        return Some((start..start + k).collect());
    }
    let any: Vec<usize> = (0..n).filter(|&i| free[i]).take(k).collect();
    (any.len() == k).then_some(any)
}

/// Turns placements into numbered instances: per role, in domain then node/GPU order.
pub(super) fn number(mut placed: Vec<Placed>, domains: &Domains) -> Vec<Instance> {
    placed.sort_by(|a, b| (a.role, a.domain, &a.shards).cmp(&(b.role, b.domain, &b.shards)));
    let mut next = [0usize; 3];
    placed
        .into_iter()
        .map(|p| {
            let k = p.role as usize;
            let id = format!("{}-{}", p.role.name(), next[k]);
            next[k] += 1;
            Instance {
                id,
                role: p.role,
                domain: domains.list[p.domain].label.clone(),
                shards: p
                    .shards
                    .into_iter()
                    .map(|(node, gpus)| super::Shard {
                        node: domains.hostnames[node].clone(),
                        gpus,
                        cpus: Default::default(),
                        mem_nodes: Vec::new(),
                    })
                    .collect(),
                port: 0,
                feeds: Vec::new(),
            }
        })
        .collect()
}

/// Sets each prefill instance's decode partners: those of its own domain; where a
/// domain lacks one role, its instances are wired across domains and the reason said.
pub(super) fn wire_pools(
    instances: &mut [Instance],
    domains: &Domains,
    reqs: &[Request],
) -> Vec<String> {
    let mut notes = Vec::new();
    // Instance positions per (domain, role), built once.
    let mut by: BTreeMap<(&str, Role), Vec<usize>> = BTreeMap::new();
    for (k, i) in instances.iter().enumerate() {
        by.entry((i.domain.as_str(), i.role)).or_default().push(k);
    }
    let ids = |dom: &str, role: Role| -> Vec<String> {
        by.get(&(dom, role))
            .map(|v| v.iter().map(|&k| instances[k].id.clone()).collect())
            .unwrap_or_default()
    };
    if !instances.iter().any(|i| i.role == Role::Prefill) {
        return notes;
    }
    let decode_gpus = reqs
        .iter()
        .find(|r| r.role == Role::Decode)
        .map_or(0, |r| r.gpus);
    let all_decode: Vec<String> = instances
        .iter()
        .filter(|i| i.role == Role::Decode)
        .map(|i| i.id.clone())
        .collect();
    // Decode instances in domains without prefill: reachable only across domains.
    let mut orphans: Vec<String> = Vec::new();
    let mut assign: Vec<(Vec<usize>, Vec<String>)> = Vec::new();
    for d in &domains.list {
        let (p, dd) = (ids(&d.label, Role::Prefill), ids(&d.label, Role::Decode));
        if p.is_empty() && !dd.is_empty() {
            notes.push(format!(
                "{} in `{}` receive KV from prefill in other domains: the domain has no prefill instance",
                range_of(&dd),
                d.label
            ));
            orphans.extend(dd);
        }
    }
    for d in &domains.list {
        let Some(p) = by.get(&(d.label.as_str(), Role::Prefill)) else {
            continue;
        };
        let dd = ids(&d.label, Role::Decode);
        let feeds = if dd.is_empty() {
            let names: Vec<String> = p.iter().map(|&k| instances[k].id.clone()).collect();
            notes.push(format!(
                "{} in `{}` send KV to decode in other domains: the domain has no decode instance \
                 ({} of its {} GPUs free; a decode instance needs {decode_gpus})",
                range_of(&names),
                d.label,
                d.free,
                d.total
            ));
            all_decode.clone()
        } else {
            let mut f = dd;
            f.extend(orphans.iter().cloned());
            f
        };
        assign.push((p.clone(), feeds));
    }
    drop(by);
    for (members, feeds) in assign {
        for k in members {
            instances[k].feeds = feeds.clone();
        }
    }
    notes
}

/// `prefill-4..prefill-7` for a run of ids, else the list.
fn range_of(ids: &[String]) -> String {
    match (ids.first(), ids.last()) {
        (Some(a), Some(b)) if ids.len() > 2 => format!("{a}..{b}"),
        _ => ids.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_when_possible() {
        let mut f = vec![true; 8];
        f[1] = false;
        assert_eq!(block(&f, 4), Some(vec![4, 5, 6, 7]));
        assert_eq!(block(&f, 2), Some(vec![2, 3]));
        let g = [true, false, true, true, false, true];
        assert_eq!(block(&g, 4), Some(vec![0, 2, 3, 5]));
        assert_eq!(block(&g, 5), None);
        assert_eq!(block(&g, 3), Some(vec![0, 2, 3]));
    }
}
