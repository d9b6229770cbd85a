//! Early media: what the network played before any answer (a 18x response with
//! SDP): ringback, a busy tone, special information tones (SIT), an
//! announcement, other tones, or nothing. For the call record only: early media
//! never connects the agent, and nothing here decides the call.
//!
//! The same front end as the answer detector (high-pass, level, adaptive noise
//! floor, the Goertzel bank of [`super::tone`], over 10 ms frames and a 20 ms
//! window), then a tracker that cuts tonal frames into steady segments and
//! reads them as a cadence (ringback, busy) or a SIT triple, and counts the
//! non-tonal audio (speech, music) apart.
//!
//! Promises: [`EarlyMedia::push`] takes any number of 8 kHz samples (a call
//! delivers 20 ms frames), never allocates, and gives the same result whatever
//! the chunking; [`EarlyMedia::report`] can be called at any time (it also
//! never allocates) and describes everything heard so far; times are
//! milliseconds from the first sample pushed.

use serde::Serialize;

use super::config::AmdConfig;
use super::tone::{Tonal, ToneAnalyzer};
use super::vad::{FRAME_MS, FrontEnd};
use crate::section::SectionError;

/// The bank searched for call-progress tones (dial/ringback 350–480 Hz, busy
/// 480+620 Hz, SIT up to 1850 Hz).
const BANK_MIN_HZ: f32 = 300.0;
const BANK_MAX_HZ: f32 = 2000.0;
/// Two simultaneous tones this far apart are reported as two (480+620 Hz busy);
/// closer pairs (440+480 Hz ringback) are one peak at the 20 ms window.
const DUAL_SEPARATION_HZ: f32 = 100.0;
/// A frame continues a tone within this distance of its mean frequency.
const SEGMENT_TOLERANCE_HZ: f32 = 25.0;
/// The same below `CADENCE_MAX_HZ`, where call-progress pairs 40–50 Hz apart
/// (440+480, 400+450 Hz) beat inside the window.
const LOW_TONE_TOLERANCE_HZ: f32 = 60.0;
/// Non-tonal frames tolerated inside one tone.
const MAX_DROPOUT_FRAMES: u32 = 2;
/// Shorter tonal runs (junctions between tones, a tonal vowel) are not kept.
const MIN_SEGMENT_MS: u32 = 60;
/// Shorter tonal runs are not tones (call-progress tones last 250 ms or more;
/// a voice's held vowel can be tonal for 100–160 ms).
const MIN_BURST_MS: u32 = 180;
/// Two bursts belong to one cadence when their frequencies are this close.
const CADENCE_SAME_HZ: f32 = 50.0;

/// SIT bands: first, second and third tone (Telcordia 913.8/985.2,
/// 1370.6/1428.5, 1776.7 Hz; ITU-T E.180 950/1400/1800 ±50 Hz).
const SIT_BANDS: [(f32, f32); 3] = [(880.0, 1020.0), (1330.0, 1470.0), (1730.0, 1850.0)];
/// Between the low and the high frequency of the first and second tone.
const SIT_SPLIT_HZ: [f32; 2] = [949.5, 1399.6];
/// A SIT segment lasts 274 or 380 ms (ITU: 330 ± 70 ms); measured with slack.
const SIT_SEGMENT_MS: (u32, u32) = (180, 500);
/// Between short (274 ms) and long (380 ms).
const SIT_SHORT_LONG_SPLIT_MS: u32 = 327;
/// Longest silence between SIT segments (≤ 30 ms specified, plus the frames a
/// junction costs).
const SIT_MAX_GAP_MS: u32 = 60;

/// Ringback: a tone in this band...
const RINGBACK_BAND_HZ: (f32, f32) = (370.0, 500.0);
/// ...on for this long (Europe 1 s, US 2 s, France 1.5 s)...
const RINGBACK_MIN_ON_MS: u32 = 600;
/// ...or repeated with an off time this long (UK 0.4+0.2+0.4 s on, 2 s off).
const RINGBACK_MIN_OFF_MS: u32 = 1000;
/// Busy / congestion: bursts and gaps of this length (0.25–0.5 s)...
const BUSY_ON_OFF_MS: (u32, u32) = (180, 700);
/// ...at least this many on-off-on cycles, all below this frequency.
const BUSY_MIN_CYCLES: u32 = 2;
const CADENCE_MAX_HZ: f32 = 700.0;
/// Speech (non-tonal audio, short tonal runs) adding up to this is an
/// announcement (speech or music).
const ANNOUNCEMENT_MIN_MS: u32 = 500;

/// What early media was, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EarlyKind {
    /// Special information tones (an announcement of a failure usually follows).
    Sit,
    /// At least `ANNOUNCEMENT_MIN_MS` (500 ms) of non-tonal audio: speech, or
    /// music (a personalised ringback tone sounds like this too).
    Announcement,
    /// A cadenced tone in the ringback band (370–500 Hz).
    Ringback,
    /// Short regular bursts (busy, congestion, reorder).
    Busy,
    /// Tones (of at least 180 ms) that fit none of the above.
    Tone,
    /// Nothing above the noise floor (or comfort noise).
    Silence,
}

impl EarlyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EarlyKind::Sit => "sit",
            EarlyKind::Announcement => "announcement",
            EarlyKind::Ringback => "ringback",
            EarlyKind::Busy => "busy",
            EarlyKind::Tone => "tone",
            EarlyKind::Silence => "silence",
        }
    }
}

/// Which special information tone (Telcordia GR-1162 / ANSI T1.401 codes, read
/// from the first two segments: low or high frequency, short or long).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SitCode {
    /// IC: low short, low short. Number changed or disconnected.
    Intercept,
    /// VC: high long, low short. Unassigned number.
    VacantCode,
    /// NC: _ long, high long. All circuits busy (try later).
    NoCircuit,
    /// RO: low short, high long, or high short, low long. Call failure, reorder.
    Reorder,
    /// IO: low long, low short. Ineffective other.
    IneffectiveOther,
    /// High short, high short: reserved, or a tone between the bands (ITU
    /// 950/1400 Hz sits on the split).
    Other,
}

/// One SIT as heard.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SitReport {
    pub code: SitCode,
    /// Start of the first segment.
    pub start_ms: u32,
    /// Measured frequency of each segment.
    pub freqs_hz: [f32; 3],
    /// Measured length of each segment.
    pub durations_ms: [u32; 3],
}

/// The dominant tone (the longest burst) and its cadence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ToneSummary {
    /// Frequency of the longest burst (one merged peak for tones under 100 Hz
    /// apart, e.g. about 460 Hz for 440+480 Hz).
    pub hz: f32,
    /// The second of two simultaneous tones, when resolved.
    pub second_hz: Option<f32>,
    /// Tone bursts of at least 180 ms (SIT segments included).
    pub bursts: u32,
    pub longest_on_ms: u32,
    /// Longest gap between two bursts of the same tone, once there were two.
    pub longest_off_ms: Option<u32>,
}

/// Everything heard so far. Serialises with snake_case names for the call record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EarlyMediaReport {
    pub kind: EarlyKind,
    pub sit: Option<SitReport>,
    /// Audio analysed.
    pub analysed_ms: u32,
    /// First tone or speech (None: silence throughout).
    pub first_audio_ms: Option<u32>,
    pub first_tone_ms: Option<u32>,
    pub first_speech_ms: Option<u32>,
    /// Non-tonal audio above the noise floor in bursts of at least
    /// `min_speech_ms`, and tonal runs too short for a tone (under 180 ms).
    pub speech_ms: u32,
    /// Inside tones (tonal frames and the short dropouts between them).
    pub tone_ms: u32,
    /// The rest.
    pub silence_ms: u32,
    pub tone: Option<ToneSummary>,
}

/// The early-media analyser for one call.
#[derive(Debug, Clone)]
pub struct EarlyMedia {
    front: FrontEnd,
    analyzer: ToneAnalyzer,
    frames: u32,
    min_speech_frames: u32,
    /// Current run of non-tonal active frames.
    run: u32,
    run_start: u32,
    speech_frames: u32,
    first_speech: Option<u32>,
    current: Option<Segment>,
    tones: Tones,
}

/// A tone being followed (frames).
#[derive(Debug, Clone, Copy)]
struct Segment {
    freq_sum: f32,
    freq_n: u32,
    /// Frames that continued the tone (the stronger peak may swap in a pair).
    frames: u32,
    second_sum: f32,
    second_n: u32,
    start: u32,
    last: u32,
}

impl Segment {
    fn new(index: u32, t: &Tonal) -> Segment {
        let mut seg = Segment { freq_sum: t.freq_hz, freq_n: 1, frames: 1, second_sum: 0.0, second_n: 0, start: index, last: index };
        if let Some(s) = t.second_hz {
            seg.add_second(s);
        }
        seg
    }

    fn freq(&self) -> f32 {
        self.freq_sum / self.freq_n as f32
    }

    /// The second tone, if it was there in at least two thirds of the frames
    /// (a pair closer than the window resolves shows a spurious one now and then).
    fn second(&self) -> Option<f32> {
        (self.second_n * 3 >= self.frames * 2).then(|| self.second_sum / self.second_n as f32)
    }

    fn add_second(&mut self, f: f32) {
        if self.second_n == 0 || (f - self.second_sum / self.second_n as f32).abs() <= SEGMENT_TOLERANCE_HZ {
            self.second_sum += f;
            self.second_n += 1;
        }
    }

    /// Adds frame `index` if it continues this tone.
    fn extend(&mut self, index: u32, t: &Tonal) -> bool {
        let f = self.freq();
        // Call-progress pairs 40–50 Hz apart beat inside the window, and the
        // peak jumps between the pair and its centre: a wider tolerance there.
        let tol = if f < CADENCE_MAX_HZ { LOW_TONE_TOLERANCE_HZ } else { SEGMENT_TOLERANCE_HZ };
        let near = |x: f32, y: f32, tol: f32| (x - y).abs() <= tol;
        let second = (self.second_n > 0).then(|| self.second_sum / self.second_n as f32);
        if near(t.freq_hz, f, tol) {
            self.freq_sum += t.freq_hz;
            self.freq_n += 1;
            if let Some(s) = t.second_hz.filter(|s| !near(*s, f, tol)) {
                self.add_second(s);
            }
        } else if let Some(s) = t.second_hz.filter(|s| near(*s, f, tol)) {
            // The pair's other tone was the stronger this time.
            self.freq_sum += s;
            self.freq_n += 1;
            self.add_second(t.freq_hz);
        } else if second.is_some_and(|s| near(t.freq_hz, s, SEGMENT_TOLERANCE_HZ)) {
            self.add_second(t.freq_hz);
        } else {
            return false;
        }
        self.frames += 1;
        self.last = index;
        true
    }

    fn closed(&self) -> Closed {
        Closed { freq: self.freq(), second: self.second(), start: self.start, end: self.last + 1 }
    }
}

/// A finished tone (frames, `end` exclusive).
#[derive(Debug, Clone, Copy)]
struct Closed {
    freq: f32,
    second: Option<f32>,
    start: u32,
    end: u32,
}

impl Closed {
    fn len_ms(&self) -> u32 {
        (self.end - self.start) * FRAME_MS
    }
}

/// What the finished tones add up to (copyable, so a report can close the open
/// tone on a copy).
#[derive(Debug, Clone, Copy, Default)]
struct Tones {
    /// Frames inside tone bursts (dropouts included), and where the first began.
    tone_frames: u32,
    first_tone: Option<u32>,
    /// Frames of tonal runs too short for a burst (a held vowel, a note of
    /// music): audio, counted with speech.
    short_frames: u32,
    first_short: Option<u32>,
    /// The last three kept segments, oldest first.
    recent: [Option<Closed>; 3],
    sit: Option<SitReport>,
    bursts: u32,
    longest: Option<Closed>,
    longest_off_ms: Option<u32>,
    previous_burst: Option<Closed>,
    /// Bursts in the ringback band.
    ringback_bursts: u32,
    /// on-off-on cycles of busy length below `CADENCE_MAX_HZ`.
    busy_cycles: u32,
}

impl Tones {
    fn close(&mut self, seg: Closed) {
        if seg.len_ms() < MIN_BURST_MS {
            self.short_frames += seg.end - seg.start;
            self.first_short.get_or_insert(seg.start);
        } else {
            self.tone_frames += seg.end - seg.start;
            self.first_tone.get_or_insert(seg.start);
        }
        if seg.len_ms() < MIN_SEGMENT_MS {
            return;
        }
        self.recent.rotate_left(1);
        self.recent[2] = Some(seg);
        if self.sit.is_none() {
            self.sit = match_sit(&self.recent);
        }
        if seg.len_ms() < MIN_BURST_MS {
            return;
        }
        self.bursts += 1;
        if self.longest.is_none_or(|l| seg.len_ms() > l.len_ms()) {
            self.longest = Some(seg);
        }
        if (RINGBACK_BAND_HZ.0..=RINGBACK_BAND_HZ.1).contains(&seg.freq) {
            self.ringback_bursts += 1;
        }
        if let Some(p) = self.previous_burst.filter(|p| (p.freq - seg.freq).abs() <= CADENCE_SAME_HZ) {
            let off_ms = (seg.start - p.end) * FRAME_MS;
            self.longest_off_ms = Some(self.longest_off_ms.map_or(off_ms, |o| o.max(off_ms)));
            let busy_len = |ms: u32| (BUSY_ON_OFF_MS.0..=BUSY_ON_OFF_MS.1).contains(&ms);
            if busy_len(p.len_ms()) && busy_len(seg.len_ms()) && busy_len(off_ms) && seg.freq < CADENCE_MAX_HZ {
                self.busy_cycles += 1;
            }
        }
        self.previous_burst = Some(seg);
    }

    fn ringback(&self) -> bool {
        let Some(l) = self.longest else { return false };
        let in_band = (RINGBACK_BAND_HZ.0..=RINGBACK_BAND_HZ.1).contains(&l.freq);
        in_band
            && (l.len_ms() >= RINGBACK_MIN_ON_MS
                || (self.ringback_bursts >= 2 && self.longest_off_ms.is_some_and(|o| o >= RINGBACK_MIN_OFF_MS)))
    }

    fn busy(&self) -> bool {
        self.busy_cycles >= BUSY_MIN_CYCLES
            && self.longest.is_some_and(|l| l.len_ms() <= BUSY_ON_OFF_MS.1)
            && self.longest_off_ms.is_some_and(|o| o < RINGBACK_MIN_OFF_MS)
    }
}

/// Three consecutive segments in the SIT bands with SIT lengths.
fn match_sit(recent: &[Option<Closed>; 3]) -> Option<SitReport> {
    let [Some(a), Some(b), Some(c)] = *recent else { return None };
    let segs = [a, b, c];
    for (seg, (lo, hi)) in segs.iter().zip(SIT_BANDS) {
        let len = seg.len_ms();
        if !(lo..=hi).contains(&seg.freq) || seg.second.is_some() || !(SIT_SEGMENT_MS.0..=SIT_SEGMENT_MS.1).contains(&len) {
            return None;
        }
    }
    if (b.start - a.end) * FRAME_MS > SIT_MAX_GAP_MS || (c.start - b.end) * FRAME_MS > SIT_MAX_GAP_MS {
        return None;
    }
    let high = |i: usize| segs[i].freq > SIT_SPLIT_HZ[i];
    let long = |i: usize| segs[i].len_ms() > SIT_SHORT_LONG_SPLIT_MS;
    let code = match (high(0), long(0), high(1), long(1)) {
        (false, false, false, false) => SitCode::Intercept,
        (true, true, false, false) => SitCode::VacantCode,
        (_, true, true, true) => SitCode::NoCircuit,
        (false, false, true, true) | (true, false, false, true) => SitCode::Reorder,
        (false, true, false, false) => SitCode::IneffectiveOther,
        _ => SitCode::Other,
    };
    let round = |f: f32| (f * 10.0).round() / 10.0;
    Some(SitReport { code, start_ms: a.start * FRAME_MS, freqs_hz: segs.map(|s| round(s.freq)), durations_ms: segs.map(|s| s.len_ms()) })
}

impl EarlyMedia {
    /// Uses the `[amd]` front-end keys (`highpass_hz`, `vad_*`,
    /// `noise_window_ms`, `min_speech_ms`, `tone_purity`, `tone_min_dbfs`); the
    /// tone plans are fixed by the standards.
    pub fn new(config: &AmdConfig) -> Result<EarlyMedia, SectionError> {
        config.validate()?;
        let bank = AmdConfig { tone_min_hz: BANK_MIN_HZ, tone_max_hz: BANK_MAX_HZ, ..config.clone() };
        Ok(EarlyMedia {
            front: FrontEnd::new(config, config.highpass_hz.min(BANK_MIN_HZ)),
            analyzer: ToneAnalyzer::new(&bank).with_dual_separation(DUAL_SEPARATION_HZ),
            frames: 0,
            min_speech_frames: config.min_speech_ms.div_ceil(FRAME_MS),
            run: 0,
            run_start: 0,
            speech_frames: 0,
            first_speech: None,
            current: None,
            tones: Tones::default(),
        })
    }

    /// Feeds 8 kHz mono samples (any number).
    pub fn push(&mut self, samples: &[i16]) {
        for &s in samples {
            if let Some(activity) = self.front.sample(s) {
                self.frame(activity.active);
            }
        }
    }

    /// Milliseconds of audio analysed.
    pub fn elapsed_ms(&self) -> u32 {
        self.frames * FRAME_MS
    }

    /// What was heard so far (the tone in progress counts as ended now).
    pub fn report(&self) -> EarlyMediaReport {
        let mut tones = self.tones;
        if let Some(seg) = self.current {
            tones.close(seg.closed());
        }
        let speech_ms = (self.speech_frames + tones.short_frames) * FRAME_MS;
        let tone_ms = tones.tone_frames * FRAME_MS;
        let kind = if tones.sit.is_some() {
            EarlyKind::Sit
        } else if speech_ms >= ANNOUNCEMENT_MIN_MS {
            EarlyKind::Announcement
        } else if tones.ringback() {
            EarlyKind::Ringback
        } else if tones.busy() {
            EarlyKind::Busy
        } else if tone_ms > 0 {
            EarlyKind::Tone
        } else {
            EarlyKind::Silence
        };
        let ms = |f: Option<u32>| f.map(|f| f * FRAME_MS);
        let first_speech = [self.first_speech, tones.first_short].into_iter().flatten().min();
        let first_audio = [tones.first_tone, first_speech].into_iter().flatten().min();
        let round = |f: f32| (f * 10.0).round() / 10.0;
        EarlyMediaReport {
            kind,
            sit: tones.sit,
            analysed_ms: self.elapsed_ms(),
            first_audio_ms: ms(first_audio),
            first_tone_ms: ms(tones.first_tone),
            first_speech_ms: ms(first_speech),
            speech_ms,
            tone_ms,
            silence_ms: self.elapsed_ms() - speech_ms - tone_ms,
            tone: tones.longest.map(|l| ToneSummary {
                hz: round(l.freq),
                second_hz: l.second.map(round),
                bursts: tones.bursts,
                longest_on_ms: l.len_ms(),
                longest_off_ms: tones.longest_off_ms,
            }),
        }
    }

    fn frame(&mut self, active: bool) {
        let index = self.frames;
        self.frames += 1;
        let tonal = self.analyzer.frame(self.front.frame());
        self.track(index, tonal);
        if tonal.is_some() {
            self.run = 0;
        } else if active {
            if self.run == 0 {
                self.run_start = index;
            }
            self.run += 1;
            if self.run == self.min_speech_frames {
                self.speech_frames += self.run;
                self.first_speech.get_or_insert(self.run_start);
            } else if self.run > self.min_speech_frames {
                self.speech_frames += 1;
            }
        } else {
            self.run = 0;
        }
    }

    fn track(&mut self, index: u32, tonal: Option<Tonal>) {
        match (&mut self.current, tonal) {
            (Some(seg), Some(t)) => {
                if !seg.extend(index, &t) {
                    let done = seg.closed();
                    self.current = Some(Segment::new(index, &t));
                    self.tones.close(done);
                }
            }
            (None, Some(t)) => self.current = Some(Segment::new(index, &t)),
            (Some(seg), None) => {
                if index - seg.last > MAX_DROPOUT_FRAMES {
                    let done = seg.closed();
                    self.current = None;
                    self.tones.close(done);
                }
            }
            (None, None) => {}
        }
    }
}

/// Analyses a whole recording of early media (8 kHz mono) in 20 ms frames, as
/// a call would feed it.
pub fn analyse(config: &AmdConfig, samples: &[i16]) -> Result<EarlyMediaReport, SectionError> {
    let mut early = EarlyMedia::new(config)?;
    for frame in samples.chunks(super::CALL_FRAME) {
        early.push(frame);
    }
    Ok(early.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: usize = 8000;

    /// Writes `ms` of the sum of `freqs` (each at `amp`), continuing the phase.
    fn tones(out: &mut Vec<i16>, freqs: &[f32], ms: usize, amp: f32) {
        let start = out.len();
        for i in start..start + ms * RATE / 1000 {
            let t = i as f32 / RATE as f32;
            let x: f32 = freqs.iter().map(|f| amp * (2.0 * std::f32::consts::PI * f * t).sin()).sum();
            out.push(x as i16);
        }
    }

    /// Line noise at about -60 dBFS.
    fn quiet(out: &mut Vec<i16>, ms: usize) {
        let mut seed = out.len() as u32 | 1;
        for _ in 0..ms * RATE / 1000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            out.push(((seed >> 16) as i16 as i32 / 1000) as i16);
        }
    }

    /// Speech-like: a gliding voiced sound with formants and noise, in
    /// syllables of 150–250 ms with short gaps.
    fn talk(out: &mut Vec<i16>, ms: usize, amp: f32) {
        let n = ms * RATE / 1000;
        let mut phase = 0.0f32;
        let mut seed = 12345u32;
        for i in 0..n {
            let t = i as f32 / RATE as f32;
            let f0 = 120.0 + 40.0 * (2.0 * std::f32::consts::PI * 1.7 * t).sin();
            phase += 2.0 * std::f32::consts::PI * f0 / RATE as f32;
            let syllable = (t * 5.0).fract();
            let env = if syllable < 0.8 { (std::f32::consts::PI * syllable / 0.8).sin() } else { 0.0 };
            let formant = 700.0 + 500.0 * (2.0 * std::f32::consts::PI * 3.1 * t).sin();
            let voiced: f32 = (1..25)
                .map(|h| {
                    let f = f0 * h as f32;
                    (h as f32 * phase).sin() / (1.0 + ((f - formant) / 300.0).powi(2))
                })
                .sum();
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            out.push((amp * env * (voiced + 0.3 * noise)) as i16);
        }
    }

    fn run(samples: &[i16]) -> EarlyMediaReport {
        analyse(&AmdConfig::default(), samples).unwrap()
    }

    #[test]
    fn european_ringback_is_ringback_with_its_cadence() {
        let mut a = Vec::new();
        quiet(&mut a, 300);
        for _ in 0..2 {
            tones(&mut a, &[425.0], 1000, 3000.0);
            quiet(&mut a, 4000);
        }
        let r = run(&a);
        assert_eq!(r.kind, EarlyKind::Ringback, "{r:?}");
        assert_eq!(r.sit, None);
        assert!((290..=320).contains(&r.first_audio_ms.unwrap()), "{r:?}");
        assert_eq!(r.first_speech_ms, None, "{r:?}");
        assert_eq!(r.speech_ms, 0, "{r:?}");
        assert!((1900..=2050).contains(&r.tone_ms), "{r:?}");
        let t = r.tone.unwrap();
        assert!((t.hz - 425.0).abs() < 8.0, "{t:?}");
        assert_eq!(t.bursts, 2);
        assert!((970..=1030).contains(&t.longest_on_ms), "{t:?}");
        assert!((3970..=4030).contains(&t.longest_off_ms.unwrap()), "{t:?}");
        assert_eq!(r.silence_ms + r.tone_ms + r.speech_ms, r.analysed_ms);
    }

    #[test]
    fn north_american_and_uk_ringback_are_ringback() {
        // 440+480 Hz, 2 s on 4 s off.
        let mut a = Vec::new();
        quiet(&mut a, 200);
        tones(&mut a, &[440.0, 480.0], 2000, 2000.0);
        quiet(&mut a, 4000);
        let r = run(&a);
        assert_eq!(r.kind, EarlyKind::Ringback, "{r:?}");
        let t = r.tone.unwrap();
        assert!((430.0..=490.0).contains(&t.hz), "{t:?}");
        assert!(t.longest_on_ms >= 1900, "{t:?}");
        // UK 400+450 Hz: 0.4 on, 0.2 off, 0.4 on, 2 s off, twice.
        let mut a = Vec::new();
        for _ in 0..2 {
            tones(&mut a, &[400.0, 450.0], 400, 2000.0);
            quiet(&mut a, 200);
            tones(&mut a, &[400.0, 450.0], 400, 2000.0);
            quiet(&mut a, 2000);
        }
        let r = run(&a);
        assert_eq!(r.kind, EarlyKind::Ringback, "{r:?}");
        assert!(r.tone.unwrap().longest_off_ms.unwrap() >= 1900, "{r:?}");
    }

    #[test]
    fn busy_cadence_is_busy_not_ringback() {
        // US busy: 480+620 Hz, 0.5 s on, 0.5 s off.
        let mut a = Vec::new();
        quiet(&mut a, 200);
        for _ in 0..4 {
            tones(&mut a, &[480.0, 620.0], 500, 2000.0);
            quiet(&mut a, 500);
        }
        let r = run(&a);
        assert_eq!(r.kind, EarlyKind::Busy, "{r:?}");
        assert!(r.tone.unwrap().second_hz.is_some(), "two tones resolved: {r:?}");
        // European busy: 425 Hz, 0.5/0.5.
        let mut a = Vec::new();
        for _ in 0..4 {
            tones(&mut a, &[425.0], 500, 3000.0);
            quiet(&mut a, 500);
        }
        assert_eq!(run(&a).kind, EarlyKind::Busy);
    }

    fn sit(out: &mut Vec<i16>, segments: [(f32, usize); 3]) {
        for (f, ms) in segments {
            tones(out, &[f], ms, 3000.0);
        }
    }

    #[test]
    fn sit_triples_are_recognised_and_coded() {
        let (lo1, hi1, lo2, hi2, third) = (913.8, 985.2, 1370.6, 1428.5, 1776.7);
        let (s, l) = (274, 380);
        let cases = [
            ([(lo1, s), (lo2, s), (third, l)], SitCode::Intercept),
            ([(hi1, l), (lo2, s), (third, l)], SitCode::VacantCode),
            ([(hi1, l), (hi2, l), (third, l)], SitCode::NoCircuit),
            ([(lo1, s), (hi2, l), (third, l)], SitCode::Reorder),
            ([(lo1, l), (lo2, s), (third, l)], SitCode::IneffectiveOther),
        ];
        for (segments, code) in cases {
            let mut a = Vec::new();
            quiet(&mut a, 500);
            sit(&mut a, segments);
            quiet(&mut a, 200);
            talk(&mut a, 2000, 4000.0);
            quiet(&mut a, 500);
            let r = run(&a);
            assert_eq!(r.kind, EarlyKind::Sit, "{code:?}: {r:?}");
            let got = r.sit.unwrap();
            assert_eq!(got.code, code, "{r:?}");
            assert!((490..=520).contains(&got.start_ms), "{got:?}");
            for ((f, ms), (want_f, want_ms)) in got.freqs_hz.iter().zip(got.durations_ms).zip(segments) {
                assert!((f - want_f).abs() < 10.0, "{got:?}");
                assert!(ms.abs_diff(want_ms as u32) <= 30, "{got:?}");
            }
            assert!(r.speech_ms >= 1000, "the announcement after it is counted: {r:?}");
        }
    }

    #[test]
    fn itu_sit_and_a_sit_at_the_end_of_the_audio_are_found() {
        let mut a = Vec::new();
        sit(&mut a, [(950.0, 330), (1400.0, 330), (1800.0, 330)]);
        let r = run(&a);
        assert_eq!(r.kind, EarlyKind::Sit, "{r:?}");
        assert!(r.sit.unwrap().start_ms <= 20, "{r:?}");
    }

    #[test]
    fn things_that_are_not_sit() {
        // The right tones in the wrong order, and one SIT tone alone.
        let mut a = Vec::new();
        sit(&mut a, [(1776.7, 380), (1370.6, 274), (913.8, 274)]);
        quiet(&mut a, 1000);
        let r = run(&a);
        assert_eq!((r.kind, r.sit), (EarlyKind::Tone, None), "{r:?}");
        let mut a = Vec::new();
        tones(&mut a, &[985.2], 380, 3000.0);
        quiet(&mut a, 1000);
        assert_eq!(run(&a).kind, EarlyKind::Tone);
        // Segments far too long (a 1 s beep at each frequency).
        let mut a = Vec::new();
        sit(&mut a, [(913.8, 1000), (1370.6, 1000), (1776.7, 1000)]);
        assert_eq!(run(&a).sit, None);
    }

    #[test]
    fn speech_is_an_announcement_and_ringback_then_speech_too() {
        let mut a = Vec::new();
        quiet(&mut a, 400);
        talk(&mut a, 3000, 5000.0);
        quiet(&mut a, 500);
        let r = run(&a);
        assert_eq!(r.kind, EarlyKind::Announcement, "{r:?}");
        assert!((390..=450).contains(&r.first_speech_ms.unwrap()), "{r:?}");
        assert!(r.speech_ms >= 1500 && r.tone_ms < 200, "{r:?}");
        let mut a = Vec::new();
        tones(&mut a, &[425.0], 1000, 3000.0);
        quiet(&mut a, 1000);
        talk(&mut a, 2000, 5000.0);
        let r = run(&a);
        assert_eq!(r.kind, EarlyKind::Announcement, "{r:?}");
        assert!(r.first_audio_ms.unwrap() <= 20, "{r:?}");
        assert!(r.tone.unwrap().longest_on_ms >= 950, "{r:?}");
    }

    #[test]
    fn silence_and_line_noise_are_silence() {
        let r = run(&vec![0; 3 * RATE]);
        assert_eq!(r.kind, EarlyKind::Silence);
        assert_eq!((r.first_audio_ms, r.speech_ms, r.tone_ms, r.tone), (None, 0, 0, None));
        assert_eq!((r.analysed_ms, r.silence_ms), (3000, 3000));
        let mut a = Vec::new();
        quiet(&mut a, 5000);
        let r = run(&a);
        assert_eq!((r.kind, r.first_audio_ms), (EarlyKind::Silence, None), "{r:?}");
    }

    #[test]
    fn chunking_does_not_change_the_report_and_report_is_running() {
        let mut a = Vec::new();
        quiet(&mut a, 300);
        sit(&mut a, [(985.2, 380), (1370.6, 274), (1776.7, 380)]);
        talk(&mut a, 1000, 4000.0);
        let reference = run(&a);
        for chunk in [1, 80, 77, 333, 4000] {
            let mut e = EarlyMedia::new(&AmdConfig::default()).unwrap();
            for c in a.chunks(chunk) {
                e.push(c);
            }
            assert_eq!(e.report(), reference, "chunk {chunk}");
        }
        let mut e = EarlyMedia::new(&AmdConfig::default()).unwrap();
        e.push(&a[..RATE * 3 / 10]);
        assert_eq!(e.report().kind, EarlyKind::Silence);
        assert_eq!(e.elapsed_ms(), 300);
    }

    #[test]
    fn report_serialises_in_snake_case() {
        let mut a = Vec::new();
        sit(&mut a, [(913.8, 274), (1370.6, 274), (1776.7, 380)]);
        let json = serde_json::to_value(run(&a)).unwrap();
        assert_eq!(json["kind"], "sit");
        assert_eq!(json["sit"]["code"], "intercept");
        assert_eq!(json["sit"]["freqs_hz"].as_array().unwrap().len(), 3);
        for key in ["analysed_ms", "first_audio_ms", "speech_ms", "tone_ms", "silence_ms", "tone"] {
            assert!(json.get(key).is_some(), "{key}: {json}");
        }
        assert_eq!(serde_json::to_value(EarlyKind::Announcement).unwrap(), "announcement");
        assert_eq!(serde_json::to_value(SitCode::VacantCode).unwrap(), "vacant_code");
        for k in [EarlyKind::Sit, EarlyKind::Ringback, EarlyKind::Busy, EarlyKind::Tone, EarlyKind::Silence] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
