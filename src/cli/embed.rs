//! `cpc embed`: every image's mean-pooled patch vector (centre crop, no augmentation) from a
//! checkpoint's encoder, with labels and names where the data has them, in one safetensors
//! file (see eval::features for its layout).

use std::path::PathBuf;

use clap::Args;

use crate::cli::{AdapterArgs, CheckpointArgs};
use crate::data::{Format, OnBadFile, Split};
use crate::error::Result;

#[derive(Args, Clone, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Images: a folder, CIFAR-10 or STL-10 binaries. Default: the built-in data set.
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
    /// The feature file to write (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

pub fn run(args: &EmbedArgs) -> Result<()> {
    let (pretrained, _set, source, features) = crate::cli::encode_set(
        &args.checkpoint,
        args.data.as_deref(),
        args.format,
        args.split,
        args.limit,
        args.on_bad_image,
        &args.adapter,
    )?;
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
