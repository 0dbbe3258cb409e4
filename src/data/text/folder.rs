//! A UTF-8 text file, or a folder of them: one document each.
//!
//! - A folder is walked as `data/walk.rs` says, for `.txt` files (any case): each top-level
//!   sub-folder is a class, labelled 0.. in sorted name order, and every sentence of a file
//!   has its file's class; a folder without sub-folders is unlabelled; `train/` and `test/`
//!   (or `val/`) sub-folders are splits. A file given by its path is read whatever its
//!   extension, as an unlabelled set of one document.
//! - Every file is read whole at open, on several threads, and kept as text (a 1 GB corpus
//!   holds 1 GB): one that is not UTF-8, over [`super::MAX_FILE_BYTES`] or unreadable
//!   stops the open with an error naming it or, under [`OnBadFile::Skip`](crate::data::OnBadFile::Skip), is left out and
//!   counted. Nothing is read after open, so nothing fails later.
//! - Documents are segmented ([`super::segment::document`]) when asked for.

use std::path::{Path, PathBuf};

use super::{
    must_exist, read_text, segment, Document, TextOptions, TextSet, TokenizerConfig, TEXT,
};
use crate::data::walk::{BadFiles, Listing};
use crate::data::{header_threads, par_map};
use crate::error::Result;

pub struct TextFolder {
    /// The text files (relative to its root, in listing order) and their classes.
    listing: Listing,
    /// Each file's text.
    texts: Vec<String>,
    tokenizer: TokenizerConfig,
    /// Files skipped under Skip, at open.
    bad: BadFiles,
    /// The file given, where one file was.
    file: Option<PathBuf>,
}

impl TextFolder {
    /// Reads `path`: a folder of `.txt` files, or one file.
    pub fn open(path: &Path, options: &TextOptions) -> Result<TextFolder> {
        must_exist(path)?;
        let file = path.is_file().then(|| path.to_path_buf());
        let mut listing = if path.is_file() {
            Listing {
                root: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                files: vec![PathBuf::from(path.file_name().unwrap_or_default())],
                labels: None,
                classes: Vec::new(),
                skipped_links: Vec::new(),
            }
        } else {
            Listing::read(path, options.split, &TEXT)?
        };
        let root = listing.root.clone();
        let reads = par_map(&listing.files, header_threads(), 16, |file| {
            read_text(&root.join(file))
        });
        let (texts, bad) = listing.keep(reads, options.on_bad_file, &TEXT)?;
        Ok(TextFolder {
            listing,
            texts,
            tokenizer: options.tokenizer,
            bad,
            file,
        })
    }

    /// The folder read (after choosing the split), or a lone file's folder.
    pub fn root(&self) -> &Path {
        &self.listing.root
    }

    /// Document `i`'s text as read (without a byte-order mark).
    pub fn text(&self, i: usize) -> &str {
        &self.texts[i]
    }

    /// Every file skipped, with why.
    pub fn skipped_files(&self) -> Vec<(PathBuf, String)> {
        self.bad.list(&self.listing.files)
    }

    /// Links to folders not followed because their folder is read elsewhere (or would be
    /// read again, in a loop), relative to [`TextFolder::root`], in the order met.
    pub fn skipped_links(&self) -> &[PathBuf] {
        &self.listing.skipped_links
    }
}

impl TextSet for TextFolder {
    fn len(&self) -> usize {
        self.texts.len()
    }

    fn document(&self, i: usize) -> Result<Document> {
        let sentences = segment::document(&self.texts[i], &self.tokenizer);
        let labels = self.listing.label(i).map(|l| vec![l; sentences.len()]);
        Ok(Document { sentences, labels })
    }

    fn tokenizer(&self) -> TokenizerConfig {
        self.tokenizer
    }

    fn num_classes(&self) -> Option<usize> {
        self.listing.num_classes()
    }

    fn name(&self, i: usize) -> String {
        self.listing.name(i)
    }

    fn describe(&self) -> String {
        let bytes: usize = self.texts.iter().map(String::len).sum();
        let megabytes = bytes as f64 / 1e6;
        match &self.file {
            Some(file) => format!("text file {}: {megabytes:.2} MB", file.display()),
            None => format!(
                "text folder {}: {} documents ({megabytes:.2} MB), {}",
                self.listing.root.display(),
                self.len(),
                self.listing.describe_rest("classes", self.skipped())
            ),
        }
    }

    fn class_name(&self, class: u32) -> Option<String> {
        self.listing.class_name(class)
    }

    fn skipped(&self) -> usize {
        self.bad.count()
    }
}
