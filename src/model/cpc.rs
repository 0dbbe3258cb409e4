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
use crate::model::params::{ParamBuffers, ParamLayout};
use crate::model::spec::ModelSpec;
use crate::ops::adam::{Adam, AdamConfig};
use crate::ops::conv2d::{self, Conv2d};
use crate::ops::copy_rows;
use crate::ops::elementwise;
use crate::ops::gru::{self, Gru, GruWeights};
use crate::ops::infonce::{self, Infonce};
use crate::ops::layer_norm::{self, LayerNorm};
use crate::ops::matmul::{self, Matmul};
use crate::ops::mean_pool;
use crate::ops::patches::{self, Patches};

/// One encoder layer; activations are indices into `Encoder::acts`.
#[derive(Clone, Debug)]
enum Layer {
    Conv {
        conv: Conv2d,
        param: String,
        x: usize,
        y: usize,
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

/// Builds the encoder's layer list and its activations [N, C, side, side].
struct EncoderPlan<'a> {
    gpu: &'a Gpu,
    n: usize,
    layers: Vec<Layer>,
    /// (tensor, channels, side) of every activation; 0 is the patches.
    acts: Vec<(Tensor, usize, usize)>,
    layer_norm: bool,
}

impl EncoderPlan<'_> {
    fn act(&mut self, c: usize, side: usize) -> Result<usize> {
        let t = Tensor::zeros(self.gpu, "activation", &[self.n, c, side, side])?;
        self.acts.push((t, c, side));
        Ok(self.acts.len() - 1)
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
        let (_, cin, side) = self.acts[x];
        let conv = Conv2d::square(self.n, cin, side, cout, k, stride);
        let y = self.act(cout, conv.out_hw().0)?;
        self.layers.push(Layer::Conv {
            conv,
            param: param.into(),
            x,
            y,
        });
        match (self.layer_norm, norm) {
            (true, Some(name)) => {
                let (_, c, s) = self.acts[y];
                let ln = LayerNorm {
                    n: self.n,
                    channels: c,
                    inner: s * s,
                    eps: 1e-5,
                };
                let stats = Tensor::zeros(self.gpu, "norm stats", &[self.n, 2])?;
                let out = self.act(c, s)?;
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

    fn relu(&mut self, x: usize) -> Result<usize> {
        let (_, c, s) = self.acts[x];
        let y = self.act(c, s)?;
        self.layers.push(Layer::Relu { x, y });
        Ok(y)
    }

    fn add(&mut self, a: usize, b: usize) -> Result<usize> {
        let (_, c, s) = self.acts[a];
        let y = self.act(c, s)?;
        self.layers.push(Layer::Add { a, b, y });
        Ok(y)
    }
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

/// Plan the encoder for the patches `x0` [n, 3, P, P] of some images: its activations and
/// their gradients, the forward up to z [n, D] and the backward from dz [n, D], whose
/// parameter gradients accumulate into `buffers.grads` (so slices add up).
fn plan_encoder(
    gpu: &Gpu,
    spec: &ModelSpec,
    buffers: &ParamBuffers,
    x0: &Tensor,
    z: &Tensor,
    dz: &Tensor,
) -> Result<EncoderSlice> {
    let pv = |name: &str| buffers.layout.view(&buffers.params, name);
    let gv = |name: &str| buffers.layout.view(&buffers.grads, name);
    let (n, d) = (x0.shape[0], spec.dim());
    let mut enc = EncoderPlan {
        gpu,
        n,
        layers: Vec::new(),
        acts: vec![(x0.clone(), 3, spec.patch())],
        layer_norm: spec.layer_norm,
    };
    let x0 = 0;
    let stem = enc.conv(
        "encoder.stem",
        x0,
        spec.stem.out,
        spec.stem.kernel,
        spec.stem.stride,
        Some("encoder.stem_norm"),
    )?;
    let mut a = enc.relu(stem)?;
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
        a = enc.relu(down)?;
        for j in 0..st.blocks {
            let mut t = enc.relu(a)?;
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
                    t = enc.relu(t)?;
                }
            }
            a = enc.add(a, t)?;
        }
    }
    let last = enc.relu(a)?;
    let (_, cd, side) = enc.acts[last];
    debug_assert_eq!(cd, d);

    let mut forward = Vec::new();
    for layer in &enc.layers {
        let act = |i: usize| &enc.acts[i].0;
        forward.extend(match layer {
            Layer::Conv { conv, param, x, y } => conv2d::forward(
                gpu,
                conv,
                act(*x),
                &pv(&format!("{param}.weight")),
                &pv(&format!("{param}.bias")),
                act(*y),
            )?,
            Layer::Norm {
                ln,
                param,
                x,
                y,
                stats,
            } => layer_norm::forward(
                gpu,
                ln,
                act(*x),
                &pv(&format!("{param}.weight")),
                &pv(&format!("{param}.bias")),
                act(*y),
                stats,
            )
            .map(|l| vec![l])?,
            Layer::Relu { x, y } => vec![elementwise::relu_forward(gpu, act(*x), act(*y))?],
            Layer::Add { a, b, y } => vec![elementwise::add(gpu, act(*a), act(*b), act(*y))?],
        });
    }
    let pooled = [n, d, side * side];
    forward.push(mean_pool::forward(gpu, &enc.acts[last].0, pooled, z)?);
    let mut backward = Vec::new();
    // Encoder activation gradients, one per activation but the patches.
    let dacts: Vec<Option<Tensor>> = enc
        .acts
        .iter()
        .enumerate()
        .map(|(i, (t, _, _))| {
            if i == x0 {
                Ok(None)
            } else {
                Tensor::zeros(gpu, "activation grad", &t.shape).map(Some)
            }
        })
        .collect::<Result<_>>()?;
    let mut written = vec![false; dacts.len()];
    let dact = |i: usize| {
        dacts[i]
            .as_ref()
            .expect("no gradient for the input patches")
    };
    backward.push(mean_pool::backward(gpu, dz, pooled, dact(last), false)?);
    written[last] = true;
    for layer in enc.layers.iter().rev() {
        let act = |i: usize| &enc.acts[i].0;
        match layer {
            Layer::Conv { conv, param, x, y } => {
                let (w, dw, db) = (
                    pv(&format!("{param}.weight")),
                    gv(&format!("{param}.weight")),
                    gv(&format!("{param}.bias")),
                );
                backward.extend(conv2d::backward_weight(
                    gpu,
                    conv,
                    act(*x),
                    dact(*y),
                    &dw,
                    &db,
                )?);
                if *x != x0 {
                    backward.extend(conv2d::backward_input(
                        gpu,
                        conv,
                        dact(*y),
                        &w,
                        dact(*x),
                        written[*x],
                    )?);
                    written[*x] = true;
                }
            }
            Layer::Norm {
                ln,
                param,
                x,
                y,
                stats,
            } => {
                backward.extend(layer_norm::backward(
                    gpu,
                    ln,
                    act(*x),
                    &pv(&format!("{param}.weight")),
                    stats,
                    dact(*y),
                    dact(*x),
                    &gv(&format!("{param}.weight")),
                    &gv(&format!("{param}.bias")),
                    written[*x],
                )?);
                written[*x] = true;
            }
            Layer::Relu { x, y } => {
                backward.push(elementwise::relu_backward(
                    gpu,
                    act(*y),
                    dact(*y),
                    dact(*x),
                    written[*x],
                )?);
                written[*x] = true;
            }
            Layer::Add { a, b, y } => {
                for i in [*a, *b] {
                    backward.push(elementwise::scale(gpu, dact(*y), dact(i), 1.0, written[i])?);
                    written[i] = true;
                }
            }
        }
    }

    let bytes = enc.acts[1..]
        .iter()
        .map(|(t, _, _)| 4 * t.len() as u64)
        .sum::<u64>()
        + dacts
            .iter()
            .flatten()
            .map(|t| 4 * t.len() as u64)
            .sum::<u64>();
    Ok(EncoderSlice {
        forward,
        backward,
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
