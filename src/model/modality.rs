//! One CPC model for every modality: the architecture of its encoder (vision's
//! [`ModelSpec`], audio's [`AudioSpec`]) and what the planner (model::cpc), the memory plan
//! (model::memory), the parameter layout (model::params), the CPU reference (cpu::model) and
//! the FLOP count ask of either. What differs between the modalities is answered here: how
//! many encoder items an example is (its G x G patches, or one clip), how the encoder's
//! output becomes the vectors z in the layout of ops::sequences (a mean over each patch, or
//! each clip's T frames), and whether frames are normalised. The GRU, the prediction heads,
//! InfoNCE and Adam are the same code for both.
//!
//! | | vision | audio |
//! |---|---|---|
//! | example's input | crop 3 x S x S | clip 1 x 1 x L |
//! | encoder items | G*G patches 3 x P x P | the clip |
//! | encoder output per item | D x h x w, mean-pooled to one z | D x 1 x T, transposed to T frames |
//! | z rows per example | G*G | T |
//! | sequences per example | G columns of G steps | 1 of T steps |

use crate::error::{Error, Result};
use crate::model::audio::AudioSpec;
use crate::model::layers::{LayerList, Shape};
use crate::model::params::Init;
use crate::model::spec::ModelSpec;
use crate::ops::layer_norm::LayerNorm;
use crate::ops::sequences::Sequences;

/// A CPC model's architecture, of either modality. Every planner takes `impl Into<Spec>`:
/// a `&Spec`, a vision `&ModelSpec` or an audio `&AudioSpec` (borrowed only, so that a
/// caller's spec is never moved into a plan by accident).
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Vision(ModelSpec),
    Audio(AudioSpec),
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
        }
    }

    /// Encoder items per example: an image's G*G patches, or the one clip.
    pub fn items(&self) -> usize {
        match self {
            Spec::Vision(v) => v.grid * v.grid,
            Spec::Audio(_) => 1,
        }
    }

    /// One example's input as the host writes it: a crop 3 x S x S, or a clip 1 x 1 x L.
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
        }
    }

    /// The layout of z and c [rows, .] for `batch` examples: B images of G rows by G
    /// columns (the GRU down each column), or B clips of T frames.
    pub fn sequences(&self, batch: usize) -> Sequences {
        match self {
            Spec::Vision(v) => Sequences::grid(batch, v.grid),
            Spec::Audio(a) => Sequences::frames(batch, a.frames()),
        }
    }

    /// Rows of z per example, its positions: G*G patches, or T frames.
    pub fn positions(&self) -> usize {
        self.sequences(1).rows()
    }

    /// Size D of each vector z.
    pub fn dim(&self) -> usize {
        match self {
            Spec::Vision(v) => v.dim(),
            Spec::Audio(a) => a.dim(),
        }
    }

    /// GRU hidden size H.
    pub fn hidden(&self) -> usize {
        match self {
            Spec::Vision(v) => v.hidden,
            Spec::Audio(a) => a.hidden,
        }
    }

    /// The offsets predicted (grid rows, or frames), ascending.
    pub fn offsets(&self) -> &[usize] {
        match self {
            Spec::Vision(v) => &v.offsets,
            Spec::Audio(a) => &a.offsets,
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
            Spec::Vision(_) => None,
            Spec::Audio(a) => a.frame_norm_over(rows),
        }
    }

    /// The encoder's parameters in order: name, shape and initialisation.
    pub fn encoder_params(&self) -> Vec<(String, Vec<usize>, Init)> {
        match self {
            Spec::Vision(v) => v.layers().params(),
            Spec::Audio(a) => a.encoder_params(),
        }
    }

    /// Whether the planner can build the model (see each modality's own check).
    pub fn validate(&self) -> Result<()> {
        match self {
            Spec::Vision(v) => v.validate(),
            Spec::Audio(a) => a.validate(),
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
        }
    }

    /// The vision spec, or an error saying that this model takes audio, not images.
    pub fn vision(&self) -> Result<&ModelSpec> {
        match self {
            Spec::Vision(v) => Ok(v),
            Spec::Audio(a) => Err(Error::Config(format!(
                "an audio model (windows of {} samples) takes clips, not images",
                a.window
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
