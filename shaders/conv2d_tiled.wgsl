// conv2d_tiled.wgsl: the convolution's forward, input gradient and weight gradient as
// implicit matrix products tiled through workgroup memory, for real GPUs
// (conv2d_forward.wgsl, conv2d_backward_input.wgsl and conv2d_backward_weight.wgsl are the
// CPU adapter's kernels; these compute the same).
//
// forward: y[n, co, oy, ox] = b[co] + sum over ci, ky, kx of w[co, ci, ky, kx] * x[n, ci, iy, ix]
//   with iy = oy * SH + ky - PH, ix = ox * SW + kx - PW, x = 0 outside the image, for a
//   KH x KW kernel at stride SH x SW padded by PH x PW (as in conv2d_forward.wgsl).
//   As C = A B: M = N * OH * OW output pixels, N = Cout, K = Cin * KH * KW; A is the im2col
//   matrix of x, gathered on the fly (never stored), B the weights [Cout, K] read transposed.
// backward_input: dx[n, ci, iy, ix] (+)= sum over co, ky, kx of w[co, ci, ky, kx] * dy[n, co, oy, ox]
//   over the taps where oy * SH + ky - PH = iy and ox * SW + kx - PW = ix.
//   Dealt out by stride phase (ry, rx) = (iy % SH, ix % SW), one per workgroup z (rx
//   fastest), as conv2d_backward_input.wgsl explains: a phase's pixels receive only from the
//   taps with ky = (ry + PH) mod SH + j * SH (and kx likewise with SW and PW), so no product
//   is wasted on a tap that skips them. Per phase: M = N * HQ * WQ pixels (HQ = ceil(H / SH),
//   WQ = ceil(W / SW), counting the ones past the image's edge, which are never stored),
//   N = Cin, K = Cout x the phase's taps (0 where a stride wider than the kernel leaves a
//   phase none: its pixels get 0).
// backward_weight: partial[z, co, ci, ky, kx] = sum over the chunk z of the batch's images
//   n and output pixels of dy[n, co, oy, ox] * x[n, ci, iy, ix] (iy, ix as in the forward).
//   Split along K so that every workgroup is busy when Cout x Cin k k alone gives few tiles;
//   the launcher adds the chunks into dw with sum_channels.wgsl, as for the CPU path. Per
//   chunk: M = Cin * KH * KW (the forward's K, so that neighbouring threads store neighbouring
//   weights), N = Cout, K = the chunk's images x OH x OW; A is the forward's im2col matrix
//   transposed, B is dy.
//
// Bindings: 0 Conv2dTiledParams (uniform), 1 the input, x or dy (read), 2 the weights
// [Cout, Cin, KH, KW] as stored, or dy for backward_weight (read; `weight` and `dy` view one
// binding: no entry point uses both), 3 bias [Cout] (read; forward only), 4 the output, y,
// dx or partial (read_write), 5 mask [N, Cin, H, W] (read; backward_input only, read where
// relu != 0, dy bound in its place otherwise). Dispatch: (ceil(M / BM), ceil(N / BN), z) workgroups of
// (BM / TM) x (BN / TN) threads, z being 1, the SH * SW phases or the chunks. Each workgroup computes a BM x BN tile of the output,
// pixels by channels: for each slice of BK values of k it gathers the BM x BK tile of A
// (neighbouring threads neighbouring pixels) and the BK x BN tile of B (neighbouring
// threads neighbouring k, contiguous in the weights) into workgroup memory, then every
// thread adds the products into its TM x TN block of registers. Values past an edge of A or
// B, and taps in the padding, read 0; stores skip pixels and channels past the edge.
// Writes: forward overwrites y with the bias added; backward_input overwrites dx, or adds to
// it when accumulate != 0; backward_weight overwrites its chunks of partial. With relu != 0
// a ReLU is fused: the forward stores max(v, 0) (y is the ReLU's output), backward_input
// keeps each sum where mask (the ReLU's output the conv read) > 0 and stores 0 elsewhere
// before it is stored or added (dx is the gradient of the ReLU's input).
//
// The tile sizes are override constants set from ops::matmul::Tiling, whose checks this
// kernel shares (it stages element by element, so needs no more than matmul_tiled.wgsl).

// Rust twin: ops::conv2d::Conv2dTiledParams.
struct Conv2dTiledParams {
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
    in_offset: u32,
    w_offset: u32,
    b_offset: u32,
    out_offset: u32,
    accumulate: u32,
    // backward_weight: images per chunk of the batch (the last chunk may hold fewer).
    chunk: u32,
    // forward: ReLU in the store; backward_input: mask by the ReLU output at mask_offset.
    relu: u32,
    mask_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
override TM: u32 = 4u;
override TN: u32 = 4u;

// Threads along x (pixels) and y (channels), and in all.
override WX: u32 = BM / TM;
override WY: u32 = BN / TN;
override THREADS: u32 = WX * WY;
// vec4s per row of each tile in workgroup memory, and vec4s of pixels (or channels) per thread.
override BM4: u32 = BM / 4u;
override BN4: u32 = BN / 4u;
override TM4: u32 = TM / 4u;
override TN4: u32 = TN / 4u;

@group(0) @binding(0) var<uniform> p: Conv2dTiledParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;

// The tiles, k-major: a_tile[kk * BM4 + i / 4][i % 4] is A[m0 + i, k0 + kk] and
// b_tile[kk * BN4 + j / 4][j % 4] is B[k0 + kk, n0 + j], so each thread reads its pixels
// and channels as whole vectors.
var<workgroup> a_tile: array<vec4<f32>, BK * BM4>;
var<workgroup> b_tile: array<vec4<f32>, BK * BN4>;

// This thread's TM x TN block: acc[i * TN4 + j / 4][j % 4] is its pixel i, channel j.
var<private> acc: array<vec4<f32>, 16>;

// One workgroup's product and tile.
struct Tile {
    // The product's extents.
    m: u32,
    n: u32,
    k: u32,
    m0: u32,
    n0: u32,
    // backward_input: the stride phase, its first tap (ky0, kx0), its taps per column and
    // row of the kernel (tky, tkx) and the steps between them (SH, SW); for the forward
    // (0, 0), (0, 0), (KH, KW) and (1, 1).
    ry: u32,
    rx: u32,
    ky0: u32,
    kx0: u32,
    tky: u32,
    tkx: u32,
    step_y: u32,
    step_x: u32,
    // Index of this thread in the workgroup, and its place in the thread grid.
    flat: u32,
    tx: u32,
    ty: u32,
}

fn tile_of(wid: vec3<u32>, lid: vec3<u32>) -> Tile {
    var t: Tile;
    t.m0 = wid.x * BM;
    t.n0 = wid.y * BN;
    t.flat = lid.y * WX + lid.x;
    t.tx = lid.x;
    t.ty = lid.y;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    return t;
}

fn forward_tile(wid: vec3<u32>, lid: vec3<u32>) -> Tile {
    var t = tile_of(wid, lid);
    t.m = p.n * p.oh * p.ow;
    t.n = p.cout;
    t.k = p.cin * p.kh * p.kw;
    t.tky = p.kh;
    t.tkx = p.kw;
    t.step_y = 1u;
    t.step_x = 1u;
    return t;
}

// Taps of one phase along one axis of a kernel k wide at stride s: k0, k0 + s, ... below k.
fn phase_taps(k0: u32, k: u32, s: u32) -> u32 {
    return select(0u, (k - k0 + s - 1u) / s, k0 < k);
}

// backward_input's first taps (ky0, kx0) for phase z = ry * SW + rx.
fn phase_first(z: u32) -> vec2<u32> {
    return vec2<u32>((z / p.sw + p.ph) % p.sh, (z % p.sw + p.pw) % p.sw);
}

// backward_input's K for phase z: Cout x its taps.
fn phase_k(z: u32) -> u32 {
    let k0 = phase_first(z);
    return p.cout * phase_taps(k0.x, p.kh, p.sh) * phase_taps(k0.y, p.kw, p.sw);
}

fn backward_input_tile(wid: vec3<u32>, lid: vec3<u32>) -> Tile {
    var t = tile_of(wid, lid);
    t.ry = wid.z / p.sw;
    t.rx = wid.z % p.sw;
    let k0 = phase_first(wid.z);
    t.ky0 = k0.x;
    t.kx0 = k0.y;
    t.tky = phase_taps(t.ky0, p.kh, p.sh);
    t.tkx = phase_taps(t.kx0, p.kw, p.sw);
    t.step_y = p.sh;
    t.step_x = p.sw;
    t.m = p.n * ((p.h + p.sh - 1u) / p.sh) * ((p.w + p.sw - 1u) / p.sw);
    t.n = p.cin;
    t.k = phase_k(wid.z);
    return t;
}

// backward_weight's K for chunk z: its images' output pixels.
fn chunk_k(z: u32) -> u32 {
    return min(p.chunk, p.n - z * p.chunk) * p.oh * p.ow;
}

fn backward_weight_tile(wid: vec3<u32>, lid: vec3<u32>) -> Tile {
    var t = forward_tile(wid, lid);
    t.m = p.cin * p.kh * p.kw;
    t.n = p.cout;
    t.k = chunk_k(wid.z);
    return t;
}

// Where output pixel r (of the product's M) lies: image, row, column. For backward_input the
// row and column are the input pixel's (phase pixels mapped back into the image).
fn pixel(t: Tile, r: u32, fwd: bool) -> vec3<u32> {
    var rows = p.oh;
    var cols = p.ow;
    if (!fwd) {
        rows = (p.h + p.sh - 1u) / p.sh;
        cols = (p.w + p.sw - 1u) / p.sw;
    }
    let img = r / (rows * cols);
    let q = r - img * rows * cols;
    let y = q / cols;
    let x = q - y * cols;
    if (fwd) {
        return vec3<u32>(img, y, x);
    }
    return vec3<u32>(img, y * p.sh + t.ry, x * p.sw + t.rx);
}

// Tap kk of the product's K: (channel summed over, ky, kx). Only called for kk < K, so
// the phase has taps and neither divisor is 0.
fn tap(t: Tile, kk: u32) -> vec3<u32> {
    let taps = t.tky * t.tkx;
    let c = kk / taps;
    let j = kk - c * taps;
    let jy = j / t.tkx;
    let jx = j - jy * t.tkx;
    return vec3<u32>(c, t.ky0 + jy * t.step_y, t.kx0 + jx * t.step_x);
}

// A[r, kk]: forward, x at the tap's input pixel (0 in the padding); backward_input, dy at
// the output pixel the tap reaches from this input pixel (0 outside dy). The divisions by
// the strides are exact: the phase's taps are those with iy + PH - ky a multiple of SH and
// ix + PW - kx a multiple of SW.
fn a_at(t: Tile, r: u32, kk: u32, fwd: bool) -> f32 {
    let px = pixel(t, r, fwd);
    let tp = tap(t, kk);
    if (fwd) {
        let iy = i32(px.y * p.sh + tp.y) - i32(p.ph);
        let ix = i32(px.z * p.sw + tp.z) - i32(p.pw);
        if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
            return 0.0;
        }
        return src[p.in_offset + ((px.x * p.cin + tp.x) * p.h + u32(iy)) * p.w + u32(ix)];
    }
    let oy = (i32(px.y + p.ph) - i32(tp.y)) / i32(p.sh);
    let ox = (i32(px.z + p.pw) - i32(tp.z)) / i32(p.sw);
    if (oy < 0 || ox < 0 || oy >= i32(p.oh) || ox >= i32(p.ow)) {
        return 0.0;
    }
    return src[p.in_offset + ((px.x * p.cout + tp.x) * p.oh + u32(oy)) * p.ow + u32(ox)];
}

// B[kk, col]: w[col, kk] for the forward (K = Cin KH KW is w's row); w[co, col, ky, kx] with
// (co, ky, kx) = tap kk for backward_input.
fn b_at(t: Tile, kk: u32, col: u32, fwd: bool) -> f32 {
    if (fwd) {
        return weight[p.w_offset + col * t.k + kk];
    }
    let tp = tap(t, kk);
    return weight[p.w_offset + ((tp.x * p.cin + col) * p.kh + tp.y) * p.kw + tp.z];
}

// Stage the slice of k from k0: A's tile with consecutive threads on consecutive pixels,
// B's with consecutive threads on consecutive k.
fn stage(t: Tile, k0: u32, fwd: bool) {
    for (var s = 0u; s < BM * BK / THREADS; s++) {
        let e = t.flat + s * THREADS;
        let kk = e / BM;
        let i = e % BM;
        var v = 0.0;
        if (t.m0 + i < t.m && k0 + kk < t.k) {
            v = a_at(t, t.m0 + i, k0 + kk, fwd);
        }
        a_tile[kk * BM4 + i / 4u][i % 4u] = v;
    }
    for (var s = 0u; s < BN * BK / THREADS; s++) {
        let e = t.flat + s * THREADS;
        let j = e / BK;
        let kk = e % BK;
        var v = 0.0;
        if (t.n0 + j < t.n && k0 + kk < t.k) {
            v = b_at(t, k0 + kk, t.n0 + j, fwd);
        }
        b_tile[kk * BN4 + j / 4u][j % 4u] = v;
    }
}

// backward_weight's slice of k from k0 (pixels of chunk z): A[r, q] is the forward's
// A[q, r], B[q, co] is dy at pixel q. Consecutive threads on consecutive pixels in both, so
// neighbouring in x and dy where the stride is 1.
fn stage_weight_grad(t: Tile, k0: u32, z: u32) {
    let q0 = z * p.chunk * p.oh * p.ow + k0;
    for (var s = 0u; s < BM * BK / THREADS; s++) {
        let e = t.flat + s * THREADS;
        let i = e / BK;
        let kk = e % BK;
        var v = 0.0;
        if (t.m0 + i < t.m && k0 + kk < t.k) {
            v = a_at(t, q0 + kk, t.m0 + i, true);
        }
        a_tile[kk * BM4 + i / 4u][i % 4u] = v;
    }
    let ohw = p.oh * p.ow;
    for (var s = 0u; s < BN * BK / THREADS; s++) {
        let e = t.flat + s * THREADS;
        let j = e / BK;
        let kk = e % BK;
        var v = 0.0;
        if (t.n0 + j < t.n && k0 + kk < t.k) {
            let q = q0 + kk;
            let img = q / ohw;
            v = dy[p.w_offset + (img * p.cout + t.n0 + j) * ohw + (q - img * ohw)];
        }
        b_tile[kk * BN4 + j / 4u][j % 4u] = v;
    }
}

// Add the staged tiles' products into this thread's block. Its pixels are TM4 groups of
// four, group g at tile rows g * WX * 4 + tx * 4 .. + 4, and its channels likewise, so
// neighbouring threads read neighbouring vectors of workgroup memory.
fn multiply(t: Tile) {
    for (var kk = 0u; kk < BK; kk++) {
        var ra: array<vec4<f32>, 2>;
        var rb: array<vec4<f32>, 2>;
        for (var g = 0u; g < TM4; g++) {
            ra[g] = a_tile[kk * BM4 + g * WX + t.tx];
        }
        for (var g = 0u; g < TN4; g++) {
            rb[g] = b_tile[kk * BN4 + g * WY + t.ty];
        }
        for (var i = 0u; i < TM; i++) {
            let av = vec4<f32>(ra[i / 4u][i % 4u]);
            for (var g = 0u; g < TN4; g++) {
                acc[i * TN4 + g] = fma(av, rb[g], acc[i * TN4 + g]);
            }
        }
    }
}

// The whole product: every slice of k staged, multiplied, and released. `k` is t.k, passed
// apart because the loop holds barriers and so must be workgroup-uniform, which the
// analysis cannot see through a struct that also holds the thread's index.
fn product(t: Tile, k: u32, fwd: bool) {
    for (var k0 = 0u; k0 < k; k0 += BK) {
        stage(t, k0, fwd);
        workgroupBarrier();
        multiply(t);
        // The next slice overwrites the tiles only once every thread has read them.
        workgroupBarrier();
    }
}

// This thread's pixel i and channel group g of the tile.
fn row_of(t: Tile, i: u32) -> u32 {
    return t.m0 + (i / 4u) * WX * 4u + t.tx * 4u + i % 4u;
}

fn col_of(t: Tile, g: u32) -> u32 {
    return t.n0 + g * WY * 4u + t.ty * 4u;
}

@compute @workgroup_size(WX, WY, 1)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = forward_tile(wid, lid);
    product(t, p.cin * p.kh * p.kw, true);
    let ohw = p.oh * p.ow;
    for (var i = 0u; i < TM; i++) {
        let r = row_of(t, i);
        if (r >= t.m) {
            continue;
        }
        let img = r / ohw;
        let base = p.out_offset + img * p.cout * ohw + (r - img * ohw);
        for (var g = 0u; g < TN4; g++) {
            let co0 = col_of(t, g);
            for (var j = 0u; j < 4u; j++) {
                if (co0 + j >= t.n) {
                    break;
                }
                var v = acc[i * TN4 + g][j] + bias[p.b_offset + co0 + j];
                if (p.relu != 0u) { v = max(v, 0.0); }
                dst[base + (co0 + j) * ohw] = v;
            }
        }
    }
}

@compute @workgroup_size(WX, WY, 1)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = backward_input_tile(wid, lid);
    product(t, phase_k(wid.z), false);
    let hw = p.h * p.w;
    for (var i = 0u; i < TM; i++) {
        let r = row_of(t, i);
        if (r >= t.m) {
            continue;
        }
        let px = pixel(t, r, false);
        if (px.y >= p.h || px.z >= p.w) {
            continue;
        }
        let pixel = px.x * p.cin * hw + px.y * p.w + px.z;
        for (var g = 0u; g < TN4; g++) {
            let ci0 = col_of(t, g);
            for (var j = 0u; j < 4u; j++) {
                if (ci0 + j >= t.n) {
                    break;
                }
                let e = pixel + (ci0 + j) * hw;
                let at = p.out_offset + e;
                var v = acc[i * TN4 + g][j];
                if (p.relu != 0u) { v = select(0.0, v, mask[p.mask_offset + e] > 0.0); }
                if (p.accumulate != 0u) { v += dst[at]; }
                dst[at] = v;
            }
        }
    }
}

@compute @workgroup_size(WX, WY, 1)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = backward_weight_tile(wid, lid);
    for (var k0 = 0u; k0 < chunk_k(wid.z); k0 += BK) {
        stage_weight_grad(t, k0, wid.z);
        workgroupBarrier();
        multiply(t);
        workgroupBarrier();
    }
    let base = p.out_offset + wid.z * p.cout * t.m;
    for (var i = 0u; i < TM; i++) {
        let r = row_of(t, i);
        if (r >= t.m) {
            continue;
        }
        for (var g = 0u; g < TN4; g++) {
            let co0 = col_of(t, g);
            for (var j = 0u; j < 4u; j++) {
                if (co0 + j >= t.n) {
                    break;
                }
                dst[base + (co0 + j) * t.m + r] = acc[i * TN4 + g][j];
            }
        }
    }
}
