//! Where rank 0's coordinator listens.
//!
//! The other ranks dial rank 0 by its Slurm node name (the step's first node). So rank 0
//! listens on exactly the address that name resolves to, provided it is one of this
//! node's own interface addresses: that is the cluster-facing interface by the site's
//! own naming, and listening there (not on `0.0.0.0`) keeps the coordinator off
//! management and public networks. A name resolving to loopback (Debian's `127.0.1.1`
//! line in `/etc/hosts`) or to an address this node does not have is an error that says
//! so, rather than a coordinator the other nodes cannot reach. Local runs listen on
//! loopback. `--listen-address` overrides both.

use std::net::IpAddr;

/// What the choice is made from.
#[derive(Debug, Clone)]
pub enum ListenScope {
    /// A local run: `127.0.0.1`.
    Loopback,
    /// A multi-node job.
    Cluster {
        /// This node's name, as the other ranks dial it.
        node: String,
        /// What `node` resolves to here, in resolver order.
        resolved: Vec<IpAddr>,
        /// This node's interface addresses (from topology discovery).
        local: Vec<IpAddr>,
    },
    /// `--listen-address`.
    Explicit(IpAddr),
}

/// The address chosen, and why (printed at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenChoice {
    pub ip: IpAddr,
    pub why: String,
}

/// No address fits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenError {
    #[error("node `{node}` does not resolve to any address here; check DNS or `/etc/hosts`, or pass `--listen-address`")]
    Unresolved { node: String },
    #[error("node `{node}` resolves only to loopback ({addrs}), which other nodes cannot reach; fix `/etc/hosts` or pass `--listen-address` with one of this node's addresses ({local})")]
    Loopback {
        node: String,
        addrs: String,
        local: String,
    },
    #[error("node `{node}` resolves to {addrs}, none of which is an address of this node ({local}); pass `--listen-address`")]
    NotLocal {
        node: String,
        addrs: String,
        local: String,
    },
}

fn list(addrs: &[IpAddr]) -> String {
    if addrs.is_empty() {
        return "none".into();
    }
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Chooses the listen address (see the module docs for the rule).
pub fn choose(scope: &ListenScope) -> Result<ListenChoice, ListenError> {
    match scope {
        ListenScope::Loopback => Ok(ListenChoice {
            ip: IpAddr::from([127, 0, 0, 1]),
            why: "a local run: loopback only".into(),
        }),
        ListenScope::Explicit(ip) => Ok(ListenChoice {
            ip: *ip,
            why: "`--listen-address`".into(),
        }),
        ListenScope::Cluster {
            node,
            resolved,
            local,
        } => {
            if resolved.is_empty() {
                return Err(ListenError::Unresolved { node: node.clone() });
            }
            if let Some(ip) = resolved
                .iter()
                .find(|ip| !ip.is_loopback() && local.contains(ip))
            {
                return Ok(ListenChoice {
                    ip: *ip,
                    why: format!("the address `{node}` resolves to, as the other ranks dial it"),
                });
            }
            let (addrs, local) = (list(resolved), list(local));
            if resolved.iter().all(IpAddr::is_loopback) {
                return Err(ListenError::Loopback {
                    node: node.clone(),
                    addrs,
                    local,
                });
            }
            Err(ListenError::NotLocal {
                node: node.clone(),
                addrs,
                local,
            })
        }
    }
}

/// What `host` resolves to (blocking: call at the program's edge).
pub fn resolve_host(host: &str) -> Vec<IpAddr> {
    use std::net::ToSocketAddrs;
    let mut out: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
        .unwrap_or_default();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cluster(resolved: &[&str], local: &[&str]) -> ListenScope {
        ListenScope::Cluster {
            node: "gpu07".into(),
            resolved: resolved.iter().map(|s| ip(s)).collect(),
            local: local.iter().map(|s| ip(s)).collect(),
        }
    }

    #[test]
    fn listens_where_the_node_name_points() {
        let c = choose(&cluster(&["10.1.0.7"], &["192.168.5.7", "10.1.0.7"])).unwrap();
        assert_eq!(c.ip, ip("10.1.0.7"));
    }

    #[test]
    fn skips_loopback_when_the_name_has_a_real_address_too() {
        let c = choose(&cluster(&["127.0.1.1", "10.1.0.7"], &["10.1.0.7"])).unwrap();
        assert_eq!(c.ip, ip("10.1.0.7"));
    }

    #[test]
    fn refuses_loopback_only_and_foreign_addresses() {
        let e = choose(&cluster(&["127.0.1.1"], &["10.1.0.7"])).unwrap_err();
        assert!(matches!(e, ListenError::Loopback { .. }), "{e}");
        assert!(e.to_string().contains("10.1.0.7"));
        let e = choose(&cluster(&["10.9.9.9"], &["10.1.0.7"])).unwrap_err();
        assert!(matches!(e, ListenError::NotLocal { .. }), "{e}");
        let e = choose(&cluster(&[], &["10.1.0.7"])).unwrap_err();
        assert!(matches!(e, ListenError::Unresolved { .. }), "{e}");
    }

    #[test]
    fn local_runs_use_loopback() {
        assert_eq!(choose(&ListenScope::Loopback).unwrap().ip, ip("127.0.0.1"));
    }
}
