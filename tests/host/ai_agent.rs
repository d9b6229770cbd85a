//! The ElevenLabs provider against the fake agent, during a conversation:
//! initiation data, caller audio, transcripts, pings, barge-in, client tools,
//! garbage frames, slow reads, µ-law, signed URLs; and the echo provider
//! through the same handle.

use crate::support::fake_agent;

use std::time::{Duration, Instant};

use cap4::ai::{
    AiEvent, AudioFormat, CallContext, ClientTools, DynamicValue, ElevenLabs, Overrides, Playout, Provider, ProviderKind, StartError,
    provider_from_config,
};
use fake_agent::caller::{audio, config, drive, ended, listen, silence, speech};
use fake_agent::{FakeAgent, FakeConfig, Step, marker};
use serde_json::json;

fn provider(cfg: cap4::ai::AiConfig) -> ElevenLabs {
    ElevenLabs::new(cfg, None, ClientTools::new()).expect("valid config")
}

#[tokio::test]
async fn a_conversation_sends_the_call_and_its_audio_and_reports_the_transcript() {
    let fake = FakeAgent::start(FakeConfig {
        script: vec![
            Step::Say { text: "Hello, this is the agent.", ms: 300 },
            Step::Hear { transcript: "I need an appointment." },
            Step::Say { text: "Monday at ten?", ms: 200 },
        ],
        ..FakeConfig::default()
    })
    .await;
    let mut cfg = config(&fake);
    cfg.dynamic_variables.insert("site".into(), DynamicValue::from("berlin"));
    cfg.overrides = Overrides { language: Some("de".into()), ..Default::default() };
    let p = provider(cfg);
    let mut ctx = CallContext::new("call-42", "+4930123456");
    ctx.overrides.first_message = Some("Guten Tag".into());
    let mut s = p.start(ctx).await.expect("starts");
    assert_eq!(s.info().conversation_id, "conv_fake_1");
    assert_eq!(s.info().input_format, AudioFormat::Pcm(16000));

    let caller = [silence(16000, 600), speech(16000, 500), silence(16000, 1500)].concat();
    let events = drive(&mut s, &caller, Duration::from_millis(2600)).await;
    let kinds: Vec<String> = events
        .iter()
        .filter_map(|(_, e)| match e {
            AiEvent::AgentResponse { text } => Some(format!("agent: {text}")),
            AiEvent::UserTranscript { text } => Some(format!("user: {text}")),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["agent: Hello, this is the agent.", "user: I need an appointment.", "agent: Monday at ten?"]);
    let turns = audio(&events);
    assert_eq!(turns.iter().filter(|t| t.0 == 1).map(|t| t.1).sum::<usize>(), 4800, "300 ms of turn 1: {turns:?}");
    assert_eq!(turns.iter().filter(|t| t.0 == 3).map(|t| t.1).sum::<usize>(), 3200, "200 ms of turn 3: {turns:?}");
    for (_, e) in &events {
        if let AiEvent::Audio { event_id, samples } = e {
            assert!(samples.iter().all(|&x| x == marker(*event_id)), "samples decoded as sent");
        }
    }
    assert!(ended(&events).is_none());
    s.end().await;

    fake.wait_for(Duration::from_secs(2), "the client's close", |r| !r.client_closes.is_empty()).await;
    let r = fake.recorded();
    assert_eq!(r.connections, 1);
    assert_eq!(r.client_closes[0].0, 1000);
    let init = &r.init[0];
    assert_eq!(init["type"], "conversation_initiation_client_data");
    assert_eq!(init["dynamic_variables"], json!({"call_id": "call-42", "phone_number": "+4930123456", "site": "berlin"}));
    assert_eq!(init["conversation_config_override"]["agent"], json!({"first_message": "Guten Tag", "language": "de"}));
    assert!(r.bad_frames.is_empty(), "{:?}", r.bad_frames);
    // 20 ms chunks (the default), in real time: ~2.6 s of audio.
    assert!(r.audio_chunk_sizes.iter().all(|&n| n == 320), "{:?}", &r.audio_chunk_sizes[..5]);
    assert!(r.audio_chunks >= 100, "{} chunks", r.audio_chunks);
}

#[tokio::test]
async fn the_chunk_length_is_configurable_and_mulaw_goes_both_ways() {
    let fake = FakeAgent::start(FakeConfig {
        input_format: "ulaw_8000".into(),
        output_format: "ulaw_8000".into(),
        script: vec![Step::Hear { transcript: "hello" }, Step::Say { text: "Hi", ms: 200 }],
        ..FakeConfig::default()
    })
    .await;
    let mut cfg = config(&fake);
    cfg.input_format = AudioFormat::Ulaw8000;
    cfg.output_format = AudioFormat::Ulaw8000;
    cfg.chunk_ms = 50;
    let mut s = provider(cfg).start(CallContext::new("c", "1")).await.expect("starts");
    let caller = [speech(8000, 400), silence(8000, 800)].concat();
    let events = drive(&mut s, &caller, Duration::from_millis(1600)).await;
    let turn: Vec<i16> = events
        .iter()
        .filter_map(|(_, e)| match e {
            AiEvent::Audio { samples, .. } => Some(samples.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(turn.len(), 1600, "200 ms at 8 kHz");
    // µ-law is lossy: the marker (200) comes back within a quantisation step.
    assert!(turn.iter().all(|&x| (x - marker(2)).abs() <= 8), "{:?}", &turn[..4]);
    s.end().await;
    let r = fake.recorded();
    assert!(r.loud_chunks > 0, "the fake decoded our µ-law as speech");
    assert!(r.audio_chunk_sizes.iter().all(|&n| n == 400), "50 ms at 8 kHz: {:?}", &r.audio_chunk_sizes[..3]);
    assert!(r.bad_frames.is_empty(), "{:?}", r.bad_frames);
}

#[tokio::test]
async fn every_ping_is_answered_at_once_with_its_event_id() {
    let fake = FakeAgent::start(FakeConfig {
        ping_every: Some(Duration::from_millis(40)),
        close_after_missed_pongs: Some(3),
        ..FakeConfig::default()
    })
    .await;
    let mut s = provider(config(&fake)).start(CallContext::new("c", "1")).await.expect("starts");
    let events = drive(&mut s, &[], Duration::from_millis(800)).await;
    assert!(ended(&events).is_none(), "the fake closes when pongs stop: {events:?}");
    let r = fake.recorded();
    assert!(r.pings_sent >= 10, "{} pings", r.pings_sent);
    assert!(r.pongs.len() as u64 >= r.pings_sent - 1, "{} pongs for {} pings", r.pongs.len(), r.pings_sent);
    let ids: Vec<u64> = r.pongs.iter().map(|p| p.0).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ids in order: {ids:?}");
    let worst = r.pongs.iter().map(|p| p.1).max().unwrap();
    assert!(worst < Duration::from_millis(250), "worst pong latency {worst:?}");
    assert!(r.server_closes.is_empty());
    assert!(r.bad_frames.is_empty(), "{:?}", r.bad_frames);
}

#[tokio::test]
async fn barge_in_flushes_playback_and_drops_the_interrupted_turns_late_audio() {
    let fake = FakeAgent::start(FakeConfig {
        script: vec![
            Step::SayInterruptible { text: "Let me tell you about all our offers in great detail", ms: 4000 },
            Step::Hear { transcript: "stop please" },
            Step::Say { text: "Sorry, go ahead.", ms: 300 },
        ],
        ..FakeConfig::default()
    })
    .await;
    let mut s = provider(config(&fake)).start(CallContext::new("c", "1")).await.expect("starts");
    // The caller lets the agent talk for 500 ms, then talks over it.
    let caller = [silence(16000, 500), speech(16000, 400), silence(16000, 1500)].concat();
    let events = drive(&mut s, &caller, Duration::from_millis(2600)).await;

    let at = events.iter().position(|(_, e)| matches!(e, AiEvent::Interruption { event_id: 1 })).expect("interruption reported");
    let after = &events[at + 1..];
    assert!(audio(after).iter().all(|&(id, _)| id > 1), "no audio of turn 1 after its interruption: {:?}", audio(after));
    assert!(after.iter().any(|(_, e)| matches!(e, AiEvent::AgentResponseCorrection { original, .. } if original.starts_with("Let me"))));
    assert!(audio(after).iter().any(|&(id, _)| id == 3), "the next turn plays: {:?}", audio(after));
    let turn1_before: usize = audio(&events[..at]).iter().filter(|t| t.0 == 1).map(|t| t.1).sum();
    assert!(turn1_before < 64000, "the turn was cut short ({turn1_before} samples)");

    // The playback side: a Playout fed with the events, drained 20 ms per
    // event as a real-time consumer would, never yields turn 1 after the cut.
    let mut playout = Playout::new();
    let mut frame = vec![0i16; 320];
    let mut played_after_cut = Vec::new();
    let mut cut = false;
    for (_, e) in &events {
        match e {
            AiEvent::Audio { event_id, samples } => {
                playout.push(*event_id, samples.clone());
            }
            AiEvent::Interruption { event_id } => {
                assert!(playout.interrupt(*event_id) > 0, "something was queued to flush");
                cut = true;
            }
            _ => {}
        }
        let n = playout.pop(&mut frame);
        if cut {
            played_after_cut.extend_from_slice(&frame[..n]);
        }
    }
    while !playout.is_empty() {
        let n = playout.pop(&mut frame);
        played_after_cut.extend_from_slice(&frame[..n]);
    }
    assert!(!played_after_cut.contains(&marker(1)), "turn 1 reached playback after the interruption");
    assert!(played_after_cut.contains(&marker(3)));
    s.end().await;
    // The fake did send two stale chunks of turn 1 after the interruption;
    // none of them came out of the session (checked above).
    assert!(fake.recorded().log.iter().any(|l| l == "turn 1 interrupted: true"));
}

#[tokio::test]
async fn client_tools_are_answered_and_unknown_tools_get_an_error_result() {
    let fake = FakeAgent::start(FakeConfig {
        script: vec![
            Step::ToolCall { name: "lookup_customer", parameters: json!({"phone": "+4930123456"}) },
            Step::ToolCall { name: "transfer_money", parameters: json!({}) },
        ],
        ..FakeConfig::default()
    })
    .await;
    let tools = ClientTools::new().with("lookup_customer", |p| Ok(format!("{{\"name\":\"Miller\",\"phone\":{}}}", p["phone"])));
    let p = ElevenLabs::new(config(&fake), None, tools).unwrap();
    let mut s = p.start(CallContext::new("c", "1")).await.expect("starts");
    fake.wait_for(Duration::from_secs(3), "two tool results", |r| r.tool_results.len() == 2).await;
    let events = listen(&mut s, Duration::from_millis(300)).await;
    let calls: Vec<(String, bool)> = events
        .iter()
        .filter_map(|(_, e)| match e {
            AiEvent::ToolCall { name, result, .. } => Some((name.clone(), result.is_error)),
            _ => None,
        })
        .collect();
    assert_eq!(calls, [("lookup_customer".to_string(), false), ("transfer_money".to_string(), true)]);
    let r = fake.recorded();
    assert_eq!(
        r.tool_results[0],
        json!({"type": "client_tool_result", "tool_call_id": "toolu_1", "result": "{\"name\":\"Miller\",\"phone\":\"+4930123456\"}", "is_error": false})
    );
    assert_eq!(r.tool_results[1]["tool_call_id"], "toolu_2");
    assert_eq!(r.tool_results[1]["is_error"], true);
    assert!(r.tool_results[1]["result"].as_str().unwrap().contains("unknown tool"));
}

#[tokio::test]
async fn garbage_frames_and_unknown_events_are_survived() {
    let fake = FakeAgent::start(FakeConfig {
        script: vec![
            Step::Noise,
            Step::Raw(r#"{"type":"audio","audio_event":{"audio_base_64":"","event_id":1}}"#.into()),
            Step::Say { text: "Still here.", ms: 100 },
        ],
        ..FakeConfig::default()
    })
    .await;
    let mut s = provider(config(&fake)).start(CallContext::new("c", "1")).await.expect("starts");
    let events = drive(&mut s, &[], Duration::from_millis(700)).await;
    assert!(ended(&events).is_none(), "{events:?}");
    assert_eq!(audio(&events), [(1, 1600)], "only the real audio; the empty chunk is skipped");
    assert!(events.iter().any(|(_, e)| matches!(e, AiEvent::AgentResponse { text } if text == "Still here.")));
    s.end().await;
    assert_eq!(fake.recorded().client_closes.first().map(|c| c.0), Some(1000));
}

#[tokio::test]
async fn a_slow_reading_agent_never_blocks_the_caller_or_the_pongs() {
    let fake = FakeAgent::start(FakeConfig {
        ping_every: Some(Duration::from_millis(100)),
        script: vec![
            Step::SlowReads(Duration::from_millis(150)),
            Step::Sleep(Duration::from_millis(1500)),
            Step::SlowReads(Duration::ZERO),
        ],
        ..FakeConfig::default()
    })
    .await;
    let mut s = provider(config(&fake)).start(CallContext::new("c", "1")).await.expect("starts");
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let frame = speech(16000, 20);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..125 {
        tick.tick().await;
        let t = Instant::now();
        s.send_audio(&frame).expect("session alive");
        worst = worst.max(t.elapsed());
        while let Some(e) = s.try_next_event() {
            assert!(!matches!(e, AiEvent::Ended(_)), "{e:?}");
        }
    }
    // Blocking would mean a slow read's 150 ms (or the whole 1.5 s stall);
    // the bounds sit far above scheduling noise on a loaded two-core CI box.
    assert!(worst < Duration::from_millis(100), "send_audio took {worst:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?} for 125 frames of 20 ms", started.elapsed());
    // Once the agent reads again, pings and audio flow again.
    fake.wait_for(Duration::from_secs(5), "pongs after the slow reads", |r| r.pongs.len() >= 3 && r.audio_chunks > 60).await;
    let (sent, dropped) = s.audio_counters();
    assert!(sent > 0 && sent + dropped == 125, "{sent} sent, {dropped} dropped");
    s.end().await;
}

#[tokio::test]
async fn a_private_agent_connects_through_a_signed_url_fetched_with_the_key() {
    let fake = FakeAgent::start(FakeConfig { require_signature: true, ..FakeConfig::default() }).await;
    let mut cfg = config(&fake);
    cfg.signed_url = true;
    let p = ElevenLabs::new(cfg.clone(), Some(cap4::environment::Secret::new("sk_test_key")), ClientTools::new()).unwrap();
    let s = p.start(CallContext::new("c", "1")).await.expect("starts");
    s.end().await;
    {
        let r = fake.recorded();
        assert_eq!((r.signed_url_requests, r.connections), (1, 1));
        assert!(r.upgrade_paths[0].contains("conversation_signature=cvtkn_"), "{:?}", r.upgrade_paths);
    }

    // A wrong key: refused with 401, no conversation opened.
    let p = ElevenLabs::new(cfg.clone(), Some(cap4::environment::Secret::new("sk_wrong")), ClientTools::new()).unwrap();
    let err = p.start(CallContext::new("c", "1")).await.unwrap_err();
    assert!(matches!(err, StartError::SignedUrl { status: Some(401), .. }), "{err}");
    assert!(!err.to_string().contains("sk_wrong"));
    // No key at all: nothing is even asked.
    let p = ElevenLabs::new(cfg, None, ClientTools::new()).unwrap();
    assert_eq!(p.start(CallContext::new("c", "1")).await.unwrap_err(), StartError::MissingApiKey);
    let r = fake.recorded();
    assert_eq!((r.signed_url_requests, r.connections), (2, 1));
}

#[tokio::test]
async fn the_echo_provider_greets_and_plays_the_caller_back_through_the_same_handle() {
    let cfg = cap4::ai::AiConfig { provider: ProviderKind::Echo, ..Default::default() };
    let p = provider_from_config(&cfg, None, ClientTools::new()).unwrap();
    assert_eq!(p.name(), "echo");
    let mut s = p.start(CallContext::new("c", "1")).await.unwrap();
    let caller = [silence(16000, 600), speech(16000, 600), silence(16000, 1000)].concat();
    let events = drive(&mut s, &caller, Duration::from_millis(2400)).await;
    assert_eq!(audio(&events), [(1, 6400), (2, 9600)], "greeting tone, then the caller's 600 ms");
    s.end().await;
}

#[tokio::test]
async fn a_plaintext_signed_url_to_another_host_is_not_followed() {
    let fake = FakeAgent::start(FakeConfig { signed_url_host: Some("agent.example:80".into()), ..FakeConfig::default() }).await;
    let mut cfg = config(&fake);
    cfg.signed_url = true;
    let p = ElevenLabs::new(cfg, Some(cap4::environment::Secret::new("sk_test_key")), ClientTools::new()).unwrap();
    let err = p.start(CallContext::new("c", "1")).await.unwrap_err();
    assert!(matches!(&err, StartError::SignedUrl { detail, .. } if detail.contains("not encrypted")), "{err}");
    assert_eq!(fake.recorded().connections, 0, "nothing connected to the agent server");
}

#[tokio::test]
async fn an_oversized_agent_frame_ends_the_conversation_instead_of_filling_memory() {
    let huge = format!(r#"{{"type":"agent_response","agent_response_event":{{"agent_response":"{}"}}}}"#, "x".repeat(2 << 20));
    let fake = FakeAgent::start(FakeConfig { script: vec![Step::Raw(huge)], ..FakeConfig::default() }).await;
    let mut s = provider(config(&fake)).start(CallContext::new("c", "1")).await.expect("starts");
    let events = drive(&mut s, &[], Duration::from_millis(1500)).await;
    assert!(ended(&events).is_some(), "a 2 MiB frame must end the session: {events:?}");
    assert!(!events.iter().any(|(_, e)| matches!(e, AiEvent::AgentResponse { .. })), "it was not taken in");
}

#[tokio::test]
async fn an_agent_that_outruns_the_call_is_held_back_and_loses_nothing() {
    // 2000 chunks of 10 ms at once, while the call takes none for a second.
    let fake = FakeAgent::start(FakeConfig {
        chunk_ms: 10,
        script: vec![
            Step::Say { text: "A very long turn", ms: 20_000 },
            Step::Sleep(Duration::from_secs(1)),
            Step::Close { code: 1000, reason: "" },
        ],
        ..FakeConfig::default()
    })
    .await;
    let mut s = provider(config(&fake)).start(CallContext::new("c", "1")).await.expect("starts");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(s.pending_events() <= 256, "bounded: {} events wait", s.pending_events());
    let events = listen(&mut s, Duration::from_secs(20)).await;
    assert!(ended(&events).is_some_and(|e| e.is_normal()), "{:?}", ended(&events));
    let chunks = audio(&events);
    assert_eq!(chunks.len(), 2000, "nothing lost");
    assert!(chunks.iter().all(|&(id, n)| id == 1 && n == 160));
}
