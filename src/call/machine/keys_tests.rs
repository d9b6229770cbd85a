//! Unit tests of DTMF through the call state machine: the agent's keys out
//! (runs, pauses, refusals, the call ending first) and the caller's keys in
//! (entries to the agent and the transcript). The recorded traces with keys
//! are replayed in `tests/host/trace_replay.rs`.

use super::tests::{T, answered, at, dialled, ev, ok_response, persisted};
use super::*;
use crate::ai::ClientText;

fn send_keys(m: &mut CallMachine, ticket: u64, digits: &str, now: u64) -> Vec<Effect> {
    m.handle(Input::SendKeys { ticket, digits: crate::call::dtmf::Digits::parse(digits).unwrap() }, at(now))
}

fn sndcode(effects: &[Effect]) -> Option<String> {
    effects.iter().find_map(|e| match e {
        Effect::Send { command, tag: CommandTag::SendKeys } if command.name == CommandName::SendCode => command.params.clone(),
        _ => None,
    })
}

fn keys_done(effects: &[Effect]) -> Option<(u64, Result<String, KeysRefused>)> {
    effects.iter().find_map(|e| match e {
        Effect::KeysDone { ticket, result } => Some((*ticket, result.clone())),
        _ => None,
    })
}

fn sent_ok(m: &mut CallMachine, now: u64) -> Vec<Effect> {
    m.handle(Input::CommandDone { tag: CommandTag::SendKeys, result: ok_response("") }, at(now))
}

#[test]
fn the_agents_keys_go_out_in_runs_with_their_pauses_and_the_tool_is_answered_once() {
    let mut m = answered();
    let fx = send_keys(&mut m, 7, "12w3", 3_000);
    assert_eq!(sndcode(&fx).as_deref(), Some("12"), "{fx:?}");
    assert_eq!(keys_done(&fx), None);
    assert_eq!(
        send_keys(&mut m, 8, "9", 3_001).iter().find_map(|e| match e {
            Effect::KeysDone { ticket: 8, result } => Some(result.clone()),
            _ => None,
        }),
        Some(Err(KeysRefused::StillSending))
    );
    assert!(sent_ok(&mut m, 3_010).is_empty(), "the next run waits for the keys to play and the pause");
    let due = 3_010 + 2 * crate::call::dtmf::KEY_PLAY_MS + crate::call::dtmf::PAUSE_MS;
    assert_eq!(m.next_deadline(), Some(due.min(600_000 + 2_000)));
    assert!(m.handle(Input::Tick, at(due - 1)).is_empty());
    let fx = m.handle(Input::Tick, at(due));
    assert_eq!(sndcode(&fx).as_deref(), Some("3"));
    let fx = sent_ok(&mut m, due + 5);
    assert_eq!(keys_done(&fx), Some((7, Ok("12w3".into()))));
    // The next send_dtmf is taken.
    assert_eq!(sndcode(&send_keys(&mut m, 9, "#", due + 10)).as_deref(), Some("#"));
}

#[test]
fn keys_are_refused_before_the_answer_and_a_refusal_stops_the_rest() {
    let (mut m, _) = dialled();
    let fx = send_keys(&mut m, 1, "1", 5);
    assert_eq!(keys_done(&fx), Some((1, Err(KeysRefused::NoAnsweredCall))));
    assert_eq!(sndcode(&fx), None);

    let mut m = answered();
    send_keys(&mut m, 2, "1w2", 3_000);
    let refused = Response { ok: false, data: "command failed\n".into(), token: None };
    let fx = m.handle(Input::CommandDone { tag: CommandTag::SendKeys, result: Ok(refused) }, at(3_010));
    let (_, result) = keys_done(&fx).expect("answered");
    let refused = result.unwrap_err();
    assert_eq!(refused, KeysRefused::Baresip { sent: String::new(), detail: "command failed".into() });
    assert!(refused.to_string().contains("no key was sent"), "{refused}");
    assert_eq!(m.handle(Input::Tick, at(9_000)).iter().filter_map(|e| sndcode(std::slice::from_ref(e))).count(), 0);
}

#[test]
fn no_key_goes_out_once_the_call_is_being_hung_up() {
    let mut m = answered();
    send_keys(&mut m, 5, "1w2", 3_000);
    sent_ok(&mut m, 3_010);
    let (_, fx) = m.hangup("call-1", "api", at(3_100)).unwrap();
    assert!(fx.iter().any(|e| matches!(e, Effect::Send { tag: CommandTag::Hangup, .. })));
    let due = 3_010 + crate::call::dtmf::KEY_PLAY_MS + crate::call::dtmf::PAUSE_MS;
    let fx = m.handle(Input::Tick, at(due));
    assert_eq!(sndcode(&fx), None, "{fx:?}");
    assert_eq!(keys_done(&fx), Some((5, Err(KeysRefused::CallEnded { sent: "1".into() }))));
}

#[test]
fn a_call_that_ends_while_keys_go_out_answers_the_tool_after_its_record() {
    let mut m = answered();
    send_keys(&mut m, 3, "1w2", 3_000);
    sent_ok(&mut m, 3_010);
    let fx = m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by peer")), at(3_100));
    let persist = fx.iter().position(|e| matches!(e, Effect::Persist(r) if r.status == Status::Ended)).expect("ended");
    let done = fx.iter().position(|e| matches!(e, Effect::KeysDone { .. })).expect("answered");
    assert!(persist < done, "the record first: {fx:?}");
    assert_eq!(keys_done(&fx), Some((3, Err(KeysRefused::CallEnded { sent: "1".into() }))));
}

#[test]
fn the_callers_keys_reach_the_agent_as_one_entry_and_the_transcript() {
    let mut m = answered();
    for (key, t) in [("4", 3_000), ("2", 3_300)] {
        assert!(m.handle(ev("CALL_DTMF_START", Some("abc"), Some(key)), at(t)).is_empty());
        assert!(m.handle(ev("CALL_DTMF_END", Some("abc"), None), at(t + 100)).is_empty());
    }
    let fx = m.handle(ev("CALL_DTMF_START", Some("abc"), Some("#")), at(3_600));
    let text = fx.iter().find_map(|e| match e {
        Effect::AgentText { text: ClientText::UserMessage(t), .. } => Some(t.clone()),
        _ => None,
    });
    assert_eq!(text.as_deref(), Some("(The caller pressed on the phone's keypad: 4 2 #)"));
    let record = persisted(&fx)[0];
    let line = record.transcript.last().expect("a line");
    assert_eq!((line.speaker, line.text.as_str(), line.at_ms), (Speaker::Dtmf, "42#", 3_600));
    assert!(record.timeline.iter().all(|e| !e.event.starts_with("CALL_DTMF")), "keys stay out of the timeline");

    // Without `#`: complete after the gap. Keys of another call count for nothing.
    assert!(m.handle(ev("CALL_DTMF_START", Some("other"), Some("9")), at(4_000)).is_empty());
    m.handle(ev("CALL_DTMF_START", Some("abc"), Some("7")), at(4_000));
    assert_eq!(m.next_deadline(), Some(4_000 + crate::call::dtmf::ENTRY_GAP_MS));
    let fx = m.handle(Input::Tick, at(4_000 + crate::call::dtmf::ENTRY_GAP_MS));
    assert_eq!(persisted(&fx)[0].transcript.last().map(|l| l.text.as_str()), Some("7"));

    // What was pressed when the call ended is in the final record.
    m.handle(ev("CALL_DTMF_START", Some("abc"), Some("5")), at(6_000));
    let fx = m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by peer")), at(6_100));
    let last = persisted(&fx).last().copied().expect("ended");
    assert_eq!(last.transcript.last().map(|l| (l.speaker, l.text.as_str())), Some((Speaker::Dtmf, "5")));
}

#[test]
fn keys_before_the_answer_are_no_entry() {
    let (mut m, _) = dialled();
    assert!(m.handle(ev("CALL_DTMF_START", Some("abc"), Some("1")), at(10)).is_empty());
    assert_eq!(m.next_deadline(), Some(T.ring_ms), "no entry deadline");
}
