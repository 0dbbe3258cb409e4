//! `cpc`: Contrastive Predictive Coding for vision on any GPU.

use clap::{Parser, Subcommand};

use cpc::cli::{self, AdapterArgs};

#[derive(Parser)]
#[command(
    name = "cpc",
    version,
    about = "Contrastive Predictive Coding for vision on any GPU (wgpu + WGSL)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the adapters wgpu finds, which one will be used and why, and its features and limits.
    Info {
        #[command(flatten)]
        adapter: AdapterArgs,
    },
    /// Pretrain an encoder with CPC (default: the tiny preset on the built-in data).
    Pretrain(cli::pretrain::PretrainArgs),
    /// One forward and backward on given weights and crops; dump loss and gradients.
    DebugStep(cli::debug_step::DebugStepArgs),
    /// Time every kernel of a training step: GPU time, FLOPs, bytes, GFLOP/s, idle time.
    Profile(cli::profile::ProfileArgs),
    /// Write every image's features (mean-pooled patch vectors) to a safetensors file.
    Embed(cli::embed::EmbedArgs),
    /// Linear probe: a pretrained encoder against the random-weight one, top-1 and top-5.
    Probe(cli::probe::ProbeArgs),
    /// The nearest images of a few queries by feature similarity, as one PNG grid.
    Neighbours(cli::neighbours::NeighboursArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info { adapter } => cli::info::run(&adapter.into()),
        Command::Pretrain(args) => cli::pretrain::run(args),
        Command::DebugStep(args) => cli::debug_step::run(args),
        Command::Profile(args) => cli::profile::run(args),
        Command::Embed(args) => cli::embed::run(args),
        Command::Probe(args) => cli::probe::run(args),
        Command::Neighbours(args) => cli::neighbours::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
