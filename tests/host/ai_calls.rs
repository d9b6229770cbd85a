//! The credit rule on real calls, on the host: real Baresip and SIPp, `cap4
//! run` with the ElevenLabs provider pointed at the fake agent. Early media
//! (an operator announcement) never opens an agent session; an answer whose
//! audio cannot be heard (the sound card is missing) is not handed to the agent
//! either: the call ends `ai_failed`, saying why, with zero connections.
//! (People and machines on a real ALSA loopback: `tests/guest/vm_ai.rs`.)

use crate::support;
use crate::support::daemon;
use crate::support::fake_agent;

use std::time::Duration;

use daemon::{Daemon, DaemonConfig};
use fake_agent::{FakeAgent, FakeConfig, Step};
use support::{Baresip, Sipp, TempDir, free_media_port, free_port, free_rtp_range};

const WAIT: Duration = Duration::from_secs(20);

/// The agent section, and an audio device that exists nowhere (so the test
/// does not depend on whether this machine has a loopback card).
fn ai_section(fake: &FakeAgent) -> String {
    format!(
        "[ai]\nprovider = \"elevenlabs\"\nagent_id = \"agent_test\"\nbase_url = \"{}\"\nsigned_url = false\n\
         [audio]\ncapture_device = \"hw:Cap4NoSuchCard,1,0\"\nplayback_device = \"hw:Cap4NoSuchCard,0,1\"\n",
        fake.base_url()
    )
}

#[test]
fn early_media_and_unheard_answers_open_no_agent_session() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let fake =
        runtime.block_on(FakeAgent::start(FakeConfig { script: vec![Step::Say { text: "Hello", ms: 500 }], ..FakeConfig::default() }));
    let dir = TempDir::new("ai-credit-rule");
    let baresip = Baresip::start(dir.path(), free_port(), free_port(), free_rtp_range(20)).expect("Baresip");

    // An announcement in early media (183 with SDP, 2 s of speech), then 404.
    let phone_port = free_port();
    let mut sipp = Sipp::start(dir.path(), "early_media_then_404.xml", phone_port, free_media_port()).expect("SIPp");
    let mut cfg = DaemonConfig::new(baresip.ctrl_port(), sipp.dial_uri_template());
    cfg.ai = ai_section(&fake);
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
    let ended = cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(ended["outcome"], "rejected", "{ended}");
    assert!(ended["timeline"].as_array().expect("timeline").iter().any(|e| e["event"] == "CALL_PROGRESS"), "{ended}");
    assert!(ended["ai"].is_null(), "{ended}");
    assert_eq!(fake.connections(), 0, "early media never reaches the agent");
    assert!(sipp.wait_exit(WAIT).is_some());

    // Answered after early media; the audio engine cannot open its (missing)
    // sound card, so the answer is `unknown` (kept, by default) but the agent could
    // not hear the caller: hung up, `ai_failed`, no connection.
    let _sipp = Sipp::start(dir.path(), "early_media_then_answer.xml", phone_port, free_media_port()).expect("SIPp");
    let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
    let ended = cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(ended["outcome"], "ai_failed", "{ended}\nlog:\n{}", cap4.log());
    assert!(ended["reason"].as_str().is_some_and(|r| r.contains("no audio")), "{ended}");
    assert_eq!(ended["answer"]["verdict"], "unknown", "{ended}");
    assert_eq!(fake.connections(), 0);
    drop(runtime);
}
