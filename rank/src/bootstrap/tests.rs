//! Bootstrap resolution from captured-shape environments.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use super::*;

const TOKEN: &str = "0123456789abcdef0123";

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Task `rank` of a 4-node, one-task-per-node step 3 of job 4242.
fn step_task(rank: &str, node_index: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SLURM_JOB_ID", "4242".into()),
        ("SLURM_JOB_NODELIST", "gpu[07-10]".into()),
        ("SLURM_STEP_ID", "3".into()),
        ("SLURM_STEP_NODELIST", "gpu[07-10]".into()),
        ("SLURM_STEP_NUM_TASKS", "4".into()),
        ("SLURM_STEP_TASKS_PER_NODE", "1(x4)".into()),
        ("SLURM_PROCID", rank.into()),
        ("SLURM_NODEID", node_index.into()),
        (
            "SLURMD_NODENAME",
            format!("gpu{:02}", 7 + node_index.parse::<u32>().unwrap()),
        ),
        ("COHORT_JOB_TOKEN", TOKEN.into()),
    ]
}

fn owned(pairs: Vec<(&'static str, String)>) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[test]
fn auto_in_a_step_uses_slurm_with_rank0_on_the_first_node() {
    let b = resolve(&Request::default(), &owned(step_task("2", "2"))).unwrap();
    assert_eq!(b.method, Method::Slurm);
    assert_eq!((b.rank, b.size), (2, 4));
    assert_eq!(b.node, "gpu09");
    assert_eq!(b.rendezvous.host, "gpu07");
    assert_eq!(b.rendezvous.port, rendezvous::derived_port(4242, 3));
    assert!(b.token.matches(TOKEN.as_bytes()));
    assert!(b.to_string().contains("job 4242, step 3"), "{b}");
}

#[test]
fn every_rank_of_a_step_agrees_on_rank0() {
    let all: Vec<_> = (0..4)
        .map(|r| {
            resolve(
                &Request::default(),
                &owned(step_task(&r.to_string(), &r.to_string())),
            )
            .unwrap()
        })
        .collect();
    assert!(all.iter().all(|b| b.rendezvous == all[0].rendezvous));
    assert_eq!(
        all.iter().map(|b| b.rank).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
}

#[test]
fn the_port_override_wins_cli_over_environment() {
    let mut e = owned(step_task("0", "0"));
    e.insert(vars::RENDEZVOUS_PORT.into(), "31000".into());
    assert_eq!(
        resolve(&Request::default(), &e).unwrap().rendezvous.port,
        31000
    );
    let req = Request {
        rendezvous_port: Some(32000),
        ..Request::default()
    };
    assert_eq!(resolve(&req, &e).unwrap().rendezvous.port, 32000);
    e.insert(vars::RENDEZVOUS_PORT.into(), "port".into());
    let err = resolve(&Request::default(), &e).unwrap_err().to_string();
    assert!(
        err.contains("COHORT_RENDEZVOUS_PORT") && err.contains("`port`"),
        "{err}"
    );
}

#[test]
fn a_step_without_a_token_is_refused_naming_the_variables() {
    let mut e = owned(step_task("0", "0"));
    e.remove("COHORT_JOB_TOKEN");
    let err = resolve(&Request::default(), &e).unwrap_err().to_string();
    assert!(
        err.contains("COHORT_JOB_TOKEN_FILE") && err.contains("0600"),
        "{err}"
    );
}

#[test]
fn the_batch_script_is_told_to_use_srun() {
    let e = env(&[
        ("SLURM_JOB_ID", "7"),
        ("SLURM_JOB_NODELIST", "n[1-2]"),
        ("SLURM_STEP_ID", "4294967291"),
    ]);
    let err = resolve(&Request::default(), &e).unwrap_err().to_string();
    assert!(
        err.contains("batch script") && err.contains("srun cohort launch"),
        "{err}"
    );
}

#[test]
fn outside_slurm_is_one_local_rank_with_a_generated_token() {
    let b = resolve(&Request::default(), &env(&[])).unwrap();
    assert_eq!(b.method, Method::Local);
    assert_eq!((b.rank, b.size), (0, 1));
    assert_eq!(b.rendezvous.host, "127.0.0.1");
}

#[test]
fn local_parent_and_children_agree() {
    let req = Request {
        local_ranks: Some(3),
        ..Request::default()
    };
    let parent = resolve(&req, &env(&[])).unwrap();
    assert_eq!((parent.rank, parent.size), (0, 3));
    let addr: std::net::SocketAddr = "127.0.0.1:41234".parse().unwrap();
    for rank in 1..3 {
        let child_env: BTreeMap<String, String> = local::child_env(rank, 3, addr, &parent.token)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let child = resolve(&Request::default(), &child_env).unwrap();
        assert_eq!((child.rank, child.size), (rank, 3));
        assert_eq!(child.rendezvous.port, 41234);
        assert_eq!(child.token, parent.token);
    }
}

#[test]
fn a_local_rank_beyond_the_size_is_refused() {
    let e = env(&[
        (vars::LOCAL_RANK, "3"),
        (vars::LOCAL_SIZE, "3"),
        (vars::LOCAL_RENDEZVOUS, "127.0.0.1:1"),
        (vars::JOB_TOKEN, TOKEN),
    ]);
    let err = resolve(&Request::default(), &e).unwrap_err().to_string();
    assert!(
        err.contains("COHORT_LOCAL_RANK") && err.contains("below"),
        "{err}"
    );
}

#[test]
#[cfg(not(feature = "mpi"))]
fn mpi_without_the_feature_says_how_to_build_it() {
    let req = Request {
        mode: Mode::Mpi,
        ..Request::default()
    };
    let err = resolve(&req, &env(&[])).unwrap_err().to_string();
    assert!(err.contains("--features mpi"), "{err}");
    // Under `srun --mpi=pmix` without the feature, auto falls back to the step and says so.
    let mut e = owned(step_task("1", "1"));
    e.insert("PMIX_RANK".into(), "1".into());
    let b = resolve(&Request::default(), &e).unwrap();
    assert_eq!(b.method, Method::Slurm);
    assert!(b.reason.contains("PMIX_RANK"), "{}", b.reason);
}

#[test]
fn token_files_must_be_private() {
    let dir = std::env::temp_dir().join(format!("cohort-token-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    let _ = std::fs::remove_file(&path);
    JobToken::new(TOKEN, "test")
        .unwrap()
        .write_file(&path)
        .unwrap();
    let mut e = owned(step_task("0", "0"));
    e.remove("COHORT_JOB_TOKEN");
    e.insert(vars::JOB_TOKEN_FILE.into(), path.display().to_string());
    let b = resolve(&Request::default(), &e).unwrap();
    assert!(b.token.matches(TOKEN.as_bytes()));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = resolve(&Request::default(), &e).unwrap_err().to_string();
    assert!(err.contains("644") && err.contains("chmod 600"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
