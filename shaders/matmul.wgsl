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

    var acc: array<vec4<f32>, 16>; // row i: acc[2i] holds columns 0..4, acc[2i+1] 4..8
    for (var kk = 0u; kk < p.k; kk++) {
        let ao = kk * a_step;
        let bo = kk * b_step;
        let b0 = vec4<f32>(b[b_at[0] + bo], b[b_at[1] + bo], b[b_at[2] + bo], b[b_at[3] + bo]);
        let b1 = vec4<f32>(b[b_at[4] + bo], b[b_at[5] + bo], b[b_at[6] + bo], b[b_at[7] + bo]);
        for (var i = 0u; i < T; i++) {
            let av = a[a_at[i] + ao];
            acc[2u * i] = fma(vec4<f32>(av), b0, acc[2u * i]);
            acc[2u * i + 1u] = fma(vec4<f32>(av), b1, acc[2u * i + 1u]);
        }
    }

    for (var i = 0u; i < T; i++) {
        let r = row0 + i;
        if (r >= p.m) { break; }
        for (var j = 0u; j < T; j++) {
            let col = col0 + j;
            if (col >= p.n) { break; }
            let at = c_base + r * p.n + col;
            var v = p.alpha * acc[2u * i + j / 4u][j % 4u];
            if (p.accumulate != 0u) { v += c[at]; }
            c[at] = v;
        }
    }
}
