//! CPU reference of ops::embedding, from the definitions: no index, the positions in order.

use crate::ops::embedding::{Embedding, PAD};

/// out[n, e, w] = table[ids[n W + w], e], 0 where the id is PAD; out [N, E, 1, W].
pub fn forward(s: &Embedding, ids: &[u32], table: &[f32], out: &mut [f32]) {
    let (e_dim, w_dim) = (s.dim, s.width);
    for n in 0..s.sentences {
        for e in 0..e_dim {
            for w in 0..w_dim {
                let id = ids[n * w_dim + w];
                out[(n * e_dim + e) * w_dim + w] = if id == PAD {
                    0.0
                } else {
                    table[id as usize * e_dim + e]
                };
            }
        }
    }
}

/// d_table[ids[n W + w], e] += d_out[n, e, w] for every position whose id is not PAD, each
/// element's sum in f64 and added once.
pub fn backward(s: &Embedding, ids: &[u32], d_out: &[f32], d_table: &mut [f32]) {
    let (e_dim, w_dim) = (s.dim, s.width);
    let mut sum = vec![0.0f64; d_table.len()];
    for n in 0..s.sentences {
        for w in 0..w_dim {
            let id = ids[n * w_dim + w];
            if id == PAD {
                continue;
            }
            for e in 0..e_dim {
                sum[id as usize * e_dim + e] += d_out[(n * e_dim + e) * w_dim + w] as f64;
            }
        }
    }
    for (d, s) in d_table.iter_mut().zip(sum) {
        *d = (*d as f64 + s) as f32;
    }
}
