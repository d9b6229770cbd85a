//! How conversations with the fake agent end, and how they fail to start:
//! end_call, maximum duration, error closes (1002, 1008, 1011, 3000, others),
//! `error` frames in both shapes, a dropped socket, a silent agent; unknown
//! agents, refused overrides, format mismatches, timeouts.

use crate::support::fake_agent;

use std::time::Duration;

use cap4::ai::{AiEvent, AudioFormat, CallContext, ClientTools, ElevenLabs, EndReason, Overrides, Provider, StartError};
use fake_agent::caller::{audio, config, drive, ended, listen};
use fake_agent::{FakeAgent, FakeConfig, Step};
use serde_json::json;

async fn run(script: Vec<Step>, within: Duration) -> (FakeAgent, Vec<fake_agent::caller::Timed>) {
    let fake = FakeAgent::start(FakeConfig { script, ..FakeConfig::default() }).await;
    let p = ElevenLabs::new(config(&fake), None, ClientTools::new()).unwrap();
    let mut s = p.start(CallContext::new("c", "1")).await.expect("starts");
    let events = drive(&mut s, &[], within).await;
    (fake, events)
}

#[tokio::test]
async fn end_call_ends_normally_after_the_farewell_audio() {
    let (fake, events) =
        run(vec![Step::Say { text: "Hi", ms: 100 }, Step::EndCall { farewell: "Goodbye!", ms: 500 }], Duration::from_secs(3)).await;
    let end = ended(&events).expect("ended");
    assert!(end.is_normal(), "{end}");
    assert!(end.to_string().contains("end_call"), "{end}");
    assert!(matches!(events.last().unwrap().1, AiEvent::Ended(_)), "Ended comes last");
    // All 500 ms of farewell came before the end: the caller can play it out.
    let farewell: usize = audio(&events).iter().filter(|t| t.0 == 2).map(|t| t.1).sum();
    assert_eq!(farewell, 8000);
    assert_eq!(fake.recorded().server_closes, [1000]);
    assert_eq!(fake.connections(), 1);
}

#[tokio::test]
async fn maximum_duration_is_a_normal_end() {
    let (_fake, events) = run(
        vec![
            Step::Raw(json!({"type": "error", "error_event": {"code": 1000, "error_type": "max_duration_exceeded", "message": "Maximum duration reached"}}).to_string()),
            Step::Close { code: 1000, reason: "" },
        ],
        Duration::from_secs(3),
    )
    .await;
    let end = ended(&events).expect("ended");
    assert!(end.is_normal(), "{end}");
    assert!(end.to_string().contains("max_duration_exceeded"), "{end}");
}

#[tokio::test]
async fn error_closes_end_the_conversation_with_the_reason() {
    for (code, reason) in
        [(1002u16, "LLM timeout"), (1008, "Invalid message received"), (1011, "Unexpected error"), (3000, "Request error"), (4321, "")]
    {
        let (_fake, events) = run(vec![Step::Say { text: "Hi", ms: 100 }, Step::Close { code, reason }], Duration::from_secs(3)).await;
        match ended(&events) {
            Some(EndReason::Error { code: Some(c), reason: text }) => {
                assert_eq!(*c, code);
                assert!(text.contains(&code.to_string()) && text.contains(reason), "{text}");
            }
            other => panic!("close {code}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_quota_error_in_the_flat_shape_is_the_reason_of_the_1002_close() {
    let (_fake, events) = run(
        vec![
            Step::Say { text: "Hi", ms: 100 },
            Step::Raw(r#"{"type":"error","message":"received 1002 (protocol error) This request exceeds your quota limit."}"#.into()),
            Step::Close { code: 1002, reason: "" },
        ],
        Duration::from_secs(3),
    )
    .await;
    let end = ended(&events).expect("ended");
    assert!(matches!(end, EndReason::Error { code: Some(1002), .. }), "{end:?}");
    assert!(end.to_string().contains("quota"), "{end}");
}

#[tokio::test]
async fn an_error_frame_without_a_close_ends_the_conversation_after_the_grace() {
    let (fake, events) = run(
        vec![Step::Raw(
            json!({"type": "error", "error_event": {"code": 1002, "error_type": "llm_error", "message": "LLM failed"}}).to_string(),
        )],
        Duration::from_secs(3),
    )
    .await;
    let end = ended(&events).expect("ended");
    assert!(matches!(end, EndReason::Error { code: Some(1002), .. }), "{end:?}");
    assert!(end.to_string().contains("llm_error"), "{end}");
    // We close the socket ourselves (the agent bills while it is open).
    fake.wait_for(Duration::from_secs(2), "the client's close", |r| !r.client_closes.is_empty()).await;
}

#[tokio::test]
async fn the_agents_receive_timeout_error_and_close_are_reported() {
    // The caller sends nothing at all: the fake's receive timeout fires.
    let fake = FakeAgent::start(FakeConfig { receive_timeout: Some(Duration::from_millis(300)), ..FakeConfig::default() }).await;
    let p = ElevenLabs::new(config(&fake), None, ClientTools::new()).unwrap();
    let mut s = p.start(CallContext::new("c", "1")).await.expect("starts");
    let events = listen(&mut s, Duration::from_secs(3)).await;
    let end = ended(&events).expect("ended");
    assert!(matches!(end, EndReason::Error { code: Some(1002), .. }), "{end:?}");
    assert!(end.to_string().contains("No user input received"), "{end}");
}

#[tokio::test]
async fn a_socket_lost_mid_call_ends_with_a_reason() {
    let (_fake, events) = run(vec![Step::Say { text: "Hi", ms: 100 }, Step::Drop], Duration::from_secs(3)).await;
    let end = ended(&events).expect("ended");
    assert!(matches!(end, EndReason::Lost { .. }), "{end:?}");
    assert!(events.iter().any(|(_, e)| matches!(e, AiEvent::AgentResponse { .. })), "what came before is kept");
}

#[tokio::test]
async fn a_silent_agent_is_taken_as_lost() {
    let fake = FakeAgent::start(FakeConfig::default()).await;
    let mut cfg = config(&fake);
    cfg.idle_timeout_ms = 1000;
    let p = ElevenLabs::new(cfg, None, ClientTools::new()).unwrap();
    let mut s = p.start(CallContext::new("c", "1")).await.expect("starts");
    let events = drive(&mut s, &[], Duration::from_secs(3)).await;
    let end = ended(&events).expect("ended");
    assert!(matches!(end, EndReason::Lost { .. }) && end.to_string().contains("1000 ms"), "{end}");
}

async fn start_error(fake_cfg: FakeConfig, tweak: impl FnOnce(&mut cap4::ai::AiConfig)) -> (FakeAgent, StartError) {
    let fake = FakeAgent::start(fake_cfg).await;
    let mut cfg = config(&fake);
    tweak(&mut cfg);
    let p = ElevenLabs::new(cfg, None, ClientTools::new()).unwrap();
    let err = p.start(CallContext::new("c", "1")).await.expect_err("must not start");
    (fake, err)
}

#[tokio::test]
async fn an_unknown_agent_or_a_missing_signature_fails_the_start() {
    let (fake, err) = start_error(FakeConfig::default(), |c| c.agent_id = Some("agent_nope".into())).await;
    assert!(matches!(&err, StartError::ClosedBeforeMetadata { code: Some(1008), reason } if reason.contains("Agent not found")), "{err:?}");
    assert_eq!(fake.connections(), 1);
    let (_fake, err) = start_error(FakeConfig { require_signature: true, reject_code: 3000, ..FakeConfig::default() }, |_| {}).await;
    assert!(matches!(&err, StartError::ClosedBeforeMetadata { code: Some(3000), .. }), "{err:?}");
}

#[tokio::test]
async fn a_refused_override_fails_the_start_with_the_agents_reason() {
    let (_fake, err) = start_error(FakeConfig { allow_overrides: false, ..FakeConfig::default() }, |c| {
        c.overrides = Overrides { first_message: Some("Hi".into()), ..Default::default() }
    })
    .await;
    assert!(matches!(&err, StartError::ClosedBeforeMetadata { code: Some(1008), reason } if reason.contains("not allowed")), "{err:?}");
}

#[tokio::test]
async fn mismatched_audio_formats_fail_the_start_and_close_the_socket() {
    let (fake, err) = start_error(FakeConfig { input_format: "ulaw_8000".into(), ..FakeConfig::default() }, |_| {}).await;
    assert_eq!(err, StartError::FormatMismatch { direction: "input", expected: AudioFormat::Pcm(16000), got: "ulaw_8000".into() });
    assert!(err.to_string().contains("ulaw_8000") && err.to_string().contains("pcm_16000"));
    fake.wait_for(Duration::from_secs(2), "the client's close", |r| !r.client_closes.is_empty()).await;

    let (_fake, err) = start_error(FakeConfig { output_format: "pcm_24000".into(), ..FakeConfig::default() }, |_| {}).await;
    assert!(matches!(&err, StartError::FormatMismatch { direction: "output", got, .. } if got == "pcm_24000"), "{err:?}");
    // Configured for what the agent says: it starts.
    let fake = FakeAgent::start(FakeConfig { output_format: "pcm_24000".into(), ..FakeConfig::default() }).await;
    let mut cfg = config(&fake);
    cfg.output_format = AudioFormat::Pcm(24000);
    let s = ElevenLabs::new(cfg, None, ClientTools::new()).unwrap().start(CallContext::new("c", "1")).await.expect("starts");
    assert_eq!(s.info().output_format.rate(), 24000);
}

#[tokio::test]
async fn no_metadata_in_time_or_no_server_fails_the_start() {
    let (_fake, err) =
        start_error(FakeConfig { metadata_delay: Duration::from_secs(2), ..FakeConfig::default() }, |c| c.connect_timeout_ms = 300).await;
    assert!(matches!(err, StartError::Timeout { stage: "conversation metadata", .. }), "{err:?}");

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let fake = FakeAgent::start(FakeConfig::default()).await;
    let mut cfg = config(&fake);
    cfg.base_url = format!("http://127.0.0.1:{port}");
    let err = ElevenLabs::new(cfg, None, ClientTools::new()).unwrap().start(CallContext::new("c", "1")).await.unwrap_err();
    assert!(matches!(err, StartError::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn tls_to_a_server_that_does_not_speak_it_fails_the_start_cleanly() {
    // The fake speaks plain HTTP: the rustls handshake (ring provider) fails.
    let fake = FakeAgent::start(FakeConfig::default()).await;
    let mut cfg = config(&fake);
    cfg.base_url = format!("https://{}", fake.addr);
    cfg.signed_url = true;
    let p = ElevenLabs::new(cfg.clone(), Some(cap4::environment::Secret::new("sk_test_key")), ClientTools::new()).unwrap();
    let err = p.start(CallContext::new("c", "1")).await.unwrap_err();
    assert!(matches!(&err, StartError::SignedUrl { status: None, detail } if detail.contains("TLS")), "{err:?}");
    cfg.signed_url = false;
    let err = ElevenLabs::new(cfg, None, ClientTools::new()).unwrap().start(CallContext::new("c", "1")).await.unwrap_err();
    assert!(matches!(err, StartError::Connect(_)), "{err:?}");
    assert_eq!(fake.recorded().signed_url_requests, 0);
}
