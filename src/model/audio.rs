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
//! ops::transpose.

use crate::error::{Error, Result};
use crate::model::layers::{ConvGeometry, LayerList, Shape};

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
    /// Channel-wise normalisation of each frame after the encoder.
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
    /// out (model::layers).
    pub fn layers(&self) -> LayerList {
        let mut list = LayerList::new(Shape {
            c: 1,
            h: 1,
            w: self.window,
        });
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

    /// A model the planner can build: at least one conv, every conv's output non-empty, and
    /// offsets that leave queries in a window.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.convs.is_empty() || self.window == 0 || self.hidden == 0 {
            return bad(format!(
                "an audio model needs a window, convs and a hidden size: {self:?}"
            ));
        }
        if let Some(c) = self.convs.iter().find(|c| c.kernel == 0 || c.stride == 0) {
            return bad(format!("conv {c:?}: kernel and stride must be positive"));
        }
        if self.layers().first_empty().is_some() {
            return bad(format!(
                "the encoder shrinks a window of {} samples to nothing",
                self.window
            ));
        }
        let t = self.frames();
        if self.offsets.is_empty()
            || self.offsets.windows(2).any(|w| w[0] >= w[1])
            || self.offsets[0] == 0
            || *self.offsets.last().unwrap() >= t
        {
            return bad(format!(
                "prediction offsets {:?} must be ascending, not empty, and lie in 1..{t} \
                 (the window's frames)",
                self.offsets
            ));
        }
        Ok(())
    }
}
