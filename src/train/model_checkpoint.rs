//! The CPC model's checkpoint: what `cpc pretrain` writes, and the one reader (with one
//! validator) that resume, `cpc probe`, `cpc embed` and `cpc debug-step` share.
//!
//! On disk it is a [`Checkpoint`] (safetensors, replaced atomically) holding
//! - every parameter under its PyTorch name and shape (model::params), and Adam's moments
//!   under `optimizer.exp_avg.<name>` and `optimizer.exp_avg_sq.<name>`;
//! - metadata `format` ([`CHECKPOINT_FORMAT`]), `step` (optimiser steps done), `config`
//!   (the whole configuration as TOML), `fingerprint` (of its model fields), `seed`, and the
//!   data loader's `loader_epoch` and `loader_position`; a text model's also its
//!   `vocabulary` (data::text::vocab's stored form), so that the checkpoint reads text alone.
//!
//! What [`ModelCheckpoint::read`] refuses, naming the file and the reason: another format
//! version; a configuration this version cannot read, or whose fingerprint does not match;
//! a model other than the one expected (the differing fields named); a tensor missing,
//! misshapen, or not used by the model; values that are not finite (the tensors named). What
//! [`ModelCheckpoint::save`] refuses: tensors that are not all finite, so a checkpoint on
//! disk always holds a model that can be trained on.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::checkpoint::Checkpoint;
use super::config::Config;
use crate::data::text::vocab::{self, Vocabulary};
use crate::data::LoaderState;
use crate::error::{Error, Result};
use crate::model::ParamLayout;

/// The `format` metadata of the checkpoints this version writes and reads.
pub const CHECKPOINT_FORMAT: &str = "cpc-checkpoint-1";
/// Name prefixes of Adam's first and second moments.
pub const EXP_AVG: &str = "optimizer.exp_avg.";
pub const EXP_AVG_SQ: &str = "optimizer.exp_avg_sq.";

/// Adam's moments, flat buffers of the model's [`ParamLayout`].
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
}

/// A trained (or initial) model and where its training stands.
#[derive(Clone, Debug)]
pub struct ModelCheckpoint {
    /// The file it was read from or will be written to.
    pub path: PathBuf,
    pub config: Config,
    /// Optimiser steps done.
    pub step: u64,
    /// The flat parameter vector of the model's [`ParamLayout`].
    pub params: Vec<f32>,
    /// Present in every checkpoint `cpc pretrain` writes; evaluation does not need them.
    pub moments: Option<Moments>,
    /// Where the data loader stands; needed to resume.
    pub loader: Option<LoaderState>,
    /// The words a text model's token ids stand for (None for images and audio).
    pub vocabulary: Option<Vocabulary>,
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.into(),
        message: message.into(),
    }
}

/// The prefixes under which a flat buffer of the layout is stored.
const PREFIXES: [&str; 3] = ["", EXP_AVG, EXP_AVG_SQ];

impl ModelCheckpoint {
    /// Read and validate the checkpoint at `path` (see the module doc for what is refused).
    /// With `expect`, the checkpoint's model fields must equal its model fields (training
    /// fields may differ).
    pub fn read(path: &Path, expect: Option<&Config>) -> Result<ModelCheckpoint> {
        let ck = Checkpoint::load(path)?;
        match ck.meta("format") {
            Some(CHECKPOINT_FORMAT) => {}
            Some(other) => {
                return Err(err(
                    path,
                    format!(
                        "has format `{other}`, but this version of cpc reads `{CHECKPOINT_FORMAT}`"
                    ),
                ))
            }
            None => {
                return Err(err(
                    path,
                    format!(
                        "has no `format` metadata: not written by `cpc pretrain` (format \
                         `{CHECKPOINT_FORMAT}`)"
                    ),
                ))
            }
        }
        let text = ck
            .meta("config")
            .ok_or_else(|| err(path, "has no `config` metadata"))?;
        let config = Config::from_toml(text).map_err(|e| {
            err(
                path,
                format!("its configuration cannot be read by this version: {e}"),
            )
        })?;
        match ck.meta("fingerprint") {
            Some(saved) if saved == config.fingerprint() => {}
            Some(saved) => {
                return Err(err(
                    path,
                    format!(
                        "its model fingerprint {saved} does not match its configuration's {} \
                         (written by another version?)",
                        config.fingerprint()
                    ),
                ))
            }
            None => return Err(err(path, "has no `fingerprint` metadata")),
        }
        if let Some(expect) = expect {
            let diff = expect.model_differences(&config);
            if !diff.is_empty() {
                return Err(err(
                    path,
                    format!(
                        "was written by another model configuration (expected != the \
                         checkpoint's): {}",
                        diff.join("; ")
                    ),
                ));
            }
        }
        let number = |key: &str| -> Result<Option<u64>> {
            ck.meta(key)
                .map(|s| {
                    s.parse().map_err(|_| {
                        err(path, format!("its `{key}` metadata `{s}` is not a count"))
                    })
                })
                .transpose()
        };
        let step = number("step")?.ok_or_else(|| err(path, "has no `step` metadata"))?;
        let loader = match (number("loader_epoch")?, number("loader_position")?) {
            (Some(epoch), Some(position)) => Some(LoaderState { epoch, position }),
            (None, None) => None,
            _ => {
                return Err(err(
                    path,
                    "has one of `loader_epoch` and `loader_position` but not the other",
                ))
            }
        };
        let vocabulary = (ck.meta(vocab::METADATA_KEY))
            .map(|json| {
                Vocabulary::from_json(json)
                    .map_err(|e| err(path, format!("its `{}` metadata: {e}", vocab::METADATA_KEY)))
            })
            .transpose()?;
        if let crate::model::ModelConfig::Text(t) = &config.model {
            match &vocabulary {
                None => {
                    return Err(err(
                        path,
                        format!(
                            "is a text model's but has no `{}` metadata: the words its token \
                             ids stand for",
                            vocab::METADATA_KEY
                        ),
                    ))
                }
                Some(v) if v.len() > t.vocab_size as usize => {
                    return Err(err(
                        path,
                        format!(
                            "its vocabulary has {} words, more than the model's {} embedding rows \
                             (model.vocab_size)",
                            v.len(),
                            t.vocab_size
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        let layout = config.model.layout();
        let (params, moments) = flat_tensors(&layout, &ck, path)?;
        Ok(ModelCheckpoint {
            path: path.into(),
            config,
            step,
            params,
            moments,
            loader,
            vocabulary,
        })
    }

    /// The checkpoint as tensors and metadata. Refused, naming the tensors, when any value is
    /// not finite: such a model cannot be trained on, and an earlier checkpoint is better
    /// kept than replaced by it.
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let ck = self.tensors()?;
        let bad = non_finite(&ck);
        if !bad.is_empty() {
            return Err(err(
                &self.path,
                format!("not written: {}", describe_non_finite(&bad)),
            ));
        }
        Ok(ck)
    }

    /// The tensors that hold a NaN or an infinity, each with how many: "name (n values)".
    pub fn non_finite_tensors(&self) -> Result<Vec<String>> {
        Ok(non_finite(&self.tensors()?)
            .iter()
            .map(|(name, n)| format!("{name} ({n} values)"))
            .collect())
    }

    /// Tensors and metadata, unchecked.
    fn tensors(&self) -> Result<Checkpoint> {
        let layout = self.config.model.layout();
        let mut ck = Checkpoint::new();
        let mut flats = vec![("", &self.params)];
        if let Some(m) = &self.moments {
            flats.push((EXP_AVG, &m.exp_avg));
            flats.push((EXP_AVG_SQ, &m.exp_avg_sq));
        }
        for (prefix, flat) in flats {
            if flat.len() != layout.total {
                return Err(err(
                    &self.path,
                    format!(
                        "{} values for the {} of the model's layout",
                        flat.len(),
                        layout.total
                    ),
                ));
            }
            for view in &layout.views {
                ck.push(
                    format!("{prefix}{}", view.name),
                    view.shape.clone(),
                    layout.slice(flat, &view.name).to_vec(),
                );
            }
        }
        let mut meta = vec![
            ("format", CHECKPOINT_FORMAT.to_string()),
            ("step", self.step.to_string()),
            ("config", self.config.to_toml()),
            ("fingerprint", self.config.fingerprint()),
            ("seed", self.config.train.seed.to_string()),
        ];
        if let Some(l) = self.loader {
            meta.push(("loader_epoch", l.epoch.to_string()));
            meta.push(("loader_position", l.position.to_string()));
        }
        if let Some(v) = &self.vocabulary {
            meta.push((vocab::METADATA_KEY, v.to_json()));
        }
        for (k, v) in meta {
            ck.metadata.insert(k.into(), v);
        }
        Ok(ck)
    }

    /// Write to [`ModelCheckpoint::path`] atomically; nothing is written when a value is not
    /// finite (see [`ModelCheckpoint::to_checkpoint`]).
    pub fn save(&self) -> Result<()> {
        self.to_checkpoint()?.save(&self.path)
    }

    /// The same configuration with fresh weights from its own training seed: the encoder
    /// the pretraining run started from, the probe's baseline.
    pub fn random_params(&self) -> Vec<f32> {
        self.config.model.layout().init(self.config.train.seed)
    }
}

/// The parameters in a file of bare weights for the model of `config` (a checkpoint of
/// another implementation under the same names), validated as [`ModelCheckpoint::read`]
/// validates tensors: each present with its shape, none the model does not use, all finite.
pub fn read_weights(path: &Path, config: &Config) -> Result<Vec<f32>> {
    let ck = Checkpoint::load(path)?;
    let layout = config.model.layout();
    Ok(flat_tensors(&layout, &ck, path)?.0)
}

/// The flat parameters (and moments, when the file has any) of `layout` from `ck`'s tensors.
fn flat_tensors(
    layout: &ParamLayout,
    ck: &Checkpoint,
    path: &Path,
) -> Result<(Vec<f32>, Option<Moments>)> {
    let known: HashSet<String> = PREFIXES
        .iter()
        .flat_map(|p| layout.views.iter().map(move |v| format!("{p}{}", v.name)))
        .collect();
    let unused: Vec<&str> = ck
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !known.contains(*n))
        .collect();
    if !unused.is_empty() {
        return Err(err(
            path,
            format!(
                "holds {} tensor(s) that the model does not use: {} (the configuration that \
                 uses them was not given?)",
                unused.len(),
                list(&unused)
            ),
        ));
    }
    let bad = non_finite(ck);
    if !bad.is_empty() {
        return Err(err(path, describe_non_finite(&bad)));
    }
    let params = flat(layout, ck, "", path)?;
    let has_moments = ck
        .tensors
        .iter()
        .any(|t| t.name.starts_with(EXP_AVG) || t.name.starts_with(EXP_AVG_SQ));
    let moments = if has_moments {
        Some(Moments {
            exp_avg: flat(layout, ck, EXP_AVG, path)?,
            exp_avg_sq: flat(layout, ck, EXP_AVG_SQ, path)?,
        })
    } else {
        None
    };
    Ok((params, moments))
}

/// One flat buffer of `layout` from the tensors named `prefix` + name; every one must be
/// there with its shape. They are all checked before the buffer is allocated, so a
/// configuration that claims a large model is refused by its file, not by the allocator.
fn flat(layout: &ParamLayout, ck: &Checkpoint, prefix: &str, path: &Path) -> Result<Vec<f32>> {
    let mut found = Vec::with_capacity(layout.views.len());
    for view in &layout.views {
        let name = format!("{prefix}{}", view.name);
        let t = ck.get(&name).ok_or_else(|| {
            err(
                path,
                format!("has no tensor {name} (shape {:?})", view.shape),
            )
        })?;
        if t.shape != view.shape {
            return Err(err(
                path,
                format!(
                    "tensor {name} has shape {:?}, the model needs {:?}",
                    t.shape, view.shape
                ),
            ));
        }
        found.push((view, t));
    }
    let mut flat = vec![0.0; layout.total];
    for (view, t) in found {
        flat[view.offset..view.offset + view.len()].copy_from_slice(&t.data);
    }
    Ok(flat)
}

/// (name, count of values that are NaN or infinite) of every tensor that has any.
fn non_finite(ck: &Checkpoint) -> Vec<(&str, usize)> {
    ck.tensors
        .iter()
        .filter_map(|t| {
            let n = t.data.iter().filter(|x| !x.is_finite()).count();
            (n > 0).then_some((t.name.as_str(), n))
        })
        .collect()
}

fn describe_non_finite(bad: &[(&str, usize)]) -> String {
    let named: Vec<String> = bad
        .iter()
        .map(|(name, n)| format!("{name} ({n} values)"))
        .collect();
    let named: Vec<&str> = named.iter().map(String::as_str).collect();
    format!(
        "{} tensor(s) hold values that are NaN or infinite: {}",
        bad.len(),
        list(&named)
    )
}

/// The first eight names, then how many more.
fn list(names: &[&str]) -> String {
    let mut s = names.iter().take(8).copied().collect::<Vec<_>>().join(", ");
    if names.len() > 8 {
        s.push_str(&format!(" and {} more", names.len() - 8));
    }
    s
}
