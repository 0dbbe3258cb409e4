//! CPU reference of ops::masked_mean.

/// Sentence n's length, at most W (as the shader clamps it).
fn length(lengths: &[u32], n: usize, w: usize) -> usize {
    (lengths[n] as usize).min(w)
}

/// y[n, c] = mean over w < lengths[n] of x[n, c, w], 0 for an empty sentence.
pub fn forward(x: &[f32], lengths: &[u32], [n, c, w]: [usize; 3], y: &mut [f32]) {
    for r in 0..n * c {
        let len = length(lengths, r / c, w);
        let s: f64 = x[r * w..r * w + len].iter().map(|&v| v as f64).sum();
        y[r] = if len == 0 {
            0.0
        } else {
            (s / len as f64) as f32
        };
    }
}

/// dx[n, c, w] (+)= dy[n, c] / lengths[n] where w < lengths[n], 0 elsewhere.
pub fn backward(
    dy: &[f32],
    lengths: &[u32],
    [n, c, w]: [usize; 3],
    dx: &mut [f32],
    accumulate: bool,
) {
    for (e, d) in dx[..n * c * w].iter_mut().enumerate() {
        let r = e / w;
        let len = length(lengths, r / c, w);
        let v = if e % w < len { dy[r] / len as f32 } else { 0.0 };
        *d = if accumulate { *d + v } else { v };
    }
}
