//! CPU reference of ops::gru: each sequence (block b, sequence w of the block; for vision an
//! image and a grid column) run step by step in f64, straight from torch.nn.GRU's
//! equations, and backpropagated through time.

use crate::ops::gru::Gru;

/// The four parameters (or their gradients), as in torch.nn.GRU, gate rows r, z, n.
#[derive(Clone, Debug, PartialEq)]
pub struct GruWeights {
    /// [3H, D]
    pub weight_ih: Vec<f32>,
    /// [3H, H]
    pub weight_hh: Vec<f32>,
    /// [3H]
    pub bias_ih: Vec<f32>,
    /// [3H]
    pub bias_hh: Vec<f32>,
}

impl GruWeights {
    pub fn zeros(gru: &Gru) -> GruWeights {
        let h3 = 3 * gru.hidden;
        GruWeights {
            weight_ih: vec![0.0; h3 * gru.input],
            weight_hh: vec![0.0; h3 * gru.hidden],
            bias_ih: vec![0.0; h3],
            bias_hh: vec![0.0; h3],
        }
    }
}

/// One time step of one sequence, everything the backward needs.
struct Step {
    /// Patch row of this step.
    row: usize,
    h_prev: Vec<f64>,
    r: Vec<f64>,
    z: Vec<f64>,
    n: Vec<f64>,
    /// W_hn h_prev + b_hn
    hn: Vec<f64>,
    h: Vec<f64>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// a[g] = bias[g] + sum_k w[g, k] v[k] for the gate rows g of one gate block.
fn affine(w: &[f32], bias: &[f32], v: &[f64], g: usize) -> f64 {
    let k = v.len();
    bias[g] as f64 + (0..k).map(|i| w[g * k + i] as f64 * v[i]).sum::<f64>()
}

/// Run sequence w of block b through all T steps.
fn run_sequence(gru: &Gru, z: &[f32], w: &GruWeights, b: usize, col: usize) -> Vec<Step> {
    let (steps_t, width, d, h) = (gru.seq.steps, gru.seq.width, gru.input, gru.hidden);
    let mut h_prev = vec![0.0f64; h];
    let mut steps = Vec::with_capacity(steps_t);
    for t in 0..steps_t {
        // Block b's rows, then step t's W rows, then sequence w.
        let row = b * steps_t * width + t * width + col;
        let x: Vec<f64> = z[row * d..(row + 1) * d]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let mut s = Step {
            row,
            h_prev: h_prev.clone(),
            r: vec![0.0; h],
            z: vec![0.0; h],
            n: vec![0.0; h],
            hn: vec![0.0; h],
            h: vec![0.0; h],
        };
        for j in 0..h {
            let (ir, iz, in_) = (
                affine(&w.weight_ih, &w.bias_ih, &x, j),
                affine(&w.weight_ih, &w.bias_ih, &x, h + j),
                affine(&w.weight_ih, &w.bias_ih, &x, 2 * h + j),
            );
            let (hr, hz, hn) = (
                affine(&w.weight_hh, &w.bias_hh, &h_prev, j),
                affine(&w.weight_hh, &w.bias_hh, &h_prev, h + j),
                affine(&w.weight_hh, &w.bias_hh, &h_prev, 2 * h + j),
            );
            s.r[j] = sigmoid(ir + hr);
            s.z[j] = sigmoid(iz + hz);
            s.n[j] = (in_ + s.r[j] * hn).tanh();
            s.hn[j] = hn;
            s.h[j] = (1.0 - s.z[j]) * s.n[j] + s.z[j] * h_prev[j];
        }
        h_prev = s.h.clone();
        steps.push(s);
    }
    steps
}

/// c [B*T*W, H] = the hidden state of every step of every sequence, in the input's layout.
pub fn forward(gru: &Gru, z: &[f32], w: &GruWeights, c: &mut [f32]) {
    let h = gru.hidden;
    for b in 0..gru.seq.blocks {
        for col in 0..gru.seq.width {
            for s in run_sequence(gru, z, w, b, col) {
                for j in 0..h {
                    c[s.row * h + j] = s.h[j] as f32;
                }
            }
        }
    }
}

/// Backward through time: dw += the parameter gradients, dz (+)= the input gradient
/// (overwritten unless `accumulate_dz`), given dc [B*T*W, H].
pub fn backward(
    gru: &Gru,
    z: &[f32],
    w: &GruWeights,
    dc: &[f32],
    dw: &mut GruWeights,
    dz: &mut [f32],
    accumulate_dz: bool,
) {
    let (d, h) = (gru.input, gru.hidden);
    let h3 = 3 * h;
    // Parameter gradients summed in f64, added once at the end.
    let mut gw_ih = vec![0.0f64; h3 * d];
    let mut gw_hh = vec![0.0f64; h3 * h];
    let mut gb_ih = vec![0.0f64; h3];
    let mut gb_hh = vec![0.0f64; h3];
    for b in 0..gru.seq.blocks {
        for col in 0..gru.seq.width {
            let steps = run_sequence(gru, z, w, b, col);
            // Gradient reaching h_t from step t+1.
            let mut carry = vec![0.0f64; h];
            for s in steps.iter().rev() {
                let x = &z[s.row * d..(s.row + 1) * d];
                // Pre-activation gradients: input side dgi, hidden side dgh (they differ in
                // the n block, where r scales the hidden projection).
                let mut dgi = vec![0.0f64; h3];
                let mut dgh = vec![0.0f64; h3];
                let mut next = vec![0.0f64; h];
                for j in 0..h {
                    let dh = dc[s.row * h + j] as f64 + carry[j];
                    let (r, zz, n) = (s.r[j], s.z[j], s.n[j]);
                    let dan = dh * (1.0 - zz) * (1.0 - n * n);
                    let daz = dh * (s.h_prev[j] - n) * zz * (1.0 - zz);
                    let dar = dan * s.hn[j] * r * (1.0 - r);
                    dgi[j] = dar;
                    dgi[h + j] = daz;
                    dgi[2 * h + j] = dan;
                    dgh[j] = dar;
                    dgh[h + j] = daz;
                    dgh[2 * h + j] = dan * r;
                    next[j] = dh * zz;
                }
                for g in 0..h3 {
                    gb_ih[g] += dgi[g];
                    gb_hh[g] += dgh[g];
                    for k in 0..d {
                        gw_ih[g * d + k] += dgi[g] * x[k] as f64;
                    }
                    for k in 0..h {
                        gw_hh[g * h + k] += dgh[g] * s.h_prev[k];
                        next[k] += dgh[g] * w.weight_hh[g * h + k] as f64;
                    }
                }
                for k in 0..d {
                    let v: f64 = (0..h3)
                        .map(|g| dgi[g] * w.weight_ih[g * d + k] as f64)
                        .sum();
                    let at = s.row * d + k;
                    dz[at] = if accumulate_dz {
                        dz[at] + v as f32
                    } else {
                        v as f32
                    };
                }
                carry = next;
            }
        }
    }
    let add = |acc: &mut [f32], g: &[f64]| {
        for (a, v) in acc.iter_mut().zip(g) {
            *a += *v as f32;
        }
    };
    add(&mut dw.weight_ih, &gw_ih);
    add(&mut dw.weight_hh, &gw_hh);
    add(&mut dw.bias_ih, &gb_ih);
    add(&mut dw.bias_hh, &gb_hh);
}
