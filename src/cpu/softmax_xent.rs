//! CPU reference of ops::softmax_xent, in f64.

use crate::ops::softmax_xent::SoftmaxXent;

/// What the kernel writes, per row.
#[derive(Clone, Debug, PartialEq)]
pub struct XentRows {
    /// log(sum_c exp(l_c)) - l_t.
    pub loss: Vec<f64>,
    /// No class scores strictly above the target.
    pub top1: Vec<bool>,
    /// Fewer than five classes score strictly above the target.
    pub top5: Vec<bool>,
    /// [rows, classes]: (softmax - onehot) * scale.
    pub dlogits: Vec<f64>,
}

impl XentRows {
    /// Mean loss, top-1 and top-5 over the rows.
    pub fn means(&self) -> [f64; 3] {
        let n = self.loss.len() as f64;
        let count = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / n;
        [
            self.loss.iter().sum::<f64>() / n,
            count(&self.top1),
            count(&self.top5),
        ]
    }
}

/// Logits l = scores + bias per row, against `labels` (class indices as f32).
pub fn forward(
    sx: &SoftmaxXent,
    scores: &[f32],
    bias: &[f32],
    labels: &[f32],
    scale: f32,
) -> XentRows {
    let c = sx.classes;
    let mut out = XentRows {
        loss: Vec::new(),
        top1: Vec::new(),
        top5: Vec::new(),
        dlogits: Vec::new(),
    };
    for n in 0..sx.rows {
        let logits: Vec<f64> = (0..c)
            .map(|j| scores[n * c + j] as f64 + bias[j] as f64)
            .collect();
        let t = labels[n] as usize;
        let m = logits.iter().cloned().fold(f64::MIN, f64::max);
        let e: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        out.loss.push(e.ln() + m - logits[t]);
        let rank = logits.iter().filter(|&&l| l > logits[t]).count();
        out.top1.push(rank < 1);
        out.top5.push(rank < 5);
        for (j, l) in logits.iter().enumerate() {
            let onehot = if j == t { 1.0 } else { 0.0 };
            out.dlogits
                .push(((l - m).exp() / e - onehot) * scale as f64);
        }
    }
    out
}
