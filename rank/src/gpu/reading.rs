//! What a node's GPUs report, before anything is judged: the [`Readings`] a
//! [`GpuSource`] returns, in the JSON form fixtures are written in.

use serde::{Deserialize, Serialize};

/// The version of the readings format this build writes and reads; fixtures with another
/// version are refused rather than misread.
pub const READINGS_VERSION: u32 = 1;

/// Where GPU facts come from: NVML on a node ([`super::NvmlSource`]), a JSON file in
/// tests ([`super::FixtureSource`]).
pub trait GpuSource {
    /// Every GPU of the node as the source sees it. An error means nothing could be
    /// read at all (no driver, a fixture that does not parse); a single fact that
    /// cannot be read is left out of its GPU and said in [`Readings::notes`].
    fn read(&self) -> Result<Readings, GpuSourceError>;
}

/// Why a source returned nothing.
#[derive(Debug, thiserror::Error)]
pub enum GpuSourceError {
    /// No NVML library could be loaded.
    #[error(
        "found no NVIDIA management library ({tried}); the NVIDIA driver is not installed \
         or not visible in this environment"
    )]
    NoLibrary {
        /// What was tried and why it failed.
        tried: String,
    },
    /// The library loaded but NVML failed.
    #[error("NVML failed")]
    Nvml(#[source] nvml_wrapper::error::NvmlError),
    /// A fixture file could not be read.
    #[error("cannot read the GPU fixture `{file}`")]
    Io {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A fixture is not valid JSON for [`Readings`].
    #[error("`{file}` is not a valid GPU fixture")]
    Json {
        /// The file.
        file: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A fixture written by another version of cohort.
    #[error(
        "`{file}`: GPU readings format version {found} is not supported; \
         this cohort reads version {READINGS_VERSION}"
    )]
    Version {
        /// The file.
        file: String,
        /// The version in the file.
        found: u32,
    },
}

/// A node's GPUs as one source saw them at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readings {
    /// Always [`READINGS_VERSION`].
    pub version: u32,
    /// Where they come from: `nvml:libnvidia-ml.so.1` on a node; what a fixture stands
    /// for (`fixture: 8×H100 SXM HGX, healthy`).
    pub source: String,
    /// Every GPU NVML enumerates on the node, before `CUDA_VISIBLE_DEVICES`, in NVML
    /// index order.
    pub gpus: Vec<GpuReading>,
    /// Facts that could not be read, and why (one line each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One GPU. A fact NVML does not report (`N/A` in `nvidia-smi -q`: ECC off, a call the
/// GPU or driver does not support) is `None`, and the check that needs it is skipped
/// with a note.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuReading {
    /// NVML's index: what `nvidia-smi -i` and `CUDA_VISIBLE_DEVICES` (under
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`) take.
    pub index: u32,
    /// `GPU-…`, as `nvidia-smi -L` prints it.
    pub uuid: String,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// `0000:18:00.0` (domain:bus:device.function, lower case).
    pub pci_bus_id: String,
    /// What NVML answered when the GPU could not be read at all (`GPU is lost`); its
    /// other facts are then empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Total framebuffer memory, in MiB (`nvmlDeviceGetMemoryInfo_v2`).
    pub memory_total_mib: Option<u64>,
    /// Unallocated framebuffer memory, in MiB.
    pub memory_free_mib: Option<u64>,
    /// Uncorrectable (double-bit) ECC errors since the driver loaded
    /// (`nvmlDeviceGetTotalEccErrors`, `NVML_MEMORY_ERROR_TYPE_UNCORRECTED`,
    /// `NVML_VOLATILE_ECC`).
    pub ecc_uncorrected_volatile: Option<u64>,
    /// Uncorrectable ECC errors over the GPU's lifetime (`NVML_AGGREGATE_ECC`).
    pub ecc_uncorrected_aggregate: Option<u64>,
    /// Pages waiting for a reboot to be retired (`nvmlDeviceGetRetiredPagesPendingStatus`;
    /// GPUs before Ampere: later ones remap rows instead).
    pub retired_pages_pending: Option<bool>,
    /// Row remapping (Ampere and later).
    pub remapped_rows: Option<RemappedRows>,
    /// Multi-node NVLink fabric registration; `None` where the driver's NVML has no
    /// fabric call or the GPU answers that it has no fabric.
    pub fabric: Option<FabricReading>,
}

/// Row remapping state, from the field values `NVML_FI_DEV_REMAPPED_COR`, `_UNC`,
/// `_PENDING` and `_FAILURE` (what `nvidia-smi -q -d ROW_REMAPPER` prints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemappedRows {
    /// Rows remapped for correctable errors.
    pub correctable: u64,
    /// Rows remapped for uncorrectable errors.
    pub uncorrectable: u64,
    /// A remapping waits for a GPU reset to take effect.
    pub pending: bool,
    /// A remapping failed: the bank had no spare row left.
    pub failure: bool,
}

/// A GPU's registration with the multi-node NVLink fabric (`nvmlDeviceGetGpuFabricInfoV`,
/// what `nvidia-smi -q` prints under `Fabric`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FabricReading {
    /// How far registration got.
    pub state: FabricState,
    /// NVML's return code for the registration: 0 (`NVML_SUCCESS`) when it worked.
    pub status: u32,
    /// The cluster (`ClusterUUID`), lower-case 8-4-4-4-12 hex; all zeros outside any.
    pub cluster_uuid: String,
    /// The clique within the cluster (`CliqueId`).
    pub clique_id: u32,
}

/// `NVML_GPU_FABRIC_STATE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FabricState {
    /// The GPU has no fabric (an HGX H100's NVSwitches are not a multi-node fabric).
    NotSupported,
    /// Registration with the fabric manager has not started.
    NotStarted,
    /// Registration is under way.
    InProgress,
    /// Registration finished; `status` says whether it worked.
    Completed,
    /// A value this build does not know.
    Unknown,
}

impl FabricState {
    /// From NVML's `state` byte.
    pub fn from_nvml(state: u8) -> Self {
        use nvml_wrapper_sys::bindings as b;
        match u32::from(state) {
            b::NVML_GPU_FABRIC_STATE_NOT_SUPPORTED => Self::NotSupported,
            b::NVML_GPU_FABRIC_STATE_NOT_STARTED => Self::NotStarted,
            b::NVML_GPU_FABRIC_STATE_IN_PROGRESS => Self::InProgress,
            b::NVML_GPU_FABRIC_STATE_COMPLETED => Self::Completed,
            _ => Self::Unknown,
        }
    }
}

impl std::fmt::Display for FabricState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotSupported => "not supported",
            Self::NotStarted => "not started",
            Self::InProgress => "in progress",
            Self::Completed => "completed",
            Self::Unknown => "unknown",
        })
    }
}

impl FabricReading {
    /// Registered: state `Completed` with status success.
    pub fn is_complete(&self) -> bool {
        self.state == FabricState::Completed && self.status == 0
    }

    /// The clique, once registration is complete and the GPU is in a cluster (an
    /// all-zero cluster uuid means it is in none).
    pub fn clique(&self) -> Option<Clique> {
        let in_cluster = self.cluster_uuid.chars().any(|c| c != '0' && c != '-');
        (self.is_complete() && in_cluster).then(|| Clique {
            cluster_uuid: self.cluster_uuid.clone(),
            clique_id: self.clique_id,
        })
    }

    /// `status` in words: `success`, or NVML's description of the error.
    pub fn status_text(&self) -> String {
        match nvml_wrapper::error::nvml_try(self.status) {
            Ok(()) => "success".to_owned(),
            Err(e) => format!("{e} (NVML return code {})", self.status),
        }
    }
}

/// One multi-node NVLink domain: GPUs with the same cluster and clique reach each other
/// over NVLink (what NCCL and the IMEX daemon go by).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clique {
    /// The fabric cluster UUID.
    pub cluster_uuid: String,
    /// The clique inside the cluster.
    pub clique_id: u32,
}

impl Clique {
    /// The clique of a topology's NVLink domain, where it is a fabric one.
    pub fn of(domain: &crate::topology::NvlinkDomain) -> Option<Self> {
        match domain {
            crate::topology::NvlinkDomain::Fabric {
                cluster_uuid,
                clique_id,
            } => Some(Self {
                cluster_uuid: cluster_uuid.clone(),
                clique_id: *clique_id,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Clique {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.cluster_uuid, self.clique_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fabric(state: FabricState, status: u32, uuid: &str) -> FabricReading {
        FabricReading {
            state,
            status,
            cluster_uuid: uuid.to_owned(),
            clique_id: 4,
        }
    }

    #[test]
    fn a_clique_needs_completed_success_and_a_cluster() {
        let uuid = "1b5ee1f5-0e6d-4a3e-a2a1-6f5b2e0b4c11";
        assert_eq!(
            fabric(FabricState::Completed, 0, uuid).clique(),
            Some(Clique {
                cluster_uuid: uuid.into(),
                clique_id: 4
            })
        );
        assert_eq!(fabric(FabricState::InProgress, 0, uuid).clique(), None);
        assert_eq!(fabric(FabricState::Completed, 999, uuid).clique(), None);
        let zero = "00000000-0000-0000-0000-000000000000";
        assert_eq!(fabric(FabricState::Completed, 0, zero).clique(), None);
    }

    #[test]
    fn states_and_statuses_read_like_nvml() {
        use nvml_wrapper_sys::bindings as b;
        let state = |s: u32| FabricState::from_nvml(s as u8);
        assert_eq!(
            state(b::NVML_GPU_FABRIC_STATE_COMPLETED),
            FabricState::Completed
        );
        assert_eq!(
            state(b::NVML_GPU_FABRIC_STATE_NOT_SUPPORTED),
            FabricState::NotSupported
        );
        assert_eq!(state(200), FabricState::Unknown);
        let f = fabric(FabricState::Completed, 0, "x");
        assert_eq!(f.status_text(), "success");
        let bad = fabric(
            FabricState::Completed,
            b::nvmlReturn_enum_NVML_ERROR_UNKNOWN,
            "x",
        );
        assert!(
            bad.status_text().contains("return code 999"),
            "{}",
            bad.status_text()
        );
    }
}
