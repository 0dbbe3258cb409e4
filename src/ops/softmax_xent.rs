//! Soft-max cross-entropy of a linear classifier (shaders/softmax_xent.wgsl): per row, the
//! loss of logits = scores + bias against a class label, whether the label is in the top 1
//! and top 5, and the loss's gradient with respect to the logits, in one pass.
//!
//! The classifier around it (eval::probe) is a flat list of launches:
//!   forward   scores = X W^T (matmul), softmax_xent -> row_stats [rows, 3], dlogits
//!   summary   stats [3] = mean over rows of (loss, top1, top5) (sum_channels)
//!   backward  dW = dlogits^T X (matmul), db = sum over rows of dlogits (sum_channels)
//! Labels are class indices stored as exact f32 (integers below 2^24), checked on the host.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: SoftmaxXentParams in shaders/softmax_xent.wgsl.
    pub struct SoftmaxXentParams {
        pub rows: u32,
        pub classes: u32,
        pub scores_offset: u32,
        pub bias_offset: u32,
        pub labels_offset: u32,
        pub dlogits_offset: u32,
        pub stats_offset: u32,
        pub scale: f32,
    }
}

/// Columns of `row_stats`: loss, top-1 hit (1 or 0), top-5 hit (1 or 0).
pub const ROW_STATS: usize = 3;

/// Rows (examples) and classes of one loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftmaxXent {
    pub rows: usize,
    pub classes: usize,
}

impl SoftmaxXent {
    fn check(
        &self,
        scores: &Tensor,
        bias: &Tensor,
        labels: &Tensor,
        dlogits: &Tensor,
        row_stats: &Tensor,
    ) -> Result<()> {
        let (r, c) = (self.rows, self.classes);
        if r == 0 || c == 0 {
            return shape_err(
                "softmax_xent",
                format!("empty problem: rows={r} classes={c}"),
            );
        }
        for (name, t, want) in [
            ("scores", scores, vec![r, c]),
            ("bias", bias, vec![c]),
            ("labels", labels, vec![r]),
            ("dlogits", dlogits, vec![r, c]),
            ("row_stats", row_stats, vec![r, ROW_STATS]),
        ] {
            if t.len() != want.iter().product::<usize>() {
                return shape_err(
                    "softmax_xent",
                    format!(
                        "{name} has shape {:?} but rows={r} classes={c} needs {want:?}",
                        t.shape
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Plan the loss of `scores` [rows, classes] + `bias` [classes] against `labels` [rows]:
/// overwrites `row_stats` [rows, 3] (loss, top1, top5) and `dlogits` [rows, classes]
/// = (softmax - onehot) * `scale` (1 / rows: the gradient of the mean loss).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    gpu: &Gpu,
    sx: &SoftmaxXent,
    scores: &Tensor,
    bias: &Tensor,
    labels: &Tensor,
    dlogits: &Tensor,
    row_stats: &Tensor,
    scale: f32,
) -> Result<Launch> {
    sx.check(scores, bias, labels, dlogits, row_stats)?;
    let params = SoftmaxXentParams {
        rows: sx.rows as u32,
        classes: sx.classes as u32,
        scores_offset: rel_offset(gpu, scores),
        bias_offset: rel_offset(gpu, bias),
        labels_offset: rel_offset(gpu, labels),
        dlogits_offset: rel_offset(gpu, dlogits),
        stats_offset: rel_offset(gpu, row_stats),
        scale,
    };
    // A team of invocations per row: one thread, or one subgroup.
    let (constants, groups) = gpu.row_dispatch(sx.rows);
    let wg = spread(gpu, "softmax_xent", groups)?;
    Launch::new(
        gpu,
        Shader::SoftmaxXent,
        "main",
        &constants,
        &params,
        &[scores, bias, labels, dlogits, row_stats],
        wg,
    )
}
