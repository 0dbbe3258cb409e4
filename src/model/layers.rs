//! The encoder as one list of layers, declared once per architecture: every other view of
//! the model walks this list. The parameters and their PyTorch names ([`ParamLayout`]), the
//! GPU plan (model::cpc), the CPU reference model (cpu::model), the FLOP count and the memory
//! plan (model::memory) all derive from it, so a new layer kind or block shape is one change
//! here and in each walker's match, never a second copy of the architecture.
//!
//! A list maps one item (a patch for vision, a clip for audio) of [`Shape`] `input` through
//! activations `acts` (0 is the input) by `layers`, each reading activation `x` (and, for
//! [`Op::Add`], a second one) and writing a new activation `y`; the last activation is the
//! encoder's output. Activations are numbered in the order they are written, so a walk in
//! list order computes every input before it is read.
//!
//! [`ParamLayout`]: crate::model::ParamLayout

use crate::model::params::Init;
use crate::ops::conv2d::Conv2d;

/// The epsilon of every norm of a model (inside the square root), as PyTorch's default.
pub const NORM_EPS: f32 = 1e-5;

/// One item's activation: channels x height x width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    /// Elements of one item, saturating (a list is built from checked bounds, but an
    /// unchecked one must give a huge count, not wrap).
    pub fn len(&self) -> usize {
        self.c.saturating_mul(self.h).saturating_mul(self.w)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A convolution's hyper-parameters: output channels, kernel kh x kw, stride sh x sw, zero
/// padding ph x pw (rows, columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
}

impl ConvGeometry {
    /// The image encoder's convs: k x k at `stride`, padded by k / 2 on every side.
    pub fn square(cout: usize, k: usize, stride: usize) -> ConvGeometry {
        ConvGeometry {
            cout,
            kh: k,
            kw: k,
            sh: stride,
            sw: stride,
            ph: k / 2,
            pw: k / 2,
        }
    }

    /// The geometry for `n` items of shape `x`.
    pub fn conv2d(&self, n: usize, x: Shape) -> Conv2d {
        Conv2d {
            n,
            cin: x.c,
            h: x.h,
            w: x.w,
            cout: self.cout,
            kh: self.kh,
            kw: self.kw,
            sh: self.sh,
            sw: self.sw,
            ph: self.ph,
            pw: self.pw,
        }
    }
}

/// What a layer computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A convolution with bias: parameters `{param}.weight` [Cout, Cin, kh, kw] and
    /// `{param}.bias` [Cout], as torch.nn.Conv2d.
    Conv {
        param: String,
        geom: ConvGeometry,
    },
    /// A group norm with one group over each item (torch.nn.GroupNorm(1, C)): parameters
    /// `{param}.weight` and `{param}.bias` [C].
    Norm {
        param: String,
    },
    Relu,
    /// y = x + acts[other] (a residual connection).
    Add {
        other: usize,
    },
}

/// A norm's parameters over `channels` channels, as PyTorch's norms initialise them: the
/// gain `{param}.weight` ones, the bias `{param}.bias` zeros.
pub fn norm_params(param: &str, channels: usize) -> [(String, Vec<usize>, Init); 2] {
    [
        (format!("{param}.weight"), vec![channels], Init::Ones),
        (format!("{param}.bias"), vec![channels], Init::Zeros),
    ]
}

/// Prediction offsets along a sequence of `steps` steps (`what` names them): ascending, not
/// empty, each in 1..steps, so that every offset has a query.
pub fn check_offsets(offsets: &[usize], steps: usize, what: &str) -> crate::Result<()> {
    let ok = (offsets.first()).is_some_and(|&o| o > 0)
        && offsets.windows(2).all(|w| w[0] < w[1])
        && offsets.last().is_some_and(|&o| o < steps);
    if ok {
        return Ok(());
    }
    Err(crate::error::Error::Config(format!(
        "prediction offsets {offsets:?} must be ascending, not empty, and lie in 1..{steps} \
         ({what})"
    )))
}

/// One layer: `op` from activation `x` into activation `y`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub op: Op,
    pub x: usize,
    pub y: usize,
}

/// How a list's convs are initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvInit {
    /// torch.nn.Conv2d's default, kaiming_uniform(a = sqrt 5): weights and biases alike
    /// U(+-1/sqrt(fan_in)). The vision encoder, as its PyTorch reference runs.
    Torch,
    /// He (Kaiming) uniform for ReLUs, weights U(+-sqrt(6/fan_in)), biases zero: each conv
    /// and ReLU keeps its input's variance. The audio encoder: under Torch's init the raw
    /// waveform's signal shrinks about 2.5x a layer while the biases do not, so five
    /// layers in the frames are nearly constant and pretraining barely moves
    /// (docs/model.md, "Audio").
    He,
}

/// The list, with the shape of every activation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerList {
    /// acts[0] is the input item; acts[layers[i].y] is layer i's output.
    pub acts: Vec<Shape>,
    pub layers: Vec<Layer>,
    pub conv_init: ConvInit,
}

impl LayerList {
    pub fn new(input: Shape, conv_init: ConvInit) -> LayerList {
        LayerList {
            acts: vec![input],
            layers: Vec::new(),
            conv_init,
        }
    }

    /// The encoder's output activation: the last one written.
    pub fn output(&self) -> usize {
        self.acts.len() - 1
    }

    pub fn output_shape(&self) -> Shape {
        self.acts[self.output()]
    }

    fn push(&mut self, op: Op, x: usize, y: Shape) -> usize {
        self.acts.push(y);
        let y = self.acts.len() - 1;
        self.layers.push(Layer { op, x, y });
        y
    }

    /// A convolution of activation `x`; an output too small to exist has side 0 (see
    /// [`Conv2d::out_hw`]), which [`LayerList::first_empty`] reports.
    pub fn conv(&mut self, param: &str, x: usize, geom: ConvGeometry) -> usize {
        let (h, w) = geom.conv2d(1, self.acts[x]).out_hw();
        let param = param.to_string();
        self.push(Op::Conv { param, geom }, x, Shape { c: geom.cout, h, w })
    }

    pub fn norm(&mut self, param: &str, x: usize) -> usize {
        let param = param.to_string();
        self.push(Op::Norm { param }, x, self.acts[x])
    }

    pub fn relu(&mut self, x: usize) -> usize {
        self.push(Op::Relu, x, self.acts[x])
    }

    /// x + other; both of one shape (the builders add only an activation to a function of it).
    pub fn add(&mut self, x: usize, other: usize) -> usize {
        debug_assert_eq!(self.acts[x], self.acts[other], "residual of two shapes");
        self.push(Op::Add { other }, x, self.acts[x])
    }

    /// The first layer whose output is empty (a conv that shrank its input to nothing).
    pub fn first_empty(&self) -> Option<&Layer> {
        self.layers.iter().find(|l| self.acts[l.y].is_empty())
    }

    /// Every parameter in list order: name, shape and PyTorch's initialisation.
    pub fn params(&self) -> Vec<(String, Vec<usize>, Init)> {
        let mut out = Vec::new();
        for l in &self.layers {
            let x = self.acts[l.x];
            match &l.op {
                Op::Conv { param, geom } => {
                    let fan_in = x.c.saturating_mul(geom.kh).saturating_mul(geom.kw) as f32;
                    let (weight, bias) = match self.conv_init {
                        ConvInit::Torch => {
                            let bound = Init::Uniform(1.0 / fan_in.sqrt());
                            (bound, bound)
                        }
                        ConvInit::He => (Init::Uniform((6.0 / fan_in).sqrt()), Init::Zeros),
                    };
                    let shape = vec![geom.cout, x.c, geom.kh, geom.kw];
                    out.push((format!("{param}.weight"), shape, weight));
                    out.push((format!("{param}.bias"), vec![geom.cout], bias));
                }
                Op::Norm { param } => out.extend(norm_params(param, x.c)),
                Op::Relu | Op::Add { .. } => {}
            }
        }
        out
    }

    /// Floating-point operations of the forward over `n` items: multiply-adds of the convs
    /// times two; norms, ReLUs and sums count their elements (a few operations each, which
    /// the convolutions dwarf).
    pub fn flops(&self, n: usize) -> u64 {
        self.layers
            .iter()
            .map(|l| match &l.op {
                Op::Conv { geom, .. } => geom.conv2d(n, self.acts[l.x]).flops(),
                _ => (n * self.acts[l.y].len()) as u64,
            })
            .sum()
    }
}
