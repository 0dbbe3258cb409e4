//! The audio data layer: decoding every format, folders, the synthetic speech set, the loader
//! and the log-mel features, on fixtures each test writes into its own temp dir. FLAC and Ogg
//! Vorbis fixtures come from the `flac` and `oggenc` tools (Debian: flac, vorbis-tools); a
//! missing tool fails the test where CI is set and skips it with a message elsewhere.

use std::f32::consts::PI;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cpc::data::audio::decode::{self, MAX_SAMPLES};
use cpc::data::audio::features::{hz_to_mel, mel_to_hz};
use cpc::data::audio::{
    self, fixed_windows, AudioBatch, AudioFolder, AudioLoader, AudioLoaderConfig, AudioOptions,
    AudioSet, Clips, LogMel, LogMelConfig, OnShort, SyntheticConfig, SyntheticSpeech,
};
use cpc::data::{LoaderState, OnBadFile, Split};
use cpc::Error;

mod common;
use common::{expect_err, TestDir};

// ---------------------------------------------------------------- fixtures

/// How a WAV fixture stores its samples.
#[derive(Clone, Copy, Debug)]
enum Pcm {
    Int(u16),
    Float,
}

/// A WAV of `seconds` at `rate` whose channel c is `amplitudes[c]` * sin(2 pi `hz` t).
fn write_wav(path: &Path, pcm: Pcm, rate: u32, amplitudes: &[f32], hz: f32, seconds: f32) {
    let (bits, format) = match pcm {
        Pcm::Int(bits) => (bits, hound::SampleFormat::Int),
        Pcm::Float => (32, hound::SampleFormat::Float),
    };
    let spec = hound::WavSpec {
        channels: amplitudes.len() as u16,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: format,
    };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let frames = (seconds * rate as f32).round() as usize;
    for n in 0..frames {
        let s = (2.0 * PI * hz * n as f32 / rate as f32).sin();
        for &a in amplitudes {
            let v = a * s;
            match pcm {
                Pcm::Float => w.write_sample(v).unwrap(),
                Pcm::Int(8) => w.write_sample((v * 127.0).round() as i8).unwrap(),
                Pcm::Int(bits) => {
                    let full = ((1i64 << (bits - 1)) - 1) as f32;
                    w.write_sample((v * full).round() as i32).unwrap()
                }
            }
        }
    }
    w.finalize().unwrap();
}

/// A mono 16-bit WAV of `frames` samples at 16 kHz, a sine at `hz`.
fn write_clip(path: &Path, frames: usize, hz: f32) {
    write_wav(
        path,
        Pcm::Int(16),
        16_000,
        &[0.5],
        hz,
        frames as f32 / 16_000.0,
    );
}

/// Whether `tool` runs here (the FLAC and Ogg Vorbis fixtures need it).
fn have(tool: &str) -> bool {
    common::have_tool(tool, "apt-get install flac vorbis-tools")
}

/// Runs `tool` with `args`, which must succeed.
fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `wav` encoded as FLAC at `flac`.
fn to_flac(wav: &Path, flac: &Path) {
    run(
        "flac",
        &[
            "-s",
            "-f",
            "-o",
            flac.to_str().unwrap(),
            wav.to_str().unwrap(),
        ],
    );
}

/// `wav` encoded as Ogg Vorbis at `ogg`.
fn to_ogg(wav: &Path, ogg: &Path) {
    run(
        "oggenc",
        &["-Q", "-o", ogg.to_str().unwrap(), wav.to_str().unwrap()],
    );
}

/// `path` cut to `keep` of its bytes.
fn cut(path: &Path, keep: f32) {
    let bytes = std::fs::read(path).unwrap();
    let n = (bytes.len() as f32 * keep) as usize;
    std::fs::write(path, &bytes[..n]).unwrap();
}

/// The frequency of a sine from its zero crossings over the middle of the clip, Hz.
fn frequency(samples: &[f32], rate: f32) -> f32 {
    let middle = &samples[samples.len() / 8..samples.len() * 7 / 8];
    let crossings = middle
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    crossings as f32 / 2.0 / (middle.len() as f32 / rate)
}

/// Root mean square of the middle of the clip.
fn rms(samples: &[f32]) -> f32 {
    let middle = &samples[samples.len() / 8..samples.len() * 7 / 8];
    (middle.iter().map(|s| s * s).sum::<f32>() / middle.len() as f32).sqrt()
}

fn opts() -> AudioOptions {
    AudioOptions::default()
}

fn skip() -> AudioOptions {
    AudioOptions {
        on_bad_file: OnBadFile::Skip,
        ..AudioOptions::default()
    }
}

fn open(path: &Path, options: &AudioOptions) -> cpc::Result<Box<dyn AudioSet>> {
    audio::open(Some(path), options)
}

// ---------------------------------------------------------------- decoding

#[test]
fn wav_of_every_sample_format_rate_and_channel_count_decodes_to_16k_keeping_the_sine() {
    let dir = TestDir::new("audio-wav");
    let seconds = 0.5;
    let hz = 440.0;
    let cases = [
        (Pcm::Int(8), 8_000, vec![0.5]),
        (Pcm::Int(16), 16_000, vec![0.5]),
        (Pcm::Int(16), 22_050, vec![0.5, 0.5]),
        (Pcm::Int(24), 44_100, vec![0.5]),
        (Pcm::Int(32), 48_000, vec![0.5]),
        (Pcm::Float, 48_000, vec![0.5, 0.5]),
        (Pcm::Float, 44_100, vec![0.5, 0.0, 0.5, 0.0]),
        // Stereo with one silent channel: the mono mix is half the sine.
        (Pcm::Int(16), 44_100, vec![0.5, 0.0]),
    ];
    for (k, (pcm, rate, amplitudes)) in cases.iter().enumerate() {
        let path = dir.path(&format!("{k}.wav"));
        write_wav(&path, *pcm, *rate, amplitudes, hz, seconds);
        let what = format!("{pcm:?} at {rate} Hz, {} channels", amplitudes.len());

        let header = decode::header(&path).unwrap();
        let frames = (seconds * *rate as f32).round() as u64;
        assert_eq!(header.sample_rate, *rate, "{what}");
        assert_eq!(header.channels, amplitudes.len(), "{what}");
        assert_eq!(header.frames, Some(frames), "{what}");

        let clip = decode::decode(&path).unwrap();
        let expected_len = (frames * 16_000).div_ceil(*rate as u64) as usize;
        assert_eq!(clip.len(), expected_len, "{what}");
        assert_eq!(decode::length(&path).unwrap(), expected_len, "{what}");
        assert!(clip.iter().all(|s| (-1.0..=1.0).contains(s)), "{what}");
        let f = frequency(&clip, 16_000.0);
        assert!((f - hz).abs() < 0.02 * hz, "{what}: {f} Hz, not {hz}");
        let mean_amplitude = amplitudes.iter().sum::<f32>() / amplitudes.len() as f32;
        let expected_rms = mean_amplitude / 2f32.sqrt();
        let got = rms(&clip);
        assert!(
            (got - expected_rms).abs() < 0.03 * expected_rms,
            "{what}: rms {got}, not {expected_rms}"
        );
    }
}

#[test]
fn resampling_keeps_a_sine_below_8_khz_and_removes_one_above() {
    // 3 kHz survives 48 -> 16 kHz; 10 kHz is above the new Nyquist frequency and is filtered
    // out rather than folded to 6 kHz.
    let rate = 48_000;
    let n = 24_000;
    let tone = |hz: f32| -> Vec<f32> {
        (0..n)
            .map(|i| 0.5 * (2.0 * PI * hz * i as f32 / rate as f32).sin())
            .collect()
    };
    let kept = decode::resample(&tone(3_000.0), rate).unwrap();
    assert_eq!(kept.len(), 8_000);
    assert!((frequency(&kept, 16_000.0) - 3_000.0).abs() < 30.0);
    assert!((rms(&kept) - 0.5 / 2f32.sqrt()).abs() < 0.01);
    let removed = decode::resample(&tone(10_000.0), rate).unwrap();
    assert!(rms(&removed) < 0.01, "10 kHz left rms {}", rms(&removed));
    assert_eq!(decode::resampled_len(441, 44_100), 160);
    assert_eq!(decode::resampled_len(442, 44_100), 161);
}

#[test]
fn flac_and_ogg_vorbis_from_their_tools_decode_to_16k_keeping_the_sine() {
    let dir = TestDir::new("audio-codecs");
    for (rate, channels) in [(16_000, 1usize), (44_100, 2)] {
        let wav = dir.path(&format!("{rate}.wav"));
        write_wav(&wav, Pcm::Int(16), rate, &vec![0.5; channels], 440.0, 0.5);
        let expected_len = (rate as u64 / 2 * 16_000).div_ceil(rate as u64) as usize;
        let mut encoded = Vec::new();
        if have("flac") {
            let flac = dir.path(&format!("{rate}.flac"));
            to_flac(&wav, &flac);
            encoded.push(flac);
        }
        if have("oggenc") {
            let ogg = dir.path(&format!("{rate}.ogg"));
            to_ogg(&wav, &ogg);
            encoded.push(ogg);
        }
        for path in encoded {
            let header = decode::header(&path).unwrap();
            assert_eq!((header.sample_rate, header.channels), (rate, channels));
            let clip = decode::decode(&path).unwrap();
            assert_eq!(clip.len(), expected_len, "{}", path.display());
            assert_eq!(decode::length(&path).unwrap(), expected_len);
            let f = frequency(&clip, 16_000.0);
            assert!((f - 440.0).abs() < 9.0, "{}: {f} Hz", path.display());
            let r = rms(&clip);
            assert!((r - 0.354).abs() < 0.02, "{}: rms {r}", path.display());
        }
    }
}

/// The first bad-file error opening `dir` and decoding every clip gives, if any.
fn first_error(dir: &Path, options: &AudioOptions) -> Option<Error> {
    let set = match open(dir, options) {
        Ok(set) => set,
        Err(e) => return Some(e),
    };
    (0..set.len()).find_map(|i| set.samples(i).err())
}

/// `bytes` with 200 bytes in their middle flipped.
fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 200] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn truncated_and_corrupt_files_stop_naming_them_or_are_skipped_and_counted() {
    let dir = TestDir::new("audio-bad");
    let source = dir.path("source.wav");
    write_clip(&source, 32_000, 300.0);
    // Each bad file: its name and how it was made bad.
    let mut bad = vec!["cut.wav", "junk.wav"];
    std::fs::copy(&source, dir.path("cut.wav")).unwrap();
    cut(&dir.path("cut.wav"), 0.5); // its header still declares 32000 frames
    std::fs::write(dir.path("junk.wav"), b"RIFF\x10\0\0\0WAVEjunk, not audio").unwrap();
    if have("flac") {
        for (name, keep) in [("cut30.flac", 0.3), ("cut90.flac", 0.9)] {
            to_flac(&source, &dir.path(name));
            cut(&dir.path(name), keep);
            bad.push(name);
        }
        to_flac(&source, &dir.path("flipped.flac"));
        corrupt(&dir.path("flipped.flac"));
        bad.push("flipped.flac");
    }
    if have("oggenc") {
        to_ogg(&source, &dir.path("cut.ogg"));
        cut(&dir.path("cut.ogg"), 0.9);
        to_ogg(&source, &dir.path("flipped.ogg"));
        corrupt(&dir.path("flipped.ogg"));
        bad.extend(["cut.ogg", "flipped.ogg"]);
    }

    // Stop: each bad file beside good ones is an error naming it, at open or when decoded.
    for name in &bad {
        let alone = TestDir::new("audio-bad-one");
        write_clip(&alone.path("a.wav"), 8_000, 300.0);
        write_clip(&alone.path("z.wav"), 8_000, 300.0);
        std::fs::copy(dir.path(name), alone.path(name)).unwrap();
        let e = first_error(&alone, &opts()).unwrap_or_else(|| panic!("{name} read as good"));
        assert!(matches!(e, Error::BadImage { .. }), "{name}: {e:?}");
        assert!(e.to_string().contains(name), "{name}: {e}");
        if name.starts_with("cut") {
            assert!(e.to_string().contains("cut short"), "{name}: {e}");
        }
    }
    // ... and a file cut short after its header stops the loader that meets it.
    let later = TestDir::new("audio-bad-later");
    write_clip(&later.path("a.wav"), 8_000, 300.0);
    std::fs::copy(dir.path("cut.wav"), later.path("cut.wav")).unwrap();
    let set = open(&later, &opts()).unwrap();
    let mut loader = AudioLoader::new(
        set.into(),
        AudioLoaderConfig::new(2, 4_000, 1),
        LoaderState::default(),
    )
    .unwrap();
    let e = (0..3)
        .try_for_each(|_| loader.next_batch().map(|_| ()))
        .unwrap_err();
    assert!(e.to_string().contains("cut.wav"), "{e}");

    // Skip: every bad file counted, at open or while decoding, never in a batch.
    write_clip(&dir.path("good.wav"), 8_000, 300.0);
    let set: Arc<dyn AudioSet> = open(&dir, &skip()).unwrap().into();
    let good: Vec<usize> = (0..set.len())
        .filter(|&i| !bad.contains(&set.name(i).as_str()))
        .collect();
    assert_eq!(good.len(), 2, "source.wav and good.wav");
    let mut loader = AudioLoader::new(
        set.clone(),
        AudioLoaderConfig::new(2, 4_000, 1),
        LoaderState::default(),
    )
    .unwrap();
    for _ in 0..6 {
        let batch = loader.next_batch().unwrap();
        assert!(batch.indices.iter().all(|i| good.contains(i)), "{batch:?}");
    }
    let clips: Vec<usize> = Clips::new(&*set, 10)
        .flat_map(|c| c.unwrap())
        .map(|c| c.index)
        .collect();
    assert_eq!(clips, good);
    assert_eq!(set.skipped(), bad.len());
    assert!(set.describe().contains(&format!("{} skipped", bad.len())));
}

/// A WAV whose header declares `frames` frames of 16-bit stereo at 16 kHz, with 64 bytes of
/// samples behind it.
fn write_wav_declaring(path: &Path, frames: u32) {
    let data_len = frames.saturating_mul(4);
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&36u32.saturating_add(data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&2u16.to_le_bytes()); // channels
    b.extend_from_slice(&16_000u32.to_le_bytes());
    b.extend_from_slice(&64_000u32.to_le_bytes()); // bytes per second
    b.extend_from_slice(&4u16.to_le_bytes()); // block align
    b.extend_from_slice(&16u16.to_le_bytes()); // bits
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    std::fs::write(path, b).unwrap();
}

#[test]
fn file_declaring_more_than_the_sample_limit_is_refused_at_open_naming_it() {
    let dir = TestDir::new("audio-huge");
    write_clip(&dir.path("a/ok.wav"), 4_000, 300.0);
    // 2^28 frames of stereo: 2^29 samples, twice the limit.
    write_wav_declaring(&dir.path("a/huge.wav"), 1 << 28);
    let e = expect_err(open(&dir, &opts()), "huge.wav");
    assert!(matches!(e, Error::BadImage { .. }), "{e:?}");
    assert!(e.to_string().contains(&MAX_SAMPLES.to_string()), "{e}");
    let set = open(&dir, &skip()).unwrap();
    assert_eq!((set.len(), set.skipped()), (1, 1));
    expect_err(decode::decode(&dir.path("a/huge.wav")), "huge.wav");
}

// ---------------------------------------------------------------- folders

#[test]
fn speaker_folders_and_the_librispeech_layout_label_by_the_top_folder() {
    let dir = TestDir::new("audio-speakers");
    // LibriSpeech: speaker/chapter/speaker-chapter-utterance, with a transcript per chapter.
    for (speaker, chapter, utterances) in [("19", "198", 2), ("19", "227", 1), ("26", "495", 2)] {
        for u in 0..utterances {
            let name = format!("{speaker}/{chapter}/{speaker}-{chapter}-{u:04}.wav");
            write_clip(&dir.path(&name), 4_000 + 100 * u, 200.0);
        }
        let txt = format!("{speaker}/{chapter}/{speaker}-{chapter}.trans.txt");
        std::fs::write(dir.path(&txt), "0000 SOME WORDS\n").unwrap();
    }
    write_clip(&dir.path("7/only.wav"), 4_000, 200.0);
    let set = open(&dir, &opts()).unwrap();
    let names: Vec<String> = (0..set.len()).map(|i| set.name(i)).collect();
    assert_eq!(
        names,
        [
            "19/198/19-198-0000.wav",
            "19/198/19-198-0001.wav",
            "19/227/19-227-0000.wav",
            "26/495/26-495-0000.wav",
            "26/495/26-495-0001.wav",
            "7/only.wav",
        ]
    );
    let labels: Vec<_> = (0..set.len()).map(|i| set.label(i).unwrap()).collect();
    assert_eq!(labels, [0, 0, 0, 1, 1, 2]);
    assert_eq!(set.num_classes(), Some(3));
    assert_eq!(set.class_name(1).as_deref(), Some("26"));
    assert_eq!(set.frames(1), 4_100);
    assert!(set.describe().contains("6 files") && set.describe().contains("3 speakers"));

    // A flat folder is unlabelled; files beside speaker folders are an error.
    let flat = TestDir::new("audio-flat");
    write_clip(&flat.path("x.wav"), 4_000, 200.0);
    write_clip(&flat.path("y.wav"), 4_000, 200.0);
    let set = open(&flat, &opts()).unwrap();
    assert_eq!(
        (set.len(), set.num_classes(), set.label(0)),
        (2, None, None)
    );
    write_clip(&flat.path("s/z.wav"), 4_000, 200.0);
    expect_err(open(&flat, &opts()), "speaker folder");

    // train/ and test/ are splits.
    let split = TestDir::new("audio-split");
    write_clip(&split.path("train/a/1.wav"), 4_000, 200.0);
    write_clip(&split.path("train/b/1.wav"), 4_000, 200.0);
    write_clip(&split.path("test/a/2.wav"), 4_000, 200.0);
    let test = AudioOptions {
        split: Split::Test,
        ..opts()
    };
    let set = open(&split, &test).unwrap();
    assert_eq!((set.len(), set.name(0).as_str()), (1, "a/2.wav"));
}

#[test]
fn empty_folder_folder_without_audio_and_missing_folder_are_errors_naming_them() {
    let dir = TestDir::new("audio-empty");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = expect_err(open(&empty, &opts()), "empty");
    assert!(e.to_string().contains("no audio files"), "{e}");
    std::fs::write(dir.path("text/notes.txt"), "not audio").unwrap();
    std::fs::write(dir.path("text/song.mp3"), "not read").unwrap();
    expect_err(open(&dir.join("text"), &opts()), "no audio files");
    // Speaker folders with nothing in them.
    std::fs::create_dir_all(dir.join("speakers/a")).unwrap();
    expect_err(open(&dir.join("speakers"), &opts()), "class folders");
    let e = expect_err(open(&dir.path("not-there"), &opts()), "not-there");
    assert!(e.to_string().contains("no such"), "{e}");
    write_clip(&dir.path("one.wav"), 100, 200.0);
    expect_err(open(&dir.path("one.wav"), &opts()), "folder");
}

#[test]
fn clips_shorter_than_a_window_are_padded_or_skipped_and_counted() {
    let dir = TestDir::new("audio-short");
    write_clip(&dir.path("long1.wav"), 6_000, 200.0);
    write_clip(&dir.path("long2.wav"), 5_000, 300.0);
    write_clip(&dir.path("short.wav"), 1_000, 400.0);
    let set: Arc<dyn AudioSet> = open(&dir, &opts()).unwrap().into();
    let short = 2; // listing order: long1, long2, short
    let window = 4_096;

    let mut pad = AudioLoader::new(
        set.clone(),
        AudioLoaderConfig::new(3, window, 5),
        LoaderState::default(),
    )
    .unwrap();
    assert_eq!((pad.short_clips(), pad.clips_per_epoch()), (1, 3));
    assert!(pad
        .describe()
        .contains("1 clips shorter than a window zero-padded"));
    let batch = pad.next_batch().unwrap();
    let k = batch.indices.iter().position(|&i| i == short).unwrap();
    let clip = set.samples(short).unwrap();
    let w = batch.window_samples(k);
    assert_eq!(batch.offsets[k], 0);
    assert_eq!(&w[..1_000], &clip[..]);
    assert!(w[1_000..].iter().all(|&s| s == 0.0));

    let config = AudioLoaderConfig {
        on_short: OnShort::Skip,
        ..AudioLoaderConfig::new(2, window, 5)
    };
    let mut skip = AudioLoader::new(set.clone(), config.clone(), LoaderState::default()).unwrap();
    assert_eq!((skip.short_clips(), skip.clips_per_epoch()), (1, 2));
    assert!(skip
        .describe()
        .contains("1 clips shorter than a window left out"));
    for _ in 0..4 {
        assert!(!skip.next_batch().unwrap().indices.contains(&short));
    }
    let too_few = AudioLoaderConfig {
        batch_size: 3,
        ..config
    };
    let e = expect_err(
        AudioLoader::new(set.clone(), too_few, LoaderState::default()),
        "1 clips shorter than the window",
    );
    assert!(e.to_string().contains("padding"), "{e}");

    // For evaluation: whole windows from the start; a short clip padded or dropped.
    let long = set.samples(0).unwrap();
    let windows = fixed_windows(&long, 2_500, OnShort::Pad);
    assert_eq!(windows, long[..5_000]);
    assert_eq!(fixed_windows(&clip, 2_500, OnShort::Pad).len(), 2_500);
    assert!(fixed_windows(&clip, 2_500, OnShort::Skip).is_empty());
}

#[test]
fn folder_cache_keeps_decoded_clips_within_its_budget() {
    let dir = TestDir::new("audio-cache");
    for k in 0..4 {
        write_clip(
            &dir.path(&format!("{k}.wav")),
            4_000,
            200.0 + 50.0 * k as f32,
        );
    }
    let clip_bytes = 4_000 * 4;
    let small = AudioOptions {
        cache_bytes: 2 * clip_bytes + 100,
        ..opts()
    };
    let none = AudioOptions {
        cache_bytes: 0,
        ..opts()
    };
    let cached = AudioFolder::open(&dir, &small).unwrap();
    let uncached = AudioFolder::open(&dir, &none).unwrap();
    for round in 0..2 {
        for i in 0..4 {
            assert_eq!(
                cached.samples(i).unwrap(),
                uncached.samples(i).unwrap(),
                "{round}"
            );
        }
    }
    assert_eq!(cached.cached_bytes(), 2 * clip_bytes);
    assert_eq!(uncached.cached_bytes(), 0);
}

// ---------------------------------------------------------------- synthetic speech

fn synthetic(seed: u64, split: Split) -> SyntheticSpeech {
    SyntheticSpeech::new(
        SyntheticConfig {
            seed,
            ..SyntheticConfig::default()
        },
        split,
    )
    .unwrap()
}

#[test]
fn synthetic_speech_is_deterministic_per_seed_and_every_clip_differs() {
    let a = synthetic(3, Split::Train);
    let b = synthetic(3, Split::Train);
    let other_seed = synthetic(4, Split::Train);
    let test = synthetic(3, Split::Test);
    let c = SyntheticConfig::default();
    assert_eq!(a.len(), c.speakers * c.train_utterances);
    assert_eq!(test.len(), c.speakers * c.test_utterances);
    let clips: Vec<_> = (0..24).map(|i| a.samples(i).unwrap()).collect();
    for (i, clip) in clips.iter().enumerate() {
        // Read again, the clip is the one kept, not made afresh; it equals a new set's.
        assert!(
            Arc::ptr_eq(clip, &a.samples(i).unwrap()),
            "clip {i} not kept"
        );
        assert_eq!(clip, &b.samples(i).unwrap());
        assert_ne!(clip, &other_seed.samples(i).unwrap());
        assert_ne!(clip, &test.samples(i).unwrap());
        assert_eq!(clip.len(), a.frames(i));
        assert_eq!(a.label(i), Some((i % c.speakers) as u32));
        assert!(clip
            .iter()
            .all(|s| s.is_finite() && (-1.0..=1.0).contains(s)));
        let level = (clip.iter().map(|s| s * s).sum::<f32>() / clip.len() as f32).sqrt();
        assert!((0.015..0.1).contains(&level), "clip {i}: rms {level}");
    }
    for i in 0..clips.len() {
        for j in 0..i {
            assert_ne!(clips[i], clips[j], "{i} and {j}");
        }
    }
}

/// The time-averaged log-mel spectrum of every clip of `set`, and its speaker.
fn mean_log_mels(set: &dyn AudioSet, mel: &LogMel) -> Vec<(Vec<f32>, u32)> {
    (0..set.len())
        .map(|i| (mel.mean(&set.samples(i).unwrap()), set.label(i).unwrap()))
        .collect()
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        .sqrt()
}

/// Mean of each speaker's vectors.
fn class_means(items: &[(Vec<f32>, u32)], classes: usize) -> Vec<Vec<f32>> {
    let dim = items[0].0.len();
    let mut sums = vec![vec![0.0; dim]; classes];
    let mut counts = vec![0usize; classes];
    for (v, c) in items {
        counts[*c as usize] += 1;
        for (s, x) in sums[*c as usize].iter_mut().zip(v) {
            *s += x;
        }
    }
    for (s, n) in sums.iter_mut().zip(counts) {
        s.iter_mut().for_each(|x| *x /= n as f32);
    }
    sums
}

/// Mean distance between items of different speakers over that within a speaker.
fn between_over_within(items: &[(Vec<f32>, u32)]) -> f32 {
    let (mut within, mut between) = ((0.0, 0), (0.0, 0));
    for (i, (a, ca)) in items.iter().enumerate() {
        for (b, cb) in &items[..i] {
            let d = distance(a, b);
            if ca == cb {
                within = (within.0 + d, within.1 + 1);
            } else {
                between = (between.0 + d, between.1 + 1);
            }
        }
    }
    (between.0 / between.1 as f32) / (within.0 / within.1 as f32)
}

#[test]
fn synthetic_speakers_differ_more_between_than_within() {
    // Seed 0 gives 1.20 (the utterances' random level of -6 to +6 dB is much of the spread
    // within a speaker); the same clips under labels dealt at random give 1.00.
    let set = synthetic(0, Split::Train);
    let mel = LogMel::new(LogMelConfig::default()).unwrap();
    let items = mean_log_mels(&set, &mel);
    let ratio = between_over_within(&items);
    let mut shuffled = items.clone();
    let mut labels: Vec<u32> = items.iter().map(|(_, c)| *c).collect();
    rand::seq::SliceRandom::shuffle(&mut labels[..], &mut common::rng(1));
    for (item, label) in shuffled.iter_mut().zip(labels) {
        item.1 = label;
    }
    let control = between_over_within(&shuffled);
    println!("mean log-mel distance between speakers / within: {ratio:.3}, shuffled {control:.3}");
    assert!(ratio > 1.12, "{ratio}");
    assert!((control - 1.0).abs() < 0.03, "{control}");
}

#[test]
fn synthetic_speakers_separate_by_mean_log_mel() {
    // The probe's input baseline in miniature: nearest class mean on time-averaged log-mel
    // energies, class means from the train split, scored on the test split.
    let mel = LogMel::new(LogMelConfig::default()).unwrap();
    let speakers = SyntheticConfig::default().speakers;
    let mut accuracies = Vec::new();
    for seed in 0..3 {
        let train = mean_log_mels(&synthetic(seed, Split::Train), &mel);
        let test = mean_log_mels(&synthetic(seed, Split::Test), &mel);
        let means = class_means(&train, speakers);
        let right = test
            .iter()
            .filter(|(v, c)| {
                let nearest = (0..speakers)
                    .min_by(|&a, &b| distance(v, &means[a]).total_cmp(&distance(v, &means[b])))
                    .unwrap();
                nearest as u32 == *c
            })
            .count();
        accuracies.push(right as f32 / test.len() as f32);
    }
    // Seeds 0, 1, 2 give 53 %, 40 % and 55 % (chance: 1/12 = 8.3 %): well above chance, far
    // from perfect, so a probe on learnt features has room to beat this input baseline.
    println!("nearest-class-mean accuracy on mean log-mel, seeds 0..3: {accuracies:?}");
    let chance = 1.0 / speakers as f32;
    for a in &accuracies {
        assert!(*a > 3.0 * chance, "{accuracies:?}");
    }
}

// ---------------------------------------------------------------- loader

fn small_synthetic() -> Arc<dyn AudioSet> {
    let config = SyntheticConfig {
        seed: 2,
        speakers: 4,
        train_utterances: 5,
        test_utterances: 1,
        seconds: 0.5,
    };
    Arc::new(SyntheticSpeech::new(config, Split::Train).unwrap())
}

fn take(loader: &mut AudioLoader, n: usize) -> Vec<AudioBatch> {
    (0..n).map(|_| loader.next_batch().unwrap()).collect()
}

#[test]
fn audio_loader_is_deterministic_whatever_the_workers_and_resumes_from_its_state() {
    let set = small_synthetic();
    let window = 1_024;
    let config = |workers| AudioLoaderConfig {
        workers,
        prefetch: 3,
        ..AudioLoaderConfig::new(6, window, 7)
    };
    let one = take(
        &mut AudioLoader::new(set.clone(), config(1), LoaderState::default()).unwrap(),
        8,
    );
    let three = take(
        &mut AudioLoader::new(set.clone(), config(3), LoaderState::default()).unwrap(),
        8,
    );
    assert_eq!(one, three);

    // 20 clips in batches of 6: 3 batches an epoch, each epoch a fresh shuffle and offsets.
    assert_eq!(one[0].samples.len(), 6 * window);
    let starts: Vec<_> = one
        .iter()
        .map(|b| (b.start.epoch, b.start.position))
        .collect();
    assert_eq!(starts[..4], [(0, 0), (0, 6), (0, 12), (1, 0)]);
    let epoch0: Vec<usize> = one[..3].iter().flat_map(|b| b.indices.clone()).collect();
    let mut distinct = epoch0.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 18);
    let epoch1: Vec<usize> = one[3..6].iter().flat_map(|b| b.indices.clone()).collect();
    assert_ne!(epoch0, epoch1);
    let mut offsets: Vec<usize> = one.iter().flat_map(|b| b.offsets.clone()).collect();
    offsets.sort();
    offsets.dedup();
    assert!(offsets.len() > 30, "offsets barely vary: {offsets:?}");
    for b in &one {
        for k in 0..b.len() {
            let clip = set.samples(b.indices[k]).unwrap();
            let o = b.offsets[k];
            assert!(o + window <= clip.len());
            assert_eq!(b.window_samples(k), &clip[o..o + window]);
            assert_eq!(b.labels[k], set.label(b.indices[k]));
        }
    }

    // Resumed from its state, a new loader gives the same next batches.
    let mut first = AudioLoader::new(set.clone(), config(2), LoaderState::default()).unwrap();
    take(&mut first, 4);
    let state = first.state();
    assert_eq!(
        state,
        LoaderState {
            epoch: 1,
            position: 6
        }
    );
    drop(first);
    let mut resumed = AudioLoader::new(
        set.clone(),
        config(2),
        LoaderState::from_bytes(state.to_bytes()),
    )
    .unwrap();
    assert_eq!(take(&mut resumed, 4), one[4..]);
    assert_eq!(resumed.batches_per_epoch(), 3);

    let other_seed = take(
        &mut AudioLoader::new(
            set.clone(),
            AudioLoaderConfig::new(6, window, 8),
            LoaderState::default(),
        )
        .unwrap(),
        1,
    );
    assert_ne!(other_seed[0], one[0]);
    let e = AudioLoader::new(
        set,
        AudioLoaderConfig::new(21, window, 0),
        LoaderState::default(),
    );
    expect_err(e, "21");
}

#[test]
fn audio_gain_scales_windows_within_its_range() {
    let set = small_synthetic();
    let plain = AudioLoaderConfig::new(4, 2_000, 3);
    let gained = AudioLoaderConfig {
        augment: audio::AudioAugment {
            random_offset: true,
            gain_db: Some((-12.0, -6.0)),
        },
        ..plain.clone()
    };
    let a = AudioLoader::new(set.clone(), plain, LoaderState::default())
        .unwrap()
        .next_batch()
        .unwrap();
    let b = AudioLoader::new(set, gained, LoaderState::default())
        .unwrap()
        .next_batch()
        .unwrap();
    assert_eq!((&a.indices, &a.offsets), (&b.indices, &b.offsets));
    for k in 0..a.len() {
        let (x, y) = (a.window_samples(k), b.window_samples(k));
        let i = (0..x.len())
            .max_by(|&i, &j| x[i].abs().total_cmp(&x[j].abs()))
            .unwrap();
        let ratio = y[i] / x[i];
        assert!((0.25..=0.502).contains(&ratio), "window {k}: gain {ratio}");
        assert!(x.iter().zip(y).all(|(p, q)| (q - p * ratio).abs() < 1e-5));
    }
}

#[test]
fn clips_visit_every_clip_once_whole_in_order() {
    let set = small_synthetic();
    let groups: Vec<_> = Clips::new(&*set, 6)
        .workers(3)
        .map(|g| g.unwrap())
        .collect();
    let sizes: Vec<_> = groups.iter().map(|g| g.len()).collect();
    assert_eq!(sizes, [6, 6, 6, 2]);
    let clips: Vec<_> = groups.into_iter().flatten().collect();
    for (i, clip) in clips.iter().enumerate() {
        assert_eq!(clip.index, i);
        assert_eq!(clip.label, set.label(i));
        assert_eq!(clip.samples, set.samples(i).unwrap());
    }
}

// ---------------------------------------------------------------- features

/// |X_k|^2 of the Hann-windowed `frame` zero-padded to `n_fft`, by the DFT's definition.
fn direct_power(frame: &[f32], n_fft: usize) -> Vec<f64> {
    let n = frame.len();
    let windowed: Vec<f64> = frame
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            x as f64 * (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
        })
        .collect();
    (0..=n_fft / 2)
        .map(|k| {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, x) in windowed.iter().enumerate() {
                let angle = -2.0 * std::f64::consts::PI * (k * i) as f64 / n_fft as f64;
                re += x * angle.cos();
                im += x * angle.sin();
            }
            re * re + im * im
        })
        .collect()
}

/// Filter b's weight at `hz`, from the mel formula: a triangle between mel points b and b + 2.
fn triangle(b: usize, hz: f64, bands: usize, f_max: f64) -> f64 {
    let mel = |f: f64| 2595.0 * (1.0 + f / 700.0).log10();
    let step = mel(f_max) / (bands + 1) as f64;
    let m = mel(hz);
    let (low, centre, high) = (
        b as f64 * step,
        (b + 1) as f64 * step,
        (b + 2) as f64 * step,
    );
    if m > low && m <= centre {
        // In Hz, as the filters are linear in frequency between their edges.
        let hz_of = |m: f64| 700.0 * (10f64.powf(m / 2595.0) - 1.0);
        (hz - hz_of(low)) / (hz_of(centre) - hz_of(low))
    } else if m > centre && m < high {
        let hz_of = |m: f64| 700.0 * (10f64.powf(m / 2595.0) - 1.0);
        (hz_of(high) - hz) / (hz_of(high) - hz_of(centre))
    } else {
        0.0
    }
}

#[test]
fn log_mel_matches_a_direct_dft_and_the_mel_formula() {
    let config = LogMelConfig {
        window: 200,
        hop: 80,
        n_fft: 256,
        bands: 12,
        ..LogMelConfig::default()
    };
    let mel = LogMel::new(config.clone()).unwrap();
    let mut rng = common::rng(5);
    let clip = common::random(&mut rng, 200 + 2 * 80 + 37); // 3 frames and a dropped tail
    assert_eq!(mel.num_frames(clip.len()), 3);
    assert_eq!(mel.num_frames(10), 1);
    let frames = mel.frames(&clip);
    assert_eq!(frames.len(), 3 * 12);
    for t in 0..3 {
        let frame = &clip[t * 80..t * 80 + 200];
        let direct = direct_power(frame, 256);
        let fast = mel.power_spectrum(frame);
        for (k, (&d, &f)) in direct.iter().zip(&fast).enumerate() {
            assert!(
                (d - f as f64).abs() <= 1e-4 * d.max(1.0),
                "frame {t} bin {k}: {f} vs {d}"
            );
        }
        for b in 0..12 {
            let energy: f64 = direct
                .iter()
                .enumerate()
                .map(|(k, p)| p * triangle(b, k as f64 * 16_000.0 / 256.0, 12, 8_000.0))
                .sum();
            let expected = energy.max(1e-10).ln();
            let got = frames[t * 12 + b] as f64;
            assert!(
                (got - expected).abs() < 1e-3,
                "frame {t} band {b}: {got} vs {expected}"
            );
        }
    }
    let mean = mel.mean(&clip);
    for b in 0..12 {
        let m = (0..3).map(|t| frames[t * 12 + b]).sum::<f32>() / 3.0;
        assert!((mean[b] - m).abs() < 1e-5);
    }
    assert!((mel_to_hz(hz_to_mel(1234.0)) - 1234.0).abs() < 0.01);
    assert!(LogMel::new(LogMelConfig {
        n_fft: 100,
        ..config
    })
    .is_err());
}

#[test]
fn log_mel_puts_a_sine_in_the_band_centred_nearest_it() {
    let mel = LogMel::new(LogMelConfig::default()).unwrap();
    let edges = mel.edges();
    for hz in [300.0f32, 1_000.0, 2_500.0, 6_000.0] {
        let clip: Vec<f32> = (0..8_000)
            .map(|n| 0.5 * (2.0 * PI * hz * n as f32 / 16_000.0).sin())
            .collect();
        let mean = mel.mean(&clip);
        let loudest = (0..mean.len())
            .max_by(|&a, &b| mean[a].total_cmp(&mean[b]))
            .unwrap();
        let nearest = (0..mean.len())
            .min_by(|&a, &b| {
                (edges[a + 1] - hz)
                    .abs()
                    .total_cmp(&(edges[b + 1] - hz).abs())
            })
            .unwrap();
        assert_eq!(loudest, nearest, "{hz} Hz");
        assert!(edges[loudest] < hz && hz < edges[loudest + 2]);
        // Bands away from it hold far less: 30 dB is a factor 1000 in energy, ln 1000 = 6.9.
        let far: Vec<usize> = (0..mean.len())
            .filter(|&b| b + 3 < loudest || b > loudest + 3)
            .collect();
        for b in far {
            assert!(
                mean[loudest] - mean[b] > 6.9,
                "{hz} Hz: band {b} {} vs {}",
                mean[b],
                mean[loudest]
            );
        }
    }
    // Silence stays finite at the floor.
    let silent = mel.mean(&vec![0.0; 1_000]);
    assert!(silent.iter().all(|&v| (v - 1e-10f32.ln()).abs() < 1e-3));
}

#[test]
fn audio_names_parse_for_the_command_line() {
    assert_eq!("skip".parse::<OnShort>().unwrap(), OnShort::Skip);
    assert_eq!("Pad".parse::<OnShort>().unwrap(), OnShort::Pad);
    assert!("trim".parse::<OnShort>().unwrap_err().contains("pad, skip"));
    assert_eq!("skip".parse::<OnBadFile>().unwrap(), OnBadFile::Skip);
    assert_eq!(OnShort::Pad.to_string(), "pad");
}
