// matmul.wgsl: batched matrix product C = alpha * op(A) op(B) (+ C when accumulating).
//
// op(A) is M x K: A stored row-major as [M, K], or as [K, M] when TRANS_A.
// op(B) is K x N: B stored row-major as [K, N], or as [N, K] when TRANS_B.
// C is [M, N] row-major. Batch i reads A at a_offset + i * a_batch_stride, and so on.
//
// Bindings: 0 MatmulParams (uniform), 1 a (read), 2 b (read), 3 c (read_write).
// Dispatch: (ceil(N / 64), ceil(M / 64), batch) workgroups of 8 x 8 threads; each thread
// computes an 8 x 8 block of C in registers, with no workgroup memory (on lavapipe this
// beats shared-memory tiling several times over). Rows and columns past the edge are
// clamped for loads and skipped for stores, so any M, N, K works.
// Writes: overwrites C, or adds to it when accumulate != 0.

// Rust twin: ops::matmul::MatmulParams.
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_offset: u32,
    b_offset: u32,
    c_offset: u32,
    a_batch_stride: u32,
    b_batch_stride: u32,
    c_batch_stride: u32,
    accumulate: u32,
    alpha: f32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const T: u32 = 8u;   // block side per thread
const WG: u32 = 8u;  // threads per workgroup side

// Writes (or adds to) row r of C from column col0 on, 8 values (lo: the first four, hi: the
// next four) starting at element `at`, skipping a row or columns past the edge. Unrolled
// calls with vectors, not a loop over an array (see the accumulators).
fn store(at: u32, r: u32, col0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (r >= p.m) {
        return;
    }
    let count = min(T, p.n - col0);
    for (var j = 0u; j < count; j++) {
        var v = p.alpha * select(hi[j % 4u], lo[j % 4u], j < 4u);
        if (p.accumulate != 0u) { v += c[at + j]; }
        c[at + j] = v;
    }
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = (wid.y * WG + lid.y) * T;
    let col0 = (wid.x * WG + lid.x) * T;
    if (row0 >= p.m || col0 >= p.n) {
        return;
    }
    let a_base = p.a_offset + wid.z * p.a_batch_stride;
    let b_base = p.b_offset + wid.z * p.b_batch_stride;
    let c_base = p.c_offset + wid.z * p.c_batch_stride;

    // Where each of this thread's rows of op(A) and columns of op(B) starts, and the step
    // from one k to the next. Edge rows/columns are clamped so every load is in bounds.
    var a_at: array<u32, 8>;
    var b_at: array<u32, 8>;
    var a_step = 1u;
    var b_step = p.n;
    if (TRANS_A) { a_step = p.m; }
    if (TRANS_B) { b_step = 1u; }
    for (var i = 0u; i < T; i++) {
        let r = min(row0 + i, p.m - 1u);
        let cc = min(col0 + i, p.n - 1u);
        if (TRANS_A) { a_at[i] = a_base + r; } else { a_at[i] = a_base + r * p.k; }
        if (TRANS_B) { b_at[i] = b_base + cc * p.k; } else { b_at[i] = b_base + cc; }
    }

    // Accumulators, row i: a<2i> holds columns 0..4, a<2i+1> columns 4..8. Named variables,
    // not an array: lavapipe keeps a private array that a loop indexes in memory, and the
    // unrolled loop over named vectors ran 2-3x faster (measured on the conv kernels).
    var a0: vec4<f32>; var a1: vec4<f32>; var a2: vec4<f32>; var a3: vec4<f32>;
    var a4: vec4<f32>; var a5: vec4<f32>; var a6: vec4<f32>; var a7: vec4<f32>;
    var a8: vec4<f32>; var a9: vec4<f32>; var a10: vec4<f32>; var a11: vec4<f32>;
    var a12: vec4<f32>; var a13: vec4<f32>; var a14: vec4<f32>; var a15: vec4<f32>;
    for (var kk = 0u; kk < p.k; kk++) {
        let ao = kk * a_step;
        let bo = kk * b_step;
        let b0 = vec4<f32>(b[b_at[0] + bo], b[b_at[1] + bo], b[b_at[2] + bo], b[b_at[3] + bo]);
        let b1 = vec4<f32>(b[b_at[4] + bo], b[b_at[5] + bo], b[b_at[6] + bo], b[b_at[7] + bo]);
        let r0 = vec4<f32>(a[a_at[0] + ao]);
        let r1 = vec4<f32>(a[a_at[1] + ao]);
        let r2 = vec4<f32>(a[a_at[2] + ao]);
        let r3 = vec4<f32>(a[a_at[3] + ao]);
        let r4 = vec4<f32>(a[a_at[4] + ao]);
        let r5 = vec4<f32>(a[a_at[5] + ao]);
        let r6 = vec4<f32>(a[a_at[6] + ao]);
        let r7 = vec4<f32>(a[a_at[7] + ao]);
        a0 = fma(r0, b0, a0); a1 = fma(r0, b1, a1);
        a2 = fma(r1, b0, a2); a3 = fma(r1, b1, a3);
        a4 = fma(r2, b0, a4); a5 = fma(r2, b1, a5);
        a6 = fma(r3, b0, a6); a7 = fma(r3, b1, a7);
        a8 = fma(r4, b0, a8); a9 = fma(r4, b1, a9);
        a10 = fma(r5, b0, a10); a11 = fma(r5, b1, a11);
        a12 = fma(r6, b0, a12); a13 = fma(r6, b1, a13);
        a14 = fma(r7, b0, a14); a15 = fma(r7, b1, a15);
    }

    let c_at = c_base + row0 * p.n + col0;
    store(c_at, row0, col0, a0, a1);
    store(c_at + p.n, row0 + 1u, col0, a2, a3);
    store(c_at + 2u * p.n, row0 + 2u, col0, a4, a5);
    store(c_at + 3u * p.n, row0 + 3u, col0, a6, a7);
    store(c_at + 4u * p.n, row0 + 4u, col0, a8, a9);
    store(c_at + 5u * p.n, row0 + 5u, col0, a10, a11);
    store(c_at + 6u * p.n, row0 + 6u, col0, a12, a13);
    store(c_at + 7u * p.n, row0 + 7u, col0, a14, a15);
}
