//! Fixtures are environments captured from Slurm 22.05 (Debian 12) jobs, trimmed to the
//! variables that matter.
use super::*;

fn ctx(pairs: &[(&str, &str)]) -> Result<SlurmContext, ContextError> {
    SlurmContext::from_env(pairs.iter().map(|&(k, v)| (k, v)))
}

/// The batch shell of `sbatch -N4 --ntasks-per-node=1`.
const BATCH_SHELL: &[(&str, &str)] = &[
    ("SLURM_CLUSTER_NAME", "cohort"),
    ("SLURM_CPUS_ON_NODE", "1"),
    ("SLURM_GTIDS", "0"),
    ("SLURM_JOBID", "1"),
    ("SLURM_JOB_CPUS_PER_NODE", "1(x4)"),
    ("SLURM_JOB_ID", "1"),
    ("SLURM_JOB_NAME", "job.sh"),
    ("SLURM_JOB_NODELIST", "node[1-4]"),
    ("SLURM_JOB_NUM_NODES", "4"),
    ("SLURM_JOB_PARTITION", "debug"),
    ("SLURM_LOCALID", "0"),
    ("SLURM_NNODES", "4"),
    ("SLURM_NODEID", "0"),
    ("SLURM_NODELIST", "node[1-4]"),
    ("SLURM_NPROCS", "4"),
    ("SLURM_NTASKS", "4"),
    ("SLURM_NTASKS_PER_NODE", "1"),
    ("SLURM_PROCID", "0"),
    ("SLURM_SUBMIT_DIR", "/tmp/c4"),
    ("SLURM_TASKS_PER_NODE", "1(x4)"),
    ("SLURM_TASK_PID", "3666"),
];

/// What `srun` adds for the task with rank 2 of that job's 4-task step.
const STEP_TASK_2: &[(&str, &str)] = &[
    ("SLURM_DISTRIBUTION", "block"),
    ("SLURM_NODEID", "2"),
    ("SLURM_PROCID", "2"),
    ("SLURM_STEPID", "0"),
    ("SLURM_STEP_ID", "0"),
    ("SLURM_STEP_NODELIST", "node[1-4]"),
    ("SLURM_STEP_NUM_NODES", "4"),
    ("SLURM_STEP_NUM_TASKS", "4"),
    ("SLURM_STEP_TASKS_PER_NODE", "1(x4)"),
    ("SLURMD_NODENAME", "node3"),
];

fn merged(
    base: &[(&'static str, &'static str)],
    over: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut map: BTreeMap<&str, &str> = base.iter().copied().collect();
    map.extend(over.iter().copied());
    map.into_iter().collect()
}

#[test]
fn outside_slurm() {
    let c = ctx(&[("PATH", "/usr/bin")]).unwrap();
    assert_eq!(c.kind, ProcessKind::Outside);
    assert!(c.job.is_none() && c.rank().is_none() && c.nodes().is_empty());
}

#[test]
fn batch_shell_is_not_a_task() {
    let c = ctx(BATCH_SHELL).unwrap();
    assert_eq!(c.kind, ProcessKind::BatchShell);
    assert_eq!(
        c.rank(),
        None,
        "SLURM_PROCID=0 in the batch shell is not a rank"
    );
    assert_eq!(c.node_rank(), None);
    let job = c.job.as_ref().unwrap();
    assert_eq!(job.id, 1);
    assert_eq!(job.nodes, ["node1", "node2", "node3", "node4"]);
    assert_eq!(job.num_tasks, Some(4));
    assert_eq!(job.cpus_per_node.as_ref().unwrap().counts(), [1, 1, 1, 1]);
    assert_eq!(c.nodes().len(), 4);
}

#[test]
fn step_task_reads_rank_and_node() {
    let c = ctx(&merged(BATCH_SHELL, STEP_TASK_2)).unwrap();
    assert_eq!(c.kind, ProcessKind::StepTask);
    assert_eq!(c.rank(), Some(2));
    assert_eq!(c.node_rank(), Some(2));
    let task = c.task.as_ref().unwrap();
    assert_eq!(task.node, "node3");
    let step = c.step.as_ref().unwrap();
    assert_eq!(step.num_tasks, 4);
    assert_eq!(step.distribution, Some(Distribution::Block));
}

#[test]
fn step_values_win_over_job_values() {
    // A 2-task step on nodes 2-3 of a 4-node job, run from the batch shell.
    let c = ctx(&merged(
        BATCH_SHELL,
        &[
            ("SLURM_STEP_ID", "3"),
            ("SLURM_STEP_NODELIST", "node[2-3]"),
            ("SLURM_STEP_NUM_TASKS", "2"),
            ("SLURM_STEP_TASKS_PER_NODE", "1(x2)"),
            ("SLURM_NODEID", "1"),
            ("SLURM_PROCID", "1"),
        ],
    ))
    .unwrap();
    assert_eq!(c.nodes(), ["node2", "node3"]);
    assert_eq!(
        c.task.as_ref().unwrap().node,
        "node3",
        "node name from the step's list"
    );
    assert_eq!(c.job.as_ref().unwrap().nodes.len(), 4);
}

#[test]
fn procid_is_not_a_node_rank_with_several_tasks_per_node() {
    // Task 3 of `srun -N2 -n4`: the second task on the second node.
    let c = ctx(&[
        ("SLURM_JOB_ID", "7"),
        ("SLURM_JOB_NODELIST", "vm[1-2]"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_STEP_NODELIST", "vm[1-2]"),
        ("SLURM_STEP_NUM_TASKS", "4"),
        ("SLURM_STEP_TASKS_PER_NODE", "2(x2)"),
        ("SLURM_PROCID", "3"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_NODEID", "1"),
    ])
    .unwrap();
    assert_eq!(c.rank(), Some(3));
    assert_eq!(c.node_rank(), Some(1));
    assert_eq!(c.task.as_ref().unwrap().local_rank, 1);
    assert_eq!(c.task.as_ref().unwrap().node, "vm2");
}

#[test]
fn allocation_shell_and_reserved_step_ids() {
    let salloc = [("SLURM_JOB_ID", "9"), ("SLURM_JOB_NODELIST", "n[1-2]")];
    assert_eq!(ctx(&salloc).unwrap().kind, ProcessKind::AllocationShell);
    let interactive = merged(&salloc, &[("SLURM_STEP_ID", "4294967290")]);
    assert_eq!(
        ctx(&interactive).unwrap().kind,
        ProcessKind::AllocationShell
    );
    let batch = merged(&salloc, &[("SLURM_STEP_ID", "4294967291")]);
    assert_eq!(ctx(&batch).unwrap().kind, ProcessKind::BatchShell);
}

#[test]
fn het_groups_are_collected() {
    let c = ctx(&merged(
        BATCH_SHELL,
        &[
            ("SLURM_HET_SIZE", "2"),
            ("SLURM_JOB_ID_HET_GROUP_0", "10"),
            ("SLURM_JOB_NODELIST_HET_GROUP_0", "node1"),
            ("SLURM_JOB_ID_HET_GROUP_1", "11"),
            ("SLURM_JOB_NODELIST_HET_GROUP_1", "node[2-4]"),
            ("SLURM_TASKS_PER_NODE_HET_GROUP_1", "2(x3)"),
        ],
    ))
    .unwrap();
    let het = &c.job.unwrap().het_groups;
    assert_eq!(het.len(), 2);
    assert_eq!(het[1].job_id, Some(11));
    assert_eq!(het[1].nodes, ["node2", "node3", "node4"]);
    assert_eq!(het[1].tasks_per_node.as_ref().unwrap().total(), 6);
}

#[test]
fn malformed_values_name_the_variable() {
    let bad_list = merged(BATCH_SHELL, &[("SLURM_JOB_NODELIST", "node[4-1]")]);
    let e = ctx(&bad_list).unwrap_err();
    assert!(e.to_string().contains("SLURM_JOB_NODELIST"), "{e}");
    assert!(std::error::Error::source(&e).is_some());

    let rank_too_big = merged(&merged(BATCH_SHELL, STEP_TASK_2), &[("SLURM_PROCID", "4")]);
    let e = ctx(&rank_too_big).unwrap_err().to_string();
    assert!(e.contains("SLURM_PROCID") && e.contains("4 tasks"), "{e}");

    let layout_mismatch = merged(
        &merged(BATCH_SHELL, STEP_TASK_2),
        &[("SLURM_STEP_TASKS_PER_NODE", "1(x3)")],
    );
    let e = ctx(&layout_mismatch).unwrap_err().to_string();
    assert!(e.contains("SLURM_STEP_TASKS_PER_NODE"), "{e}");

    let not_a_number = merged(BATCH_SHELL, &[("SLURM_JOB_ID", "abc")]);
    assert!(ctx(&not_a_number)
        .unwrap_err()
        .to_string()
        .contains("`abc`"));

    let missing = [("SLURM_JOB_ID", "1"), ("SLURM_STEP_ID", "0")];
    assert!(matches!(
        ctx(&missing).unwrap_err(),
        ContextError::Missing { .. }
    ));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    const VARS: &[&str] = &[
        "SLURM_JOB_ID",
        "SLURM_JOB_NODELIST",
        "SLURM_JOB_NUM_NODES",
        "SLURM_NTASKS",
        "SLURM_TASKS_PER_NODE",
        "SLURM_STEP_ID",
        "SLURM_STEP_NODELIST",
        "SLURM_STEP_NUM_TASKS",
        "SLURM_STEP_TASKS_PER_NODE",
        "SLURM_PROCID",
        "SLURM_NODEID",
        "SLURM_LOCALID",
        "SLURM_TASK_PID",
        "SLURM_DISTRIBUTION",
        "SLURM_JOB_NODELIST_HET_GROUP_1",
    ];

    proptest! {
        #[test]
        fn any_environment_parses_or_errs(
            values in prop::collection::vec(
                prop::option::of(prop_oneof![
                    "[0-9]{1,3}",
                    "n\\[[0-9]{1,2}-[0-9]{1,2}\\]",
                    "[0-9]\\(x[0-9]\\)",
                    ".{0,8}",
                ]),
                VARS.len(),
            )
        ) {
            let env: Vec<(&str, String)> = VARS
                .iter()
                .zip(values)
                .filter_map(|(k, v)| v.map(|v| (*k, v)))
                .collect();
            if let Ok(c) = SlurmContext::from_env(env) {
                if let (Some(task), Some(step)) = (&c.task, &c.step) {
                    prop_assert!(task.rank < step.num_tasks);
                    prop_assert!(task.node_index < step.nodes.len());
                }
            }
        }
    }
}
