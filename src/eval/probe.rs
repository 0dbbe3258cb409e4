//! The linear probe (docs/model.md, "Linear probe"): freeze the encoder, take each
//! image's mean-pooled D-vector, train a linear soft-max classifier on labelled images and
//! report top-1 and top-5 on held-out ones; the same for the random-weight encoder of the
//! same configuration, whose score is what pretraining must beat.
//!
//! The classifier, on the GPU with the crate's kernels, full batch (every training row in
//! every step; probe sets are thousands of rows of a few hundred numbers):
//!   forward   scores = X W^T (matmul); softmax_xent: loss, top1/top5 flags, dlogits
//!   summary   stats = (mean loss, top-1, top-5) (sum_channels over the rows)
//!   backward  dW = dlogits^T X (matmul, overwrite); dW += wd W (elementwise: L2 weight
//!             decay, not on the bias); db = column sums of dlogits (sum_channels, overwrite)
//!   update    Adam (adam.wgsl step), learning rate on a cosine from lr to 0
//! A whole training is planned once and submitted as one pass, one Adam step launch per
//! iteration carrying that iteration's learning rate and bias corrections.
//!
//! Around it, on the host: features are standardised with the training set's mean and
//! standard deviation; weights start at zero (the problem is convex); the learning rate and
//! weight decay are chosen on a held-out fifth of the training set by top-1 (then loss), and
//! the classifier is retrained with them on the whole training set.

use rand::seq::SliceRandom;
use serde::Serialize;

use crate::data::rng::rng_for;
use crate::data::text::LabelledSentences;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::features::{
    class_names, features_of_crops, CentreCrops, Encoder, FeaturePair, Features,
};
use crate::eval::input::{pixel_features, pixel_side};
use crate::gpu::{Gpu, Launch, Shader, Tensor};
use crate::ops::adam::{Adam, AdamConfig};
use crate::ops::elementwise;
use crate::ops::matmul::{self, Matmul};
use crate::ops::softmax_xent::{self, SoftmaxXent, ROW_STATS};
use crate::ops::sum_channels;

/// The classifier's training and its hyper-parameter search.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeConfig {
    /// Full-batch Adam steps per training.
    pub iterations: usize,
    /// Peak learning rates tried (each with every weight decay).
    pub lrs: Vec<f32>,
    /// L2 weight decays on W tried: the gradient gains wd * W.
    pub weight_decays: Vec<f32>,
    /// Share of the training rows held out to choose the hyper-parameters.
    pub holdout: f32,
    /// Seeds the held-out split.
    pub seed: u64,
    /// Standardise each feature with the training set's mean and standard deviation.
    pub standardise: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            iterations: 300,
            lrs: vec![0.1, 0.03, 0.01],
            weight_decays: vec![1e-4, 1e-2],
            holdout: 0.2,
            seed: 0,
            standardise: true,
        }
    }
}

/// One setting of the classifier's training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Hyper {
    pub lr: f32,
    pub weight_decay: f32,
    pub iterations: usize,
}

impl Hyper {
    /// Learning rate of step t (0-based): a cosine from lr down to 0 at `iterations`.
    pub fn lr_at(&self, t: usize) -> f32 {
        let x = t as f64 / self.iterations as f64;
        (self.lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())) as f32
    }
}

/// How well a classifier does on a set of rows (fractions, loss in nats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Accuracy {
    pub top1: f32,
    pub top5: f32,
    pub loss: f32,
}

/// Top-1 and top-5 alone, as `--json` prints them (f32, so 0.865 prints as 0.865).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TopK {
    pub top1: f32,
    pub top5: f32,
}

impl From<Accuracy> for TopK {
    fn from(a: Accuracy) -> TopK {
        TopK {
            top1: a.top1,
            top5: a.top5,
        }
    }
}

/// Rows of features on the GPU and the launches that score them with the classifier.
struct Scored {
    rows: usize,
    /// [rows, D].
    x: Tensor,
    /// [rows, C]: the gradient of the mean loss with respect to the scores X W^T.
    dlogits: Tensor,
    /// [3]: mean loss, top-1, top-5.
    stats: Tensor,
    /// scores = X W^T, then softmax_xent.
    forward: Vec<Launch>,
    /// stats from the per-row stats.
    summary: Launch,
}

impl Scored {
    fn new(
        gpu: &Gpu,
        (x, labels): (&[f32], &[u32]),
        dim: usize,
        classes: usize,
        w: &Tensor,
        b: &Tensor,
    ) -> Result<Scored> {
        let rows = labels.len();
        let labels_f: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        let x = Tensor::from_slice(gpu, "probe features", &[rows, dim], x)?;
        let labels = Tensor::from_slice(gpu, "probe labels", &[rows], &labels_f)?;
        let scores = Tensor::zeros(gpu, "probe scores", &[rows, classes])?;
        let dlogits = Tensor::zeros(gpu, "probe dlogits", &[rows, classes])?;
        let row_stats = Tensor::zeros(gpu, "probe row stats", &[rows, ROW_STATS])?;
        let stats = Tensor::zeros(gpu, "probe stats", &[ROW_STATS])?;
        let sx = SoftmaxXent { rows, classes };
        let forward = vec![
            // scores [rows, C] = X [rows, D] W^T (W stored [C, D]).
            matmul::forward(
                gpu,
                &Matmul::new(1, rows, classes, dim).trans_b(true),
                &x,
                w,
                &scores,
            )?,
            softmax_xent::forward(
                gpu,
                &sx,
                &scores,
                b,
                &labels,
                &dlogits,
                &row_stats,
                1.0 / rows as f32,
            )?,
        ];
        // stats = mean over rows of (loss, top1, top5).
        let summary = sum_channels::launch(
            gpu,
            &row_stats,
            [rows, ROW_STATS, 1],
            &stats,
            1.0 / rows as f32,
            false,
        )?;
        Ok(Scored {
            rows,
            x,
            dlogits,
            stats,
            forward,
            summary,
        })
    }

    fn read(&self, gpu: &Gpu) -> Result<Accuracy> {
        let s = self.stats.read(gpu)?;
        // The shares are counts over rows: recover the count from the f32 mean, so that
        // 49 of 50 reads 0.98 and not 0.97999996.
        let share = |mean: f32| {
            let n = self.rows as f64;
            ((mean as f64 * n).round() / n) as f32
        };
        Ok(Accuracy {
            loss: s[0],
            top1: share(s[1]),
            top5: share(s[2]),
        })
    }
}

/// A linear soft-max classifier planned on the GPU for one training set and some sets to
/// evaluate on.
pub struct LinearClassifier {
    pub dim: usize,
    pub classes: usize,
    pub iterations: usize,
    /// [C * D + C]: W [C, D], then b [C]. Gradients and Adam's moments alike.
    params: Tensor,
    grads: Tensor,
    m: Tensor,
    v: Tensor,
    adam: Adam,
    w: Tensor,
    dw: Tensor,
    train: Scored,
    evals: Vec<Scored>,
    /// dW = dlogits^T X and db = column sums of dlogits (the L2 term is planned by `fit`).
    backward: Vec<Launch>,
    /// One Adam step per iteration, each with its own uniforms.
    steps: Vec<Launch>,
}

impl LinearClassifier {
    /// Plan training on `train` (features [rows, dim], labels in 0..classes) for
    /// `iterations` steps, and the scoring of each of `evals`.
    pub fn new(
        gpu: &Gpu,
        dim: usize,
        classes: usize,
        train: (&[f32], &[u32]),
        evals: &[(&[f32], &[u32])],
        iterations: usize,
    ) -> Result<LinearClassifier> {
        for (what, (x, labels)) in
            std::iter::once(("train", train)).chain(evals.iter().map(|&e| ("eval", e)))
        {
            if labels.is_empty() || x.len() != labels.len() * dim {
                return Err(Error::Shape {
                    kernel: "linear probe",
                    message: format!(
                        "{what} set: {} features for {} labels of dimension {dim}",
                        x.len(),
                        labels.len()
                    ),
                });
            }
            if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
                return Err(Error::Shape {
                    kernel: "linear probe",
                    message: format!("{what} set: label {bad} is not below {classes} classes"),
                });
            }
        }
        let n = classes * dim + classes;
        let params = Tensor::zeros(gpu, "probe params", &[n])?;
        let grads = Tensor::zeros(gpu, "probe grads", &[n])?;
        let m = Tensor::zeros(gpu, "probe adam m", &[n])?;
        let v = Tensor::zeros(gpu, "probe adam v", &[n])?;
        let (w, b) = (
            params.view(0, &[classes, dim]),
            params.view(classes * dim, &[classes]),
        );
        let (dw, db) = (
            grads.view(0, &[classes, dim]),
            grads.view(classes * dim, &[classes]),
        );
        let train = Scored::new(gpu, train, dim, classes, &w, &b)?;
        let evals = evals
            .iter()
            .map(|&e| Scored::new(gpu, e, dim, classes, &w, &b))
            .collect::<Result<Vec<_>>>()?;
        let backward = vec![
            // dW [C, D] = dlogits^T [C, rows] X [rows, D].
            matmul::forward(
                gpu,
                &Matmul::new(1, classes, dim, train.rows).trans_a(true),
                &train.dlogits,
                &train.x,
                &dw,
            )?,
            // db [C] = sum over rows of dlogits [rows, C].
            sum_channels::launch(
                gpu,
                &train.dlogits,
                [train.rows, classes, 1],
                &db,
                1.0,
                false,
            )?,
        ];
        // Weight decay is in the gradient (L2), so Adam's own decoupled decay stays off.
        // The classifier's few parameters are one chunk: its step uniforms are reused below.
        let adam = Adam::new(gpu, AdamConfig::default(), &params, &grads, &m, &v)?;
        debug_assert_eq!(adam.step_launches.len(), 1);
        let steps = (0..iterations)
            .map(|_| {
                Launch::with_bindings(
                    gpu,
                    Shader::Adam,
                    "step",
                    &[],
                    &adam.step_params(0, 1, 0.0),
                    &[(1, &params), (2, &grads), (3, &m), (4, &v), (6, &adam.norm)],
                    adam.step_launches[0].workgroups,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LinearClassifier {
            dim,
            classes,
            iterations,
            params,
            grads,
            m,
            v,
            adam,
            w,
            dw,
            train,
            evals,
            backward,
            steps,
        })
    }

    /// Train from zero weights and moments with `hyper` (its iterations must be the
    /// planned ones): one submission, waited for.
    pub fn fit(&self, gpu: &Gpu, hyper: &Hyper) -> Result<()> {
        assert_eq!(hyper.iterations, self.iterations, "planned iterations");
        for t in [&self.params, &self.grads, &self.m, &self.v] {
            t.fill(gpu, 0.0)?;
        }
        for (t, step) in self.steps.iter().enumerate() {
            step.set_params(gpu, &self.adam.step_params(0, t as u64 + 1, hyper.lr_at(t)));
        }
        // dW += wd * W, after dW's overwrite.
        let l2 = elementwise::scale(gpu, &self.w, &self.dw, hyper.weight_decay, true)?;
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for step in &self.steps {
                for l in self.train.forward.iter().chain(&self.backward) {
                    l.record(&mut pass);
                }
                l2.record(&mut pass);
                step.record(&mut pass);
            }
        }
        gpu.queue.submit([enc.finish()]);
        gpu.sync("linear probe training")
    }

    /// Top-1, top-5 and mean loss on the training set, then on each evaluation set.
    pub fn evaluate(&self, gpu: &Gpu) -> Result<(Accuracy, Vec<Accuracy>)> {
        let all: Vec<&Launch> = std::iter::once(&self.train)
            .chain(&self.evals)
            .flat_map(|s| s.forward.iter().chain([&s.summary]))
            .collect();
        gpu.run(&all)?;
        Ok((
            self.train.read(gpu)?,
            self.evals
                .iter()
                .map(|s| s.read(gpu))
                .collect::<Result<_>>()?,
        ))
    }

    /// The weights: W [C, D] row-major, then b [C].
    pub fn weights(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.params.read(gpu)
    }
}

/// Per-dimension standardisation, fitted on the training features: (x - mean) / std.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardise {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
}

impl Standardise {
    /// Mean and standard deviation of each column of `x` [rows, dim], in f64. A constant
    /// column (a dead channel) maps to 0.
    pub fn fit(x: &[f32], dim: usize) -> Standardise {
        let rows = (x.len() / dim).max(1) as f64;
        let mut mean = vec![0.0f64; dim];
        let mut sq = vec![0.0f64; dim];
        for row in x.chunks(dim) {
            for j in 0..dim {
                mean[j] += row[j] as f64 / rows;
            }
        }
        for row in x.chunks(dim) {
            for j in 0..dim {
                sq[j] += (row[j] as f64 - mean[j]).powi(2) / rows;
            }
        }
        Standardise {
            mean: mean.iter().map(|&m| m as f32).collect(),
            inv_std: sq
                .iter()
                .map(|&v| if v > 0.0 { 1.0 / v.sqrt() } else { 0.0 } as f32)
                .collect(),
        }
    }

    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let dim = self.mean.len();
        x.chunks(dim)
            .flat_map(|row| (0..dim).map(move |j| (row[j] - self.mean[j]) * self.inv_std[j]))
            .collect()
    }
}

/// The labels of one side of a probe, and where they come from (for messages).
#[derive(Clone, Copy, Debug)]
pub struct LabelSource<'a> {
    pub labels: Option<&'a [u32]>,
    pub class_names: Option<&'a [String]>,
    /// A path, or a description of the set.
    pub source: &'a str,
}

impl<'a> LabelSource<'a> {
    pub fn of(features: &'a Features, source: &'a str) -> LabelSource<'a> {
        LabelSource {
            labels: features.labels.as_deref(),
            class_names: features.class_names.as_deref(),
            source,
        }
    }

    pub fn of_crops(crops: &'a CentreCrops, source: &'a str) -> LabelSource<'a> {
        LabelSource {
            labels: crops.labels.as_deref(),
            class_names: crops.class_names.as_deref(),
            source,
        }
    }

    pub fn of_sentences(set: &'a LabelledSentences) -> LabelSource<'a> {
        LabelSource {
            labels: Some(set.labels()),
            class_names: Some(set.class_names()),
            source: set.source(),
        }
    }
}

/// The classifier's labels: the training set's, the test set's renumbered by class name
/// where both sets name their classes (a test folder may lack a class folder, which shifts
/// its numbering), and the number of classes. Refused: a set without labels or without
/// images, a test class the training set does not have (by name, or among the labels its
/// images carry).
pub fn align_labels(train: LabelSource, test: LabelSource) -> Result<(Vec<u32>, Vec<u32>, usize)> {
    let data_err = |source: &str, message: String| Error::Data {
        path: source.to_string(),
        message,
    };
    let mut sides = Vec::new();
    for side in [&train, &test] {
        match side.labels {
            None => {
                return Err(data_err(
                    side.source,
                    "has no labels: the linear probe needs labelled training and test images \
                     (class sub-folders, CIFAR-10, STL-10 train/test or the built-in set)"
                        .into(),
                ))
            }
            Some([]) => return Err(data_err(side.source, "has no images".into())),
            Some(l) => sides.push(l),
        }
    }
    let (train_labels, test_labels) = (sides[0], sides[1]);
    let name_of = |names: Option<&[String]>, c: u32| {
        names
            .and_then(|n| n.get(c as usize))
            .map_or(format!("class {c}"), |n| format!("{n} (class {c})"))
    };
    let mut test_mapped = Vec::with_capacity(test_labels.len());
    let classes;
    match (train.class_names, test.class_names) {
        (Some(tn), Some(sn)) => {
            classes = tn.len();
            let mut missing = Vec::new();
            let map: Vec<Option<u32>> = sn
                .iter()
                .map(|name| tn.iter().position(|t| t == name).map(|p| p as u32))
                .collect();
            for &l in test_labels {
                match map.get(l as usize).copied().flatten() {
                    Some(m) => test_mapped.push(m),
                    None => missing.push(l),
                }
            }
            if !missing.is_empty() {
                return Err(lacking(&test, &train, &missing, |c| {
                    name_of(test.class_names, c)
                }));
            }
        }
        _ => {
            classes = train_labels
                .iter()
                .chain(test_labels)
                .map(|&l| l as usize + 1)
                .max()
                .unwrap_or(0);
            test_mapped.extend_from_slice(test_labels);
        }
    }
    // Every test class must have training images.
    let mut present = vec![false; classes.max(1)];
    for &l in train_labels {
        if let Some(p) = present.get_mut(l as usize) {
            *p = true;
        }
    }
    let missing: Vec<u32> = test_mapped
        .iter()
        .copied()
        .filter(|&l| !present.get(l as usize).copied().unwrap_or(false))
        .collect();
    if !missing.is_empty() {
        return Err(lacking(&test, &train, &missing, |c| {
            name_of(train.class_names, c)
        }));
    }
    Ok((train_labels.to_vec(), test_mapped, classes))
}

/// The error for test examples of classes the training set lacks: each class with its
/// count.
fn lacking(
    test: &LabelSource,
    train: &LabelSource,
    missing: &[u32],
    name: impl Fn(u32) -> String,
) -> Error {
    let mut counts = std::collections::BTreeMap::new();
    for &c in missing {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let list: Vec<String> = counts
        .iter()
        .map(|(&c, n)| format!("{} ({n} examples)", name(c)))
        .collect();
    Error::Data {
        path: test.source.to_string(),
        message: format!(
            "the test set has classes the training set {} lacks: {}; a classifier cannot \
             predict a class it never saw",
            train.source,
            list.join(", ")
        ),
    }
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeResult {
    /// On the test set, with the chosen setting trained on the whole training set.
    pub test: Accuracy,
    /// On the training set, same classifier.
    pub train: Accuracy,
    pub chosen: Hyper,
    /// Held-out accuracy of every setting tried (empty when the set was too small).
    pub search: Vec<(Hyper, Accuracy)>,
    pub train_images: usize,
    pub test_images: usize,
    pub classes: usize,
}

/// Fewest training images for which a held-out search is run.
const MIN_SEARCH: usize = 10;

/// Standardise, search the setting on a held-out part of `train`, retrain on all of it and
/// score `test`. Labels as [`align_labels`] makes them.
pub fn probe(
    gpu: &Gpu,
    cfg: &ProbeConfig,
    train: (&Features, &str),
    test: (&Features, &str),
) -> Result<ProbeResult> {
    let (train, test) = (train, test);
    let (train_labels, test_labels, classes) = align_labels(
        LabelSource::of(train.0, train.1),
        LabelSource::of(test.0, test.1),
    )?;
    let dim = train.0.dim;
    if test.0.dim != dim {
        return Err(Error::Data {
            path: test.1.into(),
            message: format!(
                "features of dimension {} against the training set's {dim}",
                test.0.dim
            ),
        });
    }
    let (x_train, x_test) = if cfg.standardise {
        let standardise = Standardise::fit(&train.0.data, dim);
        (
            standardise.apply(&train.0.data),
            standardise.apply(&test.0.data),
        )
    } else {
        (train.0.data.clone(), test.0.data.clone())
    };
    let settings: Vec<Hyper> = cfg
        .lrs
        .iter()
        .flat_map(|&lr| {
            cfg.weight_decays.iter().map(move |&weight_decay| Hyper {
                lr,
                weight_decay,
                iterations: cfg.iterations,
            })
        })
        .collect();
    let mut chosen = settings[settings.len() / 2];
    let mut search = Vec::new();
    let n = train_labels.len();
    let held = ((n as f32 * cfg.holdout).round() as usize).clamp(1, n.saturating_sub(1));
    if n >= MIN_SEARCH && settings.len() > 1 {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng_for(&[cfg.seed, 0x9_20BE]));
        let (held_out, fit) = order.split_at(held);
        let gather = |idx: &[usize]| -> (Vec<f32>, Vec<u32>) {
            let mut x = Vec::with_capacity(idx.len() * dim);
            for &i in idx {
                x.extend_from_slice(&x_train[i * dim..(i + 1) * dim]);
            }
            (x, idx.iter().map(|&i| train_labels[i]).collect())
        };
        let (xf, lf) = gather(fit);
        let (xh, lh) = gather(held_out);
        let clf =
            LinearClassifier::new(gpu, dim, classes, (&xf, &lf), &[(&xh, &lh)], cfg.iterations)?;
        let mut best: Option<Accuracy> = None;
        for h in &settings {
            clf.fit(gpu, h)?;
            let acc = clf.evaluate(gpu)?.1[0];
            let better =
                best.is_none_or(|b| acc.top1 > b.top1 || (acc.top1 == b.top1 && acc.loss < b.loss));
            if better {
                best = Some(acc);
                chosen = *h;
            }
            search.push((*h, acc));
        }
    }
    let clf = LinearClassifier::new(
        gpu,
        dim,
        classes,
        (&x_train, &train_labels),
        &[(&x_test, &test_labels)],
        cfg.iterations,
    )?;
    clf.fit(gpu, &chosen)?;
    let (train_acc, test_acc) = clf.evaluate(gpu)?;
    Ok(ProbeResult {
        test: test_acc[0],
        train: train_acc,
        chosen,
        search,
        train_images: n,
        test_images: test_labels.len(),
        classes,
    })
}

/// The probe of one kind of a model's features, pretrained and with the random weights of
/// its configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbePair {
    pub pretrained: ProbeResult,
    pub random: ProbeResult,
}

/// The probe of a pretrained encoder and of the random-weight encoder of its configuration,
/// and of the raw input they read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub pretrained: ProbeResult,
    pub random: ProbeResult,
    /// The same probe on the input itself (see [`crate::eval::input`]).
    pub input: ProbeResult,
    /// What the input's features are, for the table: "3 x 32 x 32 pixels".
    pub input_features: String,
    /// An audio or text model's second pair: the context c (a clip's time-mean of it, a
    /// sentence's context after it alone; the first pair is then the encoder's z likewise).
    /// None for images.
    pub context: Option<ProbePair>,
    /// What was classified, for the table's first line.
    pub examples: ExampleKind,
}

/// What a probe classifies: the nouns of the table's first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ExampleKind {
    /// Images into classes.
    Images,
    /// Audio clips into speakers.
    Clips,
    /// Sentences into classes.
    Sentences,
}

impl ExampleKind {
    /// "linear probe: 1000 training images, 500 test images, 10 classes".
    fn header(self, r: &ProbeResult) -> String {
        let (probe, examples, classes) = match self {
            ExampleKind::Images => ("linear probe", "images", "classes"),
            ExampleKind::Clips => ("speaker probe", "clips", "speakers"),
            ExampleKind::Sentences => ("linear probe", "sentences", "classes"),
        };
        format!(
            "{probe}: {} training {examples}, {} test {examples}, {} {classes}",
            r.train_images, r.test_images, r.classes
        )
    }
}

impl ProbePair {
    /// What pretraining bought: pretrained minus random, top-1 and top-5.
    pub fn difference(&self) -> (f32, f32) {
        minus(&self.pretrained, &self.random)
    }
}

/// Top-1 and top-5 of a [`ProbePair`], as `--json` prints them.
#[derive(Serialize)]
struct ProbePairTopK {
    pretrained: TopK,
    random: TopK,
}

impl From<&ProbePair> for ProbePairTopK {
    fn from(p: &ProbePair) -> ProbePairTopK {
        ProbePairTopK {
            pretrained: p.pretrained.test.into(),
            random: p.random.test.into(),
        }
    }
}

/// Test top-1 and top-5 of `a` minus those of `b`.
fn minus(a: &ProbeResult, b: &ProbeResult) -> (f32, f32) {
    (a.test.top1 - b.test.top1, a.test.top5 - b.test.top5)
}

impl Comparison {
    /// What pretraining bought: pretrained minus random, top-1 and top-5.
    pub fn difference(&self) -> (f32, f32) {
        minus(&self.pretrained, &self.random)
    }

    /// What the pretrained features add to the input: pretrained minus input, top-1 and
    /// top-5.
    pub fn over_input(&self) -> (f32, f32) {
        minus(&self.pretrained, &self.input)
    }

    /// `{"pretrained": {"top1": .., "top5": ..}, "random": {..}, "input": {..}}` (test-set
    /// fractions), with `"context": {"pretrained": {..}, "random": {..}}` after them where
    /// there is a context pair; one line.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Figures {
            pretrained: TopK,
            random: TopK,
            input: TopK,
            #[serde(skip_serializing_if = "Option::is_none")]
            context: Option<ProbePairTopK>,
        }
        let figures = Figures {
            pretrained: self.pretrained.test.into(),
            random: self.random.test.into(),
            input: self.input.test.into(),
            context: self.context.as_ref().map(ProbePairTopK::from),
        };
        serde_json::to_string(&figures).expect("numbers serialise")
    }

    /// The side-by-side table `cpc probe` prints: a row per probe (the context's pair after
    /// the encoder's, where there is one), then the differences: pretrained - random, the
    /// same for the context, pretrained - input.
    pub fn table(&self) -> String {
        let chosen =
            |r: &ProbeResult| format!("lr {}, weight decay {}", r.chosen.lr, r.chosen.weight_decay);
        let mut probes = vec![
            ("pretrained", &self.pretrained, chosen(&self.pretrained)),
            ("random", &self.random, chosen(&self.random)),
        ];
        let mut differences = vec![("difference", self.difference())];
        if let Some(c) = &self.context {
            probes.push(("pretrained (c)", &c.pretrained, chosen(&c.pretrained)));
            probes.push(("random (c)", &c.random, chosen(&c.random)));
            differences.push(("difference (c)", c.difference()));
        }
        let input = format!("{}; {}", chosen(&self.input), self.input_features);
        probes.push(("input", &self.input, input));
        differences.push(("vs input", self.over_input()));
        // Labels in a column of 12, wider where the context's labels need it.
        let width = probes
            .iter()
            .map(|p| p.0.len())
            .chain(differences.iter().map(|d| d.0.len()))
            .max()
            .map_or(12, |w| (w + 2).max(12));
        let mut lines = vec![
            self.examples.header(&self.pretrained),
            format!("{:<width$} {:>7} {:>7}", "encoder", "top-1", "top-5"),
        ];
        for (label, r, how) in &probes {
            lines.push(format!(
                "{label:<width$} {:>7.4} {:>7.4}   ({how})",
                r.test.top1, r.test.top5
            ));
        }
        for (label, (d1, d5)) in &differences {
            lines.push(format!("{label:<width$} {d1:>+7.4} {d5:>+7.4}"));
        }
        lines.join("\n")
    }
}

/// `cpc probe`'s comparison: a checkpoint's encoder and the random-weight encoder of its
/// configuration on the same centre crops of `train` and `test` ([`probe_encoders`]), in
/// batches of `batch` images, then the same probe on the crops' pixels ([`probe_pixels`]).
/// Labels and classes are checked before any image is encoded.
pub fn compare(
    gpu: &Gpu,
    cfg: &ProbeConfig,
    pretrained: &crate::train::ModelCheckpoint,
    train: (&dyn Dataset, &str),
    test: (&dyn Dataset, &str),
    batch: usize,
) -> Result<Comparison> {
    let encoders = probe_encoders(gpu, cfg, pretrained, train, test, batch)?;
    let crop = pretrained
        .config
        .model
        .require_vision("the pixel probe")?
        .crop as usize;
    let (input, input_features) = probe_pixels(gpu, cfg, crop, train, test, batch)?;
    Ok(Comparison {
        pretrained: encoders.pretrained,
        random: encoders.random,
        input,
        input_features,
        context: None,
        examples: ExampleKind::Images,
    })
}

/// One set's labels as [`check_labelled`] reads them: every example's label (None when one
/// has none), the class names where the set has them, and its source for messages.
pub type SetLabels<'a> = (Option<Vec<u32>>, Option<Vec<String>>, &'a str);

/// Checks, before anything is encoded, that the training and the test set (each as every
/// example's label, None when one has none, its class names, and its source) are labelled,
/// else the error names the set with `unlabelled`, and share their classes
/// ([`align_labels`]).
pub fn check_labelled(sets: [SetLabels; 2], unlabelled: &str) -> Result<()> {
    for (labels, _, source) in &sets {
        if labels.is_none() {
            return Err(Error::Data {
                path: source.to_string(),
                message: unlabelled.into(),
            });
        }
    }
    let [train, test] = sets.each_ref().map(|(labels, names, source)| LabelSource {
        labels: labels.as_deref(),
        class_names: names.as_deref(),
        source,
    });
    align_labels(train, test).map(|_| ())
}

/// The encoders' rows of [`compare`]: the probe of a checkpoint's encoder and of the
/// random-weight encoder of its configuration on the centre crops of `train` and `test`,
/// in batches of `batch` images. Labels and classes are checked before any image is
/// encoded.
pub fn probe_encoders(
    gpu: &Gpu,
    cfg: &ProbeConfig,
    pretrained: &crate::train::ModelCheckpoint,
    train: (&dyn Dataset, &str),
    test: (&dyn Dataset, &str),
    batch: usize,
) -> Result<ProbePair> {
    // The labels, without decoding an image.
    let labels =
        |set: &dyn Dataset| -> Option<Vec<u32>> { (0..set.len()).map(|i| set.label(i)).collect() };
    check_labelled(
        [
            (labels(train.0), class_names(train.0), train.1),
            (labels(test.0), class_names(test.0), test.1),
        ],
        "has no labels: the linear probe needs labelled training and test images (class \
         sub-folders, CIFAR-10, STL-10 train/test or the built-in set)",
    )?;
    let encoder = Encoder::new(gpu, &pretrained.config, &pretrained.params, batch)?;
    let mut results = Vec::new();
    // Each encoder reads the images afresh: only features are kept in memory.
    for params in [pretrained.params.clone(), pretrained.random_params()] {
        encoder.set_params(gpu, &params)?;
        let ftrain = encoder.extract(gpu, train.0)?;
        let ftest = encoder.extract(gpu, test.0)?;
        results.push(probe(gpu, cfg, (&ftrain, train.1), (&ftest, test.1))?);
    }
    let random = results.pop().expect("two probes");
    let pretrained = results.pop().expect("two probes");
    Ok(ProbePair { pretrained, random })
}

/// The input row of [`compare`]: the probe on the pixels of the centre crops of side
/// `crop` of `train` and `test` ([`pixel_features`], read in batches of `batch` images),
/// area-averaged to a side at which the larger set's feature matrix binds whole on this
/// adapter ([`pixel_side`]). Returns the result and what the features are:
/// "3 x 32 x 32 pixels".
pub fn probe_pixels(
    gpu: &Gpu,
    cfg: &ProbeConfig,
    crop: usize,
    train: (&dyn Dataset, &str),
    test: (&dyn Dataset, &str),
    batch: usize,
) -> Result<(ProbeResult, String)> {
    let max_bytes = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    let side = pixel_side(crop, train.0.len().max(test.0.len()), max_bytes);
    let pixels = |set: &dyn Dataset| pixel_features(set, crop, side, batch);
    let result = probe(
        gpu,
        cfg,
        (&pixels(train.0)?, train.1),
        (&pixels(test.0)?, test.1),
    )?;
    Ok((result, format!("3 x {side} x {side} pixels")))
}

/// The probe of the encoder inside a model being trained (`cpc pretrain --probe-every`):
/// features of the crops through `model`, then [`probe`]. The model's parameters are not
/// touched; its activations are overwritten (the next training step recomputes them).
pub fn probe_model(
    gpu: &Gpu,
    cfg: &ProbeConfig,
    model: &crate::model::CpcModel,
    train: (&CentreCrops, &str),
    test: (&CentreCrops, &str),
) -> Result<ProbeResult> {
    let features = |crops: &CentreCrops| features_of_crops(gpu, model, crops);
    probe(
        gpu,
        cfg,
        (&features(train.0)?, train.1),
        (&features(test.0)?, test.1),
    )
}

/// The probes of a model with two kinds of features, the encoder's z and the context's c
/// (audio, text): both of `train` and `test` through `model` (`extract` gives a set's pair),
/// with the checkpoint's parameters and then with the random weights of its configuration.
/// Returns the z pair and the c pair; `model` is left holding the random weights.
pub fn probe_z_and_c<S: ?Sized>(
    gpu: &Gpu,
    cfg: &ProbeConfig,
    pretrained: &crate::train::ModelCheckpoint,
    model: &crate::model::CpcModel,
    train: (&S, &str),
    test: (&S, &str),
    extract: impl Fn(&S) -> Result<FeaturePair>,
) -> Result<(ProbePair, ProbePair)> {
    let mut z = Vec::new();
    let mut c = Vec::new();
    for params in [pretrained.params.clone(), pretrained.random_params()] {
        model.buffers.params.write(gpu, &params)?;
        let (ftrain, ftest) = (extract(train.0)?, extract(test.0)?);
        z.push(probe(gpu, cfg, (&ftrain.z, train.1), (&ftest.z, test.1))?);
        c.push(probe(gpu, cfg, (&ftrain.c, train.1), (&ftest.c, test.1))?);
    }
    let pair = |mut v: Vec<ProbeResult>| {
        let random = v.pop().expect("two probes");
        let pretrained = v.pop().expect("two probes");
        ProbePair { pretrained, random }
    };
    Ok((pair(z), pair(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(top1: f32, top5: f32, lr: f32) -> ProbeResult {
        let chosen = Hyper {
            lr,
            weight_decay: 1e-4,
            iterations: 300,
        };
        ProbeResult {
            test: Accuracy {
                top1,
                top5,
                loss: 1.0,
            },
            train: Accuracy::default(),
            chosen,
            search: Vec::new(),
            train_images: 1000,
            test_images: 500,
            classes: 10,
        }
    }

    fn comparison(context: Option<ProbePair>) -> Comparison {
        Comparison {
            pretrained: result(0.9, 0.99, 0.01),
            random: result(0.625, 0.95, 0.03),
            input: result(0.25, 0.75, 0.1),
            input_features: "3 x 32 x 32 pixels".into(),
            examples: match context {
                None => ExampleKind::Images,
                Some(_) => ExampleKind::Clips,
            },
            context,
        }
    }

    #[test]
    fn table_and_json_show_the_input_row_and_the_context_pair_only_when_present() {
        let images = comparison(None);
        assert_eq!(
            images.table(),
            "linear probe: 1000 training images, 500 test images, 10 classes\n\
             encoder        top-1   top-5\n\
             pretrained    0.9000  0.9900   (lr 0.01, weight decay 0.0001)\n\
             random        0.6250  0.9500   (lr 0.03, weight decay 0.0001)\n\
             input         0.2500  0.7500   (lr 0.1, weight decay 0.0001; 3 x 32 x 32 pixels)\n\
             difference   +0.2750 +0.0400\n\
             vs input     +0.6500 +0.2400"
        );
        assert_eq!(
            images.json(),
            r#"{"pretrained":{"top1":0.9,"top5":0.99},"random":{"top1":0.625,"top5":0.95},"input":{"top1":0.25,"top5":0.75}}"#
        );
        let audio = Comparison {
            input_features: "40 log-mel energies".into(),
            ..comparison(Some(ProbePair {
                pretrained: result(0.875, 1.0, 0.01),
                random: result(0.5, 0.875, 0.01),
            }))
        };
        assert_eq!(
            audio.table(),
            "speaker probe: 1000 training clips, 500 test clips, 10 speakers\n\
             encoder            top-1   top-5\n\
             pretrained        0.9000  0.9900   (lr 0.01, weight decay 0.0001)\n\
             random            0.6250  0.9500   (lr 0.03, weight decay 0.0001)\n\
             pretrained (c)    0.8750  1.0000   (lr 0.01, weight decay 0.0001)\n\
             random (c)        0.5000  0.8750   (lr 0.01, weight decay 0.0001)\n\
             input             0.2500  0.7500   (lr 0.1, weight decay 0.0001; 40 log-mel energies)\n\
             difference       +0.2750 +0.0400\n\
             difference (c)   +0.3750 +0.1250\n\
             vs input         +0.6500 +0.2400"
        );
        assert_eq!(
            audio.json(),
            r#"{"pretrained":{"top1":0.9,"top5":0.99},"random":{"top1":0.625,"top5":0.95},"input":{"top1":0.25,"top5":0.75},"context":{"pretrained":{"top1":0.875,"top5":1.0},"random":{"top1":0.5,"top5":0.875}}}"#
        );
    }
}
