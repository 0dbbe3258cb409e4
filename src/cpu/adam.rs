//! CPU reference of ops::adam, in f64.

use crate::ops::adam::AdamConfig;

/// sqrt of the sum of squares.
pub fn grad_norm(grad: &[f32]) -> f32 {
    grad.iter().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt() as f32
}

/// One AdamW step `t` (1-based) on `grad` times `c.grad_scale`, with clipping by global
/// norm, in place.
pub fn step(
    c: &AdamConfig,
    t: u64,
    lr: f32,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let scale = c.grad_scale as f64;
    let norm = grad_norm(grad) as f64 * scale;
    let clip = if c.max_norm > 0.0 && norm > c.max_norm as f64 {
        c.max_norm as f64 / norm
    } else {
        1.0
    };
    let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
    let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
    for i in 0..param.len() {
        let g = grad[i] as f64 * scale * clip;
        let mi = b1 * m[i] as f64 + (1.0 - b1) * g;
        let vi = b2 * v[i] as f64 + (1.0 - b2) * g * g;
        m[i] = mi as f32;
        v[i] = vi as f32;
        let w = param[i] as f64;
        let update = (mi / bc1) / ((vi / bc2).sqrt() + c.eps as f64) + c.weight_decay as f64 * w;
        param[i] = (w - lr as f64 * update) as f32;
    }
}
