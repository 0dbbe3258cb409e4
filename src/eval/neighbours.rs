//! Nearest neighbours by cosine similarity of image features (standardised over the set),
//! drawn as one PNG a person can look at: a row per query image, the query first (grey
//! frame), a gap, then its nearest images, most similar first. Where the images have labels, a neighbour's frame is green
//! when it shares the query's class and red when it does not.

use std::path::Path;

use crate::data::augment::denormalise;
use crate::data::{Augment, Dataset};
use crate::error::{Error, Result};
use crate::eval::features::Features;
use crate::eval::probe::Standardise;
use crate::train::atomic::write_atomically;

/// One query and its nearest images: (feature row, cosine similarity), most similar first.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbours {
    pub query: usize,
    pub nearest: Vec<(usize, f32)>,
}

/// `count` query rows spread evenly over `n` images (all of them when count >= n).
pub fn queries(n: usize, count: usize) -> Vec<usize> {
    if count >= n {
        return (0..n).collect();
    }
    (0..count).map(|i| i * n / count).collect()
}

/// The `k` rows most similar to each query by cosine similarity, the query itself left out.
/// The features are standardised over the set first, as the linear probe sees them: ReLU
/// features share a large positive mean that otherwise puts every cosine near 1.
pub fn nearest(features: &Features, queries: &[usize], k: usize) -> Vec<Neighbours> {
    let x = Standardise::fit(&features.data, features.dim).apply(&features.data);
    let d = features.dim;
    let unit: Vec<Vec<f64>> = (0..features.len())
        .map(|i| {
            let row = &x[i * d..(i + 1) * d];
            let norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            row.iter().map(|&v| v as f64 / norm.max(1e-12)).collect()
        })
        .collect();
    queries
        .iter()
        .map(|&q| {
            let mut sims: Vec<(usize, f32)> = (0..features.len())
                .filter(|&j| j != q)
                .map(|j| {
                    let s: f64 = unit[q].iter().zip(&unit[j]).map(|(a, b)| a * b).sum();
                    (j, s as f32)
                })
                .collect();
            // Most similar first; ties by row, so the picture is reproducible.
            sims.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            sims.truncate(k);
            Neighbours {
                query: q,
                nearest: sims,
            }
        })
        .collect()
}

/// Pixels of frame and gaps.
const FRAME: u32 = 3;
const GAP: u32 = 4;
/// The extra space between the query column and its neighbours.
const QUERY_GAP: u32 = 12;
const BACKGROUND: [u8; 3] = [255, 255, 255];
const QUERY: [u8; 3] = [110, 110, 110];
const SAME: [u8; 3] = [30, 170, 60];
const OTHER: [u8; 3] = [210, 40, 40];
const UNLABELLED: [u8; 3] = [190, 190, 190];

/// Draw `table` as a PNG at `path`, written atomically: the centre crops of side `crop` that
/// the features were computed from (row i is image `features.indices[i]` of `dataset`,
/// read again here), scaled up by a whole factor to at least 64 pixels.
pub fn draw_grid(
    dataset: &dyn Dataset,
    features: &Features,
    crop: usize,
    table: &[Neighbours],
    path: &Path,
) -> Result<()> {
    let plot_err = |message: String| Error::Plot {
        path: path.into(),
        message,
    };
    let k = table.iter().map(|n| n.nearest.len()).max().unwrap_or(0);
    if table.is_empty() {
        return Err(plot_err("no query images to draw".into()));
    }
    let s = crop as u32;
    let augment = Augment::new(crop);
    let zoom = 64u32.div_ceil(s).max(1);
    let cell = s * zoom + 2 * FRAME;
    let width = GAP + cell + QUERY_GAP + k as u32 * (cell + GAP);
    let height = GAP + table.len() as u32 * (cell + GAP);
    let mut img = image::RgbImage::from_pixel(width, height, image::Rgb(BACKGROUND));
    let labels = features.labels.as_deref();
    let plane = (s * s) as usize;
    let mut put = |row: usize, x0: u32, y0: u32, frame: [u8; 3]| -> Result<()> {
        for y in 0..cell {
            for x in 0..cell {
                img.put_pixel(x0 + x, y0 + y, image::Rgb(frame));
            }
        }
        let mut data = vec![0.0; augment.out_len()];
        augment.centre(&dataset.image(features.indices[row])?, &mut data);
        for y in 0..s * zoom {
            for x in 0..s * zoom {
                let at = ((y / zoom) * s + x / zoom) as usize;
                let px = [0, 1, 2].map(|c| {
                    (denormalise(data[c * plane + at]).clamp(0.0, 1.0) * 255.0).round() as u8
                });
                img.put_pixel(x0 + FRAME + x, y0 + FRAME + y, image::Rgb(px));
            }
        }
        Ok(())
    };
    for (r, n) in table.iter().enumerate() {
        let y0 = GAP + r as u32 * (cell + GAP);
        put(n.query, GAP, y0, QUERY)?;
        for (j, &(row, _)) in n.nearest.iter().enumerate() {
            let frame = match labels {
                Some(l) if l[row] == l[n.query] => SAME,
                Some(_) => OTHER,
                None => UNLABELLED,
            };
            let x0 = GAP + cell + QUERY_GAP + j as u32 * (cell + GAP);
            put(row, x0, y0, frame)?;
        }
    }
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| plot_err(format!("PNG encoding: {e}")))?;
    write_atomically(path, |w| w.write_all(&png))
}

/// The table as text: each query with its neighbours' names, classes and similarities, and,
/// with labels, the share of neighbours of the query's class.
pub fn describe(features: &Features, table: &[Neighbours]) -> String {
    let class = |row: usize| -> String {
        match (&features.labels, &features.class_names) {
            (Some(l), Some(names)) => format!(" [{}]", names[l[row] as usize]),
            (Some(l), None) => format!(" [class {}]", l[row]),
            _ => String::new(),
        }
    };
    let mut out = String::new();
    let (mut same, mut total) = (0usize, 0usize);
    for n in table {
        out.push_str(&format!("{}{}:\n", features.names[n.query], class(n.query)));
        for &(row, sim) in &n.nearest {
            out.push_str(&format!(
                "    {:.3}  {}{}\n",
                sim,
                features.names[row],
                class(row)
            ));
            if let Some(l) = &features.labels {
                same += (l[row] == l[n.query]) as usize;
                total += 1;
            }
        }
    }
    if total > 0 {
        out.push_str(&format!(
            "neighbours of the query's class: {same} of {total} ({:.1} %)\n",
            100.0 * same as f64 / total as f64
        ));
    }
    out
}
