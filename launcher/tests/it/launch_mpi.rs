//! `mpirun -n 4 cohort launch …`: the MPI bootstrap (built with `--features mpi`) gives
//! every rank its rank, the job token and rank 0's address; the job runs as under Slurm.
#![cfg(feature = "mpi")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixtures::{repo_root, TempDir};

#[test]
fn mpirun_four_ranks_run_a_job_through_the_mpi_bootstrap() {
    let tmp = TempDir::new("launch-mpi");
    let topo = repo_root().join("recipes/topologies/hgx-h100-4nodes.toml");
    let recipe = tmp.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        format!(
            "name = \"mpi-disagg\"\n[model]\nname = \"meta-llama/Llama-3.1-8B-Instruct\"\n\
             [engine]\nkind = \"sim\"\n[deploy]\nmode = \"disaggregated\"\ntopology = \"{}\"\n\
             base_port = 31800\n[deploy.prefill]\ngpus = 4\nper_domain = 1\n\
             [deploy.decode]\ngpus = 4\nper_domain = 1\n[bench]\nconcurrency = [4]\n\
             requests = 8\ninput_len = 128\noutput_len = 8\n",
            topo.display()
        ),
    )
    .unwrap();
    let results = tmp.path().join("results");
    let err = std::fs::File::create(tmp.path().join("stderr")).unwrap();
    let mut child = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-n", "4"])
        .arg(env!("CARGO_BIN_EXE_cohort"))
        .args(["launch", "--speedup", "inf", "--frontend-port", "0"])
        .args(["--progress", "lines", "--recipe"])
        .arg(&recipe)
        .arg("--results")
        .arg(&results)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("run mpirun (Open MPI)");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mpirun did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(tmp.path().join("stderr")).unwrap();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("bootstrap mpi: rank 0/4"), "{log}");
    let job = std::fs::read_dir(&results)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["bootstrap"], "mpi");
    assert_eq!(summary["ranks"], 4);
    assert_eq!(summary["exit_status"], 0, "{summary}");
    assert_eq!(summary["points"][0]["completed"], 8, "{summary}");
}
