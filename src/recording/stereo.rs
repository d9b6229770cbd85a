//! The two sides of a call as one stereo stream: left the caller (each
//! captured frame as it comes), right what the box played. What the box
//! plays is handed to the engine ahead of time, so it waits here in a
//! queue that drains one frame per captured frame, as the device plays it;
//! a barge-in's flush empties it (that audio was never heard). Pure.
//!
//! Promise: each captured frame of n samples gives exactly n stereo frames,
//! so the file's length is the call's length.

use std::collections::VecDeque;

/// The most played audio waiting (beyond it the oldest goes: the engine's
/// ring never holds this much, so only a stalled capture gets here).
const MAX_QUEUED_MS: usize = 5_000;

pub struct StereoMix {
    played: VecDeque<i16>,
    max_queued: usize,
}

impl StereoMix {
    pub fn new(rate: u32) -> StereoMix {
        let max_queued = rate as usize * MAX_QUEUED_MS / 1000;
        StereoMix { played: VecDeque::with_capacity(rate as usize), max_queued }
    }

    /// Samples handed to the engine for playback.
    pub fn played(&mut self, samples: &[i16]) {
        self.played.extend(samples.iter().copied());
        let over = self.played.len().saturating_sub(self.max_queued);
        self.played.drain(..over);
    }

    /// Playback was flushed: what was queued is never heard.
    pub fn flushed(&mut self) {
        self.played.clear();
    }

    /// One captured frame, interleaved with as much played audio (silence
    /// where nothing played).
    pub fn captured(&mut self, frame: &[i16], out: &mut Vec<i16>) {
        out.clear();
        out.reserve(frame.len() * 2);
        for &left in frame {
            out.push(left);
            out.push(self.played.pop_front().unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_is_the_caller_right_what_played_in_step_with_the_capture() {
        let mut mix = StereoMix::new(8000);
        let mut out = Vec::new();
        mix.captured(&[1, 2], &mut out);
        assert_eq!(out, [1, 0, 2, 0], "silence where nothing played");
        mix.played(&[10, 20, 30]);
        mix.captured(&[3, 4], &mut out);
        assert_eq!(out, [3, 10, 4, 20]);
        mix.flushed();
        mix.captured(&[5], &mut out);
        assert_eq!(out, [5, 0], "flushed audio was never heard");
        mix.played(&vec![9; 8000 * 6]);
        let mut total = 0;
        for _ in 0..400 {
            mix.captured(&[0; 160], &mut out);
            total += out.iter().skip(1).step_by(2).filter(|&&s| s == 9).count();
        }
        assert_eq!(total, 8000 * 5, "at most 5 s waits");
    }
}
