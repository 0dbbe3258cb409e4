//! A view of some images (or audio clips) of another data set, e.g. a few hundred for a
//! cheap linear probe.
//! The images are a fixed pseudo-random sample, kept in index order: evenly spaced indices
//! would alias with sets that cycle through their classes (the built-in set's class is
//! index mod 10, so every fifth image is two classes), and the first images of a folder are
//! all of one class; a random sample is balanced in expectation whatever the order.

use rand::seq::index::sample;

use super::audio::AudioSet;
use super::rng::rng_for;
use super::{Dataset, Image, OnBadFile};
use crate::error::Result;

/// Seeds the sample (a domain of its own among the data module's generators).
const SUBSET: u64 = 0x5_0B5E7;

/// Some examples of an image set (`Subset`) or of an audio set (`Subset<dyn AudioSet>`).
pub struct Subset<S: ?Sized = dyn Dataset> {
    inner: Box<S>,
    /// Indices into `inner`, in order.
    indices: Vec<usize>,
}

/// `count` of `len` indices drawn without replacement, the same ones for the same set size
/// and count, in index order (all of them when count >= len).
pub(crate) fn sample_indices(len: usize, count: usize) -> Vec<usize> {
    if count >= len {
        return (0..len).collect();
    }
    let mut rng = rng_for(&[SUBSET, len as u64, count as u64]);
    let mut picked = sample(&mut rng, len, count).into_vec();
    picked.sort_unstable();
    picked
}

impl Subset {
    /// `count` images of `inner` (see [`sample_indices`]).
    pub fn sample(inner: Box<dyn Dataset>, count: usize) -> Subset {
        let indices = sample_indices(inner.len(), count);
        Subset { inner, indices }
    }
}

impl Subset<dyn AudioSet> {
    /// `count` clips of `inner`, drawn as [`Subset::sample`] draws images.
    pub fn sample_clips(inner: Box<dyn AudioSet>, count: usize) -> Subset<dyn AudioSet> {
        let indices = sample_indices(inner.len(), count);
        Subset { inner, indices }
    }
}

impl AudioSet for Subset<dyn AudioSet> {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn frames(&self, i: usize) -> usize {
        self.inner.frames(self.indices[i])
    }

    fn samples(&self, i: usize) -> Result<std::sync::Arc<[f32]>> {
        self.inner.samples(self.indices[i])
    }

    fn label(&self, i: usize) -> Option<u32> {
        self.inner.label(self.indices[i])
    }

    fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes()
    }

    fn name(&self, i: usize) -> String {
        self.inner.name(self.indices[i])
    }

    fn describe(&self) -> String {
        format!("{} clips of {}", self.indices.len(), self.inner.describe())
    }

    fn class_name(&self, class: u32) -> Option<String> {
        self.inner.class_name(class)
    }

    fn on_bad_file(&self) -> OnBadFile {
        self.inner.on_bad_file()
    }

    fn skipped(&self) -> usize {
        self.inner.skipped()
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn image(&self, i: usize) -> Result<Image> {
        self.inner.image(self.indices[i])
    }

    fn label(&self, i: usize) -> Option<u32> {
        self.inner.label(self.indices[i])
    }

    fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes()
    }

    fn name(&self, i: usize) -> String {
        self.inner.name(self.indices[i])
    }

    fn describe(&self) -> String {
        format!("{} images of {}", self.indices.len(), self.inner.describe())
    }

    fn class_name(&self, class: u32) -> Option<String> {
        self.inner.class_name(class)
    }

    fn on_bad_image(&self) -> OnBadFile {
        self.inner.on_bad_image()
    }

    fn skipped(&self) -> usize {
        self.inner.skipped()
    }
}
