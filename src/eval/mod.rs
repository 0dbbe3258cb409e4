//! Judging what pretraining learned: image features from a frozen encoder ([`features`]),
//! audio's and text's ([`audio`], [`text`]), the linear probe against the random-weight
//! baseline ([`probe`]) and against the raw input ([`input`]: pixels, log-mel energies, bags
//! of words), and pictures of nearest neighbours ([`neighbours`]).

pub mod audio;
pub mod features;
pub mod input;
pub mod neighbours;
pub mod probe;
pub mod text;

pub use features::{CentreCrops, Encoder, FeaturePair, Features};
pub use probe::{
    compare, probe, probe_encoders, probe_pixels, Accuracy, Comparison, Hyper, LinearClassifier,
    ProbeConfig, ProbePair, ProbeResult,
};

use std::path::Path;

use crate::data::{self, Dataset, Format, OnBadFile, OpenOptions, Split, Subset};
use crate::error::{Error, Result};

/// Open a data set for evaluation: `path` None is the built-in set; `limit` keeps that many
/// images, a fixed random sample of the set. Returns the set and a name for messages.
pub fn open_eval_data(
    path: Option<&Path>,
    format: Format,
    split: Split,
    limit: Option<usize>,
    on_bad_image: OnBadFile,
) -> Result<(Box<dyn Dataset>, String)> {
    let options = OpenOptions {
        split,
        on_bad_image,
        ..OpenOptions::default()
    };
    let set = data::open(path, format, &options)?;
    let source = match path {
        Some(p) => p.display().to_string(),
        None => format!("builtin:{split}"),
    };
    if set.is_empty() {
        return Err(Error::Data {
            path: source,
            message: "has no images".into(),
        });
    }
    Ok(match limit {
        Some(n) => (Box::new(Subset::sample(set, n.max(1))), source),
        None => (set, source),
    })
}
