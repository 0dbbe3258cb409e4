//! Image features from a frozen encoder: the checkpoint it comes from, the encoder planned
//! on the GPU, one mean-pooled D-vector per image (centre crop, no jitter, no augmentation),
//! and the feature file `cpc embed` writes.
//!
//! Feature file (safetensors, written atomically, format `cpc-features-1`):
//!   tensor `features` [N, D] f32: row i is image i's mean patch vector;
//!   tensor `labels` [N] f32 (class indices, exact), only when every image has a label;
//!   metadata `format`, `names` (JSON list of N image names), `class_names` (JSON list, when
//!   the data names its classes), and what produced it: `checkpoint`, `step`, `config`, `data`.

use std::path::Path;

use crate::data::{Dataset, Sequential};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::{memory, CpcModel, Spec};
use crate::ops::adam::AdamConfig;
use crate::train::{Checkpoint, Config};

/// The `format` metadata of feature files.
pub const FEATURES_FORMAT: &str = "cpc-features-1";

/// Features of a set of images, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// D.
    pub dim: usize,
    /// [N, D], row-major.
    pub data: Vec<f32>,
    /// Class of each image, when every image has one.
    pub labels: Option<Vec<u32>>,
    /// Where each image comes from (file name, or "builtin:train#17").
    pub names: Vec<String>,
    /// Names of the classes by index, when the data names them.
    pub class_names: Option<Vec<String>>,
    /// The data set index of each row (images skipped as bad leave gaps); 0..N when read
    /// from a file.
    pub indices: Vec<usize>,
}

impl Features {
    /// N.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Write the feature file atomically, with `meta` (key, value) pairs added to the
    /// metadata. An empty set is refused before anything is written.
    pub fn save(&self, path: &Path, meta: &[(&str, String)]) -> Result<()> {
        let err = |message: String| Error::Data {
            path: path.display().to_string(),
            message,
        };
        if self.is_empty() {
            return Err(err("no images to write: nothing was written".into()));
        }
        let mut ck = Checkpoint::new();
        ck.push("features", vec![self.len(), self.dim], self.data.clone());
        if let Some(labels) = &self.labels {
            ck.push(
                "labels",
                vec![labels.len()],
                labels.iter().map(|&l| l as f32).collect(),
            );
        }
        ck.metadata.insert("format".into(), FEATURES_FORMAT.into());
        ck.metadata.insert(
            "names".into(),
            serde_json::to_string(&self.names).expect("strings serialise"),
        );
        if let Some(names) = &self.class_names {
            ck.metadata.insert(
                "class_names".into(),
                serde_json::to_string(names).expect("strings serialise"),
            );
        }
        for (k, v) in meta {
            ck.metadata.insert(k.to_string(), v.clone());
        }
        ck.save(path)
    }

    /// Read a feature file written by [`Features::save`]; an empty, truncated or foreign
    /// file is an error naming it.
    pub fn load(path: &Path) -> Result<Features> {
        let err = |message: String| Error::Data {
            path: path.display().to_string(),
            message,
        };
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(err("the feature file is empty (0 bytes)".into()));
        }
        let ck = Checkpoint::load(path)?;
        if ck.meta("format") != Some(FEATURES_FORMAT) {
            return Err(err(format!(
                "not a feature file of `cpc embed` (format {:?}, expected `{FEATURES_FORMAT}`)",
                ck.meta("format").unwrap_or("missing")
            )));
        }
        let feats = ck
            .get("features")
            .ok_or_else(|| err("has no `features` tensor".into()))?;
        let [n, dim] = feats.shape[..] else {
            return Err(err(format!(
                "`features` has shape {:?}, expected [images, D]",
                feats.shape
            )));
        };
        if n == 0 || dim == 0 {
            return Err(err(format!(
                "the feature file holds no features (shape [{n}, {dim}])"
            )));
        }
        let names: Vec<String> = ck
            .meta("names")
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| err(format!("bad `names` metadata: {e}")))?
            .unwrap_or_else(|| (0..n).map(|i| format!("#{i}")).collect());
        if names.len() != n {
            return Err(err(format!("{} names for {n} images", names.len())));
        }
        let labels = match ck.get("labels") {
            None => None,
            Some(t) if t.data.len() == n => Some(
                t.data
                    .iter()
                    .map(|&v| {
                        if v >= 0.0 && v.fract() == 0.0 {
                            Ok(v as u32)
                        } else {
                            Err(err(format!("label {v} is not a class index")))
                        }
                    })
                    .collect::<Result<Vec<u32>>>()?,
            ),
            Some(t) => {
                return Err(err(format!(
                    "`labels` has shape {:?} for {n} images",
                    t.shape
                )))
            }
        };
        let class_names = ck
            .meta("class_names")
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| err(format!("bad `class_names` metadata: {e}")))?;
        Ok(Features {
            dim,
            data: feats.data.clone(),
            labels,
            indices: (0..n).collect(),
            names,
            class_names,
        })
    }
}

/// The encoder's features z and the context's c of the same rows (an audio set's clips or
/// frames, sentences).
#[derive(Clone, Debug, PartialEq)]
pub struct FeaturePair {
    pub z: Features,
    pub c: Features,
}

/// The model of `config` (any modality) with parameters `params`, planned for batches of
/// `batch` examples to be read, not trained; checked against the adapter's limits first, so
/// a batch too large is an error that says which batch fits.
pub fn frozen_model(gpu: &Gpu, config: &Config, params: &[f32], batch: usize) -> Result<CpcModel> {
    let spec = Spec::from(&config.model);
    spec.validate()?;
    memory::check_fits(gpu, &spec, batch, None)?;
    CpcModel::new(gpu, spec, batch, params, AdamConfig::default())
}

/// Mean-pooled features of `crops` [n, 3, S, S] (any n) through `model`'s encoder, batch by
/// batch; the last batch is padded with zeros and the padding's features dropped. The
/// model's crops, patches and activations are overwritten; its parameters are not touched.
pub fn encode_crops(gpu: &Gpu, model: &CpcModel, crops: &[f32]) -> Result<Vec<f32>> {
    let s = model.spec.vision()?.crop;
    let per_image = 3 * s * s;
    let per_batch = model.batch * per_image;
    let d = model.spec.dim();
    let mut out = Vec::with_capacity(crops.len() / per_image * d);
    for chunk in crops.chunks(per_batch) {
        let n = chunk.len() / per_image;
        let feats = if n == model.batch {
            model.features(gpu, chunk)?
        } else {
            let mut padded = chunk.to_vec();
            padded.resize(per_batch, 0.0);
            model.features(gpu, &padded)?
        };
        out.extend_from_slice(&feats[..n * d]);
    }
    Ok(out)
}

/// A frozen encoder planned on the GPU for batches of `batch` images.
pub struct Encoder {
    pub model: CpcModel,
}

impl Encoder {
    /// Plan the model of `config` with parameters `params` (checked against the adapter's
    /// limits first, so a batch too large is an error that says which batch fits).
    pub fn new(gpu: &Gpu, config: &Config, params: &[f32], batch: usize) -> Result<Encoder> {
        config.model.require_vision("the encoder")?;
        Ok(Encoder {
            model: frozen_model(gpu, config, params, batch)?,
        })
    }

    /// Swap in other weights of the same configuration (the random baseline).
    pub fn set_params(&self, gpu: &Gpu, params: &[f32]) -> Result<()> {
        self.model.buffers.params.write(gpu, params)
    }

    /// Every image of `dataset` (centre crop), one D-vector each, with labels and names.
    /// Streams: images are decoded a batch at a time and only the features are kept.
    pub fn extract(&self, gpu: &Gpu, dataset: &dyn Dataset) -> Result<Features> {
        let mut out = Features {
            dim: self.model.spec.dim(),
            data: Vec::new(),
            labels: Some(Vec::new()),
            names: Vec::new(),
            class_names: class_names(dataset),
            indices: Vec::new(),
        };
        for batch in
            Sequential::new(dataset, self.model.spec.vision()?.crop, self.model.batch).workers(2)
        {
            let batch = batch?;
            out.data
                .extend(encode_crops(gpu, &self.model, &batch.images)?);
            out.push_batch(dataset, &batch);
        }
        out.finish();
        Ok(out)
    }
}

/// Features of `crops` through `model`'s encoder (see [`encode_crops`]).
pub fn features_of_crops(gpu: &Gpu, model: &CpcModel, crops: &CentreCrops) -> Result<Features> {
    Ok(Features {
        dim: model.spec.dim(),
        data: encode_crops(gpu, model, &crops.images)?,
        labels: crops.labels.clone(),
        names: crops.names.clone(),
        class_names: crops.class_names.clone(),
        indices: crops.indices.clone(),
    })
}

impl Features {
    /// Append a batch's labels, names and indices (its features are appended by the caller).
    pub(crate) fn push_batch(&mut self, dataset: &dyn Dataset, batch: &crate::data::Batch) {
        self.labels = match (self.labels.take(), batch.labels_u32()) {
            (Some(mut all), Some(l)) => {
                all.extend(l);
                Some(all)
            }
            _ => None,
        };
        self.names
            .extend(batch.indices.iter().map(|&i| dataset.name(i)));
        self.indices.extend_from_slice(&batch.indices);
    }

    /// No labels on an empty set.
    pub(crate) fn finish(&mut self) {
        if self.names.is_empty() {
            self.labels = None;
        }
    }
}

/// Every image of a small data set as a normalised centre crop [N, 3, S, S], with what the
/// features carry along, kept in memory (the probe during training encodes the same few
/// hundred images again and again). Images skipped as bad are left out.
#[derive(Clone, Debug)]
pub struct CentreCrops {
    pub crop: usize,
    pub images: Vec<f32>,
    pub labels: Option<Vec<u32>>,
    pub names: Vec<String>,
    pub class_names: Option<Vec<String>>,
    /// Index in the data set of each crop.
    pub indices: Vec<usize>,
}

impl CentreCrops {
    pub fn read(dataset: &dyn Dataset, crop: usize) -> Result<CentreCrops> {
        let mut out = CentreCrops {
            crop,
            images: Vec::new(),
            labels: Some(Vec::new()),
            names: Vec::new(),
            class_names: class_names(dataset),
            indices: Vec::new(),
        };
        for batch in Sequential::new(dataset, crop, 64).workers(2) {
            let batch = batch?;
            out.images.extend_from_slice(&batch.images);
            out.labels = match (out.labels.take(), batch.labels_u32()) {
                (Some(mut all), Some(l)) => {
                    all.extend(l);
                    Some(all)
                }
                _ => None,
            };
            out.names
                .extend(batch.indices.iter().map(|&i| dataset.name(i)));
            out.indices.extend_from_slice(&batch.indices);
        }
        if out.names.is_empty() {
            out.labels = None;
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The data set's class names by index, when it has classes and names them all.
pub fn class_names(dataset: &dyn Dataset) -> Option<Vec<String>> {
    let n = dataset.num_classes()?;
    (0..n as u32).map(|c| dataset.class_name(c)).collect()
}
