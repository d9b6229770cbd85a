//! Unit tests of the agent's blind transfer through the call state machine:
//! the REFER only after the last words were heard, each refusal told to the
//! agent with the call going on, the overdue outcome, the call ending first,
//! and 1.0.0's dropped call found by the check. The recorded traces are
//! replayed in `tests/host/trace_replay.rs`.

use super::tests::{answered, at, dialled, ev, ok_response, persisted};
use super::*;

const URI: &str = "sip:+15550001111@127.0.0.1:5070";

fn transfer(m: &mut CallMachine, ticket: u64, now: u64) -> Vec<Effect> {
    m.handle(Input::Transfer { ticket, number: "+15550001111".into(), uri: URI.into() }, at(now))
}

fn refer(effects: &[Effect]) -> Option<String> {
    effects.iter().find_map(|e| match e {
        Effect::Send { command, tag: CommandTag::Transfer } if command.name == CommandName::Transfer => command.params.clone(),
        _ => None,
    })
}

fn done(effects: &[Effect]) -> Option<(u64, Result<String, TransferRefused>)> {
    effects.iter().find_map(|e| match e {
        Effect::TransferDone { ticket, result } => Some((*ticket, result.clone())),
        _ => None,
    })
}

#[test]
fn the_refer_waits_for_the_last_words_and_an_accepted_transfer_ends_transferred() {
    let mut m = answered();
    let fx = transfer(&mut m, 4, 3_000);
    assert!(matches!(fx.as_slice(), [Effect::AwaitPlayout { call_id }] if call_id == "call-1"), "{fx:?}");
    assert_eq!(refer(&fx), None, "nothing is sent while the agent still speaks");
    assert_eq!(done(&transfer(&mut m, 5, 3_001)), Some((5, Err(TransferRefused::InProgress))));
    let fx = m.handle(Input::PlayedOut, at(3_500));
    assert_eq!(refer(&fx).as_deref(), Some(URI));
    assert!(m.handle(Input::CommandDone { tag: CommandTag::Transfer, result: ok_response("") }, at(3_510)).is_empty());
    let fx = m.handle(ev("CALL_CLOSED", Some("abc"), Some("Call transfered")), at(4_000));
    let record = persisted(&fx).last().copied().expect("ended");
    assert_eq!((record.outcome, record.transfer_to.as_deref()), (Some(Outcome::Transferred), Some("+15550001111")));
    assert_eq!(record.reason.as_deref(), Some("transferred to +15550001111"));
    let persist = fx.iter().position(|e| matches!(e, Effect::Persist(_))).unwrap();
    let answer = fx.iter().position(|e| matches!(e, Effect::TransferDone { .. })).unwrap();
    assert!(persist < answer, "the record first: {fx:?}");
    assert_eq!(done(&fx), Some((4, Ok("transferred to +15550001111".into()))));
}

#[test]
fn a_refused_transfer_is_the_agents_error_and_the_call_goes_on() {
    let mut m = answered();
    transfer(&mut m, 1, 3_000);
    m.handle(Input::PlayedOut, at(3_100));
    let fx = m.handle(ev("TRANSFER_FAILED", Some("abc"), Some("603 Decline")), at(3_300));
    assert_eq!(done(&fx), Some((1, Err(TransferRefused::Declined { status: "603 Decline".into() }))));
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Send { tag: CommandTag::TransferCheck, command } if command.name == CommandName::ListCalls))
    );
    // 4.x: the call is still listed; it goes on, and may be transferred again.
    let listed = "\n--- Active calls (1) ---\n> [line 1, id abc]  0:00:02  ESTABLISHED   sip:+15551230001@127.0.0.1:5070\n";
    assert!(m.handle(Input::CommandDone { tag: CommandTag::TransferCheck, result: ok_response(listed) }, at(3_310)).is_empty());
    assert_eq!(m.active().map(|r| r.status), Some(Status::Answered));
    assert!(matches!(transfer(&mut m, 2, 4_000).as_slice(), [Effect::AwaitPlayout { .. }]));

    // Baresip refusing the command itself.
    m.handle(Input::PlayedOut, at(4_100));
    let refused = Response { ok: false, data: "Invalid argument".into(), token: None };
    let fx = m.handle(Input::CommandDone { tag: CommandTag::Transfer, result: Ok(refused) }, at(4_110));
    assert_eq!(done(&fx), Some((2, Err(TransferRefused::Baresip { detail: "Invalid argument".into() }))));
    assert_eq!(m.active().map(|r| r.status), Some(Status::Answered));
}

#[test]
fn baresip_1_0_dropping_the_call_after_a_refused_refer_ends_it_failed() {
    let mut m = answered();
    transfer(&mut m, 1, 3_000);
    m.handle(Input::PlayedOut, at(3_100));
    m.handle(ev("TRANSFER_FAILED", Some("abc"), Some("603 Decline")), at(3_300));
    let empty = "\n--- Active calls (0) ---\n\n";
    let fx = m.handle(Input::CommandDone { tag: CommandTag::TransferCheck, result: ok_response(empty) }, at(3_310));
    let record = persisted(&fx).last().copied().expect("ended");
    assert_eq!(record.outcome, Some(Outcome::Failed));
    assert!(record.reason.as_deref().is_some_and(|r| r.contains("603 Decline")), "{:?}", record.reason);
    assert_eq!(done(&fx), None, "the agent was told already");
}

#[test]
fn an_overdue_transfer_is_told_and_the_call_going_away_first_answers_the_tool() {
    let mut m = answered();
    transfer(&mut m, 1, 3_000);
    m.handle(Input::PlayedOut, at(3_100));
    assert_eq!(m.next_deadline(), Some(3_100 + TRANSFER_WAIT_MS));
    assert_eq!(done(&m.handle(Input::Tick, at(3_100 + TRANSFER_WAIT_MS))), Some((1, Err(TransferRefused::NoOutcome))));
    assert_eq!(m.active().map(|r| r.status), Some(Status::Answered));

    transfer(&mut m, 2, 70_000);
    let fx = m.handle(ev("CALL_CLOSED", Some("abc"), Some("Connection reset by peer")), at(70_100));
    assert_eq!(persisted(&fx).last().and_then(|r| r.outcome), Some(Outcome::RemoteHangup));
    assert_eq!(done(&fx), Some((2, Err(TransferRefused::CallEnded))));
    // A late PlayedOut for a call that is gone sends nothing.
    assert!(m.handle(Input::PlayedOut, at(70_200)).is_empty());
}

#[test]
fn an_outcome_after_the_agent_was_told_of_none_still_counts() {
    // Accepted late: transferred, to the number asked for.
    let mut m = answered();
    transfer(&mut m, 1, 3_000);
    m.handle(Input::PlayedOut, at(3_100));
    m.handle(Input::Tick, at(3_100 + TRANSFER_WAIT_MS));
    let fx = m.handle(ev("CALL_CLOSED", Some("abc"), Some("Call transfered")), at(70_000));
    let record = persisted(&fx).last().copied().expect("ended");
    assert_eq!((record.outcome, record.transfer_to.as_deref()), (Some(Outcome::Transferred), Some("+15550001111")));
    // Refused late on 1.0.0: the dropped call is still found.
    let mut m = answered();
    transfer(&mut m, 1, 3_000);
    m.handle(Input::PlayedOut, at(3_100));
    m.handle(Input::Tick, at(3_100 + TRANSFER_WAIT_MS));
    let fx = m.handle(ev("TRANSFER_FAILED", Some("abc"), Some("480 Temporarily Unavailable")), at(70_000));
    assert_eq!(done(&fx), None, "the agent was told already");
    assert!(fx.iter().any(|e| matches!(e, Effect::Send { tag: CommandTag::TransferCheck, .. })), "{fx:?}");
    let empty = "\n--- Active calls (0) ---\n\n";
    let fx = m.handle(Input::CommandDone { tag: CommandTag::TransferCheck, result: ok_response(empty) }, at(70_010));
    assert_eq!(persisted(&fx).last().and_then(|r| r.outcome), Some(Outcome::Failed));
}

#[test]
fn a_playout_never_reported_heard_still_sends_the_refer_at_its_limit() {
    let mut m = answered();
    transfer(&mut m, 1, 3_000);
    assert_eq!(m.next_deadline(), Some(3_000 + PLAYOUT_WAIT_MS));
    assert_eq!(refer(&m.handle(Input::Tick, at(3_000 + PLAYOUT_WAIT_MS - 1))), None);
    assert_eq!(refer(&m.handle(Input::Tick, at(3_000 + PLAYOUT_WAIT_MS))).as_deref(), Some(URI));
}

#[test]
fn no_transfer_before_the_answer() {
    let (mut m, _) = dialled();
    assert_eq!(done(&transfer(&mut m, 9, 5)), Some((9, Err(TransferRefused::NoAnsweredCall))));
}
