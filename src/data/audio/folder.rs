//! A folder of audio files: WAV, FLAC and Ogg Vorbis ([`super::decode`]: `.wav`, `.wave`,
//! `.flac`, `.ogg`, `.oga`), each read as one clip of 16 kHz mono.
//!
//! - Layout as `data/walk.rs` reads every folder: each top-level sub-folder is one
//!   speaker, labelled 0.. in sorted name order, its files found at any depth, so
//!   LibriSpeech's `speaker/chapter/speaker-chapter-utterance.flac` is labelled by speaker
//!   (its `.txt` transcripts are not audio and are ignored); a folder without sub-folders is
//!   unlabelled; `train/` and `test/` (or `val/`) sub-folders are splits. Hidden files are
//!   ignored, links followed, each real folder read once.
//! - Every file's header is read at open, on several threads, giving each clip's length
//!   without decoding it (a file whose header does not declare its length is decoded once
//!   there to learn it). Unreadable and corrupt headers, and files over
//!   [`super::decode::MAX_SAMPLES`], show up there (stop or skip, per [`OnBadFile`]); a file
//!   cut short after its header, corrupt further in, or changed since open fails when it is
//!   decoded, and does the same then.
//! - Clips are decoded lazily, when a loader's worker thread asks for one, not at open:
//!   LibriSpeech's train-clean-100 is 6 GB of FLAC holding about 100 hours, 5.8e9 samples,
//!   23 GB as f32, more than memory. Decoded clips are kept ([`super::cache`]) until they
//!   fill a budget ([`AudioOptions::cache_bytes`], by default
//!   [`super::cache::DEFAULT_CACHE_BYTES`]). A LibriSpeech utterance (12 s of FLAC at
//!   16 kHz) decodes in about 4 ms (docs/audio.md), so a batch of windows costs a few tens
//!   of milliseconds spread over the workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache::Cache;
use super::decode::{self, is_audio_file};
use super::{AudioOptions, AudioSet, SAMPLE_RATE};
use crate::data::walk::{BadFiles, FileKind, Listing};
use crate::data::{bad_file, header_threads, par_map, OnBadFile};
use crate::error::{Error, Result};

/// What an audio folder holds, for the walk and its messages.
const AUDIO: FileKind = FileKind {
    one: "audio file",
    many: "audio files",
    examples: "e.g. .wav, .flac, .ogg",
    class_folder: "speaker folder",
    claims: is_audio_file,
};

pub struct AudioFolder {
    /// The audio files (relative to its root, in listing order) and their speakers.
    listing: Listing,
    /// Each clip's length at 16 kHz, from its header.
    lengths: Vec<usize>,
    on_bad_file: OnBadFile,
    /// Files skipped under Skip, at open and while decoding.
    bad: BadFiles,
    cache: Cache,
}

impl AudioFolder {
    pub fn open(path: &Path, options: &AudioOptions) -> Result<AudioFolder> {
        let mut listing = Listing::read(path, options.split, &AUDIO)?;
        let root = listing.root.clone();
        let checks = par_map(&listing.files, header_threads(), 16, |file| {
            decode::length(&root.join(file))
        });
        let (lengths, bad) = listing.keep(checks, options.on_bad_file, &AUDIO)?;
        Ok(AudioFolder {
            listing,
            lengths,
            on_bad_file: options.on_bad_file,
            bad,
            cache: Cache::new(options.cache_bytes),
        })
    }

    /// The folder read (after choosing the split).
    pub fn root(&self) -> &Path {
        &self.listing.root
    }

    /// Every file skipped so far, with why.
    pub fn skipped_files(&self) -> Vec<(PathBuf, String)> {
        self.bad.list(&self.listing.files)
    }

    /// Links to folders not followed because their folder is read elsewhere (or would be
    /// read again, in a loop), relative to [`AudioFolder::root`], in the order met.
    pub fn skipped_links(&self) -> &[PathBuf] {
        &self.listing.skipped_links
    }

    /// Bytes of decoded clips kept now (at most [`AudioOptions::cache_bytes`]).
    pub fn cached_bytes(&self) -> usize {
        self.cache.used()
    }
}

impl AudioSet for AudioFolder {
    fn len(&self) -> usize {
        self.listing.files.len()
    }

    fn frames(&self, i: usize) -> usize {
        self.lengths[i]
    }

    fn samples(&self, i: usize) -> Result<Arc<[f32]>> {
        let path = self.listing.root.join(&self.listing.files[i]);
        if let Some(why) = self.bad.get(i) {
            return Err(bad_file(&path, why));
        }
        if let Some(clip) = self.cache.get(i) {
            return Ok(clip);
        }
        let decoded = decode::decode(&path).and_then(|clip| {
            if clip.len() != self.lengths[i] {
                return Err(bad_file(
                    &path,
                    format!(
                        "changed since open: {} samples at 16 kHz, {} when opened",
                        clip.len(),
                        self.lengths[i]
                    ),
                ));
            }
            Ok(Arc::<[f32]>::from(clip))
        });
        match &decoded {
            Ok(clip) => self.cache.offer(i, clip),
            Err(Error::BadImage { message, .. }) if self.on_bad_file == OnBadFile::Skip => {
                self.bad.record(i, message)
            }
            Err(_) => {}
        }
        decoded
    }

    fn label(&self, i: usize) -> Option<u32> {
        self.listing.label(i)
    }

    fn num_classes(&self) -> Option<usize> {
        self.listing.num_classes()
    }

    fn name(&self, i: usize) -> String {
        self.listing.name(i)
    }

    fn describe(&self) -> String {
        let samples: usize = self.lengths.iter().sum();
        let hours = samples as f64 / SAMPLE_RATE as f64 / 3600.0;
        format!(
            "audio folder {}: {} files ({hours:.2} h at 16 kHz), {}",
            self.listing.root.display(),
            self.len(),
            self.listing.describe_rest("speakers", self.skipped())
        )
    }

    fn class_name(&self, class: u32) -> Option<String> {
        self.listing.class_name(class)
    }

    fn on_bad_file(&self) -> OnBadFile {
        self.on_bad_file
    }

    fn skipped(&self) -> usize {
        self.bad.count()
    }
}
