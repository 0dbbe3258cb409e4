//! The architecture of a CPC model as the planner reads it: geometry, encoder layers, GRU
//! size and prediction offsets, in the planner's units. It is built from the user-facing
//! [`crate::model::VisionConfig`] (presets, TOML) by `From`, or directly in tests.

use crate::error::{Error, Result};
use crate::model::config::VisionConfig;
use crate::model::config::{
    MAX_BLOCK_CONVS, MAX_CHANNELS, MAX_CROP, MAX_GRID, MAX_HIDDEN, MAX_KERNEL, MAX_STAGES,
    MAX_STRIDE,
};
use crate::model::layers::{ConvGeometry, ConvInit, LayerList, Shape};
use crate::model::ParamLayout;
use crate::model::Spec;

/// A 3x3 (or k x k) convolution layer's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub kernel: usize,
    pub out: usize,
    pub stride: usize,
}

/// One residual stage: a downsampling conv, then `blocks` pre-activation residual blocks of
/// `convs_per_block` 3x3 convs at the stage's width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageSpec {
    pub down: ConvSpec,
    pub blocks: usize,
    pub convs_per_block: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// Side of the square crop fed to the model (S).
    pub crop: usize,
    /// Patches per grid row and column (G).
    pub grid: usize,
    /// Largest per-patch jitter offset (P/16 in the paper, 0 = none).
    pub jitter: usize,
    pub stem: ConvSpec,
    pub stages: Vec<StageSpec>,
    /// Group norm with one group after every conv (never batch norm).
    pub layer_norm: bool,
    /// GRU hidden size (H).
    pub hidden: usize,
    /// Row offsets predicted, ascending: 2..=K+1 by default (the adjacent row skipped).
    pub offsets: Vec<usize>,
}

impl ModelSpec {
    /// Patch side P = 2 S / (G + 1).
    pub fn patch(&self) -> usize {
        2 * self.crop / (self.grid + 1)
    }

    /// Patch vector size D: the channels of the encoder's output (the last stage's width).
    pub fn dim(&self) -> usize {
        self.layers().output_shape().c
    }

    pub fn steps(&self) -> usize {
        self.offsets.len()
    }

    /// Multiply-adds counted twice (norms, ReLUs and sums once per element), for one image's
    /// forward pass in a batch of `batch`: the encoder's layers on G*G patches, the GRU at
    /// the G*G positions, and for each offset its predictions and scores against the B*G*G
    /// candidates of the batch ([`Spec::forward_flops_per_example`]).
    pub fn forward_flops_per_image(&self, batch: usize) -> f64 {
        Spec::from(self).forward_flops_per_example(batch)
    }

    /// The encoder, run on every P x P patch: the one place its architecture is spelled out
    /// (see model::layers). A ResNet-v2-style stack: the stem conv, [norm], ReLU; per stage
    /// a downsampling conv, [norm], ReLU, then pre-activation residual blocks
    /// h + f(relu(h)), f = (conv, [norm], relu)* ending in conv, [norm]; a final ReLU. Convs
    /// pad by k / 2; the norms (one-group group norms) are there with `layer_norm`.
    pub fn layers(&self) -> LayerList {
        let p = self.patch();
        let mut list = LayerList::new(Shape { c: 3, h: p, w: p }, ConvInit::Torch);
        let norm = self.layer_norm;
        let conv_norm = |list: &mut LayerList, name: &str, norm_name: &str, x, conv: ConvSpec| {
            let geom = ConvGeometry::square(conv.out, conv.kernel, conv.stride);
            let y = list.conv(name, x, geom);
            if norm {
                list.norm(norm_name, y)
            } else {
                y
            }
        };
        let stem = conv_norm(&mut list, "encoder.stem", "encoder.stem_norm", 0, self.stem);
        let mut a = list.relu(stem);
        for (i, st) in self.stages.iter().enumerate() {
            let name = format!("encoder.stages.{i}");
            let down = conv_norm(
                &mut list,
                &format!("{name}.down"),
                &format!("{name}.down_norm"),
                a,
                st.down,
            );
            a = list.relu(down);
            let block_conv = ConvSpec {
                kernel: 3,
                out: st.down.out,
                stride: 1,
            };
            for j in 0..st.blocks {
                let b = format!("{name}.blocks.{j}");
                let mut t = list.relu(a);
                for l in 0..st.convs_per_block {
                    let (conv, norm) = (format!("{b}.convs.{l}"), format!("{b}.norms.{l}"));
                    t = conv_norm(&mut list, &conv, &norm, t, block_conv);
                    if l + 1 < st.convs_per_block {
                        t = list.relu(t);
                    }
                }
                a = list.add(a, t);
            }
        }
        list.relu(a);
        list
    }

    /// Checks that the spec is a model the planner can build: the same bounds as
    /// [`VisionConfig::validate`] (for specs built directly; a validated configuration's spec
    /// always passes them), checked before any size is computed from them, then what the
    /// shapes give: the encoder must leave a non-empty patch and the parameters, counted from
    /// the shapes, must not exceed MAX_PARAMS ([`ParamLayout::check_size`]).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let range = |what: &str, value: usize, lo: u64, hi: u64| {
            if (lo..=hi).contains(&(value as u64)) {
                Ok(())
            } else {
                bad(format!("{what} = {value} must lie in {lo}..={hi}"))
            }
        };
        range("crop", self.crop, 1, MAX_CROP as u64)?;
        range("grid", self.grid, 2, MAX_GRID as u64)?;
        range("hidden", self.hidden, 1, MAX_HIDDEN as u64)?;
        if self.stages.len() > MAX_STAGES {
            return bad(format!(
                "{} encoder stages; at most {MAX_STAGES}",
                self.stages.len()
            ));
        }
        let convs = std::iter::once(("stem".to_string(), &self.stem)).chain(
            (self.stages.iter().enumerate()).map(|(i, s)| (format!("stage {i} down"), &s.down)),
        );
        for (name, conv) in convs {
            let max = |m: u32| m as u64;
            range(&format!("{name} kernel"), conv.kernel, 1, max(MAX_KERNEL))?;
            range(&format!("{name} channels"), conv.out, 1, max(MAX_CHANNELS))?;
            range(&format!("{name} stride"), conv.stride, 1, max(MAX_STRIDE))?;
            if conv.kernel.is_multiple_of(2) {
                return bad(format!("{name} kernel = {} must be odd", conv.kernel));
            }
        }
        let mut block_convs = 0u64;
        for (i, st) in self.stages.iter().enumerate() {
            range(&format!("stage {i} blocks"), st.blocks, 0, MAX_BLOCK_CONVS)?;
            let convs = st.convs_per_block;
            range(
                &format!("stage {i} convs_per_block"),
                convs,
                0,
                MAX_BLOCK_CONVS,
            )?;
            if st.blocks > 0 && convs == 0 {
                return bad(format!("stage {i}: blocks need at least one conv"));
            }
            block_convs += (st.blocks * convs) as u64;
        }
        if block_convs > MAX_BLOCK_CONVS {
            return bad(format!(
                "{block_convs} residual-block convs; at most {MAX_BLOCK_CONVS}"
            ));
        }
        // The bounds above keep these sums and products far from overflowing.
        if !(2 * self.crop).is_multiple_of(self.grid + 1) || !self.patch().is_multiple_of(2) {
            return bad(format!(
                "crop {} and grid {} give patch 2*{}/({}+1), which must be an even integer",
                self.crop, self.grid, self.crop, self.grid
            ));
        }
        if self.offsets.is_empty() || self.offsets.windows(2).any(|w| w[0] >= w[1]) {
            return bad(format!(
                "prediction offsets {:?} must be ascending and not empty",
                self.offsets
            ));
        }
        if self.offsets[0] == 0 || *self.offsets.last().unwrap() >= self.grid {
            return bad(format!(
                "prediction offsets {:?} must lie in 1..{}",
                self.offsets, self.grid
            ));
        }
        if self.jitter >= self.patch() / 2 {
            return bad(format!(
                "jitter {} must be below half the patch ({})",
                self.jitter,
                self.patch()
            ));
        }
        // Counted from the shapes (no buffer), before anything sized by them is allocated.
        ParamLayout::new(self).check_size()?;
        // Every conv must leave a non-empty activation.
        if self.layers().first_empty().is_some() {
            return bad(format!(
                "the encoder shrinks a {}x{} patch to nothing",
                self.patch(),
                self.patch()
            ));
        }
        Ok(())
    }
}

impl From<&VisionConfig> for ModelSpec {
    fn from(m: &VisionConfig) -> ModelSpec {
        let conv = |kernel: u32, out: u32, stride: u32| ConvSpec {
            kernel: kernel as usize,
            out: out as usize,
            stride: stride as usize,
        };
        ModelSpec {
            crop: m.crop as usize,
            grid: m.grid as usize,
            jitter: m.jitter as usize,
            stem: conv(
                m.encoder.stem.kernel,
                m.encoder.stem.channels,
                m.encoder.stem.stride,
            ),
            stages: m
                .encoder
                .stages
                .iter()
                .map(|s| StageSpec {
                    down: conv(3, s.channels, s.stride),
                    blocks: s.blocks as usize,
                    convs_per_block: s.convs_per_block as usize,
                })
                .collect(),
            layer_norm: m.encoder.layer_norm,
            hidden: m.hidden as usize,
            offsets: m.offsets().into_iter().map(|o| o as usize).collect(),
        }
    }
}
