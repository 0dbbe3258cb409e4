// softmax_xent.wgsl: the soft-max cross-entropy of a linear classifier, row by row, with its
// gradient and whether each row's class is in the top 1 and top 5 (the linear probe).
//
// For row n, with logits l[c] = scores[n, c] + bias[c] (scores = X W^T from matmul.wgsl) and
// target t = labels[n] (a class index stored as an exact f32):
//   m = max_c l[c];  e = sum_c exp(l[c] - m)          (stable for any magnitude)
//   row_stats[n] = (loss, top1, top5):  loss = log(e) + m - l[t]
//       rank = #{c : l[c] > l[t]} (ties count for the target);  top1 = rank < 1, top5 = rank < 5
//   dlogits[n, c] = (exp(l[c] - m) / e - [c == t]) * scale
// With scale = 1 / rows, dlogits is the gradient of the mean loss with respect to the scores
// (and, summed over rows by sum_channels.wgsl, with respect to the bias).
//
// Bindings: 0 SoftmaxXentParams (uniform), 1 scores [rows, classes] (read), 2 bias [classes]
// (read), 3 labels [rows] (read), 4 dlogits [rows, classes] (read_write), 5 row_stats
// [rows, 3] (read_write). Offsets are in elements from each binding's start.
// Dispatch: a team per row (shared/reduce.wgsl: one thread on the portable path, one subgroup
// with subgroups), ceil(rows / ROWS_PER_GROUP) workgroups of ROW_WG spread over x and y; the
// team's members take every team.size-th class of the row (a classifier has tens to a
// thousand) and combine with team_max / team_sum.
// Writes: overwrites dlogits and row_stats.

// Rust twin: ops::softmax_xent::SoftmaxXentParams.
struct SoftmaxXentParams {
    rows: u32,
    classes: u32,
    scores_offset: u32,
    bias_offset: u32,
    labels_offset: u32,
    dlogits_offset: u32,
    stats_offset: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: SoftmaxXentParams;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_stats: array<f32>;

const LOWEST: f32 = -3.4028235e38;

fn logit(row: u32, c: u32) -> f32 {
    return scores[p.scores_offset + row + c] + bias[p.bias_offset + c];
}

@compute @workgroup_size(ROW_WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        l: Lanes) {
    let team = team_of(l);
    let rows = group_rows(wid.x + wid.y * nwg.x, p.rows);
    // Uniform in the team: a team takes a row whole or not at all.
    for (var n = rows.x + team.id; n < rows.y; n += team.count) {
        softmax_row(n, team);
    }
}

// Row n, walked by the team's members together.
fn softmax_row(n: u32, team: Team) {
    let row = n * p.classes;
    // The host checks labels; the clamp only keeps a bad one from reading out of bounds.
    let t = min(u32(labels[p.labels_offset + n]), p.classes - 1u);
    let l_t = logit(row, t);

    var m = LOWEST;
    for (var c = team.lane; c < p.classes; c += team.size) {
        m = max(m, logit(row, c));
    }
    m = team_max(m);
    var e = 0.0;
    var rank = 0u;
    for (var c = team.lane; c < p.classes; c += team.size) {
        let l = logit(row, c);
        e += exp(l - m);
        rank += select(0u, 1u, l > l_t);
    }
    e = team_sum(e);
    rank = team_sum_u32(rank);
    let inv_e = 1.0 / e;
    for (var c = team.lane; c < p.classes; c += team.size) {
        let hit = select(0.0, 1.0, c == t);
        dlogits[p.dlogits_offset + row + c] = (exp(logit(row, c) - m) * inv_e - hit) * p.scale;
    }
    if (team.lane == 0u) {
        let s = p.stats_offset + 3u * n;
        row_stats[s] = log(e) + m - l_t;
        row_stats[s + 1u] = select(0.0, 1.0, rank < 1u);
        row_stats[s + 2u] = select(0.0, 1.0, rank < 5u);
    }
}
