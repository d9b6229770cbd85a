//! The speaker over the room: tells the callee's own voice from a continuous
//! background under it (music, other people talking, a TV) by level, so that
//! the first utterance is the voice and not the bed.
//!
//! A phone's microphone is at the speaker's mouth; the room is further away.
//! So a person who answers in a noisy room is louder than the bed, and after
//! their "Hello?" the line falls back to the bed's level, not to silence. The
//! voice activity detector, whose floor is the quietest moment of the last
//! 1.5 s, hears the bed as speech from the answer on, and the "utterance"
//! runs until it is long enough to be a recorded greeting. This module follows
//! the level smoothed over `bed_smooth_ms` and the loudest such level of the
//! utterance, and says two things about each frame:
//!
//! - **under the speaker**: more than `bed_drop_db` below the utterance's
//!   loudest: the bed, not the voice, so a pause (a recorded greeting falls to
//!   silence between its sentences, which the detector already counts as one);
//! - **a voice over the bed**: `bed_rise_db` or more above everything the
//!   utterance held so far, once it has run `bed_min_ms`: what came before was
//!   the bed, and the utterance starts again here.
//!
//! Promises: pure, allocation-free, one frame at a time; `bed_drop_db = 0`
//! turns the first rule off, `bed_rise_db = 0` the second, and with both off
//! the detector behaves as it did without this module.

use super::config::AmdConfig;
use super::vad::FRAME_MS;

/// Frames in the longest smoothing window `validate` allows (500 ms).
const MAX_SMOOTH_FRAMES: usize = 50;

/// What the bed tracker says about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BedFrame {
    /// The frame belongs to the background, not to the voice.
    pub under_speaker: bool,
    /// A voice rose over what the utterance held: start it again here.
    pub voice_over_bed: bool,
}

/// The smoothed level and the utterance's loudest.
#[derive(Debug, Clone)]
pub struct Bed {
    drop_db: f32,
    rise_db: f32,
    min_frames: u32,
    /// Linear powers of the last frames (a ring of `window` entries).
    powers: [f32; MAX_SMOOTH_FRAMES],
    window: usize,
    next: usize,
    filled: usize,
    /// Smoothed levels of the last `window` frames of the utterance, dBFS
    /// (a rise is measured against what came before it, not during it).
    recent: [f32; MAX_SMOOTH_FRAMES],
    /// Loudest smoothed level of the utterance older than `recent`, dBFS.
    settled_peak_dbfs: f32,
    /// Frames since the utterance (re)started.
    utterance_frames: u32,
}

impl Bed {
    pub fn new(config: &AmdConfig) -> Bed {
        let window = (config.bed_smooth_ms / FRAME_MS).clamp(1, MAX_SMOOTH_FRAMES as u32) as usize;
        Bed {
            drop_db: config.bed_drop_db,
            rise_db: config.bed_rise_db,
            min_frames: config.bed_min_ms / FRAME_MS,
            powers: [0.0; MAX_SMOOTH_FRAMES],
            window,
            next: 0,
            filled: 0,
            recent: [f32::NEG_INFINITY; MAX_SMOOTH_FRAMES],
            settled_peak_dbfs: f32::NEG_INFINITY,
            utterance_frames: 0,
        }
    }

    /// Takes the frame's level; `in_utterance` is whether the first utterance
    /// has begun (before it, nothing is under or over anything).
    pub fn frame(&mut self, level_dbfs: f32, in_utterance: bool) -> BedFrame {
        self.powers[self.next] = 10f32.powf(level_dbfs / 10.0);
        self.next = (self.next + 1) % self.window;
        self.filled = (self.filled + 1).min(self.window);
        let mean = self.powers[..self.filled].iter().sum::<f32>() / self.filled as f32;
        let smoothed = 10.0 * mean.max(1e-12).log10();
        if !in_utterance {
            return BedFrame::default();
        }
        self.utterance_frames += 1;
        let mut out = BedFrame::default();
        let slot = self.utterance_frames as usize % self.window;
        self.settled_peak_dbfs = self.settled_peak_dbfs.max(self.recent[slot]);
        self.recent[slot] = smoothed;
        if self.rise_db > 0.0 && self.utterance_frames > self.min_frames && smoothed >= self.settled_peak_dbfs + self.rise_db {
            // What came before was the room: forget it.
            out.voice_over_bed = true;
            self.utterance_frames = 0;
            self.settled_peak_dbfs = f32::NEG_INFINITY;
            self.recent = [f32::NEG_INFINITY; MAX_SMOOTH_FRAMES];
            self.recent[0] = smoothed;
        }
        let peak = self.recent[..self.window].iter().copied().fold(self.settled_peak_dbfs, f32::max);
        out.under_speaker = self.drop_db > 0.0 && smoothed < peak - self.drop_db;
        out
    }

    /// The smoothing window, in frames: how far back a restart reaches.
    pub fn window_frames(&self) -> u32 {
        self.window as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bed(drop_db: f32, rise_db: f32) -> Bed {
        Bed::new(&AmdConfig { bed_drop_db: drop_db, bed_rise_db: rise_db, ..AmdConfig::default() })
    }

    #[test]
    fn a_fall_to_the_bed_is_under_the_speaker_and_a_soft_syllable_is_not() {
        let mut b = bed(10.0, 0.0);
        let mut under = Vec::new();
        // The voice at -20 dBFS with a short dip, then the bed at -35.
        for level in [-20.0; 30].into_iter().chain([-32.0; 3]).chain([-20.0; 20]).chain([-35.0; 40]) {
            under.push(b.frame(level, true).under_speaker);
        }
        assert!(!under[..53].iter().any(|&u| u), "a 30 ms dip is smoothed over");
        let first = under.iter().position(|&u| u).unwrap();
        assert!((53..53 + 12).contains(&first), "the bed counts from {first}");
        assert!(under[first..].iter().all(|&u| u));
    }

    #[test]
    fn a_voice_rising_over_the_bed_restarts_the_utterance_once() {
        let mut b = bed(10.0, 6.0);
        let mut rises = Vec::new();
        for level in [-38.0; 100].into_iter().chain([-26.0; 50]).chain([-38.0; 50]) {
            rises.push(b.frame(level, true).voice_over_bed);
        }
        let at: Vec<usize> = rises.iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| i).collect();
        assert_eq!(at.len(), 1, "{at:?}");
        assert!((100..110).contains(&at[0]), "{at:?}");
    }

    #[test]
    fn nothing_is_said_before_the_utterance_or_with_the_keys_off() {
        let mut b = bed(10.0, 6.0);
        for level in [-60.0, -20.0, -50.0] {
            assert_eq!(b.frame(level, false), BedFrame::default());
        }
        let mut off = bed(0.0, 0.0);
        for level in [-20.0; 20].into_iter().chain([-60.0; 20]).chain([-10.0; 20]) {
            assert_eq!(off.frame(level, true), BedFrame::default());
        }
    }
}
