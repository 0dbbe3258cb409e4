//! Evaluation of audio models on the software adapter: the features the probe and `cpc
//! embed` read (per clip and per frame), and the probe and embed commands on audio
//! checkpoints. That pretraining audio-tiny beats the random-weight model's speaker probe is
//! tests/probe.rs's audio margin test.

use cpc::data::audio::{fixed_windows, OnShort, SyntheticConfig, SyntheticSpeech};
use cpc::data::Split;
use cpc::eval::audio::AudioEncoder;
use cpc::model::{ParamLayout, Spec};
use cpc::train::Config;

mod common;
use common::{cpc_command, gpu, ok};

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

/// `cpc probe` and `cpc embed` on an audio checkpoint (audio-tiny, 20 steps): the JSON has
/// the pretrained, random, input and context rows; the log-mel input row tells the 12
/// synthetic speakers apart far above chance; embed writes a vector per clip, or per frame.
#[test]
fn probe_and_embed_commands_take_audio_checkpoints() {
    use cpc::eval::Features;
    let dir = common::TestDir::new("audio-cli");
    let mut cfg = Config::preset("audio-tiny").unwrap();
    cfg.train.total_steps = 20;
    let opts = common::pretrain_options(cfg, &dir.join("run"));
    cpc::train::pretrain::pretrain(gpu(), &opts, &std::sync::atomic::AtomicBool::new(false))
        .unwrap();
    let ck = dir.join("run").join(cpc::train::pretrain::CHECKPOINT);
    let ck = ck.to_str().unwrap();
    let json = ok(&cpc_command(&[
        "probe",
        "--checkpoint",
        ck,
        "--json",
        "--train-limit",
        "96",
        "--test-limit",
        "48",
        "--iterations",
        "100",
        "--software",
    ]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    for key in ["pretrained", "random", "input"] {
        let top1 = v[key]["top1"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&top1), "{key}: {json}");
    }
    for key in ["pretrained", "random"] {
        assert!(
            v["context"][key]["top1"].is_number(),
            "context {key}: {json}"
        );
    }
    // Chance is 1/12; the log-mel energies separate the synthetic voices.
    assert!(v["input"]["top1"].as_f64().unwrap() > 0.5, "{json}");

    let out = dir.join("clips.safetensors");
    ok(&cpc_command(&[
        "embed",
        "--checkpoint",
        ck,
        "--split",
        "test",
        "--out",
        out.to_str().unwrap(),
        "--software",
    ]));
    let clips = Features::load(&out).unwrap();
    assert_eq!(
        (clips.len(), clips.dim),
        (96, 64),
        "one z per synthetic test clip"
    );
    assert_eq!(clips.labels.as_ref().unwrap().len(), 96);
    let out = dir.join("frames.safetensors");
    ok(&cpc_command(&[
        "embed",
        "--checkpoint",
        ck,
        "--split",
        "test",
        "--limit",
        "3",
        "--frames",
        "--out",
        out.to_str().unwrap(),
        "--software",
    ]));
    let frames = Features::load(&out).unwrap();
    // 2 s clips: 10 windows of 20 frames each.
    assert_eq!(frames.len(), 3 * 10 * 20);
    assert!(frames.names[1].ends_with("@1"), "{:?}", &frames.names[..2]);
}

/// `--probe-every` on an audio model: the speaker probe of the model being trained, before
/// the first step and every 10 steps, logged beside the loss.
#[test]
fn the_probe_during_audio_pretraining_scores_the_model_being_trained() {
    use cpc::train::pretrain::ProbeDuring;
    let dir = common::TestDir::new("audio-probe-every");
    let mut cfg = Config::preset("audio-tiny").unwrap();
    cfg.train.total_steps = 20;
    let mut opts = common::pretrain_options(cfg, &dir);
    opts.probe = Some(ProbeDuring {
        train_images: 48,
        test_images: 24,
        ..ProbeDuring::every(10)
    });
    let s =
        cpc::train::pretrain::pretrain(gpu(), &opts, &std::sync::atomic::AtomicBool::new(false))
            .unwrap();
    let before = s.probe_before.as_ref().unwrap();
    assert_eq!(
        (before.train_images, before.test_images, before.classes),
        (48, 24, 12)
    );
    assert_eq!(
        s.probes.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![9, 19]
    );
    let rows = cpc::train::read_metrics(dir.join("metrics.jsonl")).unwrap();
    let logged: Vec<u64> = (rows.iter())
        .filter(|r| r.probe_top1.is_some())
        .map(|r| r.step)
        .collect();
    assert_eq!(logged, vec![9, 19]);
}
