//! The autoregressive GRU (shaders/gru.wgsl plus ops::matmul and ops::sum_channels): one GRU
//! runs along every sequence of an [`Sequences`] layout at once, S = B*W sequences of T steps
//! (vision: down each column of every image's G x G patch grid; audio: along each clip).
//!
//! Equations as PyTorch's torch.nn.GRU (gate order r, z, n; the reset gate scales the hidden
//! projection including its bias), h_0 = 0:
//!   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
//!   z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
//!   n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//!   h' = (1 - z) * n + z * h
//!
//! Input z and output c are in the sequences' layout [B*T*W, D] and [B*T*W, H], row
//! (b*T + t)*W + w for block b, step t and sequence w of the block.
//! The op's own buffers are time-major, row t*S + s with S = B*W and s = b*W + w, so the rows
//! of one step are contiguous and each step's matrix product is a single plain matmul.
//!
//! Forward: gi = Z W_ih^T (one matmul), then for t = 0..T: gh = Hprev_t W_hh^T (not at t = 0,
//! where h = 0) and gates_forward. It saves, time-major: the gates r, z, n and W_hn h + b_hn,
//! and every step's previous hidden state Hprev, so the weight gradient is one matmul.
//!
//! Backward, t = T-1 down to 0: gates_backward (dh = dC + carry) gives dGi and dGh of step t
//! and carry = dh * z; then carry += dGh_t W_hh (not at t = 0). Afterwards dW_ih += dGi^T Z,
//! dW_hh += dGh^T Hprev, db_ih += column sums of dGi, db_hh += column sums of dGh, and
//! dZ (+)= dGi W_ih. Parameter gradients accumulate; dZ overwrites unless asked to add.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, Launch, Shader, Tensor};
use crate::ops::matmul::{self, Matmul};
use crate::ops::sequences::Sequences;
use crate::ops::sum_channels;

crate::uniform_struct! {
    /// WGSL twin: GruForwardParams in shaders/gru.wgsl.
    pub struct GruForwardParams {
        pub seqs: u32,
        pub steps: u32,
        pub width: u32,
        pub hidden: u32,
        pub step: u32,
        pub gi_offset: u32,
        pub gh_offset: u32,
        pub b_ih_offset: u32,
        pub b_hh_offset: u32,
        pub c_offset: u32,
        pub hprev_offset: u32,
        pub gates_offset: u32,
    }
}

crate::uniform_struct! {
    /// WGSL twin: GruBackwardParams in shaders/gru.wgsl.
    pub struct GruBackwardParams {
        pub seqs: u32,
        pub steps: u32,
        pub width: u32,
        pub hidden: u32,
        pub step: u32,
        pub dc_offset: u32,
        pub gates_offset: u32,
        pub hprev_offset: u32,
        pub carry_offset: u32,
        pub dgi_offset: u32,
        pub dgh_offset: u32,
        pub _pad0: u32,
    }
}

/// The shape of the problem: input vectors of size D laid out as `seq` says, hidden size H.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gru {
    pub seq: Sequences,
    pub input: usize,
    pub hidden: usize,
}

impl Gru {
    /// Independent sequences: B*W.
    pub fn seqs(&self) -> usize {
        self.seq.seqs()
    }

    /// Rows of z and c: B*T*W.
    pub fn rows(&self) -> usize {
        self.seq.rows()
    }

    /// Time steps T.
    pub fn steps(&self) -> usize {
        self.seq.steps
    }
}

/// The four parameters (or their gradients), views into any buffers, as in torch.nn.GRU.
#[derive(Clone, Debug)]
pub struct GruWeights {
    /// [3H, D], rows r, z, n
    pub weight_ih: Tensor,
    /// [3H, H]
    pub weight_hh: Tensor,
    /// [3H]
    pub bias_ih: Tensor,
    /// [3H]
    pub bias_hh: Tensor,
}

/// The planned forward with the buffers it owns (time-major ones have row t*S + s).
pub struct GruForward {
    pub gru: Gru,
    /// In order: gi matmul, then per step (gh matmul unless t = 0, gates_forward).
    pub launches: Vec<Launch>,
    /// [B*T*W, 3H] patch layout: Z W_ih^T, no bias.
    pub gi: Tensor,
    /// [S, 3H]: Hprev_t W_hh^T of the current step, no bias.
    pub gh: Tensor,
    /// [T*S, 4H] time-major, saved for the backward: r, z, n, W_hn h_prev + b_hn.
    pub gates: Tensor,
    /// [T*S, H] time-major, saved for the backward: the hidden state each step started from.
    pub hprev: Tensor,
}

/// The planned backward with the buffers it owns.
pub struct GruBackward {
    /// In order: per step from t = T-1 down (gates_backward, carry matmul unless t = 0),
    /// then dW_ih, dW_hh, db_ih, db_hh, dZ.
    pub launches: Vec<Launch>,
    /// [B*T*W, 3H] patch layout: gradient of W_ih x + b_ih.
    pub dgi: Tensor,
    /// [T*S, 3H] time-major: gradient of W_hh h_prev + b_hh.
    pub dgh: Tensor,
    /// [S, H]: gradient reaching h_{t-1} from step t.
    pub carry: Tensor,
}

fn check_len(what: &str, t: &Tensor, want: &[usize], gru: &Gru) -> Result<()> {
    let n: usize = want.iter().product();
    if t.len() != n {
        return shape_err(
            "gru",
            format!(
                "{what} has shape {:?} ({} elements) but {gru:?} needs {want:?}",
                t.shape,
                t.len()
            ),
        );
    }
    Ok(())
}

fn check_weights(gru: &Gru, w: &GruWeights, grad: bool) -> Result<()> {
    let (d, h3) = (gru.input, 3 * gru.hidden);
    let p = if grad { "d" } else { "" };
    check_len(&format!("{p}weight_ih"), &w.weight_ih, &[h3, d], gru)?;
    check_len(
        &format!("{p}weight_hh"),
        &w.weight_hh,
        &[h3, gru.hidden],
        gru,
    )?;
    check_len(&format!("{p}bias_ih"), &w.bias_ih, &[h3], gru)?;
    check_len(&format!("{p}bias_hh"), &w.bias_hh, &[h3], gru)
}

fn check_gru(gru: &Gru) -> Result<()> {
    if gru.seq.is_empty() || gru.input == 0 || gru.hidden == 0 {
        return shape_err("gru", format!("empty problem {gru:?}"));
    }
    Ok(())
}

/// Plan C = GRU(Z) down every column: z [B*T*W, D] -> c [B*T*W, H]. Allocates the op's
/// buffers once; the launches may be recorded any number of times.
pub fn forward(gpu: &Gpu, gru: &Gru, z: &Tensor, w: &GruWeights, c: &Tensor) -> Result<GruForward> {
    check_gru(gru)?;
    let (n, s, d, h) = (gru.rows(), gru.seqs(), gru.input, gru.hidden);
    check_len("z", z, &[n, d], gru)?;
    check_len("c", c, &[n, h], gru)?;
    check_weights(gru, w, false)?;

    let gi = Tensor::zeros(gpu, "gru.gi", &[n, 3 * h])?;
    let gh = Tensor::zeros(gpu, "gru.gh", &[s, 3 * h])?;
    let gates = Tensor::zeros(gpu, "gru.gates", &[gru.steps() * s, 4 * h])?;
    let hprev = Tensor::zeros(gpu, "gru.hprev", &[gru.steps() * s, h])?;

    let mut launches = Vec::with_capacity(2 * gru.steps());
    // gi = Z W_ih^T, all steps at once.
    let mm_gi = Matmul::new(1, n, 3 * h, d).trans_b(true);
    launches.push(matmul::forward(gpu, &mm_gi, z, &w.weight_ih, &gi)?);
    let wg = spread(gpu, "gates_forward", (s * h).div_ceil(64) as u64)?;
    for t in 0..gru.steps() {
        if t > 0 {
            // gh = Hprev_t W_hh^T; Hprev_t was written by the previous step's gates_forward.
            let hp = hprev.view(t * s * h, &[s, h]);
            let mm_gh = Matmul::new(1, s, 3 * h, h).trans_b(true);
            launches.push(matmul::forward(gpu, &mm_gh, &hp, &w.weight_hh, &gh)?);
        }
        let params = GruForwardParams {
            seqs: s as u32,
            steps: gru.seq.steps as u32,
            width: gru.seq.width as u32,
            hidden: h as u32,
            step: t as u32,
            gi_offset: rel_offset(gpu, &gi),
            gh_offset: rel_offset(gpu, &gh),
            b_ih_offset: rel_offset(gpu, &w.bias_ih),
            b_hh_offset: rel_offset(gpu, &w.bias_hh),
            c_offset: rel_offset(gpu, c),
            hprev_offset: rel_offset(gpu, &hprev),
            gates_offset: rel_offset(gpu, &gates),
        };
        launches.push(
            Launch::new(
                gpu,
                Shader::Gru,
                "gates_forward",
                &[],
                &params,
                &[&gi, &gh, &w.bias_ih, &w.bias_hh, c, &hprev, &gates],
                wg,
            )?
            // Per element: bias adds, two sigmoids, a tanh and the blend (~20 FLOPs); reads gi,
            // gh and h, writes h, hprev and four saved values.
            .cost(20 * (s * h) as u64, (13 * s * h) as u64),
        );
    }
    Ok(GruForward {
        gru: *gru,
        launches,
        gi,
        gh,
        gates,
        hprev,
    })
}

/// Plan the backward of `fwd` given dc [B*T*W, H]: the parameter gradients in `dw`
/// accumulate (+=); dz [B*T*W, D] is overwritten, or added to when `accumulate_dz`.
/// z and w are the forward's inputs; the launches read what `fwd` saved.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    fwd: &GruForward,
    z: &Tensor,
    w: &GruWeights,
    dc: &Tensor,
    dw: &GruWeights,
    dz: &Tensor,
    accumulate_dz: bool,
) -> Result<GruBackward> {
    let gru = &fwd.gru;
    let (n, s, d, h) = (gru.rows(), gru.seqs(), gru.input, gru.hidden);
    check_len("z", z, &[n, d], gru)?;
    check_len("dc", dc, &[n, h], gru)?;
    check_len("dz", dz, &[n, d], gru)?;
    check_weights(gru, w, false)?;
    check_weights(gru, dw, true)?;

    let dgi = Tensor::zeros(gpu, "gru.dgi", &[n, 3 * h])?;
    let dgh = Tensor::zeros(gpu, "gru.dgh", &[gru.steps() * s, 3 * h])?;
    let carry = Tensor::zeros(gpu, "gru.carry", &[s, h])?;

    let mut launches = Vec::with_capacity(2 * gru.steps() + 5);
    let wg = spread(gpu, "gates_backward", (s * h).div_ceil(64) as u64)?;
    // Backward through time: up the rows.
    for t in (0..gru.steps()).rev() {
        let params = GruBackwardParams {
            seqs: s as u32,
            steps: gru.seq.steps as u32,
            width: gru.seq.width as u32,
            hidden: h as u32,
            step: t as u32,
            dc_offset: rel_offset(gpu, dc),
            gates_offset: rel_offset(gpu, &fwd.gates),
            hprev_offset: rel_offset(gpu, &fwd.hprev),
            carry_offset: rel_offset(gpu, &carry),
            dgi_offset: rel_offset(gpu, &dgi),
            dgh_offset: rel_offset(gpu, &dgh),
            _pad0: 0,
        };
        launches.push(
            Launch::new(
                gpu,
                Shader::Gru,
                "gates_backward",
                &[],
                &params,
                &[dc, &fwd.gates, &fwd.hprev, &carry, &dgi, &dgh],
                wg,
            )?
            .cost(25 * (s * h) as u64, (13 * s * h) as u64),
        );
        if t > 0 {
            // carry += dGh_t W_hh: the rest of the gradient reaching h_{t-1}.
            let dgh_t = dgh.view(t * s * 3 * h, &[s, 3 * h]);
            let mm = Matmul::new(1, s, h, 3 * h).accumulate(true);
            launches.push(matmul::forward(gpu, &mm, &dgh_t, &w.weight_hh, &carry)?);
        }
    }
    // dW_ih += dGi^T Z and dW_hh += dGh^T Hprev, over all rows of all steps.
    let mm = Matmul::new(1, 3 * h, d, n).trans_a(true).accumulate(true);
    launches.push(matmul::forward(gpu, &mm, &dgi, z, &dw.weight_ih)?);
    let mm = Matmul::new(1, 3 * h, h, n).trans_a(true).accumulate(true);
    launches.push(matmul::forward(gpu, &mm, &dgh, &fwd.hprev, &dw.weight_hh)?);
    // Bias gradients: column sums (b_hh gets one at t = 0 too, although h_0 = 0).
    launches.push(sum_channels::launch(
        gpu,
        &dgi,
        [n, 3 * h, 1],
        &dw.bias_ih,
        1.0,
        true,
    )?);
    launches.push(sum_channels::launch(
        gpu,
        &dgh,
        [n, 3 * h, 1],
        &dw.bias_hh,
        1.0,
        true,
    )?);
    // dZ (+)= dGi W_ih.
    let mm = Matmul::new(1, n, d, 3 * h).accumulate(accumulate_dz);
    launches.push(matmul::forward(gpu, &mm, &dgi, &w.weight_ih, dz)?);
    Ok(GruBackward {
        launches,
        dgi,
        dgh,
        carry,
    })
}
