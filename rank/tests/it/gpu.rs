//! GPU preflight against fixtures (`tests/fixtures/gpu/*.json`): what NVML reports on
//! healthy HGX H100 and GB200 nodes and on broken ones, plus file-system trees for the
//! IMEX channel and GPUDirect RDMA. The fixtures stand in for real GPUs; a capture from a
//! GPU node (`NvmlSource::read`, saved as JSON) drops in beside them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cohort_rank::gpu::{
    check, compare_cliques, judge_p2p, preflight, Check, Clique, CliqueGroup, FixtureSource,
    GpuReading, GpuSource, GpuSourceError, P2pMeasurement, P2pPair, Readings, Report, Requirements,
    Severity, READINGS_VERSION,
};
use proptest::prelude::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpu");
const CLUSTER: &str = "1b5ee1f5-0e6d-4a3e-a2a1-6f5b2e0b4c11";

fn fixture(name: &str) -> Readings {
    let path = Path::new(FIXTURES).join(name);
    FixtureSource::from_file(&path).unwrap().read().unwrap()
}

/// A file-system root for the node-wide checks, removed on drop.
struct Root(PathBuf);

impl Root {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cohort-gpu-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `text` at `rel`, making the directories above it.
    fn file(self, rel: &str, text: &str) -> Self {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What an HGX H100 node running 8 GPUs of a plan needs, KV leaving over InfiniBand.
fn h100_reqs() -> Requirements {
    Requirements {
        gpus: (0..8).collect(),
        gpus_on_node: Some(8),
        min_free_fraction: Some(0.9),
        needs_gpudirect_rdma: true,
        ..Requirements::default()
    }
}

/// What a GB200 tray needs when one decode instance spans it and other trays.
fn tray_reqs(expected: Option<u32>) -> Requirements {
    Requirements {
        gpus: (0..4).collect(),
        gpus_on_node: Some(4),
        min_free_fraction: Some(0.9),
        cliques: vec![CliqueGroup {
            instance: "decode-0".into(),
            gpus: (0..4).collect(),
            expected: expected.map(|clique_id| Clique {
                cluster_uuid: CLUSTER.into(),
                clique_id,
            }),
        }],
        needs_imex: true,
        ..Requirements::default()
    }
}

fn peermem_root() -> Root {
    Root::new().file("sys/module/nvidia_peermem/version", "570.124.06\n")
}

fn imex_root() -> Root {
    Root::new().file("dev/nvidia-caps-imex-channels/channel0", "")
}

/// Checks fixture `name` as node `node`, with files below `root`.
fn checked(node: &str, name: &str, root: &Root, reqs: &Requirements) -> Report {
    check(node, &fixture(name), &root.0, reqs)
}

/// `(GPU index, check, severity)` of each finding, in report order.
fn summary(r: &Report) -> Vec<(Option<u32>, Check, Severity)> {
    r.findings
        .iter()
        .map(|f| (f.gpu.as_ref().map(|g| g.index), f.check, f.severity))
        .collect()
}

/// Asserts that `text` holds each of `parts`, showing `text` when not.
#[track_caller]
fn contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "`{part}` not in: {text}");
    }
}

#[test]
fn healthy_fixtures_pass() {
    let root = peermem_root();
    let r = checked("h100-a01", "h100-healthy.json", &root, &h100_reqs());
    assert!(r.passed() && r.findings.is_empty(), "{r}");
    assert!(
        r.notes.iter().any(|n| n.contains("nvidia_peermem")),
        "{:?}",
        r.notes
    );
    assert_eq!(r.to_string().lines().count(), 1);
    assert!(
        r.to_string().starts_with("h100-a01: GPU preflight passed"),
        "{r}"
    );

    let root = imex_root();
    let r = checked(
        "gb200-t01",
        "gb200-tray-healthy.json",
        &root,
        &tray_reqs(Some(32766)),
    );
    assert!(r.passed() && r.findings.is_empty(), "{r}");
    assert_eq!(r.cliques.len(), 1);
    assert_eq!(r.cliques[0].gpus, [0, 1, 2, 3]);
    assert_eq!(r.cliques[0].clique.clique_id, 32766);
}

#[test]
fn uncorrectable_ecc_on_gpu3_names_gpu3() {
    let root = peermem_root();
    let r = checked("h100-a03", "h100-ecc-gpu3.json", &root, &h100_reqs());
    assert!(!r.passed());
    assert_eq!(
        summary(&r),
        [
            (Some(3), Check::EccVolatile, Severity::Error),
            (Some(3), Check::RowRemap, Severity::Error),
            // GPU 6's single error is history (remapped, none since the driver loaded).
            (Some(6), Check::EccAggregate, Severity::Warning),
        ]
    );
    let ecc = &r.findings[0];
    assert_eq!(
        ecc.gpu.as_ref().unwrap().uuid.as_deref(),
        Some("GPU-c05d8f12-9e4a-4b37-a6c1-8e2f0d7b4c94")
    );
    assert!(
        ecc.measured.starts_with("2 uncorrectable ECC error(s)"),
        "{}",
        ecc.measured
    );
    contains(
        &ecc.fix,
        &[
            "`nvidia-smi -q -i 3 -d ECC,ROW_REMAPPER`",
            "scontrol update nodename=h100-a03 state=drain reason=",
        ],
    );
    let first = r.to_string();
    let first = first.lines().next().unwrap();
    assert!(
        first.starts_with(
            "h100-a03 GPU 3 (GPU-c05d8f12-9e4a-4b37-a6c1-8e2f0d7b4c94): error ecc_volatile: 2 uncorrectable"
        ),
        "{first}"
    );
    contains(&r.findings[1].measured, &["pending"]);
}

#[test]
fn incomplete_fabric_names_each_gpu_and_its_state() {
    let root = imex_root();
    let r = checked(
        "gb200-t07",
        "gb200-fabric-incomplete.json",
        &root,
        &tray_reqs(None),
    );
    // The clique check does not pile onto GPUs whose registration already failed.
    assert_eq!(
        summary(&r),
        [
            (Some(2), Check::Fabric, Severity::Error),
            (Some(3), Check::Fabric, Severity::Error),
        ]
    );
    contains(&r.findings[0].measured, &["in progress"]);
    contains(&r.findings[1].measured, &["return code 999"]);
    assert_eq!(r.findings[1].expected, "state completed, status success");
    assert_eq!(r.cliques[0].gpus, [0, 1]);
}

#[test]
fn a_gpu_in_another_clique_is_named() {
    let root = imex_root();
    let readings = fixture("gb200-mixed-cliques.json");
    let r = check("gb200-t02", &readings, &root.0, &tray_reqs(None));
    assert_eq!(summary(&r), [(Some(3), Check::Clique, Severity::Error)]);
    let f = &r.findings[0];
    assert!(
        f.measured.starts_with(&format!("clique {CLUSTER}/32767")),
        "{}",
        f.measured
    );
    contains(&f.expected, &[&format!("{CLUSTER}/32766")]);

    // When the plan placed the instance in 32767, the other three are the odd ones.
    let r = check("gb200-t02", &readings, &root.0, &tray_reqs(Some(32767)));
    let flagged: Vec<_> = summary(&r).into_iter().map(|(g, c, _)| (g, c)).collect();
    assert_eq!(
        flagged,
        [
            (Some(0), Check::Clique),
            (Some(1), Check::Clique),
            (Some(2), Check::Clique),
        ]
    );
    contains(&r.findings[0].expected, &["the plan's"]);
}

#[test]
fn missing_gpus_are_counted_and_named() {
    let root = peermem_root();
    let r = checked("h100-b11", "h100-missing-gpus.json", &root, &h100_reqs());
    assert_eq!(
        summary(&r),
        [
            (None, Check::GpuCount, Severity::Error),
            (Some(6), Check::GpuMissing, Severity::Error),
            (Some(7), Check::GpuMissing, Severity::Error),
        ]
    );
    assert_eq!(
        r.findings[0].measured,
        "NVML sees 6 GPUs (indices 0, 1, 2, 3, 4, 5)"
    );
    assert_eq!(r.findings[0].expected, "8 GPUs on this node");
    assert_eq!(r.findings[1].gpu.as_ref().unwrap().uuid, None);
    contains(&r.findings[1].fix, &["Xid 79"]);
    let text = r.to_string();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("h100-b11 GPU 6: error gpu_missing"),
        "{text}"
    );

    // A plan using GPUs 0-3 only still hears that the node lost GPUs.
    let half = Requirements {
        gpus: (0..4).collect(),
        ..h100_reqs()
    };
    let r = checked("h100-b11", "h100-missing-gpus.json", &root, &half);
    assert_eq!(summary(&r), [(None, Check::GpuCount, Severity::Error)]);
}

#[test]
fn low_free_memory_is_measured_against_the_fraction_or_the_amount() {
    let root = peermem_root();
    let readings = fixture("h100-low-free-memory.json");
    let r = check("h100-c02", &readings, &root.0, &h100_reqs());
    assert_eq!(summary(&r), [(Some(5), Check::FreeMemory, Severity::Error)]);
    let f = &r.findings[0];
    assert_eq!(f.measured, "20480 MiB free of 81559 MiB (25%)");
    // ceil(0.9 × 81559) = 73404
    assert_eq!(f.expected, "at least 73404 MiB free (90% of the total)");
    contains(&f.fix, &["--query-compute-apps", "-i 5"]);

    let by_amount = Requirements {
        min_free_fraction: None,
        min_free_mib: Some(16_384),
        ..h100_reqs()
    };
    assert!(check("h100-c02", &readings, &root.0, &by_amount).passed());
    let more = Requirements {
        min_free_mib: Some(30_000),
        ..by_amount
    };
    let r = check("h100-c02", &readings, &root.0, &more);
    assert_eq!(r.findings[0].expected, "at least 30000 MiB free");
}

#[test]
fn missing_imex_channel_fails_the_node_and_a_channel_passes_it() {
    let readings = fixture("gb200-tray-healthy.json");
    let empty = Root::new().file("proc/devices", "Character devices:\n195 nvidia\n");
    let r = check("gb200-t03", &readings, &empty.0, &tray_reqs(None));
    assert_eq!(summary(&r), [(None, Check::ImexChannel, Severity::Error)]);
    let f = &r.findings[0];
    contains(&f.measured, &["dev/nvidia-caps-imex-channels"]);
    contains(&f.measured, &["no `nvidia-caps-imex-channels` device"]);
    contains(&f.fix, &["NVreg_CreateImexChannel0=1", "mknod"]);
    assert!(
        r.to_string().starts_with("gb200-t03: error imex_channel:"),
        "{r}"
    );

    // Something that is not a channel does not count.
    let odd = Root::new().file("dev/nvidia-caps-imex-channels/channels.txt", "");
    assert!(!check("gb200-t03", &readings, &odd.0, &tray_reqs(None)).passed());

    let ok = Root::new().file("dev/nvidia-caps-imex-channels/channel7", "");
    let r = check("gb200-t03", &readings, &ok.0, &tray_reqs(None));
    assert!(r.passed(), "{r}");
    assert!(
        r.notes.iter().any(|n| n.ends_with("channel7`")),
        "{:?}",
        r.notes
    );

    // Not asked for: not checked.
    let no_imex = Requirements {
        needs_imex: false,
        ..tray_reqs(None)
    };
    assert!(check("gb200-t03", &readings, &empty.0, &no_imex).passed());
}

#[test]
fn missing_peermem_fails_unless_dma_buf_can_stand_in() {
    let readings = fixture("h100-healthy.json");
    let proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.124.06\n";
    let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.124.06\n";
    let bare = Root::new()
        .file("proc/sys/kernel/osrelease", "6.8.0-45-generic\n")
        .file("proc/driver/nvidia/version", proprietary);
    let r = check("h100-d04", &readings, &bare.0, &h100_reqs());
    assert_eq!(summary(&r), [(None, Check::GpudirectRdma, Severity::Error)]);
    let f = &r.findings[0];
    contains(&f.measured, &["/sys/module/nvidia_peermem"]);
    contains(&f.measured, &["proprietary", "6.8.0-45-generic"]);
    contains(&f.fix, &["modprobe nvidia-peermem"]);

    let dmabuf = Root::new()
        .file("proc/sys/kernel/osrelease", "6.8.0-45-generic\n")
        .file("proc/driver/nvidia/version", open);
    let r = check("h100-d04", &readings, &dmabuf.0, &h100_reqs());
    assert!(r.passed(), "{r}");
    assert!(
        r.notes.iter().any(|n| n.contains("DMA-BUF")),
        "{:?}",
        r.notes
    );

    let old_kernel = Root::new()
        .file("proc/sys/kernel/osrelease", "5.4.0-150-generic\n")
        .file("proc/driver/nvidia/version", open);
    assert!(!check("h100-d04", &readings, &old_kernel.0, &h100_reqs()).passed());

    // Mellanox's older module, as NCCL looks for it.
    let legacy = Root::new().file("sys/kernel/mm/memory_peers/nv_mem/version", "1.3\n");
    assert!(check("h100-d04", &readings, &legacy.0, &h100_reqs()).passed());
}

/// A source that never answers, as on a node without the driver.
struct NoDriver;

impl GpuSource for NoDriver {
    fn read(&self) -> Result<Readings, GpuSourceError> {
        Err(GpuSourceError::NoLibrary {
            tried: "tried `libnvidia-ml.so.1`: not found".into(),
        })
    }
}

#[test]
fn no_nvml_is_a_finding_when_gpus_are_needed() {
    let root = Root::new();
    let r = preflight("cpu-01", &NoDriver, &root.0, &h100_reqs());
    let checks: Vec<Check> = r.findings.iter().map(|f| f.check).collect();
    assert_eq!(checks, [Check::Nvml, Check::GpudirectRdma]);
    contains(&r.findings[0].measured, &["libnvidia-ml.so.1"]);
    contains(&r.findings[0].fix, &["nvidia-smi"]);

    let r = preflight("cpu-01", &NoDriver, &root.0, &Requirements::default());
    assert!(r.passed() && r.findings.is_empty(), "{r}");
    assert!(r.notes[0].starts_with("no GPU facts"), "{:?}", r.notes);
}

#[test]
fn preflight_over_a_fixture_source_matches_check() {
    let root = peermem_root();
    let src = FixtureSource::from_file(&Path::new(FIXTURES).join("h100-ecc-gpu3.json")).unwrap();
    let r = preflight("h100-a03", &src, &root.0, &h100_reqs());
    let direct = check("h100-a03", &src.read().unwrap(), &root.0, &h100_reqs());
    assert_eq!(r, direct);
}

#[test]
fn instances_split_across_nodes_are_found_by_rank_0() {
    let root = imex_root();
    let tray = fixture("gb200-tray-healthy.json");
    let a = check("gb200-t01", &tray, &root.0, &tray_reqs(None));
    let b = check("gb200-t02", &tray, &root.0, &tray_reqs(None));
    // On the third tray the instance uses GPU 3 only, which sits in clique 32767.
    let c_reqs = Requirements {
        gpus: vec![3],
        cliques: vec![CliqueGroup {
            instance: "decode-0".into(),
            gpus: vec![3],
            expected: None,
        }],
        ..Requirements::default()
    };
    let c = checked("gb200-t03", "gb200-mixed-cliques.json", &root, &c_reqs);
    assert!(a.passed() && b.passed() && c.passed());
    let found = compare_cliques(&[a.clone(), b, c]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].node, "gb200-t03");
    assert_eq!(found[0].check, Check::Clique);
    contains(&found[0].measured, &["GPUs 3 of instance `decode-0`"]);
    contains(&found[0].expected, &["`gb200-t01`, `gb200-t02`"]);
    assert!(compare_cliques(&[a]).is_empty());
}

#[test]
fn p2p_measurements_are_judged_against_the_link() {
    let readings = fixture("h100-healthy.json");
    let reqs = Requirements {
        p2p: vec![
            P2pPair {
                src: 0,
                dst: 1,
                expected_gbps: 450.0,
            },
            P2pPair {
                src: 2,
                dst: 3,
                expected_gbps: 450.0,
            },
            P2pPair {
                src: 4,
                dst: 5,
                expected_gbps: 450.0,
            },
            P2pPair {
                src: 6,
                dst: 7,
                expected_gbps: 450.0,
            },
        ],
        ..Requirements::default()
    };
    let m = |src, dst, peer_access, gbps| P2pMeasurement {
        src,
        dst,
        peer_access,
        bytes: 256 << 20,
        copies: 5,
        gbps,
    };
    let measured = [
        m(0, 1, true, 389.5),
        m(2, 3, true, 120.0),
        m(4, 5, false, 21.0),
        // 6 → 7 not measured: not judged.
    ];
    let found = judge_p2p("h100-a01", &readings.gpus, &measured, &reqs);
    let gpus: Vec<u32> = found
        .iter()
        .map(|f| f.gpu.as_ref().unwrap().index)
        .collect();
    assert_eq!(gpus, [2, 4]);
    assert!(found.iter().all(|f| f.check == Check::P2pBandwidth));
    assert_eq!(found[0].measured, "120.0 GB/s from GPU 2 to GPU 3");
    assert_eq!(
        found[0].expected,
        "at least 225.0 GB/s (50% of the link's 450.0 GB/s)"
    );
    assert!(
        found[1].measured.starts_with("no direct peer access"),
        "{}",
        found[1].measured
    );
    contains(&found[1].fix, &["nvidia-smi topo -m"]);

    let strict = Requirements {
        p2p_min_fraction: Some(0.9),
        ..reqs
    };
    let found = judge_p2p("h100-a01", &readings.gpus, &measured, &strict);
    assert_eq!(found.len(), 3, "389.5 < 405 at 90%");
}

/// A pair that is not measured says why, and does not fail the node: without `cuda`, a
/// note; with it, a warning (no driver here; on a GPU node, the fixture's UUIDs are not
/// its GPUs), never a crash.
#[test]
fn an_unmeasured_p2p_pair_says_why() {
    let root = Root::new();
    let src = FixtureSource::new(fixture("h100-healthy.json"));
    let reqs = Requirements {
        p2p: vec![P2pPair {
            src: 0,
            dst: 1,
            expected_gbps: 450.0,
        }],
        ..Requirements::default()
    };
    let r = preflight("h100-a01", &src, &root.0, &reqs);
    assert!(r.passed() && r.p2p.is_empty(), "{r}");
    if cfg!(feature = "cuda") {
        assert_eq!(
            summary(&r),
            [(Some(0), Check::P2pBandwidth, Severity::Warning)]
        );
        let m = &r.findings[0].measured;
        assert!(
            m.starts_with("not measured from GPU 0 to GPU 1: ")
                && (m.contains("libcuda.so") || m.contains("CUDA sees no GPU")),
            "{m}"
        );
    } else {
        assert!(r.findings.is_empty(), "{r}");
        let note = r.notes.iter().find(|n| n.contains("P2P")).unwrap();
        contains(note, &["without the `cuda` feature"]);
    }
}

#[test]
fn fixtures_round_trip_as_captures() {
    for entry in std::fs::read_dir(FIXTURES).unwrap() {
        let path = entry.unwrap().path();
        let readings = FixtureSource::from_file(&path).unwrap().read().unwrap();
        assert_eq!(readings.version, READINGS_VERSION);
        assert!(
            readings.source.starts_with("fixture: "),
            "{}",
            path.display()
        );
        let json = serde_json::to_string_pretty(&readings).unwrap();
        let back = FixtureSource::from_json("again", &json)
            .unwrap()
            .read()
            .unwrap();
        assert_eq!(back, readings, "{}", path.display());
    }
}

#[test]
fn reports_serialise_for_results() {
    let root = peermem_root();
    let r = checked("h100-a03", "h100-ecc-gpu3.json", &root, &h100_reqs());
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["node"], "h100-a03");
    assert_eq!(json["findings"][0]["check"], "ecc_volatile");
    assert_eq!(json["findings"][0]["severity"], "error");
    assert_eq!(json["findings"][0]["gpu"]["index"], 3);
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}

/// One H100 with the given counts and free memory.
fn one_gpu(volatile: u64, aggregate: u64, free_mib: u64) -> Readings {
    let mut r = fixture("h100-healthy.json");
    r.gpus.truncate(1);
    let g: &mut GpuReading = &mut r.gpus[0];
    g.ecc_uncorrected_volatile = Some(volatile);
    g.ecc_uncorrected_aggregate = Some(aggregate.max(volatile));
    g.memory_free_mib = Some(free_mib.min(81_559));
    r
}

proptest! {
    #[test]
    fn findings_follow_the_readings(
        volatile in 0u64..3,
        aggregate in 0u64..3,
        free in 0u64..90_000,
        fraction in 0.05f64..1.0,
    ) {
        // Nothing node-wide is asked for: the root is never read.
        let root = Path::new("/nonexistent-root");
        let readings = one_gpu(volatile, aggregate, free);
        let reqs = Requirements {
            gpus: vec![0],
            min_free_fraction: Some(fraction),
            ..Requirements::default()
        };
        let r = check("n", &readings, root, &reqs);
        let has = |c: Check| r.findings.iter().any(|f| f.check == c);
        let free = free.min(81_559);
        let need = (fraction * 81_559.0).ceil() as u64;
        prop_assert_eq!(has(Check::EccVolatile), volatile > 0);
        prop_assert_eq!(has(Check::EccAggregate), volatile == 0 && aggregate > 0);
        prop_assert_eq!(has(Check::FreeMemory), free < need);
        prop_assert_eq!(r.passed(), volatile == 0 && free >= need);
        prop_assert_eq!(r.to_string().lines().count(), r.findings.len().max(1));
    }
}
