//! The agent protocol as the service has it in 2026, against the fake agent
//! (which sends an event beyond its default set only when asked for it):
//! the initiation's client events, `user_id` and `source_info`; `end_call`
//! ending the conversation after the farewell even when the service keeps the
//! socket open; the admission queue (caller audio held, the wait reported);
//! guardrails and error types in the reason of the end; the client's text
//! messages (`contextual_update`, `user_message`, `user_activity`).

use crate::support::fake_agent;

use std::time::Duration;

use cap4::ai::{AiEvent, CallContext, ClientText, ClientTools, ElevenLabs, EndReason, Provider, StartError};
use fake_agent::caller::{audio, config, drive, ended, speech};
use fake_agent::{FakeAgent, FakeConfig, Step};
use serde_json::json;

async fn run_with(
    fake_cfg: FakeConfig,
    tweak: impl FnOnce(&mut cap4::ai::AiConfig),
    within: Duration,
) -> (FakeAgent, Vec<fake_agent::caller::Timed>) {
    let fake = FakeAgent::start(fake_cfg).await;
    let mut cfg = config(&fake);
    tweak(&mut cfg);
    let p = ElevenLabs::new(cfg, None, ClientTools::new()).unwrap();
    let mut s = p.start(CallContext::new("call-7", "+4930123456")).await.expect("starts");
    let events = drive(&mut s, &speech(16_000, 3_000), within).await;
    (fake, events)
}

fn script(steps: Vec<Step>) -> FakeConfig {
    FakeConfig { script: steps, ..FakeConfig::default() }
}

#[tokio::test]
async fn the_initiation_asks_for_the_events_cap4_acts_on() {
    let (fake, _) = run_with(script(vec![Step::Close { code: 1000, reason: "" }]), |_| {}, Duration::from_secs(3)).await;
    let init = fake.recorded().init[0].clone();
    let events = init["conversation_config_override"]["conversation"]["client_events"].as_array().expect("client_events").clone();
    for needed in ["audio", "interruption", "agent_response", "user_transcript", "ping", "client_tool_call", "agent_tool_response"] {
        assert!(events.iter().any(|e| e == needed), "{needed} asked for: {init}");
    }
    assert_eq!(init["user_id"], "+4930123456", "{init}");
    assert_eq!(init["dynamic_variables"]["call_id"], "call-7");
    assert_eq!(init["source_info"]["source"], "unknown");
}

#[tokio::test]
async fn end_call_ends_after_the_farewell_when_the_service_keeps_the_socket_open() {
    let (fake, events) = run_with(
        script(vec![Step::Say { text: "Hi", ms: 100 }, Step::EndCallNoClose { farewell: "Goodbye!", ms: 500 }]),
        |_| {},
        Duration::from_secs(6),
    )
    .await;
    let end = ended(&events).expect("ended by the client, not by the idle timeout");
    assert!(end.is_normal() && end.to_string().contains("end_call"), "{end}");
    let farewell: usize = audio(&events).iter().filter(|t| t.0 == 2).map(|t| t.1).sum();
    assert_eq!(farewell, 8000, "the whole farewell came before the end");
    fake.wait_for(Duration::from_secs(2), "the client's close", |r| r.client_closes.iter().any(|c| c.0 == 1000)).await;
    assert!(fake.recorded().server_closes.is_empty(), "the service never closed");

    // The full-payload twin of the tool response ends it the same way.
    let full = json!({"type": "agent_tool_response_full_payload", "agent_tool_response_full_payload": {
        "tool_name": "end_call", "tool_call_id": "t9", "tool_type": "system", "is_error": false, "is_called": true,
        "event_id": 3, "full_tool_result": "{}", "truncated": false}});
    let (_fake, events) =
        run_with(script(vec![Step::Say { text: "Bye", ms: 200 }, Step::Raw(full.to_string())]), |_| {}, Duration::from_secs(6)).await;
    assert!(ended(&events).is_some_and(|e| e.is_normal() && e.to_string().contains("end_call")), "{:?}", ended(&events));
}

#[tokio::test]
async fn without_the_client_events_the_tool_result_never_comes() {
    // Asking for nothing leaves the agent's own (default) settings: the
    // service withholds agent_tool_response, so only its close ends the call.
    let (fake, events) = run_with(
        script(vec![Step::Say { text: "Hi", ms: 100 }, Step::EndCall { farewell: "Goodbye!", ms: 200 }]),
        |c| c.client_events = Vec::new(),
        Duration::from_secs(4),
    )
    .await;
    let rec = fake.recorded();
    assert!(rec.init[0].get("conversation_config_override").is_none(), "{}", rec.init[0]);
    assert!(rec.withheld_events.iter().any(|e| e == "agent_tool_response"), "{:?}", rec.withheld_events);
    let end = ended(&events).expect("the close ends it");
    assert!(end.is_normal() && !end.to_string().contains("end_call"), "{end}");
}

#[tokio::test]
async fn an_agent_that_refuses_the_client_events_override_fails_the_start_saying_what_to_change() {
    let fake = FakeAgent::start(FakeConfig { allow_client_events: false, ..FakeConfig::default() }).await;
    let p = ElevenLabs::new(config(&fake), None, ClientTools::new()).unwrap();
    let err = p.start(CallContext::new("c", "1")).await.expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, StartError::ClosedBeforeMetadata { code: Some(1008), .. }), "{err:?}");
    assert!(text.contains("client_events") && text.contains("security settings"), "{text}");
}

#[tokio::test]
async fn a_queued_conversation_holds_the_callers_audio_and_reports_the_wait() {
    let (fake, events) = run_with(
        script(vec![
            Step::Queue { wait: Duration::from_millis(800), admit: true },
            Step::Say { text: "Hi", ms: 200 },
            Step::Sleep(Duration::from_millis(600)),
            Step::Close { code: 1000, reason: "" },
        ]),
        |_| {},
        Duration::from_secs(5),
    )
    .await;
    let queue: Vec<bool> = events.iter().filter_map(|(_, e)| if let AiEvent::Queue { held } = e { Some(*held) } else { None }).collect();
    assert_eq!(queue, [true, false], "held, then admitted");
    let (while_held, chunks) = {
        let rec = fake.recorded();
        (rec.audio_while_held, rec.audio_chunks)
    };
    assert_eq!(while_held, 0, "nothing sent while held (the service discards it)");
    assert!(chunks > 0, "caller audio flows once admitted");
    let admitted_at = events.iter().position(|(_, e)| matches!(e, AiEvent::Queue { held: false })).unwrap();
    let first_audio = events.iter().position(|(_, e)| matches!(e, AiEvent::Audio { .. })).expect("the agent spoke");
    assert!(first_audio > admitted_at);

    let (_fake, events) =
        run_with(script(vec![Step::Queue { wait: Duration::from_millis(300), admit: false }]), |_| {}, Duration::from_secs(4)).await;
    match ended(&events) {
        Some(EndReason::Error { code: Some(3008), reason }) => assert!(reason.contains("queue timed out"), "{reason}"),
        other => panic!("a queue timeout fails the conversation: {other:?}"),
    }
}

#[tokio::test]
async fn guardrails_and_error_types_are_named_in_the_reason() {
    let (_fake, events) = run_with(
        script(vec![
            Step::Say { text: "Hi", ms: 100 },
            Step::Raw(json!({"type": "guardrail_triggered"}).to_string()),
            Step::Close { code: 1002, reason: "" },
        ]),
        |_| {},
        Duration::from_secs(3),
    )
    .await;
    let end = ended(&events).expect("ended");
    assert!(!end.is_normal() && end.to_string().contains("guardrail"), "{end}");

    let missing = json!({"type": "error", "error_event": {"code": 1008, "error_type": "missing_dynamic_variable", "message": "Missing required dynamic variables in first message: {'customer_name'}"}});
    let (_fake, events) = run_with(
        script(vec![Step::Raw(missing.to_string()), Step::Close { code: 1008, reason: "Missing required dynamic variables" }]),
        |_| {},
        Duration::from_secs(3),
    )
    .await;
    let end = ended(&events).expect("ended").to_string();
    assert!(end.contains("customer_name") && end.contains("[ai.dynamic_variables]"), "{end}");

    let timeout = json!({"type": "error", "error_event": {"code": 1002, "error_type": "transport_receive_timeout", "message": "No user input received"}});
    let (_fake, events) = run_with(script(vec![Step::Raw(timeout.to_string())]), |_| {}, Duration::from_secs(3)).await;
    let end = ended(&events).expect("ended after the error grace").to_string();
    assert!(end.contains("heard nothing from the caller"), "{end}");
}

#[tokio::test]
async fn ping_without_a_measured_rtt_and_new_events_are_survived() {
    let frames = [
        json!({"type": "ping", "ping_event": {"event_id": 77, "ping_ms": null}}),
        json!({"type": "agent_chat_response_part", "text_response_part": {"text": "Hel", "type": "delta", "event_id": 1}}),
        json!({"type": "context_usage", "context_usage_event": {"event_id": 1, "model": "m", "context_tokens": 10, "context_limit_tokens": 100}}),
        json!({"type": "audio", "audio_event": {"audio_base_64": "AAAAAA==", "event_id": 1, "alignment": {"chars": ["a"], "char_start_times_ms": [0], "char_durations_ms": [10]}}}),
    ];
    let mut steps: Vec<Step> = frames.iter().map(|f| Step::Raw(f.to_string())).collect();
    steps.push(Step::Sleep(Duration::from_millis(300)));
    steps.push(Step::Close { code: 1000, reason: "" });
    let (fake, events) = run_with(script(steps), |_| {}, Duration::from_secs(3)).await;
    assert!(ended(&events).is_some_and(EndReason::is_normal));
    assert_eq!(audio(&events), [(1, 2)], "audio with its alignment plays");
    let rec = fake.recorded();
    assert!(rec.bad_frames.iter().any(|f| f.contains("pong for unknown ping 77")), "the null-RTT ping was answered: {:?}", rec.bad_frames);
}

#[tokio::test]
async fn the_clients_text_messages_reach_the_agent_as_the_schema_has_them() {
    let fake = FakeAgent::start(script(vec![Step::Sleep(Duration::from_millis(600)), Step::Close { code: 1000, reason: "" }])).await;
    let p = ElevenLabs::new(config(&fake), None, ClientTools::new()).unwrap();
    let mut s = p.start(CallContext::new("c", "1")).await.expect("starts");
    s.send_text(ClientText::Context { text: "The caller pressed 5".into(), context_id: Some("dtmf".into()) }).unwrap();
    s.send_text(ClientText::UserMessage("I want a person".into())).unwrap();
    s.send_text(ClientText::Activity).unwrap();
    fake.wait_for(Duration::from_secs(2), "three texts", |r| r.client_texts.len() == 3).await;
    assert_eq!(
        fake.recorded().client_texts,
        [
            json!({"type": "contextual_update", "text": "The caller pressed 5", "context_id": "dtmf"}),
            json!({"type": "user_message", "text": "I want a person"}),
            json!({"type": "user_activity"}),
        ]
    );
    let events = drive(&mut s, &[], Duration::from_secs(3)).await;
    assert!(ended(&events).is_some());
    assert_eq!(s.send_text(ClientText::Activity), Err(cap4::ai::TextRefused::Closed));
}
