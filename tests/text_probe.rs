//! `cpc probe` and `--probe-every` on text checkpoints, on the software adapter: labelled
//! sentences from TSV files, class folders, a held-out fraction or the built-in corpus; the
//! same JSON as for images and audio; the z row is the probe of `cpc embed`'s vectors; bad
//! labelled sentences fail clearly.

use std::path::{Path, PathBuf};

use cpc::data::text::{LabelledSentences, TextOptions};
use cpc::eval::ProbeConfig;
use cpc::train::pretrain::{ProbeDuring, CHECKPOINT};
use cpc::train::Config;

mod common;
use common::{cpc_command, failed, ok, pretrain_options, run, TestDir};

/// text-tiny trained `steps` steps on the built-in corpus into `dir`: its checkpoint.
fn checkpoint(dir: &Path, steps: u64) -> PathBuf {
    let mut cfg = Config::preset("text-tiny").unwrap();
    cfg.train.total_steps = steps;
    run(&pretrain_options(cfg, dir)).unwrap();
    dir.join(CHECKPOINT)
}

/// `count` sentences of the built-in corpus' `split` (a fixed sample), each its label and
/// its words joined by spaces, the first capitalised, with a full stop.
fn tsv_lines(split: cpc::data::Split, count: usize) -> Vec<(String, String)> {
    let options = TextOptions {
        split,
        ..TextOptions::default()
    };
    let set = LabelledSentences::open(None, &options)
        .unwrap()
        .sample(count);
    (0..set.len())
        .map(|i| {
            let class = &set.class_names()[set.label(i) as usize];
            let text = set.words(i).join(" ");
            let mut chars = text.chars();
            let first = chars.next().map(|c| c.to_uppercase().collect::<String>());
            (
                class.clone(),
                format!("{}{}.", first.unwrap_or_default(), chars.as_str()),
            )
        })
        .collect()
}

/// The probe's JSON: every row's top-1 and top-5 fractions, the image and audio shape.
fn figures(json: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let rows = [
        &v["pretrained"],
        &v["random"],
        &v["input"],
        &v["context"]["pretrained"],
        &v["context"]["random"],
    ];
    for row in rows {
        for k in ["top1", "top5"] {
            let x = row[k].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1.0).contains(&x), "{k} in {json}");
        }
        assert_eq!(row.as_object().unwrap().len(), 2, "{json}");
    }
    assert_eq!(v.as_object().unwrap().len(), 4, "{json}");
    v
}

/// `cpc probe` on a text checkpoint with the figures as JSON.
fn probe_json(ck: &Path, args: &[&str]) -> serde_json::Value {
    let ck = ck.to_str().unwrap();
    let base = ["probe", "--checkpoint", ck, "--software", "--json"];
    figures(&ok(&cpc_command(&[&base[..], args].concat())))
}

/// The same labelled sentences of the built-in corpus (240 of its train split, 120 of its
/// test split) as class folders split into `folder/train` and `folder/test`, one sentence
/// per line and three files a class, and as `train.tsv` and `test.tsv` in the order the
/// folders are read (class, file, line), so that both give the same examples in the same
/// order. Each sentence is its words with a capital and a full stop, so that the segmenter
/// of `cpc embed` finds it whole. Returns the two TSV files and the folder.
fn fixtures(dir: &Path) -> (String, String, String) {
    let folder = dir.join("folder");
    let mut tsvs = Vec::new();
    let splits = [
        ("train", cpc::data::Split::Train, 240),
        ("test", cpc::data::Split::Test, 120),
    ];
    for (name, split, count) in splits {
        let mut ordered: Vec<(String, usize, usize, String)> = (tsv_lines(split, count)
            .into_iter())
        .enumerate()
        .map(|(k, (label, sentence))| (label, k % 3, k, sentence))
        .collect();
        ordered.sort();
        let mut tsv = String::new();
        for (label, file, _, sentence) in &ordered {
            let file = folder.join(name).join(label).join(format!("{file}.txt"));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            let mut text = std::fs::read_to_string(&file).unwrap_or_default();
            text += &format!("{sentence}\n");
            std::fs::write(&file, text).unwrap();
            tsv += &format!("{label}\t{sentence}\n");
        }
        let path = dir.join(format!("{name}.tsv"));
        std::fs::write(&path, tsv).unwrap();
        tsvs.push(path.to_str().unwrap().to_string());
    }
    let folder = folder.to_str().unwrap().to_string();
    (tsvs.remove(0), tsvs.remove(0), folder)
}

/// TSV files, a folder of class folders split into train/ and test/, and one TSV split by
/// a stated fraction: each probed end to end through the command line. The bag of words
/// names the topic of the held-out sentences far above chance (1/8).
#[test]
fn probe_command_reads_tsv_files_class_folders_and_a_held_out_fraction() {
    let dir = TestDir::new("text-probe-cli");
    let ck = checkpoint(&dir.join("run"), 30);
    let (a, b, folder) = fixtures(&dir);
    let few = ["--iterations", "60"];
    let tsv = probe_json(&ck, &[&["--train", &a, "--test", &b], &few[..]].concat());
    assert!(tsv["input"]["top1"].as_f64().unwrap() > 0.4, "{tsv}");
    let folders = probe_json(&ck, &[&["--train", &folder], &few[..]].concat());
    assert_eq!(
        folders, tsv,
        "the same sentences and classes give the same probes"
    );
    let given = probe_json(
        &ck,
        &[&["--train", &folder, "--format", "folder"], &few[..]].concat(),
    );
    assert_eq!(given, tsv, "--format folder reads it as auto does");

    // One TSV, a quarter of each class held out; the table names sentences.
    let both = [&["--train", &a, "--test-fraction", "0.25"], &few[..]].concat();
    let ck_path = ck.to_str().unwrap();
    let table = ok(&cpc_command(
        &[&["probe", "--checkpoint", ck_path, "--software"], &both[..]].concat(),
    ));
    let counts: Vec<usize> = table.lines().next().unwrap()["linear probe: ".len()..]
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 3, "{table}");
    assert_eq!(counts[0] + counts[1], 240, "{table}");
    assert!(
        counts[1].abs_diff(60) <= 4 && counts[2] == 8,
        "a quarter of each class: {table}"
    );
    for row in ["pretrained (c)", "random (c)", "bag of words"] {
        assert!(table.contains(row), "{row}: {table}");
    }
}

/// The probe's z row is the probe of the vectors `cpc embed` writes for the same sentences
/// (each sentence's z depends on it alone, however the sentences are batched): the same
/// figures. Without --train the probe reads the built-in corpus' topics.
#[test]
fn the_z_row_is_the_probe_of_cpc_embeds_features() {
    let dir = TestDir::new("text-probe-embed");
    let ck = checkpoint(&dir.join("run"), 30);
    let (_, _, folder) = fixtures(&dir);
    let few = ["--iterations", "60", "--software"];
    let mut files = Vec::new();
    for split in ["train", "test"] {
        let out = dir.join(format!("{split}.safetensors"));
        let out = out.to_str().unwrap().to_string();
        let ck = ck.to_str().unwrap();
        let args = [
            "embed",
            "--checkpoint",
            ck,
            "--data",
            &folder,
            "--split",
            split,
            "--out",
            &out,
        ];
        ok(&cpc_command(&[&args[..], &few[2..]].concat()));
        files.push(out);
    }
    let args = [
        "probe",
        "--train-features",
        &files[0],
        "--test-features",
        &files[1],
        "--json",
    ];
    let embedded = ok(&cpc_command(&[&args[..], &few[..]].concat()));
    let embedded: serde_json::Value = serde_json::from_str(embedded.trim()).unwrap();
    let probed = probe_json(&ck, &[&["--train", &folder], &few[..2]].concat());
    assert_eq!(probed["pretrained"], embedded["features"], "{probed}");
    assert_ne!(
        probed["pretrained"], probed["context"]["pretrained"],
        "z and c are two probes"
    );
    let limits = [
        "--train-limit",
        "200",
        "--test-limit",
        "100",
        "--iterations",
        "20",
    ];
    probe_json(&ck, &limits);
}

/// Bad labelled sentences, named by file and line; a class only the test set has; one set
/// for both sides; an image format.
#[test]
fn bad_labelled_sentences_fail_clearly() {
    let dir = TestDir::new("text-probe-bad");
    let ck = checkpoint(&dir.join("run"), 1);
    let ck = ck.to_str().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let good = file("good.tsv", "sea\tThe ship sails.\nfarm\tThe cow eats.\n");
    let zebra = file(
        "zebra.tsv",
        "sea\tA wave.\nzebra\tStripes and stripes.\nzebra\tMore stripes.\n",
    );
    let bad_line = file("bad.tsv", "sea\tThe ship.\n\nno tab on this line\n");
    let empty_label = file("label.tsv", "sea\tThe ship.\n \tNo label.\n");
    let empty = file("empty.tsv", "\n\n");
    let probe = |args: &[&str]| {
        let base = ["probe", "--checkpoint", ck, "--software"];
        failed(&cpc_command(&[&base[..], args].concat()))
    };
    let err = probe(&["--train", &good, "--test", &bad_line]);
    assert!(
        err.contains("bad.tsv") && err.contains("line 3 has no tab"),
        "{err}"
    );
    let err = probe(&["--train", &empty_label, "--test", &good]);
    assert!(
        err.contains("label.tsv") && err.contains("line 2 has an empty label"),
        "{err}"
    );
    let err = probe(&["--train", &empty, "--test", &good]);
    assert!(
        err.contains("empty.tsv") && err.contains("no labelled sentence"),
        "{err}"
    );
    let err = probe(&["--train", &good, "--test", &zebra]);
    assert!(
        err.contains("zebra.tsv") && err.contains("lacks: zebra (class 1) (2 examples)"),
        "{err}"
    );
    let err = probe(&["--train", &good]);
    assert!(
        err.contains("both the training and the test set") && err.contains("--test-fraction"),
        "{err}"
    );
    let err = probe(&["--train", &good, "--test-fraction", "0.5"]);
    assert!(err.contains("each side needs some"), "{err}");
    let err = probe(&["--train", &good, "--test", &good, "--format", "cifar10"]);
    assert!(err.contains("image format"), "{err}");
    let err = probe(&["--train", dir.to_str().unwrap(), "--format", "tsv"]);
    assert!(err.contains("not a file"), "{err}");
}

/// `--probe-every` on a text model: the topic probe of the model being trained, before
/// the first step and every 10 steps, logged beside the loss.
#[test]
fn the_probe_during_text_pretraining_scores_the_model_being_trained() {
    let dir = TestDir::new("text-probe-every");
    let mut cfg = Config::preset("text-tiny").unwrap();
    cfg.train.total_steps = 20;
    let mut opts = pretrain_options(cfg, &dir);
    opts.probe = Some(ProbeDuring {
        train_images: 96,
        test_images: 48,
        config: ProbeConfig {
            iterations: 60,
            ..ProbeConfig::default()
        },
        ..ProbeDuring::every(10)
    });
    let s = run(&opts).unwrap();
    let before = s.probe_before.as_ref().unwrap();
    assert_eq!(
        (before.train_images, before.test_images, before.classes),
        (96, 48, 8)
    );
    assert_eq!(
        s.probes.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![9, 19]
    );
    let rows = cpc::train::read_metrics(dir.join("metrics.jsonl")).unwrap();
    let logged: Vec<(u64, f32)> = (rows.iter())
        .filter_map(|r| r.probe_top1.map(|p| (r.step, p)))
        .collect();
    let probes: Vec<(u64, f32)> = s.probes.iter().map(|(k, p)| (*k, p.test.top1)).collect();
    assert_eq!(logged, probes);
}
