//! The audio CPC model's architecture (van den Oord et al. 2018, the speech model): a
//! stack of strided 1-D convolutions with ReLUs over raw 16 kHz samples, one frame of D
//! channels every 160 samples (10 ms), then the GRU context and InfoNCE heads that vision
//! shares (model::cpc's plan_context_and_loss, over ops::sequences with one sequence per
//! clip). The paper's kernels 10, 8, 4, 4, 4 and strides 5, 4, 2, 2, 2 are padded by 3, 2,
//! 1, 1, 1 as in later CPC audio code, so a window of 20480 samples gives exactly
//! 20480 / 160 = 128 frames.
//!
//! A clip is one item of [`Shape`] 1 x 1 x L (a conv with kh = 1 is a 1-D conv along the
//! width); the encoder's output, D x 1 x T per clip, becomes the frames [B*T, D] by
//! ops::transpose. With `frame_norm`, each frame is then normalised over its D channels
//! with a learnt per-channel gain and bias (ops::layer_norm over [B*T, D, 1]), as the
//! ChannelNorm of later CPC audio code (facebookresearch/CPC_audio) does; that code puts
//! one after every conv and divides the variance by D - 1, this model one after the last
//! ReLU, dividing by D as every norm here does.

use crate::error::{Error, Result};
use crate::model::config::{MAX_CHANNELS, MAX_HIDDEN};
use crate::model::layers::{self, ConvGeometry, ConvInit, LayerList, Shape, NORM_EPS};
use crate::model::params::{Init, ParamLayout};
use crate::ops::conv2d;
use crate::ops::layer_norm::LayerNorm;

/// The frame norm's parameters: `{FRAME_NORM}.weight` and `.bias`, [D] each.
pub const FRAME_NORM: &str = "encoder.frame_norm";

/// One 1-D convolution of the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dSpec {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub channels: usize,
}

/// The paper's encoder convs as (kernel, stride, padding): a frame every 5*4*2*2*2 = 160
/// samples, 10 ms at 16 kHz.
pub const PAPER_CONVS: [(usize, usize, usize); 5] =
    [(10, 5, 3), (8, 4, 2), (4, 2, 1), (4, 2, 1), (4, 2, 1)];

#[derive(Clone, Debug, PartialEq)]
pub struct AudioSpec {
    /// Samples per training window, L.
    pub window: usize,
    pub convs: Vec<Conv1dSpec>,
    /// GRU hidden size H.
    pub hidden: usize,
    /// Frame offsets predicted, ascending: 1..=12 in the paper.
    pub offsets: Vec<usize>,
    /// Normalise each frame over its D channels after the encoder's last ReLU (see the
    /// module); the paper has none.
    pub frame_norm: bool,
}

impl AudioSpec {
    /// The paper's speech model: 20480-sample windows, five convs of 512 channels, H = 256,
    /// 12 prediction steps.
    pub fn paper() -> AudioSpec {
        AudioSpec {
            window: 20480,
            convs: (PAPER_CONVS.iter())
                .map(|&(kernel, stride, pad)| Conv1dSpec {
                    kernel,
                    stride,
                    pad,
                    channels: 512,
                })
                .collect(),
            hidden: 256,
            offsets: (1..=12).collect(),
            frame_norm: false,
        }
    }

    /// The encoder: each conv followed by a ReLU, the one place its architecture is spelled
    /// out (model::layers); He-initialised (see [`ConvInit::He`]).
    pub fn layers(&self) -> LayerList {
        let input = Shape {
            c: 1,
            h: 1,
            w: self.window,
        };
        let mut list = LayerList::new(input, ConvInit::He);
        let mut a = 0;
        for (i, c) in self.convs.iter().enumerate() {
            let geom = ConvGeometry {
                cout: c.channels,
                kh: 1,
                kw: c.kernel,
                sh: 1,
                sw: c.stride,
                ph: 0,
                pw: c.pad,
            };
            let y = list.conv(&format!("encoder.convs.{i}"), a, geom);
            a = list.relu(y);
        }
        list
    }

    /// Frames per window, T.
    pub fn frames(&self) -> usize {
        self.layers().output_shape().w
    }

    /// Frame vector size D: the last conv's channels.
    pub fn dim(&self) -> usize {
        self.convs.last().map_or(1, |c| c.channels)
    }

    /// The frame norm of `rows` frames [rows, D], when the spec has one: a layer norm with
    /// each frame a sample of D channels (inner 1), so each frame's own D values give its
    /// mean and variance.
    pub fn frame_norm_over(&self, rows: usize) -> Option<LayerNorm> {
        self.frame_norm.then(|| LayerNorm {
            n: rows,
            channels: self.dim(),
            inner: 1,
            eps: NORM_EPS,
        })
    }

    /// The encoder's parameters: its convs' in list order, then the frame norm's.
    pub fn encoder_params(&self) -> Vec<(String, Vec<usize>, Init)> {
        let mut params = self.layers().params();
        if self.frame_norm {
            params.extend(layers::norm_params(FRAME_NORM, self.dim()));
        }
        params
    }

    /// A model the planner can build: at least one conv, each within the conv kernels'
    /// bounds, a window the kernels' 32-bit sizes hold, widths and a hidden size within the
    /// vision model's bounds, every conv's output non-empty, at most MAX_PARAMS parameters
    /// ([`ParamLayout::check_size`]), and offsets that leave queries in a window. The bounds
    /// come first, so nothing is computed from a size that could overflow.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let range = |what: String, value: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                bad(format!("{what} = {value} must lie in {lo}..={hi}"))
            }
        };
        if self.convs.is_empty() {
            return bad("an audio model needs at least one conv".into());
        }
        range("window".into(), self.window, 1, u32::MAX as usize)?;
        range("hidden".into(), self.hidden, 1, MAX_HIDDEN as usize)?;
        for (i, c) in self.convs.iter().enumerate() {
            let what = |field: &str| format!("conv {i} {field}");
            range(what("kernel"), c.kernel, 1, conv2d::MAX_TAPS)?;
            range(what("stride"), c.stride, 1, conv2d::MAX_STRIDE)?;
            range(what("pad"), c.pad, 0, c.kernel)?;
            range(what("channels"), c.channels, 1, MAX_CHANNELS as usize)?;
        }
        ParamLayout::new(self).check_size()?;
        if self.layers().first_empty().is_some() {
            return bad(format!(
                "the encoder shrinks a window of {} samples to nothing",
                self.window
            ));
        }
        layers::check_offsets(&self.offsets, self.frames(), "the window's frames")
    }
}
