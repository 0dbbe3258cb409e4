//! `cpc pretrain` on text end to end on the software adapter: the text-tiny preset on the
//! built-in synthetic corpus learns, runs are deterministic, a resumed run matches an
//! uninterrupted one and reads its ids with its checkpoint's vocabulary, and bad text input
//! fails clearly.

use cpc::data::text::{self, Vocabulary};
use cpc::data::{Format, OnBadFile};
use cpc::eval::features::frozen_model;
use cpc::eval::probe::probe;
use cpc::eval::text::{checkpoint_vocabulary, labelled_features, LabelledSplits};
use cpc::eval::ProbeConfig;
use cpc::ops::infonce::InfonceStats;
use cpc::train::model_checkpoint::ModelCheckpoint;
use cpc::train::pretrain::CHECKPOINT;
use cpc::train::Config;

mod common;
use common::{gpu, losses, pretrain_options, run, TestDir};

/// The text-tiny preset, `batch` passages a step for `steps` steps, every step logged.
fn text_run(batch: u32, steps: u64) -> Config {
    let mut cfg = Config::preset("text-tiny").unwrap();
    cfg.train.batch = batch;
    cfg.train.total_steps = steps;
    cfg.train.log_every = 1;
    cfg.train.checkpoint_every = 0;
    cfg
}

#[test]
fn text_runs_are_deterministic_resume_exactly_and_keep_their_vocabulary() {
    let dir = TestDir::new("text-resume");
    let whole = run(&pretrain_options(text_run(4, 6), &dir.join("whole"))).unwrap();
    let again = run(&pretrain_options(text_run(4, 6), &dir.join("again"))).unwrap();
    assert_eq!(losses(&whole).len(), 6);
    assert_eq!(
        losses(&whole),
        losses(&again),
        "same seed: identical losses"
    );
    let mut other = text_run(4, 6);
    other.train.seed = 1;
    let other = run(&pretrain_options(other, &dir.join("other"))).unwrap();
    assert_ne!(
        losses(&whole),
        losses(&other),
        "another seed changes the run"
    );

    // The checkpoint holds the vocabulary built from the training corpus.
    let ck = ModelCheckpoint::read(&dir.join("whole").join(CHECKPOINT), None).unwrap();
    let corpus = text::open(None, &text::TextOptions::default()).unwrap();
    let built = Vocabulary::build(&*corpus, 2048).unwrap();
    assert_eq!(ck.vocabulary.as_ref(), Some(&built));

    let mut first = pretrain_options(text_run(4, 6), &dir.join("split"));
    first.stop_at = Some(3);
    let part1 = run(&first).unwrap();
    assert!(part1.interrupted && part1.last_step == 3);
    let copy = dir.join("reordered");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(dir.join("split").join(CHECKPOINT), copy.join(CHECKPOINT)).unwrap();
    let mut second = pretrain_options(text_run(4, 6), &dir.join("split"));
    second.resume = true;
    let part2 = run(&second).unwrap();
    assert_eq!(part2.first_step, 3);
    let mut joined = losses(&part1);
    joined.extend(losses(&part2));
    assert_eq!(
        joined,
        losses(&whole),
        "resumed losses equal the whole run's"
    );

    // The resumed run reads the checkpoint's vocabulary, not one rebuilt from the data:
    // a checkpoint whose words are reordered trains on other ids, so its losses differ.
    let mut ck = ModelCheckpoint::read(&copy.join(CHECKPOINT), None).unwrap();
    assert_eq!(ck.step, 3);
    let mut words = ck.vocabulary.as_ref().unwrap().words().to_vec();
    words[2..].reverse();
    ck.vocabulary = Some(Vocabulary::from_words(words, built.tokenizer()).unwrap());
    ck.save().unwrap();
    let mut third = pretrain_options(text_run(4, 6), &copy);
    third.resume = true;
    let reordered = run(&third).unwrap();
    assert_ne!(losses(&reordered), losses(&part2));

    // A vision run cannot resume a text checkpoint: the modality is a model field.
    let mut vision = pretrain_options(common::tiny_run(4, 6), &dir.join("split"));
    vision.resume = true;
    let msg = run(&vision).unwrap_err().to_string();
    assert!(msg.contains("model"), "{msg}");
}

/// text-tiny on the synthetic corpus: InfoNCE over every sentence of the batch (B L = 96
/// candidates at batch 16) starts at chance, ln 96, and falls clearly; then the topic probe
/// on the pretrained sentence vectors z beats the random-weight model's by a margin.
///
/// The probe is `cpc probe`'s z rows on the built-in corpus's labelled sentences, 1000 of
/// its training and 500 of its test sentences (`--train-limit 1000 --test-limit 500`, the
/// same fixed samples). Calibration on lavapipe (`cpc pretrain --preset text-tiny --seed S
/// --steps 400`, then `cpc probe --train-limit 1000 --test-limit 500`; test top-1, chance
/// 0.125):
///
///   seed | random z | pretrained z | margin | at 300 steps | random c -> pretrained c
///   0    | 0.338    | 0.550        | +0.212 | +0.184       | 0.334 -> 0.536
///   1    | 0.350    | 0.538        | +0.188 | +0.184       | 0.330 -> 0.556
///   2    | 0.354    | 0.592        | +0.238 | +0.200       | 0.348 -> 0.552
///
/// (the bag of words: 0.764). The threshold, +0.10, sits about 3 standard errors of a
/// difference of two top-1s on 500 sentences (0.03) below the smallest margin. The probe
/// takes two of `cpc probe`'s five classifiers (z of both models), about 25 s here; the
/// loss bound is calibrated below.
const STEPS: u64 = 400;
const PROBE_MARGIN: f32 = 0.10;

/// Measured on lavapipe (seed 0, 400 steps, about 10 s): 4.565 -> 3.629, 0.795 of chance,
/// offset-1 accuracy 12.3 % (12 times chance); the bound leaves 0.25 nats of margin.
const LEARNT_LOSS_RATIO: f32 = 0.85;
#[test]
fn pretraining_text_tiny_learns_and_its_probe_beats_the_random_model() {
    let dir = TestDir::new("text-learns");
    let mut cfg = Config::preset("text-tiny").unwrap();
    cfg.train.total_steps = STEPS;
    cfg.train.log_every = 10;
    let batch = cfg.train.batch as f32;
    let s = run(&pretrain_options(cfg, &dir)).unwrap();
    let sentences = 6.0;
    let chance_loss = (batch * sentences).ln();
    let mean = |from: usize, to: usize, f: &dyn Fn(&InfonceStats) -> f32| {
        s.history[from..to].iter().map(|(_, st)| f(st)).sum::<f32>() / (to - from) as f32
    };
    let n = s.history.len();
    let first = mean(0, 3, &|st| st.loss);
    let last = mean(n - 10, n, &|st| st.loss);
    let acc1 = mean(n - 10, n, &|st| st.accuracy_k[0]);
    println!("loss {first:.3} -> {last:.3} (chance {chance_loss:.3}); accuracy offset 1 {acc1:.4}");
    assert!(
        (first - chance_loss).abs() < 0.15,
        "starts at chance: {first} vs {chance_loss}"
    );
    assert!(
        last < LEARNT_LOSS_RATIO * chance_loss,
        "loss {last} not well below chance {chance_loss}"
    );
    assert!(
        acc1 > 5.0 / (batch * sentences),
        "offset-1 accuracy {acc1} not far above chance"
    );

    let pretrained = ModelCheckpoint::read(&s.checkpoint, None).unwrap();
    let vocab = checkpoint_vocabulary(&pretrained).unwrap();
    let splits = LabelledSplits {
        train_limit: Some(1000),
        test_limit: Some(500),
        ..LabelledSplits::default()
    };
    let (train, test) = splits.open(vocab).unwrap();
    let model = frozen_model(gpu(), &pretrained.config, &pretrained.params, 16).unwrap();
    let mut top1 = Vec::new();
    for params in [pretrained.params.clone(), pretrained.random_params()] {
        model.buffers.params.write(gpu(), &params).unwrap();
        let z = |set| labelled_features(gpu(), &model, set, vocab).unwrap().z;
        let (ztrain, ztest) = (z(&train), z(&test));
        let result = probe(
            gpu(),
            &ProbeConfig::default(),
            (&ztrain, "builtin:train"),
            (&ztest, "builtin:test"),
        )
        .unwrap();
        top1.push(result.test.top1);
    }
    let (pre, random) = (top1[0], top1[1]);
    println!("topic probe top-1: pretrained {pre:.3}, random {random:.3}");
    assert!(
        pre - random >= PROBE_MARGIN,
        "pretraining bought {:+.3} top-1 (pretrained {pre:.3}, random {random:.3}), less \
         than {PROBE_MARGIN}",
        pre - random
    );
}

#[test]
fn bad_text_input_fails_clearly() {
    let dir = TestDir::new("text-bad");
    let mut opts = pretrain_options(text_run(2, 1), &dir.join("out"));
    opts.data = Some(dir.join("nowhere"));
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("nowhere"), "{msg}");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    opts.data = Some(empty.clone());
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("empty"), "{msg}");
    // An image format named for a text model.
    opts.data = None;
    opts.format = Format::Cifar10;
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("cifar10") && msg.contains("text"), "{msg}");
    opts.format = Format::Auto;
    // A folder with one document and a file that is not UTF-8: stop names it, skip counts
    // it; one short document holds fewer passages than a batch.
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let sentences: String = (0..14)
        .map(|i| format!("Sentence number {i} here. "))
        .collect();
    std::fs::write(docs.join("a.txt"), &sentences).unwrap();
    std::fs::write(docs.join("broken.txt"), b"ok so far \xff\xfe then bytes").unwrap();
    opts.data = Some(docs.clone());
    let msg = run(&opts).unwrap_err().to_string();
    assert!(
        msg.contains("broken.txt") && msg.contains("byte offset 10"),
        "{msg}"
    );
    opts.on_bad_image = OnBadFile::Skip;
    let s = run(&opts).unwrap();
    assert_eq!(s.skipped_images, 1, "the bad file, counted");
    let mut big = text_run(3, 1);
    big.train.checkpoint_every = 0;
    let mut opts3 = pretrain_options(big, &dir.join("out3"));
    opts3.data = Some(docs);
    opts3.on_bad_image = OnBadFile::Skip;
    let msg = run(&opts3).unwrap_err().to_string();
    assert!(
        msg.contains("2 passages") && msg.contains("batch of 3"),
        "{msg}"
    );
}

/// `cpc pretrain --epochs` on text counts passages: the built-in corpus's 593 passages of 6
/// sentences are 37 batches of 16.
#[test]
fn the_command_line_counts_text_epochs_in_passages() {
    let dir = TestDir::new("text-cli");
    let out = common::cpc_command(&[
        "pretrain",
        "--preset",
        "text-tiny",
        "--epochs",
        "1",
        "--software",
        "--out",
        dir.to_str().unwrap(),
    ]);
    common::ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("593 passages") && log.contains("37 steps"),
        "{log}"
    );
    let ck = ModelCheckpoint::read(&dir.join(CHECKPOINT), None).unwrap();
    assert_eq!(ck.step, 37);
    let path = dir.join(CHECKPOINT);
    let path = path.to_str().unwrap();
    // cpc embed writes one z per sentence of the split, labelled by topic.
    let out = dir.join("test.safetensors");
    let args = [
        "embed",
        "--checkpoint",
        path,
        "--split",
        "test",
        "--software",
        "--out",
    ];
    common::ok(&common::cpc_command(
        &[&args[..], &[out.to_str().unwrap()]].concat(),
    ));
    let z = cpc::eval::Features::load(&out).unwrap();
    let test = text::TextOptions {
        split: cpc::data::Split::Test,
        ..Default::default()
    };
    let corpus = text::open(None, &test).unwrap();
    let sentences: usize = (0..corpus.len())
        .map(|i| corpus.document(i).unwrap().sentences.len())
        .sum();
    assert_eq!((z.len(), z.dim), (sentences, 64));
    assert_eq!(z.labels.as_ref().map(|l| l.len()), Some(sentences));
    assert_eq!(z.names[1], "synthetic:test#0#1");
    let frames = [&args[..], &["/dev/null", "--frames"]].concat();
    let err = common::failed(&common::cpc_command(&frames));
    assert!(err.contains("--frames"), "{err}");
}

/// The number before `unit` in `line`: "... forward 27.6 MFLOP" -> 27.6 for " MFLOP".
fn number_before(line: &str, unit: &str) -> f64 {
    let head = &line[..line
        .find(unit)
        .unwrap_or_else(|| panic!("no {unit} in {line}"))];
    let word = head.rsplit(' ').next().unwrap();
    word.parse().unwrap_or_else(|_| panic!("{word} in {line}"))
}

/// `--plan` on each text preset prints the spec's parameter count, and at the preset's
/// batch the forward's FLOPs that the spec counts (tests/model.rs checks that count).
#[test]
fn plan_prints_the_text_presets_parameters_and_flops() {
    use cpc::model::{ParamLayout, Spec};
    // The counts tests/model.rs derives by hand.
    for (preset, count) in [
        ("text", 68_720_800),
        ("text-small", 15_350_784),
        ("text-tiny", 108_992),
    ] {
        let plan = common::ok(&common::cpc_command(&[
            "pretrain",
            "--preset",
            preset,
            "--plan",
            "--software",
        ]));
        let cfg = Config::preset(preset).unwrap();
        let spec = Spec::from(&cfg.model);
        assert_eq!(ParamLayout::new(&spec).count(), count);
        let first = format!("preset {preset}: {count} parameters, {}", spec.describe());
        assert_eq!(plan.lines().next(), Some(&first[..]), "{plan}");
        let batch = cfg.train.batch as usize;
        let this_run = (plan.lines())
            .find(|l| l.trim_start().starts_with("this run:"))
            .unwrap_or_else(|| panic!("{plan}"));
        assert!(this_run.contains(&format!("batch {batch}:")), "{plan}");
        let want = batch as f64 * spec.forward_flops_per_example(batch);
        let printed = [(" MFLOP", 1e6), (" GFLOP", 1e9)]
            .iter()
            .find(|(unit, _)| this_run.ends_with(unit))
            .map(|&(unit, scale)| number_before(this_run, unit) * scale)
            .unwrap_or_else(|| panic!("{this_run}"));
        // Three significant digits.
        assert!(
            (printed - want).abs() < 0.005 * want,
            "{printed} vs {want}: {this_run}"
        );
    }
}

/// `cpc profile` on text-tiny times every kernel of the text step, on the built-in corpus's
/// first batch, in passages a second.
#[test]
fn profile_times_the_text_kernels() {
    let out = common::ok(&common::cpc_command(&[
        "profile",
        "--preset",
        "text-tiny",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--software",
    ]));
    assert!(
        out.contains("inputs: the first batch of the built-in corpus (seed 0): 96 sentences"),
        "{out}"
    );
    // Each kernel's row: its name first.
    let rows: Vec<&str> = (out.lines())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for kernel in [
        "embedding.forward",
        "conv2d_forward",
        "masked_mean.forward",
        "gru.gates_forward",
        "matmul",
        "infonce.infonce_rows",
        "infonce.infonce_reduce",
        "masked_mean.backward",
        "conv2d_backward_weight",
        "gru.gates_backward",
        "embedding.backward",
        "adam.step",
    ] {
        assert!(rows.contains(&kernel), "no {kernel} in:\n{out}");
    }
    assert!(out.contains("passages/s"), "{out}");
}

/// A sentence's z from `cpc embed`'s walk (documents cut into passages, batches filled up
/// with empty sentences) is the z of that sentence alone in a batch: it depends on the
/// sentence only.
#[test]
fn sentence_features_are_each_sentences_own_vector() {
    use cpc::model::{CpcModel, ParamLayout, Spec};
    use cpc::ops::embedding::PaddedSentences;
    let dir = TestDir::new("text-features");
    std::fs::write(dir.join("a.txt"), "One two three. Two. Three one one two!").unwrap();
    std::fs::write(
        dir.join("b.txt"),
        "Four. One four four four four. Two one? Five.",
    )
    .unwrap();
    let set = text::open(Some(&*dir), &text::TextOptions::default()).unwrap();
    let vocab = Vocabulary::build(&*set, 16).unwrap();
    let mut cfg = Config::preset("text-tiny").unwrap();
    cfg.train.batch = 2;
    let spec = Spec::from(&cfg.model);
    let params = ParamLayout::new(&spec).init(5);
    let model = CpcModel::new(gpu(), &spec, 2, &params, Default::default()).unwrap();
    let cpc::eval::FeaturePair { z, c } =
        cpc::eval::text::sentence_features(gpu(), &model, &*set, &vocab).unwrap();
    assert_eq!((z.len(), c.len(), z.dim, c.dim), (7, 7, 64, 64));
    let names = [
        "a.txt#0", "a.txt#1", "a.txt#2", "b.txt#0", "b.txt#1", "b.txt#2", "b.txt#3",
    ];
    assert_eq!(z.names, names);
    assert!(z.labels.is_none());
    let slots = 2 * 6;
    let at = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)];
    for (row, (doc, s)) in at.into_iter().enumerate() {
        let words = &set.document(doc).unwrap().sentences[s];
        let mut alone = text::Sentences::new();
        alone.push(&vocab.encode(words)).unwrap();
        for _ in 1..slots {
            alone.push(&[]).unwrap();
        }
        let x = PaddedSentences::from_offsets(&alone.tokens, &alone.offsets, 16, 2048).unwrap();
        let (want, _) = model.frames(gpu(), &x).unwrap();
        for (got, want) in z.row(row).iter().zip(&want[..64]) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "row {row}: {got} vs {want}"
            );
        }
    }
    // The context follows the passage: a's second sentence and b's differ in what came
    // before them.
    assert_ne!(c.row(1), c.row(4));
}
