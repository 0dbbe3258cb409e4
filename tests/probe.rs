//! The linear probe on the software adapter: its classifier against the CPU reference, 100 %
//! on linearly separable data, `cpc embed`'s feature file, bad input that must fail clearly
//! and write nothing, and what pretraining buys over a random encoder: the image and speech
//! margin tests, the suite's two longest, kept in one binary so that they run side by side
//! (the image one keeps both cores of a 2-core machine about 90 % busy, the speech one about
//! one).

use std::path::Path;
use std::sync::atomic::AtomicBool;

use cpc::data::{self, Builtin, BuiltinConfig, Dataset, Split, Subset};
use cpc::eval::features::FEATURES_FORMAT;
use cpc::eval::probe::{self, align_labels, LabelSource};
use cpc::eval::{Features, Hyper, LinearClassifier, ProbeConfig};
use cpc::model::{ModelSpec, ParamLayout};
use cpc::train::pretrain::{pretrain, PretrainOptions, ProbeDuring};
use cpc::train::{Checkpoint, Config};
use cpc::train::{ModelCheckpoint, CHECKPOINT_FORMAT};
use cpc::{cpu, Error};
use rand::Rng;

mod common;
use common::{cpc_command, failed, gpu, ok, pretrain_options, rng, write_png, TestDir};

/// Rows around one centre per class (centres from `seed`, noise of size `noise` from
/// `seed` and `draw`), classes in an irregular order.
fn clusters(
    rows: usize,
    dim: usize,
    classes: usize,
    noise: f32,
    seed: u64,
    draw: u64,
) -> (Vec<f32>, Vec<u32>) {
    let mut r = rng(seed);
    let centres: Vec<f32> = (0..classes * dim)
        .map(|_| r.random_range(-1.0..1.0))
        .collect();
    let mut r = rng(seed * 1000 + draw);
    let mut x = Vec::new();
    let mut labels = Vec::new();
    for i in 0..rows {
        let c = (i * 7 + i / 3) % classes;
        labels.push(c as u32);
        for j in 0..dim {
            let n: f32 = (0..3).map(|_| r.random_range(-1.0f32..1.0)).sum::<f32>() / 3.0;
            x.push(centres[c * dim + j] + noise * n);
        }
    }
    (x, labels)
}

fn features(x: Vec<f32>, labels: Vec<u32>, dim: usize) -> Features {
    Features {
        dim,
        names: (0..labels.len()).map(|i| format!("#{i}")).collect(),
        indices: (0..labels.len()).collect(),
        data: x,
        labels: Some(labels),
        class_names: None,
    }
}

#[test]
fn probe_classifier_matches_reference() {
    // Overlapping clusters, unbalanced classes: no gradient is near zero, where Adam's
    // normalised step would amplify rounding into a sign.
    let (dim, classes) = (5, 4);
    let (x, labels) = clusters(37, dim, classes, 1.5, 1, 0);
    let (xe, le) = clusters(23, dim, classes, 1.5, 1, 1);
    let hyper = Hyper {
        lr: 0.05,
        weight_decay: 0.01,
        iterations: 40,
    };
    let clf = LinearClassifier::new(gpu(), dim, classes, (&x, &labels), &[(&xe, &le)], 40).unwrap();
    clf.fit(gpu(), &hyper).unwrap();
    let got = clf.weights(gpu()).unwrap();
    let want = cpu::probe::fit(&x, &labels, dim, classes, &hyper);
    // 40 Adam steps of at most lr each; f32 sums of 37 rows against f64 ones differ by
    // ~1e-6 relative per step, which Adam's normalisation passes on at most lr-sized.
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 2e-3 * scale,
            "parameter {i}: GPU {g}, CPU {w} (scale {scale})"
        );
    }
    let (train, evals) = clf.evaluate(gpu()).unwrap();
    for (acc, (x, l)) in [(train, (&x, &labels)), (evals[0], (&xe, &le))] {
        let [loss, top1, top5] = cpu::probe::evaluate(&got, x, l, dim, classes);
        // Same weights: the loss to f32 rounding; counts exactly (no near-ties here), up to
        // the f32 division by the row count.
        assert!((acc.loss as f64 - loss).abs() < 1e-4, "{acc:?} vs {loss}");
        assert!((acc.top1 as f64 - top1).abs() < 1e-6, "{acc:?} vs {top1}");
        assert!((acc.top5 as f64 - top5).abs() < 1e-6, "{acc:?} vs {top5}");
    }
}

#[test]
fn probe_reaches_100_percent_on_linearly_separable_data() {
    // Ten well separated clusters in 16 dimensions: a linear classifier separates them.
    let (dim, classes) = (16, 10);
    let (x, labels) = clusters(400, dim, classes, 0.2, 3, 0);
    let (xt, lt) = clusters(150, dim, classes, 0.2, 3, 1);
    let (train, test) = (features(x, labels, dim), features(xt, lt, dim));
    let result = probe::probe(
        gpu(),
        &ProbeConfig::default(),
        (&train, "train"),
        (&test, "test"),
    )
    .unwrap();
    assert_eq!(result.train.top1, 1.0, "{result:?}");
    assert_eq!(result.test.top1, 1.0, "{result:?}");
    assert_eq!(result.test.top5, 1.0, "{result:?}");
    assert_eq!(result.search.len(), 6, "every setting was tried");
}

// ---- checkpoints and data ------------------------------------------------------------------

/// A checkpoint as `cpc pretrain` writes it (parameters and metadata; the optimiser state
/// is not read by evaluation), of `config` with its initial weights.
fn write_checkpoint(path: &Path, config: &Config) {
    let layout = ParamLayout::new(&ModelSpec::from(config.model.vision().unwrap()));
    let params = layout.init(config.train.seed);
    let mut ck = Checkpoint::new();
    for v in &layout.views {
        ck.push(
            v.name.clone(),
            v.shape.clone(),
            layout.slice(&params, &v.name).to_vec(),
        );
    }
    for (k, v) in [
        ("format", CHECKPOINT_FORMAT.to_string()),
        ("step", "0".to_string()),
        ("config", config.to_toml()),
        ("fingerprint", config.fingerprint()),
    ] {
        ck.metadata.insert(k.into(), v);
    }
    ck.save(path).unwrap();
}

fn tiny() -> Config {
    let mut c = Config::preset("tiny").unwrap();
    c.train.batch = 8;
    c
}

/// A folder with one sub-folder of two images per class name.
fn class_folder(root: &Path, classes: &[&str]) {
    for (c, name) in classes.iter().enumerate() {
        for i in 0..2u8 {
            write_png(
                &root.join(name).join(format!("{i}.png")),
                36,
                c as u8 * 10 + i + 1,
            );
        }
    }
}

#[test]
fn probe_refuses_checkpoints_of_another_configuration_or_version() {
    let dir = TestDir::new("checkpoints");
    let path = dir.join("ck.safetensors");
    write_checkpoint(&path, &tiny());
    // The right expectation (training fields may differ) loads.
    let mut same_model = tiny();
    same_model.train.lr = 0.5;
    let p = ModelCheckpoint::read(&path, Some(&same_model)).unwrap();
    assert_eq!(p.config, tiny());

    let mut other = tiny();
    other.model.vision_mut().unwrap().hidden = 32;
    let msg = ModelCheckpoint::read(&path, Some(&other))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("ck.safetensors")
            && msg.contains("model.hidden: 32 != 64")
            && msg.contains("another model configuration"),
        "{msg}"
    );
    let small = Config::preset("small").unwrap();
    let msg = ModelCheckpoint::read(&path, Some(&small))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("model.crop: 64 != 32"), "{msg}");

    // Other versions: the format, a configuration field this version does not know, a
    // fingerprint that does not match, a missing tensor.
    let edit = |f: &dyn Fn(&mut Checkpoint)| {
        let mut ck = Checkpoint::load(&path).unwrap();
        f(&mut ck);
        let p = dir.join("edited.safetensors");
        ck.save(&p).unwrap();
        ModelCheckpoint::read(&p, None).unwrap_err().to_string()
    };
    let msg = edit(&|ck| {
        ck.metadata
            .insert("format".into(), "cpc-checkpoint-2".into());
    });
    assert!(
        msg.contains("cpc-checkpoint-2") && msg.contains(CHECKPOINT_FORMAT),
        "{msg}"
    );
    let msg = edit(&|ck| {
        ck.metadata.remove("format");
    });
    assert!(msg.contains("no `format`"), "{msg}");
    let msg = edit(&|ck| {
        let c = ck.metadata["config"].replace("[model]\n", "[model]\ndilation = 2\n");
        ck.metadata.insert("config".into(), c);
    });
    assert!(
        msg.contains("cannot be read by this version") && msg.contains("dilation"),
        "{msg}"
    );
    let msg = edit(&|ck| {
        ck.metadata
            .insert("fingerprint".into(), "0123456789abcdef".into());
    });
    assert!(
        msg.contains("0123456789abcdef") && msg.contains("fingerprint"),
        "{msg}"
    );
    let msg = edit(&|ck| ck.tensors.retain(|t| t.name != "encoder.stem.weight"));
    assert!(msg.contains("encoder.stem.weight"), "{msg}");
}

#[test]
fn probe_refuses_unlabelled_data_and_test_classes_the_training_set_lacks() {
    let dir = TestDir::new("labels");
    let pretrained = {
        let path = dir.join("ck.safetensors");
        write_checkpoint(&path, &tiny());
        ModelCheckpoint::read(&path, None).unwrap()
    };
    let open = |p: &Path| data::open(Some(p), data::Format::Folder, &Default::default()).unwrap();
    // A flat folder has no labels: refused, naming it, before anything is encoded.
    let flat = dir.join("flat");
    for i in 0..3 {
        write_png(&flat.join(format!("{i}.png")), 36, i + 1);
    }
    let labelled = dir.join("train");
    class_folder(&labelled, &["cat", "dog"]);
    let (flat_set, train_set) = (open(&flat), open(&labelled));
    let cfg = ProbeConfig::default();
    let err = probe::compare(
        gpu(),
        &cfg,
        &pretrained,
        (train_set.as_ref(), "train-dir"),
        (flat_set.as_ref(), "flat-dir"),
        8,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Data { .. }) && msg.contains("flat-dir") && msg.contains("no labels"),
        "{msg}"
    );
    // A test class the training set lacks, by name: "frog" is class 1 of the test folder.
    let test = dir.join("test");
    class_folder(&test, &["cat", "frog"]);
    let test_set = open(&test);
    let msg = probe::compare(
        gpu(),
        &cfg,
        &pretrained,
        (train_set.as_ref(), "train-dir"),
        (test_set.as_ref(), "test-dir"),
        8,
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("test-dir")
            && msg.contains("frog (class 1) (2 examples)")
            && msg.contains("lacks"),
        "{msg}"
    );
    // A test folder with fewer classes is renumbered by name: its "dog" is class 0 there
    // and class 1 in training.
    let dogs = dir.join("dogs");
    class_folder(&dogs, &["dog"]);
    let dog_set = open(&dogs);
    let crops = |s: &dyn Dataset| cpc::eval::CentreCrops::read(s, 32).unwrap();
    let (ct, cd) = (crops(train_set.as_ref()), crops(dog_set.as_ref()));
    let (_, test_labels, classes) = align_labels(
        LabelSource::of_crops(&ct, "train"),
        LabelSource::of_crops(&cd, "dogs"),
    )
    .unwrap();
    assert_eq!((test_labels, classes), (vec![1, 1], 2));
    // Without class names, by index: class 2 never appears in training.
    let (a, b) = (
        features(vec![0.0; 4], vec![0, 1], 2),
        features(vec![0.0; 4], vec![0, 2], 2),
    );
    let msg = align_labels(LabelSource::of(&a, "a"), LabelSource::of(&b, "b"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("class 2 (1 examples)"), "{msg}");
}

#[test]
fn an_empty_feature_file_is_refused_and_an_empty_set_writes_nothing() {
    let dir = TestDir::new("empty-features");
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let msg = Features::load(&empty).unwrap_err().to_string();
    assert!(
        msg.contains("empty.safetensors") && msg.contains("empty"),
        "{msg}"
    );
    // A file with a features tensor of no rows.
    let mut ck = Checkpoint::new();
    ck.push("features", vec![0, 64], vec![]);
    ck.metadata.insert("format".into(), FEATURES_FORMAT.into());
    let none = dir.join("none.safetensors");
    ck.save(&none).unwrap();
    let msg = Features::load(&none).unwrap_err().to_string();
    assert!(
        msg.contains("no features") && msg.contains("[0, 64]"),
        "{msg}"
    );
    // A checkpoint is not a feature file.
    let ckpt = dir.join("ck.safetensors");
    write_checkpoint(&ckpt, &tiny());
    let msg = Features::load(&ckpt).unwrap_err().to_string();
    assert!(msg.contains("not a feature file"), "{msg}");
    // No images: nothing written.
    let out = dir.join("out.safetensors");
    let msg = features(vec![], vec![], 64)
        .save(&out, &[])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no images"), "{msg}");
    assert!(!out.exists());
    let all: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(all.len(), 3, "no temporary files left: {all:?}");
}

// ---- the raw-input baseline ---------------------------------------------------------------

/// Side of [`corner_folder`]'s images: the evaluation resize of a crop of 40 keeps it
/// (round(40 * 300 / 256) = 47), and the centre crop is pixels 3..43 of each axis.
const CORNER_IMAGE: u32 = 47;

/// `per_class` images for each of 4 classes under `root`: a random grey, and in the
/// bottom-right corner of the crop of 40 (its last 6 x 6 pixels, image pixels 37..43) a
/// square of the class's colour (red, green, blue or yellow) at a random brightness.
/// Without the corner only the grey varies: nothing there tells the classes apart.
fn corner_folder(root: &Path, per_class: usize, seed: u64) {
    const COLOURS: [[f32; 3]; 4] = [
        [0.9, 0.1, 0.1],
        [0.1, 0.9, 0.1],
        [0.1, 0.1, 0.9],
        [0.9, 0.9, 0.1],
    ];
    let mut r = rng(seed);
    for (class, colour) in COLOURS.iter().enumerate() {
        for i in 0..per_class {
            let (grey, bright): (f32, f32) = (r.random_range(0.2..0.6), r.random_range(0.7..1.0));
            let img = image::RgbImage::from_fn(CORNER_IMAGE, CORNER_IMAGE, |x, y| {
                let corner = (37..43).contains(&x) && (37..43).contains(&y);
                let px = |c: usize| {
                    let v = if corner { bright * colour[c] } else { grey };
                    (v * 255.0).round() as u8
                };
                image::Rgb([px(0), px(1), px(2)])
            });
            let path = root.join(format!("c{class}")).join(format!("{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            img.save(path).unwrap();
        }
    }
}

#[test]
fn the_input_row_probes_the_pixels_of_the_crops() {
    // Classes by the colour of the crop's bottom-right corner: a linear classifier on the
    // pixels separates them (chance 25 %). Crops of 40, so the pixels reach the probe
    // area-averaged to 32 x 32, and a downsampling that reads the wrong pixels (a stride
    // of 1 instead of 40 / 32 ends at the crop's pixel 34) or drops the edge misses them.
    let dir = TestDir::new("input-row");
    corner_folder(&dir.join("train"), 8, 1);
    corner_folder(&dir.join("test"), 5, 2);
    let mut config = tiny();
    config.model.vision_mut().unwrap().crop = 40;
    let path = dir.join("ck.safetensors");
    write_checkpoint(&path, &config);
    let pretrained = ModelCheckpoint::read(&path, None).unwrap();
    let open = |p: &Path| data::open(Some(p), data::Format::Folder, &Default::default()).unwrap();
    let (train, test) = (open(&dir.join("train")), open(&dir.join("test")));
    let cfg = ProbeConfig {
        iterations: 100,
        ..ProbeConfig::default()
    };
    let result = probe::compare(
        gpu(),
        &cfg,
        &pretrained,
        (train.as_ref(), "train"),
        (test.as_ref(), "test"),
        8,
    )
    .unwrap();
    let table = result.table();
    assert_eq!(result.input_features, "3 x 32 x 32 pixels", "{table}");
    assert_eq!(
        (result.input.train_images, result.input.test_images),
        (32, 20)
    );
    assert!(result.input.test.top1 >= 0.9, "{table}");
    assert!(
        table.contains("\ninput ") && table.contains("\nvs input "),
        "{table}"
    );
}

/// Speaker probe on the time-averaged log-mel energies of the built-in synthetic speech
/// (12 speakers, 288 training and 96 test clips of 2 s), over the paper's windows of 20480
/// samples: each clip's first 1.28 s, as the model's features see it.
///
/// Measured (test top-1 of the default probe; with whole clips, windows of 32000, in
/// brackets): synthetic seeds 0, 1, 2 give 100 % (97.9), 94.8 % (97.9) and 95.8 % (95.8);
/// the nearest-class-mean baseline of tests/audio_data.rs on the same features of whole
/// clips gives 53, 40 and 55 %; chance is 1/12 = 8.3 %. So the linear probe separates this
/// set's speakers on the input almost perfectly. The bound, 75 %, is nine times chance and
/// about ten standard errors (0.02 on 96 clips near 95 %) below the lowest seed.
#[test]
fn log_mel_input_tells_synthetic_speakers_apart() {
    use cpc::data::audio::{
        AudioSet, LogMel, LogMelConfig, OnShort, SyntheticConfig, SyntheticSpeech,
    };
    use cpc::eval::input::log_mel_features;
    const BOUND: f32 = 0.75;
    const WINDOW: usize = 20_480;
    let mel = LogMel::new(LogMelConfig::default()).unwrap();
    let open = |split| SyntheticSpeech::new(SyntheticConfig::default(), split).unwrap();
    let (train, test) = (open(Split::Train), open(Split::Test));
    let features =
        |set: &SyntheticSpeech| log_mel_features(set, &mel, WINDOW, OnShort::Pad).unwrap();
    let (ftrain, ftest) = (features(&train), features(&test));
    assert_eq!((ftrain.dim, ftrain.len(), ftest.len()), (40, 288, 96));
    assert_eq!(ftrain.class_names.as_ref().unwrap()[3], "speaker-03");
    assert_eq!(
        ftrain.labels.as_ref().unwrap()[13],
        train.label(13).unwrap()
    );
    // A 2 s clip holds one window: its row is that window's time-averaged log-mel.
    assert_eq!(
        ftrain.row(5),
        mel.mean(&train.samples(5).unwrap()[..WINDOW])
    );
    let result = probe::probe(
        gpu(),
        &ProbeConfig::default(),
        (&ftrain, "synthetic:train"),
        (&ftest, "synthetic:test"),
    )
    .unwrap();
    eprintln!(
        "log-mel speaker probe: top-1 {}, top-5 {}",
        result.test.top1, result.test.top5
    );
    assert!(result.test.top1 >= BOUND, "{result:?}");
    // Clips shorter than the window: one padded window each, or none under Skip.
    let short = SyntheticSpeech::new(
        SyntheticConfig {
            speakers: 2,
            train_utterances: 2,
            seconds: 0.5,
            ..SyntheticConfig::default()
        },
        Split::Train,
    )
    .unwrap();
    assert_eq!(
        log_mel_features(&short, &mel, 10_000, OnShort::Pad)
            .unwrap()
            .len(),
        4
    );
    let none = log_mel_features(&short, &mel, 10_000, OnShort::Skip).unwrap();
    assert!(none.is_empty() && none.labels.is_none());
}

// ---- the command line ----------------------------------------------------------------------

#[test]
fn embed_probe_and_neighbours_commands() {
    let dir = TestDir::new("commands");
    let ck = dir.join("ck.safetensors");
    write_checkpoint(&ck, &tiny());
    let ck_s = ck.to_str().unwrap();
    let dir_s = |name: &str| dir.join(name).to_str().unwrap().to_string();

    // embed: 20 built-in images, with labels and names, equal to the in-process features.
    let feats = dir_s("feats.safetensors");
    let out = ok(&cpc_command(&[
        "embed",
        "--software",
        "--checkpoint",
        ck_s,
        "--limit",
        "20",
        "--out",
        &feats,
    ]));
    assert!(
        out.contains("wrote 20 features of dimension 64 (with labels)"),
        "{out}"
    );
    let f = Features::load(Path::new(&feats)).unwrap();
    let set = Subset::sample(
        Box::new(Builtin::new(BuiltinConfig::default(), Split::Train).unwrap()),
        20,
    );
    assert_eq!(
        f.labels.as_ref().unwrap(),
        &(0..20).map(|i| set.label(i).unwrap()).collect::<Vec<_>>()
    );
    assert_eq!(f.names[3], set.name(3));
    assert_eq!(f.class_names.as_ref().unwrap()[2], "45deg-wide");
    let p = ModelCheckpoint::read(&ck, None).unwrap();
    let enc = cpc::eval::Encoder::new(gpu(), &p.config, &p.params, 8).unwrap();
    let want = enc.extract(gpu(), &set).unwrap();
    assert_eq!(
        f.data, want.data,
        "same adapter, same batch: identical features"
    );

    // probe --json on small splits: both encoders, fractions.
    let out = ok(&cpc_command(&[
        "probe",
        "--software",
        "--checkpoint",
        ck_s,
        "--train-limit",
        "60",
        "--test-limit",
        "30",
        "--iterations",
        "100",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for side in ["pretrained", "random", "input"] {
        for k in ["top1", "top5"] {
            let x = v[side][k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{out}");
        }
    }
    // This checkpoint holds its own initial weights: "pretrained" is the random encoder.
    assert_eq!(v["pretrained"], v["random"], "{out}");
    // Images have no context pair: its key is absent, not null.
    assert!(v.get("context").is_none(), "{out}");
    // The same on feature files.
    let out = ok(&cpc_command(&[
        "probe",
        "--software",
        "--train-features",
        &feats,
        "--test-features",
        &feats,
        "--json",
    ]));
    assert!(out.contains("\"features\""), "{out}");

    // neighbours: a grid of 3 rows of 1 + 4 cells of 64 + 2 * 3 frame pixels.
    let grid = dir_s("grid.png");
    let out = ok(&cpc_command(&[
        "neighbours",
        "--software",
        "--checkpoint",
        ck_s,
        "--limit",
        "30",
        "--queries",
        "3",
        "-k",
        "4",
        "--out",
        &grid,
    ]));
    assert!(out.contains("neighbours of the query's class:"), "{out}");
    let img = image::open(&grid).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (4 + 70 + 12 + 4 * 74, 4 + 3 * 74)
    );

    // Bad input fails with a message and leaves no output behind.
    let bad = dir_s("bad.safetensors");
    let err = failed(&cpc_command(&[
        "embed",
        "--software",
        "--checkpoint",
        ck_s,
        "--preset",
        "small",
        "--out",
        &bad,
    ]));
    assert!(err.contains("model.crop: 64 != 32"), "{err}");
    let empty = dir.join("no-images");
    std::fs::create_dir_all(&empty).unwrap();
    let err = failed(&cpc_command(&[
        "embed",
        "--software",
        "--checkpoint",
        ck_s,
        "--data",
        empty.to_str().unwrap(),
        "--out",
        &bad,
    ]));
    assert!(err.contains("no-images"), "{err}");
    assert!(!Path::new(&bad).exists());
    let err = failed(&cpc_command(&[
        "probe",
        "--software",
        "--train-features",
        &bad,
        "--test-features",
        &feats,
    ]));
    assert!(err.contains("bad.safetensors"), "{err}");
}

// ---- probing during pretraining ------------------------------------------------------------

#[test]
fn pretrain_probe_every_logs_probe_accuracy_beside_the_loss() {
    let dir = TestDir::new("probe-every");
    let mut cfg = tiny();
    cfg.train.batch = 4;
    cfg.train.total_steps = 5;
    cfg.train.log_every = 10;
    let probe = ProbeDuring {
        train_images: 40,
        test_images: 20,
        config: ProbeConfig {
            iterations: 50,
            ..ProbeConfig::default()
        },
        ..ProbeDuring::every(2)
    };
    let stop = AtomicBool::new(false);
    let with = pretrain(
        gpu(),
        &PretrainOptions {
            probe: Some(probe),
            ..pretrain_options(cfg.clone(), &dir.join("a"))
        },
        &stop,
    )
    .unwrap();
    // Before the first step, after steps 2 and 4, and after the last (5).
    assert!(with.probe_before.is_some());
    let probed: Vec<u64> = with.probes.iter().map(|(s, _)| *s).collect();
    assert_eq!(probed, vec![1, 3, 4]);
    // Rows for the probed steps (log_every 10 would write only the last), with probe_top1.
    let rows = cpc::train::read_metrics(dir.join("a").join("metrics.jsonl")).unwrap();
    let logged: Vec<(u64, Option<f32>)> = rows.iter().map(|r| (r.step, r.probe_top1)).collect();
    let want: Vec<(u64, Option<f32>)> = with
        .probes
        .iter()
        .map(|(s, p)| (*s, Some(p.test.top1)))
        .collect();
    assert_eq!(logged, want);
    // curves.png gains a third panel for the probe: the picture differs from the one of the
    // same rows without probe_top1 all over its bottom third.
    let with_probe = image::open(dir.join("a").join("curves.png"))
        .unwrap()
        .to_rgb8();
    let plain_rows: Vec<_> = rows
        .iter()
        .map(|r| cpc::train::MetricsRow {
            probe_top1: None,
            ..r.clone()
        })
        .collect();
    cpc::train::plot_curves(&plain_rows, &[2, 3], dir.join("plain.png")).unwrap();
    let plain = image::open(dir.join("plain.png")).unwrap().to_rgb8();
    let h = with_probe.height();
    let differ = (h * 3 / 4..h)
        .flat_map(|y| (0..with_probe.width()).map(move |x| (x, y)))
        .filter(|&(x, y)| with_probe.get_pixel(x, y) != plain.get_pixel(x, y))
        .count();
    assert!(differ > 1000, "{differ} pixels differ in the probe panel");
    // Probing reads the model and changes nothing in the training.
    let without = pretrain(gpu(), &pretrain_options(cfg, &dir.join("b")), &stop).unwrap();
    let losses = |s: &cpc::train::pretrain::PretrainSummary| -> Vec<f32> {
        s.history.iter().map(|(_, st)| st.loss).collect()
    };
    assert_eq!(losses(&with), losses(&without));
    // A probe set without labels is refused before the first step.
    let flat = dir.join("flat");
    for i in 0..3 {
        write_png(&flat.join(format!("{i}.png")), 36, i + 1);
    }
    let unlabelled = ProbeDuring {
        data: Some(flat),
        ..ProbeDuring::every(2)
    };
    let mut short = tiny();
    short.train.batch = 2;
    short.train.total_steps = 1;
    let msg = pretrain(
        gpu(),
        &PretrainOptions {
            probe: Some(unlabelled),
            ..pretrain_options(short, &dir.join("c"))
        },
        &stop,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("flat") && msg.contains("no labels"), "{msg}");
    assert!(!dir.join("c").join("checkpoint.safetensors").exists());
}

// ---- what pretraining buys -----------------------------------------------------------------

/// The loss and the first offset's accuracy, each the mean of the last 20 logged rows.
fn tail_means(history: &[(u64, cpc::ops::infonce::InfonceStats)]) -> (f32, f32) {
    let tail = &history[history.len() - 20..];
    let mean = |f: &dyn Fn(&cpc::ops::infonce::InfonceStats) -> f32| {
        tail.iter().map(|(_, st)| f(st)).sum::<f32>() / tail.len() as f32
    };
    (mean(&|st| st.loss), mean(&|st| st.accuracy_k[0]))
}

/// The tiny preset (batch 16) pretrained for 400 steps on the built-in data at twice its
/// learning rate, Adam from 2e-3 down a cosine to the preset's 1e-3 (what `--lr 2e-3` does):
/// the loss falls well below chance (the suite's test that vision pretraining learns); then
/// `cpc probe`'s comparison on 1000 training and 500 test images: the pretrained encoder
/// against the random-weight encoder it started from.
///
/// Measured on the software adapter with these probe sets (test top-1; `cpc pretrain
/// --preset tiny --seed S --steps 400 --lr 2e-3 --probe-every 100 --probe-train-images 1000
/// --probe-test-images 500`, whose probe before step 1 is the random encoder):
///
///   seed | random | step 100 | 200   | 300   | 400   | margin at 300 | at 400
///   0    | 0.640  | 0.514    | 0.672 | 0.888 | 0.916 | +0.248        | +0.276
///   1    | 0.710  | 0.456    | 0.646 | 0.718 | 0.816 | +0.008        | +0.106
///   2    | 0.654  | 0.464    | 0.638 | 0.706 | 0.810 | +0.052        | +0.156
///
/// The pretrained probe first falls below the random one (CPC first learns the bands'
/// colours, which tell images apart inside a batch but not classes) and climbs past it
/// between steps 100 and 300, later or earlier by seed. At the preset's own lr 1e-3 the three
/// seeds needed 500 steps for a margin on every seed (+0.272, +0.184, +0.156; at 400 steps
/// +0.216, +0.114, +0.068), and no cheaper run showed one: after 150 steps seed 0 was at
/// 0.516 with lr 1e-3 and 0.496 with lr 3e-3, and at batch 8 (lr 2e-3, 300 steps) at 0.425
/// against 0.575. Hence 400 steps at 2e-3, where every seed gained at least +0.106. The
/// threshold, +0.05, is about half that smallest margin (as the speech test's is of its),
/// about two standard errors below it (a top-1 on 500 test images has a standard error of
/// about 0.02, a difference of two about 0.03) and seven below the +0.276 of the seed the
/// test runs: room for another adapter's rounding to take this seed's run elsewhere, not
/// for pretraining that buys nothing (the random encoder is 0.64-0.71).
///
/// About 4 minutes on 2 cores (400 steps of 0.45-0.7 s, then 2 x 1500 images encoded and
/// two classifier searches): the most expensive test of the suite, and the one that says
/// the whole pipeline learns something a linear classifier can use. It probes the encoders
/// alone: `cpc probe`'s third row, the probe on the 3 x 32 x 32 pixels of the same crops,
/// scored 0.308 top-1 here (seed 0 after 500 steps at lr 1e-3; pretrained 0.906, random
/// 0.640) but would add about 200 s on the software adapter (a classifier 48 times wider
/// than on D = 64 features); `the_input_row_probes_the_pixels_of_the_crops` tests that row.
#[test]
fn pretraining_beats_the_random_encoder_by_a_margin() {
    const MARGIN: f32 = 0.05;
    let dir = TestDir::new("margin");
    let mut cfg = Config::preset("tiny").unwrap();
    cfg.train.total_steps = 400;
    // The preset's min_lr, 1e-3, stays: a cosine from 2e-3 down to it, as `--lr 2e-3` runs.
    cfg.train.lr = 2e-3;
    cfg.train.checkpoint_every = 0;
    let stop = AtomicBool::new(false);
    let summary = pretrain(gpu(), &pretrain_options(cfg, &dir), &stop).unwrap();
    // It learns: InfoNCE over the batch's 16 x 49 patch vectors starts at chance, ln 784,
    // and falls well below it; offset 2's accuracy rises far above chance. Measured here
    // (seed 0): 6.664 -> 4.310 (0.65 of chance, the mean of the last 20 steps) and offset-2
    // accuracy 7.0 % (55 times chance); the bounds are the 150-step run's this replaced.
    let chance_loss = (16.0f32 * 49.0).ln();
    let chance_acc = 1.0 / (16.0 * 49.0);
    let h = &summary.history;
    let (last, acc2) = tail_means(h);
    eprintln!(
        "loss {:.3} -> {last:.3} (chance {chance_loss:.3}); offset-2 accuracy {acc2:.4}",
        h[0].1.loss
    );
    assert!(
        (h[0].1.loss - chance_loss).abs() < 0.1,
        "starts at chance: {} vs {chance_loss}",
        h[0].1.loss
    );
    assert!(
        last < 0.94 * chance_loss,
        "loss {last} not well below chance {chance_loss}"
    );
    assert!(
        acc2 > 3.0 * chance_acc,
        "offset-2 accuracy {acc2} not far above chance {chance_acc}"
    );
    let pretrained = ModelCheckpoint::read(&summary.checkpoint, None).unwrap();
    let sample = |split: Split, n: usize| {
        Subset::sample(
            Box::new(Builtin::new(BuiltinConfig::default(), split).unwrap()),
            n,
        )
    };
    let (train, test) = (sample(Split::Train, 1000), sample(Split::Test, 500));
    let result = probe::probe_encoders(
        gpu(),
        &ProbeConfig::default(),
        &pretrained,
        (&train, "builtin:train"),
        (&test, "builtin:test"),
        16,
    )
    .unwrap();
    let figures = format!(
        "pretrained {:?}, random {:?}",
        result.pretrained.test, result.random.test
    );
    eprintln!("{figures}");
    let (gain, _) = result.difference();
    assert!(
        gain >= MARGIN,
        "pretraining bought {gain:+.3} top-1, less than {MARGIN}: {figures}"
    );
}

/// The audio-tiny preset as it is (64 channels, H 64, batch 16, Adam at a constant 2e-3,
/// 1000 steps) pretrained on the built-in synthetic speech: the loss falls well below chance
/// (B T = 320 candidates, ln 320 = 5.77) and offset 1's accuracy far above it; then `cpc
/// probe`'s speaker probe on the synthetic train split (288 clips) and a test split of 24
/// utterances a speaker (288 clips, three times the default's, so that a top-1 has a
/// standard error near 0.027): the pretrained model's mean z against the random-weight
/// model it started from.
///
/// Measured on the software adapter (`cpc pretrain --preset audio-tiny --software --seed S`,
/// then this probe; test top-1, random -> pretrained):
///
///   seed | loss at step 1000 | z              | margin | c              | margin
///   0    | 1.88              | 0.674 -> 0.816 | +0.142 | 0.597 -> 0.792 | +0.194
///   1    | 1.85              | 0.646 -> 0.705 | +0.059 | 0.628 -> 0.681 | +0.052
///   2    | 2.10              | 0.653 -> 0.726 | +0.073 | 0.656 -> 0.684 | +0.028
///
/// The threshold, +0.03, is half the smallest margin (as the image test's is about half
/// its), under one standard error of a difference of two top-1s (about 0.038) below it and
/// three below the +0.142 of the seed the test runs: room for another adapter's rounding to
/// take this seed's run elsewhere, not for pretraining that buys nothing (the 32-channel
/// model of before, at 300 steps, lost 0.09 and 0.12 to its random model on two seeds of
/// three).
/// The c row is printed, not tested: its smallest margin is under its standard error.
/// About 2.5 minutes on 2 cores (1000 steps of about 0.15 s; the two models' features of
/// 576 clips; six probes).
#[test]
fn pretraining_beats_the_random_model_on_the_synthetic_speakers() {
    use cpc::data::audio::{SyntheticConfig, SyntheticSpeech};
    use cpc::eval::audio::compare_audio;
    const MARGIN: f32 = 0.03;
    let dir = TestDir::new("audio-margin");
    let mut cfg = Config::preset("audio-tiny").unwrap();
    cfg.train.checkpoint_every = 0;
    // Every frame of the batch is a candidate: B T of them.
    let candidates = cpc::model::Spec::from(&cfg.model)
        .sequences(cfg.train.batch as usize)
        .rows() as f32;
    let s = pretrain(gpu(), &pretrain_options(cfg, &dir), &AtomicBool::new(false)).unwrap();
    let chance_loss = candidates.ln();
    let h = &s.history;
    let (last, acc1) = tail_means(h);
    eprintln!(
        "loss {:.3} -> {last:.3} (chance {chance_loss:.3}); offset-1 accuracy {acc1:.3}",
        h[0].1.loss
    );
    assert!(
        last < 0.5 * chance_loss,
        "loss {last} not well below chance {chance_loss}"
    );
    assert!(
        acc1 > 30.0 / candidates,
        "offset-1 accuracy {acc1} not far above chance"
    );
    let pretrained = ModelCheckpoint::read(&s.checkpoint, None).unwrap();
    let train = SyntheticSpeech::new(SyntheticConfig::default(), Split::Train).unwrap();
    let test_config = SyntheticConfig {
        test_utterances: 24,
        ..SyntheticConfig::default()
    };
    let test = SyntheticSpeech::new(test_config, Split::Test).unwrap();
    let result = compare_audio(
        gpu(),
        &ProbeConfig::default(),
        &pretrained,
        (&train, "synthetic:train"),
        (&test, "synthetic:test"),
        16,
    )
    .unwrap();
    let context = result.context.as_ref().unwrap();
    let figures = format!(
        "z: pretrained {:?}, random {:?}; c: pretrained {:?}, random {:?}",
        result.pretrained.test, result.random.test, context.pretrained.test, context.random.test
    );
    eprintln!("{figures}");
    let (gain, _) = result.difference();
    assert!(
        gain >= MARGIN,
        "pretraining bought {gain:+.3} top-1 on the speakers, less than {MARGIN}: {figures}"
    );
}
