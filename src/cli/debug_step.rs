//! `cpc debug-step`: one forward and backward on given weights and crops, with the loss,
//! per-step losses and accuracies and every parameter gradient written to safetensors, for
//! checking against other implementations (e.g. a PyTorch module with the same names).

use std::path::PathBuf;

use clap::Args;

use crate::cli::AdapterArgs;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::{CpcModel, ModelSpec, ParamLayout};
use crate::ops::adam::AdamConfig;
use crate::train::pretrain::flat_from_checkpoint;
use crate::train::Checkpoint;

#[derive(Args, Clone, Debug)]
pub struct DebugStepArgs {
    /// Parameters under the model's PyTorch names (a cpc checkpoint will do).
    #[arg(long)]
    pub init: PathBuf,
    /// A tensor `crops` of shape [B, 3, S, S], already normalised.
    #[arg(long)]
    pub batch: PathBuf,
    /// Where to write loss, loss_k, accuracy_k and grad.<name> for every parameter.
    #[arg(long)]
    pub dump: PathBuf,
    /// Model preset (the per-patch jitter is turned off: it is random).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// A TOML file overriding the preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

pub fn run(args: &DebugStepArgs) -> Result<()> {
    let cfg = crate::cli::load_config(&args.preset, args.config.as_deref())?;
    let mut spec = ModelSpec::from(&cfg.model);
    spec.jitter = 0;
    let layout = ParamLayout::new(&spec);
    let params = flat_from_checkpoint(&layout, &Checkpoint::load(&args.init)?, "", &args.init)?;
    let batch_ck = Checkpoint::load(&args.batch)?;
    let crops = batch_ck.get("crops").ok_or_else(|| Error::Checkpoint {
        path: args.batch.clone(),
        message: "has no tensor `crops` [B, 3, S, S]".into(),
    })?;
    let s = spec.crop;
    if crops.shape.len() != 4 || crops.shape[1..] != [3, s, s] {
        return Err(Error::Checkpoint {
            path: args.batch.clone(),
            message: format!(
                "crops has shape {:?}, the model needs [B, 3, {s}, {s}]",
                crops.shape
            ),
        });
    }
    let gpu = Gpu::new(&(&args.adapter).into())?;
    let model = CpcModel::new(&gpu, &spec, crops.shape[0], &params, AdamConfig::default())?;
    model.set_inputs(&gpu, &crops.data, 1, 0.0, 0)?;
    model.run(&gpu, |m, pass| m.record_gradients(pass))?;
    let stats = model.read_stats(&gpu)?;
    let grads = model.buffers.grads.read(&gpu)?;
    let mut out = Checkpoint::new();
    out.push("loss", vec![1], vec![stats.loss]);
    out.push("loss_k", vec![stats.loss_k.len()], stats.loss_k.clone());
    out.push(
        "accuracy_k",
        vec![stats.accuracy_k.len()],
        stats.accuracy_k.clone(),
    );
    for v in &layout.views {
        out.push(
            format!("grad.{}", v.name),
            v.shape.clone(),
            layout.slice(&grads, &v.name).to_vec(),
        );
    }
    out.metadata.insert("config".into(), cfg.to_toml());
    out.save(&args.dump)?;
    println!(
        "loss {:.6}, loss_k {:?}, accuracy_k {:?}; wrote {}",
        stats.loss,
        stats.loss_k,
        stats.accuracy_k,
        args.dump.display()
    );
    Ok(())
}
