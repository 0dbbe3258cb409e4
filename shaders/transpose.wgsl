// transpose.wgsl: y[b, c, r] = x[b, r, c] for each of B matrices R x C (the audio encoder's
// output [B, D, T] becomes frames [B*T, D], and its gradient goes back the same way with R
// and C swapped).
//
// Dispatch: (ceil(C / 16), ceil(R / 16), B) workgroups of 16 x 16. Each stages a 16 x 16 tile
// of x in workgroup memory, read along x's rows, and writes it along y's rows, so both the
// loads and the stores of neighbouring threads are neighbouring addresses. The tile rows
// are 17 long so that a column read hits 16 different banks.
// Bindings: 0 TransposeParams (uniform), 1 x (read), 2 y (read_write). Writes: overwrites y.
// Workgroup memory: a thread reads back only the element of the tile that the thread
// holding it wrote (both conditions name the same element), so it needs no zeroing.

// Rust twin: ops::transpose::TransposeParams.
struct TransposeParams {
    batch: u32,
    rows: u32,
    cols: u32,
    x_offset: u32,
    y_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: TransposeParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const TILE: u32 = 16u;
const STRIDE: u32 = 17u;

var<workgroup> tile: array<f32, 272>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.z * p.rows * p.cols;
    let r0 = wid.y * TILE;
    let c0 = wid.x * TILE;
    // Load x[r0 + ly, c0 + lx].
    if (r0 + lid.y < p.rows && c0 + lid.x < p.cols) {
        tile[lid.y * STRIDE + lid.x] = x[p.x_offset + base + (r0 + lid.y) * p.cols + c0 + lid.x];
    }
    workgroupBarrier();
    // Store y[c0 + ly, r0 + lx] = x[r0 + lx, c0 + ly].
    if (c0 + lid.y < p.cols && r0 + lid.x < p.rows) {
        y[p.y_offset + base + (c0 + lid.y) * p.rows + r0 + lid.x] = tile[lid.x * STRIDE + lid.y];
    }
}
