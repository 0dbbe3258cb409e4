//! `cpc pretrain` on audio end to end on the software adapter: runs of the audio-tiny preset
//! on the built-in synthetic speech are deterministic, a resumed run matches an
//! uninterrupted one, and bad audio input fails clearly. That audio-tiny learns, and that its
//! speaker probe beats the random-weight model's, is tests/probe.rs's speech margin test.

use cpc::data::audio::OnShort;
use cpc::data::{Format, OnBadFile};
use cpc::train::pretrain::CHECKPOINT;
use cpc::train::{Checkpoint, Config};

mod common;
use common::{losses, pretrain_options, run, TestDir};

/// The audio-tiny preset, `batch` windows a step for `steps` steps, every step logged.
fn audio_run(batch: u32, steps: u64) -> Config {
    let mut cfg = Config::preset("audio-tiny").unwrap();
    cfg.train.batch = batch;
    cfg.train.total_steps = steps;
    cfg.train.log_every = 1;
    cfg.train.checkpoint_every = 0;
    cfg
}

#[test]
fn audio_runs_are_deterministic_and_resume_exactly() {
    let dir = TestDir::new("audio-resume");
    let whole = run(&pretrain_options(audio_run(4, 6), &dir.join("whole"))).unwrap();
    let again = run(&pretrain_options(audio_run(4, 6), &dir.join("again"))).unwrap();
    assert_eq!(losses(&whole).len(), 6);
    assert_eq!(
        losses(&whole),
        losses(&again),
        "same seed: identical losses"
    );
    let mut other = audio_run(4, 6);
    other.train.seed = 1;
    let other = run(&pretrain_options(other, &dir.join("other"))).unwrap();
    assert_ne!(
        losses(&whole),
        losses(&other),
        "another seed changes the run"
    );

    let mut first = pretrain_options(audio_run(4, 6), &dir.join("split"));
    first.stop_at = Some(3);
    let part1 = run(&first).unwrap();
    assert!(part1.interrupted && part1.last_step == 3);
    let ck = Checkpoint::load(dir.join("split").join(CHECKPOINT)).unwrap();
    assert_eq!(ck.meta("step"), Some("3"));
    let ran = Config::from_toml(ck.meta("config").unwrap()).unwrap();
    assert_eq!(ran.model.modality(), "audio");
    let mut second = pretrain_options(audio_run(4, 6), &dir.join("split"));
    second.resume = true;
    let part2 = run(&second).unwrap();
    assert_eq!(part2.first_step, 3);
    let mut joined = losses(&part1);
    joined.extend(losses(&part2));
    assert_eq!(
        joined,
        losses(&whole),
        "resumed losses equal the whole run's"
    );

    // A vision run cannot resume an audio checkpoint: the modality is a model field.
    let mut vision = pretrain_options(common::tiny_run(4, 6), &dir.join("split"));
    vision.resume = true;
    let msg = run(&vision).unwrap_err().to_string();
    assert!(msg.contains("model"), "{msg}");
}

#[test]
fn bad_audio_input_fails_clearly() {
    let dir = TestDir::new("audio-bad");
    let mut opts = pretrain_options(audio_run(2, 1), &dir.join("out"));
    opts.data = Some(dir.join("nowhere"));
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("nowhere"), "{msg}");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    opts.data = Some(empty.clone());
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("empty"), "{msg}");
    // An image format named for an audio model.
    opts.data = None;
    opts.format = Format::Cifar10;
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("cifar10") && msg.contains("audio"), "{msg}");
    opts.format = Format::Auto;
    // A folder of two short clips and a corrupt one: stop names it; skip counts it; short
    // clips left out leave fewer clips than a batch.
    let clips = dir.join("clips");
    std::fs::create_dir_all(&clips).unwrap();
    for i in 0..2 {
        write_wav(&clips.join(format!("c{i}.wav")), 1000 + 100 * i);
    }
    std::fs::write(clips.join("broken.wav"), b"RIFF not a wave at all").unwrap();
    opts.data = Some(clips.clone());
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("broken.wav"), "{msg}");
    opts.on_bad_image = OnBadFile::Skip;
    let s = run(&opts).unwrap();
    assert_eq!(s.skipped_images, 1, "the corrupt file, counted");
    opts.on_short = OnShort::Skip;
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("shorter than the window"), "{msg}");
}

/// A mono 16 kHz 16-bit WAV of `n` samples of a 220 Hz tone.
fn write_wav(path: &std::path::Path, n: usize) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..n {
        let t = i as f32 / 16_000.0;
        w.write_sample((8000.0 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}
