// patches.wgsl: cut a batch of S x S crops into the G x G grid of P x P patches at stride
// P / 2 (50 % overlap), in the layout the encoder reads, with the optional per-patch jitter
// of docs/model.md ("Data path"): a random (P - J) x (P - J) window of the patch, placed at a random offset
// in a zero P x P canvas (J = P / 16 in the presets; J = 0 is plain extraction).
//
//   x   [batch, 3, crop, crop]                  crop = S, with S = P * (G + 1) / 2
//   out [batch * G * G, 3, P, P]                patch n = (b * G + r) * G + c
//   out[n, ch, y, x] = x[b, ch, r*P/2 + sy + (y - ty), c*P/2 + sx + (x - tx)]
//                      where 0 <= y - ty < P - J and 0 <= x - tx < P - J, else 0;
//   (sy, sx, ty, tx) in 0..=J come from a PCG hash of (seed, n), mirrored by cpu::patches.
//
// Bindings: 0 PatchesParams (uniform), 1 x (read), 2 out (read_write).
// Dispatch: one thread per output element in workgroups of 256, spread over y past 65535.
// Writes: overwrites out. No backward: the images are data, nothing upstream learns.

// Rust twin: ops::patches::PatchesParams.
struct PatchesParams {
    batch: u32,
    grid: u32,
    patch_size: u32,
    crop: u32,
    x_offset: u32,
    out_offset: u32,
    jitter: u32,
    seed: u32,
}

@group(0) @binding(0) var<uniform> p: PatchesParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// PCG hash (O'Neill), the RXS-M-XS output of one LCG step.
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + li;
    let pp = p.patch_size * p.patch_size;
    let total = p.batch * p.grid * p.grid * 3u * pp;
    if (e >= total) { return; }
    let n = e / (3u * pp);
    let ch = (e / pp) % 3u;
    let y = (e % pp) / p.patch_size;
    let xx = e % p.patch_size;
    let c = n % p.grid;
    let r = (n / p.grid) % p.grid;
    let b = n / (p.grid * p.grid);

    let h0 = pcg(p.seed + pcg(n));
    let h1 = pcg(h0);
    let h2 = pcg(h1);
    let h3 = pcg(h2);
    let j1 = p.jitter + 1u;
    let sy = h0 % j1;
    let sx = h1 % j1;
    let ty = h2 % j1;
    let tx = h3 % j1;
    let window = p.patch_size - p.jitter;

    var v = 0.0;
    if (y >= ty && y - ty < window && xx >= tx && xx - tx < window) {
        let half = p.patch_size / 2u;
        let iy = r * half + sy + (y - ty);
        let ix = c * half + sx + (xx - tx);
        v = x[p.x_offset + ((b * 3u + ch) * p.crop + iy) * p.crop + ix];
    }
    out[p.out_offset + e] = v;
}
