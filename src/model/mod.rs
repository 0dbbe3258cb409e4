//! The CPC model: its architecture, for images ([`spec`]) or audio ([`audio`]), as one
//! [`Spec`] of either modality ([`modality`]), expanded into one list of encoder layers
//! ([`layers`]) that its parameters under PyTorch's names ([`params`]), its planned forward
//! and backward on the GPU ([`cpc`]), its memory plan ([`memory`]) and the CPU reference
//! (cpu::model) all walk.

pub mod audio;
pub mod config;
pub mod cpc;
pub mod layers;
pub mod memory;
pub mod modality;
pub mod params;
pub mod spec;

pub use audio::{AudioSpec, Conv1dSpec};
pub use config::{ModelConfig, VisionConfig};
pub use cpc::{CpcModel, Pooled};
pub use modality::Spec;
pub use params::{ParamBuffers, ParamLayout};
pub use spec::{ConvSpec, ModelSpec, StageSpec};
