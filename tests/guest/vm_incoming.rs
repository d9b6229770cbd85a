//! An incoming call in the test-bench guest: real Baresip on the ALSA
//! loopback, a SIPp UAC calling the box and streaming a person's voice, `cap4
//! run` in `[incoming] mode = "agent"`, and the fake ElevenLabs agent in this
//! process. The caller is answered and handed to the agent at once (no
//! classification); the agent gets the caller's number as `phone_number`,
//! hears the caller, talks, and ends the call: `agent_hangup`, `inbound`,
//! with the transcript.
//!
//! `#[ignore]`d like every guest test; `scripts/test` runs it.

use crate::support;
use crate::support::fake_agent;
use crate::support::vmkit;

use std::time::Duration;

use fake_agent::{FakeAgent, FakeConfig, Step};
use vmkit::{Guest, in_guest, run_in_guest};

const WAIT: Duration = Duration::from_secs(30);
const CALLER: &str = vmkit::AGENT_CALLER;

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn a_caller_is_answered_and_handed_to_the_agent_with_its_number() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "a_caller_is_answered_and_handed_to_the_agent_with_its_number",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 300 },
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let fake = runtime.block_on(FakeAgent::start(FakeConfig {
        script: vec![
            Step::Say { text: "Hello, you called the front desk.", ms: 800 },
            Step::Sleep(Duration::from_millis(1_500)),
            Step::EndCall { farewell: "Goodbye!", ms: 700 },
        ],
        ..FakeConfig::default()
    }));
    let dir = support::TempDir::new("incoming-live");
    let call = vmkit::AgentCall::start(
        dir.path(),
        &fake.base_url(),
        "allow = [\"+1555*\"]\nanswer_after_ms = 500\n",
        "incoming_wait_bye.xml",
        &[],
    );
    let record = call.ended_record(WAIT);
    let cap4 = &call.cap4;
    assert_eq!((record["direction"].as_str(), record["phone_number"].as_str()), (Some("inbound"), Some(CALLER)), "{record}");
    assert_eq!(record["outcome"], "agent_hangup", "{record}\nlog:\n{}", cap4.log());
    assert!(record["answer"].is_null(), "a caller is not classified: {record}");
    assert_eq!(fake.connections(), 1, "exactly one AI session");
    let agent_lines: Vec<&str> = record["transcript"]
        .as_array()
        .expect("transcript")
        .iter()
        .filter(|l| l["speaker"] == "agent")
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert_eq!(agent_lines, ["Hello, you called the front desk.", "Goodbye!"], "{record}");
    let recorded = fake.recorded();
    let vars = &recorded.init[0]["dynamic_variables"];
    assert_eq!(vars["phone_number"], CALLER, "{:?}", recorded.init);
    assert!(recorded.audio_chunks > 0, "the agent heard the caller");
    drop(recorded);
    drop(runtime);
}
