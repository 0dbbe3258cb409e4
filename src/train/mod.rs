//! Training infrastructure that needs no GPU: what a run is configured with, how its learning
//! rate moves, how it is saved and resumed, and what it logs and draws.
//!
//! - [`config`]: a run's configuration (the model's, model::config, and the training's),
//!   presets overridable field by field from TOML.
//! - [`schedule`]: learning rate, linear warm-up then cosine decay.
//! - [`checkpoint`]: named f32 tensors plus string metadata in a safetensors file, replaced
//!   atomically so that a crash never leaves a run without a readable checkpoint.
//! - [`model_checkpoint`]: the CPC model's checkpoint (parameters, Adam's moments, step,
//!   configuration, loader position) and the one validating reader every command uses.
//! - [`metrics`]: one JSON object per logged step in `<out>/metrics.jsonl`.
//! - [`plot`]: loss and per-offset accuracy curves from those rows, as a PNG.
//! - [`replicas`]: a run's model replicas, one per device, and the host-side gradient sum
//!   (over devices, and over processes through [`replicas::AllReduce`]).
//! - [`atomic`]: the write-to-temporary, fsync, rename, fsync-directory step the others share.

pub mod atomic;
pub mod checkpoint;
pub mod config;
pub mod metrics;
pub mod model_checkpoint;
pub mod plot;
pub mod pretrain;
pub mod replicas;
pub mod schedule;

pub use checkpoint::{Checkpoint, NamedTensor};
pub use config::{Config, TrainConfig};
pub use metrics::{read_metrics, MetricsRow, MetricsWriter};
pub use model_checkpoint::{ModelCheckpoint, CHECKPOINT_FORMAT};
pub use plot::plot_curves;
pub use schedule::LrSchedule;
