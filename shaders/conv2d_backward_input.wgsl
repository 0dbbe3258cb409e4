// conv2d_backward_input.wgsl: gradient of conv2d_forward with respect to its input,
//   dx[n, ci, iy, ix] (+)= sum over co, ky, kx of w[co, ci, ky, kx] * dy[n, co, oy, ox]
//   over the taps where oy * SH + ky - PH = iy and ox * SW + kx - PW = ix (a KH x KW kernel
//   at stride SH x SW padded by PH x PW, as in conv2d_forward.wgsl).
// As a matrix product: M = Cin rows, N = batch * H * W input pixels, K = Cout * KH * KW.
//
// Stride phases: the pixels of row iy = qy * SH + ry only receive from the kernel rows ky
// with ky = (ry + PH) mod SH + j * SH (and likewise for columns, with SW and PW), so the
// pixels are dealt out by phase (ry, rx), ry < SH and rx < SW: each thread's pixels share
// one phase and it loops over just its about (KH / SH) x (KW / SW) taps, none of them wasted
// on a non-divisible offset. Stride 1 x 1 has the one phase (0, 0); a stride wider than the
// kernel leaves some phases no taps, and their pixels get 0.
//
// The weights come through a uniform buffer, one 64 KiB window of them per dispatch, as
// conv2d_weight_windows.wgsl lays them out transposed (rows: input channels; columns:
// output channels); see conv2d_forward.wgsl for why, and for the Storage variant a GPU
// uses. The launcher runs this kernel once per window: each adds its window's output
// channels' contributions to dx.
//
// Bindings: 0 Conv2dBackwardInputParams (uniform), 1 dy [N, Cout, OH, OW] (read),
// 2 one window of weights (uniform), 3 dx [N, Cin, H, W] (read_write), 4 mask [N, Cin, H, W]
// (read; read only where relu != 0, dy bound in its place otherwise).
// Dispatch: (x, y) = spread(ceil(N * HQ * WQ / 512)) pixel blocks of one phase, with
// HQ = ceil(H / SH), WQ = ceil(W / SW); z = SH * SW phases x the window's blocks of
// 8 input channels (phase fastest, rx fastest within it). Workgroups of 64 threads; each thread computes 8 input channels x
// 8 pixels of one phase in registers, no workgroup memory, its pixels 64 apart. Taps whose
// output pixel lies outside dy read 0 through a select on an in-bounds address; channels and
// pixels past the edge are clamped for loads and skipped for stores.
// Writes: overwrites dx, or adds to it when accumulate != 0. Where relu != 0 the conv's
// input was a ReLU's output `mask`: each sum is kept where mask > 0 and is 0 elsewhere before
// it is stored or added (the ReLU's backward folded in), so dx is the gradient of the ReLU's
// input.

// Rust twin: ops::conv2d::Conv2dBackwardInputParams.
struct Conv2dBackwardInputParams {
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
    hq: u32,
    wq: u32,
    dy_offset: u32,
    dx_offset: u32,
    accumulate: u32,
    // This dispatch's window: its first input and output channel, how many output channels
    // it holds, and the output channels of a full window (a row holds window_cos * KH * KW
    // floats).
    ci_base: u32,
    co_base: u32,
    co_count: u32,
    window_cos: u32,
    // Whether to mask by the ReLU output at mask_offset in `mask` (x's layout).
    relu: u32,
    mask_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Conv2dBackwardInputParams;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<uniform> weight: array<vec4<f32>, 4096>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;

const TC: u32 = 8u;  // input channels per thread
const TP: u32 = 8u;  // input pixels per thread
const WG: u32 = 64u; // threads per workgroup

// Float i of this dispatch's weight window.
fn w_at(i: u32) -> f32 {
    return weight[i / 4u][i % 4u];
}

// Writes (or adds to) pixel q of phase (ry, rx), channels ci0 .. ci0 + 8 (lo: the first
// four, hi: the next four), skipping pixels past the end or the image's edge and channels
// past the last. Unrolled calls with vectors, not a loop over an array (see the accumulators).
fn store(q: u32, ry: u32, rx: u32, ci0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    let qhw = p.hq * p.wq;
    if (q >= p.n * qhw) {
        return;
    }
    let n = q / qhw;
    let r = q - n * qhw;
    let qy = r / p.wq;
    let iy = qy * p.sh + ry;
    let ix = (r - qy * p.wq) * p.sw + rx;
    if (iy >= p.h || ix >= p.w) {
        return;
    }
    let hw = p.h * p.w;
    let pixel = (n * p.cin + ci0) * hw + iy * p.w + ix;
    let at = p.dx_offset + pixel;
    let count = min(TC, p.cin - ci0);
    for (var i = 0u; i < count; i++) {
        var v = select(hi[i % 4u], lo[i % 4u], i < 4u);
        if (p.relu != 0u) { v = select(0.0, v, mask[p.mask_offset + pixel + i * hw] > 0.0); }
        if (p.accumulate != 0u) { v += dx[at + i * hw]; }
        dx[at + i * hw] = v;
    }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let qhw = p.hq * p.wq;
    let pixels = p.n * qhw; // pixels of one phase, counting the ones past the edge
    let block = wid.x + wid.y * nwg.x;
    if (block * WG * TP >= pixels) {
        return;
    }
    let phases = p.sh * p.sw;
    let phase = wid.z % phases;
    let ry = phase / p.sw;
    let rx = phase - ry * p.sw;
    let ci0 = p.ci_base + (wid.z / phases) * TC;
    let p0 = block * WG * TP + li;
    let ohw = p.oh * p.ow;
    let kk = p.kh * p.kw;

    // Per pixel: its place in the image and where its image starts in dy. Pixels past the
    // end, or past the image's edge in this phase, are computed on clamped values and
    // never stored.
    var iy: array<i32, 8>;
    var ix: array<i32, 8>;
    var dy_img: array<u32, 8>;
    for (var j = 0u; j < TP; j++) {
        let q = min(p0 + j * WG, pixels - 1u);
        let n = q / qhw;
        let r = q - n * qhw;
        let qy = r / p.wq;
        let qx = r - qy * p.wq;
        iy[j] = i32(qy * p.sh + ry);
        ix[j] = i32(qx * p.sw + rx);
        dy_img[j] = p.dy_offset + n * p.cout * ohw;
    }
    // Where each of this thread's input channels starts in the window (clamped).
    let row_len = p.window_cos * kk;
    let last = vec4<u32>(p.cin - 1u);
    let w_lo = (min(vec4<u32>(ci0) + vec4<u32>(0u, 1u, 2u, 3u), last) - p.ci_base) * row_len;
    let w_hi = (min(vec4<u32>(ci0) + vec4<u32>(4u, 5u, 6u, 7u), last) - p.ci_base) * row_len;

    // Accumulators, pixel j: a<2j> holds channels 0..4, a<2j+1> channels 4..8.
    // Named variables, not an array: lavapipe keeps a private array that a loop indexes in
    // memory; unrolled over named vectors the inner loop ran 2-3x faster (conv2d_forward.wgsl).
    var a0: vec4<f32>; var a1: vec4<f32>; var a2: vec4<f32>; var a3: vec4<f32>;
    var a4: vec4<f32>; var a5: vec4<f32>; var a6: vec4<f32>; var a7: vec4<f32>;
    var a8: vec4<f32>; var a9: vec4<f32>; var a10: vec4<f32>; var a11: vec4<f32>;
    var a12: vec4<f32>; var a13: vec4<f32>; var a14: vec4<f32>; var a15: vec4<f32>;
    // The taps of this phase: ky = (iy + PH) mod SH, then every SH-th row (kx likewise).
    for (var ky = (ry + p.ph) % p.sh; ky < p.kh; ky += p.sh) {
        for (var kx = (rx + p.pw) % p.sw; kx < p.kw; kx += p.sw) {
            // The output pixel this tap reads for each input pixel (the division is exact),
            // or the image's first element (in bounds, read as 0) where it falls outside.
            var at: array<u32, 8>;
            var inside: array<bool, 8>;
            for (var j = 0u; j < TP; j++) {
                let oy = (iy[j] + i32(p.ph) - i32(ky)) / i32(p.sh);
                let ox = (ix[j] + i32(p.pw) - i32(kx)) / i32(p.sw);
                inside[j] = oy >= 0 && oy < i32(p.oh) && ox >= 0 && ox < i32(p.ow);
                at[j] = select(dy_img[j], dy_img[j] + u32(oy) * p.ow + u32(ox), inside[j]);
            }
            let tap = ky * p.kw + kx;
            for (var co = 0u; co < p.co_count; co++) {
                let dyo = (p.co_base + co) * ohw;
                let wo = co * kk + tap;
                let w0 = vec4<f32>(w_at(w_lo.x + wo), w_at(w_lo.y + wo),
                                   w_at(w_lo.z + wo), w_at(w_lo.w + wo));
                let w1 = vec4<f32>(w_at(w_hi.x + wo), w_at(w_hi.y + wo),
                                   w_at(w_hi.z + wo), w_at(w_hi.w + wo));
                let g0 = vec4<f32>(select(0.0, dy[at[0] + dyo], inside[0]));
                let g1 = vec4<f32>(select(0.0, dy[at[1] + dyo], inside[1]));
                let g2 = vec4<f32>(select(0.0, dy[at[2] + dyo], inside[2]));
                let g3 = vec4<f32>(select(0.0, dy[at[3] + dyo], inside[3]));
                let g4 = vec4<f32>(select(0.0, dy[at[4] + dyo], inside[4]));
                let g5 = vec4<f32>(select(0.0, dy[at[5] + dyo], inside[5]));
                let g6 = vec4<f32>(select(0.0, dy[at[6] + dyo], inside[6]));
                let g7 = vec4<f32>(select(0.0, dy[at[7] + dyo], inside[7]));
                a0 = fma(g0, w0, a0); a1 = fma(g0, w1, a1);
                a2 = fma(g1, w0, a2); a3 = fma(g1, w1, a3);
                a4 = fma(g2, w0, a4); a5 = fma(g2, w1, a5);
                a6 = fma(g3, w0, a6); a7 = fma(g3, w1, a7);
                a8 = fma(g4, w0, a8); a9 = fma(g4, w1, a9);
                a10 = fma(g5, w0, a10); a11 = fma(g5, w1, a11);
                a12 = fma(g6, w0, a12); a13 = fma(g6, w1, a13);
                a14 = fma(g7, w0, a14); a15 = fma(g7, w1, a15);
            }
        }
    }

    store(p0, ry, rx, ci0, a0, a1);
    store(p0 + WG, ry, rx, ci0, a2, a3);
    store(p0 + 2u * WG, ry, rx, ci0, a4, a5);
    store(p0 + 3u * WG, ry, rx, ci0, a6, a7);
    store(p0 + 4u * WG, ry, rx, ci0, a8, a9);
    store(p0 + 5u * WG, ry, rx, ci0, a10, a11);
    store(p0 + 6u * WG, ry, rx, ci0, a12, a13);
    store(p0 + 7u * WG, ry, rx, ci0, a14, a15);
}
