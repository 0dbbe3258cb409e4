//! The built-in speech set: synthetic utterances whose labels are speakers, generated on the
//! fly from (seed, split, index) by a small formant synthesiser; no files.
//!
//! **Speakers.** Speaker s has a voice drawn from (seed, s): a median pitch f0 spread
//! log-evenly over 90-250 Hz across the speakers (each speaker a random place in its own
//! slice of the range, the slices dealt in a random order), a vocal-tract scale that
//! multiplies every formant frequency, spread evenly over 0.84-1.20 the same way with an
//! independent order (so two speakers close in pitch differ in tract, as a low-voiced woman
//! and a high-voiced man do), a bandwidth scale (0.8-1.5, how damped the resonances are), a
//! glottal spectral tilt (the pole of the source's two-pole low-pass, 0.55-0.85: how bright
//! the voice is), a breathiness (aspiration noise mixed into voicing, 0-0.25) and a
//! speaking rate (0.8-1.25).
//!
//! **Utterances.** Utterance i belongs to speaker i mod S (so every split is balanced) and is
//! drawn from (seed, split, i): `seconds` long, a random sequence of phone-like segments:
//! - vowels (70-220 ms): one of six (i, e, a, o, u, schwa; adult-male formants F1-F3 from
//!   Peterson and Barney, F4 3500 Hz), each formant scaled by the speaker's tract and
//!   jittered by 3 %; voiced: a glottal pulse train at the current f0 (1 % period jitter)
//!   through the speaker's two-pole tilt, plus aspiration noise, through a cascade of four
//!   resonators (Klatt's: y = A x + B y1 + C y2, unity gain at 0 Hz) at F1-F4 with bandwidths
//!   60, 90, 150, 200 Hz times the speaker's scale;
//! - fricatives (50-130 ms): white noise through a band-pass (two cookbook band-pass stages,
//!   0 dB at the centre), like s (5000 Hz, 1200 Hz wide), sh (2800, 900) or f (4000, 3000),
//!   centres scaled by the square root of the tract, 10-25 dB below the vowels;
//! - silences (20-90 ms), and one at each end.
//!
//! Segment lengths divide by the speaker's rate. The pitch follows the speaker's median
//! (varied 5 % per utterance) times a declination from +10 % to -10 % over the utterance and
//! a random accent per vowel (-8 % to +12 %). Formant frequencies glide to each vowel's
//! targets (15 ms time constant), and the voicing and frication amplitudes follow each
//! segment's envelope (a raised-sine swell over a vowel, a flat top over a fricative) through
//! a 5 ms smoother, so segments start and end without clicks. The sum goes through lip
//! radiation (a first difference, y = x - 0.97 x1), is scaled to an RMS of 0.04 (-28 dB full
//! scale) times a random gain of -6 to +6 dB, low enough that no peak of the default set
//! reaches full scale, gets white noise 50 dB below that level, and is clamped to [-1, 1].
//!
//! So within a speaker the phones, their order and lengths, the pitch contour and the level
//! vary from utterance to utterance, and what stays is the voice: pitch, formant spacing,
//! damping, brightness, breathiness and tempo. The time-averaged log-mel spectrum tells the
//! default 12 speakers apart well above chance but not perfectly (tests/audio_data.rs,
//! `synthetic_speakers_separate_by_mean_log_mel`), so a probe has room to beat the input.
//!
//! A clip is made the first time it is read (about 1.3 ms for 2 s) and kept ([`super::cache`],
//! [`DEFAULT_CACHE_BYTES`]: the default train split takes 37 MB), so later epochs read it
//! back instead of making it again on the data-loading threads, which share the cores with
//! the training: on the software adapter that took 13 % off an audio-tiny step.

use std::f32::consts::PI;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::Rng;

use super::cache::{Cache, DEFAULT_CACHE_BYTES};
use super::{AudioSet, SAMPLE_RATE};
use crate::data::rng::{rng_for, tag, DataRng};
use crate::data::Split;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    pub seed: u64,
    /// S: voices, the labels.
    pub speakers: usize,
    /// Utterances per speaker in the train split.
    pub train_utterances: usize,
    /// Utterances per speaker in the test split.
    pub test_utterances: usize,
    /// Length of every utterance, seconds.
    pub seconds: f32,
}

impl Default for SyntheticConfig {
    /// 12 speakers, 24 + 8 utterances of 2 s each: 288 train clips (9.6 minutes), 96 test.
    fn default() -> Self {
        SyntheticConfig {
            seed: 0,
            speakers: 12,
            train_utterances: 24,
            test_utterances: 8,
            seconds: 2.0,
        }
    }
}

/// The longest utterance generated, seconds.
pub const MAX_SECONDS: f32 = 60.0;

/// One speaker's voice: what stays the same across their utterances.
#[derive(Clone, Debug, PartialEq)]
pub struct Voice {
    /// Median pitch, Hz.
    pub f0: f32,
    /// Multiplies every formant frequency.
    pub tract: f32,
    /// Multiplies every formant bandwidth.
    pub bandwidth: f32,
    /// Pole of the glottal source's two-pole low-pass (higher: darker).
    pub tilt: f32,
    /// Aspiration noise relative to voicing.
    pub breath: f32,
    /// Speaking rate (segment lengths divide by it).
    pub rate: f32,
}

/// Pitch range over the speakers, Hz.
const F0_RANGE: (f32, f32) = (90.0, 250.0);
/// Tract scale range over the speakers.
const TRACT_RANGE: (f32, f32) = (0.84, 1.20);

/// F1-F3 of i, e, a, o, u and schwa (Peterson and Barney's adult men), Hz.
const VOWELS: [[f32; 3]; 6] = [
    [270.0, 2290.0, 3010.0],
    [530.0, 1840.0, 2480.0],
    [730.0, 1090.0, 2440.0],
    [570.0, 840.0, 2410.0],
    [300.0, 870.0, 2240.0],
    [500.0, 1500.0, 2500.0],
];
/// F4, Hz.
const F4: f32 = 3500.0;
/// Formant bandwidths F1-F4 before the speaker's scale, Hz.
const BANDWIDTHS: [f32; 4] = [60.0, 90.0, 150.0, 200.0];
/// Fricative noise bands (centre, bandwidth), Hz: like s, sh, f.
const FRICATIVES: [(f32, f32); 3] = [(5000.0, 1200.0), (2800.0, 900.0), (4000.0, 3000.0)];

/// Speaker `s` of `speakers` under `seed`.
pub fn voice(seed: u64, s: usize, speakers: usize) -> Voice {
    // The places in the pitch and tract ranges are dealt per seed, one slice per speaker.
    let deal = |which: u64| {
        let mut order: Vec<usize> = (0..speakers).collect();
        order.shuffle(&mut rng_for(&[tag::SPEAKER, seed, u64::MAX - which]));
        order[s]
    };
    let mut rng = rng_for(&[tag::SPEAKER, seed, s as u64]);
    let mut spread = |slot: usize, (low, high): (f32, f32), log: bool| {
        let q = (slot as f32 + rng.random_range(0.2..0.8)) / speakers as f32;
        if log {
            low * (high / low).powf(q)
        } else {
            low + (high - low) * q
        }
    };
    let f0 = spread(deal(0), F0_RANGE, true);
    let tract = spread(deal(1), TRACT_RANGE, false);
    Voice {
        f0,
        tract,
        bandwidth: rng.random_range(0.8..1.5),
        tilt: rng.random_range(0.55..0.85),
        breath: rng.random_range(0.0..0.25),
        rate: rng.random_range(0.8..1.25),
    }
}

pub struct SyntheticSpeech {
    config: SyntheticConfig,
    split: Split,
    len: usize,
    /// Samples per utterance.
    frames: usize,
    voices: Vec<Voice>,
    /// The clips made so far.
    kept: Cache,
}

impl SyntheticSpeech {
    pub fn new(config: SyntheticConfig, split: Split) -> Result<SyntheticSpeech> {
        let err = |message: String| Error::Data {
            path: "synthetic speech".into(),
            message,
        };
        let per_speaker = match split {
            Split::Train => config.train_utterances,
            Split::Test => config.test_utterances,
            Split::Unlabeled => {
                return Err(err(
                    "the synthetic set has train and test splits only".into()
                ))
            }
        };
        if config.speakers == 0 || per_speaker == 0 {
            return Err(err(format!(
                "the {split} split is empty ({} speakers, {per_speaker} utterances each)",
                config.speakers
            )));
        }
        if !(config.seconds > 0.0 && config.seconds <= MAX_SECONDS) {
            return Err(err(format!(
                "utterances of {} s; 0 to {MAX_SECONDS} s are generated",
                config.seconds
            )));
        }
        let len = config
            .speakers
            .checked_mul(per_speaker)
            .ok_or_else(|| err("speakers times utterances overflows".into()))?;
        let frames = (config.seconds * SAMPLE_RATE as f32).round().max(1.0) as usize;
        let voices = (0..config.speakers)
            .map(|s| voice(config.seed, s, config.speakers))
            .collect();
        Ok(SyntheticSpeech {
            config,
            split,
            len,
            frames,
            voices,
            kept: Cache::new(DEFAULT_CACHE_BYTES),
        })
    }

    pub fn voice(&self, speaker: usize) -> &Voice {
        &self.voices[speaker]
    }

    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }
}

impl AudioSet for SyntheticSpeech {
    fn len(&self) -> usize {
        self.len
    }

    fn frames(&self, _i: usize) -> usize {
        self.frames
    }

    fn samples(&self, i: usize) -> Result<Arc<[f32]>> {
        assert!(
            i < self.len,
            "synthetic index {i} out of range 0..{}",
            self.len
        );
        if let Some(clip) = self.kept.get(i) {
            return Ok(clip);
        }
        let speaker = i % self.config.speakers;
        let mut rng = rng_for(&[
            tag::UTTERANCE,
            self.config.seed,
            self.split.seed_part(),
            i as u64,
        ]);
        let clip: Arc<[f32]> = utterance(&self.voices[speaker], self.frames, &mut rng).into();
        self.kept.offer(i, &clip);
        Ok(clip)
    }

    fn label(&self, i: usize) -> Option<u32> {
        Some((i % self.config.speakers) as u32)
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.config.speakers)
    }

    fn name(&self, i: usize) -> String {
        format!("synthetic:{}#{i}", self.split)
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "synthetic speech {} (seed {}): {} utterances of {} s, {} speakers",
            self.split, c.seed, self.len, c.seconds, c.speakers
        )
    }

    fn class_name(&self, class: u32) -> Option<String> {
        ((class as usize) < self.config.speakers).then(|| format!("speaker-{class:02}"))
    }
}

/// What one segment of an utterance is.
#[derive(Clone, Copy)]
enum Phone {
    Vowel { formants: [f32; 4], accent: f32 },
    Fricative { centre: f32, bandwidth: f32 },
    Silence,
}

/// A phone and its span in samples, with its peak amplitude.
struct Segment {
    phone: Phone,
    start: usize,
    len: usize,
    amplitude: f32,
}

/// The segments covering `frames` samples: a silence at each end, phones between.
fn segments(voice: &Voice, frames: usize, rng: &mut DataRng) -> Vec<Segment> {
    let ms = |low: f32, high: f32, rng: &mut DataRng| {
        (rng.random_range(low..high) / 1000.0 * SAMPLE_RATE as f32 / voice.rate) as usize
    };
    let mut out = Vec::new();
    let mut at = 0;
    let mut push = |phone, len: usize, amplitude, at: &mut usize| {
        let len = len.max(1).min(frames - *at);
        out.push(Segment {
            phone,
            start: *at,
            len,
            amplitude,
        });
        *at += len;
    };
    let lead = ms(30.0, 90.0, rng).min(frames / 4);
    push(Phone::Silence, lead, 0.0, &mut at);
    let tail = ms(30.0, 90.0, rng).min(frames / 4);
    let mut last_vowel = true;
    while at < frames - tail {
        let pick: f32 = rng.random();
        if last_vowel && pick < 0.35 {
            let (centre, bandwidth) = FRICATIVES[rng.random_range(0..FRICATIVES.len())];
            let phone = Phone::Fricative {
                centre: centre * voice.tract.sqrt(),
                bandwidth,
            };
            let len = ms(50.0, 130.0, rng);
            let amplitude = rng.random_range(0.1..0.4);
            push(phone, len, amplitude, &mut at);
            last_vowel = false;
        } else if last_vowel && pick < 0.5 {
            let len = ms(20.0, 90.0, rng);
            push(Phone::Silence, len, 0.0, &mut at);
            last_vowel = false;
        } else {
            let v = VOWELS[rng.random_range(0..VOWELS.len())];
            let mut formants = [v[0], v[1], v[2], F4];
            for f in &mut formants {
                *f *= voice.tract * rng.random_range(0.97..1.03);
            }
            let phone = Phone::Vowel {
                formants,
                accent: rng.random_range(0.92..1.12),
            };
            let len = ms(70.0, 220.0, rng);
            let amplitude = rng.random_range(0.6..1.0);
            push(phone, len, amplitude, &mut at);
            last_vowel = true;
        }
    }
    if at < frames {
        push(Phone::Silence, frames - at, 0.0, &mut at);
    }
    out
}

/// A two-pole resonator (Klatt): y = A x + B y1 + C y2 with C = -exp(-2 pi bw T),
/// B = 2 exp(-pi bw T) cos(2 pi f T), A = 1 - B - C (unity gain at 0 Hz).
#[derive(Clone, Copy)]
struct Resonator {
    /// exp(-pi bw T): fixed by the bandwidth.
    radius: f32,
    b: f32,
    c: f32,
    y1: f32,
    y2: f32,
}

/// Samples between retunings of the formant resonators (0.5 ms; formants glide over 15 ms).
const RETUNE: usize = 8;

impl Resonator {
    fn new(hz: f32, bandwidth: f32) -> Resonator {
        let radius = (-PI * bandwidth / SAMPLE_RATE as f32).exp();
        let mut r = Resonator {
            radius,
            b: 0.0,
            c: -radius * radius,
            y1: 0.0,
            y2: 0.0,
        };
        r.tune(hz);
        r
    }

    /// Moves the resonance to `hz`, keeping the bandwidth and the state.
    fn tune(&mut self, hz: f32) {
        self.b = 2.0 * self.radius * (2.0 * PI * hz / SAMPLE_RATE as f32).cos();
    }

    fn step(&mut self, x: f32) -> f32 {
        let a = 1.0 - self.b - self.c;
        let y = a * x + self.b * self.y1 + self.c * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// A band-pass (the audio EQ cookbook's, 0 dB at its centre), twice in cascade for steeper
/// skirts: a noise band for the fricatives.
#[derive(Clone, Copy, Default)]
struct Bandpass {
    /// b0 = -b2 (b1 = 0), a1, a2, over a0.
    b0: f32,
    a1: f32,
    a2: f32,
    /// (x1, x2, y1, y2) of each stage.
    state: [[f32; 4]; 2],
}

impl Bandpass {
    /// Retuned to `hz`, `bandwidth` wide, keeping the state.
    fn tuned(self, hz: f32, bandwidth: f32) -> Bandpass {
        let w = 2.0 * PI * hz / SAMPLE_RATE as f32;
        let alpha = w.sin() * bandwidth / (2.0 * hz);
        let a0 = 1.0 + alpha;
        Bandpass {
            b0: alpha / a0,
            a1: -2.0 * w.cos() / a0,
            a2: (1.0 - alpha) / a0,
            state: self.state,
        }
    }

    fn step(&mut self, x: f32) -> f32 {
        let mut v = x;
        for [x1, x2, y1, y2] in &mut self.state {
            let y = self.b0 * (v - *x2) - self.a1 * *y1 - self.a2 * *y2;
            (*x2, *x1, *y2, *y1) = (*x1, v, *y1, y);
            v = y;
        }
        v
    }
}

/// One utterance of `frames` samples in `voice`.
fn utterance(voice: &Voice, frames: usize, rng: &mut DataRng) -> Vec<f32> {
    let fs = SAMPLE_RATE as f32;
    let f0_median = voice.f0 * rng.random_range(0.95..1.05);
    let segments = segments(voice, frames, rng);
    // One-pole smoothing coefficients: formant glides (15 ms), amplitudes (5 ms).
    let glide = (-1.0 / (0.015 * fs)).exp();
    let smooth = (-1.0 / (0.005 * fs)).exp();

    let mut formants = match segments.iter().find_map(|s| match s.phone {
        Phone::Vowel { formants, .. } => Some(formants),
        _ => None,
    }) {
        Some(f) => f,
        None => [
            500.0 * voice.tract,
            1500.0 * voice.tract,
            2500.0 * voice.tract,
            F4,
        ],
    };
    let mut tract =
        [0, 1, 2, 3].map(|k| Resonator::new(formants[k], BANDWIDTHS[k] * voice.bandwidth));
    let (mut source1, mut source2) = (0.0f32, 0.0f32);
    let (mut voicing, mut frication) = (0.0f32, 0.0f32);
    let mut noise_band = Bandpass::default().tuned(FRICATIVES[0].0, FRICATIVES[0].1);

    let mut phase = 0.0f32;
    let mut period_jitter = 1.0f32;
    let mut accent = 1.0f32;
    let mut last = 0.0f32;
    let mut out = Vec::with_capacity(frames);

    for seg in &segments {
        let (voiced_target, fric_target) = match seg.phone {
            Phone::Vowel {
                formants: _,
                accent: a,
            } => {
                accent = a;
                (seg.amplitude, 0.0)
            }
            Phone::Fricative { centre, bandwidth } => {
                noise_band = noise_band.tuned(centre, bandwidth);
                (0.0, seg.amplitude)
            }
            Phone::Silence => (0.0, 0.0),
        };
        for k in 0..seg.len {
            let n = seg.start + k;
            let through = (k as f32 + 0.5) / seg.len as f32;
            // A vowel swells and fades (raised sine); a fricative holds.
            let (v_env, f_env) = match seg.phone {
                Phone::Vowel { .. } => ((PI * through).sin().powf(0.5), 0.0),
                Phone::Fricative { .. } => (0.0, 1.0),
                Phone::Silence => (0.0, 0.0),
            };
            voicing = smooth * voicing + (1.0 - smooth) * voiced_target * v_env;
            frication = smooth * frication + (1.0 - smooth) * fric_target * f_env;
            if let Phone::Vowel {
                formants: target, ..
            } = seg.phone
            {
                for (f, t) in formants.iter_mut().zip(target) {
                    *f = glide * *f + (1.0 - glide) * t;
                }
            }
            if n % RETUNE == 0 {
                for (r, &f) in tract.iter_mut().zip(&formants) {
                    r.tune(f);
                }
            }

            // Pitch: median, declination +10 % to -10 %, the vowel's accent, period jitter.
            let declination = 1.1 - 0.2 * n as f32 / frames as f32;
            let f0 = f0_median * declination * accent * period_jitter;
            phase += f0 / fs;
            let pulse = if phase >= 1.0 {
                phase -= 1.0;
                period_jitter = rng.random_range(0.99..1.01);
                1.0
            } else {
                0.0
            };
            source1 = voice.tilt * source1 + (1.0 - voice.tilt) * pulse;
            source2 = voice.tilt * source2 + (1.0 - voice.tilt) * source1;
            let noise: f32 = rng.random_range(-1.0..1.0);
            let excitation = voicing * (source2 * 40.0 + voice.breath * 0.3 * noise);
            let mut voiced = excitation;
            for r in &mut tract {
                voiced = r.step(voiced);
            }
            let fric_noise: f32 = rng.random_range(-1.0..1.0);
            let fricative = frication * noise_band.step(fric_noise);
            let sum = voiced + fricative;
            // Lip radiation.
            out.push(sum - 0.97 * last);
            last = sum;
        }
    }

    let rms = (out.iter().map(|s| s * s).sum::<f32>() / frames as f32).sqrt();
    let gain_db: f32 = rng.random_range(-6.0..6.0);
    let level = 0.04 * 10f32.powf(gain_db / 20.0);
    let scale = if rms > 0.0 { level / rms } else { 0.0 };
    let floor = level * 10f32.powf(-50.0 / 20.0) * 3f32.sqrt(); // uniform noise of RMS level - 50 dB
    for s in &mut out {
        let noise: f32 = rng.random_range(-1.0..1.0);
        *s = (*s * scale + floor * noise).clamp(-1.0, 1.0);
    }
    out
}
