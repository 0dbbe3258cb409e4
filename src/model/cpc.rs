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

use crate::error::Result;
use crate::gpu::{Gpu, Launch, Tensor};
use crate::model::layers::{ConvGeometry, LayerList, Op};
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
use crate::ops::sequences::Sequences;

/// Images per encoder slice at `batch`: as many as keep the slice's largest activation
/// within one storage binding and one buffer of a device with `limits`, spread evenly over
/// the fewest slices (at least one image: a model whose one image is too large is refused
/// by memory::check_fits). The patches, z and their gradients stay whole.
pub fn slice_images(limits: &wgpu::Limits, spec: &ModelSpec, batch: usize) -> usize {
    let limit = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    // The largest activation of one patch; the patches themselves are not sliced.
    let list = spec.layers();
    let largest = list.acts[1..].iter().map(|a| a.len()).max().unwrap_or(1);
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

/// One layer as the GPU plan runs it: a layer of the spec's list, where `relu` says that
/// the ReLU after a conv was fused into its store (y is then the ReLU's output), and a
/// norm's saved statistics.
#[derive(Clone, Debug)]
struct PlanLayer {
    op: Op,
    x: usize,
    y: usize,
    relu: bool,
    stats: Option<Tensor>,
}

impl PlanLayer {
    /// The activations it reads.
    fn inputs(&self) -> Vec<usize> {
        match self.op {
            Op::Add { other } => vec![self.x, other],
            _ => vec![self.x],
        }
    }
}

/// The patches' activation index.
const PATCHES: usize = 0;

/// Each ReLU fused into the conv before it, where the conv's output feeds nothing but that
/// ReLU and every reader of the ReLU's output can mask the gradient it hands back by that
/// output (a conv's input gradient, a ReLU's or a residual sum's backward; not a norm's, nor
/// the mean pool, which reads `pooled`): the conv stores relu(conv(x) + b) into the ReLU's
/// output, and the sum before the ReLU is never stored. See [`EncoderGraph`] for the
/// backward this asks for.
fn fuse_relus(layers: Vec<PlanLayer>, pooled: usize) -> Vec<PlanLayer> {
    let readers = |i: usize| -> Vec<usize> {
        (0..layers.len())
            .filter(|&l| layers[l].inputs().contains(&i))
            .collect()
    };
    let maskable = |i: usize| {
        i != pooled
            && readers(i)
                .iter()
                .all(|&l| !matches!(layers[l].op, Op::Norm { .. }))
    };
    let mut fused: Vec<Option<PlanLayer>> = layers.iter().cloned().map(Some).collect();
    for (i, layer) in layers.iter().enumerate() {
        let (Op::Conv { .. }, pre) = (&layer.op, layer.y) else {
            continue;
        };
        let [j] = readers(pre)[..] else { continue };
        if layers[j].op != Op::Relu || pre == pooled || !maskable(layers[j].y) {
            continue;
        }
        if let Some(conv) = &mut fused[i] {
            (conv.y, conv.relu) = (layers[j].y, true);
        }
        fused[j] = None;
    }
    fused.into_iter().flatten().collect()
}

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
    /// The spec's layer list, whose shapes and geometry the plan layers refer to.
    list: LayerList,
    layers: Vec<PlanLayer>,
    /// The n items of the slice.
    n: usize,
    /// [n, C, H, W] per activation the fused layers use (the patches given).
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

    fn producer(&self, i: usize) -> Option<&PlanLayer> {
        self.layers.iter().find(|l| l.y == i)
    }

    /// Whether activation i is a fused conv's output (its gradient: the one before the ReLU).
    fn fused(&self, i: usize) -> bool {
        self.producer(i).is_some_and(|l| l.relu)
    }

    /// Whether activation i is the output of a ReLU folded into the one conv reading it.
    fn folded(&self, i: usize) -> bool {
        let readers: Vec<&PlanLayer> = (self.layers.iter())
            .filter(|l| l.inputs().contains(&i))
            .collect();
        i != self.pooled
            && self
                .producer(i)
                .is_some_and(|l| l.op == Op::Relu && l.x != PATCHES)
            && matches!(
                readers[..],
                [PlanLayer {
                    op: Op::Conv { .. },
                    ..
                }]
            )
    }

    /// The convolution of a conv layer over the slice's items.
    fn conv2d(&self, layer: &PlanLayer, geom: &ConvGeometry) -> Conv2d {
        geom.conv2d(self.n, self.list.acts[layer.x])
    }

    /// The group norm of a norm layer over the slice's items.
    fn layer_norm(&self, layer: &PlanLayer) -> LayerNorm {
        let s = self.list.acts[layer.x];
        LayerNorm {
            n: self.n,
            channels: s.c,
            inner: s.h * s.w,
            eps: 1e-5,
        }
    }
}

/// Plan the encoder for the patches `x0` [n, 3, P, P] of some images: its activations and
/// their gradients, the forward up to z [n, D] and the backward from dz [n, D], whose
/// parameter gradients accumulate into `buffers.grads` (so slices add up). Both walk the
/// spec's layer list (model::layers), the backward in reverse, with the ReLUs fused into
/// the convs around them ([`fuse_relus`], [`EncoderGraph`]).
fn plan_encoder(
    gpu: &Gpu,
    spec: &ModelSpec,
    buffers: &ParamBuffers,
    x0: &Tensor,
    z: &Tensor,
    dz: &Tensor,
) -> Result<EncoderSlice> {
    let n = x0.shape[0];
    let list = spec.layers();
    let last = list.output();
    let mut bytes = 0u64;
    let mut alloc = |label: &str, shape: &[usize]| {
        bytes += 4 * shape.iter().product::<usize>() as u64;
        Tensor::zeros(gpu, label, shape).map(Some)
    };
    let mut layers = Vec::new();
    for l in &list.layers {
        let stats = match l.op {
            Op::Norm { .. } => alloc("norm stats", &[n, 2])?,
            _ => None,
        };
        let (op, x, y) = (l.op.clone(), l.x, l.y);
        layers.push(PlanLayer {
            op,
            x,
            y,
            relu: false,
            stats,
        });
    }
    let layers = fuse_relus(layers, last);
    let mut g = EncoderGraph {
        list,
        layers,
        n,
        acts: Vec::new(),
        grads: Vec::new(),
        pooled: last,
    };
    for (i, s) in g.list.acts.iter().enumerate() {
        let used = (g.layers.iter()).any(|l| l.y == i || l.inputs().contains(&i));
        g.acts.push(match i {
            PATCHES => Some(x0.clone()),
            _ if used => alloc("activation", &[n, s.c, s.h, s.w])?,
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
    let out = g.list.output_shape();
    debug_assert_eq!(out.c, spec.dim());
    let pooled = [n, out.c, out.h * out.w];
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
    for l in &g.layers {
        let (x, y) = (g.act(l.x), g.act(l.y));
        forward.extend(match &l.op {
            Op::Conv { param, geom } => conv2d::forward(
                gpu,
                &g.conv2d(l, geom),
                x,
                &pv(&format!("{param}.weight")),
                &pv(&format!("{param}.bias")),
                y,
                if l.relu {
                    Activation::Relu
                } else {
                    Activation::Identity
                },
            )?,
            Op::Norm { param } => vec![layer_norm::forward(
                gpu,
                &g.layer_norm(l),
                x,
                &pv(&format!("{param}.weight")),
                &pv(&format!("{param}.bias")),
                y,
                l.stats.as_ref().expect("a norm has statistics"),
            )?],
            Op::Relu => vec![elementwise::relu_forward(gpu, x, y)?],
            Op::Add { other } => vec![elementwise::add(gpu, x, g.act(*other), y)?],
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
    for l in g.layers.iter().rev() {
        let (x, y) = (l.x, l.y);
        match &l.op {
            Op::Conv { param, geom } => {
                let conv = g.conv2d(l, geom);
                backward.extend(conv2d::backward_weight(
                    gpu,
                    &conv,
                    g.act(x),
                    g.grad(y),
                    &gv(&format!("{param}.weight")),
                    &gv(&format!("{param}.bias")),
                )?);
                // The patches need no gradient.
                if x == PATCHES {
                    continue;
                }
                // Into the gradient of x, or of the folded ReLU's input; masked by x where a
                // ReLU's backward is folded in.
                let (to, mask) = match g.producer(x) {
                    Some(p) if p.op == Op::Relu && g.folded(x) => (p.x, Some(x)),
                    _ if g.fused(x) => (x, Some(x)),
                    _ => (x, None),
                };
                backward.extend(conv2d::backward_input(
                    gpu,
                    &conv,
                    g.grad(y),
                    &pv(&format!("{param}.weight")),
                    g.grad(to),
                    written[to],
                    mask.map(|m| g.act(m)),
                )?);
                written[to] = true;
            }
            Op::Norm { param } => {
                debug_assert!(!g.fused(x), "no ReLU fuses into a conv a norm reads");
                backward.extend(layer_norm::backward(
                    gpu,
                    &g.layer_norm(l),
                    g.act(x),
                    &pv(&format!("{param}.weight")),
                    l.stats.as_ref().expect("a norm has statistics"),
                    g.grad(y),
                    g.grad(x),
                    &gv(&format!("{param}.weight")),
                    &gv(&format!("{param}.bias")),
                    written[x],
                )?);
                written[x] = true;
            }
            // Folded into the conv reading its output.
            Op::Relu if g.folded(y) => {}
            // Masked by y > 0, which is x > 0: also what a fused x's gradient needs.
            Op::Relu => {
                backward.push(elementwise::relu_backward(
                    gpu,
                    g.act(y),
                    g.grad(y),
                    g.grad(x),
                    written[x],
                )?);
                written[x] = true;
            }
            Op::Add { other } => {
                for i in [x, *other] {
                    let dy = g.grad(y);
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

/// The part every modality shares, planned for the encoder's output z [rows, D] in the
/// layout `seq`: the GRU along each sequence -> c [rows, H]; per prediction offset k the
/// query contexts gathered from c, p_k = cq_k W_k^T, and the InfoNCE loss into `stats`;
/// then the backward of all of it down to dz (which it overwrites; the encoder's backward
/// reads it).
struct ContextAndLoss {
    forward: Vec<Launch>,
    backward: Vec<Launch>,
    c: Tensor,
    stats: Tensor,
    scores: Vec<Tensor>,
    /// Bytes of the buffers allocated here, the ops' own scratch aside.
    bytes: u64,
}

fn plan_context_and_loss(
    gpu: &Gpu,
    buffers: &ParamBuffers,
    seq: Sequences,
    offsets: &[usize],
    z: &Tensor,
    dz: &Tensor,
) -> Result<ContextAndLoss> {
    let pv = |name: &str| buffers.layout.view(&buffers.params, name);
    let gv = |name: &str| buffers.layout.view(&buffers.grads, name);
    let (n, d) = (z.shape[0], z.shape[1]);
    let h = pv("gru.weight_hh_l0").shape[1];
    let mut bytes = 0u64;
    let mut alloc = |label: &str, shape: &[usize]| {
        bytes += 4 * shape.iter().product::<usize>() as u64;
        Tensor::zeros(gpu, label, shape)
    };
    let c = alloc("c", &[n, h])?;
    let gru_shape = Gru {
        seq,
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
    let gru_fwd = gru::forward(gpu, &gru_shape, z, &gru_w, &c)?;

    let inf = Infonce::new(seq, d, offsets.to_vec());
    let (mut cq, mut preds, mut dcq, mut dpreds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
    let inf_fwd = infonce::forward(gpu, &inf, &preds, z, &stats)?;
    let scores = inf_fwd.scores.clone();

    // ---- backward ------------------------------------------------------------------
    // Rows of c past the last query row never receive a gradient: they stay zero.
    let dc = alloc("dc", &[n, h])?;
    let mut backward = infonce::backward(gpu, &inf_fwd, &preds, z, &dpreds, dz, false)?;
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
    let gru_bwd = gru::backward(gpu, &gru_fwd, z, &gru_w, &dc, &gru_dw, dz, true)?;
    backward.extend(gru_bwd.launches);
    // The forward, now that the backward has planned against what it saves.
    let mut forward = gru_fwd.launches;
    forward.extend(head_launches);
    forward.extend(inf_fwd.launches);
    Ok(ContextAndLoss {
        forward,
        backward,
        c,
        stats,
        scores,
        bytes,
    })
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
        let d = spec.dim();
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

        let seq = Sequences::grid(batch, g);
        let tail = plan_context_and_loss(gpu, &buffers, seq, &spec.offsets, &z, &dz)?;
        forward.extend(tail.forward);
        let mut backward = tail.backward;
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
            stats: tail.stats,
            z,
            c: tail.c,
            scores: tail.scores,
            adam,
            patches: geometry,
            patches_launch,
            patches_out,
            forward,
            encoder_launches,
            backward,
            activation_bytes: bytes + tail.bytes + slice_bytes,
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
