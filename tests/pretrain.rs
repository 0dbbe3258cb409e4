//! `cpc pretrain` end to end on the software adapter: learning on the built-in data,
//! determinism, resume equivalence, checkpoints, and bad input that must fail clearly.

use std::sync::atomic::AtomicBool;

use cpc::data::OnBadImage;
use cpc::train::pretrain::{pretrain, CHECKPOINT};
use cpc::train::{Checkpoint, Config, ModelCheckpoint};
use cpc::Error;

mod common;
use common::{gpu_on, losses, pretrain_options, run, tiny_run, write_png, TestDir};

#[test]
fn two_runs_with_one_seed_give_the_same_losses() {
    let dir = TestDir::new("determinism");
    let a = run(&pretrain_options(tiny_run(4, 3), &dir.join("a"))).unwrap();
    let b = run(&pretrain_options(tiny_run(4, 3), &dir.join("b"))).unwrap();
    assert_eq!(losses(&a).len(), 3);
    assert_eq!(
        losses(&a),
        losses(&b),
        "same adapter, same seed: bit-identical losses"
    );
    let mut other = tiny_run(4, 3);
    other.train.seed = 1;
    let c = run(&pretrain_options(other, &dir.join("c"))).unwrap();
    assert_ne!(losses(&a), losses(&c), "another seed changes the run");
}

/// Both kernel paths compute the same training: the tiny preset for 20 steps on the CPU
/// path and on the GPU path (each forced on a lavapipe device of its own) gives the same
/// loss at every step within 1e-5 relative (measured on lavapipe: equal to the bit). First
/// it checks that the two paths plan other kernels, so
/// equal losses are not one kernel compared with itself.
#[test]
fn the_cpu_and_gpu_kernel_paths_give_the_same_losses() {
    use cpc::gpu::Kernels;
    use cpc::model::{CpcModel, ModelSpec, ParamLayout};
    let dir = TestDir::new("paths");
    let tiled = |kernels: Kernels| {
        let spec = ModelSpec::from(Config::preset("tiny").unwrap().model.vision().unwrap());
        let params = ParamLayout::new(&spec).init(0);
        let model = CpcModel::new(gpu_on(kernels), &spec, 4, &params, Default::default()).unwrap();
        let launches = model.step_launches();
        launches
            .iter()
            .filter(|l| l.name.starts_with("matmul_tiled"))
            .count()
    };
    assert_eq!(
        tiled(Kernels::Cpu),
        0,
        "the CPU path plans no tiled matrix product"
    );
    assert!(
        tiled(Kernels::Gpu) > 0,
        "the GPU path plans tiled matrix products"
    );
    let on = |kernels: Kernels, out: &str| {
        let opts = pretrain_options(tiny_run(4, 20), &dir.join(out));
        losses(&pretrain(gpu_on(kernels), &opts, &AtomicBool::new(false)).unwrap())
    };
    let cpu = on(Kernels::Cpu, "cpu");
    let gpu = on(Kernels::Gpu, "gpu");
    assert_eq!(cpu.len(), 20);
    let mut worst = 0.0f32;
    for ((step, c), (_, g)) in cpu.iter().zip(&gpu) {
        let rel = (c - g).abs() / c.abs().max(1e-6);
        worst = worst.max(rel);
        assert!(
            rel <= 1e-5,
            "step {step}: CPU path {c}, GPU path {g} ({rel:.1e} relative)"
        );
    }
    println!("largest relative difference over 20 steps: {worst:.1e}");
}

#[test]
fn a_resumed_run_matches_an_uninterrupted_one() {
    let dir = TestDir::new("resume");
    let whole = run(&pretrain_options(tiny_run(4, 6), &dir.join("whole"))).unwrap();

    let mut first = pretrain_options(tiny_run(4, 6), &dir.join("split"));
    first.stop_at = Some(3);
    let part1 = run(&first).unwrap();
    assert!(part1.interrupted && part1.last_step == 3);
    let ck = Checkpoint::load(dir.join("split").join(CHECKPOINT)).unwrap();
    assert_eq!(ck.meta("step"), Some("3"));

    let mut second = pretrain_options(tiny_run(4, 6), &dir.join("split"));
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

/// The tiny run of [`tiny_run`] with `accumulate` micro-batches a step, at a learning rate
/// of 1e-30: Adam moves a weight by about the rate, which leaves every nonzero f32 weight
/// as it was, so each step scores its batches with the initial weights.
fn standing_still(accumulate: u32, steps: u64) -> Config {
    let mut cfg = tiny_run(4, steps);
    cfg.train.accumulate = accumulate;
    (cfg.train.lr, cfg.train.min_lr, cfg.train.warmup_steps) = (1e-30, 1e-30, 0);
    cfg
}

/// `--accumulate 2`: step s reads batches 2s and 2s + 1 of the stream a plain run reads
/// (with the same jitter seeds), reports the mean of their losses, and updates with the
/// mean of their gradients, whose norm is at most the mean of theirs (a sum, unscaled,
/// would be about twice that: the two batches' gradients point much the same way).
#[test]
fn an_accumulated_step_averages_the_losses_and_gradients_of_its_micro_batches() {
    let dir = TestDir::new("accumulate");
    let plain = run(&pretrain_options(standing_still(1, 4), &dir.join("plain"))).unwrap();
    let accumulated = run(&pretrain_options(standing_still(2, 2), &dir.join("acc"))).unwrap();
    let (p, a) = (losses(&plain), losses(&accumulated));
    assert_eq!((p.len(), a.len()), (4, 2));
    let norms = |out: &str| -> Vec<f32> {
        let rows = cpc::train::read_metrics(dir.join(out).join("metrics.jsonl")).unwrap();
        rows.iter().map(|r| r.grad_norm.unwrap()).collect()
    };
    let (pn, an) = (norms("plain"), norms("acc"));
    for s in 0..2 {
        let mean = (p[2 * s].1 + p[2 * s + 1].1) / 2.0;
        assert!(
            (a[s].1 - mean).abs() <= 1e-6 * mean,
            "step {s}: accumulated loss {}, the micro-batches' {} and {}",
            a[s].1,
            p[2 * s].1,
            p[2 * s + 1].1
        );
        let (n0, n1) = (pn[2 * s], pn[2 * s + 1]);
        assert!(
            an[s] <= (n0 + n1) / 2.0 * (1.0 + 1e-5) && an[s] >= (n0 - n1).abs() / 2.0,
            "step {s}: gradient norm {} of the mean of gradients of norms {n0} and {n1}",
            an[s]
        );
    }
    assert_ne!(
        p[0].1, p[1].1,
        "the two micro-batches are different batches"
    );
}

/// A run of two micro-batches a step stopped after step 2 and resumed gives the losses and
/// the final weights of the run not stopped, to the bit: the loader's position in the
/// checkpoint counts micro-batches.
#[test]
fn an_accumulating_run_resumes_to_the_uninterrupted_one() {
    let dir = TestDir::new("accumulate-resume");
    let config = || {
        let mut c = tiny_run(4, 4);
        c.train.accumulate = 2;
        c
    };
    let whole = run(&pretrain_options(config(), &dir.join("whole"))).unwrap();
    let mut first = pretrain_options(config(), &dir.join("split"));
    first.stop_at = Some(2);
    let part1 = run(&first).unwrap();
    let mut second = pretrain_options(config(), &dir.join("split"));
    second.resume = true;
    let part2 = run(&second).unwrap();
    let mut joined = losses(&part1);
    joined.extend(losses(&part2));
    assert_eq!(joined, losses(&whole));
    let weights = |out: &str| {
        let path = dir.join(out).join(CHECKPOINT);
        ModelCheckpoint::read(&path, Some(&config()))
            .unwrap()
            .params
    };
    assert_eq!(weights("split"), weights("whole"));
}

/// `--devices 0,0` at batch 8 (two devices opened on the software adapter, one model
/// replica each, each micro-batch on its own device, gradients summed on the host) trains
/// as one device with `--accumulate 2` at batch 8, and its replicas end bit-identical.
/// The two differ only in where the two micro-batches' gradients meet: on one device the
/// second batch's backward adds its sum s2 into the first's gradient g1 in the launch that
/// computes it, fl(g1 + s2); across devices the host adds the finished s2 to g1, the same
/// fl(g1 + s2) where one launch writes a parameter's gradient, as every launch does in the
/// tiny model (measured: equal to the bit, see the printout). Where several launches add
/// into one gradient (an encoder planned in slices of images, as the paper preset is) the
/// sums round in another order, and Adam, dividing by the root of the squared gradient,
/// carries the last bits into the weights: hence 1e-5 relative on the losses and 1e-6
/// absolute on weights that 4 steps of lr 1e-3 moved by about 3e-3.
#[test]
fn two_devices_train_as_one_device_accumulating_two_micro_batches() {
    use cpc::gpu::Subgroups;
    use cpc::train::pretrain::pretrain_on;
    let dir = TestDir::new("devices");
    let config = |accumulate| {
        let mut c = tiny_run(8, 4);
        c.train.accumulate = accumulate;
        c
    };
    let subgroups = common::gpu().subgroups;
    let open = || {
        common::software_gpu(if subgroups {
            Subgroups::Auto
        } else {
            Subgroups::Off
        })
    };
    let (a, b) = (open(), open());
    let never = AtomicBool::new(false);
    let one = pretrain_on(
        &[&a],
        &pretrain_options(config(2), &dir.join("one")),
        &never,
    )
    .unwrap();
    let two = pretrain_on(
        &[&a, &b],
        &pretrain_options(config(1), &dir.join("two")),
        &never,
    )
    .unwrap();
    assert_eq!(two.replicas_differ, 0.0, "the replicas end bit-identical");
    let (l1, l2) = (losses(&one), losses(&two));
    assert_eq!(l1.len(), 4);
    let mut worst_loss = 0.0f32;
    for ((step, x), (_, y)) in l1.iter().zip(&l2) {
        let rel = (x - y).abs() / x.abs();
        worst_loss = worst_loss.max(rel);
        assert!(rel <= 1e-5, "step {step}: one device {x}, two devices {y}");
    }
    let weights = |out: &str| {
        let path = dir.join(out).join(CHECKPOINT);
        ModelCheckpoint::read(&path, Some(&config(1)))
            .unwrap()
            .params
    };
    let (w1, w2) = (weights("one"), weights("two"));
    let worst = w1
        .iter()
        .zip(&w2)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    let moved = w1
        .iter()
        .zip(&cpc::model::ParamLayout::new(cpc::model::Spec::from(&config(1).model)).init(0))
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    println!("one device x 2 micro-batches vs two devices: losses {worst_loss:.1e} relative, weights {worst:.1e} (moved up to {moved:.1e})");
    assert!(worst <= 1e-6, "weights differ by {worst}");
    assert!(moved > 1e-3, "the weights moved: {moved}");
}

#[test]
fn devices_are_named_by_their_index_in_the_adapter_list() {
    let dir = TestDir::new("devices-cli");
    let out = dir.join("run");
    let args = [
        "pretrain",
        "--devices",
        "0,0",
        "--backend",
        "vulkan",
        "--batch",
        "4",
    ];
    let o = common::cpc_command(
        &[&args[..], &["--steps", "2", "--out", out.to_str().unwrap()]].concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("device 1: adapter") && err.contains("batch 4 x 2 devices (8 a step)"),
        "{err}"
    );
    let e = common::failed(&common::cpc_command(&[
        "pretrain",
        "--devices",
        "0,99",
        "--backend",
        "vulkan",
        "--steps",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(
        e.contains("no adapter [99]") && e.contains("cpc info"),
        "{e}"
    );
    let e = common::failed(&common::cpc_command(&[
        "pretrain",
        "--devices",
        "0,x",
        "--steps",
        "1",
    ]));
    assert!(e.contains("`x` is not an adapter index"), "{e}");
    let e = common::failed(&common::cpc_command(&[
        "pretrain",
        "--devices",
        "0",
        "--software",
        "--steps",
        "1",
    ]));
    assert!(e.contains("--software") && e.contains("--devices"), "{e}");
}

#[test]
fn the_checkpoint_holds_every_parameter_and_the_optimiser_state() {
    let dir = TestDir::new("checkpoint");
    let s = run(&pretrain_options(tiny_run(4, 2), &dir)).unwrap();
    let ck = Checkpoint::load(&s.checkpoint).unwrap();
    let layout = cpc::model::ParamLayout::new(&cpc::model::ModelSpec::from(
        Config::preset("tiny").unwrap().model.vision().unwrap(),
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
    let dir = TestDir::new("other-config");
    run(&pretrain_options(tiny_run(4, 1), &dir)).unwrap();
    let mut other = tiny_run(4, 2);
    other.model.vision_mut().unwrap().hidden = 32;
    let mut opts = pretrain_options(other, &dir);
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
    let dir = TestDir::new("memory");
    let mut opts = pretrain_options(tiny_run(64, 1), &dir);
    opts.memory_budget = Some(64 << 20);
    let msg = run(&opts).unwrap_err().to_string();
    assert!(
        msg.contains("batch 64 does not fit") && msg.contains("fits"),
        "{msg}"
    );
    assert!(!dir.join(CHECKPOINT).exists(), "nothing ran");
}

#[test]
fn a_non_finite_loss_stops_the_run_and_writes_no_checkpoint_of_it() {
    // lr 1e30: the first update leaves the weights near 1e30 (finite), and the loss of the
    // next step overflows. The checkpoint of those weights (checkpoint_every 1) waits for
    // that loss, so it is never written, and the stop names no checkpoint.
    let dir = TestDir::new("nan");
    let mut cfg = tiny_run(4, 40);
    cfg.train.lr = 1e30;
    cfg.train.min_lr = 1e30;
    cfg.train.warmup_steps = 0;
    cfg.train.checkpoint_every = 1;
    let err = run(&pretrain_options(cfg, &dir)).unwrap_err();
    let Error::NonFinite {
        step,
        ref checkpoint,
        ..
    } = err
    else {
        panic!("{err}")
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("step {step}")) && msg.contains("the loss"),
        "{msg}"
    );
    assert_eq!(checkpoint, &None, "{msg}");
    assert!(msg.contains("No checkpoint was written"), "{msg}");
    assert!(
        !dir.join(CHECKPOINT).exists(),
        "no checkpoint of weights whose loss is not finite"
    );

    // A run of one step: its final weights get a forward pass of their own before the
    // checkpoint, so they too are not written.
    let mut one = tiny_run(4, 1);
    one.train.lr = 1e30;
    one.train.min_lr = 1e30;
    one.train.warmup_steps = 0;
    let err = run(&pretrain_options(one, &dir)).unwrap_err().to_string();
    assert!(
        err.contains("final weights") && err.contains("No checkpoint"),
        "{err}"
    );
    assert!(!dir.join(CHECKPOINT).exists());

    // A checkpoint whose (finite) weights give a non-finite loss is not named as good by
    // the run that resumes from it.
    run(&pretrain_options(tiny_run(4, 2), &dir)).unwrap();
    let mut ck = Checkpoint::load(dir.join(CHECKPOINT)).unwrap();
    for t in &mut ck.tensors {
        if !t.name.starts_with("optimizer.") {
            t.data.iter_mut().for_each(|x| *x *= 1e30);
        }
    }
    ck.save(dir.join(CHECKPOINT)).unwrap();
    let mut resume = pretrain_options(tiny_run(4, 4), &dir);
    resume.resume = true;
    let err = run(&resume).unwrap_err().to_string();
    assert!(
        err.contains("at step 2") && err.contains("No checkpoint was written"),
        "{err}"
    );
}

/// A run of 2 good steps whose checkpoint then holds, for one stem weight, a first moment
/// of 3e38 and a second moment of 0 (both finite): the update of step 2 divides the one by
/// the root of the other and leaves that weight infinite, while step 2's loss, of the weights
/// before the update, is finite. A ReLU-hidden NaN weight would train on the same way.
#[test]
fn an_update_that_leaves_parameters_non_finite_keeps_the_previous_checkpoint_and_names_it() {
    let dir = TestDir::new("inf-update");
    let mut cfg = tiny_run(4, 6);
    cfg.train.checkpoint_every = 1;
    let mut first = pretrain_options(cfg.clone(), &dir);
    first.stop_at = Some(2);
    run(&first).unwrap();
    let path = dir.join(CHECKPOINT);
    let mut ck = Checkpoint::load(&path).unwrap();
    for t in &mut ck.tensors {
        match t.name.as_str() {
            "optimizer.exp_avg.encoder.stem.weight" => t.data[5] = 3e38,
            "optimizer.exp_avg_sq.encoder.stem.weight" => t.data[5] = 0.0,
            _ => {}
        }
    }
    ck.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();

    let mut second = pretrain_options(cfg, &dir);
    second.resume = true;
    let err = run(&second).unwrap_err();
    let msg = err.to_string();
    let Error::NonFinite {
        step, checkpoint, ..
    } = err
    else {
        panic!("{msg}")
    };
    assert_eq!(step, 2, "{msg}");
    assert!(
        msg.contains("the parameters encoder.stem.weight (1 values)"),
        "{msg}"
    );
    assert_eq!(checkpoint, Some((path.clone(), 2)), "{msg}");
    assert!(msg.contains("step 2") && msg.contains(CHECKPOINT), "{msg}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the step-2 checkpoint is left as it was"
    );
    ModelCheckpoint::read(&path, None).expect("and it loads");
}

#[test]
fn a_resume_drops_the_rows_logged_after_its_checkpoint() {
    // A run killed after its checkpoint at step 3 had logged steps 3 and 4: the resumed run
    // trains them again, and each step is in the log once.
    let dir = TestDir::new("resume-log");
    let mut first = pretrain_options(tiny_run(4, 6), &dir);
    first.stop_at = Some(3);
    run(&first).unwrap();
    let log = dir.join("metrics.jsonl");
    let rows = cpc::train::read_metrics(&log).unwrap();
    let mut writer = cpc::train::MetricsWriter::create(&log, Some(99)).unwrap();
    for step in [3, 4] {
        writer
            .write(&cpc::train::MetricsRow {
                step,
                ..rows[2].clone()
            })
            .unwrap();
    }
    drop(writer);
    let mut second = pretrain_options(tiny_run(4, 6), &dir);
    second.resume = true;
    run(&second).unwrap();
    let steps: Vec<u64> = cpc::train::read_metrics(&log)
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_run_removes_the_temporary_files_a_killed_run_left() {
    let dir = TestDir::new("stale");
    std::fs::create_dir_all(&dir).unwrap();
    // pid_max is at most 2^22 on Linux: no process 4999999 exists.
    let stale = [
        dir.join(".checkpoint.safetensors.4999999.0.tmp"),
        dir.join(".metrics.jsonl.4999999.3.tmp"),
        dir.join(".curves.png.4999999.1.tmp"),
    ];
    // Someone else's files, and the temporary of a live process (this one's parent stays
    // alive while the test runs), are left alone.
    let parent = std::os::unix::process::parent_id();
    let kept = [
        dir.join("notes.tmp"),
        dir.join(".checkpoint.safetensors.backup.tmp"),
        dir.join(format!(".checkpoint.safetensors.{parent}.0.tmp")),
    ];
    for f in stale.iter().chain(&kept) {
        std::fs::write(f, b"partial").unwrap();
    }
    // A writer whose pid means nothing here (another container's) holds its file's lock.
    let locked = dir.join(".checkpoint.safetensors.4999998.0.tmp");
    let held = std::fs::File::create(&locked).unwrap();
    held.lock().unwrap();
    run(&pretrain_options(tiny_run(2, 1), &dir)).unwrap();
    assert!(locked.exists(), "a locked temporary is a live writer's");
    drop(held);
    for f in &stale {
        assert!(!f.exists(), "{} was not removed", f.display());
    }
    for f in &kept {
        assert!(f.exists(), "{} was removed", f.display());
    }
}

#[test]
fn resume_refuses_foreign_finished_and_non_finite_checkpoints() {
    let dir = TestDir::new("resume-refusals");
    run(&pretrain_options(tiny_run(2, 2), &dir)).unwrap();
    let path = dir.join(CHECKPOINT);
    let good = Checkpoint::load(&path).unwrap();
    let resume = |steps: u64| {
        let mut opts = pretrain_options(tiny_run(2, steps), &dir);
        opts.resume = true;
        run(&opts).unwrap_err().to_string()
    };
    // At the run's end, or past it: nothing to do, and it says so.
    let msg = resume(2);
    assert!(
        msg.contains("step 2") && msg.contains("nothing to resume") && msg.contains("--steps"),
        "{msg}"
    );
    let msg = resume(1);
    assert!(msg.contains("nothing to resume"), "{msg}");
    // Another format version.
    let mut ck = good.clone();
    ck.metadata
        .insert("format".into(), "cpc-checkpoint-9".into());
    ck.save(&path).unwrap();
    let msg = resume(4);
    assert!(
        msg.contains("cpc-checkpoint-9") && msg.contains(CHECKPOINT),
        "{msg}"
    );
    // NaN weights (a ReLU would hide them from the loss): refused, naming the tensor.
    let mut ck = good.clone();
    for t in &mut ck.tensors {
        if t.name == "encoder.stem.weight" || t.name == "optimizer.exp_avg_sq.gru.bias_hh_l0" {
            t.data[1] = f32::NAN;
        }
    }
    ck.save(&path).unwrap();
    let msg = resume(4);
    assert!(
        msg.contains("encoder.stem.weight (1 values)")
            && msg.contains("optimizer.exp_avg_sq.gru.bias_hh_l0")
            && msg.contains("NaN"),
        "{msg}"
    );
    // The same checkpoint is refused by evaluation's reader, the one reader.
    let msg = ModelCheckpoint::read(&path, None).unwrap_err().to_string();
    assert!(msg.contains("encoder.stem.weight"), "{msg}");
    // Without the optimiser state there is nothing to resume.
    let mut ck = good.clone();
    ck.tensors.retain(|t| !t.name.starts_with("optimizer."));
    ck.save(&path).unwrap();
    let msg = resume(4);
    assert!(msg.contains("optimiser state"), "{msg}");
}

#[test]
fn bad_data_fails_clearly() {
    let dir = TestDir::new("bad-data");
    let mut opts = pretrain_options(tiny_run(2, 1), &dir.join("out"));
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

#[test]
fn debug_step_dumps_the_loss_and_every_gradient() {
    use cpc::cli::debug_step::{run as debug_step, DebugStepArgs};
    let dir = TestDir::new("debug-step");
    let (spec, layout, params, init) = bare_weights("tiny", 11);
    init.save(dir.join("init.safetensors")).unwrap();
    let crops: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let mut batch = Checkpoint::new();
    batch.push("crops", vec![2, 3, 32, 32], crops.clone());
    batch.save(dir.join("batch.safetensors")).unwrap();
    let args = debug_args(&dir, "init.safetensors", Some("tiny"));
    debug_step(&args).unwrap();
    let dump = Checkpoint::load(dir.join("dump.safetensors")).unwrap();
    // The loss agrees with the CPU reference model on the same weights and crops.
    let want = cpu_loss(&spec, &params, &crops);
    let got = dump.get("loss").unwrap().data[0];
    assert!(
        (got - want).abs() < 1e-3,
        "loss {got} vs CPU reference {want}"
    );
    assert_eq!(dump.get("loss_k").unwrap().shape, vec![2]);
    for v in &layout.views {
        let g = dump
            .get(&format!("grad.{}", v.name))
            .unwrap_or_else(|| panic!("grad.{} missing", v.name));
        assert_eq!(g.shape, v.shape);
        assert!(
            g.data.iter().all(|x| x.is_finite()) && g.data.iter().any(|&x| x != 0.0),
            "{}",
            v.name
        );
    }
    // Crops of the wrong size are refused, naming the shapes.
    let mut bad = Checkpoint::new();
    bad.push("crops", vec![2, 3, 30, 30], vec![0.0; 2 * 3 * 900]);
    bad.save(dir.join("bad.safetensors")).unwrap();
    let msg = debug_step(&DebugStepArgs {
        batch: dir.join("bad.safetensors"),
        ..args
    })
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("[2, 3, 30, 30]") && msg.contains("32"),
        "{msg}"
    );
}

#[test]
fn debug_step_runs_the_model_of_its_checkpoint_and_dumps_activations() {
    use cpc::cli::debug_step::{run as debug_step, DebugStepArgs};
    use cpc::model::{ModelSpec, ParamLayout};
    let dir = TestDir::new("debug-step-small");
    // A small-preset checkpoint (jitter 1), given without --preset: the checkpoint's own
    // configuration runs, jitter off, and the dump records that.
    let config = Config::preset("small").unwrap();
    let layout = ParamLayout::new(&ModelSpec::from(config.model.vision().unwrap()));
    let params = layout.init(3);
    ModelCheckpoint {
        path: dir.join("small.safetensors"),
        config: config.clone(),
        step: 7,
        params: params.clone(),
        moments: None,
        loader: None,
        vocabulary: None,
    }
    .save()
    .unwrap();
    let crops: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0)
        .collect();
    let mut batch = Checkpoint::new();
    batch.push("crops", vec![1, 3, 64, 64], crops.clone());
    batch.save(dir.join("batch.safetensors")).unwrap();
    let args = debug_args(&dir, "small.safetensors", None);
    debug_step(&args).unwrap();
    let dump = Checkpoint::load(&args.dump).unwrap();
    let ran = Config::from_toml(dump.meta("config").unwrap()).unwrap();
    assert_eq!(ran.model.vision().unwrap().crop, 64);
    assert_eq!(
        ran.model.vision().unwrap().jitter,
        0,
        "the dump records jitter off"
    );
    assert_eq!(dump.meta("offsets"), Some("[2,3,4]"));
    assert_eq!(dump.meta("step"), Some("7"));
    // Activations against the CPU reference model: z, then each offset's scores.
    let mut spec = ModelSpec::from(ran.model.vision().unwrap());
    spec.jitter = 0;
    let z = dump.get("z").unwrap();
    assert_eq!(z.shape, vec![1, 7, 7, 256]);
    let want_z = cpc::cpu::model::encode(&spec, &params, &crops, 1, 0);
    assert_eq!(z.data.len(), want_z.len());
    let scale = want_z.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in z.data.iter().zip(&want_z).enumerate() {
        assert!((g - w).abs() <= 1e-3 * scale, "z[{i}] {g} vs {w}");
    }
    assert_eq!(dump.get("c").unwrap().shape, vec![1, 7, 7, 256]);
    let want = cpc::cpu::model::loss(&spec, &params, &crops, 1, 0);
    for (k, q) in [(0, 5 * 7), (1, 4 * 7), (2, 3 * 7)] {
        let s = dump.get(&format!("scores.{k}")).unwrap();
        assert_eq!(s.shape, vec![q, 49], "scores.{k}");
        assert_eq!(s.data.len(), want.scores[k].len(), "scores.{k}");
        let scale = want.scores[k].iter().fold(0.0f64, |m, v| m.max(v.abs())) as f32;
        for (g, w) in s.data.iter().zip(&want.scores[k]) {
            assert!(
                (g - *w as f32).abs() <= 2e-3 * scale.max(1e-3),
                "scores.{k}"
            );
        }
    }
    let got = dump.get("loss").unwrap().data[0];
    assert!(
        (got - want.loss as f32).abs() < 1e-3,
        "{got} vs {}",
        want.loss
    );

    // --preset naming another model is refused, naming the difference.
    let msg = debug_step(&DebugStepArgs {
        preset: Some("tiny".into()),
        ..args.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(msg.contains("model.crop: 32 != 64"), "{msg}");
}

/// A safetensors file holding one integer tensor `ids` of `shape` (torch's int64), as a
/// torch user writes a text batch; `dtype` F32 writes the same values as floats.
fn write_ids(path: &std::path::Path, shape: &[usize], ids: &[i64], dtype: safetensors::Dtype) {
    let bytes: Vec<u8> = match dtype {
        safetensors::Dtype::F32 => ids.iter().flat_map(|&i| (i as f32).to_le_bytes()).collect(),
        _ => ids.iter().flat_map(|&i| i.to_le_bytes()).collect(),
    };
    let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), &bytes).unwrap();
    let file = safetensors::serialize([("ids", view)], None).unwrap();
    std::fs::write(path, file).unwrap();
}

#[test]
fn debug_step_takes_audio_clips_and_text_token_ids() {
    use cpc::cli::debug_step::run as debug_step;
    use cpc::ops::embedding::PaddedSentences;
    let dir = TestDir::new("debug-step-modalities");
    let close = |got: &[f32], want: &[f32], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * scale, "{what}[{i}] {g} vs {w}");
        }
    };
    // debug-step on bare weights of `preset` from `seed` and the batch file: the loss, z and
    // c against the CPU reference model on the same examples.
    let step = |preset: &str, seed: u64, examples: cpc::model::Examples, z_shape: Vec<usize>| {
        let (spec, _, params, init) = bare_weights(preset, seed);
        init.save(dir.join("init.safetensors")).unwrap();
        let args = debug_args(&dir, "init.safetensors", Some(preset));
        debug_step(&args).unwrap();
        let dump = Checkpoint::load(&args.dump).unwrap();
        let want = cpc::cpu::model::loss(&spec, &params, examples, 2, 0);
        close(&dump.get("loss").unwrap().data, &[want.loss as f32], "loss");
        let (z, c) = cpc::cpu::model::context(&spec, &params, examples, 2, 0);
        assert_eq!(dump.get("z").unwrap().shape, z_shape, "{preset}");
        close(&dump.get("z").unwrap().data, &z, "z");
        close(&dump.get("c").unwrap().data, &c, "c");
        (args, dump)
    };
    // Audio: clips [B, L].
    let clips = common::random(&mut common::rng(9), 2 * 3200);
    let mut batch = Checkpoint::new();
    batch.push("clips", vec![2, 3200], clips.clone());
    batch.save(dir.join("batch.safetensors")).unwrap();
    let (_, dump) = step("audio-tiny", 4, (&clips).into(), vec![2, 20, 64]);
    assert_eq!(dump.meta("offsets"), Some("[1,2,3,4]"));

    // Text: int64 ids [B, L, W], PAD past each sentence's end (lengths 0 .. W).
    let (b, l, w) = (2, 6, 16);
    let lengths: Vec<u32> = vec![0, 16, 1, 5, 9, 3, 2, 2, 16, 7, 0, 11];
    let mut ids = vec![0i64; b * l * w];
    for (n, &len) in lengths.iter().enumerate() {
        for p in 0..len as usize {
            ids[n * w + p] = 1 + ((n * 31 + p * 17) % 2047) as i64;
        }
    }
    let i64s = safetensors::Dtype::I64;
    write_ids(&dir.join("batch.safetensors"), &[b, l, w], &ids, i64s);
    let padded =
        PaddedSentences::new(w, ids.iter().map(|&i| i as u32).collect(), lengths, 2048).unwrap();
    let (args, dump) = step("text-tiny", 5, (&padded).into(), vec![2, 6, 64]);
    let g = dump.get("grad.encoder.embedding.weight").unwrap();
    assert_eq!(g.shape, vec![2048, 32]);
    assert!(
        g.data[..32].iter().all(|&x| x == 0.0),
        "PAD's row gets no gradient"
    );

    // Bad batches are refused, naming what is wrong.
    let refused = |ids: &[i64], shape: &[usize], dtype, what: &str| {
        write_ids(&dir.join("batch.safetensors"), shape, ids, dtype);
        let msg = debug_step(&args).unwrap_err().to_string();
        assert!(msg.contains(what), "{msg}");
    };
    let mut gap = ids.clone();
    gap[3] = 7; // a word after the first sentence's PAD
    refused(&gap, &[b, l, w], i64s, "must be PAD");
    let mut big = ids.clone();
    big[w] = 2048;
    refused(&big, &[b, l, w], i64s, "outside the vocabulary's 0..2048");
    refused(
        &ids,
        &[b, l, w],
        safetensors::Dtype::F32,
        "token ids are I64, I32 or U32",
    );
    refused(&ids[..b * l * 8], &[b, l, 8], i64s, "[B, 6, 16]");
}

#[test]
fn debug_step_refuses_bare_weights_it_cannot_place() {
    use cpc::cli::debug_step::{run as debug_step, DebugStepArgs};
    let dir = TestDir::new("debug-step-bare");
    let (_, _, _, mut init) = bare_weights("tiny", 11);
    // Layer-norm weights, which only a layer-norm configuration uses.
    init.push("encoder.stem_norm.weight", vec![32], vec![1.0; 32]);
    init.save(dir.join("init.safetensors")).unwrap();
    let mut batch = Checkpoint::new();
    batch.push("crops", vec![2, 3, 32, 32], vec![0.5; 2 * 3 * 32 * 32]);
    batch.save(dir.join("batch.safetensors")).unwrap();
    let args = debug_args(&dir, "init.safetensors", Some("tiny"));
    let msg = debug_step(&args).unwrap_err().to_string();
    assert!(
        msg.contains("encoder.stem_norm.weight") && msg.contains("does not use"),
        "{msg}"
    );
    // Bare weights and no --preset or --config: which model is not guessed.
    let msg = debug_step(&DebugStepArgs {
        preset: None,
        ..args.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(msg.contains("--preset"), "{msg}");
    assert!(!args.dump.exists(), "nothing was written");
    // PyTorch's safetensors carry `format = "pt"`: bare weights all the same.
    init.tensors
        .retain(|t| t.name != "encoder.stem_norm.weight");
    init.metadata.insert("format".into(), "pt".into());
    init.save(dir.join("init.safetensors")).unwrap();
    debug_step(&args).unwrap();
    assert!(args.dump.exists());
}

/// The initial weights of `preset`'s model from `seed` as a file of bare weights would hold
/// them: PyTorch's names and shapes, no cpc metadata.
fn bare_weights(
    preset: &str,
    seed: u64,
) -> (
    cpc::model::Spec,
    cpc::model::ParamLayout,
    Vec<f32>,
    Checkpoint,
) {
    let spec = cpc::model::Spec::from(&Config::preset(preset).unwrap().model);
    let layout = cpc::model::ParamLayout::new(&spec);
    let params = layout.init(seed);
    let mut ck = Checkpoint::new();
    for v in &layout.views {
        ck.push(
            v.name.clone(),
            v.shape.clone(),
            layout.slice(&params, &v.name).to_vec(),
        );
    }
    (spec, layout, params, ck)
}

/// debug-step on `dir/<init>` and `dir/batch.safetensors`, dumping to `dir/dump.safetensors`
/// on the software adapter.
fn debug_args(
    dir: &std::path::Path,
    init: &str,
    preset: Option<&str>,
) -> cpc::cli::debug_step::DebugStepArgs {
    cpc::cli::debug_step::DebugStepArgs {
        init: dir.join(init),
        batch: dir.join("batch.safetensors"),
        dump: dir.join("dump.safetensors"),
        preset: preset.map(String::from),
        config: None,
        adapter: cpc::cli::AdapterArgs {
            software: true,
            ..Default::default()
        },
    }
}

fn cpu_loss(spec: &cpc::model::Spec, params: &[f32], crops: &[f32]) -> f32 {
    cpc::cpu::model::loss(spec, params, crops, 2, 0).loss as f32
}

/// `cpc pretrain` killed with SIGKILL again and again, at moments spread over startup,
/// training and checkpointing, then resumed each time: when it finally ends, every step is in
/// metrics.jsonl exactly once, with the loss an uninterrupted run logs for that step.
#[test]
fn a_run_killed_at_any_moment_resumes_to_the_uninterrupted_log() {
    let tmp = TestDir::new("killed");
    let (steps, batch) = (30u64, 2u32);
    let mut cfg = tiny_run(batch, steps);
    cfg.train.checkpoint_every = 3;
    cfg.train.warmup_steps = 0;
    cfg.train.min_lr = cfg.train.lr;
    let whole = run(&pretrain_options(cfg, &tmp.join("whole"))).unwrap();

    let out = tmp.join("killed");
    let args = [
        "pretrain",
        "--preset",
        "tiny",
        "--software",
        "--batch",
        "2",
        "--steps",
        "30",
        "--checkpoint-every",
        "3",
        "--log-every",
        "1",
    ];
    let log = out.join("metrics.jsonl");
    let saved_step = || -> Option<u64> {
        let ck = Checkpoint::load(out.join(CHECKPOINT)).ok()?;
        ck.meta("step")?.parse().ok()
    };
    let logged_rows = || cpc::train::read_metrics(&log).map_or(0, |r| r.len());
    let mut kills = 0;
    // Kills are timed by progress, not the clock, so a slow or fast machine sees the same
    // story: the first during start-up, the others 1 to 5 logged steps into a resumed run,
    // a few milliseconds apart (some land in a checkpoint's write). After twelve, the run
    // is let finish.
    for attempt in 0.. {
        if saved_step() == Some(steps) {
            break;
        }
        assert!(attempt <= 13, "the run never finished");
        let resume = saved_step();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cpc"));
        // No tile-size tuning, whatever CPC_KERNELS asks for.
        cmd.env("CPC_TUNE", "off");
        cmd.args(args).arg("--out").arg(&out);
        if resume.is_some() {
            cmd.arg("--resume");
        }
        // The rows a resumed run keeps: those before its checkpoint's step.
        let kept = resume.map_or(0, |s| s as usize);
        let target = kept + 1 + attempt % 5;
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let due = |elapsed: std::time::Duration| match attempt {
            0 => elapsed >= std::time::Duration::from_millis(200),
            1..=11 => logged_rows() >= target || elapsed.as_secs() >= 120,
            _ => false,
        };
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "attempt {attempt}: {status}");
                break;
            }
            if due(start.elapsed()) {
                std::thread::sleep(std::time::Duration::from_millis(attempt as u64 * 7 % 40));
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    eprintln!("{kills} kills before the run finished");
    assert!(
        kills >= 6,
        "only {kills} kills: the test did not interrupt the run"
    );
    let rows = cpc::train::read_metrics(out.join("metrics.jsonl")).unwrap();
    let logged: Vec<(u64, f32)> = rows.iter().map(|r| (r.step, r.loss)).collect();
    assert_eq!(logged, losses(&whole), "after {kills} kills");
    assert_eq!(
        Checkpoint::load(out.join(CHECKPOINT)).unwrap().meta("step"),
        Some("30")
    );
}
