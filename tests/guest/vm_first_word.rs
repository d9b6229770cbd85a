//! The agent's first word after a person's "Hello?", in the test-bench
//! guest: real Baresip on the ALSA loopback, SIPp streaming a person who says
//! "Да-да?" (speech ends 1.451 s into the recording, which SIPp starts at its
//! answer), `cap4 run` with a private agent (signed URL first), and the fake
//! agent, which speaks its first message a fixed time after the conversation
//! starts (the service's share, measured by the fake itself). netem delays
//! every packet to and from the fake by `CAP4_FIRST_WORD_DELAY_MS` each way
//! (default 40: an 80 ms round trip, a European box to the service), so each
//! round trip the box saves shows.
//!
//! From the end of speech to the first agent audio queued for the device,
//! per call and as p50, split into: the verdict, the set-up (signed URL,
//! TCP, upgrade, initiation and metadata, whatever is left after readying),
//! the service's delay, and the bridge (decode, resample, queue). The box's
//! share is everything but the service's delay. Asserted: a person, one
//! conversation per call, the agent heard; the figures are printed, not
//! judged. `scripts/bench-first-word` runs it on the release build.
//!
//! `#[ignore]`d like every guest test; `scripts/test` runs it.

use crate::support;
use crate::support::daemon;
use crate::support::fake_agent;
use crate::support::vmkit;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use daemon::{Daemon, DaemonConfig};
use fake_agent::{FakeAgent, FakeConfig, Step};
use serde_json::Value;
use vmkit::{Guest, in_guest, run_in_guest};

const WAIT: Duration = Duration::from_secs(30);
/// Where "Да-да?" ends in clip_0008 (tests/fixtures/amd/synthetic/labels.csv).
const SPEECH_END_MS: u64 = 1_451;
/// The fake agent's first word, after the conversation starts.
const SERVICE_MS: u64 = 300;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Delays the fake agent's packets (both ways) by `ms`, nothing else.
fn delay_port(port: u16, ms: u64) {
    let tc = |args: &str| {
        let ok = std::process::Command::new("tc").args(args.split_whitespace()).status().is_ok_and(|s| s.success());
        assert!(ok, "tc {args} failed");
    };
    tc("qdisc add dev lo root handle 1: prio bands 3 priomap 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1");
    tc(&format!("qdisc add dev lo parent 1:3 handle 30: netem delay {ms}ms"));
    tc(&format!("filter add dev lo protocol ip parent 1:0 prio 1 u32 match ip sport {port} 0xffff flowid 1:3"));
    tc(&format!("filter add dev lo protocol ip parent 1:0 prio 1 u32 match ip dport {port} 0xffff flowid 1:3"));
}

/// Milliseconds after the call's start of the timeline's first `event`.
fn at(record: &Value, event: &str) -> Option<u64> {
    record["timeline"].as_array()?.iter().find(|e| e["event"] == event)?["at_ms"].as_u64()
}

/// One call's parts, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct FirstWord {
    verdict: u64,
    /// Of the verdict: the classifier's own wait, in the audio it heard (its
    /// `decided_at_ms` less the end of speech in the clip)...
    heard: u64,
    /// ...and the rest: the audio's way from SIPp to the classifier (the
    /// jitter buffer, Baresip's player, the loopback, the engine) and SIPp's
    /// start after the answer.
    transit: u64,
    setup: u64,
    service: u64,
    bridge: u64,
}

impl FirstWord {
    fn box_share(&self) -> u64 {
        self.verdict + self.setup + self.bridge
    }
}

fn p50(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn the_first_word_after_hello() {
    if !in_guest() {
        let out = run_in_guest(
            module_path!(),
            "the_first_word_after_hello",
            Guest { modules: "snd-aloop,sch_netem,sch_prio,cls_u32", systemd: false, timeout_s: 600 },
        );
        if let Ok(figures) = std::fs::read_to_string(out.join("first-word.txt")) {
            eprintln!("{figures}");
        }
        return;
    }
    let calls = env_u64("CAP4_FIRST_WORD_CALLS", 2).max(1);
    let delay_ms = env_u64("CAP4_FIRST_WORD_DELAY_MS", 40);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let fake = runtime.block_on(FakeAgent::start(FakeConfig {
        script: vec![
            Step::Sleep(Duration::from_millis(SERVICE_MS)),
            Step::Say { text: "Hello, this is the assistant.", ms: 600 },
            Step::EndCall { farewell: "Goodbye!", ms: 300 },
        ],
        ..FakeConfig::default()
    }));
    delay_port(fake.addr.port(), delay_ms);
    let dir = support::TempDir::new("first-word");
    let _baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let mut cfg = DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
    cfg.log_level = "info";
    cfg.ai = format!("[ai]\nprovider = \"elevenlabs\"\nagent_id = \"agent_test\"\nbase_url = \"{}\"\nsigned_url = true\n", fake.base_url());
    cfg.extra_env = vec![("ELEVENLABS_API_KEY".into(), "sk_test_key".into())];
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    let ulaw = vmkit::clip_as_ulaw("clip_0008.flac", dir.path());

    let mut results = Vec::new();
    let mut out = String::new();
    for n in 0..calls {
        let sipp = vmkit::start_sipp_streaming(dir.path(), 5070, 6000, &ulaw).expect("SIPp");
        let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
        cap4.wait_status(&id, "ended", WAIT);
        drop(sipp);
        // The session's figures come with its end, just after the call's.
        let figures = support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["audio"].is_object());
        assert!(figures, "the session's figures recorded");
        let ended = cap4.call(&id);
        assert_eq!(ended["answer"]["verdict"], "human", "{ended}\nlog:\n{}", cap4.log());
        assert_eq!(ended["outcome"], "agent_hangup", "{ended}\nlog:\n{}", cap4.log());
        assert_eq!(fake.connections(), n as u32 + 1, "one conversation per call");
        let (answered, classified) =
            (at(&ended, "CALL_ESTABLISHED").expect("answered"), at(&ended, "answer_classified").expect("classified"));
        let requested = at(&ended, "ai_requested").expect("requested");
        let ai = &ended["ai"];
        let (setup, first) = (ai["setup_ms"].as_u64().expect("setup_ms"), ai["first_agent_audio_ms"].as_u64().expect("first audio"));
        let service = {
            let r = fake.recorded();
            let (meta, audio): (Instant, Instant) = (r.metadata_sent_at[n as usize], r.first_audio_sent_at[n as usize]);
            audio.saturating_duration_since(meta).as_millis() as u64
        };
        let verdict = (classified.max(requested)).saturating_sub(answered + SPEECH_END_MS);
        let heard = ended["answer"]["decided_at_ms"].as_u64().expect("decided_at_ms").saturating_sub(SPEECH_END_MS);
        let part = FirstWord {
            verdict,
            heard,
            transit: verdict.saturating_sub(heard),
            setup,
            service,
            bridge: first.saturating_sub(setup + service),
        };
        let _ = writeln!(
            out,
            "call {}: box {} ms = verdict {} (heard {} + transit {}) + set-up {} + bridge {}; service {} ms",
            n + 1,
            part.box_share(),
            part.verdict,
            part.heard,
            part.transit,
            part.setup,
            part.bridge,
            part.service
        );
        results.push(part);
    }
    let head = format!(
        "First word after \"Да-да?\" ({calls} calls, agent round trip {} ms, service {SERVICE_MS} ms), p50: box {} ms = verdict {} (heard {} + transit {}) + set-up {} + bridge {}; service {} ms\n",
        2 * delay_ms,
        p50(results.iter().map(FirstWord::box_share).collect()),
        p50(results.iter().map(|p| p.verdict).collect()),
        p50(results.iter().map(|p| p.heard).collect()),
        p50(results.iter().map(|p| p.transit).collect()),
        p50(results.iter().map(|p| p.setup).collect()),
        p50(results.iter().map(|p| p.bridge).collect()),
        p50(results.iter().map(|p| p.service).collect()),
    );
    let text = format!("{head}{out}");
    std::fs::write(vmkit::xfer_out().join("first-word.txt"), &text).expect("write figures");
    eprintln!("{text}");
    drop(runtime);
}
