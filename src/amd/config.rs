//! Every parameter of the answering-machine detector, in one struct that can be
//! read from the TOML `[amd]` section.
//!
//! Promises: `AmdConfig::default()` is the tuned set measured by
//! `examples/amd_corpus.rs` (see `docs/amd.md`); unknown keys are errors; any
//! missing key takes its default; [`AmdConfig::validate`] refuses values the
//! detector cannot run with and names the key.

use crate::section::SectionError;
use serde::Deserialize;

/// What the call should do when the detector answers `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnUnknown {
    /// Treat it like a person: connect the agent (default, see `docs/amd.md`).
    #[default]
    Connect,
    /// Treat it like a machine: hang up.
    Hangup,
}

/// The detector's parameters. Times are milliseconds from the answer, levels dB.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmdConfig {
    /// Classify answered calls (needs the audio engine). Off: every answer is
    /// treated as a person, as the system CAP4 replaces did.
    pub enabled: bool,
    /// What `unknown` does (used by the call wiring, not by the classifier).
    pub on_unknown: OnUnknown,

    // Voice activity.
    /// High-pass corner removing hum and rumble before any measurement.
    pub highpass_hz: f32,
    /// A frame is voice when its level is this far above the noise floor...
    pub vad_on_db: f32,
    /// ...and stays voice (hysteresis) while this far above it.
    pub vad_off_db: f32,
    /// ...and never below this absolute level (dBFS, sine full scale = 0).
    pub vad_min_dbfs: f32,
    /// The noise floor is the quietest 10 ms frame in this trailing window.
    pub noise_window_ms: u32,
    /// Shortest burst that counts as speech (clicks are shorter).
    pub min_speech_ms: u32,

    // The speaker over a background (`bed.rs`); 0 dB turns a rule off.
    /// The level is smoothed over this window before the rules below.
    pub bed_smooth_ms: u32,
    /// Sound this far below the utterance's loudest is the room, not the
    /// voice: after the voice, it is a pause...
    pub bed_drop_db: f32,
    /// ...that must last this much longer than a silent one (a voice's last
    /// syllable also fades under its loudest).
    pub bed_pause_extra_ms: u32,
    /// Sound this far above everything the utterance held so far, once it has
    /// run `bed_min_ms`, is a voice over a bed: the utterance starts there.
    pub bed_rise_db: f32,
    pub bed_min_ms: u32,
    /// ...and has not fallen silent for this long (a room does not).
    pub bed_max_gap_ms: u32,

    // Is it speech (`syllables.rs`)?
    /// A syllable dip: a frame this far below the loudest frame...
    pub speech_dip_db: f32,
    /// ...within this much either side of it.
    pub speech_dip_window_ms: u32,
    /// A first utterance is a greeting only if this share of its frames are dips.
    pub speech_min_dip_share: f32,

    // Greeting rules.
    /// No speech at all for this long: `unknown` (cause `silence`).
    pub initial_silence_ms: u32,
    /// Silence that ends a short first utterance and makes it a person's pickup.
    pub pause_short_ms: u32,
    /// Silence needed after an utterance as long as `max_greeting_ms` (the
    /// needed pause grows linearly from `pause_short_ms` between the two lengths).
    pub pause_long_ms: u32,
    /// Utterances up to this length need only `pause_short_ms`.
    pub short_utterance_ms: u32,
    /// A first utterance longer than this is a recorded greeting (`long_greeting`).
    pub max_greeting_ms: u32,
    /// Words (bursts separated by `word_gap_ms`) in the first utterance above
    /// which it is a greeting (`too_many_words`); 0 disables the rule.
    pub max_words: u32,
    /// Silence that separates two words.
    pub word_gap_ms: u32,
    /// Nothing decided by then: `unknown` (cause `timeout`).
    pub max_decision_ms: u32,

    // Tones.
    /// Lowest and highest beep frequency searched (a peak on either edge bin
    /// is outside the range and ignored).
    pub tone_min_hz: f32,
    pub tone_max_hz: f32,
    /// Share of a frame's energy in one or two spectral peaks for it to be tonal.
    pub tone_purity: f32,
    /// A tonal frame must be at least this loud (dBFS).
    pub tone_min_dbfs: f32,
    /// Frequency drift allowed between frames of one tone.
    pub tone_tolerance_hz: f32,
    /// A steady tone (or a sequence of tones) this long is a beep.
    pub beep_min_ms: u32,
    /// Recognise special information tones (950/1400/1800 Hz sequences).
    pub sit_enabled: bool,
}

impl Default for AmdConfig {
    fn default() -> Self {
        AmdConfig {
            enabled: true,
            on_unknown: OnUnknown::Connect,
            highpass_hz: 200.0,
            vad_on_db: 9.0,
            vad_off_db: 6.0,
            vad_min_dbfs: -52.0,
            noise_window_ms: 1500,
            min_speech_ms: 40,
            bed_smooth_ms: 100,
            bed_drop_db: 10.0,
            bed_pause_extra_ms: 150,
            bed_rise_db: 6.0,
            bed_min_ms: 300,
            bed_max_gap_ms: 300,
            speech_dip_db: 10.0,
            speech_dip_window_ms: 150,
            speech_min_dip_share: 0.08,
            initial_silence_ms: 5000,
            pause_short_ms: 550,
            pause_long_ms: 1300,
            short_utterance_ms: 700,
            max_greeting_ms: 3000,
            max_words: 0,
            word_gap_ms: 80,
            max_decision_ms: 8000,
            tone_min_hz: 350.0,
            tone_max_hz: 2100.0,
            tone_purity: 0.75,
            tone_min_dbfs: -50.0,
            tone_tolerance_hz: 15.0,
            beep_min_ms: 180,
            sit_enabled: true,
        }
    }
}

fn bad(key: &'static str, message: impl Into<String>) -> Result<(), SectionError> {
    Err(SectionError::new("amd", key, message))
}

/// `value` of `key` must lie in `lo..=hi`.
fn within<T: PartialOrd + std::fmt::Display>(key: &'static str, value: T, lo: T, hi: T) -> Result<(), SectionError> {
    if value < lo || value > hi { bad(key, format!("must be between {lo} and {hi}")) } else { Ok(()) }
}

impl AmdConfig {
    /// Checks ranges and the relations between keys.
    pub fn validate(&self) -> Result<(), SectionError> {
        let finite = [
            ("highpass_hz", self.highpass_hz),
            ("vad_on_db", self.vad_on_db),
            ("vad_off_db", self.vad_off_db),
            ("vad_min_dbfs", self.vad_min_dbfs),
            ("tone_min_hz", self.tone_min_hz),
            ("tone_max_hz", self.tone_max_hz),
            ("tone_purity", self.tone_purity),
            ("tone_min_dbfs", self.tone_min_dbfs),
            ("tone_tolerance_hz", self.tone_tolerance_hz),
            ("bed_drop_db", self.bed_drop_db),
            ("bed_rise_db", self.bed_rise_db),
            ("speech_dip_db", self.speech_dip_db),
            ("speech_min_dip_share", self.speech_min_dip_share),
        ];
        for (key, v) in finite {
            if !v.is_finite() {
                return bad(key, "must be a finite number");
            }
        }
        within("highpass_hz", self.highpass_hz, 20.0, 1000.0)?;
        if self.vad_on_db <= 0.0 || self.vad_off_db <= 0.0 || self.vad_off_db > self.vad_on_db {
            return bad("vad_off_db", "need 0 < vad_off_db <= vad_on_db");
        }
        if self.vad_min_dbfs > 0.0 || self.tone_min_dbfs > 0.0 {
            return bad("vad_min_dbfs", "levels are dBFS, at most 0");
        }
        if !(100..=10_000).contains(&self.noise_window_ms) {
            return bad("noise_window_ms", "must be between 100 and 10000");
        }
        if self.min_speech_ms == 0 || self.min_speech_ms > 1000 {
            return bad("min_speech_ms", "must be between 1 and 1000");
        }
        within("bed_smooth_ms", self.bed_smooth_ms, 10, 500)?;
        within("bed_drop_db", self.bed_drop_db, 0.0, 40.0)?;
        within("bed_rise_db", self.bed_rise_db, 0.0, 40.0)?;
        within("bed_pause_extra_ms", self.bed_pause_extra_ms, 0, 5000)?;
        within("bed_min_ms", self.bed_min_ms, 0, 10_000)?;
        within("bed_max_gap_ms", self.bed_max_gap_ms, 0, 10_000)?;
        within("speech_dip_window_ms", self.speech_dip_window_ms, 10, 500)?;
        within("speech_dip_db", self.speech_dip_db, 1.0, 60.0)?;
        within("speech_min_dip_share", self.speech_min_dip_share, 0.0, 1.0)?;
        if self.pause_short_ms == 0 || self.pause_long_ms < self.pause_short_ms {
            return bad("pause_long_ms", "need 0 < pause_short_ms <= pause_long_ms");
        }
        if self.short_utterance_ms >= self.max_greeting_ms {
            return bad("short_utterance_ms", "must be below max_greeting_ms");
        }
        if self.word_gap_ms == 0 {
            return bad("word_gap_ms", "must be positive");
        }
        if self.max_decision_ms == 0 || self.initial_silence_ms == 0 {
            return bad("max_decision_ms", "must be positive");
        }
        if !(100.0..=3900.0).contains(&self.tone_min_hz) || !(100.0..=3900.0).contains(&self.tone_max_hz) {
            return bad("tone_min_hz", "tone range must lie within 100..3900 Hz");
        }
        if self.tone_max_hz <= self.tone_min_hz {
            return bad("tone_max_hz", "must be above tone_min_hz");
        }
        within("tone_purity", self.tone_purity, 0.3, 1.0)?;
        within("tone_tolerance_hz", self.tone_tolerance_hz, 5.0, 200.0)?;
        within("beep_min_ms", self.beep_min_ms, 30, 5000)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        AmdConfig::default().validate().unwrap();
    }

    #[test]
    fn toml_section_takes_defaults_and_refuses_unknown_keys() {
        let c: AmdConfig = toml::from_str("beep_min_ms = 200\non_unknown = \"hangup\"").unwrap();
        assert_eq!(c.beep_min_ms, 200);
        assert_eq!(c.on_unknown, OnUnknown::Hangup);
        assert_eq!(c.pause_short_ms, AmdConfig::default().pause_short_ms);
        let err = toml::from_str::<AmdConfig>("beep_ms = 200").unwrap_err();
        assert!(err.to_string().contains("beep_ms"), "{err}");
    }

    #[test]
    fn validate_names_the_key() {
        let c = AmdConfig { tone_max_hz: 300.0, ..AmdConfig::default() };
        assert_eq!(c.validate().unwrap_err().key, "tone_max_hz");
        let c = AmdConfig { short_utterance_ms: 4000, ..AmdConfig::default() };
        assert_eq!(c.validate().unwrap_err().key, "short_utterance_ms");
    }
}
