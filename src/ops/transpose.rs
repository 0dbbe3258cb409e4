//! y[b] = x[b]^T for a batch of matrices (shaders/transpose.wgsl): how an encoder whose
//! output is channels by time, [B, D, T], hands its frames to the GRU and the loss as rows
//! [B*T, D] (ops::sequences with W = 1), and how their gradient comes back.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, Gpu, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: TransposeParams in shaders/transpose.wgsl.
    pub struct TransposeParams {
        pub batch: u32,
        pub rows: u32,
        pub cols: u32,
        pub x_offset: u32,
        pub y_offset: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

const KERNEL: &str = "transpose";
/// Side of the square tile one workgroup moves.
const TILE: usize = 16;

/// Plan y [B, C, R] = the transpose of each matrix of x [B, R, C], `dims` = [B, R, C];
/// overwrites y.
pub fn launch(gpu: &Gpu, x: &Tensor, dims: [usize; 3], y: &Tensor) -> Result<Launch> {
    let [batch, rows, cols] = dims;
    let n = batch * rows * cols;
    if n == 0 {
        return shape_err(KERNEL, format!("empty [batch, rows, cols] = {dims:?}"));
    }
    if x.len() != n || y.len() != n {
        return shape_err(
            KERNEL,
            format!(
                "x has shape {:?} and y {:?}, but [batch, rows, cols] = {dims:?} needs {n} elements each",
                x.shape, y.shape
            ),
        );
    }
    let most = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let grid = [cols.div_ceil(TILE), rows.div_ceil(TILE), batch];
    if let Some(&over) = grid.iter().find(|&&g| g > most) {
        return shape_err(
            KERNEL,
            format!(
                "{dims:?} needs {over} workgroups along one dimension, above the adapter's \
                 max_compute_workgroups_per_dimension = {most}"
            ),
        );
    }
    let params = TransposeParams {
        batch: batch as u32,
        rows: rows as u32,
        cols: cols as u32,
        x_offset: rel_offset(gpu, x),
        y_offset: rel_offset(gpu, y),
        ..Default::default()
    };
    let l = Launch::new(
        gpu,
        Shader::Transpose,
        "main",
        &[],
        &params,
        &[x, y],
        grid.map(|g| g as u32),
    )?;
    Ok(l.cost(0, 2 * n as u64).reference(move || {
        let mut y = vec![0.0; n];
        crate::cpu::transpose::forward(&vec![0.5; n], dims, &mut y);
    }))
}
