// layer_norm.wgsl: layer norm over each sample's channels and positions, i.e. group norm with
// one group (PyTorch GroupNorm(1, C)); with inner = 1 it is LayerNorm(C) over vectors.
// Batch statistics are never used: each sample is normalised on its own (no batch norm).
//
//   x [n, channels, inner] -> y = (x - mean_n) * rstd_n * gamma[c] + beta[c]
//   mean_n, rstd_n = 1 / sqrt(var_n + eps) over the channels * inner values of sample n.
//
// Bindings: 0 LayerNormParams (uniform), 1 x (read), 2 gamma [channels] (read),
// 3 beta [channels] (read), 4 y (read_write), 5 stats [n, 2] = (mean, rstd) (read_write),
// 6 dy (read), 7 dx (read_write), 8 dgamma [channels] (read_write), 9 dbeta (read_write).
// Entry points and what they use:
//   forward          (1, 2, 3, 4, 5)  one workgroup of REDUCE_WG per sample; overwrites y and
//                                     stats.
//   backward_input   (1, 2, 5, 6, 7)  one workgroup per sample; overwrites dx (adds when
//                                     accumulate != 0):
//                    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma.
//   backward_params  (1, 5, 6, 8, 9)  one workgroup per channel; ADDS to dgamma and dbeta:
//                    dgamma[c] += sum dy * xhat, dbeta[c] += sum dy over samples and inner.
// Workgroups past 65535 spread over y. Each sum over a workgroup is a workgroup_sum2
// (shared/reduce.wgsl: a tree in workgroup memory, or sums within and across subgroups).

// Rust twin: ops::layer_norm::LayerNormParams.
struct LayerNormParams {
    n: u32,
    channels: u32,
    inner: u32,
    x_offset: u32,
    gamma_offset: u32,
    beta_offset: u32,
    y_offset: u32,
    stats_offset: u32,
    dy_offset: u32,
    dx_offset: u32,
    dgamma_offset: u32,
    dbeta_offset: u32,
    accumulate: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: LayerNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(9) var<storage, read_write> dbeta: array<f32>;

@compute @workgroup_size(REDUCE_WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           l: Lanes) {
    let s = wid.x + wid.y * nwg.x;
    if (s >= p.n) { return; }
    let m = p.channels * p.inner;
    let base = s * m;
    // Two passes (mean, then squared deviations) to avoid cancellation in the variance.
    var acc = 0.0;
    for (var e = l.index; e < m; e += REDUCE_WG) { acc += x[p.x_offset + base + e]; }
    let mean = workgroup_sum(l, acc) / f32(m);
    acc = 0.0;
    for (var e = l.index; e < m; e += REDUCE_WG) {
        let d = x[p.x_offset + base + e] - mean;
        acc += d * d;
    }
    let rstd = inverseSqrt(workgroup_sum(l, acc) / f32(m) + p.eps);
    for (var e = l.index; e < m; e += REDUCE_WG) {
        let c = e / p.inner;
        let xhat = (x[p.x_offset + base + e] - mean) * rstd;
        y[p.y_offset + base + e] = xhat * gamma[p.gamma_offset + c] + beta[p.beta_offset + c];
    }
    if (l.index == 0u) {
        stats[p.stats_offset + 2u * s] = mean;
        stats[p.stats_offset + 2u * s + 1u] = rstd;
    }
}

@compute @workgroup_size(REDUCE_WG)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  l: Lanes) {
    let s = wid.x + wid.y * nwg.x;
    if (s >= p.n) { return; }
    let m = p.channels * p.inner;
    let base = s * m;
    let mean = stats[p.stats_offset + 2u * s];
    let rstd = stats[p.stats_offset + 2u * s + 1u];
    var sg = 0.0;
    var sgx = 0.0;
    for (var e = l.index; e < m; e += REDUCE_WG) {
        let c = e / p.inner;
        let g = dy[p.dy_offset + base + e] * gamma[p.gamma_offset + c];
        let xhat = (x[p.x_offset + base + e] - mean) * rstd;
        sg += g;
        sgx += g * xhat;
    }
    let sums = workgroup_sum2(l, vec2<f32>(sg, sgx)) / f32(m);
    for (var e = l.index; e < m; e += REDUCE_WG) {
        let c = e / p.inner;
        let g = dy[p.dy_offset + base + e] * gamma[p.gamma_offset + c];
        let xhat = (x[p.x_offset + base + e] - mean) * rstd;
        var v = rstd * (g - sums.x - xhat * sums.y);
        let at = p.dx_offset + base + e;
        if (p.accumulate != 0u) { v += dx[at]; }
        dx[at] = v;
    }
}

@compute @workgroup_size(REDUCE_WG)
fn backward_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   l: Lanes) {
    let c = wid.x + wid.y * nwg.x;
    if (c >= p.channels) { return; }
    let count = p.n * p.inner;
    var sg = 0.0;
    var sb = 0.0;
    for (var e = l.index; e < count; e += REDUCE_WG) {
        let s = e / p.inner;
        let i = e - s * p.inner;
        let at = (s * p.channels + c) * p.inner + i;
        let xhat = (x[p.x_offset + at] - stats[p.stats_offset + 2u * s]) * stats[p.stats_offset + 2u * s + 1u];
        let g = dy[p.dy_offset + at];
        sg += g * xhat;
        sb += g;
    }
    let sums = workgroup_sum2(l, vec2<f32>(sg, sb));
    if (l.index == 0u) {
        dgamma[p.dgamma_offset + c] += sums.x;
        dbeta[p.dbeta_offset + c] += sums.y;
    }
}
