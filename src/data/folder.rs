//! A folder of images (anything the `image` crate reads: PNG, JPEG, BMP, PNM, TGA).
//!
//! - Sub-folders are classes, labelled 0.. in sorted name order (files inside them are found
//!   at any depth, a folder's own files before its sub-folders'); a folder with no
//!   sub-folders is unlabelled.
//! - A folder holding `train/` and `test/` (or `val/`) is read by split: [`Split::Train`] reads
//!   `train/`, [`Split::Test`] `test/` or `val/`, [`Split::Unlabeled`] `unlabeled/`. A plain
//!   folder ignores the split.
//! - Hidden files and folders (names starting with '.') and files whose extension no decoder
//!   claims are ignored.
//! - Symbolic links are followed, to files and to folders, but each real folder is read once
//!   (by its canonical path): a link to a folder inside the folder read (`.`, `..`, another
//!   class) is skipped, as that folder is read where it is; so is a link to a folder holding
//!   the folder read, or to one already read through another link. The links skipped are
//!   kept ([`ImageFolder::skipped_links`]) and counted in [`Dataset::describe`].
//! - Every image's header is read at open, so corrupt and too-small images, images that
//!   declare more than [`MAX_PIXELS`] pixels, and JPEGs cut short (read whole there, as their
//!   decoder reads them) show up there (stop or skip, per [`OnBadImage`]); one that fails
//!   later, while decoding, does the same through [`Error::BadImage`]: a PNG cut short, or
//!   any file changed since open. The decoders allocate no more than [`MAX_PIXELS`] allow.
//! - A JPEG must reach its end-of-image marker: its decoder pads a file cut short with grey
//!   and says nothing, so a half-copied photo would otherwise train as if whole.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use walkdir::WalkDir;

use super::{bad_image, data_err, too_small, Dataset, Image, OnBadImage, OpenOptions, Split};
use crate::error::{Error, Result};

/// The most pixels an image may declare: 2^28 = 268435456, e.g. 16384 x 16384 (a
/// 100-megapixel photo fits two and a half times). Decoding that many takes 3 GiB as f32 RGB;
/// a header declaring more is far likelier corrupt or hostile than a photo.
pub const MAX_PIXELS: u64 = 1 << 28;

/// The decoders' allocation limit: [`MAX_PIXELS`] at 8 bytes a pixel, the widest output of
/// the enabled decoders (16-bit RGBA PNG). Also the largest JPEG file read (its decoder reads
/// the whole file into memory).
const MAX_DECODE_BYTES: u64 = 8 * MAX_PIXELS;

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
    /// Links to folders not followed (each real folder is read once), relative to `root`.
    skipped_links: Vec<PathBuf>,
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
        let mut walk = Walk::new(&root)?;
        let (dirs, root_images) = walk.list()?;

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
                for file in walk.images(dir)? {
                    files.push(file);
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
            skipped_links: walk.skipped,
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

    /// Links to folders not followed because their folder is read elsewhere (or would be
    /// read again, in a loop), relative to [`ImageFolder::root`], in the order met.
    pub fn skipped_links(&self) -> &[PathBuf] {
        &self.skipped_links
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
        let links = match self.skipped_links.len() {
            0 => String::new(),
            n => format!(
                ", {n} folder links skipped (loops, or folders read elsewhere; the first: {})",
                self.skipped_links[0].display()
            ),
        };
        format!(
            "image folder {}: {} images, {classes}{skipped}{links}",
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
    // The header again, checked as at open: the file may have changed since.
    let decoder = open_decoder(path)?;
    // As `ImageReader::decode` does: the output buffer counts towards the decoder's limit.
    let mut limits = decoder_limits();
    let decoded = limits
        .reserve(decoder.total_bytes())
        .and_then(|()| DynamicImage::from_decoder(decoder));
    let rgb = decoded
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

/// `path` opened for decoding with its header read and checked: not empty, not over
/// [`MAX_PIXELS`], and for a JPEG not cut short (the JPEG decoder reads the whole file
/// anyway, so checking its end costs one pass over bytes in memory). The format comes from
/// the contents, else from the extension (TGA has no signature).
fn open_decoder(path: &Path) -> Result<Box<dyn ImageDecoder>> {
    let cannot_read = |e: std::io::Error| bad_image(path, format!("cannot read: {e}"));
    let cannot_decode = |e: image::ImageError| bad_image(path, format!("cannot decode: {e}"));
    let file = File::open(path).map_err(cannot_read)?;
    let mut reader = ImageReader::new(BufReader::new(file));
    if let Ok(format) = ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let mut reader = reader.with_guessed_format().map_err(cannot_read)?;
    let decoder: Box<dyn ImageDecoder> = if reader.format() == Some(ImageFormat::Jpeg) {
        let mut bytes = Vec::new();
        reader
            .into_inner()
            .take(MAX_DECODE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot_read)?;
        if bytes.len() as u64 > MAX_DECODE_BYTES {
            return Err(bad_image(
                path,
                format!("file is over {MAX_DECODE_BYTES} bytes, the limit for a JPEG"),
            ));
        }
        // Only what starts as a JPEG: anything else named .jpg is the decoder's to report.
        if bytes.starts_with(&[0xFF, 0xD8]) {
            jpeg_end(&bytes).map_err(|why| bad_image(path, why))?;
        }
        let mut reader = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Jpeg);
        reader.limits(decoder_limits());
        Box::new(reader.into_decoder().map_err(cannot_decode)?)
    } else {
        reader.limits(decoder_limits());
        Box::new(reader.into_decoder().map_err(cannot_decode)?)
    };
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(bad_image(path, format!("image is {w}x{h}")));
    }
    let pixels = w as u64 * h as u64;
    if pixels > MAX_PIXELS {
        return Err(bad_image(
            path,
            format!("declares {w} x {h} = {pixels} pixels, over the limit of {MAX_PIXELS}"),
        ));
    }
    Ok(decoder)
}

/// The decoders' limits: at most [`MAX_DECODE_BYTES`] allocated.
fn decoder_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// Ok if a JPEG's markers lead to its end-of-image marker (EOI, FF D9), else why not.
///
/// The decoder pads a JPEG cut short with grey and says nothing, so a half-copied file would
/// train as if whole. This steps over marker segments by their lengths (so an EXIF
/// thumbnail's own EOI is not taken for the image's) and through the entropy-coded data of
/// each scan, where FF is always followed by 00 (a stuffed byte) or a restart marker, to the
/// first EOI. Bytes after it (padding, an appended video) are left alone, as the decoder
/// does; so are stray bytes between segments, which it skips too.
fn jpeg_end(bytes: &[u8]) -> std::result::Result<(), String> {
    let cut = || {
        Err(format!(
            "cut short: the file ends after {} bytes, before the JPEG's end-of-image marker",
            bytes.len()
        ))
    };
    let mut i = 2; // after the start-of-image marker (FF D8)
    loop {
        // The next marker: FF (any number of them: fill bytes), then its code.
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return cut();
        };
        i += 1;
        match code {
            0xD9 => return Ok(()),
            // Markers without a length: a stuffed FF in scan data, TEM, restarts, SOI.
            0x00 | 0x01 | 0xD0..=0xD8 => {}
            // A segment: a big-endian length that counts its own two bytes.
            _ => {
                let Some(len) = bytes.get(i..i + 2) else {
                    return cut();
                };
                i += u16::from_be_bytes([len[0], len[1]]) as usize;
                if i > bytes.len() {
                    return cut();
                }
            }
        }
    }
}

/// The folder to read for `split`: `root/train` etc. when `root` is split into train and
/// test (or val), else `root` itself.
fn split_folder(root: &Path, split: Split) -> Result<PathBuf> {
    let (dirs, _) = Walk::new(root)?.list()?;
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

/// The listing of one folder and its class folders, each real folder read once.
struct Walk {
    /// The folder read, as given.
    root: PathBuf,
    /// `root` with every link resolved.
    real_root: PathBuf,
    /// Canonical paths of the folders outside `root` read so far, through links.
    outside: HashSet<PathBuf>,
    /// Links to folders not followed, relative to `root`.
    skipped: Vec<PathBuf>,
}

impl Walk {
    fn new(root: &Path) -> Result<Walk> {
        let real_root =
            std::fs::canonicalize(root).map_err(|e| data_err(root, format!("cannot read: {e}")))?;
        Ok(Walk {
            root: root.to_path_buf(),
            real_root,
            outside: HashSet::new(),
            skipped: Vec::new(),
        })
    }

    /// Sorted sub-folder names and sorted image files directly in `root`. One level needs no
    /// walk, and reading the class folders' listings here would read them twice.
    fn list(&mut self) -> Result<(Vec<String>, Vec<PathBuf>)> {
        let dir = self.root.clone();
        let cannot = |e: std::io::Error| data_err(&dir, format!("cannot list: {e}"));
        let mut entries = std::fs::read_dir(&dir)
            .map_err(cannot)?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(cannot)?;
        // Sorted first, so which of two links to one folder is followed does not vary.
        entries.sort_by_key(|e| e.file_name());
        let mut dirs = Vec::new();
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.path();
            if is_hidden(&path) {
                continue;
            }
            let name = PathBuf::from(entry.file_name());
            if path.is_dir() {
                let link = entry.file_type().map_err(cannot)?.is_symlink();
                if self.enter(&path, link)? {
                    dirs.push(name.to_string_lossy().into_owned());
                } else {
                    self.skipped.push(name);
                }
            } else if is_image_file(&path) {
                // Broken links included: the header check says what is wrong with them.
                files.push(name);
            }
        }
        Ok((dirs, files))
    }

    /// Image files anywhere below `root/dir`, relative to `root`: a folder's own files in
    /// name order, then its sub-folders' in name order.
    fn images(&mut self, dir: &str) -> Result<Vec<PathBuf>> {
        let root = self.root.clone();
        let relative = |path: &Path| path.strip_prefix(&root).unwrap_or(path).to_path_buf();
        let mut files = Vec::new();
        // walkdir follows links and reports a link to a folder the walk is inside (a loop)
        // as an error; `enter` catches the rest (folders read elsewhere, or already).
        let mut it = WalkDir::new(root.join(dir))
            .follow_links(true)
            .sort_by_file_name()
            .into_iter();
        while let Some(next) = it.next() {
            let entry = match next {
                Ok(entry) => entry,
                Err(e) => {
                    let Some(path) = e.path().map(Path::to_path_buf) else {
                        return Err(data_err(&root.join(dir), format!("cannot list: {e}")));
                    };
                    if is_hidden(&path) {
                        // Ignored, like any hidden entry.
                    } else if e.loop_ancestor().is_some() {
                        self.skipped.push(relative(&path));
                    } else if path.is_symlink() && !path.exists() {
                        // A broken link: as a file of an image type it stays, for the header
                        // check to report; anything else is ignored.
                        if is_image_file(&path) {
                            files.push(relative(&path));
                        }
                    } else {
                        let why = e.io_error().map_or(e.to_string(), |io| io.to_string());
                        return Err(data_err(&path, format!("cannot list: {why}")));
                    }
                    continue;
                }
            };
            if entry.depth() == 0 {
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().is_dir();
            if is_hidden(path) {
                if is_dir {
                    it.skip_current_dir();
                }
            } else if is_dir {
                if !self.enter(path, entry.path_is_symlink())? {
                    self.skipped.push(relative(path));
                    it.skip_current_dir();
                }
            } else if is_image_file(path) {
                files.push(relative(path));
            }
        }
        files.sort_by(|a, b| listing_order(a, b));
        Ok(files)
    }

    /// Whether to read the folder `path`, reached through a link if `link`: each real folder
    /// is read once, and a folder inside `root` only where it is.
    fn enter(&mut self, path: &Path, link: bool) -> Result<bool> {
        let real =
            std::fs::canonicalize(path).map_err(|e| data_err(path, format!("cannot read: {e}")))?;
        if let Ok(inside) = real.strip_prefix(&self.real_root) {
            // Read where it is, unless hidden there (then only the link reaches it).
            if !inside.iter().any(|c| c.to_string_lossy().starts_with('.')) {
                return Ok(!link);
            }
        } else if self.real_root.starts_with(&real) {
            // It holds `root`: reading it would read everything again.
            return Ok(false);
        }
        Ok(self.outside.insert(real))
    }
}

/// The order a folder-by-folder listing gives: a folder's own files by name, then each of
/// its sub-folders' in name order.
fn listing_order(a: &Path, b: &Path) -> Ordering {
    let (a, b): (Vec<_>, Vec<_>) = (a.iter().collect(), b.iter().collect());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x != y {
            let (x_file, y_file) = (i + 1 == a.len(), i + 1 == b.len());
            return y_file.cmp(&x_file).then(x.cmp(y));
        }
    }
    a.len().cmp(&b.len())
}

/// Reads each file's header: Ok, or a bad-image error (unreadable, corrupt, too small, too
/// many pixels, a JPEG cut short).
fn check_headers(root: &Path, files: &[PathBuf], min_side: usize) -> Vec<Result<()>> {
    let check = |file: &PathBuf| -> Result<()> {
        let path = root.join(file);
        let (w, h) = open_decoder(&path)?.dimensions();
        let (w, h) = (w as usize, h as usize);
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
