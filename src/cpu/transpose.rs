//! CPU reference of ops::transpose.

/// y[b, c, r] = x[b, r, c], `dims` = [B, R, C].
pub fn forward(x: &[f32], [batch, rows, cols]: [usize; 3], y: &mut [f32]) {
    for b in 0..batch {
        let m = b * rows * cols;
        for r in 0..rows {
            for c in 0..cols {
                y[m + c * rows + r] = x[m + r * cols + c];
            }
        }
    }
}
