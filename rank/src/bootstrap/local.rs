//! Local bootstrap: `cohort launch --local N` runs N ranks on this machine.
//!
//! The process the user started is rank 0: it binds its coordinator on loopback (port 0
//! unless overridden, so runs never collide), generates a job token unless one is given,
//! and starts ranks 1..N with [`child_env`], which hands each its rank, the size, rank
//! 0's address and the token through the environment (never the command line).

use std::collections::BTreeMap;

use super::{
    parse_var, read_token, vars, Bootstrap, BootstrapError, JobToken, Method, Rendezvous, Request,
};

/// The address local runs listen on and dial: loopback, so a rehearsal on a shared login
/// node is not reachable from the network.
pub const LOOPBACK: &str = "127.0.0.1";

/// This machine's name for the local ranks: `local-<rank>`, one emulated node each.
pub fn node_name(rank: u32) -> String {
    format!("local-{rank}")
}

pub(super) fn resolve(
    req: &Request,
    env: &BTreeMap<String, String>,
    reason: &str,
) -> Result<Bootstrap, BootstrapError> {
    if let Some(rank) = parse_var::<u32>(env, vars::LOCAL_RANK, "a rank number")? {
        return resolve_child(req, env, rank, reason);
    }
    let size = req.local_ranks.unwrap_or(1);
    if size == 0 {
        return Err(BootstrapError::Invalid {
            var: "--local",
            value: "0".into(),
            problem: "a local run needs at least one rank".into(),
        });
    }
    let token = match read_token(req, env)? {
        Some(token) => token,
        None => JobToken::generate()?,
    };
    let (port, port_origin) = match req.rendezvous_port {
        Some(port) => (port, "from `--rendezvous-port`"),
        None => (0, "picked when rank 0 binds"),
    };
    Ok(Bootstrap {
        method: Method::Local,
        reason: reason.to_owned(),
        rank: 0,
        size,
        node: node_name(0),
        rendezvous: Rendezvous {
            host: LOOPBACK.to_owned(),
            port,
            port_origin,
        },
        token,
    })
}

fn resolve_child(
    req: &Request,
    env: &BTreeMap<String, String>,
    rank: u32,
    reason: &str,
) -> Result<Bootstrap, BootstrapError> {
    let missing = |var: &'static str| BootstrapError::Invalid {
        var,
        value: String::new(),
        problem: format!("`{}` is set, so this must be too", vars::LOCAL_RANK),
    };
    let size: u32 = parse_var(env, vars::LOCAL_SIZE, "the number of ranks")?
        .ok_or_else(|| missing(vars::LOCAL_SIZE))?;
    if rank >= size {
        return Err(BootstrapError::Invalid {
            var: vars::LOCAL_RANK,
            value: rank.to_string(),
            problem: format!("must be below `{}` ({size})", vars::LOCAL_SIZE),
        });
    }
    let addr: std::net::SocketAddr = parse_var(env, vars::LOCAL_RENDEZVOUS, "`host:port`")?
        .ok_or_else(|| missing(vars::LOCAL_RENDEZVOUS))?;
    let token = read_token(req, env)?.ok_or(BootstrapError::NoToken)?;
    Ok(Bootstrap {
        method: Method::Local,
        reason: reason.to_owned(),
        rank,
        size,
        node: node_name(rank),
        rendezvous: Rendezvous {
            host: addr.ip().to_string(),
            port: addr.port(),
            port_origin: "from `COHORT_LOCAL_RENDEZVOUS`",
        },
        token,
    })
}

/// The environment rank 0 of a local run gives the rank `rank` it starts: add these to
/// the child's environment (the token travels here, not in its arguments).
pub fn child_env(
    rank: u32,
    size: u32,
    rank0: std::net::SocketAddr,
    token: &JobToken,
) -> Vec<(&'static str, String)> {
    vec![
        (vars::LOCAL_RANK, rank.to_string()),
        (vars::LOCAL_SIZE, size.to_string()),
        (vars::LOCAL_RENDEZVOUS, rank0.to_string()),
        (vars::JOB_TOKEN, token.expose().to_owned()),
    ]
}
