// gru.wgsl: the element-wise part of one time step of a GRU (PyTorch's torch.nn.GRU, gate
// order r, z, n), run for all S = B*W sequences (b, w) at once, and its backward. The matrix
// products around it are ops::matmul launches (see ops::gru for the whole schedule).
//
// Sizes (ops::sequences): B blocks of T steps of W sequences (vision: images, grid rows,
// grid columns; audio: clips, frames, 1), H hidden, S = B*W sequences. Two row orders:
//   sequences' layout, row (b*T + t)*W + w: gi, dgi, c, dc (shared with the rest of the model);
//   time-major, row t*S + s with s = b*W + w: gates, hprev, dgh (the op's own buffers),
//   so the rows of one step are contiguous and a step's matrix products need no batching.
//
// gates_forward, step t (h_prev = 0 when t = 0; gh is not read then):
//   r = sigmoid(gi_r + b_ir + gh_r + b_hr)
//   z = sigmoid(gi_z + b_iz + gh_z + b_hz)
//   n = tanh(gi_n + b_in + r * (gh_n + b_hn))
//   h = (1 - z) * n + z * h_prev
// Bindings: 0 GruForwardParams (uniform), 1 gi [B*T*W, 3H] (read; W_ih x, no bias),
// 2 gh [S, 3H] (read; W_hh h_prev of step t, no bias), 3 b_ih [3H] (read), 4 b_hh [3H]
// (read), 5 c [B*T*W, H] (read_write; h written to the rows of step t),
// 6 hprev [T*S, H] (read_write; time-major h_prev: block 0 zeroed at t = 0, block t+1 <- h),
// 7 gates [T*S, 4H] (read_write; time-major r, z, n, gh_n + b_hn saved for the backward).
//
// gates_backward, step t, with dh = dc (+ carry from step t+1 unless t = T-1):
//   da_n = dh (1 - z) (1 - n^2)
//   da_z = dh (h_prev - n) z (1 - z)
//   da_r = da_n (gh_n + b_hn) r (1 - r)
//   dgi = [da_r, da_z, da_n]      (gradient of W_i x + b_i)
//   dgh = [da_r, da_z, da_n * r]  (gradient of W_h h_prev + b_h)
//   carry = dh * z                (the direct part of dh_prev; ops::gru adds dgh W_hh)
// Bindings: 0 GruBackwardParams (uniform), 1 dc [B*T*W, H] (read), 2 gates [T*S, 4H] (read),
// 3 hprev [T*S, H] (read), 4 carry [S, H] (read_write), 5 dgi [B*T*W, 3H] (read_write; rows
// of step t), 6 dgh [T*S, 3H] (read_write; rows of step t).
//
// Dispatch (both): one thread per (s, j), j in 0..H: ceil(S*H / 64) workgroups of 64, spread
// over x and y past the per-dimension limit.
// Writes: every output above is overwritten, never accumulated.

// Rust twin: ops::gru::GruForwardParams.
struct GruForwardParams {
    seqs: u32,
    steps: u32,
    width: u32,
    hidden: u32,
    step: u32,
    gi_offset: u32,
    gh_offset: u32,
    b_ih_offset: u32,
    b_hh_offset: u32,
    c_offset: u32,
    hprev_offset: u32,
    gates_offset: u32,
}

// Rust twin: ops::gru::GruBackwardParams.
struct GruBackwardParams {
    seqs: u32,
    steps: u32,
    width: u32,
    hidden: u32,
    step: u32,
    dc_offset: u32,
    gates_offset: u32,
    hprev_offset: u32,
    carry_offset: u32,
    dgi_offset: u32,
    dgh_offset: u32,
    _pad0: u32,
}

// The two entry points bind different resources to the same slots; each pipeline only sees
// the variables its entry point uses.
@group(0) @binding(0) var<uniform> pf: GruForwardParams;
@group(0) @binding(1) var<storage, read> gi: array<f32>;
@group(0) @binding(2) var<storage, read> gh: array<f32>;
@group(0) @binding(3) var<storage, read> b_ih: array<f32>;
@group(0) @binding(4) var<storage, read> b_hh: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read_write> hprev: array<f32>;
@group(0) @binding(7) var<storage, read_write> gates: array<f32>;

@group(0) @binding(0) var<uniform> pb: GruBackwardParams;
@group(0) @binding(1) var<storage, read> dc: array<f32>;
@group(0) @binding(2) var<storage, read> gates_in: array<f32>;
@group(0) @binding(3) var<storage, read> hprev_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> carry: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgi: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgh: array<f32>;

const WG: u32 = 64u;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Clamped: some drivers evaluate tanh through exp and return NaN for large |x|;
// tanh(15) already rounds to 1 in f32.
fn tanh_safe(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

@compute @workgroup_size(64)
fn gates_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    let h3 = 3u * pf.hidden;
    if (i >= pf.seqs * pf.hidden) {
        return;
    }
    let s = i / pf.hidden;
    let j = i % pf.hidden;
    let t = pf.step;
    // Sequence s = b*W + w, so its row at step t is (b*T + t)*W + w.
    let row = (s / pf.width * pf.steps + t) * pf.width + s % pf.width;
    let tm = t * pf.seqs + s;

    var ghr = b_hh[pf.b_hh_offset + j];
    var ghz = b_hh[pf.b_hh_offset + pf.hidden + j];
    var ghn = b_hh[pf.b_hh_offset + 2u * pf.hidden + j];
    var hp = 0.0;
    if (t > 0u) {
        let g = pf.gh_offset + s * h3;
        ghr += gh[g + j];
        ghz += gh[g + pf.hidden + j];
        ghn += gh[g + 2u * pf.hidden + j];
        hp = hprev[pf.hprev_offset + tm * pf.hidden + j];
    } else {
        hprev[pf.hprev_offset + tm * pf.hidden + j] = 0.0;
    }
    let x = pf.gi_offset + row * h3;
    let r = sigmoid(gi[x + j] + b_ih[pf.b_ih_offset + j] + ghr);
    let z = sigmoid(gi[x + pf.hidden + j] + b_ih[pf.b_ih_offset + pf.hidden + j] + ghz);
    let n = tanh_safe(gi[x + 2u * pf.hidden + j] + b_ih[pf.b_ih_offset + 2u * pf.hidden + j]
        + r * ghn);
    let h = (1.0 - z) * n + z * hp;

    c[pf.c_offset + row * pf.hidden + j] = h;
    if (t + 1u < pf.steps) {
        hprev[pf.hprev_offset + (tm + pf.seqs) * pf.hidden + j] = h;
    }
    let sv = pf.gates_offset + tm * 4u * pf.hidden + j;
    gates[sv] = r;
    gates[sv + pf.hidden] = z;
    gates[sv + 2u * pf.hidden] = n;
    gates[sv + 3u * pf.hidden] = ghn;
}

@compute @workgroup_size(64)
fn gates_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    let h3 = 3u * pb.hidden;
    if (i >= pb.seqs * pb.hidden) {
        return;
    }
    let s = i / pb.hidden;
    let j = i % pb.hidden;
    let t = pb.step;
    let row = (s / pb.width * pb.steps + t) * pb.width + s % pb.width;
    let tm = t * pb.seqs + s;

    var dh = dc[pb.dc_offset + row * pb.hidden + j];
    if (t + 1u < pb.steps) {
        dh += carry[pb.carry_offset + s * pb.hidden + j];
    }
    let sv = pb.gates_offset + tm * 4u * pb.hidden + j;
    let r = gates_in[sv];
    let z = gates_in[sv + pb.hidden];
    let n = gates_in[sv + 2u * pb.hidden];
    let ghn = gates_in[sv + 3u * pb.hidden];
    let hp = hprev_in[pb.hprev_offset + tm * pb.hidden + j];

    let dan = dh * (1.0 - z) * (1.0 - n * n);
    let daz = dh * (hp - n) * z * (1.0 - z);
    let dar = dan * ghn * r * (1.0 - r);

    let x = pb.dgi_offset + row * h3;
    dgi[x + j] = dar;
    dgi[x + pb.hidden + j] = daz;
    dgi[x + 2u * pb.hidden + j] = dan;
    let y = pb.dgh_offset + tm * h3;
    dgh[y + j] = dar;
    dgh[y + pb.hidden + j] = daz;
    dgh[y + 2u * pb.hidden + j] = dan * r;
    carry[pb.carry_offset + s * pb.hidden + j] = dh * z;
}
