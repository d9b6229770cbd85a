//! Reading RIFF WAV recordings for the answer classifier: 8/16/24/32-bit PCM,
//! 32/64-bit float, G.711 µ-law and A-law, any channel count (averaged to
//! mono), any rate (resampled to 8 kHz with rubato's windowed-sinc resampler).
//!
//! Promises: never panics on a malformed file; every refusal is a [`WavError`]
//! that says what is wrong; the output is 8 kHz mono i16 aligned with the input
//! (the resampler's delay is removed).

use std::fmt;
use std::path::Path;

use crate::audio::g711::{alaw_decode, ulaw_decode};
use crate::audio::resample::resample_all;

/// The rate the classifier runs at.
pub const TARGET_RATE: u32 = 8000;
/// Larger files are refused (a call recording is minutes, not hours).
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Why a file could not be read.
#[derive(Debug)]
pub enum WavError {
    Io(std::io::Error),
    TooLarge(u64),
    NotRiff,
    NotWave,
    /// A chunk header or body runs past the end of the file.
    Truncated(&'static str),
    MissingChunk(&'static str),
    /// The `fmt ` chunk is too short or inconsistent.
    BadFormat(String),
    Unsupported {
        format_tag: u16,
        bits: u16,
    },
    Resample(crate::audio::ResampleError),
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WavError::Io(e) => write!(f, "cannot read the file: {e}"),
            WavError::TooLarge(n) => write!(f, "file too large ({n} bytes, at most {MAX_BYTES})"),
            WavError::NotRiff => f.write_str("not a WAV file (no RIFF header)"),
            WavError::NotWave => f.write_str("RIFF file but not WAVE"),
            WavError::Truncated(what) => write!(f, "truncated WAV file ({what} runs past the end)"),
            WavError::MissingChunk(id) => write!(f, "WAV file has no `{id}` chunk"),
            WavError::BadFormat(m) => write!(f, "bad WAV format chunk: {m}"),
            WavError::Unsupported { format_tag, bits } => write!(
                f,
                "unsupported WAV encoding (format tag {format_tag:#06x}, {bits} bits): use PCM 8/16/24/32-bit, float, µ-law or A-law"
            ),
            WavError::Resample(m) => write!(f, "resampling failed: {m}"),
        }
    }
}

impl std::error::Error for WavError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WavError::Io(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Pcm,
    Float,
    ALaw,
    MuLaw,
}

#[derive(Debug, Clone, Copy)]
struct Format {
    encoding: Encoding,
    channels: u16,
    rate: u32,
    bits: u16,
    block_align: u16,
}

/// Reads a WAV file as 8 kHz mono.
pub fn read_8k_mono(path: &Path) -> Result<Vec<i16>, WavError> {
    let len = std::fs::metadata(path).map_err(WavError::Io)?.len();
    if len > MAX_BYTES {
        return Err(WavError::TooLarge(len));
    }
    let bytes = std::fs::read(path).map_err(WavError::Io)?;
    parse_8k_mono(&bytes)
}

/// Parses WAV bytes as 8 kHz mono.
pub fn parse_8k_mono(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    let (format, data) = split(bytes)?;
    let mono = decode_mono(&format, data);
    if format.rate == TARGET_RATE {
        return Ok(mono.iter().map(|&x| to_i16(x)).collect());
    }
    let out = resample_all(&mono, format.rate, TARGET_RATE).map_err(WavError::Resample)?;
    Ok(out.iter().map(|&x| to_i16(x)).collect())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Finds the format and the sample data.
fn split(bytes: &[u8]) -> Result<(Format, &[u8]), WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" {
        return Err(WavError::NotRiff);
    }
    if &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4) as usize;
        let body_start = at + 8;
        if id == b"data" {
            let format = format.ok_or(WavError::MissingChunk("fmt "))?;
            // Streaming writers leave the size at 0 or 0xFFFFFFFF: take what is there.
            let end = if size == 0 || size == u32::MAX as usize {
                bytes.len()
            } else {
                body_start.checked_add(size).ok_or(WavError::Truncated("data chunk"))?
            };
            if end > bytes.len() {
                return Err(WavError::Truncated("data chunk"));
            }
            return Ok((format, &bytes[body_start..end]));
        }
        let end = body_start.checked_add(size).filter(|&e| e <= bytes.len()).ok_or(WavError::Truncated("a chunk"))?;
        if id == b"fmt " {
            format = Some(parse_format(&bytes[body_start..end])?);
        }
        at = end + (size & 1);
    }
    Err(WavError::MissingChunk(if format.is_some() { "data" } else { "fmt " }))
}

fn parse_format(b: &[u8]) -> Result<Format, WavError> {
    if b.len() < 16 {
        return Err(WavError::BadFormat(format!("{} bytes, need 16", b.len())));
    }
    let mut tag = u16_at(b, 0);
    let channels = u16_at(b, 2);
    let rate = u32_at(b, 4);
    let block_align = u16_at(b, 12);
    let bits = u16_at(b, 14);
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID.
        if b.len() < 26 {
            return Err(WavError::BadFormat("extensible format without its sub-format".into()));
        }
        tag = u16_at(b, 24);
    }
    let encoding = match (tag, bits) {
        (1, 8 | 16 | 24 | 32) => Encoding::Pcm,
        (3, 32 | 64) => Encoding::Float,
        (6, 8) => Encoding::ALaw,
        (7, 8) => Encoding::MuLaw,
        _ => return Err(WavError::Unsupported { format_tag: tag, bits }),
    };
    if channels == 0 {
        return Err(WavError::BadFormat("0 channels".into()));
    }
    if !(1000..=384_000).contains(&rate) {
        return Err(WavError::BadFormat(format!("sample rate {rate} Hz")));
    }
    if usize::from(block_align) != usize::from(channels) * usize::from(bits / 8) {
        return Err(WavError::BadFormat(format!("block align {block_align} does not match {channels} channels of {bits} bits")));
    }
    Ok(Format { encoding, channels, rate, bits, block_align })
}

/// Decodes every frame to one sample in i16 scale (a partial last frame is dropped).
fn decode_mono(format: &Format, data: &[u8]) -> Vec<f32> {
    let width = usize::from(format.bits / 8);
    let channels = usize::from(format.channels);
    data.chunks_exact(usize::from(format.block_align))
        .map(|frame| {
            let sum: f32 = frame.chunks_exact(width).map(|s| sample(format.encoding, s)).sum();
            sum / channels as f32
        })
        .collect()
}

/// One sample in i16 scale.
fn sample(encoding: Encoding, s: &[u8]) -> f32 {
    match (encoding, s.len()) {
        (Encoding::Pcm, 1) => (f32::from(s[0]) - 128.0) * 256.0,
        (Encoding::Pcm, 2) => f32::from(i16::from_le_bytes([s[0], s[1]])),
        (Encoding::Pcm, 3) => (i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8) as f32 / 256.0,
        (Encoding::Pcm, 4) => i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32 / 65536.0,
        (Encoding::Float, 4) => f32::from_le_bytes([s[0], s[1], s[2], s[3]]) * 32768.0,
        (Encoding::Float, 8) => (f64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]) * 32768.0) as f32,
        (Encoding::MuLaw, 1) => f32::from(ulaw_decode(s[0])),
        (Encoding::ALaw, 1) => f32::from(alaw_decode(s[0])),
        _ => 0.0,
    }
}

fn to_i16(x: f32) -> i16 {
    x.round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV file in memory.
    pub(crate) fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let block = channels * bits / 8;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        b.extend_from_slice(&block.to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
        b
    }

    fn pcm16(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn reads_8k_mono_pcm16_unchanged() {
        let samples: Vec<i16> = (0..1000).map(|i| (i * 37 % 2000 - 1000) as i16).collect();
        assert_eq!(parse_8k_mono(&wav(1, 1, 8000, 16, &pcm16(&samples))).unwrap(), samples);
    }

    #[test]
    fn downmixes_stereo_and_skips_other_chunks() {
        let frames: Vec<i16> = [1000i16, 3000, -200, -400].to_vec();
        let mut file = wav(1, 2, 8000, 16, &pcm16(&frames));
        // Insert an odd-sized LIST chunk (with its pad byte) before `fmt `.
        let list = [b"LIST".as_slice(), &3u32.to_le_bytes(), b"abc\0"].concat();
        file.splice(12..12, list);
        assert_eq!(parse_8k_mono(&file).unwrap(), vec![2000, -300]);
    }

    #[test]
    fn decodes_8bit_float_and_g711() {
        assert_eq!(parse_8k_mono(&wav(1, 1, 8000, 8, &[128, 255, 0])).unwrap(), vec![0, 32512, -32768]);
        let f: Vec<u8> = [0.5f32, -0.25].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(parse_8k_mono(&wav(3, 1, 8000, 32, &f)).unwrap(), vec![16384, -8192]);
        // µ-law 0xFF and A-law 0xD5 are the codes nearest zero; 0x80 / 0xAA are the loudest positives.
        assert_eq!(parse_8k_mono(&wav(7, 1, 8000, 8, &[0xFF, 0x80, 0x00])).unwrap(), vec![0, 32124, -32124]);
        assert_eq!(parse_8k_mono(&wav(6, 1, 8000, 8, &[0xD5, 0xAA])).unwrap(), vec![8, 32256]);
    }

    #[test]
    fn resamples_16k_keeping_a_tone_and_the_timing() {
        let samples: Vec<i16> =
            (0..16000).map(|i| (8000.0 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin()) as i16).collect();
        let out = parse_8k_mono(&wav(1, 1, 16000, 16, &pcm16(&samples))).unwrap();
        assert!((7990..=8010).contains(&out.len()), "{}", out.len());
        // Aligned within one output sample (rubato trims its delay to the sample,
        // 125 µs here), and the tone keeps its level.
        let ideal = |i: usize, lag: i32| 8000.0 * (std::f32::consts::PI * (i as i32 - lag) as f32 / 4.0).sin();
        let error = |lag: i32| (1000..7000).map(|i| (f32::from(out[i]) - ideal(i, lag)).abs()).sum::<f32>() / 6000.0;
        let best = (-2..=2).min_by(|a, b| error(*a).total_cmp(&error(*b))).unwrap();
        assert!(best.abs() <= 1 && error(best) < 150.0, "lag {best}, mean error {}", error(best));
        // A 6 kHz tone at 16 kHz is above the new Nyquist frequency: filtered out.
        let high: Vec<i16> =
            (0..16000).map(|i| (8000.0 * (2.0 * std::f32::consts::PI * 6000.0 * i as f32 / 16000.0).sin()) as i16).collect();
        let out = parse_8k_mono(&wav(1, 1, 16000, 16, &pcm16(&high))).unwrap();
        assert!(out[1000..7000].iter().all(|s| s.abs() < 100), "aliasing");
    }

    #[test]
    fn refuses_malformed_files_with_a_reason() {
        assert!(matches!(parse_8k_mono(b"hello"), Err(WavError::NotRiff)));
        assert!(matches!(parse_8k_mono(b"RIFF\0\0\0\0AVI LIST"), Err(WavError::NotWave)));
        let good = wav(1, 1, 8000, 16, &pcm16(&[1, 2, 3]));
        assert!(matches!(parse_8k_mono(&good[..30]), Err(WavError::Truncated(_))));
        let mut no_data = good.clone();
        no_data.truncate(36);
        assert!(matches!(parse_8k_mono(&no_data), Err(WavError::MissingChunk("data"))));
        let mut long_data = good.clone();
        long_data[40..44].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(parse_8k_mono(&long_data), Err(WavError::Truncated("data chunk"))));
        let adpcm = wav(2, 1, 8000, 4, &[0; 10]);
        let e = parse_8k_mono(&adpcm).unwrap_err();
        assert!(matches!(e, WavError::Unsupported { format_tag: 2, bits: 4 }));
        assert!(e.to_string().contains("0x0002"), "{e}");
        let mut zero_channels = good.clone();
        zero_channels[22] = 0;
        assert!(matches!(parse_8k_mono(&zero_channels), Err(WavError::BadFormat(_))));
        // Every prefix of a good file is refused or read, never a panic.
        for n in 0..good.len() {
            let _ = parse_8k_mono(&good[..n]);
        }
    }
}
