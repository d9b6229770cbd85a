//! Voicemail drop: after a `machine` verdict, instead of hanging up at once,
//! wait for the greeting (and its beep) to end, play a recorded message into
//! the call, then hang up. No AI session is involved.
//!
//! Owns `[voicemail]` ([`VoicemailConfig`]: the message WAV, loaded and
//! checked at start) and [`GreetingEnd`], the streaming detector of "the
//! machine has stopped talking": the same high-pass and adaptive-floor voice
//! activity as answer classification, fed from the answer on (so its noise
//! floor is learnt before the verdict), saying "over" once `quiet_ms` of
//! quiet follow the last sound (speech or beep). Allocates nothing per frame.

use std::path::PathBuf;

use serde::Deserialize;

use crate::amd::AmdConfig;
use crate::amd::vad::{FRAME_MS, FrontEnd};
use crate::section::SectionError;

/// `[voicemail]` as written in the TOML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoicemailConfig {
    /// The message to leave (WAV, 16-bit PCM, any rate, mono or stereo). Unset:
    /// a machine is hung up at once.
    pub drop_wav: Option<PathBuf>,
    /// Quiet after the last sound that ends the greeting (and the beep).
    pub quiet_ms: u32,
    /// Longest wait for the greeting to end, from the verdict; then the
    /// message plays anyway.
    pub max_wait_ms: u32,
}

impl Default for VoicemailConfig {
    fn default() -> Self {
        VoicemailConfig { drop_wav: None, quiet_ms: 1_200, max_wait_ms: 20_000 }
    }
}

impl VoicemailConfig {
    /// Checks the values and loads the message (as 8 kHz mono).
    pub fn load(&self) -> Result<Option<Vec<i16>>, SectionError> {
        if !(300..=10_000).contains(&self.quiet_ms) {
            return Err(SectionError::new("voicemail", "quiet_ms", "must be 300 to 10000"));
        }
        if !(1_000..=120_000).contains(&self.max_wait_ms) {
            return Err(SectionError::new("voicemail", "max_wait_ms", "must be 1000 to 120000"));
        }
        let Some(path) = &self.drop_wav else { return Ok(None) };
        let samples =
            crate::wav::read_8k_mono(path).map_err(|e| SectionError::new("voicemail", "drop_wav", format!("{}: {e}", path.display())))?;
        if samples.len() < 8_000 / 10 {
            return Err(SectionError::new("voicemail", "drop_wav", format!("{}: shorter than 100 ms", path.display())));
        }
        if samples.len() > 8_000 * 120 {
            return Err(SectionError::new("voicemail", "drop_wav", format!("{}: longer than 2 minutes", path.display())));
        }
        Ok(Some(samples))
    }
}

/// "The machine has stopped talking", from 8 kHz frames.
#[derive(Debug, Clone)]
pub struct GreetingEnd {
    front: FrontEnd,
    quiet_frames: u32,
    need_quiet_frames: u32,
    /// Counting started ([`GreetingEnd::arm`]): frames since, for `max_wait`.
    armed_frames: Option<u32>,
    max_wait_frames: u32,
}

impl GreetingEnd {
    pub fn new(amd: &AmdConfig, quiet_ms: u32, max_wait_ms: u32) -> Self {
        GreetingEnd {
            front: FrontEnd::new(amd, amd.highpass_hz),
            quiet_frames: 0,
            need_quiet_frames: quiet_ms.div_ceil(FRAME_MS),
            armed_frames: None,
            max_wait_frames: max_wait_ms.div_ceil(FRAME_MS),
        }
    }

    /// The verdict is in: from now on, say when the greeting is over.
    pub fn arm(&mut self) {
        self.armed_frames.get_or_insert(0);
    }

    /// Feeds 8 kHz samples (any length); true once armed and the greeting is
    /// over (or the wait ran out).
    pub fn push(&mut self, samples: &[i16]) -> bool {
        let mut over = false;
        for &s in samples {
            if let Some(activity) = self.front.sample(s) {
                over |= self.frame(activity.active);
            }
        }
        over
    }

    fn frame(&mut self, active: bool) -> bool {
        self.quiet_frames = if active { 0 } else { self.quiet_frames.saturating_add(1) };
        let Some(armed) = self.armed_frames.as_mut() else { return false };
        *armed += 1;
        self.quiet_frames >= self.need_quiet_frames || *armed >= self.max_wait_frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u32, hz: f32, amp: f32) -> Vec<i16> {
        (0..ms * 8).map(|i| (amp * (2.0 * std::f32::consts::PI * hz * i as f32 / 8000.0).sin()) as i16).collect()
    }

    fn noise(ms: u32, amp: f32, seed: &mut u32) -> Vec<i16> {
        (0..ms * 8)
            .map(|_| {
                *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((*seed >> 16) as f32 / 65_536.0 - 0.5) * 2.0 * amp
            })
            .map(|x| x as i16)
            .collect()
    }

    /// Feeds `audio` in 20 ms frames; the ms at which `over` first turned true.
    fn over_at(g: &mut GreetingEnd, audio: &[i16], arm_at_ms: u32) -> Option<u32> {
        for (i, frame) in audio.chunks(160).enumerate() {
            let now = i as u32 * 20;
            if now >= arm_at_ms {
                g.arm();
            }
            if g.push(frame) {
                return Some(now + 20);
            }
        }
        None
    }

    #[test]
    fn waits_for_the_quiet_after_the_beep_not_a_pause_in_the_greeting() {
        let mut seed = 7;
        // Line noise throughout; "speech" bursts with a 500 ms pause; a beep; then quiet.
        let mut audio = noise(1_000, 60.0, &mut seed);
        for _ in 0..3 {
            let burst: Vec<i16> = tone(900, 250.0, 6_000.0).iter().zip(noise(900, 60.0, &mut seed)).map(|(a, b)| a + b).collect();
            audio.extend(burst);
            audio.extend(noise(500, 60.0, &mut seed));
        }
        audio.extend(tone(600, 1_000.0, 8_000.0)); // the beep, ends at 5.8 s
        audio.extend(noise(4_000, 60.0, &mut seed));
        let mut g = GreetingEnd::new(&AmdConfig::default(), 1_200, 20_000);
        // Armed mid-greeting (a long-greeting verdict at 2.5 s).
        let at = over_at(&mut g, &audio, 2_500).expect("over");
        assert!((5_800 + 1_200..=5_800 + 1_400).contains(&at), "over at {at} ms");
    }

    #[test]
    fn not_before_armed_and_not_later_than_the_longest_wait() {
        let mut seed = 3;
        let audio = noise(3_000, 60.0, &mut seed);
        let mut g = GreetingEnd::new(&AmdConfig::default(), 1_200, 20_000);
        // Quiet all along, but nothing is said before the verdict.
        assert_eq!(over_at(&mut g, &audio, 2_000), Some(2_020));
        // A machine that never stops (syllables with short gaps): the wait runs out.
        let mut talk = Vec::new();
        for _ in 0..16 {
            talk.extend(tone(400, 250.0, 6_000.0));
            talk.extend(noise(100, 60.0, &mut seed));
        }
        let mut g = GreetingEnd::new(&AmdConfig::default(), 1_200, 3_000);
        assert_eq!(over_at(&mut g, &talk, 1_000), Some(4_000));
    }

    #[test]
    fn the_config_loads_the_message_and_names_bad_keys() {
        assert_eq!(VoicemailConfig::default().load(), Ok(None));
        let bad = VoicemailConfig { quiet_ms: 10, ..VoicemailConfig::default() };
        assert_eq!(bad.load().unwrap_err().key, "quiet_ms");
        let missing = VoicemailConfig { drop_wav: Some("/nonexistent/msg.wav".into()), ..VoicemailConfig::default() };
        let err = missing.load().unwrap_err();
        assert_eq!(err.key, "drop_wav");
        assert!(err.message.starts_with("/nonexistent/msg.wav"), "{err}");
    }
}
