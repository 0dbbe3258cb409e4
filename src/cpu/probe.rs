//! CPU reference of eval::probe's classifier: the same full-batch training from zero weights
//! (scores, soft-max cross-entropy, L2 on W, Adam with the cosine learning rate), in f64
//! loops, step for step.

use crate::cpu;
use crate::eval::probe::Hyper;
use crate::ops::adam::AdamConfig;
use crate::ops::softmax_xent::SoftmaxXent;

/// scores [rows, C] = X W^T for params = (W [C, D], b [C]).
fn scores(params: &[f32], x: &[f32], dim: usize, classes: usize) -> Vec<f32> {
    x.chunks(dim)
        .flat_map(|row| {
            (0..classes).map(move |c| {
                let w = &params[c * dim..(c + 1) * dim];
                row.iter()
                    .zip(w)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32
            })
        })
        .collect()
}

/// The trained parameters: W [C, D] row-major, then b [C].
pub fn fit(x: &[f32], labels: &[u32], dim: usize, classes: usize, hyper: &Hyper) -> Vec<f32> {
    let rows = labels.len();
    let sx = SoftmaxXent { rows, classes };
    let labels: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    let n = classes * dim + classes;
    let (mut params, mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    for t in 0..hyper.iterations {
        let s = scores(&params, x, dim, classes);
        let xent = cpu::softmax_xent::forward(
            &sx,
            &s,
            &params[classes * dim..],
            &labels,
            1.0 / rows as f32,
        );
        let mut grads = vec![0.0f32; n];
        for c in 0..classes {
            for j in 0..dim {
                let dw: f64 = (0..rows)
                    .map(|r| xent.dlogits[r * classes + c] * x[r * dim + j] as f64)
                    .sum();
                grads[c * dim + j] =
                    (dw + hyper.weight_decay as f64 * params[c * dim + j] as f64) as f32;
            }
            grads[classes * dim + c] = (0..rows)
                .map(|r| xent.dlogits[r * classes + c])
                .sum::<f64>() as f32;
        }
        cpu::adam::step(
            &AdamConfig::default(),
            t as u64 + 1,
            hyper.lr_at(t),
            &mut params,
            &grads,
            &mut m,
            &mut v,
        );
    }
    params
}

/// Mean loss, top-1 and top-5 of `params` on (x, labels).
pub fn evaluate(params: &[f32], x: &[f32], labels: &[u32], dim: usize, classes: usize) -> [f64; 3] {
    let sx = SoftmaxXent {
        rows: labels.len(),
        classes,
    };
    let labels: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    let s = scores(params, x, dim, classes);
    cpu::softmax_xent::forward(&sx, &s, &params[classes * dim..], &labels, 1.0).means()
}
