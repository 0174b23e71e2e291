//! The simulated engine: `cohort sim` (see `crate::sim::config::SimArgs` for its flags).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Endpoints, Engine, EngineContext, Handshake, LaunchSpec};

/// Starts each instance as `<binary> sim --host … --port … --role … --model …`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimEngine {
    /// The `cohort` binary (the launcher passes its own path).
    pub binary: PathBuf,
    /// `--hardware` of the simulated GPU. Default `h100-sxm`.
    #[serde(default = "default_hardware")]
    pub hardware: String,
    /// `--speedup`: simulated time divided by this; `inf` for none. Default `1`.
    #[serde(default = "default_speedup")]
    pub speedup: String,
    /// Seconds to wait for `/health`. Default 30: the simulator starts in milliseconds,
    /// so anything slower is a fault worth reporting.
    #[serde(default = "default_ready_s")]
    pub ready_deadline_s: f64,
}

fn default_hardware() -> String {
    "h100-sxm".into()
}
fn default_speedup() -> String {
    "1".into()
}
fn default_ready_s() -> f64 {
    30.0
}

impl SimEngine {
    /// A simulator started from `binary` with the defaults.
    pub fn new(binary: PathBuf) -> Self {
        Self {
            binary,
            hardware: default_hardware(),
            speedup: default_speedup(),
            ready_deadline_s: default_ready_s(),
        }
    }
}

impl Engine for SimEngine {
    fn name(&self) -> &'static str {
        "sim"
    }

    /// A follower of a multi-node instance starts nothing: the simulator serves the
    /// whole instance from its leader's node, and the follower is ready when it is.
    fn launch(&self, ctx: &EngineContext<'_>) -> Option<LaunchSpec> {
        let i = ctx.instance;
        if i.is_follower() {
            return None;
        }
        let mut args: Vec<String> = vec![
            "sim".into(),
            "--host".into(),
            i.host.clone(),
            "--port".into(),
            i.port.to_string(),
            "--role".into(),
            i.role.name().into(),
            "--model".into(),
            i.model.clone(),
            "--tp".into(),
            i.tp.to_string(),
            "--hardware".into(),
            self.hardware.clone(),
            "--speedup".into(),
            self.speedup.clone(),
        ];
        if !i.nvlink_domain.is_empty() {
            args.extend(["--nvlink-domain".into(), i.nvlink_domain.clone()]);
        }
        if let Some(port) = i.kv_events_port {
            args.extend(["--kv-events-port".into(), port.to_string()]);
        }
        // One runtime thread per bound CPU: the simulator would otherwise start one per
        // core of the machine, most of them outside its CPU set.
        if let Some(cpus) = i.cpus.as_ref().filter(|c| !c.is_empty()) {
            args.extend(["--threads".into(), cpus.len().to_string()]);
        }
        args.extend(i.extra_args.iter().cloned());
        Some(LaunchSpec {
            program: self.binary.clone(),
            args,
            env: Vec::new(),
        })
    }

    fn endpoints(&self, ctx: &EngineContext<'_>) -> Endpoints {
        super::vllm::http_endpoints(
            ctx.instance,
            ctx.instance.multi_node.as_ref(),
            "/health",
            Some("/metrics"),
            true,
        )
    }

    fn ready_deadline(&self, _ctx: &EngineContext<'_>) -> Duration {
        Duration::from_secs_f64(self.ready_deadline_s.max(0.0))
    }

    fn handshake(&self) -> Handshake {
        Handshake::VllmKvTransferParams
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{InstanceSpec, Role};

    #[test]
    fn the_command_carries_the_plan() {
        let spec = InstanceSpec {
            id: "prefill-0".into(),
            role: Role::Prefill,
            host: "10.0.0.7".into(),
            port: 8100,
            kv_events_port: Some(5557),
            gpus: vec![2, 3],
            cpus: Some("0-7".parse().unwrap()),
            mem_nodes: vec![0],
            model: "llama-3.1-70b".into(),
            tp: 2,
            nvlink_domain: "node1".into(),
            extra_args: vec!["--max-num-seqs".into(), "64".into()],
            env: vec![],
            served_model_name: None,
            multi_node: None,
        };
        let e = SimEngine::new("/opt/cohort".into());
        let ctx = EngineContext { instance: &spec };
        let l = e.launch(&ctx).unwrap();
        let line = l.args.join(" ");
        assert_eq!(l.program, PathBuf::from("/opt/cohort"));
        assert!(
            line.starts_with(
                "sim --host 10.0.0.7 --port 8100 --role prefill --model llama-3.1-70b --tp 2"
            ),
            "{line}"
        );
        assert!(
            line.contains("--kv-events-port 5557") && line.contains("--threads 8"),
            "{line}"
        );
        assert!(line.ends_with("--max-num-seqs 64"), "{line}");
        let ep = e.endpoints(&ctx);
        assert_eq!(ep.health_url, "http://10.0.0.7:8100/health");
        assert_eq!(ep.kv_events_url.as_deref(), Some("tcp://10.0.0.7:5557"));
    }
}
