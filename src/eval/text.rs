//! Sentence features of a frozen text model, and the probe of a text checkpoint.
//!
//! The model is planned for batches of B passages of L sentences; a sentence's z is its
//! encoder vector (it depends on the sentence alone), its c the context after the sentences
//! before it in its passage, and the sentences are read in one of two ways:
//!
//! - [`sentence_features`] (`cpc embed`): every sentence of a text set in its document's
//!   order, each document's sentences cut into consecutive passages of L, the last one
//!   filled up with empty sentences.
//! - [`labelled_features`] (`cpc probe`, `--probe-every`): every labelled sentence on its
//!   own, the first sentence of a passage whose other L - 1 are empty, so its c is the
//!   context after it alone. Labelled sentences are independent examples, and their
//!   neighbours in a file share their class (a class folder's lines, a sorted TSV, a topic's
//!   paragraph): a context read across them would hand the classifier its label. This costs
//!   L times the passages of reading them together.
//!
//! In both, B passages make a batch, the last batch filled up with empty passages; the
//! filler sentences give no rows.

use std::path::Path;

use crate::data::text::vocab::check_tokenizer;
use crate::data::text::{LabelledSentences, Sentences, TextOptions, TextSet, Vocabulary};
use crate::data::{Format, OnBadFile, Split};
use crate::error::{Error, Result};
use crate::eval::features::{frozen_model, FeaturePair};
use crate::eval::input::bag_of_words;
use crate::eval::probe::{
    align_labels, probe, probe_z_and_c, Comparison, ExampleKind, LabelSource, ProbeConfig,
};
use crate::eval::Features;
use crate::gpu::Gpu;
use crate::model::{CpcModel, TextSpec};
use crate::train::ModelCheckpoint;

/// z [sentences, D] and c [sentences, H] of every sentence of `set` in document order,
/// named `<document>#<sentence>`, labelled where the set has labels.
pub fn sentence_features(
    gpu: &Gpu,
    model: &CpcModel,
    set: &dyn TextSet,
    vocab: &Vocabulary,
) -> Result<FeaturePair> {
    let t = model.spec.text()?;
    check_tokenizer(set.tokenizer(), vocab, &set.describe())?;
    let mut rows: Vec<Option<Row>> = Vec::new();
    for i in 0..set.len() {
        let doc = set.document(i)?;
        for (s, words) in doc.sentences.iter().enumerate() {
            let ids = vocab.encode(&words[..words.len().min(t.max_words)]);
            let label = doc.labels.as_ref().map(|labels| labels[s]);
            rows.push(Some((ids, format!("{}#{s}", set.name(i)), label)));
        }
        rows.resize(rows.len().div_ceil(t.sentences) * t.sentences, None);
    }
    let class_names: Option<Vec<String>> = set
        .num_classes()
        .and_then(|n| (0..n as u32).map(|k| set.class_name(k)).collect());
    encode(
        gpu,
        model,
        t,
        &rows,
        set.num_classes().is_some(),
        class_names,
    )
}

/// z [sentences, D] and c [sentences, H] of every sentence of `set`, each read on its own
/// (the context after it alone), named and labelled as the set names and labels them.
pub fn labelled_features(
    gpu: &Gpu,
    model: &CpcModel,
    set: &LabelledSentences,
    vocab: &Vocabulary,
) -> Result<FeaturePair> {
    let t = model.spec.text()?;
    let ids = set.encode(vocab, t.max_words)?;
    let mut rows: Vec<Option<Row>> = Vec::with_capacity(set.len() * t.sentences);
    for i in 0..set.len() {
        let row = (ids.sentence(i).to_vec(), set.name(i).to_string());
        rows.push(Some((row.0, row.1, Some(set.label(i)))));
        rows.extend(std::iter::repeat_n(None, t.sentences - 1));
    }
    let names = Some(set.class_names().to_vec());
    encode(gpu, model, t, &rows, true, names)
}

/// A sentence's token ids, name and label.
type Row = (Vec<u32>, String, Option<u32>);

/// `rows` (None: an empty filler sentence) through `model` as consecutive passages of L,
/// B passages a batch (the last filled up with fillers): the z and c of each sentence.
fn encode(
    gpu: &Gpu,
    model: &CpcModel,
    t: &TextSpec,
    rows: &[Option<Row>],
    labelled: bool,
    class_names: Option<Vec<String>>,
) -> Result<FeaturePair> {
    let slots = model.batch * t.sentences;
    let (d, h) = (model.spec.dim(), model.spec.hidden());
    let empty = |dim| Features {
        dim,
        data: Vec::new(),
        labels: labelled.then(Vec::new),
        names: Vec::new(),
        class_names: class_names.clone(),
        indices: Vec::new(),
    };
    let (mut z, mut c) = (empty(d), empty(h));
    for batch in rows.chunks(slots) {
        let mut sentences = Sentences::new();
        for s in batch {
            sentences.push(s.as_ref().map_or(&[][..], |(ids, _, _)| ids))?;
        }
        for _ in batch.len()..slots {
            sentences.push(&[])?;
        }
        let (bz, bc) = model.frames(gpu, &t.pad(&sentences)?)?;
        for (k, s) in batch.iter().enumerate() {
            if let Some((_, name, label)) = s {
                for (f, rows, dim) in [(&mut z, &bz, d), (&mut c, &bc, h)] {
                    f.data.extend_from_slice(&rows[k * dim..(k + 1) * dim]);
                    f.names.push(name.clone());
                    f.indices.push(f.indices.len());
                    if let (Some(labels), Some(label)) = (f.labels.as_mut(), label) {
                        labels.push(*label);
                    }
                }
            }
        }
    }
    Ok(FeaturePair { z, c })
}

/// Where the probe of a text model reads its labelled sentences
/// ([`LabelledSentences::read`]): `train` (None: the built-in corpus) as its train split;
/// the test set `test`'s test split, else `train`'s own (a folder with `train/` and
/// `test/` sub-folders, the built-in corpus), or with `test_fraction` that share of each
/// class of `train` held out. Each side then cut to its limit, a fixed random sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct LabelledSplits<'a> {
    pub train: Option<&'a Path>,
    pub test: Option<&'a Path>,
    pub format: Format,
    pub test_fraction: Option<f64>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub on_bad_file: OnBadFile,
}

impl LabelledSplits<'_> {
    /// The training and the test sentences, their words read with `vocab`'s tokenizer. An
    /// error when both would be the same sentences (a TSV file, a folder without `train/`
    /// and `test/`, given alone), or `test` comes with `test_fraction`.
    pub fn open(&self, vocab: &Vocabulary) -> Result<(LabelledSentences, LabelledSentences)> {
        let read = |path: Option<&Path>, split| {
            let options = TextOptions {
                split,
                on_bad_file: self.on_bad_file,
                tokenizer: vocab.tokenizer(),
                ..TextOptions::default()
            };
            LabelledSentences::read(path, self.format, &options)
        };
        let train = read(self.train, Split::Train)?;
        let (train, test) = match (self.test_fraction, self.test) {
            (Some(_), Some(test)) => {
                return Err(Error::Config(format!(
                    "a test set ({}) and a test fraction: give one of them",
                    test.display()
                )))
            }
            (Some(fraction), None) => train.split(fraction)?,
            (None, test) => {
                let test = read(test.or(self.train), Split::Test)?;
                if test.source() == train.source() {
                    return Err(Error::Data {
                        path: train.source().to_string(),
                        message: "would be both the training and the test set (it has no \
                                  train/ and test/ splits): give a test set, or a test \
                                  fraction to hold out of it (cpc probe --test, \
                                  --test-fraction)"
                            .into(),
                    });
                }
                (train, test)
            }
        };
        let cut = |set: LabelledSentences, limit: Option<usize>| match limit {
            Some(n) => set.sample(n.max(1)),
            None => set,
        };
        Ok((cut(train, self.train_limit), cut(test, self.test_limit)))
    }
}

/// The vocabulary of a text checkpoint (which [`ModelCheckpoint::read`] requires of one).
pub fn checkpoint_vocabulary(ck: &ModelCheckpoint) -> Result<&Vocabulary> {
    ck.vocabulary.as_ref().ok_or_else(|| Error::Checkpoint {
        path: ck.path.clone(),
        message: "has no vocabulary: a text model reads words through the one it was \
                  trained with"
            .into(),
    })
}

/// `cpc probe` of a text checkpoint: the linear probe on each sentence's z, for the
/// pretrained model and the random-weight model of its configuration; the same pair on the
/// context c after the sentence alone ([`labelled_features`]); and on the sentence's bag of
/// words over the checkpoint's vocabulary (the input row). Classes are checked before any
/// sentence is encoded.
pub fn compare_text(
    gpu: &Gpu,
    cfg: &ProbeConfig,
    pretrained: &ModelCheckpoint,
    train: &LabelledSentences,
    test: &LabelledSentences,
    batch: usize,
) -> Result<Comparison> {
    align_labels(
        LabelSource::of_sentences(train),
        LabelSource::of_sentences(test),
    )?;
    let vocab = checkpoint_vocabulary(pretrained)?;
    let model = frozen_model(gpu, &pretrained.config, &pretrained.params, batch)?;
    let max_words = model.spec.text()?.max_words;
    let (train, test) = ((train, train.source()), (test, test.source()));
    let (z, c) = probe_z_and_c(gpu, cfg, pretrained, &model, train, test, |set| {
        labelled_features(gpu, &model, set, vocab)
    })?;
    let (itrain, itest) = (
        bag_of_words(train.0, vocab, max_words)?,
        bag_of_words(test.0, vocab, max_words)?,
    );
    Ok(Comparison {
        pretrained: z.pretrained,
        random: z.random,
        input: probe(gpu, cfg, (&itrain, train.1), (&itest, test.1))?,
        input_features: format!(
            "bag of words: <unk> and the {} most frequent words",
            itrain.dim - 1
        ),
        context: Some(c),
        examples: ExampleKind::Sentences,
    })
}
