//! GPU readings from NVML, loaded at run time through the same loader topology
//! discovery uses (`topology::discover::nvml`): a node without the NVIDIA driver gets
//! [`GpuSourceError::NoLibrary`], never a crash. Fabric registration goes through
//! discovery's raw `nvmlDeviceGetGpuFabricInfoV` call (`topology::discover::fabric`);
//! everything else through `nvml-wrapper`'s safe API.

use std::ffi::OsStr;

use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::{nvml_try, NvmlError};
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_FAILURE, NVML_FI_DEV_REMAPPED_PENDING,
    NVML_FI_DEV_REMAPPED_UNC,
};
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::NvmlLib;

use super::reading::{
    FabricReading, FabricState, GpuReading, GpuSource, GpuSourceError, Readings, RemappedRows,
    READINGS_VERSION,
};
use crate::topology::discover::fabric::{self, Queried};
use crate::topology::discover::nvml::{self as discover_nvml, normalise_bus_id, NvmlUnavailable};

const MIB: u64 = 1024 * 1024;

/// NVML, initialised and kept for as many reads as wanted.
#[derive(Debug)]
pub struct NvmlSource {
    nvml: Nvml,
    /// The library name it was loaded by (`libnvidia-ml.so.1`).
    lib: &'static str,
}

impl NvmlSource {
    /// Loads and initialises NVML.
    pub fn open() -> Result<Self, GpuSourceError> {
        let (nvml, lib) = discover_nvml::load().map_err(|e| match e {
            NvmlUnavailable::NoLibrary { tried } => GpuSourceError::NoLibrary { tried },
            NvmlUnavailable::Failed(e) => GpuSourceError::Nvml(e),
        })?;
        Ok(Self { nvml, lib })
    }
}

impl GpuSource for NvmlSource {
    fn read(&self) -> Result<Readings, GpuSourceError> {
        let count = self.nvml.device_count().map_err(GpuSourceError::Nvml)?;
        let mut notes = Vec::new();
        let raw = match fabric::open(OsStr::new(self.lib)) {
            Ok(lib) => Some(lib),
            Err(e) => {
                notes.push(format!(
                    "NVML reopened from `{}` failed ({e}): fabric registration not read",
                    self.lib
                ));
                None
            }
        };
        let mut gpus = Vec::new();
        for index in 0..count {
            let reading = match self.nvml.device_by_index(index) {
                Ok(dev) => read_gpu(index, &dev, raw.as_ref(), &mut notes),
                Err(e) => GpuReading {
                    index,
                    fault: Some(e.to_string()),
                    ..GpuReading::default()
                },
            };
            gpus.push(reading);
        }
        Ok(Readings {
            version: READINGS_VERSION,
            source: format!("nvml:{}", self.lib),
            gpus,
            notes,
        })
    }
}

/// A fact NVML may not have: `NotSupported` (what `nvidia-smi` prints as `N/A`) is
/// silently absent; any other failure is absent and said in `notes`.
fn fact<T>(index: u32, what: &str, r: Result<T, NvmlError>, notes: &mut Vec<String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(NvmlError::NotSupported | NvmlError::FunctionNotFound) => None,
        Err(e) => {
            notes.push(format!("GPU {index}: {what} unreadable: {e}"));
            None
        }
    }
}

fn read_gpu(
    index: u32,
    dev: &Device<'_>,
    raw: Option<&NvmlLib>,
    notes: &mut Vec<String>,
) -> GpuReading {
    let ids = (|| Ok::<_, NvmlError>((dev.uuid()?, dev.name()?, dev.pci_info()?.bus_id)))();
    let (uuid, name, bus_id) = match ids {
        Ok(ids) => ids,
        // A GPU that cannot say who it is has fallen off the bus or is otherwise lost.
        Err(e) => {
            return GpuReading {
                index,
                fault: Some(e.to_string()),
                ..GpuReading::default()
            }
        }
    };
    let memory = fact(index, "memory", dev.memory_info(), notes);
    let uncorrected = |counter, what, notes: &mut Vec<String>| {
        let count = dev.total_ecc_errors(MemoryError::Uncorrected, counter);
        fact(index, what, count, notes)
    };
    let ecc_volatile = uncorrected(EccCounter::Volatile, "volatile ECC count", notes);
    let ecc_aggregate = uncorrected(EccCounter::Aggregate, "aggregate ECC count", notes);
    let pending = dev.are_pages_pending_retired();
    GpuReading {
        index,
        uuid,
        name,
        pci_bus_id: normalise_bus_id(&bus_id),
        fault: None,
        memory_total_mib: memory.as_ref().map(|m| m.total / MIB),
        memory_free_mib: memory.as_ref().map(|m| m.free / MIB),
        ecc_uncorrected_volatile: ecc_volatile,
        ecc_uncorrected_aggregate: ecc_aggregate,
        retired_pages_pending: fact(index, "pending page retirement", pending, notes),
        remapped_rows: remapped_rows(index, dev, notes),
        fabric: raw.and_then(|lib| fabric_reading(index, lib, dev, notes)),
    }
}

/// Row remapping through `nvmlDeviceGetFieldValues`, which `nvml-wrapper` wraps
/// safely (its `nvmlDeviceGetRemappedRows` is only in the raw bindings).
fn remapped_rows(index: u32, dev: &Device<'_>, notes: &mut Vec<String>) -> Option<RemappedRows> {
    let ids = [
        NVML_FI_DEV_REMAPPED_COR,
        NVML_FI_DEV_REMAPPED_UNC,
        NVML_FI_DEV_REMAPPED_PENDING,
        NVML_FI_DEV_REMAPPED_FAILURE,
    ]
    .map(FieldId);
    let samples = fact(index, "row remapping", dev.field_values_for(&ids), notes)?;
    let mut values = [0u64; 4];
    for (slot, sample) in values.iter_mut().zip(samples) {
        let value = fact(index, "row remapping", sample.and_then(|s| s.value), notes)?;
        *slot = match value {
            SampleValue::U32(v) => u64::from(v),
            SampleValue::U64(v) => v,
            SampleValue::I64(v) => u64::try_from(v).unwrap_or(0),
            SampleValue::F64(v) if v.is_finite() && v >= 0.0 => v as u64,
            SampleValue::F64(_) => 0,
        };
    }
    let [correctable, uncorrectable, pending, failure] = values;
    Some(RemappedRows {
        correctable,
        uncorrectable,
        pending: pending != 0,
        failure: failure != 0,
    })
}

/// The raw registration, state and status included. `None` where NVML has no fabric
/// call or answers that the GPU has none.
fn fabric_reading(
    index: u32,
    lib: &NvmlLib,
    dev: &Device<'_>,
    notes: &mut Vec<String>,
) -> Option<FabricReading> {
    match fabric::query(lib, dev) {
        Queried::Missing => None,
        Queried::VersionRefused => {
            notes.push(format!(
                "GPU {index}: fabric registration unreadable: NVML refused the v2 struct"
            ));
            None
        }
        Queried::Called(code, reg) => {
            fact(index, "fabric registration", nvml_try(code), notes)?;
            Some(FabricReading {
                state: FabricState::from_nvml(reg.state),
                status: reg.status,
                cluster_uuid: fabric::format_uuid(&reg.cluster_uuid),
                clique_id: reg.clique_id,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_reads_without_crashing() {
        // No driver here: a clear error. On a GPU node: one reading per GPU.
        match NvmlSource::open() {
            Err(GpuSourceError::NoLibrary { tried }) => {
                assert!(tried.contains("libnvidia-ml.so.1"), "{tried}")
            }
            Err(e) => panic!("NVML loaded but failed: {e}"),
            Ok(src) => {
                let r = src.read().unwrap();
                assert!(r
                    .gpus
                    .iter()
                    .all(|g| g.fault.is_some() || g.uuid.starts_with("GPU-")));
            }
        }
    }
}
