//! CPU reference of ops::patches, including the same PCG hash for the jitter.

use crate::ops::patches::Patches;

/// PCG hash (O'Neill), as in shaders/patches.wgsl.
pub fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// The jitter (sy, sx, ty, tx) of patch n: source window offset and placement offset.
pub fn jitter(seed: u32, n: u32, max: u32) -> [u32; 4] {
    let h0 = pcg(seed.wrapping_add(pcg(n)));
    let (h1, h2) = (pcg(h0), pcg(pcg(h0)));
    let h3 = pcg(h2);
    [h0, h1, h2, h3].map(|h| h % (max + 1))
}

/// crops [B, 3, S, S] -> patches [B*G*G, 3, P, P].
pub fn forward(g: &Patches, crops: &[f32], seed: u32) -> Vec<f32> {
    let (p, s, gr) = (g.patch, g.crop(), g.grid);
    let window = p - g.jitter;
    let mut out = vec![0.0; g.batch * gr * gr * 3 * p * p];
    for b in 0..g.batch {
        for r in 0..gr {
            for c in 0..gr {
                let n = (b * gr + r) * gr + c;
                let [sy, sx, ty, tx] = jitter(seed, n as u32, g.jitter as u32).map(|v| v as usize);
                for ch in 0..3 {
                    for y in ty..ty + window {
                        for x in tx..tx + window {
                            let (iy, ix) = (r * p / 2 + sy + y - ty, c * p / 2 + sx + x - tx);
                            out[((n * 3 + ch) * p + y) * p + x] =
                                crops[((b * 3 + ch) * s + iy) * s + ix];
                        }
                    }
                }
            }
        }
    }
    out
}
