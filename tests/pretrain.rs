//! `cpc pretrain` end to end on the software adapter: learning on the built-in data,
//! determinism, resume equivalence, checkpoints, and bad input that must fail clearly.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use cpc::data::{Format, OnBadImage};
use cpc::gpu::Gpu;
use cpc::train::pretrain::{pretrain, PretrainOptions, PretrainSummary, CHECKPOINT};
use cpc::train::{Checkpoint, Config};
use cpc::Error;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::software().expect("software adapter"))
}

/// A fresh, empty folder under the system's temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpc-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The tiny preset with a small batch and few steps: cheap runs for the bookkeeping tests.
fn small_config(batch: u32, steps: u64) -> Config {
    let mut cfg = Config::preset("tiny").unwrap();
    cfg.train.batch = batch;
    cfg.train.total_steps = steps;
    cfg.train.log_every = 1;
    cfg.train.checkpoint_every = 0;
    // A schedule that moves, so resuming must restore the step exactly.
    cfg.train.warmup_steps = steps.min(2);
    cfg.train.min_lr = 1e-4;
    cfg
}

fn options(config: Config, out: &Path) -> PretrainOptions {
    PretrainOptions {
        config,
        data: None,
        format: Format::Auto,
        on_bad_image: OnBadImage::Stop,
        out: out.to_path_buf(),
        resume: false,
        memory_budget: None,
        progress: false,
        workers: 2,
        stop_at: None,
        probe: None,
    }
}

fn run(opts: &PretrainOptions) -> cpc::Result<PretrainSummary> {
    pretrain(gpu(), opts, &AtomicBool::new(false))
}

fn losses(s: &PretrainSummary) -> Vec<(u64, f32)> {
    s.history
        .iter()
        .map(|(step, st)| (*step, st.loss))
        .collect()
}

#[test]
fn two_runs_with_one_seed_give_the_same_losses() {
    let dir = temp_dir("determinism");
    let a = run(&options(small_config(4, 3), &dir.join("a"))).unwrap();
    let b = run(&options(small_config(4, 3), &dir.join("b"))).unwrap();
    assert_eq!(losses(&a).len(), 3);
    assert_eq!(
        losses(&a),
        losses(&b),
        "same adapter, same seed: bit-identical losses"
    );
    let mut other = small_config(4, 3);
    other.train.seed = 1;
    let c = run(&options(other, &dir.join("c"))).unwrap();
    assert_ne!(losses(&a), losses(&c), "another seed changes the run");
}

#[test]
fn a_resumed_run_matches_an_uninterrupted_one() {
    let dir = temp_dir("resume");
    let whole = run(&options(small_config(4, 6), &dir.join("whole"))).unwrap();

    let mut first = options(small_config(4, 6), &dir.join("split"));
    first.stop_at = Some(3);
    let part1 = run(&first).unwrap();
    assert!(part1.interrupted && part1.last_step == 3);
    let ck = Checkpoint::load(dir.join("split").join(CHECKPOINT)).unwrap();
    assert_eq!(ck.meta("step"), Some("3"));

    let mut second = options(small_config(4, 6), &dir.join("split"));
    second.resume = true;
    let part2 = run(&second).unwrap();
    assert_eq!(part2.first_step, 3);
    let mut joined = losses(&part1);
    joined.extend(losses(&part2));
    assert_eq!(
        joined,
        losses(&whole),
        "resumed losses equal the uninterrupted run's"
    );
    // The metrics log has each step once.
    let rows = cpc::train::read_metrics(dir.join("split").join("metrics.jsonl")).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.step).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
}

#[test]
fn the_checkpoint_holds_every_parameter_and_the_optimiser_state() {
    let dir = temp_dir("checkpoint");
    let s = run(&options(small_config(4, 2), &dir)).unwrap();
    let ck = Checkpoint::load(&s.checkpoint).unwrap();
    let layout = cpc::model::ParamLayout::new(&cpc::model::ModelSpec::from(
        &Config::preset("tiny").unwrap().model,
    ));
    for v in &layout.views {
        for prefix in ["", "optimizer.exp_avg.", "optimizer.exp_avg_sq."] {
            let t = ck
                .get(&format!("{prefix}{}", v.name))
                .unwrap_or_else(|| panic!("{prefix}{} missing", v.name));
            assert_eq!(t.shape, v.shape, "{}", v.name);
            assert!(t.data.iter().all(|x| x.is_finite()));
        }
    }
    // PyTorch's names and layouts.
    assert_eq!(ck.get("gru.weight_ih_l0").unwrap().shape, vec![192, 64]);
    assert_eq!(
        ck.get("encoder.stem.weight").unwrap().shape,
        vec![32, 3, 3, 3]
    );
    assert_eq!(ck.get("heads.1.weight").unwrap().shape, vec![64, 64]);
    assert_eq!(ck.meta("step"), Some("2"));
    assert!(dir.join("metrics.jsonl").exists() && dir.join("curves.png").exists());
}

#[test]
fn resuming_from_another_configuration_names_both() {
    let dir = temp_dir("other-config");
    run(&options(small_config(4, 1), &dir)).unwrap();
    let mut other = small_config(4, 2);
    other.model.hidden = 32;
    let mut opts = options(other, &dir);
    opts.resume = true;
    let msg = run(&opts).unwrap_err().to_string();
    assert!(
        msg.contains(CHECKPOINT)
            && msg.contains("model.hidden")
            && msg.contains("32")
            && msg.contains("64"),
        "{msg}"
    );
}

#[test]
fn a_batch_over_the_memory_budget_says_what_fits() {
    let dir = temp_dir("memory");
    let mut opts = options(small_config(64, 1), &dir);
    opts.memory_budget = Some(64 << 20);
    let msg = run(&opts).unwrap_err().to_string();
    assert!(
        msg.contains("batch 64 does not fit") && msg.contains("fits"),
        "{msg}"
    );
    assert!(!dir.join(CHECKPOINT).exists(), "nothing ran");
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = temp_dir("nan");
    let mut cfg = small_config(4, 40);
    cfg.train.lr = 1e30;
    cfg.train.min_lr = 1e30;
    cfg.train.warmup_steps = 0;
    cfg.train.checkpoint_every = 1;
    let err = run(&options(cfg, &dir)).unwrap_err();
    let Error::NonFiniteLoss { step, .. } = err else {
        panic!("{err}")
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("step {step}")) && msg.contains(CHECKPOINT),
        "{msg}"
    );
    let ck = Checkpoint::load(dir.join(CHECKPOINT)).expect("the last good checkpoint is readable");
    let saved: u64 = ck.meta("step").unwrap().parse().unwrap();
    assert!(
        saved <= step,
        "checkpoint at {saved} is from before the bad step {step}"
    );
}

fn write_png(path: &Path, side: u32, seed: u8) {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        image::Rgb([(x as u8).wrapping_mul(seed), y as u8, seed])
    });
    img.save(path).unwrap();
}

#[test]
fn bad_data_fails_clearly() {
    let dir = temp_dir("bad-data");
    let mut opts = options(small_config(2, 1), &dir.join("out"));
    // A missing folder.
    opts.data = Some(dir.join("nowhere"));
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("nowhere"), "{msg}");
    // An empty folder.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    opts.data = Some(empty.clone());
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("empty"), "{msg}");
    // A corrupt image: stop names it, skip goes on.
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for i in 0..4 {
        write_png(&imgs.join(format!("ok{i}.png")), 40, i as u8 + 1);
    }
    std::fs::write(imgs.join("broken.png"), b"not a png at all").unwrap();
    opts.data = Some(imgs.clone());
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("broken.png"), "{msg}");
    opts.on_bad_image = OnBadImage::Skip;
    let s = run(&opts).unwrap();
    assert_eq!(s.skipped_images, 1);
    // An image smaller than the crop (32).
    std::fs::remove_file(imgs.join("broken.png")).unwrap();
    write_png(&imgs.join("small.png"), 20, 9);
    opts.on_bad_image = OnBadImage::Stop;
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("small.png") && msg.contains("20"), "{msg}");
}
