//! Answer classification in live calls, in the test-bench guest: real Baresip on
//! the ALSA loopback, SIPp streaming a labelled recording as the remote phone,
//! and `cap4 run` with its audio engine and classifier. A voicemail greeting is
//! hung up with outcome `machine`; a person's "hello" keeps the call. Either way
//! the record carries the verdict and the audio counters.
//!
//! `#[ignore]`d like every guest test; `scripts/test` runs it.

use crate::support;
use crate::support::daemon;
use crate::support::vmkit;

use std::path::Path;
use std::time::Duration;

use daemon::{Daemon, DaemonConfig};
use serde_json::Value;
use vmkit::{Guest, in_guest, run_in_guest};

const WAIT: Duration = Duration::from_secs(30);

/// Places a call to a SIPp phone that streams `clip`; returns the record once
/// classified (and, for a machine, ended).
fn call_with(cap4: &Daemon, dir: &Path, clip: &str) -> (vmkit::Proc, serde_json::Value) {
    let ulaw = vmkit::clip_as_ulaw(clip, dir);
    let sipp = vmkit::start_sipp_streaming(dir, 5070, 6000, &ulaw).expect("SIPp");
    let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
    let mut record = serde_json::Value::Null;
    let classified = support::wait_until(WAIT, Duration::from_millis(50), || {
        record = cap4.call(&id);
        record["answer"].is_object()
    });
    assert!(classified, "{clip}: never classified: {record}\nlog:\n{}", cap4.log());
    (sipp, record)
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn live_calls_are_classified_and_machines_hung_up() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "live_calls_are_classified_and_machines_hung_up",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 300 },
        );
        return;
    }
    let dir = support::TempDir::new("amd-live");
    let _baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let cap4 = Daemon::start(dir.path(), &DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into()));
    cap4.wait_baresip_connected(WAIT);

    // A voicemail greeting (clip_0023: 6 s of greeting from 1.4 s, beep at 7.7 s).
    let (_sipp, record) = call_with(&cap4, dir.path(), "clip_0023.flac");
    assert_eq!(record["answer"]["verdict"], "machine", "{record}");
    let id = record["id"].as_str().expect("id").to_string();
    let ended = cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(ended["outcome"], "machine", "{ended}");
    assert!(ended["reason"].as_str().is_some_and(|r| r.starts_with("answering machine")));
    let decided = ended["answer"]["decided_at_ms"].as_u64().expect("decided_at_ms");
    assert!((1_000..10_000).contains(&decided), "{ended}");
    assert!(support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["audio"]["captured_ms"].as_u64().unwrap_or(0) > 0));
    drop(_sipp);

    // A person: "Да-да?" and silence (clip_0008). The call stays up.
    let (_sipp, record) = call_with(&cap4, dir.path(), "clip_0008.flac");
    assert_eq!(record["answer"]["verdict"], "human", "{record}");
    assert_eq!(record["status"], "answered", "a person keeps the call");
    let id = record["id"].as_str().expect("id").to_string();
    let (status, ended) = cap4.http("POST", &format!("/api/calls/{id}/hangup"), None);
    assert_eq!(status, 200);
    assert_eq!(ended["outcome"], "local_hangup");
    let record = cap4.call(&id);
    let speech_end = record["answer"]["speech_end_ms"].as_u64().expect("speech end measured");
    assert!(speech_end > 1_000, "{record}");
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn early_media_is_analysed_for_the_record() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "early_media_is_analysed_for_the_record",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 300 },
        );
        return;
    }
    let dir = support::TempDir::new("amd-early");
    let _baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let cap4 = Daemon::start(dir.path(), &DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into()));
    cap4.wait_baresip_connected(WAIT);
    // 183 with SDP streaming a carrier's SIT (at 0.15 s) and announcement for 2 s, then 404.
    // The announcement is a carrier's recording (clip_0016: "The customer you
    // are calling is unavailable...", speech from 0.7 s), 1.3 s of it in the
    // 2 s: well clear of the 500 ms an announcement needs. (A person's
    // "Да-да?", 330 ms of speech, was used here before: it passed at 500 ms
    // or more of measured speech, and failed a CI run at 490.)
    for (clip, kind) in [("clip_0047.flac", "sit"), ("clip_0016.flac", "announcement")] {
        let ulaw = vmkit::clip_as_ulaw(clip, dir.path());
        let _sipp = vmkit::start_sipp_scenario(dir.path(), "early_media_then_404.xml", 5070, 6000, &ulaw).expect("SIPp");
        let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
        let ended = cap4.wait_status(&id, "ended", WAIT);
        assert_eq!(ended["outcome"], "rejected", "{ended}");
        assert!(ended["answer"].is_null() && ended["ai"].is_null(), "early media is never an answer: {ended}");
        let mut record = Value::Null;
        let analysed = support::wait_until(WAIT, Duration::from_millis(50), || {
            record = cap4.call(&id);
            record["early_media"].is_object()
        });
        assert!(analysed, "{clip}: {record}");
        assert_eq!(record["early_media"]["kind"], kind, "{clip}: {record}");
        assert!(record["early_media"]["analysed_ms"].as_u64().is_some_and(|ms| ms >= 1_000), "{record}");
        if kind == "sit" {
            assert!(record["early_media"]["sit"]["code"].is_string(), "{record}");
        }
    }
}
