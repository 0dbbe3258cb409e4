// mean_pool.wgsl: spatial mean of each patch's feature maps, and its backward.
//
//   forward:  y[n, c] = mean over l of x[n, c, l]            x [n, channels, inner]
//   backward: dx[n, c, l] (+)= dy[n, c] / inner
//
// Bindings: 0 MeanPoolParams (uniform), 1 x (read), 2 y (read_write), 3 dy (read),
// 4 dx (read_write). forward uses (1, 2), backward uses (3, 4).
// Dispatch: workgroups of 256, one thread per output element (forward: n * channels,
// backward: n * channels * inner), spread over y past 65535 workgroups.
// Writes: forward overwrites y; backward overwrites dx, or adds when accumulate != 0.

// Rust twin: ops::mean_pool::MeanPoolParams.
struct MeanPoolParams {
    rows: u32,
    inner: u32,
    x_offset: u32,
    y_offset: u32,
    dy_offset: u32,
    dx_offset: u32,
    accumulate: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: MeanPoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let r = (wid.x + wid.y * nwg.x) * 256u + li; // r = n * channels + c
    if (r >= p.rows) { return; }
    var s = 0.0;
    let base = p.x_offset + r * p.inner;
    for (var l = 0u; l < p.inner; l++) { s += x[base + l]; }
    y[p.y_offset + r] = s / f32(p.inner);
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + li;
    if (e >= p.rows * p.inner) { return; }
    var v = dy[p.dy_offset + e / p.inner] / f32(p.inner);
    let at = p.dx_offset + e;
    if (p.accumulate != 0u) { v += dx[at]; }
    dx[at] = v;
}
