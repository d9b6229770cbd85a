//! The media session's decisions as a pure machine: what happens to each
//! frame of the caller's audio, to each agent event and to each signal from
//! the controller, from the engine's start to the end of the call. Inputs come
//! in with a [`Now`]; effects go out for the driver (`session.rs`) to carry out
//! in order. No I/O, no clock, no tokio.
//!
//! Owns: early-media analysis until the answer, answer classification from the
//! answer, the voicemail drop, the agent's audio path (resampling, playout
//! gated by event id, the farewell) and the AI figures for the record.
//!
//! Promises, each held by a test below:
//! - at most one verdict, and exactly one when classification is on (an
//!   `unknown` when the audio ends first);
//! - [`MediaEffect::ConnectAgent`] only after [`MediaInput::StartAi`], at most once;
//! - the agent is readied ahead ([`MediaEffect::WarmAgent`]: its URL from the
//!   engine's start, [`MediaEffect::ConnectWarmAgent`]: its connection from
//!   the answer, never before) and the readied connection is let go
//!   ([`MediaEffect::CoolAgent`]) at a `machine` verdict;
//! - after an interruption, no agent audio of the interrupted turns plays;
//! - a normal end of the conversation is reported only once its farewell has
//!   been heard (or its limit passed, or the audio stopped), and so is an
//!   awaited playout ([`MediaEffect::PlayedOut`], once per
//!   [`MediaInput::AwaitPlayout`]: a transfer waits for the last words);
//! - the voicemail message plays only once the greeting is over, and is
//!   reported left only once it has been heard whole;
//! - [`MediaEffect::Play`] never hands the engine more than its ring holds;
//! - a verdict comes within [`VERDICT_GRACE_MS`] past the classifier's own
//!   limit of wall time from the answer, even if the audio stalls (a stuck
//!   device delivers no frames, and the classifier counts frames).

use std::sync::Arc;

use crate::ai::SessionInfo;
use crate::amd::{Amd, AmdConfig, EarlyMedia, EarlyMediaReport, Verdict};
use crate::call::machine::AiInput;
use crate::clock::Now;
use crate::voicemail::VoicemailConfig;

use super::agent_audio::AgentAudio;
use super::voicemail_drop::VoicemailDrop;

/// Wall time past `[amd] max_decision_ms` after which a classifier still
/// without a verdict is made to give one (an `unknown`).
pub const VERDICT_GRACE_MS: u64 = 2_000;

/// The engine's playback side, read by the driver just before an input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Playback {
    /// Agent samples in the ring, not yet taken by the real-time thread.
    pub pending: usize,
    /// Free space in the ring, in samples.
    pub room: usize,
}

impl Playback {
    /// Accounts for `n` samples handed to the engine.
    pub(crate) fn take(&mut self, n: usize) {
        self.room -= n.min(self.room);
        self.pending += n;
    }
}

/// The AI bridge's figures for the call record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AiFigures {
    /// From the request to the first caller audio handed to the agent.
    pub first_caller_audio_ms: Option<u32>,
    /// From the request to the first agent audio queued for playback.
    pub first_agent_audio_ms: Option<u32>,
    /// Caller chunks dropped because the provider lagged.
    pub dropped_chunks: u64,
}

/// What a session is set up with.
#[derive(Clone, Default)]
pub struct MediaSetup {
    /// Started at the answer; else in early media, until [`MediaInput::Answered`].
    pub answered: bool,
    /// `None`: no classification (no verdict is reported).
    pub amd: Option<AmdConfig>,
    /// An AI provider is configured.
    pub has_provider: bool,
    /// The voicemail message (8 kHz) and its settings; `None`: no drop.
    pub voicemail: Option<(Arc<Vec<i16>>, VoicemailConfig)>,
}

/// What happens to the session.
#[derive(Debug)]
pub enum MediaInput<'a> {
    /// The audio engine runs at `rate` (the first input, or [`Self::EngineUnavailable`]).
    EngineStarted { rate: u32 },
    /// The audio engine could not start.
    EngineUnavailable,
    /// 200 OK: early-media analysis ends, classification starts.
    Answered,
    /// One frame of the caller's audio.
    Frame { samples: &'a [i16], playback: Playback },
    /// The engine stopped during the call.
    EngineStopped { reason: String },
    /// The controller's go for the AI conversation.
    StartAi,
    /// The controller's go for the voicemail drop (a machine answered).
    DropVoicemail,
    /// The conversation asked for by [`MediaEffect::ConnectAgent`] runs.
    AgentConnected { info: &'a SessionInfo, chunk_samples: usize },
    /// It could not start.
    AgentStartFailed { reason: String },
    /// An event of the running conversation (`None`: it stopped without an end).
    Agent { event: Option<crate::ai::AiEvent>, playback: Playback },
    /// [`MediaMachine::next_deadline`] has come.
    Tick { playback: Playback },
    /// The controller waits until what the agent said has been heard (a
    /// transfer): [`MediaEffect::PlayedOut`] follows, once.
    AwaitPlayout { playback: Playback },
    /// The call is over: the last effects (a verdict still owed), then nothing.
    Stop,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEffect {
    /// Report the answer's verdict to the controller.
    Verdict(Verdict),
    /// Report this about the conversation to the controller.
    Ai(AiInput),
    /// Report the voicemail drop's end: `left`, or why it could not be.
    Voicemail { left: bool, detail: String },
    /// Ready the provider's conversation (fetch what needs no connection).
    WarmAgent,
    /// The call is answered: the readied conversation may open its connection.
    ConnectWarmAgent,
    /// Let the readied conversation go (a machine answered).
    CoolAgent,
    /// Start the provider's conversation (with what was readied);
    /// [`MediaInput::AgentConnected`] or [`MediaInput::AgentStartFailed`] follows.
    ConnectAgent,
    /// End the conversation (it started but cannot be bridged).
    EndAgent,
    /// Caller audio for the agent, at its input rate.
    ToAgent(Vec<i16>),
    /// Samples for the engine's playback ring (they fit).
    Play(Vec<i16>),
    /// Drop the agent audio queued in the engine (barge-in).
    Flush,
    /// What was played so far ends an utterance: running dry there is not an underrun.
    EndUtterance,
    /// What the agent said has been heard (after [`MediaInput::AwaitPlayout`]).
    PlayedOut,
    /// Something worth a log line.
    Note(Note),
}

/// Log-worthy moments, for the driver to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    EarlyMediaAnalysed { kind: &'static str, analysed_ms: u32 },
    BargeIn { event_id: u64, dropped_in_queue: usize },
    FarewellPlays { reason: String },
    VoicemailWaitsForTheGreeting,
    VoicemailUnusable { reason: String },
}

enum Engine {
    Opening,
    Running { rate: u32 },
    Gone,
}

/// The media session's state; see the module doc.
pub struct MediaMachine {
    setup: MediaSetup,
    engine: Engine,
    answered: bool,
    early: Option<EarlyMedia>,
    early_report: Option<EarlyMediaReport>,
    amd: Option<Amd>,
    voicemail: Option<VoicemailDrop>,
    voicemail_asked: bool,
    ai_requested_at_ms: Option<u64>,
    agent: Option<AgentAudio>,
    figures: AiFigures,
    /// When classification must be over, by the clock (set once it runs).
    verdict_due_ms: Option<u64>,
    /// A [`MediaEffect::WarmAgent`] is out and not let go.
    warm: bool,
}

/// What the session leaves for the call record.
#[derive(Debug, Default, PartialEq)]
pub struct MediaSummary {
    /// `None` unless the conversation was asked for.
    pub ai: Option<AiFigures>,
    pub early_media: Option<EarlyMediaReport>,
}

impl MediaMachine {
    pub fn new(setup: MediaSetup) -> MediaMachine {
        let amd = if setup.answered { new_amd(&setup) } else { None };
        let early = if setup.answered { None } else { setup.amd.as_ref().and_then(|cfg| EarlyMedia::new(cfg).ok()) };
        MediaMachine {
            answered: setup.answered,
            setup,
            engine: Engine::Opening,
            early,
            early_report: None,
            amd,
            voicemail: None,
            voicemail_asked: false,
            ai_requested_at_ms: None,
            agent: None,
            figures: AiFigures::default(),
            verdict_due_ms: None,
            warm: false,
        }
    }

    /// Whether the driver should wait for the conversation's next event.
    pub fn wants_agent_events(&self) -> bool {
        self.agent.as_ref().is_some_and(|a| !a.ended)
    }

    /// When to send [`MediaInput::Tick`] (milliseconds of [`Now::mono_ms`]).
    pub fn next_deadline(&self) -> Option<u64> {
        let verdict = self.verdict_due_ms.filter(|_| self.amd.is_some());
        [self.agent.as_ref().and_then(AgentAudio::deadline_ms), verdict].into_iter().flatten().min()
    }

    pub fn handle(&mut self, input: MediaInput<'_>, now: Now) -> Vec<MediaEffect> {
        let mut out = Vec::new();
        let now_ms = now.mono_ms;
        match input {
            MediaInput::EngineStarted { rate } => {
                self.on_engine_started(rate, &mut out);
                self.arm_verdict_deadline(now_ms);
            }
            MediaInput::EngineUnavailable => {
                self.engine = Engine::Gone;
                self.finish_classification(&mut out);
            }
            MediaInput::Answered => {
                self.on_answered(&mut out);
                self.arm_verdict_deadline(now_ms);
            }
            MediaInput::Frame { samples, mut playback } => self.on_frame(samples, &mut playback, now_ms, &mut out),
            MediaInput::EngineStopped { reason } => self.on_engine_stopped(&reason, &mut out),
            MediaInput::StartAi => self.on_start_ai(now_ms, &mut out),
            MediaInput::DropVoicemail => self.on_drop_voicemail(&mut out),
            MediaInput::AgentConnected { info, chunk_samples } => self.on_agent_connected(info, chunk_samples, now_ms, &mut out),
            MediaInput::AgentStartFailed { reason } => out.push(MediaEffect::Ai(AiInput::StartFailed { reason })),
            MediaInput::Agent { event, mut playback } => {
                if let Some(agent) = self.agent.as_mut().filter(|a| !a.ended) {
                    agent.on_event(event, &mut playback, now_ms, &mut self.figures, &mut out);
                }
            }
            MediaInput::Tick { playback } => {
                if let Some(agent) = self.agent.as_mut() {
                    agent.farewell_done(&playback, now_ms, &mut out);
                    agent.playout_done(&playback, now_ms, &mut out);
                }
                if self.verdict_due_ms.is_some_and(|due| now_ms >= due) {
                    // No frames (a stalled device): the classifier cannot
                    // decide by itself, so it decides now.
                    self.finish_classification(&mut out);
                }
            }
            MediaInput::AwaitPlayout { playback } => match self.agent.as_mut() {
                Some(agent) if matches!(self.engine, Engine::Running { .. }) => agent.await_playout(&playback, now_ms, &mut out),
                // Nothing plays: nothing to wait for.
                _ => out.push(MediaEffect::PlayedOut),
            },
            MediaInput::Stop => self.finish_classification(&mut out),
        }
        out
    }

    /// What is left for the record once the session is over.
    pub fn summary(&mut self, dropped_chunks: u64) -> MediaSummary {
        let ai = self.ai_requested_at_ms.map(|_| AiFigures { dropped_chunks, ..self.figures.clone() });
        let early_media = self.early_report.take().or_else(|| self.early.take().map(|e| e.report()));
        MediaSummary { ai, early_media }
    }

    /// Classification runs from now on (or already did): it is due by the clock.
    fn arm_verdict_deadline(&mut self, now_ms: u64) {
        if let (Some(cfg), Some(_), None) = (&self.setup.amd, &self.amd, self.verdict_due_ms) {
            self.verdict_due_ms = Some(now_ms + u64::from(cfg.max_decision_ms) + VERDICT_GRACE_MS);
        }
    }

    fn on_engine_started(&mut self, rate: u32, out: &mut Vec<MediaEffect>) {
        self.engine = Engine::Running { rate };
        // A person may answer: the agent's set-up starts now, off the path
        // from the verdict to the first word.
        if self.setup.has_provider && self.ai_requested_at_ms.is_none() {
            self.warm = true;
            out.push(MediaEffect::WarmAgent);
            if self.answered {
                out.push(MediaEffect::ConnectWarmAgent);
            }
        }
        // The voicemail drop listens from the answer on (its noise floor).
        if let (Some((message, cfg)), Some(amd)) = (&self.setup.voicemail, &self.setup.amd) {
            match VoicemailDrop::new(amd, cfg, message, rate) {
                Ok(drop) => self.voicemail = Some(drop),
                Err(err) => out.push(MediaEffect::Note(Note::VoicemailUnusable { reason: err.to_string() })),
            }
        }
    }

    fn on_answered(&mut self, out: &mut Vec<MediaEffect>) {
        if self.answered {
            return;
        }
        self.answered = true;
        self.early_report = self.early.take().map(|e| e.report());
        if let Some(report) = &self.early_report {
            out.push(MediaEffect::Note(Note::EarlyMediaAnalysed { kind: report.kind.as_str(), analysed_ms: report.analysed_ms }));
        }
        self.amd = new_amd(&self.setup);
        if self.warm {
            out.push(MediaEffect::ConnectWarmAgent);
        }
        if !matches!(self.engine, Engine::Running { .. }) {
            self.finish_classification(out);
        }
    }

    fn on_frame(&mut self, samples: &[i16], playback: &mut Playback, now_ms: u64, out: &mut Vec<MediaEffect>) {
        if !matches!(self.engine, Engine::Running { .. }) {
            return;
        }
        if let Some(analyser) = self.early.as_mut() {
            analyser.push(samples);
        }
        if let Some(verdict) = self.amd.as_mut().and_then(|detector| detector.push(samples)) {
            self.amd = None;
            self.report_verdict(verdict, out);
        }
        if let Some(agent) = self.agent.as_mut() {
            agent.caller_audio(samples, now_ms, &mut self.figures, out);
            agent.pump(playback, now_ms, &mut self.figures, out);
            agent.farewell_done(playback, now_ms, out);
            agent.playout_done(playback, now_ms, out);
        }
        if let Some(drop) = self.voicemail.as_mut() {
            let step = drop.on_frame(samples, playback, now_ms);
            if !step.play.is_empty() {
                out.push(MediaEffect::Play(step.play));
            }
            if let Some(detail) = step.left {
                out.push(MediaEffect::Voicemail { left: true, detail });
            }
        }
    }

    fn on_engine_stopped(&mut self, reason: &str, out: &mut Vec<MediaEffect>) {
        self.engine = Engine::Gone;
        if let Some(agent) = self.agent.as_mut() {
            agent.cut_playout(out);
            match agent.cut_farewell() {
                // A farewell under way cannot play any further: it ends now.
                Some(reason) => out.push(MediaEffect::Ai(AiInput::Ended { by_agent: true, reason })),
                None if !agent.ended => {
                    agent.ended = true;
                    out.push(MediaEffect::Ai(AiInput::Ended { by_agent: false, reason: format!("no audio any more ({reason})") }));
                }
                None => {}
            }
        }
        if self.voicemail.take().is_some_and(|d| d.is_unfinished()) {
            out.push(MediaEffect::Voicemail { left: false, detail: format!("no audio any more ({reason})") });
        }
        self.finish_classification(out);
    }

    fn on_start_ai(&mut self, now_ms: u64, out: &mut Vec<MediaEffect>) {
        if self.ai_requested_at_ms.is_some() {
            return;
        }
        self.ai_requested_at_ms = Some(now_ms);
        let reason = match (self.setup.has_provider, &self.engine) {
            (true, Engine::Running { .. }) => return out.push(MediaEffect::ConnectAgent),
            (false, _) => "no AI provider configured",
            (true, _) => "no audio (the audio engine is not running)",
        };
        out.push(MediaEffect::Ai(AiInput::StartFailed { reason: reason.into() }));
    }

    fn on_agent_connected(&mut self, info: &SessionInfo, chunk_samples: usize, now_ms: u64, out: &mut Vec<MediaEffect>) {
        let requested_at_ms = self.ai_requested_at_ms.unwrap_or(now_ms);
        let bridged = match self.engine {
            Engine::Running { rate } => AgentAudio::new(info, chunk_samples, rate, requested_at_ms).map_err(|e| e.to_string()),
            _ => Err("no audio (the audio engine stopped)".to_string()),
        };
        match bridged {
            Ok(agent) => {
                self.agent = Some(agent);
                let setup_ms = u32::try_from(now_ms.saturating_sub(requested_at_ms)).unwrap_or(u32::MAX);
                let started =
                    AiInput::Started { provider: info.provider.to_string(), conversation_id: info.conversation_id.clone(), setup_ms };
                out.push(MediaEffect::Ai(started));
            }
            Err(reason) => {
                out.push(MediaEffect::EndAgent);
                out.push(MediaEffect::Ai(AiInput::StartFailed { reason }));
            }
        }
    }

    fn on_drop_voicemail(&mut self, out: &mut Vec<MediaEffect>) {
        if self.voicemail_asked {
            return;
        }
        self.voicemail_asked = true;
        match self.voicemail.as_mut() {
            Some(drop) => {
                drop.request();
                out.push(MediaEffect::Note(Note::VoicemailWaitsForTheGreeting));
            }
            None => {
                let detail = "no audio (the audio engine is not running)".to_string();
                out.push(MediaEffect::Voicemail { left: false, detail });
            }
        }
    }

    /// No more audio for the classifier: it decides now (an `unknown`).
    fn finish_classification(&mut self, out: &mut Vec<MediaEffect>) {
        if let Some(mut detector) = self.amd.take() {
            let verdict = detector.finish();
            self.report_verdict(verdict, out);
        }
    }

    fn report_verdict(&mut self, verdict: Verdict, out: &mut Vec<MediaEffect>) {
        out.push(MediaEffect::Verdict(verdict));
        if verdict.kind == crate::amd::Kind::Machine && std::mem::take(&mut self.warm) {
            out.push(MediaEffect::CoolAgent);
        }
    }
}

fn new_amd(setup: &MediaSetup) -> Option<Amd> {
    setup.amd.as_ref().and_then(|cfg| Amd::new(cfg).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::{AiEvent, AudioFormat, EndReason};
    use crate::amd::Kind;

    const RATE: u32 = 8000;
    const FRAME: usize = 160;

    fn at(ms: u64) -> Now {
        Now { mono_ms: ms, unix_ms: 0 }
    }

    fn setup(answered: bool) -> MediaSetup {
        MediaSetup { answered, amd: Some(AmdConfig::default()), has_provider: true, voicemail: None }
    }

    fn running(setup: MediaSetup) -> MediaMachine {
        let mut m = MediaMachine::new(setup);
        let readied = m.handle(MediaInput::EngineStarted { rate: RATE }, at(0));
        assert!(readied.iter().all(|e| matches!(e, MediaEffect::WarmAgent | MediaEffect::ConnectWarmAgent)), "{readied:?}");
        m
    }

    #[test]
    fn the_agent_is_readied_from_the_start_connected_from_the_answer_and_let_go_for_a_machine() {
        // Early media: the URL now, the connection only at the answer.
        let mut m = MediaMachine::new(setup(false));
        assert_eq!(m.handle(MediaInput::EngineStarted { rate: RATE }, at(0)), vec![MediaEffect::WarmAgent]);
        assert!(feed(&mut m, &tone(400, 0.0, 0.0), 0, Playback::default()).iter().all(|e| *e != MediaEffect::ConnectWarmAgent));
        let answered = m.handle(MediaInput::Answered, at(500));
        assert_eq!(answered.iter().filter(|e| **e == MediaEffect::ConnectWarmAgent).count(), 1, "{answered:?}");
        // A machine: the readied connection is let go with the verdict.
        let effects = feed(&mut m, &clip("clip_0023.flac"), 500, Playback::default());
        let verdict = effects.iter().position(|e| matches!(e, MediaEffect::Verdict(v) if v.kind == Kind::Machine)).expect("machine");
        assert_eq!(effects.get(verdict + 1), Some(&MediaEffect::CoolAgent), "{effects:?}");
        assert_eq!(effects.iter().filter(|e| **e == MediaEffect::CoolAgent).count(), 1);

        // Started at the answer: both at once; a person keeps it for the start.
        let mut m = MediaMachine::new(setup(true));
        assert_eq!(m.handle(MediaInput::EngineStarted { rate: RATE }, at(0)), vec![MediaEffect::WarmAgent, MediaEffect::ConnectWarmAgent]);
        let effects = feed(&mut m, &clip("clip_0008.flac"), 0, Playback::default());
        assert!(effects.iter().any(|e| matches!(e, MediaEffect::Verdict(v) if v.kind == Kind::Human)));
        assert!(!effects.contains(&MediaEffect::CoolAgent));
        assert_eq!(m.handle(MediaInput::StartAi, at(9_000)), vec![MediaEffect::ConnectAgent]);

        // No provider, or no engine: nothing to ready.
        let mut m = MediaMachine::new(MediaSetup { has_provider: false, ..setup(true) });
        assert!(m.handle(MediaInput::EngineStarted { rate: RATE }, at(0)).is_empty());
        let mut m = MediaMachine::new(setup(true));
        assert!(!m.handle(MediaInput::EngineUnavailable, at(0)).iter().any(|e| matches!(e, MediaEffect::WarmAgent)));
    }

    fn info() -> SessionInfo {
        SessionInfo {
            provider: "echo",
            conversation_id: "conv-1".into(),
            input_format: AudioFormat::Pcm(16_000),
            output_format: AudioFormat::Pcm(16_000),
        }
    }

    /// A machine with a conversation running, asked for at 0 ms, up at 300 ms.
    fn talking() -> MediaMachine {
        let mut m = running(MediaSetup { amd: None, ..setup(true) });
        assert_eq!(m.handle(MediaInput::StartAi, at(0)), vec![MediaEffect::ConnectAgent]);
        let up = m.handle(MediaInput::AgentConnected { info: &info(), chunk_samples: 320 }, at(300));
        let started = AiInput::Started { provider: "echo".into(), conversation_id: "conv-1".into(), setup_ms: 300 };
        assert_eq!(up, vec![MediaEffect::Ai(started)]);
        m
    }

    fn verdicts(effects: &[MediaEffect]) -> Vec<Verdict> {
        effects.iter().filter_map(|e| if let MediaEffect::Verdict(v) = e { Some(*v) } else { None }).collect()
    }

    fn played(effects: &[MediaEffect]) -> usize {
        effects.iter().map(|e| if let MediaEffect::Play(s) = e { s.len() } else { 0 }).sum()
    }

    fn ai_inputs(effects: &[MediaEffect]) -> Vec<AiInput> {
        effects.iter().filter_map(|e| if let MediaEffect::Ai(i) = e { Some(i.clone()) } else { None }).collect()
    }

    fn tone(ms: usize, hz: f32, amp: f32) -> Vec<i16> {
        (0..ms * 8).map(|i| (amp * (2.0 * std::f32::consts::PI * hz * i as f32 / 8000.0).sin()) as i16).collect()
    }

    fn noise(ms: usize, seed: &mut u32) -> Vec<i16> {
        (0..ms * 8)
            .map(|_| {
                *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (((*seed >> 16) as f32 / 65_536.0 - 0.5) * 120.0) as i16
            })
            .collect()
    }

    fn turn(event_id: u64, ms: usize) -> AiEvent {
        // 16 kHz agent audio.
        AiEvent::Audio { event_id, samples: (0..ms * 16).map(|i| ((i % 64) as i16 - 32) * 300).collect() }
    }

    /// Feeds `audio` as frames from `from_ms`; all effects, in order.
    fn feed(m: &mut MediaMachine, audio: &[i16], from_ms: u64, playback: Playback) -> Vec<MediaEffect> {
        let mut all = Vec::new();
        for (i, frame) in audio.chunks(FRAME).enumerate() {
            all.extend(m.handle(MediaInput::Frame { samples: frame, playback }, at(from_ms + 20 * i as u64)));
        }
        all
    }

    fn clip(name: &str) -> Vec<i16> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/amd/synthetic").join(name);
        let mut reader = claxon::FlacReader::open(&path).expect("FLAC fixture");
        reader.samples().map(|s| s.expect("sample") as i16).collect()
    }

    #[test]
    fn a_person_gets_exactly_one_verdict() {
        let mut m = running(setup(true));
        // "Hello, Greenfield Clinic, how can I help? | Are you there?"
        let effects = feed(&mut m, &clip("clip_0001.flac"), 0, Playback::default());
        let found = verdicts(&effects);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, Kind::Human);
        assert!(verdicts(&m.handle(MediaInput::EngineStopped { reason: "gone".into() }, at(9_000))).is_empty());
        assert!(verdicts(&m.handle(MediaInput::Stop, at(9_100))).is_empty());
    }

    #[test]
    fn audio_that_ends_first_still_gives_one_verdict_unknown() {
        // The engine never starts.
        let mut m = MediaMachine::new(setup(true));
        let found = verdicts(&m.handle(MediaInput::EngineUnavailable, at(0)));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Unknown);
        assert!(verdicts(&m.handle(MediaInput::Stop, at(10))).is_empty());
        // The engine stops mid-classification.
        let mut m = running(setup(true));
        assert!(verdicts(&feed(&mut m, &tone(200, 0.0, 0.0), 0, Playback::default())).is_empty());
        assert_eq!(verdicts(&m.handle(MediaInput::EngineStopped { reason: "EIO".into() }, at(200))).len(), 1);
        assert!(verdicts(&m.handle(MediaInput::Stop, at(300))).is_empty());
        // The call ends mid-classification.
        let mut m = running(setup(true));
        assert_eq!(verdicts(&m.handle(MediaInput::Stop, at(300))).len(), 1);
        // No classification configured: never a verdict.
        let mut m = running(MediaSetup { amd: None, ..setup(true) });
        assert!(verdicts(&feed(&mut m, &clip("clip_0001.flac"), 0, Playback::default())).is_empty());
        assert!(verdicts(&m.handle(MediaInput::Stop, at(9_000))).is_empty());
    }

    #[test]
    fn a_stalled_device_still_gets_its_verdict_by_the_clock() {
        let mut m = running(setup(true));
        let limit = u64::from(AmdConfig::default().max_decision_ms) + VERDICT_GRACE_MS;
        assert_eq!(m.next_deadline(), Some(limit), "due from the engine's start");
        // A second of frames, then none: the device stalled.
        assert!(verdicts(&feed(&mut m, &tone(1_000, 0.0, 0.0), 0, Playback::default())).is_empty());
        assert!(verdicts(&m.handle(MediaInput::Tick { playback: Playback::default() }, at(limit - 1))).is_empty());
        let late = verdicts(&m.handle(MediaInput::Tick { playback: Playback::default() }, at(limit)));
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].kind, Kind::Unknown);
        assert_eq!(m.next_deadline(), None, "decided: nothing more is due");
        assert!(verdicts(&m.handle(MediaInput::Stop, at(limit + 10))).is_empty(), "once");
        // In early media the clock starts at the answer.
        let mut m = running(setup(false));
        assert_eq!(m.next_deadline(), None);
        m.handle(MediaInput::Answered, at(5_000));
        assert_eq!(m.next_deadline(), Some(5_000 + limit));
    }

    #[test]
    fn early_media_is_analysed_not_classified_until_the_answer() {
        let mut m = running(setup(false));
        // A person's voice in early media (an operator's announcement, say).
        let voice = clip("clip_0001.flac");
        assert!(verdicts(&feed(&mut m, &voice, 0, Playback::default())).is_empty(), "no verdict before 200 OK");
        let answered = m.handle(MediaInput::Answered, at(8_000));
        assert!(
            matches!(
                answered.as_slice(),
                [MediaEffect::Note(Note::EarlyMediaAnalysed { kind: "announcement", .. }), MediaEffect::ConnectWarmAgent]
            ),
            "{answered:?}"
        );
        assert_eq!(verdicts(&feed(&mut m, &voice, 8_000, Playback::default())).len(), 1);
        let summary = m.summary(0);
        assert_eq!(summary.early_media.map(|r| r.kind.as_str()), Some("announcement"));
        assert_eq!(summary.ai, None, "no conversation was asked for");
    }

    #[test]
    fn the_agent_is_connected_only_when_asked_and_at_most_once() {
        let mut m = running(setup(true));
        let effects = feed(&mut m, &clip("clip_0001.flac"), 0, Playback::default());
        assert!(!effects.contains(&MediaEffect::ConnectAgent), "a human verdict alone connects nothing");
        assert!(!m.wants_agent_events());
        assert_eq!(m.handle(MediaInput::StartAi, at(9_000)), vec![MediaEffect::ConnectAgent]);
        assert!(m.handle(MediaInput::StartAi, at(9_001)).is_empty());
        // No provider, or no audio: it fails at once, with the reason.
        let mut m = running(MediaSetup { has_provider: false, ..setup(true) });
        let reason = "no AI provider configured".to_string();
        assert_eq!(m.handle(MediaInput::StartAi, at(0)), vec![MediaEffect::Ai(AiInput::StartFailed { reason })]);
        let mut m = MediaMachine::new(setup(true));
        m.handle(MediaInput::EngineUnavailable, at(0));
        assert!(matches!(ai_inputs(&m.handle(MediaInput::StartAi, at(0))).as_slice(), [AiInput::StartFailed { .. }]));
        // The engine stopped while the agent was connecting: it is closed again.
        let mut m = running(setup(true));
        m.handle(MediaInput::StartAi, at(0));
        m.handle(MediaInput::EngineStopped { reason: "EIO".into() }, at(100));
        let up = m.handle(MediaInput::AgentConnected { info: &info(), chunk_samples: 320 }, at(300));
        assert_eq!(up[0], MediaEffect::EndAgent);
        assert!(matches!(ai_inputs(&up).as_slice(), [AiInput::StartFailed { .. }]));
    }

    #[test]
    fn caller_audio_reaches_the_agent_resampled_and_timed() {
        let mut m = talking();
        let effects = feed(&mut m, &tone(100, 300.0, 3_000.0), 300, Playback { pending: 0, room: 4_000 });
        let to_agent: usize = effects.iter().map(|e| if let MediaEffect::ToAgent(s) = e { s.len() } else { 0 }).sum();
        // 100 ms at 16 kHz, less what the resampler still holds.
        assert!((1_200..=1_600).contains(&to_agent), "{to_agent}");
        let figures = m.summary(3).ai.expect("figures");
        assert!(figures.first_caller_audio_ms.is_some_and(|ms| (300..=400).contains(&ms)), "{figures:?}");
        assert_eq!(figures.dropped_chunks, 3);
    }

    #[test]
    fn nothing_of_an_interrupted_turn_plays() {
        let mut m = talking();
        let full = Playback { pending: 8_000, room: 0 };
        // Turn 1 arrives while the ring is full: it waits in the playout queue.
        assert_eq!(played(&m.handle(MediaInput::Agent { event: Some(turn(1, 500)), playback: full }, at(400))), 0);
        let barge = m.handle(MediaInput::Agent { event: Some(AiEvent::Interruption { event_id: 1 }), playback: full }, at(500));
        assert_eq!(barge.first(), Some(&MediaEffect::Flush));
        assert_eq!(ai_inputs(&barge), vec![AiInput::Interrupted]);
        // Room again, and a late chunk of turn 1: nothing of it plays.
        let roomy = Playback { pending: 0, room: 8_000 };
        assert_eq!(played(&feed(&mut m, &[0; FRAME * 5], 520, roomy)), 0);
        assert_eq!(played(&m.handle(MediaInput::Agent { event: Some(turn(1, 200)), playback: roomy }, at(620))), 0);
        // The next turn plays.
        let next = m.handle(MediaInput::Agent { event: Some(turn(2, 200)), playback: roomy }, at(640));
        assert!(played(&next) > 1_000, "{next:?}");
    }

    #[test]
    fn play_never_hands_the_engine_more_than_its_ring_holds() {
        let mut m = talking();
        let effects = m.handle(MediaInput::Agent { event: Some(turn(1, 2_000)), playback: Playback { pending: 100, room: 700 } }, at(400));
        assert_eq!(played(&effects), 700);
        // The rest follows as room appears, a frame at a time.
        let mut total = 700;
        for i in 0..40 {
            let effects =
                m.handle(MediaInput::Frame { samples: &[0; FRAME], playback: Playback { pending: 0, room: 500 } }, at(420 + i * 20));
            let n = played(&effects);
            assert!(n <= 500, "{n}");
            total += n;
        }
        assert!(total >= 15_500, "2 s at 8 kHz, less the resampler's block: {total}");
    }

    #[test]
    fn the_farewell_is_heard_before_the_conversation_ends() {
        let mut m = talking();
        let room = Playback { pending: 0, room: 16_000 };
        m.handle(MediaInput::Agent { event: Some(turn(1, 1_000)), playback: room }, at(400));
        let normal = AiEvent::Ended(EndReason::Normal { detail: "end_call".into() });
        let end = m.handle(MediaInput::Agent { event: Some(normal), playback: Playback { pending: 8_000, room: 8_000 } }, at(500));
        assert!(ai_inputs(&end).is_empty(), "not before the farewell is heard: {end:?}");
        assert!(!m.wants_agent_events());
        // Playing: still pending.
        let playing = Playback { pending: 4_000, room: 12_000 };
        assert!(ai_inputs(&feed(&mut m, &[0; FRAME * 25], 520, playing)).is_empty());
        // Ring empty: the device's tail still sounds for 120 ms.
        let empty = Playback { pending: 0, room: 16_000 };
        assert!(ai_inputs(&m.handle(MediaInput::Frame { samples: &[0; FRAME], playback: empty }, at(1_100))).is_empty());
        assert!(ai_inputs(&m.handle(MediaInput::Frame { samples: &[0; FRAME], playback: empty }, at(1_200))).is_empty());
        let heard = m.handle(MediaInput::Frame { samples: &[0; FRAME], playback: empty }, at(1_220));
        assert_eq!(ai_inputs(&heard), vec![AiInput::Ended { by_agent: true, reason: "conversation ended: end_call".into() }]);
        assert!(ai_inputs(&m.handle(MediaInput::Frame { samples: &[0; FRAME], playback: empty }, at(1_400))).is_empty(), "once");
    }

    fn played_out(effects: &[MediaEffect]) -> usize {
        effects.iter().filter(|e| matches!(e, MediaEffect::PlayedOut)).count()
    }

    #[test]
    fn an_awaited_playout_is_told_once_when_the_agents_words_were_heard() {
        let mut m = talking();
        let room = Playback { pending: 0, room: 16_000 };
        m.handle(MediaInput::Agent { event: Some(turn(1, 500)), playback: room }, at(400));
        let playing = Playback { pending: 3_000, room: 13_000 };
        assert_eq!(played_out(&m.handle(MediaInput::AwaitPlayout { playback: playing }, at(420))), 0);
        assert_eq!(m.next_deadline(), Some(420 + super::super::agent_audio::FAREWELL_LIMIT_MS));
        assert_eq!(played_out(&feed(&mut m, &[0; FRAME * 10], 440, playing)), 0, "still playing");
        let empty = Playback { pending: 0, room: 16_000 };
        // Whatever was queued goes out first; then the device's tail.
        let mut told = 0;
        for i in 0..20 {
            told += played_out(&m.handle(MediaInput::Frame { samples: &[0; FRAME], playback: empty }, at(700 + i * 20)));
        }
        assert_eq!(told, 1, "once");
        assert_eq!(m.next_deadline(), None);
        // Nothing plays at all: told at once.
        let mut idle = running(setup(true));
        assert_eq!(played_out(&idle.handle(MediaInput::AwaitPlayout { playback: empty }, at(10))), 1);
        // The audio stopping ends the wait.
        let mut m = talking();
        m.handle(MediaInput::AwaitPlayout { playback: playing }, at(420));
        assert_eq!(played_out(&m.handle(MediaInput::EngineStopped { reason: "gone".into() }, at(500))), 1);
    }

    #[test]
    fn a_farewell_that_never_plays_out_ends_at_its_limit_or_with_the_audio() {
        let stuck = Playback { pending: 8_000, room: 0 };
        let normal = || Some(AiEvent::Ended(EndReason::Normal { detail: "end_call".into() }));
        let mut m = talking();
        m.handle(MediaInput::Agent { event: normal(), playback: stuck }, at(1_000));
        assert_eq!(m.next_deadline(), Some(1_000 + super::super::agent_audio::FAREWELL_LIMIT_MS));
        assert!(ai_inputs(&m.handle(MediaInput::Tick { playback: stuck }, at(30_999))).is_empty());
        assert!(matches!(
            ai_inputs(&m.handle(MediaInput::Tick { playback: stuck }, at(31_000))).as_slice(),
            [AiInput::Ended { by_agent: true, .. }]
        ));
        assert_eq!(m.next_deadline(), None);
        // The audio stops during the farewell: it ends now, as the agent's end.
        let mut m = talking();
        m.handle(MediaInput::Agent { event: normal(), playback: stuck }, at(1_000));
        let cut = m.handle(MediaInput::EngineStopped { reason: "EIO".into() }, at(1_500));
        assert!(matches!(ai_inputs(&cut).as_slice(), [AiInput::Ended { by_agent: true, .. }]), "{cut:?}");
        // The audio stops mid-conversation: it failed.
        let mut m = talking();
        let cut = m.handle(MediaInput::EngineStopped { reason: "EIO".into() }, at(1_500));
        let failed = AiInput::Ended { by_agent: false, reason: "no audio any more (EIO)".into() };
        assert_eq!(ai_inputs(&cut), vec![failed]);
        assert!(ai_inputs(&m.handle(MediaInput::Stop, at(2_000))).is_empty());
    }

    #[test]
    fn the_voicemail_message_plays_after_the_greeting_and_counts_once_heard() {
        let message = Arc::new(tone(1_000, 440.0, 5_000.0));
        let voicemail = Some((message, VoicemailConfig::default()));
        let mut m = running(MediaSetup { voicemail, has_provider: false, ..setup(true) });
        let roomy = Playback { pending: 0, room: 16_000 };
        // Line noise throughout; the greeting: speech-like bursts with
        // 500 ms pauses from 1 s, a beep from 5.5 s to 6 s, then quiet.
        let mut seed = 7;
        let mut audio = noise(1_000, &mut seed);
        for _ in 0..3 {
            audio.extend(tone(1_000, 250.0, 6_000.0).iter().zip(noise(1_000, &mut seed)).map(|(a, b)| a + b));
            audio.extend(noise(500, &mut seed));
        }
        audio.extend(tone(500, 1_000.0, 8_000.0));
        audio.extend(noise(3_000, &mut seed));
        let (greeting, quiet) = audio.split_at(6_000 * 8);
        assert_eq!(played(&feed(&mut m, &greeting[..1_500 * 8], 0, roomy)), 0);
        // A machine verdict mid-greeting.
        assert_eq!(m.handle(MediaInput::DropVoicemail, at(1_500)), vec![MediaEffect::Note(Note::VoicemailWaitsForTheGreeting)]);
        assert_eq!(played(&feed(&mut m, &greeting[1_500 * 8..], 1_500, roomy)), 0, "not during the greeting or its beep");
        // Quiet after the beep: 1.2 s of it (and the detector's hangover),
        // then the whole message at once (it fits the ring).
        let mut started_at = None;
        for (i, frame) in quiet[..1_600 * 8].chunks(FRAME).enumerate() {
            let now_ms = 6_000 + 20 * i as u64;
            let n = played(&m.handle(MediaInput::Frame { samples: frame, playback: roomy }, at(now_ms)));
            if n > 0 {
                assert!(n >= 8_000, "{n}");
                started_at = Some(now_ms);
                break;
            }
        }
        let started_at = started_at.expect("the message played");
        assert!((7_180..=7_400).contains(&started_at), "message at {started_at} ms");
        let from = ((started_at - 6_000 + 20) * 8) as usize;
        // Heard once the ring and the device are empty.
        let playing = Playback { pending: 4_000, room: 12_000 };
        let heard_early = feed(&mut m, &quiet[from..from + 1_600], started_at + 20, playing);
        assert!(!heard_early.iter().any(|e| matches!(e, MediaEffect::Voicemail { .. })), "still playing");
        let done = feed(&mut m, &quiet[from + 1_600..from + 3_200], started_at + 220, roomy);
        let left: Vec<_> = done.iter().filter(|e| matches!(e, MediaEffect::Voicemail { left: true, .. })).collect();
        assert_eq!(left.len(), 1, "{done:?}");
        // Heard means done: the audio stopping now takes nothing back.
        let stopped = m.handle(MediaInput::EngineStopped { reason: "EIO".into() }, at(started_at + 500));
        assert!(!stopped.iter().any(|e| matches!(e, MediaEffect::Voicemail { .. })), "{stopped:?}");
    }
}
