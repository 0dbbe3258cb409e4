//! The paper's augmentation and the evaluation crop (docs/model.md, "Data path").
//!
//! Training ([`Augment::random`]): resize the image so its short side is 300/256 * S (the
//! aspect ratio kept), take a random S x S crop, flip it left-right with probability 0.5,
//! make it grey with probability `grey_p` (default 0.25; the paper names grey-scale without a
//! rate). Evaluation ([`Augment::centre`]): the same resize and the centre crop, nothing random.
//! The per-patch crop of P - P/16 pixels happens later, in the patch extraction.
//!
//! The resize is bilinear (triangle filter), widened when shrinking so stripes do not alias
//! (as PIL's BILINEAR does), and computed only for the cropped pixels. Output is f32
//! [3, S, S], normalised by [`normalise`].

use rand::Rng;

use super::Image;

/// Pixels are stored as (x - MEAN) * SCALE: [0, 1] becomes [-1, 1].
pub const MEAN: f32 = 0.5;
pub const SCALE: f32 = 2.0;

/// [0, 1] to the model's input range [-1, 1].
pub fn normalise(x: f32) -> f32 {
    (x - MEAN) * SCALE
}

/// The model's input range back to [0, 1].
pub fn denormalise(x: f32) -> f32 {
    x / SCALE + MEAN
}

/// Rec. 601 luma weights, for grey-scale.
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    /// S: side of the square crop fed to the model.
    pub crop: usize,
    /// The image is resized so its short side is round(ratio * S) (at least S).
    pub short_side_ratio: f32,
    /// Probability of a left-right flip.
    pub flip_p: f32,
    /// Probability of grey-scale (all three channels set to the luma).
    pub grey_p: f32,
}

impl Augment {
    /// The paper's settings for crop side `crop`: ratio 300/256, flip 0.5, grey 0.25.
    pub fn new(crop: usize) -> Augment {
        assert!(crop > 0, "crop side must be positive");
        Augment {
            crop,
            short_side_ratio: 300.0 / 256.0,
            flip_p: 0.5,
            grey_p: 0.25,
        }
    }

    /// Elements of one output: 3 * S * S.
    pub fn out_len(&self) -> usize {
        3 * self.crop * self.crop
    }

    /// Width and height of `image` after the resize: short side round(ratio * S), at least S.
    pub fn resized_size(&self, width: usize, height: usize) -> (usize, usize) {
        let short = ((self.crop as f32 * self.short_side_ratio).round() as usize).max(self.crop);
        let long =
            |l: usize, s: usize| ((l as f64 * short as f64 / s as f64).round() as usize).max(short);
        if width <= height {
            (short, long(height, width))
        } else {
            (long(width, height), short)
        }
    }

    /// A random crop, flip and grey-scale of `image` into `out` ([3, S, S], normalised).
    /// Draws exactly four numbers from `rng`, whatever they decide.
    pub fn random(&self, image: &Image, rng: &mut impl Rng, out: &mut [f32]) {
        let (w, h) = self.resized_size(image.width, image.height);
        let x0 = rng.random_range(0..=w - self.crop);
        let y0 = rng.random_range(0..=h - self.crop);
        let flip = rng.random::<f32>() < self.flip_p;
        let grey = rng.random::<f32>() < self.grey_p;
        let mut crop = resize_crop(image, w, h, x0, y0, self.crop);
        if flip {
            flip_horizontal(&mut crop);
        }
        if grey {
            to_grey(&mut crop);
        }
        write_normalised(&crop, out);
    }

    /// The centre crop of the resized `image` into `out` ([3, S, S], normalised).
    pub fn centre(&self, image: &Image, out: &mut [f32]) {
        let (w, h) = self.resized_size(image.width, image.height);
        let crop = resize_crop(
            image,
            w,
            h,
            (w - self.crop) / 2,
            (h - self.crop) / 2,
            self.crop,
        );
        write_normalised(&crop, out);
    }
}

fn write_normalised(crop: &Image, out: &mut [f32]) {
    assert_eq!(out.len(), crop.data.len(), "output is not [3, S, S]");
    for (o, &v) in out.iter_mut().zip(&crop.data) {
        *o = normalise(v);
    }
}

/// The `crop` x `crop` window at (x0, y0) of `image` resized to `width` x `height`, computing
/// only the window's pixels. Values stay in [0, 1].
pub fn resize_crop(
    image: &Image,
    width: usize,
    height: usize,
    x0: usize,
    y0: usize,
    crop: usize,
) -> Image {
    assert!(
        x0 + crop <= width && y0 + crop <= height,
        "crop outside the resized image"
    );
    let xs = axis_weights(image.width, width, x0, crop);
    let ys = axis_weights(image.height, height, y0, crop);
    // Source rows the vertical taps touch.
    let row_lo = ys.iter().map(|t| t.first).min().unwrap();
    let row_hi = ys.iter().map(|t| t.first + t.weights.len()).max().unwrap();
    let rows = row_hi - row_lo;

    let mut out = Image::zeros(crop, crop);
    let mut tmp = vec![0.0f32; rows * crop]; // one channel, horizontally resampled
    for c in 0..3 {
        let src = &image.data[c * image.width * image.height..(c + 1) * image.width * image.height];
        for r in 0..rows {
            let row = &src[(row_lo + r) * image.width..(row_lo + r + 1) * image.width];
            for (ox, t) in xs.iter().enumerate() {
                tmp[r * crop + ox] = t.apply(|j| row[j]);
            }
        }
        let dst = &mut out.data[c * crop * crop..(c + 1) * crop * crop];
        for (oy, t) in ys.iter().enumerate() {
            for ox in 0..crop {
                dst[oy * crop + ox] = t.apply(|j| tmp[(j - row_lo) * crop + ox]).clamp(0.0, 1.0);
            }
        }
    }
    out
}

/// Filter taps of one output coordinate: input indices first.. with these weights (sum 1).
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

impl Taps {
    fn apply(&self, value: impl Fn(usize) -> f32) -> f32 {
        self.weights
            .iter()
            .enumerate()
            .map(|(k, w)| w * value(self.first + k))
            .sum()
    }
}

/// Triangle-filter taps for outputs o0..o0+n of an axis resized from `input` to `output`
/// samples. Shrinking by s widens the triangle to radius s (an area-like average); at equal
/// sizes the taps are exactly the identity.
fn axis_weights(input: usize, output: usize, o0: usize, n: usize) -> Vec<Taps> {
    let scale = input as f64 / output as f64;
    let radius = scale.max(1.0);
    (o0..o0 + n)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale; // in input coordinates, pixel centres at j + 0.5
            let lo = ((centre - radius).floor().max(0.0)) as usize;
            let hi = ((centre + radius).ceil() as usize).min(input);
            let mut weights: Vec<f32> = (lo..hi)
                .map(|j| (1.0 - ((j as f64 + 0.5 - centre) / radius).abs()).max(0.0) as f32)
                .collect();
            // The input pixel under the centre is always within the radius, so sum > 0.
            let sum: f32 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= sum);
            Taps { first: lo, weights }
        })
        .collect()
}

/// Mirrors `image` left-right in place.
pub fn flip_horizontal(image: &mut Image) {
    let w = image.width;
    for row in image.data.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// Sets all three channels to the luma (Rec. 601) in place.
pub fn to_grey(image: &mut Image) {
    let plane = image.width * image.height;
    for p in 0..plane {
        let l = (0..3)
            .map(|c| LUMA[c] * image.data[c * plane + p])
            .sum::<f32>();
        for c in 0..3 {
            image.data[c * plane + p] = l;
        }
    }
}
