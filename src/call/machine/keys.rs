//! The call machine's DTMF: the agent's keys out through Baresip's
//! `sndcode`, the caller's keys (`CALL_DTMF_START`) in as entries for the
//! agent and the transcript. The timing and the checks are `call/dtmf.rs`'s;
//! this part owns when a call may send or take keys.
//!
//! Promises: keys go out only on the active answered call that is not being
//! hung up, one `send_dtmf` at a time; every [`Input::SendKeys`] gets exactly
//! one [`Effect::KeysDone`], also when the call ends first.

use super::{ActiveCall, CallMachine, Effect};
use crate::ai::ClientText;
use crate::baresip::link::{CommandError, CommandTag};
use crate::baresip::protocol::{Command, CommandName, Response};
use crate::call::dtmf::{self, Digits, KeyPlan};
use crate::call::record::{Speaker, TranscriptLine};
use crate::clock::Now;

/// Why the agent's keys were not (all) sent; the agent is told the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysRefused {
    /// No call is answered (or it is being hung up).
    NoAnsweredCall,
    /// The keys of an earlier `send_dtmf` are still going out.
    StillSending,
    /// Baresip refused or never got a run; the keys after it were not sent.
    Baresip { sent: String, detail: String },
    /// The call ended before every key went out.
    CallEnded { sent: String },
}

impl std::fmt::Display for KeysRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sent = |s: &str| if s.is_empty() { "no key was sent".to_string() } else { format!("only {s} was sent") };
        match self {
            Self::NoAnsweredCall => write!(f, "no call is answered: no key was sent"),
            Self::StillSending => write!(f, "the keys asked for before are still being sent: try again when they are"),
            Self::Baresip { sent: s, detail } => write!(f, "the phone refused the keys ({detail}); {}", sent(s)),
            Self::CallEnded { sent: s } => write!(f, "the call ended; {}", sent(s)),
        }
    }
}

/// The agent's keys in progress on the active call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeysOut {
    ticket: u64,
    plan: KeyPlan,
    /// The runs Baresip took so far, as asked (with their pauses).
    sent: String,
    /// The run in flight.
    run: String,
    digits: String,
}

impl CallMachine {
    /// `send_dtmf`: the agent asks for `digits` on the active call.
    pub(super) fn on_send_keys(&mut self, ticket: u64, digits: Digits, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut().filter(|c| c.answered_mono.is_some() && c.intent.is_none()) else {
            return vec![Effect::KeysDone { ticket, result: Err(KeysRefused::NoAnsweredCall) }];
        };
        if call.keys_out.is_some() {
            return vec![Effect::KeysDone { ticket, result: Err(KeysRefused::StillSending) }];
        }
        call.note(now, "dtmf_send", Some(format!("{} keys", digits.as_str().chars().filter(|c| dtmf::is_key(*c)).count())));
        let plan = KeyPlan::new(&digits, now.mono_ms);
        call.keys_out = Some(KeysOut { ticket, plan, sent: String::new(), run: String::new(), digits: digits.as_str().to_string() });
        send_due_run(call, now)
    }

    /// Baresip answered a `sndcode`.
    pub(super) fn on_keys_sent(&mut self, result: Result<Response, CommandError>, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        let Some(out) = call.keys_out.as_mut() else { return Vec::new() };
        match result {
            Ok(resp) if resp.ok => {
                out.sent.push_str(&std::mem::take(&mut out.run));
                if !out.plan.accepted(now.mono_ms) {
                    return send_due_run(call, now);
                }
                let Some(out) = call.keys_out.take() else { return Vec::new() };
                vec![Effect::KeysDone { ticket: out.ticket, result: Ok(out.digits) }]
            }
            other => {
                let detail = match other {
                    Ok(resp) => resp.data.trim().to_string(),
                    Err(err) => format!("{err:?}"),
                };
                call.note(now, "dtmf_refused", Some(detail.clone()));
                let Some(out) = call.keys_out.take() else { return Vec::new() };
                vec![Effect::KeysDone { ticket: out.ticket, result: Err(KeysRefused::Baresip { sent: out.sent, detail }) }]
            }
        }
    }

    /// `CALL_DTMF_START` of the active call: `param` is the key.
    pub(super) fn on_caller_key(&mut self, param: Option<&str>, now: Now) -> Vec<Effect> {
        let ai = self.policy.ai;
        let Some(call) = self.active.as_mut().filter(|c| c.answered_mono.is_some()) else { return Vec::new() };
        match call.keys_in.press(param.unwrap_or_default(), now.mono_ms) {
            Some(entry) => caller_entry(call, entry, ai, now),
            None => Vec::new(),
        }
    }

    /// The keys' part of a tick: a run due, an entry complete.
    pub(super) fn keys_tick(&mut self, now: Now) -> Vec<Effect> {
        let ai = self.policy.ai;
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        let mut effects = send_due_run(call, now);
        if let Some(entry) = call.keys_in.take_due(now.mono_ms) {
            effects.extend(caller_entry(call, entry, ai, now));
        }
        effects
    }

    /// The earliest of the keys' deadlines.
    pub(super) fn keys_deadline(call: &ActiveCall) -> Option<u64> {
        let out = call.keys_out.as_ref().and_then(|o| o.plan.due_at());
        [out, call.keys_in.due_at()].into_iter().flatten().min()
    }
}

/// At the end of `call`: the agent's keys that did not all go out are
/// answered, and what the caller pressed last goes into the transcript.
pub(super) fn keys_at_end(call: &mut ActiveCall, now: Now) -> Vec<Effect> {
    if let Some(entry) = call.keys_in.take() {
        push_line(call, entry, now);
    }
    match call.keys_out.take() {
        Some(out) => vec![Effect::KeysDone { ticket: out.ticket, result: Err(KeysRefused::CallEnded { sent: out.sent }) }],
        None => Vec::new(),
    }
}

/// Sends the agent's next run of keys if it is due; a call being hung up
/// sends no more (the tool is told).
fn send_due_run(call: &mut ActiveCall, now: Now) -> Vec<Effect> {
    if call.intent.is_some() {
        return match call.keys_out.take() {
            Some(out) => vec![Effect::KeysDone { ticket: out.ticket, result: Err(KeysRefused::CallEnded { sent: out.sent }) }],
            None => Vec::new(),
        };
    }
    let Some(out) = call.keys_out.as_mut() else { return Vec::new() };
    let Some(run) = out.plan.take_due(now.mono_ms) else { return Vec::new() };
    out.run = run.clone();
    vec![Effect::Send { command: Command { name: CommandName::SendCode, params: Some(run) }, tag: CommandTag::SendKeys }]
}

/// A complete caller's entry: into the transcript, and (`ai`: calls go to
/// an agent) to the agent as a turn.
fn caller_entry(call: &mut ActiveCall, entry: String, ai: bool, now: Now) -> Vec<Effect> {
    call.note(now, "dtmf_received", Some(format!("{} keys", entry.chars().count())));
    let text = ClientText::UserMessage(dtmf::entry_for_agent(&entry));
    push_line(call, entry, now);
    let mut effects = vec![Effect::Persist(call.record.clone())];
    if ai {
        effects.push(Effect::AgentText { call_id: call.record.id.clone(), text });
    }
    effects
}

fn push_line(call: &mut ActiveCall, keys: String, now: Now) {
    let at_ms = now.mono_ms.saturating_sub(call.started_mono);
    call.record.transcript.push(TranscriptLine { at_ms, speaker: Speaker::Dtmf, text: keys });
}
