//! One CPC model for every modality: the architecture of its encoder (vision's
//! [`ModelSpec`], audio's [`AudioSpec`], text's [`TextSpec`]) and what the planner (model::cpc), the memory plan
//! (model::memory), the parameter layout (model::params), the CPU reference (cpu::model) and
//! the FLOP count ask of either. What differs between the modalities is answered here: how
//! many encoder items an example is (its G x G patches, one clip, a passage's L sentences),
//! how the encoder's output becomes the vectors z in the layout of ops::sequences (a mean
//! over each patch, each clip's T frames, a mean over each sentence's words), and whether
//! frames are normalised. The GRU, the prediction heads, InfoNCE and Adam are the same code
//! for all three.
//!
//! | | vision | audio | text |
//! |---|---|---|---|
//! | example's input | crop 3 x S x S (f32) | clip 1 x 1 x L (f32) | passage: L sentences of W token ids (u32) |
//! | encoder items | G*G patches 3 x P x P | the clip | L embedded sentences E x 1 x W |
//! | encoder output per item | D x h x w, mean-pooled to one z | D x 1 x T, transposed to T frames | D x 1 x W, masked mean over the words to one z |
//! | z rows per example | G*G | T | L |
//! | sequences per example | G columns of G steps | 1 of T steps | 1 of L steps |

use crate::error::{Error, Result};
use crate::model::audio::AudioSpec;
use crate::model::layers::{LayerList, Shape};
use crate::model::params::Init;
use crate::model::spec::ModelSpec;
use crate::model::text::TextSpec;
use crate::ops::embedding::PaddedSentences;
use crate::ops::layer_norm::LayerNorm;
use crate::ops::sequences::Sequences;

/// A CPC model's architecture, of any modality. Every planner takes `impl Into<Spec>`:
/// a `&Spec`, a vision `&ModelSpec`, an audio `&AudioSpec` or a text `&TextSpec` (borrowed
/// only, so that a caller's spec is never moved into a plan by accident).
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Vision(ModelSpec),
    Audio(AudioSpec),
    Text(TextSpec),
}

/// A batch of examples as the host holds it: f32 values (crops [B, 3, S, S] or clips
/// [B, L]) for vision and audio, B passages of L sentences in the padded layout for text.
/// What CpcModel::set_inputs and the CPU reference (cpu::model) take, from `&[f32]`,
/// `&Vec<f32>` or `&PaddedSentences`.
#[derive(Clone, Copy, Debug)]
pub enum Examples<'a> {
    Values(&'a [f32]),
    Sentences(&'a PaddedSentences),
}

impl<'a> From<&'a [f32]> for Examples<'a> {
    fn from(x: &'a [f32]) -> Examples<'a> {
        Examples::Values(x)
    }
}

impl<'a> From<&'a Vec<f32>> for Examples<'a> {
    fn from(x: &'a Vec<f32>) -> Examples<'a> {
        Examples::Values(x)
    }
}

impl<'a> From<&'a PaddedSentences> for Examples<'a> {
    fn from(x: &'a PaddedSentences) -> Examples<'a> {
        Examples::Sentences(x)
    }
}

impl From<&TextSpec> for Spec {
    fn from(s: &TextSpec) -> Spec {
        Spec::Text(s.clone())
    }
}

impl From<&ModelSpec> for Spec {
    fn from(s: &ModelSpec) -> Spec {
        Spec::Vision(s.clone())
    }
}

impl From<&AudioSpec> for Spec {
    fn from(s: &AudioSpec) -> Spec {
        Spec::Audio(s.clone())
    }
}

impl From<&Spec> for Spec {
    fn from(s: &Spec) -> Spec {
        s.clone()
    }
}

impl Spec {
    /// The encoder's layer list, which every encoder item runs through (model::layers).
    pub fn layers(&self) -> LayerList {
        match self {
            Spec::Vision(v) => v.layers(),
            Spec::Audio(a) => a.layers(),
            Spec::Text(t) => t.layers(),
        }
    }

    /// Encoder items per example: an image's G*G patches, the one clip, or a passage's L
    /// sentences.
    pub fn items(&self) -> usize {
        match self {
            Spec::Vision(v) => v.grid * v.grid,
            Spec::Audio(_) => 1,
            Spec::Text(t) => t.sentences,
        }
    }

    /// One example's input as the host writes it: a crop 3 x S x S, a clip 1 x 1 x L (f32),
    /// or a passage's token ids 1 x L x W (u32, in a [`PaddedSentences`]: see
    /// [`Examples`]).
    pub fn input_shape(&self) -> Shape {
        match self {
            Spec::Vision(v) => Shape {
                c: 3,
                h: v.crop,
                w: v.crop,
            },
            Spec::Audio(a) => Shape {
                c: 1,
                h: 1,
                w: a.window,
            },
            Spec::Text(t) => Shape {
                c: 1,
                h: t.sentences,
                w: t.max_words,
            },
        }
    }

    /// The layout of z and c [rows, .] for `batch` examples: B images of G rows by G
    /// columns (the GRU down each column), B clips of T frames, or B passages of L
    /// sentences.
    pub fn sequences(&self, batch: usize) -> Sequences {
        match self {
            Spec::Vision(v) => Sequences::grid(batch, v.grid),
            Spec::Audio(a) => Sequences::frames(batch, a.frames()),
            Spec::Text(t) => Sequences::frames(batch, t.sentences),
        }
    }

    /// What one example is called in logs ("images/s"): images, windows (of audio) or
    /// passages (of text).
    pub fn examples_name(&self) -> &'static str {
        match self {
            Spec::Vision(_) => "images",
            Spec::Audio(_) => "windows",
            Spec::Text(_) => "passages",
        }
    }

    /// Rows of z per example, its positions: G*G patches, T frames, or L sentences.
    pub fn positions(&self) -> usize {
        self.sequences(1).rows()
    }

    /// Size D of each vector z.
    pub fn dim(&self) -> usize {
        match self {
            Spec::Vision(v) => v.dim(),
            Spec::Audio(a) => a.dim(),
            Spec::Text(t) => t.dim(),
        }
    }

    /// GRU hidden size H.
    pub fn hidden(&self) -> usize {
        match self {
            Spec::Vision(v) => v.hidden,
            Spec::Audio(a) => a.hidden,
            Spec::Text(t) => t.hidden,
        }
    }

    /// The offsets predicted (grid rows, frames or sentences), ascending.
    pub fn offsets(&self) -> &[usize] {
        match self {
            Spec::Vision(v) => &v.offsets,
            Spec::Audio(a) => &a.offsets,
            Spec::Text(t) => &t.offsets,
        }
    }

    /// Prediction heads K.
    pub fn steps(&self) -> usize {
        self.offsets().len()
    }

    /// The norm of `rows` vectors z [rows, D] between the encoder and the GRU, where the
    /// spec has one (audio's frame norm).
    pub fn frame_norm(&self, rows: usize) -> Option<LayerNorm> {
        match self {
            Spec::Vision(_) | Spec::Text(_) => None,
            Spec::Audio(a) => a.frame_norm_over(rows),
        }
    }

    /// The encoder's parameters in order: name, shape and initialisation.
    pub fn encoder_params(&self) -> Vec<(String, Vec<usize>, Init)> {
        match self {
            Spec::Vision(v) => v.layers().params(),
            Spec::Audio(a) => a.encoder_params(),
            Spec::Text(t) => t.encoder_params(),
        }
    }

    /// Whether the planner can build the model (see each modality's own check).
    pub fn validate(&self) -> Result<()> {
        match self {
            Spec::Vision(v) => v.validate(),
            Spec::Audio(a) => a.validate(),
            Spec::Text(t) => t.validate(),
        }
    }

    /// One line for logs: the input, what the encoder makes of it, H and the offsets.
    pub fn describe(&self) -> String {
        let (d, h, offsets) = (self.dim(), self.hidden(), self.offsets());
        match self {
            Spec::Vision(v) => format!(
                "crop {} -> {}x{} patches of {}, D {d}, H {h}, offsets {offsets:?}",
                v.crop,
                v.grid,
                v.grid,
                v.patch()
            ),
            Spec::Audio(a) => format!(
                "windows of {} samples -> {} frames, D {d}{}, H {h}, offsets {offsets:?}",
                a.window,
                a.frames(),
                if a.frame_norm { " (frame norm)" } else { "" }
            ),
            Spec::Text(t) => format!(
                "passages of {} sentences of up to {} words -> vocabulary {}, embeddings {}, \
                 word conv {} -> D {d}, H {h}, offsets {offsets:?}",
                t.sentences, t.max_words, t.vocab, t.embedding, t.kernel
            ),
        }
    }

    /// The vision spec, or an error saying that this model takes clips or sentences, not
    /// images.
    pub fn vision(&self) -> Result<&ModelSpec> {
        match self {
            Spec::Vision(v) => Ok(v),
            Spec::Audio(a) => Err(Error::Config(format!(
                "an audio model (windows of {} samples) takes clips, not images",
                a.window
            ))),
            Spec::Text(t) => Err(Error::Config(format!(
                "a text model (passages of {} sentences) takes sentences, not images",
                t.sentences
            ))),
        }
    }

    /// The text spec, or an error saying that this model takes images or clips, not
    /// sentences.
    pub fn text(&self) -> Result<&TextSpec> {
        match self {
            Spec::Text(t) => Ok(t),
            _ => Err(Error::Config(format!(
                "this model ({}) takes f32 examples, not sentences",
                self.describe()
            ))),
        }
    }

    /// Multiply-adds counted twice (norms, ReLUs and sums once per element), for one
    /// example's forward pass in a batch of `batch`: the encoder's layers on its items (and
    /// the frame norm), the GRU at its positions (3 gates of input and hidden projections),
    /// and for each offset o its queries' predictions (D x H each) and their scores against
    /// every candidate of the batch (B times the positions, D each). An example of T steps
    /// by W sequences has (T - o) W queries at offset o.
    pub fn forward_flops_per_example(&self, batch: usize) -> f64 {
        let seq = self.sequences(1);
        let (d, h) = (self.dim() as f64, self.hidden() as f64);
        let rows = seq.rows() as f64;
        let mut encoder = self.layers().flops(self.items()) as f64;
        if self.frame_norm(1).is_some() {
            encoder += rows * d;
        }
        let gru = 2.0 * rows * 3.0 * (d * h + h * h);
        let candidates = batch as f64 * rows;
        let predictions: f64 = (self.offsets().iter())
            .map(|&o| {
                let queries = (seq.steps.saturating_sub(o) * seq.width) as f64;
                2.0 * queries * (d * h + candidates * d)
            })
            .sum();
        encoder + gru + predictions
    }
}
