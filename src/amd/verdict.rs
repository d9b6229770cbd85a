//! The detector's answer: who picked up, why it thinks so, when it knew, and the
//! timings it measured on the way (for the call record and for tuning).
//!
//! Promises: every cause belongs to exactly one kind; all times are
//! milliseconds from the answer (the first sample fed to the detector).

use serde::Serialize;

/// Who answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Human,
    Machine,
    Unknown,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Human => "human",
            Kind::Machine => "machine",
            Kind::Unknown => "unknown",
        }
    }
}

/// Why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Human: a short first utterance, then a pause long enough that a recording
    /// would have gone on.
    ShortGreetingThenPause,
    /// Machine: the first utterance ran past `max_greeting_ms`.
    LongGreeting,
    /// Machine: more than `max_words` words in the first utterance.
    TooManyWords,
    /// Machine: a voicemail beep (a steady tone after speech).
    Beep,
    /// Machine: a steady tone before anyone spoke (music-on-hold tones, a beep
    /// with no greeting).
    Tone,
    /// Machine: special information tones (a network announcement follows).
    Sit,
    /// Unknown: nobody spoke within `initial_silence_ms`.
    Silence,
    /// Unknown: nothing decided within `max_decision_ms`.
    Timeout,
    /// Unknown: the audio ended before a decision.
    EndOfAudio,
}

impl Cause {
    pub fn kind(self) -> Kind {
        match self {
            Cause::ShortGreetingThenPause => Kind::Human,
            Cause::LongGreeting | Cause::TooManyWords | Cause::Beep | Cause::Tone | Cause::Sit => Kind::Machine,
            Cause::Silence | Cause::Timeout | Cause::EndOfAudio => Kind::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ShortGreetingThenPause => "short_greeting_then_pause",
            Cause::LongGreeting => "long_greeting",
            Cause::TooManyWords => "too_many_words",
            Cause::Beep => "beep",
            Cause::Tone => "tone",
            Cause::Sit => "sit",
            Cause::Silence => "silence",
            Cause::Timeout => "timeout",
            Cause::EndOfAudio => "end_of_audio",
        }
    }
}

/// The decision and what was measured up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    #[serde(rename = "verdict")]
    pub kind: Kind,
    pub cause: Cause,
    pub decided_at_ms: u32,
    /// Start of the first speech.
    pub speech_start_ms: Option<u32>,
    /// End of the first utterance (its last speech so far if it had not ended).
    pub speech_end_ms: Option<u32>,
    /// All speech heard up to the decision.
    pub speech_total_ms: u32,
    /// Words counted in the first utterance.
    pub words: u32,
    /// Start of the first beep, SIT or tone.
    pub beep_start_ms: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_the_documented_names() {
        let v = Verdict {
            kind: Kind::Machine,
            cause: Cause::LongGreeting,
            decided_at_ms: 3500,
            speech_start_ms: Some(500),
            speech_end_ms: None,
            speech_total_ms: 2900,
            words: 7,
            beep_start_ms: None,
        };
        let json = serde_json::to_value(v).unwrap();
        assert_eq!(json["verdict"], "machine");
        assert_eq!(json["cause"], "long_greeting");
        assert_eq!(json["decided_at_ms"], 3500);
        assert_eq!(json["speech_end_ms"], serde_json::Value::Null);
        for cause in [Cause::ShortGreetingThenPause, Cause::Sit, Cause::EndOfAudio, Cause::TooManyWords] {
            assert_eq!(serde_json::to_value(cause).unwrap(), cause.as_str());
        }
    }
}
