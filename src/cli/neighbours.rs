//! `cpc neighbours`: for a handful of query images, the nearest images of the same set by
//! cosine similarity of their features, as one PNG grid, and as text on stdout.

use std::path::PathBuf;

use clap::Args;

use crate::cli::{AdapterArgs, CheckpointArgs};
use crate::data::{Format, OnBadFile, Split};
use crate::error::Result;
use crate::eval::neighbours::{describe, draw_grid, nearest, queries};

#[derive(Args, Clone, Debug)]
pub struct NeighboursArgs {
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Images: a folder, CIFAR-10 or STL-10 binaries. Default: the built-in data set.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How to read --data: auto, folder, cifar10, stl10 or builtin.
    #[arg(long, default_value = "auto")]
    pub format: Format,
    /// Which split: train, test or unlabeled.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Search among only this many images, a fixed random sample of the set.
    #[arg(long, value_parser = crate::cli::at_least_one())]
    pub limit: Option<usize>,
    /// Query images, spread evenly over the set (one row of the grid each).
    #[arg(long, default_value_t = 8, value_parser = crate::cli::at_least_one())]
    pub queries: usize,
    /// Neighbours shown per query.
    #[arg(long, short = 'k', default_value_t = 8, value_parser = crate::cli::at_least_one())]
    pub neighbours: usize,
    /// An image that cannot be decoded: stop, or skip it.
    #[arg(
        long = "on-bad-file",
        visible_alias = "on-bad-image",
        default_value = "stop"
    )]
    pub on_bad_image: OnBadFile,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

pub fn run(args: &NeighboursArgs) -> Result<()> {
    let (pretrained, set, _, features) = crate::cli::encode_set(
        &args.checkpoint,
        args.data.as_deref(),
        args.format,
        args.split,
        args.limit,
        args.on_bad_image,
        &args.adapter,
    )?;
    let table = nearest(
        &features,
        &queries(features.len(), args.queries),
        args.neighbours,
    );
    let crop = pretrained
        .config
        .model
        .require_vision("cpc neighbours")?
        .crop as usize;
    draw_grid(set.as_ref(), &features, crop, &table, &args.out)?;
    print!("{}", describe(&features, &table));
    println!("wrote {}", args.out.display());
    Ok(())
}
