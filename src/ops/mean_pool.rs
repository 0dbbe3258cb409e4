//! Spatial mean pool of each patch to one vector, and its backward (shaders/mean_pool.wgsl).

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: MeanPoolParams in shaders/mean_pool.wgsl.
    pub struct MeanPoolParams {
        pub rows: u32,
        pub inner: u32,
        pub x_offset: u32,
        pub y_offset: u32,
        pub dy_offset: u32,
        pub dx_offset: u32,
        pub accumulate: u32,
        pub _pad: u32,
    }
}

const KERNEL: &str = "mean_pool";

fn check(x_name: &str, x: &Tensor, y_name: &str, y: &Tensor, [n, c, l]: [usize; 3]) -> Result<()> {
    if n * c * l == 0 {
        return shape_err(
            KERNEL,
            format!("empty [n, channels, inner] = [{n}, {c}, {l}]"),
        );
    }
    if x.len() != n * c * l || y.len() != n * c {
        return shape_err(
            KERNEL,
            format!(
                "{x_name} has shape {:?} and {y_name} {:?}, but [n, channels, inner] = [{n}, {c}, {l}] needs {} and {} elements",
                x.shape,
                y.shape,
                n * c * l,
                n * c
            ),
        );
    }
    Ok(())
}

/// Plan y[n, c] = mean over l of x[n, c, l], x viewed as `dims` = [n, channels, inner].
pub fn forward(gpu: &Gpu, x: &Tensor, dims: [usize; 3], y: &Tensor) -> Result<Launch> {
    check("x", x, "y", y, dims)?;
    let rows = dims[0] * dims[1];
    let params = MeanPoolParams {
        rows: rows as u32,
        inner: dims[2] as u32,
        x_offset: rel_offset(gpu, x),
        y_offset: rel_offset(gpu, y),
        ..Default::default()
    };
    let wg = spread(gpu, KERNEL, rows.div_ceil(256) as u64)?;
    Launch::with_bindings(
        gpu,
        Shader::MeanPool,
        "forward",
        &[],
        &params,
        &[(1, x), (2, y)],
        wg,
    )
    .map(|l| {
        let n = x.len();
        l.cost(n as u64, (n + rows) as u64).reference(move || {
            let mut y = vec![0.0; dims[0] * dims[1]];
            crate::cpu::mean_pool::forward(&vec![0.5; n], dims, &mut y);
        })
    })
}

/// Plan dx[n, c, l] (+)= dy[n, c] / inner.
pub fn backward(
    gpu: &Gpu,
    dy: &Tensor,
    dims: [usize; 3],
    dx: &Tensor,
    accumulate: bool,
) -> Result<Launch> {
    check("dx", dx, "dy", dy, dims)?;
    let params = MeanPoolParams {
        rows: (dims[0] * dims[1]) as u32,
        inner: dims[2] as u32,
        dy_offset: rel_offset(gpu, dy),
        dx_offset: rel_offset(gpu, dx),
        accumulate: accumulate as u32,
        ..Default::default()
    };
    let wg = spread(gpu, KERNEL, dx.len().div_ceil(256) as u64)?;
    Launch::with_bindings(
        gpu,
        Shader::MeanPool,
        "backward",
        &[],
        &params,
        &[(3, dy), (4, dx)],
        wg,
    )
    .map(|l| {
        let n = dx.len();
        l.cost(
            n as u64,
            (n * (1 + accumulate as usize) + n / dims[2]) as u64,
        )
        .reference(move || {
            let mut dx = vec![0.0; n];
            crate::cpu::mean_pool::backward(
                &vec![0.5; dims[0] * dims[1]],
                dims,
                &mut dx,
                accumulate,
            );
        })
    })
}
