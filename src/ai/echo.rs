//! The echo provider: a local stand-in for the agent, for site tests without
//! credits or network. It greets with a short 440 Hz tone, then plays each of
//! the caller's utterances back once the caller stops (an energy VAD on 20 ms
//! frames), and reports an interruption when the caller speaks while the
//! echo is still playing.
//!
//! Promises: no network and no files; time is counted in caller samples (the
//! caller's audio arrives in real time), so the echo is deterministic for a
//! given input; each reply is one new `event_id`; the session never ends by
//! itself (the call does).

use tokio::sync::mpsc;

use super::config::{AudioFormat, EchoConfig, PCM_RATES};

use super::{AiEvent, AiSession, CallContext, Provider, SessionInfo, SessionIo, StartError, StartFuture};
use crate::section::SectionError;

#[derive(Debug, Clone)]
pub struct Echo {
    cfg: EchoConfig,
    chunk_ms: u32,
}

impl Echo {
    pub fn new(cfg: EchoConfig, chunk_ms: u32) -> Result<Echo, SectionError> {
        if !PCM_RATES.contains(&cfg.rate) {
            return Err(SectionError::new("ai", "echo.rate", format!("must be one of {PCM_RATES:?}")));
        }
        Ok(Echo { cfg, chunk_ms: chunk_ms.clamp(10, 250) })
    }
}

impl Provider for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn start(&self, ctx: CallContext) -> StartFuture<'_> {
        let cfg = self.cfg.clone();
        let chunk = (cfg.rate * self.chunk_ms / 1000) as usize;
        Box::pin(async move {
            let info = SessionInfo {
                provider: "echo",
                conversation_id: format!("echo-{}", ctx.call_id),
                input_format: AudioFormat::Pcm(cfg.rate),
                output_format: AudioFormat::Pcm(cfg.rate),
            };
            let (mut session, io) = AiSession::channels(info, chunk);
            session.attach(tokio::spawn(run(cfg, io)));
            Ok::<_, StartError>(session)
        })
    }
}

/// A `ms` long 440 Hz tone at -12 dBFS with 10 ms ramps.
pub fn tone(rate: u32, ms: u32) -> Vec<i16> {
    let n = (rate as usize * ms as usize) / 1000;
    let ramp = (rate as usize / 100).max(1);
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let gain = (i.min(n - 1 - i) as f64 / ramp as f64).min(1.0);
            (8000.0 * gain * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect()
}

/// RMS of a frame in dBFS (-inf for silence is clamped to -120).
fn dbfs(frame: &[i16]) -> f64 {
    if frame.is_empty() {
        return -120.0;
    }
    let sum: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / frame.len() as f64).sqrt();
    if rms < 1.0 { -120.0 } else { 20.0 * (rms / 32768.0).log10() }
}

/// The echo's state machine, separate from the task for tests.
pub struct EchoCore {
    cfg: EchoConfig,
    frame: usize,
    carry: Vec<i16>,
    /// Caller samples seen so far: the echo's clock.
    clock: u64,
    /// The clock at which the current reply has played out.
    playing_until: u64,
    event_id: u64,
    utterance: Vec<i16>,
    speech_samples: u64,
    silence_samples: u64,
    in_speech: bool,
}

impl EchoCore {
    pub fn new(cfg: EchoConfig) -> EchoCore {
        let frame = (cfg.rate / 50) as usize;
        EchoCore {
            cfg,
            frame,
            carry: Vec::new(),
            clock: 0,
            playing_until: 0,
            event_id: 0,
            utterance: Vec::new(),
            speech_samples: 0,
            silence_samples: 0,
            in_speech: false,
        }
    }

    fn ms(&self, samples: u64) -> u64 {
        samples * 1000 / u64::from(self.cfg.rate)
    }

    fn reply(&mut self, text: String, samples: Vec<i16>, out: &mut Vec<AiEvent>) {
        self.event_id += 1;
        self.playing_until = self.clock + samples.len() as u64;
        out.push(AiEvent::AgentResponse { text });
        out.push(AiEvent::Audio { event_id: self.event_id, samples });
    }

    /// The greeting.
    pub fn greet(&mut self) -> Vec<AiEvent> {
        let mut out = Vec::new();
        let t = tone(self.cfg.rate, self.cfg.greeting_ms);
        self.reply("(echo) greeting tone".into(), t, &mut out);
        out
    }

    /// Feeds caller audio; returns what the echo does about it.
    pub fn push(&mut self, pcm: &[i16]) -> Vec<AiEvent> {
        let mut out = Vec::new();
        self.carry.extend_from_slice(pcm);
        let frames = self.carry.len() / self.frame;
        let carry = std::mem::take(&mut self.carry);
        for f in carry.chunks_exact(self.frame).take(frames) {
            self.frame_in(f, &mut out);
        }
        self.carry = carry[frames * self.frame..].to_vec();
        out
    }

    fn frame_in(&mut self, f: &[i16], out: &mut Vec<AiEvent>) {
        self.clock += f.len() as u64;
        let speech = dbfs(f) > self.cfg.threshold_dbfs;
        if speech {
            if !self.in_speech && self.clock <= self.playing_until && self.event_id > 0 {
                // The caller talks over the echo: barge-in.
                out.push(AiEvent::Interruption { event_id: self.event_id });
                self.playing_until = 0;
            }
            self.in_speech = true;
            self.speech_samples += f.len() as u64;
            self.silence_samples = 0;
        } else if self.in_speech {
            self.silence_samples += f.len() as u64;
        }
        if self.in_speech {
            self.utterance.extend_from_slice(f);
        }
        let too_long = self.ms(self.utterance.len() as u64) >= u64::from(self.cfg.max_utterance_ms);
        if self.in_speech && (self.ms(self.silence_samples) >= u64::from(self.cfg.silence_ms) || too_long) {
            let speech_ms = self.ms(self.speech_samples);
            let mut utterance = std::mem::take(&mut self.utterance);
            utterance.truncate(utterance.len() - self.silence_samples as usize);
            self.in_speech = false;
            self.speech_samples = 0;
            self.silence_samples = 0;
            if speech_ms >= u64::from(self.cfg.min_speech_ms) {
                out.push(AiEvent::UserTranscript { text: format!("({speech_ms} ms of speech)") });
                self.reply(format!("(echo) {speech_ms} ms"), utterance, out);
            }
        }
    }
}

async fn run(cfg: EchoConfig, io: SessionIo) {
    // Texts for the agent mean nothing to an echo: kept open, never read.
    let SessionIo { mut audio, texts: _texts, events, mut stop } = io;
    let mut core = EchoCore::new(cfg);
    // A full channel waits here: the caller's audio queues (and is dropped
    // and counted by the session's handle) rather than events piling up.
    async fn send(events: &mpsc::Sender<AiEvent>, evs: Vec<AiEvent>) -> bool {
        for e in evs {
            if events.send(e).await.is_err() {
                return false;
            }
        }
        true
    }
    if !send(&events, core.greet()).await {
        return;
    }
    loop {
        tokio::select! {
            _ = &mut stop => return,
            chunk = audio.recv() => match chunk {
                Some(pcm) => {
                    if !send(&events, core.push(&pcm)).await {
                        return;
                    }
                }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn speech(ms: u32) -> Vec<i16> {
        tone(16000, ms).iter().map(|s| s / 2).collect()
    }

    fn silence(ms: u32) -> Vec<i16> {
        vec![0; (16 * ms) as usize]
    }

    #[test]
    fn greets_then_plays_back_after_the_caller_stops() {
        let mut core = EchoCore::new(EchoConfig::default());
        let greet = core.greet();
        assert!(matches!(&greet[1], AiEvent::Audio { event_id: 1, samples } if samples.len() == 6400));
        assert!(core.push(&silence(1000)).is_empty());
        assert!(core.push(&speech(500)).is_empty());
        assert!(core.push(&silence(600)).is_empty(), "not yet: 700 ms of silence ends it");
        let out = core.push(&silence(120));
        let audio = out.iter().find_map(|e| match e {
            AiEvent::Audio { event_id, samples } => Some((*event_id, samples.len())),
            _ => None,
        });
        assert_eq!(audio, Some((2, 8000)), "{out:?}");
    }

    #[test]
    fn clicks_are_ignored_and_talking_over_the_echo_interrupts_it() {
        let mut core = EchoCore::new(EchoConfig::default());
        core.greet();
        // Speaking during the greeting (400 ms) interrupts it.
        let out = core.push(&speech(100));
        assert_eq!(out, vec![AiEvent::Interruption { event_id: 1 }]);
        // 100 ms of speech is below min_speech_ms: no echo.
        assert!(core.push(&silence(800)).is_empty());
    }

    #[tokio::test]
    async fn the_provider_runs_through_the_session_handle() {
        let p = Echo::new(EchoConfig::default(), 20).unwrap();
        let mut s = p.start(CallContext::new("c1", "123")).await.unwrap();
        assert_eq!(s.info().conversation_id, "echo-c1");
        assert!(matches!(s.next_event().await, Some(AiEvent::AgentResponse { .. })));
        assert!(matches!(s.next_event().await, Some(AiEvent::Audio { event_id: 1, .. })));
        // In 20 ms pieces, letting the echo task run (the queue holds 1 s).
        let input = [silence(500), speech(400), silence(800)].concat();
        for piece in input.chunks(320) {
            s.send_audio(piece).unwrap();
            tokio::task::yield_now().await;
        }
        assert_eq!(s.audio_counters().1, 0, "nothing dropped");
        let mut got = None;
        while let Some(e) = tokio::time::timeout(Duration::from_secs(2), s.next_event()).await.unwrap() {
            if let AiEvent::Audio { event_id, samples } = e {
                got = Some((event_id, samples.len()));
                break;
            }
        }
        assert_eq!(got, Some((2, 6400)));
        s.end().await;
    }
}
