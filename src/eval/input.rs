//! The probe's raw-input baseline: the features a linear classifier reads straight off the
//! data, so `cpc probe` can say whether pretraining beat the input itself and not only a
//! random network.
//!
//! - Images: the pixels of each normalised centre crop (the crop the encoder sees), as they
//!   are when the crop's side is at most [`INPUT_SIDE`], else area-averaged down to
//!   3 x [`INPUT_SIDE`] x [`INPUT_SIDE`] = 3072 values ([`area_downsample`]). On a set
//!   whose feature matrix would not bind whole on the adapter the side shrinks further
//!   ([`pixel_side`]).
//! - Audio: the time-averaged log-mel filterbank energies of each clip (the CPC paper's MFCC
//!   baseline reached 17.6 % on LibriSpeech speakers, CPC 97.4 %), over the same fixed
//!   windows the model's features are computed on ([`log_mel_features`]).
//!
//! - Text: a bag of words per sentence over the vocabulary's most frequent words
//!   ([`bag_of_words`]).
//!
//! All are plain host code; the probe standardises them like any other features.

use crate::data::audio::{fixed_windows, AudioSet, Clips, LogMel, OnShort};
use crate::data::text::vocab::UNK;
use crate::data::text::{LabelledSentences, Vocabulary};
use crate::data::{par_map, Dataset, Sequential};
use crate::error::{Error, Result};
use crate::eval::features::{class_names, Features};

/// Largest side of the pixel input: 3 x 32 x 32 = 3072 values an image (CIFAR-10's whole
/// image).
pub const INPUT_SIDE: usize = 32;

/// Side `t` of the pixel input for crops of side `crop` on a set of `rows` images: `crop`
/// itself up to [`INPUT_SIDE`], else [`INPUT_SIDE`]; then the largest side (at least 1) at
/// which the [rows, 3 t t] f32 feature matrix fits in `max_bytes` (the adapter's largest
/// storage binding), so that a large set gets a coarser input rather than no probe.
pub fn pixel_side(crop: usize, rows: usize, max_bytes: u64) -> usize {
    let mut t = crop.clamp(1, INPUT_SIDE);
    while t > 1 && rows as u64 * (3 * t * t * 4) as u64 > max_bytes {
        t -= 1;
    }
    t
}

/// Area averaging of square planes: `planes` holds any number of `side` x `side` planes
/// (row-major, one after another), the result the same number of `out` x `out` planes.
/// Output pixel (oy, ox) is the mean of the input over the square it covers,
/// [oy side / out, (oy + 1) side / out) x [ox side / out, (ox + 1) side / out), each input
/// pixel weighted by the share of it inside (so a side that `out` does not divide splits
/// pixels between neighbours). `out == side` returns the planes unchanged.
///
/// Panics unless 1 <= out <= side and `planes` holds whole planes.
pub fn area_downsample(planes: &[f32], side: usize, out: usize) -> Vec<f32> {
    assert!(
        (1..=side).contains(&out),
        "area averaging {side} down to {out}"
    );
    assert_eq!(
        planes.len() % (side * side),
        0,
        "whole {side} x {side} planes"
    );
    if out == side {
        return planes.to_vec();
    }
    let weights = area_weights(side, out);
    let mut rows = vec![0.0f32; side * out];
    let mut result = Vec::with_capacity(planes.len() / (side * side) * out * out);
    for plane in planes.chunks_exact(side * side) {
        // Along x: rows[y][ox] = sum_i w[ox][i] plane[y][i].
        for (y, row) in plane.chunks_exact(side).enumerate() {
            for (ox, (first, w)) in weights.iter().enumerate() {
                rows[y * out + ox] = w.iter().zip(&row[*first..]).map(|(w, v)| w * v).sum();
            }
        }
        // Along y: out[oy][ox] = sum_j w[oy][j] rows[j][ox].
        for (first, w) in &weights {
            for ox in 0..out {
                let column = (0..w.len()).map(|k| rows[(first + k) * out + ox]);
                result.push(w.iter().zip(column).map(|(w, v)| w * v).sum());
            }
        }
    }
    result
}

/// For each of `out` cells of a line of `side` pixels: its first pixel and the weights of
/// the pixels from there on (summing to 1). In units of 1/out of a pixel, cell o spans
/// [o side, (o + 1) side) and pixel i spans [i out, (i + 1) out): the overlaps are integers,
/// and each weight is its overlap over the cell's length `side`.
fn area_weights(side: usize, out: usize) -> Vec<(usize, Vec<f32>)> {
    (0..out)
        .map(|o| {
            let (start, end) = (o * side, (o + 1) * side);
            let (first, last) = (start / out, end.div_ceil(out));
            let w = (first..last)
                .map(|i| {
                    let overlap = end.min((i + 1) * out) - start.max(i * out);
                    overlap as f32 / side as f32
                })
                .collect();
            (first, w)
        })
        .collect()
}

/// The pixel input of every image of `dataset`: its normalised centre crop of side `crop`
/// (as the encoder reads it), area-averaged to `side` x `side` ([`area_downsample`]), one
/// row of 3 side side values an image, with labels, names and indices as
/// [`crate::eval::Encoder::extract`] gives them. Streams in batches of `batch` images.
pub fn pixel_features(
    dataset: &dyn Dataset,
    crop: usize,
    side: usize,
    batch: usize,
) -> Result<Features> {
    let mut out = Features {
        dim: 3 * side * side,
        data: Vec::new(),
        labels: Some(Vec::new()),
        names: Vec::new(),
        class_names: class_names(dataset),
        indices: Vec::new(),
    };
    for b in Sequential::new(dataset, crop, batch).workers(2) {
        let b = b?;
        out.data.extend(area_downsample(&b.images, crop, side));
        out.push_batch(dataset, &b);
    }
    out.finish();
    Ok(out)
}

/// The names of an audio set's speakers by index, when it has speakers and names them all.
pub fn speaker_names(set: &dyn AudioSet) -> Option<Vec<String>> {
    let n = set.num_classes()?;
    (0..n as u32).map(|c| set.class_name(c)).collect()
}

/// The log-mel input of every clip of `set`: the clip cut into its fixed evaluation windows
/// of `window` samples ([`fixed_windows`]: consecutive from the start, the tail shorter
/// than a window dropped; a clip shorter than one window padded or left out by
/// `on_short`), each window's log-mel energies averaged over its frames
/// ([`LogMel::mean`]), then over the windows: one row of `bands` values a clip, labelled
/// by speaker, in index order. Clips left out (too short under Skip, or undecodable under
/// the set's Skip policy) leave gaps in `indices`.
pub fn log_mel_features(
    set: &dyn AudioSet,
    mel: &LogMel,
    window: usize,
    on_short: OnShort,
) -> Result<Features> {
    if window == 0 {
        return Err(Error::Config(
            "log-mel features: the window must be positive".into(),
        ));
    }
    let bands = mel.config().bands;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = Features {
        dim: bands,
        data: Vec::new(),
        labels: Some(Vec::new()),
        names: Vec::new(),
        class_names: speaker_names(set),
        indices: Vec::new(),
    };
    for clips in Clips::new(set, 64).workers(2) {
        let clips = clips?;
        let means = par_map(&clips, threads, 1, |clip| {
            let windows = fixed_windows(&clip.samples, window, on_short);
            let n = windows.len() / window;
            (n > 0).then(|| {
                let mut mean = vec![0.0f32; bands];
                for w in windows.chunks_exact(window) {
                    for (m, v) in mean.iter_mut().zip(mel.mean(w)) {
                        *m += v / n as f32;
                    }
                }
                mean
            })
        });
        for (clip, mean) in clips.iter().zip(means) {
            let Some(mean) = mean else { continue };
            out.data.extend(mean);
            out.labels = match (out.labels.take(), clip.label) {
                (Some(mut all), Some(l)) => {
                    all.push(l);
                    Some(all)
                }
                _ => None,
            };
            out.names.push(set.name(clip.index));
            out.indices.push(clip.index);
        }
    }
    out.finish();
    Ok(out)
}

/// Most words of the bag-of-words input: the probe's classifier is [`BAG_WORDS`] wide.
pub const BAG_WORDS: usize = 2048;

/// The bag-of-words input of every sentence of `set`: one column for the unknown token and
/// one for each of the vocabulary's most frequent words up to [`BAG_WORDS`] columns in all
/// (ids UNK.., the vocabulary's frequency order; rarer words count as unknown), each
/// sentence's word counts over its first `max_words` words divided by that length (an
/// empty sentence a row of zeros), labelled by class, in order.
pub fn bag_of_words(
    set: &LabelledSentences,
    vocab: &Vocabulary,
    max_words: usize,
) -> Result<Features> {
    let sentences = set.encode(vocab, max_words)?;
    let unk = UNK as usize;
    let dim = (vocab.len() - unk).min(BAG_WORDS);
    let mut data = vec![0.0f32; sentences.len() * dim];
    for (k, row) in data.chunks_exact_mut(dim).enumerate() {
        let ids = sentences.sentence(k);
        for &id in ids {
            let column = (id as usize).checked_sub(unk).filter(|&c| c < dim);
            row[column.unwrap_or(0)] += 1.0 / ids.len() as f32;
        }
    }
    Ok(Features {
        dim,
        data,
        labels: Some(set.labels().to_vec()),
        names: (0..set.len()).map(|i| set.name(i).to_string()).collect(),
        class_names: Some(set.class_names().to_vec()),
        indices: (0..set.len()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn area_downsample_matches_a_hand_computed_case() {
        // 5 -> 3: each cell spans 5/3 pixels. Cell 0 takes pixel 0 whole and 2/3 of pixel 1
        // (weights 3/5, 2/5), cell 1 a third of pixel 1, pixel 2, a third of pixel 3 (1/5,
        // 3/5, 1/5), cell 2 the rest (2/5, 3/5).
        assert_eq!(
            area_weights(5, 3),
            vec![
                (0, vec![0.6, 0.4]),
                (1, vec![0.2, 0.6, 0.2]),
                (3, vec![0.4, 0.6])
            ]
        );
        // Two planes: an impulse at (y 1, x 1), then the ramp 5 y + x. The impulse lands in
        // cells by the product of pixel 1's weights (0.4, 0.2, 0) down and across; a ramp
        // averages to its value at each cell's centroid, 0.4, 2.0 and 3.6 on either axis.
        let mut planes = vec![0.0; 50];
        planes[5 + 1] = 1.0;
        for y in 0..5 {
            for x in 0..5 {
                planes[25 + y * 5 + x] = (5 * y + x) as f32;
            }
        }
        let c = [0.4, 2.0, 3.6];
        let ramp: Vec<f32> = (0..9).map(|k| 5.0 * c[k / 3] + c[k % 3]).collect();
        let impulse = [0.16, 0.08, 0.0, 0.08, 0.04, 0.0, 0.0, 0.0, 0.0];
        close(
            &area_downsample(&planes, 5, 3),
            &[impulse.as_slice(), &ramp].concat(),
        );
        // 4 -> 2 is the mean of 2 x 2 blocks; the same side is the identity.
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        close(&area_downsample(&x, 4, 2), &[2.5, 4.5, 10.5, 12.5]);
        assert_eq!(area_downsample(&x, 4, 4), x);
    }

    #[test]
    fn area_downsample_keeps_the_mean_at_odd_sizes() {
        // 37 -> 32 (weights straddle pixels): every plane's mean survives, and a constant
        // plane stays constant.
        let side = 37;
        let planes: Vec<f32> = (0..3 * side * side)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let out = area_downsample(&planes, side, INPUT_SIDE);
        assert_eq!(out.len(), 3 * INPUT_SIDE * INPUT_SIDE);
        let mean = |p: &[f32]| p.iter().map(|&v| v as f64).sum::<f64>() / p.len() as f64;
        for (a, b) in planes
            .chunks(side * side)
            .zip(out.chunks(INPUT_SIDE * INPUT_SIDE))
        {
            assert!(
                (mean(a) - mean(b)).abs() < 1e-5,
                "{} vs {}",
                mean(a),
                mean(b)
            );
        }
        let flat = area_downsample(&vec![0.75; side * side], side, 5);
        assert!(flat.iter().all(|v| (v - 0.75).abs() < 1e-6), "{flat:?}");
    }

    #[test]
    fn pixel_side_caps_at_32_and_shrinks_to_fit_the_binding() {
        assert_eq!(pixel_side(24, 1000, 1 << 27), 24);
        assert_eq!(pixel_side(96, 1000, 1 << 27), INPUT_SIDE);
        // CIFAR-10's 50000 training images under a 128 MiB binding: 3 x 14 x 14 floats an
        // image (112 MiB) fit, 3 x 15 x 15 (129 MiB) do not.
        assert_eq!(pixel_side(32, 50_000, 128 << 20), 14);
        assert_eq!(pixel_side(32, 1 << 30, 16), 1);
    }
}
