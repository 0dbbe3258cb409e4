//! What the GPU side uploads: sentences as flat token ids with per-sentence offsets, and a
//! text set cut into passages of L consecutive sentences, the model's batch unit (a batch
//! is B passages, B x L sentences, every one of them a candidate for InfoNCE).
//!
//! Sentences of different lengths share one batch through **offsets, not a mask**: sentence
//! k is `tokens[offsets[k]..offsets[k + 1]]`, so no padding is stored and a sentence's
//! length is the difference of two offsets (it may be 0 for a labelled sentence of
//! punctuation only; a document's sentences have at least one word).
//!
//! [`cut_passages`] cuts each document, from its first sentence, into consecutive runs of L
//! sentences that do not overlap; a passage never spans two documents, and the last
//! (count mod L) sentences of each document are in none (counted). Every sentence keeps its
//! first `max_words` words (truncations counted).

use super::vocab::check_tokenizer;
use super::{TextSet, Vocabulary};
use crate::error::{Error, Result};

/// Sentences as flat token ids and offsets (not a mask): sentence k is
/// `tokens[offsets[k] as usize..offsets[k + 1] as usize]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentences {
    /// Every sentence's token ids, one sentence after another.
    pub tokens: Vec<u32>,
    /// Sentences + 1 entries: `offsets[0]` = 0, `offsets[k + 1]` = where sentence k ends.
    pub offsets: Vec<u32>,
}

impl Default for Sentences {
    fn default() -> Self {
        Sentences::new()
    }
}

impl Sentences {
    /// No sentences (`offsets` = `[0]`).
    pub fn new() -> Sentences {
        Sentences {
            tokens: Vec::new(),
            offsets: vec![0],
        }
    }

    /// Appends one sentence; an error if the tokens would pass u32 offsets (2^32 - 1).
    pub fn push(&mut self, ids: &[u32]) -> Result<()> {
        let end = u32::try_from(self.tokens.len() + ids.len()).map_err(|_| Error::Data {
            path: "sentences".into(),
            message: format!(
                "more than {} tokens in one set of sentences (offsets are u32)",
                u32::MAX
            ),
        })?;
        self.tokens.extend_from_slice(ids);
        self.offsets.push(end);
        Ok(())
    }

    /// Sentences held.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sentence `k`'s token ids.
    pub fn sentence(&self, k: usize) -> &[u32] {
        &self.tokens[self.offsets[k] as usize..self.offsets[k + 1] as usize]
    }

    /// Sentence `k`'s length in tokens.
    pub fn length(&self, k: usize) -> usize {
        (self.offsets[k + 1] - self.offsets[k]) as usize
    }

    /// The longest sentence's length (0 with no sentences).
    pub fn max_length(&self) -> usize {
        (0..self.len()).map(|k| self.length(k)).max().unwrap_or(0)
    }
}

/// An error unless `max_words` is at least 1.
pub(crate) fn check_max_words(max_words: usize) -> Result<()> {
    if max_words == 0 {
        return Err(Error::Config(
            "a sentence's word limit must be at least 1".into(),
        ));
    }
    Ok(())
}

/// How [`cut_passages`] cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassageConfig {
    /// L: consecutive sentences a passage.
    pub sentences: usize,
    /// Words kept of each sentence (its first ones).
    pub max_words: usize,
}

/// Passages of L consecutive sentences of a document each, one after another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passages {
    /// Passages x L sentences: passage p's sentence s is sentence p * L + s.
    pub sentences: Sentences,
    /// L.
    pub per_passage: usize,
    /// One label per sentence (in the order of `sentences`), or None for an unlabelled set.
    pub labels: Option<Vec<u32>>,
    /// Each passage's (document, index of its first sentence in the document).
    pub origins: Vec<(usize, usize)>,
}

impl Passages {
    /// Passages held.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// Sentence `s` (0..L) of passage `p`.
    pub fn sentence(&self, p: usize, s: usize) -> &[u32] {
        self.sentences.sentence(p * self.per_passage + s)
    }

    /// The passages at `indices` (repeats allowed), in that order: a batch of B passages,
    /// its offsets from 0.
    pub fn gather(&self, indices: &[usize]) -> Result<Passages> {
        let l = self.per_passage;
        let mut sentences = Sentences::new();
        for &p in indices {
            for s in 0..l {
                sentences.push(self.sentence(p, s))?;
            }
        }
        let labels = self.labels.as_ref().map(|labels| {
            indices
                .iter()
                .flat_map(|&p| labels[p * l..(p + 1) * l].iter().copied())
                .collect()
        });
        Ok(Passages {
            sentences,
            per_passage: l,
            labels,
            origins: indices.iter().map(|&p| self.origins[p]).collect(),
        })
    }
}

/// The passages of L sentences [`cut_passages`] cuts `set` into, without encoding them.
pub fn count_passages(set: &dyn TextSet, l: usize) -> Result<usize> {
    let mut n = 0;
    for i in 0..set.len() {
        n += set.document(i)?.sentences.len() / l.max(1);
    }
    Ok(n)
}

/// What [`cut_passages`] made, and what it left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassageCut {
    pub passages: Passages,
    /// Sentences in no passage: each document's last (count mod L).
    pub dropped: usize,
    /// Sentences cut to `max_words`.
    pub truncated: usize,
}

/// Every document of `set` cut into passages of `config.sentences` consecutive sentences,
/// encoded with `vocab` and truncated to `config.max_words`. An error if L or the word
/// limit is 0, the vocabulary reads words otherwise than the set, or no document has L
/// sentences.
pub fn cut_passages(
    set: &dyn TextSet,
    vocab: &Vocabulary,
    config: &PassageConfig,
) -> Result<PassageCut> {
    let l = config.sentences;
    if l == 0 {
        return Err(Error::Config(
            "a passage must have at least 1 sentence".into(),
        ));
    }
    check_max_words(config.max_words)?;
    check_tokenizer(set.tokenizer(), vocab, &set.describe())?;
    let labelled = set.num_classes().is_some();
    let mut sentences = Sentences::new();
    let mut labels = labelled.then(Vec::new);
    let mut origins = Vec::new();
    let (mut dropped, mut truncated) = (0, 0);
    for i in 0..set.len() {
        let document = set.document(i)?;
        let count = document.sentences.len();
        let whole = count - count % l;
        dropped += count - whole;
        for first in (0..whole).step_by(l) {
            for words in &document.sentences[first..first + l] {
                let kept = words.len().min(config.max_words);
                truncated += usize::from(kept < words.len());
                sentences.push(&vocab.encode(&words[..kept]))?;
            }
            origins.push((i, first));
        }
        if let Some(labels) = labels.as_mut() {
            let of_document = document
                .labels
                .as_ref()
                .filter(|d| d.len() == count)
                .ok_or_else(|| Error::Data {
                    path: set.name(i),
                    message: "a document of a labelled set without one label a sentence".into(),
                })?;
            labels.extend_from_slice(&of_document[..whole]);
        }
    }
    if origins.is_empty() {
        return Err(Error::Data {
            path: set.describe(),
            message: format!("no document has {l} sentences, the length of a passage"),
        });
    }
    Ok(PassageCut {
        passages: Passages {
            sentences,
            per_passage: l,
            labels,
            origins,
        },
        dropped,
        truncated,
    })
}
