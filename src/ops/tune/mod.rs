//! Tile sizes chosen per adapter: the first time a shape class of a tiled kernel is planned
//! on the GPU path, each candidate tiling ([`Tiling::CANDIDATES`] that fit the device) is
//! timed on that class's real shape, and the fastest is used from then on and remembered
//! in a small cache file per adapter and driver ([`cache`]), so that later runs start at
//! once.
//!
//! A shape class: the kernel (matmul, conv2d_forward, conv2d_backward_input,
//! conv2d_backward_weight), what changes its code path (the product's transposes and
//! vec4 loads; the convolution's kernel size and stride), and its GEMM extents M, N, K and
//! the grid's z (the product's batch, the input gradient's stride phases, the weight
//! gradient's chunks), each rounded up to a power of two.
//!
//! Tuning happens while launches are planned, never in a step: a warm-up run of each
//! candidate (pipelines compile at their first dispatch on some drivers), then up to
//! [`REPS`] runs, or fewer once a candidate has taken [`BUDGET_SECONDS`], timed by
//! timestamp queries where the adapter has them (gpu::Stopwatch), and the median of each.
//! The candidates run on scratch buffers of the real shape (zeros: the time of these
//! kernels does not depend on the values), at most [`SCRATCH_CAP_BYTES`]; a class that
//! needs more is timed with fewer images (its batch halved until the scratch fits), or
//! keeps the default where even one image does not fit.
//!
//! `--tune off` or CPC_TUNE=off runs [`Tiling::DEFAULT`] everywhere ([`Tune::choose`]);
//! the CPU path has nothing to tune. The memory estimate's plans at batches 1 to 3 tune
//! nothing ([`Tilings::paused`]).

pub mod cache;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{rel_offset, Gpu, KernelPath, Launch, Stopwatch, Tensor};
use crate::ops::conv2d::{self, Activation, Conv2d, ConvKernel};
use crate::ops::matmul::{self, Matmul, MatmulKernel, Tiling};

pub use cache::AdapterKey;

/// Timed runs of each candidate after its warm-up, at most.
pub const REPS: usize = 5;

/// A candidate stops being timed once its runs add up to this (at least one run): on a
/// software adapter one run of a large class can take a second.
pub const BUDGET_SECONDS: f64 = 0.25;

/// The most scratch memory one class is timed with.
pub const SCRATCH_CAP_BYTES: u64 = 256 << 20;

/// `--tune on|off`, or CPC_TUNE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tune {
    #[default]
    On,
    Off,
}

impl std::str::FromStr for Tune {
    type Err = Error;
    fn from_str(s: &str) -> Result<Tune> {
        match s.to_ascii_lowercase().as_str() {
            "on" => Ok(Tune::On),
            "off" => Ok(Tune::Off),
            other => Err(Error::Config(format!(
                "unknown tuning choice '{other}': use on or off"
            ))),
        }
    }
}

impl Tune {
    /// The one place tuning is decided: the flag, else CPC_TUNE, else on; only the GPU path
    /// has tilings to tune. Returns whether to tune and why, in words.
    pub fn choose(asked: Option<Tune>, path: KernelPath) -> Result<(bool, String)> {
        let (tune, source) = match asked {
            Some(t) => (t, "--tune"),
            None => match std::env::var("CPC_TUNE") {
                Ok(v) if !v.is_empty() => (v.parse()?, "CPC_TUNE"),
                _ => (Tune::On, "default"),
            },
        };
        Ok(match (path, tune) {
            (KernelPath::Cpu, _) => (false, "nothing to tune on the cpu kernel path".into()),
            (KernelPath::Gpu, Tune::Off) => (false, format!("off from {source}")),
            (KernelPath::Gpu, Tune::On) => (true, format!("on from {source}")),
        })
    }
}

/// Which pass of a convolution a tiling is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    Forward,
    BackwardInput,
    BackwardWeight,
}

impl ConvPass {
    /// The launcher's name in ops::conv2d, which names its shape classes.
    pub fn kernel(self) -> &'static str {
        match self {
            ConvPass::Forward => "conv2d_forward",
            ConvPass::BackwardInput => "conv2d_backward_input",
            ConvPass::BackwardWeight => "conv2d_backward_weight",
        }
    }
}

/// Shapes one tiling serves (see the module's doc).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ShapeClass {
    /// The launcher: matmul, conv2d_forward, conv2d_backward_input, conv2d_backward_weight.
    pub kernel: String,
    /// What else changes the kernel's code: `tiled_a4_b4 nt` (entry point, transposes of A
    /// and B), `k3 s2` (kernel size, stride).
    pub variant: String,
    /// M, N, K and the grid's z, each rounded up to a power of two.
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub z: usize,
}

impl ShapeClass {
    /// The class of `kernel` with these extents [M, N, K, z].
    pub fn new(kernel: &str, variant: String, extents: [usize; 4]) -> ShapeClass {
        let [m, n, k, z] = extents.map(|e| e.max(1).next_power_of_two());
        ShapeClass {
            kernel: kernel.into(),
            variant,
            m,
            n,
            k,
            z,
        }
    }

    /// The class of C = op(A) op(B) with A and B where they are (their offsets decide the
    /// vec4 loads).
    pub fn matmul(gpu: &Gpu, mm: &Matmul, a: &Tensor, b: &Tensor) -> ShapeClass {
        let [a_offset, b_offset] = matmul::operand_offsets(gpu, mm, a, b);
        let t = |trans: bool| if trans { 't' } else { 'n' };
        let variant = format!(
            "{} {}{}",
            matmul::tiled_entry(mm, a_offset, b_offset),
            t(mm.trans_a),
            t(mm.trans_b)
        );
        ShapeClass::new("matmul", variant, [mm.m, mm.n, mm.k, mm.batch])
    }

    /// The class of one pass of `c`, its extents as conv2d_tiled.wgsl's header gives them.
    pub fn conv(gpu: &Gpu, c: &Conv2d, pass: ConvPass) -> ShapeClass {
        let (oh, ow) = c.out_hw();
        let (phases, hq, wq) = c.phases();
        let extents = match pass {
            ConvPass::Forward => [c.n * oh * ow, c.cout, c.cin * c.taps(), 1],
            // A phase's taps: ceil(kh / sh) x ceil(kw / sw) at most.
            ConvPass::BackwardInput => [
                c.n * hq * wq,
                c.cin,
                c.cout * c.kh.div_ceil(c.sh) * c.kw.div_ceil(c.sw),
                phases,
            ],
            ConvPass::BackwardWeight => {
                let (per_chunk, chunks) = c.weight_grad_chunks(gpu);
                [c.cin * c.taps(), c.cout, per_chunk * oh * ow, chunks]
            }
        };
        let variant = format!("k{}x{} s{}x{}", c.kh, c.kw, c.sh, c.sw);
        ShapeClass::new(pass.kernel(), variant, extents)
    }
}

impl std::fmt::Display for ShapeClass {
    /// `matmul tiled_a4_b4 nt, M 64 N 64 K 64 z 1` (extents rounded up to powers of two).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}, M {} N {} K {} z {}",
            self.kernel, self.variant, self.m, self.n, self.k, self.z
        )
    }
}

/// One candidate's median time.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timed {
    pub tiling: Tiling,
    pub median_s: f64,
}

/// The tiling chosen for a class, and what it was chosen from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Choice {
    pub tiling: Tiling,
    /// Every candidate that ran, with its median, in the order timed.
    pub timed: Vec<Timed>,
    /// How they were timed: timestamps, host (gpu::Stopwatch::source) or a test's timer.
    pub timer: String,
}

impl Choice {
    /// `64x64x16/8x8: 0.120 ms (default 64x64x16/4x4: 0.150 ms; 5 timed by timestamps)`.
    pub fn describe(&self) -> String {
        let ms = |t: Tiling| {
            self.timed
                .iter()
                .find(|c| c.tiling == t)
                .map_or("-".into(), |c| format!("{:.3} ms", c.median_s * 1e3))
        };
        format!(
            "{}: {} (default {}: {}; {} timed by {})",
            self.tiling.label(),
            ms(self.tiling),
            Tiling::DEFAULT.label(),
            ms(Tiling::DEFAULT),
            self.timed.len(),
            self.timer
        )
    }
}

/// The middle of `runs` (the mean of the two middle ones for an even count).
fn median(runs: &mut [f64]) -> f64 {
    runs.sort_by(f64::total_cmp);
    let n = runs.len();
    if n % 2 == 1 {
        runs[n / 2]
    } else {
        (runs[n / 2 - 1] + runs[n / 2]) / 2.0
    }
}

/// Time every candidate with `time` (seconds of one run; None where the candidate cannot
/// run this shape) and pick the one with the smallest median, the earlier on a tie. Each
/// candidate's first run is a warm-up, not counted; then up to [`REPS`] runs, stopping
/// once they add up to [`BUDGET_SECONDS`]. None when no candidate ran.
pub fn pick(
    candidates: &[Tiling],
    timer: &str,
    time: &mut dyn FnMut(Tiling) -> Result<Option<f64>>,
) -> Result<Option<Choice>> {
    let mut timed: Vec<Timed> = Vec::new();
    'candidates: for &tiling in candidates {
        if time(tiling)?.is_none() {
            continue;
        }
        let mut runs = Vec::with_capacity(REPS);
        while runs.len() < REPS && runs.iter().sum::<f64>() < BUDGET_SECONDS {
            match time(tiling)? {
                Some(s) if s.is_finite() => runs.push(s),
                _ => continue 'candidates,
            }
        }
        timed.push(Timed {
            tiling,
            median_s: median(&mut runs),
        });
    }
    let best = timed.iter().fold(None::<Timed>, |best, &t| match best {
        Some(b) if b.median_s <= t.median_s => Some(b),
        _ => Some(t),
    });
    Ok(best.map(|b| Choice {
        tiling: b.tiling,
        timed,
        timer: timer.into(),
    }))
}

/// What a device's tilings have cost so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TuningStats {
    /// Classes tuned in this process.
    pub tuned: usize,
    /// Seconds spent tuning them.
    pub seconds: f64,
    /// Classes planned with a tiling read from the cache file.
    pub read: usize,
    /// Classes that kept the default: too large to time, or no candidate ran.
    pub skipped: usize,
}

#[derive(Default)]
struct State {
    chosen: BTreeMap<ShapeClass, Choice>,
    /// The classes of `chosen` that came from the file and have been planned.
    read: BTreeSet<ShapeClass>,
    from_file: BTreeSet<ShapeClass>,
    stats: TuningStats,
    warnings: Vec<String>,
    /// A write of the file failed (warned once; not retried).
    unwritable: bool,
}

/// A device's tilings per shape class: read from its cache file when the device opens,
/// tuned for classes it lacks, written back after each one.
pub struct Tilings {
    enabled: bool,
    reason: String,
    key: AdapterKey,
    file: Option<PathBuf>,
    state: Mutex<State>,
    /// Nonzero while [`Tilings::paused`] runs.
    paused: AtomicUsize,
}

impl Tilings {
    /// The tilings of the adapter `key`, tuned when `enabled` (`reason` says why or why
    /// not), remembered in its file under `dir` ([`cache::dir`]; None: not remembered).
    /// A cache file that cannot be used is a warning (kept in [`Tilings::warnings`]).
    pub fn open(key: AdapterKey, enabled: bool, reason: String, dir: Option<PathBuf>) -> Tilings {
        let mut state = State::default();
        let file = dir.map(|d| cache::file_for(&d, &key));
        if enabled {
            match &file {
                Some(path) => {
                    let (chosen, warnings) = cache::read(path, &key);
                    state.from_file = chosen.keys().cloned().collect();
                    state.chosen = chosen;
                    state.warnings = warnings;
                }
                None => state.warnings.push(
                    "no cache folder (CPC_CACHE_DIR, XDG_CACHE_HOME and HOME are unset): \
                     tilings tuned in this run are not remembered"
                        .into(),
                ),
            }
        }
        for w in &state.warnings {
            eprintln!("warning: {w}");
        }
        Tilings {
            enabled,
            reason,
            key,
            file,
            state: Mutex::new(state),
            paused: AtomicUsize::new(0),
        }
    }

    /// Whether classes are tuned (the GPU path with tuning on).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Why tuning is on or off, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The cache file, where there is a cache folder.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The tiling for `class`: the one chosen before (in this run, or read from the cache
    /// file), else, with tuning on and not paused, the one `tune` picks (remembered and
    /// written to the file), else [`Tiling::DEFAULT`]. `tune` failing is a warning and the
    /// default, never an error: tuning only ever makes a plan faster.
    pub fn get(&self, class: &ShapeClass, tune: impl FnOnce() -> Result<Option<Choice>>) -> Tiling {
        if !self.enabled {
            return Tiling::DEFAULT;
        }
        {
            let mut state = self.state.lock().unwrap();
            if let Some(choice) = state.chosen.get(class) {
                let tiling = choice.tiling;
                if state.from_file.contains(class) && state.read.insert(class.clone()) {
                    state.stats.read += 1;
                }
                return tiling;
            }
        }
        if self.paused.load(Ordering::Relaxed) > 0 {
            return Tiling::DEFAULT;
        }
        let start = Instant::now();
        let picked = tune();
        let mut state = self.state.lock().unwrap();
        let choice = match picked {
            Ok(Some(choice)) => choice,
            Ok(None) => {
                state.stats.skipped += 1;
                return Tiling::DEFAULT;
            }
            Err(e) => {
                let w = format!("tuning {class} failed ({e}): default tiling");
                eprintln!("warning: {w}");
                state.warnings.push(w);
                state.stats.skipped += 1;
                return Tiling::DEFAULT;
            }
        };
        state.stats.tuned += 1;
        state.stats.seconds += start.elapsed().as_secs_f64();
        let tiling = choice.tiling;
        state.chosen.insert(class.clone(), choice);
        self.save(&mut state);
        tiling
    }

    /// Write every choice to the file; a failure is a warning, once.
    fn save(&self, state: &mut State) {
        let Some(path) = &self.file else { return };
        if state.unwritable {
            return;
        }
        if let Err(e) = cache::write(path, &self.key, &state.chosen) {
            let w = format!("cannot write the tiling cache ({e}): tilings are not remembered");
            eprintln!("warning: {w}");
            state.warnings.push(w);
            state.unwritable = true;
        }
    }

    /// Run `f` (the memory estimate's plans, at batches no step runs) without tuning:
    /// classes not chosen yet get the default.
    pub fn paused<T>(&self, f: impl FnOnce() -> T) -> T {
        self.paused.fetch_add(1, Ordering::Relaxed);
        let out = f();
        self.paused.fetch_sub(1, Ordering::Relaxed);
        out
    }

    pub fn stats(&self) -> TuningStats {
        self.state.lock().unwrap().stats
    }

    /// Every class chosen so far (read from the file or tuned), in order.
    pub fn chosen(&self) -> Vec<(ShapeClass, Choice)> {
        let state = self.state.lock().unwrap();
        state
            .chosen
            .iter()
            .map(|(c, t)| (c.clone(), t.clone()))
            .collect()
    }

    /// The warnings so far: the cache file that could not be used or written, a class
    /// whose tuning failed.
    pub fn warnings(&self) -> Vec<String> {
        self.state.lock().unwrap().warnings.clone()
    }

    /// One line: tuning off, or how many classes were tuned in how long and how many
    /// read from which cache file.
    pub fn summary(&self) -> String {
        if !self.enabled {
            return format!(
                "tilings: {} for every class (tuning {})",
                Tiling::DEFAULT.label(),
                self.reason
            );
        }
        let s = self.stats();
        let mut parts = Vec::new();
        if s.tuned > 0 || s.read == 0 {
            parts.push(format!(
                "tuned {} shape classes in {:.1} s",
                s.tuned, s.seconds
            ));
        }
        if s.read > 0 {
            parts.push(format!("read {} from the cache", s.read));
        }
        if s.skipped > 0 {
            parts.push(format!("{} kept the default", s.skipped));
        }
        let file = self
            .file
            .as_ref()
            .map_or("not remembered: no cache folder".into(), |f| {
                f.display().to_string()
            });
        format!("tilings: {} ({file})", parts.join(", "))
    }
}

/// The candidates a device runs.
fn fitting(gpu: &Gpu) -> Vec<Tiling> {
    Tiling::CANDIDATES
        .iter()
        .copied()
        .filter(|t| t.fits(&gpu.limits))
        .collect()
}

/// The largest batch, `batch` or halved from it, whose scratch `bytes` gives fits
/// [`SCRATCH_CAP_BYTES`]; None where not even one does.
fn fitting_batch(batch: usize, bytes: impl Fn(usize) -> u64) -> Option<usize> {
    let mut b = batch.max(1);
    while bytes(b) > SCRATCH_CAP_BYTES {
        if b == 1 {
            return None;
        }
        b = b.div_ceil(2);
    }
    Some(b)
}

/// Say that `class` is timed at `timed` of `batch` images (or not at all) for the cap.
fn note_scaled(class: &ShapeClass, timed: Option<usize>, batch: usize) {
    let cap = SCRATCH_CAP_BYTES >> 20;
    match timed {
        Some(b) if b < batch => eprintln!(
            "note: tuning {class}: timed at a batch of {b} instead of {batch}, within the \
             {cap} MiB of scratch tuning may use"
        ),
        Some(_) => {}
        None => eprintln!(
            "note: tuning {class}: one image needs over {cap} MiB of scratch; default tiling"
        ),
    }
}

/// Time each fitting candidate's launches that `plan` gives (only the tiled dispatches
/// among them: a weight gradient's sums are the same for every tiling) and pick the
/// fastest. A candidate whose plan fails (a grid past the device's limits) is left out.
fn tune_by(gpu: &Gpu, plan: impl Fn(Tiling) -> Result<Vec<Launch>>) -> Result<Option<Choice>> {
    let watch = Stopwatch::new(gpu);
    let mut planned: Option<(Tiling, Vec<Launch>)> = None;
    pick(&fitting(gpu), watch.source(), &mut |tiling| {
        if planned.as_ref().map(|p| p.0) != Some(tiling) {
            planned = None;
            match plan(tiling) {
                Ok(launches) => planned = Some((tiling, launches)),
                Err(_) => return Ok(None),
            }
        }
        let (_, launches) = planned.as_ref().expect("planned above");
        let tiled: Vec<&Launch> = launches
            .iter()
            .filter(|l| l.name.starts_with("matmul_tiled") || l.name.starts_with("conv2d_tiled"))
            .collect();
        watch.time(gpu, &tiled).map(Some)
    })
}

/// The tiling of the product C = op(A) op(B) on the GPU path (see the module's doc):
/// tuned on scratch operands at A's and B's offsets in their bindings, so that the same
/// entry point runs.
pub(crate) fn matmul_tiling(gpu: &Gpu, mm: &Matmul, a: &Tensor, b: &Tensor) -> Tiling {
    let class = ShapeClass::matmul(gpu, mm, a, b);
    let rel = [rel_offset(gpu, a), rel_offset(gpu, b), 0].map(|r| r as usize);
    gpu.tilings.get(&class, || {
        let needs = |batch: usize| Matmul { batch, ..*mm }.needs();
        let bytes = |batch: usize| {
            let n = needs(batch);
            4 * (0..3).map(|i| (rel[i] + n[i]) as u64).sum::<u64>()
        };
        let batch = fitting_batch(mm.batch, bytes);
        note_scaled(&class, batch, mm.batch);
        let Some(batch) = batch else { return Ok(None) };
        let spec = Matmul { batch, ..*mm };
        let scratch = gpu.unrecorded(|| {
            needs(batch)
                .into_iter()
                .zip(rel)
                .map(|(n, r)| Ok(Tensor::zeros(gpu, "tuning scratch", &[r + n])?.view(r, &[n])))
                .collect::<Result<Vec<Tensor>>>()
        })?;
        tune_by(gpu, |t| {
            let [a, b, c] = [&scratch[0], &scratch[1], &scratch[2]];
            Ok(vec![matmul::forward_with(
                gpu,
                &spec,
                a,
                b,
                c,
                MatmulKernel::Tiled(t),
            )?])
        })
    })
}

/// The tiling of `pass` of `c` on the GPU path (see the module's doc).
pub(crate) fn conv_tiling(gpu: &Gpu, c: &Conv2d, pass: ConvPass) -> Tiling {
    let class = ShapeClass::conv(gpu, c, pass);
    gpu.tilings.get(&class, || {
        // Floats of x, the weights, the bias and y, and the weight gradient's chunks.
        let lens = |c: &Conv2d| {
            let chunks = match pass {
                ConvPass::BackwardWeight => c.weight_grad_chunks(gpu).1 * c.w_len(),
                _ => 0,
            };
            [c.x_len(), c.w_len(), c.cout, c.y_len(), chunks]
        };
        let bytes = |n: usize| 4 * lens(&Conv2d { n, ..*c }).iter().sum::<usize>() as u64;
        let n = fitting_batch(c.n, bytes);
        note_scaled(&class, n, c.n);
        let Some(n) = n else { return Ok(None) };
        let c = Conv2d { n, ..*c };
        let [x, w, b, y] = gpu.unrecorded(|| -> Result<[Tensor; 4]> {
            let [x, w, b, y, _] = lens(&c);
            let t = |n: usize| Tensor::zeros(gpu, "tuning scratch", &[n]);
            Ok([t(x)?, t(w)?, t(b)?, t(y)?])
        })?;
        tune_by(gpu, |t| {
            let kernel = ConvKernel::Tiled(t);
            gpu.unrecorded(|| match pass {
                ConvPass::Forward => {
                    conv2d::forward_with(gpu, &c, &x, &w, &b, &y, Activation::Identity, kernel)
                }
                ConvPass::BackwardInput => {
                    conv2d::backward_input_with(gpu, &c, &y, &w, &x, false, None, kernel)
                }
                ConvPass::BackwardWeight => {
                    conv2d::backward_weight_with(gpu, &c, &x, &y, &w, &b, kernel)
                }
            })
        })
    })
}
