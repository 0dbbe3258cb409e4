// conv2d_forward.wgsl: 2D convolution of a batch of images, as an implicit matrix product
// (no im2col is ever materialised):
//   y[n, co, oy, ox] = b[co] + sum over ci, ky, kx of w[co, ci, ky, kx] * x[n, ci, iy, ix]
//   with iy = oy * SH + ky - PH, ix = ox * SW + kx - PW, x = 0 outside the image, for a
//   KH x KW kernel at stride SH x SW padded by PH rows and PW columns (any of them may
//   differ: a 1-D convolution is KH = 1 over images of one row).
// As a matrix product: M = Cout rows, N = batch * OH * OW output pixels, K = Cin * KH * KW.
//
// The weights come through a uniform buffer, one 64 KiB window of them per dispatch, as
// conv2d_weight_windows.wgsl lays them out (rows: output channels; columns: input
// channels). The launcher runs this kernel once per window: each adds its window's input
// channels to y, the first of a row block writing y with the bias. On lavapipe this ran
// the tiny preset's residual layer 1.45x faster than reading the weights from storage. On a
// GPU the launcher uses this file's Storage variant instead (gpu/kernels.rs declares
// binding 2 as `var<storage, read> weight: array<vec4<f32>>`): one window holding all the
// weights, one dispatch (ops::conv2d::WeightBinding).
//
// Bindings: 0 Conv2dForwardParams (uniform), 1 x [N, Cin, H, W] (read),
// 2 one window of weights (uniform), 3 bias [Cout] (read), 4 y [N, Cout, OH, OW] (read_write).
// Dispatch: (x, y) = spread(ceil(N * OH * OW / 512)) pixel blocks, z = the window's blocks
// of 8 output channels; workgroups of 64 threads. Each thread computes 8 output channels x
// 8 output pixels in registers, with no workgroup memory; its pixels are 64 apart, so
// neighbouring threads read and write neighbouring pixels. The window loops (ky, kx) sit
// outside the channel loop, so bounds are worked out once per tap; taps outside the image
// read 0 through a select on an in-bounds address. Channels and pixels past the edge are
// clamped for loads and skipped for stores, so any size works.
// Writes: overwrites y with the bias added (accumulate == 0), or adds to it; where relu != 0
// (the last window of a row block, when a ReLU reads nothing but this conv's output) the
// store keeps max(v, 0): y is then the ReLU's output and the sum before it is never stored.

// Rust twin: ops::conv2d::Conv2dForwardParams.
struct Conv2dForwardParams {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    oh: u32,
    ow: u32,
    x_offset: u32,
    b_offset: u32,
    y_offset: u32,
    // This dispatch's window: its first output and input channel, how many input channels
    // it holds, whether to add to y, and the input channels of a full window (a row holds
    // window_cis * KH * KW floats).
    co_base: u32,
    ci_base: u32,
    ci_count: u32,
    accumulate: u32,
    window_cis: u32,
    relu: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Conv2dForwardParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> weight: array<vec4<f32>, 4096>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TC: u32 = 8u;  // output channels per thread
const TP: u32 = 8u;  // output pixels per thread
const WG: u32 = 64u; // threads per workgroup

// Four output pixels: the first input row and column of each one's window (negative in the
// padding) and where each one's image starts in x.
struct Window {
    iy: vec4<i32>,
    ix: vec4<i32>,
    img: vec4<u32>,
}

fn window(q: vec4<u32>) -> Window {
    let ohw = p.oh * p.ow;
    let n = q / ohw;
    let r = q - n * ohw;
    let oy = r / p.ow;
    let ox = r - oy * p.ow;
    return Window(vec4<i32>(oy * p.sh) - i32(p.ph), vec4<i32>(ox * p.sw) - i32(p.pw),
                  p.x_offset + n * p.cin * p.h * p.w);
}

// Whether tap (ky, kx) of each of the four windows falls inside the image.
fn inside(win: Window, ky: u32, kx: u32) -> vec4<bool> {
    let iy = win.iy + i32(ky);
    let ix = win.ix + i32(kx);
    return (iy >= vec4<i32>(0)) & (iy < vec4<i32>(i32(p.h))) & (ix >= vec4<i32>(0)) & (ix < vec4<i32>(i32(p.w)));
}

// Writes (or adds to) output pixel q's channels co0 .. co0 + 8 (lo: the first four, hi: the
// next four), skipping a pixel past the end and channels past the last.
fn store(q: u32, co0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    let ohw = p.oh * p.ow;
    if (q >= p.n * ohw) {
        return;
    }
    let n = q / ohw;
    let at = p.y_offset + (n * p.cout + co0) * ohw + (q - n * ohw);
    let count = min(TC, p.cout - co0);
    for (var i = 0u; i < count; i++) {
        var v = select(hi[i % 4u], lo[i % 4u], i < 4u);
        if (p.accumulate != 0u) { v += y[at + i * ohw]; }
        if (p.relu != 0u) { v = max(v, 0.0); }
        y[at + i * ohw] = v;
    }
}

// Float i of this dispatch's weight window.
fn w_at(i: u32) -> f32 {
    return weight[i / 4u][i % 4u];
}

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
    let co0 = p.co_base + wid.z * TC;
    let hw = p.h * p.w;
    let kk = p.kh * p.kw;

    // Pixels 0..4 (lo) and 4..8 (hi) of this thread, clamped to the last one, as vectors:
    // where each one's window starts in the image (negative in the padding) and where its
    // image starts in x. Vectors rather than arrays for the reason given at the accumulators.
    let lanes = vec4<u32>(0u, 1u, 2u, 3u) * WG;
    let lo = window(min(vec4<u32>(p0) + lanes, vec4<u32>(pixels - 1u)));
    let hi = window(min(vec4<u32>(p0 + 4u * WG) + lanes, vec4<u32>(pixels - 1u)));
    // Where each of this thread's output channels starts in the window (clamped).
    let row_len = p.window_cis * kk;
    let last = vec4<u32>(p.cout - 1u);
    let w_lo = (min(vec4<u32>(co0) + vec4<u32>(0u, 1u, 2u, 3u), last) - p.co_base) * row_len;
    let w_hi = (min(vec4<u32>(co0) + vec4<u32>(4u, 5u, 6u, 7u), last) - p.co_base) * row_len;

    // Accumulators, pixel j: a<2j> holds channels 0..4, a<2j+1> channels 4..8. Named
    // variables, not an array: lavapipe keeps a private array that a loop indexes in memory,
    // and the unrolled inner loop below ran 2.3x faster than the same loop over an array.
    var a0: vec4<f32>; var a1: vec4<f32>; var a2: vec4<f32>; var a3: vec4<f32>;
    var a4: vec4<f32>; var a5: vec4<f32>; var a6: vec4<f32>; var a7: vec4<f32>;
    var a8: vec4<f32>; var a9: vec4<f32>; var a10: vec4<f32>; var a11: vec4<f32>;
    var a12: vec4<f32>; var a13: vec4<f32>; var a14: vec4<f32>; var a15: vec4<f32>;
    for (var ky = 0u; ky < p.kh; ky++) {
        for (var kx = 0u; kx < p.kw; kx++) {
            // This tap's input element for each pixel in channel 0, or the image's first
            // element (in bounds, read as 0) where the tap falls in the padding: the offset
            // in the image times 0 or 1 (u32 arithmetic wraps, so 0 times a negative offset
            // is 0). Not a select: GLSL before 4.50 has no mix on unsigned vectors.
            let in_lo = inside(lo, ky, kx);
            let in_hi = inside(hi, ky, kx);
            let at_lo = lo.img + vec4<u32>(in_lo) * (vec4<u32>(lo.iy + i32(ky)) * p.w + vec4<u32>(lo.ix + i32(kx)));
            let at_hi = hi.img + vec4<u32>(in_hi) * (vec4<u32>(hi.iy + i32(ky)) * p.w + vec4<u32>(hi.ix + i32(kx)));
            let tap = ky * p.kw + kx;
            for (var ci = 0u; ci < p.ci_count; ci++) {
                let xo = (p.ci_base + ci) * hw;
                let wo = ci * kk + tap;
                let w0 = vec4<f32>(w_at(w_lo.x + wo), w_at(w_lo.y + wo),
                                   w_at(w_lo.z + wo), w_at(w_lo.w + wo));
                let w1 = vec4<f32>(w_at(w_hi.x + wo), w_at(w_hi.y + wo),
                                   w_at(w_hi.z + wo), w_at(w_hi.w + wo));
                let xl = select(vec4<f32>(0.0), vec4<f32>(x[at_lo.x + xo], x[at_lo.y + xo],
                                                          x[at_lo.z + xo], x[at_lo.w + xo]), in_lo);
                let xh = select(vec4<f32>(0.0), vec4<f32>(x[at_hi.x + xo], x[at_hi.y + xo],
                                                          x[at_hi.z + xo], x[at_hi.w + xo]), in_hi);
                let x0 = vec4<f32>(xl.x); let x1 = vec4<f32>(xl.y);
                let x2 = vec4<f32>(xl.z); let x3 = vec4<f32>(xl.w);
                let x4 = vec4<f32>(xh.x); let x5 = vec4<f32>(xh.y);
                let x6 = vec4<f32>(xh.z); let x7 = vec4<f32>(xh.w);
                a0 = fma(x0, w0, a0); a1 = fma(x0, w1, a1);
                a2 = fma(x1, w0, a2); a3 = fma(x1, w1, a3);
                a4 = fma(x2, w0, a4); a5 = fma(x2, w1, a5);
                a6 = fma(x3, w0, a6); a7 = fma(x3, w1, a7);
                a8 = fma(x4, w0, a8); a9 = fma(x4, w1, a9);
                a10 = fma(x5, w0, a10); a11 = fma(x5, w1, a11);
                a12 = fma(x6, w0, a12); a13 = fma(x6, w1, a13);
                a14 = fma(x7, w0, a14); a15 = fma(x7, w1, a15);
            }
        }
    }

    // The bias of this thread's channels (clamped), then each pixel's 8 outputs.
    let c_lo = min(vec4<u32>(co0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.cout - 1u));
    let c_hi = min(vec4<u32>(co0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(p.cout - 1u));
    var b_lo = vec4<f32>(bias[p.b_offset + c_lo.x], bias[p.b_offset + c_lo.y],
                         bias[p.b_offset + c_lo.z], bias[p.b_offset + c_lo.w]);
    var b_hi = vec4<f32>(bias[p.b_offset + c_hi.x], bias[p.b_offset + c_hi.y],
                         bias[p.b_offset + c_hi.z], bias[p.b_offset + c_hi.w]);
    if (p.accumulate != 0u) {
        b_lo = vec4<f32>(0.0);
        b_hi = vec4<f32>(0.0);
    }
    store(p0, co0, a0 + b_lo, a1 + b_hi);
    store(p0 + WG, co0, a2 + b_lo, a3 + b_hi);
    store(p0 + 2u * WG, co0, a4 + b_lo, a5 + b_hi);
    store(p0 + 3u * WG, co0, a6 + b_lo, a7 + b_hi);
    store(p0 + 4u * WG, co0, a8 + b_lo, a9 + b_hi);
    store(p0 + 5u * WG, co0, a10 + b_lo, a11 + b_hi);
    store(p0 + 6u * WG, co0, a12 + b_lo, a13 + b_hi);
    store(p0 + 7u * WG, co0, a14 + b_lo, a15 + b_hi);
}
