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
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

/// Hyper-parameters. `max_norm` = 0 turns clipping off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub max_norm: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_norm: 0.0,
        }
    }
}

/// Workgroups of the norm's first pass; the shader's stride (65536) is this times 256.
const NORM_GROUPS: u32 = 256;
const KERNEL: &str = "adam";

/// A planned optimiser over (param, grad, m, v), all of the same length.
pub struct Adam {
    pub config: AdamConfig,
    base: AdamParams,
    /// sum_squares and finish_norm: the gradient norm into `norm`.
    pub norm_launches: Vec<Launch>,
    pub step_launch: Launch,
    pub zero_launch: Launch,
    /// The global gradient norm of the last step, [1].
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
        let partials = Tensor::zeros(gpu, "adam partials", &[NORM_GROUPS as usize])?;
        let norm = Tensor::zeros(gpu, "grad norm", &[1])?;
        let base = AdamParams {
            n: n as u32,
            param_offset: rel_offset(gpu, param),
            grad_offset: rel_offset(gpu, grad),
            m_offset: rel_offset(gpu, m),
            v_offset: rel_offset(gpu, v),
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            weight_decay: config.weight_decay,
            max_norm: config.max_norm,
            ..Default::default()
        };
        let each = spread(gpu, KERNEL, n.div_ceil(256) as u64)?;
        let l = |entry, bindings: &[(u32, &Tensor)], wg| {
            Launch::with_bindings(gpu, Shader::Adam, entry, &[], &base, bindings, wg)
        };
        Ok(Adam {
            config,
            base,
            norm_launches: vec![
                l(
                    "sum_squares",
                    &[(2, grad), (5, &partials)],
                    [NORM_GROUPS, 1, 1],
                )?
                .cost(2 * n as u64, n as u64)
                .reference(move || {
                    crate::cpu::adam::grad_norm(&vec![0.5; n]);
                }),
                l("finish_norm", &[(5, &partials), (6, &norm)], [1, 1, 1])?,
            ],
            // About 15 FLOPs an element (moments, bias corrections, sqrt, divide, decay);
            // reads param, grad, m and v, writes param, m and v.
            step_launch: l(
                "step",
                &[(1, param), (2, grad), (3, m), (4, v), (6, &norm)],
                each,
            )?
            .cost(15 * n as u64, 7 * n as u64)
            .reference(move || {
                let (mut p, mut m, mut v) = (vec![0.5; n], vec![0.0; n], vec![0.0; n]);
                crate::cpu::adam::step(&config, 1, 1e-3, &mut p, &vec![0.5; n], &mut m, &mut v);
            }),
            zero_launch: l("zero_grads", &[(2, grad)], each)?.cost(0, n as u64),
            norm,
        })
    }

    /// The uniforms of step `t` (1-based) at learning rate `lr`.
    pub fn step_params(&self, t: u64, lr: f32) -> AdamParams {
        AdamParams {
            lr,
            bc1: 1.0 - self.config.beta1.powf(t as f32),
            bc2: 1.0 - self.config.beta2.powf(t as f32),
            ..self.base
        }
    }

    /// Set step `t`'s learning rate and bias corrections (queued before the next submit).
    pub fn set_step(&self, gpu: &Gpu, t: u64, lr: f32) {
        self.step_launch.set_params(gpu, &self.step_params(t, lr));
    }

    /// The launches of one optimiser step, in order: norm, then update.
    pub fn launches(&self) -> Vec<&Launch> {
        self.norm_launches
            .iter()
            .chain([&self.step_launch])
            .collect()
    }
}
