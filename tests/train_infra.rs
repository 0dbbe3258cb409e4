//! GPU-free training infrastructure: schedule, checkpoints, metrics log, plots, configuration.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use cpc::train::atomic::write_atomically;
use cpc::train::{
    plot_curves, read_metrics, Checkpoint, Config, LrSchedule, MetricsRow, MetricsWriter,
};
use cpc::Error;

/// Files in `dir` other than `keep`: a leftover temporary file shows up here.
fn other_files(dir: &Path, keep: &[&str]) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !keep.contains(&name.as_str()))
        .collect()
}

// ---------------------------------------------------------------- schedule

#[test]
fn lr_schedule_endpoints() {
    let s = LrSchedule {
        base_lr: 1e-3,
        warmup_steps: 10,
        total_steps: 110,
        min_lr: 1e-5,
    };
    assert!(
        (s.lr(0) - 1e-4).abs() < 1e-9,
        "first step is base_lr / warmup: {}",
        s.lr(0)
    );
    assert_eq!(s.lr(9), 1e-3, "last warm-up step reaches base_lr");
    assert_eq!(s.lr(10), 1e-3, "decay starts at base_lr");
    assert!(
        (s.lr(60) - (1e-5 + (1e-3 - 1e-5) * 0.5)).abs() < 1e-9,
        "half-way is the midpoint"
    );
    assert_eq!(s.lr(110), 1e-5, "total_steps reaches min_lr");
    assert_eq!(s.lr(10_000), 1e-5, "past the end stays at min_lr");

    let constant = LrSchedule {
        base_lr: 1e-3,
        warmup_steps: 0,
        total_steps: 300,
        min_lr: 1e-3,
    };
    assert!((0..400).all(|step| (constant.lr(step) - 1e-3).abs() < 1e-9));
}

#[test]
fn lr_schedule_monotonic_in_each_phase() {
    let s = LrSchedule {
        base_lr: 2e-4,
        warmup_steps: 50,
        total_steps: 1000,
        min_lr: 0.0,
    };
    for step in 1..50 {
        assert!(s.lr(step) > s.lr(step - 1), "warm-up rises at {step}");
    }
    for step in 51..=1000 {
        assert!(s.lr(step) <= s.lr(step - 1), "decay falls at {step}");
    }
    assert!(s.lr(500) < s.lr(100) && s.lr(900) < s.lr(500));
}

// ---------------------------------------------------------------- checkpoint

fn sample_checkpoint(step: u64) -> Checkpoint {
    let mut c = Checkpoint::new();
    // Values that a lossy path would change: negative zero, subnormal, extremes, NaN payload.
    let special = vec![
        -0.0,
        f32::MIN_POSITIVE / 3.0,
        f32::MAX,
        f32::MIN,
        1.0 / 3.0,
        f32::from_bits(0x7fc0_1234),
    ];
    c.push("encoder.stem.weight", vec![2, 3], special);
    c.push(
        "gru.bias",
        vec![4],
        (0..4).map(|i| i as f32 * 0.1 + step as f32).collect(),
    );
    c.push("scalar", vec![], vec![7.5]);
    c.metadata.insert("step".into(), step.to_string());
    c.metadata
        .insert("config".into(), Config::preset("tiny").unwrap().to_toml());
    c.metadata.insert("rng".into(), "[1, 2, 3, 4]".into());
    c
}

#[test]
fn checkpoint_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let saved = sample_checkpoint(42);
    saved.save(&path).unwrap();
    let loaded = Checkpoint::load(&path).unwrap();

    assert_eq!(loaded.metadata, saved.metadata);
    assert_eq!(loaded.tensors.len(), saved.tensors.len());
    for t in &saved.tensors {
        let back = loaded
            .get(&t.name)
            .unwrap_or_else(|| panic!("tensor {} lost", t.name));
        assert_eq!(back.shape, t.shape, "{}", t.name);
        let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.data), bits(&t.data), "{}", t.name);
    }
    assert!(loaded.get("missing").is_none());
    assert_eq!(loaded.meta("step"), Some("42"));
    let config = Config::from_toml(loaded.meta("config").unwrap()).unwrap();
    assert_eq!(config, Config::preset("tiny").unwrap());
    assert_eq!(
        other_files(dir.path(), &["ckpt.safetensors"]),
        Vec::<String>::new()
    );
}

#[test]
fn failed_save_leaves_previous_checkpoint_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    sample_checkpoint(1).save(&path).unwrap();
    let before = fs::read(&path).unwrap();

    // A disk that fills half-way through: the writer fails after part of the new bytes.
    let new_bytes = sample_checkpoint(2).to_bytes(&path).unwrap();
    let err = write_atomically(&path, |w| {
        w.write_all(&new_bytes[..new_bytes.len() / 2])?;
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "no space left (simulated)",
        ))
    })
    .unwrap_err();
    assert!(err.to_string().contains("ckpt.safetensors"), "{err}");
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "old checkpoint must be byte-identical"
    );
    assert_eq!(
        other_files(dir.path(), &["ckpt.safetensors"]),
        Vec::<String>::new()
    );
    assert_eq!(Checkpoint::load(&path).unwrap().meta("step"), Some("1"));

    // A save that fails inside Checkpoint::save itself: the target is a non-empty directory,
    // so the final rename fails after the temporary file was fully written.
    let blocked = dir.path().join("blocked.safetensors");
    fs::create_dir(&blocked).unwrap();
    fs::write(blocked.join("keep"), b"x").unwrap();
    let err = sample_checkpoint(3).save(&blocked).unwrap_err();
    assert!(err.to_string().contains("blocked.safetensors"), "{err}");
    assert_eq!(fs::read(blocked.join("keep")).unwrap(), b"x");
    assert_eq!(
        other_files(dir.path(), &["ckpt.safetensors", "blocked.safetensors"]),
        Vec::<String>::new()
    );

    // A malformed checkpoint is refused before anything is written.
    let mut bad = sample_checkpoint(4);
    bad.push("short", vec![3, 3], vec![0.0; 8]);
    let err = bad.save(&path).unwrap_err().to_string();
    assert!(
        err.contains("short") && err.contains("ckpt.safetensors"),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn loading_garbage_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    fs::write(&garbage, b"this is not a safetensors file at all").unwrap();
    let err = Checkpoint::load(&garbage).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }));
    let text = err.to_string();
    assert!(
        text.contains("garbage.safetensors") && text.contains("not a safetensors"),
        "{text}"
    );

    let missing = dir.path().join("missing.safetensors");
    let text = Checkpoint::load(&missing).unwrap_err().to_string();
    assert!(
        text.contains("missing.safetensors") && text.contains("no such file"),
        "{text}"
    );

    // A valid safetensors file with an f64 tensor: the error names file and tensor.
    let values: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![2], &values).unwrap();
    let wrong = dir.path().join("f64.safetensors");
    fs::write(
        &wrong,
        safetensors::serialize([("weights", view)], None).unwrap(),
    )
    .unwrap();
    let text = Checkpoint::load(&wrong).unwrap_err().to_string();
    assert!(
        text.contains("f64.safetensors") && text.contains("weights") && text.contains("F64"),
        "{text}"
    );
}

// ---------------------------------------------------------------- metrics

fn row(step: u64) -> MetricsRow {
    let s = step as f32;
    MetricsRow {
        step,
        loss: 6.6 - 0.01 * s,
        accuracy: 0.001 * s,
        loss_k: vec![6.5 - 0.012 * s, 6.7 - 0.008 * s],
        accuracy_k: vec![0.0015 * s, 0.0005 * s],
        images_per_second: 200.0,
        lr: 1e-3,
        grad_norm: if step.is_multiple_of(20) {
            Some(1.5)
        } else {
            None
        },
        probe_top1: if step == 100 { Some(0.8) } else { None },
    }
}

#[test]
fn metrics_round_trip_and_resume_drops_later_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut w = MetricsWriter::create(&path, None).unwrap();
    for step in (0..=100).step_by(10) {
        w.write(&row(step)).unwrap();
    }
    drop(w);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 11);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for key in [
        "step",
        "loss",
        "accuracy",
        "loss_k",
        "accuracy_k",
        "images_per_second",
        "lr",
    ] {
        assert!(first.get(key).is_some(), "missing {key}");
    }
    assert!(
        first.get("probe_top1").is_none(),
        "absent optional fields are not written"
    );
    assert_eq!(
        read_metrics(&path).unwrap(),
        (0..=100).step_by(10).map(row).collect::<Vec<_>>()
    );

    // Resume from the checkpoint of step 50 (written after steps 0..49; step 50 runs next):
    // rows 50..100 are dropped and logged anew, and a line cut off by a crash is dropped too.
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"step\":110,\"lo")
        .unwrap();
    assert_eq!(
        read_metrics(&path).unwrap().len(),
        11,
        "unterminated last line is ignored"
    );
    let mut w = MetricsWriter::create(&path, Some(50)).unwrap();
    assert_eq!(read_metrics(&path).unwrap().last().unwrap().step, 40);
    for step in (50..=80).step_by(10) {
        w.write(&row(step)).unwrap();
    }
    drop(w);
    let steps: Vec<u64> = read_metrics(&path)
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, vec![0, 10, 20, 30, 40, 50, 60, 70, 80]);
    assert_eq!(
        other_files(dir.path(), &["metrics.jsonl"]),
        Vec::<String>::new()
    );

    // A fresh run truncates; a corrupt line in the middle is an error naming file and line.
    fs::write(&path, "{\"step\":0}\nnot json\n").unwrap();
    let text = read_metrics(&path).unwrap_err().to_string();
    assert!(
        text.contains("metrics.jsonl") && text.contains("line 1"),
        "{text}"
    );
    MetricsWriter::create(&path, None).unwrap();
    assert!(read_metrics(&path).unwrap().is_empty());
}

#[test]
fn metrics_nan_is_written_as_null_and_read_back_as_nan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let mut r = row(0);
    r.loss = f32::NAN;
    r.loss_k[1] = f32::INFINITY;
    r.grad_norm = Some(f32::NAN);
    MetricsWriter::create(&path, None)
        .unwrap()
        .write(&r)
        .unwrap();
    let back = &read_metrics(&path).unwrap()[0];
    assert!(back.loss.is_nan() && back.loss_k[1].is_nan() && back.grad_norm.unwrap().is_nan());
    assert_eq!(back.loss_k[0], r.loss_k[0]);
}

// ---------------------------------------------------------------- plot

#[test]
fn plot_is_a_png_of_the_stated_size_and_not_blank() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.png");
    let mut rows: Vec<MetricsRow> = (0..=300).step_by(10).map(row).collect();
    rows[3].loss = f32::NAN; // a diverged step must not break the plot
    plot_curves(&rows, &[2, 3], &path).unwrap();

    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), cpc::train::plot::PLOT_SIZE);
    let bg = cpc::train::plot::BACKGROUND;
    let background = image::Rgb([bg.0, bg.1, bg.2]);
    let drawn = img.pixels().filter(|p| **p != background).count();
    assert!(
        drawn > 2000,
        "only {drawn} pixels differ from the background"
    );
    // Something is drawn in both panels, and in colour (the per-offset lines).
    let half = img.height() / 2;
    let in_rows = |y0: u32, y1: u32| {
        (y0..y1).any(|y| (0..img.width()).any(|x| *img.get_pixel(x, y) != background))
    };
    assert!(in_rows(0, half) && in_rows(half, img.height()));
    assert!(
        img.pixels().any(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]),
        "no coloured pixel"
    );

    assert!(plot_curves(&[], &[2, 3], &path)
        .unwrap_err()
        .to_string()
        .contains("curves.png"));
}

// ---------------------------------------------------------------- config

#[test]
fn presets_have_the_spec_geometry() {
    let expect = [
        // name, crop, patch, grid, D, H, K
        ("paper", 256, 64, 7, 1024, 1024, 5),
        ("laptop", 256, 64, 7, 256, 256, 5),
        ("small", 64, 16, 7, 256, 256, 3),
        ("tiny", 32, 8, 7, 64, 64, 2),
    ];
    for (name, crop, patch, grid, d, h, k) in expect {
        let c = Config::preset(name).unwrap();
        let m = c.model.vision().unwrap();
        assert_eq!(
            (m.crop, m.patch(), m.grid, m.code_dim(), m.hidden, m.steps),
            (crop, patch, grid, d, h, k),
            "{name}"
        );
        assert_eq!(
            m.offsets()[0],
            2,
            "{name}: skip the adjacent row by default"
        );
        assert_eq!(c.train.batch, 16, "{name}");
        // TOML round trip of every field.
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c, "{name}");
    }
    let tiny = Config::preset("tiny").unwrap();
    assert_eq!(tiny.model.vision().unwrap().jitter, 0);
    assert_eq!(tiny.model.offsets(), vec![2, 3]);
    assert_eq!(
        (tiny.train.lr, tiny.train.min_lr, tiny.train.warmup_steps),
        (1e-3, 1e-3, 0)
    );
    let enc = &tiny.model.vision().unwrap().encoder;
    assert_eq!(
        (enc.stem.kernel, enc.stem.channels, enc.stem.stride),
        (3, 32, 1)
    );
    assert_eq!(enc.stages.len(), 1);
    let s = enc.stages[0];
    assert_eq!(
        (s.stride, s.channels, s.blocks, s.convs_per_block),
        (2, 64, 1, 1)
    );
    assert!(!enc.layer_norm);
}

#[test]
fn preset_compute_matches_the_spec() {
    // Spec: tiny about 300 MFLOP per image per training step (3x forward), small about
    // 1.2 GFLOP and paper about 57 GFLOP per image forward.
    let gflop = |name: &str| {
        let c = Config::preset(name).unwrap();
        c.model
            .vision()
            .unwrap()
            .forward_flops_per_image(c.train.batch)
            / 1e9
    };
    let (tiny, small, paper) = (gflop("tiny"), gflop("small"), gflop("paper"));
    assert!((0.085..0.115).contains(&tiny), "tiny {tiny} GFLOP");
    assert!((1.0..1.5).contains(&small), "small {small} GFLOP");
    assert!((45.0..65.0).contains(&paper), "paper {paper} GFLOP");
    assert!(gflop("laptop") < paper / 4.0);
}

#[test]
fn unknown_preset_lists_the_presets() {
    let text = Config::preset("huge").unwrap_err().to_string();
    assert!(text.contains("huge"), "{text}");
    for name in ["paper", "laptop", "small", "tiny"] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn toml_overrides_field_by_field() {
    let c = Config::from_toml_overrides(
        "tiny",
        "[model]\nhidden = 128\n[model.encoder]\nlayer_norm = true\n[train]\nlr = 5e-4\nmin_lr = 0.0\n",
    )
    .unwrap();
    let tiny = Config::preset("tiny").unwrap();
    assert_eq!(c.model.vision().unwrap().hidden, 128);
    assert!(c.model.vision().unwrap().encoder.layer_norm);
    assert_eq!(
        c.model.vision().unwrap().encoder.stages,
        tiny.model.vision().unwrap().encoder.stages,
        "untouched fields stay"
    );
    assert_eq!((c.train.lr, c.train.min_lr, c.train.batch), (5e-4, 0.0, 16));
    assert_ne!(c.fingerprint(), tiny.fingerprint());
    let diffs = c.model_differences(&tiny);
    assert_eq!(diffs.len(), 2, "{diffs:?}");
    assert!(diffs
        .iter()
        .any(|d| d.contains("model.hidden") && d.contains("128") && d.contains("64")));

    // Training fields do not change the model's fingerprint.
    let longer = Config::from_toml_overrides("tiny", "[train]\ntotal_steps = 5000\n").unwrap();
    assert_eq!(longer.fingerprint(), tiny.fingerprint());
    assert!(longer.model_differences(&tiny).is_empty());

    // Arrays are replaced whole.
    let deeper = Config::from_toml_overrides(
        "tiny",
        "[[model.encoder.stages]]\nstride = 2\nchannels = 64\nblocks = 2\nconvs_per_block = 2\n",
    )
    .unwrap();
    assert_eq!(deeper.model.vision().unwrap().encoder.stages[0].blocks, 2);
}

#[test]
fn toml_override_errors_name_the_field() {
    let text = Config::from_toml_overrides("tiny", "[train]\nlrr = 1.0\n")
        .unwrap_err()
        .to_string();
    assert!(text.contains("train.lrr"), "{text}");
    let text = Config::from_toml_overrides("tiny", "[modle]\nhidden = 1\n")
        .unwrap_err()
        .to_string();
    assert!(text.contains("modle"), "{text}");
    // Unknown fields inside a replaced array are caught by deny_unknown_fields.
    let text = Config::from_toml_overrides(
        "tiny",
        "[[model.encoder.stages]]\nstride = 2\nchannels = 64\nblocks = 1\nconvs_per_block = 1\nwidth = 3\n",
    )
    .unwrap_err()
    .to_string();
    assert!(text.contains("width"), "{text}");
    let text = Config::from_toml_overrides("tiny", "[model]\nhidden = \"big\"\n")
        .unwrap_err()
        .to_string();
    assert!(text.contains("hidden"), "{text}");
    let text = Config::from_toml(
        &Config::preset("tiny")
            .unwrap()
            .to_toml()
            .replace("[train]", "[train]\nextra = 1"),
    )
    .unwrap_err()
    .to_string();
    assert!(text.contains("extra"), "{text}");
}

#[test]
fn crop_must_give_an_even_patch() {
    // 2*36/8 = 9: integer but odd; 2*30/8 = 7.5: not an integer.
    for crop in [36, 30] {
        let text = Config::from_toml_overrides("tiny", &format!("[model]\ncrop = {crop}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(&crop.to_string()) && text.contains("grid = 7"),
            "{text}"
        );
    }
    let c = Config::from_toml_overrides("tiny", "[model]\ncrop = 48\n").unwrap();
    assert_eq!(c.model.vision().unwrap().patch(), 12);
    // Offsets beyond the grid are refused.
    let text = Config::from_toml_overrides("tiny", "[model]\nsteps = 6\n")
        .unwrap_err()
        .to_string();
    assert!(text.contains("grid = 7"), "{text}");
}

#[test]
fn curves_name_each_offset_by_the_row_it_predicts() {
    // The tiny preset predicts rows 2 and 3 ahead (prediction_skip 2): its curves say so,
    // not k=1, k=2.
    let offsets = Config::preset("tiny").unwrap().model.offsets();
    assert_eq!(offsets, vec![2, 3]);
    let label = cpc::train::plot::offset_label;
    assert_eq!(label(&offsets, 0), "offset 2");
    assert_eq!(label(&offsets, 1), "offset 3");
    // A log with more offsets than the configuration names shows the index.
    assert_eq!(label(&offsets, 2), "#3");
}

// ---------------------------------------------------------------- limits

/// The configuration error of `result`, which must be one.
fn config_error(result: cpc::Result<Config>, what: &str) -> String {
    match result {
        Err(e @ Error::Config(_)) => e.to_string(),
        Err(e) => panic!("{what}: not a configuration error: {e}"),
        Ok(c) => panic!("{what}: accepted: {c:?}"),
    }
}

/// The tiny preset's one stage, `[[model.encoder.stages]]` with these numbers.
fn stage(stride: u64, channels: u64, blocks: u64, convs: u64) -> String {
    format!(
        "[[model.encoder.stages]]\nstride = {stride}\nchannels = {channels}\nblocks = {blocks}\n\
         convs_per_block = {convs}\n"
    )
}

#[test]
fn absurd_model_sizes_are_refused_naming_field_value_and_bound() {
    // (overrides of the tiny preset, what the message must name)
    let many_stages: String = (0..17).map(|_| stage(1, 8, 0, 0)).collect();
    let cases: Vec<(String, Vec<&str>)> = vec![
        // `g + 1` wrapped to 0: a remainder by zero.
        (
            "[model]\ngrid = 4294967295\n".into(),
            vec!["model.grid", "4294967295", "64"],
        ),
        // `prediction_skip + steps - 1` wrapped: a 16 GiB vector of offsets.
        (
            "[model]\nsteps = 4294967295\n".into(),
            vec!["model.steps", "4294967295"],
        ),
        (
            "[model]\nprediction_skip = 4294967295\n".into(),
            vec!["model.prediction_skip", "4294967295"],
        ),
        (
            "[model]\ncrop = 4294967295\n".into(),
            vec!["model.crop", "4294967295", "4096"],
        ),
        (
            "[model]\nhidden = 2147483647\n".into(),
            vec!["model.hidden", "2147483647", "65536"],
        ),
        (
            "[model]\njitter = 4294967295\n".into(),
            vec!["model.jitter", "4294967295"],
        ),
        (
            "[model.encoder.stem]\nkernel = 100001\n".into(),
            vec!["model.encoder.stem.kernel", "100001", "31"],
        ),
        (
            "[model.encoder.stem]\nkernel = 4\n".into(),
            vec!["model.encoder.stem.kernel", "4", "odd"],
        ),
        (
            "[model.encoder.stem]\nchannels = 1000000000\n".into(),
            vec!["model.encoder.stem.channels", "1000000000", "65536"],
        ),
        (
            "[model.encoder.stem]\nstride = 4294967295\n".into(),
            vec!["model.encoder.stem.stride", "4294967295", "8"],
        ),
        (
            stage(2, 1_000_000_000, 1, 1),
            vec!["model.encoder.stages[0].channels", "1000000000", "65536"],
        ),
        (
            stage(100, 64, 1, 1),
            vec!["model.encoder.stages[0].stride", "100", "8"],
        ),
        (
            stage(2, 64, 100_000, 1),
            vec!["model.encoder.stages[0]", "100000", "1024"],
        ),
        (
            stage(2, 64, 1, 4_294_967_295),
            vec!["model.encoder.stages[0].convs_per_block", "4294967295"],
        ),
        (many_stages, vec!["model.encoder.stages", "17", "16"]),
        // Every field in bounds, but a 65536 x 65536 x 3 x 3 conv: 38.7 G parameters.
        (
            stage(2, 65536, 0, 0) + &stage(2, 65536, 0, 0),
            vec!["parameters", "2147483648"],
        ),
    ];
    for (toml, names) in cases {
        let text = config_error(Config::from_toml_overrides("tiny", &toml), &toml);
        for name in names {
            assert!(text.contains(name), "{toml}: `{name}` not in: {text}");
        }
    }
}

#[test]
fn a_checkpoints_absurd_configuration_is_refused_by_validation() {
    // What a checkpoint's `config` metadata may say: read by Config::from_toml, whose
    // validation is all that stands between it and the planner's allocations.
    let tiny = Config::preset("tiny").unwrap().to_toml();
    for (from, to, name) in [
        (
            "convs_per_block = 1",
            "convs_per_block = 4294967295",
            "convs_per_block",
        ),
        ("blocks = 1", "blocks = 4294967295", "blocks"),
        ("hidden = 64", "hidden = 2147483647", "model.hidden"),
        ("grid = 7", "grid = 4294967295", "model.grid"),
    ] {
        assert!(tiny.contains(from), "{tiny}");
        let toml = tiny.replacen(from, to, 1);
        let text = config_error(Config::from_toml(&toml), to);
        assert!(
            text.contains(name) && (text.contains("4294967295") || text.contains("2147483647")),
            "{text}"
        );
    }
}

#[test]
fn every_float_of_the_training_must_be_finite_and_in_range() {
    for (toml, name) in [
        ("weight_decay = nan", "train.weight_decay"),
        ("weight_decay = inf", "train.weight_decay"),
        ("weight_decay = -0.1", "train.weight_decay"),
        ("weight_decay = 2.0", "train.weight_decay"),
        ("lr = nan", "train.lr"),
        ("lr = inf", "train.lr"),
        ("lr = 0.0", "train.lr"),
        ("lr = -1e-3", "train.lr"),
        ("lr = 10.0\nweight_decay = 0.5", "train.weight_decay"),
        ("min_lr = nan", "train.min_lr"),
        ("min_lr = -1e-3", "train.min_lr"),
        ("min_lr = 0.5", "train.min_lr"),
        ("clip_norm = nan", "train.clip_norm"),
        ("clip_norm = inf", "train.clip_norm"),
        ("clip_norm = -1.0", "train.clip_norm"),
    ] {
        let text = config_error(
            Config::from_toml_overrides("tiny", &format!("[train]\n{toml}\n")),
            toml,
        );
        assert!(text.contains(name), "{toml}: {text}");
    }
    // In range: accepted.
    Config::from_toml_overrides("tiny", "[train]\nweight_decay = 0.05\nclip_norm = 5.0\n").unwrap();
}

#[test]
fn the_step_counts_are_bounded() {
    for (toml, name) in [
        ("total_steps = 0", "train.total_steps"),
        ("total_steps = 18446744073709551615", "train.total_steps"),
        ("log_every = 0", "train.log_every"),
        ("batch = 0", "train.batch"),
    ] {
        // TOML integers are i64: the largest u64 is written as a float-free string here.
        let toml = toml.replace("18446744073709551615", "9223372036854775807");
        let text = config_error(
            Config::from_toml_overrides("tiny", &format!("[train]\n{toml}\n")),
            &toml,
        );
        assert!(text.contains(name), "{toml}: {text}");
    }
}

// ---------------------------------------------------------------- the pretrain command line

#[derive(clap::Parser)]
struct PretrainCli {
    #[command(flatten)]
    args: cpc::cli::pretrain::PretrainArgs,
}

fn pretrain_args(flags: &[&str]) -> cpc::cli::pretrain::PretrainArgs {
    use clap::Parser;
    PretrainCli::parse_from(std::iter::once("pretrain").chain(flags.iter().copied())).args
}

#[test]
fn bad_file_policy_takes_its_new_flag_and_the_old_one() {
    use cpc::data::OnBadFile;
    assert_eq!(pretrain_args(&[]).on_bad_image, OnBadFile::Stop);
    for flag in ["--on-bad-file", "--on-bad-image"] {
        assert_eq!(
            pretrain_args(&[flag, "skip"]).on_bad_image,
            OnBadFile::Skip,
            "{flag}"
        );
    }
}

#[test]
fn a_short_try_of_any_preset_shortens_its_warm_up() {
    for preset in cpc::train::config::PRESETS {
        let c = pretrain_args(&["--preset", preset, "--steps", "2"])
            .config()
            .unwrap_or_else(|e| panic!("{preset} --steps 2: {e}"));
        assert_eq!(c.train.total_steps, 2, "{preset}");
        assert!(
            c.train.warmup_steps <= 2,
            "{preset}: {}",
            c.train.warmup_steps
        );
        let full = Config::preset(preset).unwrap();
        assert_eq!(
            c.train.warmup_steps,
            full.train.warmup_steps.min(2),
            "{preset}"
        );
        // Said in a note, only when the warm-up was shortened.
        let (_, notes) = pretrain_args(&["--preset", preset, "--steps", "2"])
            .config_noted()
            .unwrap();
        if full.train.warmup_steps > 2 {
            let warmup = full.train.warmup_steps.to_string();
            assert!(
                notes.len() == 1
                    && notes[0].contains("warm-up")
                    && notes[0].contains(&warmup)
                    && notes[0].contains("--steps 2"),
                "{preset}: {notes:?}"
            );
        } else {
            assert!(notes.is_empty(), "{preset}: {notes:?}");
        }
    }
}

#[test]
fn a_toml_total_below_the_presets_warm_up_shortens_it() {
    let dir = std::env::temp_dir().join(format!("cpc-warmup-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    // The file sets only the total: the preset's 500 warm-up steps give way.
    let short = dir.join("short.toml");
    fs::write(&short, "[train]\ntotal_steps = 10\n").unwrap();
    let c = pretrain_args(&["--preset", "laptop", "--config", short.to_str().unwrap()])
        .config()
        .unwrap();
    assert_eq!((c.train.warmup_steps, c.train.total_steps), (10, 10));
    let (_, notes) =
        Config::from_toml_overrides_noted("laptop", "[train]\ntotal_steps = 10\n").unwrap();
    assert!(
        notes.len() == 1 && notes[0].contains("500") && notes[0].contains("total_steps = 10"),
        "{notes:?}"
    );
    // The file says both, and they contradict each other: refused, naming both.
    let both = dir.join("both.toml");
    fs::write(&both, "[train]\nwarmup_steps = 20\ntotal_steps = 10\n").unwrap();
    let text = pretrain_args(&["--preset", "laptop", "--config", both.to_str().unwrap()])
        .config()
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("warmup_steps = 20") && text.contains("total_steps = 10"),
        "{text}"
    );
    // A flag is a try of the file's run: the file's own warm-up gives way to --steps.
    let explicit = dir.join("explicit.toml");
    fs::write(&explicit, "[train]\nwarmup_steps = 20\ntotal_steps = 100\n").unwrap();
    let c = pretrain_args(&[
        "--preset",
        "laptop",
        "--config",
        explicit.to_str().unwrap(),
        "--steps",
        "5",
    ])
    .config()
    .unwrap();
    assert_eq!((c.train.warmup_steps, c.train.total_steps), (5, 5));
    fs::remove_dir_all(&dir).unwrap();
}

/// `cpc pretrain FLAGS`: (exit code, stderr), or None when it ran past `seconds`.
fn cpc_pretrain(flags: &[&str], seconds: u64) -> Option<(Option<i32>, String)> {
    use std::process::{Command, Stdio};
    let out = std::env::temp_dir().join(format!("cpc-flags-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpc"))
        // No tile-size tuning, whatever CPC_KERNELS asks for.
        .env("CPC_TUNE", "off")
        .arg("pretrain")
        .args(flags)
        .arg("--out")
        .arg(&out)
        .arg("--software")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            let _ = fs::remove_dir_all(&out);
            return Some((status.code(), err));
        }
        if start.elapsed().as_secs() >= seconds {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_dir_all(&out);
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn pretrain_flags_that_make_no_sense_are_refused() {
    for (flags, names) in [
        (
            vec!["--workers", "0", "--steps", "1"],
            vec!["--workers", "0"],
        ),
        (
            vec!["--probe-every", "0", "--steps", "1"],
            vec!["--probe-every", "0"],
        ),
        (
            vec![
                "--probe-every",
                "1",
                "--probe-train-images",
                "0",
                "--steps",
                "1",
            ],
            vec!["--probe-train-images", "0"],
        ),
        (
            vec![
                "--probe-every",
                "1",
                "--probe-test-images",
                "0",
                "--steps",
                "1",
            ],
            vec!["--probe-test-images", "0"],
        ),
        (vec!["--epochs", "0"], vec!["--epochs", "0"]),
        (vec!["--steps", "0"], vec!["--steps", "0"]),
        (
            vec!["--memory-budget-gib", "NaN", "--steps", "1"],
            vec!["--memory-budget-gib", "NaN"],
        ),
        (
            vec!["--memory-budget-gib", "0", "--steps", "1"],
            vec!["--memory-budget-gib", "0"],
        ),
        // The step count wrapped and the run went on for ever.
        (
            vec!["--epochs", "18446744073709551615"],
            vec!["--epochs", "18446744073709551615", "1000000000"],
        ),
    ] {
        let Some((code, err)) = cpc_pretrain(&flags, 60) else {
            panic!("{flags:?}: still running after 60 s")
        };
        assert!(
            code.is_some_and(|c| c != 0),
            "{flags:?}: exit {code:?}: {err}"
        );
        for name in names {
            assert!(err.contains(name), "{flags:?}: `{name}` not in: {err}");
        }
    }
}

// ---------------------------------------------------------------- modalities

#[test]
fn vision_fingerprints_are_the_ones_written_before_audio_existed() {
    // The FNV-1a fingerprints of the vision presets' model fields, as checkpoints written
    // before model.modality existed carry them: a vision model's TOML has no modality key.
    for (name, fingerprint) in [
        ("paper", "7d517140019fc08b"),
        ("laptop", "a4d542dd80814993"),
        ("small", "f0ec76e93632cf13"),
        ("tiny", "ee19ca08809efb07"),
    ] {
        let c = Config::preset(name).unwrap();
        assert_eq!(c.fingerprint(), fingerprint, "{name}");
        assert_eq!(c.model.modality(), "vision");
        assert!(!c.to_toml().contains("modality"), "{name}");
        // Naming the modality explicitly reads the same model.
        let named = c
            .to_toml()
            .replace("[model]\n", "[model]\nmodality = \"vision\"\n");
        assert_eq!(Config::from_toml(&named).unwrap(), c, "{name}");
    }
}

#[test]
fn audio_presets_round_trip_and_differ_from_vision() {
    // (preset, window, frames T, D, H, offsets, frame norm)
    let expect = [
        ("audio", 20480, 128, 512, 256, 1..=12, false),
        ("audio-small", 20480, 128, 256, 256, 1..=12, true),
        ("audio-tiny", 3200, 20, 64, 64, 1..=4, true),
    ];
    let mut fingerprints = vec![Config::preset("tiny").unwrap().fingerprint()];
    for (name, window, frames, d, h, offsets, norm) in expect {
        let c = Config::preset(name).unwrap();
        assert_eq!(c.model.modality(), "audio", "{name}");
        let a = c.model.audio().unwrap();
        let spec = cpc::model::audio::AudioSpec::from(a);
        assert_eq!(
            (
                a.window,
                spec.frames(),
                c.model.code_dim(),
                c.model.hidden()
            ),
            (window, frames, d, h),
            "{name}"
        );
        assert_eq!(c.model.offsets(), offsets.collect::<Vec<u32>>(), "{name}");
        assert_eq!(a.encoder.frame_norm, norm, "{name}");
        let text = c.to_toml();
        assert!(text.contains("modality = \"audio\""), "{text}");
        assert_eq!(Config::from_toml(&text).unwrap(), c, "{name}");
        fingerprints.push(c.fingerprint());
    }
    let mut unique = fingerprints.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), fingerprints.len(), "{fingerprints:?}");
    // Overrides merge into the audio model as into vision's.
    let c =
        Config::from_toml_overrides("audio-tiny", "[model.encoder]\nframe_norm = false\n").unwrap();
    assert!(!c.model.audio().unwrap().encoder.frame_norm);
    assert_eq!(
        Config::preset("audio-tiny").unwrap().model_differences(&c),
        vec!["model.encoder.frame_norm: true != false".to_string()]
    );
}

#[test]
fn bad_audio_configurations_name_the_field() {
    let cases = [
        ("[model]\nwindow = 0\n", vec!["model.window", "0"]),
        (
            "[model]\nwindow = 4294967295\n",
            vec!["model.window", "1048576"],
        ),
        ("[model]\nhidden = 0\n", vec!["model.hidden"]),
        ("[model]\nsteps = 0\n", vec!["model.steps"]),
        // 20 frames: offsets 1..=20 leave no frame to predict at offset 20.
        ("[model]\nsteps = 20\n", vec!["offsets", "1..20"]),
        ("[model]\nwindow = 100\n", vec!["shrinks", "100"]),
        (
            "[model.encoder]\nconvs = []\n",
            vec!["model.encoder.convs", "0 convs"],
        ),
        (
            "[[model.encoder.convs]]\nkernel = 4\nstride = 0\npadding = 1\nchannels = 8\n",
            vec!["model.encoder.convs[0].stride", "0"],
        ),
        (
            "[[model.encoder.convs]]\nkernel = 100000\nstride = 2\npadding = 1\nchannels = 8\n",
            vec!["model.encoder.convs[0].kernel", "100000", "2048"],
        ),
        (
            "[[model.encoder.convs]]\nkernel = 4\nstride = 2\npadding = 4\nchannels = 8\n",
            vec!["model.encoder.convs[0].padding", "4"],
        ),
        (
            "[[model.encoder.convs]]\nkernel = 4\nstride = 2\npadding = 1\nchannels = 0\n",
            vec!["model.encoder.convs[0].channels"],
        ),
        ("[model]\ncrop = 32\n", vec!["crop"]),
        (
            "[model]\nmodality = \"smell\"\n",
            vec!["smell", "vision, audio"],
        ),
    ];
    for (toml, words) in cases {
        let err = Config::from_toml_overrides("audio-tiny", toml)
            .unwrap_err()
            .to_string();
        for w in words {
            assert!(err.contains(w), "{toml}: `{w}` not in: {err}");
        }
    }
}

// ---------------------------------------------------------------- a text model's vocabulary

#[test]
fn the_vocabulary_travels_in_the_checkpoint_and_a_corrupt_one_is_refused() {
    use cpc::data::text::{vocab, TokenizerConfig, Vocabulary};
    use cpc::train::model_checkpoint::ModelCheckpoint;
    let dir = std::env::temp_dir().join(format!("cpc-vocab-ck-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("text.safetensors");
    let config = Config::preset("text-tiny").unwrap();
    let words = ["<pad>", "<unk>", "the", "über", "ß"]
        .map(String::from)
        .to_vec();
    let v = Vocabulary::from_words(words, TokenizerConfig { lowercase: false }).unwrap();
    let ck = ModelCheckpoint {
        path: path.clone(),
        params: config.model.layout().init(0),
        config,
        step: 3,
        moments: None,
        loader: None,
        vocabulary: Some(v.clone()),
    };
    ck.save().unwrap();
    let back = ModelCheckpoint::read(&path, None).unwrap();
    assert_eq!(back.vocabulary.as_ref(), Some(&v));
    assert!(!back.vocabulary.unwrap().tokenizer().lowercase);
    // The stored form with a word twice: refused, naming the file and the metadata key.
    let mut raw = Checkpoint::load(&path).unwrap();
    let json = raw.metadata[vocab::METADATA_KEY].replace("\"the\"", "\"ß\"");
    raw.metadata.insert(vocab::METADATA_KEY.into(), json);
    raw.save(&path).unwrap();
    let text = ModelCheckpoint::read(&path, None).unwrap_err().to_string();
    assert!(
        text.contains("text.safetensors") && text.contains(vocab::METADATA_KEY),
        "{text}"
    );
    // A text model's checkpoint without one is refused.
    let mut raw = Checkpoint::load(&path).unwrap();
    raw.metadata.remove(vocab::METADATA_KEY);
    raw.save(&path).unwrap();
    let text = ModelCheckpoint::read(&path, None).unwrap_err().to_string();
    assert!(text.contains("has no `vocabulary`"), "{text}");
    // More words than the model has rows: refused.
    let mut big = vec!["<pad>".to_string(), "<unk>".to_string()];
    big.extend((0..2047).map(|i| format!("w{i}")));
    let big = Vocabulary::from_words(big, TokenizerConfig::default()).unwrap();
    ModelCheckpoint {
        vocabulary: Some(big),
        ..ck.clone()
    }
    .save()
    .unwrap();
    let text = ModelCheckpoint::read(&path, None).unwrap_err().to_string();
    assert!(
        text.contains("2049 words") && text.contains("2048"),
        "{text}"
    );
    fs::remove_dir_all(&dir).unwrap();
}
