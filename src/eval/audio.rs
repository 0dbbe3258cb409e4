//! Features of audio sets from a frozen audio model, for the probe and `cpc embed`: each
//! clip is cut into consecutive windows of the model's L samples from its start
//! (data::audio::fixed_windows: the tail shorter than a window dropped, a clip shorter than
//! one window zero-padded), the windows of many clips are encoded B at a time, and
//!
//! - per clip ([`AudioEncoder::extract`]): the mean over every frame of its windows of the
//!   frames z (D) and of the contexts c (H), two feature sets of the same clips;
//! - per frame ([`AudioEncoder::extract_frames`]): every frame's z and c, a row each,
//!   labelled with its clip's speaker and named `<clip>@<frame>` (10 ms a frame).

use std::path::Path;

use crate::data::audio::{self, fixed_windows, AudioOptions, AudioSet, Clips, OnShort};
use crate::data::audio::{LogMel, LogMelConfig};
use crate::data::{OnBadFile, Split, Subset};
use crate::error::{Error, Result};
use crate::eval::features::{frozen_model, FeaturePair};
use crate::eval::input::{log_mel_features, speaker_names};
use crate::eval::probe::{check_labelled, probe, probe_z_and_c, Comparison, ExampleKind};
use crate::eval::{Features, ProbeConfig};
use crate::gpu::Gpu;
use crate::model::{CpcModel, ModelConfig, Spec};
use crate::train::Config;
use crate::train::ModelCheckpoint;

/// Open an audio set for evaluation: `path` None is the built-in synthetic speech; `limit`
/// keeps that many clips, a fixed random sample. Returns the set and a name for messages.
pub fn open_eval_audio(
    path: Option<&Path>,
    split: Split,
    limit: Option<usize>,
    on_bad_file: OnBadFile,
) -> Result<(Box<dyn AudioSet>, String)> {
    let options = AudioOptions {
        split,
        on_bad_file,
        ..AudioOptions::default()
    };
    let set = audio::open(path, &options)?;
    let source = match path {
        Some(p) => p.display().to_string(),
        None => format!("synthetic:{split}"),
    };
    if set.is_empty() {
        return Err(Error::Data {
            path: source,
            message: "has no audio clips".into(),
        });
    }
    Ok(match limit {
        Some(n) => (Box::new(Subset::sample_clips(set, n.max(1))), source),
        None => (set, source),
    })
}

/// A frozen audio model planned on the GPU for batches of `batch` windows.
pub struct AudioEncoder {
    pub model: CpcModel,
}

impl AudioEncoder {
    /// Plan the audio model of `config` with parameters `params` (checked against the
    /// adapter's limits first).
    pub fn new(gpu: &Gpu, config: &Config, params: &[f32], batch: usize) -> Result<AudioEncoder> {
        let other = match &config.model {
            ModelConfig::Audio(_) => None,
            ModelConfig::Vision(_) => Some("an image model's checkpoint: its encoder reads images"),
            ModelConfig::Text(_) => Some("a text model's checkpoint: its encoder reads sentences"),
        };
        if let Some(other) = other {
            return Err(Error::Config(format!("{other}, not audio")));
        }
        Ok(AudioEncoder {
            model: frozen_model(gpu, config, params, batch)?,
        })
    }

    /// See [`clip_features`].
    pub fn extract(&self, gpu: &Gpu, set: &dyn AudioSet) -> Result<FeaturePair> {
        clip_features(gpu, &self.model, set)
    }

    /// See [`frame_features`].
    pub fn extract_frames(&self, gpu: &Gpu, set: &dyn AudioSet) -> Result<FeaturePair> {
        frame_features(gpu, &self.model, set)
    }
}

/// One row per clip of `set` through the audio `model`: the mean of z and of c over every
/// frame of its windows. The model's inputs and activations are overwritten; its
/// parameters are not touched.
pub fn clip_features(gpu: &Gpu, model: &CpcModel, set: &dyn AudioSet) -> Result<FeaturePair> {
    let (d, h) = (model.spec.dim(), model.spec.hidden());
    let mut out = empty(model, set);
    let mut counts = Vec::new();
    encode(gpu, model, set, |clip, z, c| {
        if out.z.indices.last() != Some(&clip) {
            out.z.push_row(set, clip, set.name(clip), &vec![0.0; d]);
            out.c.push_row(set, clip, set.name(clip), &vec![0.0; h]);
            counts.push(0usize);
        }
        let row = out.z.len() - 1;
        add_frames(&mut out.z.data[row * d..], z, d);
        add_frames(&mut out.c.data[row * h..], c, h);
        counts[row] += z.len() / d;
    })?;
    for (row, &n) in counts.iter().enumerate() {
        for features in [&mut out.z, &mut out.c] {
            let dim = features.dim;
            for v in &mut features.data[row * dim..(row + 1) * dim] {
                *v /= n as f32;
            }
        }
    }
    out.z.finish();
    out.c.finish();
    Ok(out)
}

/// One row per frame of every window of `set` through the audio `model`: z and c as the
/// model computes them.
pub fn frame_features(gpu: &Gpu, model: &CpcModel, set: &dyn AudioSet) -> Result<FeaturePair> {
    let (d, h) = (model.spec.dim(), model.spec.hidden());
    let mut out = empty(model, set);
    let mut frame_of = (usize::MAX, 0usize);
    encode(gpu, model, set, |clip, z, c| {
        if frame_of.0 != clip {
            frame_of = (clip, 0);
        }
        for (zf, cf) in z.chunks(d).zip(c.chunks(h)) {
            let name = format!("{}@{}", set.name(clip), frame_of.1);
            out.z.push_row(set, clip, name.clone(), zf);
            out.c.push_row(set, clip, name, cf);
            frame_of.1 += 1;
        }
    })?;
    out.z.finish();
    out.c.finish();
    Ok(out)
}

fn empty(model: &CpcModel, set: &dyn AudioSet) -> FeaturePair {
    let empty = |dim| Features {
        dim,
        data: Vec::new(),
        labels: Some(Vec::new()),
        names: Vec::new(),
        class_names: speaker_names(set),
        indices: Vec::new(),
    };
    FeaturePair {
        z: empty(model.spec.dim()),
        c: empty(model.spec.hidden()),
    }
}

/// The windows of the batch being filled and the clip (set index) of each.
struct Pending {
    windows: Vec<f32>,
    owners: Vec<usize>,
}

/// Every window of every clip through the audio `model`, B at a time, in clip order:
/// `sink` gets each window's clip index and its frames' z [T, D] and c [T, H].
fn encode(
    gpu: &Gpu,
    model: &CpcModel,
    set: &dyn AudioSet,
    mut sink: impl FnMut(usize, &[f32], &[f32]),
) -> Result<()> {
    let Spec::Audio(audio) = &model.spec else {
        return Err(Error::Config(
            "an image model: its encoder reads images, not audio".into(),
        ));
    };
    let (b, l, t) = (model.batch, audio.window, audio.frames());
    let (d, h) = (model.spec.dim(), model.spec.hidden());
    let mut pending = Pending {
        windows: Vec::with_capacity(b * l),
        owners: Vec::with_capacity(b),
    };
    let mut flush = |pending: &mut Pending| -> Result<()> {
        if pending.owners.is_empty() {
            return Ok(());
        }
        pending.windows.resize(b * l, 0.0);
        let (z, c) = model.frames(gpu, &pending.windows)?;
        for (k, &clip) in pending.owners.iter().enumerate() {
            sink(
                clip,
                &z[k * t * d..(k + 1) * t * d],
                &c[k * t * h..(k + 1) * t * h],
            );
        }
        pending.windows.clear();
        pending.owners.clear();
        Ok(())
    };
    for group in Clips::new(set, b).workers(2) {
        for clip in group? {
            let windows = fixed_windows(&clip.samples, l, OnShort::Pad);
            for w in windows.chunks(l) {
                pending.windows.extend_from_slice(w);
                pending.owners.push(clip.index);
                if pending.owners.len() == b {
                    flush(&mut pending)?;
                }
            }
        }
    }
    flush(&mut pending)
}

/// Adds each of the rows of `frames` ([n, dim]) into `sum` [dim].
fn add_frames(sum: &mut [f32], frames: &[f32], dim: usize) {
    for frame in frames.chunks(dim) {
        sum.iter_mut().zip(frame).for_each(|(s, v)| *s += v);
    }
}

/// `cpc probe` of an audio checkpoint: the speaker probe on each clip's mean frame z, for
/// the pretrained model and the random-weight model of its configuration; the same pair on
/// the mean context c; and on the clip's time-averaged log-mel energies (the input row).
/// Labels and speakers are checked before any clip is encoded.
pub fn compare_audio(
    gpu: &Gpu,
    cfg: &ProbeConfig,
    pretrained: &ModelCheckpoint,
    train: (&dyn AudioSet, &str),
    test: (&dyn AudioSet, &str),
    batch: usize,
) -> Result<Comparison> {
    check_speakers(train, test)?;
    let encoder = AudioEncoder::new(gpu, &pretrained.config, &pretrained.params, batch)?;
    let (z, c) = probe_z_and_c(gpu, cfg, pretrained, &encoder.model, train, test, |set| {
        encoder.extract(gpu, set)
    })?;
    let window = match Spec::from(&pretrained.config.model) {
        Spec::Audio(a) => a.window,
        Spec::Vision(_) | Spec::Text(_) => {
            unreachable!("AudioEncoder::new refused a model of another modality")
        }
    };
    let mel = LogMel::new(LogMelConfig::default())?;
    let input = |set: &dyn AudioSet| log_mel_features(set, &mel, window, OnShort::Pad);
    let (itrain, itest) = (input(train.0)?, input(test.0)?);
    Ok(Comparison {
        pretrained: z.pretrained,
        random: z.random,
        input: probe(gpu, cfg, (&itrain, train.1), (&itest, test.1))?,
        input_features: format!("{} log-mel bands, time-averaged", mel.config().bands),
        context: Some(c),
        examples: ExampleKind::Clips,
    })
}

/// Both sets have a speaker for every clip, and the same speakers (see
/// [`align_labels`]): checked before any clip is encoded.
pub fn check_speakers(train: (&dyn AudioSet, &str), test: (&dyn AudioSet, &str)) -> Result<()> {
    let labels =
        |set: &dyn AudioSet| -> Option<Vec<u32>> { (0..set.len()).map(|i| set.label(i)).collect() };
    check_labelled(
        [
            (labels(train.0), speaker_names(train.0), train.1),
            (labels(test.0), speaker_names(test.0), test.1),
        ],
        "has unlabelled clips: the speaker probe needs a speaker for every clip (one \
         sub-folder per speaker, or the synthetic speech)",
    )
}

impl Features {
    /// Appends one row: `values` of clip `clip`, with its label (a clip without one makes
    /// the whole set unlabelled) and `name`.
    fn push_row(&mut self, set: &dyn AudioSet, clip: usize, name: String, values: &[f32]) {
        debug_assert_eq!(values.len(), self.dim);
        self.data.extend_from_slice(values);
        match (set.label(clip), &mut self.labels) {
            (Some(l), Some(labels)) => labels.push(l),
            _ => self.labels = None,
        }
        self.names.push(name);
        self.indices.push(clip);
    }
}
