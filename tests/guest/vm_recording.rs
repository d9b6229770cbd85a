//! A recorded call in the test-bench guest: real Baresip on the ALSA
//! loopback, a SIPp caller streaming a person's voice, `cap4 run` with
//! `[recording] enabled` handing the call to the fake agent (whose audio is
//! a constant per turn, so the box's side is known sample for sample).
//! `GET /api/calls/{id}/recording` gives a stereo 8 kHz 16-bit WAV as long
//! as the talk time (within a second), the caller's voice on the left, the
//! agent's turns on the right; the record names it and its duration.
//!
//! `#[ignore]`d like every guest test; `scripts/test` runs it.

use crate::support;
use crate::support::daemon;
use crate::support::fake_agent;
use crate::support::vmkit;

use std::time::Duration;

use fake_agent::{FakeAgent, FakeConfig, Step};
use vmkit::{Guest, in_guest, run_in_guest};

const WAIT: Duration = Duration::from_secs(40);

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn an_answered_call_is_recorded_in_stereo_for_as_long_as_it_lasted() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "an_answered_call_is_recorded_in_stereo_for_as_long_as_it_lasted",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 300 },
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let fake = runtime.block_on(FakeAgent::start(FakeConfig {
        script: vec![
            Step::Say { text: "Hello, this call is recorded.", ms: 1_000 },
            Step::Sleep(Duration::from_millis(3_000)),
            Step::EndCall { farewell: "Goodbye.", ms: 600 },
        ],
        ..FakeConfig::default()
    }));
    let dir = support::TempDir::new("recorded");
    let call = vmkit::AgentCall::start(dir.path(), &fake.base_url(), "[recording]\nenabled = true\n", "incoming_wait_bye.xml", &[]);
    let record = call.ended_record(WAIT);
    assert_eq!(record["outcome"], "agent_hangup", "{record}\nlog:\n{}", call.cap4.log());
    let id = record["id"].as_str().expect("id");

    // Within seconds of the end: the record names the file, the API serves it.
    let mut named = record.clone();
    support::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        named = call.cap4.http("GET", &format!("/api/calls/{id}"), None).1;
        named["recording"].is_object()
    });
    assert_eq!(named["recording"]["file"], format!("{id}.wav"), "{named}");
    let (status, head, wav) = daemon::http_exchange(&call.cap4.api, "GET", &format!("/api/calls/{id}/recording"), None, &[]);
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: audio/wav"), "{head}");
    let u16_at = |at: usize| u16::from_le_bytes([wav[at], wav[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes([wav[at], wav[at + 1], wav[at + 2], wav[at + 3]]);
    assert_eq!((&wav[0..4], &wav[8..12], u16_at(20), u16_at(22), u32_at(24), u16_at(34)), (&b"RIFF"[..], &b"WAVE"[..], 1, 2, 8000, 16));
    assert_eq!(u32_at(40) as usize, wav.len() - 44, "the header names every sample");
    let frames: Vec<(i16, i16)> =
        wav[44..].chunks_exact(4).map(|f| (i16::from_le_bytes([f[0], f[1]]), i16::from_le_bytes([f[2], f[3]]))).collect();
    let duration_ms = frames.len() as u64 * 1000 / 8000;
    assert_eq!(named["recording"]["duration_ms"].as_u64(), Some(duration_ms), "{named}");
    let talk_ms = record["talk_ms"].as_u64().expect("talk_ms");
    assert!(duration_ms.abs_diff(talk_ms) <= 1_000, "recorded {duration_ms} ms of a {talk_ms} ms call");

    // Left: the caller's voice (speech, loud); right: the agent's turns, whose
    // samples are 100 (turn 1) and 200 (the farewell): never speech.
    let peak = |side: fn(&(i16, i16)) -> i16| frames.iter().map(|f| side(f).unsigned_abs()).max().unwrap_or(0);
    assert!(peak(|f| f.0) > 2_000, "no caller's voice on the left (peak {})", peak(|f| f.0));
    assert!(peak(|f| f.1) < 1_000, "the right has more than the agent's turns (peak {})", peak(|f| f.1));
    let turn_one = frames.iter().filter(|f| (80..=120).contains(&f.1)).count();
    assert!(turn_one >= 8_000 * 8 / 10, "the agent's first turn (1 s) is on the right: {turn_one} samples");
    drop(runtime);
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn a_recording_cut_by_a_crash_plays_up_to_its_last_second() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "a_recording_cut_by_a_crash_plays_up_to_its_last_second",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 300 },
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let fake = runtime.block_on(FakeAgent::start(FakeConfig {
        script: vec![Step::Say { text: "Hello.", ms: 500 }, Step::Sleep(Duration::from_secs(30))],
        ..FakeConfig::default()
    }));
    let dir = support::TempDir::new("recorded-crash");
    let mut call = vmkit::AgentCall::start(dir.path(), &fake.base_url(), "[recording]\nenabled = true\n", "incoming_wait_bye.xml", &[]);
    let mut record = serde_json::Value::Null;
    let answered = support::wait_until(WAIT, Duration::from_millis(100), || {
        record = call.cap4.http("GET", "/api/calls", None).1[0].clone();
        record["status"] == "answered"
    });
    assert!(answered, "never answered: {record}\nlog:\n{}", call.cap4.log());
    // The crash comes once the header on disk names 3 s (it is rewritten at each sync).
    let file = dir.path().join("state/recordings").join(format!("{}.wav", record["id"].as_str().expect("id")));
    let header_data =
        || std::fs::read(&file).ok().filter(|w| w.len() >= 44).map(|w| u32::from_le_bytes([w[40], w[41], w[42], w[43]]) as usize);
    let synced = support::wait_until(WAIT, Duration::from_millis(50), || header_data().is_some_and(|d| d >= 3 * 8000 * 4));
    assert!(synced, "the header never named 3 s: {:?}\nlog:\n{}", header_data(), call.cap4.log());
    call.cap4.kill9();
    let wav = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let u32_at = |at: usize| u32::from_le_bytes([wav[at], wav[at + 1], wav[at + 2], wav[at + 3]]) as usize;
    let data = u32_at(40);
    assert_eq!(u32_at(4), 36 + data, "RIFF size matches the data");
    assert!(44 + data <= wav.len(), "the header names no sample that is not there ({data} of {})", wav.len() - 44);
    assert_eq!(data % 4, 0, "whole stereo frames");
    let synced_ms = data / 4 * 1000 / 8000;
    assert!(synced_ms >= 3_000, "only {synced_ms} ms survived the crash");
    // What the header names is there, sample for sample: the caller's voice.
    let peak = wav[44..44 + data].chunks_exact(4).map(|f| i16::from_le_bytes([f[0], f[1]]).unsigned_abs()).max().unwrap_or(0);
    assert!(peak > 2_000, "the surviving part holds no caller's voice (peak {peak})");
    drop(runtime);
}
