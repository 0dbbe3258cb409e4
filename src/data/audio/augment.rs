//! Audio augmentation, kept minimal: where a training window starts in its clip, and an
//! optional random gain.
//!
//! - Offset: uniform over every start that keeps the window inside the clip (0 ..= n - L),
//!   the main augmentation (the paper's only one); with `random_offset` off, the centred
//!   window. A clip shorter than the window starts at 0 and is zero-padded at the end.
//! - Gain (off by default): the window is scaled by 10^(g / 20) with g uniform in
//!   `gain_db` (e.g. -6..0 dB), then clamped to [-1, 1].

use rand::Rng;

/// How a training window is cut from its clip.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioAugment {
    /// Random start (true) or the centred window (false).
    pub random_offset: bool,
    /// Random gain range in dB, low to high; None: no gain.
    pub gain_db: Option<(f32, f32)>,
}

impl Default for AudioAugment {
    /// Random offset, no gain.
    fn default() -> Self {
        AudioAugment {
            random_offset: true,
            gain_db: None,
        }
    }
}

impl AudioAugment {
    /// Writes a window of `out.len()` samples of `clip` into `out` (zero-padded if the clip is
    /// shorter); returns where in the clip it starts.
    pub fn window(&self, clip: &[f32], rng: &mut impl Rng, out: &mut [f32]) -> usize {
        let window = out.len();
        let slack = clip.len().saturating_sub(window);
        let offset = if self.random_offset {
            rng.random_range(0..=slack)
        } else {
            slack / 2
        };
        let taken = &clip[offset..(offset + window).min(clip.len())];
        out[..taken.len()].copy_from_slice(taken);
        out[taken.len()..].fill(0.0);
        if let Some((low, high)) = self.gain_db {
            let db = if low < high {
                rng.random_range(low..high)
            } else {
                low
            };
            let gain = 10f32.powf(db / 20.0);
            for s in out.iter_mut() {
                *s = (*s * gain).clamp(-1.0, 1.0);
            }
        }
        offset
    }
}
