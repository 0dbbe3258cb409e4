//! CPU reference of ops::sum_channels.

/// out[c] (+)= alpha * sum_{o, i} x[o, c, i].
pub fn launch(
    x: &[f32],
    [outer, channels, inner]: [usize; 3],
    out: &mut [f32],
    alpha: f32,
    accumulate: bool,
) {
    for c in 0..channels {
        let mut s = 0.0f64;
        for o in 0..outer {
            for i in 0..inner {
                s += x[(o * channels + c) * inner + i] as f64;
            }
        }
        let v = alpha * s as f32;
        out[c] = if accumulate { out[c] + v } else { v };
    }
}
