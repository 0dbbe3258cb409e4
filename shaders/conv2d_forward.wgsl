// conv2d_forward.wgsl: 2D convolution of a batch of images, as an implicit matrix product
// (no im2col is ever materialised):
//   y[n, co, oy, ox] = b[co] + sum over ci, ky, kx of w[co, ci, ky, kx] * x[n, ci, iy, ix]
//   with iy = oy * stride + ky - pad, ix = ox * stride + kx - pad, x = 0 outside the image.
// As a matrix product: M = Cout rows, N = batch * OH * OW output pixels, K = Cin * k * k.
//
// Bindings: 0 Conv2dForwardParams (uniform), 1 x [N, Cin, H, W] (read),
// 2 weight [Cout, Cin, k, k] (read), 3 bias [Cout] (read), 4 y [N, Cout, OH, OW] (read_write).
// Dispatch: (x, y) = spread(ceil(N * OH * OW / 512)) pixel blocks, z = ceil(Cout / 8) channel
// blocks; workgroups of 64 threads. Each thread computes 8 output channels x 8 output pixels
// in registers, with no workgroup memory; its pixels are 64 apart, so neighbouring threads
// read and write neighbouring pixels. The window loops (ky, kx) sit outside the channel loop,
// so bounds are worked out once per tap; taps outside the image read 0 through a select on
// an in-bounds address. Channels and pixels past the edge are clamped for loads and skipped
// for stores, so any size works.
// Writes: overwrites y.

// Rust twin: ops::conv2d::Conv2dForwardParams.
struct Conv2dForwardParams {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    k: u32,
    stride: u32,
    pad: u32,
    oh: u32,
    ow: u32,
    x_offset: u32,
    w_offset: u32,
    b_offset: u32,
    y_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Conv2dForwardParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TC: u32 = 8u;  // output channels per thread
const TP: u32 = 8u;  // output pixels per thread
const WG: u32 = 64u; // threads per workgroup

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let ohw = p.oh * p.ow;
    let pixels = p.n * ohw;
    let block = wid.x + wid.y * nwg.x;
    if (block * WG * TP >= pixels) {
        return;
    }
    let p0 = block * WG * TP + li;
    let co0 = wid.z * TC;
    let hw = p.h * p.w;
    let kk = p.k * p.k;

    // Per pixel: where its window starts in the image (may be negative: padding) and where
    // its image starts in x. Pixels past the end are clamped to the last one.
    var iy0: array<i32, 8>;
    var ix0: array<i32, 8>;
    var x_img: array<u32, 8>;
    for (var j = 0u; j < TP; j++) {
        let q = min(p0 + j * WG, pixels - 1u);
        let n = q / ohw;
        let r = q - n * ohw;
        let oy = r / p.ow;
        let ox = r - oy * p.ow;
        iy0[j] = i32(oy * p.stride) - i32(p.pad);
        ix0[j] = i32(ox * p.stride) - i32(p.pad);
        x_img[j] = p.x_offset + n * p.cin * hw;
    }
    // Where each of this thread's output channels starts in the weights (clamped).
    var w_at: array<u32, 8>;
    for (var i = 0u; i < TC; i++) {
        w_at[i] = p.w_offset + min(co0 + i, p.cout - 1u) * p.cin * kk;
    }

    var acc: array<vec4<f32>, 16>; // pixel j: acc[2j] holds channels 0..4, acc[2j+1] 4..8
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = 0u; kx < p.k; kx++) {
            // This tap's input element for each pixel in channel 0, or the image's first
            // element (in bounds, read as 0) where the tap falls in the padding.
            var at: array<u32, 8>;
            var inside: array<bool, 8>;
            for (var j = 0u; j < TP; j++) {
                let iy = iy0[j] + i32(ky);
                let ix = ix0[j] + i32(kx);
                inside[j] = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
                at[j] = select(x_img[j], x_img[j] + u32(iy) * p.w + u32(ix), inside[j]);
            }
            let tap = ky * p.k + kx;
            for (var ci = 0u; ci < p.cin; ci++) {
                let xo = ci * hw;
                let wo = ci * kk + tap;
                let w0 = vec4<f32>(weight[w_at[0] + wo], weight[w_at[1] + wo],
                                   weight[w_at[2] + wo], weight[w_at[3] + wo]);
                let w1 = vec4<f32>(weight[w_at[4] + wo], weight[w_at[5] + wo],
                                   weight[w_at[6] + wo], weight[w_at[7] + wo]);
                for (var j = 0u; j < TP; j++) {
                    let xv = vec4<f32>(select(0.0, x[at[j] + xo], inside[j]));
                    acc[2u * j] = fma(xv, w0, acc[2u * j]);
                    acc[2u * j + 1u] = fma(xv, w1, acc[2u * j + 1u]);
                }
            }
        }
    }

    for (var j = 0u; j < TP; j++) {
        let q = p0 + j * WG;
        if (q >= pixels) { break; }
        let n = q / ohw;
        let r = q - n * ohw;
        for (var i = 0u; i < TC; i++) {
            let co = co0 + i;
            if (co >= p.cout) { break; }
            y[p.y_offset + (n * p.cout + co) * ohw + r] =
                acc[2u * j + i / 4u][i % 4u] + bias[p.b_offset + co];
        }
    }
}
