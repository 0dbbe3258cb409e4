//! CPU reference of ops::infonce, from the definition in f64.

use crate::ops::infonce::Infonce;

/// What the forward computes, in f64, with the scores and their gradient.
#[derive(Clone, Debug)]
pub struct InfonceReference {
    /// Mean over k of loss_k.
    pub loss: f64,
    pub loss_k: Vec<f64>,
    pub accuracy_k: Vec<f64>,
    /// S_k [Q_k, B*T*W] per step.
    pub scores: Vec<Vec<f64>>,
    /// dS_k = d loss / d S_k, per step.
    pub dscores: Vec<Vec<f64>>,
}

impl InfonceReference {
    /// The GPU's stats layout: [loss, loss_0, accuracy_0, loss_1, accuracy_1, ...].
    pub fn stats(&self) -> Vec<f32> {
        let mut s = vec![self.loss as f32];
        for (l, a) in self.loss_k.iter().zip(&self.accuracy_k) {
            s.extend([*l as f32, *a as f32]);
        }
        s
    }
}

/// One step's rows: each query's loss, whether its target scored highest, and dS_k.
#[derive(Clone, Debug)]
pub struct InfonceRows {
    pub loss: Vec<f64>,
    pub correct: Vec<bool>,
    pub dscores: Vec<f64>,
}

/// Step k's query targets from the definition: query (b, t, w), t + o_k < T, is number
/// (b * (T - o_k) + t) * W + w and predicts z row (b * T + t + o_k) * W + w.
pub fn targets(inf: &Infonce, k: usize) -> Vec<usize> {
    let (steps, width, o) = (inf.seq.steps, inf.seq.width, inf.offsets[k]);
    let mut targets = vec![usize::MAX; inf.queries(k)];
    for b in 0..inf.seq.blocks {
        for t in 0..steps - o {
            for w in 0..width {
                targets[(b * (steps - o) + t) * width + w] = (b * steps + t + o) * width + w;
            }
        }
    }
    targets
}

/// The infonce_rows entry: log-softmax of each row of S_k [Q_k, B*T*W] at its target, and
/// dS = (softmax - onehot) / (Q_k K).
pub fn rows(inf: &Infonce, k: usize, scores: &[f64]) -> InfonceRows {
    let n = inf.candidates();
    let q_count = inf.queries(k);
    let targets = targets(inf, k);
    let scale = 1.0 / (q_count * inf.steps()) as f64;
    let mut out = InfonceRows {
        loss: Vec::with_capacity(q_count),
        correct: Vec::with_capacity(q_count),
        dscores: vec![0.0; q_count * n],
    };
    for q in 0..q_count {
        let row = &scores[q * n..(q + 1) * n];
        let t = targets[q];
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|s| (s - max).exp()).sum();
        out.loss.push(sum.ln() + max - row[t]);
        // Right only when the true candidate scores strictly highest: a tie is wrong.
        let rival = row
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != t)
            .map(|(_, &s)| s)
            .fold(f64::NEG_INFINITY, f64::max);
        out.correct.push(row[t] > rival);
        for (j, s) in row.iter().enumerate() {
            let onehot = if j == t { 1.0 } else { 0.0 };
            out.dscores[q * n + j] = ((s - max).exp() / sum - onehot) * scale;
        }
    }
    out
}

/// The loss of predictions `preds` (one [Q_k, D] per step) against z [B*G*G, D].
pub fn forward(inf: &Infonce, preds: &[Vec<f32>], z: &[f32]) -> InfonceReference {
    let (d, n) = (inf.dim, inf.candidates());
    let mut r = InfonceReference {
        loss: 0.0,
        loss_k: Vec::new(),
        accuracy_k: Vec::new(),
        scores: Vec::new(),
        dscores: Vec::new(),
    };
    for (k, p) in preds.iter().enumerate() {
        let q_count = inf.queries(k);
        let mut scores = vec![0.0f64; q_count * n];
        for q in 0..q_count {
            for j in 0..n {
                scores[q * n + j] = (0..d)
                    .map(|i| p[q * d + i] as f64 * z[j * d + i] as f64)
                    .sum();
            }
        }
        let rows = rows(inf, k, &scores);
        let loss_k = rows.loss.iter().sum::<f64>() / q_count as f64;
        let correct = rows.correct.iter().filter(|&&c| c).count();
        r.loss += loss_k / inf.steps() as f64;
        r.loss_k.push(loss_k);
        r.accuracy_k.push(correct as f64 / q_count as f64);
        r.scores.push(scores);
        r.dscores.push(rows.dscores);
    }
    r
}

/// dP_k = dS_k Z (overwrite) and dZ (+)= sum_k dS_k^T P_k (the first step overwrites
/// unless `accumulate`).
pub fn backward(
    inf: &Infonce,
    preds: &[Vec<f32>],
    z: &[f32],
    dscores: &[Vec<f64>],
    dpreds: &mut [Vec<f32>],
    dz: &mut [f32],
    accumulate: bool,
) {
    let (d, n) = (inf.dim, inf.candidates());
    let mut dz64: Vec<f64> = if accumulate {
        dz.iter().map(|&v| v as f64).collect()
    } else {
        vec![0.0; dz.len()]
    };
    for k in 0..inf.steps() {
        for q in 0..inf.queries(k) {
            for i in 0..d {
                let mut s = 0.0;
                for j in 0..n {
                    let ds = dscores[k][q * n + j];
                    s += ds * z[j * d + i] as f64;
                    dz64[j * d + i] += ds * preds[k][q * d + i] as f64;
                }
                dpreds[k][q * d + i] = s as f32;
            }
        }
    }
    for (o, v) in dz.iter_mut().zip(dz64) {
        *o = v as f32;
    }
}
