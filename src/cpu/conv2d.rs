//! CPU reference of ops::conv2d: the definitions, looped over directly, summed in f64.

use crate::ops::conv2d::Conv2d;

/// The input pixel that output (oy, ox) reads through tap (ky, kx), if it is inside the image.
fn source(c: &Conv2d, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * c.sh + ky).checked_sub(c.ph)?;
    let ix = (ox * c.sw + kx).checked_sub(c.pw)?;
    (iy < c.h && ix < c.w).then_some((iy, ix))
}

/// y[n, co, oy, ox] = b[co] + sum_{ci, ky, kx} w[co, ci, ky, kx] x[n, ci, iy, ix].
pub fn forward(c: &Conv2d, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) {
    let (oh, ow) = c.out_hw();
    let (kh, kw, h, wd) = (c.kh, c.kw, c.h, c.w);
    for n in 0..c.n {
        for co in 0..c.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = b[co] as f64;
                    for ci in 0..c.cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                if let Some((iy, ix)) = source(c, oy, ox, ky, kx) {
                                    s += w[((co * c.cin + ci) * kh + ky) * kw + kx] as f64
                                        * x[((n * c.cin + ci) * h + iy) * wd + ix] as f64;
                                }
                            }
                        }
                    }
                    y[((n * c.cout + co) * oh + oy) * ow + ox] = s as f32;
                }
            }
        }
    }
}

/// dx (+)= the gradient of the forward with respect to x: every output pixel hands
/// w * dy back to each input pixel it read.
pub fn backward_input(c: &Conv2d, dy: &[f32], w: &[f32], dx: &mut [f32], accumulate: bool) {
    let (oh, ow) = c.out_hw();
    let (kh, kw, h, wd) = (c.kh, c.kw, c.h, c.w);
    let mut sum = vec![0.0f64; dx.len()];
    for n in 0..c.n {
        for co in 0..c.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[((n * c.cout + co) * oh + oy) * ow + ox] as f64;
                    for ci in 0..c.cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                if let Some((iy, ix)) = source(c, oy, ox, ky, kx) {
                                    sum[((n * c.cin + ci) * h + iy) * wd + ix] +=
                                        w[((co * c.cin + ci) * kh + ky) * kw + kx] as f64 * g;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for (d, s) in dx.iter_mut().zip(sum) {
        *d = if accumulate { *d + s as f32 } else { s as f32 };
    }
}

/// dw += and db += the gradients of the forward with respect to the weights and bias.
pub fn backward_weight(c: &Conv2d, x: &[f32], dy: &[f32], dw: &mut [f32], db: &mut [f32]) {
    let (oh, ow) = c.out_hw();
    let (kh, kw, h, wd) = (c.kh, c.kw, c.h, c.w);
    let mut sum_w = vec![0.0f64; dw.len()];
    let mut sum_b = vec![0.0f64; db.len()];
    for n in 0..c.n {
        for co in 0..c.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[((n * c.cout + co) * oh + oy) * ow + ox] as f64;
                    sum_b[co] += g;
                    for ci in 0..c.cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                if let Some((iy, ix)) = source(c, oy, ox, ky, kx) {
                                    sum_w[((co * c.cin + ci) * kh + ky) * kw + kx] +=
                                        x[((n * c.cin + ci) * h + iy) * wd + ix] as f64 * g;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for (d, s) in dw.iter_mut().zip(sum_w) {
        *d += s as f32;
    }
    for (d, s) in db.iter_mut().zip(sum_b) {
        *d += s as f32;
    }
}
