//! Log-mel filterbank energies: the input baseline the speaker probe compares a model's
//! features with (the CPC paper's MFCC baseline reached 17.6 % on LibriSpeech speakers).
//!
//! Per frame of `window` samples every `hop` (defaults: 25 ms and 10 ms at 16 kHz, 400 and
//! 160 samples): multiply by a periodic Hann window w[n] = 0.5 - 0.5 cos(2 pi n / window),
//! zero-pad to `n_fft` (512), take the power spectrum |X_k|^2 for k = 0..=n_fft/2 (realfft, no
//! normalisation), weight it by `bands` (40) triangular filters evenly spaced on the HTK mel
//! scale m = 2595 log10(1 + f / 700) from `f_min` to `f_max` (0 to 8000 Hz; filter b rises from
//! edge b to its centre, edge b + 1, and falls to edge b + 2, peak weight 1), and take the
//! natural log, floored at `floor` (1e-10) so silence stays finite. [`LogMel::mean`] averages
//! the frames' log energies over time: one vector of `bands` values per clip.
//!
//! Frames: 1 + (n - window) / hop for a clip of n >= window samples (the tail shorter than a
//! hop is dropped); a shorter clip gives one frame, zero-padded.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use super::SAMPLE_RATE;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct LogMelConfig {
    /// Hz of the clips (16000).
    pub sample_rate: u32,
    /// Samples a frame spans (400: 25 ms).
    pub window: usize,
    /// Samples between frame starts (160: 10 ms).
    pub hop: usize,
    /// FFT length, at least `window` (512).
    pub n_fft: usize,
    /// Mel bands (40).
    pub bands: usize,
    /// Lowest and highest filter edge, Hz (0 and the Nyquist frequency, 8000).
    pub f_min: f32,
    pub f_max: f32,
    /// Energies below this are taken as this before the log (1e-10).
    pub floor: f32,
}

impl Default for LogMelConfig {
    fn default() -> Self {
        LogMelConfig {
            sample_rate: SAMPLE_RATE,
            window: 400,
            hop: 160,
            n_fft: 512,
            bands: 40,
            f_min: 0.0,
            f_max: SAMPLE_RATE as f32 / 2.0,
            floor: 1e-10,
        }
    }
}

/// A planned log-mel filterbank; safe to share between threads.
pub struct LogMel {
    config: LogMelConfig,
    /// [window]
    hann: Vec<f32>,
    /// [bands, n_fft / 2 + 1], row b the weights of filter b on each FFT bin.
    filters: Vec<f32>,
    /// The bins each filter weighs, first..last (the rest of its row is 0).
    support: Vec<(usize, usize)>,
    fft: Arc<dyn RealToComplex<f32>>,
}

/// Hz to HTK mel.
pub fn hz_to_mel(hz: f32) -> f32 {
    2595.0 * (1.0 + hz / 700.0).log10()
}

/// HTK mel to Hz.
pub fn mel_to_hz(mel: f32) -> f32 {
    700.0 * (10f32.powf(mel / 2595.0) - 1.0)
}

impl LogMel {
    pub fn new(config: LogMelConfig) -> Result<LogMel> {
        let c = &config;
        let nyquist = c.sample_rate as f32 / 2.0;
        let bad = |why: String| Err(Error::Config(format!("log-mel features: {why}")));
        if c.window == 0 || c.hop == 0 || c.bands == 0 {
            return bad(format!(
                "window {}, hop {} and bands {} must be positive",
                c.window, c.hop, c.bands
            ));
        }
        if c.n_fft < c.window {
            return bad(format!(
                "FFT length {} is below the window {}",
                c.n_fft, c.window
            ));
        }
        if !(0.0 <= c.f_min && c.f_min < c.f_max && c.f_max <= nyquist) {
            return bad(format!(
                "the band edges {} to {} Hz must rise within 0 to {nyquist} Hz",
                c.f_min, c.f_max
            ));
        }
        if c.floor.is_nan() || c.floor <= 0.0 {
            return bad(format!("the floor {} must be positive", c.floor));
        }
        let hann = (0..c.window)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * n as f64 / c.window as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(c.n_fft);
        let mut mel = LogMel {
            config,
            hann,
            filters: Vec::new(),
            support: Vec::new(),
            fft,
        };
        mel.filters = mel.build_filters();
        let bins = mel.bins();
        mel.support = mel
            .filters
            .chunks_exact(bins)
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |k| k + 1);
                (first, last)
            })
            .collect();
        Ok(mel)
    }

    pub fn config(&self) -> &LogMelConfig {
        &self.config
    }

    /// FFT bins of a power spectrum: n_fft / 2 + 1.
    pub fn bins(&self) -> usize {
        self.config.n_fft / 2 + 1
    }

    /// The bands + 2 filter edges, Hz: filter b spans edges b to b + 2, peaking at b + 1.
    pub fn edges(&self) -> Vec<f32> {
        let c = &self.config;
        let (low, high) = (hz_to_mel(c.f_min), hz_to_mel(c.f_max));
        (0..c.bands + 2)
            .map(|i| mel_to_hz(low + (high - low) * i as f32 / (c.bands + 1) as f32))
            .collect()
    }

    /// The filters, [bands, bins]: row b holds filter b's weight on each bin.
    pub fn filterbank(&self) -> &[f32] {
        &self.filters
    }

    fn build_filters(&self) -> Vec<f32> {
        let c = &self.config;
        let edges = self.edges();
        let bins = self.bins();
        let bin_hz = c.sample_rate as f32 / c.n_fft as f32;
        let mut filters = vec![0.0; c.bands * bins];
        for b in 0..c.bands {
            let (low, centre, high) = (edges[b], edges[b + 1], edges[b + 2]);
            for k in 0..bins {
                let f = k as f32 * bin_hz;
                let w = if f > low && f <= centre {
                    (f - low) / (centre - low)
                } else if f > centre && f < high {
                    (high - f) / (high - centre)
                } else {
                    0.0
                };
                filters[b * bins + k] = w;
            }
        }
        filters
    }

    /// Frames a clip of `samples` samples gives: 1 + (samples - window) / hop, at least 1.
    pub fn num_frames(&self, samples: usize) -> usize {
        1 + samples.saturating_sub(self.config.window) / self.config.hop
    }

    /// The power spectrum of one frame (at most `window` samples, zero-padded to it):
    /// Hann-windowed, zero-padded to n_fft, |X_k|^2 for each of the [`LogMel::bins`] bins.
    pub fn power_spectrum(&self, frame: &[f32]) -> Vec<f32> {
        let mut scratch = Scratch::new(self);
        self.power_into(frame, &mut scratch);
        scratch.power
    }

    fn power_into(&self, frame: &[f32], s: &mut Scratch) {
        let window = self.config.window;
        assert!(frame.len() <= window, "a frame is at most {window} samples");
        s.input.fill(0.0);
        for (n, (&x, &w)) in frame.iter().zip(&self.hann).enumerate() {
            s.input[n] = x * w;
        }
        self.fft
            .process_with_scratch(&mut s.input, &mut s.spectrum, &mut s.fft_scratch)
            .expect("buffers sized by the plan");
        for (p, x) in s.power.iter_mut().zip(&s.spectrum) {
            *p = x.norm_sqr();
        }
    }

    /// Log-mel energies of every frame of `clip`, [frames, bands].
    pub fn frames(&self, clip: &[f32]) -> Vec<f32> {
        let c = &self.config;
        let (bands, bins) = (c.bands, self.bins());
        let n = self.num_frames(clip.len());
        let mut out = vec![0.0; n * bands];
        let mut scratch = Scratch::new(self);
        for t in 0..n {
            let start = t * c.hop;
            let end = (start + c.window).min(clip.len());
            self.power_into(&clip[start.min(end)..end], &mut scratch);
            for (b, &(first, last)) in self.support.iter().enumerate() {
                let row = &self.filters[b * bins + first..b * bins + last];
                let power = &scratch.power[first..last];
                let energy: f32 = row.iter().zip(power).map(|(w, p)| w * p).sum();
                out[t * bands + b] = energy.max(c.floor).ln();
            }
        }
        out
    }

    /// The time average of [`LogMel::frames`]: one value per band.
    pub fn mean(&self, clip: &[f32]) -> Vec<f32> {
        let bands = self.config.bands;
        let frames = self.frames(clip);
        let n = frames.len() / bands;
        let mut mean = vec![0.0; bands];
        for frame in frames.chunks_exact(bands) {
            for (m, &v) in mean.iter_mut().zip(frame) {
                *m += v / n as f32;
            }
        }
        mean
    }
}

/// Buffers for one frame's FFT.
struct Scratch {
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    fft_scratch: Vec<realfft::num_complex::Complex<f32>>,
    power: Vec<f32>,
}

impl Scratch {
    fn new(mel: &LogMel) -> Scratch {
        Scratch {
            input: mel.fft.make_input_vec(),
            spectrum: mel.fft.make_output_vec(),
            fft_scratch: mel.fft.make_scratch_vec(),
            power: vec![0.0; mel.bins()],
        }
    }
}
