//! A call's media session task: the driver of [`MediaMachine`]. It owns the
//! I/O the machine may not do: the audio engine (opened on a blocking thread,
//! 20 ms frames in, playback out), the AI provider's conversation (started on
//! [`MediaEffect::ConnectAgent`], caller audio out, events in) and the
//! controller's channel; it reads the clock once per input and carries out the
//! machine's effects in order. Every decision is the machine's (see
//! `media/machine.rs` for the promises: one verdict, no conversation before
//! [`Session::start_ai`], nothing of an interrupted turn played, the farewell
//! heard, the voicemail after the greeting); this file adds one of its own:
//! exactly one `Done`, after the engine is closed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::ai::{AiSession, CallContext, ClientText, Provider, StartFuture, WarmUp};
use crate::amd::{AmdConfig, EarlyMediaReport, Verdict};
use crate::audio::{AudioEngine, AudioError, AudioStats};
use crate::call::machine::AiInput;
use crate::clock::{Clock, Now};
use crate::media::{MediaEffect, MediaInput, MediaMachine, MediaSetup, Note, Playback};
use crate::recording::{Recorder, RecordingConfig, RecordingError, RecordingRecord};

pub use crate::media::AiFigures;

/// What a session reports to the controller.
#[derive(Debug)]
pub enum SessionMsg {
    Verdict {
        call_id: String,
        verdict: Verdict,
    },
    Ai {
        call_id: String,
        input: AiInput,
    },
    /// The voicemail message played out (`left`), or could not be played.
    Voicemail {
        call_id: String,
        left: bool,
        detail: String,
    },
    /// What the agent said has been heard (after [`Session::await_playout`]).
    PlayedOut {
        call_id: String,
    },
    Done {
        call_id: String,
        stats: Option<AudioStats>,
        ai: Option<AiFigures>,
        early_media: Option<EarlyMediaReport>,
        /// The call's recording, when `[recording]` made one (boxed: rare, and large).
        recording: Option<Box<Result<RecordingRecord, RecordingError>>>,
    },
}

/// Opens the call's audio engine (on a blocking thread).
pub type OpenEngine = Arc<dyn Fn() -> Result<AudioEngine, AudioError> + Send + Sync>;

/// What a session is started with.
pub struct SessionParams {
    pub call_id: String,
    /// Started at the answer; else in early media, until [`Session::answered`].
    pub answered: bool,
    pub phone_number: String,
    pub open_engine: OpenEngine,
    /// `None`: no classification (no verdict is reported).
    pub amd: Option<AmdConfig>,
    /// `None`: no AI conversation can be started.
    pub provider: Option<Arc<dyn Provider>>,
    /// The voicemail message (8 kHz) and its settings; `None`: no drop.
    pub voicemail: Option<(Arc<Vec<i16>>, crate::voicemail::VoicemailConfig)>,
    /// `Some`: the call is recorded from the answer on.
    pub recording: Option<RecordingConfig>,
}

/// The controller's handle: dropping it (or `stop`) ends the session.
pub struct Session {
    pub call_id: String,
    stop: Option<oneshot::Sender<()>>,
    start_ai: Option<oneshot::Sender<()>>,
    drop_voicemail: Option<oneshot::Sender<()>>,
    answered: Option<oneshot::Sender<()>>,
    requests: mpsc::Sender<Request>,
}

/// The controller's asks that may come many times in a call.
#[derive(Debug)]
enum Request {
    Text(ClientText),
    AwaitPlayout,
}

/// Requests in flight to the session; more are dropped (and logged). Texts
/// held until the conversation runs: as many.
const TEXTS_IN_FLIGHT: usize = 16;

impl Session {
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// The call was answered (200 OK): early-media analysis ends, answer
    /// classification starts with the next frame.
    pub fn answered(&mut self) {
        if let Some(answered) = self.answered.take() {
            let _ = answered.send(());
        }
    }

    /// Leaves the voicemail message once the greeting is over (once).
    pub fn drop_voicemail(&mut self) {
        if let Some(drop) = self.drop_voicemail.take() {
            let _ = drop.send(());
        }
    }

    /// Text for the agent: sent as soon as the conversation runs (held until then).
    pub fn send_text(&mut self, text: ClientText) {
        if self.requests.try_send(Request::Text(text)).is_err() {
            warn!("text for the agent dropped: the session is behind or gone");
        }
    }

    /// Reports [`SessionMsg::PlayedOut`] once what the agent said so far has
    /// been heard (at once when nothing plays). False: the session is gone
    /// or behind, and will not report.
    pub fn await_playout(&mut self) -> bool {
        self.requests.try_send(Request::AwaitPlayout).is_ok()
    }

    /// Starts the AI conversation (once; later calls do nothing).
    pub fn start_ai(&mut self) {
        if let Some(start) = self.start_ai.take() {
            let _ = start.send(());
        }
    }
}

/// Starts the session task for the answered call.
pub fn start(params: SessionParams, report: mpsc::Sender<SessionMsg>) -> Session {
    let (stop_tx, stop_rx) = oneshot::channel();
    let (start_tx, start_rx) = oneshot::channel();
    let (drop_tx, drop_rx) = oneshot::channel();
    let (answered_tx, answered_rx) = oneshot::channel();
    let (requests_tx, requests_rx) = mpsc::channel(TEXTS_IN_FLIGHT);
    let call_id = params.call_id.clone();
    let span = info_span!("call", call_id = %call_id);
    let signals = Signals { stop: stop_rx, start_ai: start_rx, drop_voicemail: drop_rx, answered: answered_rx, requests: requests_rx };
    tokio::spawn(run(params, report, signals).instrument(span));
    Session {
        call_id,
        stop: Some(stop_tx),
        start_ai: Some(start_tx),
        drop_voicemail: Some(drop_tx),
        answered: Some(answered_tx),
        requests: requests_tx,
    }
}

/// The controller's signals to a session task.
struct Signals {
    stop: oneshot::Receiver<()>,
    start_ai: oneshot::Receiver<()>,
    drop_voicemail: oneshot::Receiver<()>,
    answered: oneshot::Receiver<()>,
    requests: mpsc::Receiver<Request>,
}

/// What a session task owns: everything the machine's effects act on.
struct Io<'p> {
    call_id: String,
    phone_number: String,
    provider: Option<&'p Arc<dyn Provider>>,
    report: mpsc::Sender<SessionMsg>,
    engine: Option<AudioEngine>,
    /// The conversation readied ahead of the verdict, until it is started or let go.
    warm: Option<WarmUp>,
    connecting: Option<StartFuture<'p>>,
    conversation: Option<AiSession>,
    /// Texts that came before the conversation ran.
    held_texts: Vec<ClientText>,
    stats: Option<AudioStats>,
    /// The call's recording, from the answer (fed here: the async side).
    recorder: Option<Recorder>,
}

impl Io<'_> {
    /// The engine's playback side right now.
    fn playback(&self) -> Playback {
        self.engine.as_ref().map_or(Playback::default(), |e| Playback { pending: e.playback_pending(), room: e.send_capacity() })
    }

    /// Starts the recording at the answer, if the call is recorded and the audio runs.
    fn start_recording(&mut self, cfg: Option<&RecordingConfig>) {
        if let (Some(cfg), Some(engine), None) = (cfg, self.engine.as_ref(), self.recorder.as_ref()) {
            self.recorder = Recorder::start(cfg, &self.call_id, engine.rate());
        }
    }

    /// Ends the recording (the file synced), off the async workers.
    async fn finish_recording(&mut self) -> Option<Box<Result<RecordingRecord, RecordingError>>> {
        let recorder = self.recorder.take()?;
        Some(Box::new(tokio::task::spawn_blocking(move || recorder.finish()).await.unwrap_or(Err(RecordingError::Lost))))
    }

    /// Closes the devices (the next call may need them at once) and keeps the counters.
    async fn close_engine(&mut self) {
        if let Some(e) = self.engine.take() {
            self.stats = tokio::task::spawn_blocking(move || e.finish().0).await.ok();
        }
    }

    async fn end_conversation(&mut self) -> u64 {
        match self.conversation.take() {
            Some(conversation) => {
                let dropped = conversation.audio_counters().1;
                conversation.end().await;
                dropped
            }
            None => 0,
        }
    }

    /// To the conversation if it runs; else held (up to [`TEXTS_IN_FLIGHT`]) until it does.
    fn send_text(&mut self, text: ClientText) {
        match self.conversation.as_mut() {
            Some(conversation) => {
                if let Err(err) = conversation.send_text(text) {
                    warn!(%err, "text for the agent not sent");
                }
            }
            None if self.held_texts.len() < TEXTS_IN_FLIGHT => self.held_texts.push(text),
            None => warn!("text for the agent dropped: no conversation runs"),
        }
    }

    async fn tell(&mut self, msg: SessionMsg) -> bool {
        self.report.send(msg).await.is_ok()
    }

    /// Carries out `effects` in order; false once the controller is gone.
    async fn carry_out(&mut self, effects: Vec<MediaEffect>) -> bool {
        let mut listened = true;
        for effect in effects {
            // Per effect, and Play/ToAgent come every 20 ms: only the reports
            // pay for the call id.
            let call_id = || self.call_id.clone();
            match effect {
                MediaEffect::Verdict(verdict) => {
                    info!(verdict = ?verdict.kind, cause = ?verdict.cause, decided_at_ms = verdict.decided_at_ms, "answer classified");
                    let msg = SessionMsg::Verdict { call_id: call_id(), verdict };
                    listened &= self.tell(msg).await;
                }
                MediaEffect::Ai(input) => {
                    match &input {
                        AiInput::StartFailed { reason } => warn!(%reason, "the AI conversation did not start"),
                        AiInput::Ended { by_agent: false, reason } => warn!(%reason, "the AI conversation failed"),
                        _ => {}
                    }
                    let msg = SessionMsg::Ai { call_id: call_id(), input };
                    listened &= self.tell(msg).await;
                }
                MediaEffect::Voicemail { left, detail } => {
                    if left {
                        info!(%detail, "voicemail message left");
                    }
                    let msg = SessionMsg::Voicemail { call_id: call_id(), left, detail };
                    listened &= self.tell(msg).await;
                }
                MediaEffect::WarmAgent => {
                    self.warm = self.provider.and_then(|p| p.clone().warm_up());
                }
                MediaEffect::ConnectWarmAgent => {
                    if let Some(warm) = self.warm.as_mut() {
                        warm.connect();
                    }
                }
                MediaEffect::CoolAgent => {
                    if self.warm.take().is_some() {
                        debug!("machine: the readied agent connection is closed");
                    }
                }
                MediaEffect::ConnectAgent => {
                    if let Some(provider) = self.provider {
                        info!(provider = provider.name(), readied = self.warm.is_some(), "starting the AI conversation");
                        let ctx = CallContext::new(call_id(), self.phone_number.clone());
                        self.connecting = Some(match self.warm.take() {
                            Some(warm) => provider.start_warm(ctx, warm),
                            None => provider.start(ctx),
                        });
                    }
                }
                MediaEffect::EndAgent => {
                    self.end_conversation().await;
                }
                MediaEffect::ToAgent(pcm) => {
                    if let Some(conversation) = self.conversation.as_mut() {
                        // A closed conversation reports its end as an event.
                        let _ = conversation.send_audio(&pcm);
                    }
                }
                MediaEffect::Play(samples) => {
                    if let Some(engine) = self.engine.as_mut() {
                        engine.send(&samples);
                    }
                    if let Some(recorder) = self.recorder.as_mut() {
                        recorder.played(&samples);
                    }
                }
                MediaEffect::Flush => {
                    if let Some(engine) = self.engine.as_ref() {
                        engine.flush();
                    }
                    if let Some(recorder) = self.recorder.as_mut() {
                        recorder.flushed();
                    }
                }
                MediaEffect::EndUtterance => {
                    if let Some(engine) = self.engine.as_mut() {
                        engine.end_utterance();
                    }
                }
                MediaEffect::PlayedOut => {
                    let msg = SessionMsg::PlayedOut { call_id: call_id() };
                    listened &= self.tell(msg).await;
                }
                MediaEffect::Note(note) => log_note(note),
            }
        }
        listened
    }
}

fn log_note(note: Note) {
    match note {
        Note::EarlyMediaAnalysed { kind, analysed_ms } => info!(kind, analysed_ms, "early media analysed"),
        Note::BargeIn { event_id, dropped_in_queue } => debug!(event_id, dropped_in_queue, "barge-in: agent audio flushed"),
        Note::FarewellPlays { reason } => info!(%reason, "the agent ended the conversation; its farewell plays out"),
        Note::VoicemailWaitsForTheGreeting => info!("machine: the voicemail message plays once its greeting is over"),
        Note::VoicemailUnusable { reason } => warn!(%reason, "voicemail message unusable at this rate"),
    }
}

async fn run(params: SessionParams, report: mpsc::Sender<SessionMsg>, signals: Signals) {
    let Signals { mut stop, start_ai, drop_voicemail, answered, mut requests } = signals;
    let clock = Clock::start();
    let now = || -> Now { clock.now() };
    let setup = MediaSetup {
        answered: params.answered,
        amd: params.amd.clone(),
        has_provider: params.provider.is_some(),
        voicemail: params.voicemail.clone(),
    };
    let mut machine = MediaMachine::new(setup);
    let open = params.open_engine.clone();
    let engine = match tokio::task::spawn_blocking(move || open()).await {
        Ok(Ok(engine)) => Some(engine),
        Ok(Err(err)) => {
            warn!(%err, "audio engine unavailable: the answer can be neither classified nor handed to the agent");
            None
        }
        Err(err) => {
            warn!(%err, "audio engine start panicked");
            None
        }
    };
    let mut frame = vec![0i16; engine.as_ref().map_or(0, AudioEngine::frame_len)];
    let first = match engine.as_ref() {
        Some(e) => MediaInput::EngineStarted { rate: e.rate() },
        None => MediaInput::EngineUnavailable,
    };
    let mut io = Io {
        call_id: params.call_id.clone(),
        phone_number: params.phone_number.clone(),
        provider: params.provider.as_ref(),
        report,
        engine,
        warm: None,
        connecting: None,
        conversation: None,
        held_texts: Vec::new(),
        stats: None,
        recorder: None,
    };
    let recording = params.recording.as_ref().filter(|c| c.enabled);
    if params.answered {
        io.start_recording(recording);
    }
    let mut listened = io.carry_out(machine.handle(first, now())).await;
    let mut answered = (!params.answered).then_some(answered);
    let mut start_ai = Some(start_ai);
    let mut drop_voicemail = Some(drop_voicemail);

    while listened {
        let deadline = machine.next_deadline().map(|ms| tokio::time::Instant::from_std(clock.instant_at(ms)));
        let effects = tokio::select! {
            _ = &mut stop => break,
            go = async { answered.as_mut()?.await.ok() }, if answered.is_some() => {
                answered = None;
                match go {
                    Some(()) => {
                        io.start_recording(recording);
                        machine.handle(MediaInput::Answered, now())
                    }
                    None => continue, // the handle is gone; the stop follows
                }
            }
            go = async { start_ai.as_mut()?.await.ok() }, if start_ai.is_some() => {
                start_ai = None;
                match go {
                    Some(()) => machine.handle(MediaInput::StartAi, now()),
                    None => continue,
                }
            }
            go = async { drop_voicemail.as_mut()?.await.ok() }, if drop_voicemail.is_some() => {
                drop_voicemail = None;
                match go {
                    Some(()) => machine.handle(MediaInput::DropVoicemail, now()),
                    None => continue,
                }
            }
            Some(started) = async { Some(io.connecting.as_mut()?.await) }, if io.connecting.is_some() => {
                io.connecting = None;
                match started {
                    Ok(conversation) => {
                        let info = conversation.info();
                        let effects = machine.handle(MediaInput::AgentConnected { info, chunk_samples: conversation.chunk_samples() }, now());
                        if effects.iter().any(|e| matches!(e, MediaEffect::Ai(AiInput::Started { .. }))) {
                            info!(conversation_id = %info.conversation_id, input = %info.input_format, output = %info.output_format, "AI conversation running");
                        }
                        io.conversation = Some(conversation);
                        for text in std::mem::take(&mut io.held_texts) {
                            io.send_text(text);
                        }
                        effects
                    }
                    Err(err) => machine.handle(MediaInput::AgentStartFailed { reason: err.to_string() }, now()),
                }
            }
            Some(received) = async { Some(io.engine.as_mut()?.recv_frame(&mut frame).await) }, if io.engine.is_some() => {
                match received {
                    Ok(()) => {
                        if let Some(recorder) = io.recorder.as_mut() {
                            recorder.captured(&frame);
                        }
                        let playback = io.playback();
                        machine.handle(MediaInput::Frame { samples: &frame, playback }, now())
                    }
                    Err(err) => {
                        warn!(%err, "audio engine stopped during the call");
                        io.close_engine().await;
                        machine.handle(MediaInput::EngineStopped { reason: err.to_string() }, now())
                    }
                }
            }
            Some(request) = requests.recv() => match request {
                Request::Text(text) => {
                    io.send_text(text);
                    continue;
                }
                Request::AwaitPlayout => {
                    let playback = io.playback();
                    machine.handle(MediaInput::AwaitPlayout { playback }, now())
                }
            },
            event = async { io.conversation.as_mut()?.next_event().await }, if io.conversation.is_some() && machine.wants_agent_events() => {
                let playback = io.playback();
                machine.handle(MediaInput::Agent { event, playback }, now())
            }
            () = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                let playback = io.playback();
                machine.handle(MediaInput::Tick { playback }, now())
            }
        };
        listened = io.carry_out(effects).await;
    }
    let last = machine.handle(MediaInput::Stop, now());
    io.carry_out(last).await;
    io.connecting = None;
    io.warm = None;
    // The devices first: the next call may need them at once, and closing the
    // agent's socket can take a while.
    io.close_engine().await;
    let recording = io.finish_recording().await;
    let dropped_chunks = io.end_conversation().await;
    let summary = machine.summary(dropped_chunks);
    let done = SessionMsg::Done {
        call_id: io.call_id.clone(),
        stats: io.stats.take(),
        ai: summary.ai,
        early_media: summary.early_media,
        recording,
    };
    io.tell(done).await;
}
