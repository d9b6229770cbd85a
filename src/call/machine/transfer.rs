//! The call machine's blind transfer (`transfer_call`): the agent's last
//! words play out ([`Effect::AwaitPlayout`]), then Baresip's `transfer`
//! sends the REFER. A NOTIFY of 200 closes the call (`Call transfered`):
//! outcome `transferred`, the target in `transfer_to`. A refused REFER
//! (`TRANSFER_FAILED`) leaves the call to go on and tells the agent why.
//! Baresip 1.0.0 hangs up the caller when its REFER fails (and says
//! nothing more), so a `listcalls` then checks that the call is still
//! there; if not, it ends `failed`, saying so.
//!
//! Promises: a transfer starts only on the answered call not being hung up,
//! one at a time; every [`Input::Transfer`] gets exactly one
//! [`Effect::TransferDone`], also when the call ends first.

use super::{ActiveCall, CallMachine, Effect};
use crate::baresip::link::{CommandError, CommandTag};
use crate::baresip::protocol::{Command, CommandName, Response, parse_listcalls};
use crate::call::record::Outcome;
use crate::clock::Now;

/// How long a REFER may go without its outcome before the agent is told
/// the target did not answer (the call goes on).
pub const TRANSFER_WAIT_MS: u64 = 60_000;

/// Why a transfer did not happen; the agent is told the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferRefused {
    NoAnsweredCall,
    /// An earlier `transfer_call` is still under way.
    InProgress,
    /// Baresip refused the `transfer` command.
    Baresip {
        detail: String,
    },
    /// The far end refused the REFER, or the target could not be reached
    /// (`603 Decline`, `486 Busy Here`, ...).
    Declined {
        status: String,
    },
    /// No outcome within [`TRANSFER_WAIT_MS`].
    NoOutcome,
    /// The call ended before the transfer did.
    CallEnded,
}

impl std::fmt::Display for TransferRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoAnsweredCall => write!(f, "no call is answered: nothing to transfer"),
            Self::InProgress => write!(f, "a transfer is already under way"),
            Self::Baresip { detail } => write!(f, "the phone could not start the transfer ({detail}); the call goes on"),
            Self::Declined { status } => write!(f, "the transfer was refused ({status}); the call goes on"),
            Self::NoOutcome => {
                write!(f, "the transfer had no outcome within {} s; the call goes on", TRANSFER_WAIT_MS / 1000)
            }
            Self::CallEnded => write!(f, "the call ended before the transfer"),
        }
    }
}

/// Longest wait for the agent's last words before the REFER goes anyway
/// (the media session gives up on its own at 30 s).
pub const PLAYOUT_WAIT_MS: u64 = 35_000;

/// Where a transfer is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Waiting for the agent's last words to be heard (until then).
    PlayingOut { due_ms: u64 },
    /// The REFER is out; its outcome is due by then.
    Referred { due_ms: u64 },
}

/// The agent's transfer under way on the active call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TransferOut {
    ticket: u64,
    number: String,
    uri: String,
    stage: Stage,
}

impl CallMachine {
    /// `transfer_call`: hand the caller to `number` (at `uri`).
    pub(super) fn on_transfer(&mut self, ticket: u64, number: String, uri: String, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut().filter(|c| c.answered_mono.is_some() && c.intent.is_none()) else {
            return vec![Effect::TransferDone { ticket, result: Err(TransferRefused::NoAnsweredCall) }];
        };
        if call.transfer.is_some() {
            return vec![Effect::TransferDone { ticket, result: Err(TransferRefused::InProgress) }];
        }
        call.note(now, "transfer_requested", Some(number.clone()));
        call.transfer_target = Some(number.clone());
        call.transfer = Some(TransferOut { ticket, number, uri, stage: Stage::PlayingOut { due_ms: now.mono_ms + PLAYOUT_WAIT_MS } });
        vec![Effect::AwaitPlayout { call_id: call.record.id.clone() }]
    }

    /// The agent's last words were heard: the REFER goes out.
    pub(super) fn on_played_out(&mut self, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut().filter(|c| c.intent.is_none()) else { return Vec::new() };
        let Some(transfer) = call.transfer.as_mut().filter(|t| matches!(t.stage, Stage::PlayingOut { .. })) else { return Vec::new() };
        transfer.stage = Stage::Referred { due_ms: now.mono_ms + TRANSFER_WAIT_MS };
        let command = Command { name: CommandName::Transfer, params: Some(transfer.uri.clone()) };
        call.note(now, "transfer_sent", None);
        vec![Effect::Send { command, tag: CommandTag::Transfer }]
    }

    /// Baresip answered the `transfer` command.
    pub(super) fn on_transfer_sent(&mut self, result: Result<Response, CommandError>, now: Now) -> Vec<Effect> {
        let detail = match result {
            Ok(resp) if resp.ok => return Vec::new(),
            Ok(resp) => resp.data.trim().to_string(),
            Err(err) => format!("{err:?}"),
        };
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        let Some(transfer) = call.transfer.take() else { return Vec::new() };
        call.note(now, "transfer_refused", Some(detail.clone()));
        vec![Effect::TransferDone { ticket: transfer.ticket, result: Err(TransferRefused::Baresip { detail }) }]
    }

    /// `TRANSFER_FAILED` of the active call (also one that comes after the
    /// agent was told of no outcome: 1.0.0 drops the call all the same).
    pub(super) fn on_transfer_failed(&mut self, param: Option<&str>, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        let status = param.unwrap_or("no reason given").trim().to_string();
        call.note(now, "TRANSFER_FAILED", Some(status.clone()));
        // 1.0.0 has hung up the caller by now; 4.x has not. Ask.
        call.transfer_check = Some(status.clone());
        let mut effects = Vec::new();
        if let Some(transfer) = call.transfer.take() {
            effects.push(Effect::TransferDone { ticket: transfer.ticket, result: Err(TransferRefused::Declined { status }) });
        }
        effects.push(Effect::Send { command: Command { name: CommandName::ListCalls, params: None }, tag: CommandTag::TransferCheck });
        effects
    }

    /// The `listcalls` after a failed transfer: no call listed means
    /// Baresip dropped ours (1.0.0), without a `CALL_CLOSED`.
    pub(super) fn on_transfer_check(&mut self, result: Result<Response, CommandError>, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        let Some(status) = call.transfer_check.take() else { return Vec::new() };
        let gone = match result {
            Ok(resp) if resp.ok => parse_listcalls(&resp.data).is_some_and(|calls| calls.is_empty()),
            _ => false,
        };
        if !gone {
            return Vec::new();
        }
        call.note(now, "call_dropped_by_baresip", None);
        let reason = format!("the transfer was refused ({status}) and Baresip hung up the caller (1.0.0 ends a call whose REFER fails)");
        self.end(Outcome::Failed, reason, None, now)
    }

    /// The REFER's outcome is overdue: the agent is told; the call goes on.
    /// The last words never reported heard: the REFER goes now.
    pub(super) fn transfer_tick(&mut self, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        if matches!(call.transfer.as_ref().map(|t| &t.stage), Some(Stage::PlayingOut { due_ms }) if *due_ms <= now.mono_ms) {
            call.note(now, "transfer_playout_unconfirmed", None);
            return self.on_played_out(now);
        }
        let overdue = matches!(call.transfer.as_ref().map(|t| &t.stage), Some(Stage::Referred { due_ms }) if *due_ms <= now.mono_ms);
        if !overdue {
            return Vec::new();
        }
        let Some(transfer) = call.transfer.take() else { return Vec::new() };
        call.note(now, "transfer_no_outcome", None);
        vec![Effect::TransferDone { ticket: transfer.ticket, result: Err(TransferRefused::NoOutcome) }]
    }

    pub(super) fn transfer_deadline(call: &ActiveCall) -> Option<u64> {
        match call.transfer.as_ref()?.stage {
            Stage::Referred { due_ms } | Stage::PlayingOut { due_ms } => Some(due_ms),
        }
    }
}

/// `Call transfered` closed the call: the number it went to (the last one
/// asked for, also when the agent was told of no outcome before).
pub(super) fn transferred_to(call: &ActiveCall) -> String {
    call.transfer_target.clone().unwrap_or_else(|| "an unknown number".to_string())
}

/// At the end of `call`: a transfer under way is answered (done, if the
/// call ended `transferred`).
pub(super) fn transfer_at_end(call: &mut ActiveCall, transferred: bool) -> Vec<Effect> {
    match call.transfer.take() {
        Some(t) if transferred => vec![Effect::TransferDone { ticket: t.ticket, result: Ok(format!("transferred to {}", t.number)) }],
        Some(t) => vec![Effect::TransferDone { ticket: t.ticket, result: Err(TransferRefused::CallEnded) }],
        None => Vec::new(),
    }
}
