//! `cpc pretrain`: the training loop. It plans the model once, then per step writes the
//! batch and the step's scalars (learning rate, Adam's step, jitter seed), records one
//! compute pass (zero gradients, forward, backward, gradient norm, Adam) and copies the few
//! scalars the display needs into a ring of mappable buffers that are read a couple of steps
//! later, so the host never waits on the step it just submitted. With a [`ProbeDuring`] it
//! also runs the linear probe (eval::probe) before the first step and every few steps.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::data::{self, Format, Loader, LoaderConfig, LoaderState, OnBadImage, OpenOptions};
use crate::error::{Error, Result};
use crate::eval::probe::{align_labels, probe_model, LabelSource, ProbeConfig, ProbeResult};
use crate::eval::CentreCrops;
use crate::gpu::Gpu;
use crate::model::memory::{self, MemoryPlan};
use crate::model::{CpcModel, ModelSpec, ParamLayout};
use crate::ops::adam::AdamConfig;
use crate::ops::infonce::InfonceStats;
use crate::train::{plot_curves, Checkpoint, Config, LrSchedule, MetricsRow, MetricsWriter};

/// Everything `cpc pretrain` is asked to do.
#[derive(Clone, Debug)]
pub struct PretrainOptions {
    pub config: Config,
    /// None: the built-in data set.
    pub data: Option<PathBuf>,
    pub format: Format,
    pub on_bad_image: OnBadImage,
    /// Output folder: checkpoint.safetensors, metrics.jsonl, curves.png.
    pub out: PathBuf,
    /// Continue from `<out>/checkpoint.safetensors`.
    pub resume: bool,
    /// Refuse a batch whose planned buffers exceed this many bytes.
    pub memory_budget: Option<u64>,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
    /// Data-loading threads.
    pub workers: usize,
    /// Stop after this step with a checkpoint, as Ctrl-C would (None: run to total_steps).
    pub stop_at: Option<u64>,
    /// Run the linear probe during training (None: never).
    pub probe: Option<ProbeDuring>,
}

/// The linear probe during pretraining: every `every` steps (and after the last), the
/// encoder being trained is frozen for a moment, its features of a few hundred labelled
/// images are classified, and the test top-1 goes into that step's metrics row
/// (`probe_top1`). Before the first step the same probe scores the random initial
/// encoder: the baseline the figures should rise above.
#[derive(Clone, Debug)]
pub struct ProbeDuring {
    pub every: u64,
    /// Labelled images, read as their train and test splits; None: the built-in set.
    pub data: Option<PathBuf>,
    pub format: Format,
    /// Images of each split used, a fixed random sample of it (the probe's cost is their
    /// encoding, about a training step's forward per batch).
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

/// The probe's images, read once as centre crops, with their names for messages.
struct ProbeSets {
    train: (CentreCrops, String),
    test: (CentreCrops, String),
}

impl ProbeSets {
    fn open(p: &ProbeDuring, crop: usize) -> Result<ProbeSets> {
        let read = |split: data::Split, limit: usize| -> Result<(CentreCrops, String)> {
            let (set, source) = crate::eval::open_eval_data(
                p.data.as_deref(),
                p.format,
                split,
                Some(limit),
                OnBadImage::Stop,
            )?;
            Ok((CentreCrops::read(set.as_ref(), crop)?, source))
        };
        let sets = ProbeSets {
            train: read(data::Split::Train, p.train_images)?,
            test: read(data::Split::Test, p.test_images)?,
        };
        // Labels and classes are checked before the first step, not at the first probe.
        align_labels(
            LabelSource::of_crops(&sets.train.0, &sets.train.1),
            LabelSource::of_crops(&sets.test.0, &sets.test.1),
        )?;
        Ok(sets)
    }

    fn run(&self, gpu: &Gpu, model: &CpcModel, config: &ProbeConfig) -> Result<ProbeResult> {
        probe_model(
            gpu,
            config,
            model,
            (&self.train.0, &self.train.1),
            (&self.test.0, &self.test.1),
        )
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
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The `format` metadata of the checkpoints this version writes and reads.
pub const CHECKPOINT_FORMAT: &str = "cpc-checkpoint-1";
const RING: usize = 3;

/// The jitter seed of a step: a hash of the run's seed and the step.
fn step_seed(seed: u64, step: u64) -> u32 {
    let mut x = seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x ^ (x >> 33)) as u32
}

/// A checkpoint's tensors: parameters under their PyTorch names, then Adam's moments.
fn checkpoint_tensors(layout: &ParamLayout, params: &[f32], m: &[f32], v: &[f32]) -> Checkpoint {
    let mut ck = Checkpoint::new();
    for (prefix, flat) in [
        ("", params),
        ("optimizer.exp_avg.", m),
        ("optimizer.exp_avg_sq.", v),
    ] {
        for view in &layout.views {
            ck.push(
                format!("{prefix}{}", view.name),
                view.shape.clone(),
                layout.slice(flat, &view.name).to_vec(),
            );
        }
    }
    ck
}

/// Fill a flat buffer of `layout` from a checkpoint's tensors named `prefix` + name; every
/// tensor must be there with its shape.
pub fn flat_from_checkpoint(
    layout: &ParamLayout,
    ck: &Checkpoint,
    prefix: &str,
    path: &Path,
) -> Result<Vec<f32>> {
    let mut flat = vec![0.0; layout.total];
    for view in &layout.views {
        let name = format!("{prefix}{}", view.name);
        let t = ck.get(&name).ok_or_else(|| Error::Checkpoint {
            path: path.into(),
            message: format!("has no tensor {name} (shape {:?})", view.shape),
        })?;
        if t.shape != view.shape {
            return Err(Error::Checkpoint {
                path: path.into(),
                message: format!(
                    "tensor {name} has shape {:?}, the model needs {:?}",
                    t.shape, view.shape
                ),
            });
        }
        flat[view.offset..view.offset + view.len()].copy_from_slice(&t.data);
    }
    Ok(flat)
}

/// The state a run resumes from.
struct Resume {
    step: u64,
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    loader: LoaderState,
}

fn load_resume(path: &Path, config: &Config, layout: &ParamLayout) -> Result<Resume> {
    let ck = Checkpoint::load(path)?;
    let err = |message: String| Error::Checkpoint {
        path: path.into(),
        message,
    };
    let saved = Config::from_toml(
        ck.meta("config")
            .ok_or_else(|| err("has no configuration".into()))?,
    )?;
    let diff = config.model_differences(&saved);
    if !diff.is_empty() {
        return Err(err(format!(
            "was written by another model configuration (this run's != the checkpoint's): {}",
            diff.join("; ")
        )));
    }
    let num = |key: &str| -> Result<u64> {
        ck.meta(key)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err(format!("has no valid `{key}`")))
    };
    Ok(Resume {
        step: num("step")?,
        loader: LoaderState {
            epoch: num("loader_epoch")?,
            position: num("loader_position")?,
        },
        params: flat_from_checkpoint(layout, &ck, "", path)?,
        m: flat_from_checkpoint(layout, &ck, "optimizer.exp_avg.", path)?,
        v: flat_from_checkpoint(layout, &ck, "optimizer.exp_avg_sq.", path)?,
    })
}

/// Mappable copies of the stats of recent steps, read a few steps after submission.
struct StatsRing {
    slots: Vec<wgpu::Buffer>,
    /// (step, slot, submission) in flight, oldest first.
    pending: VecDeque<(u64, usize, wgpu::SubmissionIndex)>,
    floats: usize,
}

impl StatsRing {
    fn new(gpu: &Gpu, floats: usize) -> StatsRing {
        let slots = (0..RING)
            .map(|_| {
                gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("stats readback"),
                    size: (floats * 4) as u64,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        StatsRing {
            slots,
            pending: VecDeque::new(),
            floats,
        }
    }

    /// Wait for the oldest pending step and return its stats and gradient norm.
    fn pop(&mut self, gpu: &Gpu) -> Result<Option<(u64, InfonceStats, f32)>> {
        let Some((step, slot, index)) = self.pending.pop_front() else {
            return Ok(None);
        };
        let buf = &self.slots[slot];
        let (tx, rx) = std::sync::mpsc::channel();
        buf.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::Gpu {
                what: format!("step {step}"),
                message: e.to_string(),
            })?;
        // The map callback runs once the copy that precedes it has finished.
        while rx.try_recv().is_err() {
            gpu.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Gpu {
                    what: format!("step {step}"),
                    message: e.to_string(),
                })?;
        }
        gpu.check(&format!("step {step}"))?;
        let values: Vec<f32> = {
            let view = buf.slice(..).get_mapped_range().map_err(|e| Error::Gpu {
                what: "stats".into(),
                message: e.to_string(),
            })?;
            bytemuck::cast_slice(&view).to_vec()
        };
        buf.unmap();
        let n = self.floats;
        Ok(Some((
            step,
            InfonceStats::from_slice(&values[..n - 1]),
            values[n - 1],
        )))
    }
}

/// Run pretraining as `opts` says; `stop` (Ctrl-C) ends it after the current step with a
/// checkpoint.
pub fn pretrain(gpu: &Gpu, opts: &PretrainOptions, stop: &AtomicBool) -> Result<PretrainSummary> {
    let cfg = &opts.config;
    cfg.validate()?;
    let spec = ModelSpec::from(&cfg.model);
    spec.validate()?;
    let tc = &cfg.train;
    let batch = tc.batch as usize;
    std::fs::create_dir_all(&opts.out).map_err(|source| Error::Io {
        path: opts.out.clone(),
        source,
    })?;
    let ck_path = opts.out.join(CHECKPOINT);

    if let Some(path) = opts.data.as_deref().filter(|p| !p.exists()) {
        return Err(Error::Data {
            path: path.display().to_string(),
            message: "no such file or folder".into(),
        });
    }
    // Data: images smaller than the crop are bad images in a folder (CIFAR and STL-10 have
    // a fixed size and are scaled up).
    let folder = opts
        .data
        .as_deref()
        .map(data::detect)
        .transpose()?
        .is_some_and(|f| f == Format::Folder)
        || opts.format == Format::Folder;
    let open = OpenOptions {
        on_bad_image: opts.on_bad_image,
        min_side: if folder { spec.crop } else { 0 },
        ..OpenOptions::default()
    };
    let dataset: Arc<dyn data::Dataset> =
        Arc::from(data::open(opts.data.as_deref(), opts.format, &open)?);
    if dataset.len() < batch {
        return Err(Error::Data {
            path: opts
                .data
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in".into()),
            message: format!("{} images, fewer than one batch of {batch}", dataset.len()),
        });
    }

    let probe_sets = opts
        .probe
        .as_ref()
        .map(|p| ProbeSets::open(p, spec.crop))
        .transpose()?;

    let layout = ParamLayout::new(&spec);
    let resume = if opts.resume {
        Some(load_resume(&ck_path, cfg, &layout)?)
    } else {
        None
    };
    let start = resume.as_ref().map_or(0, |r| r.step);

    // Memory, before anything runs: the planned buffers must fit.
    memory::check_fits(gpu, &spec, batch, opts.memory_budget)?;
    let adam = AdamConfig {
        weight_decay: tc.weight_decay,
        max_norm: tc.clip_norm,
        ..AdamConfig::default()
    };
    let init = resume
        .as_ref()
        .map_or_else(|| layout.init(tc.seed), |r| r.params.clone());
    let (model, plan) = memory::plan(gpu, &spec, batch, &init, adam)?;
    if let Some(r) = &resume {
        model.buffers.m.write(gpu, &r.m)?;
        model.buffers.v.write(gpu, &r.v)?;
    }

    let mut loader_cfg = LoaderConfig::new(batch, spec.crop, tc.seed);
    loader_cfg.workers = opts.workers.max(1);
    let mut loader = Loader::new(
        dataset.clone(),
        loader_cfg,
        resume
            .as_ref()
            .map_or_else(LoaderState::default, |r| r.loader),
    )?;
    let schedule = LrSchedule::from_config(tc);
    let mut metrics = MetricsWriter::create(
        opts.out.join("metrics.jsonl"),
        resume.as_ref().map(|r| r.step),
    )?;
    let mut ring = StatsRing::new(gpu, model.stats.len() + 1);

    let total = tc.total_steps;
    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} [{elapsed} < {eta}] {msg}",
            )
            .expect("a valid template"),
        );
        bar.set_position(start);
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

    let mut summary = PretrainSummary {
        history: Vec::new(),
        memory: plan,
        checkpoint: ck_path.clone(),
        first_step: start,
        last_step: start,
        images_per_second: 0.0,
        interrupted: false,
        skipped_images: 0,
        probe_before: None,
        probes: Vec::new(),
    };
    if let (Some(p), Some(sets), None) = (&opts.probe, &probe_sets, &resume) {
        summary.probe_before = Some(sets.run(gpu, &model, &p.config)?);
    }
    // Probe results waiting for their step's metrics row.
    let mut probe_rows = std::collections::BTreeMap::<u64, f32>::new();
    // The loader state and step that the next checkpoint records: after the last step whose
    // stats were read and found finite.
    let mut last_log = (Instant::now(), start);
    let clock = Instant::now();
    let mut handle = |step: u64,
                      stats: InfonceStats,
                      norm: f32,
                      probe_top1: Option<f32>,
                      summary: &mut PretrainSummary|
     -> Result<()> {
        if !stats.loss.is_finite() {
            return Err(Error::NonFiniteLoss {
                step,
                checkpoint: ck_path.display().to_string(),
            });
        }
        let probe = summary
            .probes
            .last()
            .map_or(String::new(), |(_, p)| format!(" probe {:.3}", p.test.top1));
        bar.set_message(format!(
            "loss {:.4} acc {} img/s {:.1}{probe}",
            stats.loss,
            stats
                .accuracy_k
                .iter()
                .map(|a| format!("{:.3}", a))
                .collect::<Vec<_>>()
                .join("/"),
            summary.images_per_second
        ));
        let log_step = (step + 1).is_multiple_of(tc.log_every.max(1)) || step + 1 == total;
        if log_step || probe_top1.is_some() {
            let (t0, s0) = last_log;
            let ips = ((step + 1 - s0) as f64 * batch as f64 / t0.elapsed().as_secs_f64()) as f32;
            last_log = (Instant::now(), step + 1);
            metrics.write(&MetricsRow {
                step,
                loss: stats.loss,
                accuracy: stats.accuracy_k.iter().sum::<f32>() / stats.accuracy_k.len() as f32,
                loss_k: stats.loss_k.clone(),
                accuracy_k: stats.accuracy_k.clone(),
                images_per_second: ips,
                lr: schedule.lr(step),
                grad_norm: Some(norm),
                probe_top1,
            })?;
        }
        summary.history.push((step, stats));
        Ok(())
    };

    let save = |model: &CpcModel, step: u64, loader: LoaderState| -> Result<()> {
        let mut ck = checkpoint_tensors(
            &layout,
            &model.buffers.params.read(gpu)?,
            &model.buffers.m.read(gpu)?,
            &model.buffers.v.read(gpu)?,
        );
        for (k, v) in [
            ("format", CHECKPOINT_FORMAT.to_string()),
            ("step", step.to_string()),
            ("config", cfg.to_toml()),
            ("fingerprint", cfg.fingerprint()),
            ("loader_epoch", loader.epoch.to_string()),
            ("loader_position", loader.position.to_string()),
            ("seed", tc.seed.to_string()),
        ] {
            ck.metadata.insert(k.into(), v);
        }
        ck.save(&ck_path)
    };

    let mut step = start;
    while step < total {
        if stop.load(Ordering::Relaxed) || opts.stop_at.is_some_and(|s| step >= s) {
            summary.interrupted = true;
            break;
        }
        let b = loader.next_batch()?;
        model.set_inputs(
            gpu,
            &b.images,
            step + 1,
            schedule.lr(step),
            step_seed(tc.seed, step),
        )?;
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            model.record_step(&mut pass);
        }
        let slot = (step as usize) % RING;
        let stats_bytes = (model.stats.len() * 4) as u64;
        enc.copy_buffer_to_buffer(
            &model.stats.buffer,
            model.stats.offset * 4,
            &ring.slots[slot],
            0,
            stats_bytes,
        );
        enc.copy_buffer_to_buffer(
            &model.adam.norm.buffer,
            0,
            &ring.slots[slot],
            stats_bytes,
            4,
        );
        let index = gpu.queue.submit([enc.finish()]);
        ring.pending.push_back((step, slot, index));
        step += 1;
        if let (Some(p), Some(sets)) = (&opts.probe, &probe_sets) {
            if step.is_multiple_of(p.every.max(1)) || step == total {
                // Waits for the step just submitted; its row is written when its stats are read.
                let result = sets.run(gpu, &model, &p.config)?;
                probe_rows.insert(step - 1, result.test.top1);
                summary.probes.push((step - 1, result));
            }
        }
        bar.set_position(step);
        summary.images_per_second =
            ((step - start) as f64 * batch as f64) / clock.elapsed().as_secs_f64();
        if ring.pending.len() == RING {
            if let Some((s, st, norm)) = ring.pop(gpu)? {
                handle(s, st, norm, probe_rows.remove(&s), &mut summary)?;
            }
        }
        let checkpoint_now =
            tc.checkpoint_every > 0 && step % tc.checkpoint_every == 0 && step < total;
        if checkpoint_now {
            while let Some((s, st, norm)) = ring.pop(gpu)? {
                handle(s, st, norm, probe_rows.remove(&s), &mut summary)?;
            }
            save(&model, step, loader.state())?;
        }
    }
    while let Some((s, st, norm)) = ring.pop(gpu)? {
        handle(s, st, norm, probe_rows.remove(&s), &mut summary)?;
    }
    if step > start || resume.is_none() {
        save(&model, step, loader.state())?;
    }
    bar.finish_and_clear();
    summary.last_step = step;
    summary.skipped_images = dataset.skipped();
    drop(metrics);
    let rows = crate::train::read_metrics(opts.out.join("metrics.jsonl"))?;
    if !rows.is_empty() {
        plot_curves(&rows, opts.out.join("curves.png"))?;
    }
    Ok(summary)
}
