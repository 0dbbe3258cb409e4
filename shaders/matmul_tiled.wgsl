// matmul_tiled.wgsl: batched matrix product C = alpha * op(A) op(B) (+ C when accumulating),
// tiled through workgroup memory for real GPUs (matmul.wgsl is the CPU adapter's kernel; it
// computes the same and takes the same uniforms and bindings).
//
// op(A) is M x K: A stored row-major as [M, K], or as [K, M] when TRANS_A.
// op(B) is K x N: B stored row-major as [K, N], or as [N, K] when TRANS_B.
// C is [M, N] row-major. Batch i reads A at a_offset + i * a_batch_stride, and so on.
//
// Bindings: 0 MatmulParams (uniform), 1 a (read), 2 b (read), 3 c (read_write). The entry
// points differ only in how they read A and B: `tiled` element by element, `tiled_a4`,
// `tiled_b4` and `tiled_a4_b4` the named operand as vec4<f32> (a4, b4: the same bindings
// seen as vectors). The launcher picks a vector entry only where the operand's stored rows,
// offset and batch stride are multiples of 4 elements, so every vector is whole and aligned.
// Dispatch: (ceil(N / BN), ceil(M / BM), batch) workgroups of (BN / TN) x (BM / TM) threads.
// Each workgroup computes a BM x BN tile of C: for each slice of BK values of k it stages
// the BM x BK tile of op(A) and the BK x BN tile of op(B) in workgroup memory (each thread
// loading its share, neighbouring threads neighbouring addresses), then every thread adds
// the products into its TM x TN block of registers. Only workgroups on the edge of C and
// the last, partial slice of k check bounds: loads past an edge read 0, stores skip.
// Writes: overwrites C, or adds to it when accumulate != 0.
//
// The tile sizes are override constants set from ops::matmul::Tiling (the candidates are
// listed there): TM and TN are 4 or 8, BM / TM x BN / TN <= 256 threads, and the two tiles
// (BK x (BM + BN) floats) fit WebGPU's 16 KiB of workgroup memory.

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
override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
override TM: u32 = 4u;
override TN: u32 = 4u;

// Threads along x (columns) and y (rows), and in all.
override WX: u32 = BN / TN;
override WY: u32 = BM / TM;
override THREADS: u32 = WX * WY;
// vec4s per row of each tile in workgroup memory, and vec4s of rows (or columns) per thread.
override BM4: u32 = BM / 4u;
override BN4: u32 = BN / 4u;
override TM4: u32 = TM / 4u;
override TN4: u32 = TN / 4u;

// a and a4 (b and b4) view one binding; that is allowed because no entry point uses both.
@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// The tiles, k-major: a_tile[kk * BM4 + i / 4][i % 4] is op(A)[m0 + i, k0 + kk] and
// b_tile[kk * BN4 + j / 4][j % 4] is op(B)[k0 + kk, n0 + j], so each thread reads its rows
// and columns as whole vectors.
var<workgroup> a_tile: array<vec4<f32>, BK * BM4>;
var<workgroup> b_tile: array<vec4<f32>, BK * BN4>;

// This thread's TM x TN block: acc[(i * TN4) + j / 4][j % 4] is row i, column j of the block
// (at most 8 x 8). Private, so the scalar and vector entry points share the code below.
var<private> acc: array<vec4<f32>, 16>;

// Where this workgroup's tile and this thread's block lie.
struct Tile {
    m0: u32,
    n0: u32,
    a_base: u32,
    b_base: u32,
    c_base: u32,
    // Index of this thread in the workgroup, and its column and row in the thread grid.
    flat: u32,
    tx: u32,
    ty: u32,
    // The tile lies wholly inside C: no row or column needs a check.
    inside: bool,
}

fn tile_of(wid: vec3<u32>, lid: vec3<u32>) -> Tile {
    var t: Tile;
    t.m0 = wid.y * BM;
    t.n0 = wid.x * BN;
    t.a_base = p.a_offset + wid.z * p.a_batch_stride;
    t.b_base = p.b_offset + wid.z * p.b_batch_stride;
    t.c_base = p.c_offset + wid.z * p.c_batch_stride;
    t.flat = lid.y * WX + lid.x;
    t.tx = lid.x;
    t.ty = lid.y;
    t.inside = t.m0 + BM <= p.m && t.n0 + BN <= p.n;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    return t;
}

// op(A)[m0 + i, k0 + kk] goes to a_tile[kk][i]; op(B)[k0 + kk, n0 + j] to b_tile[kk][j].
fn put_a(kk: u32, i: u32, v: f32) {
    a_tile[kk * BM4 + i / 4u][i % 4u] = v;
}

fn put_b(kk: u32, j: u32, v: f32) {
    b_tile[kk * BN4 + j / 4u][j % 4u] = v;
}

// Stage op(A)'s tile element by element. Consecutive threads take consecutive addresses of
// A: along k for A [M, K], along m for A [K, M]. `check`: the tile crosses an edge of op(A),
// and elements past it are 0.
fn stage_a(t: Tile, k0: u32, check: bool) {
    for (var s = 0u; s < BM * BK / THREADS; s++) {
        let e = t.flat + s * THREADS;
        var i: u32;
        var kk: u32;
        if (TRANS_A) { kk = e / BM; i = e % BM; } else { i = e / BK; kk = e % BK; }
        let r = t.m0 + i;
        let k = k0 + kk;
        var v = 0.0;
        if (!check || (r < p.m && k < p.k)) {
            if (TRANS_A) { v = a[t.a_base + k * p.m + r]; } else { v = a[t.a_base + r * p.k + k]; }
        }
        put_a(kk, i, v);
    }
}

// The same with vec4 loads: four k of one row for A [M, K] (K % 4 == 0), four rows of one k
// for A [K, M] (M % 4 == 0). A vector is wholly inside op(A) or wholly outside.
fn stage_a4(t: Tile, k0: u32, check: bool) {
    for (var s = 0u; s < BM * BK / (4u * THREADS); s++) {
        let e = t.flat + s * THREADS;
        if (TRANS_A) {
            let kk = e / BM4;
            let i = (e % BM4) * 4u;
            let k = k0 + kk;
            var v = vec4<f32>(0.0);
            if (!check || (t.m0 + i < p.m && k < p.k)) {
                v = a4[(t.a_base + k * p.m + t.m0 + i) / 4u];
            }
            a_tile[kk * BM4 + i / 4u] = v;
        } else {
            let i = e / (BK / 4u);
            let kk = (e % (BK / 4u)) * 4u;
            let r = t.m0 + i;
            var v = vec4<f32>(0.0);
            if (!check || (r < p.m && k0 + kk < p.k)) {
                v = a4[(t.a_base + r * p.k + k0 + kk) / 4u];
            }
            put_a(kk, i, v.x);
            put_a(kk + 1u, i, v.y);
            put_a(kk + 2u, i, v.z);
            put_a(kk + 3u, i, v.w);
        }
    }
}

// Stage op(B)'s tile element by element: along n for B [K, N], along k for B [N, K].
fn stage_b(t: Tile, k0: u32, check: bool) {
    for (var s = 0u; s < BN * BK / THREADS; s++) {
        let e = t.flat + s * THREADS;
        var j: u32;
        var kk: u32;
        if (TRANS_B) { j = e / BK; kk = e % BK; } else { kk = e / BN; j = e % BN; }
        let col = t.n0 + j;
        let k = k0 + kk;
        var v = 0.0;
        if (!check || (col < p.n && k < p.k)) {
            if (TRANS_B) { v = b[t.b_base + col * p.k + k]; } else { v = b[t.b_base + k * p.n + col]; }
        }
        put_b(kk, j, v);
    }
}

// The same with vec4 loads: four columns of one k for B [K, N] (N % 4 == 0), four k of one
// column for B [N, K] (K % 4 == 0).
fn stage_b4(t: Tile, k0: u32, check: bool) {
    for (var s = 0u; s < BN * BK / (4u * THREADS); s++) {
        let e = t.flat + s * THREADS;
        if (TRANS_B) {
            let j = e / (BK / 4u);
            let kk = (e % (BK / 4u)) * 4u;
            let col = t.n0 + j;
            var v = vec4<f32>(0.0);
            if (!check || (col < p.n && k0 + kk < p.k)) {
                v = b4[(t.b_base + col * p.k + k0 + kk) / 4u];
            }
            put_b(kk, j, v.x);
            put_b(kk + 1u, j, v.y);
            put_b(kk + 2u, j, v.z);
            put_b(kk + 3u, j, v.w);
        } else {
            let kk = e / BN4;
            let j = (e % BN4) * 4u;
            let k = k0 + kk;
            var v = vec4<f32>(0.0);
            if (!check || (t.n0 + j < p.n && k < p.k)) {
                v = b4[(t.b_base + k * p.n + t.n0 + j) / 4u];
            }
            b_tile[kk * BN4 + j / 4u] = v;
        }
    }
}

// Whether the slice of k from k0 needs bounds checks: it crosses op(A)'s or op(B)'s edge.
fn check_slice(t: Tile, k0: u32) -> bool {
    return !t.inside || k0 + BK > p.k;
}

// Add the staged tiles' products into this thread's block. Its rows are TM4 groups of four,
// group g at tile rows g * WY * 4 + ty * 4 .. + 4, and its columns likewise, so neighbouring
// threads read neighbouring vectors of workgroup memory.
fn multiply(t: Tile) {
    for (var kk = 0u; kk < BK; kk++) {
        var ra: array<vec4<f32>, 2>;
        var rb: array<vec4<f32>, 2>;
        for (var g = 0u; g < TM4; g++) {
            ra[g] = a_tile[kk * BM4 + g * WY + t.ty];
        }
        for (var g = 0u; g < TN4; g++) {
            rb[g] = b_tile[kk * BN4 + g * WX + t.tx];
        }
        for (var i = 0u; i < TM; i++) {
            let av = vec4<f32>(ra[i / 4u][i % 4u]);
            for (var g = 0u; g < TN4; g++) {
                acc[i * TN4 + g] = fma(av, rb[g], acc[i * TN4 + g]);
            }
        }
    }
}

// Write (or add) the block to C, checking rows and columns only on an edge tile.
fn store(t: Tile) {
    for (var i = 0u; i < TM; i++) {
        let r = t.m0 + (i / 4u) * WY * 4u + t.ty * 4u + i % 4u;
        if (!t.inside && r >= p.m) {
            continue;
        }
        for (var g = 0u; g < TN4; g++) {
            let col0 = t.n0 + g * WX * 4u + t.tx * 4u;
            let v = acc[i * TN4 + g];
            for (var j = 0u; j < 4u; j++) {
                if (!t.inside && col0 + j >= p.n) {
                    break;
                }
                let at = t.c_base + r * p.n + col0 + j;
                var out = p.alpha * v[j];
                if (p.accumulate != 0u) { out += c[at]; }
                c[at] = out;
            }
        }
    }
}

@compute @workgroup_size(WX, WY, 1)
fn tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = tile_of(wid, lid);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        let check = check_slice(t, k0);
        stage_a(t, k0, check);
        stage_b(t, k0, check);
        workgroupBarrier();
        multiply(t);
        // The next slice overwrites the tiles only once every thread has read them.
        workgroupBarrier();
    }
    store(t);
}

@compute @workgroup_size(WX, WY, 1)
fn tiled_a4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = tile_of(wid, lid);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        let check = check_slice(t, k0);
        stage_a4(t, k0, check);
        stage_b(t, k0, check);
        workgroupBarrier();
        multiply(t);
        workgroupBarrier();
    }
    store(t);
}

@compute @workgroup_size(WX, WY, 1)
fn tiled_b4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = tile_of(wid, lid);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        let check = check_slice(t, k0);
        stage_a(t, k0, check);
        stage_b4(t, k0, check);
        workgroupBarrier();
        multiply(t);
        workgroupBarrier();
    }
    store(t);
}

@compute @workgroup_size(WX, WY, 1)
fn tiled_a4_b4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = tile_of(wid, lid);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        let check = check_slice(t, k0);
        stage_a4(t, k0, check);
        stage_b4(t, k0, check);
        workgroupBarrier();
        multiply(t);
        workgroupBarrier();
    }
    store(t);
}
