//! Engines started by someone else: cohort attaches to their URLs and starts nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Endpoints, Engine, EngineContext, Handshake, LaunchSpec};

/// Servers already running, reached at the instance's `host:port` from the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalEngine {
    /// Path of the health endpoint. Default `/health` (vLLM, SGLang, TensorRT-LLM).
    #[serde(default = "default_health")]
    pub health_path: String,
    /// Path of the Prometheus endpoint, if the servers have one. Default `/metrics`.
    #[serde(default = "default_metrics")]
    pub metrics_path: Option<String>,
    /// The handshake the servers speak. Default none (aggregated).
    #[serde(default = "default_handshake")]
    pub handshake: Handshake,
    /// Seconds to wait for the servers to answer. Default 60.
    #[serde(default = "default_ready_s")]
    pub ready_deadline_s: f64,
}

fn default_health() -> String {
    "/health".into()
}
fn default_metrics() -> Option<String> {
    Some("/metrics".into())
}
fn default_handshake() -> Handshake {
    Handshake::None
}
fn default_ready_s() -> f64 {
    60.0
}

impl Default for ExternalEngine {
    fn default() -> Self {
        Self {
            health_path: default_health(),
            metrics_path: default_metrics(),
            handshake: default_handshake(),
            ready_deadline_s: default_ready_s(),
        }
    }
}

impl Engine for ExternalEngine {
    fn name(&self) -> &'static str {
        "external"
    }

    fn launch(&self, _ctx: &EngineContext<'_>) -> Option<LaunchSpec> {
        None
    }

    fn endpoints(&self, ctx: &EngineContext<'_>) -> Endpoints {
        let i = ctx.instance;
        let url = format!("http://{}:{}", i.host, i.port);
        Endpoints {
            health_url: format!("{url}{}", self.health_path),
            metrics_url: self.metrics_path.as_ref().map(|p| format!("{url}{p}")),
            kv_events_url: i.kv_events_port.map(|p| format!("tcp://{}:{p}", i.host)),
            url,
        }
    }

    fn ready_deadline(&self, _ctx: &EngineContext<'_>) -> Duration {
        Duration::from_secs_f64(self.ready_deadline_s.max(0.0))
    }

    fn handshake(&self) -> Handshake {
        self.handshake
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    #[test]
    fn configs_are_tagged_and_strict() {
        let c: EngineConfig =
            serde_json::from_str(r#"{"type": "external", "handshake": "vllm_kv_transfer_params"}"#)
                .unwrap();
        let engine = c.build();
        assert_eq!(engine.name(), "external");
        assert_eq!(engine.handshake(), Handshake::VllmKvTransferParams);
        let err = serde_json::from_str::<EngineConfig>(r#"{"type": "external", "helth": "/x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("helth"), "{err}");
    }
}
