//! `cpc embed`: every image's mean-pooled patch vector (centre crop, no augmentation) from a
//! checkpoint's encoder, or for an audio checkpoint every clip's mean frame vector z (or,
//! with `--frames`, every frame's), or for a text checkpoint every sentence's vector z, with
//! labels and names where the data has them, in one
//! safetensors file (see eval::features for its layout).

use std::path::PathBuf;

use clap::Args;

use crate::cli::{AdapterArgs, CheckpointArgs};
use crate::data::{Format, OnBadFile, Split};
use crate::error::{Error, Result};
use crate::eval::audio::AudioEncoder;
use crate::model::ModelConfig;

#[derive(Args, Clone, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Images: a folder, CIFAR-10 or STL-10 binaries; audio checkpoints: a folder of audio
    /// files; text checkpoints: a UTF-8 text file or a folder of them. Default: the
    /// built-in images, synthetic speech or synthetic text.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How to read --data: auto, folder, cifar10, stl10 or builtin.
    #[arg(long, default_value = "auto")]
    pub format: Format,
    /// Which split: train, test or unlabeled.
    #[arg(long, default_value = "train")]
    pub split: Split,
    /// Use only this many images, a fixed random sample of the set.
    #[arg(long, value_parser = crate::cli::at_least_one())]
    pub limit: Option<usize>,
    /// An image that cannot be decoded: stop, or skip it (it is then left out of the file).
    #[arg(
        long = "on-bad-file",
        visible_alias = "on-bad-image",
        default_value = "stop"
    )]
    pub on_bad_image: OnBadFile,
    /// Audio: one vector per frame (10 ms) instead of one per file; rows are named
    /// `<file>@<frame>`.
    #[arg(long)]
    pub frames: bool,
    /// The feature file to write (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

pub fn run(args: &EmbedArgs) -> Result<()> {
    let pretrained = args.checkpoint.load()?;
    let (source, features) = match pretrained.config.model {
        ModelConfig::Vision(_) => {
            if args.frames {
                return Err(Error::Config(
                    "--frames is for audio checkpoints; an image model has one vector an image"
                        .into(),
                ));
            }
            let (_, _set, source, features) = crate::cli::encode_set(
                &args.checkpoint,
                args.data.as_deref(),
                args.format,
                args.split,
                args.limit,
                args.on_bad_image,
                &args.adapter,
            )?;
            (source, features)
        }
        ModelConfig::Text(_) => {
            if args.frames || args.limit.is_some() || args.format != Format::Auto {
                return Err(Error::Config(
                    "--frames, --limit and --format are for images and audio; a text \
                     checkpoint embeds every sentence of --data (or of the built-in corpus)"
                        .into(),
                ));
            }
            let vocab = crate::eval::text::checkpoint_vocabulary(&pretrained)?;
            let open = crate::data::text::TextOptions {
                split: args.split,
                on_bad_file: args.on_bad_image,
                tokenizer: vocab.tokenizer(),
                ..Default::default()
            };
            let set = crate::data::text::open(args.data.as_deref(), &open)?;
            let gpu = crate::gpu::Gpu::new(&(&args.adapter).into())?;
            eprintln!("adapter: {}; data: {}", gpu.info.name, set.describe());
            let model = crate::eval::features::frozen_model(
                &gpu,
                &pretrained.config,
                &pretrained.params,
                args.checkpoint.batch(&pretrained),
            )?;
            let features = crate::eval::text::sentence_features(&gpu, &model, set.as_ref(), vocab)?;
            let source = (args.data.as_ref())
                .map_or_else(|| "built-in text".to_string(), |p| p.display().to_string());
            (source, features.z)
        }
        ModelConfig::Audio(_) => {
            let (set, source) = crate::eval::audio::open_eval_audio(
                args.data.as_deref(),
                args.split,
                args.limit,
                args.on_bad_image,
            )?;
            let gpu = crate::gpu::Gpu::new(&(&args.adapter).into())?;
            eprintln!("adapter: {}; data: {}", gpu.info.name, set.describe());
            let encoder = AudioEncoder::new(
                &gpu,
                &pretrained.config,
                &pretrained.params,
                args.checkpoint.batch(&pretrained),
            )?;
            let features = if args.frames {
                encoder.extract_frames(&gpu, set.as_ref())?
            } else {
                encoder.extract(&gpu, set.as_ref())?
            };
            (source, features.z)
        }
    };
    features.save(
        &args.out,
        &[
            ("checkpoint", pretrained.path.display().to_string()),
            ("step", pretrained.step.to_string()),
            ("config", pretrained.config.to_toml()),
            ("data", source),
        ],
    )?;
    println!(
        "wrote {} features of dimension {} ({}) to {}",
        features.len(),
        features.dim,
        if features.labels.is_some() {
            "with labels"
        } else {
            "no labels"
        },
        args.out.display()
    );
    Ok(())
}
