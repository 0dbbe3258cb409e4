//! Audio in, windows of 16 kHz mono samples out; no GPU here.
//!
//! - [`AudioSet`]: sound clips (16 kHz, mono, f32 in [-1, 1]) with optional labels, behind one
//!   trait, opened by [`open`]: a folder of WAV, FLAC and Ogg Vorbis files ([`folder`], read
//!   by [`decode`]), or the built-in synthetic speech ([`synthetic`], the default when no
//!   folder is given). Labels are speakers: a folder's top-level sub-folders, or the
//!   synthetic set's voices.
//! - [`augment`]: where a training window starts in its clip (random, the main augmentation)
//!   and an optional random gain.
//! - [`loader`]: worker threads that cut the next batches of windows [B, 1, 1, L] in a
//!   deterministic order, resumable from a [`LoaderState`]; and [`Clips`], every clip whole,
//!   in order, for evaluation ([`fixed_windows`] cuts one into windows).
//! - [`features`]: log-mel filterbank energies, the probe's input baseline.
//! - [`cache`]: the clips a set keeps once decoded or made, within a byte budget.
//!
//! A clip shorter than a window is padded with zeros or skipped ([`OnShort`]), and counted.
//! docs/audio.md describes the formats, the folder layout, the policies and the synthetic set.

pub mod augment;
pub mod cache;
pub mod decode;
pub mod features;
pub mod folder;
pub mod loader;
pub mod synthetic;

use std::path::Path;
use std::sync::Arc;

use super::{data_err, names, OnBadFile, Split};
use crate::error::{Error, Result};

pub use augment::AudioAugment;
pub use features::{LogMel, LogMelConfig};
pub use folder::AudioFolder;
pub use loader::{fixed_windows, AudioBatch, AudioLoader, AudioLoaderConfig, Clip, Clips};
pub use synthetic::{SyntheticConfig, SyntheticSpeech};

pub use super::LoaderState;

/// The rate every clip is read at (and resampled to): 16 kHz, as in the CPC paper.
pub const SAMPLE_RATE: u32 = 16_000;

/// A set of sound clips with optional labels, read on demand and safe to share between
/// threads. Every clip is 16 kHz mono, f32 in [-1, 1].
pub trait AudioSet: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Clip `i`'s length in samples, known without decoding it; [`AudioSet::samples`] gives
    /// exactly this many.
    fn frames(&self, i: usize) -> usize;

    /// Clip `i` (0..len), decoded, [`AudioSet::frames`] samples. A file that cannot be
    /// decoded gives [`Error::BadImage`] naming it.
    fn samples(&self, i: usize) -> Result<Arc<[f32]>>;

    /// Speaker of clip `i` in 0..num_classes, or None for an unlabelled set.
    fn label(&self, i: usize) -> Option<u32>;

    /// Number of speakers, or None for an unlabelled set.
    fn num_classes(&self) -> Option<usize>;

    /// Where clip `i` comes from, for messages: "19/198/19-198-0001.flac", "synthetic:train#3".
    fn name(&self, i: usize) -> String;

    /// One line for logs: kind, split, size, speakers, what was skipped.
    fn describe(&self) -> String;

    /// Name of a speaker (a folder name, "speaker-03"), where the set has names.
    fn class_name(&self, _class: u32) -> Option<String> {
        None
    }

    /// What readers should do when [`AudioSet::samples`] fails with [`Error::BadImage`].
    fn on_bad_file(&self) -> OnBadFile {
        OnBadFile::Stop
    }

    /// Files skipped so far under [`OnBadFile::Skip`]: at open and while decoding.
    fn skipped(&self) -> usize {
        0
    }
}

/// What to do with a clip shorter than the window a loader cuts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnShort {
    /// Use it, zero-padded at the end to one window (its offset is 0).
    #[default]
    Pad,
    /// Leave it out.
    Skip,
}

names!(OnShort, "short-clip policy", Pad = "pad", Skip = "skip");

/// Everything [`open`] needs besides the path.
#[derive(Clone, Debug)]
pub struct AudioOptions {
    pub split: Split,
    pub on_bad_file: OnBadFile,
    /// Decoded clips a folder keeps in memory, bytes (0: none; see [`cache`]). The built-in
    /// synthetic set keeps its clips within [`cache::DEFAULT_CACHE_BYTES`] whatever this says.
    pub cache_bytes: usize,
    /// Used when no path is given.
    pub synthetic: SyntheticConfig,
}

impl Default for AudioOptions {
    fn default() -> Self {
        AudioOptions {
            split: Split::Train,
            on_bad_file: OnBadFile::Stop,
            cache_bytes: cache::DEFAULT_CACHE_BYTES,
            synthetic: SyntheticConfig::default(),
        }
    }
}

/// Opens an audio set: `path` None means the built-in synthetic speech, else a folder of
/// audio files. Errors name the path and say what was expected.
pub fn open(path: Option<&Path>, options: &AudioOptions) -> Result<Box<dyn AudioSet>> {
    match path {
        None => Ok(Box::new(SyntheticSpeech::new(
            options.synthetic.clone(),
            options.split,
        )?)),
        Some(path) if path.is_file() => Err(data_err(
            path,
            "is a file; audio is read from a folder (one sub-folder per speaker, or flat)",
        )),
        Some(path) => Ok(Box::new(AudioFolder::open(path, options)?)),
    }
}

/// The error for an audio set that cannot serve what was asked.
pub(crate) fn set_err(set: &dyn AudioSet, message: impl Into<String>) -> Error {
    Error::Data {
        path: set.describe(),
        message: message.into(),
    }
}
