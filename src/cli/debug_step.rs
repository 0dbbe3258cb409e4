//! `cpc debug-step`: one forward and backward on given weights and examples (image crops,
//! audio clips or text passages), with the loss,
//! per-offset losses and accuracies, every parameter gradient and the activations on the way
//! written to safetensors, for checking against another implementation (e.g. a PyTorch
//! module with the same names) and for finding where the two part.
//!
//! The model is the one the `--init` checkpoint was trained as (its stored configuration);
//! `--preset` / `--config` then only say what it must be, and are needed for bare weights
//! without cpc's metadata. The per-patch jitter is random, so it is turned off, and the dump
//! records the configuration as it ran (jitter 0); audio and text draw nothing random in a
//! step.

use std::path::{Path, PathBuf};

use clap::Args;
use safetensors::tensor::{Dtype, SafeTensors};

use crate::cli::AdapterArgs;
use crate::data::text::vocab::PAD;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::{memory, CpcModel, Examples, ParamLayout, Spec, TextSpec};
use crate::ops::adam::AdamConfig;
use crate::ops::embedding::PaddedSentences;
use crate::train::model_checkpoint::read_weights;
use crate::train::{Checkpoint, Config, ModelCheckpoint};

#[derive(Args, Clone, Debug)]
pub struct DebugStepArgs {
    /// Parameters under the model's PyTorch names: a cpc checkpoint (its configuration is
    /// used), or bare weights with --preset or --config.
    #[arg(long)]
    pub init: PathBuf,
    /// The examples: a tensor `crops` [B, 3, S, S], already normalised (images), `clips`
    /// [B, L] (audio windows of L samples), or integer `ids` [B, L, W] (text: B passages of
    /// L sentences of W token ids, PAD = 0 past each sentence's end).
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

/// The examples of a batch file, of the model's kind: f32 values (crops, clips) or padded
/// sentences.
enum Batch {
    Values(Vec<f32>),
    Sentences(PaddedSentences),
}

impl<'a> From<&'a Batch> for Examples<'a> {
    fn from(b: &'a Batch) -> Examples<'a> {
        match b {
            Batch::Values(v) => Examples::Values(v),
            Batch::Sentences(s) => Examples::Sentences(s),
        }
    }
}

fn batch_err(path: &Path, message: String) -> Error {
    Error::Checkpoint {
        path: path.into(),
        message,
    }
}

/// The f32 tensor `name` of `path`, of shape [B] + `item` with B >= 1 and every value
/// finite (`what` describes the shape in errors).
fn read_values(path: &Path, name: &str, item: &[usize], what: &str) -> Result<(usize, Batch)> {
    let ck = Checkpoint::load(path)?;
    let t = ck
        .get(name)
        .ok_or_else(|| batch_err(path, format!("has no tensor `{name}` {what}")))?;
    if t.shape.len() != item.len() + 1 || t.shape[0] == 0 || t.shape[1..] != *item {
        return Err(batch_err(
            path,
            format!(
                "{name} has shape {:?}, the model needs {what} with B >= 1",
                t.shape
            ),
        ));
    }
    if let Some(bad) = t.data.iter().position(|x| !x.is_finite()) {
        return Err(batch_err(
            path,
            format!("{name} holds a value that is not finite (element {bad})"),
        ));
    }
    Ok((t.shape[0], Batch::Values(t.data.clone())))
}

/// The text batch of `path`: integer `ids` [B, L, W] (int64 as torch writes them, int32 or
/// uint32), each sentence's words from its first position up to its first PAD, PAD after.
fn read_sentences(path: &Path, spec: &TextSpec) -> Result<(usize, Batch)> {
    let (l, w) = (spec.sentences, spec.max_words);
    let what = format!("[B, {l}, {w}] (integer token ids)");
    let bytes = std::fs::read(path).map_err(|e| batch_err(path, format!("cannot read: {e}")))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| batch_err(path, format!("not a safetensors file ({e})")))?;
    let t = file
        .tensor("ids")
        .map_err(|_| batch_err(path, format!("has no tensor `ids` {what}")))?;
    let shape = t.shape();
    if shape.len() != 3 || shape[0] == 0 || shape[1..] != [l, w] {
        return Err(batch_err(
            path,
            format!("ids has shape {shape:?}, the model needs {what} with B >= 1"),
        ));
    }
    let raw: Vec<i64> = match t.dtype() {
        Dtype::I64 => (t.data().chunks_exact(8))
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        Dtype::I32 => (t.data().chunks_exact(4))
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
            .collect(),
        Dtype::U32 => (t.data().chunks_exact(4))
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
            .collect(),
        other => {
            return Err(batch_err(
                path,
                format!("ids has dtype {other:?}; token ids are I64, I32 or U32"),
            ))
        }
    };
    let mut ids = Vec::with_capacity(raw.len());
    for (i, &id) in raw.iter().enumerate() {
        let id = u32::try_from(id)
            .ok()
            .filter(|&id| (id as usize) < spec.vocab)
            .ok_or_else(|| {
                batch_err(
                    path,
                    format!(
                        "ids element {i} is {id}, outside the vocabulary's 0..{}",
                        spec.vocab
                    ),
                )
            })?;
        ids.push(id);
    }
    let lengths = (ids.chunks(w))
        .map(|row| row.iter().position(|&id| id == PAD).unwrap_or(w) as u32)
        .collect();
    let sentences = PaddedSentences::new(w, ids, lengths, spec.vocab)
        .map_err(|e| batch_err(path, e.to_string()))?;
    Ok((shape[0], Batch::Sentences(sentences)))
}

/// The batch file's examples for `spec` (crops, clips or token ids), and how many.
fn read_batch(path: &Path, spec: &Spec) -> Result<(usize, Batch)> {
    match spec {
        Spec::Vision(v) => {
            let s = v.crop;
            read_values(path, "crops", &[3, s, s], &format!("[B, 3, {s}, {s}]"))
        }
        Spec::Audio(a) => {
            let l = a.window;
            read_values(path, "clips", &[l], &format!("[B, {l}]"))
        }
        Spec::Text(t) => read_sentences(path, t),
    }
}

pub fn run(args: &DebugStepArgs) -> Result<()> {
    let (mut cfg, params, step) = weights(args)?;
    // Jitter draws random windows: off, and the dump's configuration says so.
    if let Some(v) = cfg.model.vision_mut() {
        v.jitter = 0;
    }
    let spec = Spec::from(&cfg.model);
    let layout = ParamLayout::new(&spec);
    let (batch, input) = read_batch(&args.batch, &spec)?;
    let gpu = Gpu::new(&(&args.adapter).into())?;
    // The batch must fit the adapter before anything is allocated.
    memory::check_fits(&gpu, &spec, batch, None)?;
    let model = CpcModel::new(&gpu, &spec, batch, &params, AdamConfig::default())?;
    model.set_inputs(&gpu, &input, 1, 0.0, 0)?;
    model.run(&gpu, |m, pass| m.record_gradients(pass))?;
    let stats = model.read_stats(&gpu)?;
    let grads = model.buffers.grads.read(&gpu)?;
    // z and c as [B, T, W, .] for images (grid rows by columns), [B, T, .] for one
    // sequence an example (audio frames, a passage's sentences).
    let seq = spec.sequences(batch);
    let rows = |width: usize| match spec {
        Spec::Vision(_) => vec![batch, seq.steps, seq.width, width],
        _ => vec![batch, seq.steps, width],
    };
    let (d, h) = (spec.dim(), spec.hidden());

    let mut out = Checkpoint::new();
    out.push("loss", vec![1], vec![stats.loss]);
    out.push("loss_k", vec![stats.loss_k.len()], stats.loss_k.clone());
    out.push(
        "accuracy_k",
        vec![stats.accuracy_k.len()],
        stats.accuracy_k.clone(),
    );
    // Activations, in the order they are computed: patch vectors, contexts, scores.
    out.push("z", rows(d), model.z.read(&gpu)?);
    out.push("c", rows(h), model.c.read(&gpu)?);
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
        "loss {:.6}, loss_k {:?}, accuracy_k {:?} (offsets {offsets:?}{}); wrote {}",
        stats.loss,
        stats.loss_k,
        stats.accuracy_k,
        if cfg.model.vision().is_some() {
            ", jitter off"
        } else {
            ""
        },
        args.dump.display()
    );
    Ok(())
}
