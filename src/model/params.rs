//! The model's parameters: one flat f32 buffer with named views, under PyTorch's names and
//! layouts, so a checkpoint maps onto an equivalent torch module and back:
//!
//! | name | shape |
//! |---|---|
//! | encoder.stem.weight / .bias | [C0, 3, k, k] / [C0] |
//! | encoder.stem_norm.weight / .bias (layer_norm only) | [C0] |
//! | encoder.stages.{i}.down.weight / .bias | [Ci, Ci-1, 3, 3] / [Ci] |
//! | encoder.stages.{i}.down_norm.weight / .bias | [Ci] |
//! | encoder.stages.{i}.blocks.{j}.convs.{l}.weight / .bias | [Ci, Ci, 3, 3] / [Ci] |
//! | encoder.stages.{i}.blocks.{j}.norms.{l}.weight / .bias | [Ci] |
//! | gru.weight_ih_l0, gru.weight_hh_l0 | [3H, D], [3H, H] (gates r, z, n) |
//! | gru.bias_ih_l0, gru.bias_hh_l0 | [3H] |
//! | heads.{k}.weight | [D, H] (torch.nn.Linear(H, D, bias=False)) |
//!
//! A text model's encoder has `encoder.embedding.weight` [V, E] (torch.nn.Embedding) and
//! `encoder.conv.weight` / `.bias` [D, E, 1, K] / [D] (model::text).
//!
//! An audio model's encoder has `encoder.convs.{i}.weight` / `.bias` [C, Cin, 1, k] / [C]
//! and, with its frame norm, `encoder.frame_norm.weight` / `.bias` [D] (model::audio).
//!
//! Views start at multiples of 64 elements (256 bytes), which satisfies every adapter's
//! storage-offset alignment; the padding between them stays zero.

use rand::{Rng, SeedableRng};

use crate::error::Error;
use crate::gpu::{Gpu, Tensor};
use crate::model::config::MAX_PARAMS;
use crate::model::modality::Spec;
use crate::Result;

/// How a tensor is initialised: PyTorch's defaults for the module that owns it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(-bound, bound).
    Uniform(f32),
    Ones,
    Zeros,
    /// An embedding table [V, E] as torch.nn.Embedding(padding_idx = pad) initialises it:
    /// N(0, std^2) (Box-Muller from the uniform stream), the padding row zero.
    Embedding {
        std: f32,
        pad: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamView {
    pub name: String,
    pub shape: Vec<usize>,
    /// First element in the flat buffer.
    pub offset: usize,
    pub init: Init,
}

impl ParamView {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The names, shapes and offsets of every parameter of a spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamLayout {
    pub views: Vec<ParamView>,
    /// Elements of the flat buffer, padding included.
    pub total: usize,
}

const ALIGN: usize = 64;

impl ParamLayout {
    /// The encoder's parameters in the order of its layer list (then the audio frame norm's,
    /// where there is one), then the GRU's (hidden size H) and the prediction heads', D being
    /// the encoder's output channels. Any modality's spec, or a vision [`ModelSpec`] as it is.
    ///
    /// [`ModelSpec`]: crate::model::ModelSpec
    pub fn new(spec: impl Into<Spec>) -> ParamLayout {
        let spec = spec.into();
        let mut l = ParamLayout {
            views: Vec::new(),
            total: 0,
        };
        for (name, shape, init) in spec.encoder_params() {
            l.push(&name, &shape, init);
        }
        let (d, h) = (spec.dim(), spec.hidden());
        let bound = 1.0 / (h as f32).sqrt();
        l.push("gru.weight_ih_l0", &[3 * h, d], Init::Uniform(bound));
        l.push("gru.weight_hh_l0", &[3 * h, h], Init::Uniform(bound));
        l.push("gru.bias_ih_l0", &[3 * h], Init::Uniform(bound));
        l.push("gru.bias_hh_l0", &[3 * h], Init::Uniform(bound));
        for k in 0..spec.steps() {
            l.push(&format!("heads.{k}.weight"), &[d, h], Init::Uniform(bound));
        }
        l
    }

    /// The flat buffer must hold at most [`MAX_PARAMS`] floats, padding included: checked
    /// from the shapes, before anything sized by them is allocated.
    pub fn check_size(&self) -> Result<()> {
        if self.total as u64 <= MAX_PARAMS {
            return Ok(());
        }
        Err(Error::Config(format!(
            "the model has {} parameters, a flat buffer of {} floats with its alignment \
             padding ({:.1} GiB; the gradients and both Adam moments are as large again); \
             at most {MAX_PARAMS} floats (2^31): narrow the widest convs or the GRU",
            self.count(),
            self.total,
            4.0 * self.total as f64 / (1u64 << 30) as f64
        )))
    }

    fn push(&mut self, name: &str, shape: &[usize], init: Init) {
        // Saturating: a spec is checked against the bounds before its layout is built (see
        // ModelSpec::validate, which compares `total` with MAX_PARAMS), but an unchecked one
        // must still give a huge total rather than wrap to a small one.
        let offset = self
            .total
            .checked_next_multiple_of(ALIGN)
            .unwrap_or(usize::MAX);
        let len = shape.iter().fold(1usize, |n, &d| n.saturating_mul(d));
        self.views.push(ParamView {
            name: name.into(),
            shape: shape.to_vec(),
            offset,
            init,
        });
        self.total = offset.saturating_add(len);
    }

    pub fn get(&self, name: &str) -> Option<&ParamView> {
        self.views.iter().find(|v| v.name == name)
    }

    /// Number of parameters, padding excluded.
    pub fn count(&self) -> usize {
        self.views.iter().map(|v| v.len()).sum()
    }

    /// A fresh initialisation of the flat buffer from `seed`.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut flat = vec![0.0; self.total];
        for v in &self.views {
            let dst = &mut flat[v.offset..v.offset + v.len()];
            match v.init {
                Init::Uniform(b) => dst.iter_mut().for_each(|x| *x = rng.random_range(-b..b)),
                Init::Ones => dst.fill(1.0),
                Init::Zeros => dst.fill(0.0),
                Init::Embedding { std, pad } => {
                    dst.iter_mut().for_each(|x| *x = std * normal(&mut rng));
                    let e = v.shape[1];
                    dst[pad * e..(pad + 1) * e].fill(0.0);
                }
            }
        }
        flat
    }

    /// The view of parameter `name` inside a flat tensor laid out by this layout.
    pub fn view(&self, flat: &Tensor, name: &str) -> Tensor {
        let v = self
            .get(name)
            .unwrap_or_else(|| panic!("no parameter named {name}"));
        flat.view(v.offset, &v.shape)
    }

    /// The slice of parameter `name` in a flat host vector.
    pub fn slice<'a>(&self, flat: &'a [f32], name: &str) -> &'a [f32] {
        let v = self
            .get(name)
            .unwrap_or_else(|| panic!("no parameter named {name}"));
        &flat[v.offset..v.offset + v.len()]
    }
}

/// One N(0, 1) draw by Box-Muller from two uniforms (1 - u keeps the logarithm finite).
fn normal(rng: &mut impl Rng) -> f32 {
    let (u, v): (f64, f64) = (rng.random(), rng.random());
    ((-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

/// Parameters, gradients and both Adam moments: four flat buffers of the same layout.
pub struct ParamBuffers {
    pub layout: ParamLayout,
    pub params: Tensor,
    pub grads: Tensor,
    pub m: Tensor,
    pub v: Tensor,
}

impl ParamBuffers {
    /// The four flat buffers. A memory plan counts them apart from the rest (see
    /// model::memory): they may exceed the binding limit, as nothing binds them whole.
    ///
    /// An empty `init` leaves the parameters zero: a memory plan sizes the buffers and needs
    /// no values, so it passes none rather than a host vector of the parameter count. (Every
    /// model has parameters, so an empty slice is never a whole initialisation.)
    pub fn new(gpu: &Gpu, layout: ParamLayout, init: &[f32]) -> Result<ParamBuffers> {
        let n = layout.total;
        gpu.unrecorded(|| {
            Ok(ParamBuffers {
                params: if init.is_empty() {
                    Tensor::zeros(gpu, "params", &[n])?
                } else {
                    Tensor::from_slice(gpu, "params", &[n], init)?
                },
                grads: Tensor::zeros(gpu, "grads", &[n])?,
                m: Tensor::zeros(gpu, "adam m", &[n])?,
                v: Tensor::zeros(gpu, "adam v", &[n])?,
                layout,
            })
        })
    }

    /// The view of parameter `name`.
    pub fn param(&self, name: &str) -> Tensor {
        self.layout.view(&self.params, name)
    }

    /// The view of parameter `name`'s gradient.
    pub fn grad(&self, name: &str) -> Tensor {
        self.layout.view(&self.grads, name)
    }
}
