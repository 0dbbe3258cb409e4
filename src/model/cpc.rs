//! The CPC model on the GPU, of either modality (model::modality), planned once for a batch
//! size: every activation, gradient and scratch buffer is allocated here and every launch is
//! planned here; a training step only records the launches (see [`CpcModel::record_step`]).
//!
//! Forward, as a flat list:
//!   input        vision: patches, crops [B, 3, S, S] -> x [N, 3, P, P], N = B G G (with
//!                per-patch jitter); audio: each clip [1, 1, L] is an item as it is; text:
//!                the embedding lookup, token ids [N, W] -> x [N, E, 1, W], N = B L
//!   encoder      the spec's layer list (model::layers) on every item: for vision the stem
//!                conv, [norm], relu; per stage: down conv, [norm], relu, then residual
//!                blocks h + f(relu(h)), f = (conv, [norm], relu)* ending in conv, [norm];
//!                final relu; for audio 1-D convs, each with its relu; for text the word
//!                conv 1 x K and its relu. Planned in slices of
//!                examples, each with its own activations, so that every one binds
//!                ([`slice_images`])
//!   readout      vision: mean pool of each patch -> z [N, D]; audio: each clip's D x T
//!                output transposed -> its T frames, z [B T, D]; text: the mean over each
//!                sentence's words (masked by its length) -> z [B L, D]
//!   frame norm   audio with frame_norm only: each frame over its D channels -> z
//!   gru          along each sequence (down each grid column, along each clip) -> c [rows, H]
//!   heads        per step k: gather the query rows of c -> cq_k, p_k = cq_k W_k^T [Q_k, D]
//!   infonce      scores p_k z^T, log-softmax, loss and accuracy -> stats [1 + 2K]
//! Backward: the same list in reverse order, down to the lookup's backward into the
//! embedding table's gradient for text. Parameter gradients accumulate (+=) into
//! `buffers.grads`, zeroed at the start of each step; activation gradients are overwritten
//! by their first contribution and accumulated by later ones (the residual's two paths).

use std::ops::Range;

use crate::data::Input;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Launch, Tensor};
use crate::model::layers::{ConvGeometry, LayerList, Op, Shape, NORM_EPS};
use crate::model::modality::{Examples, Spec};
use crate::model::params::{ParamBuffers, ParamLayout};
use crate::ops::adam::{Adam, AdamConfig};
use crate::ops::conv2d::{self, Activation, Conv2d};
use crate::ops::copy_rows;
use crate::ops::elementwise;
use crate::ops::embedding::{self, Tokens, Uploaded};
use crate::ops::gru::{self, Gru, GruWeights};
use crate::ops::infonce::{self, Infonce};
use crate::ops::layer_norm::{self, LayerNorm};
use crate::ops::masked_mean;
use crate::ops::matmul::{self, Matmul};
use crate::ops::mean_pool;
use crate::ops::patches::{self, Patches};
use crate::ops::sequences::Sequences;
use crate::ops::transpose;

/// Allocates zeroed tensors and counts their bytes.
struct Alloc<'a> {
    gpu: &'a Gpu,
    bytes: u64,
}

impl<'a> Alloc<'a> {
    fn new(gpu: &'a Gpu) -> Alloc<'a> {
        Alloc { gpu, bytes: 0 }
    }

    fn zeros(&mut self, label: &str, shape: &[usize]) -> Result<Tensor> {
        self.bytes += 4 * shape.iter().product::<usize>() as u64;
        Tensor::zeros(self.gpu, label, shape)
    }
}

/// Examples (images or clips) per encoder slice at `batch`: as many as keep the slice's
/// largest activation within one storage binding and one buffer of a device with `limits`,
/// spread evenly over the fewest slices (at least one example: a model whose one example is
/// too large is refused by memory::check_fits). The encoder's input items, z and their
/// gradients stay whole.
pub fn slice_images(limits: &wgpu::Limits, spec: impl Into<Spec>, batch: usize) -> usize {
    let spec = spec.into();
    let limit = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    // The largest activation of one item; the items themselves are not sliced.
    let list = spec.layers();
    let largest = list.acts[1..].iter().map(|a| a.len()).max().unwrap_or(1);
    let per_example = 4 * (spec.items() * largest) as u64;
    let most = ((limit / per_example) as usize).clamp(1, batch.max(1));
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

/// The input items' activation index (the patches, the clips, or the embedded sentences).
const PATCHES: usize = 0;

/// Each ReLU fused into the conv before it, where the conv's output feeds nothing but that
/// ReLU and every reader of the ReLU's output can mask the gradient it hands back by that
/// output (a conv's input gradient, a ReLU's or a residual sum's backward; not a norm's, nor
/// the readout, which reads `pooled`): the conv stores relu(conv(x) + b) into the ReLU's
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
    /// [n, C, H, W] per activation the fused layers use (the input items given).
    acts: Vec<Option<Tensor>>,
    /// The gradient of each activation but the folded ReLUs' outputs and the input items
    /// (which have one for text only: the lookup's backward reads it).
    grads: Vec<Option<Tensor>>,
    /// The activation the readout reads (mean pool or transpose): the encoder's output.
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
            eps: NORM_EPS,
        }
    }
}

/// Text's tensors of an encoder slice beside its items: the gradient of the embedded
/// sentences [n, E, 1, W] (which the lookup's backward reads) and the sentences' lengths
/// [n] (u32, which the masked mean reads); which sentences of the batch they are, and what
/// the batch last uploaded holds (for the masked mean's cost on it).
struct SentenceSlice {
    d_items: Tensor,
    lengths: Tensor,
    sentences: Range<usize>,
    uploaded: Uploaded,
}

/// What the modality does with the encoder's output y [n, D, h, w] of n items (and its
/// gradient dy): vision averages each patch's positions into its row of z [n, D]; audio
/// transposes each clip's [D, T] (h = 1) into its T frames, rows of z [n T, D]; text
/// averages each sentence's positions w < its length (h = 1) into its row of z [n, D].
/// Returns the forward launch and the backward one, which overwrites dy from dz.
fn readout(
    gpu: &Gpu,
    spec: &Spec,
    n: usize,
    out: Shape,
    (y, dy): (&Tensor, &Tensor),
    (z, dz): (&Tensor, &Tensor),
    sentences: Option<&SentenceSlice>,
) -> Result<(Launch, Launch)> {
    let (d, positions) = (out.c, out.h * out.w);
    Ok(match spec {
        Spec::Text(_) => {
            let s = sentences.expect("a text slice has its lengths");
            let dims = [n, d, positions];
            // The slice's words in the batch last uploaded; before any, the worst case.
            let (uploaded, range) = (s.uploaded.clone(), s.sentences.clone());
            let words = move || uploaded.words(range.clone()).unwrap_or(n * positions);
            let words_too = words.clone();
            (
                masked_mean::forward(gpu, y, &s.lengths, dims, z)?
                    .cost_of_inputs(move || masked_mean::forward_cost(dims, words())),
                masked_mean::backward(gpu, dz, &s.lengths, dims, dy, false)?
                    .cost_of_inputs(move || masked_mean::backward_cost(dims, words_too(), false)),
            )
        }
        Spec::Vision(_) => {
            let pooled = [n, d, positions];
            (
                mean_pool::forward(gpu, y, pooled, z)?,
                mean_pool::backward(gpu, dz, pooled, dy, false)?,
            )
        }
        Spec::Audio(_) => (
            transpose::launch(gpu, y, [n, d, positions], z)?,
            transpose::launch(gpu, dz, [n, positions, d], dy)?,
        ),
    })
}

/// Plan the encoder for the input items `x0` [n, C, H, W] of some examples (patches, clips
/// or embedded sentences, the last with their [`SentenceSlice`]): its activations and
/// their gradients (the items' own for text), the forward up to its rows of z and the
/// backward from their gradient dz, whose parameter gradients accumulate into
/// `buffers.grads` (so slices add up). Both walk the spec's layer list (model::layers), the
/// backward in reverse, with the ReLUs fused into the convs around them ([`fuse_relus`],
/// [`EncoderGraph`]); only the [`readout`] after the last layer is the modality's.
fn plan_encoder(
    gpu: &Gpu,
    spec: &Spec,
    buffers: &ParamBuffers,
    x0: &Tensor,
    z: &Tensor,
    dz: &Tensor,
    sentences: Option<&SentenceSlice>,
) -> Result<EncoderSlice> {
    let n = x0.shape[0];
    let list = spec.layers();
    let last = list.output();
    let mut mem = Alloc::new(gpu);
    let mut layers = Vec::new();
    for l in &list.layers {
        let stats = match l.op {
            Op::Norm { .. } => Some(mem.zeros("norm stats", &[n, 2])?),
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
            _ if used => Some(mem.zeros("activation", &[n, s.c, s.h, s.w])?),
            _ => None,
        });
    }
    g.grads.push(sentences.map(|s| s.d_items.clone()));
    for i in 1..g.acts.len() {
        let needed = g.acts[i].is_some() && !g.folded(i);
        let shape = g.acts[i].as_ref().map(|t| t.shape.clone());
        g.grads.push(match shape {
            Some(shape) if needed => Some(mem.zeros("activation grad", &shape)?),
            _ => None,
        });
    }
    let out = g.list.output_shape();
    debug_assert_eq!(out.c, spec.dim());
    let mut forward = encoder_forward(gpu, buffers, &g)?;
    let ends = (g.act(last), g.grad(last));
    let (read, unread) = readout(gpu, spec, n, out, ends, (z, dz), sentences)?;
    forward.push(read);
    let mut backward = vec![unread];
    backward.extend(encoder_backward(gpu, buffers, &g)?);
    Ok(EncoderSlice {
        forward,
        backward,
        bytes: mem.bytes,
    })
}

/// The encoder planned in slices of `per` examples of the batch (see [`slice_images`]), each
/// with its own activations: `items` [B * items, C, H, W] in, its rows of `z` [rows, D] out
/// (and back from `dz`; for text also into the items' gradient, `sentences` holding it and
/// the lengths for the whole batch).
struct EncoderSlices {
    forward: Vec<Launch>,
    backward: Vec<Launch>,
    bytes: u64,
    /// Per slice, the indices of the sizes it allocated among those recorded while planning
    /// ([`Gpu::record_sizes`]; empty ranges when nothing was recorded).
    allocs: Vec<Range<usize>>,
}

#[allow(clippy::too_many_arguments)]
fn plan_encoder_slices(
    gpu: &Gpu,
    spec: &Spec,
    buffers: &ParamBuffers,
    items: &Tensor,
    z: &Tensor,
    dz: &Tensor,
    batch: usize,
    per: usize,
    sentences: Option<&SentenceSlice>,
) -> Result<EncoderSlices> {
    let (k, item) = (spec.items(), spec.layers().acts[PATCHES]);
    let (rows, d) = (spec.positions(), spec.dim());
    let mut out = EncoderSlices {
        forward: Vec::new(),
        backward: Vec::new(),
        bytes: 0,
        allocs: Vec::new(),
    };
    for b0 in (0..batch).step_by(per) {
        let b = per.min(batch - b0);
        let first = gpu.recorded_count();
        let items_of = |t: &Tensor| t.view(b0 * k * item.len(), &[b * k, item.c, item.h, item.w]);
        let slice = sentences.map(|s| SentenceSlice {
            d_items: items_of(&s.d_items),
            lengths: s.lengths.view(b0 * k, &[b * k]),
            sentences: b0 * k..(b0 + b) * k,
            uploaded: s.uploaded.clone(),
        });
        let s = plan_encoder(
            gpu,
            spec,
            buffers,
            &items_of(items),
            &z.view(b0 * rows * d, &[b * rows, d]),
            &dz.view(b0 * rows * d, &[b * rows, d]),
            slice.as_ref(),
        )?;
        out.allocs.push(first..gpu.recorded_count());
        out.forward.extend(s.forward);
        out.backward.extend(s.backward);
        out.bytes += s.bytes;
    }
    Ok(out)
}

/// The encoder's forward: the fused layer list in order.
fn encoder_forward(gpu: &Gpu, buffers: &ParamBuffers, g: &EncoderGraph) -> Result<Vec<Launch>> {
    let pv = |name: &str| buffers.param(name);
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

/// The encoder's backward from the gradient of its output (written first, by the readout's
/// backward): the fused layer list in reverse order, each activation's gradient overwritten
/// by its first contribution and accumulated by later ones (see [`EncoderGraph`] for the
/// masks).
fn encoder_backward(gpu: &Gpu, buffers: &ParamBuffers, g: &EncoderGraph) -> Result<Vec<Launch>> {
    let (pv, gv) = (
        |name: &str| buffers.param(name),
        |name: &str| buffers.grad(name),
    );
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
                // The input items need no gradient, but for text (the lookup's backward).
                if x == PATCHES && g.grads[PATCHES].is_none() {
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
    /// The GRU's launches, then the heads' and the loss's.
    forward: Vec<Launch>,
    /// How many of `forward` are the GRU's.
    gru_launches: usize,
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
    let (pv, gv) = (
        |name: &str| buffers.param(name),
        |name: &str| buffers.grad(name),
    );
    let (n, d) = (z.shape[0], z.shape[1]);
    let h = pv("gru.weight_hh_l0").shape[1];
    let mut mem = Alloc::new(gpu);
    let c = mem.zeros("c", &[n, h])?;
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
        cq.push(mem.zeros("query contexts", &[q, h])?);
        preds.push(mem.zeros("predictions", &[q, d])?);
        dcq.push(mem.zeros("query context grads", &[q, h])?);
        dpreds.push(mem.zeros("prediction grads", &[q, d])?);
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
    let stats = mem.zeros("stats", &[inf.stats_len()])?;
    let inf_fwd = infonce::forward(gpu, &inf, &preds, z, &stats)?;
    let scores = inf_fwd.scores.clone();

    // ---- backward ------------------------------------------------------------------
    // Rows of c past the last query row never receive a gradient: they stay zero.
    let dc = mem.zeros("dc", &[n, h])?;
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
    let gru_launches = forward.len();
    forward.extend(head_launches);
    forward.extend(inf_fwd.launches);
    Ok(ContextAndLoss {
        forward,
        gru_launches,
        backward,
        c,
        stats,
        scores,
        bytes: mem.bytes,
    })
}

/// Audio's frame norm between the readout and the GRU: the readout's `frames` [rows, D] ->
/// z, each frame over its D channels, and back from dz into `dframes` (overwritten); the
/// gain's and bias's gradients accumulate.
struct FrameNorm {
    frames: Tensor,
    dframes: Tensor,
    forward: Launch,
    backward: Vec<Launch>,
}

fn plan_frame_norm(
    gpu: &Gpu,
    ln: &LayerNorm,
    buffers: &ParamBuffers,
    (z, dz): (&Tensor, &Tensor),
    mem: &mut Alloc,
) -> Result<FrameNorm> {
    use crate::model::audio::FRAME_NORM;
    let frames = mem.zeros("frames", &z.shape)?;
    let dframes = mem.zeros("frame grads", &z.shape)?;
    let stats = mem.zeros("frame norm stats", &[ln.n, 2])?;
    let (weight, bias) = (format!("{FRAME_NORM}.weight"), format!("{FRAME_NORM}.bias"));
    let gamma = buffers.param(&weight);
    let forward = layer_norm::forward(gpu, ln, &frames, &gamma, &buffers.param(&bias), z, &stats)?;
    let backward = layer_norm::backward(
        gpu,
        ln,
        &frames,
        &gamma,
        &stats,
        dz,
        &dframes,
        &buffers.grad(&weight),
        &buffers.grad(&bias),
        false,
    )?;
    Ok(FrameNorm {
        frames,
        dframes,
        forward,
        backward,
    })
}

/// Vision's input: the patches kernel cuts each crop into its G x G patches [N, 3, P, P],
/// the encoder's items, with the step's jitter. (Audio has none: each clip [1, 1, L] is an
/// item as it is.)
struct PatchInput {
    geometry: Patches,
    launch: Launch,
    patches: Tensor,
}

impl PatchInput {
    /// The patches kernel and its output (allocated by `mem`) for a vision spec.
    fn plan(
        gpu: &Gpu,
        spec: &Spec,
        batch: usize,
        crops: &Tensor,
        mem: &mut Alloc,
    ) -> Result<Option<PatchInput>> {
        let Spec::Vision(v) = spec else {
            return Ok(None);
        };
        let geometry = Patches {
            batch,
            grid: v.grid,
            patch: v.patch(),
            jitter: v.jitter,
        };
        // The patches, whole: the patches kernel numbers each patch's jitter over the batch.
        let p = geometry.patch;
        let patches = mem.zeros("patches", &[batch * v.grid * v.grid, 3, p, p])?;
        let launch = patches::forward(gpu, &geometry, crops, &patches, 0)?;
        Ok(Some(PatchInput {
            geometry,
            launch,
            patches,
        }))
    }

    /// The jitter of the next patches: from `seed`, or none (evaluation).
    fn set_jitter(&self, gpu: &Gpu, crops: &Tensor, seed: Option<u32>) {
        let geometry = Patches {
            jitter: if seed.is_some() {
                self.geometry.jitter
            } else {
                0
            },
            ..self.geometry
        };
        let params = patches::params(gpu, &geometry, crops, &self.patches, seed.unwrap_or(0));
        self.launch.set_params(gpu, &params);
    }
}

/// Text's input: the batch's tokens (ops::embedding's padded layout, rewritten by each
/// upload) and the embedded sentences [N, E, 1, W], the encoder's items.
struct TextInput {
    tokens: Tokens,
    /// The embedded sentences' gradient (written by the word conv's backward) and the
    /// lengths, whole: each encoder slice views its part.
    sentences: SentenceSlice,
    items: Tensor,
}

impl TextInput {
    /// The tokens of `batch` passages for a text spec, with the lookup into the items and
    /// its backward from their gradient into the table's.
    fn plan(
        gpu: &Gpu,
        spec: &Spec,
        batch: usize,
        buffers: &ParamBuffers,
        mem: &mut Alloc,
    ) -> Result<Option<(TextInput, [Launch; 2])>> {
        let Spec::Text(t) = spec else {
            return Ok(None);
        };
        use crate::model::text::EMBEDDING;
        let tokens = Tokens::new(gpu, t.embedding(batch * t.sentences))?;
        mem.bytes += 4 * [&tokens.ids, &tokens.lengths, &tokens.index]
            .iter()
            .map(|x| x.len() as u64)
            .sum::<u64>();
        let shape = tokens.shape.out_shape();
        let items = mem.zeros("embedded sentences", &shape)?;
        let d_items = mem.zeros("embedded sentence grads", &shape)?;
        let table = format!("{EMBEDDING}.weight");
        let forward = embedding::forward(gpu, &tokens, &buffers.param(&table), &items)?;
        let backward = embedding::backward(gpu, &tokens, &d_items, &buffers.grad(&table))?;
        let input = TextInput {
            sentences: SentenceSlice {
                d_items,
                lengths: tokens.lengths.clone(),
                sentences: 0..batch * t.sentences,
                uploaded: tokens.uploaded.clone(),
            },
            tokens,
            items,
        };
        Ok(Some((input, [forward, backward])))
    }
}

/// The step's host-visible numbers, read without stalling: see [`CpcModel::record_step`].
pub struct CpcModel {
    pub spec: Spec,
    pub batch: usize,
    pub buffers: ParamBuffers,
    /// The f32 inputs, written by the host before each step: crops [B, 3, S, S] or clips
    /// [B, 1, 1, L] (one example of `spec.input_shape()` each); None for text, whose
    /// tokens [`CpcModel::set_inputs`] uploads into its own buffers.
    pub inputs: Option<Tensor>,
    /// [loss, loss_0, accuracy_0, loss_1, accuracy_1, ...] of the last forward.
    pub stats: Tensor,
    /// The vectors z [rows, D] (patch vectors, or frames after the frame norm) and the
    /// contexts c [rows, H] of the last forward, in the layout of `spec.sequences(batch)`.
    pub z: Tensor,
    pub c: Tensor,
    /// Per prediction offset k, the scores S_k [Q_k, rows] of the last forward: row q is
    /// query q's prediction against every vector z of the batch (ops::infonce).
    pub scores: Vec<Tensor>,
    pub adam: Adam,
    /// The patches of the crops (vision); None for audio, whose clips are the items.
    patches: Option<PatchInput>,
    /// The tokens and the lookup (text).
    text: Option<TextInput>,
    forward: Vec<Launch>,
    /// The first launches of `forward`: the encoder, up to z ...
    encoder_launches: usize,
    /// ... and then the GRU, up to c.
    context_launches: usize,
    backward: Vec<Launch>,
    /// Bytes of activations, gradients and scratch planned for this batch (not parameters).
    pub activation_bytes: u64,
    /// Per encoder slice, the indices of the sizes it allocated among those recorded while
    /// planning ([`Gpu::record_sizes`]; empty ranges when nothing was recorded).
    pub slice_allocs: Vec<Range<usize>>,
}

/// Each example's mean vectors over its positions: of z [B, D] and of c [B, H].
#[derive(Clone, Debug, PartialEq)]
pub struct Pooled {
    pub z: Vec<f32>,
    pub c: Vec<f32>,
}

impl CpcModel {
    /// Plan the model for `batch` examples with parameters `init` (a flat vector of the
    /// spec's [`ParamLayout`]; an empty `init` leaves the parameters zero, which the memory
    /// estimate uses to plan without a host copy of them). `spec`: a [`Spec`] of either
    /// modality, or a vision `&ModelSpec` or audio `&AudioSpec` as it is.
    ///
    /// [`AudioSpec`]: crate::model::AudioSpec
    pub fn new(
        gpu: &Gpu,
        spec: impl Into<Spec>,
        batch: usize,
        init: &[f32],
        adam: AdamConfig,
    ) -> Result<CpcModel> {
        CpcModel::sliced(gpu, spec, batch, init, adam, None)
    }

    /// [`CpcModel::new`] with the encoder planned in slices of `slice` examples (None: as
    /// [`slice_images`] says for this device). The memory estimate plans one slice; tests
    /// compare slicings. The plan in phases: the inputs and z, the frame norm (audio), the
    /// encoder's slices, the context and loss, Adam; the backward is the reverse.
    pub fn sliced(
        gpu: &Gpu,
        spec: impl Into<Spec>,
        batch: usize,
        init: &[f32],
        adam: AdamConfig,
        slice: Option<usize>,
    ) -> Result<CpcModel> {
        let spec = spec.into();
        spec.validate()?;
        let buffers = ParamBuffers::new(gpu, ParamLayout::new(&spec), init)?;
        // The inputs (f32, or text's tokens), the encoder's items (vision's patches, text's
        // embedded sentences) and z with its gradient.
        let mut mem = Alloc::new(gpu);
        let (text, lookup) = TextInput::plan(gpu, &spec, batch, &buffers, &mut mem)?.unzip();
        let x = spec.input_shape();
        let inputs = match text {
            Some(_) => None,
            None => Some(mem.zeros("inputs", &[batch, x.c, x.h, x.w])?),
        };
        let patches = match &inputs {
            Some(crops) => PatchInput::plan(gpu, &spec, batch, crops, &mut mem)?,
            None => None,
        };
        let seq = spec.sequences(batch);
        let zshape = [seq.rows(), spec.dim()];
        let (z, dz) = (mem.zeros("z", &zshape)?, mem.zeros("dz", &zshape)?);
        let norm = (spec.frame_norm(seq.rows()))
            .map(|ln| plan_frame_norm(gpu, &ln, &buffers, (&z, &dz), &mut mem))
            .transpose()?;
        // The encoder writes z, or the frames that the frame norm reads.
        let (ez, edz) = norm.as_ref().map_or((&z, &dz), |n| (&n.frames, &n.dframes));
        // The encoder, in slices of examples small enough to bind; then the shared tail.
        let per = slice
            .filter(|&s| s > 0)
            .unwrap_or_else(|| slice_images(&gpu.limits, &spec, batch));
        let items = match (&text, &patches, &inputs) {
            (Some(t), _, _) => &t.items,
            (_, Some(p), _) => &p.patches,
            (_, _, Some(x)) => x,
            (None, None, None) => unreachable!("a model without text has f32 inputs"),
        };
        let sentences = text.as_ref().map(|t| &t.sentences);
        let encoder =
            plan_encoder_slices(gpu, &spec, &buffers, items, ez, edz, batch, per, sentences)?;
        let tail = plan_context_and_loss(gpu, &buffers, seq, spec.offsets(), &z, &dz)?;
        let (norm_forward, norm_backward) =
            norm.map_or((None, Vec::new()), |n| (Some(n.forward), n.backward));

        // Forward: the lookup (text), encoder, frame norm, context and loss; backward in
        // reverse.
        let (lookup, unlookup) = lookup.map(|[f, b]| (f, b)).unzip();
        let mut forward: Vec<Launch> = lookup.into_iter().collect();
        forward.extend(encoder.forward);
        forward.extend(norm_forward);
        let encoder_launches = forward.len();
        let context_launches = encoder_launches + tail.gru_launches;
        forward.extend(tail.forward);
        let mut backward = tail.backward;
        backward.extend(norm_backward);
        backward.extend(encoder.backward);
        backward.extend(unlookup);

        let adam = Adam::new(
            gpu,
            adam,
            &buffers.params,
            &buffers.grads,
            &buffers.m,
            &buffers.v,
        )?;
        Ok(CpcModel {
            spec,
            batch,
            buffers,
            inputs,
            stats: tail.stats,
            z,
            c: tail.c,
            scores: tail.scores,
            adam,
            patches,
            text,
            forward,
            encoder_launches,
            context_launches,
            backward,
            activation_bytes: mem.bytes + tail.bytes + encoder.bytes,
            slice_allocs: encoder.allocs,
        })
    }
}

impl CpcModel {
    /// Queue this step's inputs: the examples (crops [B, 3, S, S], or clips [B, L]: B times
    /// `spec.input_shape()`, as f32; or for text B passages of L sentences, a
    /// [`PaddedSentences`] of B L sentences of the spec's max_words, passage b's sentence s
    /// at b L + s), Adam's step `t` (1-based) and learning rate, and the patch-jitter seed
    /// (audio and text have no jitter and ignore it). Writes only; allocates nothing.
    ///
    /// [`PaddedSentences`]: crate::ops::embedding::PaddedSentences
    pub fn set_inputs<'a>(
        &self,
        gpu: &Gpu,
        inputs: impl Into<Examples<'a>>,
        t: u64,
        lr: f32,
        seed: u32,
    ) -> Result<()> {
        self.write_examples(gpu, inputs.into(), Some(seed))?;
        self.adam.set_step(gpu, t, lr);
        Ok(())
    }

    /// [`CpcModel::set_inputs`] for a batch as the data side serves it: f32 values, or
    /// sentences (flat ids and offsets) padded to the text spec's layout.
    pub fn set_input(&self, gpu: &Gpu, input: &Input, t: u64, lr: f32, seed: u32) -> Result<()> {
        match input {
            Input::Values(x) => self.set_inputs(gpu, x, t, lr, seed),
            Input::Sentences(s) => self.set_inputs(gpu, &self.spec.text()?.pad(s)?, t, lr, seed),
        }
    }

    /// Write the examples into the inputs (f32) or the tokens (text), and the patches'
    /// jitter (from `seed`, or none); an error when the examples are not of the model's kind.
    fn write_examples(&self, gpu: &Gpu, examples: Examples, seed: Option<u32>) -> Result<()> {
        match (examples, &self.inputs, &self.text) {
            (Examples::Values(x), Some(inputs), _) => {
                inputs.write(gpu, x)?;
                if let Some(p) = &self.patches {
                    p.set_jitter(gpu, inputs, seed);
                }
                Ok(())
            }
            (Examples::Sentences(batch), _, Some(text)) => text.tokens.upload(gpu, batch),
            (given, _, _) => Err(Error::Config(format!(
                "this model ({}) takes {}, not {}",
                self.spec.describe(),
                if self.text.is_some() {
                    "sentences (a PaddedSentences)"
                } else {
                    "f32 examples"
                },
                match given {
                    Examples::Values(_) => "f32 examples",
                    Examples::Sentences(_) => "sentences",
                }
            ))),
        }
    }

    /// Record the input's launch (the patches) and the first `launches` of the forward.
    fn record_first(&self, pass: &mut wgpu::ComputePass<'_>, launches: usize) {
        if let Some(p) = &self.patches {
            p.launch.record(pass);
        }
        for l in &self.forward[..launches] {
            l.record(pass);
        }
    }

    /// Record the forward pass (inputs to loss) into a compute pass.
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.record_first(pass, self.forward.len());
    }

    /// Record the encoder alone: inputs to z.
    pub fn record_encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.record_first(pass, self.encoder_launches);
    }

    /// Run the forward on `inputs` (no jitter) up to z, or with `context` up to c, and wait.
    fn run_plain(&self, gpu: &Gpu, inputs: Examples, context: bool) -> Result<()> {
        self.write_examples(gpu, inputs, None)?;
        let launches = if context {
            self.context_launches
        } else {
            self.encoder_launches
        };
        self.run(gpu, |m, pass| m.record_first(pass, launches))
    }

    /// Each example's representation: the mean of its vectors z (an image's G x G patch
    /// vectors, a clip's T frames), [B, D], for inputs as [`CpcModel::set_inputs`] takes
    /// them (no jitter). Blocking; for evaluation, not the training loop.
    pub fn features<'a>(&self, gpu: &Gpu, inputs: impl Into<Examples<'a>>) -> Result<Vec<f32>> {
        self.run_plain(gpu, inputs.into(), false)?;
        Ok(self.mean_over_positions(&self.z.read(gpu)?))
    }

    /// Each example's mean vectors over its positions: of z [B, D] and of the context c
    /// [B, H] (the GRU is run; the heads are not). Blocking, as [`CpcModel::features`].
    pub fn pooled<'a>(&self, gpu: &Gpu, inputs: impl Into<Examples<'a>>) -> Result<Pooled> {
        let (z, c) = self.frames(gpu, inputs)?;
        Ok(Pooled {
            z: self.mean_over_positions(&z),
            c: self.mean_over_positions(&c),
        })
    }

    /// The vectors z [rows, D] and contexts c [rows, H] at every position (a clip's frames,
    /// an image's patches, a passage's sentences), in the layout of
    /// `spec.sequences(batch)`. Blocking, as [`CpcModel::features`].
    pub fn frames<'a>(
        &self,
        gpu: &Gpu,
        inputs: impl Into<Examples<'a>>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.run_plain(gpu, inputs.into(), true)?;
        Ok((self.z.read(gpu)?, self.c.read(gpu)?))
    }

    /// The mean of each example's rows of `x` [B * positions, width], [B, width].
    fn mean_over_positions(&self, x: &[f32]) -> Vec<f32> {
        let positions = self.spec.positions();
        let width = x.len() / (self.batch * positions);
        let mut out = vec![0.0f32; self.batch * width];
        for (b, mean) in out.chunks_mut(width).enumerate() {
            for row in x[b * positions * width..(b + 1) * positions * width].chunks(width) {
                mean.iter_mut()
                    .zip(row)
                    .for_each(|(m, v)| *m += v / positions as f32);
            }
        }
        out
    }

    /// Record zeroing of the gradients.
    pub fn record_zero_gradients(&self, pass: &mut wgpu::ComputePass<'_>) {
        for l in &self.adam.zero_launches {
            l.record(pass);
        }
    }

    /// Record the forward and the backward, which adds this batch's gradients to the
    /// gradient buffer (micro-batches of one step accumulate there).
    pub fn record_forward_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.record_forward(pass);
        for l in &self.backward {
            l.record(pass);
        }
    }

    /// Record the optimiser on the gradient buffer: the gradient norm and Adam.
    pub fn record_optimiser(&self, pass: &mut wgpu::ComputePass<'_>) {
        for l in self.adam.launches() {
            l.record(pass);
        }
    }

    /// Record zeroing of the gradients, forward and backward (no optimiser step).
    pub fn record_gradients(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.record_zero_gradients(pass);
        self.record_forward_backward(pass);
    }

    /// Record one whole training step of one batch: zero gradients, forward, backward,
    /// gradient norm and Adam. One compute pass; wgpu orders the dispatches.
    pub fn record_step(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.record_gradients(pass);
        self.record_optimiser(pass);
    }

    /// Every launch of a step in order, with names, for profiling.
    pub fn step_launches(&self) -> Vec<&Launch> {
        let mut v: Vec<&Launch> = self.adam.zero_launches.iter().collect();
        v.extend(self.patches.as_ref().map(|p| &p.launch));
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
