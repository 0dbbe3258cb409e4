//! CPU reference of ops::copy_rows, row by row from the definition.

use crate::ops::copy_rows::CopyRows;

/// dst[(blk * rows_per_block + i) * width + j] (+)= src[offset + blk * block_stride + i * width + j].
pub fn gather(cr: &CopyRows, src: &[f32], dst: &mut [f32], accumulate: bool) {
    for blk in 0..cr.blocks {
        for i in 0..cr.rows_per_block {
            for j in 0..cr.width {
                let from = cr.offset + blk * cr.block_stride + i * cr.width + j;
                let to = (blk * cr.rows_per_block + i) * cr.width + j;
                dst[to] = if accumulate {
                    dst[to] + src[from]
                } else {
                    src[from]
                };
            }
        }
    }
}

/// dst[offset + blk * block_stride + i * width + j] (+)= src[(blk * rows_per_block + i) * width + j].
pub fn scatter(cr: &CopyRows, src: &[f32], dst: &mut [f32], accumulate: bool) {
    for blk in 0..cr.blocks {
        for i in 0..cr.rows_per_block {
            for j in 0..cr.width {
                let from = (blk * cr.rows_per_block + i) * cr.width + j;
                let to = cr.offset + blk * cr.block_stride + i * cr.width + j;
                dst[to] = if accumulate {
                    dst[to] + src[from]
                } else {
                    src[from]
                };
            }
        }
    }
}
