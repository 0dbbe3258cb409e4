//! CIFAR-10, binary version (cifar-10-batches-bin/).
//!
//! Each record is 1 label byte (0..9) then 3072 pixel bytes: the R plane, then G, then B,
//! each 32 x 32 row-major. data_batch_1.bin .. data_batch_5.bin are the train split (10000
//! records each), test_batch.bin the test split. The files are small and read whole at open.

use std::path::{Path, PathBuf};

use super::records::{file_size, read_all, record_count};
use super::{data_err, too_small, Dataset, Image, OpenOptions, Split};
use crate::error::Result;

pub const SIDE: usize = 32;
/// Bytes of one record: label + 3 planes of 32 x 32.
pub const RECORD: usize = 1 + 3 * SIDE * SIDE;
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

pub struct Cifar10 {
    /// What was read, for messages: "train" or the one file's name.
    what: String,
    /// (file name, number of records), in order.
    files: Vec<(String, usize)>,
    /// All records of all files, back to back.
    records: Vec<u8>,
}

/// True for the names of CIFAR-10 batch files.
pub fn is_file_name(name: &str) -> bool {
    name == "test_batch.bin" || (name.starts_with("data_batch_") && name.ends_with(".bin"))
}

/// The folder holding the batches: `path` itself or its `cifar-10-batches-bin/`.
pub fn find_dir(path: &Path) -> Option<PathBuf> {
    let holds =
        |d: &Path| d.join("test_batch.bin").is_file() || d.join("data_batch_1.bin").is_file();
    [path.to_path_buf(), path.join("cifar-10-batches-bin")]
        .into_iter()
        .find(|d| holds(d))
}

impl Cifar10 {
    /// `path`: a folder (the split picks the files) or one batch file (read as it is).
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Cifar10> {
        let (what, paths) = if path.is_file() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, vec![path.to_path_buf()])
        } else {
            let dir = find_dir(path).ok_or_else(|| {
                data_err(
                    path,
                    "holds no CIFAR-10 batches (data_batch_1.bin .. data_batch_5.bin, \
                     test_batch.bin), nor does its cifar-10-batches-bin/",
                )
            })?;
            let paths: Vec<PathBuf> = match options.split {
                Split::Train => (1..=5)
                    .map(|k| dir.join(format!("data_batch_{k}.bin")))
                    .filter(|p| p.is_file())
                    .collect(),
                Split::Test => vec![dir.join("test_batch.bin")]
                    .into_iter()
                    .filter(|p| p.is_file())
                    .collect(),
                Split::Unlabeled => {
                    return Err(data_err(
                        &dir,
                        "CIFAR-10 has no unlabeled split (use train)",
                    ))
                }
            };
            if paths.is_empty() {
                let want = match options.split {
                    Split::Train => "data_batch_1.bin .. data_batch_5.bin",
                    _ => "test_batch.bin",
                };
                return Err(data_err(
                    &dir,
                    format!("has no {want} for the {} split", options.split),
                ));
            }
            (options.split.to_string(), paths)
        };
        if options.min_side > SIDE {
            return Err(data_err(&paths[0], too_small(SIDE, SIDE, options.min_side)));
        }

        let mut files = Vec::new();
        let mut records = Vec::new();
        for path in &paths {
            let size = file_size(path)?;
            if size % (RECORD as u64 + 1) == 0 && size % RECORD as u64 != 0 {
                return Err(data_err(
                    path,
                    format!("file is {size} bytes, a multiple of {}: CIFAR-100 (two label bytes) is not supported", RECORD + 1),
                ));
            }
            let count = record_count(path, size, RECORD, "CIFAR-10 record")?;
            let bytes = read_all(path)?;
            if let Some(r) = (0..count).find(|r| bytes[r * RECORD] >= 10) {
                return Err(data_err(
                    path,
                    format!(
                        "record {r} has label {}, CIFAR-10 labels are 0..9",
                        bytes[r * RECORD]
                    ),
                ));
            }
            files.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                count,
            ));
            records.extend_from_slice(&bytes);
        }
        Ok(Cifar10 {
            what,
            files,
            records,
        })
    }

    fn record(&self, i: usize) -> &[u8] {
        &self.records[i * RECORD..(i + 1) * RECORD]
    }
}

impl Dataset for Cifar10 {
    fn len(&self) -> usize {
        self.records.len() / RECORD
    }

    fn image(&self, i: usize) -> Result<Image> {
        // The record's planes are already the planar [3, 32, 32] layout.
        let data = self.record(i)[1..]
            .iter()
            .map(|&b| b as f32 / 255.0)
            .collect();
        Ok(Image::new(SIDE, SIDE, data))
    }

    fn label(&self, i: usize) -> Option<u32> {
        Some(self.record(i)[0] as u32)
    }

    fn num_classes(&self) -> Option<usize> {
        Some(CLASSES.len())
    }

    fn name(&self, i: usize) -> String {
        let mut first = 0;
        for (file, count) in &self.files {
            if i < first + count {
                return format!("cifar:{file}#{}", i - first);
            }
            first += count;
        }
        panic!("CIFAR-10 index {i} out of range 0..{}", self.len())
    }

    fn describe(&self) -> String {
        format!(
            "CIFAR-10 {}: {} images of 32x32, 10 classes",
            self.what,
            self.len()
        )
    }

    fn class_name(&self, class: u32) -> Option<String> {
        CLASSES.get(class as usize).map(|s| s.to_string())
    }
}
