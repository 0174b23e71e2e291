//! `cohort topo --json` as captured on an H200 machine, checked against what
//! `nvidia-smi --query-gpu` printed there at the same time.

use cohort_rank::topology::{NvlinkDomain, Topology};

const TOPO: &str = include_str!("../fixtures/h200-topo.json");
const QUERY: &str = include_str!("../fixtures/h200-nvidia-smi-query.csv");

/// `index, name, memory.total [MiB], pci.bus_id, uuid` rows.
fn nvidia_smi_rows() -> Vec<Vec<String>> {
    QUERY
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|f| f.trim().to_owned()).collect())
        .collect()
}

#[test]
fn h200_capture_matches_nvidia_smi() {
    let capture: serde_json::Value = serde_json::from_str(TOPO).unwrap();
    let topo = Topology::from_json("h200-topo.json", &capture["topology"].to_string()).unwrap();
    assert_eq!(topo.source, "discovered");
    let node = &topo.nodes[0];
    let rows = nvidia_smi_rows();
    assert_eq!(node.gpus.len(), rows.len(), "GPU count");
    assert_eq!(capture["gpu_binding"]["gpus_on_node"], rows.len());
    for (gpu, row) in node.gpus.iter().zip(&rows) {
        assert_eq!(gpu.index.to_string(), row[0]);
        assert_eq!(gpu.name, row[1]);
        assert_eq!(format!("{} MiB", gpu.memory_mib), row[2]);
        // nvidia-smi prints an 8-digit PCI domain; cohort writes sysfs's 4 digits.
        assert_eq!(gpu.pci_bus_id, row[3][4..].to_ascii_lowercase());
        assert_eq!(gpu.uuid, row[4]);
        // A lone PCIe/SXM GPU without NVLink peers is its own domain.
        assert!(matches!(gpu.nvlink_domain, NvlinkDomain::Single { .. }));
    }
    assert_eq!(node.numa_nodes.len(), 1);
    assert_eq!(node.numa_nodes[0].cpus.to_string(), "0-15");
    assert_eq!(node.usable_cpus.as_ref().unwrap().len(), 16);
    assert!(capture["notes"].as_array().unwrap().is_empty());
}
