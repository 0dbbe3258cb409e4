//! Helpers every test binary shares (`mod common;` at the top of each): the software
//! adapter, temporary folders, seeded random numbers, small image fixtures, and pretraining
//! options for short runs. Each binary uses some of them.
#![allow(dead_code)]

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cpc::data::{Format, OnBadImage};
use cpc::gpu::{AdapterChoice, Gpu, KernelPath, Kernels, LimitsChoice, Subgroups};
use cpc::ops::tune::Tune;
use cpc::train::pretrain::{PretrainOptions, PretrainSummary};
use cpc::train::Config;
use rand::{Rng, SeedableRng};

/// The software adapter (lavapipe), opened once for all tests in this binary with
/// WebGPU's baseline limits rather than lavapipe's larger ones: what runs here runs on any
/// GPU that offers WebGPU (the commands the tests spawn use the adapter's own limits).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::software_with(LimitsChoice::Webgpu)
            .expect("software adapter (apt-get install mesa-vulkan-drivers)")
    })
}

/// The software adapter opened once more, as [`gpu`] is, but on the kernel path `kernels`
/// whatever CPC_KERNELS says: the tests that compare the two paths run each on a device of
/// its own. The GPU path runs Tiling::DEFAULT, untuned whatever CPC_TUNE says (tests of
/// the tuner open devices of their own).
pub fn gpu_on(kernels: Kernels) -> &'static Gpu {
    static CPU: OnceLock<Gpu> = OnceLock::new();
    static GPU: OnceLock<Gpu> = OnceLock::new();
    let (cell, path) = match kernels {
        Kernels::Cpu => (&CPU, KernelPath::Cpu),
        Kernels::Gpu => (&GPU, KernelPath::Gpu),
        Kernels::Auto => return gpu(),
    };
    cell.get_or_init(|| {
        let g = open_software(AdapterChoice {
            kernels: Some(kernels),
            tune: Some(Tune::Off),
            ..Default::default()
        });
        assert_eq!(g.kernels, path);
        g
    })
}

/// The error of `result`, which must name `what`.
pub fn expect_err(result: cpc::Result<impl Sized>, what: &str) -> cpc::Error {
    match result {
        Ok(_) => panic!("expected an error naming {what}"),
        Err(e) => {
            assert!(
                e.to_string().contains(what),
                "error {e:?} does not name {what}"
            );
            e
        }
    }
}

/// Whether the command-line tool `tool` runs here; without it, fail where CI is set (CI must
/// install it: `install` says how) and say so elsewhere, where the checks needing it skip.
pub fn have_tool(tool: &str, install: &str) -> bool {
    if std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    let why = format!("{tool} is not installed ({install})");
    assert!(std::env::var_os("CI").is_none(), "{why}, and CI is set");
    eprintln!("{why}; the checks that need it are skipped");
    false
}

/// The software adapter as [`gpu`] opens it, with its reduction kernels using subgroup
/// operations (`on`) or the portable ones, whatever CPC_SUBGROUPS says: [`gpu`] itself where
/// it already is that device, else one opened once more. lavapipe offers subgroups, so both
/// run here.
pub fn gpu_subgroups(on: bool) -> &'static Gpu {
    static OTHER: OnceLock<Gpu> = OnceLock::new();
    if gpu().subgroups == on {
        return gpu();
    }
    OTHER.get_or_init(|| software_gpu(if on { Subgroups::Auto } else { Subgroups::Off }))
}

/// A new device on the software adapter under WebGPU's limits, as [`gpu`] opens it, with its
/// reductions as `subgroups` asks whatever CPC_SUBGROUPS says (lavapipe has subgroups).
pub fn software_gpu(subgroups: Subgroups) -> Gpu {
    let g = open_software(AdapterChoice {
        subgroups: Some(subgroups),
        ..Default::default()
    });
    assert_eq!(
        g.subgroups,
        subgroups == Subgroups::Auto,
        "the software adapter offers subgroups: {}",
        g.reductions()
    );
    g
}

/// A new device on the software adapter under WebGPU's limits, the rest as `choice` asks.
fn open_software(choice: AdapterChoice) -> Gpu {
    Gpu::new(&AdapterChoice {
        software: true,
        limits: LimitsChoice::Webgpu,
        ..choice
    })
    .expect("software adapter (apt-get install mesa-vulkan-drivers)")
}

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Uniform values in [-1, 1).
pub fn random(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A fresh, empty folder of its own (tempfile's), removed when dropped; it reads as the
/// `Path` of the folder.
pub struct TestDir(tempfile::TempDir);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        TestDir(
            tempfile::Builder::new()
                .prefix(&format!("cpc-test-{name}-"))
                .tempdir()
                .expect("a temporary folder"),
        )
    }

    /// `rel` under the folder, with its parent folders created.
    pub fn path(&self, rel: &str) -> PathBuf {
        let p = self.0.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

/// A side x side PNG at `path` (parent folders created) whose pixels depend on `seed`.
pub fn write_png(path: &Path, side: u32, seed: u8) {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(seed),
            (y as u8).wrapping_add(seed),
            seed,
        ])
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// The tiny preset with a small batch and few steps: cheap runs for the bookkeeping tests.
/// Logs every step, checkpoints only at the end, and has a schedule that moves (warm-up of
/// two steps to lr 1e-3 from a floor of 1e-4), so resuming must restore the step exactly.
pub fn tiny_run(batch: u32, steps: u64) -> Config {
    let mut cfg = Config::preset("tiny").unwrap();
    cfg.train.batch = batch;
    cfg.train.total_steps = steps;
    cfg.train.log_every = 1;
    cfg.train.checkpoint_every = 0;
    cfg.train.warmup_steps = steps.min(2);
    cfg.train.min_lr = 1e-4;
    cfg
}

/// `cpc pretrain`'s options for `config` on the built-in data, writing to `out`, quiet.
pub fn pretrain_options(config: Config, out: &Path) -> PretrainOptions {
    PretrainOptions {
        config,
        data: None,
        format: Format::Auto,
        on_bad_image: OnBadImage::Stop,
        on_short: cpc::data::audio::OnShort::Pad,
        out: out.to_path_buf(),
        resume: false,
        memory_budget: None,
        progress: false,
        workers: 2,
        stop_at: None,
        probe: None,
        ranks: None,
    }
}

/// Runs the `cpc` binary with `args` (no tile-size tuning, whatever CPC_KERNELS asks for).
pub fn cpc_command(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cpc"))
        .env("CPC_TUNE", "off")
        .args(args)
        .output()
        .expect("run cpc")
}

/// The stdout of a run that must succeed (else both streams in the panic).
pub fn ok(out: &std::process::Output) -> String {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    o.into_owned()
}

/// The stderr of a run that must fail.
pub fn failed(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected an error");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A pretraining run on the test adapter, never interrupted from outside.
pub fn run(opts: &PretrainOptions) -> cpc::Result<PretrainSummary> {
    cpc::train::pretrain::pretrain(gpu(), opts, &std::sync::atomic::AtomicBool::new(false))
}

/// Every logged step's loss.
pub fn losses(s: &PretrainSummary) -> Vec<(u64, f32)> {
    (s.history.iter())
        .map(|(step, st)| (*step, st.loss))
        .collect()
}
