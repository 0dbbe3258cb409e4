//! Strided block copy (shaders/copy_rows.wgsl): gather blocks of contiguous rows out of a
//! strided tensor into a packed one, and scatter(-add) them back for the backward.
//!
//! A block is `rows_per_block` rows of `width` floats, contiguous. On the strided side block
//! `blk` starts `offset + blk * block_stride` elements into its tensor; on the packed side
//! the blocks follow each other. The InfoNCE query contexts are such a gather
//! (ops::infonce::Infonce::context_rows).

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: CopyRowsParams in shaders/copy_rows.wgsl.
    pub struct CopyRowsParams {
        pub blocks: u32,
        pub block_len: u32,
        pub src_offset: u32,
        pub src_block_stride: u32,
        pub dst_offset: u32,
        pub dst_block_stride: u32,
        pub accumulate: u32,
        pub _pad: u32,
    }
}

/// Which blocks of the strided tensor one copy moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyRows {
    pub blocks: usize,
    pub rows_per_block: usize,
    /// Floats per row.
    pub width: usize,
    /// First element of block 0 in the strided tensor.
    pub offset: usize,
    /// Elements from one block's start to the next in the strided tensor.
    pub block_stride: usize,
}

impl CopyRows {
    /// Floats in one block: rows_per_block * width.
    pub fn block_len(&self) -> usize {
        self.rows_per_block * self.width
    }

    /// Elements of the packed tensor: blocks * rows_per_block * width.
    pub fn packed_len(&self) -> usize {
        self.blocks * self.block_len()
    }

    /// Elements the strided tensor must hold at least: up to the end of the last block.
    pub fn strided_len(&self) -> usize {
        self.offset + self.blocks.saturating_sub(1) * self.block_stride + self.block_len()
    }

    fn check(&self, kernel: &'static str, strided: &Tensor, packed: &Tensor) -> Result<()> {
        let what = format!(
            "blocks={} rows_per_block={} width={} offset={} block_stride={}",
            self.blocks, self.rows_per_block, self.width, self.offset, self.block_stride
        );
        if self.packed_len() == 0 {
            return shape_err(kernel, format!("nothing to copy: {what}"));
        }
        if self.block_stride < self.block_len() {
            // Overlapping blocks would make the scatter race and the gather ambiguous.
            return shape_err(
                kernel,
                format!(
                    "block_stride is shorter than a block ({}): {what}",
                    self.block_len()
                ),
            );
        }
        if strided.len() < self.strided_len() || packed.len() != self.packed_len() {
            return shape_err(
                kernel,
                format!(
                    "strided tensor has shape {:?} and packed tensor {:?}, but {what} needs \
                     at least {} and exactly {} elements",
                    strided.shape,
                    packed.shape,
                    self.strided_len(),
                    self.packed_len()
                ),
            );
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn launch(
    gpu: &Gpu,
    kernel: &'static str,
    cr: &CopyRows,
    src: &Tensor,
    dst: &Tensor,
    [src_stride, dst_stride]: [usize; 2],
    [src_view, dst_view]: [usize; 2],
    accumulate: bool,
) -> Result<Launch> {
    let params = CopyRowsParams {
        blocks: cr.blocks as u32,
        block_len: cr.block_len() as u32,
        src_offset: rel_offset(gpu, src) + src_view as u32,
        src_block_stride: src_stride as u32,
        dst_offset: rel_offset(gpu, dst) + dst_view as u32,
        dst_block_stride: dst_stride as u32,
        accumulate: accumulate as u32,
        _pad: 0,
    };
    let wg = spread(gpu, kernel, cr.packed_len().div_ceil(256) as u64)?;
    let n = cr.packed_len();
    Launch::new(gpu, Shader::CopyRows, "main", &[], &params, &[src, dst], wg)
        .map(|l| l.cost(0, (2 + accumulate as usize) as u64 * n as u64))
}

/// Plan dst (+)= the blocks of src: dst packed [blocks * rows_per_block, width], src strided.
pub fn gather(
    gpu: &Gpu,
    cr: &CopyRows,
    src: &Tensor,
    dst: &Tensor,
    accumulate: bool,
) -> Result<Launch> {
    let kernel = "copy_rows_gather";
    cr.check(kernel, src, dst)?;
    let strides = [cr.block_stride, cr.block_len()];
    launch(
        gpu,
        kernel,
        cr,
        src,
        dst,
        strides,
        [cr.offset, 0],
        accumulate,
    )
}

/// Plan the blocks of dst (+)= src: src packed, dst strided (the gather's backward with
/// accumulate). Elements of dst outside the blocks are left alone.
pub fn scatter(
    gpu: &Gpu,
    cr: &CopyRows,
    src: &Tensor,
    dst: &Tensor,
    accumulate: bool,
) -> Result<Launch> {
    let kernel = "copy_rows_scatter";
    cr.check(kernel, dst, src)?;
    let strides = [cr.block_len(), cr.block_stride];
    launch(
        gpu,
        kernel,
        cr,
        src,
        dst,
        strides,
        [0, cr.offset],
        accumulate,
    )
}
