//! The CPC model on the GPU, planned once for a batch size: every activation, gradient and
//! scratch buffer is allocated here and every launch is planned here; a training step only
//! records the launches (see [`CpcModel::record_step`]).
//!
//! Forward, as a flat list:
//!   patches      crops [B, 3, S, S] -> x [N, 3, P, P], N = B G G (with per-patch jitter)
//!   encoder      stem conv, [norm], relu; per stage: down conv, [norm], relu, then residual
//!                blocks h + f(relu(h)), f = (conv, [norm], relu)* ending in conv, [norm];
//!                final relu; mean pool -> z [N, D]; planned in slices of images, each with
//!                its own activations, so that every one binds ([`slice_images`])
//!   gru          down each column of the grid -> c [N, H]
//!   heads        per step k: gather the query rows of c -> cq_k, p_k = cq_k W_k^T [Q_k, D]
//!   infonce      scores p_k z^T, log-softmax, loss and accuracy -> stats [1 + 2K]
//! Backward: the same list in reverse order. Parameter gradients accumulate (+=) into
//! `buffers.grads`, zeroed at the start of each step; activation gradients are overwritten
//! by their first contribution and accumulated by later ones (the residual's two paths).
//! In the encoder a ReLU fuses into the conv before it (the conv stores the ReLU's output)
//! and its backward into the input gradient of the conv after it, where the layer order
//! allows ([`fuse_relus`], [`EncoderGraph`]); the CPU reference stays unfused.

use crate::error::Result;
use crate::gpu::{Gpu, Launch, Tensor};
use crate::model::params::{ParamBuffers, ParamLayout};
use crate::model::spec::ModelSpec;
use crate::ops::adam::{Adam, AdamConfig};
use crate::ops::conv2d::{self, Activation, Conv2d};
use crate::ops::copy_rows;
use crate::ops::elementwise;
use crate::ops::gru::{self, Gru, GruWeights};
use crate::ops::infonce::{self, Infonce};
use crate::ops::layer_norm::{self, LayerNorm};
use crate::ops::matmul::{self, Matmul};
use crate::ops::mean_pool;
use crate::ops::patches::{self, Patches};

/// One encoder layer; activations are indices into `EncoderPlan::shapes` (0: the patches).
#[derive(Clone, Debug)]
enum Layer {
    /// y = conv(x) + bias; with `relu`, the ReLU of that: a ReLU fused into the conv's store
    /// ([`fuse_relus`]), y being the ReLU's output.
    Conv {
        conv: Conv2d,
        param: String,
        x: usize,
        y: usize,
        relu: bool,
    },
    Norm {
        ln: LayerNorm,
        param: String,
        x: usize,
        y: usize,
        stats: Tensor,
    },
    Relu {
        x: usize,
        y: usize,
    },
    Add {
        a: usize,
        b: usize,
        y: usize,
    },
}

impl Layer {
    /// The activations it reads.
    fn inputs(&self) -> Vec<usize> {
        match *self {
            Layer::Conv { x, .. } | Layer::Norm { x, .. } | Layer::Relu { x, .. } => vec![x],
            Layer::Add { a, b, .. } => vec![a, b],
        }
    }

    /// The activation it writes.
    fn output(&self) -> usize {
        match *self {
            Layer::Conv { y, .. }
            | Layer::Norm { y, .. }
            | Layer::Relu { y, .. }
            | Layer::Add { y, .. } => y,
        }
    }
}

/// Builds the encoder's layer list and the shapes of its activations [N, C, side, side].
struct EncoderPlan<'a> {
    gpu: &'a Gpu,
    n: usize,
    layers: Vec<Layer>,
    /// (channels, side) of every activation; 0 is the patches.
    shapes: Vec<(usize, usize)>,
    layer_norm: bool,
}

impl EncoderPlan<'_> {
    fn act(&mut self, c: usize, side: usize) -> usize {
        self.shapes.push((c, side));
        self.shapes.len() - 1
    }

    /// conv, then [norm]; returns the output activation.
    fn conv(
        &mut self,
        param: &str,
        x: usize,
        cout: usize,
        k: usize,
        stride: usize,
        norm: Option<&str>,
    ) -> Result<usize> {
        let (cin, side) = self.shapes[x];
        let conv = Conv2d::square(self.n, cin, side, cout, k, stride);
        let y = self.act(cout, conv.out_hw().0);
        self.layers.push(Layer::Conv {
            conv,
            param: param.into(),
            x,
            y,
            relu: false,
        });
        match (self.layer_norm, norm) {
            (true, Some(name)) => {
                let (c, s) = self.shapes[y];
                let ln = LayerNorm {
                    n: self.n,
                    channels: c,
                    inner: s * s,
                    eps: 1e-5,
                };
                let stats = Tensor::zeros(self.gpu, "norm stats", &[self.n, 2])?;
                let out = self.act(c, s);
                self.layers.push(Layer::Norm {
                    ln,
                    param: name.into(),
                    x: y,
                    y: out,
                    stats,
                });
                Ok(out)
            }
            _ => Ok(y),
        }
    }

    fn relu(&mut self, x: usize) -> usize {
        let (c, s) = self.shapes[x];
        let y = self.act(c, s);
        self.layers.push(Layer::Relu { x, y });
        y
    }

    fn add(&mut self, a: usize, b: usize) -> usize {
        let (c, s) = self.shapes[a];
        let y = self.act(c, s);
        self.layers.push(Layer::Add { a, b, y });
        y
    }
}

/// Each ReLU fused into the conv before it, where the conv's output feeds nothing but that
/// ReLU and every reader of the ReLU's output can mask the gradient it hands back by that
/// output (a conv's input gradient, a ReLU's or a residual sum's backward; not a norm's, nor
/// the mean pool, which reads `pooled`): the conv stores relu(conv(x) + b) into the ReLU's
/// output, and the sum before the ReLU is never stored. See [`plan_encoder`] for the
/// backward this asks for.
fn fuse_relus(layers: Vec<Layer>, pooled: usize) -> Vec<Layer> {
    let readers = |i: usize| -> Vec<usize> {
        (0..layers.len())
            .filter(|&l| layers[l].inputs().contains(&i))
            .collect()
    };
    let maskable = |i: usize| {
        i != pooled
            && readers(i)
                .iter()
                .all(|&l| !matches!(layers[l], Layer::Norm { .. }))
    };
    let mut fused: Vec<Option<Layer>> = layers.iter().cloned().map(Some).collect();
    for (i, layer) in layers.iter().enumerate() {
        let Layer::Conv { y: pre, .. } = *layer else {
            continue;
        };
        let [j] = readers(pre)[..] else { continue };
        let Layer::Relu { y: out, .. } = layers[j] else {
            continue;
        };
        if pre == pooled || !maskable(out) {
            continue;
        }
        if let Some(Layer::Conv { y, relu, .. }) = &mut fused[i] {
            (*y, *relu) = (out, true);
        }
        fused[j] = None;
    }
    fused.into_iter().flatten().collect()
}

/// Images per encoder slice at `batch`: as many as keep the slice's largest activation
/// within one storage binding and one buffer of a device with `limits`, spread evenly over
/// the fewest slices (at least one image: a model whose one image is too large is refused
/// by memory::check_fits). The patches, z and their gradients stay whole.
pub fn slice_images(limits: &wgpu::Limits, spec: &ModelSpec, batch: usize) -> usize {
    let limit = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    // The largest activation of one patch: a conv's output (norms, relus and residual sums
    // have the shape of one); the patches themselves are not sliced.
    let mut side = spec.patch();
    let mut largest = 1;
    for conv in std::iter::once(&spec.stem).chain(spec.stages.iter().map(|s| &s.down)) {
        let shape = Conv2d::square(1, 0, side, conv.out, conv.kernel, conv.stride);
        side = shape.out_hw().0;
        largest = largest.max(conv.out * side * side);
    }
    let per_image = 4 * (spec.grid * spec.grid * largest) as u64;
    let most = ((limit / per_image) as usize).clamp(1, batch.max(1));
    let slices = batch.max(1).div_ceil(most);
    batch.max(1).div_ceil(slices)
}

/// One encoder slice's launches and the bytes of the buffers it allocated.
struct EncoderSlice {
    forward: Vec<Launch>,
    backward: Vec<Launch>,
    bytes: u64,
}

/// The encoder's layer list for `n` patches, as the spec says, before any fusion; returns
/// the plan and the activation the mean pool reads.
fn encoder_layers<'a>(
    gpu: &'a Gpu,
    spec: &ModelSpec,
    n: usize,
) -> Result<(EncoderPlan<'a>, usize)> {
    let mut enc = EncoderPlan {
        gpu,
        n,
        layers: Vec::new(),
        shapes: vec![(3, spec.patch())],
        layer_norm: spec.layer_norm,
    };
    let stem = enc.conv(
        "encoder.stem",
        PATCHES,
        spec.stem.out,
        spec.stem.kernel,
        spec.stem.stride,
        Some("encoder.stem_norm"),
    )?;
    let mut a = enc.relu(stem);
    for (i, st) in spec.stages.iter().enumerate() {
        let name = format!("encoder.stages.{i}");
        let down = enc.conv(
            &format!("{name}.down"),
            a,
            st.down.out,
            st.down.kernel,
            st.down.stride,
            Some(&format!("{name}.down_norm")),
        )?;
        a = enc.relu(down);
        for j in 0..st.blocks {
            let mut t = enc.relu(a);
            for l in 0..st.convs_per_block {
                let b = format!("{name}.blocks.{j}");
                t = enc.conv(
                    &format!("{b}.convs.{l}"),
                    t,
                    st.down.out,
                    3,
                    1,
                    Some(&format!("{b}.norms.{l}")),
                )?;
                if l + 1 < st.convs_per_block {
                    t = enc.relu(t);
                }
            }
            a = enc.add(a, t);
        }
    }
    let last = enc.relu(a);
    Ok((enc, last))
}

/// The patches' activation index.
const PATCHES: usize = 0;

/// The fused layer list with its activations and their gradients, and what the backward
/// asks of each activation.
///
/// The gradient of a fused conv's output is the one before its ReLU, so every layer reading
/// that output masks what it hands back by it: a conv's input gradient by its flag, a ReLU's
/// backward by its own mask (relu(v) > 0 where v > 0), a residual sum's backward as a ReLU
/// backward instead of a copy. A ReLU whose output only a conv reads is folded into that
/// conv's input gradient: masked by the ReLU's output, it goes straight to the gradient of
/// the ReLU's input; the ReLU has no backward launch and its output no gradient buffer.
struct EncoderGraph {
    layers: Vec<Layer>,
    /// [N, C, side, side] per activation the fused layers use (the patches given).
    acts: Vec<Option<Tensor>>,
    /// The gradient of each activation but the patches and the folded ReLUs' outputs.
    grads: Vec<Option<Tensor>>,
    /// The activation the mean pool reads.
    pooled: usize,
}

impl EncoderGraph {
    fn act(&self, i: usize) -> &Tensor {
        self.acts[i]
            .as_ref()
            .expect("an activation the fused layers use")
    }

    fn grad(&self, i: usize) -> &Tensor {
        self.grads[i]
            .as_ref()
            .expect("an activation with a gradient")
    }

    fn producer(&self, i: usize) -> Option<&Layer> {
        self.layers.iter().find(|l| l.output() == i)
    }

    /// Whether activation i is a fused conv's output (its gradient: the one before the ReLU).
    fn fused(&self, i: usize) -> bool {
        matches!(self.producer(i), Some(Layer::Conv { relu: true, .. }))
    }

    /// Whether activation i is the output of a ReLU folded into the one conv reading it.
    fn folded(&self, i: usize) -> bool {
        let readers: Vec<&Layer> = (self.layers.iter())
            .filter(|l| l.inputs().contains(&i))
            .collect();
        i != self.pooled
            && matches!(self.producer(i), Some(&Layer::Relu { x, .. }) if x != PATCHES)
            && matches!(readers[..], [Layer::Conv { .. }])
    }
}

/// Plan the encoder for the patches `x0` [n, 3, P, P] of some images: its activations and
/// their gradients, the forward up to z [n, D] and the backward from dz [n, D], whose
/// parameter gradients accumulate into `buffers.grads` (so slices add up). The ReLUs fuse
/// into the convs around them ([`fuse_relus`], [`EncoderGraph`]).
fn plan_encoder(
    gpu: &Gpu,
    spec: &ModelSpec,
    buffers: &ParamBuffers,
    x0: &Tensor,
    z: &Tensor,
    dz: &Tensor,
) -> Result<EncoderSlice> {
    let n = x0.shape[0];
    let (enc, last) = encoder_layers(gpu, spec, n)?;
    let layers = fuse_relus(enc.layers, last);
    let mut bytes = 0u64;
    let mut alloc = |label: &str, shape: &[usize]| {
        bytes += 4 * shape.iter().product::<usize>() as u64;
        Tensor::zeros(gpu, label, shape).map(Some)
    };
    let mut g = EncoderGraph {
        layers,
        acts: Vec::new(),
        grads: Vec::new(),
        pooled: last,
    };
    for (i, &(c, s)) in enc.shapes.iter().enumerate() {
        let used = (g.layers.iter()).any(|l| l.output() == i || l.inputs().contains(&i));
        g.acts.push(match i {
            PATCHES => Some(x0.clone()),
            _ if used => alloc("activation", &[n, c, s, s])?,
            _ => None,
        });
    }
    for i in 0..g.acts.len() {
        let needed = i != PATCHES && g.acts[i].is_some() && !g.folded(i);
        let shape = g.acts[i].as_ref().map(|t| t.shape.clone());
        g.grads.push(match shape {
            Some(shape) if needed => alloc("activation grad", &shape)?,
            _ => None,
        });
    }
    let (d, side) = enc.shapes[last];
    debug_assert_eq!(d, spec.dim());
    let pooled = [n, d, side * side];
    let mut forward = encoder_forward(gpu, buffers, &g)?;
    forward.push(mean_pool::forward(gpu, g.act(last), pooled, z)?);
    let mut backward = vec![mean_pool::backward(gpu, dz, pooled, g.grad(last), false)?];
    backward.extend(encoder_backward(gpu, buffers, &g)?);
    Ok(EncoderSlice {
        forward,
        backward,
        bytes,
    })
}

/// The encoder's forward: the fused layer list in order.
fn encoder_forward(gpu: &Gpu, buffers: &ParamBuffers, g: &EncoderGraph) -> Result<Vec<Launch>> {
    let pv = |name: &str| buffers.layout.view(&buffers.params, name);
    let mut forward = Vec::new();
    for layer in &g.layers {
        forward.extend(match layer {
            Layer::Conv {
                conv,
                param,
                x,
                y,
                relu,
            } => conv2d::forward(
                gpu,
                conv,
                g.act(*x),
                &pv(&format!("{param}.weight")),
                &pv(&format!("{param}.bias")),
                g.act(*y),
                if *relu {
                    Activation::Relu
                } else {
                    Activation::Identity
                },
            )?,
            Layer::Norm {
                ln,
                param,
                x,
                y,
                stats,
            } => vec![layer_norm::forward(
                gpu,
                ln,
                g.act(*x),
                &pv(&format!("{param}.weight")),
                &pv(&format!("{param}.bias")),
                g.act(*y),
                stats,
            )?],
            Layer::Relu { x, y } => vec![elementwise::relu_forward(gpu, g.act(*x), g.act(*y))?],
            Layer::Add { a, b, y } => {
                vec![elementwise::add(gpu, g.act(*a), g.act(*b), g.act(*y))?]
            }
        });
    }
    Ok(forward)
}

/// The encoder's backward from the gradient of the pooled activation (written first): the
/// fused layer list in reverse order, each activation's gradient overwritten by its first
/// contribution and accumulated by later ones (see [`EncoderGraph`] for the masks).
fn encoder_backward(gpu: &Gpu, buffers: &ParamBuffers, g: &EncoderGraph) -> Result<Vec<Launch>> {
    let pv = |name: &str| buffers.layout.view(&buffers.params, name);
    let gv = |name: &str| buffers.layout.view(&buffers.grads, name);
    let mut written = vec![false; g.acts.len()];
    written[g.pooled] = true;
    let mut backward = Vec::new();
    for layer in g.layers.iter().rev() {
        match layer {
            Layer::Conv {
                conv, param, x, y, ..
            } => {
                backward.extend(conv2d::backward_weight(
                    gpu,
                    conv,
                    g.act(*x),
                    g.grad(*y),
                    &gv(&format!("{param}.weight")),
                    &gv(&format!("{param}.bias")),
                )?);
                if *x == PATCHES {
                    continue;
                }
                // Into the gradient of x, or of the folded ReLU's input; masked by x where a
                // ReLU's backward is folded in.
                let (to, mask) = match g.producer(*x) {
                    Some(&Layer::Relu { x: input, .. }) if g.folded(*x) => (input, Some(*x)),
                    _ if g.fused(*x) => (*x, Some(*x)),
                    _ => (*x, None),
                };
                backward.extend(conv2d::backward_input(
                    gpu,
                    conv,
                    g.grad(*y),
                    &pv(&format!("{param}.weight")),
                    g.grad(to),
                    written[to],
                    mask.map(|m| g.act(m)),
                )?);
                written[to] = true;
            }
            Layer::Norm {
                ln,
                param,
                x,
                y,
                stats,
            } => {
                debug_assert!(!g.fused(*x), "no ReLU fuses into a conv a norm reads");
                backward.extend(layer_norm::backward(
                    gpu,
                    ln,
                    g.act(*x),
                    &pv(&format!("{param}.weight")),
                    stats,
                    g.grad(*y),
                    g.grad(*x),
                    &gv(&format!("{param}.weight")),
                    &gv(&format!("{param}.bias")),
                    written[*x],
                )?);
                written[*x] = true;
            }
            // Folded into the conv reading its output.
            Layer::Relu { y, .. } if g.folded(*y) => {}
            // Masked by y > 0, which is x > 0: also what a fused x's gradient needs.
            Layer::Relu { x, y } => {
                backward.push(elementwise::relu_backward(
                    gpu,
                    g.act(*y),
                    g.grad(*y),
                    g.grad(*x),
                    written[*x],
                )?);
                written[*x] = true;
            }
            Layer::Add { a, b, y } => {
                for i in [*a, *b] {
                    let dy = g.grad(*y);
                    backward.push(if g.fused(i) {
                        elementwise::relu_backward(gpu, g.act(i), dy, g.grad(i), written[i])?
                    } else {
                        elementwise::scale(gpu, dy, g.grad(i), 1.0, written[i])?
                    });
                    written[i] = true;
                }
            }
        }
    }
    Ok(backward)
}

/// The step's host-visible numbers, read without stalling: see [`CpcModel::record_step`].
pub struct CpcModel {
    pub spec: ModelSpec,
    pub batch: usize,
    pub buffers: ParamBuffers,
    /// Input crops [B, 3, S, S], written by the host before each step.
    pub crops: Tensor,
    /// [loss, loss_0, accuracy_0, loss_1, accuracy_1, ...] of the last forward.
    pub stats: Tensor,
    /// Patch vectors [N, D] and contexts [N, H] of the last forward.
    pub z: Tensor,
    pub c: Tensor,
    /// Per prediction offset k, the scores S_k [Q_k, N] of the last forward: row q is query q's
    /// prediction against every patch vector of the batch (ops::infonce).
    pub scores: Vec<Tensor>,
    pub adam: Adam,
    patches: Patches,
    patches_launch: Launch,
    /// The patches [N, 3, P, P] cut from `crops`.
    patches_out: Tensor,
    forward: Vec<Launch>,
    /// The first launches of `forward`: the encoder, up to z.
    encoder_launches: usize,
    backward: Vec<Launch>,
    /// Bytes of activations, gradients and scratch planned for this batch (not parameters).
    pub activation_bytes: u64,
    /// Per encoder slice, the indices of the sizes it allocated among those recorded while
    /// planning ([`Gpu::record_sizes`]; empty ranges when nothing was recorded).
    pub slice_allocs: Vec<std::ops::Range<usize>>,
}

impl CpcModel {
    /// Plan the model for `batch` images with parameters `init` (a flat vector of the
    /// spec's [`ParamLayout`]; an empty `init` leaves the parameters zero, which the memory
    /// estimate uses to plan without a host copy of them).
    pub fn new(
        gpu: &Gpu,
        spec: &ModelSpec,
        batch: usize,
        init: &[f32],
        adam: AdamConfig,
    ) -> Result<CpcModel> {
        CpcModel::sliced(gpu, spec, batch, init, adam, None)
    }

    /// [`CpcModel::new`] with the encoder planned in slices of `slice` images (None: as
    /// [`slice_images`] says for this device). The memory estimate plans one slice; tests
    /// compare slicings.
    pub fn sliced(
        gpu: &Gpu,
        spec: &ModelSpec,
        batch: usize,
        init: &[f32],
        adam: AdamConfig,
        slice: Option<usize>,
    ) -> Result<CpcModel> {
        spec.validate()?;
        let layout = ParamLayout::new(spec);
        let buffers = ParamBuffers::new(gpu, layout, init)?;
        let (g, p, s) = (spec.grid, spec.patch(), spec.crop);
        let n = batch * g * g;
        let (d, h) = (spec.dim(), spec.hidden);
        let pv = |name: &str| buffers.layout.view(&buffers.params, name);
        let gv = |name: &str| buffers.layout.view(&buffers.grads, name);
        let mut bytes = 0u64;
        let mut alloc = |label: &str, shape: &[usize]| {
            bytes += 4 * shape.iter().product::<usize>() as u64;
            Tensor::zeros(gpu, label, shape)
        };

        // ---- forward -------------------------------------------------------------------
        let crops = alloc("crops", &[batch, 3, s, s])?;
        let geometry = Patches {
            batch,
            grid: g,
            patch: p,
            jitter: spec.jitter,
        };
        // The patches, whole: the patches kernel numbers each patch's jitter over the batch.
        let patches_out = alloc("patches", &[n, 3, p, p])?;
        let patches_launch = patches::forward(gpu, &geometry, &crops, &patches_out, 0)?;
        let z = alloc("z", &[n, d])?;
        let c = alloc("c", &[n, h])?;
        let dz = alloc("dz", &[n, d])?;

        // The encoder treats each image apart, so it is planned in slices of images, each
        // with its own activations, small enough to bind (see [`slice_images`]).
        let per = slice
            .filter(|&s| s > 0)
            .unwrap_or_else(|| slice_images(&gpu.limits, spec, batch));
        let (mut forward, mut encoder_backward) = (Vec::new(), Vec::new());
        let (mut slice_bytes, mut slice_allocs) = (0u64, Vec::new());
        for b0 in (0..batch).step_by(per) {
            let (r0, rows) = (b0 * g * g, per.min(batch - b0) * g * g);
            let first = gpu.recorded_count();
            let s = plan_encoder(
                gpu,
                spec,
                &buffers,
                &patches_out.view(r0 * 3 * p * p, &[rows, 3, p, p]),
                &z.view(r0 * d, &[rows, d]),
                &dz.view(r0 * d, &[rows, d]),
            )?;
            slice_allocs.push(first..gpu.recorded_count());
            forward.extend(s.forward);
            encoder_backward.extend(s.backward);
            slice_bytes += s.bytes;
        }
        let encoder_launches = forward.len();

        let gru_shape = Gru {
            batch,
            grid: g,
            input: d,
            hidden: h,
        };
        let gru_w = GruWeights {
            weight_ih: pv("gru.weight_ih_l0"),
            weight_hh: pv("gru.weight_hh_l0"),
            bias_ih: pv("gru.bias_ih_l0"),
            bias_hh: pv("gru.bias_hh_l0"),
        };
        let gru_dw = GruWeights {
            weight_ih: gv("gru.weight_ih_l0"),
            weight_hh: gv("gru.weight_hh_l0"),
            bias_ih: gv("gru.bias_ih_l0"),
            bias_hh: gv("gru.bias_hh_l0"),
        };
        let gru_fwd = gru::forward(gpu, &gru_shape, &z, &gru_w, &c)?;

        let inf = Infonce::new(batch, g, d, spec.offsets.clone());
        let (mut cq, mut preds, mut dcq, mut dpreds) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut head_launches = Vec::new();
        for k in 0..inf.steps() {
            let q = inf.queries(k);
            cq.push(alloc("query contexts", &[q, h])?);
            preds.push(alloc("predictions", &[q, d])?);
            dcq.push(alloc("query context grads", &[q, h])?);
            dpreds.push(alloc("prediction grads", &[q, d])?);
            head_launches.push(copy_rows::gather(
                gpu,
                &inf.context_rows(k, h),
                &c,
                &cq[k],
                false,
            )?);
            let w = pv(&format!("heads.{k}.weight"));
            head_launches.push(matmul::forward(
                gpu,
                &Matmul::new(1, q, d, h).trans_b(true),
                &cq[k],
                &w,
                &preds[k],
            )?);
        }
        let stats = alloc("stats", &[inf.stats_len()])?;
        let inf_fwd = infonce::forward(gpu, &inf, &preds, &z, &stats)?;
        let scores = inf_fwd.scores.clone();

        // ---- backward ------------------------------------------------------------------
        // Rows of c past the last query row never receive a gradient: they stay zero.
        let dc = alloc("dc", &[n, h])?;
        let mut backward = infonce::backward(gpu, &inf_fwd, &preds, &z, &dpreds, &dz, false)?;
        for k in 0..inf.steps() {
            let q = inf.queries(k);
            let w = pv(&format!("heads.{k}.weight"));
            let dw = gv(&format!("heads.{k}.weight"));
            // dW_k += dP_k^T cq_k; dcq_k = dP_k W_k; dc (+)= scatter(dcq_k).
            backward.push(matmul::forward(
                gpu,
                &Matmul::new(1, d, h, q).trans_a(true).accumulate(true),
                &dpreds[k],
                &cq[k],
                &dw,
            )?);
            backward.push(matmul::forward(
                gpu,
                &Matmul::new(1, q, h, d),
                &dpreds[k],
                &w,
                &dcq[k],
            )?);
            backward.push(copy_rows::scatter(
                gpu,
                &inf.context_rows(k, h),
                &dcq[k],
                &dc,
                k > 0,
            )?);
        }
        let gru_bwd = gru::backward(gpu, &gru_fwd, &z, &gru_w, &dc, &gru_dw, &dz, true)?;
        backward.extend(gru_bwd.launches);
        // The forward's tail, now that the backward has planned against what it saves.
        let (mut gru_fwd, mut inf_fwd) = (gru_fwd, inf_fwd);
        forward.append(&mut gru_fwd.launches);
        forward.append(&mut head_launches);
        forward.append(&mut inf_fwd.launches);

        backward.extend(encoder_backward);

        let adam = Adam::new(
            gpu,
            adam,
            &buffers.params,
            &buffers.grads,
            &buffers.m,
            &buffers.v,
        )?;
        Ok(CpcModel {
            spec: spec.clone(),
            batch,
            buffers,
            crops,
            stats,
            z,
            c,
            scores,
            adam,
            patches: geometry,
            patches_launch,
            patches_out,
            forward,
            encoder_launches,
            backward,
            activation_bytes: bytes + slice_bytes,
            slice_allocs,
        })
    }
}

impl CpcModel {
    /// Queue this step's inputs: the crops [B, 3, S, S], Adam's step `t` (1-based) and
    /// learning rate, and the patch-jitter seed. Writes only; allocates nothing.
    pub fn set_inputs(&self, gpu: &Gpu, crops: &[f32], t: u64, lr: f32, seed: u32) -> Result<()> {
        self.crops.write(gpu, crops)?;
        self.adam.set_step(gpu, t, lr);
        let params = patches::params(gpu, &self.patches, &self.crops, &self.patches_out, seed);
        self.patches_launch.set_params(gpu, &params);
        Ok(())
    }

    /// Record the forward pass (patches to loss) into a compute pass.
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.patches_launch.record(pass);
        for l in &self.forward {
            l.record(pass);
        }
    }

    /// Record the encoder alone: patches to z [N, D].
    pub fn record_encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.patches_launch.record(pass);
        for l in &self.forward[..self.encoder_launches] {
            l.record(pass);
        }
    }

    /// Each image's representation: the mean of its G x G patch vectors, [B, D], for crops
    /// [B, 3, S, S] (no jitter). Blocking; for evaluation, not the training loop.
    pub fn features(&self, gpu: &Gpu, crops: &[f32]) -> Result<Vec<f32>> {
        self.crops.write(gpu, crops)?;
        let plain = Patches {
            jitter: 0,
            ..self.patches
        };
        self.patches_launch.set_params(
            gpu,
            &patches::params(gpu, &plain, &self.crops, &self.patches_out, 0),
        );
        self.run(gpu, |m, pass| m.record_encode(pass))?;
        let z = self.z.read(gpu)?;
        let (gg, d) = (self.spec.grid * self.spec.grid, self.spec.dim());
        let mut out = vec![0.0f32; self.batch * d];
        for (b, feat) in out.chunks_mut(d).enumerate() {
            for row in z[b * gg * d..(b + 1) * gg * d].chunks(d) {
                feat.iter_mut()
                    .zip(row)
                    .for_each(|(f, v)| *f += v / gg as f32);
            }
        }
        Ok(out)
    }

    /// Record zeroing of the gradients, forward and backward (no optimiser step).
    pub fn record_gradients(&self, pass: &mut wgpu::ComputePass<'_>) {
        for l in &self.adam.zero_launches {
            l.record(pass);
        }
        self.record_forward(pass);
        for l in &self.backward {
            l.record(pass);
        }
    }

    /// Record one whole training step: zero gradients, forward, backward, gradient norm and
    /// Adam. One compute pass; wgpu orders the dispatches.
    pub fn record_step(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.record_gradients(pass);
        for l in self.adam.launches() {
            l.record(pass);
        }
    }

    /// Every launch of a step in order, with names, for profiling.
    pub fn step_launches(&self) -> Vec<&Launch> {
        let mut v: Vec<&Launch> = self.adam.zero_launches.iter().collect();
        v.push(&self.patches_launch);
        v.extend(self.forward.iter());
        v.extend(self.backward.iter());
        v.extend(self.adam.launches());
        v
    }

    /// Submit `record` in one pass and wait. For tests, debugging and evaluation.
    pub fn run(
        &self,
        gpu: &Gpu,
        record: impl FnOnce(&Self, &mut wgpu::ComputePass<'_>),
    ) -> Result<()> {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            record(self, &mut pass);
        }
        gpu.queue.submit([enc.finish()]);
        gpu.sync("cpc step")
    }

    /// The loss and accuracies of the last forward (blocking readback).
    pub fn read_stats(&self, gpu: &Gpu) -> Result<infonce::InfonceStats> {
        Ok(infonce::InfonceStats::from_slice(&self.stats.read(gpu)?))
    }
}
