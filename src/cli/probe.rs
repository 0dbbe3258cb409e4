//! `cpc probe`: the linear probe of a checkpoint's frozen encoder against the random-weight
//! encoder of the same configuration and against the input itself (the crops' pixels, a
//! clip's log-mel energies, a sentence's bag of words), top-1 and top-5 side by side with
//! the differences (what pretraining bought); or the probe of two feature files written by
//! `cpc embed`.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;

use crate::cli::{open_eval_data, AdapterArgs, CheckpointArgs};
use crate::data::{Format, OnBadFile, Split};
use crate::error::{Error, Result};
use crate::eval::audio::{compare_audio, open_eval_audio};
use crate::eval::probe::{compare, probe, Comparison, TopK};
use crate::eval::text::{checkpoint_vocabulary, compare_text, LabelledSplits};
use crate::eval::{Features, ProbeConfig};
use crate::gpu::Gpu;
use crate::train::ModelCheckpoint;

#[derive(Args, Clone, Debug)]
pub struct ProbeArgs {
    /// A checkpoint written by `cpc pretrain`.
    #[arg(long, required_unless_present = "train_features")]
    pub checkpoint: Option<PathBuf>,
    /// Refuse the checkpoint unless its model is this preset's (with --config's overrides).
    #[arg(long)]
    pub preset: Option<String>,
    /// A TOML file of overrides the checkpoint's model must match (on --preset, default tiny).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Images (clips, passages) per encoder pass (default: the checkpoint's training batch).
    #[arg(long, value_parser = crate::cli::at_least_one())]
    pub batch: Option<usize>,
    /// Labelled training images, clips or sentences (its train split). Sentences, for a
    /// text checkpoint: a TSV file of `label<TAB>sentence` lines, or a folder with one
    /// sub-folder per class of .txt files of one sentence per line. Default: the built-in
    /// set's train split (for text, the synthetic corpus' sentences labelled by topic).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Labelled test images, clips or sentences (its test split). Default: --train's path
    /// (a folder with train/ and test/ sub-folders), else the built-in set's test split.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Text checkpoints: instead of --test, hold out this fraction of each class of --train
    /// (strictly between 0 and 1; the same sentences every run) as the test set.
    #[arg(long, requires = "train", conflicts_with = "test")]
    pub test_fraction: Option<f64>,
    /// How to read --train and --test: auto, folder, cifar10, stl10 or builtin; for a text
    /// checkpoint auto (a file is a TSV, a folder class folders), tsv, folder or builtin.
    #[arg(long, default_value = "auto")]
    pub format: Format,
    /// Use only this many training examples, a fixed random sample of the set.
    #[arg(long, value_parser = crate::cli::at_least_one())]
    pub train_limit: Option<usize>,
    /// Use only this many test examples, a fixed random sample of the set.
    #[arg(long, value_parser = crate::cli::at_least_one())]
    pub test_limit: Option<usize>,
    /// A file that cannot be decoded (an image, an audio file, a text file that is not
    /// UTF-8): stop, or skip it.
    #[arg(
        long = "on-bad-file",
        visible_alias = "on-bad-image",
        default_value = "stop"
    )]
    pub on_bad_image: OnBadFile,
    /// Instead of a checkpoint and images: a training feature file of `cpc embed`.
    #[arg(long, requires = "test_features", conflicts_with_all = ["checkpoint", "train", "test"])]
    pub train_features: Option<PathBuf>,
    /// The test feature file that goes with --train-features.
    #[arg(long, requires = "train_features")]
    pub test_features: Option<PathBuf>,
    /// Full-batch steps of each classifier training.
    #[arg(long, default_value_t = ProbeConfig::default().iterations,
          value_parser = crate::cli::at_least_one())]
    pub iterations: usize,
    /// Print the figures as one JSON object on stdout: {"pretrained": {"top1": .., "top5":
    /// ..}, "random": {...}, "input": {...}} (fractions), with "context": {"pretrained":
    /// {..}, "random": {..}} for audio and text checkpoints ({"features": {...}} for feature
    /// files).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

pub fn run(args: &ProbeArgs) -> Result<()> {
    let cfg = ProbeConfig {
        iterations: args.iterations,
        ..ProbeConfig::default()
    };
    if let (Some(train), Some(test)) = (&args.train_features, &args.test_features) {
        let (ftrain, ftest) = (Features::load(train)?, Features::load(test)?);
        let gpu = Gpu::new(&(&args.adapter).into())?;
        let (a, b) = (train.display().to_string(), test.display().to_string());
        let r = probe(&gpu, &cfg, (&ftrain, &a), (&ftest, &b))?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&HashMap::from([("features", TopK::from(r.test))]))
                    .expect("numbers serialise")
            );
        } else {
            println!(
                "linear probe: {} training images, {} test images, {} classes\n\
                 top-1 {:.4}  top-5 {:.4}  (lr {}, weight decay {})",
                r.train_images,
                r.test_images,
                r.classes,
                r.test.top1,
                r.test.top5,
                r.chosen.lr,
                r.chosen.weight_decay
            );
        }
        return Ok(());
    }
    let checkpoint = CheckpointArgs {
        checkpoint: args.checkpoint.clone().ok_or_else(|| {
            Error::Config("give --checkpoint (or --train-features and --test-features)".into())
        })?,
        preset: args.preset.clone(),
        config: args.config.clone(),
        batch: args.batch,
    };
    let pretrained = checkpoint.load()?;
    if args.train.is_none() && args.test.is_some() {
        return Err(Error::Config(
            "--test needs --train (without either, the built-in set's splits are used)".into(),
        ));
    }
    if pretrained.config.model.text().is_some() {
        let vocab = checkpoint_vocabulary(&pretrained)?;
        let sets = LabelledSplits {
            train: args.train.as_deref(),
            test: args.test.as_deref(),
            format: args.format,
            test_fraction: args.test_fraction,
            train_limit: args.train_limit,
            test_limit: args.test_limit,
            on_bad_file: args.on_bad_image,
        };
        let (train, test) = sets.open(vocab)?;
        let gpu = Gpu::new(&(&args.adapter).into())?;
        announce(&gpu, &pretrained, &train.describe(), &test.describe());
        let batch = checkpoint.batch(&pretrained);
        let result = compare_text(&gpu, &cfg, &pretrained, &train, &test, batch)?;
        return print(&result, args.json);
    }
    if args.test_fraction.is_some() {
        return Err(Error::Config(
            "--test-fraction is for text checkpoints; images and audio take their test set \
             from --test or the set's test split"
                .into(),
        ));
    }
    let test_path = args.test.as_ref().or(args.train.as_ref());
    if pretrained.config.model.audio().is_some() {
        let open = |path: Option<&std::path::Path>, split, limit| {
            open_eval_audio(path, split, limit, args.on_bad_image)
        };
        let (train, train_source) = open(args.train.as_deref(), Split::Train, args.train_limit)?;
        let (test, test_source) =
            open(test_path.map(|p| p.as_path()), Split::Test, args.test_limit)?;
        let gpu = Gpu::new(&(&args.adapter).into())?;
        announce(&gpu, &pretrained, &train.describe(), &test.describe());
        let result = compare_audio(
            &gpu,
            &cfg,
            &pretrained,
            (train.as_ref(), &train_source),
            (test.as_ref(), &test_source),
            checkpoint.batch(&pretrained),
        )?;
        return print(&result, args.json);
    }
    let (train, train_source) = open_eval_data(
        args.train.as_deref(),
        args.format,
        Split::Train,
        args.train_limit,
        args.on_bad_image,
    )?;
    let (test, test_source) = open_eval_data(
        test_path.map(|p| p.as_path()),
        args.format,
        Split::Test,
        args.test_limit,
        args.on_bad_image,
    )?;
    let gpu = Gpu::new(&(&args.adapter).into())?;
    announce(&gpu, &pretrained, &train.describe(), &test.describe());
    let result = compare(
        &gpu,
        &cfg,
        &pretrained,
        (train.as_ref(), &train_source),
        (test.as_ref(), &test_source),
        checkpoint.batch(&pretrained),
    )?;
    print(&result, args.json)
}

/// The line on stderr saying what is probed on which sets.
fn announce(gpu: &Gpu, pretrained: &ModelCheckpoint, train: &str, test: &str) {
    eprintln!(
        "adapter: {}; checkpoint {} (step {}); train: {train}; test: {test}",
        gpu.info.name,
        pretrained.path.display(),
        pretrained.step,
    );
}

fn print(result: &Comparison, json: bool) -> Result<()> {
    if json {
        println!("{}", result.json());
    } else {
        println!("{}", result.table());
    }
    Ok(())
}
