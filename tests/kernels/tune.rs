//! The tile-size tuner (ops::tune): its choice from a fake timer, its cache file (round
//! trip, corrupt, foreign, unwritable), tuning off, and one real pass on lavapipe. That the
//! tiling it picks computes correctly is the tiled kernels' tests' business: they run
//! every candidate (matmul.rs, conv2d.rs).

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;

use cpc::gpu::{AdapterChoice, Gpu, KernelPath, Kernels, LimitsChoice, Tensor};
use cpc::ops::conv2d::{self, Conv2d, ConvKernel};
use cpc::ops::matmul::{self, Matmul, MatmulKernel, Tiling};
use cpc::ops::tune::{self, cache, AdapterKey, Choice, ConvPass, ShapeClass, Tilings, Tune};
use cpc::Result;

use crate::shared::{gpu_on, TestDir};

/// A timer that answers from a table: per tiling, its warm-up then its runs (the last one
/// repeated); a tiling not in the table cannot run. Counts its calls.
struct FakeTimer {
    runs: HashMap<Tiling, Vec<f64>>,
    calls: HashMap<Tiling, usize>,
}

impl FakeTimer {
    fn new(runs: &[(Tiling, &[f64])]) -> FakeTimer {
        FakeTimer {
            runs: runs.iter().map(|&(t, r)| (t, r.to_vec())).collect(),
            calls: HashMap::new(),
        }
    }

    fn time(&mut self, t: Tiling) -> Result<Option<f64>> {
        let Some(runs) = self.runs.get(&t) else {
            return Ok(None);
        };
        let i = self.calls.entry(t).or_default();
        let s = runs[(*i).min(runs.len() - 1)];
        *i += 1;
        Ok(Some(s))
    }

    fn pick(&mut self) -> Result<Option<Choice>> {
        tune::pick(Tiling::CANDIDATES, "fake", &mut |t| self.time(t))
    }
}

fn c(i: usize) -> Tiling {
    Tiling::CANDIDATES[i]
}

fn key(driver: &str) -> AdapterKey {
    AdapterKey {
        name: "Test Adapter 9000".into(),
        vendor: 0x1234,
        device: 0x5678,
        driver: driver.into(),
        driver_info: "1.2.3".into(),
        backend: "Vulkan".into(),
    }
}

fn class(m: usize) -> ShapeClass {
    ShapeClass::new("matmul", "tiled nn".into(), [m, 64, 64, 1])
}

/// A tuned choice of `tiling` from a fake timer under which it is the fastest.
fn fastest(tiling: Tiling) -> impl FnMut() -> Result<Option<Choice>> {
    move || {
        let runs: Vec<(Tiling, &[f64])> = Tiling::CANDIDATES
            .iter()
            .map(|&t| {
                (
                    t,
                    if t == tiling {
                        &[0.5, 0.001][..]
                    } else {
                        &[0.5, 0.002][..]
                    },
                )
            })
            .collect();
        FakeTimer::new(&runs).pick()
    }
}

#[test]
fn the_tuner_picks_the_smallest_median_after_the_warm_up() {
    // c(0): steady 0.15 ms. c(1): one slow run among fast ones (median 0.1 ms, mean 0.28 ms):
    // the median picks it. c(2): fastest warm-up, slow runs: the warm-up does not count.
    // c(3): cannot run. c(4): its first run exceeds the budget, so it runs once.
    let mut timer = FakeTimer::new(&[
        (c(0), &[0.01, 0.15e-3]),
        (c(1), &[0.01, 1.0e-3, 0.1e-3, 0.1e-3, 0.1e-3, 0.1e-3]),
        (c(2), &[1e-6, 0.5e-3]),
        (c(4), &[0.01, 0.3]),
    ]);
    let choice = timer.pick().unwrap().expect("candidates ran");
    assert_eq!(choice.tiling, c(1));
    let timed: Vec<Tiling> = choice.timed.iter().map(|t| t.tiling).collect();
    assert_eq!(timed, [c(0), c(1), c(2), c(4)], "c(3) cannot run");
    assert!((choice.timed[1].median_s - 0.1e-3).abs() < 1e-12);
    // A warm-up and REPS runs each, but one run past the budget for c(4), and none of c(3).
    assert_eq!(timer.calls[&c(0)], 1 + tune::REPS);
    assert_eq!(timer.calls[&c(4)], 2);
    assert!(!timer.calls.contains_key(&c(3)));

    // A tie goes to the earlier candidate (DEFAULT first); no candidate at all is None.
    let mut tie = FakeTimer::new(&[(c(2), &[1.0, 1e-3]), (c(0), &[1.0, 1e-3])]);
    assert_eq!(tie.pick().unwrap().unwrap().tiling, Tiling::DEFAULT);
    assert!(FakeTimer::new(&[]).pick().unwrap().is_none());
}

#[test]
fn the_cache_round_trips_and_a_second_run_times_nothing() {
    let dir = TestDir::new("tune-cache");
    let first = Tilings::open(key("drv"), true, "on".into(), Some(dir.to_path_buf()));
    assert!(first.warnings().is_empty(), "{:?}", first.warnings());
    assert_eq!(first.get(&class(64), fastest(c(2))), c(2));
    assert_eq!(first.get(&class(1024), fastest(c(4))), c(4));
    // A class chosen in this run is not timed again.
    assert_eq!(first.get(&class(64), || panic!("timed twice")), c(2));
    assert_eq!(first.stats().tuned, 2);
    let file = first.file().unwrap().to_path_buf();
    assert!(
        file.starts_with(&*dir) && file.exists(),
        "{}",
        file.display()
    );

    let timings = &Cell::new(0);
    let counted = |t: Tiling| {
        move || {
            timings.set(timings.get() + 1);
            fastest(t)()
        }
    };
    let second = Tilings::open(key("drv"), true, "on".into(), Some(dir.to_path_buf()));
    assert!(second.warnings().is_empty(), "{:?}", second.warnings());
    assert_eq!(second.get(&class(64), counted(c(1))), c(2));
    assert_eq!(second.get(&class(1024), counted(c(1))), c(4));
    assert_eq!(timings.get(), 0, "read from the file, not timed");
    let s = second.stats();
    assert_eq!((s.tuned, s.read), (0, 2));
    assert_eq!(second.chosen(), first.chosen());
    // A class the file lacks is tuned and added to it.
    assert_eq!(second.get(&class(8), counted(c(3))), c(3));
    assert_eq!(timings.get(), 1);
    let third = Tilings::open(key("drv"), true, "on".into(), Some(dir.to_path_buf()));
    assert_eq!(third.chosen().len(), 3);
}

/// Tilings of adapter `key` opened on `dir`, whose warnings must mention `why`; returns
/// how many timings a class then takes (it must be tuned again).
#[track_caller]
fn retunes(dir: &Path, key: AdapterKey, why: &str) -> usize {
    let t = Tilings::open(key, true, "on".into(), Some(dir.to_path_buf()));
    let w = t.warnings();
    assert!(w.len() == 1 && w[0].contains(why), "{why}: {w:?}");
    let timings = Cell::new(0);
    t.get(&class(64), || {
        timings.set(timings.get() + 1);
        fastest(c(2))()
    });
    timings.get()
}

#[test]
fn a_corrupt_foreign_or_stale_cache_is_a_warning_and_tuning_again() {
    let dir = TestDir::new("tune-bad-cache");
    let path = cache::file_for(&dir, &key("drv"));
    std::fs::write(&path, "{ not json").unwrap();
    assert_eq!(retunes(&dir, key("drv"), "not a tiling cache"), 1);
    // That pass rewrote the file whole; now a build with another driver finds it under its
    // own name (as a copied cache folder would).
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(cache::file_for(&dir, &key("drv 2")), &text).unwrap();
    assert_eq!(retunes(&dir, key("drv 2"), "another adapter or driver"), 1);
    // Other shaders: the version the file was timed with differs.
    let version = cache::shaders_version();
    std::fs::write(&path, text.replace(&version, "cpc 0.0.0 shaders 0")).unwrap();
    assert_eq!(retunes(&dir, key("drv"), "other shaders"), 1);
    // A tiling that is not a candidate (a hand-edited file) is dropped, the rest kept.
    let (bm, bad) = (r#""bm": 64"#, r#""bm": 48"#);
    assert!(text.contains(bm), "{text}");
    std::fs::write(&path, text.replace(bm, bad)).unwrap();
    assert_eq!(retunes(&dir, key("drv"), "not a candidate"), 1);
    // An unreadable one (here: a folder where the file should be).
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert_eq!(retunes(&dir, key("drv"), "cannot be read"), 1);
}

#[test]
fn an_unwritable_cache_folder_is_a_warning_and_the_tiling_still_chosen() {
    let dir = TestDir::new("tune-unwritable");
    let not_a_folder = dir.path("file");
    std::fs::write(&not_a_folder, "").unwrap();
    let t = Tilings::open(key("drv"), true, "on".into(), Some(not_a_folder));
    assert_eq!(t.get(&class(64), fastest(c(2))), c(2));
    assert_eq!(t.get(&class(128), fastest(c(3))), c(3));
    // Its file cannot be read either (a warning of its own); the write is warned of once.
    let w = t.warnings();
    let writes = w.iter().filter(|w| w.contains("cannot write")).count();
    assert_eq!(writes, 1, "{w:?}");
}

#[test]
fn tuning_off_or_paused_gives_the_default() {
    let on = |asked, path| Tune::choose(Some(asked), path).unwrap().0;
    assert!(on(Tune::On, KernelPath::Gpu));
    assert!(!on(Tune::Off, KernelPath::Gpu));
    assert!(
        !on(Tune::On, KernelPath::Cpu),
        "the cpu path has nothing to tune"
    );
    assert!("sometimes".parse::<Tune>().is_err());

    let dir = TestDir::new("tune-off");
    let off = Tilings::open(key("drv"), false, "off".into(), Some(dir.to_path_buf()));
    assert_eq!(
        off.get(&class(64), || panic!("tuned while off")),
        Tiling::DEFAULT
    );
    assert!(off.summary().contains("tuning off"), "{}", off.summary());
    // Paused (the memory estimate's plans): the default, and nothing remembered.
    let on = Tilings::open(key("drv"), true, "on".into(), Some(dir.to_path_buf()));
    let paused = on.paused(|| on.get(&class(64), || panic!("tuned while paused")));
    assert_eq!(paused, Tiling::DEFAULT);
    assert_eq!(on.get(&class(64), fastest(c(2))), c(2));

    // The suite's GPU-path device runs the default untuned.
    let g = gpu_on(Kernels::Gpu);
    assert!(!g.tilings.enabled());
    let mm = Matmul::new(1, 8, 8, 8);
    let t = |n| Tensor::zeros(g, "t", &[n]).unwrap();
    let kernel = MatmulKernel::tuned(g, &mm, &t(64), &t(64));
    assert_eq!(kernel, MatmulKernel::Tiled(Tiling::DEFAULT));
}

/// The software adapter on the GPU path, tuning into `dir`.
fn tuning_device(dir: &Path) -> Gpu {
    Gpu::new(&AdapterChoice {
        software: true,
        limits: LimitsChoice::Webgpu,
        kernels: Some(Kernels::Gpu),
        tune: Some(Tune::On),
        cache_dir: Some(dir.to_path_buf()),
        ..Default::default()
    })
    .unwrap()
}

/// Plan a small product and a small convolution's weight gradient on `g`: the tilings
/// they get.
fn plan_small(g: &Gpu) -> [Tiling; 2] {
    let t = |n| Tensor::zeros(g, "t", &[n]).unwrap();
    let mm = Matmul::new(2, 12, 20, 8);
    let launch = matmul::forward(g, &mm, &t(2 * 12 * 8), &t(2 * 8 * 20), &t(2 * 12 * 20)).unwrap();
    let MatmulKernel::Tiled(product) = MatmulKernel::tuned(g, &mm, &t(192), &t(320)) else {
        panic!("the gpu path");
    };
    assert!(launch.name.starts_with("matmul_tiled"));
    let c = Conv2d {
        n: 2,
        cin: 3,
        h: 6,
        w: 5,
        cout: 4,
        kh: 3,
        kw: 3,
        sh: 1,
        sw: 1,
        ph: 1,
        pw: 1,
    };
    let [x, y, w, b] = [c.x_len(), c.y_len(), c.w_len(), c.cout].map(t);
    conv2d::backward_weight(g, &c, &x, &y, &w, &b).unwrap();
    let ConvKernel::Tiled(conv) = ConvKernel::tuned(g, &c, ConvPass::BackwardWeight) else {
        panic!("the gpu path");
    };
    [product, conv]
}

#[test]
fn a_real_tuning_pass_writes_the_cache_and_the_next_device_reads_it() {
    let dir = TestDir::new("tune-lavapipe");
    let first = tuning_device(&dir);
    let chosen = plan_small(&first);
    let s = first.tilings.stats();
    assert_eq!(
        (s.tuned, s.read, s.skipped),
        (2, 0, 0),
        "{}",
        first.tilings.summary()
    );
    for (class, choice) in first.tilings.chosen() {
        assert!(!choice.timed.is_empty() && choice.timed.iter().all(|t| t.median_s > 0.0));
        assert!(Tiling::CANDIDATES.contains(&choice.tiling), "{class}");
    }
    let file = first.tilings.file().unwrap().to_path_buf();
    assert!(file.exists(), "{}", file.display());
    assert!(first.tilings.warnings().is_empty());
    drop(first);

    let second = tuning_device(&dir);
    assert_eq!(plan_small(&second), chosen);
    let s = second.tilings.stats();
    assert_eq!((s.tuned, s.read), (0, 2), "{}", second.tilings.summary());
    assert!(second.tilings.summary().contains("read 2 from the cache"));
    let info = cache::describe(Some(&dir), &AdapterKey::of(&second.info));
    assert!(info[0].contains("2 shape classes"), "{info:?}");
}
