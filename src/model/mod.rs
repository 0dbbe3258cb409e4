//! The CPC model: its architecture, for images ([`spec`]), audio ([`audio`]) or text
//! ([`text`]), as one [`Spec`] of any modality ([`modality`]), expanded into one list of encoder layers
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
pub mod text;

pub use audio::{AudioSpec, Conv1dSpec};
pub use config::{ModelConfig, VisionConfig};
pub use cpc::{CpcModel, Pooled};
pub use modality::{Examples, Spec};
pub use params::{ParamBuffers, ParamLayout};
pub use spec::{ConvSpec, ModelSpec, StageSpec};
pub use text::TextSpec;
