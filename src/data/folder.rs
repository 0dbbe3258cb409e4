//! A folder of images (anything the `image` crate reads: PNG, JPEG, BMP, PNM, TGA).
//!
//! - The folder's layout (class folders, train/test splits, hidden files, symbolic links) is
//!   read as `data/walk.rs` says; the links skipped are kept ([`ImageFolder::skipped_links`])
//!   and counted in [`Dataset::describe`].
//! - Every image's header is read at open, so corrupt and too-small images, images that
//!   declare more than [`MAX_PIXELS`] pixels, and JPEGs cut short (read whole there, as their
//!   decoder reads them) show up there (stop or skip, per [`OnBadFile`]); one that fails
//!   later, while decoding, does the same through [`Error::BadImage`]: a PNG cut short, or
//!   any file changed since open. The decoders allocate no more than [`MAX_PIXELS`] allow.
//! - A JPEG must reach its end-of-image marker: its decoder pads a file cut short with grey
//!   and says nothing, so a half-copied photo would otherwise train as if whole.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::walk::{BadFiles, FileKind, Listing};
use super::{bad_file, header_threads, par_map, too_small, Dataset, Image, OnBadFile, OpenOptions};
use crate::error::{Error, Result};

/// The most pixels an image may declare: 2^28 = 268435456, e.g. 16384 x 16384 (a
/// 100-megapixel photo fits two and a half times). Decoding that many takes 3 GiB as f32 RGB;
/// a header declaring more is far likelier corrupt or hostile than a photo.
pub const MAX_PIXELS: u64 = 1 << 28;

/// The decoders' allocation limit: [`MAX_PIXELS`] at 8 bytes a pixel, the widest output of
/// the enabled decoders (16-bit RGBA PNG). Also the largest JPEG file read (its decoder reads
/// the whole file into memory).
const MAX_DECODE_BYTES: u64 = 8 * MAX_PIXELS;

/// What an image folder holds, for the walk and its messages.
const IMAGES: FileKind = FileKind {
    one: "image",
    many: "images",
    examples: "e.g. .png, .jpg",
    class_folder: "class folder",
    claims: is_image_file,
};

pub struct ImageFolder {
    /// The image files (relative to its root, in listing order) and their classes.
    listing: Listing,
    on_bad_image: OnBadFile,
    min_side: usize,
    /// Files skipped under Skip, at open and while decoding.
    bad: BadFiles,
}

impl ImageFolder {
    pub fn open(path: &Path, options: &OpenOptions) -> Result<ImageFolder> {
        let mut listing = Listing::read(path, options.split, &IMAGES)?;
        // Read every header (in parallel: it is one small read per file) to catch corrupt and
        // too-small images now rather than mid-training; then apply the policy in file order.
        let checks = check_headers(&listing.root, &listing.files, options.min_side);
        let (_, bad) = listing.keep(checks, options.on_bad_image, &IMAGES)?;
        Ok(ImageFolder {
            listing,
            on_bad_image: options.on_bad_image,
            min_side: options.min_side,
            bad,
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
    /// read again, in a loop), relative to [`ImageFolder::root`], in the order met.
    pub fn skipped_links(&self) -> &[PathBuf] {
        &self.listing.skipped_links
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.listing.files.len()
    }

    fn image(&self, i: usize) -> Result<Image> {
        let path = self.listing.root.join(&self.listing.files[i]);
        if let Some(why) = self.bad.get(i) {
            return Err(bad_file(&path, why));
        }
        let decoded = decode(&path).and_then(|image| {
            if image.short_side() < self.min_side {
                return Err(bad_file(
                    &path,
                    too_small(image.width, image.height, self.min_side),
                ));
            }
            Ok(image)
        });
        if let (Err(Error::BadImage { message, .. }), OnBadFile::Skip) =
            (&decoded, self.on_bad_image)
        {
            self.bad.record(i, message);
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
        format!(
            "image folder {}: {} images, {}",
            self.listing.root.display(),
            self.len(),
            self.listing.describe_rest("classes", self.skipped())
        )
    }

    fn class_name(&self, class: u32) -> Option<String> {
        self.listing.class_name(class)
    }

    fn on_bad_image(&self) -> OnBadFile {
        self.on_bad_image
    }

    fn skipped(&self) -> usize {
        self.bad.count()
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
        .map_err(|e| bad_file(path, format!("cannot decode: {e}")))?
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
    let cannot_read = |e: std::io::Error| bad_file(path, format!("cannot read: {e}"));
    let cannot_decode = |e: image::ImageError| bad_file(path, format!("cannot decode: {e}"));
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
            return Err(bad_file(
                path,
                format!("file is over {MAX_DECODE_BYTES} bytes, the limit for a JPEG"),
            ));
        }
        // Only what starts as a JPEG: anything else named .jpg is the decoder's to report.
        if bytes.starts_with(&[0xFF, 0xD8]) {
            jpeg_end(&bytes).map_err(|why| bad_file(path, why))?;
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
        return Err(bad_file(path, format!("image is {w}x{h}")));
    }
    let pixels = w as u64 * h as u64;
    if pixels > MAX_PIXELS {
        return Err(bad_file(
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

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(ImageFormat::from_extension)
        .is_some_and(|f| f.reading_enabled())
}

/// Reads each file's header: Ok, or a bad-image error (unreadable, corrupt, too small, too
/// many pixels, a JPEG cut short).
fn check_headers(root: &Path, files: &[PathBuf], min_side: usize) -> Vec<Result<()>> {
    let check = |file: &PathBuf| -> Result<()> {
        let path = root.join(file);
        let (w, h) = open_decoder(&path)?.dimensions();
        let (w, h) = (w as usize, h as usize);
        if w.min(h) < min_side {
            return Err(bad_file(&path, too_small(w, h, min_side)));
        }
        Ok(())
    };
    par_map(files, header_threads(), 64, check)
}
