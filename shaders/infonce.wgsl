// infonce.wgsl: the InfoNCE loss of one prediction step k, from its scores S = P Z^T
// [queries, candidates] (computed before by matmul.wgsl), and the reduction of the per-query
// losses to the few numbers the host reads.
//
// z is in the layout of ops::sequences: row (b * T + t) * W + w (vision: image b, grid row t,
// column w; audio: clip b, frame t, W = 1). Query q = (b * (T - o) + t) * W + w predicts
// (b, t + o, w), o the step's offset; its true candidate is z row (b * T + t + o) * W + w.
// Every other z row is a negative.
//
// Entry infonce_rows: a team per query row (shared/reduce.wgsl): one thread on the portable
// path, one subgroup with subgroups; workgroups of ROW_WG taking ROWS_PER_GROUP rows each,
// spread over x and y. The team walks its row three times (max, sum, gradient), each member
// every team.size-th candidate, and combines with team_max / team_sum. On lavapipe a thread
// per row beat a workgroup per row with tree reductions in workgroup memory 10x (rows of 784
// candidates: the barriers and workgroup-memory loads cost more than the row itself); a
// subgroup per row needs neither, and its members read neighbouring scores (on lavapipe,
// which gathers every lane's load anyway, it is 20-60 % slower than a thread per row:
// docs/performance.md).
//   max m = max_j S[q, j];  sum e = sum_j exp(S[q, j] - m)  (stable for any magnitude)
//   loss[q] = log(e) + m - S[q, t];
//   correct[q] = 1 if S[q, t] > S[q, j] for every j != t, else 0 (a tie is wrong: flat
//   crops that score every candidate alike must not count as right)
//   dS[q, j] = (exp(S[q, j] - m) / e - [j == t]) * scale,  scale = 1 / (queries * K)
//   Bindings: 0 InfonceParams, 1 scores [queries, candidates] (read),
//   2 dscores [queries, candidates] (read_write), 3 row_stats [queries, 2] (read_write:
//   loss, correct). Writes: overwrites dscores and row_stats.
//
// Entry infonce_reduce: one workgroup of REDUCE_WG for the step; one workgroup_sum2 adds
// the losses and the hits together.
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

const LOWEST: f32 = -3.4028235e38;

// The z row of query q's true candidate: (b * T + t + o) * W + w.
fn target_of(q: u32) -> u32 {
    let per_block = (p.steps - p.offset) * p.width;
    let b = q / per_block;
    let tw = q - b * per_block; // t * W + w
    return (b * p.steps + p.offset) * p.width + tw;
}

@compute @workgroup_size(ROW_WG)
fn infonce_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                l: Lanes) {
    let team = team_of(l);
    let rows = group_rows(wid.x + wid.y * nwg.x, p.queries);
    // Uniform in the team: a team takes a row whole or not at all.
    for (var q = rows.x + team.id; q < rows.y; q += team.count) {
        infonce_row(q, team);
    }
}

// Query q's row, walked by the team's members together.
fn infonce_row(q: u32, team: Team) {
    let n = p.candidates;
    let s_row = p.scores_offset + q * n;
    let d_row = p.dscores_offset + q * n;

    let t = target_of(q);
    // m: the row's maximum; rival: the maximum over the other candidates.
    var m = LOWEST;
    var rival = LOWEST;
    for (var j = team.lane; j < n; j += team.size) {
        let s = scores[s_row + j];
        m = max(m, s);
        rival = max(rival, select(s, LOWEST, j == t));
    }
    m = team_max(m);
    rival = team_max(rival);
    var total = 0.0;
    for (var j = team.lane; j < n; j += team.size) {
        total += exp(scores[s_row + j] - m);
    }
    total = team_sum(total);
    let inv_total = 1.0 / total;
    for (var j = team.lane; j < n; j += team.size) {
        let hit = select(0.0, 1.0, j == t);
        dscores[d_row + j] = (exp(scores[s_row + j] - m) * inv_total - hit) * p.scale;
    }
    if (team.lane == 0u) {
        let s_t = scores[s_row + t];
        row_stats[p.rows_offset + 2u * q] = log(total) + m - s_t;
        row_stats[p.rows_offset + 2u * q + 1u] = select(0.0, 1.0, s_t > rival);
    }
}

@compute @workgroup_size(REDUCE_WG)
fn infonce_reduce(l: Lanes) {
    var sums = vec2<f32>(0.0); // loss, correct
    for (var q = l.index; q < p.queries; q += REDUCE_WG) {
        sums += vec2<f32>(row_stats_in[p.rows_offset + 2u * q],
                          row_stats_in[p.rows_offset + 2u * q + 1u]);
    }
    let total = workgroup_sum2(l, sums);
    if (l.index == 0u) {
        let n = f32(p.queries);
        let loss_k = total.x / n;
        stats[p.stats_offset + 1u + 2u * p.step] = loss_k;
        stats[p.stats_offset + 2u + 2u * p.step] = total.y / n;
        var acc = loss_k * p.inv_steps;
        if (p.accumulate != 0u) {
            acc += stats[p.stats_offset];
        }
        stats[p.stats_offset] = acc;
    }
}
