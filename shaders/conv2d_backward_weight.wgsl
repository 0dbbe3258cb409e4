// conv2d_backward_weight.wgsl: gradient of conv2d_forward with respect to its weights, one
// partial sum per chunk of the batch:
//   partial[c, co, ci, ky, kx] = sum over n in chunk c, oy, ox of
//                                dy[n, co, oy, ox] * x[n, ci, oy * SH + ky - PH, ox * SW + kx - PW]
// with x = 0 outside the image (a KH x KW kernel at stride SH x SW padded by PH x PW, as in
// conv2d_forward.wgsl). Chunk c holds images c * chunk .. min((c + 1) * chunk, N).
// ops::conv2d then adds the chunks into dw with sum_channels.
// As a matrix product: M = Cout, N = Cin * KH * KW, reduced over K = batch * OH * OW.
//
// Bindings: 0 Conv2dBackwardWeightParams (uniform), 1 x [N, Cin, H, W] (read),
// 2 dy [N, Cout, OH, OW] (read), 3 partial [chunks, Cout, Cin, KH, KW] (read_write).
// Dispatch: (x, y) = spread(ceil(items / 64)) with items = ceil(Cout / 8) * ceil(Cin / 8) * KH * KW,
// z = chunks; workgroups of 64 threads. Each thread (an item) computes 8 output channels x
// 8 input channels of one tap (ky, kx) in registers, no workgroup memory; neighbouring
// threads have neighbouring taps. The tap is fixed, so the output rows and columns whose
// input falls inside the image are one range each, worked out before the loop: the loop
// itself has no bounds checks. Channels past the edge are clamped for loads and skipped for
// stores.
// Writes: overwrites partial (every element, zero where a tap only ever sees padding).

// Rust twin: ops::conv2d::Conv2dBackwardWeightParams.
struct Conv2dBackwardWeightParams {
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
    chunk: u32,
    x_offset: u32,
    dy_offset: u32,
    partial_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Conv2dBackwardWeightParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

const TO: u32 = 8u;  // output channels per thread
const TI: u32 = 8u;  // input channels per thread
const WG: u32 = 64u; // threads per workgroup

// The outputs o in 0..out whose input o * stride + t - pad lies in 0..size, as [lo, hi)
// (along one axis: rows with SH and PH, or columns with SW and PW).
fn inside_range(t: u32, size: u32, out: u32, stride: u32, pad: u32) -> vec2<u32> {
    let s = i32(stride);
    let first = i32(pad) - i32(t); // o * s must reach this for the input to be >= 0
    let last = i32(size) - 1 + i32(pad) - i32(t); // ... and not pass this
    if (last < 0) {
        return vec2<u32>(0u, 0u);
    }
    let lo = select(0, (first + s - 1) / s, first > 0);
    let hi = min(last / s + 1, i32(out));
    return vec2<u32>(u32(lo), u32(max(hi, lo)));
}

// Writes output channel co's gradients for input channels ci0 .. ci0 + 8 (lo: the first
// four, hi: the next four) at one tap of chunk partial `out`, skipping channels past the
// last. Unrolled calls with vectors, not a loop over an array (see the accumulators).
fn store(out: u32, co: u32, ci0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (co >= p.cout) {
        return;
    }
    let kk = p.kh * p.kw;
    let at = out + (co * p.cin + ci0) * kk;
    let count = min(TI, p.cin - ci0);
    for (var j = 0u; j < count; j++) {
        partial[at + j * kk] = select(hi[j % 4u], lo[j % 4u], j < 4u);
    }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let kk = p.kh * p.kw;
    let ci_blocks = (p.cin + TI - 1u) / TI;
    let items = ((p.cout + TO - 1u) / TO) * ci_blocks * kk;
    let item = (wid.x + wid.y * nwg.x) * WG + li;
    if (item >= items) {
        return;
    }
    let tap = item % kk;
    let rest = item / kk;
    let ci0 = (rest % ci_blocks) * TI;
    let co0 = (rest / ci_blocks) * TO;
    let ky = tap / p.kw;
    let kx = tap - ky * p.kw;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;

    // Where each channel starts inside an image of x and of dy (clamped past the edge).
    var x_at: array<u32, 8>;
    var dy_at: array<u32, 8>;
    for (var j = 0u; j < TI; j++) {
        x_at[j] = min(ci0 + j, p.cin - 1u) * hw;
    }
    for (var i = 0u; i < TO; i++) {
        dy_at[i] = min(co0 + i, p.cout - 1u) * ohw;
    }
    let rows = inside_range(ky, p.h, p.oh, p.sh, p.ph);
    let cols = inside_range(kx, p.w, p.ow, p.sw, p.pw);

    // Accumulators, output channel i: a<2i> holds input channels 0..4, a<2i+1> 4..8.
    // Named variables, not an array: lavapipe keeps a private array that a loop indexes in
    // memory; unrolled over named vectors the inner loop ran 2-3x faster (conv2d_forward.wgsl).
    var a0: vec4<f32>; var a1: vec4<f32>; var a2: vec4<f32>; var a3: vec4<f32>;
    var a4: vec4<f32>; var a5: vec4<f32>; var a6: vec4<f32>; var a7: vec4<f32>;
    var a8: vec4<f32>; var a9: vec4<f32>; var a10: vec4<f32>; var a11: vec4<f32>;
    var a12: vec4<f32>; var a13: vec4<f32>; var a14: vec4<f32>; var a15: vec4<f32>;
    let n_end = min((wid.z + 1u) * p.chunk, p.n);
    for (var n = wid.z * p.chunk; n < n_end; n++) {
        let x_img = p.x_offset + n * p.cin * hw;
        let dy_img = p.dy_offset + n * p.cout * ohw;
        for (var oy = rows.x; oy < rows.y; oy++) {
            let x_row = x_img + (oy * p.sh + ky - p.ph) * p.w + kx - p.pw;
            let dy_row = dy_img + oy * p.ow;
            for (var ox = cols.x; ox < cols.y; ox++) {
                let xo = x_row + ox * p.sw;
                let x0 = vec4<f32>(x[xo + x_at[0]], x[xo + x_at[1]], x[xo + x_at[2]], x[xo + x_at[3]]);
                let x1 = vec4<f32>(x[xo + x_at[4]], x[xo + x_at[5]], x[xo + x_at[6]], x[xo + x_at[7]]);
                let dyo = dy_row + ox;
                let g0 = vec4<f32>(dy[dyo + dy_at[0]]);
                let g1 = vec4<f32>(dy[dyo + dy_at[1]]);
                let g2 = vec4<f32>(dy[dyo + dy_at[2]]);
                let g3 = vec4<f32>(dy[dyo + dy_at[3]]);
                let g4 = vec4<f32>(dy[dyo + dy_at[4]]);
                let g5 = vec4<f32>(dy[dyo + dy_at[5]]);
                let g6 = vec4<f32>(dy[dyo + dy_at[6]]);
                let g7 = vec4<f32>(dy[dyo + dy_at[7]]);
                a0 = fma(g0, x0, a0); a1 = fma(g0, x1, a1);
                a2 = fma(g1, x0, a2); a3 = fma(g1, x1, a3);
                a4 = fma(g2, x0, a4); a5 = fma(g2, x1, a5);
                a6 = fma(g3, x0, a6); a7 = fma(g3, x1, a7);
                a8 = fma(g4, x0, a8); a9 = fma(g4, x1, a9);
                a10 = fma(g5, x0, a10); a11 = fma(g5, x1, a11);
                a12 = fma(g6, x0, a12); a13 = fma(g6, x1, a13);
                a14 = fma(g7, x0, a14); a15 = fma(g7, x1, a15);
            }
        }
    }

    let out = p.partial_offset + wid.z * p.cout * p.cin * kk + tap;
    store(out, co0, ci0, a0, a1);
    store(out, co0 + 1u, ci0, a2, a3);
    store(out, co0 + 2u, ci0, a4, a5);
    store(out, co0 + 3u, ci0, a6, a7);
    store(out, co0 + 4u, ci0, a8, a9);
    store(out, co0 + 5u, ci0, a10, a11);
    store(out, co0 + 6u, ci0, a12, a13);
    store(out, co0 + 7u, ci0, a14, a15);
}
