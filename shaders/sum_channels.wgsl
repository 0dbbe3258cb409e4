// sum_channels.wgsl: out[c] (+)= alpha * sum over o, i of x[o, c, i], for x of shape
// [outer, channels, inner]. Bias gradients ([N, C, H*W] -> [C], [R, C] -> [C]) and the
// reduction of split partial sums ([chunks, W] -> [W]) are all this one kernel.
//
// Bindings: 0 SumChannelsParams (uniform), 1 x (read), 2 out (read_write).
// Entry points (the launcher picks by the length of each sum, outer * inner):
//   main         long sums: one workgroup of REDUCE_WG per channel; the threads stride over
//                the outer x inner elements and meet in a workgroup_sum (shared/reduce.wgsl:
//                a tree in workgroup memory, or sums within and across subgroups).
//   main_vec4    the same, four elements of inner a load, when inner and x_offset are
//                multiples of 4 (lavapipe pays about as much for a vec4 load as for one f32).
//   per_thread   short sums (split partials, [chunks, W] with few chunks): one thread per
//                channel in workgroups of 256.
// Workgroups past 65535 spread over y.
// Writes: overwrites out, or adds to it when accumulate != 0.

// Rust twin: ops::sum_channels::SumChannelsParams.
struct SumChannelsParams {
    outer: u32,
    channels: u32,
    inner: u32,
    x_offset: u32,
    out_offset: u32,
    accumulate: u32,
    alpha: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: SumChannelsParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// x seen as vec4s, for main_vec4 (an entry point uses one view or the other).
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;

// Adds the workgroup's partial sums s and writes channel c's result (thread 0).
// Call from uniform control flow.
fn finish(c: u32, l: Lanes, s: f32) {
    let total = workgroup_sum(l, s);
    if (l.index == 0u) {
        var v = p.alpha * total;
        let at = p.out_offset + c;
        if (p.accumulate != 0u) {
            v += out[at];
        }
        out[at] = v;
    }
}

@compute @workgroup_size(REDUCE_WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        l: Lanes) {
    let c = wid.x + wid.y * nwg.x;
    // Uniform across the workgroup, so the reduction below stays in uniform control flow.
    if (c >= p.channels) {
        return;
    }
    let count = p.outer * p.inner;
    var s = 0.0;
    for (var e = l.index; e < count; e += REDUCE_WG) {
        let o = e / p.inner;
        let i = e - o * p.inner;
        s += x[p.x_offset + (o * p.channels + c) * p.inner + i];
    }
    finish(c, l, s);
}

@compute @workgroup_size(REDUCE_WG)
fn main_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             l: Lanes) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= p.channels) {
        return;
    }
    let inner4 = p.inner / 4u;
    let count = p.outer * inner4;
    var s = vec4<f32>(0.0);
    for (var e = l.index; e < count; e += REDUCE_WG) {
        let o = e / inner4;
        let i = e - o * inner4;
        s += x4[p.x_offset / 4u + (o * p.channels + c) * inner4 + i];
    }
    finish(c, l, s.x + s.y + s.z + s.w);
}

@compute @workgroup_size(256)
fn per_thread(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let c = (wid.x + wid.y * nwg.x) * 256u + li;
    if (c >= p.channels) {
        return;
    }
    var s = 0.0;
    for (var o = 0u; o < p.outer; o++) {
        let base = p.x_offset + (o * p.channels + c) * p.inner;
        for (var i = 0u; i < p.inner; i++) {
            s += x[base + i];
        }
    }
    var v = p.alpha * s;
    let at = p.out_offset + c;
    if (p.accumulate != 0u) {
        v += out[at];
    }
    out[at] = v;
}
