//! The CPC model: its architecture ([`spec`]), expanded into one list of encoder layers
//! ([`layers`]) that its parameters under PyTorch's names ([`params`]), its planned forward
//! and backward on the GPU ([`cpc`]) and the CPU reference (cpu::model) all walk.

pub mod audio;
pub mod config;
pub mod cpc;
pub mod layers;
pub mod memory;
pub mod params;
pub mod spec;

pub use config::{ModelConfig, VisionConfig};
pub use cpc::CpcModel;
pub use params::{ParamBuffers, ParamLayout};
pub use spec::{ConvSpec, ModelSpec, StageSpec};
