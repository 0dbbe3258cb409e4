//! STL-10, binary version (stl10_binary/).
//!
//! train_X.bin, test_X.bin and unlabeled_X.bin hold 96 x 96 RGB images of 27648 bytes each:
//! the R plane, then G, then B, each plane column-major (byte c*9216 + x*96 + y is channel c,
//! column x, row y). train_y.bin and test_y.bin hold one label byte per image, 1..10, read
//! here as 0..9. Images are read on demand (unlabeled_X.bin is 2.7 GB).

use std::path::{Path, PathBuf};

use super::records::{file_size, read_all, RecordFile};
use super::{data_err, too_small, Dataset, Image, OpenOptions};
use crate::error::Result;

pub const SIDE: usize = 96;
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
pub const CLASSES: [&str; 10] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
];

pub struct Stl10 {
    images: RecordFile,
    /// 0..9 per image, or None for unlabeled_X.bin.
    labels: Option<Vec<u8>>,
    file_name: String,
}

/// True for the names of STL-10 image and label files.
pub fn is_file_name(name: &str) -> bool {
    [
        "train_X.bin",
        "test_X.bin",
        "unlabeled_X.bin",
        "train_y.bin",
        "test_y.bin",
    ]
    .contains(&name)
}

/// The folder holding the files: `path` itself or its `stl10_binary/`.
pub fn find_dir(path: &Path) -> Option<PathBuf> {
    let holds = |d: &Path| {
        ["train_X.bin", "test_X.bin", "unlabeled_X.bin"]
            .iter()
            .any(|f| d.join(f).is_file())
    };
    [path.to_path_buf(), path.join("stl10_binary")]
        .into_iter()
        .find(|d| holds(d))
}

impl Stl10 {
    /// `path`: a folder (the split picks the files) or one X file (read as it is, with the
    /// y file beside it).
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Stl10> {
        let x_path = if path.is_file() {
            let name = path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace("_y.bin", "_X.bin");
            path.with_file_name(name)
        } else {
            let dir = find_dir(path).ok_or_else(|| {
                data_err(
                    path,
                    "holds no STL-10 files (train_X.bin, test_X.bin, unlabeled_X.bin), \
                     nor does its stl10_binary/",
                )
            })?;
            let x = dir.join(format!("{}_X.bin", options.split));
            if !x.is_file() {
                return Err(data_err(
                    &x,
                    format!("missing: no STL-10 images for the {} split", options.split),
                ));
            }
            x
        };
        let file_name = x_path.file_name().unwrap().to_string_lossy().into_owned();
        if options.min_side > SIDE {
            return Err(data_err(&x_path, too_small(SIDE, SIDE, options.min_side)));
        }
        let images = RecordFile::open(&x_path, IMAGE_BYTES, "STL-10 image (3 x 96 x 96)")?;

        let labels = if file_name.starts_with("unlabeled") {
            None
        } else {
            let y_path = x_path.with_file_name(file_name.replace("_X.bin", "_y.bin"));
            if !y_path.is_file() {
                return Err(data_err(
                    &y_path,
                    format!("missing: the labels of {file_name}"),
                ));
            }
            let size = file_size(&y_path)?;
            if size != images.count as u64 {
                return Err(data_err(
                    &y_path,
                    format!(
                        "file is {size} bytes, expected one label byte for each of the {} images \
                         in {file_name}",
                        images.count
                    ),
                ));
            }
            let bytes = read_all(&y_path)?;
            if let Some(i) = bytes.iter().position(|&b| !(1..=10).contains(&b)) {
                return Err(data_err(
                    &y_path,
                    format!("label {i} is {}, STL-10 labels are 1..10", bytes[i]),
                ));
            }
            Some(bytes.iter().map(|&b| b - 1).collect())
        };
        Ok(Stl10 {
            images,
            labels,
            file_name,
        })
    }
}

impl Dataset for Stl10 {
    fn len(&self) -> usize {
        self.images.count
    }

    fn image(&self, i: usize) -> Result<Image> {
        let mut bytes = vec![0u8; IMAGE_BYTES];
        self.images.read(i, &mut bytes)?;
        // Column-major planes to row-major: data[c][y][x] = bytes[c][x][y].
        let mut data = vec![0.0; IMAGE_BYTES];
        for c in 0..3 {
            let plane = c * SIDE * SIDE;
            for x in 0..SIDE {
                for y in 0..SIDE {
                    data[plane + y * SIDE + x] = bytes[plane + x * SIDE + y] as f32 / 255.0;
                }
            }
        }
        Ok(Image::new(SIDE, SIDE, data))
    }

    fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i] as u32)
    }

    fn num_classes(&self) -> Option<usize> {
        self.labels.as_ref().map(|_| CLASSES.len())
    }

    fn name(&self, i: usize) -> String {
        format!("stl:{}#{i}", self.file_name)
    }

    fn describe(&self) -> String {
        let classes = if self.labels.is_some() {
            "10 classes"
        } else {
            "unlabelled"
        };
        format!(
            "STL-10 {}: {} images of 96x96, {classes}",
            self.file_name,
            self.len()
        )
    }

    fn class_name(&self, class: u32) -> Option<String> {
        self.labels.as_ref()?;
        CLASSES.get(class as usize).map(|s| s.to_string())
    }
}
