//! `cpc pretrain`: the training loop. It plans the model once, then per step, for each of
//! its micro-batches (`train.accumulate`, one unless asked), writes the batch and the
//! step's scalars (learning rate, Adam's step, jitter seed) and submits one compute pass:
//! the first zeroes the gradients, each runs the forward and the backward (which add to
//! the gradients), the last adds the gradient norm and Adam (which scales the sum by one
//! over the micro-batches: their mean). Each pass copies its loss figures, and the last
//! the gradient norm, into the step's slot of a ring of mappable buffers that is read a
//! couple of steps later, so the host never waits on the step it just submitted. With a [`ProbeDuring`] it
//! also runs the linear probe (eval::probe) before the first step and every few steps.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::data::audio::{self, AudioLoader, AudioLoaderConfig, AudioOptions, AudioSet, OnShort};
use crate::data::text::{
    self, LabelledSentences, PassageConfig, TextLoader, TextOptions, TextSet, Vocabulary,
};
use crate::data::{
    self, Format, Loader, LoaderConfig, LoaderState, OnBadFile, OpenOptions, Shard, TrainingData,
};
use crate::dist::fingerprint;
use crate::error::{Error, Result};
use crate::eval::audio::{check_speakers, clip_features, open_eval_audio};
use crate::eval::probe::{align_labels, probe, probe_model, LabelSource, ProbeConfig, ProbeResult};
use crate::eval::text::{labelled_features, LabelledSplits};
use crate::eval::CentreCrops;
use crate::gpu::Gpu;
use crate::model::memory::{self, MemoryPlan};
use crate::model::{CpcModel, ModelConfig, ParamLayout, Spec, TextSpec};
use crate::ops::adam::AdamConfig;
use crate::ops::infonce::InfonceStats;
use crate::train::model_checkpoint::{ModelCheckpoint, Moments};
use crate::train::replicas::{sum_gradients, AllReduce, Replica};
use crate::train::{atomic, plot_curves, Config, LrSchedule, MetricsRow, MetricsWriter};

/// Everything `cpc pretrain` is asked to do.
#[derive(Clone, Debug)]
pub struct PretrainOptions {
    pub config: Config,
    /// None: the built-in data set.
    pub data: Option<PathBuf>,
    pub format: Format,
    pub on_bad_image: OnBadFile,
    /// Audio clips shorter than a window: zero-padded or left out (and counted).
    pub on_short: OnShort,
    /// Output folder: checkpoint.safetensors, metrics.jsonl, curves.png.
    pub out: PathBuf,
    /// Continue from `<out>/checkpoint.safetensors`.
    pub resume: bool,
    /// Refuse a batch whose planned buffers exceed this many bytes.
    pub memory_budget: Option<u64>,
    /// Draw a progress bar on the terminal, and say on stderr what data was opened.
    pub progress: bool,
    /// Data-loading threads.
    pub workers: usize,
    /// Stop after this step with a checkpoint, as Ctrl-C would (None: run to total_steps).
    pub stop_at: Option<u64>,
    /// Run the linear probe during training (None: never).
    pub probe: Option<ProbeDuring>,
    /// The other processes of a data-parallel run, whose gradients each step's are summed
    /// with (None: this process trains alone).
    pub ranks: Option<Arc<dyn AllReduce>>,
}

/// The linear probe during pretraining: every `every` steps (and after the last), the
/// encoder being trained is frozen for a moment, its features of a few hundred labelled
/// images are classified, and the test top-1 goes into that step's metrics row
/// (`probe_top1`). Before the first step the same probe scores the random initial
/// encoder: the baseline the figures should rise above.
#[derive(Clone, Debug)]
pub struct ProbeDuring {
    pub every: u64,
    /// Labelled images (or, for an audio model, clips; for a text model, sentences: a
    /// folder with train/ and test/ sub-folders of class folders), read as their train and
    /// test splits; None: the built-in images, synthetic speech or synthetic text.
    pub data: Option<PathBuf>,
    pub format: Format,
    /// Images (clips, sentences) of each split used, a fixed random sample of it (the
    /// probe's cost is their encoding, about a training step's forward per batch; a text
    /// model reads each sentence on its own, B sentences a forward).
    pub train_images: usize,
    pub test_images: usize,
    pub config: ProbeConfig,
}

impl ProbeDuring {
    /// Every `every` steps on 500 training and 200 test images of the built-in set.
    pub fn every(every: u64) -> ProbeDuring {
        ProbeDuring {
            every,
            data: None,
            format: Format::Auto,
            train_images: 500,
            test_images: 200,
            config: ProbeConfig::default(),
        }
    }
}

/// The probe's examples: images read once as centre crops, or audio sets whose clips the
/// model being trained encodes at each probe; with their names for messages.
enum ProbeSets {
    Images {
        train: Box<(CentreCrops, String)>,
        test: Box<(CentreCrops, String)>,
    },
    Audio {
        train: (Box<dyn AudioSet>, String),
        test: (Box<dyn AudioSet>, String),
    },
    /// Labelled sentences (train, test), with the vocabulary the model reads them through.
    Text(Box<(LabelledSentences, LabelledSentences, Vocabulary)>),
}

impl ProbeSets {
    /// The probe's sets for the model of `spec`; a text model's read with the run's
    /// `vocabulary`.
    fn open(p: &ProbeDuring, spec: &Spec, vocabulary: Option<&Vocabulary>) -> Result<ProbeSets> {
        let splits = [
            (data::Split::Train, p.train_images),
            (data::Split::Test, p.test_images),
        ];
        let sets = match spec {
            Spec::Vision(v) => {
                let [train, test] = splits.map(|(split, limit)| {
                    let (set, source) = crate::eval::open_eval_data(
                        p.data.as_deref(),
                        p.format,
                        split,
                        Some(limit),
                        OnBadFile::Stop,
                    )?;
                    Ok::<_, Error>((CentreCrops::read(set.as_ref(), v.crop)?, source))
                });
                let (train, test) = (train?, test?);
                align_labels(
                    LabelSource::of_crops(&train.0, &train.1),
                    LabelSource::of_crops(&test.0, &test.1),
                )?;
                ProbeSets::Images {
                    train: Box::new(train),
                    test: Box::new(test),
                }
            }
            Spec::Text(_) => {
                let vocabulary = vocabulary
                    .expect("a text model's training data has its vocabulary")
                    .clone();
                let sets = LabelledSplits {
                    train: p.data.as_deref(),
                    format: p.format,
                    train_limit: Some(p.train_images),
                    test_limit: Some(p.test_images),
                    ..LabelledSplits::default()
                };
                let (train, test) = sets.open(&vocabulary)?;
                align_labels(
                    LabelSource::of_sentences(&train),
                    LabelSource::of_sentences(&test),
                )?;
                ProbeSets::Text(Box::new((train, test, vocabulary)))
            }
            Spec::Audio(_) => {
                let [train, test] = splits.map(|(split, limit)| {
                    open_eval_audio(p.data.as_deref(), split, Some(limit), OnBadFile::Stop)
                });
                let (train, test) = (train?, test?);
                check_speakers((train.0.as_ref(), &train.1), (test.0.as_ref(), &test.1))?;
                ProbeSets::Audio { train, test }
            }
        };
        Ok(sets)
    }

    /// The probe of the model being trained: on its encoder's features (an image's mean
    /// patch vector, a clip's mean frame z, a sentence's z).
    fn run(&self, gpu: &Gpu, model: &CpcModel, config: &ProbeConfig) -> Result<ProbeResult> {
        match self {
            ProbeSets::Images { train, test } => {
                probe_model(gpu, config, model, (&train.0, &train.1), (&test.0, &test.1))
            }
            ProbeSets::Audio { train, test } => {
                let ftrain = clip_features(gpu, model, train.0.as_ref())?;
                let ftest = clip_features(gpu, model, test.0.as_ref())?;
                probe(gpu, config, (&ftrain.z, &train.1), (&ftest.z, &test.1))
            }
            ProbeSets::Text(sets) => {
                let (train, test, vocabulary) = &**sets;
                let ftrain = labelled_features(gpu, model, train, vocabulary)?;
                let ftest = labelled_features(gpu, model, test, vocabulary)?;
                let (a, b) = (train.source(), test.source());
                probe(gpu, config, (&ftrain.z, a), (&ftest.z, b))
            }
        }
    }
}

/// What a run did, for the command line's last lines and for tests.
#[derive(Clone, Debug)]
pub struct PretrainSummary {
    /// Step and loss statistics of every step run, in order.
    pub history: Vec<(u64, InfonceStats)>,
    pub memory: MemoryPlan,
    pub checkpoint: PathBuf,
    /// Steps this run completed (the run may have resumed at a later step).
    pub first_step: u64,
    pub last_step: u64,
    pub images_per_second: f64,
    pub interrupted: bool,
    pub skipped_images: usize,
    /// The probe of the initial (random) encoder, when probing and not resuming.
    pub probe_before: Option<ProbeResult>,
    /// (step, probe) after each probed step, in order.
    pub probes: Vec<(u64, ProbeResult)>,
    /// The largest difference of a parameter between replica 0 and another at the end (0:
    /// one replica, or bit-identical replicas).
    pub replicas_differ: f32,
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Most data-loading threads a run takes.
pub const MAX_WORKERS: usize = 256;
const RING: usize = 3;

/// The jitter seed of micro-batch `micro` of `micros` in a step: a hash of the run's seed
/// and the micro-batch's place in the run (with one micro-batch a step, the step).
fn step_seed(seed: u64, step: u64, micro: u32, micros: u32) -> u32 {
    let place = step.wrapping_mul(micros as u64).wrapping_add(micro as u64);
    let mut x = seed ^ place.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x ^ (x >> 33)) as u32
}

/// The checkpoint a run resumes from: of this run's model, with the optimiser's moments and
/// the loader's position, and not already at or past the run's end.
fn load_resume(path: &Path, config: &Config) -> Result<ModelCheckpoint> {
    let err = |message: String| Error::Checkpoint {
        path: path.into(),
        message,
    };
    let ck = ModelCheckpoint::read(path, Some(config))?;
    if ck.moments.is_none() {
        return Err(err(
            "has no optimiser state (optimizer.exp_avg.*): cannot resume".into(),
        ));
    }
    if ck.loader.is_none() {
        return Err(err(
            "has no data-loader position (loader_epoch, loader_position): cannot resume".into(),
        ));
    }
    let total = config.train.total_steps;
    if ck.step >= total {
        return Err(err(format!(
            "is at step {}, and this run ends at step {total}: nothing to resume (ask for more \
             steps, e.g. --steps {}, to train further)",
            ck.step,
            ck.step + 1
        )));
    }
    Ok(ck)
}

/// What a step reads back: its loss statistics (of the parameters before its update; the
/// mean over its micro-batches), the gradient norm, and whether its update left every
/// parameter and moment finite.
struct StepStats {
    step: u64,
    stats: InfonceStats,
    norm: f32,
    params_finite: bool,
}

/// Mappable copies of the stats of recent steps, read a few steps after submission: a ring
/// of slots on every replica. A replica's slot holds each of its micro-batches' loss
/// figures (`stats` floats each), then the gradient norm and the non-finite flag.
struct StatsRing {
    /// [replica][slot].
    slots: Vec<Vec<wgpu::Buffer>>,
    /// (step, slot, each replica's submission) in flight, oldest first.
    pending: VecDeque<(u64, usize, Vec<wgpu::SubmissionIndex>)>,
    stats: usize,
    /// Micro-batches a step on each replica.
    micros: usize,
}

impl StatsRing {
    fn new(replicas: &[Replica], micros: usize) -> StatsRing {
        let stats = replicas[0].model.stats.len();
        let floats = stats * micros + 2;
        let slots = (replicas.iter())
            .map(|r| {
                (0..RING)
                    .map(|_| {
                        r.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                            label: Some("stats readback"),
                            size: (floats * 4) as u64,
                            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                            mapped_at_creation: false,
                        })
                    })
                    .collect()
            })
            .collect();
        StatsRing {
            slots,
            pending: VecDeque::new(),
            stats,
            micros,
        }
    }

    fn slot(step: u64) -> usize {
        (step as usize) % RING
    }

    /// Record the copy of micro-batch `micro`'s loss figures into the replica's slot.
    fn record_stats(
        &self,
        enc: &mut wgpu::CommandEncoder,
        replica: usize,
        model: &CpcModel,
        step: u64,
        micro: usize,
    ) {
        let bytes = (self.stats * 4) as u64;
        let slot = &self.slots[replica][Self::slot(step)];
        let from = model.stats.offset * 4;
        enc.copy_buffer_to_buffer(&model.stats.buffer, from, slot, micro as u64 * bytes, bytes);
    }

    /// Record the copy of the gradient norm and the non-finite flag (ops::adam), after the
    /// optimiser, into the replica's slot.
    fn record_norm(
        &self,
        enc: &mut wgpu::CommandEncoder,
        replica: usize,
        model: &CpcModel,
        step: u64,
    ) {
        let slot = &self.slots[replica][Self::slot(step)];
        let at = (self.micros * self.stats * 4) as u64;
        enc.copy_buffer_to_buffer(&model.adam.norm.buffer, 0, slot, at, 8);
    }

    /// Wait for the oldest pending step on every replica and return what it read back: the
    /// mean of every micro-batch's figures, replica 0's gradient norm (each replica's is
    /// the same), and whether every replica's update stayed finite.
    /// The oldest step in flight's figures; over several processes (`ranks`, every one
    /// calling this at the same steps) the loss figures are the mean over all of them.
    fn pop(
        &mut self,
        replicas: &[Replica],
        ranks: Option<&dyn AllReduce>,
    ) -> Result<Option<StepStats>> {
        let Some((step, slot, indices)) = self.pending.pop_front() else {
            return Ok(None);
        };
        let (n, count) = (
            self.stats * self.micros,
            (self.micros * replicas.len()) as f32,
        );
        let mut mean = vec![0.0f32; self.stats];
        let (mut norm, mut params_finite) = (0.0, true);
        for (r, (replica, index)) in replicas.iter().zip(indices).enumerate() {
            let buf = &self.slots[r][slot];
            let what = format!("step {step}");
            (replica.gpu).map_and_wait(buf.slice(..), wgpu::MapMode::Read, Some(index), &what)?;
            {
                let view = buf.slice(..).get_mapped_range().map_err(|e| Error::Gpu {
                    what: "stats".into(),
                    message: e.to_string(),
                })?;
                let values: &[f32] = bytemuck::cast_slice(&view);
                for micro in values[..n].chunks(self.stats) {
                    mean.iter_mut()
                        .zip(micro)
                        .for_each(|(m, v)| *m += v / count);
                }
                if r == 0 {
                    norm = values[n];
                }
                params_finite &= values[n + 1] == 0.0;
            }
            buf.unmap();
        }
        if let Some(ranks) = ranks {
            ranks.sum(&mut mean)?;
            mean.iter_mut().for_each(|m| *m /= ranks.ranks() as f32);
        }
        Ok(Some(StepStats {
            step,
            stats: InfonceStats::from_slice(&mean),
            norm,
            params_finite,
        }))
    }
}

/// Run pretraining on one device as `opts` says; `stop` (Ctrl-C) ends it after the current
/// step with a checkpoint.
pub fn pretrain(gpu: &Gpu, opts: &PretrainOptions, stop: &AtomicBool) -> Result<PretrainSummary> {
    pretrain_on(&[gpu], opts, stop)
}

/// Most devices a run trains on.
pub const MAX_DEVICES: usize = 64;

/// Run pretraining with one model replica on each of `gpus` (the first writes the
/// checkpoints and runs the probe), as `opts` says. The parts: checks and the data
/// ([`open_training_data`]), the plan, the loop (a step's micro-batches submitted with
/// [`submit_micro_batch`], over the host with [`submit_update`] where gradients are
/// summed there, its figures read a few steps later by [`Bookkeeping::record`]), and the
/// last checkpoint.
pub fn pretrain_on(
    gpus: &[&Gpu],
    opts: &PretrainOptions,
    stop: &AtomicBool,
) -> Result<PretrainSummary> {
    if !(1..=MAX_DEVICES).contains(&gpus.len()) {
        return Err(Error::Config(format!(
            "{} devices: a run trains on 1 to {MAX_DEVICES}",
            gpus.len()
        )));
    }
    let gpu = gpus[0];
    // Rank 0 of a data-parallel run alone shows progress, probes and writes files.
    let root = opts.ranks.as_ref().is_none_or(|r| r.rank() == 0);
    let quiet;
    let opts = if root {
        opts
    } else {
        quiet = PretrainOptions {
            progress: false,
            probe: None,
            ..opts.clone()
        };
        &quiet
    };
    let cfg = &opts.config;
    cfg.validate()?;
    if !(1..=MAX_WORKERS).contains(&opts.workers) {
        return Err(Error::Config(format!(
            "workers = {}: need 1..={MAX_WORKERS} data-loading threads",
            opts.workers
        )));
    }
    if opts.probe.as_ref().is_some_and(|p| p.every == 0) {
        return Err(Error::Config(
            "probe every 0 steps: give a positive number of steps".into(),
        ));
    }
    let spec = Spec::from(&cfg.model);
    spec.validate()?;
    let tc = &cfg.train;
    let batch = tc.batch as usize;
    std::fs::create_dir_all(&opts.out).map_err(|source| Error::Io {
        path: opts.out.clone(),
        source,
    })?;
    let ck_path = opts.out.join(CHECKPOINT);
    let resume = if opts.resume {
        Some(load_resume(&ck_path, cfg)?)
    } else {
        None
    };
    let state = resume.as_ref().and_then(|r| r.loader).unwrap_or_default();
    let resumed_vocabulary = resume.as_ref().and_then(|r| r.vocabulary.as_ref());
    // The loaders' workers make only this process's batches of each step (the rank-th run
    // of `accumulate` x devices); the others' it skips.
    let shard = match &opts.ranks {
        Some(r) => Shard::rank(r.rank(), r.ranks(), tc.accumulate as usize * gpus.len())?,
        None => Shard::ALL,
    };
    let mut data = open_training_data(opts, batch, state, resumed_vocabulary, shard)?;
    let probe_sets = opts
        .probe
        .as_ref()
        .map(|p| ProbeSets::open(p, &spec, data.vocabulary()))
        .transpose()?;

    let layout = ParamLayout::new(&spec);
    let start = resume.as_ref().map_or(0, |r| r.step);
    // Temporary files that a killed run left behind (ours, by name; never another live
    // process's) go before this run writes its own.
    let metrics_path = opts.out.join("metrics.jsonl");
    let curves_path = opts.out.join("curves.png");
    for target in [&ck_path, &metrics_path, &curves_path] {
        if root {
            atomic::remove_stale_temps(target)?;
        }
    }

    // Memory, before anything runs: the planned buffers must fit on every device, beside
    // the gradient's two mappable copies where it is summed on the host.
    let through_host = gpus.len() > 1 || opts.ranks.is_some();
    let staging = if through_host {
        8 * layout.total as u64
    } else {
        0
    };
    let budget = match opts.memory_budget {
        Some(b) if b <= staging => {
            return Err(Error::Config(format!(
                "the memory budget of {b} bytes does not hold the gradient's two host copies \
                 of {staging} bytes that several devices or processes need"
            )))
        }
        b => b.map(|b| b - staging),
    };
    for g in gpus {
        memory::check_fits(g, &spec, batch, budget)?;
    }
    // A step's micro-batches: `accumulate` on each replica of each process.
    let ranks = opts.ranks.as_deref();
    let rank_count = ranks.map_or(1, |r| r.ranks());
    let micros = tc.accumulate as usize;
    let local = micros * gpus.len();
    let step_micros = (local as u64)
        .checked_mul(rank_count as u64)
        .filter(|&m| m <= u32::MAX as u64)
        .ok_or_else(|| {
            Error::Config(format!(
                "{micros} micro-batches on {} devices in each of {rank_count} processes: more \
                 than 2^32 a step",
                gpus.len()
            ))
        })? as u32;
    let adam = AdamConfig {
        weight_decay: tc.weight_decay,
        max_norm: tc.clip_norm,
        grad_scale: 1.0 / step_micros as f32,
        ..AdamConfig::default()
    };
    let init = resume
        .as_ref()
        .map_or_else(|| layout.init(tc.seed), |r| r.params.clone());
    if let Some(r) = ranks {
        r.agree("the step the run starts at", start)?;
        r.agree("the initial parameters", fingerprint(&init))?;
    }
    let mut replicas = Vec::with_capacity(gpus.len());
    let mut plan = None;
    for g in gpus {
        let (model, p) = memory::plan(g, &spec, batch, &init, adam)?;
        if g.kernels == crate::gpu::KernelPath::Gpu && root {
            eprintln!("{}", g.tilings.summary());
        }
        if let Some(m) = resume.as_ref().and_then(|r| r.moments.as_ref()) {
            model.buffers.m.write(g, &m.exp_avg)?;
            model.buffers.v.write(g, &m.exp_avg_sq)?;
        }
        plan.get_or_insert(p);
        replicas.push(Replica::new(g, model, through_host));
    }
    let plan = plan.expect("at least one device");
    let mut host_sum = vec![0.0f32; if through_host { layout.total } else { 0 }];
    let model = &replicas[0].model;

    let mut ring = StatsRing::new(&replicas, micros);
    let total = tc.total_steps;
    let mut book = Bookkeeping {
        gpu,
        config: cfg,
        ck_path: ck_path.clone(),
        start,
        resumed: resume.is_some(),
        schedule: LrSchedule::from_config(tc),
        metrics: (root)
            .then(|| MetricsWriter::create(&metrics_path, resume.as_ref().map(|r| r.step)))
            .transpose()?,
        ranks,
        bar: progress_bar(opts.progress, start, total),
        clock: Instant::now(),
        last_log: (Instant::now(), start),
        pending: None,
        vocabulary: data.vocabulary().cloned(),
        written: None,
        probe_rows: BTreeMap::new(),
        examples_per_step: step_micros as u64 * tc.batch as u64,
        summary: PretrainSummary {
            history: Vec::new(),
            memory: plan,
            checkpoint: ck_path,
            first_step: start,
            last_step: start,
            images_per_second: 0.0,
            interrupted: false,
            skipped_images: 0,
            probe_before: None,
            probes: Vec::new(),
            replicas_differ: 0.0,
        },
    };
    if let (Some(p), Some(sets), None) = (&opts.probe, &probe_sets, &resume) {
        book.summary.probe_before = Some(sets.run(gpu, model, &p.config)?);
    }

    let mut step = start;
    while step < total {
        // A stop asked for on any process stops every one after the same step.
        let stopped = stop.load(Ordering::Relaxed);
        let stopped = ranks.map_or(Ok(stopped), |r| r.any(stopped))?;
        if stopped || opts.stop_at.is_some_and(|s| step >= s) {
            book.summary.interrupted = true;
            break;
        }
        let lr = book.schedule.lr(step);
        // The step reads `step_micros` batches of the stream: this process takes those its
        // shard names (every one without ranks), micro-batch i of them on replica i mod
        // devices; the others' it skips.
        let mut submitted = Vec::with_capacity(replicas.len());
        let mut i = 0;
        for place in 0..step_micros {
            if !shard.takes(place as u64) {
                data.skip_input()?;
                continue;
            }
            let (r, replica) = (i % replicas.len(), &replicas[i % replicas.len()]);
            let seed = step_seed(tc.seed, step, place, step_micros);
            (replica.model).set_input(replica.gpu, &data.next_input()?, step + 1, lr, seed)?;
            submitted.extend(submit_micro_batch(
                replica,
                r,
                &ring,
                step,
                i / replicas.len(),
            ));
            i += 1;
        }
        if through_host {
            sum_gradients(&replicas, ranks, &mut host_sum)?;
            for (r, replica) in replicas.iter().enumerate() {
                submitted.push(submit_update(replica, r, &ring, step, &host_sum)?);
            }
        }
        ring.pending
            .push_back((step, StatsRing::slot(step), submitted));
        step += 1;
        if let (Some(p), Some(sets)) = (&opts.probe, &probe_sets) {
            if step.is_multiple_of(p.every) || step == total {
                // Waits for the step just submitted; its row is written when its stats are read.
                let result = sets.run(gpu, model, &p.config)?;
                book.probe_rows.insert(step - 1, result.test.top1);
                book.summary.probes.push((step - 1, result));
            }
        }
        book.bar.set_position(step);
        if ring.pending.len() == RING {
            if let Some(read) = ring.pop(&replicas, ranks)? {
                book.record(model, read)?;
            }
        }
        if tc.checkpoint_every > 0 && step.is_multiple_of(tc.checkpoint_every) && step < total {
            book.drain(&replicas, &mut ring)?;
            let snapshot = book.snapshot(model, step, data.state())?;
            if let Some(r) = ranks {
                // Processes whose adapters round Adam apart part here, not at the end.
                r.agree("the parameters", fingerprint(&snapshot.params))?;
            }
            book.pending = root.then_some(snapshot);
        }
    }
    book.drain(&replicas, &mut ring)?;
    if step > start {
        // The final weights' loss, on the last batch (a forward pass alone: the parameters
        // stay as they are), so that this checkpoint too holds weights of a finite loss.
        // Every rank checks its own last batch; all stop together if any is not finite.
        model.run(gpu, |m, pass| m.record_forward(pass))?;
        let bad = !model.read_stats(gpu)?.loss.is_finite();
        if ranks.map_or(Ok(bad), |r| r.any(bad))? {
            let what = "the loss of the final weights (on the last batch of a process)";
            return Err(book.stopped(step, what.into()));
        }
    }
    let end = book.snapshot(model, step, data.state())?;
    if let Some(r) = ranks {
        r.agree("the final parameters", fingerprint(&end.params))?;
    }
    if (step > start || resume.is_none()) && root {
        end.save()?;
    }
    book.summary.replicas_differ = replicas_differ(&replicas)?;
    book.bar.finish_and_clear();
    let Bookkeeping {
        mut summary,
        metrics,
        ..
    } = book;
    summary.last_step = step;
    summary.skipped_images = data.skipped();
    if metrics.is_some() {
        drop(metrics);
        let rows = crate::train::read_metrics(&metrics_path)?;
        if !rows.is_empty() {
            plot_curves(&rows, &cfg.model.offsets(), &curves_path)?;
        }
    }
    Ok(summary)
}

/// The batches the run reads, from the set its model's modality reads (images or audio),
/// resuming at `state`: the set is checked to hold a batch, and images smaller than the
/// crop are bad images in a folder (CIFAR and STL-10 have a fixed size and are scaled up).
fn open_training_data(
    opts: &PretrainOptions,
    batch: usize,
    state: LoaderState,
    resumed_vocabulary: Option<&Vocabulary>,
    shard: Shard,
) -> Result<Box<dyn TrainingData>> {
    let cfg = &opts.config;
    if let Some(path) = opts.data.as_deref().filter(|p| !p.exists()) {
        return Err(Error::Data {
            path: path.display().to_string(),
            message: "no such file or folder".into(),
        });
    }
    let source = || {
        (opts.data.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in".into())
    };
    let data: Box<dyn TrainingData> = match &cfg.model {
        ModelConfig::Vision(v) => {
            let folder = (opts.data.as_deref().map(data::detect).transpose()?)
                .is_some_and(|f| f == Format::Folder)
                || opts.format == Format::Folder;
            let crop = v.crop as usize;
            let open = OpenOptions {
                on_bad_image: opts.on_bad_image,
                min_side: if folder { crop } else { 0 },
                ..OpenOptions::default()
            };
            let dataset: Arc<dyn data::Dataset> =
                Arc::from(data::open(opts.data.as_deref(), opts.format, &open)?);
            if dataset.len() < batch {
                return Err(Error::Data {
                    path: source(),
                    message: format!("{} images, fewer than one batch of {batch}", dataset.len()),
                });
            }
            let mut loader = LoaderConfig::new(batch, crop, cfg.train.seed);
            loader.workers = opts.workers;
            loader.shard = shard;
            Box::new(Loader::new(dataset, loader, state)?)
        }
        ModelConfig::Text(t) => {
            if opts.format != Format::Auto {
                return Err(Error::Config(format!(
                    "--format {} names an image format; a text model reads a UTF-8 text file \
                     or a folder of them (or the built-in synthetic corpus)",
                    opts.format
                )));
            }
            let open = TextOptions {
                on_bad_file: opts.on_bad_image,
                ..TextOptions::default()
            };
            let set = text::open(opts.data.as_deref(), &open)?;
            let spec = TextSpec::from(t);
            let loader = text_loader(
                &*set,
                &spec,
                resumed_vocabulary,
                batch,
                cfg.train.seed,
                state,
            )?;
            Box::new(loader)
        }
        ModelConfig::Audio(a) => {
            if opts.format != Format::Auto {
                return Err(Error::Config(format!(
                    "--format {} names an image format; an audio model reads a folder of \
                     audio files (or the built-in synthetic speech)",
                    opts.format
                )));
            }
            let open = AudioOptions {
                on_bad_file: opts.on_bad_image,
                ..AudioOptions::default()
            };
            let set: Arc<dyn AudioSet> = Arc::from(audio::open(opts.data.as_deref(), &open)?);
            let mut loader = AudioLoaderConfig::new(batch, a.window as usize, cfg.train.seed);
            loader.workers = opts.workers;
            loader.on_short = opts.on_short;
            loader.shard = shard;
            Box::new(AudioLoader::new(set, loader, state)?)
        }
    };
    if opts.progress {
        // What was read, and what was left out (bad files, folder links skipped).
        eprintln!("data: {}", data.describe());
    }
    Ok(data)
}

/// The passages of `set` a text model of `spec` trains on, `batch` a step from `state` in
/// the order of `seed`, their ids those of `vocabulary`, or with None (a fresh run) of the
/// vocabulary built from `set` (at most the spec's V words). A resumed run passes its
/// checkpoint's, so that it reads its ids with the words it was trained on.
pub fn text_loader(
    set: &dyn TextSet,
    spec: &TextSpec,
    vocabulary: Option<&Vocabulary>,
    batch: usize,
    seed: u64,
    state: LoaderState,
) -> Result<TextLoader> {
    let built;
    let vocabulary = match vocabulary {
        Some(v) => v,
        None => {
            built = Vocabulary::build(set, spec.vocab)?;
            &built
        }
    };
    let passage = PassageConfig {
        sentences: spec.sentences,
        max_words: spec.max_words,
    };
    TextLoader::new(set, vocabulary, &passage, batch, seed, state)
}

/// The terminal's progress bar from `start` to `total` (hidden without progress).
fn progress_bar(progress: bool, start: u64, total: u64) -> indicatif::ProgressBar {
    if !progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed} < {eta}] {msg}")
            .expect("a valid template"),
    );
    bar.set_position(start);
    bar
}

/// Record and submit micro-batch `micro` of training step `step` on replica `r` (its
/// input already written), with a copy of its loss statistics into the ring's slot for the
/// step: the first micro-batch zeroes the gradients; the last either runs the optimiser and
/// copies the gradient norm and non-finite flag (ops::adam) too, returning its submission,
/// or, where gradients are summed on the host, copies them out for [`sum_gradients`].
/// Allocates nothing but the command buffer.
fn submit_micro_batch(
    replica: &Replica,
    r: usize,
    ring: &StatsRing,
    step: u64,
    micro: usize,
) -> Option<wgpu::SubmissionIndex> {
    let (gpu, model) = (replica.gpu, &replica.model);
    let last = micro + 1 == ring.micros;
    let update_here = last && !replica.through_host();
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        if micro == 0 {
            model.record_zero_gradients(&mut pass);
        }
        model.record_forward_backward(&mut pass);
        if update_here {
            model.record_optimiser(&mut pass);
        }
    }
    ring.record_stats(&mut enc, r, model, step, micro);
    if update_here {
        ring.record_norm(&mut enc, r, model, step);
    } else if last {
        replica.record_gradients_out(&mut enc);
    }
    let index = gpu.queue.submit([enc.finish()]);
    update_here.then_some(index)
}

/// Submit step `step`'s update on replica `r` from the gradients summed on the host: `sum`
/// into the gradient buffer, the optimiser, the norm's copy into the ring.
fn submit_update(
    replica: &Replica,
    r: usize,
    ring: &StatsRing,
    step: u64,
    sum: &[f32],
) -> Result<wgpu::SubmissionIndex> {
    let (gpu, model) = (replica.gpu, &replica.model);
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    replica.record_gradients_in(sum, &mut enc)?;
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        model.record_optimiser(&mut pass);
    }
    ring.record_norm(&mut enc, r, model, step);
    Ok(gpu.queue.submit([enc.finish()]))
}

/// The largest difference between a parameter of replica 0 and the same parameter of
/// another replica, after the run (0 with one replica): replicas on devices of one kind
/// are bit-identical; devices of different kinds may round Adam's update differently.
fn replicas_differ(replicas: &[Replica]) -> Result<f32> {
    if replicas.len() < 2 {
        return Ok(0.0);
    }
    let first = replicas[0].model.buffers.params.read(replicas[0].gpu)?;
    let mut worst = 0.0f32;
    for r in &replicas[1..] {
        let other = r.model.buffers.params.read(r.gpu)?;
        for (a, b) in first.iter().zip(&other) {
            if a.to_bits() != b.to_bits() {
                worst = worst.max((a - b).abs()).max(f32::MIN_POSITIVE);
            }
        }
    }
    Ok(worst)
}

/// What the loop keeps to report the steps whose figures came back: the display, the
/// metrics file, the summary, and the checkpoint waiting for its loss.
///
/// Checkpoints are written only of parameters that have shown a finite loss: a checkpoint
/// of the model after `s` updates waits in `pending` until step `s`'s loss (computed with
/// exactly those parameters) is read and found finite. The last one, after the final (or
/// interrupted) step, gets one more forward pass for its loss.
struct Bookkeeping<'a> {
    gpu: &'a Gpu,
    config: &'a Config,
    ck_path: PathBuf,
    start: u64,
    resumed: bool,
    schedule: LrSchedule,
    /// None on the processes other than rank 0.
    metrics: Option<MetricsWriter>,
    /// The other processes of a data-parallel run.
    ranks: Option<&'a dyn AllReduce>,
    bar: indicatif::ProgressBar,
    /// When the run's first step started, for its throughput.
    clock: Instant,
    /// When and at which step the last metrics row was written.
    last_log: (Instant, u64),
    pending: Option<ModelCheckpoint>,
    /// A text model's vocabulary, saved with every checkpoint.
    vocabulary: Option<Vocabulary>,
    /// The step of the newest checkpoint on disk that this run may name as good. The one a
    /// run resumed from counts once its loss, step `start`'s, is read and finite.
    written: Option<u64>,
    /// Probe results waiting for their step's metrics row.
    probe_rows: BTreeMap<u64, f32>,
    /// Batch x micro-batches of every replica and process, for the rates.
    examples_per_step: u64,
    summary: PretrainSummary,
}

impl Bookkeeping<'_> {
    /// The model as it stands after `step` updates, read back for a checkpoint.
    fn snapshot(
        &self,
        model: &CpcModel,
        step: u64,
        loader: LoaderState,
    ) -> Result<ModelCheckpoint> {
        let gpu = self.gpu;
        Ok(ModelCheckpoint {
            path: self.ck_path.clone(),
            config: self.config.clone(),
            step,
            params: model.buffers.params.read(gpu)?,
            moments: Some(Moments {
                exp_avg: model.buffers.m.read(gpu)?,
                exp_avg_sq: model.buffers.v.read(gpu)?,
            }),
            loader: Some(loader),
            vocabulary: self.vocabulary.clone(),
        })
    }

    /// The run stops at `step` on `what`, naming the last good checkpoint if there is one.
    fn stopped(&self, step: u64, what: String) -> Error {
        Error::NonFinite {
            step,
            what,
            checkpoint: self.written.map(|s| (self.ck_path.clone(), s)),
        }
    }

    /// Every step still in flight, recorded.
    fn drain(&mut self, replicas: &[Replica], ring: &mut StatsRing) -> Result<()> {
        while let Some(read) = ring.pop(replicas, self.ranks)? {
            self.record(&replicas[0].model, read)?;
        }
        Ok(())
    }

    /// One step's read-back figures: checks, the display, the metrics row, the pending
    /// checkpoint.
    fn record(&mut self, model: &CpcModel, read: StepStats) -> Result<()> {
        let StepStats {
            step,
            stats,
            norm,
            params_finite,
        } = read;
        let probe_top1 = self.probe_rows.remove(&step);
        if !stats.loss.is_finite() {
            return Err(self.stopped(step, "the loss".into()));
        }
        if let Some(ck) = self.pending.take_if(|ck| ck.step == step) {
            ck.save()?; // pending only on rank 0
            self.written = Some(ck.step);
        }
        if step == self.start && self.resumed {
            self.written = Some(self.start);
        }
        if !params_finite {
            // The update of this step made a parameter or moment NaN or infinite (a ReLU may
            // hide it from the loss): name the tensors, from one read-back on this rare path.
            let bad =
                (self.snapshot(model, step + 1, LoaderState::default())?).non_finite_tensors()?;
            let shown = bad.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
            let more = match bad.len() {
                n if n > 8 => format!(" and {} more tensors", n - 8),
                _ => String::new(),
            };
            let what = format!("in the update, the parameters {shown}{more}");
            return Err(self.stopped(step, what));
        }
        // Throughput of the steps whose results are in: the GPU has finished them.
        let (tc, summary) = (&self.config.train, &mut self.summary);
        let batch = self.examples_per_step as f64;
        summary.images_per_second =
            ((step + 1 - self.start) as f64 * batch) / self.clock.elapsed().as_secs_f64();
        let probe = summary
            .probes
            .last()
            .map_or(String::new(), |(_, p)| format!(" probe {:.3}", p.test.top1));
        let accuracies = stats.accuracy_k.iter().map(|a| format!("{a:.3}"));
        self.bar.set_message(format!(
            "loss {:.4} acc {} img/s {:.1}{probe}",
            stats.loss,
            accuracies.collect::<Vec<_>>().join("/"),
            summary.images_per_second
        ));
        let log_step = (step + 1).is_multiple_of(tc.log_every) || step + 1 == tc.total_steps;
        if let (true, Some(metrics)) = (log_step || probe_top1.is_some(), &mut self.metrics) {
            let (t0, s0) = self.last_log;
            let ips = ((step + 1 - s0) as f64 * batch / t0.elapsed().as_secs_f64()) as f32;
            self.last_log = (Instant::now(), step + 1);
            metrics.write(&MetricsRow {
                step,
                loss: stats.loss,
                accuracy: stats.accuracy_k.iter().sum::<f32>() / stats.accuracy_k.len() as f32,
                loss_k: stats.loss_k.clone(),
                accuracy_k: stats.accuracy_k.clone(),
                images_per_second: ips,
                lr: self.schedule.lr(step),
                grad_norm: Some(norm),
                probe_top1,
            })?;
        }
        summary.history.push((step, stats));
        Ok(())
    }
}
