//! Batches of audio windows for training, and whole clips for evaluation.
//!
//! [`AudioLoader`]: an endless stream of batches of exactly B windows of L samples, laid out
//! [B, 1, 1, L] (batch, channel, height, width: a one-row, one-channel image per window, the
//! shape a conv with kernel height 1 reads). Its schedule is the image loader's
//! ([`crate::data::loader`]): epoch e visits the clips in a shuffle drawn from (seed, e), its
//! batches start at positions 0, B, 2B, ... and the last n mod B clips of the shuffle are
//! left out; the window at position p of epoch e is cut ([`AudioAugment::window`]) with a
//! generator seeded from (seed, e, p). So batch j is a function of (seed, j) alone, the same
//! for any number of workers, and [`LoaderState`] (epoch, position of the next batch) is all a
//! resumed run needs to continue with the same batches. One window per clip per epoch: a
//! long clip is seen at a fresh random offset every epoch.
//!
//! A clip shorter than L is zero-padded to one window under [`OnShort::Pad`] and left out of
//! every epoch under [`OnShort::Skip`]; either way [`AudioLoader::short_clips`] counts them.
//! Under [`OnBadFile::Skip`] a clip that fails to decode is replaced by the next clip of the
//! epoch's order that decodes (a property of the files, so still deterministic).
//!
//! [`Clips`]: every clip once, whole, in index order, decoded on several threads, for
//! feature extraction and the probe; [`fixed_windows`] cuts a clip into consecutive windows.

use std::sync::Arc;

use super::augment::AudioAugment;
use super::{set_err, AudioSet, OnShort};
use crate::data::loader::{first_good, shuffled, Batches, Schedule, Workers};
use crate::data::rng::{rng_for, tag};
use crate::data::{par_map, LoaderState, OnBadFile, Shard};
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct AudioLoaderConfig {
    /// B: windows per batch.
    pub batch_size: usize,
    /// L: samples per window (20480 in the paper: 1.28 s at 16 kHz).
    pub window: usize,
    /// Seeds the shuffles and the window offsets.
    pub seed: u64,
    /// Threads that decode and cut (each decodes the clips of its batches).
    pub workers: usize,
    /// Batches kept ready ahead of the consumer, over all workers.
    pub prefetch: usize,
    /// False: every epoch visits the clips in index order.
    pub shuffle: bool,
    /// Clips shorter than the window: padded or left out.
    pub on_short: OnShort,
    pub augment: AudioAugment,
    /// The batches this process takes (the others it skips): only those are decoded.
    pub shard: Shard,
}

impl AudioLoaderConfig {
    /// B windows of L samples at random offsets, short clips padded; 2 workers, 4 batches
    /// ready, shuffled.
    pub fn new(batch_size: usize, window: usize, seed: u64) -> AudioLoaderConfig {
        AudioLoaderConfig {
            batch_size,
            window,
            seed,
            workers: 2,
            prefetch: 4,
            shuffle: true,
            on_short: OnShort::Pad,
            augment: AudioAugment::default(),
            shard: Shard::ALL,
        }
    }
}

/// B windows ready for the model.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioBatch {
    /// [B, 1, 1, L]: window after window, 16 kHz samples in [-1, 1].
    pub samples: Vec<f32>,
    /// Speaker of each window, None for an unlabelled set.
    pub labels: Vec<Option<u32>>,
    /// Clip (set index) of each window.
    pub indices: Vec<usize>,
    /// Where in its clip each window starts, samples.
    pub offsets: Vec<usize>,
    /// L.
    pub window: usize,
    /// Where this batch starts in the loader's schedule.
    pub start: LoaderState,
}

impl AudioBatch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Window `k`'s samples.
    pub fn window_samples(&self, k: usize) -> &[f32] {
        &self.samples[k * self.window..(k + 1) * self.window]
    }

    /// The labels, when every window has one.
    pub fn labels_u32(&self) -> Option<Vec<u32>> {
        self.labels.iter().copied().collect()
    }
}

pub struct AudioLoader {
    config: AudioLoaderConfig,
    set: Arc<dyn AudioSet>,
    /// Clips shorter than the window (padded or left out, per the config).
    short: usize,
    /// Clips an epoch visits.
    eligible: usize,
    workers: Workers<AudioBatches>,
}

impl AudioLoader {
    /// Starts the workers; the first batch is the one at `state` (Default: the very start).
    pub fn new(
        set: Arc<dyn AudioSet>,
        config: AudioLoaderConfig,
        state: LoaderState,
    ) -> Result<AudioLoader> {
        if config.window == 0 {
            return Err(set_err(&*set, "the window is 0 samples"));
        }
        let (long, short): (Vec<usize>, Vec<usize>) =
            (0..set.len()).partition(|&i| set.frames(i) >= config.window);
        let eligible = match config.on_short {
            OnShort::Pad => (0..set.len()).collect(),
            OnShort::Skip => long,
        };
        let n = eligible.len();
        if config.batch_size == 0 || config.batch_size > n {
            let left_out = match config.on_short {
                OnShort::Skip if !short.is_empty() => format!(
                    " ({} clips shorter than the window of {} samples left out; padding them \
                     would keep them)",
                    short.len(),
                    config.window
                ),
                _ => String::new(),
            };
            return Err(set_err(
                &*set,
                format!(
                    "batch size {} but the set has {n} clips to cut windows from{left_out}",
                    config.batch_size
                ),
            ));
        }
        let schedule = Schedule {
            n: n as u64,
            batch: config.batch_size as u64,
        };
        let batches = AudioBatches {
            set: set.clone(),
            config: config.clone(),
            eligible,
        };
        let workers = Workers::start(batches, schedule, state)?;
        Ok(AudioLoader {
            config,
            set,
            short: short.len(),
            eligible: n,
            workers,
        })
    }

    /// The next batch, in order; waits only if the workers are behind.
    pub fn next_batch(&mut self) -> Result<AudioBatch> {
        self.workers.next_batch()
    }

    /// Moves past the next batch, decoding it only if the workers already had.
    pub fn skip_batch(&mut self) -> Result<()> {
        self.workers.skip_batch()
    }

    /// Where the next batch starts: save this with a checkpoint, pass it to
    /// [`AudioLoader::new`].
    pub fn state(&self) -> LoaderState {
        self.workers.state()
    }

    /// Whole batches in one epoch: floor(clips visited / B).
    pub fn batches_per_epoch(&self) -> u64 {
        self.workers.batches_per_epoch()
    }

    /// Clips shorter than the window: zero-padded under [`OnShort::Pad`], left out under
    /// [`OnShort::Skip`].
    pub fn short_clips(&self) -> usize {
        self.short
    }

    /// Clips an epoch visits (all of them, less the short ones under Skip).
    pub fn clips_per_epoch(&self) -> usize {
        self.eligible
    }

    /// One line for logs: the set, the window, and what happens to short clips.
    pub fn describe(&self) -> String {
        let short = match (self.short, self.config.on_short) {
            (0, _) => String::new(),
            (n, OnShort::Pad) => format!(", {n} clips shorter than a window zero-padded"),
            (n, OnShort::Skip) => format!(", {n} clips shorter than a window left out"),
        };
        format!(
            "{}; windows of {} samples, {} clips an epoch{short}",
            self.set.describe(),
            self.config.window,
            self.eligible
        )
    }

    pub fn config(&self) -> &AudioLoaderConfig {
        &self.config
    }

    pub fn set(&self) -> &Arc<dyn AudioSet> {
        &self.set
    }
}

impl crate::data::TrainingData for AudioLoader {
    fn next_input(&mut self) -> Result<crate::data::Input> {
        Ok(crate::data::Input::Values(self.next_batch()?.samples))
    }

    fn skip_input(&mut self) -> Result<()> {
        self.skip_batch()
    }

    fn state(&self) -> LoaderState {
        AudioLoader::state(self)
    }

    fn skipped(&self) -> usize {
        let short = match self.config.on_short {
            OnShort::Skip => self.short,
            OnShort::Pad => 0,
        };
        self.set.skipped() + short
    }

    fn describe(&self) -> String {
        AudioLoader::describe(self)
    }
}

impl Iterator for AudioLoader {
    type Item = Result<AudioBatch>;

    /// Never None: the stream goes on epoch after epoch.
    fn next(&mut self) -> Option<Result<AudioBatch>> {
        Some(self.next_batch())
    }
}

/// The audio loader's batches: clips decoded, windows cut.
struct AudioBatches {
    set: Arc<dyn AudioSet>,
    config: AudioLoaderConfig,
    /// The clips an epoch visits, in index order.
    eligible: Vec<usize>,
}

impl Batches for AudioBatches {
    type Batch = AudioBatch;

    fn order(&self, epoch: u64) -> Vec<usize> {
        shuffled(
            self.eligible.clone(),
            self.config.shuffle,
            self.config.seed,
            epoch,
        )
    }

    fn batch(&self, start: LoaderState, order: &[usize]) -> Result<AudioBatch> {
        let (b, l) = (self.config.batch_size, self.config.window);
        let mut batch = AudioBatch {
            samples: vec![0.0; b * l],
            labels: Vec::with_capacity(b),
            indices: Vec::with_capacity(b),
            offsets: Vec::with_capacity(b),
            window: l,
            start,
        };
        for k in 0..b {
            let position = start.position as usize + k;
            let (index, clip) = first_good(
                order,
                position,
                |i| self.set.samples(i),
                self.set.on_bad_file(),
                || self.set.describe(),
                "audio file",
            )?;
            let mut rng = rng_for(&[
                tag::AUDIO_AUGMENT,
                self.config.seed,
                start.epoch,
                position as u64,
            ]);
            let out = &mut batch.samples[k * l..(k + 1) * l];
            let offset = self.config.augment.window(&clip, &mut rng, out);
            batch.labels.push(self.set.label(index));
            batch.indices.push(index);
            batch.offsets.push(offset);
        }
        Ok(batch)
    }

    fn start(batch: &AudioBatch) -> LoaderState {
        batch.start
    }

    fn reading(&self) -> (usize, usize, Shard) {
        (self.config.workers, self.config.prefetch, self.config.shard)
    }
}

/// One clip, whole.
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    /// Set index.
    pub index: usize,
    pub label: Option<u32>,
    /// 16 kHz mono samples in [-1, 1].
    pub samples: Arc<[f32]>,
}

/// Every clip once, whole, in index order, in groups of up to `clips_per_batch` (the last may
/// be shorter; under [`OnBadFile::Skip`] clips that fail to decode are left out).
pub struct Clips<'a> {
    set: &'a dyn AudioSet,
    clips_per_batch: usize,
    workers: usize,
    next: usize,
}

impl<'a> Clips<'a> {
    /// Groups of `clips_per_batch` clips, decoded on one thread.
    pub fn new(set: &'a dyn AudioSet, clips_per_batch: usize) -> Clips<'a> {
        assert!(clips_per_batch > 0, "clips per batch must be positive");
        Clips {
            set,
            clips_per_batch,
            workers: 1,
            next: 0,
        }
    }

    /// Decode each group on this many threads.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Groups still to come (an upper bound under Skip).
    pub fn remaining_batches(&self) -> usize {
        (self.set.len() - self.next).div_ceil(self.clips_per_batch)
    }
}

impl Iterator for Clips<'_> {
    type Item = Result<Vec<Clip>>;

    fn next(&mut self) -> Option<Result<Vec<Clip>>> {
        while self.next < self.set.len() {
            let first = self.next;
            let end = (first + self.clips_per_batch).min(self.set.len());
            self.next = end;
            let indices: Vec<usize> = (first..end).collect();
            let set = self.set;
            let decoded = par_map(&indices, self.workers, 1, |&i| match set.samples(i) {
                Ok(samples) => Ok(Some(Clip {
                    index: i,
                    label: set.label(i),
                    samples,
                })),
                Err(Error::BadImage { .. }) if set.on_bad_file() == OnBadFile::Skip => Ok(None),
                Err(e) => Err(e),
            });
            let clips: Result<Vec<Option<Clip>>> = decoded.into_iter().collect();
            match clips {
                Ok(clips) => {
                    let clips: Vec<Clip> = clips.into_iter().flatten().collect();
                    if !clips.is_empty() {
                        return Some(Ok(clips));
                    }
                }
                Err(e) => {
                    self.next = self.set.len(); // stop after an error
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// `clip` cut into consecutive windows of `window` samples from its start, [n, window]: n =
/// floor(len / window), the tail shorter than a window dropped; a clip shorter than one
/// window gives one zero-padded window under [`OnShort::Pad`], none under [`OnShort::Skip`].
pub fn fixed_windows(clip: &[f32], window: usize, on_short: OnShort) -> Vec<f32> {
    assert!(window > 0, "the window must be positive");
    let whole = clip.len() / window;
    if whole > 0 {
        return clip[..whole * window].to_vec();
    }
    match on_short {
        OnShort::Pad => {
            let mut padded = clip.to_vec();
            padded.resize(window, 0.0);
            padded
        }
        OnShort::Skip => Vec::new(),
    }
}
