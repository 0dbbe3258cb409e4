//! The built-in labelled set: stripes whose every band has its own random colour, 10 classes
//! by orientation x band width, generated on the fly from (seed, split, index).
//!
//! Why this set (docs/model.md, "Tiny-scale calibration"): with one colour pair per image, CPC
//! learns the colour, which identifies an image inside a batch, and the probe gets worse;
//! grey gratings are solved by a random encoder. With a fresh colour per band the class is
//! independent of colour and nearly of coarse pixel statistics, and only the structure
//! that CPC learns (how bands continue down the image) tells classes apart.
//!
//! Classes: class = width * 5 + orientation, orientation in 0..5 is 0, 22.5, 45, 67.5, 90
//! degrees (0: vertical bands), width in 0..2 is 6 or 12 bands across the image side (wide,
//! narrow), so band widths scale with the image. A horizontal flip maps angle a to 180 - a,
//! which is never another class's angle, so flip augmentation does not merge classes. Each
//! image jitters its angle by up to +-4 degrees and its band width by +-10 %, takes a random
//! phase, and adds uniform pixel noise of +-0.03, so no two images are identical.

use rand::Rng;

use super::rng::{mix64, rng_for, tag};
use super::{Dataset, Image, Split};
use crate::error::{Error, Result};

pub const CLASSES: usize = 10;
/// Band orientations, degrees from vertical bands.
pub const ORIENTATIONS: [f32; 5] = [0.0, 22.5, 45.0, 67.5, 90.0];
/// Bands across the image side, per width class.
pub const BANDS_PER_SIDE: [f32; 2] = [6.0, 12.0];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltinConfig {
    pub seed: u64,
    pub train_len: usize,
    pub test_len: usize,
    /// Side of the square images, pixels (e.g. 64, or 300 for the paper's geometry).
    pub side: usize,
}

impl Default for BuiltinConfig {
    fn default() -> Self {
        BuiltinConfig {
            seed: 0,
            train_len: 5000,
            test_len: 1000,
            side: 64,
        }
    }
}

pub struct Builtin {
    config: BuiltinConfig,
    split: Split,
    len: usize,
}

impl Builtin {
    pub fn new(config: BuiltinConfig, split: Split) -> Result<Builtin> {
        let err = |message: String| Error::Data {
            path: "builtin".into(),
            message,
        };
        let len = match split {
            Split::Train => config.train_len,
            Split::Test => config.test_len,
            Split::Unlabeled => {
                return Err(err("the built-in set has train and test splits only".into()))
            }
        };
        if len == 0 {
            return Err(err(format!("the {split} split is empty (size 0)")));
        }
        if config.side < 8 {
            return Err(err(format!("image side {} is below 8 pixels", config.side)));
        }
        Ok(Builtin { config, split, len })
    }
}

impl Dataset for Builtin {
    fn len(&self) -> usize {
        self.len
    }

    fn image(&self, i: usize) -> Result<Image> {
        assert!(
            i < self.len,
            "built-in index {i} out of range 0..{}",
            self.len
        );
        Ok(render(self.config.seed, self.split, i, self.config.side))
    }

    fn label(&self, i: usize) -> Option<u32> {
        Some(class_of(i))
    }

    fn num_classes(&self) -> Option<usize> {
        Some(CLASSES)
    }

    fn name(&self, i: usize) -> String {
        format!("builtin:{}#{i}", self.split)
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "built-in stripes {} (seed {}): {} images of {}x{}, 10 classes",
            self.split, c.seed, self.len, c.side, c.side
        )
    }

    fn class_name(&self, class: u32) -> Option<String> {
        let class = class as usize;
        (class < CLASSES).then(|| {
            let width = ["wide", "narrow"][class / ORIENTATIONS.len()];
            format!("{}deg-{width}", ORIENTATIONS[class % ORIENTATIONS.len()])
        })
    }
}

/// Classes cycle with the index, so every split is balanced to within one image.
pub fn class_of(i: usize) -> u32 {
    (i % CLASSES) as u32
}

/// Image `i` of `split`: a pure function of its arguments.
pub fn render(seed: u64, split: Split, i: usize, side: usize) -> Image {
    let class = class_of(i) as usize;
    let mut rng = rng_for(&[tag::BUILTIN, seed, split.seed_part(), i as u64]);
    let degrees = ORIENTATIONS[class % ORIENTATIONS.len()] + rng.random_range(-4.0f32..4.0);
    let bands = BANDS_PER_SIDE[class / ORIENTATIONS.len()] * rng.random_range(0.9f32..1.1);
    let band_width = side as f32 / bands;
    let phase = rng.random_range(0.0..band_width);
    let colour_key: u64 = rng.random();
    let (sin, cos) = degrees.to_radians().sin_cos();

    // Each band's colour is a hash of (image, band index): no table, any number of bands.
    let band_colour = |band: i64| -> [f32; 3] {
        let h = mix64(colour_key ^ mix64(band as u64));
        [0, 21, 42].map(|shift| ((h >> shift) & 0x1F_FFFF) as f32 / 0x1F_FFFF as f32)
    };

    let centre = side as f32 / 2.0;
    let plane = side * side;
    let mut data = vec![0.0; 3 * plane];
    for y in 0..side {
        for x in 0..side {
            // 2 x 2 samples per pixel soften the band edges.
            let mut rgb = [0.0f32; 3];
            for (dy, dx) in [(0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)] {
                let u = (x as f32 + dx - centre) * cos + (y as f32 + dy - centre) * sin;
                let colour = band_colour(((u + phase) / band_width).floor() as i64);
                for c in 0..3 {
                    rgb[c] += colour[c] / 4.0;
                }
            }
            for c in 0..3 {
                let noise = rng.random_range(-0.03f32..0.03);
                data[c * plane + y * side + x] = (rgb[c] + noise).clamp(0.0, 1.0);
            }
        }
    }
    Image::new(side, side, data)
}
