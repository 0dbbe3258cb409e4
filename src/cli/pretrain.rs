//! `cpc pretrain`: train an encoder with CPC on a folder, CIFAR-10, STL-10 or the built-in data.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;

use crate::cli::{at_least_one, model_line, print_notes, AdapterArgs};
use crate::data::audio::OnShort;
use crate::data::{Format, OnBadFile};
use crate::dist::Ranks;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::{all_device_indices, AdapterChoice};
use crate::model::memory::Estimate;
use crate::model::{ModelConfig, Spec};
use crate::train::config::{MAX_ACCUMULATE, MAX_TOTAL_STEPS};
use crate::train::pretrain::{pretrain_on, PretrainOptions, ProbeDuring, MAX_DEVICES, MAX_WORKERS};
use crate::train::replicas::AllReduce;
use crate::train::Config;

#[derive(Args, Clone, Debug)]
pub struct PretrainArgs {
    /// Images: a folder (class sub-folders or flat), CIFAR-10 or STL-10 binaries; audio
    /// presets: a folder of WAV, FLAC or Ogg Vorbis files (a sub-folder per speaker, or
    /// flat). Default: the built-in procedural images or synthetic speech.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How to read --data: auto, folder, cifar10, stl10 or builtin.
    #[arg(long, default_value = "auto")]
    pub format: Format,
    /// Model and training preset: paper, laptop, small, tiny (images); audio, audio-small,
    /// audio-tiny (speech); text, text-small, text-tiny.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// A TOML file overriding the preset field by field ([model], [model.encoder], [train]).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Examples per micro-batch, each other's negatives (overrides the configuration).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Option<u32>,
    /// Micro-batches per optimiser step: their gradients are averaged, then one Adam
    /// update, so a step reads batch x N examples in the memory of one batch (overrides
    /// the configuration's train.accumulate).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_ACCUMULATE as i64))]
    pub accumulate: Option<u32>,
    /// Optimiser steps in all (overrides the configuration); a warm-up longer than that is
    /// shortened to the run, with a note.
    #[arg(long, conflicts_with = "epochs",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TOTAL_STEPS))]
    pub steps: Option<u64>,
    /// Passes over the data instead of --steps (at least one step each; at most 10^9 steps
    /// in all).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Peak learning rate (overrides the configuration).
    #[arg(long)]
    pub lr: Option<f32>,
    /// Seed of initialisation, data order, augmentation and jitter.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Save a checkpoint every N steps (0: only at the end and on Ctrl-C).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Write a metrics.jsonl row every N steps.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_every: Option<u64>,
    /// Output folder: checkpoint.safetensors, metrics.jsonl, curves.png.
    #[arg(long, default_value = "runs/cpc")]
    pub out: PathBuf,
    /// Continue from the output folder's checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// A file that cannot be decoded, or an image smaller than the crop: stop or skip (and
    /// count).
    #[arg(
        long = "on-bad-file",
        visible_alias = "on-bad-image",
        default_value = "stop"
    )]
    pub on_bad_image: OnBadFile,
    /// An audio clip shorter than a window: pad it with zeros, or skip it (and count).
    #[arg(long, default_value = "pad")]
    pub on_short: OnShort,
    /// Refuse a batch whose planned GPU buffers exceed this many GiB.
    #[arg(long)]
    pub memory_budget_gib: Option<f64>,
    /// Print the parameter count, the planned GPU memory and the forward's FLOPs at a few
    /// batches and this run's, then exit.
    #[arg(long)]
    pub plan: bool,
    /// Data-loading threads, 1 to 256.
    #[arg(long, default_value_t = 2,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(1..=MAX_WORKERS as u64))]
    pub workers: usize,
    /// Run the linear probe every N steps (and after the last) and log its test top-1
    /// beside the loss (metrics.jsonl probe_top1); also once before training, on the
    /// random initial encoder.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub probe_every: Option<u64>,
    /// Labelled images (clips; sentences, a folder with train/ and test/ sub-folders of
    /// class folders) for --probe-every, read as their train and test splits (default: the
    /// built-in set).
    #[arg(long, requires = "probe_every")]
    pub probe_data: Option<PathBuf>,
    /// How to read --probe-data: auto, folder, cifar10, stl10 or builtin (text: auto,
    /// folder or builtin).
    #[arg(long, default_value = "auto")]
    pub probe_format: Format,
    /// Training images (clips, sentences) of each probe, a fixed random sample of the
    /// train split.
    #[arg(long, default_value_t = 500, value_parser = at_least_one())]
    pub probe_train_images: usize,
    /// Test images (clips, sentences) of each probe, a fixed random sample of the test
    /// split.
    #[arg(long, default_value_t = 200, value_parser = at_least_one())]
    pub probe_test_images: usize,
    /// Train a model replica on each of these adapters, indices of `cpc info`'s list (with
    /// the same --backend, which filters it) (`0,1`; `0,0` opens one adapter twice) or
    /// `all` (every hardware adapter of the first backend that offers one): each
    /// micro-batch on its own device, gradients summed through the host, the same update
    /// on every replica. --batch is per device.
    #[arg(long, conflicts_with_all = ["software", "adapter"])]
    pub devices: Option<DeviceList>,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

/// `--devices`: adapter indices, or every hardware adapter.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceList {
    All,
    Indices(Vec<usize>),
}

impl std::str::FromStr for DeviceList {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<DeviceList, String> {
        if s.trim() == "all" {
            return Ok(DeviceList::All);
        }
        let indices = (s.split(','))
            .map(|i| {
                (i.trim().parse::<usize>())
                    .map_err(|_| format!("`{i}` is not an adapter index (see `cpc info`)"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if indices.len() > MAX_DEVICES {
            return Err(format!(
                "{} devices: a run trains on at most {MAX_DEVICES}",
                indices.len()
            ));
        }
        Ok(DeviceList::Indices(indices))
    }
}

/// The devices a run trains on: `--devices`' adapters, each opened as the other adapter
/// flags say, or the one adapter those flags pick.
pub fn open_devices(devices: Option<&DeviceList>, adapter: &AdapterArgs) -> Result<Vec<Gpu>> {
    let choice: AdapterChoice = adapter.into();
    let indices = match devices {
        None => return Ok(vec![Gpu::new(&choice)?]),
        Some(DeviceList::All) => all_device_indices(&choice)?,
        Some(DeviceList::Indices(i)) => i.clone(),
    };
    (indices.into_iter())
        .map(|i| {
            Gpu::new(&AdapterChoice {
                index: Some(i),
                ..choice.clone()
            })
        })
        .collect()
}

impl PretrainArgs {
    /// The preset, the TOML overrides, then the flags (but --epochs, which needs the data:
    /// see [`steps_for_epochs`]); notes on what was adjusted are printed.
    pub fn config(&self) -> Result<Config> {
        let (cfg, notes) = self.config_noted()?;
        print_notes(&notes);
        Ok(cfg)
    }

    /// [`PretrainArgs::config`], returning the notes instead of printing them. `--steps`
    /// below the warm-up shortens the warm-up to the run, whether it came from the preset or
    /// the file: the flag asks for a short try of that configuration, which must run.
    pub fn config_noted(&self) -> Result<(Config, Vec<String>)> {
        let (mut cfg, mut notes) =
            crate::cli::load_config_noted(&self.preset, self.config.as_deref())?;
        let t = &mut cfg.train;
        if let Some(b) = self.batch {
            t.batch = b;
        }
        if let Some(n) = self.accumulate {
            t.accumulate = n;
        }
        if let Some(s) = self.steps {
            t.total_steps = s;
            let whose = if self.config.is_some() {
                "the configuration's"
            } else {
                "the preset's"
            };
            notes.extend(t.fit_warmup_to_run(whose, &format!("--steps {s}")));
        }
        if let Some(lr) = self.lr {
            t.lr = lr;
            t.min_lr = t.min_lr.min(lr);
        }
        if let Some(s) = self.seed {
            t.seed = s;
        }
        if let Some(n) = self.checkpoint_every {
            t.checkpoint_every = n;
        }
        if let Some(n) = self.log_every {
            t.log_every = n;
        }
        cfg.validate()?;
        Ok((cfg, notes))
    }
}

/// Optimiser steps of `epochs` passes over `images` images, `per_step` a step (the batch
/// times the micro-batches a step accumulates; at least one step an epoch), in checked
/// arithmetic: an error naming the numbers when the product overflows or exceeds
/// [`MAX_TOTAL_STEPS`].
pub fn steps_for_epochs(epochs: u64, images: u64, per_step: u64) -> Result<u64> {
    let per_epoch = (images / per_step.max(1)).max(1);
    match epochs.checked_mul(per_epoch) {
        Some(steps) if steps <= MAX_TOTAL_STEPS => Ok(steps),
        steps => Err(Error::Config(format!(
            "--epochs {epochs} over {images} images at {per_step} a step ({per_epoch} steps \
             an epoch) is {} steps; a run has at most {MAX_TOTAL_STEPS}",
            steps.map_or("more than 2^64".into(), |s| s.to_string())
        ))),
    }
}

/// The batch as a run on `devices` devices takes it: `batch 16`, or with micro-batches
/// `batch 16 x 4 micro-batches (64 a step)`, `batch 16 x 2 devices x 2 micro-batches (64 a
/// step)`.
pub fn batch_line(t: &crate::train::TrainConfig, devices: usize) -> String {
    let mut line = format!("batch {}", t.batch);
    if devices > 1 {
        line += &format!(" x {devices} devices");
    }
    if t.accumulate > 1 {
        line += &format!(" x {} micro-batches", t.accumulate);
    }
    match t.batch as u64 * t.accumulate as u64 * devices as u64 {
        n if n == t.batch as u64 => line,
        n => format!("{line} ({n} a step)"),
    }
}

/// A FLOP count to three significant digits, in MFLOP, GFLOP or TFLOP.
fn flop_count(flops: f64) -> String {
    let (value, unit) = match flops {
        f if f >= 1e12 => (f / 1e12, "TFLOP"),
        f if f >= 1e9 => (f / 1e9, "GFLOP"),
        f => (f / 1e6, "MFLOP"),
    };
    let decimals = match value {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    format!("{value:.decimals$} {unit}")
}

/// What `--plan` prints: the model's parameter count, then at a few batches and this run's
/// the planned memory and the forward's FLOPs (`Spec::forward_flops_per_example` times the
/// batch), each batch that cannot run on this adapter (or within the budget) marked with the
/// limit it breaks. A run of `micros` micro-batches a step needs the memory of one batch:
/// its line says so and gives the step's FLOPs.
pub fn plan_report(
    est: &Estimate,
    limits: &wgpu::Limits,
    budget_bytes: Option<u64>,
    preset: &str,
    batch: usize,
    micros: u32,
) -> String {
    let spec = est.spec();
    let line = |b: usize| {
        let plan = est.at(b);
        let flops = flop_count(b as f64 * spec.forward_flops_per_example(b));
        let text = format!("{plan}; forward {flops}");
        match plan.refusal(limits, budget_bytes) {
            Some(why) => format!("{text}\n    cannot run here: {why}"),
            None => text,
        }
    };
    let mut out = format!("{}\n", model_line(preset, spec));
    out += &format!("planned GPU memory and forward FLOPs a step, preset {preset}:\n");
    for b in [1, 8, 16, 32, 64] {
        out += &format!("  {}\n", line(b));
    }
    let run = match micros {
        1 => line(batch),
        n => {
            let step = flop_count(n as f64 * batch as f64 * spec.forward_flops_per_example(batch));
            format!(
                "{}\n    {n} micro-batches a step, one at a time in these buffers: {} examples, \
                 forward {step} a step",
                line(batch),
                n as u64 * batch as u64
            )
        }
    };
    out + &format!("  this run: {run}\n")
}

pub fn run(args: &PretrainArgs) -> Result<()> {
    let (mut cfg, mut notes) = args.config_noted()?;
    // Everything the flags can get wrong is refused before the GPU is touched.
    let memory_budget = match args.memory_budget_gib {
        Some(g) if !(g.is_finite() && g > 0.0) => {
            return Err(Error::Config(format!(
                "--memory-budget-gib {g} must be a positive number of GiB"
            )))
        }
        // `as` saturates: a budget above 2^34 GiB is no budget.
        g => g.map(|g| (g * (1u64 << 30) as f64) as u64),
    };
    // One process, or (feature `mpi`, started by mpirun) one rank of a data-parallel run.
    let ranks = Arc::new(Ranks::from_env()?);
    let gpus = open_devices(args.devices.as_ref(), &args.adapter)?;
    if let (Some(epochs), false) = (args.epochs, args.plan) {
        let n = match cfg.model {
            ModelConfig::Vision(_) => {
                let open = crate::data::OpenOptions {
                    on_bad_image: args.on_bad_image,
                    ..Default::default()
                };
                crate::data::open(args.data.as_deref(), args.format, &open)?.len()
            }
            ModelConfig::Audio(_) => {
                let open = crate::data::audio::AudioOptions {
                    on_bad_file: args.on_bad_image,
                    ..Default::default()
                };
                crate::data::audio::open(args.data.as_deref(), &open)?.len()
            }
            ModelConfig::Text(ref t) => {
                let open = crate::data::text::TextOptions {
                    on_bad_file: args.on_bad_image,
                    ..Default::default()
                };
                let set = crate::data::text::open(args.data.as_deref(), &open)?;
                crate::data::text::count_passages(&*set, t.sentences as usize)?
            }
        } as u64;
        let t = &mut cfg.train;
        // A step reads batch x accumulate examples on every device of every process.
        let per_step = (t.batch as u64 * t.accumulate as u64)
            .saturating_mul(gpus.len() as u64 * ranks.size() as u64);
        t.total_steps = steps_for_epochs(epochs, n, per_step)?;
        let why = format!("--epochs {epochs}: {} steps", t.total_steps);
        notes.extend(t.fit_warmup_to_run("the configured", &why));
        cfg.validate()?;
    }
    if ranks.is_root() {
        print_notes(&notes);
    }
    for (i, g) in gpus.iter().enumerate() {
        let rank = match ranks.size() {
            1 => String::new(),
            _ => format!("{}: ", ranks.describe()),
        };
        let device = match gpus.len() {
            1 => String::new(),
            _ => format!("device {i}: "),
        };
        eprintln!(
            "{rank}{device}adapter: {} ({:?}, {:?})",
            g.info.name, g.info.backend, g.info.device_type
        );
    }
    let gpu = &gpus[0];
    let spec = Spec::from(&cfg.model);
    if args.plan {
        if !ranks.is_root() {
            return Ok(());
        }
        let est = Estimate::new(gpu, &spec)?;
        print!(
            "{}",
            plan_report(
                &est,
                &gpu.limits,
                memory_budget,
                &args.preset,
                cfg.train.batch as usize,
                cfg.train.accumulate
            )
        );
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C: finish the step in flight, write a checkpoint, exit.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let opts = PretrainOptions {
        config: cfg.clone(),
        data: args.data.clone(),
        format: args.format,
        on_bad_image: args.on_bad_image,
        on_short: args.on_short,
        out: args.out.clone(),
        resume: args.resume,
        memory_budget,
        progress: true,
        workers: args.workers,
        stop_at: None,
        probe: args.probe_every.map(|every| ProbeDuring {
            data: args.probe_data.clone(),
            format: args.probe_format,
            train_images: args.probe_train_images,
            test_images: args.probe_test_images,
            ..ProbeDuring::every(every)
        }),
        ranks: (ranks.size() > 1).then(|| ranks.clone() as Arc<dyn AllReduce>),
    };
    if ranks.is_root() {
        let on = match ranks.size() {
            1 => String::new(),
            n => format!(" on each of {n} ranks"),
        };
        eprintln!(
            "{}; {}{on}, {} steps",
            model_line(&args.preset, &spec),
            batch_line(&cfg.train, gpus.len()),
            cfg.train.total_steps
        );
    }
    // An error on any rank ends every rank (the others would wait for it in the next sum).
    let run = pretrain_on(&gpus.iter().collect::<Vec<_>>(), &opts, &stop);
    let s = ranks.abort_on_error(run)?;
    if !ranks.is_root() {
        return Ok(());
    }
    let unit = spec.examples_name();
    if gpus.len() > 1 || ranks.size() > 1 {
        // Each device also holds the gradient's two mappable copies for the host-side sum.
        let copies = 8 * crate::model::ParamLayout::new(&spec).total as u64;
        eprintln!(
            "planned GPU memory on each device: {}; and {:.1} MiB of gradient copies for the \
             host-side sum",
            s.memory,
            copies as f64 / (1u64 << 20) as f64
        );
    } else {
        eprintln!("planned GPU memory: {}", s.memory);
    }
    if let (Some((s0, first)), Some((s1, last))) = (s.history.first(), s.history.last()) {
        eprintln!(
            "loss {:.4} (step {}) -> {:.4} (step {}); accuracy per offset {:?}; {:.1} {unit}/s",
            first.loss, s0, last.loss, s1, last.accuracy_k, s.images_per_second
        );
    }
    if let Some(p) = &s.probe_before {
        eprintln!(
            "linear probe top-1: {:.4} before training (random initial encoder){}",
            p.test.top1,
            s.probes
                .iter()
                .map(|(step, p)| format!(", {:.4} after step {}", p.test.top1, step + 1))
                .collect::<String>()
        );
    } else if !s.probes.is_empty() {
        eprintln!(
            "linear probe top-1:{}",
            s.probes
                .iter()
                .map(|(step, p)| format!(" {:.4} after step {};", p.test.top1, step + 1))
                .collect::<String>()
        );
    }
    if s.skipped_images > 0 {
        let what = match cfg.model {
            ModelConfig::Vision(_) => "unreadable or too small images",
            ModelConfig::Audio(_) => "unreadable files or clips shorter than a window",
            ModelConfig::Text(_) => "unreadable files",
        };
        eprintln!("skipped {} {what}", s.skipped_images);
    }
    eprintln!(
        "{} at step {}: {}; metrics in {}",
        if s.interrupted {
            "interrupted, checkpoint"
        } else {
            "checkpoint"
        },
        s.last_step,
        s.checkpoint.display(),
        args.out.join("metrics.jsonl").display()
    );
    Ok(())
}
