//! Vision CPC (Contrastive Predictive Coding) on any GPU, through hand-written WGSL kernels.
//!
//! - [`gpu`]: adapter choice, device, buffers, pipelines and launches (the plumbing).
//! - [`ops`]: one module per kernel family, launching shaders/<name>.wgsl, forward and backward.
//! - [`cpu`]: plain-Rust references of every kernel, same names, written for clarity.
//! - [`data`]: data sets, augmentation and the batch loader (CPU only).
//! - [`train`]: GPU-free training infrastructure: configuration and presets, learning-rate
//!   schedule, atomic safetensors checkpoints, metrics.jsonl and loss/accuracy plots.
//! - [`dist`]: the processes of a data-parallel run (one alone, or MPI's ranks with the `mpi`
//!   feature): their gradient sum, a shared stop, and ending them all when one fails.
//! - [`eval`]: features of a frozen encoder, the linear probe and nearest-neighbour pictures.

pub mod cli;
pub mod cpu;
pub mod data;
pub mod dist;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod train;

pub use error::{Error, Result};
