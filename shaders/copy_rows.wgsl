// copy_rows.wgsl: strided block copy, dst (+)= src, block by block:
//   dst[dst_offset + blk * dst_block_stride + i] (+)= src[src_offset + blk * src_block_stride + i]
// for blk in 0..blocks and i in 0..block_len, where a block is rows_per_block contiguous rows
// of `width` floats (block_len = rows_per_block * width). The gather of the InfoNCE query
// contexts (strided src, packed dst: dst_block_stride = block_len) and its backward, the
// scatter-add (packed src, strided dst), are both this kernel.
//
// Bindings: 0 CopyRowsParams (uniform), 1 src (read), 2 dst (read_write).
// Dispatch: ceil(blocks * block_len / 256) workgroups of 256, one float per thread, spread
// over x and y; threads past the end return.
// Writes: overwrites dst's blocks, or adds to them when accumulate != 0; the gaps between
// strided blocks are never touched.

// Rust twin: ops::copy_rows::CopyRowsParams.
struct CopyRowsParams {
    blocks: u32,
    block_len: u32,
    src_offset: u32,
    src_block_stride: u32,
    dst_offset: u32,
    dst_block_stride: u32,
    accumulate: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: CopyRowsParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + li;
    if (e >= p.blocks * p.block_len) {
        return;
    }
    let blk = e / p.block_len;
    let i = e - blk * p.block_len;
    let at = p.dst_offset + blk * p.dst_block_stride + i;
    var v = src[p.src_offset + blk * p.src_block_stride + i];
    if (p.accumulate != 0u) {
        v += dst[at];
    }
    dst[at] = v;
}
