//! Incoming calls on the host: real Baresip, a real SIPp UAC calling the box
//! at its account's address (`box`), `cap4 run` with each `[incoming]` mode.
//!
//! - `reject`: the caller gets a final 486; the record is `inbound`, with
//!   the caller's number, `rejected`, never answered.
//! - `agent` with `allow`: a caller not allowed is rejected the same way; an
//!   allowed one is answered (200) with no classification and handed to the
//!   agent. This host has no sound card, so the agent cannot hear the caller:
//!   the call ends `ai_failed` and the caller gets a BYE (the agent talking to
//!   a caller on a real ALSA loopback: `tests/guest/vm_incoming.rs`).
//! - A caller who gives up while the box lets it ring: `remote_hangup`.
//! - A caller during a call: Baresip's own `486 Max Calls`
//!   (`call_max_calls 1`); the call in progress goes on.
//! - `off`: every caller gets 486; nothing is recorded.

use crate::support;
use crate::support::daemon;

use std::time::Duration;

use daemon::{Daemon, DaemonConfig};
use serde_json::Value;
use support::{Baresip, Sipp, TempDir, free_media_port, free_port, free_rtp_range};

const WAIT: Duration = Duration::from_secs(20);
const CALLER: &str = "+15551230001";

/// Baresip and cap4 with `incoming` as the `[incoming]` section, the echo
/// agent, an audio device that exists nowhere, and dials going to a phone on
/// `dial_port`.
fn bench(dir: &TempDir, incoming: &str, dial_port: u16) -> (Baresip, Daemon) {
    let baresip = Baresip::start(dir.path(), free_port(), free_port(), free_rtp_range(20)).expect("Baresip");
    let mut cfg = DaemonConfig::new(baresip.ctrl_port(), format!("sip:{{number}}@127.0.0.1:{dial_port}"));
    cfg.ai =
        "[ai]\nprovider = \"echo\"\n[audio]\ncapture_device = \"hw:Cap4NoSuchCard,1,0\"\nplayback_device = \"hw:Cap4NoSuchCard,0,1\"\n"
            .into();
    cfg.extra = format!("[incoming]\n{incoming}\n");
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    (baresip, cap4)
}

fn call_box(dir: &TempDir, baresip: &Baresip, scenario: &str, caller: &str, talk_ms: u32) -> Sipp {
    Sipp::call_box(dir.path(), scenario, free_port(), free_media_port(), baresip.sip_port(), caller, talk_ms).expect("SIPp")
}

/// The inbound records, newest first.
fn inbound(cap4: &Daemon) -> Vec<Value> {
    let (status, calls) = cap4.http("GET", "/api/calls", None);
    assert_eq!(status, 200, "{calls}");
    calls.as_array().expect("a list").iter().filter(|c| c["direction"] == "inbound").cloned().collect()
}

/// Waits until there are `n` inbound records and the newest has ended.
fn wait_inbound_ended(cap4: &Daemon, n: usize) -> Value {
    let mut newest = Value::Null;
    let done = support::wait_until(WAIT, Duration::from_millis(50), || {
        let calls = inbound(cap4);
        newest = calls.first().cloned().unwrap_or(Value::Null);
        calls.len() == n && newest["status"] == "ended"
    });
    assert!(done, "no ended inbound record #{n}: {newest}\nlog:\n{}", cap4.log());
    newest
}

/// The first final response SIPp got (the one to its INVITE).
fn final_status(sipp: &Sipp) -> String {
    sipp.sip_first_lines().into_iter().find(|l| l.starts_with("SIP/2.0 ") && !l.starts_with("SIP/2.0 1")).unwrap_or_default()
}

fn assert_exit_ok(sipp: &mut Sipp) {
    let status = sipp.wait_exit(WAIT);
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{}\n{}", sipp.message_log(), sipp.error_log());
}

#[test]
fn reject_mode_declines_each_caller_with_486_and_records_it() {
    let dir = TempDir::new("incoming-reject");
    let (baresip, cap4) = bench(&dir, "mode = \"reject\"", free_port());
    let mut sipp = call_box(&dir, &baresip, "incoming_expect_reject.xml", CALLER, 0);
    assert_exit_ok(&mut sipp);
    assert!(final_status(&sipp).starts_with("SIP/2.0 486 "), "{:?}", sipp.sip_first_lines());
    let record = wait_inbound_ended(&cap4, 1);
    assert_eq!(record["phone_number"], CALLER, "{record}");
    assert_eq!((record["outcome"].as_str(), record["sip_code"].as_u64()), (Some("rejected"), Some(486)), "{record}");
    assert!(record["answered_at"].is_null() && record["talk_ms"].is_null(), "never answered: {record}");
    assert!(record["sip_call_id"].as_str().is_some_and(|id| !id.is_empty()), "{record}");
    // Never answered, never recorded.
    let (status, err) = cap4.http("GET", &format!("/api/calls/{}/recording", record["id"].as_str().unwrap_or_default()), None);
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("no_recording")), "{err}");
    // The number is in the record; the journal at INFO does not carry it.
    assert!(cap4.log().lines().filter(|l| l.contains(" INFO ")).all(|l| !l.contains(CALLER)), "{}", cap4.log());
}

#[test]
fn agent_mode_answers_allowed_callers_only_unclassified_and_one_call_at_a_time() {
    let dir = TempDir::new("incoming-agent");
    // The phone the box calls in the last part: it rings until cancelled.
    let mut phone = Sipp::start(dir.path(), "ring_forever.xml", free_port(), free_media_port()).expect("SIPp");
    let (baresip, cap4) = bench(&dir, "mode = \"agent\"\nallow = [\"+1555*\"]\nanswer_after_ms = 3000", phone.port());

    // Not in `allow`: declined at once, recorded.
    let mut sipp = call_box(&dir, &baresip, "incoming_expect_reject.xml", "+4930123456", 0);
    assert_exit_ok(&mut sipp);
    assert!(final_status(&sipp).starts_with("SIP/2.0 486 "), "{:?}", sipp.sip_first_lines());
    let record = wait_inbound_ended(&cap4, 1);
    assert_eq!((record["phone_number"].as_str(), record["outcome"].as_str()), (Some("+4930123456"), Some("rejected")), "{record}");
    assert!(record["reason"].as_str().is_some_and(|r| r.contains("allow")), "{record}");

    // Allowed, but the caller gives up after 1 s of the 3 s of ringing.
    let mut sipp = call_box(&dir, &baresip, "incoming_cancel.xml", CALLER, 1_000);
    assert_exit_ok(&mut sipp);
    let record = wait_inbound_ended(&cap4, 2);
    assert_eq!(record["outcome"], "remote_hangup", "{record}");
    assert!(record["answered_at"].is_null(), "{record}");
    assert_eq!(cap4.journal_statuses(record["id"].as_str().expect("id")), ["ringing", "ended"]);

    // Allowed: rings 3 s, answered, handed to the agent with no classification;
    // with no sound card the agent cannot hear the caller, so it is hung up.
    let started = std::time::Instant::now();
    let mut sipp = call_box(&dir, &baresip, "incoming_wait_bye.xml", CALLER, 0);
    assert_exit_ok(&mut sipp);
    assert!(started.elapsed() >= Duration::from_millis(2_900), "answered after answer_after_ms: {:?}", started.elapsed());
    let lines = sipp.sip_first_lines();
    assert!(lines.iter().any(|l| l.starts_with("SIP/2.0 200 ")) && lines.iter().any(|l| l.starts_with("BYE ")), "{lines:?}");
    let record = wait_inbound_ended(&cap4, 3);
    assert_eq!((record["phone_number"].as_str(), record["outcome"].as_str()), (Some(CALLER), Some("ai_failed")), "{record}");
    assert!(record["answered_at"].is_string(), "{record}");
    assert!(record["answer"].is_null(), "no classification for a caller: {record}");
    assert!(record["ai"].is_object(), "the agent was asked for at once: {record}");
    let events: Vec<&str> = record["timeline"].as_array().expect("timeline").iter().filter_map(|e| e["event"].as_str()).collect();
    for event in ["incoming", "answering", "CALL_ESTABLISHED", "ai_requested"] {
        assert!(events.contains(&event), "{event} missing: {events:?}");
    }

    // During a call (an outbound one ringing): Baresip refuses the caller
    // itself, and the call in progress goes on.
    let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
    cap4.wait_status(&id, "ringing", WAIT);
    let mut sipp = call_box(&dir, &baresip, "incoming_expect_reject.xml", CALLER, 0);
    assert_exit_ok(&mut sipp);
    assert_eq!(final_status(&sipp), "SIP/2.0 486 Max Calls", "{:?}", sipp.sip_first_lines());
    assert_eq!(cap4.call(&id)["status"], "ringing", "the call in progress goes on");
    assert_eq!(inbound(&cap4).len(), 3, "Baresip refused it: cap4 never heard of it");
    let (status, ended) = cap4.http("POST", &format!("/api/calls/{id}/hangup"), None);
    assert_eq!((status, ended["outcome"].as_str()), (200, Some("local_hangup")), "{ended}");
    assert!(phone.wait_exit(WAIT).is_some());
}

#[test]
fn off_mode_declines_every_caller_and_records_nothing() {
    let dir = TempDir::new("incoming-off");
    let (baresip, cap4) = bench(&dir, "mode = \"off\"", free_port());
    let mut sipp = call_box(&dir, &baresip, "incoming_expect_reject.xml", CALLER, 0);
    assert_exit_ok(&mut sipp);
    assert!(final_status(&sipp).starts_with("SIP/2.0 486 "), "{:?}", sipp.sip_first_lines());
    std::thread::sleep(Duration::from_millis(300));
    assert!(inbound(&cap4).is_empty(), "nothing recorded");
    assert!(cap4.log().contains("incoming call declined"), "{}", cap4.log());
}
