//! Adam with optional decoupled weight decay (AdamW) over one flat parameter buffer, the
//! global gradient norm for clipping, and zeroing of gradients (shaders/adam.wgsl).
//!
//! Per step the host rewrites only the step launch's uniforms (learning rate and bias
//! corrections) with [`Adam::set_step`]: no allocation, no readback. The norm stays on the
//! GPU for the clip and can be read for the progress display.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: AdamParams in shaders/adam.wgsl.
    pub struct AdamParams {
        pub n: u32,
        pub param_offset: u32,
        pub grad_offset: u32,
        pub m_offset: u32,
        pub v_offset: u32,
        pub lr: f32,
        pub beta1: f32,
        pub beta2: f32,
        pub eps: f32,
        pub weight_decay: f32,
        pub bc1: f32,
        pub bc2: f32,
        pub max_norm: f32,
        pub partials_offset: u32,
        pub partials_count: u32,
        pub grad_scale: f32,
    }
}

/// Hyper-parameters. `max_norm` = 0 turns clipping off. `grad_scale` multiplies the
/// gradient buffer before anything reads it (the norm and the clip included): 1 / the
/// micro-batches whose gradients the buffer sums, so the update sees their mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub max_norm: f32,
    pub grad_scale: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_norm: 0.0,
            grad_scale: 1.0,
        }
    }
}

/// Workgroups of the norm's first pass per chunk; the shader's stride (65536) is this
/// times 256.
const NORM_GROUPS: u32 = 256;
const KERNEL: &str = "adam";

/// A planned optimiser over (param, grad, m, v), all of the same length. Buffers larger than
/// the adapter's binding limit are cut into chunks, each with its own launches.
pub struct Adam {
    pub config: AdamConfig,
    /// The uniforms of each chunk, without the per-step values.
    chunks: Vec<AdamParams>,
    /// sum_squares per chunk, then finish_norm: the gradient norm into `norm`.
    pub norm_launches: Vec<Launch>,
    /// The update, one launch per chunk.
    pub step_launches: Vec<Launch>,
    /// Zeroing of the gradients, one launch per chunk.
    pub zero_launches: Vec<Launch>,
    /// [2]: the global gradient norm of the last step, and 1.0 when its update left a
    /// parameter or moment NaN or infinite (0.0 otherwise).
    pub norm: Tensor,
}

impl Adam {
    pub fn new(
        gpu: &Gpu,
        config: AdamConfig,
        param: &Tensor,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
    ) -> Result<Adam> {
        // Elements per chunk: a binding starts at most one alignment unit before its view.
        let align = gpu.limits.min_storage_buffer_offset_alignment as usize;
        let limit = (gpu.limits.max_storage_buffer_binding_size as usize).saturating_sub(align) / 4;
        Adam::chunked(gpu, config, param, grad, m, v, limit)
    }

    /// As [`Adam::new`], with at most `max_chunk` elements (rounded down to a multiple of
    /// 64) bound at once.
    pub fn chunked(
        gpu: &Gpu,
        config: AdamConfig,
        param: &Tensor,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
        max_chunk: usize,
    ) -> Result<Adam> {
        let n = param.len();
        for (name, t) in [("grad", grad), ("m", m), ("v", v)] {
            if t.len() != n {
                return shape_err(
                    KERNEL,
                    format!(
                        "{name} has shape {:?} but param has {:?}",
                        t.shape, param.shape
                    ),
                );
            }
        }
        let per_chunk = (max_chunk / 64 * 64).max(64).min(n.max(1));
        let count = n.div_ceil(per_chunk).max(1);
        let partials = Tensor::zeros(gpu, "adam partials", &[count * NORM_GROUPS as usize])?;
        let norm = Tensor::zeros(gpu, "grad norm", &[2])?;
        let mut adam = Adam {
            config,
            chunks: Vec::new(),
            norm_launches: Vec::new(),
            step_launches: Vec::new(),
            zero_launches: Vec::new(),
            norm,
        };
        for c in 0..count {
            let (start, len) = (c * per_chunk, per_chunk.min(n - c * per_chunk));
            let view = |t: &Tensor| t.view(start, &[len]);
            let (param, grad, m, v) = (view(param), view(grad), view(m), view(v));
            let part = partials.view(c * NORM_GROUPS as usize, &[NORM_GROUPS as usize]);
            let base = AdamParams {
                n: len as u32,
                param_offset: rel_offset(gpu, &param),
                grad_offset: rel_offset(gpu, &grad),
                m_offset: rel_offset(gpu, &m),
                v_offset: rel_offset(gpu, &v),
                beta1: config.beta1,
                beta2: config.beta2,
                eps: config.eps,
                weight_decay: config.weight_decay,
                max_norm: config.max_norm,
                grad_scale: config.grad_scale,
                partials_offset: rel_offset(gpu, &part),
                partials_count: (count as u32) * NORM_GROUPS,
                ..Default::default()
            };
            let each = spread(gpu, KERNEL, len.div_ceil(256) as u64)?;
            let l = |entry, bindings: &[(u32, &Tensor)], wg| {
                Launch::with_bindings(gpu, Shader::Adam, entry, &[], &base, bindings, wg)
            };
            adam.norm_launches.push(
                l(
                    "sum_squares",
                    &[(2, &grad), (5, &part)],
                    [NORM_GROUPS, 1, 1],
                )?
                .cost(2 * len as u64, len as u64)
                .reference(move || {
                    crate::cpu::adam::grad_norm(&vec![0.5; len]);
                }),
            );
            // About 15 FLOPs an element (moments, bias corrections, sqrt, divide, decay);
            // reads param, grad, m and v, writes param, m and v.
            adam.step_launches.push(
                l(
                    "step",
                    &[(1, &param), (2, &grad), (3, &m), (4, &v), (6, &adam.norm)],
                    each,
                )?
                .cost(15 * len as u64, 7 * len as u64)
                .reference(move || {
                    let (mut p, mut m, mut v) = (vec![0.5; len], vec![0.0; len], vec![0.0; len]);
                    crate::cpu::adam::step(
                        &config,
                        1,
                        1e-3,
                        &mut p,
                        &vec![0.5; len],
                        &mut m,
                        &mut v,
                    );
                }),
            );
            adam.zero_launches
                .push(l("zero_grads", &[(2, &grad)], each)?.cost(0, len as u64));
            adam.chunks.push(base);
        }
        // finish_norm reads every chunk's partials.
        let all = AdamParams {
            partials_offset: rel_offset(gpu, &partials),
            ..adam.chunks[0]
        };
        let finish = Launch::with_bindings(
            gpu,
            Shader::Adam,
            "finish_norm",
            &[],
            &all,
            &[(5, &partials), (6, &adam.norm)],
            [1, 1, 1],
        )?
        .cost(partials.len() as u64, partials.len() as u64);
        adam.norm_launches.push(finish);
        Ok(adam)
    }

    /// The uniforms of chunk `c` at step `t` (1-based) and learning rate `lr`.
    pub fn step_params(&self, c: usize, t: u64, lr: f32) -> AdamParams {
        AdamParams {
            lr,
            bc1: 1.0 - self.config.beta1.powf(t as f32),
            bc2: 1.0 - self.config.beta2.powf(t as f32),
            ..self.chunks[c]
        }
    }

    /// Set step `t`'s learning rate and bias corrections (queued before the next submit).
    pub fn set_step(&self, gpu: &Gpu, t: u64, lr: f32) {
        for (c, l) in self.step_launches.iter().enumerate() {
            l.set_params(gpu, &self.step_params(c, t, lr));
        }
    }

    /// The launches of one optimiser step, in order: norm, then update.
    pub fn launches(&self) -> Vec<&Launch> {
        self.norm_launches
            .iter()
            .chain(&self.step_launches)
            .collect()
    }
}
