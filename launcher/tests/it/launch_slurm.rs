//! The batch path for real: a job script rendered by `cohort sbatch`, submitted with
//! `sbatch` to a local four-node Slurm cluster, every node running `cohort launch`
//! through `srun` (Slurm bootstrap, rendezvous on the derived port, the job token from
//! the script's 0600 file); rank 0 benchmarks and writes `results/<job id>/`.
//!
//! The emulated nodes share this machine's network namespace and their names resolve to
//! 127.0.0.1, so the recipe's `[slurm.env]` sets `COHORT_LISTEN_ADDRESS` (a real
//! cluster's node names resolve to their own addresses).

use std::time::{Duration, Instant};

use crate::fixtures::{cohort, repo_root, stderr, Cluster};

fn recipe(dir: &std::path::Path) -> std::path::PathBuf {
    let topo = repo_root().join("recipes/topologies/hgx-h100-4nodes.toml");
    let text = format!(
        r#"name = "slurm-disagg"

[model]
name = "meta-llama/Llama-3.1-8B-Instruct"

[engine]
kind = "sim"

[deploy]
mode = "disaggregated"
topology = "{}"
base_port = 31600

[deploy.frontend]
port = 31690

[deploy.prefill]
gpus = 4
per_domain = 1

[deploy.decode]
gpus = 4
per_domain = 1

[bench]
concurrency = [4]
requests = 16
input_len = 256
output_len = 16

[slurm]
nodes = 4
time = "00:10:00"
signal_before_s = 60

[slurm.env]
COHORT_LISTEN_ADDRESS = "127.0.0.1"
"#,
        topo.display()
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_rendered_job_runs_on_four_slurm_nodes_and_writes_its_results() {
    let Some(cluster) = Cluster::up("launch-slurm", 4, 29_817) else {
        return;
    };
    let recipe = recipe(cluster.dir());
    let script = cluster.dir().join("job.sbatch");
    let out = cohort()
        .current_dir(cluster.dir())
        .args(["sbatch", "--output"])
        .arg(&script)
        .arg(&recipe)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&script).unwrap();
    let submitted = Instant::now();
    let job = cluster.sbatch(&text);
    let state = cluster.wait(job, Duration::from_secs(180));
    let elapsed = submitted.elapsed();
    let results = cluster.dir().join(format!("results/{job}"));
    let log = std::fs::read_to_string(cluster.dir().join(format!("results/slurm-{job}.out")))
        .unwrap_or_default();
    assert_eq!(state, "COMPLETED", "Slurm output:\n{log}");
    let show = cluster
        .command("scontrol")
        .args(["show", "job", "-o", &job.to_string()])
        .output()
        .unwrap();
    let nodes = String::from_utf8_lossy(&show.stdout)
        .split_whitespace()
        .find_map(|f| f.strip_prefix("NodeList="))
        .unwrap_or("?")
        .to_owned();
    eprintln!(
        "launch-slurm: Slurm job {job} ran on {nodes}; sbatch to results {:.1?}; results in {}",
        elapsed,
        results.display()
    );
    assert_eq!(nodes, "node[1-4]");
    // Every node was a rank of the Slurm bootstrap.
    for rank in 1..4 {
        assert!(
            log.contains(&format!("[rank {rank} node{}] bootstrap slurm", rank + 1)),
            "{log}"
        );
    }
    assert!(log.contains("instances ready 8/8"), "{log}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["exit_status"], 0, "{summary}");
    assert_eq!(summary["bootstrap"], "slurm");
    assert_eq!(summary["ranks"], 4);
    assert_eq!(summary["job"], job.to_string());
    assert_eq!(summary["points"][0]["completed"], 16, "{summary}");
    for file in ["summary.md", "plan.svg", "job.sbatch", "bench/c4.json"] {
        assert!(results.join(file).is_file(), "{file} missing");
    }
    for node in ["h100-001", "h100-002", "h100-003", "h100-004"] {
        assert!(
            results.join(format!("logs/{node}/decode-0.log")).is_file()
                || results.join("logs").join(node).is_dir(),
            "no logs for {node}"
        );
    }
}
