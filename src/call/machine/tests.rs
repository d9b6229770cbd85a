//! Unit tests of the call state machine with synthetic inputs. The recorded
//! Baresip traces are replayed through it in `tests/host/trace_replay.rs`.

use super::*;
use crate::baresip::protocol::ListedCall;

pub(super) const T: Timeouts = Timeouts { ring_ms: 30_000, max_call_ms: 600_000, hangup_confirm_ms: 5_000, link_grace_ms: 10_000 };

pub(super) fn at(ms: u64) -> Now {
    Now { mono_ms: ms, unix_ms: 1_705_744_800_000 + ms as i64 }
}

pub(super) fn ev(kind: &str, id: Option<&str>, param: Option<&str>) -> Input {
    let payload = serde_json::json!({
        "event": true, "type": kind, "class": "call", "direction": "outgoing",
        "peeruri": "sip:100@127.0.0.1:5070", "id": id, "param": param,
    });
    match crate::baresip::protocol::decode(payload.to_string().as_bytes()) {
        Ok(crate::baresip::protocol::Inbound::Event(e)) => Input::Event(e),
        other => panic!("test event did not decode: {other:?}"),
    }
}

pub(super) fn ok_response(data: &str) -> Result<Response, CommandError> {
    Ok(Response { ok: true, data: data.into(), token: None })
}

/// A machine with the link up and one call dialled at t=0.
pub(super) fn dialled() -> (CallMachine, CallRecord) {
    let mut m = CallMachine::new(T);
    assert!(m.handle(Input::LinkUp(Resync::default()), at(0)).is_empty());
    let number = PhoneNumber::parse("+79123456789").unwrap();
    let (record, effects) = m.dial("call-1".into(), &number, "sip:+79123456789@127.0.0.1:5070".into(), None, at(0)).unwrap();
    assert_eq!(record.status, Status::Dialing);
    assert!(matches!(&effects[0], Effect::Persist(r) if r.status == Status::Dialing));
    assert!(matches!(&effects[1], Effect::Send { command, tag: CommandTag::Dial }
        if command.name == CommandName::Dial && command.params.as_deref() == Some("sip:+79123456789@127.0.0.1:5070")));
    assert!(m.handle(Input::CommandDone { tag: CommandTag::Dial, result: ok_response("") }, at(1)).is_empty());
    (m, record)
}

/// A call dialled at t=0 and answered at t=2000 (Baresip id `abc`), the
/// agent started at once (no classification).
pub(super) fn answered() -> CallMachine {
    let (m, _) = dialled();
    let mut m = CallMachine { policy: AnswerPolicy { classify: false, hangup_on_unknown: false, ai: true, voicemail_drop: false }, ..m };
    m.handle(ev("CALL_RINGING", Some("abc"), None), at(10));
    let fx = m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(2_000));
    assert!(fx.iter().any(|e| matches!(e, Effect::StartAi { .. })), "{fx:?}");
    m
}

pub(super) fn persisted(effects: &[Effect]) -> Vec<&CallRecord> {
    effects.iter().filter_map(|e| if let Effect::Persist(r) = e { Some(r) } else { None }).collect()
}

pub(super) fn ended(effects: &[Effect]) -> &CallRecord {
    let records = persisted(effects);
    let record = records.last().expect("a record was persisted");
    assert_eq!(record.status, Status::Ended, "expected the call to end: {effects:?}");
    record
}

pub(super) fn sent_hangup(effects: &[Effect]) -> Option<Option<String>> {
    effects.iter().find_map(|e| match e {
        Effect::Send { command, tag: CommandTag::Hangup | CommandTag::OrphanHangup } if command.name == CommandName::Hangup => {
            Some(command.params.clone())
        }
        _ => None,
    })
}

#[test]
fn refuses_a_second_call_and_dialling_without_link() {
    let (mut m, _) = dialled();
    let n = PhoneNumber::parse("112").unwrap();
    assert_eq!(m.dial("call-2".into(), &n, "sip:112@x".into(), None, at(5)).unwrap_err(), DialError::Busy("call-1".into()));
    let mut idle = CallMachine::new(T);
    assert_eq!(idle.dial("c".into(), &n, "sip:112@x".into(), None, at(0)).unwrap_err(), DialError::NotConnected);
}

#[test]
fn ringing_answer_remote_hangup() {
    let (mut m, _) = dialled();
    let fx = m.handle(ev("CALL_RINGING", Some("abc"), Some("sip:x")), at(10));
    assert_eq!(persisted(&fx)[0].status, Status::Ringing);
    assert_eq!(persisted(&fx)[0].sip_call_id.as_deref(), Some("abc"));
    let fx = m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(2_000));
    let r = persisted(&fx)[0];
    assert_eq!(r.status, Status::Answered);
    assert!(r.answered_at.is_some());
    let fx = m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by peer")), at(5_000));
    let r = ended(&fx);
    assert_eq!(r.outcome, Some(Outcome::RemoteHangup));
    assert_eq!(r.talk_ms, Some(3_000));
    assert!(m.active().is_none());
    let events: Vec<&str> = r.timeline.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["dial", "CALL_RINGING", "CALL_ESTABLISHED", "CALL_CLOSED", "ended"]);
}

#[test]
fn early_media_is_never_answered() {
    let (mut m, _) = dialled();
    let fx = m.handle(ev("CALL_PROGRESS", Some("abc"), None), at(5));
    assert_eq!(persisted(&fx)[0].status, Status::EarlyMedia);
    for kind in ["CALL_REMOTE_SDP", "CALL_RTPESTAB", "CALL_ANSWERED", "CALL_PROGRESS"] {
        let fx = m.handle(ev(kind, Some("abc"), Some("answer")), at(6));
        assert!(persisted(&fx).is_empty(), "{kind} must not change the status");
    }
    assert_eq!(m.active().unwrap().status, Status::EarlyMedia);
    assert!(m.active().unwrap().answered_at.is_none());
    let fx = m.handle(ev("CALL_CLOSED", Some("abc"), Some("404 Not Found")), at(6_000));
    let r = ended(&fx);
    assert_eq!((r.outcome, r.sip_code, r.reason.as_deref()), (Some(Outcome::Rejected), Some(404), Some("404 Not Found")));
    assert!(r.answered_at.is_none() && r.talk_ms.is_none());
}

#[test]
fn busy_codes() {
    for (param, outcome) in [("486 Busy Here", Outcome::Busy), ("600 Busy Everywhere", Outcome::Busy), ("603 Decline", Outcome::Rejected)] {
        let (mut m, _) = dialled();
        let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some(param)), at(3))).clone();
        assert_eq!(r.outcome, Some(outcome), "{param}");
    }
}

#[test]
fn ring_timeout_cancels_and_ends_no_answer() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_RINGING", Some("abc"), None), at(10));
    assert_eq!(m.next_deadline(), Some(30_000));
    assert!(m.handle(Input::Tick, at(29_999)).is_empty());
    let fx = m.handle(Input::Tick, at(30_000));
    assert_eq!(sent_hangup(&fx), Some(Some("abc".into())), "hangup names the call for newer Baresip");
    assert_eq!(m.next_deadline(), Some(35_000), "now waiting for the hangup to be confirmed");
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(30_002))).clone();
    assert_eq!(r.outcome, Some(Outcome::NoAnswer));
    assert_eq!(r.reason.as_deref(), Some("no answer within 30 s"));
}

#[test]
fn ring_timeout_during_early_media_and_487() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_PROGRESS", Some("abc"), None), at(10));
    assert!(sent_hangup(&m.handle(Input::Tick, at(30_000))).is_some());
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("487 Request Terminated")), at(30_010))).clone();
    assert_eq!(r.outcome, Some(Outcome::NoAnswer));
}

#[test]
fn max_call_length_hangs_up() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    assert_eq!(m.next_deadline(), Some(601_000), "the ring timer is gone once answered");
    assert!(sent_hangup(&m.handle(Input::Tick, at(601_000))).is_some());
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Rejected by user")), at(601_001))).clone();
    assert_eq!(r.outcome, Some(Outcome::LocalHangup));
    assert_eq!(r.reason.as_deref(), Some("maximum call length of 600 s reached"));
}

#[test]
fn user_hangup_is_idempotent_and_confirmed() {
    let (mut m, rec) = dialled();
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    assert_eq!(m.hangup("nope", "api", at(2_000)).unwrap_err(), HangupError::NotActive);
    let (_, fx) = m.hangup(&rec.id, "api", at(2_000)).unwrap();
    assert_eq!(sent_hangup(&fx), Some(Some("abc".into())));
    let (_, again) = m.hangup(&rec.id, "api", at(2_001)).unwrap();
    assert!(again.is_empty(), "a second request sends nothing");
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(2_003))).clone();
    assert_eq!((r.outcome, r.reason.as_deref()), (Some(Outcome::LocalHangup), Some("hung up by api")));
}

#[test]
fn unconfirmed_hangup_still_ends_the_call() {
    let (mut m, rec) = dialled();
    m.hangup(&rec.id, "api", at(100)).unwrap();
    assert!(m.handle(Input::Tick, at(5_099)).is_empty());
    let r = ended(&m.handle(Input::Tick, at(5_100))).clone();
    assert_eq!(r.outcome, Some(Outcome::LocalHangup));
    assert!(r.reason.unwrap().contains("did not confirm"));
}

#[test]
fn unreachable_and_local_timeout() {
    for (param, outcome) in [
        ("Connection timed out", Outcome::Unreachable),
        ("Connection refused", Outcome::Unreachable),
        ("Local timeout", Outcome::NoAnswer),
        ("end of file", Outcome::Failed),
    ] {
        let (mut m, _) = dialled();
        let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some(param)), at(32_000))).clone();
        assert_eq!(r.outcome, Some(outcome), "{param}");
        assert_eq!(r.reason.as_deref(), Some(param));
    }
}

#[test]
fn events_of_other_calls_are_ignored() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_RINGING", Some("abc"), None), at(10));
    assert!(m.handle(ev("CALL_CLOSED", Some("other"), Some("486 Busy Here")), at(20)).is_empty());
    let incoming =
        serde_json::json!({"event":true,"type":"CALL_INCOMING","class":"call","direction":"incoming","id":"in-1","param":"sip:a@b"});
    let Ok(crate::baresip::protocol::Inbound::Event(e)) = crate::baresip::protocol::decode(incoming.to_string().as_bytes()) else {
        panic!()
    };
    assert!(m.handle(Input::Event(e), at(30)).is_empty());
    assert_eq!(m.active().unwrap().status, Status::Ringing);
}

#[test]
fn newer_baresip_names_the_call_in_the_dial_response() {
    let mut m = CallMachine::new(T);
    m.handle(Input::LinkUp(Resync::default()), at(0));
    let n = PhoneNumber::parse("100").unwrap();
    m.dial("c".into(), &n, "sip:100@h".into(), None, at(0)).unwrap();
    m.handle(Input::CommandDone { tag: CommandTag::Dial, result: ok_response("call uri: sip:100@h\ncall id: new-7\n") }, at(1));
    assert_eq!(m.active().unwrap().sip_call_id.as_deref(), Some("new-7"));
    // CALL_OUTGOING (2.0+) is only noted; a foreign id is ignored.
    assert!(m.handle(ev("CALL_OUTGOING", Some("new-7"), None), at(2)).is_empty());
    assert!(m.handle(ev("CALL_ESTABLISHED", Some("zzz"), None), at(3)).is_empty());
    let fx = m.handle(ev("CALL_CLOSED", Some("new-7"), Some("Connection reset by peer,Q.850;cause=16")), at(4));
    assert_eq!(ended(&fx).outcome, Some(Outcome::RemoteHangup));
}

#[test]
fn dial_refused_or_unanswered() {
    let (mut m, _) = {
        let mut m = CallMachine::new(T);
        m.handle(Input::LinkUp(Resync::default()), at(0));
        let n = PhoneNumber::parse("100").unwrap();
        let d = m.dial("c".into(), &n, "sip:100@h".into(), None, at(0)).unwrap();
        (m, d)
    };
    let refused = Err::<Response, _>(CommandError::Timeout);
    let fx = m.handle(Input::CommandDone { tag: CommandTag::Dial, result: refused }, at(5_000));
    assert!(sent_hangup(&fx).is_some(), "a dial without response is cancelled to be safe");
    let r = ended(&m.handle(Input::Tick, at(10_000))).clone();
    assert_eq!(r.outcome, Some(Outcome::Failed));

    let mut m = CallMachine::new(T);
    m.handle(Input::LinkUp(Resync::default()), at(0));
    let n = PhoneNumber::parse("100").unwrap();
    m.dial("c".into(), &n, "sip:100@h".into(), None, at(0)).unwrap();
    let no = Ok(Response { ok: false, data: "command not found (dial)\n".into(), token: None });
    let r = ended(&m.handle(Input::CommandDone { tag: CommandTag::Dial, result: no }, at(1))).clone();
    assert_eq!(r.outcome, Some(Outcome::Failed));
    assert!(r.reason.unwrap().contains("command not found"));
}

#[test]
fn shutdown_ends_the_call_failed() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    let shutdown = serde_json::json!({"event":true,"type":"SHUTDOWN","class":"application"});
    let Ok(crate::baresip::protocol::Inbound::Event(e)) = crate::baresip::protocol::decode(shutdown.to_string().as_bytes()) else {
        panic!()
    };
    let r = ended(&m.handle(Input::Event(e), at(2_000))).clone();
    assert_eq!((r.outcome, r.reason.as_deref()), (Some(Outcome::Failed), Some("Baresip shut down")));
    assert!(m.handle(Input::LinkDown, at(2_001)).is_empty());
    assert!(!m.link_up());
}

#[test]
fn link_loss_then_baresip_without_the_call() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    assert!(m.handle(Input::LinkDown, at(2_000)).is_empty(), "the call may survive a short link loss");
    assert_eq!(m.next_deadline(), Some(12_000));
    let r = ended(&m.handle(Input::LinkUp(Resync::default()), at(3_000))).clone();
    assert_eq!(r.outcome, Some(Outcome::Failed));
    assert!(r.timeline.iter().any(|e| e.event == "baresip_link_lost"));
}

#[test]
fn link_loss_with_the_call_still_up() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    m.handle(Input::LinkDown, at(2_000));
    let resync = Resync {
        calls: vec![ListedCall { state: "ESTABLISHED".into(), peer_uri: "sip:x".into() }],
        current_call_id: Some("abc".into()),
        calls_unknown: false,
        registrations: None,
    };
    assert!(m.handle(Input::LinkUp(resync), at(3_000)).is_empty());
    assert_eq!(m.active().unwrap().status, Status::Answered);
    assert_eq!(m.next_deadline(), Some(601_000), "the link timer is cleared");
}

#[test]
fn link_never_comes_back() {
    let (mut m, _) = dialled();
    m.handle(Input::LinkDown, at(2_000));
    let r = ended(&m.handle(Input::Tick, at(12_000))).clone();
    assert_eq!(r.outcome, Some(Outcome::Failed));
    assert_eq!(r.reason.as_deref(), Some("Baresip did not come back within 10 s"));
}

#[test]
fn orphan_calls_are_hung_up_on_connect() {
    let mut m = CallMachine::new(T);
    let resync = Resync {
        calls: vec![ListedCall { state: "ESTABLISHED".into(), peer_uri: "sip:x".into() }],
        current_call_id: Some("old".into()),
        calls_unknown: false,
        registrations: None,
    };
    let fx = m.handle(Input::LinkUp(resync), at(0));
    assert_eq!(sent_hangup(&fx), Some(Some("old".into())));
    assert!(m.active().is_none());
}

#[test]
fn late_events_of_an_ended_call_do_not_bind_the_next_one() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_RINGING", Some("old"), None), at(10));
    let rec = m.active().unwrap().clone();
    m.hangup(&rec.id, "api", at(20)).unwrap();
    ended(&m.handle(Input::Tick, at(5_020))); // unconfirmed: ended by the timer
    let n = PhoneNumber::parse("100").unwrap();
    m.dial("call-2".into(), &n, "sip:100@h".into(), None, at(6_000)).unwrap();
    assert!(m.handle(ev("CALL_CLOSED", Some("old"), Some("Connection reset by user")), at(6_001)).is_empty());
    assert_eq!(m.active().unwrap().sip_call_id, None);
    let fx = m.handle(ev("CALL_RINGING", Some("new"), None), at(6_010));
    assert_eq!(persisted(&fx)[0].sip_call_id.as_deref(), Some("new"));
}

#[test]
fn dialling_waits_for_the_orphan_hangup() {
    let mut m = CallMachine::new(T);
    let resync = Resync {
        calls: vec![ListedCall { state: "ESTABLISHED".into(), peer_uri: "sip:x".into() }],
        current_call_id: Some("old".into()),
        calls_unknown: false,
        registrations: None,
    };
    m.handle(Input::LinkUp(resync), at(0));
    let n = PhoneNumber::parse("100").unwrap();
    assert_eq!(m.dial("c".into(), &n, "sip:100@h".into(), None, at(1)).unwrap_err(), DialError::NotReady);
    m.handle(Input::CommandDone { tag: CommandTag::OrphanHangup, result: ok_response("") }, at(2));
    assert!(m.dial("c".into(), &n, "sip:100@h".into(), None, at(3)).is_ok());
}

#[test]
fn a_hangup_lost_with_the_link_is_sent_again_after_resync() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    m.handle(Input::LinkDown, at(600_990));
    assert!(sent_hangup(&m.handle(Input::Tick, at(601_000))).is_some(), "max length fires while the link is down");
    let fx = m.handle(Input::CommandDone { tag: CommandTag::Hangup, result: Err(CommandError::NotConnected) }, at(601_000));
    assert!(fx.is_empty());
    let resync = Resync {
        calls: vec![ListedCall { state: "ESTABLISHED".into(), peer_uri: "sip:x".into() }],
        current_call_id: Some("abc".into()),
        calls_unknown: false,
        registrations: None,
    };
    let fx = m.handle(Input::LinkUp(resync), at(601_001));
    assert_eq!(sent_hangup(&fx), Some(Some("abc".into())));
}

#[test]
fn an_answer_missed_while_disconnected_is_taken_from_the_resync() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_RINGING", Some("abc"), None), at(10));
    m.handle(Input::LinkDown, at(1_000));
    let resync = Resync {
        calls: vec![ListedCall { state: "ESTABLISHED".into(), peer_uri: "sip:x".into() }],
        current_call_id: Some("abc".into()),
        calls_unknown: false,
        registrations: None,
    };
    let fx = m.handle(Input::LinkUp(resync), at(2_000));
    assert_eq!(persisted(&fx)[0].status, Status::Answered);
    assert_eq!(m.next_deadline(), Some(602_000), "ring timer gone, max length running");
}

#[test]
fn answered_calls_never_end_rejected_or_no_answer() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("408 Request Timeout")), at(9_000))).clone();
    assert_eq!((r.outcome, r.sip_code), (Some(Outcome::Failed), Some(408)));

    let (mut m, _) = dialled();
    m.handle(ev("CALL_RINGING", Some("abc"), None), at(10));
    assert!(sent_hangup(&m.handle(Input::Tick, at(30_000))).is_some());
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(30_001)); // 200 OK crossed our CANCEL
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(30_050))).clone();
    assert_eq!(r.outcome, Some(Outcome::LocalHangup));
    assert!(r.reason.unwrap().contains("answered just after the ring timeout"));
}

pub(super) fn verdict(kind: crate::amd::Kind, cause: crate::amd::Cause) -> Input {
    Input::Verdict(crate::amd::Verdict {
        kind,
        cause,
        decided_at_ms: 1_200,
        speech_start_ms: Some(300),
        speech_end_ms: Some(700),
        speech_total_ms: 400,
        words: 1,
        beep_start_ms: None,
    })
}

#[test]
fn a_machine_verdict_hangs_up_with_outcome_machine() {
    use crate::amd::{Cause, Kind};
    let (mut m, _) = dialled();
    // Early media is never classified into a connection: no answer yet.
    m.handle(ev("CALL_PROGRESS", Some("abc"), None), at(5));
    assert!(m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(6)).is_empty());
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    let fx = m.handle(verdict(Kind::Machine, Cause::LongGreeting), at(4_000));
    let saved = persisted(&fx)[0];
    assert_eq!(saved.answer.as_ref().map(|a| (a.verdict.as_str(), a.cause.as_str())), Some(("machine", "long_greeting")));
    assert_eq!(sent_hangup(&fx), Some(Some("abc".into())));
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(4_010))).clone();
    assert_eq!((r.outcome, r.reason.as_deref()), (Some(Outcome::Machine), Some("answering machine (long_greeting)")));
}

#[test]
fn human_keeps_the_call_and_unknown_follows_the_config() {
    use crate::amd::{Cause, Kind};
    let (mut m, _) = dialled();
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    let fx = m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(2_200));
    assert_eq!(persisted(&fx).len(), 1);
    assert!(sent_hangup(&fx).is_none(), "a person keeps the call");
    assert!(m.handle(verdict(Kind::Machine, Cause::Beep), at(3_000)).is_empty(), "one verdict per call");

    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AnswerPolicy { hangup_on_unknown: false, ..AnswerPolicy::default() });
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    assert!(sent_hangup(&m.handle(verdict(Kind::Unknown, Cause::Silence), at(6_000))).is_none(), "default: connect");

    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AnswerPolicy { hangup_on_unknown: true, ..AnswerPolicy::default() });
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    assert!(sent_hangup(&m.handle(verdict(Kind::Unknown, Cause::Silence), at(6_000))).is_some());
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(6_010))).clone();
    assert_eq!(r.outcome, Some(Outcome::LocalHangup));
}

const AI: AnswerPolicy = AnswerPolicy { classify: true, hangup_on_unknown: false, ai: true, voicemail_drop: false };

fn ai_started(effects: &[Effect]) -> bool {
    effects.iter().any(|e| matches!(e, Effect::StartAi { call_id } if call_id == "call-1"))
}

#[test]
fn the_ai_starts_only_after_an_answer_and_a_human_verdict_and_only_once() {
    use crate::amd::{Cause, Kind};
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AI);
    // Early media, whatever it sounds like, never starts the AI.
    assert!(!ai_started(&m.handle(ev("CALL_PROGRESS", Some("abc"), None), at(5))));
    assert!(!ai_started(&m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(6))));
    // The answer alone does not either: classification comes first.
    assert!(!ai_started(&m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000))));
    let fx = m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(2_200));
    assert!(ai_started(&fx));
    // The request is on disk before the effect that acts on it.
    let persist = fx.iter().position(|e| matches!(e, Effect::Persist(r) if r.ai.is_some())).expect("persisted");
    let start = fx.iter().position(|e| matches!(e, Effect::StartAi { .. })).expect("started");
    assert!(persist < start);
    assert!(!ai_started(&m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(2_300))));

    // A machine: hung up, never connected.
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AI);
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    let fx = m.handle(verdict(Kind::Machine, Cause::Beep), at(3_000));
    assert!(!ai_started(&fx) && sent_hangup(&fx).is_some());
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(3_010))).clone();
    assert!(r.ai.is_none());

    // Unknown: connected unless configured to hang up.
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AI);
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    assert!(ai_started(&m.handle(verdict(Kind::Unknown, Cause::Silence), at(6_000))));
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AnswerPolicy { hangup_on_unknown: true, ..AI });
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    assert!(!ai_started(&m.handle(verdict(Kind::Unknown, Cause::Silence), at(6_000))));

    // A hangup already under way (the user pressed the button) wins.
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AI);
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    m.hangup("call-1", "api", at(1_500)).unwrap();
    assert!(!ai_started(&m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(2_000))));

    // Without classification every answer is taken for a person, at the answer.
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AnswerPolicy { classify: false, ..AI });
    assert!(!ai_started(&m.handle(ev("CALL_PROGRESS", Some("abc"), None), at(5))));
    assert!(ai_started(&m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000))));
}

#[test]
fn the_conversation_is_recorded_and_its_end_hangs_up() {
    use crate::amd::{Cause, Kind};
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AI);
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(2_000));
    let started = AiInput::Started { provider: "echo".into(), conversation_id: "conv-1".into(), setup_ms: 3 };
    let fx = m.handle(Input::Ai(started.clone()), at(2_003));
    assert_eq!(persisted(&fx)[0].ai.as_ref().and_then(|a| a.provider.as_deref()), Some("echo"));
    assert!(m.handle(Input::Ai(started), at(2_004)).is_empty(), "started once");
    let fx = m.handle(Input::Ai(AiInput::Line { speaker: Speaker::Agent, text: "Hello!".into() }), at(2_500));
    assert_eq!(persisted(&fx)[0].transcript.len(), 1);
    let fx = m.handle(Input::Ai(AiInput::Line { speaker: Speaker::User, text: "Hi".into() }), at(4_000));
    assert!(fx.is_empty(), "lines within 10 s of the last save wait for the next one (or the end)");
    m.handle(Input::Ai(AiInput::Interrupted), at(4_100));
    let fx = m.handle(Input::Ai(AiInput::Ended { by_agent: true, reason: "end_call".into() }), at(12_003));
    assert!(sent_hangup(&fx).is_some(), "the agent's end hangs up the phone");
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(12_050))).clone();
    assert_eq!((r.outcome, r.reason.as_deref()), (Some(Outcome::AgentHangup), Some("end_call")));
    let ai = r.ai.expect("ai");
    assert_eq!(ai.seconds, 10.0, "from running to the agent's end");
    assert_eq!((ai.interruptions, ai.end_reason.as_deref()), (1, Some("end_call")));
    let lines: Vec<_> = r.transcript.iter().map(|l| (l.at_ms, l.speaker, l.text.as_str())).collect();
    assert_eq!(lines, [(2_500, Speaker::Agent, "Hello!"), (4_000, Speaker::User, "Hi")]);

    // An error ends it too, with the reason; the caller hanging up first stops the count.
    for (input, outcome) in [
        (AiInput::Ended { by_agent: false, reason: "closed 1002 (protocol error)".into() }, Outcome::AiFailed),
        (AiInput::StartFailed { reason: "cannot connect".into() }, Outcome::AiFailed),
    ] {
        let (m, _) = dialled();
        let mut m = m.with_answer_policy(AI);
        m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
        m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(2_000));
        let fx = m.handle(Input::Ai(input), at(3_000));
        assert!(sent_hangup(&fx).is_some());
        let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(3_050))).clone();
        assert_eq!(r.outcome, Some(outcome));
        assert!(r.reason.as_deref().is_some_and(|t| t.starts_with("AI agent: ")), "{r:?}");
    }
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AI);
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(2_000));
    m.handle(Input::Ai(AiInput::Started { provider: "echo".into(), conversation_id: "c".into(), setup_ms: 1 }), at(2_500));
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by peer")), at(7_500))).clone();
    assert_eq!(r.outcome, Some(Outcome::RemoteHangup));
    assert_eq!(r.ai.as_ref().map(|a| (a.seconds, a.end_reason.as_deref())), Some((5.0, Some("the call ended"))));
    // News of a call that has ended changes nothing.
    assert!(m.handle(Input::Ai(AiInput::Ended { by_agent: true, reason: "late".into() }), at(8_000)).is_empty());
}

#[test]
fn time_in_the_services_queue_is_not_conversation_time() {
    use crate::amd::{Cause, Kind};
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AI);
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(2_000));
    m.handle(Input::Ai(AiInput::Started { provider: "elevenlabs".into(), conversation_id: "c".into(), setup_ms: 1 }), at(2_000));
    let fx = m.handle(Input::Ai(AiInput::Queue { held: true }), at(3_000));
    assert_eq!(persisted(&fx)[0].timeline.last().map(|e| e.event.as_str()), Some("ai_queued"));
    assert!(m.handle(Input::Ai(AiInput::Queue { held: true }), at(3_500)).is_empty(), "already held");
    m.handle(Input::Ai(AiInput::Queue { held: false }), at(7_000));
    m.handle(Input::Ai(AiInput::Ended { by_agent: true, reason: "end_call".into() }), at(9_000));
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(9_050))).clone();
    let ai = r.ai.expect("ai");
    assert_eq!((ai.seconds, ai.queued_ms), (3.0, 4_000), "1 s before the queue and 2 s after it; 4 s held");
    assert!(r.timeline.iter().any(|e| e.event == "ai_admitted" && e.detail.as_deref() == Some("after 4000 ms in the service's queue")));

    // Ended while still held: the wait is counted as such, and nothing after it.
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AI);
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    m.handle(verdict(Kind::Human, Cause::ShortGreetingThenPause), at(2_000));
    m.handle(Input::Ai(AiInput::Started { provider: "elevenlabs".into(), conversation_id: "c".into(), setup_ms: 1 }), at(2_000));
    m.handle(Input::Ai(AiInput::Queue { held: true }), at(2_500));
    m.handle(Input::Ai(AiInput::Ended { by_agent: false, reason: "queue timed out".into() }), at(6_500));
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(6_550))).clone();
    let ai = r.ai.expect("ai");
    assert_eq!((ai.seconds, ai.queued_ms, ai.end_reason.as_deref()), (0.5, 4_000, Some("queue timed out")));
}

#[test]
fn a_machine_gets_the_voicemail_message_then_the_hangup() {
    use crate::amd::{Cause, Kind};
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AnswerPolicy { voicemail_drop: true, ..AI });
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    let fx = m.handle(verdict(Kind::Machine, Cause::LongGreeting), at(4_000));
    assert!(fx.iter().any(|e| matches!(e, Effect::DropVoicemail { call_id } if call_id == "call-1")), "{fx:?}");
    assert!(sent_hangup(&fx).is_none() && !ai_started(&fx), "no hangup yet, and never an agent");
    let fx = m.handle(Input::VoicemailDone { left: true, detail: "5000 ms message played".into() }, at(12_000));
    assert!(sent_hangup(&fx).is_some());
    assert!(m.handle(Input::VoicemailDone { left: true, detail: "again".into() }, at(12_001)).is_empty(), "once");
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(12_050))).clone();
    assert_eq!((r.outcome, r.reason.as_deref()), (Some(Outcome::Machine), Some("answering machine (long_greeting; voicemail left)")));
    assert!(r.timeline.iter().any(|e| e.event == "voicemail_left"));
    assert!(r.ai.is_none());

    // Not played (no audio): hung up all the same, saying why.
    let (m, _) = dialled();
    let mut m = m.with_answer_policy(AnswerPolicy { voicemail_drop: true, ..AI });
    m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(1_000));
    m.handle(verdict(Kind::Machine, Cause::Beep), at(4_000));
    let fx = m.handle(Input::VoicemailDone { left: false, detail: "no audio".into() }, at(4_100));
    assert!(sent_hangup(&fx).is_some());
    let r = ended(&m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by user")), at(4_150))).clone();
    assert_eq!(r.reason.as_deref(), Some("answering machine (beep; voicemail not left: no audio)"));
}

pub(super) fn media(effects: &[Effect]) -> Vec<&Effect> {
    effects.iter().filter(|e| matches!(e, Effect::StartMedia { .. } | Effect::MediaAnswered { .. } | Effect::StopMedia { .. })).collect()
}

#[test]
fn media_starts_in_early_media_is_told_of_the_answer_once_and_stops_at_the_end() {
    let (mut m, _) = dialled();
    let fx = m.handle(ev("CALL_PROGRESS", Some("abc"), None), at(10));
    assert!(matches!(&fx[0], Effect::Persist(r) if r.status == Status::EarlyMedia), "persisted first: {fx:?}");
    assert_eq!(media(&fx), [&Effect::StartMedia { call_id: "call-1".into(), answered: false, classify: true }]);
    let fx = m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(2_000));
    assert_eq!(media(&fx), [&Effect::MediaAnswered { call_id: "call-1".into() }]);
    // Later saves of the answered record (a verdict) tell the session nothing more.
    let human = verdict(crate::amd::Kind::Human, crate::amd::Cause::ShortGreetingThenPause);
    assert!(media(&m.handle(human, at(2_900))).is_empty());
    let fx = m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by peer")), at(5_000));
    let stop = fx.iter().position(|e| matches!(e, Effect::StopMedia { .. })).expect("stopped");
    let end = fx.iter().position(|e| matches!(e, Effect::Persist(r) if r.status == Status::Ended)).expect("ended");
    assert!(end < stop, "the end is on disk first: {fx:?}");
}

#[test]
fn media_starts_at_the_answer_without_early_media_and_not_at_all_when_nothing_needs_it() {
    let (mut m, _) = dialled();
    m.handle(ev("CALL_RINGING", Some("abc"), None), at(10));
    let fx = m.handle(ev("CALL_ESTABLISHED", Some("abc"), None), at(2_000));
    assert_eq!(media(&fx), [&Effect::StartMedia { call_id: "call-1".into(), answered: true, classify: true }]);
    assert_eq!(media(&m.handle(ev("CALL_CLOSED", Some("abc"), None), at(3_000))), [&Effect::StopMedia { call_id: "call-1".into() }]);
    // No classification and no AI: no audio is needed, ever.
    let policy = AnswerPolicy { classify: false, hangup_on_unknown: false, ai: false, voicemail_drop: false };
    let mut m = CallMachine::new(T).with_answer_policy(policy);
    m.handle(Input::LinkUp(Resync::default()), at(0));
    let number = PhoneNumber::parse("+79123456789").unwrap();
    let (_, fx) = m.dial("call-2".into(), &number, "sip:x".into(), None, at(0)).unwrap();
    let mut all = fx;
    for (kind, t) in [("CALL_PROGRESS", 10), ("CALL_ESTABLISHED", 2_000), ("CALL_CLOSED", 3_000)] {
        all.extend(m.handle(ev(kind, Some("def"), None), at(t)));
    }
    assert!(media(&all).is_empty(), "{all:?}");
    // Early media without classification: the session waits for the answer (the AI needs it).
    let policy = AnswerPolicy { classify: false, ai: true, ..policy };
    let mut m = CallMachine::new(T).with_answer_policy(policy);
    m.handle(Input::LinkUp(Resync::default()), at(0));
    m.dial("call-3".into(), &number, "sip:x".into(), None, at(0)).unwrap();
    assert!(media(&m.handle(ev("CALL_PROGRESS", Some("ghi"), None), at(10))).is_empty());
    assert_eq!(
        media(&m.handle(ev("CALL_ESTABLISHED", Some("ghi"), None), at(2_000))),
        [&Effect::StartMedia { call_id: "call-3".into(), answered: true, classify: false }]
    );
}
