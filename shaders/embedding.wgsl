// embedding.wgsl: word embeddings of a padded batch of sentences, and their backward.
//
//   forward:  out[n, e, w] = table[ids[n, w], e], or 0 where ids[n, w] = PAD
//             ids [N, W] u32, table [V, E], out [N, E, 1, W] (the word conv's input)
//   backward: d_table[v, e] += sum over j of d_out[n_j, e, w_j], for each distinct word v of
//             the batch, its positions p_j = n_j W + w_j in ascending order
//
// The backward's index (ops::embedding::WordPositions, built on the host) is one u32 array:
// at 0 the count D of distinct words, then from words_at the words (ascending, PAD never
// among them), from starts_at D + 1 starts, from positions_at the positions of word d at
// starts[d]..starts[d + 1]. No two invocations write one element, so no atomics, and each
// sum runs in a fixed order: the backward is deterministic.
//
// Bindings: 0 EmbeddingParams (uniform), 1 ids (read, u32), 2 table (read), 3 out
// (read_write), 4 index (read, u32), 5 d_out (read), 6 d_table (read_write). forward uses
// (1, 2, 3), backward (4, 5, 6).
// Override constants: PAD, the padding id (ops::embedding::PAD).
// Dispatch: workgroups of 256 spread over x and y past 65535 workgroups; forward one
// thread per element of out (N E W); backward one thread per (distinct word, channel) of
// the worst case (min(N W, V - 1) E), those past the batch's D E returning at once.
// Writes: forward overwrites out; backward adds to the rows of the batch's words.

// Rust twin: ops::embedding::EmbeddingParams.
struct EmbeddingParams {
    sentences: u32,
    width: u32,
    dim: u32,
    ids_offset: u32,
    table_offset: u32,
    out_offset: u32,
    index_offset: u32,
    words_at: u32,
    starts_at: u32,
    positions_at: u32,
    d_out_offset: u32,
    d_table_offset: u32,
}

override PAD: u32;

@group(0) @binding(0) var<uniform> p: EmbeddingParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> index: array<u32>;
@group(0) @binding(5) var<storage, read> d_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> d_table: array<f32>;

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let o = (wid.x + wid.y * nwg.x) * 256u + li; // o = (n * E + e) * W + w
    if (o >= p.sentences * p.dim * p.width) { return; }
    let row = o / p.width;
    let w = o - row * p.width;
    let n = row / p.dim;
    let e = row - n * p.dim;
    let id = ids[p.ids_offset + n * p.width + w];
    var v = 0.0;
    if (id != PAD) { v = table[p.table_offset + id * p.dim + e]; }
    out[p.out_offset + o] = v;
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let t = (wid.x + wid.y * nwg.x) * 256u + li; // t = d * E + e
    let at = p.index_offset;
    if (t >= index[at] * p.dim) { return; }
    let d = t / p.dim;
    let e = t - d * p.dim;
    let word = index[at + p.words_at + d];
    let end = index[at + p.starts_at + d + 1u];
    var s = 0.0;
    for (var j = index[at + p.starts_at + d]; j < end; j++) {
        let pos = index[at + p.positions_at + j];
        let n = pos / p.width;
        let w = pos - n * p.width;
        s += d_out[p.d_out_offset + (n * p.dim + e) * p.width + w];
    }
    let to = p.d_table_offset + word * p.dim + e;
    d_table[to] += s;
}
