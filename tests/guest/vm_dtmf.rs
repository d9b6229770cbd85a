//! Keys both ways on a live call in the test-bench guest: real Baresip on
//! the ALSA loopback, a SIPp UAC calling the box (`incoming_dtmf.xml`), `cap4
//! run` answering it for the fake ElevenLabs agent. The agent calls the
//! `send_dtmf` client tool with `12w#`: the RFC 4733 events Baresip sends
//! are read off the wire by this test (the SDP offer names this test's UDP
//! socket as the caller's audio port), `#` at least the pause after `2`. The
//! caller presses 1, 2, # (SIPp's RFC 4733 captures): the agent gets one
//! `user_message` and the transcript one `dtmf` line.
//!
//! `#[ignore]`d like every guest test; `scripts/test` runs it.

use crate::support;
use crate::support::fake_agent;
use crate::support::vmkit;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_agent::{FakeAgent, FakeConfig, Step};
use vmkit::{Guest, in_guest, run_in_guest};

const WAIT: Duration = Duration::from_secs(40);
/// Where Baresip sends the call's RTP (the SDP offer says so).
const RTP_SINK: u16 = 6100;
/// The telephone-event payload type the offer names.
const TELEPHONE_EVENT_PT: u8 = 101;

/// One key Baresip sent: RFC 4733 event code, when its first packet came.
#[derive(Debug, Clone, Copy, PartialEq)]
struct KeyOnWire {
    event: u8,
    first_at: Instant,
    ended: bool,
}

/// Reads RTP on `socket` until `stop`, keeping the telephone events, one
/// entry per key (RFC 4733: packets of one key share the RTP timestamp).
fn read_keys(socket: UdpSocket, stop: Arc<Mutex<bool>>) -> Vec<KeyOnWire> {
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let mut keys: Vec<(u32, KeyOnWire)> = Vec::new();
    let mut buf = [0u8; 1500];
    while !*stop.lock().unwrap() {
        let Ok(n) = socket.recv(&mut buf) else { continue };
        let packet = &buf[..n];
        if n < 16 || packet[1] & 0x7f != TELEPHONE_EVENT_PT {
            continue;
        }
        let timestamp = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let (event, end) = (packet[12], packet[13] & 0x80 != 0);
        match keys.iter_mut().find(|(ts, _)| *ts == timestamp) {
            Some((_, key)) => key.ended |= end,
            None => keys.push((timestamp, KeyOnWire { event, first_at: Instant::now(), ended: end })),
        }
    }
    keys.into_iter().map(|(_, k)| k).collect()
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn the_agent_presses_keys_and_hears_the_callers() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "the_agent_presses_keys_and_hears_the_callers",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 300 },
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let fake = runtime.block_on(FakeAgent::start(FakeConfig {
        script: vec![
            Step::Say { text: "Connecting you.", ms: 400 },
            Step::ToolCall { name: "send_dtmf", parameters: serde_json::json!({"digits": "12w#"}) },
            Step::ToolCall { name: "send_dtmf", parameters: serde_json::json!({"digits": "1x"}) },
            Step::AwaitUserMessage { containing: "1 2 #" },
            Step::EndCall { farewell: "Thank you, goodbye!", ms: 600 },
        ],
        ..FakeConfig::default()
    }));
    let dir = support::TempDir::new("dtmf-live");
    let sink = UdpSocket::bind(("127.0.0.1", RTP_SINK)).expect("RTP sink");
    let stop = Arc::new(Mutex::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || read_keys(sink, stop))
    };
    let sink_port = RTP_SINK.to_string();
    let call = vmkit::AgentCall::start(dir.path(), &fake.base_url(), "", "incoming_dtmf.xml", &[("rtp_sink", sink_port.as_str())]);
    let record = call.ended_record(WAIT);
    let cap4 = &call.cap4;
    *stop.lock().unwrap() = true;
    let keys = reader.join().expect("reader");
    assert_eq!(record["outcome"], "agent_hangup", "{record}\nlog:\n{}", cap4.log());

    // The agent's keys on the wire: 1, 2, then # after the pause.
    let events: Vec<u8> = keys.iter().map(|k| k.event).collect();
    assert_eq!(events, [1, 2, 11], "RFC 4733 events sent: {keys:?}\nlog:\n{}", cap4.log());
    assert!(keys.iter().all(|k| k.ended), "every key ended: {keys:?}");
    let gap = keys[2].first_at - keys[1].first_at;
    // Key 2 plays ~240 ms, then the 500 ms pause.
    assert!(gap >= Duration::from_millis(600), "# came {gap:?} after 2: the pause was not kept");

    let recorded = fake.recorded();
    let results: Vec<(&str, bool)> =
        recorded.tool_results.iter().map(|r| (r["result"].as_str().unwrap_or(""), r["is_error"] == true)).collect();
    assert_eq!(results.len(), 2, "{:?}", recorded.tool_results);
    assert_eq!(results[0], ("sent 12w#", false), "{:?}", recorded.tool_results);
    assert!(results[1].1 && results[1].0.contains("digits[1]"), "a bad key is the agent's error: {:?}", recorded.tool_results);
    let messages: Vec<&str> =
        recorded.client_texts.iter().filter(|t| t["type"] == "user_message").filter_map(|t| t["text"].as_str()).collect();
    assert_eq!(messages, ["(The caller pressed on the phone's keypad: 1 2 #)"], "{:?}", recorded.client_texts);
    drop(recorded);

    let lines: Vec<(&str, &str)> = record["transcript"]
        .as_array()
        .expect("transcript")
        .iter()
        .filter_map(|l| Some((l["speaker"].as_str()?, l["text"].as_str()?)))
        .filter(|(speaker, _)| *speaker == "dtmf" || *speaker == "tool")
        .collect();
    assert_eq!(lines.iter().filter(|(s, _)| *s == "dtmf").collect::<Vec<_>>(), [&("dtmf", "12#")], "{record}");
    assert!(lines.iter().any(|(s, t)| *s == "tool" && t.starts_with("send_dtmf(")), "{record}");
    drop(runtime);
}
