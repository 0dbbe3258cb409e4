//! `cpc debug-step`: one forward and backward on given weights and crops, with the loss,
//! per-offset losses and accuracies, every parameter gradient and the activations on the way
//! written to safetensors, for checking against another implementation (e.g. a PyTorch
//! module with the same names) and for finding where the two part.
//!
//! The model is the one the `--init` checkpoint was trained as (its stored configuration);
//! `--preset` / `--config` then only say what it must be, and are needed for bare weights
//! without cpc's metadata. The per-patch jitter is random, so it is turned off, and the dump
//! records the configuration as it ran (jitter 0).

use std::path::PathBuf;

use clap::Args;

use crate::cli::AdapterArgs;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::{memory, CpcModel, ModelSpec, ParamLayout};
use crate::ops::adam::AdamConfig;
use crate::train::model_checkpoint::read_weights;
use crate::train::{Checkpoint, Config, ModelCheckpoint};

#[derive(Args, Clone, Debug)]
pub struct DebugStepArgs {
    /// Parameters under the model's PyTorch names: a cpc checkpoint (its configuration is
    /// used), or bare weights with --preset or --config.
    #[arg(long)]
    pub init: PathBuf,
    /// A tensor `crops` of shape [B, 3, S, S], already normalised.
    #[arg(long)]
    pub batch: PathBuf,
    /// Where to write the losses, accuracies, activations and gradients (see the README).
    #[arg(long)]
    pub dump: PathBuf,
    /// The model the weights are for (default: the configuration in the --init checkpoint,
    /// which must then equal it).
    #[arg(long)]
    pub preset: Option<String>,
    /// A TOML file overriding the preset (tiny unless --preset names another).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

/// The configuration and parameters to run: the checkpoint's own, or the flags' for bare
/// weights. Both readers refuse tensors the model does not use and values that are not
/// finite, naming them.
fn weights(args: &DebugStepArgs) -> Result<(Config, Vec<f32>, Option<u64>)> {
    let asked = match (&args.preset, &args.config) {
        (None, None) => None,
        (preset, config) => Some(crate::cli::load_config(
            preset.as_deref().unwrap_or("tiny"),
            config.as_deref(),
        )?),
    };
    // A cpc checkpoint (this version's or another's: the reader names the version) carries
    // its configuration; other files (PyTorch's, whose `format` is "pt") are bare weights.
    let init = Checkpoint::load(&args.init)?;
    let is_cpc = init
        .meta("format")
        .is_some_and(|f| f.starts_with("cpc-checkpoint"))
        || init.meta("config").is_some();
    drop(init);
    if is_cpc {
        let ck = ModelCheckpoint::read(&args.init, asked.as_ref())?;
        return Ok((ck.config, ck.params, Some(ck.step)));
    }
    let config = asked.ok_or_else(|| Error::Checkpoint {
        path: args.init.clone(),
        message: "holds no cpc configuration (not a cpc checkpoint): say which model the \
                  weights are for with --preset or --config"
            .into(),
    })?;
    let params = read_weights(&args.init, &config)?;
    Ok((config, params, None))
}

pub fn run(args: &DebugStepArgs) -> Result<()> {
    let (mut cfg, params, step) = weights(args)?;
    // Jitter draws random windows: off, and the dump's configuration says so.
    cfg.model.require_vision("cpc debug-step")?;
    if let Some(v) = cfg.model.vision_mut() {
        v.jitter = 0;
    }
    let spec = ModelSpec::from(cfg.model.require_vision("cpc debug-step")?);
    let layout = ParamLayout::new(&spec);
    let batch_ck = Checkpoint::load(&args.batch)?;
    let crops = batch_ck.get("crops").ok_or_else(|| Error::Checkpoint {
        path: args.batch.clone(),
        message: "has no tensor `crops` [B, 3, S, S]".into(),
    })?;
    let s = spec.crop;
    if crops.shape.len() != 4 || crops.shape[0] == 0 || crops.shape[1..] != [3, s, s] {
        return Err(Error::Checkpoint {
            path: args.batch.clone(),
            message: format!(
                "crops has shape {:?}, the model needs [B, 3, {s}, {s}] with B >= 1",
                crops.shape
            ),
        });
    }
    if let Some(bad) = crops.data.iter().position(|x| !x.is_finite()) {
        return Err(Error::Checkpoint {
            path: args.batch.clone(),
            message: format!("crops holds a value that is not finite (element {bad})"),
        });
    }
    let batch = crops.shape[0];
    let gpu = Gpu::new(&(&args.adapter).into())?;
    // The crops file's batch must fit the adapter before anything is allocated.
    memory::check_fits(&gpu, &spec, batch, None)?;
    let model = CpcModel::new(&gpu, &spec, batch, &params, AdamConfig::default())?;
    model.set_inputs(&gpu, &crops.data, 1, 0.0, 0)?;
    model.run(&gpu, |m, pass| m.record_gradients(pass))?;
    let stats = model.read_stats(&gpu)?;
    let grads = model.buffers.grads.read(&gpu)?;
    let (g, d, h) = (spec.grid, spec.dim(), spec.hidden);

    let mut out = Checkpoint::new();
    out.push("loss", vec![1], vec![stats.loss]);
    out.push("loss_k", vec![stats.loss_k.len()], stats.loss_k.clone());
    out.push(
        "accuracy_k",
        vec![stats.accuracy_k.len()],
        stats.accuracy_k.clone(),
    );
    // Activations, in the order they are computed: patch vectors, contexts, scores.
    out.push("z", vec![batch, g, g, d], model.z.read(&gpu)?);
    out.push("c", vec![batch, g, g, h], model.c.read(&gpu)?);
    for (k, scores) in model.scores.iter().enumerate() {
        out.push(
            format!("scores.{k}"),
            scores.shape.clone(),
            scores.read(&gpu)?,
        );
    }
    for v in &layout.views {
        out.push(
            format!("grad.{}", v.name),
            v.shape.clone(),
            layout.slice(&grads, &v.name).to_vec(),
        );
    }
    let offsets = cfg.model.offsets();
    out.metadata.insert("config".into(), cfg.to_toml());
    out.metadata.insert(
        "offsets".into(),
        serde_json::to_string(&offsets).expect("numbers serialise"),
    );
    out.metadata
        .insert("init".into(), args.init.display().to_string());
    if let Some(step) = step {
        out.metadata.insert("step".into(), step.to_string());
    }
    out.metadata.insert(
        "adapter".into(),
        format!("{} ({:?})", gpu.info.name, gpu.info.backend),
    );
    out.save(&args.dump)?;
    println!(
        "loss {:.6}, loss_k {:?}, accuracy_k {:?} (offsets {offsets:?}, jitter off); wrote {}",
        stats.loss,
        stats.loss_k,
        stats.accuracy_k,
        args.dump.display()
    );
    Ok(())
}
