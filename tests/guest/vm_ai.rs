//! The AI stage of live calls, in the test-bench guest: real Baresip on the
//! ALSA loopback, SIPp streaming a labelled recording as the remote phone,
//! `cap4 run` with its audio engine and classifier, and an agent: the fake
//! ElevenLabs server (in this test process) or the local echo provider.
//!
//! - A voicemail greeting is hung up (`machine`) with zero agent connections.
//! - A person gets exactly one: the agent speaks, ends the call, its farewell
//!   plays, and the call ends `agent_hangup` with the transcript, the AI
//!   seconds and the set-up figures in the record.
//! - The echo provider works the same way with no network at all.
//!
//! `#[ignore]`d like every guest test; `scripts/test` runs it.

use crate::support;
use crate::support::daemon;
use crate::support::fake_agent;
use crate::support::vmkit;

use std::path::Path;
use std::time::Duration;

use daemon::{Daemon, DaemonConfig};
use fake_agent::{FakeAgent, FakeConfig, Step};
use serde_json::Value;
use vmkit::{Guest, in_guest, run_in_guest};

const WAIT: Duration = Duration::from_secs(30);

/// Places a call to a SIPp phone that streams `clip`; returns the record once
/// classified.
fn call_with(cap4: &Daemon, dir: &Path, clip: &str) -> (vmkit::Proc, Value) {
    let ulaw = vmkit::clip_as_ulaw(clip, dir);
    let sipp = vmkit::start_sipp_streaming(dir, 5070, 6000, &ulaw).expect("SIPp");
    let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
    let mut record = Value::Null;
    let classified = support::wait_until(WAIT, Duration::from_millis(50), || {
        record = cap4.call(&id);
        record["answer"].is_object()
    });
    assert!(classified, "{clip}: never classified: {record}\nlog:\n{}", cap4.log());
    (sipp, record)
}

fn id_of(record: &Value) -> String {
    record["id"].as_str().expect("id").to_string()
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn the_agent_gets_people_and_never_machines() {
    if !in_guest() {
        let out = run_in_guest(
            module_path!(),
            "the_agent_gets_people_and_never_machines",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 300 },
        );
        // `cargo test --test guest -- --ignored --nocapture vm_ai::` shows the figures.
        if let Ok(figures) = std::fs::read_to_string(out.join("ai-setup.txt")) {
            eprintln!("{figures}");
        }
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let fake = runtime.block_on(FakeAgent::start(FakeConfig {
        script: vec![
            Step::Say { text: "Hello, this is the assistant.", ms: 800 },
            Step::Sleep(Duration::from_millis(500)),
            Step::EndCall { farewell: "Goodbye!", ms: 700 },
        ],
        ..FakeConfig::default()
    }));
    let dir = support::TempDir::new("ai-live");
    let _baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let mut cfg = DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
    cfg.ai =
        format!("[ai]\nprovider = \"elevenlabs\"\nagent_id = \"agent_test\"\nbase_url = \"{}\"\nsigned_url = false\n", fake.base_url());
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);

    // A voicemail greeting: hung up, no agent.
    let (sipp, record) = call_with(&cap4, dir.path(), "clip_0023.flac");
    assert_eq!(record["answer"]["verdict"], "machine", "{record}");
    let ended = cap4.wait_status(&id_of(&record), "ended", WAIT);
    assert_eq!(ended["outcome"], "machine", "{ended}");
    assert!(ended["ai"].is_null(), "{ended}");
    assert_eq!(fake.connections(), 0, "no AI session for a machine");
    drop(sipp);

    // A person ("Да-да?"): one session; the agent talks and ends the call.
    let (_sipp, record) = call_with(&cap4, dir.path(), "clip_0008.flac");
    assert_eq!(record["answer"]["verdict"], "human", "{record}");
    let id = id_of(&record);
    let ended = cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(ended["outcome"], "agent_hangup", "{ended}\nlog:\n{}", cap4.log());
    assert_eq!(fake.connections(), 1, "exactly one AI session");
    let ai = &ended["ai"];
    assert_eq!(ai["provider"], "elevenlabs", "{ended}");
    assert!(ai["seconds"].as_f64().is_some_and(|s| s >= 1.5), "the whole conversation is counted: {ai}\nlog:\n{}", cap4.log());
    let agent_lines: Vec<&str> = ended["transcript"]
        .as_array()
        .expect("transcript")
        .iter()
        .filter(|l| l["speaker"] == "agent")
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert_eq!(agent_lines, ["Hello, this is the assistant.", "Goodbye!"], "{ended}");
    // The farewell played before the hangup: the phone got both turns.
    let record = support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["audio"].is_object());
    assert!(record, "audio counters recorded");
    let full = cap4.call(&id);
    let played = full["audio"]["played_ms"].as_u64().expect("played_ms");
    assert!(played >= 1_400, "greeting and farewell reached the line: {played} ms\n{full}");
    let setup = full["ai"]["setup_ms"].as_u64().expect("setup_ms");
    let first_out = full["ai"]["first_agent_audio_ms"].as_u64().expect("first_agent_audio_ms");
    let first_in = full["ai"]["first_caller_audio_ms"].as_u64().expect("first_caller_audio_ms");
    let figures = format!(
        "AI set-up on a live call in the guest, from the human verdict: conversation running {setup} ms, \
         first caller audio sent {first_in} ms, first agent audio queued {first_out} ms"
    );
    let trail: String = cap4
        .log()
        .lines()
        .filter(|l| l.contains("AI") || l.contains("classified") || l.contains("agent"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(vmkit::xfer_out().join("ai-setup.txt"), format!("{figures}\n{trail}")).expect("write figures");
    assert!(setup <= first_out, "{full}");
    drop(runtime);
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn the_echo_provider_answers_a_person_with_no_network() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "the_echo_provider_answers_a_person_with_no_network",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 300 },
        );
        return;
    }
    let dir = support::TempDir::new("ai-echo");
    let _baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let mut cfg = DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
    cfg.ai = "[ai]\nprovider = \"echo\"\n".into();
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);

    let (_sipp, record) = call_with(&cap4, dir.path(), "clip_0008.flac");
    assert_eq!(record["answer"]["verdict"], "human", "{record}");
    let id = id_of(&record);
    // The looped recording says "Да-да?" every few seconds: the echo greets
    // with its tone, then plays each utterance back.
    let echoed = support::wait_until(WAIT, Duration::from_millis(100), || {
        cap4.call(&id)["transcript"].as_array().is_some_and(|t| t.iter().any(|l| l["speaker"] == "user"))
    });
    assert!(echoed, "the echo heard the caller: {}\nlog:\n{}", cap4.call(&id), cap4.log());
    // Let the reply play out: nothing outside the call shows playback live
    // (the record's audio counters come at the end).
    std::thread::sleep(Duration::from_secs(2));
    let (status, ended) = cap4.http("POST", &format!("/api/calls/{id}/hangup"), None);
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["outcome"], "local_hangup");
    assert_eq!(ended["ai"]["provider"], "echo", "{ended}");
    assert!(ended["ai"]["seconds"].as_f64().is_some_and(|s| s > 1.0), "{ended}");
    let record = support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["audio"].is_object());
    assert!(record);
    let full = cap4.call(&id);
    // Greeting (400 ms) plus at least one played-back utterance.
    let played = full["audio"]["played_ms"].as_u64().expect("played_ms");
    assert!(played >= 600, "{full}");
    assert!(full["audio"]["peak_out_dbfs"].as_f64().is_some_and(|p| p > -30.0), "{full}");
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn a_machine_gets_the_voicemail_message_after_its_beep() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "a_machine_gets_the_voicemail_message_after_its_beep",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 300 },
        );
        return;
    }
    let dir = support::TempDir::new("ai-voicemail");
    // The message: 1.5 s of a 600 Hz tone.
    let message: Vec<i16> =
        (0..12_000).map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 600.0 * f64::from(i) / 8000.0).sin()) as i16).collect();
    vmkit::write_wav(&dir.path().join("message.wav"), &message).expect("message.wav");
    let _baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let mut cfg = DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
    cfg.ai = "[ai]\nprovider = \"echo\"\n".into();
    cfg.extra = format!("[voicemail]\ndrop_wav = \"{}\"\n", dir.path().join("message.wav").display());
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);

    // clip_0023: greeting 1.4–7.4 s, a 1 s beep at 7.7 s, then quiet until the loop restarts at 12.4 s.
    let (_sipp, record) = call_with(&cap4, dir.path(), "clip_0023.flac");
    assert_eq!(record["answer"]["verdict"], "machine", "{record}");
    let id = id_of(&record);
    let ended = cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(ended["outcome"], "machine", "{ended}");
    assert!(ended["reason"].as_str().is_some_and(|r| r.ends_with("; voicemail left)")), "{ended}");
    assert!(ended["ai"].is_null(), "no agent for a machine: {ended}");
    let at = |event: &str| {
        ended["timeline"].as_array().expect("timeline").iter().find(|e| e["event"] == event).and_then(|e| e["at_ms"].as_u64())
    };
    let (answered, left) = (at("CALL_ESTABLISHED").expect("answered"), at("voicemail_left").expect("left"));
    // After the beep's end (8.7 s) and the quiet that follows (1.2 s), plus the 1.5 s message.
    let after_answer = left - answered;
    assert!((8_700 + 1_200 + 1_500..12_400 + 1_500 + 1_000).contains(&after_answer), "left {after_answer} ms after the answer\n{ended}");
    let counted = support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["audio"].is_object());
    assert!(counted);
    let played = cap4.call(&id)["audio"]["played_ms"].as_u64().expect("played_ms");
    assert!((1_400..=1_600).contains(&played), "the whole message, nothing else: {played} ms");
}
