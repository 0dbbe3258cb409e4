//! One audio file to 16 kHz mono f32 in [-1, 1]: WAV (8, 16, 24 and 32-bit integer, 32 and
//! 64-bit float), FLAC and Ogg Vorbis, any channel count, any rate from [`MIN_RATE`] to
//! [`MAX_RATE`].
//!
//! - symphonia reads the container and decodes; integer samples scale to [-1, 1) (i16 s is
//!   s / 32768), float samples are kept and clamped to [-1, 1]; a NaN or infinite sample makes
//!   the file bad.
//! - Channels are mixed to mono by averaging, then rubato's synchronous FFT resampler (a
//!   windowed-sinc filter applied in the frequency domain, exact for the rational ratio of the
//!   two rates) takes the clip to 16 kHz. A clip of n frames at rate r gives exactly
//!   [`resampled_len`] = ceil(n * 16000 / r) samples: the output instants k / 16000 that fall
//!   inside the clip.
//! - Work is bounded: a file whose header declares more than [`MAX_SAMPLES`] samples (frames
//!   times channels), or whose 16 kHz clip would be longer than that, is refused at its
//!   header; a file that does not declare its length is refused once decoding passes the
//!   limit. All sizes are computed with checked arithmetic.
//! - A file that does not reach the length its header declares (cut short), or that fails to
//!   parse or decode anywhere (corrupt), is an error naming it ([`Error::BadImage`], the
//!   crate's bad-file error): the bad-file policy decides whether that stops or skips.

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::SAMPLE_RATE;
use crate::data::bad_file;
use crate::error::{Error, Result};

/// The most samples one file may hold, counted over all its channels at its own rate, and
/// the most its 16 kHz clip may hold: 2^28 = 268435456, 1 GiB as f32. That is 4.7 hours of
/// 16 kHz mono, 46 minutes of 48 kHz stereo; a LibriSpeech utterance is at most 35 s.
pub const MAX_SAMPLES: u64 = 1 << 28;

/// The lowest sample rate read, Hz (telephone audio is 8000).
pub const MIN_RATE: u32 = 1_000;
/// The highest sample rate read, Hz.
pub const MAX_RATE: u32 = 768_000;
/// The most channels a file may have.
pub const MAX_CHANNELS: usize = 64;

/// File extensions read as audio (lower case), for the folder walk.
pub const EXTENSIONS: [&str; 5] = ["wav", "wave", "flac", "ogg", "oga"];

/// Whether `path` names a file of an audio type this reads, by its extension.
pub fn is_audio_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// What a file's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Frames per second, Hz.
    pub sample_rate: u32,
    pub channels: usize,
    /// Frames (samples per channel) the file declares, where it does.
    pub frames: Option<u64>,
}

/// A file's samples before resampling: mono, at the file's own rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub header: Header,
    /// One value per frame, the mean of its channels, in [-1, 1].
    pub mono: Vec<f32>,
}

/// Samples at 16 kHz for `frames` frames at `rate`: ceil(frames * 16000 / rate).
pub fn resampled_len(frames: u64, rate: u32) -> u64 {
    let scaled = frames as u128 * SAMPLE_RATE as u128;
    scaled.div_ceil(rate as u128).min(u64::MAX as u128) as u64
}

/// The header of `path`, checked against the limits.
pub fn header(path: &Path) -> Result<Header> {
    Ok(Reader::open(path)?.header)
}

/// Clip length of `path` at 16 kHz, from its header, or by decoding it where the header does
/// not declare its length.
pub fn length(path: &Path) -> Result<usize> {
    let header = header(path)?;
    match header.frames {
        Some(frames) => Ok(resampled_len(frames, header.sample_rate) as usize),
        None => Ok(decode(path)?.len()),
    }
}

/// `path` decoded, mono-mixed and resampled to 16 kHz.
pub fn decode(path: &Path) -> Result<Vec<f32>> {
    let source = decode_source(path)?;
    if source.header.sample_rate == SAMPLE_RATE {
        return Ok(source.mono);
    }
    resample(&source.mono, source.header.sample_rate).map_err(|e| bad_file(path, e))
}

/// `path` decoded and mono-mixed, at its own rate.
pub fn decode_source(path: &Path) -> Result<Source> {
    let mut reader = Reader::open(path)?;
    let mono = reader.decode_all(path)?;
    Ok(Source {
        header: reader.header,
        mono,
    })
}

/// `mono` at `rate` Hz resampled to 16 kHz, [`resampled_len`] samples, clamped to [-1, 1]
/// (the filter rings slightly past a full-scale step).
pub fn resample(mono: &[f32], rate: u32) -> Result<Vec<f32>> {
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(Error::Other(format!(
            "sample rate {rate} Hz is outside {MIN_RATE}..={MAX_RATE} Hz"
        )));
    }
    if rate == SAMPLE_RATE || mono.is_empty() {
        return Ok(mono.to_vec());
    }
    let out_len = resampled_len(mono.len() as u64, rate) as usize;
    let why = |e: &dyn std::fmt::Display| {
        Error::Other(format!(
            "cannot resample {rate} Hz to {SAMPLE_RATE} Hz: {e}"
        ))
    };
    // Fixed input chunks of 1024 frames; the resampler's delay is trimmed by process_all.
    let mut resampler = Fft::<f32>::new(
        rate as usize,
        SAMPLE_RATE as usize,
        1024,
        1,
        FixedSync::Input,
    )
    .map_err(|e| why(&e))?;
    let input = InterleavedSlice::new(mono, 1, mono.len()).map_err(|e| why(&e))?;
    let output = resampler
        .process_all(&input, mono.len(), None)
        .map_err(|e| why(&e))?;
    let mut samples = output.take_data();
    // process_all rounds its length in floating point; the length is defined exactly.
    samples.resize(out_len, 0.0);
    for s in &mut samples {
        *s = s.clamp(-1.0, 1.0);
    }
    Ok(samples)
}

/// A file opened for decoding, its header read and checked.
struct Reader {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track: u32,
    header: Header,
}

impl Reader {
    fn open(path: &Path) -> Result<Reader> {
        let file = File::open(path).map_err(|e| bad_file(path, format!("cannot read: {e}")))?;
        let stream = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let format = symphonia::default::get_probe()
            .probe(
                &hint,
                stream,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| match e {
                SymphoniaError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    bad_file(path, "cut short: the file ends before its stream does")
                }
                e => bad_file(path, format!("cannot read as WAV, FLAC or Ogg Vorbis: {e}")),
            })?;
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| bad_file(path, "holds no audio track"))?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| bad_file(path, "its audio track has no codec parameters"))?;
        let sample_rate = params
            .sample_rate
            .ok_or_else(|| bad_file(path, "declares no sample rate"))?;
        if !(MIN_RATE..=MAX_RATE).contains(&sample_rate) {
            return Err(bad_file(
                path,
                format!("sample rate {sample_rate} Hz is outside {MIN_RATE}..={MAX_RATE} Hz"),
            ));
        }
        let channels = params.channels.as_ref().map_or(0, |c| c.count());
        if !(1..=MAX_CHANNELS).contains(&channels) {
            return Err(bad_file(
                path,
                format!("has {channels} channels; 1 to {MAX_CHANNELS} are read"),
            ));
        }
        let header = Header {
            sample_rate,
            channels,
            frames: track.num_frames,
        };
        if let Some(frames) = header.frames {
            check_limit(path, frames, &header)?;
        }
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())
            .map_err(|e| bad_file(path, format!("cannot decode its codec: {e}")))?;
        let track = track.id;
        Ok(Reader {
            format,
            decoder,
            track,
            header,
        })
    }

    /// Every frame of the track, mono-mixed; the count checked against the header's.
    fn decode_all(&mut self, path: &Path) -> Result<Vec<f32>> {
        let channels = self.header.channels;
        let capacity = self.header.frames.unwrap_or(0);
        let mut mono = Vec::with_capacity(capacity as usize);
        let mut interleaved: Vec<f32> = Vec::new();
        loop {
            let at = mono.len();
            let packet = match self.format.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    return Err(bad_file(path, cut_short(at, self.header.frames)))
                }
                Err(e) => return Err(bad_file(path, format!("cannot read past frame {at}: {e}"))),
            };
            if packet.track_id != self.track {
                continue;
            }
            let decoded = self
                .decoder
                .decode(&packet)
                .map_err(|e| bad_file(path, format!("cannot decode past frame {at}: {e}")))?;
            let got = decoded.spec().channels().count();
            if got != channels {
                return Err(bad_file(
                    path,
                    format!("the header declares {channels} channels, frame {at} has {got}"),
                ));
            }
            let frames = (at as u64)
                .checked_add(decoded.frames() as u64)
                .ok_or_else(|| bad_file(path, "frame count overflows"))?;
            check_limit(path, frames, &self.header)?;
            decoded.copy_to_vec_interleaved(&mut interleaved);
            for (k, frame) in interleaved.chunks_exact(channels).enumerate() {
                let mean = frame.iter().sum::<f32>() / channels as f32;
                if !mean.is_finite() {
                    return Err(bad_file(path, format!("frame {} is not a number", at + k)));
                }
                mono.push(mean.clamp(-1.0, 1.0));
            }
        }
        if mono.is_empty() {
            return Err(bad_file(path, "holds no samples"));
        }
        if let Some(declared) = self.header.frames {
            if (mono.len() as u64) < declared {
                return Err(bad_file(path, cut_short(mono.len(), Some(declared))));
            }
            if mono.len() as u64 > declared {
                return Err(bad_file(
                    path,
                    format!(
                        "longer than declared: the header declares {declared} frames, the file \
                         holds {}",
                        mono.len()
                    ),
                ));
            }
        }
        Ok(mono)
    }
}

/// The message for a file that ends after `frames` frames, of `declared` if known.
fn cut_short(frames: usize, declared: Option<u64>) -> String {
    match declared {
        Some(d) => format!(
            "cut short or corrupt: its stream ends after {frames} of the {d} frames its \
             header declares"
        ),
        None => format!("cut short: the file ends inside a packet after {frames} frames"),
    }
}

/// Refuses `frames` frames of `header`'s file when they, times its channels, or its 16 kHz
/// clip exceed [`MAX_SAMPLES`].
fn check_limit(path: &Path, frames: u64, header: &Header) -> Result<()> {
    let samples = frames.checked_mul(header.channels as u64);
    let clip = resampled_len(frames, header.sample_rate);
    match samples {
        Some(s) if s <= MAX_SAMPLES && clip <= MAX_SAMPLES => Ok(()),
        _ => Err(bad_file(
            path,
            format!(
                "holds {frames} frames of {} channels at {} Hz ({clip} samples at 16 kHz), over \
                 the limit of {MAX_SAMPLES} samples",
                header.channels, header.sample_rate
            ),
        )),
    }
}
