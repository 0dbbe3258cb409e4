// adam.wgsl: the optimiser over one flat parameter buffer, with the global gradient norm
// for clipping and the zeroing of gradients.
//
// Bindings: 0 AdamParams (uniform), 1 param [n] (read_write), 2 grad [n] (read_write),
// 3 m [n] (read_write), 4 v [n] (read_write), 5 partials [256 per chunk] (read_write),
// 6 norm [2] (read_write): the gradient norm, then the update's non-finite flag.
// A parameter buffer over the binding limit is cut into chunks,
// each launched on its own (ops::adam); the norm sums the partials of every chunk.
// Entry points, in the order a step runs them:
//   sum_squares  (2, 5)        256 workgroups of 256 threads; thread t of workgroup w sums
//                              (grad_scale grad)^2 over elements w*256+t, stepping by
//                              65536; overwrites partials[w].
//   finish_norm  (5, 6)        one workgroup; overwrites norm[0] = sqrt(sum of all
//                              partials_count partials) and clears the flag, norm[1] = 0.
//   step         (1, 2, 3, 4, 6)  one thread per element, workgroups of 256 spread over y:
//       g = grad_scale grad clip (grad_scale: 1 / the micro-batches summed in grad), clip = min(1, max_norm / norm) when max_norm > 0, else 1
//       m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//       param -= lr * (m / bc1) / (sqrt(v / bc2) + eps) + lr * weight_decay * param
//       (decoupled weight decay, AdamW; bc1 = 1 - beta1^t, bc2 = 1 - beta2^t)
//       norm[1] = 1 where the new param, m or v is NaN or infinite (left alone otherwise:
//       every writer writes the same value), so the host learns it with the norm.
//   zero_grads   (2)           one thread per element; overwrites grad with 0.

// Rust twin: ops::adam::AdamParams.
struct AdamParams {
    n: u32,
    param_offset: u32,
    grad_offset: u32,
    m_offset: u32,
    v_offset: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
    max_norm: f32,
    partials_offset: u32,
    partials_count: u32,
    grad_scale: f32,
}

@group(0) @binding(0) var<uniform> p: AdamParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
@group(0) @binding(6) var<storage, read_write> norm: array<f32>;

// sum_squares and finish_norm meet in a workgroup_sum (shared/reduce.wgsl: a tree in
// workgroup memory, or sums within and across subgroups).
@compute @workgroup_size(REDUCE_WG)
fn sum_squares(@builtin(workgroup_id) wid: vec3<u32>, l: Lanes) {
    var s = 0.0;
    for (var i = wid.x * REDUCE_WG + l.index; i < p.n; i += 65536u) {
        let g = grad[p.grad_offset + i] * p.grad_scale;
        s += g * g;
    }
    let total = workgroup_sum(l, s);
    if (l.index == 0u) { partials[p.partials_offset + wid.x] = total; }
}

@compute @workgroup_size(REDUCE_WG)
fn finish_norm(l: Lanes) {
    var s = 0.0;
    for (var i = l.index; i < p.partials_count; i += REDUCE_WG) {
        s += partials[p.partials_offset + i];
    }
    let total = workgroup_sum(l, s);
    if (l.index == 0u) {
        norm[0] = sqrt(total);
        norm[1] = 0.0;
    }
}

// NaN or infinite: every exponent bit set. A bit test, which a compiler's fast-math
// cannot fold away as it may fold `x != x`.
fn non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(256)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + li;
    if (i >= p.n) { return; }
    var clip = 1.0;
    if (p.max_norm > 0.0 && norm[0] > p.max_norm) {
        clip = p.max_norm / norm[0];
    }
    let g = grad[p.grad_offset + i] * p.grad_scale * clip;
    let mi = p.beta1 * m[p.m_offset + i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[p.v_offset + i] + (1.0 - p.beta2) * g * g;
    m[p.m_offset + i] = mi;
    v[p.v_offset + i] = vi;
    let w = param[p.param_offset + i];
    let update = (mi / p.bc1) / (sqrt(vi / p.bc2) + p.eps) + p.weight_decay * w;
    let w_new = w - p.lr * update;
    param[p.param_offset + i] = w_new;
    if (non_finite(w_new) || non_finite(mi) || non_finite(vi)) {
        norm[1] = 1.0;
    }
}

@compute @workgroup_size(256)
fn zero_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + li;
    if (i >= p.n) { return; }
    grad[p.grad_offset + i] = 0.0;
}
