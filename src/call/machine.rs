//! The call state machine: Baresip events, requests and timer ticks in; records to
//! persist and commands to send out. No I/O and no clocks: every input comes with a
//! [`Now`] reading, and deadlines are reported by [`CallMachine::next_deadline`] for
//! the controller to sleep on.
//!
//! Promises:
//! * one call at a time; a call is `answered` only on `CALL_ESTABLISHED` (200 OK),
//!   never on `CALL_PROGRESS` (18x with SDP), `CALL_RTPESTAB` or `CALL_ANSWERED`;
//! * every call ends exactly once, with an outcome, even when Baresip never sends
//!   `CALL_CLOSED` (shut down, killed, link lost, hangup not confirmed);
//! * every status change yields an [`Effect::Persist`] before anything else about it;
//! * the call's media session is the machine's to start and stop: one per call,
//!   [`Effect::StartMedia`] at early media (when classification runs, to
//!   analyse it) or at the answer, [`Effect::MediaAnswered`] once if it started
//!   before the answer, [`Effect::StopMedia`] when the call ends;
//! * an incoming call ([`CallMachine::incoming`]) is answered only as
//!   `[incoming]` decides, only when no other call is active, and goes to the
//!   agent at once on `CALL_ESTABLISHED`: no classification runs on it; every
//!   incoming call the box does not take is declined (a final 486), and
//!   recorded unless `[incoming] mode = "off"`;
//! * keys (DTMF, `machine/keys.rs`) go out only on the answered call, and
//!   every `send_dtmf` is answered exactly once; likewise a transfer
//!   (`machine/transfer.rs`) starts only on the answered call, after the
//!   agent's last words were heard, and every `transfer_call` is answered once.

use std::collections::VecDeque;

use crate::baresip::link::{CommandError, CommandTag, Resync};
use crate::baresip::protocol::{
    CloseCause, Command, CommandName, Direction, Event, EventKind, Response, call_id_from_dial_data, classify_close,
};
use crate::call::dtmf::{Digits, KeyEntry};
use crate::call::incoming::{Decision, IncomingConfig, caller_number};
use crate::call::record::{CallDirection, CallRecord, Outcome, Speaker, Status, TimelineEntry};
use crate::clock::{Now, rfc3339};
use crate::phone::PhoneNumber;

/// The reason of a call hung up because its answer could not be classified
/// (`[amd] on_unknown = "hangup"`): nobody was heard to be a person.
pub const UNCLASSIFIED_HANGUP: &str = "answer not classified; [amd] on_unknown = \"hangup\"";

/// The reason of an incoming call declined because another call was active.
pub const BUSY_WITH_A_CALL: &str = "declined: another call was in progress";

/// The reason of an incoming call declined because its record could not be saved.
pub const NOT_SAVED_NOT_ANSWERED: &str = "the call record could not be saved; not answered";

/// Time limits the machine enforces itself, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From dial to answer; then we cancel and the outcome is `no_answer`.
    pub ring_ms: u64,
    /// From answer to our hangup.
    pub max_call_ms: u64,
    /// How long we wait for `CALL_CLOSED` after sending `hangup`.
    pub hangup_confirm_ms: u64,
    /// How long a call survives a lost Baresip link before it ends `failed`.
    pub link_grace_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Event(Event),
    CommandDone {
        tag: CommandTag,
        result: Result<Response, CommandError>,
    },
    LinkUp(Resync),
    LinkDown,
    /// A deadline may have passed.
    Tick,
    /// Answer classification decided, for the active answered call.
    Verdict(crate::amd::Verdict),
    /// News of the active call's AI conversation (after [`Effect::StartAi`]).
    Ai(AiInput),
    /// The voicemail message (after [`Effect::DropVoicemail`]) played out
    /// (`left`), or could not be played (`detail` says why).
    VoicemailDone {
        left: bool,
        detail: String,
    },
    /// The agent's `send_dtmf`: [`Effect::KeysDone`] with this `ticket` follows.
    SendKeys {
        ticket: u64,
        digits: Digits,
    },
    /// The agent's `transfer_call` to `number` (allowed), at `uri`:
    /// [`Effect::TransferDone`] with this `ticket` follows.
    Transfer {
        ticket: u64,
        number: String,
        uri: String,
    },
    /// What the agent said has been heard (after [`Effect::AwaitPlayout`]).
    PlayedOut,
}

/// What the AI conversation reports to the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum AiInput {
    /// The conversation runs, `setup_ms` after it was asked for.
    Started {
        provider: String,
        conversation_id: String,
        setup_ms: u32,
    },
    /// It could not start; the call is hung up (`ai_failed`).
    StartFailed {
        reason: String,
    },
    Line {
        speaker: Speaker,
        text: String,
    },
    /// The caller barged in.
    Interrupted,
    /// The service holds the conversation in its queue (`held`) or admitted
    /// it: time held is not conversation time.
    Queue {
        held: bool,
    },
    /// The conversation is over. `by_agent`: the agent ended it and its
    /// farewell has played (`agent_hangup`); else it failed (`ai_failed`).
    Ended {
        by_agent: bool,
        reason: String,
    },
}

/// What follows an answer: classification, then (for a person) the AI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerPolicy {
    /// Answer classification runs (`[amd] enabled`); without it every answer
    /// is taken for a person.
    pub classify: bool,
    /// `[amd] on_unknown = "hangup"` (else an `unknown` answer is kept).
    pub hangup_on_unknown: bool,
    /// An AI conversation is started for a person (`[ai] enabled`).
    pub ai: bool,
    /// A machine gets the voicemail message before the hangup (`[voicemail] drop_wav`).
    pub voicemail_drop: bool,
}

impl Default for AnswerPolicy {
    fn default() -> Self {
        AnswerPolicy { classify: true, hangup_on_unknown: false, ai: false, voicemail_drop: false }
    }
}

// `Persist` dwarfs the other variants, but nearly every effect batch holds
// one, and effects are short-lived: boxing it would cost an allocation per
// transition and save no memory.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write this record to the journal (and sync it) before acting further.
    Persist(CallRecord),
    Send {
        command: Command,
        tag: CommandTag,
    },
    /// Start the AI conversation of the active call. The one place this is
    /// decided: after `CALL_ESTABLISHED` and a `human` verdict (or `unknown`
    /// kept, or no classification configured), never in early media, never
    /// for a machine, at most once per call.
    StartAi {
        call_id: String,
    },
    /// Leave the voicemail message on the active call (a machine answered),
    /// once its greeting is over; [`Input::VoicemailDone`] follows.
    DropVoicemail {
        call_id: String,
    },
    /// Start the call's media session: at early media (`answered: false`,
    /// analysed for the record) or at the answer. `classify`: answer
    /// classification runs on it (never for an incoming call).
    StartMedia {
        call_id: String,
        answered: bool,
        classify: bool,
    },
    /// The session started in early media: the call is answered now.
    MediaAnswered {
        call_id: String,
    },
    /// The call ended: its media session stops.
    StopMedia {
        call_id: String,
    },
    /// The answer to [`Input::SendKeys`] `ticket`: the keys as asked, once
    /// Baresip took the last of them, or why not.
    KeysDone {
        ticket: u64,
        result: Result<String, KeysRefused>,
    },
    /// Tell ([`Input::PlayedOut`]) once what the call's agent said so far
    /// has been heard (at once if nothing plays).
    AwaitPlayout {
        call_id: String,
    },
    /// The answer to [`Input::Transfer`] `ticket`: done (the call ended
    /// `transferred`), or why not.
    TransferDone {
        ticket: u64,
        result: Result<String, TransferRefused>,
    },
    /// Text for the call's agent (the caller's keys).
    AgentText {
        call_id: String,
        text: crate::ai::ClientText,
    },
}

/// The media session the machine has started, until it stops it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaRun {
    call_id: String,
    answered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialError {
    /// Another call is active; its id.
    Busy(String),
    NotConnected,
    /// Connected, but a call left over from before is still being hung up.
    NotReady,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HangupError {
    /// The id is not the active call (it may be an ended one, or unknown).
    NotActive,
}

/// Why we asked Baresip to hang up; decides the outcome when `CALL_CLOSED` comes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HangupIntent {
    User {
        origin: String,
    },
    RingTimeout,
    MaxDuration,
    /// A command for the call failed (the dial, the answer): `reason` says which.
    CommandFailed {
        reason: String,
    },
    /// Classification said: an answering machine.
    Machine {
        cause: String,
    },
    /// Classification could not decide and `[amd] on_unknown = "hangup"`.
    Unclassified,
    /// The agent ended the conversation.
    AgentEnded {
        reason: String,
    },
    /// The AI conversation failed (or never started).
    AiFailed {
        reason: String,
    },
}

#[derive(Debug)]
struct ActiveCall {
    record: CallRecord,
    started_mono: u64,
    answered_mono: Option<u64>,
    intent: Option<HangupIntent>,
    ring_deadline: Option<u64>,
    max_deadline: Option<u64>,
    hangup_deadline: Option<u64>,
    link_deadline: Option<u64>,
    /// An incoming call rings until then; then it is answered.
    answer_deadline: Option<u64>,
    /// An incoming call's `accept` has been sent.
    answering: bool,
    /// When the AI conversation started running, while it runs (not while
    /// the service holds it in its queue).
    ai_running_since: Option<u64>,
    /// When the service queued the conversation, while it is held.
    ai_queued_since: Option<u64>,
    /// A voicemail message is being left.
    voicemail_pending: bool,
    /// When a transcript line was last saved.
    transcript_saved_at: Option<u64>,
    /// The agent's keys going out (`send_dtmf`).
    keys_out: Option<keys::KeysOut>,
    /// The caller's keys since their last complete entry.
    keys_in: KeyEntry,
    /// The agent's transfer under way (`transfer_call`).
    transfer: Option<transfer::TransferOut>,
    /// A transfer failed with this status: is the call still there?
    transfer_check: Option<String>,
    /// The number of the last transfer asked for.
    transfer_target: Option<String>,
}

/// Transcript lines are saved at most this often during a call.
const TRANSCRIPT_SAVE_MS: u64 = 10_000;

impl ActiveCall {
    fn note(&mut self, now: Now, event: &str, detail: Option<String>) {
        let at_ms = now.mono_ms.saturating_sub(self.started_mono);
        self.record.timeline.push(TimelineEntry { at_ms, event: event.to_string(), detail });
    }

    /// Closes the AI conversation's books: its seconds and how it ended.
    fn ai_over(&mut self, now: Now, reason: &str) {
        let (running, queued) = (self.ai_running_since.take(), self.ai_queued_since.take());
        if running.is_none() && queued.is_none() {
            return;
        }
        if let Some(ai) = self.record.ai.as_mut() {
            if let Some(since) = running {
                ai.seconds += now.mono_ms.saturating_sub(since) as f64 / 1000.0;
            }
            if let Some(since) = queued {
                ai.queued_ms += now.mono_ms.saturating_sub(since);
            }
            ai.end_reason.get_or_insert_with(|| reason.to_string());
        }
    }
}

/// The state machine. Owned by the controller task.
#[derive(Debug)]
pub struct CallMachine {
    timeouts: Timeouts,
    link_up: bool,
    /// Baresip announced SHUTDOWN: the coming EOF is final for any call.
    shutting_down: bool,
    active: Option<ActiveCall>,
    /// Baresip ids of recently ended calls: their late events must not be taken
    /// for a new call's (which has no id yet).
    ended_ids: VecDeque<String>,
    /// A hangup of a leftover call is under way; dialling waits for it.
    orphan_pending: bool,
    policy: AnswerPolicy,
    media: Option<MediaRun>,
    incoming: IncomingConfig,
}

/// How many ended calls' Baresip ids are remembered.
const ENDED_IDS: usize = 8;

impl CallMachine {
    pub fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            link_up: false,
            shutting_down: false,
            active: None,
            ended_ids: VecDeque::new(),
            orphan_pending: false,
            policy: AnswerPolicy::default(),
            media: None,
            incoming: IncomingConfig::default(),
        }
    }

    /// What is done with incoming calls (default: `off`, each declined).
    pub fn with_incoming(mut self, incoming: IncomingConfig) -> Self {
        self.incoming = incoming;
        self
    }

    /// What follows an answer (default: classification, unknown kept, no AI).
    pub fn with_answer_policy(mut self, policy: AnswerPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    pub fn active(&self) -> Option<&CallRecord> {
        self.active.as_ref().map(|a| &a.record)
    }

    /// Starts a call to `number`, dialling `uri`. `id` is the new record's id;
    /// `plan`: the plan run and attempt it is, if it is one.
    pub fn dial(
        &mut self,
        id: String,
        number: &PhoneNumber,
        uri: String,
        plan: Option<(String, u32)>,
        now: Now,
    ) -> Result<(CallRecord, Vec<Effect>), DialError> {
        if let Some(active) = &self.active {
            return Err(DialError::Busy(active.record.id.clone()));
        }
        if !self.link_up {
            return Err(DialError::NotConnected);
        }
        if self.orphan_pending {
            return Err(DialError::NotReady);
        }
        let mut record = CallRecord::new(id, number.to_string(), CallDirection::Outbound, Status::Dialing, rfc3339(now.unix_ms));
        record.attempt = plan.as_ref().map(|(_, attempt)| *attempt);
        record.plan_run = plan.map(|(run, _)| run);
        let mut call = ActiveCall {
            record,
            started_mono: now.mono_ms,
            answered_mono: None,
            intent: None,
            ring_deadline: Some(now.mono_ms + self.timeouts.ring_ms),
            max_deadline: None,
            hangup_deadline: None,
            link_deadline: None,
            answer_deadline: None,
            answering: false,
            ai_running_since: None,
            ai_queued_since: None,
            voicemail_pending: false,
            transcript_saved_at: None,
            keys_out: None,
            keys_in: KeyEntry::default(),
            transfer: None,
            transfer_check: None,
            transfer_target: None,
        };
        call.note(now, "dial", Some(uri.clone()));
        let effects = vec![
            Effect::Persist(call.record.clone()),
            Effect::Send { command: Command { name: CommandName::Dial, params: Some(uri) }, tag: CommandTag::Dial },
        ];
        let record = call.record.clone();
        self.active = Some(call);
        Ok((record, self.with_media(effects)))
    }

    /// A `CALL_INCOMING`: `[incoming]` decides, unless a call is active (then
    /// the caller is declined busy). `id` is the record's id, should there be
    /// one. Like [`Self::dial`], the first effect of an answered call is the
    /// record to put on disk before the rest is applied; if it cannot be saved,
    /// [`Input::CommandDone`] with [`CommandTag::Accept`] and
    /// [`CommandError::NotSent`] declines the call instead.
    pub fn incoming(&mut self, id: String, event: &Event, now: Now) -> Vec<Effect> {
        let Some(sip_id) = event.call_id.clone() else { return Vec::new() };
        let known = self.active.as_ref().is_some_and(|c| c.record.sip_call_id.as_ref() == Some(&sip_id));
        if event.kind != EventKind::CallIncoming || known || self.ended_ids.contains(&sip_id) {
            return Vec::new();
        }
        let caller = caller_number(event.peer_uri.as_deref().or(event.param.as_deref()).unwrap_or(""));
        let decline =
            Effect::Send { command: Command { name: CommandName::Hangup, params: Some(sip_id.clone()) }, tag: CommandTag::Decline };
        let ended = |outcome, reason: &str| {
            let mut record = CallRecord::new(id.clone(), caller.clone(), CallDirection::Inbound, Status::Ended, rfc3339(now.unix_ms));
            record.sip_call_id = Some(sip_id.clone());
            record.timeline.push(TimelineEntry { at_ms: 0, event: "incoming".into(), detail: None });
            record.timeline.push(TimelineEntry { at_ms: 0, event: "ended".into(), detail: Some(Outcome::as_str(outcome).into()) });
            record.outcome = Some(outcome);
            record.reason = Some(reason.to_string());
            // What Baresip sends for a hangup of a call not yet answered.
            record.sip_code = Some(486);
            record.ended_at = record.started_at.clone().into();
            record
        };
        let decision = if self.active.is_some() || self.orphan_pending { None } else { Some(self.incoming.decide(&caller)) };
        let after_ms = match decision {
            None => {
                let record = ended(Outcome::Busy, BUSY_WITH_A_CALL);
                self.remember_ended(sip_id);
                return vec![Effect::Persist(record), decline];
            }
            Some(Decision::Decline) => {
                self.remember_ended(sip_id);
                return vec![decline];
            }
            Some(Decision::Reject { reason }) => {
                let record = ended(Outcome::Rejected, reason);
                self.remember_ended(sip_id);
                return vec![Effect::Persist(record), decline];
            }
            Some(Decision::Answer { after_ms }) => after_ms,
        };
        let mut record = CallRecord::new(id, caller, CallDirection::Inbound, Status::Ringing, rfc3339(now.unix_ms));
        record.sip_call_id = Some(sip_id);
        let mut call = ActiveCall {
            record,
            started_mono: now.mono_ms,
            answered_mono: None,
            intent: None,
            ring_deadline: None,
            max_deadline: None,
            hangup_deadline: None,
            link_deadline: None,
            answer_deadline: Some(now.mono_ms + after_ms),
            answering: false,
            ai_running_since: None,
            ai_queued_since: None,
            voicemail_pending: false,
            transcript_saved_at: None,
            keys_out: None,
            keys_in: KeyEntry::default(),
            transfer: None,
            transfer_check: None,
            transfer_target: None,
        };
        call.note(now, "incoming", Some(format!("answer after {after_ms} ms")));
        let mut effects = vec![Effect::Persist(call.record.clone())];
        self.active = Some(call);
        if after_ms == 0 {
            effects.extend(self.on_tick(now));
        }
        effects
    }

    /// Asks for the active call `id` to be hung up. Idempotent while the hangup is
    /// under way. The call ends when Baresip confirms (or the confirm timer expires).
    pub fn hangup(&mut self, id: &str, origin: &str, now: Now) -> Result<(CallRecord, Vec<Effect>), HangupError> {
        let Some(call) = self.active.as_mut().filter(|c| c.record.id == id) else {
            return Err(HangupError::NotActive);
        };
        if call.intent.is_some() {
            return Ok((call.record.clone(), Vec::new()));
        }
        call.note(now, "hangup_requested", Some(origin.to_string()));
        let effects = self.request_hangup(HangupIntent::User { origin: origin.to_string() }, now);
        let effects = self.with_media(effects);
        let record = self.active.as_ref().map(|c| c.record.clone()).ok_or(HangupError::NotActive)?;
        Ok((record, effects))
    }

    /// The earliest time at which [`Input::Tick`] has work to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let call = self.active.as_ref()?;
        [
            call.ring_deadline,
            call.max_deadline,
            call.hangup_deadline,
            call.link_deadline,
            call.answer_deadline,
            Self::keys_deadline(call),
            Self::transfer_deadline(call),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Effect> {
        let effects = self.on_input(input, now);
        self.with_media(effects)
    }

    /// `effects`, each [`Effect::Persist`] followed by what its status means
    /// for the media session.
    fn with_media(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        let mut out = Vec::with_capacity(effects.len() + 1);
        for effect in effects {
            let media = match &effect {
                Effect::Persist(record) => self.media_for(record),
                _ => None,
            };
            out.push(effect);
            out.extend(media);
        }
        out
    }

    fn media_for(&mut self, record: &CallRecord) -> Option<Effect> {
        let call_id = record.id.clone();
        let ours = self.media.as_ref().is_some_and(|m| m.call_id == call_id);
        match record.status {
            // Early media is listened to (for the record) when classification runs.
            Status::EarlyMedia if self.media.is_none() && self.policy.classify => {
                self.media = Some(MediaRun { call_id: call_id.clone(), answered: false });
                Some(Effect::StartMedia { call_id, answered: false, classify: true })
            }
            Status::Answered if ours => {
                let run = self.media.as_mut()?;
                if run.answered {
                    return None;
                }
                run.answered = true;
                Some(Effect::MediaAnswered { call_id })
            }
            Status::Answered if self.media.is_none() && (self.policy.classify || self.policy.ai) => {
                self.media = Some(MediaRun { call_id: call_id.clone(), answered: true });
                let classify = self.policy.classify && record.direction == CallDirection::Outbound;
                Some(Effect::StartMedia { call_id, answered: true, classify })
            }
            Status::Ended if ours => {
                self.media = None;
                Some(Effect::StopMedia { call_id })
            }
            _ => None,
        }
    }

    fn on_input(&mut self, input: Input, now: Now) -> Vec<Effect> {
        match input {
            Input::Event(event) => self.on_event(event, now),
            Input::CommandDone { tag, result } => self.on_command_done(tag, result, now),
            Input::LinkUp(resync) => self.on_link_up(resync, now),
            Input::LinkDown => self.on_link_down(now),
            Input::Tick => self.on_tick(now),
            Input::Verdict(verdict) => self.on_verdict(&verdict, now),
            Input::Ai(ai) => self.on_ai(ai, now),
            Input::VoicemailDone { left, detail } => self.on_voicemail_done(left, &detail, now),
            Input::SendKeys { ticket, digits } => self.on_send_keys(ticket, digits, now),
            Input::Transfer { ticket, number, uri } => self.on_transfer(ticket, number, uri, now),
            Input::PlayedOut => self.on_played_out(now),
        }
    }

    fn on_verdict(&mut self, verdict: &crate::amd::Verdict, now: Now) -> Vec<Effect> {
        use crate::amd::Kind;
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        // Nobody classifies a caller who reached the box.
        if call.answered_mono.is_none() || call.record.answer.is_some() || call.record.direction == CallDirection::Inbound {
            return Vec::new();
        }
        let answer = crate::call::record::AnswerRecord::from_verdict(verdict);
        let detail = format!("{} ({}) at {} ms", answer.verdict, answer.cause, answer.decided_at_ms);
        call.note(now, "answer_classified", Some(detail));
        let cause = answer.cause.clone();
        call.record.answer = Some(answer);
        // The verdict is on disk before anything acts on it.
        let mut effects = vec![Effect::Persist(call.record.clone())];
        if call.intent.is_none() {
            match verdict.kind {
                Kind::Machine if self.policy.voicemail_drop => {
                    if let Some(call) = self.active.as_mut() {
                        call.voicemail_pending = true;
                        call.note(now, "voicemail_drop", Some("waiting for the greeting to end".into()));
                        effects.push(Effect::DropVoicemail { call_id: call.record.id.clone() });
                    }
                }
                Kind::Machine => effects.extend(self.request_hangup(HangupIntent::Machine { cause }, now)),
                Kind::Unknown if self.policy.hangup_on_unknown => effects.extend(self.request_hangup(HangupIntent::Unclassified, now)),
                Kind::Human | Kind::Unknown => effects.extend(self.start_ai(now)),
            }
        }
        effects
    }

    /// Asks for the AI conversation if the policy wants one and the call is
    /// answered, not being hung up, and has had none yet.
    fn start_ai(&mut self, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        if !self.policy.ai || call.answered_mono.is_none() || call.intent.is_some() || call.record.ai.is_some() {
            return Vec::new();
        }
        call.note(now, "ai_requested", None);
        call.record.ai = Some(crate::call::record::AiRecord::default());
        vec![Effect::Persist(call.record.clone()), Effect::StartAi { call_id: call.record.id.clone() }]
    }

    /// After an answer: without classification, a person is assumed.
    fn answered(&mut self, now: Now) -> Vec<Effect> {
        let mut effects = self.set_status(Status::Answered);
        let inbound = self.active.as_ref().is_some_and(|c| c.record.direction == CallDirection::Inbound);
        // Someone who calls the box is a person: no classification.
        if !self.policy.classify || inbound {
            effects.extend(self.start_ai(now));
        }
        effects
    }

    fn on_ai(&mut self, input: AiInput, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        let Some(ai) = call.record.ai.as_mut() else { return Vec::new() };
        match input {
            AiInput::Started { provider, conversation_id, setup_ms } => {
                if call.ai_running_since.is_some() || ai.provider.is_some() {
                    return Vec::new();
                }
                ai.provider = Some(provider.clone());
                ai.conversation_id = Some(conversation_id);
                ai.setup_ms = Some(setup_ms);
                call.ai_running_since = Some(now.mono_ms);
                call.note(now, "ai_started", Some(format!("{provider} after {setup_ms} ms")));
                vec![Effect::Persist(call.record.clone())]
            }
            AiInput::Line { speaker, text } => {
                let at_ms = now.mono_ms.saturating_sub(call.started_mono);
                call.record.transcript.push(crate::call::record::TranscriptLine { at_ms, speaker, text });
                // Each save writes the whole record: at most one per
                // TRANSCRIPT_SAVE_MS, so a long conversation does not grow the
                // journal quadratically; the end of the call saves the rest.
                if call.transcript_saved_at.is_some_and(|t| now.mono_ms < t + TRANSCRIPT_SAVE_MS) {
                    return Vec::new();
                }
                call.transcript_saved_at = Some(now.mono_ms);
                vec![Effect::Persist(call.record.clone())]
            }
            AiInput::Queue { held: true } => {
                let Some(since) = call.ai_running_since.take() else { return Vec::new() };
                ai.seconds += now.mono_ms.saturating_sub(since) as f64 / 1000.0;
                call.ai_queued_since = Some(now.mono_ms);
                call.note(now, "ai_queued", None);
                vec![Effect::Persist(call.record.clone())]
            }
            AiInput::Queue { held: false } => {
                let Some(since) = call.ai_queued_since.take() else { return Vec::new() };
                let waited = now.mono_ms.saturating_sub(since);
                ai.queued_ms += waited;
                call.ai_running_since = Some(now.mono_ms);
                call.note(now, "ai_admitted", Some(format!("after {waited} ms in the service's queue")));
                vec![Effect::Persist(call.record.clone())]
            }
            AiInput::Interrupted => {
                ai.interruptions += 1;
                call.note(now, "ai_interrupted", None);
                Vec::new()
            }
            AiInput::StartFailed { reason } => {
                ai.end_reason = Some(reason.clone());
                call.note(now, "ai_failed", Some(reason.clone()));
                self.save_then_hang_up(HangupIntent::AiFailed { reason }, now)
            }
            AiInput::Ended { by_agent, reason } => {
                call.ai_over(now, &reason);
                call.note(now, "ai_ended", Some(reason.clone()));
                let intent = if by_agent { HangupIntent::AgentEnded { reason } } else { HangupIntent::AiFailed { reason } };
                self.save_then_hang_up(intent, now)
            }
        }
    }

    fn on_voicemail_done(&mut self, left: bool, detail: &str, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut().filter(|c| c.voicemail_pending) else { return Vec::new() };
        call.voicemail_pending = false;
        let event = if left { "voicemail_left" } else { "voicemail_not_left" };
        call.note(now, event, Some(detail.to_string()));
        let verdict_cause = call.record.answer.as_ref().map_or_else(String::new, |a| a.cause.clone());
        let cause =
            if left { format!("{verdict_cause}; voicemail left") } else { format!("{verdict_cause}; voicemail not left: {detail}") };
        self.save_then_hang_up(HangupIntent::Machine { cause }, now)
    }

    /// The record (with the AI's or the voicemail's news) is on disk before
    /// the hangup goes out; a hangup already under way keeps its intent.
    fn save_then_hang_up(&mut self, intent: HangupIntent, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_ref() else { return Vec::new() };
        let mut effects = vec![Effect::Persist(call.record.clone())];
        if call.intent.is_none() {
            effects.extend(self.request_hangup(intent, now));
        }
        effects
    }

    fn on_event(&mut self, event: Event, now: Now) -> Vec<Effect> {
        if matches!(event.kind, EventKind::Shutdown | EventKind::Exit) {
            self.shutting_down = true;
            return match self.active.as_mut() {
                Some(call) => {
                    call.note(now, event.kind.as_str(), None);
                    self.end(Outcome::Failed, "Baresip shut down".into(), None, now)
                }
                None => Vec::new(),
            };
        }
        if event.call_id.as_ref().is_some_and(|id| self.ended_ids.contains(id)) {
            return Vec::new();
        }
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        // A CALL_INCOMING goes to `incoming`; the other events count only if
        // they are of the active call's direction.
        let ours = match call.record.direction {
            CallDirection::Outbound => Direction::Outgoing,
            CallDirection::Inbound => Direction::Incoming,
        };
        if event.kind == EventKind::CallIncoming || event.direction.is_some_and(|d| d != ours) {
            return Vec::new();
        }
        match (&call.record.sip_call_id, &event.call_id) {
            // Baresip 1.0.0 returns no id from `dial`: with one call at a time, the
            // first outgoing event with an id names our call.
            (None, Some(id)) => {
                call.record.sip_call_id = Some(id.clone());
            }
            (Some(ours), Some(theirs)) if ours != theirs => return Vec::new(),
            // Only the dial's own SDP offer comes without an id.
            (_, None) if event.kind != EventKind::CallLocalSdp => return Vec::new(),
            _ => {}
        }
        // Keys go into the transcript as entries, not into the timeline one by one.
        match event.kind {
            EventKind::CallDtmfStart => return self.on_caller_key(event.param.as_deref(), now),
            EventKind::CallDtmfEnd => return Vec::new(),
            EventKind::TransferFailed => return self.on_transfer_failed(event.param.as_deref(), now),
            _ => {}
        }
        let detail = match event.kind {
            EventKind::CallRinging | EventKind::CallProgress | EventKind::CallEstablished | EventKind::CallOutgoing => None,
            _ => event.param.clone(),
        };
        call.note(now, event.kind.as_str(), detail);

        let status = call.record.status;
        match event.kind {
            EventKind::CallRinging if matches!(status, Status::Dialing | Status::EarlyMedia) => self.set_status(Status::Ringing),
            EventKind::CallProgress if matches!(status, Status::Dialing | Status::Ringing) => self.set_status(Status::EarlyMedia),
            EventKind::CallEstablished if status != Status::Answered => {
                call.answered_mono = Some(now.mono_ms);
                call.record.answered_at = Some(rfc3339(now.unix_ms));
                call.ring_deadline = None;
                if call.intent.is_none() {
                    call.max_deadline = Some(now.mono_ms + self.timeouts.max_call_ms);
                }
                self.answered(now)
            }
            EventKind::CallClosed => {
                let param = event.param.unwrap_or_default();
                self.on_closed(&param, now)
            }
            _ => Vec::new(),
        }
    }

    fn on_closed(&mut self, param: &str, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_ref() else { return Vec::new() };
        let answered = call.answered_mono.is_some();
        let intended = call.intent.as_ref().map(|i| self.intent_outcome(i));
        let inbound = call.record.direction == CallDirection::Inbound;
        let cause = classify_close(param);
        if cause == CloseCause::Transferred {
            let to = transfer::transferred_to(call);
            if let Some(call) = self.active.as_mut() {
                call.record.transfer_to = Some(to.clone());
            }
            return self.end(Outcome::Transferred, format!("transferred to {to}"), None, now);
        }
        let (outcome, reason, code) = match (cause, intended) {
            // Whatever Baresip says (a CANCEL, a BYE before our answer was
            // ACKed), the caller went away.
            (_, None) if inbound && !answered => (Outcome::RemoteHangup, format!("the caller hung up before the answer ({param})"), None),
            // 487 Request Terminated is the answer to our own CANCEL.
            (CloseCause::SipStatus(487), Some((outcome, reason))) => (outcome, reason, Some(487)),
            // A final status after the answer is no rejection: the call broke.
            (CloseCause::SipStatus(code), _) if answered => (Outcome::Failed, param.to_string(), Some(code)),
            (CloseCause::SipStatus(code @ (486 | 600)), _) => (Outcome::Busy, param.to_string(), Some(code)),
            (CloseCause::SipStatus(code), _) => (Outcome::Rejected, param.to_string(), Some(code)),
            (CloseCause::RemoteHangup, _) => (Outcome::RemoteHangup, param.to_string(), None),
            (CloseCause::LocalHangup, Some((outcome, reason))) => (outcome, reason, None),
            (CloseCause::LocalHangup, None) => (Outcome::LocalHangup, param.to_string(), None),
            (CloseCause::TimedOut | CloseCause::Refused, _) if !answered => (Outcome::Unreachable, param.to_string(), None),
            (CloseCause::LocalTimeout, _) if !answered => (Outcome::NoAnswer, param.to_string(), None),
            (_, Some((outcome, reason))) => (outcome, format!("{reason} ({param})"), None),
            (_, None) => (Outcome::Failed, param.to_string(), None),
        };
        self.end(outcome, reason, code, now)
    }

    fn on_command_done(&mut self, tag: CommandTag, result: Result<Response, CommandError>, now: Now) -> Vec<Effect> {
        if tag == CommandTag::OrphanHangup {
            self.orphan_pending = false;
            return Vec::new();
        }
        match tag {
            CommandTag::SendKeys => return self.on_keys_sent(result, now),
            CommandTag::Transfer => return self.on_transfer_sent(result, now),
            CommandTag::TransferCheck => return self.on_transfer_check(result, now),
            _ => {}
        }
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        match (tag, result) {
            (CommandTag::Dial, Ok(resp)) if resp.ok => {
                if call.record.sip_call_id.is_none() {
                    call.record.sip_call_id = call_id_from_dial_data(&resp.data);
                }
                Vec::new()
            }
            (CommandTag::Dial, Ok(resp)) => {
                let reason = format!("Baresip refused the dial: {}", resp.data.trim());
                call.note(now, "dial_refused", Some(resp.data.trim().to_string()));
                self.end(Outcome::Failed, reason, None, now)
            }
            (CommandTag::Dial, Err(CommandError::NotConnected)) => {
                call.note(now, "dial_not_sent", None);
                self.end(Outcome::Failed, "Baresip was not connected".into(), None, now)
            }
            (CommandTag::Dial, Err(CommandError::NotSent)) => {
                call.note(now, "dial_not_sent", None);
                self.end(Outcome::Failed, "the call record could not be saved; dial not sent".into(), None, now)
            }
            (CommandTag::Dial, Err(CommandError::Timeout)) => {
                // The INVITE may be out; make sure it does not linger.
                call.note(now, "dial_timeout", None);
                let reason = "Baresip did not answer the dial command".to_string();
                self.request_hangup(HangupIntent::CommandFailed { reason }, now)
            }
            (CommandTag::Accept, Ok(resp)) if resp.ok => Vec::new(),
            (CommandTag::Accept, Ok(resp)) => {
                call.note(now, "accept_refused", Some(resp.data.trim().to_string()));
                let reason = format!("Baresip refused the answer: {}", resp.data.trim());
                self.request_hangup(HangupIntent::CommandFailed { reason }, now)
            }
            (CommandTag::Accept, Err(CommandError::NotSent)) => {
                call.note(now, "accept_not_sent", None);
                let effects = self.request_hangup(HangupIntent::CommandFailed { reason: NOT_SAVED_NOT_ANSWERED.into() }, now);
                let mut ended = self.end(Outcome::Failed, NOT_SAVED_NOT_ANSWERED.into(), None, now);
                ended.extend(effects.into_iter().map(|e| match e {
                    Effect::Send { command, .. } => Effect::Send { command, tag: CommandTag::Decline },
                    other => other,
                }));
                ended
            }
            (CommandTag::Accept, Err(CommandError::Timeout)) => {
                call.note(now, "accept_timeout", None);
                let reason = "Baresip did not answer the accept command".to_string();
                self.request_hangup(HangupIntent::CommandFailed { reason }, now)
            }
            (CommandTag::Hangup, Ok(resp)) if !resp.ok && call.intent.is_some() => {
                // Newer Baresip: "call <id> not found". It is gone already.
                call.note(now, "hangup_refused", Some(resp.data.trim().to_string()));
                let (outcome, reason) = self.intent_outcome_of_active();
                self.end(outcome, reason, None, now)
            }
            // Link loss is handled by LinkDown; hangup timeouts by the confirm timer.
            _ => Vec::new(),
        }
    }

    fn on_link_up(&mut self, resync: Resync, now: Now) -> Vec<Effect> {
        self.link_up = true;
        self.shutting_down = false;
        let Some(call) = self.active.as_mut() else {
            // Calls we do not own are left from before a crash or restart of ours:
            // nobody would ever hang them up, so we do.
            if resync.calls.is_empty() {
                return Vec::new();
            }
            self.orphan_pending = true;
            let command = Command { name: CommandName::Hangup, params: resync.current_call_id };
            return vec![Effect::Send { command, tag: CommandTag::OrphanHangup }];
        };
        let still_there = match (&call.record.sip_call_id, &resync.current_call_id) {
            (Some(ours), Some(current)) => ours == current,
            _ => !resync.calls.is_empty(),
        };
        if still_there {
            call.link_deadline = None;
            call.note(now, "baresip_resynced", None);
            // No event replay: an answer that happened while we were away shows
            // only in the call list.
            let answered_meanwhile =
                call.answered_mono.is_none() && resync.calls.len() == 1 && resync.calls[0].state.eq_ignore_ascii_case("ESTABLISHED");
            let mut effects = Vec::new();
            if answered_meanwhile {
                call.note(now, "answered_while_disconnected", None);
                call.answered_mono = Some(now.mono_ms);
                call.record.answered_at = Some(rfc3339(now.unix_ms));
                call.ring_deadline = None;
                if call.intent.is_none() {
                    call.max_deadline = Some(now.mono_ms + self.timeouts.max_call_ms);
                }
                effects = self.answered(now);
            }
            // A hangup we asked for may have been lost with the link: ask again.
            if let Some(intent) = self.active.as_ref().and_then(|c| c.intent.clone()) {
                effects.extend(self.request_hangup(intent, now));
            }
            effects
        } else {
            call.note(now, "baresip_resynced", Some("call no longer in Baresip".into()));
            let (outcome, reason) = if call.intent.is_some() {
                self.intent_outcome_of_active()
            } else {
                (Outcome::Failed, "call lost while Baresip was disconnected".to_string())
            };
            self.end(outcome, reason, None, now)
        }
    }

    fn on_link_down(&mut self, now: Now) -> Vec<Effect> {
        self.link_up = false;
        let shutting_down = std::mem::take(&mut self.shutting_down);
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        call.note(now, "baresip_link_lost", None);
        if shutting_down {
            return self.end(Outcome::Failed, "Baresip shut down".into(), None, now);
        }
        call.link_deadline = Some(now.mono_ms + self.timeouts.link_grace_ms);
        Vec::new()
    }

    fn on_tick(&mut self, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        let due = |deadline: Option<u64>| deadline.is_some_and(|d| d <= now.mono_ms);
        if due(call.link_deadline) {
            let secs = self.timeouts.link_grace_ms / 1000;
            return self.end(Outcome::Failed, format!("Baresip did not come back within {secs} s"), None, now);
        }
        if due(call.hangup_deadline) {
            call.note(now, "hangup_unconfirmed", None);
            let (outcome, reason) = self.intent_outcome_of_active();
            return self.end(outcome, format!("{reason} (Baresip did not confirm the hangup)"), None, now);
        }
        if due(call.answer_deadline) {
            call.answer_deadline = None;
            if call.intent.is_none() {
                // Until CALL_ESTABLISHED (the caller's ACK), with the ring timeout as its limit.
                call.answering = true;
                call.ring_deadline = Some(now.mono_ms + self.timeouts.ring_ms);
                call.note(now, "answering", None);
                let command = Command { name: CommandName::Accept, params: call.record.sip_call_id.clone() };
                return vec![Effect::Send { command, tag: CommandTag::Accept }];
            }
        }
        if due(call.ring_deadline) {
            call.ring_deadline = None;
            if call.intent.is_none() && call.answering {
                call.note(now, "answer_unconfirmed", None);
                let reason = format!("the answer was not confirmed within {} s", self.timeouts.ring_ms / 1000);
                return self.request_hangup(HangupIntent::CommandFailed { reason }, now);
            }
            if call.intent.is_none() {
                call.note(now, "ring_timeout", None);
                return self.request_hangup(HangupIntent::RingTimeout, now);
            }
        }
        if due(call.max_deadline) {
            call.max_deadline = None;
            if call.intent.is_none() {
                call.note(now, "max_call_length", None);
                return self.request_hangup(HangupIntent::MaxDuration, now);
            }
        }
        let mut effects = self.keys_tick(now);
        effects.extend(self.transfer_tick(now));
        effects
    }

    fn request_hangup(&mut self, intent: HangupIntent, now: Now) -> Vec<Effect> {
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        call.intent = Some(intent);
        call.answer_deadline = None;
        call.ring_deadline = None;
        call.max_deadline = None;
        call.hangup_deadline = Some(now.mono_ms + self.timeouts.hangup_confirm_ms);
        // 1.0.0 ignores the id and hangs up its current call (ours: one at a time);
        // newer versions hang up exactly this call.
        let command = Command { name: CommandName::Hangup, params: call.record.sip_call_id.clone() };
        vec![Effect::Send { command, tag: CommandTag::Hangup }]
    }

    fn intent_outcome(&self, intent: &HangupIntent) -> (Outcome, String) {
        match intent {
            HangupIntent::User { origin } => (Outcome::LocalHangup, format!("hung up by {origin}")),
            HangupIntent::RingTimeout if self.active.as_ref().is_some_and(|c| c.answered_mono.is_some()) => {
                (Outcome::LocalHangup, format!("answered just after the ring timeout of {} s; hung up", self.timeouts.ring_ms / 1000))
            }
            HangupIntent::RingTimeout => (Outcome::NoAnswer, format!("no answer within {} s", self.timeouts.ring_ms / 1000)),
            HangupIntent::MaxDuration => {
                (Outcome::LocalHangup, format!("maximum call length of {} s reached", self.timeouts.max_call_ms / 1000))
            }
            HangupIntent::CommandFailed { reason } => (Outcome::Failed, reason.clone()),
            HangupIntent::Machine { cause } => (Outcome::Machine, format!("answering machine ({cause})")),
            HangupIntent::Unclassified => (Outcome::LocalHangup, UNCLASSIFIED_HANGUP.into()),
            HangupIntent::AgentEnded { reason } => (Outcome::AgentHangup, reason.clone()),
            HangupIntent::AiFailed { reason } => (Outcome::AiFailed, format!("AI agent: {reason}")),
        }
    }

    fn intent_outcome_of_active(&self) -> (Outcome, String) {
        match self.active.as_ref().and_then(|c| c.intent.as_ref()) {
            Some(intent) => self.intent_outcome(intent),
            None => (Outcome::LocalHangup, "hung up".into()),
        }
    }

    fn set_status(&mut self, status: Status) -> Vec<Effect> {
        let Some(call) = self.active.as_mut() else { return Vec::new() };
        call.record.status = status;
        vec![Effect::Persist(call.record.clone())]
    }

    /// Late events of the call `sip_id` are not taken for another's.
    fn remember_ended(&mut self, sip_id: String) {
        if self.ended_ids.len() == ENDED_IDS {
            self.ended_ids.pop_front();
        }
        self.ended_ids.push_back(sip_id);
    }

    fn end(&mut self, outcome: Outcome, reason: String, sip_code: Option<u16>, now: Now) -> Vec<Effect> {
        let Some(mut call) = self.active.take() else { return Vec::new() };
        call.ai_over(now, "the call ended");
        let mut tools = keys::keys_at_end(&mut call, now);
        tools.extend(transfer::transfer_at_end(&mut call, outcome == Outcome::Transferred));
        call.note(now, "ended", Some(outcome.as_str().into()));
        if let Some(id) = call.record.sip_call_id.clone() {
            self.remember_ended(id);
        }
        let record = &mut call.record;
        record.status = Status::Ended;
        record.outcome = Some(outcome);
        record.reason = Some(reason);
        record.sip_code = sip_code;
        record.ended_at = Some(rfc3339(now.unix_ms));
        record.talk_ms = call.answered_mono.map(|a| now.mono_ms.saturating_sub(a));
        let mut effects = vec![Effect::Persist(call.record)];
        effects.extend(tools);
        effects
    }
}

mod keys;
pub use keys::KeysRefused;
mod transfer;
pub use transfer::{PLAYOUT_WAIT_MS, TRANSFER_WAIT_MS, TransferRefused};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod incoming_tests;

#[cfg(test)]
mod keys_tests;

#[cfg(test)]
mod transfer_tests;
