//! Evaluation of audio models on the software adapter: the features the probe and `cpc
//! embed` read (per clip and per frame), and pretraining audio-tiny on the synthetic speech
//! beating the random-weight model's speaker probe.

use cpc::data::audio::{fixed_windows, OnShort, SyntheticConfig, SyntheticSpeech};
use cpc::data::Split;
use cpc::eval::audio::AudioEncoder;
use cpc::model::{ParamLayout, Spec};
use cpc::train::Config;

mod common;
use common::gpu;

/// A few short utterances: 3 speakers x 2, 0.45 s each (2 windows of audio-tiny's 0.2 s,
/// the tail dropped).
fn small_set() -> SyntheticSpeech {
    let config = SyntheticConfig {
        speakers: 3,
        train_utterances: 2,
        test_utterances: 1,
        seconds: 0.45,
        ..SyntheticConfig::default()
    };
    SyntheticSpeech::new(config, Split::Train).unwrap()
}

#[test]
fn audio_features_are_the_frames_of_every_window_and_their_means() {
    use cpc::data::audio::AudioSet;
    let config = Config::preset("audio-tiny").unwrap();
    let spec = Spec::from(&config.model);
    let params = ParamLayout::new(&spec).init(5);
    // Batch 4: the set's 12 windows fill three batches, so windows of one clip straddle two.
    let encoder = AudioEncoder::new(gpu(), &config, &params, 4).unwrap();
    let set = small_set();
    let (d, h, t) = (spec.dim(), spec.hidden(), 20);
    let frames = encoder.extract_frames(gpu(), &set).unwrap();
    let clips = encoder.extract(gpu(), &set).unwrap();
    assert_eq!(
        frames.z.len(),
        set.len() * 2 * t,
        "two windows of 20 frames a clip"
    );
    assert_eq!((frames.z.dim, frames.c.dim), (d, h));
    assert_eq!(clips.z.len(), set.len());
    assert_eq!(frames.z.names[0], format!("{}@0", set.name(0)));
    assert_eq!(frames.z.names[2 * t - 1], format!("{}@39", set.name(0)));
    let labels: Vec<u32> = (0..set.len()).map(|i| set.label(i).unwrap()).collect();
    assert_eq!(clips.z.labels.as_ref().unwrap(), &labels);
    // Clip 3's first window alone through the model gives the same frames.
    let samples = set.samples(3).unwrap();
    let window = fixed_windows(&samples, 3200, OnShort::Pad);
    let mut input = window[..3200].to_vec();
    input.resize(4 * 3200, 0.0);
    let (z, c) = encoder.model.frames(gpu(), &input).unwrap();
    let first = 3 * 2 * t;
    for f in 0..t {
        for (got, want) in frames.z.row(first + f).iter().zip(&z[f * d..(f + 1) * d]) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "z frame {f}"
            );
        }
        for (got, want) in frames.c.row(first + f).iter().zip(&c[f * h..(f + 1) * h]) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "c frame {f}"
            );
        }
    }
    // Each clip's row is the mean of its frames' rows.
    for clip in 0..set.len() {
        for (all, mean, dim) in [(&frames.z, &clips.z, d), (&frames.c, &clips.c, h)] {
            for j in 0..dim {
                let sum: f32 = (0..2 * t).map(|f| all.row(clip * 2 * t + f)[j]).sum();
                let want = sum / (2 * t) as f32;
                let got = mean.row(clip)[j];
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "clip {clip}"
                );
            }
        }
    }
    // An image checkpoint is refused by name.
    let tiny = Config::preset("tiny").unwrap();
    let p = ParamLayout::new(Spec::from(&tiny.model)).init(0);
    let err = AudioEncoder::new(gpu(), &tiny, &p, 4)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("image"), "{err}");
}
