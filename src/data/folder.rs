//! A folder of images (anything the `image` crate reads: PNG, JPEG, BMP, PNM, TGA).
//!
//! - Sub-folders are classes, labelled 0.. in sorted name order (files inside them are found
//!   at any depth); a folder with no sub-folders is unlabelled.
//! - A folder holding `train/` and `test/` (or `val/`) is read by split: [`Split::Train`] reads
//!   `train/`, [`Split::Test`] `test/` or `val/`, [`Split::Unlabeled`] `unlabeled/`. A plain
//!   folder ignores the split.
//! - Hidden files (names starting with '.') and files whose extension no decoder claims are
//!   ignored. Every image's header is read at open, so corrupt and too-small images show up
//!   there (stop or skip, per [`OnBadImage`]); one that fails later, while decoding, does the
//!   same through [`Error::BadImage`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::{ImageFormat, ImageReader};

use super::{bad_image, data_err, too_small, Dataset, Image, OnBadImage, OpenOptions, Split};
use crate::error::{Error, Result};

pub struct ImageFolder {
    /// The folder read, after choosing the split.
    root: PathBuf,
    /// Image files, relative to `root`, in sorted order.
    files: Vec<PathBuf>,
    /// One class per file, or None for a flat folder.
    labels: Option<Vec<u32>>,
    /// Sub-folder names, index = label.
    classes: Vec<String>,
    on_bad_image: OnBadImage,
    min_side: usize,
    /// Files dropped at open under Skip, with why.
    skipped_at_open: Vec<(PathBuf, String)>,
    /// Files that failed to decode after open, by index, with why.
    bad: Mutex<BTreeMap<usize, String>>,
}

impl ImageFolder {
    pub fn open(path: &Path, options: &OpenOptions) -> Result<ImageFolder> {
        if !path.exists() {
            return Err(data_err(path, "no such folder"));
        }
        if !path.is_dir() {
            return Err(data_err(path, "not a folder"));
        }
        let root = split_folder(path, options.split)?;
        let (dirs, root_images) = list(&root)?;

        let (mut files, mut labels, classes) = if dirs.is_empty() {
            (root_images, None, Vec::new())
        } else {
            if let Some(stray) = root_images.first() {
                return Err(data_err(
                    &root,
                    format!(
                        "holds both class folders ({}) and images ({}); put every image in a \
                         class folder, or use a flat folder for unlabelled images",
                        dirs.join(", "),
                        stray.display()
                    ),
                ));
            }
            let mut files = Vec::new();
            let mut labels = Vec::new();
            for (class, dir) in dirs.iter().enumerate() {
                for file in walk(&root.join(dir))? {
                    files.push(Path::new(dir).join(file));
                    labels.push(class as u32);
                }
            }
            (files, Some(labels), dirs)
        };
        if files.is_empty() {
            let where_ = if classes.is_empty() {
                String::new()
            } else {
                format!(" in its {} class folders", classes.len())
            };
            return Err(data_err(
                &root,
                format!("no images{where_} (looked for files a decoder reads, e.g. .png, .jpg)"),
            ));
        }

        // Read every header (in parallel: it is one small read per file) to catch corrupt and
        // too-small images now rather than mid-training; then apply the policy in file order.
        let checks = check_headers(&root, &files, options.min_side);
        let mut skipped_at_open = Vec::new();
        let mut keep = Vec::with_capacity(files.len());
        for (file, check) in files.iter().zip(checks) {
            match check {
                Ok(()) => keep.push(true),
                Err(e) if options.on_bad_image == OnBadImage::Skip => {
                    skipped_at_open.push((file.clone(), e.to_string()));
                    keep.push(false);
                }
                Err(e) => return Err(e),
            }
        }
        let mut k = keep.iter();
        files.retain(|_| *k.next().unwrap());
        if let Some(l) = labels.as_mut() {
            let mut k = keep.iter();
            l.retain(|_| *k.next().unwrap());
        }
        if files.is_empty() {
            return Err(data_err(
                &root,
                format!(
                    "all {} images were skipped as bad, the first: {}",
                    skipped_at_open.len(),
                    skipped_at_open[0].1
                ),
            ));
        }
        Ok(ImageFolder {
            root,
            files,
            labels,
            classes,
            on_bad_image: options.on_bad_image,
            min_side: options.min_side,
            skipped_at_open,
            bad: Mutex::new(BTreeMap::new()),
        })
    }

    /// The folder read (after choosing the split).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every file skipped so far, with why.
    pub fn skipped_files(&self) -> Vec<(PathBuf, String)> {
        let mut all = self.skipped_at_open.clone();
        for (&i, why) in self.bad.lock().unwrap().iter() {
            all.push((self.files[i].clone(), why.clone()));
        }
        all
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn image(&self, i: usize) -> Result<Image> {
        let path = self.root.join(&self.files[i]);
        if let Some(why) = self.bad.lock().unwrap().get(&i) {
            return Err(bad_image(&path, why));
        }
        let decoded = decode(&path).and_then(|image| {
            if image.short_side() < self.min_side {
                return Err(bad_image(
                    &path,
                    too_small(image.width, image.height, self.min_side),
                ));
            }
            Ok(image)
        });
        if let (Err(Error::BadImage { message, .. }), OnBadImage::Skip) =
            (&decoded, self.on_bad_image)
        {
            self.bad.lock().unwrap().insert(i, message.clone());
        }
        decoded
    }

    fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i])
    }

    fn num_classes(&self) -> Option<usize> {
        self.labels.as_ref().map(|_| self.classes.len())
    }

    fn name(&self, i: usize) -> String {
        let parts: Vec<_> = self.files[i].iter().map(|p| p.to_string_lossy()).collect();
        parts.join("/")
    }

    fn describe(&self) -> String {
        let classes = match self.num_classes() {
            Some(n) => format!("{n} classes"),
            None => "unlabelled".into(),
        };
        let skipped = match self.skipped() {
            0 => String::new(),
            n => format!(", {n} skipped"),
        };
        format!(
            "image folder {}: {} images, {classes}{skipped}",
            self.root.display(),
            self.len()
        )
    }

    fn class_name(&self, class: u32) -> Option<String> {
        self.classes.get(class as usize).cloned()
    }

    fn on_bad_image(&self) -> OnBadImage {
        self.on_bad_image
    }

    fn skipped(&self) -> usize {
        self.skipped_at_open.len() + self.bad.lock().unwrap().len()
    }
}

/// Decodes one image file to planar f32 RGB in [0, 1] (grey expands, alpha is dropped).
pub fn decode(path: &Path) -> Result<Image> {
    let reader = ImageReader::open(path)
        .map_err(|e| bad_image(path, format!("cannot read: {e}")))?
        .with_guessed_format()
        .map_err(|e| bad_image(path, format!("cannot read: {e}")))?;
    let rgb = reader
        .decode()
        .map_err(|e| bad_image(path, format!("cannot decode: {e}")))?
        .to_rgb32f();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    let plane = width * height;
    let mut data = vec![0.0; 3 * plane];
    for (p, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            data[c * plane + p] = px.0[c].clamp(0.0, 1.0);
        }
    }
    Ok(Image::new(width, height, data))
}

/// The folder to read for `split`: `root/train` etc. when `root` is split into train and
/// test (or val), else `root` itself.
fn split_folder(root: &Path, split: Split) -> Result<PathBuf> {
    let (dirs, _) = list(root)?;
    let has = |name: &str| dirs.iter().any(|d| d == name);
    if !(has("train") && (has("test") || has("val"))) {
        return Ok(root.to_path_buf());
    }
    let name = match split {
        Split::Train => "train",
        Split::Test if has("test") => "test",
        Split::Test => "val",
        Split::Unlabeled if has("unlabeled") => "unlabeled",
        Split::Unlabeled => {
            return Err(data_err(
                root,
                "is split into train/ and test/ but has no unlabeled/",
            ))
        }
    };
    Ok(root.join(name))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(ImageFormat::from_extension)
        .is_some_and(|f| f.reading_enabled())
}

/// Sorted sub-folder names and sorted image files directly in `dir`.
fn list(dir: &Path) -> Result<(Vec<String>, Vec<PathBuf>)> {
    let entries = std::fs::read_dir(dir).map_err(|e| data_err(dir, format!("cannot list: {e}")))?;
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| data_err(dir, format!("cannot list: {e}")))?
            .path();
        if is_hidden(&path) {
            continue;
        }
        let name = PathBuf::from(path.file_name().unwrap());
        if path.is_dir() {
            dirs.push(name.to_string_lossy().into_owned());
        } else if is_image_file(&path) {
            files.push(name);
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

/// Image files anywhere below `dir`, relative to it, sorted folder by folder.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let (dirs, mut files) = list(dir)?;
    for sub in dirs {
        files.extend(
            walk(&dir.join(&sub))?
                .into_iter()
                .map(|f| Path::new(&sub).join(f)),
        );
    }
    Ok(files)
}

/// Reads each file's header: Ok, or a bad-image error (unreadable, corrupt, too small).
fn check_headers(root: &Path, files: &[PathBuf], min_side: usize) -> Vec<Result<()>> {
    let check = |file: &PathBuf| -> Result<()> {
        let path = root.join(file);
        let (w, h) = ImageReader::open(&path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| bad_image(&path, format!("cannot read: {e}")))?
            .into_dimensions()
            .map_err(|e| bad_image(&path, format!("cannot decode: {e}")))?;
        let (w, h) = (w as usize, h as usize);
        if w == 0 || h == 0 {
            return Err(bad_image(&path, format!("image is {w}x{h}")));
        }
        if w.min(h) < min_side {
            return Err(bad_image(&path, too_small(w, h, min_side)));
        }
        Ok(())
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = files.len().div_ceil(threads).max(64);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(check).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}
