//! The hardware table: published per-GPU figures the roofline model divides by.
//!
//! Figures are NVIDIA's datasheet numbers for dense (not 2:4-sparse) tensor math, per
//! GPU. NVLink is the per-GPU total of both directions as NVIDIA quotes it; the
//! simulator uses half of it for a one-way KV transfer. The NIC is the per-GPU
//! scale-out NIC of the reference system (one ConnectX per GPU). `docs/sim.md` cites
//! each row and says which figures are uncertain.

/// One GPU model's published figures, in SI units (bytes, bytes/s, FLOP/s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hardware {
    /// Canonical name, as given to `--hardware`.
    pub name: &'static str,
    /// Dense BF16 tensor FLOP/s.
    pub bf16_flops: f64,
    /// Dense FP8 tensor FLOP/s.
    pub fp8_flops: f64,
    /// HBM capacity, bytes.
    pub hbm_bytes: f64,
    /// HBM bandwidth, bytes/s.
    pub hbm_bw: f64,
    /// NVLink bandwidth per GPU, both directions together, bytes/s.
    pub nvlink_bw: f64,
    /// Scale-out NIC bandwidth per GPU, one direction, bytes/s.
    pub nic_bw: f64,
}

const T: f64 = 1e12;
const G: f64 = 1e9;

/// Every GPU the simulator knows.
pub const HARDWARE: &[Hardware] = &[
    Hardware {
        name: "h100-sxm",
        bf16_flops: 989.0 * T,
        fp8_flops: 1979.0 * T,
        hbm_bytes: 80.0 * G,
        hbm_bw: 3350.0 * G,
        nvlink_bw: 900.0 * G,
        nic_bw: 50.0 * G, // ConnectX-7, 400 Gb/s
    },
    Hardware {
        name: "h200",
        bf16_flops: 989.0 * T,
        fp8_flops: 1979.0 * T,
        hbm_bytes: 141.0 * G,
        hbm_bw: 4800.0 * G,
        nvlink_bw: 900.0 * G,
        nic_bw: 50.0 * G,
    },
    Hardware {
        name: "b200",
        bf16_flops: 2250.0 * T,
        fp8_flops: 4500.0 * T,
        hbm_bytes: 180.0 * G,
        hbm_bw: 8000.0 * G,
        nvlink_bw: 1800.0 * G,
        nic_bw: 50.0 * G,
    },
    Hardware {
        name: "gb200",
        bf16_flops: 2500.0 * T,
        fp8_flops: 5000.0 * T,
        hbm_bytes: 186.0 * G,
        hbm_bw: 8000.0 * G,
        nvlink_bw: 1800.0 * G,
        nic_bw: 50.0 * G,
    },
    Hardware {
        name: "gb300",
        bf16_flops: 2500.0 * T,
        fp8_flops: 5000.0 * T,
        hbm_bytes: 288.0 * G,
        hbm_bw: 8000.0 * G,
        nvlink_bw: 1800.0 * G,
        nic_bw: 100.0 * G, // ConnectX-8, 800 Gb/s
    },
];

/// The table row for `name` (case-insensitive; `h100` means `h100-sxm`).
pub fn lookup(name: &str) -> Option<&'static Hardware> {
    let n = name.to_ascii_lowercase().replace('_', "-");
    let n = match n.as_str() {
        "h100" | "h100sxm" => "h100-sxm",
        other => other,
    };
    HARDWARE.iter().find(|h| h.name == n)
}

/// The names `--hardware` accepts, for error messages.
pub fn names() -> String {
    HARDWARE
        .iter()
        .map(|h| h.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_forgiving_and_exact() {
        assert_eq!(lookup("H100").unwrap().name, "h100-sxm");
        assert_eq!(lookup("GB200").unwrap().hbm_bytes, 186e9);
        assert!(lookup("a100").is_none());
        for h in HARDWARE {
            assert!(h.fp8_flops >= h.bf16_flops, "{}", h.name);
            assert!(h.nvlink_bw > h.nic_bw, "{}", h.name);
        }
    }
}
