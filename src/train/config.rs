//! What a run is: the model (geometry, encoder, GRU, predictions) and its training.
//!
//! Four presets, each a complete [`Config`]; a TOML file then overrides any of their fields,
//! one by one, under the same names [`Config::to_toml`] writes:
//!
//! ```toml
//! [model]
//! hidden = 128
//! [model.encoder]
//! layer_norm = true
//! [train]
//! lr = 5e-4
//! total_steps = 2000
//! ```
//!
//! | preset | crop S | grid G | patch P | D | H | K | encoder (stem; stages) |
//! |---|---|---|---|---|---|---|---|
//! | paper  | 256 | 7 | 64 | 1024 | 1024 | 5 | 3x3/2 64; 128, 256, 1024 (stride 2, 1 block of 2 convs each) |
//! | laptop | 256 | 7 | 64 | 256 | 256 | 5 | 3x3/2 32; 64, 128, 256 (stride 2, 1 block of 2 convs each) |
//! | small  | 64 | 7 | 16 | 256 | 256 | 3 | 3x3/1 32; 64, 128, 256 (stride 2; blocks of 2, 0, 2 convs) |
//! | tiny   | 32 | 7 | 8 | 64 | 64 | 2 | 3x3/1 32; 64 (stride 2, 1 block of 1 conv) |
//!
//! D, the patch vector size, is the width of the encoder's last stage (the mean pool keeps
//! the channels), so it is derived rather than stored: [`ModelConfig::code_dim`].
//! [`ModelConfig::forward_flops_per_image`] checks the presets against the spec's compute line
//! (tiny about 100 MFLOP, small about 1.2 GFLOP, paper about 57 GFLOP per image forward).
//!
//! # Limits
//!
//! [`Config::validate`] checks every number before anything is planned or allocated: a
//! configuration may come from a TOML file or from a checkpoint's metadata, and an absurd
//! value there must be an error naming the field, not an overflow, a 16 GiB allocation or a
//! loop of four billion layers. The bounds are far above any real model (the paper preset:
//! crop 256, grid 7, D = H = 1024, 8 encoder convs, 34.6 M parameters) and keep every size
//! computed from a configuration well inside 64-bit arithmetic:
//!
//! | field | range |
//! |---|---|
//! | model.crop | 1..=[`MAX_CROP`] (4096), with an even patch 2 S / (G + 1) |
//! | model.grid | 2..=[`MAX_GRID`] (64) |
//! | model.prediction_skip, model.steps | >= 1, the last offset `skip + steps - 1` below grid |
//! | model.hidden | 1..=[`MAX_HIDDEN`] (65536) |
//! | model.jitter | below half the patch (the planner's bound, model::spec) |
//! | stem and stage channels | 1..=[`MAX_CHANNELS`] (65536) |
//! | stem kernel | odd, 1..=[`MAX_KERNEL`] (31); stage convs are 3x3 |
//! | strides | 1..=[`MAX_STRIDE`] (8) |
//! | model.encoder.stages | at most [`MAX_STAGES`] (16) |
//! | blocks x convs_per_block | at most [`MAX_BLOCK_CONVS`] (1024) over all stages |
//! | parameters | at most [`MAX_PARAMS`] (2^31) floats in the flat buffer, padding included |
//! | train.batch | >= 1; the upper bound is the adapter's memory (model::memory::check_fits) |
//! | train.total_steps | 1..=[`MAX_TOTAL_STEPS`] (10^9); warmup_steps at most total_steps |
//! | train.log_every | >= 1 |
//! | train.lr | finite, > 0 (a huge rate is how a test makes a run diverge on purpose) |
//! | train.min_lr | finite, in [0, lr] |
//! | train.weight_decay | finite, in [0, [`MAX_WEIGHT_DECAY`]] (1), and lr x weight_decay <= 1 |
//! | train.clip_norm | finite, >= 0 (0: no clipping) |
//!
//! The GPU's own limits (buffer sizes, memory) depend on the adapter and are checked when a
//! run is planned (model::memory), which also finds the largest batch that fits.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The names [`Config::preset`] knows.
pub const PRESETS: [&str; 4] = ["paper", "laptop", "small", "tiny"];

/// Largest crop side S, pixels (the presets use at most 256).
pub const MAX_CROP: u32 = 4096;
/// Largest grid G: G^2 = 4096 patches an image (the presets use 7).
pub const MAX_GRID: u32 = 64;
/// Widest conv (stem or stage), so the largest D (the paper preset: 1024).
pub const MAX_CHANNELS: u32 = 65536;
/// Largest GRU hidden size H (the paper preset: 1024).
pub const MAX_HIDDEN: u32 = 65536;
/// Largest stem kernel side (odd: convs pad by kernel / 2 and keep the centre).
pub const MAX_KERNEL: u32 = 31;
/// Largest conv stride.
pub const MAX_STRIDE: u32 = 8;
// Every kernel and stride a configuration may give, the convolutions run (ops::conv2d).
const _: () = assert!(
    (MAX_KERNEL * MAX_KERNEL) as usize <= crate::ops::conv2d::MAX_TAPS
        && MAX_STRIDE as usize <= crate::ops::conv2d::MAX_STRIDE
);
/// Most encoder stages (each has at least its downsampling conv).
pub const MAX_STAGES: usize = 16;
/// Most residual-block convs, `blocks * convs_per_block` summed over the stages (ResNet-152
/// has about 150 convs; every conv is a layer the planner builds).
pub const MAX_BLOCK_CONVS: u64 = 1024;
/// Most floats in the flat parameter buffer, padding included: 8 GiB a buffer, 32 GiB with
/// the gradients and Adam's two moments (the paper preset has 34.6 M). Views' element
/// offsets then fit the kernels' 32-bit uniforms.
pub const MAX_PARAMS: u64 = 1 << 31;
/// Most optimiser steps of a run (a million steps is a long run).
pub const MAX_TOTAL_STEPS: u64 = 1_000_000_000;
/// Largest weight decay (AdamW's usual values are 0.01 to 0.1). It shrinks the weights by
/// lr * weight_decay a step, so that product must not exceed 1 either (it would flip them).
pub const MAX_WEIGHT_DECAY: f32 = 1.0;

/// `field = value` must lie in `lo..=hi`: an error naming all three otherwise.
fn check_range(field: &str, value: u64, lo: u64, hi: u64) -> Result<()> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{field} = {value} is out of range: it must lie in {lo}..={hi}"
        )))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub train: TrainConfig,
}

/// Everything that decides the parameters' shapes and what they compute; a checkpoint is only
/// valid for the same model fields ([`Config::fingerprint`], [`Config::model_differences`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// S: side of the square crop fed to the model, pixels.
    pub crop: u32,
    /// G: patches per row and per column.
    pub grid: u32,
    /// H: GRU hidden size.
    pub hidden: u32,
    /// K: number of prediction offsets.
    pub steps: u32,
    /// First prediction offset o_1 (offsets are prediction_skip .. prediction_skip + K - 1).
    /// 2 skips the adjacent row, which overlaps by half a patch and is a shortcut.
    pub prediction_skip: u32,
    /// Per-patch crop jitter in pixels: a random crop of P - jitter pixels padded back to P
    /// (the paper's P/16); 0 turns it off.
    pub jitter: u32,
    pub encoder: EncoderConfig,
}

/// A ResNet-v2-style encoder run on every P x P patch (model::cpc plans it): a stem conv and
/// ReLU, then stages, each one downsampling conv and ReLU followed by pre-activation residual
/// blocks at that width, `h + conv_n(relu(... conv_1(relu(h))))`, then a final ReLU and a
/// spatial mean pool. With `layer_norm`, a one-group group norm follows every conv. The tiny
/// preset's one-conv block thus computes `relu(h + conv(h))` on h >= 0, the spec's
/// calibration encoder. Convs pad by kernel/2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub stem: ConvSpec,
    pub stages: Vec<StageSpec>,
    /// Group norm with one group after every conv (CPC v2); never batch norm (see the spec).
    pub layer_norm: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvSpec {
    /// Square kernel side, odd.
    pub kernel: u32,
    /// Output channels.
    pub channels: u32,
    pub stride: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Stride of the stage's first conv (3x3).
    pub stride: u32,
    /// Width of the stage: output channels of its first conv and of every block conv.
    pub channels: u32,
    /// Residual blocks after the downsampling conv.
    pub blocks: u32,
    /// 3x3 convs inside each residual block.
    pub convs_per_block: u32,
}

/// Optimisation and bookkeeping; changing these does not invalidate a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Images per step.
    pub batch: u32,
    /// Adam's peak learning rate (after warm-up).
    pub lr: f32,
    /// Floor the cosine decay reaches at total_steps; lr = min_lr means a constant rate.
    pub min_lr: f32,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// Decoupled (AdamW) weight decay; 0 is plain Adam as in the paper.
    pub weight_decay: f32,
    /// Global gradient-norm clip; 0 turns clipping off.
    pub clip_norm: f32,
    pub seed: u64,
    /// Write a metrics.jsonl row every this many steps.
    pub log_every: u64,
    /// Save a checkpoint every this many steps; 0 saves only at the end.
    pub checkpoint_every: u64,
}

fn conv(kernel: u32, channels: u32, stride: u32) -> ConvSpec {
    ConvSpec {
        kernel,
        channels,
        stride,
    }
}

fn stage(stride: u32, channels: u32, blocks: u32, convs_per_block: u32) -> StageSpec {
    StageSpec {
        stride,
        channels,
        blocks,
        convs_per_block,
    }
}

impl Config {
    /// One of [`PRESETS`]; an unknown name is an error that lists them.
    pub fn preset(name: &str) -> Result<Config> {
        let config = match name {
            // The paper's geometry; an encoder of 3x3 basic blocks sized to the paper's
            // ResNet-v2-101 (three stages) cost, about 1 GFLOP per 64 x 64 patch.
            "paper" => Config {
                model: ModelConfig {
                    crop: 256,
                    grid: 7,
                    hidden: 1024,
                    steps: 5,
                    prediction_skip: 2,
                    jitter: 4,
                    encoder: EncoderConfig {
                        stem: conv(3, 64, 2),
                        stages: vec![
                            stage(2, 128, 1, 2),
                            stage(2, 256, 1, 2),
                            stage(2, 1024, 1, 2),
                        ],
                        layer_norm: false,
                    },
                },
                train: TrainConfig {
                    batch: 16,
                    lr: 2e-4,
                    min_lr: 2e-6,
                    warmup_steps: 1000,
                    total_steps: 100_000,
                    weight_decay: 0.0,
                    clip_norm: 1.0,
                    seed: 0,
                    log_every: 10,
                    checkpoint_every: 1000,
                },
            },
            // Same geometry, widths 32/64/128/256: fits a 4-8 GiB laptop GPU at batch 16.
            "laptop" => Config {
                model: ModelConfig {
                    crop: 256,
                    grid: 7,
                    hidden: 256,
                    steps: 5,
                    prediction_skip: 2,
                    jitter: 4,
                    encoder: EncoderConfig {
                        stem: conv(3, 32, 2),
                        stages: vec![stage(2, 64, 1, 2), stage(2, 128, 1, 2), stage(2, 256, 1, 2)],
                        layer_norm: false,
                    },
                },
                train: TrainConfig {
                    batch: 16,
                    lr: 2e-4,
                    min_lr: 2e-6,
                    warmup_steps: 500,
                    total_steps: 50_000,
                    weight_decay: 0.0,
                    clip_norm: 1.0,
                    seed: 0,
                    log_every: 10,
                    checkpoint_every: 1000,
                },
            },
            // STL-10 scale (64 px crops, 16 px patches), about 1.2 GFLOP per image forward.
            "small" => Config {
                model: ModelConfig {
                    crop: 64,
                    grid: 7,
                    hidden: 256,
                    steps: 3,
                    prediction_skip: 2,
                    jitter: 1,
                    encoder: EncoderConfig {
                        stem: conv(3, 32, 1),
                        stages: vec![stage(2, 64, 1, 2), stage(2, 128, 0, 2), stage(2, 256, 1, 2)],
                        layer_norm: false,
                    },
                },
                train: TrainConfig {
                    batch: 16,
                    lr: 2e-4,
                    min_lr: 2e-6,
                    warmup_steps: 500,
                    total_steps: 20_000,
                    weight_decay: 0.0,
                    clip_norm: 1.0,
                    seed: 0,
                    log_every: 10,
                    checkpoint_every: 1000,
                },
            },
            // The spec's PyTorch calibration: constant Adam lr 1e-3, batch 16, no clipping.
            "tiny" => Config {
                model: ModelConfig {
                    crop: 32,
                    grid: 7,
                    hidden: 64,
                    steps: 2,
                    prediction_skip: 2,
                    jitter: 0,
                    encoder: EncoderConfig {
                        stem: conv(3, 32, 1),
                        stages: vec![stage(2, 64, 1, 1)],
                        layer_norm: false,
                    },
                },
                train: TrainConfig {
                    batch: 16,
                    lr: 1e-3,
                    min_lr: 1e-3,
                    warmup_steps: 0,
                    total_steps: 300,
                    weight_decay: 0.0,
                    clip_norm: 0.0,
                    seed: 0,
                    log_every: 10,
                    checkpoint_every: 100,
                },
            },
            _ => {
                return Err(Error::Config(format!(
                    "unknown preset `{name}`; the presets are: {}",
                    PRESETS.join(", ")
                )))
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// The preset `preset`, with every field that `toml` names replaced by its value. Tables
    /// merge key by key (`[model.encoder] layer_norm = true` keeps the stem and stages);
    /// arrays such as `model.encoder.stages` are replaced whole. A key the preset does not
    /// have is an error naming it. A warm-up may be shortened, as
    /// [`Config::from_toml_overrides_noted`] says (its note dropped).
    pub fn from_toml_overrides(preset: &str, toml: &str) -> Result<Config> {
        Config::from_toml_overrides_noted(preset, toml).map(|(config, _)| config)
    }

    /// [`Config::from_toml_overrides`], with notes on what it adjusted. A file that sets
    /// `train.total_steps` below the preset's warm-up without setting `train.warmup_steps`
    /// asks for a short run of the preset: the warm-up is shortened to the run, and a note
    /// says so. A file that sets both, the warm-up longer than the run, contradicts itself
    /// and is refused, as is a `warmup_steps` it sets above the preset's total.
    pub fn from_toml_overrides_noted(preset: &str, toml: &str) -> Result<(Config, Vec<String>)> {
        let base = Config::preset(preset)?;
        let overrides: toml::Table = toml
            .parse()
            .map_err(|e| Error::Config(format!("overrides are not valid TOML: {e}")))?;
        let train = overrides.get("train").and_then(toml::Value::as_table);
        let sets = |key: &str| train.is_some_and(|t| t.contains_key(key));
        let shorten = sets("total_steps") && !sets("warmup_steps");
        let mut merged = toml::Table::try_from(&base)
            .map_err(|e| Error::Config(format!("cannot write preset `{preset}` as TOML: {e}")))?;
        merge(&mut merged, overrides, "")?;
        let mut config: Config =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    Error::Config(format!("overrides of preset `{preset}`: {e}"))
                })?;
        let mut notes = Vec::new();
        if shorten {
            let why = format!("train.total_steps = {}", config.train.total_steps);
            notes.extend(
                config
                    .train
                    .fit_warmup_to_run(&format!("preset {preset}'s"), &why),
            );
        }
        config.validate()?;
        Ok((config, notes))
    }

    /// A complete configuration as [`Config::to_toml`] wrote it (e.g. from a checkpoint).
    pub fn from_toml(toml: &str) -> Result<Config> {
        let config: Config =
            toml::from_str(toml).map_err(|e| Error::Config(format!("not a configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Every field, as TOML that [`Config::from_toml`] reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a Config always serialises to TOML")
    }

    /// 16 hex digits identifying the model fields (FNV-1a of their TOML): equal for two
    /// configurations whose checkpoints are interchangeable, different otherwise.
    pub fn fingerprint(&self) -> String {
        self.model.fingerprint()
    }

    /// The model fields that differ, as `model.hidden: 64 != 128` lines (self first); empty
    /// when a checkpoint of `other` fits `self`.
    pub fn model_differences(&self, other: &Config) -> Vec<String> {
        let flatten = |m: &ModelConfig| {
            let mut out = Vec::new();
            let value = toml::Value::try_from(m).expect("a ModelConfig serialises to TOML");
            flatten_into(&value, "model", &mut out);
            out
        };
        let (a, b) = (flatten(&self.model), flatten(&other.model));
        let mut differences = Vec::new();
        for (key, va) in &a {
            match b.iter().find(|(k, _)| k == key) {
                Some((_, vb)) if vb == va => {}
                Some((_, vb)) => differences.push(format!("{key}: {va} != {vb}")),
                None => differences.push(format!("{key}: {va} != (absent)")),
            }
        }
        for (key, vb) in &b {
            if !a.iter().any(|(k, _)| k == key) {
                differences.push(format!("{key}: (absent) != {vb}"));
            }
        }
        differences
    }

    /// Checks that the numbers make a model and a run; errors name the numbers.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.train.validate()
    }
}

impl ModelConfig {
    /// P = 2 S / (G + 1): patches of side P at stride P/2 tile the crop exactly.
    /// Defined when [`ModelConfig::validate`] passes (it checks that P is an even integer).
    pub fn patch(&self) -> u32 {
        // In 64 bits, so that an unchecked configuration gives a number rather than a panic.
        (2 * self.crop as u64 / (self.grid as u64 + 1)) as u32
    }

    /// P/2: distance between neighbouring patches (50 % overlap).
    pub fn patch_stride(&self) -> u32 {
        self.patch() / 2
    }

    /// D: the patch vector size, the width of the encoder's last conv.
    pub fn code_dim(&self) -> u32 {
        self.encoder
            .stages
            .last()
            .map_or(self.encoder.stem.channels, |s| s.channels)
    }

    /// The row offsets predicted, o_k for k = 1..K: prediction_skip, prediction_skip + 1, ...
    /// K values: call it on a validated configuration (steps below the grid).
    pub fn offsets(&self) -> Vec<u32> {
        (0..self.steps)
            .map(|k| self.prediction_skip.saturating_add(k))
            .collect()
    }

    /// FLOPs of one image's forward pass in a batch of `batch`: see
    /// [`crate::model::ModelSpec::forward_flops_per_image`].
    pub fn forward_flops_per_image(&self, batch: u32) -> f64 {
        crate::model::ModelSpec::from(self).forward_flops_per_image(batch as usize)
    }

    fn fingerprint(&self) -> String {
        let text = toml::to_string(self).expect("a ModelConfig serialises to TOML");
        // FNV-1a, 64 bit: stable across Rust versions, unlike DefaultHasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    /// Checks every field against its bound (module docs, Limits) before anything is derived
    /// from them, in an order where each check's arithmetic only uses fields already checked;
    /// then the planner's checks on the shapes ([`crate::model::ModelSpec::validate`]: the
    /// encoder leaves a non-empty patch, the parameter count). Errors name the field, its
    /// value and the bound.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::Config(m));
        let (s, g) = (self.crop, self.grid);
        check_range("model.crop", s as u64, 1, MAX_CROP as u64)?;
        check_range("model.grid", g as u64, 2, MAX_GRID as u64)?;
        if (2 * s) % (g + 1) != 0 || (2 * s / (g + 1)) % 2 != 0 {
            return err(format!(
                "model.crop = {s} with model.grid = {g} gives patch 2*{s}/({g}+1) = {:.3}, \
                 which is not an even integer; choose crop as a multiple of {} \
                 (e.g. {} for patch {})",
                2.0 * s as f64 / (g + 1) as f64,
                g + 1,
                (g + 1) * 32,
                64
            ));
        }
        if self.steps == 0 {
            return err("model.steps = 0: need at least one prediction offset".into());
        }
        if self.prediction_skip == 0 {
            return err(
                "model.prediction_skip = 0: offset 0 would predict a patch from itself".into(),
            );
        }
        // In 64 bits: two u32 near their maximum must not wrap below the grid.
        let last = self.prediction_skip as u64 + self.steps as u64 - 1;
        if last >= g as u64 {
            return err(format!(
                "model.prediction_skip = {} and model.steps = {}: the last offset, \
                 prediction_skip + steps - 1 = {last}, must be below model.grid = {g} so that \
                 every offset has a row to predict",
                self.prediction_skip, self.steps
            ));
        }
        check_range("model.hidden", self.hidden as u64, 1, MAX_HIDDEN as u64)?;
        let p = self.patch();
        if self.jitter >= p / 2 {
            return err(format!(
                "model.jitter = {} must be below half the patch side, {p}/2 = {}",
                self.jitter,
                p / 2
            ));
        }
        let stem = self.encoder.stem;
        let field = "model.encoder.stem";
        check_range(
            &format!("{field}.kernel"),
            stem.kernel as u64,
            1,
            MAX_KERNEL as u64,
        )?;
        if stem.kernel.is_multiple_of(2) {
            return err(format!(
                "{field}.kernel = {} must be odd (convs pad by kernel / 2 on each side)",
                stem.kernel
            ));
        }
        check_range(
            &format!("{field}.channels"),
            stem.channels as u64,
            1,
            MAX_CHANNELS as u64,
        )?;
        check_range(
            &format!("{field}.stride"),
            stem.stride as u64,
            1,
            MAX_STRIDE as u64,
        )?;
        let stages = &self.encoder.stages;
        if stages.len() > MAX_STAGES {
            return err(format!(
                "model.encoder.stages has {} stages; at most {MAX_STAGES}",
                stages.len()
            ));
        }
        let mut block_convs = 0u64;
        for (i, st) in stages.iter().enumerate() {
            let field = format!("model.encoder.stages[{i}]");
            check_range(
                &format!("{field}.stride"),
                st.stride as u64,
                1,
                MAX_STRIDE as u64,
            )?;
            let (channels, max) = (st.channels as u64, MAX_CHANNELS as u64);
            check_range(&format!("{field}.channels"), channels, 1, max)?;
            check_range(
                &format!("{field}.blocks"),
                st.blocks as u64,
                0,
                MAX_BLOCK_CONVS,
            )?;
            let convs = st.convs_per_block as u64;
            check_range(
                &format!("{field}.convs_per_block"),
                convs,
                0,
                MAX_BLOCK_CONVS,
            )?;
            if st.blocks > 0 && st.convs_per_block == 0 {
                return err(format!(
                    "{field}.blocks = {} with convs_per_block = 0: blocks need at least one conv",
                    st.blocks
                ));
            }
            // Both factors are at most MAX_BLOCK_CONVS: no overflow.
            block_convs += st.blocks as u64 * convs;
            if block_convs > MAX_BLOCK_CONVS {
                return err(format!(
                    "{field}: blocks x convs_per_block = {} x {convs} brings the encoder to \
                     {block_convs} block convs; at most {MAX_BLOCK_CONVS} over all stages",
                    st.blocks
                ));
            }
        }
        // Every field is in range: the shapes can now be computed without overflow.
        crate::model::ModelSpec::from(self).validate()
    }
}

impl TrainConfig {
    /// Shortens a warm-up longer than the run to the whole run (the rate then reaches its
    /// peak at the last step), returning a note that says so; None when the warm-up fits.
    /// For a run length given apart from the warm-up (`--steps 2` on a preset of 500
    /// warm-up steps: a short try of a preset must run); `whose` and `why` name where the
    /// warm-up and the length came from.
    pub fn fit_warmup_to_run(&mut self, whose: &str, why: &str) -> Option<String> {
        (self.warmup_steps > self.total_steps).then(|| {
            let note = format!(
                "{whose} warm-up of {} steps is longer than the run ({why}): shortened to {} \
                 steps",
                self.warmup_steps, self.total_steps
            );
            self.warmup_steps = self.total_steps;
            note
        })
    }

    /// Checks every number: the integers against their bounds, the floats finite and in
    /// range (a NaN compares false with everything, so every test is written to fail on it).
    /// The batch's upper bound is the adapter's memory, checked when a run is planned
    /// (model::memory::check_fits), which says which batch fits.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::Config(m));
        if self.batch == 0 {
            return err("train.batch = 0: need at least one image a step".into());
        }
        check_range("train.total_steps", self.total_steps, 1, MAX_TOTAL_STEPS)?;
        if self.warmup_steps > self.total_steps {
            return err(format!(
                "train.warmup_steps = {} must be at most train.total_steps = {} (the warm-up \
                 is part of the run)",
                self.warmup_steps, self.total_steps
            ));
        }
        if self.log_every == 0 {
            return err("train.log_every = 0: must log at least every N steps".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return err(format!(
                "train.lr = {} must be a finite positive number",
                self.lr
            ));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return err(format!(
                "train.min_lr = {} must be a finite number in 0..=lr ({})",
                self.min_lr, self.lr
            ));
        }
        let wd = self.weight_decay;
        if !(wd.is_finite() && (0.0..=MAX_WEIGHT_DECAY).contains(&wd)) {
            return err(format!(
                "train.weight_decay = {wd} must be a finite number in 0..={MAX_WEIGHT_DECAY}"
            ));
        }
        // In f64: lr may be large (a deliberately diverging run) and the product must not
        // round to infinity before it is compared.
        if self.lr as f64 * wd as f64 > 1.0 {
            return err(format!(
                "train.weight_decay = {wd} with train.lr = {}: AdamW shrinks the weights by \
                 lr x weight_decay = {} a step, which must not exceed 1",
                self.lr,
                self.lr as f64 * wd as f64
            ));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm >= 0.0) {
            return err(format!(
                "train.clip_norm = {} must be a finite number >= 0 (0 turns clipping off)",
                self.clip_norm
            ));
        }
        Ok(())
    }
}

/// Copies `overrides` into `base` key by key; a key `base` lacks is an unknown field.
fn merge(base: &mut toml::Table, overrides: toml::Table, prefix: &str) -> Result<()> {
    for (key, value) in overrides {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(slot) = base.get_mut(&key) else {
            let known: Vec<&str> = base.keys().map(String::as_str).collect();
            let at = if prefix.is_empty() {
                "the top level".to_string()
            } else {
                format!("[{prefix}]")
            };
            return Err(Error::Config(format!(
                "unknown field `{path}`; fields at {at} are: {}",
                known.join(", ")
            )));
        };
        match (slot, value) {
            (toml::Value::Table(inner), toml::Value::Table(value)) => merge(inner, value, &path)?,
            (slot, value) => *slot = value,
        }
    }
    Ok(())
}

/// `model.encoder.stem.kernel = 3` style leaves of a TOML value.
fn flatten_into(value: &toml::Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table {
                flatten_into(v, &format!("{prefix}.{key}"), out);
            }
        }
        toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
            for (i, v) in items.iter().enumerate() {
                flatten_into(v, &format!("{prefix}[{i}]"), out);
            }
            out.push((format!("{prefix}.len"), items.len().to_string()));
        }
        leaf => out.push((prefix.to_string(), leaf.to_string())),
    }
}
