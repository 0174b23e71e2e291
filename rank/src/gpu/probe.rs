//! The P2P copy-bandwidth probe (feature `cuda`): copies a buffer from one GPU to another
//! a few times through the CUDA driver API (cudarc, `libcuda.so` loaded at run time) and
//! times the copies with CUDA events on the receiving GPU.
//!
//! GPUs are matched to CUDA devices by UUID, so `CUDA_VISIBLE_DEVICES` and CUDA's own
//! device order do not matter; a GPU that CUDA does not see is an error, not a guess.

use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaSlice, DriverError};

use super::p2p::P2pMeasurement;
use super::reading::GpuReading;
use crate::topology::discover::fabric::format_uuid;

/// How much to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Bytes per copy. Default 256 MiB: large enough that launch latency is noise
    /// (about 0.3 ms a copy at NVLink 5 speed).
    pub bytes: usize,
    /// Timed copies, after one untimed warm-up. Default 5.
    pub copies: u32,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            bytes: 256 * 1024 * 1024,
            copies: 5,
        }
    }
}

/// Why a probe did not measure.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// `libcuda.so` could not be loaded.
    #[error("the CUDA driver library (`libcuda.so`) could not be loaded")]
    NoCuda,
    /// CUDA does not list a GPU with this UUID.
    #[error("CUDA sees no GPU `{uuid}` (hidden by `CUDA_VISIBLE_DEVICES`?)")]
    NotVisible {
        /// The GPU's UUID.
        uuid: String,
    },
    /// A CUDA call failed.
    #[error("CUDA failed to {what}")]
    Cuda {
        /// What was being done.
        what: &'static str,
        /// CUDA's error.
        #[source]
        source: DriverError,
    },
}

fn cuda(what: &'static str) -> impl FnOnce(DriverError) -> ProbeError {
    move |source| ProbeError::Cuda { what, source }
}

/// Copies `opts.copies` × `opts.bytes` from `src` to `dst` and reports the bandwidth.
pub fn probe_p2p(
    src: &GpuReading,
    dst: &GpuReading,
    opts: &ProbeOptions,
) -> Result<P2pMeasurement, ProbeError> {
    if !cuda_present() {
        return Err(ProbeError::NoCuda);
    }
    result::init().map_err(cuda("initialise"))?;
    let src_ctx = context(&src.uuid)?;
    let dst_ctx = context(&dst.uuid)?;
    let peer_access = enable_peer_access(&src_ctx, &dst_ctx)?;
    let src_stream = src_ctx.default_stream();
    let dst_stream = dst_ctx.default_stream();
    let from = src_stream
        .alloc_zeros::<u8>(opts.bytes)
        .map_err(cuda("allocate the source buffer"))?;
    let mut to = dst_stream
        .alloc_zeros::<u8>(opts.bytes)
        .map_err(cuda("allocate the destination buffer"))?;
    let copy = |to: &mut CudaSlice<u8>| dst_stream.memcpy_dtod(&from, to).map_err(cuda("copy"));
    copy(&mut to)?; // warm-up: first-touch mappings, peer setup
    let timed = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = dst_ctx.new_event(timed).map_err(cuda("create an event"))?;
    let end = dst_ctx.new_event(timed).map_err(cuda("create an event"))?;
    start.record(&dst_stream).map_err(cuda("record an event"))?;
    for _ in 0..opts.copies {
        copy(&mut to)?;
    }
    end.record(&dst_stream).map_err(cuda("record an event"))?;
    let ms = start.elapsed_ms(&end).map_err(cuda("time the copies"))?;
    let bytes = opts.bytes as u64;
    let total = bytes as f64 * f64::from(opts.copies);
    Ok(P2pMeasurement {
        src: src.index,
        dst: dst.index,
        peer_access,
        bytes,
        copies: opts.copies,
        gbps: if ms > 0.0 {
            total / (f64::from(ms) / 1e3) / 1e9
        } else {
            0.0
        },
    })
}

#[allow(unsafe_code)]
fn cuda_present() -> bool {
    // SAFETY: tries to `dlopen` the CUDA driver under its usual names, which runs the
    // library's initialisers, as any CUDA program's start does. Without this, cudarc's
    // first call would panic on a node without `libcuda.so`.
    unsafe { sys::is_culib_present() }
}

/// The primary context of the CUDA device whose UUID is `uuid` (`GPU-…`).
fn context(uuid: &str) -> Result<Arc<CudaContext>, ProbeError> {
    let count = result::device::get_count().map_err(cuda("count devices"))?;
    for ordinal in 0..count {
        let dev = result::device::get(ordinal).map_err(cuda("get a device"))?;
        let id = result::device::get_uuid(dev).map_err(cuda("read a device's UUID"))?;
        let bytes = id.bytes.map(|b| b.to_ne_bytes()[0]);
        if format!("GPU-{}", format_uuid(&bytes)) == uuid {
            let ordinal = usize::try_from(ordinal).unwrap_or_default();
            return CudaContext::new(ordinal).map_err(cuda("create a context"));
        }
    }
    Err(ProbeError::NotVisible {
        uuid: uuid.to_owned(),
    })
}

/// Enables access from each context to the other's memory, where CUDA says the
/// devices can; returns whether they can.
#[allow(unsafe_code)]
fn enable_peer_access(a: &Arc<CudaContext>, b: &Arc<CudaContext>) -> Result<bool, ProbeError> {
    if a.cu_device() == b.cu_device() {
        return Ok(true);
    }
    let mut can = [0i32; 2];
    for (slot, (x, y)) in can.iter_mut().zip([(a, b), (b, a)]) {
        // SAFETY: both devices come from `cuDeviceGet` of an initialised driver, and
        // `slot` is a writable `int`.
        unsafe { sys::cuDeviceCanAccessPeer(slot, x.cu_device(), y.cu_device()) }
            .result()
            .map_err(cuda("ask about peer access"))?;
    }
    if can.contains(&0) {
        return Ok(false);
    }
    for (x, y) in [(a, b), (b, a)] {
        x.bind_to_thread().map_err(cuda("bind a context"))?;
        // SAFETY: `x` is current on this thread and `y` is a live primary context (both
        // are held by the caller for the whole probe); flags must be 0.
        let code = unsafe { sys::cuCtxEnablePeerAccess(y.cu_ctx(), 0) };
        match code {
            sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => {
            }
            other => return Err(cuda("enable peer access")(DriverError(other))),
        }
    }
    Ok(true)
}
