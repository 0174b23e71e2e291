//! Multi-node NVLink fabric membership (`clusterUuid`, `cliqueId`) from NVML's
//! `nvmlDeviceGetGpuFabricInfoV`: the fields NCCL itself reads to tell which GPUs share
//! an NVLink domain across nodes.
//!
//! `nvml-wrapper` 0.11 does not wrap that call, so [`query`] goes through the raw
//! bindings of `nvml-wrapper-sys` (the crate `nvml-wrapper` is built on); it is the only
//! `unsafe` code in this crate. GPU preflight (`crate::gpu`) reads the raw registration
//! (state and status too) through [`open`] and [`query`].
//!
//! There is no `nvidia-smi -q` fallback for drivers whose NVML lacks the symbols:
//! `nvidia-smi` prints its `Fabric` section from this same call of the same driver's
//! library, so where the symbols are missing it has nothing to add.

use std::ffi::OsStr;

use nvml_wrapper::error::{nvml_try, NvmlError};
use nvml_wrapper::Device;
use nvml_wrapper_sys::bindings::{
    nvmlGpuFabricInfoV_t, nvmlGpuFabricInfo_t,
    nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH, nvmlReturn_t, NvmlLib,
    NVML_GPU_FABRIC_STATE_COMPLETED,
};

/// A GPU's fabric registration, when its state is `Completed` with status `Success`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fabric {
    /// The cluster, as `nvidia-smi -q` prints it (`ClusterUUID`).
    pub(super) cluster_uuid: String,
    /// The clique within the cluster (`CliqueId`).
    pub(super) clique_id: u32,
}

/// `nvmlGpuFabricInfo_v2`, i.e. `NVML_STRUCT_VERSION(GpuFabricInfo, 2)`: NVML checks the
/// caller's struct by its size and version number.
const INFO_V2: u32 = struct_version(std::mem::size_of::<nvmlGpuFabricInfoV_t>(), 2);

/// `NVML_STRUCT_VERSION`: the struct's size, with the version in the top byte.
const fn struct_version(size: usize, version: u32) -> u32 {
    size as u32 | version << 24
}

/// The fields both struct versions share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Registration {
    pub(crate) cluster_uuid: [u8; 16],
    pub(crate) status: nvmlReturn_t,
    pub(crate) clique_id: u32,
    pub(crate) state: u8,
}

impl Registration {
    /// Membership, when registration with the fabric manager finished and succeeded. An
    /// all-zero cluster uuid is what a GPU outside any cluster reports: no membership.
    fn member(&self) -> Option<Fabric> {
        let done = u32::from(self.state) == NVML_GPU_FABRIC_STATE_COMPLETED
            && nvml_try(self.status).is_ok();
        (done && self.cluster_uuid != [0; 16]).then(|| Fabric {
            cluster_uuid: format_uuid(&self.cluster_uuid),
            clique_id: self.clique_id,
        })
    }
}

/// Lower-case hex in 8-4-4-4-12 groups, bytes in order, as `nvidia-smi -q` prints
/// `ClusterUUID` (and NVIDIA's DRA driver formats it).
pub(crate) fn format_uuid(b: &[u8; 16]) -> String {
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// What one call answered: `None` when NVML could not say (the call is missing, or
/// says the GPU has no fabric); an error for any other failure.
fn answer(code: nvmlReturn_t, reg: Registration) -> Result<Option<Fabric>, NvmlError> {
    match nvml_try(code) {
        Ok(()) => Ok(reg.member()),
        Err(NvmlError::NotSupported | NvmlError::FunctionNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What one device's fabric query came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queried {
    /// This driver's NVML has neither `nvmlDeviceGetGpuFabricInfoV` nor
    /// `nvmlDeviceGetGpuFabricInfo`.
    Missing,
    /// Only `nvmlDeviceGetGpuFabricInfoV` is present and it refused the v2 struct.
    VersionRefused,
    /// A call was made: its return code, and the struct as NVML left it.
    Called(nvmlReturn_t, Registration),
}

/// NVML's raw bindings, from the library at `path`: the one `nvml-wrapper` loaded and
/// still holds (through an `Nvml` that outlives what is read with them).
#[allow(unsafe_code)]
pub(crate) fn open(path: &OsStr) -> Result<NvmlLib, NvmlError> {
    // SAFETY: loading a library runs its initialisers. `path` is the library
    // `nvml-wrapper` already loaded, and still holds, so `dlopen` hands back that same
    // handle (one more reference) and runs nothing.
    unsafe { NvmlLib::new(path) }.map_err(NvmlError::LibloadingError)
}

/// One device's fabric registration, through `lib` (from [`open`], for the library
/// `dev` comes from).
///
/// `nvmlDeviceGetGpuFabricInfoV` is asked first, then `nvmlDeviceGetGpuFabricInfo` where
/// the former is missing or does not know the v2 struct. A symbol the driver lacks is
/// never called: the bindings resolve each by name and keep the failure.
#[allow(unsafe_code)]
pub(crate) fn query(lib: &NvmlLib, dev: &Device<'_>) -> Queried {
    let v2 = lib.nvmlDeviceGetGpuFabricInfoV.as_ref().ok().copied();
    let v1 = lib.nvmlDeviceGetGpuFabricInfo.as_ref().ok().copied();
    if v2.is_none() && v1.is_none() {
        return Queried::Missing;
    }
    // SAFETY: copies the handle out, nothing more; `dev` borrows the `Nvml` that keeps
    // it valid until after this function returns.
    let handle = unsafe { dev.handle() };
    if let Some(get) = v2 {
        let mut info = nvmlGpuFabricInfoV_t {
            version: INFO_V2,
            clusterUuid: [0; 16],
            status: 0,
            cliqueId: 0,
            state: 0,
            healthMask: 0,
        };
        // SAFETY: `get` is the driver's `nvmlDeviceGetGpuFabricInfoV`, resolved by name
        // from `lib`, which stays loaded for this call, with bindgen's signature from
        // `nvml.h`; `handle` is a live device of this library's initialised NVML;
        // `info` is a writable v2 struct whose `version` says so, which bounds what
        // NVML writes.
        let code = unsafe { get(handle, &mut info) };
        if code != nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH {
            let reg = Registration {
                cluster_uuid: info.clusterUuid,
                status: info.status,
                clique_id: info.cliqueId,
                state: info.state,
            };
            return Queried::Called(code, reg);
        }
    }
    let Some(get) = v1 else {
        return Queried::VersionRefused;
    };
    let mut info = nvmlGpuFabricInfo_t {
        clusterUuid: [0; 16],
        status: 0,
        cliqueId: 0,
        state: 0,
    };
    // SAFETY: as above, for `nvmlDeviceGetGpuFabricInfo` and its unversioned v1
    // struct, writable and of the size that call writes.
    let code = unsafe { get(handle, &mut info) };
    let reg = Registration {
        cluster_uuid: info.clusterUuid,
        status: info.status,
        clique_id: info.cliqueId,
        state: info.state,
    };
    Queried::Called(code, reg)
}

/// Each device's fabric registration, in the order given (`None` for a GPU in no
/// multi-node domain), through the NVML library at `path`: the one `devices` come from,
/// kept loaded and initialised by the `Nvml` they borrow. Whatever cannot be read is
/// left out and said in `notes`.
pub(super) fn read(
    path: &OsStr,
    devices: &[Device<'_>],
    notes: &mut Vec<String>,
) -> Vec<Option<Fabric>> {
    let lib = match open(path) {
        Ok(lib) => lib,
        Err(e) => {
            notes.push(format!(
                "NVML reopened from `{}` failed ({e}): no multi-node NVLink fabric information",
                path.to_string_lossy()
            ));
            return vec![None; devices.len()];
        }
    };
    let mut out = Vec::with_capacity(devices.len());
    for (i, dev) in devices.iter().enumerate() {
        let fabric = match query(&lib, dev) {
            Queried::Missing => {
                notes.push(
                    "this driver's NVML has no `nvmlDeviceGetGpuFabricInfo`: \
                     no multi-node NVLink fabric information"
                        .to_owned(),
                );
                return vec![None; devices.len()];
            }
            Queried::VersionRefused => {
                notes.push(format!(
                    "GPU {i}: fabric membership unreadable: NVML does not accept \
                     `nvmlGpuFabricInfo_v2` ({INFO_V2:#x})"
                ));
                None
            }
            Queried::Called(code, reg) => answer(code, reg).unwrap_or_else(|e| {
                notes.push(format!("GPU {i}: fabric membership unreadable: {e}"));
                None
            }),
        };
        out.push(fabric);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvml_wrapper_sys::bindings::{
        nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND, nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
        nvmlReturn_enum_NVML_ERROR_UNKNOWN, nvmlReturn_enum_NVML_SUCCESS,
        NVML_GPU_FABRIC_STATE_IN_PROGRESS, NVML_GPU_FABRIC_STATE_NOT_SUPPORTED,
    };

    const UUID: [u8; 16] = [
        0x1b, 0x5e, 0xe1, 0xf5, 0x0e, 0x6d, 0x4a, 0x3e, 0xa2, 0xa1, 0x6f, 0x5b, 0x2e, 0x0b, 0x4c,
        0x11,
    ];

    fn reg(state: u32, status: nvmlReturn_t, uuid: [u8; 16]) -> Registration {
        Registration {
            cluster_uuid: uuid,
            status,
            clique_id: 32766,
            state: state as u8,
        }
    }

    #[test]
    fn uuids_print_like_nvidia_smi() {
        assert_eq!(format_uuid(&UUID), "1b5ee1f5-0e6d-4a3e-a2a1-6f5b2e0b4c11");
        let mut zero_led = [0u8; 16];
        zero_led[15] = 0xab;
        assert_eq!(
            format_uuid(&zero_led),
            "00000000-0000-0000-0000-0000000000ab"
        );
    }

    #[test]
    fn v2_version_is_size_with_two_in_the_top_byte() {
        // version, 16 uuid bytes, status, cliqueId, state (padded to 4), healthMask.
        assert_eq!(std::mem::size_of::<nvmlGpuFabricInfoV_t>(), 36);
        assert_eq!(INFO_V2, 0x0200_0024);
        assert_eq!(struct_version(28, 1), 0x0100_001c);
    }

    #[test]
    fn completed_registrations_only() {
        let ok = nvmlReturn_enum_NVML_SUCCESS;
        let done = NVML_GPU_FABRIC_STATE_COMPLETED;
        assert_eq!(
            reg(done, ok, UUID).member(),
            Some(Fabric {
                cluster_uuid: "1b5ee1f5-0e6d-4a3e-a2a1-6f5b2e0b4c11".into(),
                clique_id: 32766,
            })
        );
        assert_eq!(
            reg(NVML_GPU_FABRIC_STATE_IN_PROGRESS, ok, UUID).member(),
            None
        );
        assert_eq!(
            reg(done, nvmlReturn_enum_NVML_ERROR_UNKNOWN, UUID).member(),
            None
        );
        assert_eq!(reg(done, ok, [0; 16]).member(), None, "no cluster");
    }

    #[test]
    fn unsupported_means_no_fabric_and_other_failures_are_errors() {
        // What an H200 without NVSwitch fabric answers.
        let h200 = reg(
            NVML_GPU_FABRIC_STATE_NOT_SUPPORTED,
            nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
            [0; 16],
        );
        assert_eq!(
            answer(nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED, h200).unwrap(),
            None
        );
        assert_eq!(
            answer(nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND, h200).unwrap(),
            None
        );
        assert_eq!(answer(nvmlReturn_enum_NVML_SUCCESS, h200).unwrap(), None);
        let good = reg(
            NVML_GPU_FABRIC_STATE_COMPLETED,
            nvmlReturn_enum_NVML_SUCCESS,
            UUID,
        );
        assert_eq!(
            answer(nvmlReturn_enum_NVML_SUCCESS, good)
                .unwrap()
                .unwrap()
                .clique_id,
            32766
        );
        assert!(answer(nvmlReturn_enum_NVML_ERROR_UNKNOWN, good).is_err());
    }
}
