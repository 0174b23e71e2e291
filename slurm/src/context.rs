//! The Slurm context of a process, typed, from an environment map passed in.
//!
//! Slurm's environment is easy to misread. The rules this module encodes:
//!
//! - **The batch shell is not a task.** The script `sbatch` runs has `SLURM_PROCID=0` and
//!   `SLURM_NODEID=0` whatever it is, and `SLURM_NTASKS` is the job's task count. Only the
//!   tasks an `srun` step starts (they have `SLURM_STEP_ID`) have a meaningful rank.
//! - **Inside a step, `STEP_*` wins over `JOB_*`.** A step may use fewer nodes or tasks than
//!   the job: its node list is `SLURM_STEP_NODELIST`, its task count
//!   `SLURM_STEP_NUM_TASKS`, its layout `SLURM_STEP_TASKS_PER_NODE`.
//! - **`SLURM_PROCID` is a node rank only with one task per node.** The node a task runs
//!   on is `SLURM_NODEID`, an index into the step's node list.
//! - Het jobs add `…_HET_GROUP_<n>` copies of the job variables, one per component.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::hostlist::{self, HostlistError};
use crate::tasks::{CountsError, Distribution, DistributionError, PerNode};

/// Names of the variables read, in one place.
pub mod vars {
    pub const JOB_ID: &str = "SLURM_JOB_ID";
    /// Older spelling, still set by current Slurm.
    pub const JOBID: &str = "SLURM_JOBID";
    pub const JOB_NAME: &str = "SLURM_JOB_NAME";
    pub const JOB_NODELIST: &str = "SLURM_JOB_NODELIST";
    /// Older spelling of `SLURM_JOB_NODELIST`.
    pub const NODELIST: &str = "SLURM_NODELIST";
    pub const JOB_NUM_NODES: &str = "SLURM_JOB_NUM_NODES";
    pub const JOB_CPUS_PER_NODE: &str = "SLURM_JOB_CPUS_PER_NODE";
    pub const JOB_PARTITION: &str = "SLURM_JOB_PARTITION";
    pub const JOB_ACCOUNT: &str = "SLURM_JOB_ACCOUNT";
    pub const JOB_SEGMENT_SIZE: &str = "SLURM_JOB_SEGMENT_SIZE";
    pub const SUBMIT_DIR: &str = "SLURM_SUBMIT_DIR";
    pub const CLUSTER_NAME: &str = "SLURM_CLUSTER_NAME";
    pub const NTASKS: &str = "SLURM_NTASKS";
    pub const TASKS_PER_NODE: &str = "SLURM_TASKS_PER_NODE";
    pub const STEP_ID: &str = "SLURM_STEP_ID";
    /// Older spelling of `SLURM_STEP_ID`.
    pub const STEPID: &str = "SLURM_STEPID";
    pub const STEP_NODELIST: &str = "SLURM_STEP_NODELIST";
    pub const STEP_NUM_TASKS: &str = "SLURM_STEP_NUM_TASKS";
    pub const STEP_TASKS_PER_NODE: &str = "SLURM_STEP_TASKS_PER_NODE";
    pub const DISTRIBUTION: &str = "SLURM_DISTRIBUTION";
    pub const PROCID: &str = "SLURM_PROCID";
    pub const LOCALID: &str = "SLURM_LOCALID";
    pub const NODEID: &str = "SLURM_NODEID";
    pub const TASK_PID: &str = "SLURM_TASK_PID";
    pub const SLURMD_NODENAME: &str = "SLURMD_NODENAME";
    pub const GPUS_ON_NODE: &str = "SLURM_GPUS_ON_NODE";
    pub const CPUS_ON_NODE: &str = "SLURM_CPUS_ON_NODE";
    pub const HET_SIZE: &str = "SLURM_HET_SIZE";
    /// Suffix of the per-component copies of job variables in a het job.
    pub const HET_GROUP_SUFFIX: &str = "_HET_GROUP_";
}

/// Slurm's reserved step ids (`slurm.h`): the batch shell and the interactive step.
const BATCH_STEP: u64 = 0xffff_fffb;
const INTERACTIVE_STEP: u64 = 0xffff_fffa;

/// What kind of process this environment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    /// No Slurm job around this process.
    Outside,
    /// The script of an `sbatch` job (runs on the job's first node, is not a task).
    BatchShell,
    /// A shell inside an allocation without a step: `salloc`'s shell or its interactive step.
    AllocationShell,
    /// One task of an `srun` step: the only kind with a meaningful rank.
    StepTask,
}

/// A variable Slurm set that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("`{var}` is `{value}`: {problem}")]
    Invalid {
        var: String,
        value: String,
        problem: String,
    },
    #[error("`{var}` is `{value}`")]
    Hostlist {
        var: String,
        value: String,
        #[source]
        source: HostlistError,
    },
    #[error("`{var}` is `{value}`")]
    Counts {
        var: String,
        value: String,
        #[source]
        source: CountsError,
    },
    #[error("`{var}` is `{value}`")]
    Distribution {
        var: String,
        value: String,
        #[source]
        source: DistributionError,
    },
    #[error("`{var}` is not set, but {why}")]
    Missing {
        var: &'static str,
        why: &'static str,
    },
}

/// One component of a het job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HetGroup {
    pub index: u32,
    pub job_id: Option<u64>,
    pub nodes: Vec<String>,
    pub tasks_per_node: Option<PerNode>,
}

/// Facts about the job (the allocation), true for every process in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: u64,
    pub name: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub cluster: Option<String>,
    pub submit_dir: Option<String>,
    /// The job's nodes, expanded, in Slurm's order.
    pub nodes: Vec<String>,
    /// The job's task count (`SLURM_NTASKS` outside a step), if the job asked for tasks.
    pub num_tasks: Option<u64>,
    pub tasks_per_node: Option<PerNode>,
    pub cpus_per_node: Option<PerNode>,
    /// `--segment` size: nodes are allocated in blocks of this many (topology/block).
    pub segment_size: Option<u32>,
    pub het_groups: Vec<HetGroup>,
}

/// Facts about the step a task belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub id: u64,
    /// The step's nodes, expanded: `SLURM_STEP_NODELIST`, not the job's.
    pub nodes: Vec<String>,
    pub num_tasks: u64,
    pub tasks_per_node: PerNode,
    pub distribution: Option<Distribution>,
}

/// Facts about one task of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    /// Global rank in the step (`SLURM_PROCID`).
    pub rank: u64,
    /// Rank among the step's tasks on this node (`SLURM_LOCALID`).
    pub local_rank: u32,
    /// Index of this task's node in the step's node list (`SLURM_NODEID`).
    pub node_index: usize,
    /// This task's node name, as Slurm names it.
    pub node: String,
    /// `SLURM_GPUS_ON_NODE`, when the job asked for GPUs.
    pub gpus_on_node: Option<u32>,
    pub cpus_on_node: Option<u32>,
}

/// The parsed Slurm context of one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlurmContext {
    pub kind: ProcessKind,
    pub job: Option<Job>,
    pub step: Option<Step>,
    pub task: Option<Task>,
}

/// Reads variables from the map, turning malformed values into precise errors.
struct Env<'a>(&'a BTreeMap<String, String>);

impl Env<'_> {
    fn get(&self, var: &str) -> Option<&str> {
        self.0
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn first(&self, vars: &[&'static str]) -> Option<(&'static str, &str)> {
        vars.iter().find_map(|&var| self.get(var).map(|v| (var, v)))
    }

    fn number<T: std::str::FromStr>(&self, var: &str) -> Result<Option<T>, ContextError> {
        self.get(var)
            .map(|value| parse_number(var, value))
            .transpose()
    }

    fn hostlist(&self, var: &str) -> Result<Option<Vec<String>>, ContextError> {
        let Some(value) = self.get(var) else {
            return Ok(None);
        };
        hostlist::expand(value)
            .map(Some)
            .map_err(|source| ContextError::Hostlist {
                var: var.to_owned(),
                value: value.to_owned(),
                source,
            })
    }

    fn per_node(&self, var: &str) -> Result<Option<PerNode>, ContextError> {
        let Some(value) = self.get(var) else {
            return Ok(None);
        };
        PerNode::parse(value)
            .map(Some)
            .map_err(|source| ContextError::Counts {
                var: var.to_owned(),
                value: value.to_owned(),
                source,
            })
    }

    fn text(&self, var: &str) -> Option<String> {
        self.get(var).map(str::to_owned)
    }
}

fn parse_number<T: std::str::FromStr>(var: &str, value: &str) -> Result<T, ContextError> {
    value.trim().parse().map_err(|_| ContextError::Invalid {
        var: var.to_owned(),
        value: value.to_owned(),
        problem: "not a non-negative integer".to_owned(),
    })
}

fn invalid(var: &str, value: impl ToString, problem: String) -> ContextError {
    ContextError::Invalid {
        var: var.to_owned(),
        value: value.to_string(),
        problem,
    }
}

impl SlurmContext {
    /// Builds the context from an environment (any iterator of name/value pairs; pass
    /// `std::env::vars()` at the program's edge).
    pub fn from_env<I, K, V>(env: I) -> Result<Self, ContextError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map: BTreeMap<String, String> =
            env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        Self::from_map(&map)
    }

    /// Builds the context from an environment map.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, ContextError> {
        let env = Env(map);
        let Some((id_var, id)) = env.first(&[vars::JOB_ID, vars::JOBID]) else {
            return Ok(Self {
                kind: ProcessKind::Outside,
                job: None,
                step: None,
                task: None,
            });
        };
        let job = read_job(&env, parse_number(id_var, id)?)?;
        let step_id = match env.first(&[vars::STEP_ID, vars::STEPID]) {
            Some((var, value)) => Some(parse_number::<u64>(var, value)?),
            None => None,
        };
        let kind = match step_id {
            Some(BATCH_STEP) => ProcessKind::BatchShell,
            Some(INTERACTIVE_STEP) => ProcessKind::AllocationShell,
            Some(_) => ProcessKind::StepTask,
            // The batch shell is started by slurmstepd, which gives it a task pid and node
            // id; `salloc`'s shell runs on the login node and has neither.
            None if env.get(vars::TASK_PID).is_some() => ProcessKind::BatchShell,
            None => ProcessKind::AllocationShell,
        };
        let (step, task) = match (kind, step_id) {
            (ProcessKind::StepTask, Some(id)) => {
                let step = read_step(&env, id)?;
                let task = read_task(&env, &step)?;
                (Some(step), Some(task))
            }
            _ => (None, None),
        };
        Ok(Self {
            kind,
            job: Some(job),
            step,
            task,
        })
    }

    /// This process's rank among the step's tasks, for step tasks only.
    pub fn rank(&self) -> Option<u64> {
        self.task.as_ref().map(|t| t.rank)
    }

    /// The node rank of this task: its node's index in the step's node list. Equal to the
    /// task rank only when the step runs one task per node.
    pub fn node_rank(&self) -> Option<usize> {
        self.task.as_ref().map(|t| t.node_index)
    }

    /// The nodes of the step when in a step, else the job's.
    pub fn nodes(&self) -> &[String] {
        match (&self.step, &self.job) {
            (Some(step), _) => &step.nodes,
            (None, Some(job)) => &job.nodes,
            (None, None) => &[],
        }
    }
}

fn read_job(env: &Env<'_>, id: u64) -> Result<Job, ContextError> {
    let nodes = match env.first(&[vars::JOB_NODELIST, vars::NODELIST]) {
        Some((var, _)) => env.hostlist(var)?.unwrap_or_default(),
        None => Vec::new(),
    };
    if let Some(n) = env.number::<usize>(vars::JOB_NUM_NODES)? {
        if !nodes.is_empty() && n != nodes.len() {
            let problem = format!("the job's node list names {} nodes", nodes.len());
            return Err(invalid(vars::JOB_NUM_NODES, n, problem));
        }
    }
    Ok(Job {
        id,
        name: env.text(vars::JOB_NAME),
        partition: env.text(vars::JOB_PARTITION),
        account: env.text(vars::JOB_ACCOUNT),
        cluster: env.text(vars::CLUSTER_NAME),
        submit_dir: env.text(vars::SUBMIT_DIR),
        nodes,
        num_tasks: env.number(vars::NTASKS)?,
        tasks_per_node: env.per_node(vars::TASKS_PER_NODE)?,
        cpus_per_node: env.per_node(vars::JOB_CPUS_PER_NODE)?,
        segment_size: env.number(vars::JOB_SEGMENT_SIZE)?,
        het_groups: read_het_groups(env)?,
    })
}

fn read_het_groups(env: &Env<'_>) -> Result<Vec<HetGroup>, ContextError> {
    let mut indices: Vec<u32> = env
        .0
        .keys()
        .filter_map(|k| k.split_once(vars::HET_GROUP_SUFFIX))
        .filter_map(|(_, n)| n.parse().ok())
        .collect();
    indices.sort_unstable();
    indices.dedup();
    indices
        .into_iter()
        .map(|index| {
            let var = |base: &str| format!("{base}{}{index}", vars::HET_GROUP_SUFFIX);
            Ok(HetGroup {
                index,
                job_id: env.number(&var(vars::JOB_ID))?,
                nodes: env.hostlist(&var(vars::JOB_NODELIST))?.unwrap_or_default(),
                tasks_per_node: env.per_node(&var(vars::TASKS_PER_NODE))?,
            })
        })
        .collect()
}

fn read_step(env: &Env<'_>, id: u64) -> Result<Step, ContextError> {
    const WHY: &str = "every task of an `srun` step has it (is this process a step task?)";
    let (nodes_var, nodes) = match env.first(&[vars::STEP_NODELIST, vars::JOB_NODELIST]) {
        Some((var, _)) => (var, env.hostlist(var)?.unwrap_or_default()),
        None => {
            return Err(ContextError::Missing {
                var: vars::STEP_NODELIST,
                why: WHY,
            })
        }
    };
    let layout_var = match env.first(&[vars::STEP_TASKS_PER_NODE, vars::TASKS_PER_NODE]) {
        Some((var, _)) => var,
        None => {
            return Err(ContextError::Missing {
                var: vars::STEP_TASKS_PER_NODE,
                why: WHY,
            })
        }
    };
    let tasks_per_node = env
        .per_node(layout_var)?
        .unwrap_or_else(|| PerNode::from_counts(vec![]));
    if tasks_per_node.nodes() != nodes.len() {
        let problem = format!(
            "it has {} entries but `{nodes_var}` names {} nodes",
            tasks_per_node.nodes(),
            nodes.len()
        );
        return Err(invalid(layout_var, tasks_per_node, problem));
    }
    let num_tasks = match env.first(&[vars::STEP_NUM_TASKS, vars::NTASKS]) {
        Some((var, value)) => parse_number(var, value)?,
        None => tasks_per_node.total(),
    };
    if num_tasks != tasks_per_node.total() {
        let problem = format!("`{layout_var}` adds up to {} tasks", tasks_per_node.total());
        return Err(invalid(vars::STEP_NUM_TASKS, num_tasks, problem));
    }
    let distribution = match env.get(vars::DISTRIBUTION) {
        None => None,
        // `arbitrary` and other layouts are legal; they only mean cohort cannot compute
        // other tasks' nodes, while each task still knows its own from `SLURM_NODEID`.
        Some(value) => Distribution::parse(value).ok(),
    };
    Ok(Step {
        id,
        nodes,
        num_tasks,
        tasks_per_node,
        distribution,
    })
}

fn read_task(env: &Env<'_>, step: &Step) -> Result<Task, ContextError> {
    const WHY: &str = "every task of an `srun` step has it";
    let rank: u64 = env.number(vars::PROCID)?.ok_or(ContextError::Missing {
        var: vars::PROCID,
        why: WHY,
    })?;
    if rank >= step.num_tasks {
        let problem = format!("the step has {} tasks", step.num_tasks);
        return Err(invalid(vars::PROCID, rank, problem));
    }
    let node_index: usize = env.number(vars::NODEID)?.ok_or(ContextError::Missing {
        var: vars::NODEID,
        why: WHY,
    })?;
    let Some(listed) = step.nodes.get(node_index) else {
        let problem = format!("the step has {} nodes", step.nodes.len());
        return Err(invalid(vars::NODEID, node_index, problem));
    };
    Ok(Task {
        rank,
        local_rank: env.number(vars::LOCALID)?.unwrap_or(0),
        node_index,
        node: env
            .text(vars::SLURMD_NODENAME)
            .unwrap_or_else(|| listed.clone()),
        gpus_on_node: env.number(vars::GPUS_ON_NODE)?,
        cpus_on_node: env.number(vars::CPUS_ON_NODE)?,
    })
}

#[cfg(test)]
mod tests;
