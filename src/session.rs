//! A call's media session, from the answer to the end of the call: it opens
//! the audio engine, feeds the caller's audio to answer classification and
//! reports the verdict; when (and only when) the controller says so, it starts
//! the AI conversation and bridges it to the engine: caller audio resampled to
//! the agent's input rate, agent audio resampled to the device rate and queued
//! for playback, barge-in flushing it, transcripts and the conversation's end
//! reported back. At the end of the call it stops both and reports the counters.
//!
//! Promises: at most one verdict per session, and exactly one when
//! classification is on (an `unknown`, cause `end_of_audio`, when the engine
//! cannot start or stops early); a conversation is started only after
//! [`Session::start_ai`], at most once; after an interruption no agent audio
//! queued before it is played; then exactly one `Done`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::ai::{AiEvent, AiSession, CallContext, Playout, Provider, StartFuture};
use crate::amd::{Amd, AmdConfig, EarlyMedia, EarlyMediaReport, Verdict};
use crate::audio::{AudioEngine, AudioError, AudioStats, PlayedOut, RateConverter};
use crate::call::machine::AiInput;
use crate::call::record::Speaker;

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
    Done {
        call_id: String,
        stats: Option<AudioStats>,
        ai: Option<AiFigures>,
        early_media: Option<EarlyMediaReport>,
    },
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
}

/// The controller's handle: dropping it (or `stop`) ends the session.
pub struct Session {
    pub call_id: String,
    stop: Option<oneshot::Sender<()>>,
    start_ai: Option<oneshot::Sender<()>>,
    drop_voicemail: Option<oneshot::Sender<()>>,
    answered: Option<oneshot::Sender<()>>,
}

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
    let call_id = params.call_id.clone();
    let span = info_span!("call", call_id = %call_id);
    let signals = Signals { stop: stop_rx, start_ai: start_rx, drop_voicemail: drop_rx, answered: answered_rx };
    tokio::spawn(run(params, report, signals).instrument(span));
    Session { call_id, stop: Some(stop_tx), start_ai: Some(start_tx), drop_voicemail: Some(drop_tx), answered: Some(answered_tx) }
}

/// Longest wait for the agent's farewell to play out before hanging up.
const FAREWELL_LIMIT: Duration = Duration::from_secs(30);

/// The controller's signals to a session task.
struct Signals {
    stop: oneshot::Receiver<()>,
    start_ai: oneshot::Receiver<()>,
    drop_voicemail: oneshot::Receiver<()>,
    answered: oneshot::Receiver<()>,
}

async fn run(params: SessionParams, report: mpsc::Sender<SessionMsg>, signals: Signals) {
    let Signals { mut stop, start_ai, drop_voicemail, answered } = signals;
    let call_id = params.call_id.clone();
    let tell = |input: AiInput| SessionMsg::Ai { call_id: call_id.clone(), input };
    // Early media is analysed (for the record) until the answer; the answer
    // is classified from the answer on.
    let new_amd = || params.amd.as_ref().and_then(|cfg| Amd::new(cfg).ok());
    let mut amd = if params.answered { new_amd() } else { None };
    let mut early = if params.answered { None } else { params.amd.as_ref().and_then(|cfg| EarlyMedia::new(cfg).ok()) };
    let mut early_report: Option<EarlyMediaReport> = None;
    let mut answered = (!params.answered).then_some(answered);
    let open = params.open_engine.clone();
    let mut engine = match tokio::task::spawn_blocking(move || open()).await {
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
    // Declared before `connecting`, which borrows it.
    let provider = params.provider.clone();
    let mut connecting: Option<StartFuture<'_>> = None;
    let mut bridge: Option<Bridge> = None;
    let mut start_ai = Some(start_ai);
    let mut requested_at: Option<Instant> = None;
    let mut frame = vec![0i16; engine.as_ref().map_or(0, AudioEngine::frame_len)];
    // The voicemail drop listens from the answer on (its noise floor).
    let mut dropper = match (&params.voicemail, &params.amd, engine.as_ref()) {
        (Some((message, cfg)), Some(amd), Some(e)) => match crate::voicemail::Dropper::new(amd, cfg, message, e.rate()) {
            Ok(d) => Some(d),
            Err(err) => {
                warn!(%err, "voicemail message unusable at this rate");
                None
            }
        },
        _ => None,
    };
    let mut drop_voicemail = Some(drop_voicemail);
    let mut figures = AiFigures::default();
    let mut stats: Option<AudioStats> = None;

    loop {
        if engine.is_none() {
            // No audio: classification ends here, undecided.
            if let Some(mut detector) = amd.take() {
                let _ = report.send(SessionMsg::Verdict { call_id: call_id.clone(), verdict: detector.finish() }).await;
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            go = async { answered.as_mut()?.await.ok() }, if answered.is_some() => {
                answered = None;
                if go.is_some() {
                    early_report = early.take().map(|e| e.report());
                    if let Some(report) = &early_report {
                        info!(kind = report.kind.as_str(), analysed_ms = report.analysed_ms, "early media analysed");
                    }
                    amd = new_amd();
                }
            }
            go = async { start_ai.as_mut()?.await.ok() }, if start_ai.is_some() => {
                start_ai = None;
                if go.is_none() {
                    continue; // the handle is gone; the stop follows
                }
                requested_at = Some(Instant::now());
                match (&provider, engine.is_some()) {
                    (Some(provider), true) => {
                        info!(provider = provider.name(), "starting the AI conversation");
                        connecting = Some(provider.start(CallContext::new(call_id.clone(), params.phone_number.clone())));
                    }
                    (None, _) => {
                        let _ = report.send(tell(AiInput::StartFailed { reason: "no AI provider configured".into() })).await;
                    }
                    (_, false) => {
                        let reason = "no audio (the audio engine is not running)".to_string();
                        let _ = report.send(tell(AiInput::StartFailed { reason })).await;
                    }
                }
            }
            go = async { drop_voicemail.as_mut()?.await.ok() }, if drop_voicemail.is_some() => {
                drop_voicemail = None;
                if go.is_none() {
                    continue;
                }
                match dropper.as_mut() {
                    Some(d) => {
                        info!("machine: the voicemail message plays once its greeting is over");
                        d.request();
                    }
                    None => {
                        let detail = "no audio (the audio engine is not running)".to_string();
                        let _ = report.send(SessionMsg::Voicemail { call_id: call_id.clone(), left: false, detail }).await;
                    }
                }
            }
            Some(started) = async { Some(connecting.as_mut()?.await) }, if connecting.is_some() => {
                connecting = None;
                let setup_ms = elapsed_ms(requested_at);
                let running = match started {
                    Ok(session) => match engine.as_ref().map(|e| (e.rate(), e.frame_len())) {
                        Some((rate, frame_len)) => Bridge::new(session, rate, frame_len),
                        None => {
                            session.end().await;
                            Err("no audio (the audio engine stopped)".to_string())
                        }
                    },
                    Err(err) => Err(err.to_string()),
                };
                match running {
                    Ok(b) => {
                        let info = b.session.info();
                        info!(setup_ms, conversation_id = %info.conversation_id, input = %info.input_format, output = %info.output_format, "AI conversation running");
                        let input = AiInput::Started { provider: info.provider.to_string(), conversation_id: info.conversation_id.clone(), setup_ms };
                        bridge = Some(b);
                        let _ = report.send(tell(input)).await;
                    }
                    Err(reason) => {
                        warn!(%reason, "the AI conversation did not start");
                        let _ = report.send(tell(AiInput::StartFailed { reason })).await;
                    }
                }
            }
            Some(received) = async { Some(engine.as_mut()?.recv_frame(&mut frame).await) }, if engine.is_some() => {
                if let Err(err) = received {
                    warn!(%err, "audio engine stopped during the call");
                    if let Some(e) = engine.take() {
                        stats = tokio::task::spawn_blocking(move || e.finish().0).await.ok();
                    }
                    // A farewell under way cannot play any further: it ends now.
                    let end = bridge.as_mut().and_then(|b| match b.farewell.take() {
                        Some(farewell) => Some(AiInput::Ended { by_agent: true, reason: farewell.reason }),
                        None if !b.ended => {
                            b.ended = true;
                            Some(AiInput::Ended { by_agent: false, reason: format!("no audio any more ({err})") })
                        }
                        None => None,
                    });
                    if let Some(input) = end {
                        let _ = report.send(tell(input)).await;
                    }
                    if dropper.take().is_some() && drop_voicemail.is_none() {
                        let detail = format!("no audio any more ({err})");
                        let _ = report.send(SessionMsg::Voicemail { call_id: call_id.clone(), left: false, detail }).await;
                    }
                    continue;
                }
                if let Some(analyser) = early.as_mut() {
                    analyser.push(&frame);
                }
                if let Some(detector) = amd.as_mut() {
                    if let Some(verdict) = detector.push(&frame) {
                        amd = None;
                        info!(verdict = ?verdict.kind, cause = ?verdict.cause, decided_at_ms = verdict.decided_at_ms, "answer classified");
                        if report.send(SessionMsg::Verdict { call_id: call_id.clone(), verdict }).await.is_err() {
                            break;
                        }
                    }
                }
                if let (Some(b), Some(e)) = (bridge.as_mut(), engine.as_mut()) {
                    b.caller_audio(&frame, requested_at, &mut figures);
                    b.pump(e, requested_at, &mut figures);
                    if let Some(input) = b.farewell_done(e.playback_pending()) {
                        let _ = report.send(tell(input)).await;
                    }
                }
                if let (Some(d), Some(e)) = (dropper.as_mut(), engine.as_mut()) {
                    if let Some(detail) = d.on_frame(&frame, e) {
                        info!(%detail, "voicemail message left");
                        let _ = report.send(SessionMsg::Voicemail { call_id: call_id.clone(), left: true, detail }).await;
                    }
                }
            }
            event = async { bridge.as_mut()?.session.next_event().await }, if bridge.as_ref().is_some_and(|b| !b.ended) => {
                let (Some(b), Some(e)) = (bridge.as_mut(), engine.as_mut()) else { continue };
                for input in b.on_event(event, e, requested_at, &mut figures) {
                    let _ = report.send(tell(input)).await;
                }
            }
        }
    }
    if let Some(mut detector) = amd.take() {
        let _ = report.send(SessionMsg::Verdict { call_id: call_id.clone(), verdict: detector.finish() }).await;
    }
    drop(connecting);
    // The devices first: the next call may need them at once, and closing the
    // agent's socket can take a while.
    if let Some(e) = engine.take() {
        stats = tokio::task::spawn_blocking(move || e.finish().0).await.ok();
    }
    if let Some(b) = bridge.take() {
        figures.dropped_chunks = b.session.audio_counters().1;
        b.session.end().await;
    }
    let ai = requested_at.map(|_| figures);
    let early_media = early_report.or_else(|| early.map(|e| e.report()));
    let _ = report.send(SessionMsg::Done { call_id, stats, ai, early_media }).await;
}

fn elapsed_ms(since: Option<Instant>) -> u32 {
    since.map_or(0, |t| u32::try_from(t.elapsed().as_millis()).unwrap_or(u32::MAX))
}

/// The running conversation and the audio plumbing between it and the engine.
struct Bridge {
    session: AiSession,
    /// Device rate → the agent's input rate.
    to_agent: RateConverter,
    /// The agent's output rate → device rate.
    to_device: RateConverter,
    /// Agent audio in turn order; the gate that drops interrupted turns.
    playout: Playout,
    scratch: Vec<i16>,
    last_event_id: Option<u64>,
    /// The session reported its end (or was lost): no more events.
    ended: bool,
    /// The agent ended the conversation: its farewell plays, then the call ends.
    farewell: Option<Farewell>,
}

struct Farewell {
    reason: String,
    give_up_at: Instant,
    played: PlayedOut,
}

impl Bridge {
    /// A bridge to an engine running at `rate` with `frame_len`-sample frames.
    fn new(session: AiSession, rate: u32, frame_len: usize) -> Result<Bridge, String> {
        let info = session.info();
        let to_agent =
            RateConverter::new(rate, info.input_format.rate()).map_err(|e| format!("agent input format {}: {e}", info.input_format))?;
        let to_device =
            RateConverter::new(info.output_format.rate(), rate).map_err(|e| format!("agent output format {}: {e}", info.output_format))?;
        Ok(Bridge {
            session,
            to_agent,
            to_device,
            playout: Playout::new(),
            scratch: vec![0; frame_len * 10],
            last_event_id: None,
            ended: false,
            farewell: None,
        })
    }

    /// The caller's 20 ms, on to the agent (until the conversation ends).
    fn caller_audio(&mut self, frame: &[i16], requested_at: Option<Instant>, figures: &mut AiFigures) {
        if self.ended {
            return;
        }
        let Bridge { session, to_agent, .. } = self;
        to_agent.push(frame, |pcm| {
            // A closed session reports its end as an event; nothing to do here.
            let _ = session.send_audio(pcm);
        });
        if figures.first_caller_audio_ms.is_none() && self.session.audio_counters().0 > 0 {
            figures.first_caller_audio_ms = Some(elapsed_ms(requested_at));
        }
    }

    /// Plays what the resampler still holds of turn `event_id`.
    fn end_turn(&mut self, event_id: u64, engine: &mut AudioEngine, requested_at: Option<Instant>, figures: &mut AiFigures) {
        let mut tail = Vec::new();
        self.to_device.finish(|pcm| tail.extend_from_slice(pcm));
        if self.playout.push(event_id, tail) {
            self.pump(engine, requested_at, figures);
        }
    }

    /// Moves queued agent audio into the engine's playback ring.
    fn pump(&mut self, engine: &mut AudioEngine, requested_at: Option<Instant>, figures: &mut AiFigures) {
        loop {
            let room = engine.send_capacity().min(self.scratch.len());
            let n = self.playout.pop(&mut self.scratch[..room]);
            if n == 0 {
                break;
            }
            engine.send(&self.scratch[..n]);
            if figures.first_agent_audio_ms.is_none() {
                figures.first_agent_audio_ms = Some(elapsed_ms(requested_at));
            }
        }
    }

    fn on_event(
        &mut self,
        event: Option<AiEvent>,
        engine: &mut AudioEngine,
        requested_at: Option<Instant>,
        figures: &mut AiFigures,
    ) -> Vec<AiInput> {
        let line = |speaker, text| vec![AiInput::Line { speaker, text }];
        match event {
            Some(AiEvent::Audio { event_id, samples }) => {
                if !self.playout.accepts(event_id) {
                    // A late chunk of an interrupted turn: it must not even
                    // reach the resampler, whose pending block would carry it
                    // into the next turn.
                    return Vec::new();
                }
                if self.last_event_id != Some(event_id) {
                    if let Some(previous) = self.last_event_id {
                        // The previous turn is over: its last partial block
                        // plays now, and running dry after it is the end of
                        // speech, not an underrun.
                        self.end_turn(previous, engine, requested_at, figures);
                        engine.end_utterance();
                    }
                    self.last_event_id = Some(event_id);
                }
                let mut converted = Vec::with_capacity(samples.len() * engine.rate() as usize / self.to_device.from_rate() as usize + 16);
                self.to_device.push(&samples, |pcm| converted.extend_from_slice(pcm));
                if self.playout.push(event_id, converted) {
                    self.pump(engine, requested_at, figures);
                }
                Vec::new()
            }
            Some(AiEvent::Interruption { event_id }) => {
                let dropped = self.playout.interrupt(event_id);
                engine.flush();
                self.to_device.reset();
                debug!(event_id, dropped_in_queue = dropped, "barge-in: agent audio flushed");
                vec![AiInput::Interrupted]
            }
            Some(AiEvent::UserTranscript { text }) => line(Speaker::User, text),
            Some(AiEvent::AgentResponse { text }) => line(Speaker::Agent, text),
            Some(AiEvent::AgentResponseCorrection { corrected, .. }) => line(Speaker::AgentCorrection, corrected),
            Some(AiEvent::ToolCall { name, parameters, result, .. }) => {
                let error = if result.is_error { " (error)" } else { "" };
                line(Speaker::Tool, format!("{name}({parameters}) -> {}{error}", result.result))
            }
            Some(AiEvent::Ended(reason)) if reason.is_normal() => {
                self.ended = true;
                if let Some(last) = self.last_event_id {
                    self.end_turn(last, engine, requested_at, figures);
                }
                info!(%reason, "the agent ended the conversation; its farewell plays out");
                self.farewell = Some(Farewell {
                    reason: reason.to_string(),
                    give_up_at: Instant::now() + FAREWELL_LIMIT,
                    played: PlayedOut::default(),
                });
                Vec::new()
            }
            Some(AiEvent::Ended(reason)) => {
                self.ended = true;
                warn!(%reason, "the AI conversation failed");
                vec![AiInput::Ended { by_agent: false, reason: reason.to_string() }]
            }
            None => {
                self.ended = true;
                vec![AiInput::Ended { by_agent: false, reason: "the agent session stopped without an end".into() }]
            }
        }
    }

    /// Once the farewell has played (or `FAREWELL_LIMIT` passed): the end.
    /// `pending`: agent samples still in the engine's ring.
    fn farewell_done(&mut self, pending: usize) -> Option<AiInput> {
        let farewell = self.farewell.as_mut()?;
        let heard = farewell.played.check(pending + self.playout.queued_samples());
        if !heard && Instant::now() < farewell.give_up_at {
            return None;
        }
        let farewell = self.farewell.take()?;
        Some(AiInput::Ended { by_agent: true, reason: farewell.reason })
    }
}
