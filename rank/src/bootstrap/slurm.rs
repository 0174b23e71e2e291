//! Bootstrap from a Slurm step's environment, without MPI.
//!
//! Rank and size are the task's `SLURM_PROCID` and the step's task count, read through
//! [`SlurmContext`]. Rank 0 is on the step's first node: Slurm's block, cyclic and plane
//! distributions all put task 0 there (only `--distribution=arbitrary` may not, and the
//! agents then fail to reach it with the address named). The port is
//! [`derived_port`](super::rendezvous::derived_port) unless overridden.

use std::collections::BTreeMap;

use cohort_slurm::SlurmContext;

use super::rendezvous::derived_port;
use super::{
    kind_name, parse_var, read_token, vars, Bootstrap, BootstrapError, Method, Rendezvous, Request,
};

pub(super) fn resolve(
    req: &Request,
    env: &BTreeMap<String, String>,
    ctx: &SlurmContext,
    reason: String,
) -> Result<Bootstrap, BootstrapError> {
    let (Some(job), Some(step), Some(task)) = (&ctx.job, &ctx.step, &ctx.task) else {
        return Err(BootstrapError::NotAStepTask {
            found: kind_name(ctx.kind),
        });
    };
    let rank =
        u32::try_from(task.rank).map_err(|_| BootstrapError::TooLarge { value: task.rank })?;
    let size = u32::try_from(step.num_tasks).map_err(|_| BootstrapError::TooLarge {
        value: step.num_tasks,
    })?;
    let (port, port_origin) = match (
        req.rendezvous_port,
        parse_var::<u16>(env, vars::RENDEZVOUS_PORT, "a port number")?,
    ) {
        (Some(port), _) => (port, "from `--rendezvous-port`"),
        (None, Some(port)) => (port, "from `COHORT_RENDEZVOUS_PORT`"),
        (None, None) => (
            derived_port(job.id, step.id),
            "derived from the job and step ids",
        ),
    };
    // The context checked that the step's node list is non-empty when a task exists.
    let host = step
        .nodes
        .first()
        .cloned()
        .unwrap_or_else(|| task.node.clone());
    let token = read_token(req, env)?.ok_or(BootstrapError::NoToken)?;
    Ok(Bootstrap {
        method: Method::Slurm,
        reason: format!("{reason} (job {}, step {})", job.id, step.id),
        rank,
        size,
        node: task.node.clone(),
        rendezvous: Rendezvous {
            host,
            port,
            port_origin,
        },
        token,
    })
}
