//! What a run is: its model (model::config: modality, encoder, GRU, predictions) and its
//! training (steps, learning rate, checkpoints, logging).
//!
//! Ten presets, each a complete [`Config`]; a TOML file then overrides any of their fields,
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
//! Vision (crops cut into a G x G grid of patches, the GRU down each column):
//!
//! | preset | crop S | grid G | patch P | D | H | K | encoder (stem; stages) |
//! |---|---|---|---|---|---|---|---|
//! | paper  | 256 | 7 | 64 | 1024 | 1024 | 5 | 3x3/2 64; 128, 256, 1024 (stride 2, 1 block of 2 convs each) |
//! | laptop | 256 | 7 | 64 | 256 | 256 | 5 | 3x3/2 32; 64, 128, 256 (stride 2, 1 block of 2 convs each) |
//! | small  | 64 | 7 | 16 | 256 | 256 | 3 | 3x3/1 32; 64, 128, 256 (stride 2; blocks of 2, 0, 2 convs) |
//! | tiny   | 32 | 7 | 8 | 64 | 64 | 2 | 3x3/1 32; 64 (stride 2, 1 block of 1 conv) |
//!
//! D, the patch vector size, is the width of the encoder's last stage (the mean pool keeps
//! the channels), so it is derived rather than stored (`code_dim`).
//! `VisionConfig::forward_flops_per_image` checks the presets against the spec's compute
//! line (tiny about 100 MFLOP, small about 1.2 GFLOP, paper about 57 GFLOP per image forward).
//!
//! Audio (windows of raw 16 kHz samples, one frame every 160 samples, the GRU along them;
//! the convs' kernels 10, 8, 4, 4, 4, strides 5, 4, 2, 2, 2, padding 3, 2, 1, 1, 1):
//!
//! | preset | window L | frames T | D (conv channels) | H | offsets | frame norm |
//! |---|---|---|---|---|---|---|
//! | audio       | 20480 (1.28 s) | 128 | 512 | 256 | 1..=12 | off (the paper) |
//! | audio-small | 20480 | 128 | 256 | 256 | 1..=12 | on |
//! | audio-tiny  | 3200 (0.2 s) | 20 | 64 | 64 | 1..=4 | on |
//!
//! Text (B passages of L consecutive sentences; each sentence's words embedded, a word conv
//! of width K with a ReLU, the mean over its words; the GRU along each passage):
//!
//! | preset | vocabulary V | words W | E | K | D | L | H | offsets | parameters |
//! |---|---|---|---|---|---|---|---|---|---|
//! | text       | 20000 | 32 | 620 | 3 | 2400 | 8 | 2400 | 1..=3 | 68.7 M |
//! | text-small | 20000 | 32 | 256 | 3 | 1024 | 8 | 1024 | 1..=3 | 15.4 M |
//! | text-tiny  | 2048 | 16 | 32 | 3 | 64 | 6 | 64 | 1..=3 | 0.11 M |
//!
//! # Limits
//!
//! [`Config::validate`] checks every number before anything is planned or allocated: the
//! model's fields as model::config lists them, and the run's:
//!
//! | field | range |
//! |---|---|
//! | train.batch | >= 1; the upper bound is the adapter's memory (model::memory::check_fits) |
//! | train.total_steps | 1..=[`MAX_TOTAL_STEPS`] (10^9); warmup_steps at most total_steps |
//! | train.log_every | >= 1 |
//! | train.lr | finite, > 0 (a huge rate is how a test makes a run diverge on purpose) |
//! | train.min_lr | finite, in [0, lr] |
//! | train.weight_decay | finite, in [0, [`MAX_WEIGHT_DECAY`]] (1), and lr x weight_decay <= 1 |
//! | train.clip_norm | finite, >= 0 (0: no clipping) |

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::audio::PAPER_CONVS;
use crate::model::config::{
    check_range, conv, stage, AudioConfig, AudioEncoderConfig, Conv1dConfig, EncoderConfig,
    ModelConfig, TextConfig, TextEncoderConfig, VisionConfig,
};

/// The names [`Config::preset`] knows.
pub const PRESETS: [&str; 10] = [
    "paper",
    "laptop",
    "small",
    "tiny",
    "audio",
    "audio-small",
    "audio-tiny",
    "text",
    "text-small",
    "text-tiny",
];

/// Most optimiser steps of a run (a million steps is a long run).
pub const MAX_TOTAL_STEPS: u64 = 1_000_000_000;
/// Largest weight decay (AdamW's usual values are 0.01 to 0.1). It shrinks the weights by
/// lr * weight_decay a step, so that product must not exceed 1 either (it would flip them).
pub const MAX_WEIGHT_DECAY: f32 = 1.0;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub train: TrainConfig,
}

/// Optimisation and bookkeeping; changing these does not invalidate a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Examples per micro-batch: the batch each forward reads, whose examples are each
    /// other's InfoNCE negatives.
    pub batch: u32,
    /// Micro-batches per optimiser step (`--accumulate`): their gradients are summed and
    /// divided by their count, then one Adam update; a step reads `batch x accumulate`
    /// examples. Checkpoints written before this field read as 1.
    #[serde(default = "one_micro_batch")]
    pub accumulate: u32,
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

fn one_micro_batch() -> u32 {
    1
}

/// Most micro-batches a step accumulates.
pub const MAX_ACCUMULATE: u32 = 1 << 16;

/// The paper's audio encoder geometry (kernels 10, 8, 4, 4, 4, strides 5, 4, 2, 2, 2: a
/// frame every 160 samples) at `channels`, over windows of `window` samples, the GRU of
/// `hidden`, predicting frames 1..=steps.
fn audio_model(
    window: u32,
    channels: u32,
    hidden: u32,
    steps: u32,
    frame_norm: bool,
) -> ModelConfig {
    let u = |n: usize| n as u32;
    ModelConfig::Audio(AudioConfig {
        window,
        hidden,
        steps,
        prediction_skip: 1,
        encoder: AudioEncoderConfig {
            convs: (PAPER_CONVS.iter())
                .map(|&(kernel, stride, padding)| Conv1dConfig {
                    kernel: u(kernel),
                    stride: u(stride),
                    padding: u(padding),
                    channels,
                })
                .collect(),
            frame_norm,
        },
    })
}

/// A text model predicting the next 1..=3 sentences (the paper's three), from the first
/// one (prediction_skip 1), with a word conv of width 3.
fn text_model(
    vocab_size: u32,
    max_words: u32,
    [embedding, channels, hidden]: [u32; 3],
    sentences: u32,
) -> ModelConfig {
    ModelConfig::Text(TextConfig {
        vocab_size,
        max_words,
        embedding,
        sentences,
        hidden,
        steps: 3,
        prediction_skip: 1,
        encoder: TextEncoderConfig {
            kernel: 3,
            channels,
        },
    })
}

/// The audio presets' shared bookkeeping.
fn audio_train() -> TrainConfig {
    TrainConfig {
        batch: 8,
        accumulate: 1,
        lr: 2e-4,
        min_lr: 2e-6,
        warmup_steps: 0,
        total_steps: 1000,
        weight_decay: 0.0,
        clip_norm: 1.0,
        seed: 0,
        log_every: 10,
        checkpoint_every: 1000,
    }
}

/// audio-tiny's and text-tiny's training: 16 examples a step at a constant 2e-3 for 300
/// steps (audio-tiny: 1000), no clipping, a checkpoint every 100.
fn tiny_train() -> TrainConfig {
    TrainConfig {
        batch: 16,
        lr: 2e-3,
        min_lr: 2e-3,
        warmup_steps: 0,
        total_steps: 300,
        clip_norm: 0.0,
        checkpoint_every: 100,
        ..audio_train()
    }
}

impl Config {
    /// One of [`PRESETS`]; an unknown name is an error that lists them.
    pub fn preset(name: &str) -> Result<Config> {
        let config = match name {
            // The paper's geometry; an encoder of 3x3 basic blocks sized to the paper's
            // ResNet-v2-101 (three stages) cost, about 1 GFLOP per 64 x 64 patch.
            "paper" => Config {
                model: ModelConfig::Vision(VisionConfig {
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
                }),
                train: TrainConfig {
                    batch: 16,
                    accumulate: 1,
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
                model: ModelConfig::Vision(VisionConfig {
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
                }),
                train: TrainConfig {
                    batch: 16,
                    accumulate: 1,
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
                model: ModelConfig::Vision(VisionConfig {
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
                }),
                train: TrainConfig {
                    batch: 16,
                    accumulate: 1,
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
                model: ModelConfig::Vision(VisionConfig {
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
                }),
                train: TrainConfig {
                    batch: 16,
                    accumulate: 1,
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
            // The paper's speech model (van den Oord et al. 2018): Adam at 2e-4, 8 windows
            // of 20480 samples a step (per GPU in the paper).
            "audio" => Config {
                model: audio_model(20480, 512, 256, 12, false),
                train: TrainConfig {
                    batch: 8,
                    lr: 2e-4,
                    min_lr: 2e-6,
                    warmup_steps: 1000,
                    total_steps: 100_000,
                    ..audio_train()
                },
            },
            // Half the channels, and the frame norm that later CPC audio code trains with.
            "audio-small" => Config {
                model: audio_model(20480, 256, 256, 12, true),
                train: TrainConfig {
                    batch: 8,
                    lr: 2e-4,
                    min_lr: 2e-6,
                    warmup_steps: 500,
                    total_steps: 50_000,
                    ..audio_train()
                },
            },
            // For tests and a first try: 0.2 s windows, 64 channels, 1000 steps; trains in
            // about 5 minutes on the software adapter. Constant rate, no clipping, as the tiny
            // vision preset. 64 channels and 1000 steps are what its speaker probe needs to
            // beat the random-weight model's (docs/model.md, "The speaker probe").
            "audio-tiny" => Config {
                model: audio_model(3200, 64, 64, 4, true),
                train: TrainConfig {
                    total_steps: 1000,
                    ..tiny_train()
                },
            },
            // The paper's sentence model (van den Oord et al. 2018, section 3.3): embeddings of
            // 620, sentence vectors and GRU of 2400, 3 future sentences. Choices the paper
            // leaves open: a word conv of width 3, 20000 words (PAD and UNK included), 32
            // words a sentence, passages of 8 sentences, 32 passages (256 candidates) a step,
            // Adam at 2e-4 as the audio model.
            "text" => Config {
                model: text_model(20000, 32, [620, 2400, 2400], 8),
                train: TrainConfig {
                    batch: 32,
                    warmup_steps: 1000,
                    total_steps: 100_000,
                    ..audio_train()
                },
            },
            // For a laptop GPU: embeddings of 256, D = H = 1024.
            "text-small" => Config {
                model: text_model(20000, 32, [256, 1024, 1024], 8),
                train: TrainConfig {
                    batch: 32,
                    warmup_steps: 500,
                    total_steps: 50_000,
                    ..audio_train()
                },
            },
            // For tests and a first try on the built-in corpus: 2048 words, 16 a sentence,
            // passages of 6, D = H = 64; constant rate, no clipping, as audio-tiny.
            "text-tiny" => Config {
                model: text_model(2048, 16, [32, 64, 64], 6),
                train: tiny_train(),
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
        check_range(
            "train.accumulate",
            self.accumulate as u64,
            1,
            MAX_ACCUMULATE as u64,
        )?;
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
