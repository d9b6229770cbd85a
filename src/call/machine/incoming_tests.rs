//! Unit tests of incoming calls through the call state machine: each
//! `[incoming]` mode, a call during a call, a caller who gives up, and an
//! answer Baresip never confirms. The recorded traces of incoming calls are
//! replayed in `tests/host/trace_replay.rs`.

use super::tests::{T, at, ended, ev, media, ok_response, persisted, verdict};
use super::*;
use crate::call::incoming::{IncomingMode, REJECTED_BY_MODE, REJECTED_NOT_ALLOWED};

const CALLER_URI: &str = "sip:+15551230001@127.0.0.1:5070";

fn incoming_event(kind: &str, id: &str, param: Option<&str>) -> Event {
    let payload = serde_json::json!({
        "event": true, "type": kind, "class": "call", "direction": "incoming",
        "peeruri": CALLER_URI, "id": id, "param": param,
    });
    match crate::baresip::protocol::decode(payload.to_string().as_bytes()) {
        Ok(crate::baresip::protocol::Inbound::Event(e)) => e,
        other => panic!("test event did not decode: {other:?}"),
    }
}

fn ev_in(kind: &str, id: &str, param: Option<&str>) -> Input {
    Input::Event(incoming_event(kind, id, param))
}

fn machine(mode: IncomingMode, allow: &[&str], answer_after_ms: u32) -> CallMachine {
    let mut incoming = IncomingConfig { mode, allow: allow.iter().map(|a| a.to_string()).collect(), answer_after_ms };
    incoming.validate().unwrap();
    let policy = AnswerPolicy { classify: true, hangup_on_unknown: false, ai: true, voicemail_drop: false };
    let mut m = CallMachine::new(T).with_answer_policy(policy).with_incoming(incoming);
    assert!(m.handle(Input::LinkUp(crate::baresip::link::Resync::default()), at(0)).is_empty());
    m
}

fn sent(effects: &[Effect], tag: CommandTag) -> Option<Command> {
    effects.iter().find_map(|e| match e {
        Effect::Send { command, tag: t } if *t == tag => Some(command.clone()),
        _ => None,
    })
}

#[test]
fn an_allowed_caller_is_answered_after_the_delay_and_goes_to_the_agent_unclassified() {
    let mut m = machine(IncomingMode::Agent, &["+1555*"], 1_500);
    let fx = m.incoming("in-rec".into(), &incoming_event("CALL_INCOMING", "sip-1", Some(CALLER_URI)), at(100));
    let Some(Effect::Persist(r)) = fx.first() else { panic!("the ringing record comes first: {fx:?}") };
    assert_eq!((r.direction, r.status, r.phone_number.as_str()), (CallDirection::Inbound, Status::Ringing, "+15551230001"));
    assert_eq!(r.sip_call_id.as_deref(), Some("sip-1"));
    assert_eq!(fx.len(), 1, "nothing is sent while it rings: {fx:?}");
    assert_eq!(m.next_deadline(), Some(1_600));
    assert!(m.handle(Input::Tick, at(1_599)).is_empty());
    let fx = m.handle(Input::Tick, at(1_600));
    let accept = sent(&fx, CommandTag::Accept).expect("answered at the deadline");
    assert_eq!((accept.name, accept.params.as_deref()), (CommandName::Accept, Some("sip-1")));
    assert!(m.handle(Input::CommandDone { tag: CommandTag::Accept, result: ok_response("Answering incoming call") }, at(1_610)).is_empty());
    for kind in ["CALL_REMOTE_SDP", "CALL_LOCAL_SDP"] {
        assert!(persisted(&m.handle(ev_in(kind, "sip-1", Some("offer")), at(1_620))).is_empty());
    }
    let fx = m.handle(ev_in("CALL_ESTABLISHED", "sip-1", Some(CALLER_URI)), at(1_700));
    assert_eq!(persisted(&fx)[0].status, Status::Answered);
    assert_eq!(media(&fx), [&Effect::StartMedia { call_id: "in-rec".into(), answered: true, classify: false }]);
    assert!(fx.iter().any(|e| matches!(e, Effect::StartAi { call_id } if call_id == "in-rec")), "the agent at once: {fx:?}");
    // A verdict, should one come, changes nothing: no classification was asked for.
    let late = verdict(crate::amd::Kind::Machine, crate::amd::Cause::Beep);
    assert!(sent(&m.handle(late, at(2_000)), CommandTag::Hangup).is_none());
    let fx = m.handle(ev_in("CALL_CLOSED", "sip-1", Some("Connection reset by peer")), at(9_700));
    let r = ended(&fx);
    assert_eq!((r.outcome, r.direction, r.talk_ms), (Some(Outcome::RemoteHangup), CallDirection::Inbound, Some(8_000)));
}

#[test]
fn with_no_delay_the_answer_follows_the_ringing_record_in_the_same_batch() {
    let mut m = machine(IncomingMode::Agent, &[], 0);
    let fx = m.incoming("in-rec".into(), &incoming_event("CALL_INCOMING", "sip-1", None), at(0));
    assert!(matches!(&fx[0], Effect::Persist(r) if r.status == Status::Ringing), "{fx:?}");
    assert!(matches!(&fx[1], Effect::Send { tag: CommandTag::Accept, .. }), "{fx:?}");
}

#[test]
fn reject_mode_and_callers_not_allowed_are_declined_and_recorded_never_answered() {
    for (mut m, reason) in
        [(machine(IncomingMode::Reject, &[], 0), REJECTED_BY_MODE), (machine(IncomingMode::Agent, &["+4930*"], 0), REJECTED_NOT_ALLOWED)]
    {
        let fx = m.incoming("in-rec".into(), &incoming_event("CALL_INCOMING", "sip-1", None), at(50));
        let r = ended(&fx);
        assert_eq!((r.outcome, r.sip_code, r.reason.as_deref()), (Some(Outcome::Rejected), Some(486), Some(reason)));
        assert_eq!((r.direction, r.answered_at.as_deref(), r.phone_number.as_str()), (CallDirection::Inbound, None, "+15551230001"));
        let decline = sent(&fx, CommandTag::Decline).expect("declined");
        assert_eq!((decline.name, decline.params.as_deref()), (CommandName::Hangup, Some("sip-1")));
        assert!(sent(&fx, CommandTag::Accept).is_none());
        assert!(m.active().is_none(), "nothing stays active");
        // Its own CALL_CLOSED, and the response to the hangup, change nothing.
        assert!(m.handle(ev_in("CALL_CLOSED", "sip-1", Some("Rejected")), at(60)).is_empty());
        assert!(m.handle(Input::CommandDone { tag: CommandTag::Decline, result: ok_response("") }, at(60)).is_empty());
    }
}

#[test]
fn off_declines_without_a_record() {
    let mut m = machine(IncomingMode::Off, &[], 0);
    let fx = m.incoming("in-rec".into(), &incoming_event("CALL_INCOMING", "sip-1", None), at(50));
    assert!(persisted(&fx).is_empty(), "{fx:?}");
    assert_eq!(sent(&fx, CommandTag::Decline).and_then(|c| c.params), Some("sip-1".into()));
    // A second CALL_INCOMING of the same call is not declined twice.
    assert!(m.incoming("in-rec-2".into(), &incoming_event("CALL_INCOMING", "sip-1", None), at(51)).is_empty());
}

#[test]
fn a_caller_during_a_call_is_declined_busy_and_the_call_goes_on() {
    let mut m = machine(IncomingMode::Agent, &[], 0);
    let number = PhoneNumber::parse("+79123456789").unwrap();
    m.dial("out-rec".into(), &number, "sip:x".into(), None, at(0)).unwrap();
    m.handle(ev("CALL_RINGING", Some("out-1"), None), at(10));
    let fx = m.incoming("in-rec".into(), &incoming_event("CALL_INCOMING", "sip-2", None), at(20));
    let r = ended(&fx);
    assert_eq!((r.id.as_str(), r.outcome, r.reason.as_deref()), ("in-rec", Some(Outcome::Busy), Some(BUSY_WITH_A_CALL)));
    assert_eq!(sent(&fx, CommandTag::Decline).and_then(|c| c.params), Some("sip-2".into()));
    assert!(m.handle(ev_in("CALL_CLOSED", "sip-2", Some("Rejected")), at(30)).is_empty());
    let active = m.active().expect("the outbound call goes on");
    assert_eq!((active.id.as_str(), active.status), ("out-rec", Status::Ringing));
}

#[test]
fn a_caller_who_gives_up_before_the_answer_ends_remote_hangup() {
    let mut m = machine(IncomingMode::Agent, &[], 5_000);
    m.incoming("in-rec".into(), &incoming_event("CALL_INCOMING", "sip-1", None), at(0));
    // Events of an outgoing call with another id are not this call's.
    assert!(m.handle(ev("CALL_CLOSED", Some("sip-1"), None), at(100)).is_empty());
    let r = ended(&m.handle(ev_in("CALL_CLOSED", "sip-1", Some("Request Terminated")), at(2_000))).clone();
    assert_eq!(r.outcome, Some(Outcome::RemoteHangup));
    assert_eq!(r.reason.as_deref(), Some("the caller hung up before the answer (Request Terminated)"));
    assert_eq!(r.answered_at, None);
    assert!(m.handle(Input::Tick, at(5_000)).is_empty(), "no answer after the end");
}

#[test]
fn an_answer_baresip_never_confirms_ends_failed_after_the_ring_timeout() {
    let mut m = machine(IncomingMode::Agent, &[], 0);
    m.incoming("in-rec".into(), &incoming_event("CALL_INCOMING", "sip-1", None), at(0));
    let fx = m.handle(Input::Tick, at(T.ring_ms));
    let hangup = sent(&fx, CommandTag::Hangup).expect("hung up");
    assert_eq!(hangup.params.as_deref(), Some("sip-1"));
    let r = ended(&m.handle(ev_in("CALL_CLOSED", "sip-1", Some("Connection reset by user")), at(T.ring_ms + 10))).clone();
    assert_eq!(r.outcome, Some(Outcome::Failed));
    assert_eq!(r.reason.as_deref(), Some("the answer was not confirmed within 30 s"));
}

#[test]
fn a_record_that_cannot_be_saved_declines_the_call() {
    let mut m = machine(IncomingMode::Agent, &[], 0);
    m.incoming("in-rec".into(), &incoming_event("CALL_INCOMING", "sip-1", None), at(0));
    let fx = m.handle(Input::CommandDone { tag: CommandTag::Accept, result: Err(CommandError::NotSent) }, at(1));
    let r = ended(&fx);
    assert_eq!((r.outcome, r.reason.as_deref()), (Some(Outcome::Failed), Some(NOT_SAVED_NOT_ANSWERED)));
    assert_eq!(sent(&fx, CommandTag::Decline).and_then(|c| c.params), Some("sip-1".into()));
    assert!(m.active().is_none());
}

#[test]
fn a_refused_accept_hangs_the_call_up() {
    let mut m = machine(IncomingMode::Agent, &[], 0);
    m.incoming("in-rec".into(), &incoming_event("CALL_INCOMING", "sip-1", None), at(0));
    let refused = Ok(Response { ok: false, data: "call sip-1 not found".into(), token: None });
    let fx = m.handle(Input::CommandDone { tag: CommandTag::Accept, result: refused }, at(5));
    assert_eq!(sent(&fx, CommandTag::Hangup).and_then(|c| c.params), Some("sip-1".into()));
    let r = ended(&m.handle(ev_in("CALL_CLOSED", "sip-1", Some("Connection reset by user")), at(10))).clone();
    assert_eq!((r.outcome, r.reason.as_deref()), (Some(Outcome::Failed), Some("Baresip refused the answer: call sip-1 not found")));
}
