//! The agent's audio inside the media machine: the caller's frames resampled
//! to the agent's input rate, the agent's speech resampled to the device rate
//! and gated by event id ([`Playout`]) so an interrupted turn never plays, and
//! the farewell: after a normal end, the conversation is over only once what
//! the agent said has been heard (or [`FAREWELL_LIMIT_MS`] passed).
//!
//! Pure: it returns effects ([`MediaEffect::ToAgent`], [`MediaEffect::Play`],
//! [`MediaEffect::Flush`], [`MediaEffect::EndUtterance`]) in the order the
//! driver must carry them out.

use crate::ai::{AiEvent, AudioFormat, Playout, SessionInfo};
use crate::audio::{RateConverter, ResampleError};
use crate::call::machine::AiInput;
use crate::call::record::Speaker;

use super::machine::{AiFigures, MediaEffect, Note, Playback};
use super::played_out::HeardBy;

/// Longest wait for the agent's farewell to play out before hanging up.
pub const FAREWELL_LIMIT_MS: u64 = 30_000;

/// Most agent audio held ahead of playback: a turn sent far faster than it
/// can play stops being taken in past this (memory on a Pi, not a limit a
/// real turn reaches).
const MAX_QUEUED_S: usize = 120;

/// Most agent samples moved to the engine in one [`MediaEffect::Play`].
const PLAY_CHUNK: usize = 1_600;

/// The agent's audio format cannot be bridged to the engine's rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// `input` (what the agent takes) or `output` (what it sends).
    pub side: &'static str,
    pub format: AudioFormat,
    pub source: ResampleError,
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "agent {} format {}: {}", self.side, self.format, self.source)
    }
}

impl std::error::Error for FormatError {}

/// The running conversation's audio path.
pub struct AgentAudio {
    /// Device rate → the agent's input rate.
    to_agent: RateConverter,
    /// The agent's output rate → device rate.
    to_device: RateConverter,
    /// Agent audio in turn order; the gate that drops interrupted turns.
    playout: Playout,
    last_event_id: Option<u64>,
    /// The conversation reported its end (or was lost): no more events.
    pub ended: bool,
    farewell: Option<Farewell>,
    /// Asked to tell when what the agent said has been heard (a transfer
    /// waits for it).
    playout_wait: Option<HeardBy>,
    /// Samples per chunk the provider takes; the first full one is "caller
    /// audio handed to the agent".
    chunk_samples: usize,
    sent_to_agent: usize,
    requested_at_ms: u64,
}

struct Farewell {
    reason: String,
    heard: HeardBy,
}

impl AgentAudio {
    /// The path between an engine at `rate` and a conversation described by
    /// `info`, asked for at `requested_at_ms`.
    pub fn new(info: &SessionInfo, chunk_samples: usize, rate: u32, requested_at_ms: u64) -> Result<AgentAudio, FormatError> {
        let to_agent = RateConverter::new(rate, info.input_format.rate()).map_err(|source| FormatError {
            side: "input",
            format: info.input_format,
            source,
        })?;
        let to_device = RateConverter::new(info.output_format.rate(), rate).map_err(|source| FormatError {
            side: "output",
            format: info.output_format,
            source,
        })?;
        Ok(AgentAudio {
            to_agent,
            to_device,
            playout: Playout::bounded(rate as usize * MAX_QUEUED_S),
            last_event_id: None,
            ended: false,
            farewell: None,
            playout_wait: None,
            chunk_samples: chunk_samples.max(1),
            sent_to_agent: 0,
            requested_at_ms,
        })
    }

    /// The caller's frame, on to the agent (until the conversation ends).
    pub fn caller_audio(&mut self, frame: &[i16], now_ms: u64, figures: &mut AiFigures, out: &mut Vec<MediaEffect>) {
        if self.ended {
            return;
        }
        let mut converted = Vec::with_capacity(frame.len() * self.to_agent.to_rate() as usize / self.to_agent.from_rate() as usize + 16);
        self.to_agent.push(frame, |pcm| converted.extend_from_slice(pcm));
        if converted.is_empty() {
            return;
        }
        self.sent_to_agent += converted.len();
        if figures.first_caller_audio_ms.is_none() && self.sent_to_agent >= self.chunk_samples {
            figures.first_caller_audio_ms = Some(self.since_request(now_ms));
        }
        out.push(MediaEffect::ToAgent(converted));
    }

    /// Moves queued agent audio into the engine, as much as its ring holds.
    pub fn pump(&mut self, playback: &mut Playback, now_ms: u64, figures: &mut AiFigures, out: &mut Vec<MediaEffect>) {
        loop {
            // No bigger than what is queued: this runs for every frame.
            let room = playback.room.min(PLAY_CHUNK).min(self.playout.queued_samples());
            if room == 0 {
                break;
            }
            let mut chunk = vec![0; room];
            let n = self.playout.pop(&mut chunk);
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            playback.take(n);
            out.push(MediaEffect::Play(chunk));
            if figures.first_agent_audio_ms.is_none() {
                figures.first_agent_audio_ms = Some(self.since_request(now_ms));
            }
        }
    }

    /// Plays what the resampler still holds of turn `event_id`.
    fn end_turn(&mut self, event_id: u64, playback: &mut Playback, now_ms: u64, figures: &mut AiFigures, out: &mut Vec<MediaEffect>) {
        let mut tail = Vec::new();
        self.to_device.finish(|pcm| tail.extend_from_slice(pcm));
        if self.playout.push(event_id, tail) {
            self.pump(playback, now_ms, figures, out);
        }
    }

    /// One event of the conversation (`None`: it stopped without an end).
    pub fn on_event(
        &mut self,
        event: Option<AiEvent>,
        playback: &mut Playback,
        now_ms: u64,
        figures: &mut AiFigures,
        out: &mut Vec<MediaEffect>,
    ) {
        let mut line = |speaker, text| out.push(MediaEffect::Ai(AiInput::Line { speaker, text }));
        match event {
            Some(AiEvent::Audio { event_id, samples }) => {
                if !self.playout.accepts(event_id) {
                    // A late chunk of an interrupted turn: it must not even
                    // reach the resampler, whose pending block would carry it
                    // into the next turn.
                    return;
                }
                if self.last_event_id != Some(event_id) {
                    if let Some(previous) = self.last_event_id {
                        // The previous turn is over: its last partial block
                        // plays now, and running dry after it is the end of
                        // speech, not an underrun.
                        self.end_turn(previous, playback, now_ms, figures, out);
                        out.push(MediaEffect::EndUtterance);
                    }
                    self.last_event_id = Some(event_id);
                }
                let ratio = self.to_device.to_rate() as usize / self.to_device.from_rate().max(1) as usize + 1;
                let mut converted = Vec::with_capacity(samples.len() * ratio + 16);
                self.to_device.push(&samples, |pcm| converted.extend_from_slice(pcm));
                if self.playout.push(event_id, converted) {
                    self.pump(playback, now_ms, figures, out);
                }
            }
            Some(AiEvent::Interruption { event_id }) => {
                let dropped_in_queue = self.playout.interrupt(event_id);
                self.to_device.reset();
                out.push(MediaEffect::Flush);
                out.push(MediaEffect::Note(Note::BargeIn { event_id, dropped_in_queue }));
                out.push(MediaEffect::Ai(AiInput::Interrupted));
            }
            Some(AiEvent::UserTranscript { text }) => line(Speaker::User, text),
            Some(AiEvent::AgentResponse { text }) => line(Speaker::Agent, text),
            Some(AiEvent::AgentResponseCorrection { corrected, .. }) => line(Speaker::AgentCorrection, corrected),
            Some(AiEvent::ToolCall { name, parameters, result, .. }) => {
                let error = if result.is_error { " (error)" } else { "" };
                line(Speaker::Tool, format!("{name}({parameters}) -> {}{error}", result.result));
            }
            Some(AiEvent::Queue { held }) => out.push(MediaEffect::Ai(AiInput::Queue { held })),
            Some(AiEvent::Ended(reason)) if reason.is_normal() => {
                self.ended = true;
                if let Some(last) = self.last_event_id {
                    self.end_turn(last, playback, now_ms, figures, out);
                }
                let reason = reason.to_string();
                out.push(MediaEffect::Note(Note::FarewellPlays { reason: reason.clone() }));
                self.farewell = Some(Farewell { reason, heard: HeardBy::new(now_ms + FAREWELL_LIMIT_MS) });
                // Nothing may be left to say.
                self.farewell_done(playback, now_ms, out);
            }
            Some(AiEvent::Ended(reason)) => {
                self.ended = true;
                out.push(MediaEffect::Ai(AiInput::Ended { by_agent: false, reason: reason.to_string() }));
            }
            None => {
                self.ended = true;
                out.push(MediaEffect::Ai(AiInput::Ended { by_agent: false, reason: "the agent session stopped without an end".into() }));
            }
        }
    }

    /// Once the farewell has been heard (or its limit passed): the end.
    pub fn farewell_done(&mut self, playback: &Playback, now_ms: u64, out: &mut Vec<MediaEffect>) {
        let pending = playback.pending + self.playout.queued_samples();
        if let Some(farewell) = self.farewell.take_if(|f| f.heard.over(pending, now_ms)) {
            out.push(MediaEffect::Ai(AiInput::Ended { by_agent: true, reason: farewell.reason }));
        }
    }

    /// Tell ([`MediaEffect::PlayedOut`]) once what the agent said so far has
    /// been heard, or at [`FAREWELL_LIMIT_MS`].
    pub fn await_playout(&mut self, playback: &Playback, now_ms: u64, out: &mut Vec<MediaEffect>) {
        self.playout_wait = Some(HeardBy::new(now_ms + FAREWELL_LIMIT_MS));
        self.playout_done(playback, now_ms, out);
    }

    /// Once the awaited playout has been heard (or its limit passed).
    pub fn playout_done(&mut self, playback: &Playback, now_ms: u64, out: &mut Vec<MediaEffect>) {
        let pending = playback.pending + self.playout.queued_samples();
        if self.playout_wait.take_if(|wait| wait.over(pending, now_ms)).is_some() {
            out.push(MediaEffect::PlayedOut);
        }
    }

    /// The audio stopped: nothing more can play, an awaited playout is over.
    pub fn cut_playout(&mut self, out: &mut Vec<MediaEffect>) {
        if self.playout_wait.take().is_some() {
            out.push(MediaEffect::PlayedOut);
        }
    }

    /// The farewell cannot play any further (the audio stopped): it ends now.
    pub fn cut_farewell(&mut self) -> Option<String> {
        self.farewell.take().map(|f| f.reason)
    }

    /// When the farewell or an awaited playout stops waiting.
    pub fn deadline_ms(&self) -> Option<u64> {
        [self.farewell.as_ref().map(|f| f.heard.give_up_at_ms), self.playout_wait.as_ref().map(|w| w.give_up_at_ms)]
            .into_iter()
            .flatten()
            .min()
    }

    fn since_request(&self, now_ms: u64) -> u32 {
        u32::try_from(now_ms.saturating_sub(self.requested_at_ms)).unwrap_or(u32::MAX)
    }
}
