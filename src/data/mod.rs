//! Images, audio and text in, normalised f32 batches (or token ids) out; no GPU here.
//!
//! Audio has its own readers, synthetic set, loader and features under [`audio`], text its
//! segmenter, vocabulary, readers, synthetic corpus and passages under [`text`]; what they
//! share is here: the folder walk (`walk.rs`), the bad-file policy ([`OnBadFile`]), the
//! seeds ([`rng`]), [`Split`] and the loader's schedule and workers ([`loader`]).
//!
//! - [`Dataset`]: decoded RGB images with optional labels, behind one trait, opened by [`open`]:
//!   an image folder ([`folder`]), CIFAR-10 or STL-10 binaries ([`cifar`], [`stl`]), or the
//!   built-in procedural stripes ([`builtin`], the default when no data is given).
//! - [`augment`]: the paper's augmentation (resize so the short side is 300/256 * S, random
//!   S x S crop, horizontal flip, grey-scale) and the centre crop used for evaluation.
//! - [`subset`]: a fixed random sample of another set (cheap probes).
//! - [`loader`]: worker threads that decode and augment the next batches in a deterministic
//!   order, resumable from a [`LoaderState`]; and [`Sequential`], centre crops of a whole set.
//!
//! Every image is f32 in [0, 1], planar [3, H, W]. Batches are normalised by
//! [`augment::normalise`]: x' = (x - 0.5) * 2, so pixel values lie in [-1, 1].

pub mod audio;
pub mod augment;
pub mod builtin;
pub mod cifar;
pub mod folder;
pub mod loader;
mod records;
pub mod rng;
pub mod stl;
pub mod subset;
pub mod text;
mod walk;

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

pub use augment::Augment;
pub use builtin::{Builtin, BuiltinConfig};
pub use cifar::Cifar10;
pub use folder::ImageFolder;
pub use loader::{Batch, Loader, LoaderConfig, LoaderState, Sequential};
pub use stl::Stl10;
pub use subset::Subset;

/// A decoded RGB image: f32 in [0, 1], planar, `data` is [3, height, width].
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// [3, height, width]: the R plane, then G, then B, each row-major.
    pub data: Vec<f32>,
}

impl Image {
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Image {
        assert_eq!(
            data.len(),
            3 * width * height,
            "Image::new: data is not [3, {height}, {width}]"
        );
        Image {
            width,
            height,
            data,
        }
    }

    pub fn zeros(width: usize, height: usize) -> Image {
        Image::new(width, height, vec![0.0; 3 * width * height])
    }

    /// From interleaved 8-bit RGB (r, g, b, r, g, b, ...), row-major.
    pub fn from_rgb8(width: usize, height: usize, rgb: &[u8]) -> Image {
        assert_eq!(rgb.len(), 3 * width * height);
        let plane = width * height;
        let mut data = vec![0.0; 3 * plane];
        for (p, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[c * plane + p] = px[c] as f32 / 255.0;
            }
        }
        Image::new(width, height, data)
    }

    /// Value of channel `c` at row `y`, column `x`.
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// The shorter of width and height.
    pub fn short_side(&self) -> usize {
        self.width.min(self.height)
    }
}

/// A set of images with optional labels, read on demand and safe to share between threads.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `i` (0..len), decoded. A corrupt image gives [`Error::BadImage`] naming the file.
    fn image(&self, i: usize) -> Result<Image>;

    /// Class of image `i` in 0..num_classes, or None for an unlabelled set.
    fn label(&self, i: usize) -> Option<u32>;

    /// Number of classes, or None for an unlabelled set.
    fn num_classes(&self) -> Option<usize>;

    /// Where image `i` comes from, for messages: "cat/001.png", "cifar:test_batch.bin#17".
    fn name(&self, i: usize) -> String;

    /// One line for logs: kind, split, size, classes.
    fn describe(&self) -> String;

    /// Name of a class ("airplane", or a folder name), where the set has names.
    fn class_name(&self, _class: u32) -> Option<String> {
        None
    }

    /// What readers should do when [`Dataset::image`] fails with [`Error::BadImage`].
    fn on_bad_image(&self) -> OnBadFile {
        OnBadFile::Stop
    }

    /// Files skipped so far under [`OnBadFile::Skip`]: at open and while decoding.
    fn skipped(&self) -> usize {
        0
    }
}

/// One batch as the training loop hands it to the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The model's input tensor, flattened: [B, 3, S, S] normalised crops, [B, 1, 1, L]
    /// windows.
    Values(Vec<f32>),
    /// B passages of L sentences, sentence b L + s, as token ids and offsets.
    Sentences(text::Sentences),
}

/// What the training loop reads, whatever the modality: batch after batch of the model's
/// input (crops from a [`Loader`], windows from an [`audio::AudioLoader`], passages from a
/// [`text::TextLoader`]), in a deterministic order resumable from a [`LoaderState`].
pub trait TrainingData: Send {
    /// The next batch; waits only if the loader's workers are behind.
    fn next_input(&mut self) -> Result<Input>;

    /// Pass over the next batch as [`TrainingData::next_input`] would read it, leaving the
    /// loader where reading it would (the batch of another process of a data-parallel run).
    fn skip_input(&mut self) -> Result<()> {
        self.next_input().map(drop)
    }

    /// The words a text model's token ids stand for (None for images and audio): saved
    /// with every checkpoint.
    fn vocabulary(&self) -> Option<&text::Vocabulary> {
        None
    }

    /// Where the next batch starts: saved with a checkpoint, given back to resume.
    fn state(&self) -> LoaderState;

    /// Files left out so far: bad files under [`OnBadFile::Skip`], clips shorter than a
    /// window under [`audio::OnShort::Skip`].
    fn skipped(&self) -> usize;

    /// One line for logs: what is read and how.
    fn describe(&self) -> String;
}

/// How [`open`] reads a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// CIFAR-10 or STL-10 binaries if their files are there (sizes checked), else a folder
    /// of images; no path means the built-in set.
    #[default]
    Auto,
    Folder,
    Cifar10,
    Stl10,
    Builtin,
    /// Labelled sentences, `label<TAB>sentence` per line: for a text checkpoint's probe.
    Tsv,
}

/// Which part of a data set to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    #[default]
    Train,
    Test,
    /// STL-10's unlabeled_X.bin, or a folder's `unlabeled/` sub-folder.
    Unlabeled,
}

impl Split {
    /// The split's part of a seed ([`rng::derive_seed`]): generated sets draw each split's
    /// examples from streams of their own.
    pub fn seed_part(self) -> u64 {
        match self {
            Split::Train => 0,
            Split::Test => 1,
            Split::Unlabeled => 2,
        }
    }
}

/// What to do with a file that cannot be decoded: an image (also one smaller than the
/// minimum side) or an audio file (also one over [`audio::decode::MAX_SAMPLES`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnBadFile {
    /// Fail with an error naming the file.
    #[default]
    Stop,
    /// Count it ([`Dataset::skipped`], [`audio::AudioSet::skipped`]) and go on with the next.
    Skip,
}

/// The policy's name from before audio, kept for the callers (and fields) that use it.
pub type OnBadImage = OnBadFile;

/// Everything [`open`] needs besides the path and format.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub split: Split,
    pub on_bad_image: OnBadFile,
    /// Images whose shorter side is below this are bad images (0: no minimum).
    pub min_side: usize,
    /// Used when the format is (or detects as) the built-in set.
    pub builtin: BuiltinConfig,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            split: Split::Train,
            on_bad_image: OnBadFile::Stop,
            min_side: 0,
            builtin: BuiltinConfig::default(),
        }
    }
}

/// Opens a data set. `path` None means the built-in procedural set (format Auto or Builtin).
///
/// A path may be a folder or, for CIFAR-10 and STL-10, one .bin file (then the file decides
/// the split). Errors name the path and say what was expected.
pub fn open(
    path: Option<&Path>,
    format: Format,
    options: &OpenOptions,
) -> Result<Box<dyn Dataset>> {
    let Some(path) = path else {
        return match format {
            Format::Auto | Format::Builtin => Ok(Box::new(Builtin::new(
                options.builtin.clone(),
                options.split,
            )?)),
            _ => Err(Error::Data {
                path: String::new(),
                message: format!("format {format} needs a path"),
            }),
        };
    };
    if format == Format::Builtin {
        return Err(data_err(path, "the built-in data set takes no path"));
    }
    if !path.exists() {
        return Err(data_err(path, "no such file or folder"));
    }
    let format = if format == Format::Auto {
        detect(path)?
    } else {
        format
    };
    Ok(match format {
        Format::Folder => Box::new(ImageFolder::open(path, options)?),
        Format::Cifar10 => Box::new(Cifar10::open(path, options)?),
        Format::Stl10 => Box::new(Stl10::open(path, options)?),
        Format::Tsv => {
            return Err(data_err(
                path,
                "--format tsv reads labelled sentences, for a text checkpoint; images are a \
                 folder, CIFAR-10 or STL-10",
            ))
        }
        Format::Auto | Format::Builtin => unreachable!("resolved above"),
    })
}

/// What [`Format::Auto`] makes of a path that exists: CIFAR-10 and STL-10 by their file
/// names (also inside `cifar-10-batches-bin/` or `stl10_binary/`), a lone .bin file by its
/// size, anything else a folder of images.
pub fn detect(path: &Path) -> Result<Format> {
    if path.is_dir() {
        if cifar::find_dir(path).is_some() {
            return Ok(Format::Cifar10);
        }
        if stl::find_dir(path).is_some() {
            return Ok(Format::Stl10);
        }
        return Ok(Format::Folder);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if cifar::is_file_name(&name) {
        return Ok(Format::Cifar10);
    }
    if stl::is_file_name(&name) {
        return Ok(Format::Stl10);
    }
    let size = std::fs::metadata(path)
        .map_err(|e| data_err(path, e))?
        .len();
    if name.ends_with(".bin") {
        if size > 0 && size % cifar::RECORD as u64 == 0 {
            return Ok(Format::Cifar10);
        }
        if size > 0 && size % stl::IMAGE_BYTES as u64 == 0 {
            return Ok(Format::Stl10);
        }
    }
    Err(data_err(
        path,
        format!(
            "cannot tell the format of this {size}-byte file: expected a folder of images, \
             CIFAR-10 batches ({} bytes a record) or STL-10 images ({} bytes an image)",
            cifar::RECORD,
            stl::IMAGE_BYTES
        ),
    ))
}

pub(crate) fn data_err(path: &Path, message: impl fmt::Display) -> Error {
    Error::Data {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// One file that cannot be decoded, image or audio ([`Error::BadImage`]).
pub(crate) fn bad_file(path: &Path, message: impl fmt::Display) -> Error {
    Error::BadImage {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Threads for reading every file's header at open: the cores, at most 8.
pub(crate) fn header_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
}

/// `f` over `items` on up to `threads` scoped threads, each taking a run of at least
/// `min_chunk` items; the results in the order of `items`.
pub(crate) fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    min_chunk: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let chunk = items.len().div_ceil(threads.max(1)).max(min_chunk).max(1);
    if chunk >= items.len() {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// The message for an image below the minimum side, naming both sizes.
pub(crate) fn too_small(width: usize, height: usize, min_side: usize) -> String {
    format!("image is {width}x{height}, its shorter side is below the minimum side {min_side}")
}

/// Display and FromStr for a command-line choice: each variant's name, and its aliases.
macro_rules! names {
    ($ty:ident, $what:literal, $($variant:ident = $name:literal $(| $alias:literal)*),+) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(match self { $($ty::$variant => $name),+ })
            }
        }
        impl ::std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> ::std::result::Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $($name $(| $alias)* => Ok($ty::$variant),)+
                    _ => Err(format!(concat!("unknown ", $what, " {:?}, expected one of: {}"),
                        s, [$($name),+].join(", "))),
                }
            }
        }
    };
}
pub(crate) use names;

names!(
    Format,
    "data format",
    Auto = "auto",
    Folder = "folder",
    Cifar10 = "cifar10" | "cifar" | "cifar-10",
    Stl10 = "stl10" | "stl" | "stl-10",
    Builtin = "builtin" | "stripes",
    Tsv = "tsv"
);
names!(
    Split,
    "split",
    Train = "train",
    Test = "test" | "val",
    Unlabeled = "unlabeled" | "unlabelled"
);
names!(OnBadFile, "bad-file policy", Stop = "stop", Skip = "skip");
