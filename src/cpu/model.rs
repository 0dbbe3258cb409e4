//! CPU reference of the whole CPC model's loss (model::cpc), composed of the kernels' CPU
//! references walking the same layer list as the GPU's plan (model::layers). Slow and clear: for gradient checks
//! by finite differences and for comparing the GPU forward number for number.

use crate::cpu;
use crate::model::layers::Op;
use crate::model::{ModelSpec, ParamLayout};
use crate::ops::elementwise;
use crate::ops::gru::Gru;
use crate::ops::infonce::Infonce;
use crate::ops::layer_norm::LayerNorm;
use crate::ops::matmul::Matmul;
use crate::ops::patches::Patches;
use crate::ops::sequences::Sequences;

/// The patch vectors z [N, D] of a batch of crops [B, 3, S, S]: the encoder's layer list
/// walked in order, then the mean over each patch's final activation.
pub fn encode(
    spec: &ModelSpec,
    params: &[f32],
    crops: &[f32],
    batch: usize,
    seed: u32,
) -> Vec<f32> {
    let layout = ParamLayout::new(spec);
    let p = |name: &str| layout.slice(params, name);
    let (g, patch) = (spec.grid, spec.patch());
    let n = batch * g * g;
    let geometry = Patches {
        batch,
        grid: g,
        patch,
        jitter: spec.jitter,
    };
    let list = spec.layers();
    let mut acts: Vec<Vec<f32>> = vec![cpu::patches::forward(&geometry, crops, seed)];
    for l in &list.layers {
        let (x, shape) = (&acts[l.x], list.acts[l.y]);
        let mut y = vec![0.0; n * shape.len()];
        match &l.op {
            Op::Conv { param, geom } => cpu::conv2d::forward(
                &geom.conv2d(n, list.acts[l.x]),
                x,
                p(&format!("{param}.weight")),
                p(&format!("{param}.bias")),
                &mut y,
            ),
            Op::Norm { param } => {
                let ln = LayerNorm {
                    n,
                    channels: shape.c,
                    inner: shape.h * shape.w,
                    eps: 1e-5,
                };
                let (gamma, beta) = (p(&format!("{param}.weight")), p(&format!("{param}.bias")));
                cpu::layer_norm::forward(&ln, x, gamma, beta, &mut y);
            }
            Op::Relu => cpu::elementwise::launch(elementwise::Op::Relu, x, x, &mut y, 1.0, false),
            Op::Add { other } => {
                cpu::elementwise::launch(elementwise::Op::Add, x, &acts[*other], &mut y, 1.0, false)
            }
        }
        acts.push(y);
    }
    let last = list.output_shape();
    let mut z = vec![0.0; n * last.c];
    cpu::mean_pool::forward(&acts[list.output()], [n, last.c, last.h * last.w], &mut z);
    z
}

/// The loss, per-step losses and accuracies of a batch, as the GPU computes them.
pub fn loss(
    spec: &ModelSpec,
    params: &[f32],
    crops: &[f32],
    batch: usize,
    seed: u32,
) -> cpu::infonce::InfonceReference {
    let layout = ParamLayout::new(spec);
    let (g, d, h) = (spec.grid, spec.dim(), spec.hidden);
    let n = batch * g * g;
    let z = encode(spec, params, crops, batch, seed);
    let gru = Gru {
        seq: Sequences::grid(batch, g),
        input: d,
        hidden: h,
    };
    let w = cpu::gru::GruWeights {
        weight_ih: layout.slice(params, "gru.weight_ih_l0").to_vec(),
        weight_hh: layout.slice(params, "gru.weight_hh_l0").to_vec(),
        bias_ih: layout.slice(params, "gru.bias_ih_l0").to_vec(),
        bias_hh: layout.slice(params, "gru.bias_hh_l0").to_vec(),
    };
    let mut c = vec![0.0; n * h];
    cpu::gru::forward(&gru, &z, &w, &mut c);
    let inf = Infonce::new(Sequences::grid(batch, g), d, spec.offsets.clone());
    let preds: Vec<Vec<f32>> = (0..inf.steps())
        .map(|k| {
            let q = inf.queries(k);
            let mut cq = vec![0.0; q * h];
            cpu::copy_rows::gather(&inf.context_rows(k, h), &c, &mut cq, false);
            let mut p = vec![0.0; q * d];
            let wk = layout.slice(params, &format!("heads.{k}.weight"));
            cpu::matmul::forward(&Matmul::new(1, q, d, h).trans_b(true), &cq, wk, &mut p);
            p
        })
        .collect();
    cpu::infonce::forward(&inf, &preds, &z)
}
