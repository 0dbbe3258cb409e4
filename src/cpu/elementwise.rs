//! CPU reference of ops::elementwise.

use crate::ops::elementwise::Op;

/// out (+)= alpha * op(a, b), as the shader does.
pub fn launch(op: Op, a: &[f32], b: &[f32], out: &mut [f32], alpha: f32, accumulate: bool) {
    for i in 0..out.len() {
        let f = match op {
            Op::Relu => a[i].max(0.0),
            Op::ReluBackward => {
                if a[i] > 0.0 {
                    b[i]
                } else {
                    0.0
                }
            }
            Op::Add => a[i] + b[i],
            Op::Scale => a[i],
            Op::Mul => a[i] * b[i],
        };
        let v = alpha * f;
        out[i] = if accumulate { out[i] + v } else { v };
    }
}
