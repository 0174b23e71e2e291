//! Real `sbatch` jobs on a local Slurm cluster whose tasks run `cohort slurm env --json`;
//! every task's parsed rank, node, task count and node list are checked against what
//! Slurm set in that task's environment and against the shape the job asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::fixtures::Cluster;

/// What one task saw: cohort's parsed context, Slurm's raw variables, its host name.
struct TaskReport {
    parsed: Value,
    env: BTreeMap<String, String>,
    hostname: String,
}

/// A batch script whose single step runs `cohort slurm env --json` in every task, next to
/// a dump of the task's environment and host name, and in the batch shell itself.
fn job_script(sbatch_options: &str) -> String {
    let cohort = env!("CARGO_BIN_EXE_cohort");
    format!(
        "#!/bin/bash\n{sbatch_options}\n\
         set -eu\n\
         {cohort} slurm env --json > batch.json\n\
         srun bash -c '{cohort} slurm env --json > task.$SLURM_PROCID.json; \
         env > task.$SLURM_PROCID.env; hostname > task.$SLURM_PROCID.host'\n"
    )
}

fn read_reports(cluster: &Cluster, tasks: u64) -> Vec<TaskReport> {
    (0..tasks)
        .map(|rank| {
            let file = |ext: &str| {
                let path = cluster.dir().join(format!("task.{rank}.{ext}"));
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), cluster.log_tail()))
            };
            let env = file("env")
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            TaskReport {
                parsed: serde_json::from_str(&file("json")).expect("cohort printed JSON"),
                env,
                hostname: file("host").trim().to_owned(),
            }
        })
        .collect()
}

fn run_job(cluster: &Cluster, tag: &str, options: &str) -> u64 {
    let job = cluster.sbatch(&job_script(options));
    eprintln!("{tag}: submitted Slurm job {job}");
    let state = cluster.wait(job, Duration::from_secs(90));
    let output =
        std::fs::read_to_string(cluster.dir().join(format!("slurm-{job}.out"))).unwrap_or_default();
    assert_eq!(
        state, "COMPLETED",
        "job {job} ended {state}; its output:\n{output}"
    );
    eprintln!("{tag}: Slurm job {job} COMPLETED");
    job
}

/// Checks what every task must agree with Slurm on, and returns the node names seen.
fn check_tasks(reports: &[TaskReport], job: u64, nodes: &[&str]) -> Vec<String> {
    let total = reports.len() as u64;
    let mut ranks = BTreeSet::new();
    let mut node_names = Vec::new();
    for r in reports {
        let p = &r.parsed;
        assert_eq!(p["kind"], "step_task", "{p}");
        assert_eq!(p["job"]["id"], job);
        let raw = |var: &str| r.env.get(var).unwrap_or_else(|| panic!("{var} not set"));
        let rank = p["task"]["rank"].as_u64().expect("rank");
        assert_eq!(rank.to_string(), *raw("SLURM_PROCID"));
        assert_eq!(p["task"]["node_index"].to_string(), *raw("SLURM_NODEID"));
        assert_eq!(p["task"]["local_rank"].to_string(), *raw("SLURM_LOCALID"));
        assert_eq!(p["step"]["id"].to_string(), *raw("SLURM_STEP_ID"));
        assert_eq!(p["step"]["num_tasks"], total);
        assert_eq!(p["step"]["nodes"], serde_json::json!(nodes));
        let node = p["task"]["node"].as_str().expect("node name").to_owned();
        let index = p["task"]["node_index"].as_u64().expect("node index") as usize;
        assert_eq!(
            node, nodes[index],
            "node name is the step's node at SLURM_NODEID"
        );
        ranks.insert(rank);
        node_names.push(node);
    }
    assert_eq!(ranks, (0..total).collect(), "every rank exactly once");
    node_names
}

fn check_batch_shell(cluster: &Cluster, job: u64, nodes: &[&str], tasks: u64) {
    let text = std::fs::read_to_string(cluster.dir().join("batch.json")).expect("batch.json");
    let batch: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(batch["kind"], "batch_shell", "{batch}");
    assert_eq!(batch["task"], Value::Null, "the batch shell has no rank");
    assert_eq!(batch["job"]["id"], job);
    assert_eq!(batch["job"]["nodes"], serde_json::json!(nodes));
    assert_eq!(batch["job"]["num_tasks"], tasks);
}

#[test]
fn one_node_two_tasks() {
    let Some(cluster) = Cluster::up("slurm-1node", 0, 26_817) else {
        return;
    };
    let job = run_job(&cluster, "1 node x 2 tasks", "#SBATCH --nodes=1 --ntasks=2");
    let reports = read_reports(&cluster, 2);
    let host = reports[0]
        .env
        .get("SLURMD_NODENAME")
        .cloned()
        .expect("SLURMD_NODENAME");
    let names = check_tasks(&reports, job, &[host.as_str()]);
    assert_eq!(
        names,
        [host.clone(), host.clone()],
        "both tasks on the one node"
    );
    let locals: BTreeSet<u64> = reports
        .iter()
        .filter_map(|r| r.parsed["task"]["local_rank"].as_u64())
        .collect();
    assert_eq!(locals, BTreeSet::from([0, 1]), "distinct local ranks");
    for r in &reports {
        assert_eq!(r.parsed["task"]["node_index"], 0);
        assert_eq!(r.parsed["step"]["tasks_per_node"], serde_json::json!([2]));
    }
    check_batch_shell(&cluster, job, &[host.as_str()], 2);
}

#[test]
fn four_emulated_nodes_one_task_each() {
    let Some(cluster) = Cluster::up("slurm-4node", 4, 27_817) else {
        return;
    };
    let job = run_job(
        &cluster,
        "4 nodes x 1 task",
        "#SBATCH --nodes=4 --ntasks-per-node=1",
    );
    let reports = read_reports(&cluster, 4);
    let nodes = ["node1", "node2", "node3", "node4"];
    let names = check_tasks(&reports, job, &nodes);
    let distinct: BTreeSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), 4, "four different nodes: {names:?}");
    eprintln!("4 nodes x 1 task: tasks reported nodes {names:?}");
    for r in &reports {
        // Each emulated slurmd runs in its own UTS namespace, so the task's host name is
        // its node's name; with one task per node the rank is the node rank.
        assert_eq!(r.parsed["task"]["node"], r.hostname.as_str());
        assert_eq!(r.parsed["task"]["rank"], r.parsed["task"]["node_index"]);
    }
    check_batch_shell(&cluster, job, &nodes, 4);
}
