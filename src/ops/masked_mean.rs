//! The mean over each sentence's words of the word conv's output, sentences of different
//! lengths in one padded batch (shaders/masked_mean.wgsl), and its backward.
//!
//! x [N, C, W] (the conv's output [N, C, 1, W]) and lengths [N] (u32, ops::embedding's
//! padded layout): y[n, c] = the mean of x[n, c, w] over w < valid_n. The conv's output
//! position w is inside sentence n when its window is centred on one of the sentence's
//! words: with stride 1 and 'same' padding (an odd kernel K padded by K / 2, so that the
//! output has the input's W positions) that is w < length_n, so valid_n = length_n. The
//! positions past it (where the conv sees only the sentence's last words and PAD's zeros,
//! and its bias) are never read. An empty sentence (length 0) gives y = 0 and passes no
//! gradient back, rather than 0 / 0.
//!
//! Its own op rather than a mode of ops::mean_pool: it binds the lengths (u32) besides
//! x and y, its divisor and the positions it reads differ per row, and mean_pool stays the
//! unmasked readout of images and audio, with nothing to check for it.
//!
//! Cost, for a batch whose N sentences hold P' <= N W words in all ([`forward_cost`],
//! [`backward_cost`]): the forward adds C P' floats and divides at most N C sums, reading
//! C P' floats and the N lengths and writing N C; the backward divides C P' gradients
//! (and adds N C W with `accumulate`), writing all N C W floats of dx (zeros past each
//! length; reading as many more where it adds) from dy (N C) and the lengths. The plan
//! does not know P': the launch's [`crate::gpu::Cost`] is the worst case P' = N W, and
//! model::cpc has [`Launch::cost_now`] count the batch last uploaded.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Cost, Gpu, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: MaskedMeanParams in shaders/masked_mean.wgsl.
    pub struct MaskedMeanParams {
        /// N C.
        pub rows: u32,
        pub channels: u32,
        pub width: u32,
        pub x_offset: u32,
        pub lengths_offset: u32,
        pub y_offset: u32,
        pub dy_offset: u32,
        pub dx_offset: u32,
        pub accumulate: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

const KERNEL: &str = "masked_mean";

/// x (or dx) [N, C, W], lengths [N] and y (or dy) [N, C] against `dims` = [N, C, W].
fn check(
    (x_name, x): (&str, &Tensor),
    lengths: &Tensor,
    (y_name, y): (&str, &Tensor),
    [n, c, w]: [usize; 3],
) -> Result<()> {
    if n * c * w == 0 {
        return shape_err(
            KERNEL,
            format!("empty [n, channels, width] = [{n}, {c}, {w}]"),
        );
    }
    if x.len() != n * c * w || lengths.len() != n || y.len() != n * c {
        return shape_err(
            KERNEL,
            format!(
                "{x_name} has shape {:?}, lengths {:?} and {y_name} {:?}, but [n, channels, width] = [{n}, {c}, {w}] needs {}, {n} and {} elements",
                x.shape,
                lengths.shape,
                y.shape,
                n * c * w,
                n * c
            ),
        );
    }
    Ok(())
}

/// The forward's cost on `dims` = [N, C, W] when the N sentences hold `words` words in
/// all: C additions a word and at most one division a row (none for an empty sentence);
/// reads the words' C values and the N lengths, writes N C.
pub fn forward_cost([n, c, _]: [usize; 3], words: usize) -> Cost {
    Cost::of((c * words + n * c) as u64, (c * words + n + n * c) as u64)
}

/// The backward's cost on `dims` = [N, C, W] when the N sentences hold `words` words: a
/// division for each word's C gradients, and with `accumulate` an addition for each of the
/// N C W elements of dx; writes all of dx (reading it too with `accumulate`), reads dy
/// (N C) and the lengths (N).
pub fn backward_cost([n, c, w]: [usize; 3], words: usize, accumulate: bool) -> Cost {
    let (all, adds) = (n * c * w, accumulate as usize);
    Cost::of(
        (c * words + adds * all) as u64,
        (all * (1 + adds) + n * c + n) as u64,
    )
}

/// The lengths the CPU references of `cpc profile --compare` run on: every one from 0 to W.
fn reference_lengths([n, _, w]: [usize; 3]) -> Vec<u32> {
    (0..n).map(|i| (i % (w + 1)) as u32).collect()
}

/// Plan y[n, c] = mean over w < lengths[n] of x[n, c, w] (0 for an empty sentence); `dims`
/// = [N, C, W]. Overwrites y.
pub fn forward(
    gpu: &Gpu,
    x: &Tensor,
    lengths: &Tensor,
    dims: [usize; 3],
    y: &Tensor,
) -> Result<Launch> {
    check(("x", x), lengths, ("y", y), dims)?;
    let rows = dims[0] * dims[1];
    let params = MaskedMeanParams {
        rows: rows as u32,
        channels: dims[1] as u32,
        width: dims[2] as u32,
        x_offset: rel_offset(gpu, x),
        lengths_offset: rel_offset(gpu, lengths),
        y_offset: rel_offset(gpu, y),
        ..Default::default()
    };
    let wg = spread(gpu, KERNEL, rows.div_ceil(256) as u64)?;
    Launch::with_bindings(
        gpu,
        Shader::MaskedMean,
        "forward",
        &[],
        &params,
        &[(1, x), (2, lengths), (3, y)],
        wg,
    )
    .map(|mut l| {
        let n = x.len();
        l.cost = forward_cost(dims, dims[0] * dims[2]);
        l.reference(move || {
            let mut y = vec![0.0; rows];
            crate::cpu::masked_mean::forward(&vec![0.5; n], &reference_lengths(dims), dims, &mut y);
        })
    })
}

/// Plan dx[n, c, w] (+)= dy[n, c] / lengths[n] where w < lengths[n], 0 elsewhere; `dims` =
/// [N, C, W]. Overwrites dx, or adds to it with `accumulate`.
pub fn backward(
    gpu: &Gpu,
    dy: &Tensor,
    lengths: &Tensor,
    dims: [usize; 3],
    dx: &Tensor,
    accumulate: bool,
) -> Result<Launch> {
    check(("dx", dx), lengths, ("dy", dy), dims)?;
    let params = MaskedMeanParams {
        rows: (dims[0] * dims[1]) as u32,
        channels: dims[1] as u32,
        width: dims[2] as u32,
        lengths_offset: rel_offset(gpu, lengths),
        dy_offset: rel_offset(gpu, dy),
        dx_offset: rel_offset(gpu, dx),
        accumulate: accumulate as u32,
        ..Default::default()
    };
    let n = dx.len();
    let wg = spread(gpu, KERNEL, n.div_ceil(256) as u64)?;
    Launch::with_bindings(
        gpu,
        Shader::MaskedMean,
        "backward",
        &[],
        &params,
        &[(2, lengths), (4, dy), (5, dx)],
        wg,
    )
    .map(|mut l| {
        l.cost = backward_cost(dims, dims[0] * dims[2], accumulate);
        l.reference(move || {
            let mut dx = vec![0.0; n];
            crate::cpu::masked_mean::backward(
                &vec![0.5; dims[0] * dims[1]],
                &reference_lengths(dims),
                dims,
                &mut dx,
                accumulate,
            );
        })
    })
}
