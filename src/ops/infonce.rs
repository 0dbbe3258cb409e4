//! The InfoNCE loss of CPC (shaders/infonce.wgsl, with matmul.wgsl for the scores and
//! their gradients). See docs/model.md, "Predictions and the InfoNCE loss".
//!
//! Z [B*T*W, D] holds the encoder's vectors in the layout of [`Sequences`]: row
//! n = (b * T + t) * W + w (vision: image b, grid row t, column w, T = W = G; audio: clip b,
//! frame t, W = 1). For step k with offset o_k the queries are every (b, t, w) with
//! t + o_k < T, in the order q = (b * (T - o_k) + t) * W + w (Q_k = B * (T - o_k) * W of
//! them); the model gives their predictions P_k [Q_k, D] = W_k c. Query q's true candidate
//! is z row (b * T + t + o_k) * W + w; every row of Z is a candidate.
//!
//! Forward, per k: S_k = P_k Z^T; per row a stable log-softmax, the row's loss
//! logsumexp - S[target], whether the target scores highest, and dS_k = (softmax - onehot) /
//! (Q_k K); then a reduce into `stats` [1 + 2K] = [loss, loss_0, accuracy_0, loss_1, ...],
//! loss = mean over k of loss_k. The forward saves S_k and dS_k (in scratch it owns).
//! Backward, per k: dP_k = dS_k Z (overwrite), dZ (+)= dS_k^T P_k.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, Launch, Shader, Tensor};
use crate::ops::copy_rows::CopyRows;
use crate::ops::matmul::{self, Matmul};
use crate::ops::sequences::Sequences;

crate::uniform_struct! {
    /// WGSL twin: InfonceParams in shaders/infonce.wgsl (both entry points).
    pub struct InfonceParams {
        pub queries: u32,
        pub candidates: u32,
        pub steps: u32,
        pub width: u32,
        pub offset: u32,
        pub scores_offset: u32,
        pub dscores_offset: u32,
        pub rows_offset: u32,
        pub stats_offset: u32,
        pub step: u32,
        pub accumulate: u32,
        pub scale: f32,
        pub inv_steps: f32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

/// The geometry of the loss: the layout of the vectors, their size D and the step offset
/// of each prediction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Infonce {
    pub seq: Sequences,
    pub dim: usize,
    /// o_k for k = 0..K, each in 1..T.
    pub offsets: Vec<usize>,
}

impl Infonce {
    pub fn new(seq: Sequences, dim: usize, offsets: Vec<usize>) -> Infonce {
        Infonce { seq, dim, offsets }
    }

    /// The default offsets for K steps: 2 ..= K + 1 (row r + 1 overlaps row r, a shortcut;
    /// docs/model.md, "Choices, and why").
    pub fn default_offsets(steps: usize) -> Vec<usize> {
        (2..steps + 2).collect()
    }

    /// K, the number of prediction steps.
    pub fn steps(&self) -> usize {
        self.offsets.len()
    }

    /// Rows of Z, all of them candidates: B * T * W.
    pub fn candidates(&self) -> usize {
        self.seq.rows()
    }

    /// Queries of one block at step k: (T - o_k) * W.
    fn block_queries(&self, k: usize) -> usize {
        (self.seq.steps - self.offsets[k]) * self.seq.width
    }

    /// Q_k = B * (T - o_k) * W.
    pub fn queries(&self, k: usize) -> usize {
        self.seq.blocks * self.block_queries(k)
    }

    /// The z row of query q's true candidate at step k: o_k steps (o_k * W rows) further on
    /// in the same block.
    pub fn target(&self, k: usize, q: usize) -> usize {
        let per_block = self.block_queries(k);
        let (b, tw) = (q / per_block, q % per_block);
        b * self.seq.block_rows() + self.offsets[k] * self.seq.width + tw
    }

    /// Length of the stats buffer: total loss, then (loss_k, accuracy_k) per step.
    pub fn stats_len(&self) -> usize {
        1 + 2 * self.steps()
    }

    /// The gather of step k's query contexts out of C [B*T*W, hidden]: the first T - o_k
    /// steps of every block, in query order.
    pub fn context_rows(&self, k: usize, hidden: usize) -> CopyRows {
        CopyRows {
            blocks: self.seq.blocks,
            rows_per_block: self.block_queries(k),
            width: hidden,
            offset: 0,
            block_stride: self.seq.block_rows() * hidden,
        }
    }

    fn describe(&self) -> String {
        let s = self.seq;
        format!(
            "B={} T={} W={} D={} offsets={:?}",
            s.blocks, s.steps, s.width, self.dim, self.offsets
        )
    }

    /// The geometry itself: at least one step, every offset leaves some queries.
    fn check_geometry(&self) -> Result<()> {
        if self.seq.is_empty() || self.dim == 0 || self.offsets.is_empty() {
            return shape_err("infonce", format!("empty geometry: {}", self.describe()));
        }
        if let Some(o) = self
            .offsets
            .iter()
            .find(|&&o| o == 0 || o >= self.seq.steps)
        {
            return shape_err(
                "infonce",
                format!(
                    "offset {o} leaves no queries or predicts the query's own row: {}",
                    self.describe()
                ),
            );
        }
        Ok(())
    }

    /// Predictions [Q_k, D] per step, Z [B*T*W, D].
    fn check(&self, what: &str, preds: &[Tensor], z: &Tensor) -> Result<()> {
        self.check_geometry()?;
        if preds.len() != self.steps() {
            return shape_err(
                "infonce",
                format!("{} {what} tensors for {}", preds.len(), self.describe()),
            );
        }
        for (k, p) in preds.iter().enumerate() {
            if p.len() != self.queries(k) * self.dim {
                return shape_err(
                    "infonce",
                    format!(
                        "{what}[{k}] has shape {:?} but {} needs [{}, {}]",
                        p.shape,
                        self.describe(),
                        self.queries(k),
                        self.dim
                    ),
                );
            }
        }
        if z.len() != self.candidates() * self.dim {
            return shape_err(
                "infonce",
                format!(
                    "z has shape {:?} but {} needs [{}, {}]",
                    z.shape,
                    self.describe(),
                    self.candidates(),
                    self.dim
                ),
            );
        }
        Ok(())
    }

    /// S_k = P_k Z^T: [Q_k, D] x [B*T*W, D]^T.
    fn scores_matmul(&self, k: usize) -> Matmul {
        Matmul::new(1, self.queries(k), self.candidates(), self.dim).trans_b(true)
    }
}

/// The stats buffer read back on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct InfonceStats {
    /// Mean of loss_k over k.
    pub loss: f32,
    pub loss_k: Vec<f32>,
    /// Share of step k's queries whose true candidate scores highest.
    pub accuracy_k: Vec<f32>,
}

impl InfonceStats {
    /// Unpack [loss, loss_0, accuracy_0, loss_1, accuracy_1, ...].
    pub fn from_slice(stats: &[f32]) -> InfonceStats {
        let per_step = &stats[1..];
        InfonceStats {
            loss: stats[0],
            loss_k: per_step.iter().step_by(2).copied().collect(),
            accuracy_k: per_step.iter().skip(1).step_by(2).copied().collect(),
        }
    }
}

/// The planned forward and what it saves for the backward.
pub struct InfonceForward {
    pub shape: Infonce,
    /// Per step: scores matmul, infonce_rows, infonce_reduce.
    pub launches: Vec<Launch>,
    /// S_k [Q_k, B*G*G] per step.
    pub scores: Vec<Tensor>,
    /// dS_k [Q_k, B*G*G] per step: the loss's gradient with respect to S_k.
    pub dscores: Vec<Tensor>,
    /// [Q_k, 2] per step: each query's loss and whether it was right (1 or 0).
    pub row_stats: Vec<Tensor>,
}

/// Plan the loss of predictions `preds` (one [Q_k, D] per step) against `z` [B*T*W, D],
/// writing `stats` [1 + 2K] and, for the backward, dS_k. Allocates the scratch it needs.
pub fn forward(
    gpu: &Gpu,
    inf: &Infonce,
    preds: &[Tensor],
    z: &Tensor,
    stats: &Tensor,
) -> Result<InfonceForward> {
    inf.check("preds", preds, z)?;
    if stats.len() != inf.stats_len() {
        return shape_err(
            "infonce",
            format!(
                "stats has shape {:?} but {} needs [{}]",
                stats.shape,
                inf.describe(),
                inf.stats_len()
            ),
        );
    }
    let n = inf.candidates();
    let mut fwd = InfonceForward {
        shape: inf.clone(),
        launches: Vec::new(),
        scores: Vec::new(),
        dscores: Vec::new(),
        row_stats: Vec::new(),
    };
    for (k, p) in preds.iter().enumerate() {
        let q = inf.queries(k);
        let scores = Tensor::zeros(gpu, "infonce scores", &[q, n])?;
        let dscores = Tensor::zeros(gpu, "infonce dscores", &[q, n])?;
        let row_stats = Tensor::zeros(gpu, "infonce row stats", &[q, 2])?;
        let params = InfonceParams {
            queries: q as u32,
            candidates: n as u32,
            steps: inf.seq.steps as u32,
            width: inf.seq.width as u32,
            offset: inf.offsets[k] as u32,
            scores_offset: rel_offset(gpu, &scores),
            dscores_offset: rel_offset(gpu, &dscores),
            rows_offset: rel_offset(gpu, &row_stats),
            stats_offset: rel_offset(gpu, stats),
            step: k as u32,
            // The first step overwrites the total loss, the others add to it.
            accumulate: (k > 0) as u32,
            scale: 1.0 / (q * inf.steps()) as f32,
            inv_steps: 1.0 / inf.steps() as f32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        };
        // S_k = P_k Z^T.
        fwd.launches
            .push(matmul::forward(gpu, &inf.scores_matmul(k), p, z, &scores)?);
        // Per query: loss, correct, dS; a team of invocations per query (a thread, or a
        // subgroup).
        let (constants, groups) = gpu.row_dispatch(q);
        fwd.launches.push(
            Launch::new(
                gpu,
                Shader::Infonce,
                "infonce_rows",
                &constants,
                &params,
                &[&scores, &dscores, &row_stats],
                spread(gpu, "infonce_rows", groups)?,
            )?
            // Per score: max, exp, sum, then softmax minus one-hot (~8 FLOPs, exp counted once);
            // scores read twice, dS written once.
            .cost(8 * (q * n) as u64, (3 * q * n) as u64)
            .reference({
                let (inf, k) = (inf.clone(), k);
                move || {
                    crate::cpu::infonce::rows(&inf, k, &vec![0.5; q * n]);
                }
            }),
        );
        // Means over the queries into stats; the total over steps accumulates.
        fwd.launches.push(
            Launch::new(
                gpu,
                Shader::Infonce,
                "infonce_reduce",
                &[],
                &params,
                &[&row_stats, stats],
                [1, 1, 1],
            )?
            .cost(2 * q as u64, 2 * q as u64),
        );
        fwd.scores.push(scores);
        fwd.dscores.push(dscores);
        fwd.row_stats.push(row_stats);
    }
    Ok(fwd)
}

/// Plan dP_k = dS_k Z (overwrite) for every step and dZ (+)= sum_k dS_k^T P_k: with
/// `accumulate` false the first step overwrites dZ, else every step adds to it.
pub fn backward(
    gpu: &Gpu,
    fwd: &InfonceForward,
    preds: &[Tensor],
    z: &Tensor,
    dpreds: &[Tensor],
    dz: &Tensor,
    accumulate: bool,
) -> Result<Vec<Launch>> {
    let inf = &fwd.shape;
    inf.check("preds", preds, z)?;
    inf.check("dpreds", dpreds, dz)?;
    let (n, d) = (inf.candidates(), inf.dim);
    let mut launches = Vec::new();
    for k in 0..inf.steps() {
        let q = inf.queries(k);
        // dP_k [Q_k, D] = dS_k [Q_k, N] Z [N, D].
        let dp = Matmul::new(1, q, d, n);
        launches.push(matmul::forward(gpu, &dp, &fwd.dscores[k], z, &dpreds[k])?);
        // dZ [N, D] (+)= dS_k^T [N, Q_k] P_k [Q_k, D].
        let dzk = Matmul::new(1, n, d, q)
            .trans_a(true)
            .accumulate(accumulate || k > 0);
        launches.push(matmul::forward(gpu, &dzk, &fwd.dscores[k], &preds[k], dz)?);
    }
    Ok(launches)
}
