//! Batches for training and for feature extraction.
//!
//! [`Loader`]: an endless stream of augmented batches of exactly B images. Epoch e visits the
//! images in a shuffle drawn from (seed, e); its batches start at positions 0, B, 2B, ... and
//! the last n mod B images of the shuffle are left out. The sample at position p of epoch e
//! is augmented with a generator seeded from (seed, e, p). Batch j goes to worker j mod W,
//! which sends it down its own bounded channel, and the loader reads the channels in turn:
//! so batches come out in order, identical for any number of workers, and each worker keeps
//! up to `prefetch / W` batches ready. [`LoaderState`] (epoch, position of the next batch)
//! is all a resumed run needs to continue with the same batches. The schedule and the
//! workers (`Batches`, `Workers`) are shared with the audio loader ([`super::audio::loader`]).
//!
//! A process of a data-parallel run reads the same stream as every other and takes its share:
//! it skips the batches other ranks take ([`super::TrainingData::skip_input`]), so its state
//! after each step is the stream's, and a resumed run replays it exactly. Its [`Shard`] tells
//! the workers which batches it will take, so that they decode only those; a batch skipped
//! that the workers made anyway is thrown away, one taken that they did not make is made on
//! the spot: the shard decides the work, never the batches.
//!
//! [`Sequential`]: every image once, in index order, centre-cropped, in batches of up to B
//! (the last may be shorter), for feature extraction and the linear probe.
//!
//! Under [`OnBadFile::Skip`] an image that fails to decode is replaced, in the loader, by
//! the next image of the epoch's order that decodes (a property of the files, so still
//! deterministic), and left out by [`Sequential`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;

use super::augment::Augment;
use super::rng::{rng_for, tag};
use super::{par_map, Dataset, OnBadFile};
use crate::error::{Error, Result};

/// Where a loader stands: the epoch and the position within its shuffle of the next batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LoaderState {
    pub epoch: u64,
    pub position: u64,
}

impl LoaderState {
    /// 16 bytes, little-endian epoch then position, for checkpoints.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.epoch.to_le_bytes());
        b[8..].copy_from_slice(&self.position.to_le_bytes());
        b
    }

    pub fn from_bytes(b: [u8; 16]) -> LoaderState {
        LoaderState {
            epoch: u64::from_le_bytes(b[..8].try_into().unwrap()),
            position: u64::from_le_bytes(b[8..].try_into().unwrap()),
        }
    }
}

impl fmt::Display for LoaderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}, position {}", self.epoch, self.position)
    }
}

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// B: images per batch.
    pub batch_size: usize,
    /// Seeds the shuffles and the augmentations.
    pub seed: u64,
    /// Threads that decode and augment (2-4 is plenty for small images).
    pub workers: usize,
    /// Batches kept ready ahead of the consumer, over all workers.
    pub prefetch: usize,
    /// False: every epoch visits the images in index order.
    pub shuffle: bool,
    pub augment: Augment,
    /// The batches this process takes (the others it skips): only those are decoded.
    pub shard: Shard,
}

impl LoaderConfig {
    /// B images of S x S with the paper's augmentation; 2 workers, 4 batches ready, shuffled.
    pub fn new(batch_size: usize, crop: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            seed,
            workers: 2,
            prefetch: 4,
            shuffle: true,
            augment: Augment::new(crop),
            shard: Shard::ALL,
        }
    }
}

/// B images ready for the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// [B, 3, S, S], normalised (see [`super::augment::normalise`]).
    pub images: Vec<f32>,
    /// Label of each image, None for an unlabelled set.
    pub labels: Vec<Option<u32>>,
    /// Dataset index of each image.
    pub indices: Vec<usize>,
    /// S.
    pub crop: usize,
    /// Where this batch starts (for [`Sequential`]: epoch 0, position = first index).
    pub start: LoaderState,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The labels, when every image has one.
    pub fn labels_u32(&self) -> Option<Vec<u32>> {
        self.labels.iter().copied().collect()
    }
}

/// Which batch follows which: a pure function of the items per epoch and the batch size.
#[derive(Clone, Copy)]
pub(crate) struct Schedule {
    /// Items an epoch visits.
    pub n: u64,
    /// Items a batch takes.
    pub batch: u64,
}

impl Schedule {
    /// `state` itself if a whole batch fits there, else the start of the next epoch.
    pub fn settle(self, state: LoaderState) -> LoaderState {
        if state.position + self.batch <= self.n {
            state
        } else {
            LoaderState {
                epoch: state.epoch + 1,
                position: 0,
            }
        }
    }

    pub fn next(self, state: LoaderState) -> LoaderState {
        self.settle(LoaderState {
            epoch: state.epoch,
            position: state.position + self.batch,
        })
    }
}

/// Which batches of the stream a process takes, counted from the batch the loader starts at:
/// of every `period` consecutive batches, the `take` from `first` on. Rank r of N, each
/// taking A micro-batches of a step: period N A, first r A, take A ([`Shard::rank`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub period: u64,
    pub first: u64,
    pub take: u64,
}

impl Shard {
    /// Every batch.
    pub const ALL: Shard = Shard {
        period: 1,
        first: 0,
        take: 1,
    };

    /// Rank `rank` of `ranks`, each taking `per_rank` consecutive batches of every step's
    /// `ranks * per_rank`.
    pub fn rank(rank: usize, ranks: usize, per_rank: usize) -> Result<Shard> {
        if ranks == 0 || per_rank == 0 || rank >= ranks {
            return Err(Error::Config(format!(
                "no shard for rank {rank} of {ranks} taking {per_rank} batches a step"
            )));
        }
        let per_rank = per_rank as u64;
        Ok(Shard {
            period: ranks as u64 * per_rank,
            first: rank as u64 * per_rank,
            take: per_rank,
        })
    }

    /// Whether the process takes batch `k` (0: the loader's first).
    pub fn takes(self, k: u64) -> bool {
        (self.first..self.first + self.take).contains(&(k % self.period.max(1)))
    }
}

pub struct Loader {
    config: LoaderConfig,
    dataset: Arc<dyn Dataset>,
    workers: Workers<ImageBatches>,
}

impl Loader {
    /// Starts the workers; the first batch is the one at `state` (Default: the very start).
    pub fn new(
        dataset: Arc<dyn Dataset>,
        config: LoaderConfig,
        state: LoaderState,
    ) -> Result<Loader> {
        let n = dataset.len();
        if config.batch_size == 0 || config.batch_size > n {
            return Err(Error::Data {
                path: dataset.describe(),
                message: format!(
                    "batch size {} but the set has {n} images",
                    config.batch_size
                ),
            });
        }
        let schedule = Schedule {
            n: n as u64,
            batch: config.batch_size as u64,
        };
        let batches = ImageBatches {
            dataset: dataset.clone(),
            config: config.clone(),
        };
        let workers = Workers::start(batches, schedule, state)?;
        Ok(Loader {
            config,
            dataset,
            workers,
        })
    }

    /// The next batch, in order; waits only if the workers are behind.
    pub fn next_batch(&mut self) -> Result<Batch> {
        self.workers.next_batch()
    }

    /// Moves past the next batch, decoding it only if the workers already had.
    pub fn skip_batch(&mut self) -> Result<()> {
        self.workers.skip_batch()
    }

    /// Where the next batch starts: save this with a checkpoint, pass it to [`Loader::new`].
    pub fn state(&self) -> LoaderState {
        self.workers.state()
    }

    /// Whole batches in one epoch: floor(n / B).
    pub fn batches_per_epoch(&self) -> u64 {
        self.workers.batches_per_epoch()
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }
}

impl super::TrainingData for Loader {
    fn next_input(&mut self) -> Result<super::Input> {
        Ok(super::Input::Values(self.next_batch()?.images))
    }

    fn skip_input(&mut self) -> Result<()> {
        self.skip_batch()
    }

    fn state(&self) -> LoaderState {
        Loader::state(self)
    }

    fn skipped(&self) -> usize {
        self.dataset().skipped()
    }

    fn describe(&self) -> String {
        self.dataset().describe()
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    /// Never None: the stream goes on epoch after epoch.
    fn next(&mut self) -> Option<Result<Batch>> {
        Some(self.next_batch())
    }
}

/// What a loader's workers make: one batch from where it starts in an epoch's order.
pub(crate) trait Batches: Send + Sync + 'static {
    type Batch: Send + 'static;

    /// The order in which epoch `epoch` visits the items (a worker keeps it for the epoch).
    fn order(&self, epoch: u64) -> Vec<usize>;

    /// The batch that starts at `start`, whose epoch's order is `order`.
    fn batch(&self, start: LoaderState, order: &[usize]) -> Result<Self::Batch>;

    /// Where `batch` starts (what [`Batches::batch`] was given).
    fn start(batch: &Self::Batch) -> LoaderState;

    /// The worker threads, the batches they keep ready in all, and the batches to make.
    fn reading(&self) -> (usize, usize, Shard);
}

/// What a worker sends for a batch: the batch, or word that the shard skips it.
enum Made<T> {
    Batch(T),
    Skipped(LoaderState),
}

/// Worker threads that make the batches of a [`Schedule`] in order: batch j goes to worker
/// j mod W, which sends it (or, for a batch the [`Shard`] skips, only where it starts) down
/// its own bounded channel, and the batches are read from the channels in turn; so they come
/// out in order, identical for any number of workers and any shard, and each worker keeps
/// up to `prefetch / W` batches ready.
pub(crate) struct Workers<B: Batches> {
    batches: Arc<B>,
    /// The order of the epoch of the last batch made here (one the shard skipped).
    order: Option<(u64, Vec<usize>)>,
    schedule: Schedule,
    /// Start of the next batch `next_batch` returns.
    next: LoaderState,
    /// Batches returned so far; batch j comes from worker j mod W.
    returned: usize,
    receivers: Vec<Receiver<Result<Made<B::Batch>>>>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    failed: bool,
}

impl<B: Batches> Workers<B> {
    /// Starts the threads of [`Batches::reading`] (at least one); the first batch is the
    /// one at `state`.
    pub fn start(batches: B, schedule: Schedule, state: LoaderState) -> Result<Workers<B>> {
        let (workers, prefetch, shard) = batches.reading();
        let batches = Arc::new(batches);
        let start = schedule.settle(state);
        let workers = workers.max(1);
        // A worker's channel also carries a marker for each batch of other processes it
        // passes over (`period - take` of every `period`): room for those, so that it still
        // holds about `prefetch / W` of this process's batches ready.
        let markers = (shard.period / shard.take.max(1)).max(1) as usize;
        let per_worker = prefetch.div_ceil(workers).max(1).saturating_mul(markers);
        let stop = Arc::new(AtomicBool::new(false));

        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        let mut first = start;
        for w in 0..workers {
            let (tx, rx) = sync_channel(per_worker);
            receivers.push(rx);
            let job = Job {
                batches: batches.clone(),
                schedule,
                first,
                index: w as u64,
                stride: workers,
                shard,
                stop: stop.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("cpc-data-{w}"))
                .spawn(move || job.run(tx))
                .map_err(|e| Error::Other(format!("cannot start a data worker: {e}")))?;
            handles.push(handle);
            first = schedule.next(first);
        }
        Ok(Workers {
            batches,
            order: None,
            schedule,
            next: start,
            returned: 0,
            receivers,
            stop,
            handles,
            failed: false,
        })
    }

    /// The next batch, in order; waits only if the workers are behind (and makes it here if
    /// the shard skips it).
    pub fn next_batch(&mut self) -> Result<B::Batch> {
        match self.receive()? {
            Made::Batch(batch) => Ok(batch),
            Made::Skipped(start) => {
                let made = self.make(start);
                self.failed = made.is_err();
                made
            }
        }
    }

    /// Moves past the next batch; waits only if the workers are behind.
    pub fn skip_batch(&mut self) -> Result<()> {
        self.receive().map(drop)
    }

    /// The next thing the workers sent, in order, and the state moves on.
    fn receive(&mut self) -> Result<Made<B::Batch>> {
        if self.failed {
            return Err(Error::Other(
                "the data loader stopped after an earlier error".into(),
            ));
        }
        let rx = &self.receivers[self.returned % self.receivers.len()];
        match rx.recv() {
            Ok(Ok(made)) => {
                debug_assert_eq!(
                    match &made {
                        Made::Batch(batch) => B::start(batch),
                        Made::Skipped(start) => *start,
                    },
                    self.next
                );
                self.returned += 1;
                self.next = self.schedule.next(self.next);
                Ok(made)
            }
            Ok(Err(e)) => {
                self.failed = true;
                Err(e)
            }
            Err(_) => {
                self.failed = true;
                Err(Error::Other(
                    "a data worker stopped unexpectedly (it panicked)".into(),
                ))
            }
        }
    }

    /// The batch at `start`, made on this thread.
    fn make(&mut self, start: LoaderState) -> Result<B::Batch> {
        if self.order.as_ref().is_none_or(|(e, _)| *e != start.epoch) {
            self.order = Some((start.epoch, self.batches.order(start.epoch)));
        }
        self.batches.batch(start, &self.order.as_ref().unwrap().1)
    }

    /// Where the next batch starts.
    pub fn state(&self) -> LoaderState {
        self.next
    }

    /// Whole batches in one epoch: floor(n / B).
    pub fn batches_per_epoch(&self) -> u64 {
        self.schedule.n / self.schedule.batch
    }
}

impl<B: Batches> Drop for Workers<B> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers wakes any worker blocked on a full channel.
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// One worker's share: batch `index` (at `first`), then every `stride`-th after it.
struct Job<B: Batches> {
    batches: Arc<B>,
    schedule: Schedule,
    first: LoaderState,
    index: u64,
    stride: usize,
    shard: Shard,
    stop: Arc<AtomicBool>,
}

impl<B: Batches> Job<B> {
    fn run(self, tx: SyncSender<Result<Made<B::Batch>>>) {
        let mut state = self.first;
        let mut index = self.index;
        let mut order: Option<(u64, Vec<usize>)> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let made = if self.shard.takes(index) {
                if order.as_ref().is_none_or(|(e, _)| *e != state.epoch) {
                    order = Some((state.epoch, self.batches.order(state.epoch)));
                }
                self.batches
                    .batch(state, &order.as_ref().unwrap().1)
                    .map(Made::Batch)
            } else {
                Ok(Made::Skipped(state))
            };
            let failed = made.is_err();
            if tx.send(made).is_err() || failed {
                return; // the loader is gone, or it has the error
            }
            for _ in 0..self.stride {
                state = self.schedule.next(state);
            }
            index += self.stride as u64;
        }
    }
}

/// The image loader's batches: decoded, augmented, normalised.
struct ImageBatches {
    dataset: Arc<dyn Dataset>,
    config: LoaderConfig,
}

impl Batches for ImageBatches {
    type Batch = Batch;

    fn order(&self, epoch: u64) -> Vec<usize> {
        epoch_order(self.dataset.len(), &self.config, epoch)
    }

    fn batch(&self, start: LoaderState, order: &[usize]) -> Result<Batch> {
        let b = self.config.batch_size;
        let augment = &self.config.augment;
        let len = augment.out_len();
        let mut batch = Batch {
            images: vec![0.0; b * len],
            labels: Vec::with_capacity(b),
            indices: Vec::with_capacity(b),
            crop: augment.crop,
            start,
        };
        for k in 0..b {
            let position = start.position as usize + k;
            let (index, image) = first_good(
                order,
                position,
                |i| self.dataset.image(i),
                self.dataset.on_bad_image(),
                || self.dataset.describe(),
                "image",
            )?;
            let mut rng = rng_for(&[tag::AUGMENT, self.config.seed, start.epoch, position as u64]);
            augment.random(&image, &mut rng, &mut batch.images[k * len..(k + 1) * len]);
            batch.labels.push(self.dataset.label(index));
            batch.indices.push(index);
        }
        Ok(batch)
    }

    fn start(batch: &Batch) -> LoaderState {
        batch.start
    }

    fn reading(&self) -> (usize, usize, Shard) {
        (self.config.workers, self.config.prefetch, self.config.shard)
    }
}

/// The order in which epoch `epoch` visits the images.
pub fn epoch_order(n: usize, config: &LoaderConfig, epoch: u64) -> Vec<usize> {
    shuffled((0..n).collect(), config.shuffle, config.seed, epoch)
}

/// `items` in epoch `epoch`'s shuffle drawn from `seed` (as they are if not `shuffle`).
pub(crate) fn shuffled(mut items: Vec<usize>, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    if shuffle {
        items.shuffle(&mut rng_for(&[tag::SHUFFLE, seed, epoch]));
    }
    items
}

/// The item at `position` of `order` as `read` gives it, or under Skip the first one after
/// it (cyclically) that reads; `what` names an item in the message when none does.
pub(crate) fn first_good<T>(
    order: &[usize],
    position: usize,
    read: impl Fn(usize) -> Result<T>,
    policy: OnBadFile,
    describe: impl Fn() -> String,
    what: &str,
) -> Result<(usize, T)> {
    let mut first_error = None;
    for k in 0..order.len() {
        let index = order[(position + k) % order.len()];
        match read(index) {
            Ok(item) => return Ok((index, item)),
            Err(e @ Error::BadImage { .. }) if policy == OnBadFile::Skip => {
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Data {
        path: describe(),
        message: format!(
            "no {what} decodes; the first failure: {}",
            first_error.unwrap()
        ),
    })
}

/// Every image once, in index order, centre-cropped and normalised, in batches of up to B.
pub struct Sequential<'a> {
    dataset: &'a dyn Dataset,
    augment: Augment,
    batch_size: usize,
    workers: usize,
    next: usize,
}

impl<'a> Sequential<'a> {
    /// Centre crops of side `crop` (after the resize of [`Augment::new`]), one thread.
    pub fn new(dataset: &'a dyn Dataset, crop: usize, batch_size: usize) -> Sequential<'a> {
        assert!(batch_size > 0, "batch size must be positive");
        Sequential {
            dataset,
            augment: Augment::new(crop),
            batch_size,
            workers: 1,
            next: 0,
        }
    }

    /// Decode each batch on this many threads.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Use this resize ratio and crop (only the crop side and ratio matter here).
    pub fn augment(mut self, augment: Augment) -> Self {
        self.augment = augment;
        self
    }

    /// Batches still to come (an upper bound under Skip).
    pub fn remaining_batches(&self) -> usize {
        (self.dataset.len() - self.next).div_ceil(self.batch_size)
    }

    /// Centre crops of `indices`; None where a bad image is skipped.
    fn crops(&self, indices: &[usize]) -> Result<Vec<Option<Vec<f32>>>> {
        let one = |i: usize| -> Result<Option<Vec<f32>>> {
            match self.dataset.image(i) {
                Ok(image) => {
                    let mut out = vec![0.0; self.augment.out_len()];
                    self.augment.centre(&image, &mut out);
                    Ok(Some(out))
                }
                Err(Error::BadImage { .. }) if self.dataset.on_bad_image() == OnBadFile::Skip => {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        };
        par_map(indices, self.workers, 1, |&i| one(i))
            .into_iter()
            .collect()
    }
}

impl Iterator for Sequential<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        while self.next < self.dataset.len() {
            let first = self.next;
            let end = (first + self.batch_size).min(self.dataset.len());
            self.next = end;
            let indices: Vec<usize> = (first..end).collect();
            let crops = match self.crops(&indices) {
                Ok(c) => c,
                Err(e) => {
                    self.next = self.dataset.len(); // stop after an error
                    return Some(Err(e));
                }
            };
            let mut batch = Batch {
                images: Vec::with_capacity(indices.len() * self.augment.out_len()),
                labels: Vec::new(),
                indices: Vec::new(),
                crop: self.augment.crop,
                start: LoaderState {
                    epoch: 0,
                    position: first as u64,
                },
            };
            for (i, crop) in indices.into_iter().zip(crops) {
                if let Some(crop) = crop {
                    batch.images.extend_from_slice(&crop);
                    batch.labels.push(self.dataset.label(i));
                    batch.indices.push(i);
                }
            }
            if !batch.is_empty() {
                return Some(Ok(batch));
            }
        }
        None
    }
}
