//! Text in, token ids of sentences out; no GPU here.
//!
//! - [`segment`]: paragraphs, sentences and words by the Unicode rules (UAX 29), lower-cased
//!   or not ([`TokenizerConfig`]).
//! - [`TextSet`]: documents, each a sequence of sentences (each its words) with optional
//!   labels per sentence, behind one trait, opened by [`open`]: a UTF-8 text file or a folder
//!   of them ([`folder`]), or the built-in synthetic corpus of topics ([`synthetic`], the
//!   default when no path is given).
//! - [`vocab`]: the [`Vocabulary`] built from a training set (the most frequent words, with
//!   padding and unknown tokens), stored with a checkpoint as JSON.
//! - [`labelled`]: [`LabelledSentences`] for the probe: a TSV file, a folder of class
//!   folders, or every sentence of a labelled [`TextSet`]; split by a fraction.
//! - [`passages`]: a set cut into passages of L consecutive sentences, truncated to a word
//!   limit, as flat token ids and per-sentence offsets ([`Sentences`]): the model's batch
//!   unit, B passages of L sentences, is [`Passages::gather`] of B of them.
//! - [`loader`]: [`TextLoader`], batch after batch of B passages in a shuffled, resumable
//!   order.
//!
//! Every text file is UTF-8 (a leading byte-order mark is dropped); one that is not, or is
//! over [`MAX_FILE_BYTES`], is a bad file: an error naming it (and for bad UTF-8 the byte
//! offset and line of the first invalid byte), or skipped and counted under
//! [`OnBadFile::Skip`]. Folders are walked as images' and audio's are (`data/walk.rs`):
//! `.txt` files, class sub-folders labelled in sorted name order, `train/` and `test/`
//! splits, hidden files ignored.

pub mod folder;
pub mod labelled;
pub mod loader;
pub mod passages;
pub mod segment;
pub mod synthetic;
pub mod vocab;

use std::path::Path;

use super::walk::FileKind;
use super::{bad_file, data_err, OnBadFile, Split};
use crate::error::Result;

pub use folder::TextFolder;
pub use labelled::LabelledSentences;
pub use loader::TextLoader;
pub use passages::{count_passages, cut_passages, PassageConfig, Passages, Sentences};
pub use segment::TokenizerConfig;
pub use synthetic::{SyntheticConfig, SyntheticText};
pub use vocab::Vocabulary;

/// One document as the model reads it: its sentences in order (paragraph after paragraph),
/// each its words, none empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Document {
    pub sentences: Vec<Vec<String>>,
    /// One label per sentence, or None for an unlabelled set.
    pub labels: Option<Vec<u32>>,
}

/// A set of documents with optional labels per sentence, read on demand and safe to share
/// between threads.
pub trait TextSet: Send + Sync {
    /// Documents.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Document `i` (0..len), segmented with [`TextSet::tokenizer`].
    fn document(&self, i: usize) -> Result<Document>;

    /// How the words are read.
    fn tokenizer(&self) -> TokenizerConfig;

    /// Number of classes, or None for an unlabelled set.
    fn num_classes(&self) -> Option<usize>;

    /// Where document `i` comes from, for messages: "books/emma.txt", "synthetic:train#3".
    fn name(&self, i: usize) -> String;

    /// One line for logs: kind, split, size, classes, what was skipped.
    fn describe(&self) -> String;

    /// Name of a class (a folder name, a topic), where the set has names.
    fn class_name(&self, _class: u32) -> Option<String> {
        None
    }

    /// Files skipped under [`OnBadFile::Skip`].
    fn skipped(&self) -> usize {
        0
    }
}

/// Everything [`open`] and [`LabelledSentences::open`] need besides the path.
#[derive(Clone, Debug, Default)]
pub struct TextOptions {
    pub split: Split,
    pub on_bad_file: OnBadFile,
    pub tokenizer: TokenizerConfig,
    /// Used when no path is given.
    pub synthetic: SyntheticConfig,
}

/// Opens a text set: `path` None means the built-in synthetic corpus, a file one document,
/// a folder one document per `.txt` file. Errors name the path and say what was expected.
pub fn open(path: Option<&Path>, options: &TextOptions) -> Result<Box<dyn TextSet>> {
    match path {
        None => Ok(Box::new(SyntheticText::new(
            options.synthetic.clone(),
            options.split,
            options.tokenizer,
        )?)),
        Some(path) => Ok(Box::new(TextFolder::open(path, options)?)),
    }
}

/// The largest text file read: 1 GiB (token offsets are u32, and a file is held whole).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// What a text folder holds, for the walk and its messages.
pub(crate) const TEXT: FileKind = FileKind {
    one: "text file",
    many: "text files",
    examples: ".txt",
    class_folder: "class folder",
    claims: is_text_file,
};

fn is_text_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
}

/// The text of a UTF-8 file, without a leading byte-order mark. Not UTF-8, or over
/// [`MAX_FILE_BYTES`], or unreadable: a bad file ([`crate::Error::BadImage`]) naming it,
/// for bad UTF-8 with the byte offset and line of the first invalid byte.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let cannot_read = |e: std::io::Error| bad_file(path, format!("cannot read: {e}"));
    let size = std::fs::metadata(path).map_err(cannot_read)?.len();
    if size > MAX_FILE_BYTES {
        return Err(bad_file(
            path,
            format!("{size} bytes, over the limit of {MAX_FILE_BYTES} for a text file"),
        ));
    }
    let bytes = std::fs::read(path).map_err(cannot_read)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        bad_file(
            path,
            format!(
                "not UTF-8: invalid byte 0x{:02X} at byte offset {at} (line {line})",
                e.as_bytes()[at]
            ),
        )
    })?;
    Ok(match text.strip_prefix('\u{FEFF}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// An error unless `path` exists.
pub(crate) fn must_exist(path: &Path) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(data_err(path, "no such file or folder"))
    }
}
