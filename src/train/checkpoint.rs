//! Checkpoints: named f32 tensors and string metadata in one safetensors file.
//!
//! The caller decides what goes in: parameters and Adam moments as tensors; the step, the
//! configuration (TOML), the data-loader state and the RNG state as metadata strings.
//!
//! [`Checkpoint::save`] replaces the file atomically (see [`super::atomic`]): whatever
//! happens during a save, the path holds either the previous checkpoint or the new one.
//! [`Checkpoint::load`] names the file, and the tensor when one is at fault.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::atomic::write_atomically;
use crate::error::{Error, Result};

/// One tensor: its name, its shape (row-major, outermost first) and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// Tensors in the order they were pushed; [`Checkpoint::load`] returns them sorted by name.
    pub tensors: Vec<NamedTensor>,
    /// Free-form strings, e.g. "step", "config" (TOML), "loader", "rng".
    pub metadata: BTreeMap<String, String>,
}

fn checkpoint_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Checkpoint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor (builder style for the caller's list of parameters).
    pub fn push(&mut self, name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) {
        self.tensors.push(NamedTensor {
            name: name.into(),
            shape,
            data,
        });
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The metadata string under `key`, if any.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The safetensors bytes of this checkpoint. `path` only names errors: a tensor whose
    /// data does not fill its shape, or a name used twice.
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let mut seen = HashSet::new();
        // safetensors stores raw little-endian bytes; keep them alive for the views.
        let mut bytes: Vec<(&str, &[usize], Vec<u8>)> = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(checkpoint_err(
                    path,
                    format!("tensor `{}` appears twice", t.name),
                ));
            }
            let elements: usize = t.shape.iter().product();
            if elements != t.data.len() {
                return Err(checkpoint_err(
                    path,
                    format!(
                        "tensor `{}` has shape {:?} ({} elements) but {} values",
                        t.name,
                        t.shape,
                        elements,
                        t.data.len()
                    ),
                ));
            }
            let raw = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            bytes.push((&t.name, &t.shape, raw));
        }
        let views = bytes
            .iter()
            .map(|(name, shape, raw)| {
                TensorView::new(Dtype::F32, shape.to_vec(), raw).map(|view| (*name, view))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| checkpoint_err(path, e.to_string()))?;
        let metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| checkpoint_err(path, e.to_string()))
    }

    /// Writes the checkpoint to `path` atomically: a temporary file in the same directory,
    /// fsynced, renamed over `path`, then the directory fsynced. On error the temporary file
    /// is gone and whatever was at `path` before is untouched.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes(path)?;
        write_atomically(path, |w| w.write_all(&bytes))
    }

    /// Reads a checkpoint written by [`Checkpoint::save`]. Tensors come back sorted by name.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let buffer = std::fs::read(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => checkpoint_err(path, "no such file"),
            _ => checkpoint_err(path, format!("cannot read: {e}")),
        })?;
        Self::from_bytes(&buffer, path)
    }

    /// Parses safetensors bytes; `path` names errors.
    pub fn from_bytes(buffer: &[u8], path: &Path) -> Result<Self> {
        let (_, header) = SafeTensors::read_metadata(buffer)
            .map_err(|e| checkpoint_err(path, format!("not a safetensors file ({e})")))?;
        let file = SafeTensors::deserialize(buffer)
            .map_err(|e| checkpoint_err(path, format!("not a safetensors file ({e})")))?;
        let mut tensors = Vec::with_capacity(file.len());
        for (name, view) in file.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(checkpoint_err(
                    path,
                    format!(
                        "tensor `{name}` has dtype {:?}; checkpoints hold F32 only",
                        view.dtype()
                    ),
                ));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.push(NamedTensor {
                name: name.to_string(),
                shape: view.shape().to_vec(),
                data,
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let metadata = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Self { tensors, metadata })
    }
}
