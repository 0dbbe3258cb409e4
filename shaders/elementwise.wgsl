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
// Dispatch: ceil(n / 256) workgroups of 256, spread over x and y past 65535.
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

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    let av = a[p.a_offset + i];
    var f: f32;
    switch p.op {
        case 0u: { f = max(av, 0.0); }
        case 1u: { f = select(0.0, b[p.b_offset + i], av > 0.0); }
        case 2u: { f = av + b[p.b_offset + i]; }
        case 3u: { f = av; }
        default: { f = av * b[p.b_offset + i]; }
    }
    var v = p.alpha * f;
    let at = p.out_offset + i;
    if (p.accumulate != 0u) {
        v += out[at];
    }
    out[at] = v;
}
