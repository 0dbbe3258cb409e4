//! `cpc profile`: a few training steps of a preset, timed kernel by kernel on the GPU
//! (timestamp queries, one compute pass per kernel, through wgpu-profiler), with FLOPs and
//! bytes counted from the shapes, the whole step's time, and the GPU's idle time between
//! kernels. Without timestamp queries it times each kernel's submission on the host.
//!
//! The inputs are the same every step: fixed pseudo-random images or clips, and for text
//! the first batch of the built-in corpus that `cpc pretrain` would draw (the lookup's, its
//! backward's and the masked mean's work depend on the batch's words; their counts are the
//! batch's, [`Launch::cost_now`], not the plan's worst case).
//!
//! It runs the kernel path the device was opened with (`--kernels auto|gpu|cpu`, else
//! CPC_KERNELS, else the adapter's type) and says which. With `--peak-gflops` (the adapter's
//! fp32 peak, from its data sheet: wgpu reports no clock or core count to derive it from)
//! it also prints each kernel's and the whole step's share of that peak.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use crate::cli::AdapterArgs;
use crate::data::text::{self, TextOptions};
use crate::data::{Input, LoaderState, TrainingData};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Launch};
use crate::model::memory;
use crate::model::{ParamLayout, Spec};
use crate::ops::adam::AdamConfig;
use crate::ops::embedding::WordPositions;
use crate::train::pretrain::text_loader;

#[derive(Args, Clone, Debug)]
pub struct ProfileArgs {
    /// Model preset: paper, laptop, small, tiny (images); audio, audio-small, audio-tiny;
    /// text, text-small, text-tiny.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// A TOML file overriding the preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Examples per step, images, windows or passages (default: the preset's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Option<u32>,
    /// Steps to measure, after the warm-up (1 to 10000).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub steps: u32,
    /// Steps run first and not measured (pipeline compilation, caches; 0 to 10000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub warmup: u32,
    /// Write one step as a Chrome trace (chrome://tracing, Perfetto).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Also run each kernel's CPU reference on the same shapes and print the ratio.
    #[arg(long)]
    pub compare: bool,
    /// The adapter's fp32 peak in GFLOP/s (its data sheet's figure); prints each kernel's
    /// and the whole step's share of it.
    #[arg(long, value_parser = positive_gflops)]
    pub peak_gflops: Option<f64>,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

/// clap parser of `--peak-gflops`: a finite number above zero.
fn positive_gflops(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a number of GFLOP/s above zero")),
    }
}

/// `gflops` as a share of the peak, "-" without one.
fn of_peak(gflops: f64, peak: Option<f64>) -> String {
    match peak {
        Some(p) => format!("{:.1}%", 100.0 * gflops / p),
        None => "-".into(),
    }
}

/// One kernel's figures over a step.
#[derive(Default, Clone)]
struct Row {
    calls: usize,
    seconds: f64,
    flops: u64,
    bytes: u64,
    cpu_seconds: Option<f64>,
}

/// Per kernel (name, seconds) in order, the span from the first kernel's start to the last
/// one's end, and the raw results for a trace.
type TimedStep = (
    Vec<(String, f64)>,
    f64,
    Vec<wgpu_profiler::GpuTimerQueryResult>,
);

/// Time every launch of one step with timestamp queries: (name, seconds) in order, the span
/// from the first kernel's start to the last one's end, and the raw results for a trace.
fn timed_step(
    gpu: &Gpu,
    profiler: &mut wgpu_profiler::GpuProfiler,
    launches: &[&Launch],
) -> Result<Option<TimedStep>> {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut scope = profiler.scope("step", &mut enc);
        for l in launches {
            let mut pass = scope.scoped_compute_pass(l.name);
            l.record(&mut pass);
        }
    }
    profiler.resolve_queries(&mut enc);
    gpu.queue.submit([enc.finish()]);
    profiler
        .end_frame()
        .map_err(|e| Error::Other(format!("profiler: {e}")))?;
    gpu.sync("profiled step")?;
    let Some(results) = profiler.process_finished_frame(gpu.queue.get_timestamp_period()) else {
        return Ok(None);
    };
    let kernels = &results[0].nested_queries;
    let times: Vec<(String, f64)> = kernels
        .iter()
        .filter_map(|q| q.time.as_ref().map(|t| (q.label.clone(), t.end - t.start)))
        .collect();
    if times.len() != launches.len() {
        return Ok(None);
    }
    let start = kernels
        .iter()
        .filter_map(|q| q.time.as_ref())
        .map(|t| t.start)
        .fold(f64::MAX, f64::min);
    let end = kernels
        .iter()
        .filter_map(|q| q.time.as_ref())
        .map(|t| t.end)
        .fold(f64::MIN, f64::max);
    Ok(Some((times, end - start, results)))
}

/// Time every launch of one step on the host: each alone, submitted and waited for.
fn host_timed_step(gpu: &Gpu, launches: &[&Launch]) -> Result<Vec<(String, f64)>> {
    launches
        .iter()
        .map(|l| {
            let t = Instant::now();
            gpu.run(&[l])?;
            Ok((l.name.to_string(), t.elapsed().as_secs_f64()))
        })
        .collect()
}

/// The step's inputs, the same every step, and a line saying what they are: pseudo-random
/// values for images and clips (no kernel's work depends on them); for text the first batch
/// of the built-in corpus as `cpc pretrain` with `seed` draws it, since the words of a batch
/// set the lookup's and the masked mean's work.
fn fixed_input(spec: &Spec, batch: usize, seed: u64) -> Result<(Input, String)> {
    let Spec::Text(t) = spec else {
        let values = (0..batch * spec.input_shape().len())
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        return Ok((Input::Values(values), "fixed pseudo-random values".into()));
    };
    let set = text::open(None, &TextOptions::default())?;
    let input = text_loader(&*set, t, None, batch, seed, LoaderState::default())?.next_input()?;
    let Input::Sentences(s) = &input else {
        unreachable!("a text loader serves sentences")
    };
    let distinct = WordPositions::build(&s.tokens, t.vocab)?.words.len();
    let what = format!(
        "the first batch of the built-in corpus (seed {seed}): {} sentences, {} words in {} \
         positions, {distinct} distinct",
        s.len(),
        s.tokens.len(),
        s.len() * t.max_words
    );
    Ok((input, what))
}

pub fn run(args: &ProfileArgs) -> Result<()> {
    let mut cfg = crate::cli::load_config(&args.preset, args.config.as_deref())?;
    if let Some(b) = args.batch {
        cfg.train.batch = b;
    }
    let batch = cfg.train.batch as usize;
    let spec = Spec::from(&cfg.model);
    let gpu = Gpu::new(&(&args.adapter).into())?;
    println!(
        "adapter: {} ({:?}, {:?})",
        gpu.info.name, gpu.info.backend, gpu.info.device_type
    );
    println!("kernels: {:?} path ({})", gpu.kernels, gpu.kernels_reason);
    println!("reductions: {}", gpu.reductions());
    memory::check_fits(&gpu, &spec, batch, None)?;
    let layout = ParamLayout::new(&spec);
    let (model, plan) = memory::plan(&gpu, &spec, batch, &layout.init(0), AdamConfig::default())?;
    if gpu.kernels == crate::gpu::KernelPath::Gpu {
        println!("{}", gpu.tilings.summary());
    }
    println!(
        "{}; batch {batch}",
        crate::cli::model_line(&args.preset, &spec)
    );
    println!("planned GPU memory: {plan}");

    // Fixed inputs: the profile measures kernels, not data loading.
    let (input, what) = fixed_input(&spec, batch, cfg.train.seed)?;
    println!("inputs: {what}");
    let launches = model.step_launches();
    let whole_step = |t: u64| -> Result<Duration> {
        model.set_input(&gpu, &input, t, 1e-4, t as u32)?;
        let start = Instant::now();
        model.run(&gpu, |m, pass| m.record_step(pass))?;
        Ok(start.elapsed())
    };
    for t in 0..args.warmup {
        whole_step(t as u64 + 1)?;
    }
    // The whole step as training runs it: one pass, one submission.
    let mut step_times = Vec::new();
    for t in 0..args.steps {
        step_times.push(whole_step((args.warmup + t) as u64 + 1)?.as_secs_f64());
    }
    step_times.sort_by(f64::total_cmp);
    let step_seconds = step_times[step_times.len() / 2];

    let has_timestamps = gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY);
    let mut profiler = if has_timestamps {
        Some(
            wgpu_profiler::GpuProfiler::new(
                &gpu.device,
                wgpu_profiler::GpuProfilerSettings::default(),
            )
            .map_err(|e| Error::Other(format!("profiler: {e:?}")))?,
        )
    } else {
        None
    };
    let mut per_step: Vec<Vec<(String, f64)>> = Vec::new();
    let mut spans = Vec::new();
    let mut trace = None;
    let mut source = "GPU timestamps, one compute pass per kernel";
    for _ in 0..args.steps {
        let timed = match profiler.as_mut() {
            Some(p) => timed_step(&gpu, p, &launches)?,
            None => None,
        };
        match timed {
            Some((times, span, results)) => {
                spans.push(span);
                trace.get_or_insert(results);
                per_step.push(times);
            }
            None => {
                source = "host timing of each kernel's submission (this adapter has no timestamp queries)";
                per_step.push(host_timed_step(&gpu, &launches)?);
            }
        }
    }

    // Per kernel name: calls, mean time per step, FLOPs and bytes from the shapes (and for
    // text's lookup and masked means, the batch's words).
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    for l in &launches {
        let (r, cost) = (rows.entry(l.name).or_default(), l.cost_now());
        r.calls += 1;
        r.flops += cost.flops;
        r.bytes += cost.bytes;
    }
    let steps = per_step.len() as f64;
    for step in &per_step {
        for (name, t) in step {
            rows.get_mut(name.as_str())
                .expect("a launch's name")
                .seconds += t / steps;
        }
    }
    if args.compare {
        eprintln!("running the CPU references on the same shapes ...");
        for l in &launches {
            if let Some(f) = &l.reference {
                let t = Instant::now();
                f();
                *rows.get_mut(l.name).unwrap().cpu_seconds.get_or_insert(0.0) +=
                    t.elapsed().as_secs_f64();
            }
        }
    }
    let kernel_seconds: f64 = rows.values().map(|r| r.seconds).sum();
    let mut order: Vec<(&str, Row)> = rows.into_iter().collect();
    order.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));

    println!(
        "\nper kernel, per step ({source}; mean of {} steps):",
        per_step.len()
    );
    print!(
        "{:<34} {:>5} {:>10} {:>6} {:>9} {:>9} {:>8} {:>8}",
        "kernel", "calls", "ms", "share", "MFLOP", "MB", "GFLOP/s", "GB/s"
    );
    if args.peak_gflops.is_some() {
        print!(" {:>7}", "of peak");
    }
    if args.compare {
        print!(" {:>10} {:>8}", "CPU ms", "CPU/GPU");
    }
    println!();
    for (name, r) in &order {
        let gflops = r.flops as f64 / r.seconds.max(1e-12) / 1e9;
        let gbs = r.bytes as f64 / r.seconds.max(1e-12) / 1e9;
        print!(
            "{:<34} {:>5} {:>10.3} {:>5.1}% {:>9.1} {:>9.1} {:>8.2} {:>8.2}",
            name,
            r.calls,
            r.seconds * 1e3,
            100.0 * r.seconds / kernel_seconds,
            r.flops as f64 / 1e6,
            r.bytes as f64 / 1e6,
            gflops,
            gbs
        );
        if args.peak_gflops.is_some() {
            print!(" {:>7}", of_peak(gflops, args.peak_gflops));
        }
        if args.compare {
            match r.cpu_seconds {
                Some(c) => print!(" {:>10.2} {:>8.2}", c * 1e3, c / r.seconds.max(1e-12)),
                None => print!(" {:>10} {:>8}", "-", "-"),
            }
        }
        println!();
    }
    let flops: u64 = launches.iter().map(|l| l.cost_now().flops).sum();
    let step_gflops = flops as f64 / step_seconds / 1e9;
    println!(
        "\nwhole step (one pass, as training runs it): {:.1} ms, {:.1} {}/s, {:.2} GFLOP/s ({:.2} GFLOP a step)",
        step_seconds * 1e3,
        batch as f64 / step_seconds,
        spec.examples_name(),
        step_gflops,
        flops as f64 / 1e9
    );
    if let Some(peak) = args.peak_gflops {
        println!(
            "share of the {peak:.0} GFLOP/s fp32 peak: {} for the whole step",
            of_peak(step_gflops, Some(peak))
        );
    }
    println!(
        "sum of kernel times: {:.1} ms over {} launches",
        kernel_seconds * 1e3,
        launches.len()
    );
    if !spans.is_empty() {
        let span = spans.iter().sum::<f64>() / spans.len() as f64;
        println!(
            "GPU idle between kernels: {:.1} ms of a {:.1} ms span ({:.1} %)",
            (span - kernel_seconds).max(0.0) * 1e3,
            span * 1e3,
            100.0 * (span - kernel_seconds).max(0.0) / span
        );
    }
    if let Some(path) = &args.trace {
        let results = trace.ok_or_else(|| {
            Error::Other("no GPU timestamps on this adapter: no trace to write".into())
        })?;
        wgpu_profiler::chrometrace::write_chrometrace(path, &results).map_err(|source| {
            Error::Io {
                path: path.clone(),
                source,
            }
        })?;
        println!("trace of one step: {}", path.display());
    }
    Ok(())
}
