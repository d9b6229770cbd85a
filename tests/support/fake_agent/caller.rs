//! The client side of the AI tests: an `[ai]` config pointing at the fake,
//! caller audio, and a driver that plays a caller in real time while it
//! collects the session's events.

use std::time::{Duration, Instant};

use cap4::ai::{AiConfig, AiEvent, AiSession, ProviderKind};

use super::FakeAgent;

/// A public-agent config for `fake` (signed URLs off, short error grace).
pub fn config(fake: &FakeAgent) -> AiConfig {
    AiConfig {
        provider: ProviderKind::Elevenlabs,
        agent_id: Some("agent_test".into()),
        base_url: fake.base_url(),
        signed_url: false,
        connect_timeout_ms: 3_000,
        error_grace_ms: 300,
        ..AiConfig::default()
    }
}

/// A loud 300 Hz tone (the fake hears it as speech).
pub fn speech(rate: u32, ms: u32) -> Vec<i16> {
    let n = (rate * ms / 1000) as usize;
    (0..n).map(|i| (6000.0 * (2.0 * std::f64::consts::PI * 300.0 * i as f64 / f64::from(rate)).sin()) as i16).collect()
}

pub fn silence(rate: u32, ms: u32) -> Vec<i16> {
    vec![0; (rate * ms / 1000) as usize]
}

/// An event and when it arrived.
pub type Timed = (Instant, AiEvent);

/// Plays `audio` in real time (20 ms frames, then silence), collecting
/// events, until `Ended` or `within` has passed.
pub async fn drive(s: &mut AiSession, audio: &[i16], within: Duration) -> Vec<Timed> {
    let rate = s.info().input_format.rate();
    let frame = (rate / 50) as usize;
    let silence = vec![0i16; frame];
    let mut events = Vec::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut pos = 0;
    loop {
        tick.tick().await;
        let piece = if pos < audio.len() { &audio[pos..(pos + frame).min(audio.len())] } else { &silence[..] };
        pos += frame;
        let _ = s.send_audio(piece);
        while let Some(e) = s.try_next_event() {
            let ended = matches!(e, AiEvent::Ended(_));
            events.push((Instant::now(), e));
            if ended {
                return events;
            }
        }
        if start.elapsed() > within {
            return events;
        }
    }
}

/// Waits (without sending audio) for events until `Ended` or `within`.
pub async fn listen(s: &mut AiSession, within: Duration) -> Vec<Timed> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, s.next_event()).await {
        let ended = matches!(e, AiEvent::Ended(_));
        events.push((Instant::now(), e));
        if ended {
            break;
        }
    }
    events
}

pub fn ended(events: &[Timed]) -> Option<&cap4::ai::EndReason> {
    events.iter().find_map(|(_, e)| match e {
        AiEvent::Ended(r) => Some(r),
        _ => None,
    })
}

/// (event_id, sample count) of each audio event.
pub fn audio(events: &[Timed]) -> Vec<(u64, usize)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            AiEvent::Audio { event_id, samples } => Some((*event_id, samples.len())),
            _ => None,
        })
        .collect()
}
