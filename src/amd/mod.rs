//! Answer classification: was the call answered by a person or by a machine
//! (voicemail greeting, carrier announcement, IVR)?
//!
//! A streaming classifier over 8 kHz mono 16-bit audio from the moment of
//! answer. Modules: `config` (every parameter, the `[amd]` section), `vad`
//! (high-pass, level, noise floor, voice activity), `bed` (the speaker's
//! voice over a background), `syllables` (is it speech), `tone` (Goertzel bank,
//! beeps, SIT), `detector` (the first utterance and the rules), `verdict` (the
//! answer), `early` (what early media before the
//! answer was: ringback, busy, SIT, announcement, silence; for the call record). How it was tuned and measured:
//! `docs/amd.md` and `examples/amd_corpus.rs`.
//!
//! Promises: the offline command (`cli/amd.rs`) and a live call run the same code
//! ([`classify`] feeds [`Amd::push`] 20 ms frames, as a call does); the
//! detector allocates nothing per frame.

pub mod bed;
pub mod config;
pub mod detector;
pub mod early;
pub mod syllables;
pub mod tone;
pub mod vad;
pub mod verdict;

pub use crate::section::SectionError;
pub use config::{AmdConfig, OnUnknown};
pub use detector::Amd;
pub use early::{EarlyKind, EarlyMedia, EarlyMediaReport, SitCode, SitReport, ToneSummary};
pub use verdict::{Cause, Kind, Verdict};

/// Samples per frame a live call delivers (20 ms at 8 kHz, one RTP packet).
pub const CALL_FRAME: usize = 160;

/// Classifies a whole recording (8 kHz mono, from the moment of answer) by
/// feeding it to [`Amd`] in 20 ms frames, as a live call would.
pub fn classify(config: &AmdConfig, samples: &[i16]) -> Result<Verdict, SectionError> {
    let mut amd = Amd::new(config)?;
    for frame in samples.chunks(CALL_FRAME) {
        if let Some(verdict) = amd.push(frame) {
            return Ok(verdict);
        }
    }
    Ok(amd.finish())
}
