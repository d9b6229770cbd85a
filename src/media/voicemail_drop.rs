//! A call's voicemail drop inside the media machine: listens from the answer
//! (so the greeting detector learns the line's noise floor), waits once asked,
//! then hands the message out in pieces that fit the engine's ring and says
//! when it has been heard. Pure: samples in, samples to play out.

use crate::amd::AmdConfig;
use crate::audio::{RateConverter, ResampleError};
use crate::voicemail::{GreetingEnd, VoicemailConfig};

use super::machine::Playback;
use super::played_out::PlayedOut;

/// The drop's progress; see the module doc.
pub struct VoicemailDrop {
    greeting: GreetingEnd,
    /// The message at the device rate.
    message: Vec<i16>,
    rate: u32,
    state: DropState,
}

#[derive(Debug, PartialEq, Eq)]
enum DropState {
    Listening,
    Waiting,
    Playing { sent: usize, played: PlayedOut },
    Done,
}

/// What one frame did to the drop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DropStep {
    /// Message samples for the engine now (they fit its ring).
    pub play: Vec<i16>,
    /// Set once the whole message has been heard.
    pub left: Option<String>,
}

impl VoicemailDrop {
    /// `message` at 8 kHz; `rate`: the engine's rate.
    pub fn new(amd: &AmdConfig, cfg: &VoicemailConfig, message: &[i16], rate: u32) -> Result<VoicemailDrop, ResampleError> {
        let mut converted = Vec::with_capacity(message.len() * rate as usize / 8000 + 320);
        let mut converter = RateConverter::new(8000, rate)?;
        converter.push(message, |pcm| converted.extend_from_slice(pcm));
        // The last partial 20 ms block: pad it out with silence.
        converter.push(&vec![0; converter.chunk()], |pcm| converted.extend_from_slice(pcm));
        Ok(VoicemailDrop {
            greeting: GreetingEnd::new(amd, cfg.quiet_ms, cfg.max_wait_ms),
            message: converted,
            rate,
            state: DropState::Listening,
        })
    }

    /// The machine verdict is in: leave the message once the greeting ends.
    pub fn request(&mut self) {
        if self.state == DropState::Listening {
            self.greeting.arm();
            self.state = DropState::Waiting;
        }
    }

    /// Asked for and not yet heard whole.
    pub fn is_unfinished(&self) -> bool {
        matches!(self.state, DropState::Waiting | DropState::Playing { .. })
    }

    /// One captured frame; `playback` is the engine's state, updated by what
    /// this step plays.
    pub fn on_frame(&mut self, frame: &[i16], playback: &mut Playback, now_ms: u64) -> DropStep {
        let over = self.greeting.push(frame);
        if self.state == DropState::Waiting && over {
            self.state = DropState::Playing { sent: 0, played: PlayedOut::default() };
        }
        let mut step = DropStep::default();
        if let DropState::Playing { sent, played } = &mut self.state {
            if *sent < self.message.len() {
                let n = playback.room.min(self.message.len() - *sent);
                step.play.extend_from_slice(&self.message[*sent..*sent + n]);
                *sent += n;
                playback.take(n);
            } else if played.check(playback.pending, now_ms) {
                let ms = self.message.len() as u64 * 1000 / u64::from(self.rate);
                self.state = DropState::Done;
                step.left = Some(format!("{ms} ms message played"));
            }
        }
        step
    }
}
