//! CPU reference of ops::layer_norm (group norm with one group), in f64.

use crate::ops::layer_norm::LayerNorm;

/// y = (x - mean) * rstd * gamma[c] + beta[c] per sample; returns stats [n, 2] = (mean, rstd).
pub fn forward(ln: &LayerNorm, x: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32]) -> Vec<f32> {
    let m = ln.channels * ln.inner;
    let mut stats = vec![0.0; 2 * ln.n];
    for s in 0..ln.n {
        let xs = &x[s * m..(s + 1) * m];
        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / m as f64;
        let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / m as f64;
        let rstd = 1.0 / (var + ln.eps as f64).sqrt();
        for e in 0..m {
            let c = e / ln.inner;
            y[s * m + e] = ((xs[e] as f64 - mean) * rstd * gamma[c] as f64 + beta[c] as f64) as f32;
        }
        stats[2 * s] = mean as f32;
        stats[2 * s + 1] = rstd as f32;
    }
    stats
}

/// dx (+)= and dgamma +=, dbeta += (the forward's stats are recomputed from x).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    ln: &LayerNorm,
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    accumulate: bool,
) {
    let m = ln.channels * ln.inner;
    for s in 0..ln.n {
        let xs = &x[s * m..(s + 1) * m];
        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / m as f64;
        let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / m as f64;
        let rstd = 1.0 / (var + ln.eps as f64).sqrt();
        let xhat = |e: usize| (xs[e] as f64 - mean) * rstd;
        let g = |e: usize| dy[s * m + e] as f64 * gamma[e / ln.inner] as f64;
        let mean_g = (0..m).map(g).sum::<f64>() / m as f64;
        let mean_gx = (0..m).map(|e| g(e) * xhat(e)).sum::<f64>() / m as f64;
        for e in 0..m {
            let v = (rstd * (g(e) - mean_g - xhat(e) * mean_gx)) as f32;
            let at = s * m + e;
            dx[at] = if accumulate { dx[at] + v } else { v };
            dgamma[e / ln.inner] += (dy[at] as f64 * xhat(e)) as f32;
            dbeta[e / ln.inner] += dy[at];
        }
    }
}
