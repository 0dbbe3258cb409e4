//! Layer norm over each sample's channels and positions (group norm with one group), forward
//! and backward (shaders/layer_norm.wgsl). No batch statistics: samples never see each other.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: LayerNormParams in shaders/layer_norm.wgsl.
    pub struct LayerNormParams {
        pub n: u32,
        pub channels: u32,
        pub inner: u32,
        pub x_offset: u32,
        pub gamma_offset: u32,
        pub beta_offset: u32,
        pub y_offset: u32,
        pub stats_offset: u32,
        pub dy_offset: u32,
        pub dx_offset: u32,
        pub dgamma_offset: u32,
        pub dbeta_offset: u32,
        pub accumulate: u32,
        pub eps: f32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

/// x viewed as [n, channels, inner]: inner = H*W for feature maps, 1 for vectors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNorm {
    pub n: usize,
    pub channels: usize,
    pub inner: usize,
    pub eps: f32,
}

const KERNEL: &str = "layer_norm";

impl LayerNorm {
    fn check(&self, what: &[(&str, &Tensor, usize)]) -> Result<()> {
        if self.n * self.channels * self.inner == 0 {
            return shape_err(
                KERNEL,
                format!(
                    "empty [n, channels, inner] = [{}, {}, {}]",
                    self.n, self.channels, self.inner
                ),
            );
        }
        for &(name, t, want) in what {
            if t.len() != want {
                return shape_err(
                    KERNEL,
                    format!(
                        "{name} has shape {:?} ({} elements) but [n, channels, inner] = [{}, {}, {}] needs {want}",
                        t.shape,
                        t.len(),
                        self.n,
                        self.channels,
                        self.inner
                    ),
                );
            }
        }
        Ok(())
    }

    fn params(&self, gpu: &Gpu, t: &[Option<&Tensor>; 9], accumulate: bool) -> LayerNormParams {
        let off = |i: usize| t[i].map(|t| rel_offset(gpu, t)).unwrap_or(0);
        LayerNormParams {
            n: self.n as u32,
            channels: self.channels as u32,
            inner: self.inner as u32,
            x_offset: off(0),
            gamma_offset: off(1),
            beta_offset: off(2),
            y_offset: off(3),
            stats_offset: off(4),
            dy_offset: off(5),
            dx_offset: off(6),
            dgamma_offset: off(7),
            dbeta_offset: off(8),
            accumulate: accumulate as u32,
            eps: self.eps,
            _pad0: 0,
            _pad1: 0,
        }
    }
}

/// Plan y = layer_norm(x) * gamma + beta; saves (mean, rstd) per sample in `stats` [n, 2].
pub fn forward(
    gpu: &Gpu,
    ln: &LayerNorm,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    stats: &Tensor,
) -> Result<Launch> {
    let m = ln.n * ln.channels * ln.inner;
    ln.check(&[
        ("x", x, m),
        ("gamma", gamma, ln.channels),
        ("beta", beta, ln.channels),
        ("y", y, m),
        ("stats", stats, 2 * ln.n),
    ])?;
    let params = ln.params(
        gpu,
        &[
            Some(x),
            Some(gamma),
            Some(beta),
            Some(y),
            Some(stats),
            None,
            None,
            None,
            None,
        ],
        false,
    );
    Launch::with_bindings(
        gpu,
        Shader::LayerNorm,
        "forward",
        &[],
        &params,
        &[(1, x), (2, gamma), (3, beta), (4, y), (5, stats)],
        spread(gpu, KERNEL, ln.n as u64)?,
    )
    .map(|l| {
        let ln = *ln;
        // Mean, squared deviations, then normalise and scale: about 7 FLOPs an element, and
        // x is read three times.
        l.cost(7 * m as u64, (4 * m) as u64).reference(move || {
            let (c, mut y) = (ln.channels, vec![0.0; m]);
            crate::cpu::layer_norm::forward(
                &ln,
                &vec![0.5; m],
                &vec![1.0; c],
                &vec![0.0; c],
                &mut y,
            );
        })
    })
}

/// Plan dx (+)= and dgamma +=, dbeta += from dy, the input x and the saved stats.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    ln: &LayerNorm,
    x: &Tensor,
    gamma: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
    accumulate: bool,
) -> Result<Vec<Launch>> {
    let m = ln.n * ln.channels * ln.inner;
    let c = ln.channels;
    ln.check(&[
        ("x", x, m),
        ("gamma", gamma, c),
        ("stats", stats, 2 * ln.n),
        ("dy", dy, m),
        ("dx", dx, m),
        ("dgamma", dgamma, c),
        ("dbeta", dbeta, c),
    ])?;
    let params = ln.params(
        gpu,
        &[
            Some(x),
            Some(gamma),
            None,
            None,
            Some(stats),
            Some(dy),
            Some(dx),
            Some(dgamma),
            Some(dbeta),
        ],
        accumulate,
    );
    Ok(vec![
        Launch::with_bindings(
            gpu,
            Shader::LayerNorm,
            "backward_input",
            &[],
            &params,
            &[(1, x), (2, gamma), (5, stats), (6, dy), (7, dx)],
            spread(gpu, KERNEL, ln.n as u64)?,
        )?
        .cost(12 * m as u64, (5 * m) as u64)
        .reference({
            let ln = *ln;
            move || {
                let (mut dx, mut dg, mut db) = (vec![0.0; m], vec![0.0; c], vec![0.0; c]);
                let ones = vec![1.0; c];
                crate::cpu::layer_norm::backward(
                    &ln,
                    &vec![0.5; m],
                    &ones,
                    &vec![0.5; m],
                    &mut dx,
                    &mut dg,
                    &mut db,
                    accumulate,
                );
            }
        }),
        Launch::with_bindings(
            gpu,
            Shader::LayerNorm,
            "backward_params",
            &[],
            &params,
            &[(1, x), (5, stats), (6, dy), (8, dgamma), (9, dbeta)],
            spread(gpu, KERNEL, c as u64)?,
        )?
        .cost(5 * m as u64, (2 * m) as u64),
    ])
}
