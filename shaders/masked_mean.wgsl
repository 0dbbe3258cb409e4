// masked_mean.wgsl: the mean over each sentence's words of the word conv's output, and its
// backward, sentences of different lengths in one padded batch.
//
//   forward:  y[n, c] = mean over w < len_n of x[n, c, w], 0 where len_n = 0
//   backward: dx[n, c, w] (+)= dy[n, c] / len_n where w < len_n, 0 elsewhere
//   x [N, C, W], lengths [N] u32, y [N, C]; len_n = min(lengths[n], W)
//
// Positions at or past a sentence's length are never read (the forward) and get no
// gradient (the backward): see ops::masked_mean for why w < length is the rule.
//
// Bindings: 0 MaskedMeanParams (uniform), 1 x (read), 2 lengths (read, u32), 3 y
// (read_write), 4 dy (read), 5 dx (read_write). forward uses (1, 2, 3), backward (2, 4, 5).
// Dispatch: workgroups of 256, one thread per output element (forward: N C, backward:
// N C W), spread over y past 65535 workgroups.
// Writes: forward overwrites y; backward overwrites dx, or adds when accumulate != 0.

// Rust twin: ops::masked_mean::MaskedMeanParams.
struct MaskedMeanParams {
    rows: u32,
    channels: u32,
    width: u32,
    x_offset: u32,
    lengths_offset: u32,
    y_offset: u32,
    dy_offset: u32,
    dx_offset: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: MaskedMeanParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> lengths: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

// Row r = n * C + c's sentence length, at most W (the host checks lengths <= W; the clamp
// keeps a bad one from reading the next sentence's positions).
fn length_of(r: u32) -> u32 {
    return min(lengths[p.lengths_offset + r / p.channels], p.width);
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let r = (wid.x + wid.y * nwg.x) * 256u + li; // r = n * C + c
    if (r >= p.rows) { return; }
    let len = length_of(r);
    let base = p.x_offset + r * p.width;
    var s = 0.0;
    for (var w = 0u; w < len; w++) { s += x[base + w]; }
    var v = 0.0;
    if (len > 0u) { v = s / f32(len); }
    y[p.y_offset + r] = v;
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + li; // e = (n * C + c) * W + w
    if (e >= p.rows * p.width) { return; }
    let r = e / p.width;
    let len = length_of(r);
    var v = 0.0;
    if (e - r * p.width < len) { v = dy[p.dy_offset + r] / f32(len); }
    let at = p.dx_offset + e;
    if (p.accumulate != 0u) { v += dx[at]; }
    dx[at] = v;
}
