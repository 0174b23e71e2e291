//! `cohort topo`: this machine (no GPUs here) and emulated topologies.

use crate::fixtures::{cohort, repo_root, stderr, stdout};

#[test]
fn topo_on_this_machine_reports_numa_cpus_and_no_gpu_library() {
    let out = cohort().arg("topo").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("NUMA 0") && text.contains("CPUs "), "{text}");
    assert!(text.contains("usable     CPUs"), "{text}");
    // CI machines have no NVIDIA driver; a GPU machine would list GPUs instead.
    if !text.contains("\nGPU ") {
        assert!(text.contains("found no NVIDIA library"), "{text}");
        assert!(text.contains("GPUs       none"), "{text}");
    }
}

#[test]
fn topo_json_is_a_versioned_topology() {
    let out = cohort()
        .args(["topo", "--json"])
        .env("CUDA_VISIBLE_DEVICES", "0")
        .env("SLURM_STEP_GPUS", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["topology"]["version"], 1);
    assert_eq!(v["gpu_binding"]["cuda_visible_devices"], "0");
    assert_eq!(v["gpu_binding"]["slurm_gpus"], "3");
    assert!(!v["topology"]["nodes"][0]["numa_nodes"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn topo_shows_an_emulated_topology() {
    let out = cohort()
        .current_dir(repo_root())
        .args([
            "topo",
            "--topology",
            "recipes/topologies/gb200-nvl72-2racks.toml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("emulated:recipes/topologies/gb200-nvl72-2racks.toml: 36 nodes, 144 GPUs, 2 NVLink domains"), "{text}");
    assert!(
        text.contains("NUMA 0     CPUs 0-71 (72 CPUs), 240.0 GiB, GPUs 0,1"),
        "{text}"
    );
}

#[test]
fn every_shipped_topology_builds() {
    let dir = repo_root().join("recipes/topologies");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let out = cohort()
                .args(["topo", "--json", "--topology"])
                .arg(&p)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}: {}", p.display(), stderr(&out));
            n += 1;
        }
    }
    assert!(n >= 6);
}
