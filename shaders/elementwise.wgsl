// elementwise.wgsl: out[i] (+)= alpha * f(a[i], b[i]) over n elements.
//
// op 0 relu:          f = max(a, 0)
// op 1 relu_backward: f = b if a > 0 else 0   (a: the ReLU's output y, b: dy)
// op 2 add:           f = a + b               (residual add)
// op 3 scale:         f = a                   (with alpha: scale; accumulating: axpy)
// op 4 mul:           f = a * b
//
// Bindings: 0 ElementwiseParams (uniform), 1 a (read), 2 b (read; unary ops bind a again),
// 3 out (read_write). Offsets are in elements from each binding's start.
// Entry points: main, one element a thread: ceil(n / 256) workgroups of 256, spread over x
// and y past 65535. main_vec4, four elements a thread through vec4 loads, when n and every
// offset are multiples of 4: ceil(n / 1024) workgroups. lavapipe pays about as much for a
// vec4 load as for a scalar one, so main_vec4 moves four times the data for the same loads.
// Writes: overwrites out, or adds to it when accumulate != 0.

// Rust twin: ops::elementwise::ElementwiseParams.
struct ElementwiseParams {
    n: u32,
    op: u32,
    a_offset: u32,
    b_offset: u32,
    out_offset: u32,
    accumulate: u32,
    alpha: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: ElementwiseParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// The same bindings seen as vec4s, for main_vec4 (an entry point uses one view or the other).
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;

// alpha * f(a, b) for the op, four lanes at a time (main uses lane x). Unary ops get a as b.
fn apply(av: vec4<f32>, bv: vec4<f32>) -> vec4<f32> {
    var f: vec4<f32>;
    switch p.op {
        case 0u: { f = max(av, vec4<f32>(0.0)); }
        case 1u: { f = select(vec4<f32>(0.0), bv, av > vec4<f32>(0.0)); }
        case 2u: { f = av + bv; }
        case 3u: { f = av; }
        default: { f = av * bv; }
    }
    return p.alpha * f;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    let av = a[p.a_offset + i];
    var bv = av;
    if (p.op == 1u || p.op == 2u || p.op == 4u) {
        bv = b[p.b_offset + i];
    }
    var v = apply(vec4<f32>(av), vec4<f32>(bv)).x;
    let at = p.out_offset + i;
    if (p.accumulate != 0u) {
        v += out[at];
    }
    out[at] = v;
}

@compute @workgroup_size(256)
fn main_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + li;
    if (i >= p.n / 4u) {
        return;
    }
    let av = a4[p.a_offset / 4u + i];
    var bv = av;
    if (p.op == 1u || p.op == 2u || p.op == 4u) {
        bv = b4[p.b_offset / 4u + i];
    }
    var v = apply(av, bv);
    let at = p.out_offset / 4u + i;
    if (p.accumulate != 0u) {
        v += out4[at];
    }
    out4[at] = v;
}
