//! Text into paragraphs, sentences and words, by the Unicode rules (UAX 29, through the
//! `unicode-segmentation` crate); no hand-written rules beyond the paragraphs'.
//!
//! - **Paragraphs** are separated by blank lines (empty or whitespace only). The lines of one
//!   paragraph are joined with a space first, as UAX 29 ends a sentence at every line break:
//!   hard-wrapped text (a Project Gutenberg book) would otherwise cut a sentence per line.
//! - **Sentences** are UAX 29 sentences (`unicode_sentences`) of a paragraph: a break after
//!   `.`, `!` or `?` (and their CJK and other scripts' kin) unless what follows makes it an
//!   abbreviation (a lower-case letter next). "Mr. Smith" is cut after "Mr.", as UAX 29 does.
//!   Only pieces with a letter or digit are sentences (the crate's rule): a run of
//!   punctuation alone ("... !!!") attaches to the sentence before it, or is no sentence.
//! - **Words** are UAX 29 words (`unicode_words`): runs of letters, digits and the joiners
//!   inside words ("don't", "3.14", "u.s.a"), without punctuation or spaces; CJK ideographs
//!   are one word each. Lower-cased with Unicode's full mapping (`str::to_lowercase`: É to
//!   é, Σ to σ or final ς, ẞ to ß) when [`TokenizerConfig::lowercase`] is set (the default).
//!
//! [`words`] of a sentence of punctuation only (as a line of a labelled file may be) is an
//! empty list; a [`document`] holds only sentences with words.

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

/// How words are normalised; stored with a [`super::Vocabulary`], so text is read the
/// same way at training and at evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerConfig {
    /// Lower-case every word (Unicode's full mapping).
    pub lowercase: bool,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig { lowercase: true }
    }
}

/// The paragraphs of `text`, each its lines joined by single spaces (trimmed); blank lines
/// separate them, and none is empty.
pub fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    // `lines` also ends a line at "\r\n".
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The UAX 29 sentences of one paragraph, trimmed: those with a letter or digit.
pub fn sentences(paragraph: &str) -> Vec<&str> {
    paragraph
        .unicode_sentences()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The UAX 29 words of one sentence, in order, normalised as `config` says.
pub fn words(sentence: &str, config: &TokenizerConfig) -> Vec<String> {
    sentence
        .unicode_words()
        .map(|w| {
            if config.lowercase {
                w.to_lowercase()
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// Every sentence of `text` with at least one word (all of them but for the rare letter
/// or digit outside any word), paragraph after paragraph, as its words: what a document is
/// to the model.
pub fn document(text: &str, config: &TokenizerConfig) -> Vec<Vec<String>> {
    paragraphs(text)
        .iter()
        .flat_map(|p| {
            sentences(p)
                .into_iter()
                .map(|s| words(s, config))
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}
