//! Patch extraction with the optional per-patch jitter (shaders/patches.wgsl):
//! crops [B, 3, S, S] -> patches [B*G*G, 3, P, P], patch n = (b*G + r)*G + c.

use crate::error::{shape_err, Result};
use crate::gpu::{rel_offset, spread, Gpu, Launch, Shader, Tensor};

crate::uniform_struct! {
    /// WGSL twin: PatchesParams in shaders/patches.wgsl.
    pub struct PatchesParams {
        pub batch: u32,
        pub grid: u32,
        pub patch_size: u32,
        pub crop: u32,
        pub x_offset: u32,
        pub out_offset: u32,
        pub jitter: u32,
        pub seed: u32,
    }
}

/// The grid geometry: `grid` x `grid` patches of `patch` pixels at stride patch / 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patches {
    pub batch: usize,
    pub grid: usize,
    pub patch: usize,
    /// Largest jitter offset J: a (P - J)^2 window moved by up to J pixels; 0 = none.
    pub jitter: usize,
}

impl Patches {
    /// Crop side S = P (G + 1) / 2.
    pub fn crop(&self) -> usize {
        self.patch * (self.grid + 1) / 2
    }
}

const KERNEL: &str = "patches";

/// Plan the extraction; `seed` picks the jitter and can be rewritten per step with
/// [`params`] and `Launch::set_params`.
pub fn forward(gpu: &Gpu, g: &Patches, crops: &Tensor, out: &Tensor, seed: u32) -> Result<Launch> {
    let s = g.crop();
    if !g.patch.is_multiple_of(2) || g.jitter >= g.patch {
        return shape_err(
            KERNEL,
            format!(
                "patch {} must be even and jitter {} below it",
                g.patch, g.jitter
            ),
        );
    }
    let n_in = g.batch * 3 * s * s;
    let n_out = g.batch * g.grid * g.grid * 3 * g.patch * g.patch;
    if crops.len() != n_in || out.len() != n_out {
        return shape_err(
            KERNEL,
            format!(
                "crops {:?} and patches {:?}, but batch {} of {s}x{s} crops into a {}x{} grid of {}x{} patches \
                 needs [{}, 3, {s}, {s}] and [{}, 3, {}, {}]",
                crops.shape,
                out.shape,
                g.batch,
                g.grid,
                g.grid,
                g.patch,
                g.patch,
                g.batch,
                g.batch * g.grid * g.grid,
                g.patch,
                g.patch
            ),
        );
    }
    let wg = spread(gpu, KERNEL, n_out.div_ceil(256) as u64)?;
    Launch::new(
        gpu,
        Shader::Patches,
        "main",
        &[],
        &params(gpu, g, crops, out, seed),
        &[crops, out],
        wg,
    )
    .map(|l| {
        let g = *g;
        l.cost(0, (n_in + n_out) as u64).reference(move || {
            crate::cpu::patches::forward(&g, &vec![0.5; n_in], seed);
        })
    })
}

/// The uniforms for a given seed (to re-seed a planned launch each step).
pub fn params(gpu: &Gpu, g: &Patches, crops: &Tensor, out: &Tensor, seed: u32) -> PatchesParams {
    PatchesParams {
        batch: g.batch as u32,
        grid: g.grid as u32,
        patch_size: g.patch as u32,
        crop: g.crop() as u32,
        x_offset: rel_offset(gpu, crops),
        out_offset: rel_offset(gpu, out),
        jitter: g.jitter as u32,
        seed,
    }
}
