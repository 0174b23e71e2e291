//! The node-wide facts preflight reads from files, below a root (`/` on a node, a
//! directory tree in tests): IMEX channels and the GPUDirect RDMA path.

use std::path::Path;

/// Where IMEX channel device nodes live.
pub(super) const IMEX_CHANNELS_DIR: &str = "dev/nvidia-caps-imex-channels";

/// The IMEX channels present (`channel0`, …), sorted.
pub(super) fn imex_channels(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(IMEX_CHANNELS_DIR))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    n.strip_prefix("channel")
                        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether the driver registered the IMEX channel character device
/// (`nvidia-caps-imex-channels` in `/proc/devices`); `None` if that file is unreadable.
pub(super) fn imex_device_registered(root: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(root.join("proc/devices")).ok()?;
    Some(
        text.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("nvidia-caps-imex-channels")),
    )
}

/// How GPU memory can be registered with an RDMA NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GpuDirect {
    /// A peer-memory module is loaded; the path that shows it.
    PeerMemory(&'static str),
    /// No peer-memory module, but the driver and kernel support DMA-BUF.
    DmaBuf {
        /// The kernel release.
        kernel: String,
    },
    /// Neither.
    Missing {
        /// The kernel release, if readable.
        kernel: Option<String>,
        /// Whether the NVIDIA driver is its open kernel module flavour.
        open_module: bool,
    },
}

/// What NCCL and UCX look for to call a peer-memory module loaded: `nvidia_peermem`
/// (in the driver since R470), or Mellanox's older `nv_peer_mem`.
const PEER_MEMORY: [&str; 4] = [
    "sys/module/nvidia_peermem",
    "sys/kernel/mm/memory_peers/nv_mem/version",
    "sys/kernel/mm/memory_peers/nv_mem_nc/version",
    "sys/module/nv_peer_mem",
];

/// The GPUDirect RDMA path this node offers. DMA-BUF is judged from what can be read
/// without a NIC or CUDA: the open kernel module (`/proc/driver/nvidia/version`) on
/// Linux 5.12 or later (`/proc/sys/kernel/osrelease`). NCCL confirms it at run time
/// with `ibv_reg_dmabuf_mr`; a NIC driver without DMA-BUF support is not caught here.
pub(super) fn gpudirect(root: &Path) -> GpuDirect {
    if let Some(p) = PEER_MEMORY.iter().find(|p| root.join(p).exists()) {
        return GpuDirect::PeerMemory(p);
    }
    let kernel = std::fs::read_to_string(root.join("proc/sys/kernel/osrelease"))
        .ok()
        .map(|s| s.trim().to_owned());
    let open_module = std::fs::read_to_string(root.join("proc/driver/nvidia/version"))
        .is_ok_and(|v| v.contains("Open Kernel Module"));
    let new_enough = kernel
        .as_deref()
        .and_then(kernel_version)
        .is_some_and(|v| v >= (5, 12));
    match kernel {
        Some(kernel) if open_module && new_enough => GpuDirect::DmaBuf { kernel },
        kernel => GpuDirect::Missing {
            kernel,
            open_module,
        },
    }
}

/// `6.8.0-45-generic` → `(6, 8)`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(kernel_version("6.8.0-45-generic"), Some((6, 8)));
        assert_eq!(kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(kernel_version("5.14.0-427.el9.x86_64"), Some((5, 14)));
        assert_eq!(kernel_version("garbage"), None);
    }
}
