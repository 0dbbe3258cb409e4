//! GPU plumbing: adapter and device, tensors, the shader table and pipeline cache, launches.

mod context;
pub mod kernels;
mod launch;
pub(crate) mod tensor;
mod timing;

pub use context::{
    all_device_indices, list_adapters, wanted_features, AdapterChoice, AdapterSummary, Gpu,
    KernelPath, Kernels, LimitsChoice, Subgroups,
};
pub use kernels::{check_kernels_fit, PipelineKey, Reductions, Shader, ROW_WORKGROUP};
pub use launch::{
    layout_of, rel_offset, spread, Cost, CostOfInputs, Launch, Reference, Uniform, UniformLayout,
    SPREAD_X,
};
pub use tensor::{Tensor, STORAGE};
pub use timing::Stopwatch;
