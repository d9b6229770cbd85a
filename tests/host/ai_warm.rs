//! Readying the agent ahead of the verdict (`Provider::warm_up`), against the
//! fake agent, which counts TCP connections apart from upgrades: the signed
//! URL is fetched at once, the connection opens only when told (the answer),
//! the start after it opens nothing new, a dropped warm-up closes what it
//! opened without an upgrade (nothing billed), and a readied connection the
//! server has meanwhile closed, or that went silent, costs only a fresh connect.

use crate::support::fake_agent;

use std::sync::Arc;
use std::time::Duration;

use cap4::ai::{CallContext, ClientTools, ElevenLabs, Provider};
use cap4::environment::Secret;
use fake_agent::caller::config;
use fake_agent::{FakeAgent, FakeConfig, Step};

const WAIT: Duration = Duration::from_secs(3);

fn private(fake: &FakeAgent) -> Arc<dyn Provider> {
    let mut cfg = config(fake);
    cfg.signed_url = true;
    Arc::new(ElevenLabs::new(cfg, Some(Secret::new("sk_test_key")), ClientTools::new()).unwrap())
}

fn counts(fake: &FakeAgent) -> (u32, u32, u32) {
    let r = fake.recorded();
    (r.signed_url_requests, r.tcp_accepts, r.connections)
}

#[tokio::test]
async fn a_readied_start_opens_nothing_new() {
    let fake = FakeAgent::start(FakeConfig { script: vec![Step::Say { text: "Hi", ms: 100 }], ..FakeConfig::default() }).await;
    let provider = private(&fake);
    let mut warm = provider.clone().warm_up().expect("ElevenLabs readies");
    fake.wait_for(WAIT, "the signed URL", |r| r.signed_url_requests == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counts(&fake), (1, 1, 0), "the URL alone until the answer");

    warm.connect();
    fake.wait_for(WAIT, "the early connection", |r| r.tcp_accepts == 2).await;
    assert_eq!(counts(&fake).2, 0, "no upgrade, no conversation, nothing billed");

    let s = provider.start_warm(CallContext::new("c", "1"), warm).await.expect("starts");
    assert_eq!(counts(&fake), (1, 2, 1), "the start only upgraded the early connection");
    assert!(s.info().conversation_id.starts_with("conv_fake_"));
}

#[tokio::test]
async fn a_warm_up_let_go_closes_its_connection_unused() {
    let fake = FakeAgent::start(FakeConfig::default()).await;
    let provider = private(&fake);
    let mut warm = provider.clone().warm_up().expect("readies");
    warm.connect();
    fake.wait_for(WAIT, "the early connection", |r| r.tcp_accepts == 2).await;
    drop(warm);
    fake.wait_for(WAIT, "the connection closed", |r| r.closed_unused == 1).await;
    assert_eq!(counts(&fake).2, 0, "never upgraded");

    // Never told to connect: nothing but the URL was ever opened.
    let warm = provider.clone().warm_up().expect("readies");
    fake.wait_for(WAIT, "the second URL", |r| r.signed_url_requests == 2).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counts(&fake), (2, 3, 0));
}

#[tokio::test]
async fn a_readied_connection_the_server_closed_costs_a_fresh_connect() {
    let fake = FakeAgent::start(FakeConfig { idle_close_after: Some(Duration::from_millis(100)), ..FakeConfig::default() }).await;
    let provider = private(&fake);
    let mut warm = provider.clone().warm_up().expect("readies");
    warm.connect();
    fake.wait_for(WAIT, "the server's idle close", |r| r.idle_closed >= 1).await;
    let s = provider.start_warm(CallContext::new("c", "1"), warm).await.expect("starts on a new connection");
    assert_eq!(counts(&fake), (1, 3, 1));
    drop(s);
}

#[tokio::test]
async fn a_public_agent_readies_its_connection_too() {
    let fake = FakeAgent::start(FakeConfig::default()).await;
    let provider: Arc<dyn Provider> = Arc::new(ElevenLabs::new(config(&fake), None, ClientTools::new()).unwrap());
    let mut warm = provider.clone().warm_up().expect("readies");
    warm.connect();
    fake.wait_for(WAIT, "the early connection", |r| r.tcp_accepts == 1).await;
    provider.start_warm(CallContext::new("c", "1"), warm).await.expect("starts");
    assert_eq!(counts(&fake), (0, 1, 1));
}

#[tokio::test]
async fn a_readied_connection_that_went_silent_costs_a_fresh_connect_not_the_call() {
    // Connection 1 is the signed URL's; 2, the readied one, is never answered.
    let fake = FakeAgent::start(FakeConfig { silent_connections: vec![2], ..FakeConfig::default() }).await;
    let provider = private(&fake);
    let mut warm = provider.clone().warm_up().expect("readies");
    warm.connect();
    fake.wait_for(WAIT, "the early connection", |r| r.tcp_accepts == 2).await;
    // Within the 3 s connect timeout, or this is a Timeout error.
    let s = provider.start_warm(CallContext::new("c", "1"), warm).await.expect("starts on a fresh connection");
    assert_eq!(counts(&fake), (1, 3, 1));
    drop(s);
}
