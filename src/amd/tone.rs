//! Tones: a Goertzel filter bank over the last 20 ms (Hann window, one bin
//! every 25 Hz across the beep range), a tonality measure per 10 ms frame, and a
//! tracker that turns steady tonal frames into voicemail beeps (one tone, a
//! sequence of tones, or two at once) and special information tones (SIT:
//! ~950, ~1400, ~1800 Hz in sequence).
//!
//! Promises: a frame is tonal only when one or two spectral peaks hold at least
//! `tone_purity` of its energy (speech spreads its energy over many harmonics
//! and formants, noise over everything) and they are not partials of one
//! harmonic series (a note of music, a held vowel); a beep needs `beep_min_ms` of steady
//! frequency; nothing allocates after `new`.

use super::config::AmdConfig;
use super::vad::{FRAME, FRAME_MS, RATE, level_dbfs};

/// Analysis window: two frames.
const WINDOW: usize = 2 * FRAME;
/// Bin spacing of the bank.
const BIN_STEP_HZ: f32 = 25.0;
/// Two peaks closer than this are one tone.
const DUAL_MIN_SEPARATION_HZ: f32 = 150.0;
/// The weaker of two simultaneous tones must hold this share of the energy.
const DUAL_MIN_SHARE: f32 = 0.2;
/// A peak with this share of the energy at a harmonic relation to the main
/// one (×2, ×½, ×3/2, ×⅔, ×3, ×⅓) makes the frame a voice's or an
/// instrument's, not a beep's: an electronic beep is a pure sine (a µ-law
/// hop puts its second harmonic ~40 dB down), a note or a vowel is a
/// harmonic series. Found by the augmented benchmark: music in the room
/// was taken for beeps and hung up on people.
const HARMONIC_SHARE: f32 = 0.03;
const HARMONIC_RATIOS: [f32; 6] = [2.0, 0.5, 1.5, 2.0 / 3.0, 3.0, 1.0 / 3.0];
/// The Hann window's main lobe over 20 ms: bins this near a peak hold its
/// own leakage, not another partial.
const MAIN_LOBE_HZ: f32 = 110.0;

/// Non-tonal frames tolerated inside one tone (a junction between two tones).
const MAX_DROPOUT_FRAMES: u32 = 2;
/// Longest gap between two tones of a sequence.
const SEQUENCE_GAP_MS: u32 = 40;
/// Shortest part of a tone sequence.
const SEQUENCE_PART_MS: u32 = 60;
/// Two tones of a sequence differ at least this much (a voice's glide moves in
/// small steps).
const SEQUENCE_MIN_STEP_HZ: f32 = 150.0;

/// SIT frequency bands (ITU-T E.180: 913.8/985.2, 1370.6/1428.5, 1776.7 Hz).
const SIT_BANDS: [(f32, f32); 3] = [(880.0, 1020.0), (1340.0, 1460.0), (1740.0, 1820.0)];
/// Longest SIT segment (380 ms nominal, with slack).
const SIT_MAX_SEGMENT_MS: u32 = 450;
/// How long the second SIT tone must last before the SIT verdict.
const SIT_CONFIRM_MS: u32 = 100;

/// One frame's spectral peak(s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tonal {
    pub freq_hz: f32,
    /// The second of two simultaneous tones.
    pub second_hz: Option<f32>,
    /// Share of the frame's energy in the peak(s), 0..1.
    pub purity: f32,
}

/// The Goertzel bank.
#[derive(Debug, Clone)]
pub struct ToneAnalyzer {
    history: [f32; WINDOW],
    window: Vec<f32>,
    windowed: Vec<f32>,
    freqs: Vec<f32>,
    coefs: Vec<f32>,
    s1: Vec<f32>,
    s2: Vec<f32>,
    power: Vec<f32>,
    /// Turns |X(f)|² / windowed energy into the share of a pure tone (1.0).
    norm: f32,
    purity: f32,
    min_dbfs: f32,
    /// Two peaks closer than this are one tone.
    dual_separation_hz: f32,
}

impl ToneAnalyzer {
    pub fn new(config: &AmdConfig) -> Self {
        let window: Vec<f32> = (0..WINDOW).map(|n| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * n as f32 / WINDOW as f32).cos()).collect();
        let sum: f32 = window.iter().sum();
        let sum_sq: f32 = window.iter().map(|w| w * w).sum();
        let mut freqs = Vec::new();
        let mut f = config.tone_min_hz;
        while f <= config.tone_max_hz + 0.01 {
            freqs.push(f);
            f += BIN_STEP_HZ;
        }
        let coefs = freqs.iter().map(|f| 2.0 * (2.0 * std::f32::consts::PI * f / RATE as f32).cos()).collect();
        let bins = freqs.len();
        ToneAnalyzer {
            history: [0.0; WINDOW],
            window,
            windowed: vec![0.0; WINDOW],
            freqs,
            coefs,
            s1: vec![0.0; bins],
            s2: vec![0.0; bins],
            power: vec![0.0; bins],
            norm: 2.0 * sum_sq / (sum * sum),
            purity: config.tone_purity,
            min_dbfs: config.tone_min_dbfs,
            dual_separation_hz: DUAL_MIN_SEPARATION_HZ,
        }
    }

    /// The same bank, reporting two simultaneous tones as close as `hz` apart
    /// (the answer detector keeps 150 Hz; call-progress tones such as 480+620 Hz
    /// are closer).
    pub fn with_dual_separation(mut self, hz: f32) -> Self {
        self.dual_separation_hz = hz;
        self
    }

    /// Takes one high-passed 10 ms frame; returns its peak(s) if the last 20 ms are tonal.
    pub fn frame(&mut self, frame: &[f32]) -> Option<Tonal> {
        let n = frame.len().min(FRAME);
        self.history.copy_within(n.., 0);
        self.history[WINDOW - n..].copy_from_slice(&frame[..n]);
        if level_dbfs(&self.history) < self.min_dbfs {
            return None;
        }
        let mut energy = 0.0;
        for ((o, x), w) in self.windowed.iter_mut().zip(&self.history).zip(&self.window) {
            *o = x * w;
            energy += *o * *o;
        }
        if energy <= 0.0 {
            return None;
        }
        self.s1.fill(0.0);
        self.s2.fill(0.0);
        for &x in &self.windowed {
            for ((s1, s2), c) in self.s1.iter_mut().zip(self.s2.iter_mut()).zip(&self.coefs) {
                let s0 = x + c * *s1 - *s2;
                *s2 = *s1;
                *s1 = s0;
            }
        }
        let scale = self.norm / energy;
        for (((p, s1), s2), c) in self.power.iter_mut().zip(&self.s1).zip(&self.s2).zip(&self.coefs) {
            *p = (s1 * s1 + s2 * s2 - c * s1 * s2) * scale;
        }
        let (k1, r1) = argmax(&self.power, |_| true)?;
        if k1 == 0 || k1 + 1 == self.power.len() {
            // The peak is at an edge of the range, so it lies outside it (a
            // voice's low harmonics, hum): not a beep.
            return None;
        }
        let f1 = self.refine(k1);
        if r1 >= self.purity {
            return (!self.harmonic(f1, None)).then_some(Tonal { freq_hz: f1, second_hz: None, purity: r1.min(1.0) });
        }
        let freqs = &self.freqs;
        let separation = self.dual_separation_hz;
        let (k2, r2) = argmax(&self.power, |k| (freqs[k] - f1).abs() >= separation)?;
        if r2 >= DUAL_MIN_SHARE && r1 + r2 >= self.purity {
            let f2 = self.refine(k2);
            return (!self.harmonic(f1, Some(f2))).then_some(Tonal { freq_hz: f1, second_hz: Some(f2), purity: (r1 + r2).min(1.0) });
        }
        None
    }

    /// True if the peak(s) `f1` (and `f2`) are partials of a harmonic
    /// series: the two at a harmonic ratio, or a bin at a harmonic relation
    /// to either, outside their main lobes, holding [`HARMONIC_SHARE`].
    fn harmonic(&self, f1: f32, f2: Option<f32>) -> bool {
        let near_ratio = |a: f32, b: f32| HARMONIC_RATIOS.iter().any(|r| (b / a - r).abs() <= 0.02 * r);
        if f2.is_some_and(|f2| near_ratio(f1, f2)) {
            return true;
        }
        let (lo, hi) = (self.freqs[0], self.freqs[self.freqs.len() - 1]);
        let peaks = [Some(f1), f2];
        let own_lobe = |f: f32| peaks.iter().flatten().any(|p| (f - p).abs() < MAIN_LOBE_HZ);
        peaks.iter().flatten().any(|&f| {
            HARMONIC_RATIOS.iter().any(|ratio| {
                let target = f * ratio;
                if target < lo || target > hi || own_lobe(target) {
                    return false;
                }
                let k = ((target - lo) / BIN_STEP_HZ).round() as usize;
                let near = k.saturating_sub(1)..=(k + 1).min(self.power.len() - 1);
                self.power[near].iter().any(|&p| p >= HARMONIC_SHARE)
            })
        })
    }

    /// The frequency of the peak at bin `k`, interpolated between its neighbours
    /// (a parabola through the log powers).
    fn refine(&self, k: usize) -> f32 {
        let f = self.freqs[k];
        if k == 0 || k + 1 >= self.power.len() {
            return f;
        }
        let ln = |p: f32| p.max(1e-12).ln();
        let (a, b, c) = (ln(self.power[k - 1]), ln(self.power[k]), ln(self.power[k + 1]));
        let denominator = a - 2.0 * b + c;
        if denominator >= 0.0 {
            return f;
        }
        f + (0.5 * (a - c) / denominator).clamp(-0.5, 0.5) * BIN_STEP_HZ
    }
}

fn argmax(values: &[f32], keep: impl Fn(usize) -> bool) -> Option<(usize, f32)> {
    values.iter().enumerate().filter(|(k, _)| keep(*k)).fold(None, |best: Option<(usize, f32)>, (k, &v)| match best {
        Some((_, b)) if b >= v => best,
        _ => Some((k, v)),
    })
}

/// What the tracker found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToneEvent {
    Beep { start_ms: u32 },
    Sit { start_ms: u32 },
}

/// One steady tone, in frames since the start.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Mean frequency of its frames.
    freq: f32,
    second: Option<f32>,
    start: u32,
    /// Last tonal frame.
    last: u32,
}

impl Segment {
    fn len_ms(&self) -> u32 {
        (self.last + 1 - self.start) * FRAME_MS
    }

    fn matches(&self, t: &Tonal, tol: f32) -> bool {
        let near = |f: f32| (f - self.freq).abs() <= tol || self.second.is_some_and(|s| (f - s).abs() <= tol);
        near(t.freq_hz) || t.second_hz.is_some_and(near)
    }

    fn sit_band(&self) -> Option<usize> {
        SIT_BANDS.iter().position(|(lo, hi)| (*lo..=*hi).contains(&self.freq) && self.second.is_none())
    }
}

/// Turns tonal frames into beeps and SIT.
#[derive(Debug, Clone)]
pub struct ToneTracker {
    tolerance_hz: f32,
    beep_min_ms: u32,
    sit_enabled: bool,
    current: Option<Segment>,
    previous: Option<Segment>,
}

impl ToneTracker {
    pub fn new(config: &AmdConfig) -> Self {
        ToneTracker {
            tolerance_hz: config.tone_tolerance_hz,
            beep_min_ms: config.beep_min_ms,
            sit_enabled: config.sit_enabled,
            current: None,
            previous: None,
        }
    }

    /// True while a tone is being followed (its frames are not speech).
    pub fn in_tone(&self) -> bool {
        self.current.is_some()
    }

    /// Takes frame number `index` and its analysis; returns an event once a
    /// beep or SIT is recognised (it may come again on later frames).
    pub fn frame(&mut self, index: u32, tonal: Option<Tonal>) -> Option<ToneEvent> {
        match (self.current, tonal) {
            (Some(mut seg), Some(t)) if seg.matches(&t, self.tolerance_hz) => {
                let n = (index - seg.start) as f32;
                if (t.freq_hz - seg.freq).abs() <= self.tolerance_hz {
                    seg.freq = (seg.freq * n + t.freq_hz) / (n + 1.0);
                }
                seg.last = index;
                if seg.second.is_none() {
                    seg.second = t.second_hz;
                }
                self.current = Some(seg);
            }
            (current, Some(t)) => {
                if let Some(seg) = current {
                    if let Some(event) = self.close(seg) {
                        self.current = Some(Segment { freq: t.freq_hz, second: t.second_hz, start: index, last: index });
                        return Some(event);
                    }
                }
                self.current = Some(Segment { freq: t.freq_hz, second: t.second_hz, start: index, last: index });
            }
            (Some(seg), None) => {
                if index.saturating_sub(seg.last) > MAX_DROPOUT_FRAMES {
                    self.current = None;
                    if let Some(event) = self.close(seg) {
                        return Some(event);
                    }
                }
            }
            (None, None) => {
                // A SIT first tone waits SEQUENCE_GAP_MS for its second tone, then is a beep.
                if let Some(prev) = self.previous {
                    if self.is_sit_candidate(&prev) && index.saturating_sub(prev.last) * FRAME_MS > SEQUENCE_GAP_MS {
                        self.previous = None;
                        if prev.len_ms() >= self.beep_min_ms {
                            return Some(ToneEvent::Beep { start_ms: prev.start * FRAME_MS });
                        }
                    }
                }
            }
        }
        let seg = self.current?;
        let linked = self.previous.filter(|p| {
            seg.start.saturating_sub(p.last + 1) * FRAME_MS <= SEQUENCE_GAP_MS
                && p.len_ms() >= SEQUENCE_PART_MS
                && seg.len_ms() >= SEQUENCE_PART_MS
                && (p.freq - seg.freq).abs() >= SEQUENCE_MIN_STEP_HZ
        });
        if self.sit_enabled {
            if let Some(p) = linked {
                if p.sit_band() == Some(0) && seg.sit_band() == Some(1) && seg.len_ms() >= SIT_CONFIRM_MS {
                    return Some(ToneEvent::Sit { start_ms: p.start * FRAME_MS });
                }
            }
            if self.is_sit_candidate(&seg) && seg.len_ms() <= SIT_MAX_SEGMENT_MS {
                return None;
            }
            if linked.is_some_and(|p| p.sit_band() == Some(0) && seg.sit_band() == Some(1)) {
                return None;
            }
        }
        if seg.len_ms() >= self.beep_min_ms {
            return Some(ToneEvent::Beep { start_ms: seg.start * FRAME_MS });
        }
        if let Some(p) = linked {
            if (seg.last + 1 - p.start) * FRAME_MS >= self.beep_min_ms {
                return Some(ToneEvent::Beep { start_ms: p.start * FRAME_MS });
            }
        }
        None
    }

    fn is_sit_candidate(&self, seg: &Segment) -> bool {
        self.sit_enabled && seg.sit_band() == Some(0)
    }

    /// A segment ended: remember it; a SIT first tone that ran long is a beep.
    fn close(&mut self, seg: Segment) -> Option<ToneEvent> {
        self.previous = Some(seg);
        if self.is_sit_candidate(&seg) && seg.len_ms() > SIT_MAX_SEGMENT_MS {
            return Some(ToneEvent::Beep { start_ms: seg.start * FRAME_MS });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freqs: &[f32], amp: f32, start: usize, n: usize) -> Vec<f32> {
        (start..start + n)
            .map(|i| freqs.iter().map(|f| amp * (2.0 * std::f32::consts::PI * f * i as f32 / RATE as f32).sin()).sum())
            .collect()
    }

    /// Vowel-like: a 120–160 Hz gliding pitch with 25 harmonics shaped by two formants.
    fn voice_like(start: usize, n: usize) -> Vec<f32> {
        let mut phase = [0.0f32; 26];
        let mut out = Vec::with_capacity(n);
        for i in 0..start + n {
            let t = i as f32 / RATE as f32;
            let f0 = 140.0 + 20.0 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            let mut x = 0.0;
            for (h, ph) in phase.iter_mut().enumerate().skip(1) {
                let f = f0 * h as f32;
                *ph += 2.0 * std::f32::consts::PI * f / RATE as f32;
                let formant = |c: f32, bw: f32| 1.0 / (1.0 + ((f - c) / bw).powi(2));
                x += 3000.0 * (formant(600.0, 150.0) + 0.6 * formant(1200.0, 200.0) + 0.05) * ph.sin();
            }
            if i >= start {
                out.push(x);
            }
        }
        out
    }

    fn run(config: &AmdConfig, signal: &[f32]) -> (Vec<Option<Tonal>>, Option<ToneEvent>) {
        let mut analyzer = ToneAnalyzer::new(config);
        let mut tracker = ToneTracker::new(config);
        let mut tonal = Vec::new();
        let mut first = None;
        for (i, frame) in signal.chunks_exact(FRAME).enumerate() {
            let t = analyzer.frame(frame);
            tonal.push(t);
            let e = tracker.frame(i as u32, t);
            first = first.or(e);
        }
        (tonal, first)
    }

    #[test]
    fn goertzel_finds_a_1khz_beep() {
        let config = AmdConfig::default();
        let mut signal = vec![0.0; 4000];
        signal.extend(sine(&[1000.0], 5000.0, 0, 4000));
        signal.extend(vec![0.0; 800]);
        let (tonal, event) = run(&config, &signal);
        let t = tonal[60].expect("tonal in the middle of the beep");
        assert!((t.freq_hz - 1000.0).abs() <= 12.5, "{t:?}");
        assert!(t.purity > 0.9);
        assert!(tonal[..49].iter().all(Option::is_none));
        match event {
            Some(ToneEvent::Beep { start_ms }) => assert!((490..=510).contains(&start_ms), "{start_ms}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn beep_frequencies_across_the_range_are_found() {
        let config = AmdConfig::default();
        for f in [425.0, 440.0, 700.0, 1013.0, 1400.0, 1950.0] {
            // 300 ms, then silence (a tone in the first SIT band waits for its end).
            let mut signal = sine(&[f], 3000.0, 0, 2400);
            signal.extend(vec![0.0; 800]);
            let (_, event) = run(&config, &signal);
            assert!(matches!(event, Some(ToneEvent::Beep { .. })), "{f} Hz: {event:?}");
        }
    }

    #[test]
    fn a_tone_shorter_than_beep_min_is_not_a_beep() {
        let config = AmdConfig::default();
        let mut signal = sine(&[800.0], 3000.0, 0, 800);
        signal.extend(vec![0.0; 1600]);
        assert_eq!(run(&config, &signal).1, None);
    }

    #[test]
    fn speech_like_sound_and_noise_are_not_tones() {
        let config = AmdConfig::default();
        let (tonal, event) = run(&config, &voice_like(0, 16000));
        assert_eq!(event, None);
        assert!(tonal.iter().filter(|t| t.is_some()).count() < tonal.len() / 10);
        let mut seed = 3u32;
        let noise: Vec<f32> = (0..16000)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                3000.0 * ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
            })
            .collect();
        let (tonal, event) = run(&config, &noise);
        assert_eq!(event, None);
        assert!(tonal.iter().all(Option::is_none));
    }

    /// Music in the room: a note is a harmonic series, a beep a pure sine
    /// (also after a G.711 hop, whose distortion is ~40 dB down).
    #[test]
    fn a_note_with_harmonics_is_not_a_beep_and_a_pure_tone_still_is() {
        let config = AmdConfig::default();
        for f in [392.0, 440.0, 523.0, 659.0] {
            let note: Vec<f32> = (0..4000)
                .map(|i| {
                    let w = 2.0 * std::f32::consts::PI * f * i as f32 / RATE as f32;
                    3000.0 * (w.sin() + 0.5 * (2.0 * w).sin() + 0.25 * (3.0 * w).sin())
                })
                .collect();
            let (_, event) = run(&config, &note);
            assert!(event.is_none(), "a {f} Hz note taken for a beep: {event:?}");
            let pure: Vec<f32> = sine(&[f * 2.0], 3000.0, 0, 4000)
                .into_iter()
                .map(|x| f32::from(crate::audio::g711::ulaw_decode(crate::audio::g711::ulaw_encode(x as i16))))
                .collect();
            let (_, event) = run(&config, &pure);
            assert!(matches!(event, Some(ToneEvent::Beep { .. })), "a pure {} Hz tone after µ-law: {event:?}", f * 2.0);
        }
        // Two tones a fifth apart (a chord's, or a note's 2nd and 3rd
        // partials) are no dual beep either.
        let (_, event) = run(&config, &sine(&[600.0, 900.0], 2000.0, 0, 4000));
        assert!(event.is_none(), "{event:?}");
    }

    #[test]
    fn two_tones_at_once_and_in_sequence_are_beeps() {
        let config = AmdConfig::default();
        let (_, event) = run(&config, &sine(&[700.0, 1800.0], 2000.0, 0, 2400));
        assert!(matches!(event, Some(ToneEvent::Beep { start_ms: 0..=20 })), "{event:?}");
        // 100 ms of 1000 Hz then 100 ms of 440 Hz: neither alone is beep_min_ms long.
        let mut signal = vec![0.0; 800];
        signal.extend(sine(&[1000.0], 3000.0, 0, 800));
        signal.extend(sine(&[440.0], 3000.0, 800, 800));
        signal.extend(vec![0.0; 1600]);
        let (_, event) = run(&config, &signal);
        assert!(matches!(event, Some(ToneEvent::Beep { start_ms: 90..=110 })), "{event:?}");
    }

    #[test]
    fn sit_sequence_is_sit_not_beep() {
        let config = AmdConfig::default();
        let mut signal = vec![0.0; 800];
        let mut at = 0;
        for (f, ms) in [(985.2, 380), (1428.5, 274), (1776.7, 380)] {
            let n = ms * 8;
            signal.extend(sine(&[f], 4000.0, at, n));
            at += n;
        }
        signal.extend(vec![0.0; 4000]);
        let (_, event) = run(&config, &signal);
        assert!(matches!(event, Some(ToneEvent::Sit { start_ms: 90..=110 })), "{event:?}");
        // A long 1 kHz beep (in the first SIT band) is still a beep.
        let (_, event) = run(&config, &sine(&[1000.0], 3000.0, 0, 8000));
        assert!(matches!(event, Some(ToneEvent::Beep { start_ms: 0..=10 })), "{event:?}");
        // A short one followed by silence too.
        let mut signal = sine(&[1000.0], 3000.0, 0, 2400);
        signal.extend(vec![0.0; 2400]);
        let (_, event) = run(&config, &signal);
        assert!(matches!(event, Some(ToneEvent::Beep { start_ms: 0..=10 })), "{event:?}");
    }
}
