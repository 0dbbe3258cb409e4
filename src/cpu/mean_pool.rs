//! CPU reference of ops::mean_pool.

/// y[n, c] = mean over l of x[n, c, l].
pub fn forward(x: &[f32], [n, c, l]: [usize; 3], y: &mut [f32]) {
    for r in 0..n * c {
        y[r] = (x[r * l..(r + 1) * l].iter().map(|&v| v as f64).sum::<f64>() / l as f64) as f32;
    }
}

/// dx[n, c, l] (+)= dy[n, c] / l.
pub fn backward(dy: &[f32], [n, c, l]: [usize; 3], dx: &mut [f32], accumulate: bool) {
    for e in 0..n * c * l {
        let v = dy[e / l] / l as f32;
        dx[e] = if accumulate { dx[e] + v } else { v };
    }
}
