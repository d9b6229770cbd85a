//! The streaming detector: feeds 10 ms frames through the high-pass, the VAD and
//! the tone analysis, follows the callee's first utterance, and applies the
//! rules that turn it into a verdict.
//!
//! The rules (in the spirit of Asterisk's app_amd, with a pause that scales with
//! what was said): a beep, SIT or tone is a machine at once; a first utterance
//! longer than `max_greeting_ms` (or with more than `max_words` words) is a
//! machine; a first utterance followed by a pause is a person, where the pause
//! needed is `pause_short_ms` after a short "Hello?" and grows to
//! `pause_long_ms` for an utterance as long as `max_greeting_ms` (a long
//! utterance followed by a short pause is more likely a greeting before its
//! beep); no speech within `initial_silence_ms`, or no decision within
//! `max_decision_ms`, is unknown.
//!
//! Promises: `push` takes any number of samples (10–20 ms frames in a live call)
//! and never allocates; the verdict is given once and never changes; after it
//! the tone tracker keeps running so [`Amd::beep_start_ms`] reports a beep that
//! comes later (for a voicemail drop).

use super::bed::{Bed, BedFrame};
use super::config::AmdConfig;
use super::syllables::Syllables;
use super::tone::{ToneAnalyzer, ToneEvent, ToneTracker};
use super::vad::{FRAME_MS, FrameActivity, FrontEnd};
use super::verdict::{Cause, Verdict};
use crate::section::SectionError;

/// How much earlier than a tone the VAD may hear it start.
const TONE_ONSET_MS: u32 = 100;

/// The answering-machine detector for one call.
#[derive(Debug, Clone)]
pub struct Amd {
    config: AmdConfig,
    front: FrontEnd,
    analyzer: ToneAnalyzer,
    tracker: ToneTracker,
    bed: Bed,
    syllables: Syllables,
    /// Frames analysed so far.
    frames: u32,
    speech: Speech,
    beep_start_ms: Option<u32>,
    verdict: Option<Verdict>,
}

/// The first utterance as the detector follows it.
#[derive(Debug, Clone, Default)]
struct Speech {
    /// Consecutive active frames and where they began.
    run: u32,
    run_start: u32,
    /// The current run reached `min_speech_ms`.
    in_burst: bool,
    /// Start of the first speech (moved by a voice over a bed), end of the
    /// last speech (frames).
    start: Option<u32>,
    end: u32,
    total_frames: u32,
    words: u32,
    /// End of the last speech that was the voice, not the room under it
    /// (`bed.rs`); `end` also counts a bed the VAD hears.
    voice_end: u32,
    /// Where speech was first heard (a bed's start is kept: a beep over it
    /// still came after something).
    first_start: Option<u32>,
    /// The longest silence between two bursts of the utterance, ms.
    longest_gap_ms: u32,
}

impl Amd {
    pub fn new(config: &AmdConfig) -> Result<Amd, SectionError> {
        config.validate()?;
        Ok(Amd {
            config: config.clone(),
            front: FrontEnd::new(config, config.highpass_hz),
            analyzer: ToneAnalyzer::new(config),
            tracker: ToneTracker::new(config),
            bed: Bed::new(config),
            syllables: Syllables::new(config),
            frames: 0,
            speech: Speech::default(),
            beep_start_ms: None,
            verdict: None,
        })
    }

    /// Feeds 8 kHz mono samples; returns the verdict on the call that reaches it.
    pub fn push(&mut self, samples: &[i16]) -> Option<Verdict> {
        let mut reached = None;
        for &s in samples {
            if let Some(activity) = self.front.sample(s) {
                if let Some(v) = self.frame(activity) {
                    reached = Some(v);
                }
            }
        }
        reached
    }

    /// The audio ended: the verdict, deciding `unknown` (`end_of_audio`) if
    /// nothing was decided yet.
    pub fn finish(&mut self) -> Verdict {
        match self.verdict {
            Some(v) => v,
            None => self.decide(Cause::EndOfAudio),
        }
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Milliseconds of audio analysed.
    pub fn elapsed_ms(&self) -> u32 {
        self.frames * FRAME_MS
    }

    /// Start of the first beep, SIT or tone, also one heard after the verdict.
    pub fn beep_start_ms(&self) -> Option<u32> {
        self.beep_start_ms
    }

    fn frame(&mut self, activity: FrameActivity) -> Option<Verdict> {
        let index = self.frames;
        self.frames += 1;
        let tonal = self.analyzer.frame(self.front.frame());
        let bed = self.bed.frame(activity.level_dbfs, self.speech.start.is_some());
        self.syllables.frame(activity.level_dbfs);
        let event = self.tracker.frame(index, tonal);
        // The VAD also hears a tone: it is a beep only if speech began well before
        // it. A tone that grows out of a voiced sound with no gap (a held vowel
        // in a studio voice can be as pure as a beep) must last twice as long.
        let now_ms = self.elapsed_ms();
        let s = &self.speech;
        let spoke_before = |tone_ms: u32| s.first_start.is_some_and(|f| f * FRAME_MS + TONE_ONSET_MS < tone_ms);
        let out_of_voice = |tone_ms: u32| s.in_burst && s.run_start * FRAME_MS + TONE_ONSET_MS < tone_ms;
        let long_enough = |tone_ms: u32| now_ms - tone_ms >= 2 * self.config.beep_min_ms;
        let event = match event {
            Some(ToneEvent::Beep { start_ms }) if out_of_voice(start_ms) && !long_enough(start_ms) => None,
            other => other,
        };
        if let Some(ToneEvent::Beep { start_ms } | ToneEvent::Sit { start_ms }) = event {
            self.beep_start_ms.get_or_insert(start_ms);
        }
        if self.verdict.is_some() {
            return None;
        }
        let cause = match event {
            Some(ToneEvent::Sit { .. }) => Some(Cause::Sit),
            Some(ToneEvent::Beep { start_ms }) if spoke_before(start_ms) => Some(Cause::Beep),
            Some(ToneEvent::Beep { .. }) => Some(Cause::Tone),
            None => self.follow_speech(index, activity.active, bed),
        };
        cause.map(|c| self.decide(c))
    }

    /// Tracks the first utterance and applies the timing rules.
    fn follow_speech(&mut self, index: u32, active: bool, bed: BedFrame) -> Option<Cause> {
        let c = &self.config;
        let s = &mut self.speech;
        let min_run = c.min_speech_ms.div_ceil(FRAME_MS);
        // A room is continuous sound: an utterance that fell silent since it
        // began (the silence still open included: a loud sound trips the rise
        // before its burst is confirmed) was a voice, and what rises after it
        // (a beep, a louder sentence) does not restart it.
        let open_gap_ms = if s.in_burst {
            0
        } else {
            let resumed = if active && s.run > 0 { s.run_start } else { index };
            resumed.saturating_sub(s.end) * FRAME_MS
        };
        if bed.voice_over_bed && s.longest_gap_ms.max(open_gap_ms) < c.bed_max_gap_ms {
            // What the utterance held was the room: the voice starts here
            // (its rise took the smoothing window).
            let window = self.bed.window_frames();
            let start = (index + 1).saturating_sub(window).max(s.start.unwrap_or(0));
            s.start = Some(start);
            self.syllables.count_from(start);
            s.end = index + 1;
            s.voice_end = index + 1;
            // This frame is counted below, with the burst it belongs to.
            s.total_frames = index - start;
            s.words = 1;
            s.longest_gap_ms = 0;
        }
        if active {
            if s.run == 0 {
                s.run_start = index;
            }
            s.run += 1;
            if s.in_burst {
                s.total_frames += 1;
                s.end = index + 1;
            } else if s.run >= min_run {
                s.in_burst = true;
                s.total_frames += s.run;
                if s.start.is_none() {
                    s.start = Some(s.run_start);
                    s.first_start = Some(s.run_start);
                    self.syllables.count_from(s.run_start);
                    s.words = 1;
                } else if s.quiet_before_burst_ms() >= c.word_gap_ms {
                    s.longest_gap_ms = s.longest_gap_ms.max(s.quiet_before_burst_ms());
                    s.words += 1;
                }
                s.end = index + 1;
            }
            if s.in_burst && !bed.under_speaker {
                s.voice_end = s.end;
            }
        } else {
            s.run = 0;
            s.in_burst = false;
        }
        let now_ms = (index + 1) * FRAME_MS;
        let Some(start) = s.start else {
            return (now_ms >= c.initial_silence_ms).then_some(Cause::Silence);
        };
        let length_ms = (s.voice_end.max(start) - start) * FRAME_MS;
        // Only speech makes a greeting: a bed of music or noise this long
        // keeps the detector listening.
        if length_ms > c.max_greeting_ms && self.syllables.dip_share() >= c.speech_min_dip_share {
            return Some(Cause::LongGreeting);
        }
        if c.max_words > 0 && s.words > c.max_words {
            return Some(Cause::TooManyWords);
        }
        // A pause is silence after the speech, or (longer, since a voice's
        // last syllable also fades under its loudest) the room after the voice.
        let needed_ms = needed_pause_ms(c, length_ms);
        let silence_ms = (index + 1 - s.end) * FRAME_MS;
        let room_ms = (index + 1 - s.voice_end.max(start)) * FRAME_MS;
        let bed_rule = c.bed_drop_db > 0.0;
        if !s.in_burst && silence_ms >= needed_ms {
            return Some(Cause::ShortGreetingThenPause);
        }
        if bed_rule && room_ms >= needed_ms.saturating_add(c.bed_pause_extra_ms) {
            // What the VAD heard after the voice was the room: the speech
            // ended with the voice.
            s.end = s.voice_end.max(start);
            return Some(Cause::ShortGreetingThenPause);
        }
        (now_ms >= c.max_decision_ms).then_some(Cause::Timeout)
    }

    fn decide(&mut self, cause: Cause) -> Verdict {
        let s = &self.speech;
        let verdict = Verdict {
            kind: cause.kind(),
            cause,
            decided_at_ms: self.elapsed_ms(),
            speech_start_ms: s.start.map(|f| f * FRAME_MS),
            speech_end_ms: s.start.map(|_| s.end * FRAME_MS),
            speech_total_ms: s.total_frames * FRAME_MS,
            words: s.words,
            beep_start_ms: self.beep_start_ms,
        };
        self.verdict = Some(verdict);
        verdict
    }
}

impl Speech {
    /// Silence between the previous burst and the one that just started.
    fn quiet_before_burst_ms(&self) -> u32 {
        self.run_start.saturating_sub(self.end) * FRAME_MS
    }
}

/// The pause that makes an utterance of `length_ms` a person's.
fn needed_pause_ms(c: &AmdConfig, length_ms: u32) -> u32 {
    if length_ms <= c.short_utterance_ms {
        return c.pause_short_ms;
    }
    let span = (c.max_greeting_ms - c.short_utterance_ms) as f32;
    let t = ((length_ms - c.short_utterance_ms) as f32 / span).min(1.0);
    c.pause_short_ms + ((c.pause_long_ms - c.pause_short_ms) as f32 * t) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amd::verdict::Kind;

    const RATE: usize = 8000;

    /// A voiced, speech-like sound (gliding pitch, many harmonics) for `ms`.
    fn talk(out: &mut Vec<i16>, ms: usize, amp: f32) {
        let n = ms * RATE / 1000;
        let mut phase = 0.0f32;
        for i in 0..n {
            let t = i as f32 / RATE as f32;
            let f0 = 130.0 + 30.0 * (2.0 * std::f32::consts::PI * 2.5 * t).sin();
            phase += 2.0 * std::f32::consts::PI * f0 / RATE as f32;
            // Syllable envelope at 4 Hz, never fully silent inside a word.
            let env = 0.55 + 0.45 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
            let x: f32 = (1..20).map(|h| (h as f32 * phase).sin() / h as f32).sum();
            out.push((amp * env * x) as i16);
        }
    }

    fn quiet(out: &mut Vec<i16>, ms: usize) {
        let mut seed = out.len() as u32 | 1;
        for _ in 0..ms * RATE / 1000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            out.push(((seed >> 16) as i16 as i32 / 2000) as i16);
        }
    }

    fn beep(out: &mut Vec<i16>, ms: usize, freq: f32) {
        for i in 0..ms * RATE / 1000 {
            out.push((6000.0 * (2.0 * std::f32::consts::PI * freq * i as f32 / RATE as f32).sin()) as i16);
        }
    }

    fn classify(samples: &[i16], chunk: usize) -> Verdict {
        let mut amd = Amd::new(&AmdConfig::default()).unwrap();
        for c in samples.chunks(chunk) {
            if let Some(v) = amd.push(c) {
                assert_eq!(amd.push(c), None, "the verdict comes once");
                return v;
            }
        }
        amd.finish()
    }

    #[test]
    fn hello_then_silence_is_human_soon_after_the_pause() {
        let mut a = Vec::new();
        quiet(&mut a, 800);
        talk(&mut a, 600, 4000.0);
        quiet(&mut a, 3000);
        let v = classify(&a, 160);
        assert_eq!((v.kind, v.cause), (Kind::Human, Cause::ShortGreetingThenPause), "{v:?}");
        let end = v.speech_end_ms.unwrap();
        assert!((1380..=1420).contains(&end), "{v:?}");
        assert!(v.decided_at_ms - end <= AmdConfig::default().pause_short_ms + 20, "{v:?}");
        assert!((780..=820).contains(&v.speech_start_ms.unwrap()), "{v:?}");
    }

    #[test]
    fn long_greeting_then_beep_is_machine_and_the_beep_is_reported_later() {
        let mut a = Vec::new();
        quiet(&mut a, 500);
        for _ in 0..4 {
            talk(&mut a, 1500, 3000.0);
            quiet(&mut a, 300);
        }
        beep(&mut a, 500, 1000.0);
        quiet(&mut a, 1000);
        let mut amd = Amd::new(&AmdConfig::default()).unwrap();
        let mut chunks = a.chunks(80);
        let v = chunks.by_ref().find_map(|c| amd.push(c)).unwrap();
        assert_eq!((v.kind, v.cause), (Kind::Machine, Cause::LongGreeting), "{v:?}");
        assert!(v.decided_at_ms <= 500 + AmdConfig::default().max_greeting_ms + 30, "{v:?}");
        for c in chunks {
            amd.push(c);
        }
        let beep_at = amd.beep_start_ms().unwrap();
        assert!((7700..=7720).contains(&beep_at), "{beep_at}");
    }

    #[test]
    fn short_greeting_with_a_beep_is_machine_by_the_beep() {
        let mut a = Vec::new();
        quiet(&mut a, 300);
        talk(&mut a, 2000, 3000.0);
        quiet(&mut a, 400);
        beep(&mut a, 400, 700.0);
        quiet(&mut a, 2000);
        let v = classify(&a, 160);
        assert_eq!((v.kind, v.cause), (Kind::Machine, Cause::Beep), "{v:?}");
        assert!((2690..=2720).contains(&v.beep_start_ms.unwrap()), "{v:?}");
    }

    #[test]
    fn silence_is_unknown_and_a_lone_tone_is_a_machine() {
        let mut a = Vec::new();
        quiet(&mut a, 7000);
        let v = classify(&a, 160);
        assert_eq!((v.kind, v.cause, v.decided_at_ms), (Kind::Unknown, Cause::Silence, 5000));
        let mut a = Vec::new();
        quiet(&mut a, 300);
        beep(&mut a, 1000, 425.0);
        let v = classify(&a, 100);
        assert_eq!((v.kind, v.cause), (Kind::Machine, Cause::Tone), "{v:?}");
    }

    #[test]
    fn chunk_size_does_not_change_the_verdict() {
        let mut a = Vec::new();
        quiet(&mut a, 500);
        talk(&mut a, 900, 5000.0);
        quiet(&mut a, 300);
        talk(&mut a, 400, 5000.0);
        quiet(&mut a, 3000);
        let reference = classify(&a, 80);
        for chunk in [1, 77, 160, 333, 4000] {
            assert_eq!(classify(&a, chunk), reference, "chunk {chunk}");
        }
    }

    /// A room's music, as the benchmark makes it: a melody of harmonic notes
    /// of 120–450 ms over three-note chords changing every 2 s, each note
    /// struck and fading (3 dB in 115 ms), never silent.
    fn music(out: &mut Vec<i16>, ms: usize, amp: f32) {
        const NOTES: [f32; 7] = [262.0, 330.0, 392.0, 294.0, 440.0, 523.0, 349.0];
        const LENGTHS: [usize; 5] = [960, 3600, 1900, 2700, 1300];
        let n = ms * RATE / 1000;
        let mut x = vec![0.0f32; n];
        let mut strike = |start: usize, len: usize, f: f32, a: f32| {
            for (k, s) in x.iter_mut().skip(start).take(len).enumerate() {
                let t = k as f32 / RATE as f32;
                let w = 2.0 * std::f32::consts::PI * f * t;
                let env = (k as f32 / 80.0).min(1.0) * (-3.0 * t).exp();
                *s += a * env * (w.sin() + 0.5 * (2.0 * w).sin() + 0.25 * (3.0 * w).sin());
            }
        };
        let (mut at, mut i) = (0, 0);
        while at < n {
            let len = LENGTHS[i % LENGTHS.len()];
            strike(at, len, NOTES[i % NOTES.len()], 1.0);
            (at, i) = (at + len, i + 1);
        }
        for (c, start) in (0..n).step_by(16_000).enumerate() {
            for step in [0, 2, 4] {
                strike(start, 16_000, NOTES[(c + step) % NOTES.len()] / 2.0, 0.35);
            }
        }
        out.extend(x.iter().map(|s| (s * amp) as i16));
    }

    fn mixed(a: &[i16], b: &[i16]) -> Vec<i16> {
        a.iter().zip(b).map(|(&x, &y)| x.saturating_add(y)).collect()
    }

    #[test]
    fn music_alone_is_never_a_machine() {
        for amp in [500.0, 2000.0, 8000.0] {
            let mut a = Vec::new();
            music(&mut a, 9000, amp);
            let v = classify(&a, 160);
            assert_ne!(v.kind, Kind::Machine, "amp {amp}: {v:?}");
            // It is long enough to be a greeting: only the speech rule keeps it one.
            let any_sound = AmdConfig { speech_min_dip_share: 0.0, ..AmdConfig::default() };
            let v = crate::amd::classify(&any_sound, &a).unwrap();
            assert_eq!((v.kind, v.cause), (Kind::Machine, Cause::LongGreeting), "amp {amp}: {v:?}");
        }
    }

    #[test]
    fn hello_over_music_is_human_after_the_pause() {
        let mut bed = Vec::new();
        music(&mut bed, 6000, 1000.0);
        let mut voice = Vec::new();
        quiet(&mut voice, 1500);
        talk(&mut voice, 600, 5000.0);
        voice.resize(bed.len(), 0);
        let v = classify(&mixed(&voice, &bed), 160);
        assert_eq!((v.kind, v.cause), (Kind::Human, Cause::ShortGreetingThenPause), "{v:?}");
        let c = AmdConfig::default();
        assert!((1400..=1600).contains(&v.speech_start_ms.unwrap()), "the voice, not the music, starts the utterance: {v:?}");
        let after_voice = v.decided_at_ms - 2100;
        assert!(after_voice <= c.pause_short_ms + c.bed_pause_extra_ms + 100, "{after_voice} ms after the voice: {v:?}");
        // Without the bed rules the music starts the utterance.
        let off = AmdConfig { bed_drop_db: 0.0, bed_rise_db: 0.0, ..c };
        let v = crate::amd::classify(&off, &mixed(&voice, &bed)).unwrap();
        assert!(v.speech_start_ms.unwrap() < 1000, "{v:?}");
    }

    #[test]
    fn needed_pause_grows_with_the_utterance() {
        let c = AmdConfig::default();
        assert_eq!(needed_pause_ms(&c, 500), c.pause_short_ms);
        assert_eq!(needed_pause_ms(&c, c.max_greeting_ms), c.pause_long_ms);
        let mid = needed_pause_ms(&c, (c.short_utterance_ms + c.max_greeting_ms) / 2);
        assert!(c.pause_short_ms < mid && mid < c.pause_long_ms);
    }
}
