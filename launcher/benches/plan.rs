//! Planning time at scale: 16 GB200 NVL72 racks (1,152 GPUs) and 512 HGX H100 nodes
//! (4,096 GPUs). Target: under 20 ms each.
//!
//! `CARGO_TARGET_DIR=target-plan cargo bench -p cohort --bench plan`

use cohort::plan::plan;
use cohort::recipe::{Deploy, Frontend, Mode, Shape};
use cohort_rank::topology::emulated::Kind;
use criterion::{criterion_group, criterion_main, Criterion};

fn shape(gpus: u32, count: u32) -> Shape {
    Shape {
        gpus,
        tp: None,
        dp: 1,
        ep: 1,
        count: Some(count),
        per_domain: None,
    }
}

fn deploy(prefill: Shape, decode: Shape) -> Deploy {
    Deploy {
        mode: Mode::Disaggregated,
        prefill: Some(prefill),
        decode: Some(decode),
        aggregated: None,
        base_port: 30_000,
        port_stride: 10,
        reserved_cpus: 2,
        exclude_unhealthy: false,
        frontend: Frontend::default(),
        topology: None,
    }
}

fn bench(c: &mut Criterion) {
    let racks: Vec<String> = (1..=16)
        .flat_map(|r| (1..=18).map(move |n| format!("gb200-r{r:02}-n{n:02}")))
        .collect();
    let nvl72 = Kind::Gb200Nvl72.build(&racks, None);
    assert_eq!(nvl72.gpu_count(), 1152);
    // Per rack: 8 prefill × 4 GPUs + 4 decode × 8 GPUs (2 trays each), 8 GPUs idle.
    let d = deploy(shape(4, 128), shape(8, 64));
    assert_eq!(plan(&nvl72, &d, &[]).unwrap().instances.len(), 192);
    c.bench_function("plan 16 NVL72 racks (1152 GPUs, 192 instances)", |b| {
        b.iter(|| plan(&nvl72, &d, &[]).unwrap())
    });

    let hosts: Vec<String> = (1..=512).map(|n| format!("h100-{n:04}")).collect();
    let hgx = Kind::HgxH100.build(&hosts, None);
    assert_eq!(hgx.gpu_count(), 4096);
    // Per node: one prefill on GPUs 0-3, one decode on 4-7.
    let d = deploy(shape(4, 512), shape(4, 512));
    assert_eq!(plan(&hgx, &d, &[]).unwrap().instances.len(), 1024);
    c.bench_function("plan 512 HGX nodes (4096 GPUs, 1024 instances)", |b| {
        b.iter(|| plan(&hgx, &d, &[]).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
