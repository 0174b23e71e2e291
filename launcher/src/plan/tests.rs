use std::collections::{BTreeMap, BTreeSet};

use cohort_rank::topology::emulated::{CpuShape, Kind};
use cohort_rank::topology::{CpuSet, Topology};
use proptest::prelude::*;

use super::*;
use crate::recipe::{Deploy, Frontend, Shape};

fn shape(gpus: u32, count: Option<u32>, per_domain: Option<u32>) -> Shape {
    Shape {
        gpus,
        tp: None,
        dp: 1,
        ep: 1,
        count,
        per_domain,
    }
}

fn disagg(p: Shape, d: Shape) -> Deploy {
    Deploy {
        mode: Mode::Disaggregated,
        prefill: Some(p),
        decode: Some(d),
        aggregated: None,
        base_port: 30_000,
        port_stride: 10,
        reserved_cpus: 2,
        exclude_unhealthy: false,
        frontend: Frontend::default(),
        topology: None,
    }
}

fn hosts(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i:02}")).collect()
}

fn join(a: Topology, b: Topology) -> Topology {
    let mut t = a;
    t.nodes.extend(b.nodes);
    t
}

#[test]
fn hgx_binds_gpus_0_3_to_numa_0_and_4_7_to_numa_1() {
    let topo = Kind::HgxH100.build(&hosts("h", 2), None);
    let p = plan(
        &topo,
        &disagg(shape(4, None, Some(1)), shape(4, None, Some(1))),
        &[],
    )
    .unwrap();
    let numa = |n: usize| &topo.nodes[0].numa_nodes[n].cpus;
    for inst in &p.instances {
        let s = &inst.shards[0];
        let local = if s.gpus == [0, 1, 2, 3] { 0 } else { 1 };
        assert!(s.gpus == [0, 1, 2, 3] || s.gpus == [4, 5, 6, 7], "{s:?}");
        assert_eq!(s.mem_nodes, [local as u32]);
        assert_eq!(
            s.cpus.intersection(numa(local)),
            s.cpus,
            "{}: {}",
            inst.id,
            s.cpus
        );
        assert!(s.cpus.len() >= 40, "most of the socket: {}", s.cpus);
    }
    assert_eq!(p.summary.prefill_local_share, 1.0);
}

#[test]
fn nvl72_decode_spans_adjacent_trays_of_one_rack() {
    let topo = Kind::Gb200Nvl72.build(&hosts("n", 36), None);
    let p = plan(
        &topo,
        &disagg(shape(4, Some(16), None), shape(8, Some(8), None)),
        &[],
    )
    .unwrap();
    for inst in p.instances.iter().filter(|i| i.role == Role::Decode) {
        assert_eq!(inst.shards.len(), 2);
        let a: usize = inst.shards[0].node[1..].parse().unwrap();
        let b: usize = inst.shards[1].node[1..].parse().unwrap();
        assert_eq!(b, a + 1, "{inst:?}");
        assert_eq!((a - 1) / 18, (b - 1) / 18, "same rack");
    }
    // Every prefill feeds decode of its own rack only.
    for inst in p.instances.iter().filter(|i| i.role == Role::Prefill) {
        for f in &inst.feeds {
            let d = p.instances.iter().find(|j| &j.id == f).unwrap();
            assert_eq!(d.domain, inst.domain);
        }
        assert_eq!(inst.feeds.len(), 4);
    }
    assert!(p.cross_domain.is_empty());
}

#[test]
fn infeasible_requests_give_numbers() {
    let topo = Kind::Gb200Nvl72.build(&hosts("n", 4), None);
    let e = plan(
        &topo,
        &disagg(shape(4, Some(1), None), shape(32, Some(1), None)),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "decode instances need 32 GPUs in one NVLink domain; the largest domain in this allocation has 16 (`n[01-04]`)"
    );
    let hgx = Kind::HgxH100.build(&hosts("h", 2), None);
    let e = plan(
        &hgx,
        &disagg(shape(16, Some(1), None), shape(8, Some(1), None)),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("prefill instances need 16 GPUs in one NVLink domain; the largest domain in this allocation has 8"), "{e}");
    let e = plan(
        &hgx,
        &disagg(shape(4, Some(3), None), shape(4, Some(2), None)),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "the recipe needs 20 GPUs (3 prefill × 4 + 2 decode × 4); the allocation has 16"
    );
    let e = plan(
        &hgx,
        &disagg(shape(4, Some(1), None), shape(4, Some(1), None)),
        &["zz".into()],
    )
    .unwrap_err();
    assert!(matches!(e, PlanError::UnknownNode(n) if n == "zz"));
}

#[test]
fn exclude_replans_without_the_node() {
    let topo = Kind::HgxH100.build(&hosts("h", 3), None);
    let d = disagg(shape(4, None, Some(1)), shape(4, None, Some(1)));
    let p = plan(&topo, &d, &["h01".into()]).unwrap();
    assert_eq!(p.instances.len(), 4);
    assert!(p.instances.iter().all(|i| i.shards[0].node != "h01"));
    assert_eq!(
        p.frontend.node, "h02",
        "rank 0 moves to the first node left"
    );
    assert_eq!(p.summary.gpus, 16);
}

#[test]
fn a_domain_without_decode_is_reported_as_crossing() {
    // Two HGX nodes, 3 prefill × 4 and 1 decode × 8: one node holds the decode, the
    // other two prefill that must send KV across.
    let topo = Kind::HgxH100.build(&hosts("h", 2), None);
    let p = plan(
        &topo,
        &disagg(shape(4, Some(2), None), shape(8, Some(1), None)),
        &[],
    )
    .unwrap();
    assert_eq!(p.cross_domain.len(), 2, "{:?}", p.cross_domain);
    assert!(p
        .cross_domain
        .iter()
        .any(|c| c.contains("no decode instance")));
    assert_eq!(p.summary.prefill_local_share, 0.0);
}

#[test]
fn frontend_port_and_usable_cpus_are_respected() {
    let mut topo = Kind::HgxH100.build(&hosts("h", 1), None);
    // Slurm's cgroup gives this job only half of each socket.
    topo.nodes[0].usable_cpus = Some(CpuSet::range(0, 28).union(&CpuSet::range(56, 28)));
    let mut d = disagg(shape(4, None, Some(1)), shape(2, None, Some(2)));
    d.frontend.port = 30_005;
    let p = plan(&topo, &d, &[]).unwrap();
    let usable = topo.nodes[0].usable_cpus.clone().unwrap();
    for i in &p.instances {
        assert!(i.shards[0].cpus.difference(&usable).is_empty());
        assert!(!(i.port..i.port + 10).contains(&30_005), "{}", i.port);
    }
    assert!(p.frontend.cpus.difference(&usable).is_empty());
}

// ---- property tests ----

fn topology() -> impl Strategy<Value = Topology> {
    (0usize..40, 0usize..6, 0usize..3).prop_map(|(nvl, hgx, cpu)| {
        let mut t = Kind::Gb200Nvl72.build(&hosts("g", nvl), None);
        t = join(t, Kind::HgxH200.build(&hosts("h", hgx), None));
        join(
            t,
            Kind::Cpu.build(&hosts("c", cpu), Some(CpuShape::default())),
        )
    })
}

fn deploy() -> impl Strategy<Value = Deploy> {
    let gpus = prop_oneof![Just(1u32), Just(2), Just(4), Just(8), Just(16)];
    (
        gpus.clone(),
        gpus,
        1u32..12,
        1u32..6,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(gp, gd, np, nd, per_domain, aggregated)| {
            let mk = |g, n: u32| {
                if per_domain {
                    shape(g, None, Some(n.div_ceil(3)))
                } else {
                    shape(g, Some(n), None)
                }
            };
            let mut d = disagg(mk(gp, np), mk(gd, nd));
            if aggregated {
                d.mode = Mode::Aggregated;
                d.aggregated = d.prefill.take();
                d.decode = None;
            }
            d
        })
}

fn check(topo: &Topology, d: &Deploy, p: &Plan) -> Result<(), TestCaseError> {
    let node = |h: &str| topo.nodes.iter().find(|n| n.hostname == h).unwrap();
    let mut gpus_seen = BTreeSet::new();
    let mut cpus_by_node: BTreeMap<&str, Vec<&CpuSet>> = BTreeMap::new();
    let mut ports: BTreeSet<(&str, u16)> = BTreeSet::new();
    for inst in &p.instances {
        let domains: BTreeSet<_> = inst
            .shards
            .iter()
            .flat_map(|s| {
                s.gpus
                    .iter()
                    .map(|g| &node(&s.node).gpus[*g as usize].nvlink_domain)
            })
            .collect();
        prop_assert_eq!(domains.len(), 1, "{} spans domains", inst.id);
        let per_node = node(&inst.shards[0].node).gpus.len();
        if inst.gpu_count() <= per_node {
            prop_assert_eq!(
                inst.shards.len(),
                1,
                "{} split though it fits a node",
                inst.id
            );
        }
        for s in &inst.shards {
            let n = node(&s.node);
            for g in &s.gpus {
                prop_assert!(
                    gpus_seen.insert((s.node.clone(), *g)),
                    "GPU {}/{} twice",
                    s.node,
                    g
                );
            }
            // NUMA-local: every CPU belongs to a NUMA node of one of the shard's GPUs.
            let local: BTreeSet<u32> = s
                .gpus
                .iter()
                .filter_map(|g| n.gpus[*g as usize].numa_node)
                .collect();
            prop_assert_eq!(
                &s.mem_nodes.iter().copied().collect::<BTreeSet<_>>(),
                &local
            );
            let allowed = n
                .numa_nodes
                .iter()
                .filter(|m| local.contains(&m.id))
                .fold(CpuSet::new(), |a, m| a.union(&m.cpus));
            prop_assert!(!s.cpus.is_empty(), "{} has no CPU", inst.id);
            prop_assert!(
                s.cpus.difference(&allowed).is_empty(),
                "{} CPUs {} not local",
                inst.id,
                s.cpus
            );
            cpus_by_node.entry(&s.node).or_default().push(&s.cpus);
            prop_assert!(
                ports.insert((&s.node, inst.port)),
                "port {} twice on {}",
                inst.port,
                s.node
            );
        }
    }
    for r in &p.reserved {
        cpus_by_node.entry(&r.node).or_default().push(&r.cpus);
    }
    cpus_by_node
        .entry(&p.frontend.node)
        .or_default()
        .push(&p.frontend.cpus);
    for (n, sets) in &cpus_by_node {
        for (i, a) in sets.iter().enumerate() {
            for b in &sets[i + 1..] {
                prop_assert!(a.is_disjoint(b), "CPU sets overlap on {}: {} / {}", n, a, b);
            }
        }
    }
    // Exactly what was asked.
    let domains = p.domains.len() as u32;
    for (role, s) in [
        (Role::Prefill, &d.prefill),
        (Role::Decode, &d.decode),
        (Role::Aggregated, &d.aggregated),
    ] {
        let want = s.as_ref().map_or(0, |s| {
            s.count
                .unwrap_or_else(|| s.per_domain.unwrap_or(0) * domains)
        });
        let got = p.instances.iter().filter(|i| i.role == role).count() as u32;
        prop_assert_eq!(got, want, "{:?}", role);
    }
    let used: usize = p.instances.iter().map(Instance::gpu_count).sum();
    prop_assert_eq!(used + p.summary.idle_gpus, p.summary.gpus);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_valid_deterministic_or_refused_in_numbers(topo in topology(), d in deploy()) {
        let first = plan(&topo, &d, &[]);
        let again = plan(&topo, &d, &[]);
        match (first, again) {
            (Ok(p), Ok(q)) => {
                prop_assert_eq!(&p, &q, "not deterministic");
                check(&topo, &d, &p)?;
            }
            (Err(e), Err(f)) => {
                let msg = e.to_string();
                prop_assert_eq!(&msg, &f.to_string());
                prop_assert!(msg.chars().any(|c| c.is_ascii_digit()), "no numbers: {}", msg);
            }
            (a, b) => prop_assert!(false, "differs between runs: {:?} / {:?}", a.is_ok(), b.is_ok()),
        }
    }

    #[test]
    fn excluding_nodes_never_uses_them(topo in topology(), d in deploy(), k in 0usize..3) {
        let names: Vec<String> = topo.nodes.iter().step_by(k + 2).map(|n| n.hostname.clone()).collect();
        if let Ok(p) = plan(&topo, &d, &names) {
            for i in &p.instances {
                for s in &i.shards {
                    prop_assert!(!names.contains(&s.node));
                }
            }
            prop_assert!(!names.contains(&p.frontend.node));
        }
    }
}
