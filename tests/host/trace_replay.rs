//! Replays every recorded Baresip trace, of Debian's 1.0.0
//! (`tests/fixtures/baresip/traces`) and of a current Baresip built from its
//! source (`traces-current`), through the netstring decoder, the message
//! decoder and the call state machine, and checks what the daemon would have
//! recorded for each call case, outgoing and incoming.

use std::collections::HashMap;
use std::path::PathBuf;

use cap4::ai::ClientText;
use cap4::baresip::link::{CommandTag, Resync};
use cap4::baresip::netstring::Decoder;
use cap4::baresip::protocol::{self, Inbound, parse_listcalls};
use cap4::call::dtmf::Digits;
use cap4::call::incoming::{IncomingConfig, IncomingMode};
use cap4::call::machine::{AnswerPolicy, CallMachine, Effect, Input, KeysRefused, Timeouts, TransferRefused};
use cap4::call::record::{CallRecord, Outcome, Speaker, Status};
use cap4::clock::Now;
use cap4::phone::PhoneNumber;
use serde_json::Value;

const TIMEOUTS: Timeouts = Timeouts { ring_ms: 60_000, max_call_ms: 600_000, hangup_confirm_ms: 5_000, link_grace_ms: 10_000 };

/// The folder of each Baresip version's traces, and how many it holds at least.
const VERSIONS: [(&str, usize); 2] = [("traces", 33), ("traces-current", 22)];

fn traces_dir(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/baresip").join(version)
}

fn lines(version: &str, name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(traces_dir(version).join(name)).unwrap_or_else(|e| panic!("{version}/{name}: {e}"));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{version}/{name}: {e}"))).collect()
}

/// Every trace, as (version folder, file name).
fn all_traces() -> Vec<(&'static str, String)> {
    let mut all = Vec::new();
    for (version, at_least) in VERSIONS {
        let mut names: Vec<String> = std::fs::read_dir(traces_dir(version))
            .expect("fixtures present")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".jsonl"))
            .collect();
        names.sort();
        assert!(names.len() >= at_least, "expected the recorded traces in {version}, found {names:?}");
        all.extend(names.into_iter().map(|n| (version, n)));
    }
    all
}

/// Every byte Baresip sent, per connection, split into reads of `chunk` bytes,
/// decodes to exactly the recorded frames, each a message we understand.
#[test]
fn every_received_byte_decodes_in_any_split() {
    for (version, name) in all_traces() {
        let name = format!("{version}/{name}");
        let mut streams: HashMap<String, (Vec<u8>, Vec<Value>)> = HashMap::new();
        for line in lines(version, name.split('/').nth(1).unwrap_or_default()) {
            if line["dir"] == "rx" && line["kind"] == "netstring" {
                let client = line["client"].as_str().unwrap_or("").to_string();
                let entry = streams.entry(client).or_default();
                entry.0.extend_from_slice(line["wire"].as_str().expect("wire text").as_bytes());
                entry.1.push(line);
            }
        }
        for (wire, expected) in streams.values() {
            for chunk in [1, 2, 7, 64, 4096] {
                let mut decoder = Decoder::new(64 * 1024);
                let mut got = Vec::new();
                for piece in wire.chunks(chunk) {
                    decoder.push(piece);
                    while let Some(frame) = decoder.next_frame().unwrap_or_else(|e| panic!("{name}: {e}")) {
                        got.push(frame);
                    }
                }
                assert_eq!(got.len(), expected.len(), "{name}: frame count with {chunk}-byte reads");
                for (frame, line) in got.iter().zip(expected) {
                    assert_eq!(frame.len() as u64, line["len"].as_u64().unwrap(), "{name}: declared length");
                    let msg = protocol::decode(frame).unwrap_or_else(|e| panic!("{name}: {e}"));
                    let kind = match msg {
                        Inbound::Response(_) => "response",
                        Inbound::Event(_) => "event",
                        Inbound::SipMessage => "message",
                    };
                    assert_eq!(kind, line["msg"], "{name}");
                }
            }
        }
    }
}

/// What the machine recorded while replaying one trace.
struct Replay {
    statuses: Vec<Status>,
    ended: Option<CallRecord>,
    hangups_sent: usize,
    /// Hangups that decline an incoming call the box does not take.
    declines_sent: usize,
    /// `Effect::StartAi`s, with no classification configured (so the answer
    /// alone would start the agent).
    ai_starts: usize,
    /// A media session is running (started and not yet stopped).
    media_open: bool,
    /// `sndcode` params the machine sent, the answers to `send_dtmf`, and
    /// the texts for the agent.
    keys_sent: Vec<String>,
    keys_done: Vec<Result<String, KeysRefused>>,
    agent_texts: Vec<ClientText>,
    transfers_done: Vec<Result<String, TransferRefused>>,
    /// The machine asked for a `listcalls` after a failed transfer: the
    /// recorder's next one answers it.
    transfer_check_pending: bool,
}

fn now_at(line: &Value) -> Now {
    let ms = (line["t"].as_f64().unwrap_or(0.0) * 1000.0) as u64;
    Now { mono_ms: ms, unix_ms: 1_700_000_000_000 + ms as i64 }
}

fn replay(name: &str) -> Replay {
    replay_with("traces", name, IncomingConfig::default())
}

/// `[incoming]` in `mode`, answering after `answer_after_ms`.
fn incoming(mode: IncomingMode, answer_after_ms: u32) -> IncomingConfig {
    IncomingConfig { mode, allow: Vec::new(), answer_after_ms }
}

fn replay_with(version: &str, name: &str, incoming: IncomingConfig) -> Replay {
    // No classification: every answer is taken for a person, so the traces
    // show exactly when the agent would be started.
    let policy = AnswerPolicy { classify: false, hangup_on_unknown: false, ai: true, voicemail_drop: false };
    let mut machine = CallMachine::new(TIMEOUTS).with_answer_policy(policy).with_incoming(incoming);
    let mut tags: HashMap<String, CommandTag> = HashMap::new();
    let mut resync_tokens: Vec<String> = Vec::new();
    let mut connections = 0;
    let mut out = Replay {
        statuses: Vec::new(),
        ended: None,
        hangups_sent: 0,
        declines_sent: 0,
        ai_starts: 0,
        media_open: false,
        keys_sent: Vec::new(),
        keys_done: Vec::new(),
        agent_texts: Vec::new(),
        transfers_done: Vec::new(),
        transfer_check_pending: false,
    };
    let mut tickets = 0;
    let mut last = Now { mono_ms: 0, unix_ms: 0 };
    let absorb = |effects: Vec<Effect>, out: &mut Replay| {
        for effect in effects {
            match effect {
                Effect::Persist(record) => {
                    if out.statuses.last() != Some(&record.status) {
                        out.statuses.push(record.status);
                    }
                    if record.status == Status::Ended {
                        out.ended = Some(record);
                    }
                }
                Effect::Send { tag: CommandTag::Hangup, .. } => out.hangups_sent += 1,
                Effect::Send { tag: CommandTag::Decline, .. } => out.declines_sent += 1,
                Effect::Send { tag: CommandTag::SendKeys, command } => out.keys_sent.extend(command.params),
                Effect::KeysDone { result, .. } => out.keys_done.push(result),
                Effect::AgentText { text, .. } => out.agent_texts.push(text),
                Effect::TransferDone { result, .. } => out.transfers_done.push(result),
                Effect::Send { tag: CommandTag::TransferCheck, .. } => out.transfer_check_pending = true,
                // Nothing plays in a replay: the wait is over at once (below).
                Effect::AwaitPlayout { .. } => {}
                Effect::Send { .. } => {}
                Effect::StartAi { .. } => {
                    // The agent is started through the call's media session.
                    assert!(out.media_open, "StartAi without a media session");
                    out.ai_starts += 1;
                }
                Effect::DropVoicemail { .. } => {}
                Effect::StartMedia { answered, .. } => {
                    assert!(!out.media_open, "a second media session");
                    assert!(answered, "no classification: nothing listens to early media");
                    out.media_open = true;
                }
                Effect::MediaAnswered { .. } => panic!("a session started at the answer is never told of it"),
                Effect::StopMedia { .. } => {
                    assert!(out.media_open, "StopMedia without a session");
                    out.media_open = false;
                }
            }
        }
    };
    for line in lines(version, name) {
        let now = now_at(&line);
        last = now;
        match (line["dir"].as_str(), line["kind"].as_str()) {
            (Some("conn"), Some("connected")) => {
                connections += 1;
                if connections == 1 {
                    // A fresh Baresip: the daemon's resync would find no calls.
                    absorb(machine.handle(Input::LinkUp(Resync::default()), now), &mut out);
                }
            }
            (Some("conn"), Some("eof" | "closed_by_client" | "error")) if machine.link_up() => {
                absorb(machine.handle(Input::LinkDown, now), &mut out);
            }
            (Some("tx"), Some("netstring")) => {
                let wire = line["wire"].as_str().unwrap();
                let payload: Value = serde_json::from_str(&wire[wire.find(':').unwrap() + 1..wire.len() - 1]).unwrap();
                let token = payload["token"].as_str().unwrap_or("").to_string();
                match payload["command"].as_str() {
                    // An empty dial (in `commands_idle`) is something cap4 never sends.
                    Some("dial") if payload["params"].as_str().is_some_and(|p| !p.is_empty()) => {
                        let number = PhoneNumber::parse("+100").unwrap();
                        let uri = payload["params"].as_str().unwrap().to_string();
                        let (_, effects) = machine.dial("call".into(), &number, uri, None, now).expect("dial accepted");
                        absorb(effects, &mut out);
                        tags.insert(token, CommandTag::Dial);
                    }
                    Some("hangup") => {
                        let tag = match machine.hangup("call", "trace", now) {
                            Ok((_, effects)) => {
                                absorb(effects, &mut out);
                                CommandTag::Hangup
                            }
                            // The recorder declining a call the machine declined already.
                            Err(_) => CommandTag::Decline,
                        };
                        tags.insert(token, tag);
                    }
                    Some("accept") => {
                        tags.insert(token, CommandTag::Accept);
                    }
                    // As if the agent had called `send_dtmf` with these keys.
                    Some("sndcode") => {
                        tickets += 1;
                        let digits = Digits::parse(payload["params"].as_str().unwrap_or_default()).expect("keys");
                        absorb(machine.handle(Input::SendKeys { ticket: tickets, digits }, now), &mut out);
                        tags.insert(token, CommandTag::SendKeys);
                    }
                    Some("listcalls") if !machine.link_up() => resync_tokens.push(token),
                    Some("listcalls") if out.transfer_check_pending => {
                        out.transfer_check_pending = false;
                        tags.insert(token, CommandTag::TransferCheck);
                    }
                    // As if the agent had called `transfer_call`; its last words play at once.
                    Some("transfer") => {
                        tickets += 1;
                        let uri = payload["params"].as_str().unwrap_or_default().to_string();
                        let input = Input::Transfer { ticket: tickets, number: "+15550001111".into(), uri };
                        absorb(machine.handle(input, now), &mut out);
                        absorb(machine.handle(Input::PlayedOut, now), &mut out);
                        tags.insert(token, CommandTag::Transfer);
                    }
                    _ => {}
                }
            }
            (Some("rx"), Some("netstring")) => {
                let wire = line["wire"].as_str().unwrap();
                let payload = &wire.as_bytes()[wire.find(':').unwrap() + 1..wire.len() - 1];
                match protocol::decode(payload).unwrap() {
                    // As the controller does: a CALL_INCOMING goes to `incoming`.
                    Inbound::Event(event) if event.kind == protocol::EventKind::CallIncoming => {
                        absorb(machine.incoming("call".into(), &event, now), &mut out)
                    }
                    Inbound::Event(event) => absorb(machine.handle(Input::Event(event), now), &mut out),
                    Inbound::Response(resp) => {
                        let token = resp.token.clone().unwrap_or_default();
                        if resync_tokens.contains(&token) {
                            let calls = parse_listcalls(&resp.data).expect("listcalls text");
                            let resync = Resync { calls, current_call_id: None, calls_unknown: false, registrations: None };
                            absorb(machine.handle(Input::LinkUp(resync), now), &mut out);
                        } else if let Some(&tag) = tags.get(&token) {
                            absorb(machine.handle(Input::CommandDone { tag, result: Ok(resp) }, now), &mut out);
                        }
                    }
                    Inbound::SipMessage => {}
                }
            }
            _ => {}
        }
    }
    // Let every timer that was still running expire.
    let later = Now { mono_ms: last.mono_ms + 700_000, unix_ms: last.unix_ms + 700_000 };
    for _ in 0..3 {
        absorb(machine.handle(Input::Tick, later), &mut out);
    }
    assert!(!(out.ended.is_some() && out.media_open), "{version}/{name}: the call ended, its media session still runs");
    out
}

#[test]
fn call_traces_end_with_the_right_outcome() {
    use Outcome::*;
    use Status::*;
    let cases: &[(&str, &[Status], Outcome, Option<u16>)] = &[
        ("a_180_200_remote_bye.jsonl", &[Dialing, Ringing, Answered, Ended], RemoteHangup, None),
        ("b_183sdp_early_media_then_200.jsonl", &[Dialing, EarlyMedia, Answered, Ended], LocalHangup, None),
        ("c_183sdp_announcement_then_404.jsonl", &[Dialing, EarlyMedia, Ended], Rejected, Some(404)),
        ("d_180_forever_caller_cancel.jsonl", &[Dialing, Ringing, Ended], LocalHangup, None),
        ("e_486_busy_immediately.jsonl", &[Dialing, Ended], Busy, Some(486)),
        ("f_200_caller_hangup.jsonl", &[Dialing, Ringing, Answered, Ended], LocalHangup, None),
        ("g_18x_matrix_then_200_remote_bye_reason.jsonl", &[Dialing, Ringing, EarlyMedia, Answered, Ended], RemoteHangup, None),
        ("dial_unreachable_udp.jsonl", &[Dialing, Ended], Unreachable, None),
        ("dial_unreachable_tcp.jsonl", &[Dialing, Ended], Unreachable, None),
        ("client_reconnect_midcall.jsonl", &[Dialing, Ringing, Answered, Ended], Failed, None),
        ("kill_restart.jsonl", &[Dialing, Ringing, Answered, Ended], Failed, None),
        ("sigterm_with_call.jsonl", &[Dialing, Ringing, Answered, Ended], Failed, None),
    ];
    for (version, _) in VERSIONS {
        for &(name, statuses, outcome, code) in cases {
            // The current version's folder has the outgoing cases a to g and
            // one unreachable dial; the robustness cases are 1.0.0's only.
            if !traces_dir(version).join(name).is_file() {
                assert_ne!(version, "traces", "{name} missing");
                continue;
            }
            let replay = replay_with(version, name, IncomingConfig::default());
            let name = format!("{version}/{name}");
            let record = replay.ended.unwrap_or_else(|| panic!("{name}: the call never ended"));
            assert_eq!(replay.statuses, statuses, "{name}: statuses");
            assert_eq!(record.outcome, Some(outcome), "{name}: outcome ({:?})", record.reason);
            assert_eq!(record.sip_code, code, "{name}: SIP code");
            assert!(record.sip_call_id.is_some(), "{name}: the call was bound to Baresip's id");
            if statuses.contains(&Answered) {
                assert!(record.answered_at.is_some() && record.talk_ms.is_some(), "{name}");
                assert_eq!(replay.ai_starts, 1, "{name}: the agent is started once, at the answer");
            } else {
                assert!(record.answered_at.is_none(), "{name}: never answered");
                assert_eq!(replay.ai_starts, 0, "{name}: early media or no answer never starts the agent");
            }
        }
    }
}

/// The incoming cases, recorded with both versions: what each `[incoming]`
/// mode makes of them.
#[test]
fn incoming_traces_end_as_each_mode_decides() {
    use IncomingMode::*;
    use Outcome::*;
    use Status::*;
    /// Trace, the box's `[incoming]`, then the statuses, outcome and SIP code it records.
    type Case = (&'static str, IncomingConfig, &'static [Status], Outcome, Option<u16>);
    let cases: &[Case] = &[
        ("incoming_accept.jsonl", incoming(Agent, 0), &[Ringing, Answered, Ended], RemoteHangup, None),
        ("incoming_local_hangup.jsonl", incoming(Agent, 0), &[Ringing, Answered, Ended], LocalHangup, None),
        // The second caller got Baresip's own 486 Max Calls: no event, nothing recorded.
        ("incoming_during_call.jsonl", incoming(Agent, 0), &[Ringing, Answered, Ended], LocalHangup, None),
        ("incoming_caller_cancel.jsonl", incoming(Agent, 60_000), &[Ringing, Ended], RemoteHangup, None),
        ("incoming_reject.jsonl", incoming(Reject, 0), &[Ended], Rejected, Some(486)),
    ];
    for (version, _) in VERSIONS {
        for (name, config, statuses, outcome, code) in cases {
            let replay = replay_with(version, name, config.clone());
            let name = format!("{version}/{name}");
            let record = replay.ended.unwrap_or_else(|| panic!("{name}: the call never ended"));
            assert_eq!(replay.statuses, *statuses, "{name}: statuses");
            assert_eq!((record.outcome, record.sip_code), (Some(*outcome), *code), "{name}: {:?}", record.reason);
            assert_eq!(record.direction, cap4::call::record::CallDirection::Inbound, "{name}");
            assert_eq!(record.phone_number, "+15551230001", "{name}");
            let answered = statuses.contains(&Answered);
            assert_eq!(record.answered_at.is_some(), answered, "{name}");
            assert_eq!(replay.ai_starts, usize::from(answered), "{name}: the agent at the answer, once, and only then");
        }
        // `off`: each caller declined, nothing recorded.
        let replay = replay_with(version, "incoming_reject.jsonl", IncomingConfig::default());
        assert!(replay.statuses.is_empty() && replay.declines_sent == 1, "{version}: off declines without a record");
    }
}

/// Keys both ways, recorded with both versions: the caller's 1, 2, # reach
/// the agent as one entry and the transcript; the agent's keys go out as
/// `sndcode` on the answered call only (with no call, 1.0.0 and 4.10 alike
/// say `command not found (sndcode)`; the machine does not send it).
#[test]
fn dtmf_traces_give_the_agent_the_callers_entry_and_send_its_keys() {
    for (version, _) in VERSIONS {
        let replay = replay_with(version, "incoming_dtmf.jsonl", incoming(IncomingMode::Agent, 0));
        let name = format!("{version}/incoming_dtmf.jsonl");
        let record = replay.ended.unwrap_or_else(|| panic!("{name}: the call never ended"));
        assert_eq!(record.outcome, Some(Outcome::LocalHangup), "{name}: {:?}", record.reason);
        let keys: Vec<&str> = record.transcript.iter().filter(|l| l.speaker == Speaker::Dtmf).map(|l| l.text.as_str()).collect();
        assert_eq!(keys, ["12#"], "{name}");
        assert_eq!(replay.agent_texts, [ClientText::UserMessage("(The caller pressed on the phone's keypad: 1 2 #)".into())], "{name}");
        assert_eq!(replay.keys_sent, ["12", "#"], "{name}");
        assert_eq!(replay.keys_done, [Ok("12".into()), Ok("#".into()), Err(KeysRefused::NoAnsweredCall)], "{name}");
    }
}

/// The agent's blind transfer, recorded with both versions. Accepted (202,
/// NOTIFY 200): `transferred`, the target in the record, the tool told.
/// Refused (603): the tool is told at once; 4.10 keeps the call (it goes on,
/// ending with our hangup), 1.0.0 hangs the caller up without a
/// `CALL_CLOSED`, which the `listcalls` after the failure finds.
#[test]
fn transfer_traces_end_transferred_or_go_on_as_each_version_allows() {
    let declined = || Err(TransferRefused::Declined { status: "603 Decline".into() });
    for (version, _) in VERSIONS {
        let replay = replay_with(version, "incoming_transfer_accepted.jsonl", incoming(IncomingMode::Agent, 0));
        let name = format!("{version}/incoming_transfer_accepted.jsonl");
        let record = replay.ended.unwrap_or_else(|| panic!("{name}: the call never ended"));
        assert_eq!(record.outcome, Some(Outcome::Transferred), "{name}: {:?}", record.reason);
        assert_eq!(record.transfer_to.as_deref(), Some("+15550001111"), "{name}");
        assert_eq!(replay.transfers_done, [Ok("transferred to +15550001111".into())], "{name}");

        let replay = replay_with(version, "incoming_transfer_declined.jsonl", incoming(IncomingMode::Agent, 0));
        let name = format!("{version}/incoming_transfer_declined.jsonl");
        let record = replay.ended.unwrap_or_else(|| panic!("{name}: the call never ended"));
        assert_eq!(replay.transfers_done, [declined()], "{name}");
        assert_eq!(record.transfer_to, None, "{name}");
        let events: Vec<&str> = record.timeline.iter().map(|e| e.event.as_str()).collect();
        if version == "traces" {
            assert_eq!(record.outcome, Some(Outcome::Failed), "{name}: {:?}", record.reason);
            assert!(record.reason.as_deref().is_some_and(|r| r.contains("603 Decline") && r.contains("hung up the caller")), "{name}");
            assert!(events.contains(&"call_dropped_by_baresip"), "{name}: {events:?}");
        } else {
            assert_eq!(record.outcome, Some(Outcome::LocalHangup), "{name}: the call went on: {:?}", record.reason);
            assert!(!events.contains(&"call_dropped_by_baresip"), "{name}: {events:?}");
        }
    }
}

/// Registration, recorded with both versions against a SIPp registrar.
/// Baresip registers before cap4 connects (no event of it comes), so the
/// resync's `reginfo` is what tells; later refreshes and failures come as
/// events (class `register` in 1.0.0, `ua` in 4.10).
#[test]
fn registration_traces_give_each_accounts_state_and_reason() {
    use cap4::baresip::registration::{RegState, Registrations, parse_reginfo};
    // (trace, state after the reginfo, state before the shutdown, last error)
    let cases = [
        ("register_ok.jsonl", RegState::Registered, RegState::Registered, None),
        ("register_auth.jsonl", RegState::Registered, RegState::Registered, None),
        ("register_forbidden.jsonl", RegState::Failed, RegState::Failed, Some("registration failed (reported by reginfo)")),
        ("register_revoked.jsonl", RegState::Failed, RegState::Failed, Some("403 Forbidden")),
    ];
    for (version, _) in VERSIONS {
        for (trace, after_reginfo, before_shutdown, error) in cases {
            let name = format!("{version}/{trace}");
            let mut regs = Registrations::default();
            let (mut at_reginfo, mut at_shutdown) = (None, None);
            for line in lines(version, trace) {
                if line["dir"] != "rx" || line["kind"] != "netstring" {
                    continue;
                }
                let wire = line["wire"].as_str().unwrap();
                match protocol::decode(&wire.as_bytes()[wire.find(':').unwrap() + 1..wire.len() - 1]).unwrap() {
                    Inbound::Response(resp) if resp.token.as_deref() == Some("reginfo-1") => {
                        regs.resync(&parse_reginfo(&resp.data), "reginfo");
                        at_reginfo = regs.accounts().next().map(|a| a.state);
                    }
                    Inbound::Event(event) if event.kind == protocol::EventKind::Shutdown => {
                        at_shutdown = regs.accounts().next().cloned();
                    }
                    Inbound::Event(event) => {
                        regs.on_event(&event, "event");
                    }
                    _ => {}
                }
            }
            assert_eq!(at_reginfo, Some(after_reginfo), "{name}");
            let account = at_shutdown.unwrap_or_else(|| panic!("{name}: no account"));
            assert_eq!(account.aor, "sip:box@127.0.0.1:5070", "{name}");
            assert_eq!((account.state, account.last_error.as_deref()), (before_shutdown, error), "{name}");
            assert_eq!(regs.accounts().next().map(|a| a.state), Some(RegState::Unregistering), "{name}: at shutdown");
            assert!(regs.not_registered().is_some(), "{name}: unregistering is not registered");
        }
    }
}

#[test]
fn the_kill_case_ends_failed_because_baresip_lost_the_call() {
    let record = replay("kill_restart.jsonl").ended.unwrap();
    assert_eq!(record.reason.as_deref(), Some("call lost while Baresip was disconnected"));
    let events: Vec<&str> = record.timeline.iter().map(|e| e.event.as_str()).collect();
    assert!(events.contains(&"baresip_link_lost") && events.contains(&"baresip_resynced"), "{events:?}");
    let shutdown = replay("sigterm_with_call.jsonl").ended.unwrap();
    assert_eq!(shutdown.reason.as_deref(), Some("Baresip shut down"));
}

#[test]
fn traces_without_our_calls_record_nothing() {
    for name in [
        "i_incoming_call_accept.jsonl",
        "commands_idle.jsonl",
        "malformed_input.jsonl",
        "back_to_back.jsonl",
        "second_client.jsonl",
        "quit_command.jsonl",
        "wrongtype_command_number.jsonl",
        "wrongtype_params_number.jsonl",
        "wrongtype_token_number.jsonl",
    ] {
        for (version, _) in VERSIONS {
            // The current version's folder has two of these (i, commands_idle).
            if !traces_dir(version).join(name).is_file() {
                assert_ne!(version, "traces", "{name} missing");
                continue;
            }
            let replay = replay_with(version, name, IncomingConfig::default());
            let name = format!("{version}/{name}");
            assert!(replay.statuses.is_empty() && replay.ended.is_none(), "{name}");
            assert_eq!(replay.hangups_sent, 0, "{name}");
            // `[incoming] mode = "off"` (the default) declines the caller of trace i.
            assert_eq!(replay.declines_sent, usize::from(name.contains("/i_")), "{name}");
        }
    }
}
