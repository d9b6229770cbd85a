//! End-to-end call cases against the real parts: Debian's Baresip 1.0.0 driven by
//! a real `cap4 run`, and SIPp 3.6.1 as the remote phone, all on 127.0.0.1.
//! Each test asserts the statuses the journal recorded, the outcome and what the
//! remote phone saw. Needs `baresip-core` and `sip-tester` (installed by `.ci/run`).

use crate::support;
use crate::support::daemon;

use std::time::Duration;

use daemon::{Daemon, DaemonConfig};
use support::{Baresip, Sipp, TempDir, free_media_port, free_port, free_rtp_range};

const WAIT: Duration = Duration::from_secs(20);

/// A Baresip, a SIPp running `scenario`, and a cap4 connected to the Baresip.
struct Bench {
    sipp: Sipp,
    baresip: Baresip,
    cap4: Daemon,
    // Last, so the folder outlives the processes writing into it.
    dir: TempDir,
}

fn bench(name: &str, scenario: &str, tune: impl FnOnce(&mut DaemonConfig)) -> Bench {
    let dir = TempDir::new(name);
    let sipp = Sipp::start(dir.path(), scenario, free_port(), free_media_port()).expect("start SIPp");
    let baresip = Baresip::start(dir.path(), free_port(), free_port(), free_rtp_range(20)).expect("start Baresip");
    let mut cfg = DaemonConfig::new(baresip.ctrl_port(), sipp.dial_uri_template());
    tune(&mut cfg);
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    Bench { sipp, baresip, cap4, dir }
}

fn id_of(record: &serde_json::Value) -> String {
    record["id"].as_str().expect("record id").to_string()
}

fn timeline_events(record: &serde_json::Value) -> Vec<String> {
    record["timeline"].as_array().into_iter().flatten().filter_map(|e| e["event"].as_str().map(str::to_owned)).collect()
}

fn assert_sipp_ok(b: &mut Bench) {
    let status = b.sipp.wait_exit(WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp {} did not finish its scenario ({status:?}); it saw {:?}\ncap4 log:\n{}",
        b.sipp.scenario(),
        b.sipp.sip_first_lines(),
        b.cap4.log()
    );
}

#[test]
fn ringing_then_answer_then_remote_hangup() {
    let mut b = bench("remote-bye", "answer_then_remote_bye.xml", |_| {});
    let id = id_of(&b.cap4.dial("+79123456789"));
    let record = b.cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(b.cap4.journal_statuses(&id), ["dialing", "ringing", "answered", "ended"]);
    assert_eq!(record["outcome"], "remote_hangup");
    assert_eq!(record["reason"], "Connection reset by peer");
    assert_eq!(record["phone_number"], "+79123456789");
    assert_eq!(record["direction"], "outbound");
    assert!(record["answered_at"].is_string() && record["ended_at"].is_string());
    assert!(record["talk_ms"].as_u64().is_some_and(|ms| (1_500..5_000).contains(&ms)), "{record}");
    assert!(record["sip_call_id"].is_string());
    let events = timeline_events(&record);
    let pos = |e: &str| events.iter().position(|x| x == e).unwrap_or_else(|| panic!("{e} missing: {events:?}"));
    assert!(pos("dial") < pos("CALL_RINGING") && pos("CALL_RINGING") < pos("CALL_ESTABLISHED"));
    assert!(pos("CALL_ESTABLISHED") < pos("CALL_CLOSED"));
    assert_sipp_ok(&mut b);
}

#[test]
fn early_media_then_answer_then_api_hangup() {
    let mut b = bench("early-answer", "early_media_then_answer.xml", |_| {});
    let id = id_of(&b.cap4.dial("79123456789"));
    let early = b.cap4.wait_status(&id, "early_media", WAIT);
    assert!(early["answered_at"].is_null(), "early media is not an answer: {early}");
    b.cap4.wait_status(&id, "answered", WAIT);
    let (status, record) = b.cap4.http("POST", &format!("/api/calls/{id}/hangup"), None);
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["status"], "ended", "hangup answers once Baresip confirmed it");
    assert_eq!(record["outcome"], "local_hangup");
    assert_eq!(b.cap4.journal_statuses(&id), ["dialing", "early_media", "answered", "ended"]);
    assert_sipp_ok(&mut b);
    assert!(b.sipp.sip_first_lines().iter().any(|l| l.starts_with("BYE ")), "the remote got a BYE");
}

#[test]
fn early_media_then_404_is_never_answered() {
    let mut b = bench("early-404", "early_media_then_404.xml", |_| {});
    let id = id_of(&b.cap4.dial("+4930123456"));
    let record = b.cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(b.cap4.journal_statuses(&id), ["dialing", "early_media", "ended"]);
    assert_eq!(record["outcome"], "rejected");
    assert_eq!(record["sip_code"], 404);
    assert_eq!(record["reason"], "404 Not Found");
    assert!(record["answered_at"].is_null());
    assert!(!timeline_events(&record).contains(&"CALL_ESTABLISHED".to_string()));
    assert_sipp_ok(&mut b);
}

#[test]
fn busy_486() {
    let mut b = bench("busy", "busy_486.xml", |_| {});
    let id = id_of(&b.cap4.dial("486486"));
    let record = b.cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(b.cap4.journal_statuses(&id), ["dialing", "ended"]);
    assert_eq!(record["outcome"], "busy");
    assert_eq!(record["sip_code"], 486);
    assert_eq!(record["reason"], "486 Busy Here");
    assert_sipp_ok(&mut b);
}

#[test]
fn ring_timeout_cancels_and_records_no_answer() {
    let mut b = bench("ring-timeout", "ring_forever.xml", |c| c.ring_timeout_s = 2);
    let id = id_of(&b.cap4.dial("+100200300"));
    b.cap4.wait_status(&id, "ringing", WAIT);
    // One call at a time.
    let (status, err) = b.cap4.http("POST", "/api/calls/dial", Some(r#"{"phone_number":"+100200301"}"#));
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "call_active");
    let record = b.cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(b.cap4.journal_statuses(&id), ["dialing", "ringing", "ended"]);
    assert_eq!(record["outcome"], "no_answer");
    assert_eq!(record["reason"], "no answer within 2 s");
    assert!(timeline_events(&record).contains(&"ring_timeout".to_string()));
    assert_sipp_ok(&mut b);
    assert!(b.sipp.sip_first_lines().iter().any(|l| l.starts_with("CANCEL ")), "SIPp got a CANCEL");
}

#[test]
fn api_hangup_of_an_answered_call() {
    let mut b = bench("api-hangup", "answer_wait_bye.xml", |_| {});
    let id = id_of(&b.cap4.dial("+79001112233"));
    b.cap4.wait_status(&id, "answered", WAIT);
    let (status, record) = b.cap4.http("POST", &format!("/api/calls/{id}/hangup"), None);
    assert_eq!(status, 200, "{record}");
    assert_eq!((record["status"].as_str(), record["outcome"].as_str()), (Some("ended"), Some("local_hangup")));
    assert_eq!(record["reason"], "hung up by api");
    assert_eq!(b.cap4.journal_statuses(&id), ["dialing", "ringing", "answered", "ended"]);
    // Hanging up again is a conflict, an unknown id is not found.
    let (status, err) = b.cap4.http("POST", &format!("/api/calls/{id}/hangup"), None);
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("call_ended")));
    let (status, _) = b.cap4.http("POST", "/api/calls/no-such-call/hangup", None);
    assert_eq!(status, 404);
    assert_sipp_ok(&mut b);
    assert!(b.sipp.sip_first_lines().iter().any(|l| l.starts_with("BYE ")));
}

#[test]
fn max_call_length_is_enforced() {
    let mut b = bench("max-length", "answer_wait_bye.xml", |c| c.max_duration_s = 2);
    let id = id_of(&b.cap4.dial("+79001112234"));
    b.cap4.wait_status(&id, "answered", WAIT);
    let record = b.cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(record["outcome"], "local_hangup");
    assert_eq!(record["reason"], "maximum call length of 2 s reached");
    assert!(record["talk_ms"].as_u64().is_some_and(|ms| (2_000..4_000).contains(&ms)), "{record}");
    assert_sipp_ok(&mut b);
}

#[test]
fn baresip_killed_mid_call_then_restarted() {
    let mut b = bench("baresip-kill", "answer_wait_bye.xml", |_| {});
    let id = id_of(&b.cap4.dial("+79001112235"));
    b.cap4.wait_status(&id, "answered", WAIT);
    b.baresip.kill9().expect("SIGKILL Baresip");
    // While Baresip is gone: no dialling, and health says so.
    let down = support::wait_until(WAIT, Duration::from_millis(20), || b.cap4.health()["baresip"]["connected"] == false);
    assert!(down, "cap4 did not notice Baresip is gone");
    let (status, err) = b.cap4.http("POST", "/api/calls/dial", Some(r#"{"phone_number":"+100"}"#));
    assert!(status == 409 || status == 503, "{status} {err}");
    b.baresip.restart().expect("restart Baresip");
    let record = b.cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(b.cap4.journal_statuses(&id), ["dialing", "ringing", "answered", "ended"]);
    assert_eq!(record["outcome"], "failed");
    assert_eq!(record["reason"], "call lost while Baresip was disconnected");
    let events = timeline_events(&record);
    assert!(events.contains(&"baresip_link_lost".into()) && events.contains(&"baresip_resynced".into()), "{events:?}");
    b.cap4.wait_baresip_connected(WAIT);

    // The same daemon, reconnected by itself, places the next call: a new remote
    // phone on the port the dial URI names.
    let port = b.sipp.port();
    b.sipp.kill();
    let mut busy = Sipp::start(b.dir.path(), "busy_486.xml", port, free_media_port()).expect("SIPp");
    let next = id_of(&b.cap4.dial("+486486"));
    let record = b.cap4.wait_status(&next, "ended", WAIT);
    assert_eq!(record["outcome"], "busy");
    assert!(busy.wait_exit(WAIT).is_some_and(|s| s.success()));
    assert!(b.cap4.is_running());
}

#[test]
fn cap4_killed_mid_call_keeps_history_and_hangs_up_the_orphan() {
    let mut b = bench("cap4-kill", "answer_wait_bye.xml", |_| {});
    let ended_first = {
        let id = id_of(&b.cap4.dial("+79001112236"));
        b.cap4.wait_status(&id, "answered", WAIT);
        id
    };
    b.cap4.kill9();
    b.cap4.restart();
    b.cap4.wait_baresip_connected(WAIT);
    // The interrupted call is in the history, ended `failed`.
    let record = b.cap4.call(&ended_first);
    assert_eq!((record["status"].as_str(), record["outcome"].as_str()), (Some("ended"), Some("failed")));
    assert_eq!(record["reason"], "cap4 stopped during the call");
    let (status, calls) = b.cap4.http("GET", "/api/calls", None);
    assert_eq!(status, 200);
    assert_eq!(calls.as_array().map(Vec::len), Some(1));
    // Baresip still had the call; nobody owns it any more, so cap4 hangs it up.
    assert_sipp_ok(&mut b);
    assert!(b.sipp.sip_first_lines().iter().any(|l| l.starts_with("BYE ")), "orphan call hung up");
    assert!(b.cap4.log().contains("Baresip has calls cap4 does not own"));
}

#[test]
fn sigterm_hangs_up_the_active_call_and_exits_cleanly() {
    let mut b = bench("sigterm", "answer_wait_bye.xml", |_| {});
    let id = id_of(&b.cap4.dial("+79001112237"));
    b.cap4.wait_status(&id, "answered", WAIT);
    assert_eq!(b.cap4.terminate(), Some(0), "log:\n{}", b.cap4.log());
    assert_sipp_ok(&mut b);
    assert!(b.sipp.sip_first_lines().iter().any(|l| l.starts_with("BYE ")), "the remote got a BYE");
    assert_eq!(b.cap4.journal_statuses(&id), ["dialing", "ringing", "answered", "ended"]);
    let journal = std::fs::read_to_string(b.dir.path().join("state/calls.jsonl")).expect("journal");
    let last: serde_json::Value = serde_json::from_str(journal.lines().last().expect("a line")).expect("JSON");
    assert_eq!((last["outcome"].as_str(), last["reason"].as_str()), (Some("local_hangup"), Some("hung up by shutdown")));
}
