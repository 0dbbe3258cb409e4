//! CPU reference of ops::matmul: the same spec, computed with plain loops in f64.

use crate::ops::matmul::Matmul;

/// C = alpha op(A) op(B) (+ C), following `mm` exactly as the shader does.
pub fn forward(mm: &Matmul, a: &[f32], b: &[f32], c: &mut [f32]) {
    let [sa, sb, sc] = mm.batch_strides();
    for bi in 0..mm.batch {
        let (ao, bo, co) = (
            mm.a.offset + bi * sa,
            mm.b.offset + bi * sb,
            mm.c.offset + bi * sc,
        );
        for i in 0..mm.m {
            for j in 0..mm.n {
                let mut s = 0.0f64;
                for k in 0..mm.k {
                    let av = if mm.trans_a {
                        a[ao + k * mm.m + i]
                    } else {
                        a[ao + i * mm.k + k]
                    };
                    let bv = if mm.trans_b {
                        b[bo + j * mm.k + k]
                    } else {
                        b[bo + k * mm.n + j]
                    };
                    s += av as f64 * bv as f64;
                }
                let at = co + i * mm.n + j;
                let v = mm.alpha as f64 * s;
                c[at] = if mm.accumulate {
                    c[at] + v as f32
                } else {
                    v as f32
                };
            }
        }
    }
}

/// dA (+)= and dB (+)= for C = alpha op(A) op(B), element by element from the definition.
pub fn backward(
    mm: &Matmul,
    a: &[f32],
    b: &[f32],
    dc: &[f32],
    da: &mut [f32],
    db: &mut [f32],
    accumulate: bool,
) {
    let [sa, sb, sc] = mm.batch_strides();
    let a_at = |bi: usize, i: usize, k: usize| {
        mm.a.offset
            + bi * sa
            + if mm.trans_a {
                k * mm.m + i
            } else {
                i * mm.k + k
            }
    };
    let b_at = |bi: usize, k: usize, j: usize| {
        mm.b.offset
            + bi * sb
            + if mm.trans_b {
                j * mm.k + k
            } else {
                k * mm.n + j
            }
    };
    if !accumulate {
        for bi in 0..mm.batch {
            for i in 0..mm.m {
                for k in 0..mm.k {
                    da[a_at(bi, i, k)] = 0.0;
                }
            }
            for k in 0..mm.k {
                for j in 0..mm.n {
                    db[b_at(bi, k, j)] = 0.0;
                }
            }
        }
    }
    for bi in 0..mm.batch {
        for i in 0..mm.m {
            for j in 0..mm.n {
                let g = mm.alpha * dc[mm.c.offset + bi * sc + i * mm.n + j];
                for k in 0..mm.k {
                    da[a_at(bi, i, k)] += g * b[b_at(bi, k, j)];
                    db[b_at(bi, k, j)] += g * a[a_at(bi, i, k)];
                }
            }
        }
    }
}
