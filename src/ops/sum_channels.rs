//! Sum over all but one axis (shaders/sum_channels.wgsl): x [outer, C, inner] -> out [C].
//! Bias gradients and the final reduction of split partial sums use it.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: SumChannelsParams in shaders/sum_channels.wgsl.
    pub struct SumChannelsParams {
        pub outer: u32,
        pub channels: u32,
        pub inner: u32,
        pub x_offset: u32,
        pub out_offset: u32,
        pub accumulate: u32,
        pub alpha: f32,
        pub _pad: u32,
    }
}

/// Longest sum (outer * inner) taken by one thread rather than a workgroup.
pub const PER_THREAD_MAX: usize = 64;

/// Plan out[c] (+)= alpha * sum_{o, i} x[o, c, i] for x viewed as [outer, channels, inner].
pub fn launch(
    gpu: &Gpu,
    x: &Tensor,
    [outer, channels, inner]: [usize; 3],
    out: &Tensor,
    alpha: f32,
    accumulate: bool,
) -> Result<Launch> {
    let kernel = "sum_channels";
    if x.len() != outer * channels * inner || out.len() != channels {
        return shape_err(
            kernel,
            format!(
                "x has shape {:?} and out {:?}, but [outer, channels, inner] = [{outer}, {channels}, {inner}] \
                 needs {} and {channels} elements",
                x.shape,
                out.shape,
                outer * channels * inner
            ),
        );
    }
    let params = SumChannelsParams {
        outer: outer as u32,
        channels: channels as u32,
        inner: inner as u32,
        x_offset: rel_offset(gpu, x),
        out_offset: rel_offset(gpu, out),
        accumulate: accumulate as u32,
        alpha,
        _pad: 0,
    };
    // A workgroup per channel pays off for long sums, with vec4 loads where the inner rows
    // allow; short ones (the split partial sums of the conv weight gradient) take one thread
    // per channel.
    let (entry, groups) = if outer * inner <= PER_THREAD_MAX {
        ("per_thread", channels.div_ceil(256))
    } else if inner.is_multiple_of(4) && params.x_offset.is_multiple_of(4) {
        ("main_vec4", channels)
    } else {
        ("main", channels)
    };
    let wg = spread(gpu, kernel, groups as u64)?;
    let n = outer * channels * inner;
    Launch::new(gpu, Shader::SumChannels, entry, &[], &params, &[x, out], wg).map(|l| {
        l.cost(n as u64, (n + channels) as u64).reference(move || {
            let mut out = vec![0.0; channels];
            crate::cpu::sum_channels::launch(
                &vec![0.5; n],
                [outer, channels, inner],
                &mut out,
                alpha,
                accumulate,
            );
        })
    })
}
