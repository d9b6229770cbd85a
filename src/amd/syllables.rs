//! Is it speech? One voice comes in syllables: between them, and at every stop
//! consonant, its level falls `speech_dip_db` or more below the loudest of the
//! frames around it (within `speech_dip_window_ms` either side). Music holds
//! its notes and chords, a fan or traffic holds its noise: their level seldom
//! falls that far that fast. This module counts the share of such dips in the
//! first utterance, so that the detector gives `long_greeting` (a machine)
//! only for sound that is speech.
//!
//! Measured on the tuning halves (10 ms frames, 10 dB, ±150 ms; an offline
//! estimate): recorded greetings dip in 0.09–0.77 of their frames (real
//! voices from 0.09, synthetic from 0.30), the benchmark's music beds alone in
//! 0.00–0.06. `speech_min_dip_share` = 0.08: at 0.03 a sixth of the music beds
//! alone were still `machine`; from 0.06 to 0.12 no verdict of the tuning
//! halves changes. Other people talking (a TV, babble) are speech too and dip
//! like it: this cannot tell them apart.
//!
//! Promises: pure, allocation-free; a frame is judged once the frames after it
//! within the window have been heard, so the share lags the audio by the window.

use super::config::AmdConfig;
use super::vad::FRAME_MS;

/// The widest half-window `validate` allows (500 ms), in frames.
const MAX_HALF: usize = 50;
const RING: usize = 2 * MAX_HALF + 1;

/// The share of syllable dips in the utterance so far.
#[derive(Debug, Clone)]
pub struct Syllables {
    depth_db: f32,
    half: usize,
    /// The levels of the last `2 * half + 1` frames, dBFS.
    levels: [f32; RING],
    /// Frames heard so far.
    heard: u32,
    /// Frames before this one are not counted (the utterance starts here).
    count_from: u32,
    counted: u32,
    dips: u32,
}

impl Syllables {
    pub fn new(config: &AmdConfig) -> Syllables {
        Syllables {
            depth_db: config.speech_dip_db,
            half: ((config.speech_dip_window_ms / FRAME_MS) as usize).clamp(1, MAX_HALF),
            levels: [f32::NEG_INFINITY; RING],
            heard: 0,
            count_from: u32::MAX,
            counted: 0,
            dips: 0,
        }
    }

    /// Takes the next frame's level.
    pub fn frame(&mut self, level_dbfs: f32) {
        let span = 2 * self.half + 1;
        self.levels[self.heard as usize % span] = level_dbfs;
        self.heard += 1;
        let Some(centre) = self.heard.checked_sub(self.half as u32 + 1) else {
            return;
        };
        if centre < self.count_from {
            return;
        }
        let filled = (self.heard as usize).min(span);
        let loudest = self.levels[..filled].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.counted += 1;
        if self.levels[centre as usize % span] < loudest - self.depth_db {
            self.dips += 1;
        }
    }

    /// Counts from frame `first` on (the utterance's start), forgetting the rest.
    pub fn count_from(&mut self, first: u32) {
        self.count_from = first;
        self.counted = 0;
        self.dips = 0;
    }

    /// Dips among the frames of the utterance judged so far (0 before any).
    pub fn dip_share(&self) -> f32 {
        if self.counted == 0 { 0.0 } else { self.dips as f32 / self.counted as f32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share_of(levels: impl IntoIterator<Item = f32>) -> f32 {
        let mut s = Syllables::new(&AmdConfig::default());
        s.count_from(0);
        for l in levels {
            s.frame(l);
        }
        s.dip_share()
    }

    #[test]
    fn syllables_dip_and_a_held_note_does_not() {
        // Syllables of 200 ms at -20 dBFS with 60 ms gaps at -40: the gaps dip.
        let speech = (0..300).map(|i| if i % 26 < 20 { -20.0 } else { -40.0 });
        let share = share_of(speech);
        assert!((0.15..0.30).contains(&share), "{share}");
        // A note decaying 3 dB a second, restruck every 450 ms: no dips.
        let music = (0..300).map(|i| -20.0 - 0.03 * (i % 45) as f32);
        assert_eq!(share_of(music), 0.0);
    }

    #[test]
    fn only_the_utterance_counts() {
        let mut s = Syllables::new(&AmdConfig::default());
        for i in 0..200 {
            s.frame(if i % 10 < 5 { -20.0 } else { -45.0 });
        }
        assert_eq!(s.dip_share(), 0.0, "nothing is counted before count_from");
        s.count_from(0);
        for i in 0..200 {
            s.frame(if i % 10 < 5 { -20.0 } else { -45.0 });
        }
        assert!(s.dip_share() > 0.3, "{}", s.dip_share());
        // A restart forgets the dips so far, and a steady sound adds none.
        s.count_from(400);
        for _ in 0..100 {
            s.frame(-20.0);
        }
        assert_eq!(s.dip_share(), 0.0);
    }
}
