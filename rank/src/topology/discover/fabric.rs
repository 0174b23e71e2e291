//! Multi-node NVLink fabric membership (`clusterUuid`, `cliqueId`) from
//! `nvidia-smi -q`.
//!
//! NVML's `nvmlDeviceGetGpuFabricInfo` is not wrapped by `nvml-wrapper`, and calling it
//! directly needs `unsafe`; `nvidia-smi -q` prints the same fields per GPU. It is only
//! run where NVML loaded, and its absence just means "no fabric".

use std::collections::BTreeMap;

use super::nvml::normalise_bus_id;

/// The program run, found on `PATH`.
pub const NVIDIA_SMI: &str = "nvidia-smi";

/// A GPU's fabric registration, when its state is `Completed` with status `Success`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fabric {
    pub(super) cluster_uuid: String,
    pub(super) clique_id: u32,
}

/// Runs `nvidia-smi -q` and parses it; `None` when it cannot run.
pub(super) fn query() -> Option<BTreeMap<String, Fabric>> {
    let out = std::process::Command::new(NVIDIA_SMI)
        .arg("-q")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Fabric membership by normalised PCI bus id, from `nvidia-smi -q` text. GPUs whose
/// fabric state is not `Completed` (or status not `Success`), or which print `N/A`,
/// are left out: they are not in a multi-node domain.
pub(super) fn parse(text: &str) -> BTreeMap<String, Fabric> {
    let mut out = BTreeMap::new();
    let mut bus: Option<String> = None;
    let mut in_fabric = false;
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    let mut flush = |bus: &Option<String>, fields: &mut BTreeMap<&str, &str>| {
        if let (Some(bus), Some(uuid), Some(clique)) =
            (bus, fields.get("ClusterUUID"), fields.get("CliqueId"))
        {
            let ok = fields.get("State") == Some(&"Completed")
                && fields.get("Status").is_none_or(|s| *s == "Success");
            let uuid_ok =
                !uuid.is_empty() && *uuid != "N/A" && !uuid.chars().all(|c| c == '0' || c == '-');
            if let (true, true, Ok(clique_id)) = (ok, uuid_ok, clique.parse::<u32>()) {
                out.insert(
                    normalise_bus_id(bus),
                    Fabric {
                        cluster_uuid: (*uuid).to_owned(),
                        clique_id,
                    },
                );
            }
        }
        fields.clear();
    };
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if let Some(id) = t.strip_prefix("GPU ").filter(|_| indent == 0) {
            flush(&bus, &mut fields);
            bus = Some(id.trim().to_owned());
            in_fabric = false;
            continue;
        }
        if indent == 4 {
            in_fabric = t == "Fabric";
            continue;
        }
        if in_fabric && indent == 8 {
            if let Some((k, v)) = t.split_once(':') {
                fields.insert(k.trim(), v.trim());
            }
        }
    }
    flush(&bus, &mut fields);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB200: &str = "\
==============NVSMI LOG==============

Attached GPUs                             : 2
GPU 00000008:01:00.0
    Product Name                          : NVIDIA GB200
    Fabric
        State                             : Completed
        Status                            : Success
        CliqueId                          : 32766
        ClusterUUID                       : 1b5ee1f5-0e6d-4a3e-a2a1-6f5b2e0b4c11
        Health
            Bandwidth                     : Full
    Processes                             : None

GPU 00000009:01:00.0
    Product Name                          : NVIDIA GB200
    Fabric
        State                             : In Progress
        Status                            : N/A
        CliqueId                          : N/A
        ClusterUUID                       : N/A
";

    #[test]
    fn completed_registrations_only() {
        let f = parse(GB200);
        assert_eq!(f.len(), 1, "{f:?}");
        let g = &f["0008:01:00.0"];
        assert_eq!(g.clique_id, 32766);
        assert_eq!(g.cluster_uuid, "1b5ee1f5-0e6d-4a3e-a2a1-6f5b2e0b4c11");
    }

    #[test]
    fn captured_h200_has_no_fabric() {
        let text = include_str!("../../../tests/fixtures/h200-nvidia-smi-q.txt");
        assert!(text.contains("    Fabric\n"));
        assert!(parse(text).is_empty());
    }

    #[test]
    fn hgx_without_fabric_has_none() {
        let text = "GPU 00000000:18:00.0\n    Fabric\n        State                 : N/A\n        Status : N/A\n        CliqueId : N/A\n        ClusterUUID : N/A\n";
        assert!(parse(text).is_empty());
    }
}
