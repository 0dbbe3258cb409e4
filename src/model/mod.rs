//! The CPC model: its architecture ([`spec`]), its parameters under PyTorch's names
//! ([`params`]) and its planned forward and backward on the GPU ([`cpc`]).

pub mod cpc;
pub mod memory;
pub mod params;
pub mod spec;

pub use cpc::CpcModel;
pub use params::{ParamBuffers, ParamLayout};
pub use spec::{ConvSpec, ModelSpec, StageSpec};
