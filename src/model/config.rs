//! What a model is: its modality's encoder and geometry, the GRU context and the prediction
//! offsets. Everything here decides the parameters' shapes and what they compute, so a
//! checkpoint is only valid for the same model fields ([`ModelConfig::fingerprint`]);
//! train::config adds the run (steps, learning rate, checkpoints) and the presets.
//!
//! Three modalities, told apart in TOML by `model.modality` (absent for vision, so that
//! every vision configuration, and its fingerprint, reads as it did before audio existed):
//!
//! ```toml
//! [model]                      # vision          [model]                    # audio
//! crop = 256                                     modality = "audio"
//! grid = 7                                       window = 20480
//! hidden = 1024                                  hidden = 256
//! steps = 5                                      steps = 12
//! prediction_skip = 2                            prediction_skip = 1
//! jitter = 4                                     [model.encoder]
//! [model.encoder]                                frame_norm = false
//! layer_norm = false                             [[model.encoder.convs]]
//! [model.encoder.stem]                           kernel = 10
//! ...                                            stride = 5
//!                                                padding = 3
//!                                                channels = 512
//! ```
//!
//! ```toml
//! [model]                      # text
//! modality = "text"
//! vocab_size = 20000           # V: embedding rows, PAD and UNK included
//! max_words = 32               # W: a padded sentence's positions
//! embedding = 620              # E
//! sentences = 8                # L: sentences a passage (the GRU's steps)
//! hidden = 2400                # H
//! steps = 3
//! prediction_skip = 1
//! [model.encoder]
//! kernel = 3                   # K: the word conv's width, odd
//! channels = 2400              # D
//! ```
//!
//! # Limits
//!
//! [`ModelConfig::validate`] checks every number before anything is planned or allocated:
//! a configuration may come from a TOML file or from a checkpoint's metadata, and an absurd
//! value there must be an error naming the field, not an overflow, a 16 GiB allocation or a
//! loop of four billion layers. The bounds are far above any real model (the paper preset:
//! crop 256, grid 7, D = H = 1024, 8 encoder convs, 34.6 M parameters; the audio preset
//! 7.4 M) and keep every size computed from a configuration well inside 64-bit arithmetic:
//!
//! | field | range |
//! |---|---|
//! | model.crop | 1..=[`MAX_CROP`] (4096), with an even patch 2 S / (G + 1) |
//! | model.grid | 2..=[`MAX_GRID`] (64) |
//! | model.prediction_skip, model.steps | >= 1, the last offset `skip + steps - 1` below grid (vision) or the window's frames (audio) |
//! | model.hidden | 1..=[`MAX_HIDDEN`] (65536) |
//! | model.jitter | below half the patch (the planner's bound, model::spec) |
//! | stem and stage channels, audio conv channels | 1..=[`MAX_CHANNELS`] (65536) |
//! | stem kernel | odd, 1..=[`MAX_KERNEL`] (31); stage convs are 3x3 |
//! | vision strides | 1..=[`MAX_STRIDE`] (8) |
//! | model.encoder.stages | at most [`MAX_STAGES`] (16) |
//! | blocks x convs_per_block | at most [`MAX_BLOCK_CONVS`] (1024) over all stages |
//! | model.vocab_size (text) | [`MIN_VOCAB`]..=[`MAX_VOCAB`] (2..=2^20, data::text::vocab's bounds) |
//! | model.max_words, model.sentences (text) | 1..=[`MAX_WORDS`] (4096), 2..=[`MAX_SENTENCES`] (4096) |
//! | model.embedding, model.encoder.channels (text) | 1..=[`MAX_CHANNELS`] |
//! | model.encoder.kernel (text) | odd, 1..=[`MAX_KERNEL`] (31) |
//! | model.window (audio) | 1..=[`MAX_WINDOW`] (2^20 samples, 65 s at 16 kHz) |
//! | model.encoder.convs (audio) | 1..=[`MAX_AUDIO_CONVS`] (64) convs |
//! | audio conv kernel, stride, padding | 1..=[`MAX_AUDIO_KERNEL`] (2048), 1..=[`MAX_AUDIO_STRIDE`] (16), below the kernel |
//! | parameters | at most [`MAX_PARAMS`] (2^31) floats in the flat buffer, padding included |
//!
//! The GPU's own limits (buffer sizes, memory) depend on the adapter and are checked when a
//! run is planned (model::memory), which also finds the largest batch that fits.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::model::audio::{AudioSpec, Conv1dSpec};
pub use crate::model::text::{MAX_SENTENCES, MAX_WORDS};
use crate::model::{ModelSpec, ParamLayout, Spec, TextSpec};

/// The modalities a model may have, as `model.modality` names them.
pub const MODALITIES: [&str; 3] = ["vision", "audio", "text"];

/// Fewest and most rows of a text model's embedding table: the vocabulary's bounds.
pub const MIN_VOCAB: usize = crate::data::text::vocab::MIN_SIZE;
pub const MAX_VOCAB: usize = crate::data::text::vocab::MAX_SIZE;

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

/// `field = value` must lie in `lo..=hi`: an error naming all three otherwise.
pub(crate) fn check_range(field: &str, value: u64, lo: u64, hi: u64) -> Result<()> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{field} = {value} is out of range: it must lie in {lo}..={hi}"
        )))
    }
}

/// Longest audio window, samples (2^20: 65 s at 16 kHz; the audio preset uses 20480).
pub const MAX_WINDOW: u32 = 1 << 20;
/// Most convs of an audio encoder (the paper's has 5).
pub const MAX_AUDIO_CONVS: usize = 64;
/// Widest audio conv kernel (the paper's widest is 10): a 1-D conv's taps.
pub const MAX_AUDIO_KERNEL: u32 = crate::ops::conv2d::MAX_TAPS as u32;
/// Largest audio conv stride (the paper's largest is 5).
pub const MAX_AUDIO_STRIDE: u32 = crate::ops::conv2d::MAX_STRIDE as u32;

/// The model of a configuration, one of [`MODALITIES`].
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    Vision(VisionConfig),
    Audio(AudioConfig),
    Text(TextConfig),
}

/// The prediction offsets skip, skip + 1, ..., skip + steps - 1 (saturating: validation
/// bounds them).
fn offsets(skip: u32, steps: u32) -> Vec<u32> {
    (0..steps).map(|k| skip.saturating_add(k)).collect()
}

impl ModelConfig {
    /// `model.modality`, one of [`MODALITIES`].
    pub fn modality(&self) -> &'static str {
        match self {
            ModelConfig::Vision(_) => MODALITIES[0],
            ModelConfig::Audio(_) => MODALITIES[1],
            ModelConfig::Text(_) => MODALITIES[2],
        }
    }

    pub fn vision(&self) -> Option<&VisionConfig> {
        match self {
            ModelConfig::Vision(v) => Some(v),
            _ => None,
        }
    }

    pub fn vision_mut(&mut self) -> Option<&mut VisionConfig> {
        match self {
            ModelConfig::Vision(v) => Some(v),
            _ => None,
        }
    }

    pub fn audio(&self) -> Option<&AudioConfig> {
        match self {
            ModelConfig::Audio(a) => Some(a),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&TextConfig> {
        match self {
            ModelConfig::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The vision model, or an error saying that `what` takes images only.
    pub fn require_vision(&self, what: &str) -> Result<&VisionConfig> {
        self.vision().ok_or_else(|| {
            Error::Config(format!(
                "{what} works on image models; this is an {} model",
                self.modality()
            ))
        })
    }

    /// H: the GRU's hidden size.
    pub fn hidden(&self) -> u32 {
        match self {
            ModelConfig::Vision(v) => v.hidden,
            ModelConfig::Audio(a) => a.hidden,
            ModelConfig::Text(t) => t.hidden,
        }
    }

    /// D: the size of the encoder's vectors (patch vectors, frames, sentence vectors).
    pub fn code_dim(&self) -> u32 {
        match self {
            ModelConfig::Vision(v) => v.code_dim(),
            ModelConfig::Audio(a) => a.code_dim(),
            ModelConfig::Text(t) => t.encoder.channels,
        }
    }

    /// The offsets predicted (grid rows for vision, frames for audio, sentences for text),
    /// ascending.
    pub fn offsets(&self) -> Vec<u32> {
        match self {
            ModelConfig::Vision(v) => v.offsets(),
            ModelConfig::Audio(a) => a.offsets(),
            ModelConfig::Text(t) => t.offsets(),
        }
    }

    /// 16 hex digits identifying the model fields (FNV-1a of their TOML): equal for two
    /// configurations whose checkpoints are interchangeable, different otherwise. A vision
    /// model's TOML has no `modality` key, so its fingerprint is the one it had before audio.
    pub fn fingerprint(&self) -> String {
        let text = toml::to_string(self).expect("a ModelConfig serialises to TOML");
        // FNV-1a, 64 bit: stable across Rust versions, unlike DefaultHasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    /// The names, shapes and offsets of the model's parameters.
    pub fn layout(&self) -> ParamLayout {
        ParamLayout::new(Spec::from(self))
    }

    /// Checks every field against its bound (module docs, Limits); errors name the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Vision(v) => v.validate(),
            ModelConfig::Audio(a) => a.validate(),
            ModelConfig::Text(t) => t.validate(),
        }
    }
}

impl ModelConfig {
    /// A non-vision model's fields with its `modality` key, as one TOML table.
    fn with_modality<T: Serialize, S: Serializer>(
        &self,
        fields: &T,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let mut table = toml::Table::try_from(fields).map_err(serde::ser::Error::custom)?;
        table.insert("modality".into(), self.modality().into());
        table.serialize(serializer)
    }
}

impl Serialize for ModelConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ModelConfig::Vision(v) => v.serialize(serializer),
            ModelConfig::Audio(a) => self.with_modality(a, serializer),
            ModelConfig::Text(t) => self.with_modality(t, serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(deserializer)?;
        let modality = match table.remove("modality") {
            None => MODALITIES[0].to_string(),
            Some(toml::Value::String(m)) => m,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "model.modality = {other} must be a string: one of {}",
                    MODALITIES.join(", ")
                )))
            }
        };
        let value = toml::Value::Table(table);
        match modality.as_str() {
            "vision" => value.try_into().map(ModelConfig::Vision),
            "audio" => value.try_into().map(ModelConfig::Audio),
            "text" => value.try_into().map(ModelConfig::Text),
            _ => {
                return Err(D::Error::custom(format!(
                    "unknown model.modality `{modality}`; the modalities are: {}",
                    MODALITIES.join(", ")
                )))
            }
        }
        .map_err(|e: toml::de::Error| D::Error::custom(format!("{modality} model: {e}")))
    }
}

/// The audio model (model::audio): a stack of strided 1-D convs with ReLUs over windows of
/// raw 16 kHz samples, one frame of D channels per hop (the strides' product), the GRU along
/// the frames of each window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    /// L: samples per training window (16 kHz).
    pub window: u32,
    /// H: GRU hidden size.
    pub hidden: u32,
    /// K: number of prediction offsets (frames ahead).
    pub steps: u32,
    /// First frame offset predicted (offsets are prediction_skip .. prediction_skip + K - 1;
    /// 1 in the paper: frames overlap less than patches do).
    pub prediction_skip: u32,
    pub encoder: AudioEncoderConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioEncoderConfig {
    pub convs: Vec<Conv1dConfig>,
    /// Normalise each frame over its D channels with a learnt per-channel scale and shift
    /// (later CPC audio code's channel norm), after the last ReLU.
    pub frame_norm: bool,
}

/// One 1-D conv of the audio encoder, followed by a ReLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv1dConfig {
    pub kernel: u32,
    pub stride: u32,
    /// Zero samples added at each end.
    pub padding: u32,
    /// Output channels.
    pub channels: u32,
}

impl AudioConfig {
    /// The frame offsets predicted: prediction_skip, prediction_skip + 1, ...
    pub fn offsets(&self) -> Vec<u32> {
        offsets(self.prediction_skip, self.steps)
    }

    /// D: the last conv's channels.
    pub fn code_dim(&self) -> u32 {
        self.encoder.convs.last().map_or(1, |c| c.channels)
    }

    /// Every field against its bound, then the planner's checks on the shapes
    /// ([`AudioSpec::validate`]: every conv leaves frames, offsets within the window's
    /// frames, the parameter count).
    pub fn validate(&self) -> Result<()> {
        check_range("model.window", self.window as u64, 1, MAX_WINDOW as u64)?;
        check_range("model.hidden", self.hidden as u64, 1, MAX_HIDDEN as u64)?;
        check_range("model.steps", self.steps as u64, 1, MAX_WINDOW as u64)?;
        check_range(
            "model.prediction_skip",
            self.prediction_skip as u64,
            1,
            MAX_WINDOW as u64,
        )?;
        let convs = &self.encoder.convs;
        if convs.is_empty() || convs.len() > MAX_AUDIO_CONVS {
            return Err(Error::Config(format!(
                "model.encoder.convs has {} convs; an audio encoder needs 1..={MAX_AUDIO_CONVS}",
                convs.len()
            )));
        }
        for (i, c) in convs.iter().enumerate() {
            let field = format!("model.encoder.convs[{i}]");
            let kernel = (c.kernel as u64, MAX_AUDIO_KERNEL as u64);
            check_range(&format!("{field}.kernel"), kernel.0, 1, kernel.1)?;
            let stride = (c.stride as u64, MAX_AUDIO_STRIDE as u64);
            check_range(&format!("{field}.stride"), stride.0, 1, stride.1)?;
            let channels = (c.channels as u64, MAX_CHANNELS as u64);
            check_range(&format!("{field}.channels"), channels.0, 1, channels.1)?;
            if c.padding >= c.kernel {
                return Err(Error::Config(format!(
                    "{field}.padding = {} must be below its kernel, {}",
                    c.padding, c.kernel
                )));
            }
        }
        AudioSpec::from(self).validate()
    }
}

/// The planner's spec of a configured model.
impl From<&ModelConfig> for Spec {
    fn from(m: &ModelConfig) -> Spec {
        match m {
            ModelConfig::Vision(v) => Spec::Vision(ModelSpec::from(v)),
            ModelConfig::Audio(a) => Spec::Audio(AudioSpec::from(a)),
            ModelConfig::Text(t) => Spec::Text(TextSpec::from(t)),
        }
    }
}

impl From<&AudioConfig> for AudioSpec {
    fn from(a: &AudioConfig) -> AudioSpec {
        AudioSpec {
            window: a.window as usize,
            convs: (a.encoder.convs.iter())
                .map(|c| Conv1dSpec {
                    kernel: c.kernel as usize,
                    stride: c.stride as usize,
                    pad: c.padding as usize,
                    channels: c.channels as usize,
                })
                .collect(),
            hidden: a.hidden as usize,
            offsets: a.offsets().into_iter().map(|o| o as usize).collect(),
            frame_norm: a.encoder.frame_norm,
        }
    }
}

/// The text model (model::text): word embeddings, a 1-D conv of odd width along each
/// sentence's words with a ReLU and the mean over its words give one vector of D channels
/// per sentence; the GRU reads a passage's L sentences in order and predicts the sentence
/// vectors prediction_skip.. ahead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// V: rows of the embedding table, PAD and UNK included (a vocabulary built from a
    /// corpus may have fewer words: the rows past it never get a gradient).
    pub vocab_size: u32,
    /// W: positions of a padded sentence; longer sentences keep their first W words.
    pub max_words: u32,
    /// E: channels of a word's embedding.
    pub embedding: u32,
    /// L: consecutive sentences a passage, the GRU's sequence length.
    pub sentences: u32,
    /// H: GRU hidden size.
    pub hidden: u32,
    /// K: number of prediction offsets (sentences ahead).
    pub steps: u32,
    /// First sentence offset predicted (offsets are prediction_skip .. prediction_skip +
    /// K - 1; 1 in the paper: the next sentence).
    pub prediction_skip: u32,
    pub encoder: TextEncoderConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderConfig {
    /// The word conv's width, odd ('same' padding kernel / 2, stride 1).
    pub kernel: u32,
    /// D: the word conv's channels, the sentence vector's size.
    pub channels: u32,
}

impl TextConfig {
    /// The sentence offsets predicted: prediction_skip, prediction_skip + 1, ...
    pub fn offsets(&self) -> Vec<u32> {
        offsets(self.prediction_skip, self.steps)
    }

    /// Every field against its bound, in an order where each check only uses fields
    /// already checked; then the planner's checks ([`TextSpec::validate`]: the parameter
    /// count). Errors name the field.
    pub fn validate(&self) -> Result<()> {
        let u = |v: usize| v as u64;
        check_range(
            "model.vocab_size",
            u(self.vocab_size as usize),
            u(MIN_VOCAB),
            u(MAX_VOCAB),
        )?;
        check_range("model.max_words", self.max_words as u64, 1, u(MAX_WORDS))?;
        check_range(
            "model.embedding",
            self.embedding as u64,
            1,
            MAX_CHANNELS as u64,
        )?;
        check_range(
            "model.sentences",
            self.sentences as u64,
            2,
            u(MAX_SENTENCES),
        )?;
        check_range("model.hidden", self.hidden as u64, 1, MAX_HIDDEN as u64)?;
        let kernel = self.encoder.kernel;
        check_range("model.encoder.kernel", kernel as u64, 1, MAX_KERNEL as u64)?;
        if kernel.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "model.encoder.kernel = {kernel} must be odd (the word conv pads by kernel / 2 \
                 at each end of a sentence)"
            )));
        }
        let channels = self.encoder.channels as u64;
        check_range("model.encoder.channels", channels, 1, MAX_CHANNELS as u64)?;
        check_range("model.steps", self.steps as u64, 1, u(MAX_SENTENCES))?;
        let skip = self.prediction_skip as u64;
        check_range("model.prediction_skip", skip, 1, u(MAX_SENTENCES))?;
        // Both at most MAX_SENTENCES: no overflow.
        let last = skip + self.steps as u64 - 1;
        if last >= self.sentences as u64 {
            return Err(Error::Config(format!(
                "model.prediction_skip = {skip} and model.steps = {}: the last offset, \
                 prediction_skip + steps - 1 = {last}, must be below model.sentences = {} so \
                 that every offset has a sentence to predict",
                self.steps, self.sentences
            )));
        }
        TextSpec::from(self).validate()
    }
}

impl From<&TextConfig> for TextSpec {
    fn from(t: &TextConfig) -> TextSpec {
        TextSpec {
            vocab: t.vocab_size as usize,
            max_words: t.max_words as usize,
            embedding: t.embedding as usize,
            kernel: t.encoder.kernel as usize,
            channels: t.encoder.channels as usize,
            sentences: t.sentences as usize,
            hidden: t.hidden as usize,
            offsets: t.offsets().into_iter().map(|o| o as usize).collect(),
        }
    }
}

/// The vision model: crops of S x S pixels cut into a G x G grid of overlapping patches,
/// each encoded by a ResNet-style stack, the GRU down each column of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
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

pub(crate) fn conv(kernel: u32, channels: u32, stride: u32) -> ConvSpec {
    ConvSpec {
        kernel,
        channels,
        stride,
    }
}

pub(crate) fn stage(stride: u32, channels: u32, blocks: u32, convs_per_block: u32) -> StageSpec {
    StageSpec {
        stride,
        channels,
        blocks,
        convs_per_block,
    }
}

impl VisionConfig {
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
        offsets(self.prediction_skip, self.steps)
    }

    /// FLOPs of one image's forward pass in a batch of `batch`: see
    /// [`crate::model::ModelSpec::forward_flops_per_image`].
    pub fn forward_flops_per_image(&self, batch: u32) -> f64 {
        crate::model::ModelSpec::from(self).forward_flops_per_image(batch as usize)
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
