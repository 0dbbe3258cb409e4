//! Labelled sentences for the linear probe: one label per sentence, each sentence read on
//! its own (not cut further into sentences).
//!
//! - A TSV file: `label<TAB>sentence` per line (split at the first tab; the label trimmed,
//!   not empty); blank lines are skipped; a line without a tab, or with an empty label, is
//!   an error naming the file and the line number.
//! - A folder of class folders, walked as `data/walk.rs` says (so `train/` and `test/`
//!   sub-folders are splits): one sub-folder per class holding `.txt` files of one sentence
//!   per line (blank lines skipped). A file that is not UTF-8 stops the open, or is skipped
//!   and counted under [`OnBadFile::Skip`](crate::data::OnBadFile::Skip).
//! - Every sentence of a labelled [`TextSet`] ([`LabelledSentences::from_set`]): the
//!   synthetic corpus' topics, when no path is given.
//!
//! Classes are numbered in sorted name order (byte order), as folders' classes are: a TSV's
//! label names, a folder's class folders. A sentence of punctuation only has no words and
//! is kept, empty: one example per line, whatever it holds. [`LabelledSentences::split`]
//! takes a stated fraction of each class for a test set; [`LabelledSentences::sample`] a
//! fixed random sample.

use std::collections::BTreeSet;
use std::path::Path;

use rand::seq::SliceRandom;

use super::passages::check_max_words;
use super::vocab::check_tokenizer;
use super::{
    must_exist, read_text, segment, Sentences, SyntheticText, TextOptions, TextSet,
    TokenizerConfig, Vocabulary, TEXT,
};
use crate::data::rng::{rng_for, tag};
use crate::data::subset::sample_indices;
use crate::data::walk::Listing;
use crate::data::{data_err, header_threads, par_map, Format};
use crate::error::{Error, Result};

/// Sentences, each with its words (maybe none) and its class.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledSentences {
    sentences: Vec<Vec<String>>,
    labels: Vec<u32>,
    /// Class names, index = label.
    classes: Vec<String>,
    /// Where each sentence comes from: "train.tsv:12", "pos/a.txt:3", "synthetic:test#4.2".
    names: Vec<String>,
    /// The file, folder or set read, for messages.
    source: String,
    tokenizer: TokenizerConfig,
    /// Files skipped as bad.
    skipped: usize,
}

impl LabelledSentences {
    /// `path` None: every sentence of the synthetic corpus' split; a file: a TSV; a folder:
    /// class folders. The split applies to the synthetic corpus and to split folders.
    pub fn open(path: Option<&Path>, options: &TextOptions) -> Result<LabelledSentences> {
        let Some(path) = path else {
            let set =
                SyntheticText::new(options.synthetic.clone(), options.split, options.tokenizer)?;
            return LabelledSentences::from_set(&set);
        };
        must_exist(path)?;
        if path.is_file() {
            LabelledSentences::read_tsv(path, options.tokenizer)
        } else {
            LabelledSentences::read_folder(path, options)
        }
    }

    /// As [`LabelledSentences::open`] reads `path` (Auto), or as `format` says: Tsv a file,
    /// Folder a folder of class folders, Builtin the synthetic corpus (no path). An image
    /// format, a path of the other kind, or a path for Builtin is an error naming it.
    pub fn read(
        path: Option<&Path>,
        format: Format,
        options: &TextOptions,
    ) -> Result<LabelledSentences> {
        let image = || {
            Error::Config(format!(
                "--format {format} names an image format; labelled sentences are a TSV file \
                 (tsv), a folder of class folders (folder) or the built-in corpus (builtin)"
            ))
        };
        match (format, path) {
            (Format::Cifar10 | Format::Stl10, _) => Err(image()),
            (Format::Auto | Format::Builtin, None) => LabelledSentences::open(None, options),
            (Format::Auto, Some(_)) => LabelledSentences::open(path, options),
            (Format::Builtin, Some(p)) => Err(data_err(p, "the built-in corpus takes no path")),
            (Format::Tsv | Format::Folder, None) => {
                Err(Error::Config(format!("--format {format} needs a path")))
            }
            (Format::Tsv, Some(p)) => {
                must_exist(p)?;
                if !p.is_file() {
                    return Err(data_err(p, "not a file: --format tsv reads a TSV file"));
                }
                LabelledSentences::read_tsv(p, options.tokenizer)
            }
            (Format::Folder, Some(p)) => LabelledSentences::read_folder(p, options),
        }
    }

    /// A TSV file of `label<TAB>sentence` lines.
    pub fn read_tsv(path: &Path, tokenizer: TokenizerConfig) -> Result<LabelledSentences> {
        let text = read_text(path)?;
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("line {}", n + 1);
            let Some((label, sentence)) = line.split_once('\t') else {
                return Err(data_err(
                    path,
                    format!("{at} has no tab: expected label<TAB>sentence"),
                ));
            };
            let label = label.trim();
            if label.is_empty() {
                return Err(data_err(path, format!("{at} has an empty label")));
            }
            rows.push((label, sentence, n + 1));
        }
        let classes: Vec<String> = rows
            .iter()
            .map(|r| r.0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(String::from)
            .collect();
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        let mut set = LabelledSentences::empty(path.display().to_string(), classes, tokenizer);
        for (label, sentence, line) in rows {
            let class = set.classes.binary_search_by(|c| c.as_str().cmp(label));
            set.push(
                segment::words(sentence, &tokenizer),
                class.expect("every label is a class") as u32,
                format!("{file}:{line}"),
            );
        }
        set.nonempty()
    }

    /// A folder of class folders holding text files of one sentence per line.
    pub fn read_folder(path: &Path, options: &TextOptions) -> Result<LabelledSentences> {
        let mut listing = Listing::read(path, options.split, &TEXT)?;
        if listing.labels.is_none() {
            return Err(data_err(
                &listing.root,
                "has no class folders: labelled sentences are a TSV file (label<TAB>sentence \
                 per line) or a folder with one sub-folder per class holding text files of \
                 one sentence per line",
            ));
        }
        let root = listing.root.clone();
        let reads = par_map(&listing.files, header_threads(), 16, |file| {
            read_text(&root.join(file))
        });
        let (texts, bad) = listing.keep(reads, options.on_bad_file, &TEXT)?;
        let mut set = LabelledSentences::empty(
            root.display().to_string(),
            listing.classes.clone(),
            options.tokenizer,
        );
        set.skipped = bad.count();
        for (i, text) in texts.iter().enumerate() {
            let label = listing.label(i).expect("a folder of class folders");
            for (n, line) in text.lines().enumerate() {
                if !line.trim().is_empty() {
                    let words = segment::words(line, &options.tokenizer);
                    set.push(words, label, format!("{}:{}", listing.name(i), n + 1));
                }
            }
        }
        set.nonempty()
    }

    /// Every sentence of `set`, which must be labelled, with its label; class names from
    /// the set ("3" where it has none).
    pub fn from_set(set: &dyn TextSet) -> Result<LabelledSentences> {
        let unlabelled = || Error::Data {
            path: set.describe(),
            message: "has no labels: labelled sentences need a labelled set".into(),
        };
        let classes = (0..set.num_classes().ok_or_else(unlabelled)?)
            .map(|c| set.class_name(c as u32).unwrap_or_else(|| c.to_string()))
            .collect();
        let mut out = LabelledSentences::empty(set.describe(), classes, set.tokenizer());
        out.skipped = set.skipped();
        for i in 0..set.len() {
            let document = set.document(i)?;
            let labels = document.labels.ok_or_else(unlabelled)?;
            for (s, (words, label)) in document.sentences.into_iter().zip(labels).enumerate() {
                out.push(words, label, format!("{}.{s}", set.name(i)));
            }
        }
        out.nonempty()
    }

    fn empty(source: String, classes: Vec<String>, tokenizer: TokenizerConfig) -> Self {
        LabelledSentences {
            sentences: Vec::new(),
            labels: Vec::new(),
            classes,
            names: Vec::new(),
            source,
            tokenizer,
            skipped: 0,
        }
    }

    fn push(&mut self, words: Vec<String>, label: u32, name: String) {
        self.sentences.push(words);
        self.labels.push(label);
        self.names.push(name);
    }

    /// Self, or an error if it holds no sentence.
    fn nonempty(self) -> Result<LabelledSentences> {
        if self.sentences.is_empty() {
            return Err(Error::Data {
                path: self.source,
                message: "holds no labelled sentence".into(),
            });
        }
        Ok(self)
    }

    /// The sentences at `indices`, in that order, under the name `source`.
    fn select(&self, indices: &[usize], source: String) -> LabelledSentences {
        let mut out = LabelledSentences::empty(source, self.classes.clone(), self.tokenizer);
        out.skipped = self.skipped;
        for &i in indices {
            out.push(
                self.sentences[i].clone(),
                self.labels[i],
                self.names[i].clone(),
            );
        }
        out
    }

    /// `count` of the sentences (all when there are no more), a fixed random sample kept in
    /// the set's order, as [`crate::data::Subset::sample`] draws images.
    pub fn sample(&self, count: usize) -> LabelledSentences {
        self.select(&sample_indices(self.len(), count), self.source.clone())
    }

    /// (train, test): of each class, round(`test_fraction` x its sentences) drawn at random
    /// (the same ones for the same set) for the test side, the rest for training, each in
    /// the set's order, named "<source> (training part)" and "<source> (test part)". An
    /// error unless 0 < `test_fraction` < 1 and both sides have sentences.
    pub fn split(&self, test_fraction: f64) -> Result<(LabelledSentences, LabelledSentences)> {
        let err = |message: String| Error::Data {
            path: self.source.clone(),
            message,
        };
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(err(format!(
                "a test fraction of {test_fraction}; it must lie strictly between 0 and 1"
            )));
        }
        let mut test = vec![false; self.len()];
        for class in 0..self.classes.len() as u32 {
            let mut members: Vec<usize> = (0..self.len())
                .filter(|&i| self.labels[i] == class)
                .collect();
            let take = (test_fraction * members.len() as f64).round() as usize;
            members.shuffle(&mut rng_for(&[
                tag::TEXT_SPLIT,
                self.len() as u64,
                class as u64,
            ]));
            for &i in &members[..take] {
                test[i] = true;
            }
        }
        let (test_side, train_side): (Vec<usize>, Vec<usize>) =
            (0..self.len()).partition(|&i| test[i]);
        if test_side.is_empty() || train_side.is_empty() {
            return Err(err(format!(
                "a test fraction of {test_fraction} of {} sentences leaves {} for training \
                 and {} for testing; each side needs some",
                self.len(),
                train_side.len(),
                test_side.len()
            )));
        }
        Ok((
            self.select(&train_side, format!("{} (training part)", self.source)),
            self.select(&test_side, format!("{} (test part)", self.source)),
        ))
    }

    pub fn len(&self) -> usize {
        self.sentences.len()
    }

    /// Never true: an empty set is an error at open.
    pub fn is_empty(&self) -> bool {
        self.sentences.is_empty()
    }

    /// Sentence `i`'s words, maybe none.
    pub fn words(&self, i: usize) -> &[String] {
        &self.sentences[i]
    }

    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    /// Every sentence's label, in order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Class names, index = label.
    pub fn class_names(&self) -> &[String] {
        &self.classes
    }

    /// Where sentence `i` comes from, for messages: "train.tsv:12".
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The file, folder or set read.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn tokenizer(&self) -> TokenizerConfig {
        self.tokenizer
    }

    /// Files skipped as bad.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// One line for logs: source, size, classes, what was skipped.
    pub fn describe(&self) -> String {
        let skipped = match self.skipped {
            0 => String::new(),
            n => format!(", {n} files skipped"),
        };
        format!(
            "labelled sentences {}: {} sentences, {} classes{skipped}",
            self.source,
            self.len(),
            self.classes.len()
        )
    }

    /// Every sentence's token ids, each cut to its first `max_words`. An error if `vocab`
    /// reads words otherwise than these were read, or `max_words` is 0.
    pub fn encode(&self, vocab: &Vocabulary, max_words: usize) -> Result<Sentences> {
        check_tokenizer(self.tokenizer, vocab, &self.source)?;
        check_max_words(max_words)?;
        let mut out = Sentences::new();
        for words in &self.sentences {
            let ids = vocab.encode(&words[..words.len().min(max_words)]);
            out.push(&ids)?;
        }
        Ok(out)
    }
}
