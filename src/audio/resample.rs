//! Sample-rate conversion, the crate's one use of rubato (its asynchronous
//! windowed-sinc resampler at a fixed ratio): [`RateConverter`], streaming,
//! between the device rate and the AI side (8 k ↔ 16 k, and the agent's 16 /
//! 22.05 / 24 / 44.1 kHz output → the device rate); and [`resample_all`], one
//! whole recording at any rate (`cap4 amd FILE.wav`).
//!
//! Owns its resampler and every buffer; promises no allocation after
//! [`RateConverter::new`] (buffers are sized for the largest chunk), any input
//! length per call (it re-chunks into 20 ms blocks internally), and a fixed
//! delay of [`RateConverter::delay_ms`]. Runs on the async side, never on the
//! real-time thread.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType, WindowFunction, calculate_cutoff};

/// Rates a converter accepts on either side.
pub const RATES: [u32; 8] = [8000, 16000, 22050, 24000, 32000, 44100, 48000, 11025];

/// A mono i16 → i16 rate converter working in 20 ms blocks of the input rate.
pub struct RateConverter {
    from: u32,
    to: u32,
    resampler: Option<Async<f32>>,
    chunk: usize,
    pending: Vec<f32>,
    pending_len: usize,
    out_f32: Vec<f32>,
    out: Vec<i16>,
}

impl std::fmt::Debug for RateConverter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateConverter").field("from", &self.from).field("to", &self.to).finish()
    }
}

/// Why a converter cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResampleError {
    /// Not one of [`RATES`].
    UnsupportedRate(u32),
    /// rubato refused the ratio or the block size.
    Rubato(String),
}

impl std::fmt::Display for ResampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResampleError::UnsupportedRate(r) => write!(f, "unsupported rate {r} Hz (supported: {RATES:?})"),
            ResampleError::Rubato(e) => write!(f, "resampler: {e}"),
        }
    }
}

impl std::error::Error for ResampleError {}

impl RateConverter {
    /// A converter from `from` Hz to `to` Hz (equal rates pass through).
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        Self::build(from, to, true)
    }

    /// `nearest_when_exact`: take the sinc table's nearest point where it is
    /// exact (off only to compare against interpolation in tests).
    fn build(from: u32, to: u32, nearest_when_exact: bool) -> Result<Self, ResampleError> {
        for r in [from, to] {
            if !RATES.contains(&r) {
                return Err(ResampleError::UnsupportedRate(r));
            }
        }
        let chunk = (from / 50) as usize;
        let resampler = if from == to {
            None
        } else {
            // 64 taps is plenty for telephone speech and keeps a 20 ms block
            // well under 1 % of a core; the cutoff tracks the window so the
            // lower Nyquist frequency is respected (no aliasing on the way down).
            let window = WindowFunction::BlackmanHarris2;
            const OVERSAMPLING: u32 = 128;
            // Where every output sample falls on a point of the sinc table
            // (8 k <-> 16 k, 24 k -> 8 k, ...), the nearest point is exact and
            // costs half of interpolating between two.
            let exact = nearest_when_exact && (u64::from(from) * u64::from(OVERSAMPLING)) % u64::from(to) == 0;
            let params = SincInterpolationParameters {
                sinc_len: 64,
                f_cutoff: Some(calculate_cutoff(64, window)),
                oversampling_factor: OVERSAMPLING as usize,
                interpolation: if exact { SincInterpolationType::Nearest } else { SincInterpolationType::Linear },
                window,
            };
            let r = Async::<f32>::new_sinc(f64::from(to) / f64::from(from), 1.0, &params, chunk, 1, FixedAsync::Input)
                .map_err(|e| ResampleError::Rubato(e.to_string()))?;
            Some(r)
        };
        let max_out = resampler.as_ref().map_or(chunk, |r| r.output_frames_max());
        Ok(RateConverter {
            from,
            to,
            resampler,
            chunk,
            pending: vec![0.0; chunk],
            pending_len: 0,
            out_f32: vec![0.0; max_out],
            out: vec![0; max_out.max(chunk)],
        })
    }

    pub fn from_rate(&self) -> u32 {
        self.from
    }

    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// The input block size (20 ms at the input rate).
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// The resampler's group delay in milliseconds (0 when passing through).
    pub fn delay_ms(&self) -> f64 {
        self.resampler.as_ref().map_or(0.0, |r| r.output_delay() as f64 * 1000.0 / f64::from(self.to))
    }

    /// Feeds `input` (any length); for every complete 20 ms input block, calls
    /// `sink` with the converted samples. Never allocates.
    pub fn push(&mut self, mut input: &[i16], mut sink: impl FnMut(&[i16])) {
        while !input.is_empty() {
            let take = (self.chunk - self.pending_len).min(input.len());
            for (d, &s) in self.pending[self.pending_len..self.pending_len + take].iter_mut().zip(&input[..take]) {
                *d = f32::from(s);
            }
            self.pending_len += take;
            input = &input[take..];
            if self.pending_len == self.chunk {
                self.pending_len = 0;
                let n = self.convert_pending();
                sink(&self.out[..n]);
            }
        }
    }

    /// Converts exactly one 20 ms block (`input.len() == chunk()`) and returns
    /// the output (its length varies by ±1 around the ratio). Panics on another
    /// length, or if a partial block is pending from [`push`](Self::push).
    pub fn process_block(&mut self, input: &[i16]) -> &[i16] {
        assert_eq!(input.len(), self.chunk, "process_block takes one 20 ms block");
        assert_eq!(self.pending_len, 0, "process_block after a partial push");
        for (d, &s) in self.pending.iter_mut().zip(input) {
            *d = f32::from(s);
        }
        let n = self.convert_pending();
        &self.out[..n]
    }

    /// Ends a stretch of audio (an agent's turn): a pending partial block is
    /// padded with silence and converted, so nothing of it waits for the next
    /// push. Never allocates.
    pub fn finish(&mut self, mut sink: impl FnMut(&[i16])) {
        if self.pending_len == 0 {
            return;
        }
        self.pending[self.pending_len..].fill(0.0);
        self.pending_len = 0;
        let n = self.convert_pending();
        sink(&self.out[..n]);
    }

    /// Drops pending input and the resampler's history (after a flush).
    pub fn reset(&mut self) {
        self.pending_len = 0;
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
    }

    fn convert_pending(&mut self) -> usize {
        let Some(r) = self.resampler.as_mut() else {
            for (d, &s) in self.out.iter_mut().zip(&self.pending) {
                *d = s as i16;
            }
            return self.chunk;
        };
        let frames_out = self.out_f32.len();
        let produced = {
            let input = InterleavedSlice::new(&self.pending[..], 1, self.chunk).expect("sized at construction");
            let mut output = InterleavedSlice::new_mut(&mut self.out_f32[..], 1, frames_out).expect("sized at construction");
            match r.process_into_buffer(&input, &mut output, None) {
                Ok((_, n)) => n,
                // Cannot happen with the buffers sized from the resampler itself;
                // silence is the safe answer on a phone line.
                Err(_) => 0,
            }
        };
        for (d, &s) in self.out.iter_mut().zip(&self.out_f32[..produced]) {
            *d = s.round().clamp(-32768.0, 32767.0) as i16;
        }
        produced
    }
}

/// Resamples a whole mono recording from `from` Hz (any rate) to `to` Hz,
/// aligned with the input (the resampler's delay is removed). A longer,
/// 128-tap Blackman-Harris sinc than [`RateConverter`]'s: this runs once per
/// file, not per 20 ms, and its cutoff sits below the lower Nyquist
/// frequency, so downsampling does not alias.
pub fn resample_all(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let err = |e: &dyn std::fmt::Display| ResampleError::Rubato(e.to_string());
    let params = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2);
    let mut resampler =
        Async::<f32>::new_sinc(f64::from(to) / f64::from(from), 1.0, &params, 1024, 1, FixedAsync::Input).map_err(|e| err(&e))?;
    let adapter = InterleavedSlice::new(input, 1, input.len()).map_err(|e| err(&e))?;
    let out = resampler.process_all(&adapter, input.len(), None).map_err(|e| err(&e))?;
    Ok(out.take_data())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f32, seconds: f32) -> Vec<i16> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| (8000.0 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin()) as i16)
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn keeps_length_and_level_for_every_agent_rate() {
        for from in [8000, 16000, 22050, 24000, 44100] {
            for to in [8000, 16000] {
                let mut c = RateConverter::new(from, to).unwrap();
                let input = tone(from, 440.0, 2.0);
                let mut out = Vec::new();
                // Odd-sized pieces, as a network delivers them.
                for piece in input.chunks(333) {
                    c.push(piece, |o| out.extend_from_slice(o));
                }
                let expect = to as usize * 2;
                assert!(out.len().abs_diff(expect) <= 8, "{from}->{to}: {} samples", out.len());
                let level = rms(&out[out.len() / 4..]);
                assert!((level - 8000.0 / 2f64.sqrt()).abs() < 300.0, "{from}->{to}: rms {level}");
            }
        }
    }

    #[test]
    fn the_nearest_table_point_is_exact_where_it_is_chosen() {
        for (from, to) in [(8000, 16000), (16000, 8000), (24000, 8000), (48000, 16000)] {
            let input: Vec<i16> = tone(from, 440.0, 1.0).iter().zip(tone(from, 1270.0, 1.0)).map(|(a, b)| a / 2 + b / 2).collect();
            let (mut fast, mut exact) = (RateConverter::new(from, to).unwrap(), RateConverter::build(from, to, false).unwrap());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            fast.push(&input, |o| a.extend_from_slice(o));
            exact.push(&input, |o| b.extend_from_slice(o));
            assert_eq!(a.len(), b.len());
            let worst = a.iter().zip(&b).map(|(x, y)| (i32::from(*x) - i32::from(*y)).abs()).max().unwrap_or(0);
            assert!(worst <= 2, "{from}->{to}: differs from interpolation by {worst}");
        }
    }

    #[test]
    fn filters_what_the_lower_rate_cannot_carry() {
        let mut c = RateConverter::new(16000, 8000).unwrap();
        let mut out = Vec::new();
        c.push(&tone(16000, 6000.0, 1.0), |o| out.extend_from_slice(o));
        assert!(rms(&out[1000..]) < 100.0, "6 kHz leaked through: {}", rms(&out[1000..]));
    }

    #[test]
    fn blocks_and_pass_through() {
        let mut c = RateConverter::new(8000, 16000).unwrap();
        let block = tone(8000, 300.0, 0.02);
        let n = c.process_block(&block).len();
        assert!((300..=324).contains(&n), "{n}");
        assert!(c.delay_ms() > 0.0 && c.delay_ms() < 5.0, "{}", c.delay_ms());
        let mut same = RateConverter::new(8000, 8000).unwrap();
        assert_eq!(same.process_block(&block), &block[..]);
        assert!(RateConverter::new(8000, 12345).is_err());
    }

    #[test]
    fn finish_flushes_a_partial_block_padded_with_silence() {
        let mut c = RateConverter::new(16000, 8000).unwrap();
        let mut out = Vec::new();
        c.push(&[1000; 500], |o| out.extend_from_slice(o)); // one block of 320, 180 pending
        assert!((155..=165).contains(&out.len()), "{}", out.len());
        c.finish(|o| out.extend_from_slice(o));
        assert!((315..=325).contains(&out.len()), "the partial block came out: {}", out.len());
        let before = out.len();
        c.finish(|o| out.extend_from_slice(o));
        assert_eq!(out.len(), before, "nothing pending, nothing out");
    }
}
