//! Set-up latency of an ElevenLabs conversation against the fake agent on
//! loopback: from "start" (the moment a `human` verdict would start it) to
//! the conversation running, to the first caller audio the agent received,
//! and to the first agent audio received. Public agent and private agent
//! (signed URL first).
//!
//! `cargo run --release --example ai_setup_latency [RUNS]`

#[path = "../tests/support/fake_agent/mod.rs"]
mod fake_agent;

use std::time::{Duration, Instant};

use cap4::ai::{AiEvent, CallContext, ClientTools, ElevenLabs, Provider};
use cap4::environment::Secret;
use fake_agent::{FakeAgent, FakeConfig, Step};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!("  {name:<38} p50 {:>6.2} ms   p90 {:>6.2} ms   max {:>6.2} ms", p(0.5), p(0.9), v[v.len() - 1]);
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    for signed in [false, true] {
        let fake = FakeAgent::start(FakeConfig { script: vec![Step::Say { text: "Hello", ms: 500 }], ..FakeConfig::default() }).await;
        let mut cfg = fake_agent::caller::config(&fake);
        cfg.signed_url = signed;
        let p = ElevenLabs::new(cfg, Some(Secret::new("sk_test_key")), ClientTools::new()).unwrap();
        let (mut started, mut first_sent, mut first_agent) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let t0 = Instant::now();
            let mut s = p.start(CallContext::new(format!("c{i}"), "+4930123456")).await.expect("starts");
            started.push(ms(t0.elapsed()));
            let frame = vec![100i16; 320];
            s.send_audio(&frame).unwrap();
            let got_audio = loop {
                match tokio::time::timeout(Duration::from_secs(2), s.next_event()).await {
                    Ok(Some(AiEvent::Audio { .. })) => break Instant::now(),
                    Ok(Some(_)) => {}
                    other => panic!("no agent audio: {other:?}"),
                }
            };
            first_agent.push(ms(got_audio - t0));
            let want = i as u64 + 1;
            fake.wait_for(Duration::from_secs(2), "caller audio", |r| r.audio_chunks >= want).await;
            // One 20 ms chunk per run: run i's is chunk i.
            let sent_at = fake.recorded().chunk_times[i];
            first_sent.push(ms(sent_at - t0));
            s.end().await;
        }
        println!("{} agent, {runs} runs on loopback (fake agent):", if signed { "private (signed URL)" } else { "public" });
        summary("start -> conversation running", started);
        summary("start -> first caller audio at agent", first_sent);
        summary("start -> first agent audio received", first_agent);
    }
}
