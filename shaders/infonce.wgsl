// infonce.wgsl: the InfoNCE loss of one prediction step k, from its scores S = P Z^T
// [queries, candidates] (computed before by matmul.wgsl), and the reduction of the per-query
// losses to the few numbers the host reads.
//
// z is in the layout of ops::sequences: row (b * T + t) * W + w (vision: image b, grid row t,
// column w; audio: clip b, frame t, W = 1). Query q = (b * (T - o) + t) * W + w predicts
// (b, t + o, w), o the step's offset; its true candidate is z row (b * T + t + o) * W + w.
// Every other z row is a negative.
//
// Entry infonce_rows: one thread per query row, workgroups of 64, spread over x and y; the
// thread walks its row three times (max, sum, gradient). On lavapipe this beat a workgroup
// per row with tree reductions in workgroup memory 10x (rows of 784 candidates: the barriers
// and workgroup-memory loads cost more than the row itself).
//   max m = max_j S[q, j];  sum e = sum_j exp(S[q, j] - m)  (stable for any magnitude)
//   loss[q] = log(e) + m - S[q, t];
//   correct[q] = 1 if S[q, t] > S[q, j] for every j != t, else 0 (a tie is wrong: flat
//   crops that score every candidate alike must not count as right)
//   dS[q, j] = (exp(S[q, j] - m) / e - [j == t]) * scale,  scale = 1 / (queries * K)
//   Bindings: 0 InfonceParams, 1 scores [queries, candidates] (read),
//   2 dscores [queries, candidates] (read_write), 3 row_stats [queries, 2] (read_write:
//   loss, correct). Writes: overwrites dscores and row_stats.
//
// Entry infonce_reduce: one workgroup of 256 for the step.
//   stats[1 + 2k] = mean loss over queries, stats[2 + 2k] = share correct,
//   stats[0] (+)= loss_k / K: overwritten when accumulate == 0 (step 0), else added to.
//   Bindings: 0 InfonceParams, 1 row_stats_in [queries, 2] (read), 2 stats [1 + 2K]
//   (read_write). Its bindings 1 and 2 reuse the numbers of infonce_rows's: each entry
//   point gets its own bind group layout, so the two sets never meet.

// Rust twin: ops::infonce::InfonceParams.
struct InfonceParams {
    queries: u32,
    candidates: u32,
    steps: u32,
    width: u32,
    offset: u32,
    scores_offset: u32,
    dscores_offset: u32,
    rows_offset: u32,
    stats_offset: u32,
    step: u32,
    accumulate: u32,
    scale: f32,
    inv_steps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: InfonceParams;

// infonce_rows
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> dscores: array<f32>;
@group(0) @binding(3) var<storage, read_write> row_stats: array<f32>;

// infonce_reduce
@group(0) @binding(1) var<storage, read> row_stats_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;

const WG: u32 = 256u;
const LOWEST: f32 = -3.4028235e38;

var<workgroup> partial: array<f32, 256>;

// Sum of v over the workgroup. Call from uniform control flow.
fn workgroup_sum(li: u32, v: f32) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (li < half) {
            partial[li] += partial[li + half];
        }
        workgroupBarrier();
    }
    let s = partial[0];
    workgroupBarrier();
    return s;
}

// The z row of query q's true candidate: (b * T + t + o) * W + w.
fn target_of(q: u32) -> u32 {
    let per_block = (p.steps - p.offset) * p.width;
    let b = q / per_block;
    let tw = q - b * per_block; // t * W + w
    return (b * p.steps + p.offset) * p.width + tw;
}

@compute @workgroup_size(64)
fn infonce_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let q = (wid.x + wid.y * nwg.x) * 64u + li;
    if (q >= p.queries) {
        return;
    }
    let n = p.candidates;
    let s_row = p.scores_offset + q * n;
    let d_row = p.dscores_offset + q * n;

    let t = target_of(q);
    // m: the row's maximum; rival: the maximum over the other candidates.
    var m = LOWEST;
    var rival = LOWEST;
    for (var j = 0u; j < n; j++) {
        let s = scores[s_row + j];
        m = max(m, s);
        rival = max(rival, select(s, LOWEST, j == t));
    }
    var total = 0.0;
    for (var j = 0u; j < n; j++) {
        total += exp(scores[s_row + j] - m);
    }
    let inv_total = 1.0 / total;
    for (var j = 0u; j < n; j++) {
        dscores[d_row + j] = exp(scores[s_row + j] - m) * inv_total * p.scale;
    }
    let s_t = scores[s_row + t];
    dscores[d_row + t] = (exp(s_t - m) * inv_total - 1.0) * p.scale;
    row_stats[p.rows_offset + 2u * q] = log(total) + m - s_t;
    row_stats[p.rows_offset + 2u * q + 1u] = select(0.0, 1.0, s_t > rival);
}

@compute @workgroup_size(256)
fn infonce_reduce(@builtin(local_invocation_index) li: u32) {
    var loss = 0.0;
    var correct = 0.0;
    for (var q = li; q < p.queries; q += WG) {
        loss += row_stats_in[p.rows_offset + 2u * q];
        correct += row_stats_in[p.rows_offset + 2u * q + 1u];
    }
    let loss_sum = workgroup_sum(li, loss);
    let correct_sum = workgroup_sum(li, correct);
    if (li == 0u) {
        let n = f32(p.queries);
        let loss_k = loss_sum / n;
        stats[p.stats_offset + 1u + 2u * p.step] = loss_k;
        stats[p.stats_offset + 2u + 2u * p.step] = correct_sum / n;
        var total = loss_k * p.inv_steps;
        if (p.accumulate != 0u) {
            total += stats[p.stats_offset];
        }
        stats[p.stats_offset] = total;
    }
}
