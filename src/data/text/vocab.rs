//! The vocabulary: words to token ids and back, built from a training corpus and stored with
//! a checkpoint (as a JSON string in its safetensors metadata, under [`METADATA_KEY`]), so a
//! checkpoint reads text on its own.
//!
//! - Id 0 is the padding token [`PAD_WORD`], id 1 the unknown word [`UNK_WORD`]; then the
//!   corpus' most frequent words, most frequent first, ties in alphabetical (code point)
//!   order, so one corpus gives one vocabulary whatever the order its files were read in.
//! - A vocabulary has [`MIN_SIZE`]..=[`MAX_SIZE`] entries, the two special ones included;
//!   built from a corpus with fewer distinct words than asked, it is smaller than asked.
//! - The stored form names its format and version, the [`TokenizerConfig`] the words were
//!   read with, and the words by id. Reading it back checks all of that: a missing or
//!   misplaced special token, an empty or duplicated word, a size out of range or an unknown
//!   field is an error naming the problem.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::segment::TokenizerConfig;
use super::TextSet;
use crate::error::{Error, Result};

/// Id of the padding token.
pub const PAD: u32 = 0;
/// Id of the unknown word: every word not in the vocabulary.
pub const UNK: u32 = 1;
/// The padding token's word; no UAX 29 word has '<' in it, so it never meets a real one.
pub const PAD_WORD: &str = "<pad>";
/// The unknown word's token.
pub const UNK_WORD: &str = "<unk>";
/// The fewest entries: the two special tokens.
pub const MIN_SIZE: usize = 2;
/// The most entries: 2^20 = 1048576 (an embedding table of 620 floats a word is 2.6 GB).
pub const MAX_SIZE: usize = 1 << 20;
/// The key of the stored form in a checkpoint's safetensors metadata.
pub const METADATA_KEY: &str = "vocabulary";

/// The stored form's format name and version.
const FORMAT: &str = "cpc-vocabulary";
const VERSION: u32 = 1;

/// Words by id, and ids by word.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocabulary {
    tokenizer: TokenizerConfig,
    /// Index = id; [PAD_WORD, UNK_WORD, most frequent, ...].
    words: Vec<String>,
    ids: HashMap<String, u32>,
}

/// The stored form (JSON).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    format: String,
    version: u32,
    tokenizer: TokenizerConfig,
    words: Vec<String>,
}

/// The error for a vocabulary that cannot be built or read.
fn vocab_err(message: impl Into<String>) -> Error {
    Error::Data {
        path: "vocabulary".into(),
        message: message.into(),
    }
}

/// An error unless `size` entries are within [`MIN_SIZE`]..=[`MAX_SIZE`].
fn check_size(size: usize) -> Result<()> {
    if (MIN_SIZE..=MAX_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(vocab_err(format!(
            "{size} entries; a vocabulary has {MIN_SIZE} to {MAX_SIZE} (the two special \
             tokens included)"
        )))
    }
}

impl Vocabulary {
    /// The vocabulary of `words` by id, which must start with [`PAD_WORD`] and [`UNK_WORD`]
    /// and hold no empty or repeated word: the one check every vocabulary passes.
    pub fn from_words(words: Vec<String>, tokenizer: TokenizerConfig) -> Result<Vocabulary> {
        check_size(words.len())?;
        for (id, special) in [(PAD, PAD_WORD), (UNK, UNK_WORD)] {
            if words[id as usize] != special {
                return Err(vocab_err(format!(
                    "id {id} is {:?}, expected the special token {special:?}",
                    words[id as usize]
                )));
            }
        }
        let mut ids = HashMap::with_capacity(words.len());
        for (id, word) in words.iter().enumerate() {
            if word.is_empty() {
                return Err(vocab_err(format!("id {id} is an empty word")));
            }
            if let Some(first) = ids.insert(word.clone(), id as u32) {
                return Err(vocab_err(format!(
                    "the word {word:?} appears twice, as ids {first} and {id}"
                )));
            }
        }
        Ok(Vocabulary {
            tokenizer,
            words,
            ids,
        })
    }

    /// The `size` - 2 most frequent words of `counts` after the two special tokens, ties in
    /// alphabetical order (words equal to a special token are left out).
    pub fn from_counts(
        counts: &HashMap<String, u64>,
        size: usize,
        tokenizer: TokenizerConfig,
    ) -> Result<Vocabulary> {
        check_size(size)?;
        let mut ranked: Vec<(&String, u64)> = counts
            .iter()
            .filter(|(w, _)| !w.is_empty() && *w != PAD_WORD && *w != UNK_WORD)
            .map(|(w, &n)| (w, n))
            .collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let words = [PAD_WORD, UNK_WORD]
            .into_iter()
            .map(String::from)
            .chain(ranked.into_iter().take(size - 2).map(|(w, _)| w.clone()))
            .collect();
        Vocabulary::from_words(words, tokenizer)
    }

    /// The vocabulary of at most `size` entries of every word in `set` (read with the set's
    /// tokenizer).
    pub fn build(set: &dyn TextSet, size: usize) -> Result<Vocabulary> {
        check_size(size)?;
        let mut counts: HashMap<String, u64> = HashMap::new();
        for i in 0..set.len() {
            for sentence in set.document(i)?.sentences {
                for word in sentence {
                    *counts.entry(word).or_default() += 1;
                }
            }
        }
        Vocabulary::from_counts(&counts, size, set.tokenizer())
    }

    /// Entries, the two special tokens included: the embedding table's rows.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Never true: a vocabulary holds its two special tokens.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// How the words were read (and text must be read to be encoded).
    pub fn tokenizer(&self) -> TokenizerConfig {
        self.tokenizer
    }

    /// The words by id.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The id of `word`, [`UNK`] if it is not in the vocabulary.
    pub fn id(&self, word: &str) -> u32 {
        self.get(word).unwrap_or(UNK)
    }

    /// The id of `word`, None if it is not in the vocabulary.
    pub fn get(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    /// The word of `id`, None past the end.
    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// The ids of a sentence's words ([`UNK`] for those not in the vocabulary).
    pub fn encode<W: AsRef<str>>(&self, words: &[W]) -> Vec<u32> {
        words.iter().map(|w| self.id(w.as_ref())).collect()
    }

    /// The stored form: one line of JSON, for a checkpoint's metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Stored {
            format: FORMAT.into(),
            version: VERSION,
            tokenizer: self.tokenizer,
            words: self.words.clone(),
        })
        .expect("a vocabulary serialises")
    }

    /// Reads the stored form back, checked as [`Vocabulary::from_words`] checks; errors are
    /// [`Error::Data`] on the path "vocabulary" (a caller reading a checkpoint names it).
    pub fn from_json(json: &str) -> Result<Vocabulary> {
        let stored: Stored = serde_json::from_str(json)
            .map_err(|e| vocab_err(format!("not a stored vocabulary: {e}")))?;
        if stored.format != FORMAT {
            return Err(vocab_err(format!(
                "format {:?}, expected {FORMAT:?}",
                stored.format
            )));
        }
        if stored.version != VERSION {
            return Err(vocab_err(format!(
                "version {}, this build reads version {VERSION}",
                stored.version
            )));
        }
        Vocabulary::from_words(stored.words, stored.tokenizer)
    }
}

/// An error unless text read with `read_with` is read as `vocab`'s words were.
pub(crate) fn check_tokenizer(
    read_with: TokenizerConfig,
    vocab: &Vocabulary,
    source: &str,
) -> Result<()> {
    if read_with == vocab.tokenizer() {
        return Ok(());
    }
    Err(Error::Data {
        path: source.into(),
        message: format!(
            "read with {read_with:?}, but the vocabulary's words were read with {:?}",
            vocab.tokenizer()
        ),
    })
}
