//! Child environment hygiene: the variables a cohort rank must not pass on to the engine
//! processes it starts, and why.
//!
//! cohort runs as one task of an `srun` step. Slurm and the MPI launcher put facts about
//! *that task* into its environment: its CPU binding, its rank, its PMIx server. An engine
//! started from it is not that task, and several engines (TensorRT-LLM through MPI,
//! anything that runs a nested `srun`, PyTorch launchers that detect Slurm) read those
//! variables and act on them. Job-level facts (`SLURM_JOB_ID`, `SLURM_JOB_NODELIST`, …)
//! are kept: they are true for the child too and useful in its logs.

/// How a rule matches a variable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Exact(&'static str),
    Prefix(&'static str),
}

impl Match {
    pub fn matches(self, name: &str) -> bool {
        match self {
            Match::Exact(n) => name == n,
            Match::Prefix(p) => name.starts_with(p),
        }
    }
}

/// One family of variables removed from engine environments, with the reason.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub names: &'static [Match],
    pub reason: &'static str,
}

use Match::{Exact, Prefix};

/// Every variable family removed before an engine starts.
pub const REMOVED: &[Rule] = &[
    Rule {
        names: &[Prefix("SLURM_CPU_BIND")],
        reason: "the launcher task's CPU binding: a nested `srun` (or an MPI launcher using \
                 it) applies it again and pins every engine worker to the launcher's cores; \
                 cohort binds engines to their NUMA node itself",
    },
    Rule {
        names: &[
            Exact("SLURM_CPUS_PER_TASK"),
            Exact("SLURM_TRES_PER_TASK"),
            Exact("SLURM_THREADS_PER_CORE"),
            Exact("SLURM_HINT"),
        ],
        reason: "per-task CPU requests of the launcher step: Slurm 23.11+ sets both \
                 `SLURM_CPUS_PER_TASK` and `SLURM_TRES_PER_TASK=cpu:N`, and a nested `srun` \
                 with its own `--cpus-per-task` then fails because the two conflict; \
                 `SLURM_HINT` conflicts with an explicit binding the same way",
    },
    Rule {
        names: &[
            Exact("SLURM_MEM_PER_CPU"),
            Exact("SLURM_MEM_PER_NODE"),
            Exact("SLURM_MEM_PER_GPU"),
        ],
        reason: "memory requests of the launcher step: a nested `srun` that sets another one \
                 fails because they are mutually exclusive",
    },
    Rule {
        names: &[
            Prefix("SLURM_GPU_BIND"),
            Exact("SLURM_GPUS_PER_TASK"),
            Exact("SLURM_TRES_BIND"),
        ],
        reason: "the launcher task's GPU binding: cohort gives each engine its own \
                 `CUDA_VISIBLE_DEVICES` from the plan, and a nested `srun` would rebind",
    },
    Rule {
        names: &[
            Exact("SLURM_PROCID"),
            Exact("SLURM_LOCALID"),
            Exact("SLURM_NODEID"),
            Exact("SLURM_GTIDS"),
            Exact("SLURM_TASK_PID"),
            Exact("SLURM_STEPID"),
            Exact("SLURM_STEP_ID"),
            Exact("SLURM_STEP_NUM_TASKS"),
            Exact("SLURM_STEP_TASKS_PER_NODE"),
            Exact("SLURM_STEP_NODELIST"),
            Exact("SLURM_STEP_NUM_NODES"),
            Exact("SLURM_STEP_LAUNCHER_PORT"),
            Exact("SLURM_STEP_RESV_PORTS"),
            Exact("SLURM_NTASKS"),
            Exact("SLURM_NPROCS"),
            Exact("SLURM_NTASKS_PER_NODE"),
            Exact("SLURM_TASKS_PER_NODE"),
            Exact("SLURM_DISTRIBUTION"),
            Exact("SLURM_SRUN_COMM_HOST"),
            Exact("SLURM_SRUN_COMM_PORT"),
            Exact("SLURM_LAUNCH_NODE_IPADDR"),
            Exact("SLURM_PRIO_PROCESS"),
            Exact("SLURM_UMASK"),
        ],
        reason: "the launcher task's identity in its step: PyTorch Lightning, DeepSpeed and \
                 MPI libraries read `SLURM_PROCID`/`SLURM_NTASKS` to decide their own rank \
                 and world size, and would take the engine for task N of the launcher step; \
                 a nested `srun` would inherit the launcher's task layout",
    },
    Rule {
        names: &[
            Prefix("PMIX_"),
            Prefix("PMI_"),
            Exact("PMI_FD"),
            Prefix("OMPI_"),
        ],
        reason: "the launcher's MPI/PMIx wiring (`srun --mpi=pmix`, `mpirun`): an engine that \
                 initialises MPI (TensorRT-LLM) would join the launcher's MPI world as the \
                 launcher's rank instead of its own",
    },
];

/// The rule that removes `name`, if any.
pub fn rule_for(name: &str) -> Option<&'static Rule> {
    REMOVED
        .iter()
        .find(|rule| rule.names.iter().any(|m| m.matches(name)))
}

/// Whether an engine process may inherit `name`.
pub fn may_inherit(name: &str) -> bool {
    rule_for(name).is_none()
}

/// Splits an environment into what an engine may inherit and the names removed.
pub fn sanitize<I, K, V>(env: I) -> (Vec<(K, V)>, Vec<K>)
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
{
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for (name, value) in env {
        if may_inherit(name.as_ref()) {
            kept.push((name, value));
        } else {
            removed.push(name);
        }
    }
    (kept, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_and_identity_are_removed_job_facts_kept() {
        let env = [
            ("SLURM_CPU_BIND", "quiet,mask_cpu:0x3"),
            ("SLURM_CPU_BIND_LIST", "0x3"),
            ("SLURM_TRES_PER_TASK", "cpu:4"),
            ("SLURM_CPUS_PER_TASK", "4"),
            ("SLURM_PROCID", "3"),
            ("PMIX_RANK", "3"),
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("SLURM_JOB_ID", "42"),
            ("SLURM_JOB_NODELIST", "n[1-2]"),
            ("SLURM_CLUSTER_NAME", "c"),
            ("PATH", "/usr/bin"),
            ("CUDA_VISIBLE_DEVICES", "0"),
        ];
        let (kept, removed) = sanitize(env);
        let kept: Vec<_> = kept.into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kept,
            [
                "SLURM_JOB_ID",
                "SLURM_JOB_NODELIST",
                "SLURM_CLUSTER_NAME",
                "PATH",
                "CUDA_VISIBLE_DEVICES"
            ]
        );
        assert_eq!(removed.len(), 7);
    }

    #[test]
    fn every_rule_has_a_reason_and_names() {
        for rule in REMOVED {
            assert!(!rule.names.is_empty());
            assert!(rule.reason.len() > 40, "{:?}", rule.names);
        }
        assert!(rule_for("SLURM_CPU_BIND_TYPE")
            .unwrap()
            .reason
            .contains("binding"));
    }
}
