//! A call's audio session: started by the controller when a call is answered, it
//! opens the audio engine, feeds the caller's audio to answer classification,
//! reports the verdict, and at the end of the call stops the engine and reports
//! its counters. (The AI agent will take the engine over after a `human`
//! verdict.)
//!
//! Promise: exactly one verdict per session (an `unknown`, cause `end_of_audio`,
//! when the audio engine cannot start), then exactly one `Done`.

use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, info, info_span, warn};

use crate::amd::{Amd, AmdConfig, Verdict};
use crate::audio::{AudioConfig, AudioEngine, AudioStats};

/// What a session reports to the controller.
#[derive(Debug)]
pub enum SessionMsg {
    Verdict { call_id: String, verdict: Verdict },
    Done { call_id: String, stats: Option<AudioStats> },
}

/// The controller's handle: dropping it (or `stop`) ends the session.
pub struct Session {
    pub call_id: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Session {
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the session task for the answered call `call_id`.
pub fn start(call_id: String, audio: AudioConfig, amd: AmdConfig, report: mpsc::Sender<SessionMsg>) -> Session {
    let (stop_tx, stop_rx) = oneshot::channel();
    let span = info_span!("call", call_id = %call_id);
    tokio::spawn(run(call_id.clone(), audio, amd, report, stop_rx).instrument(span));
    Session { call_id, stop: Some(stop_tx) }
}

async fn run(
    call_id: String,
    audio: AudioConfig,
    amd_config: AmdConfig,
    report: mpsc::Sender<SessionMsg>,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(mut amd) = Amd::new(&amd_config) else {
        // Validated with the config at start; cannot happen.
        let _ = report.send(SessionMsg::Done { call_id, stats: None }).await;
        return;
    };
    let started = tokio::task::spawn_blocking(move || AudioEngine::start(&audio)).await;
    let mut engine = match started {
        Ok(Ok(engine)) => engine,
        Ok(Err(err)) => {
            warn!(%err, "audio engine unavailable: the answer cannot be classified");
            let _ = report.send(SessionMsg::Verdict { call_id: call_id.clone(), verdict: amd.finish() }).await;
            let _ = report.send(SessionMsg::Done { call_id, stats: None }).await;
            return;
        }
        Err(err) => {
            warn!(%err, "audio engine start panicked");
            let _ = report.send(SessionMsg::Verdict { call_id: call_id.clone(), verdict: amd.finish() }).await;
            let _ = report.send(SessionMsg::Done { call_id, stats: None }).await;
            return;
        }
    };
    let mut frame = vec![0i16; engine.frame_len()];
    let mut decided = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            received = engine.recv_frame(&mut frame) => {
                if let Err(err) = received {
                    warn!(%err, "audio engine stopped during the call");
                    break;
                }
                if !decided {
                    if let Some(verdict) = amd.push(&frame) {
                        decided = true;
                        info!(verdict = ?verdict.kind, cause = ?verdict.cause, decided_at_ms = verdict.decided_at_ms, "answer classified");
                        if report.send(SessionMsg::Verdict { call_id: call_id.clone(), verdict }).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    if !decided {
        let _ = report.send(SessionMsg::Verdict { call_id: call_id.clone(), verdict: amd.finish() }).await;
    }
    let stats = tokio::task::spawn_blocking(move || engine.stop()).await.ok().and_then(Result::ok);
    let _ = report.send(SessionMsg::Done { call_id, stats }).await;
}
