//! The task that empties the outbox: the oldest delivery first, POSTed with
//! its signature and key; a 2xx removes it; a 4xx other than 408 and 429
//! (the receiver will never take this body) sets it aside as `*.bad`, so it
//! does not hold up the rest; anything else (5xx, no route, a timeout)
//! waits 1 s, 2 s, 4 s ... up to 5 min and tries again.
//!
//! Promise: one delivery at a time, in order; the controller's `put` wakes
//! the task, so nothing waits for a timer when the receiver is up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::WebhookConfig;
use super::outbox::{Delivery, Outbox};
use crate::http_client::{self, Outgoing};
use crate::worker::off_the_worker;

/// The first pause after a failed delivery, and the longest.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const LAST_RETRY: Duration = Duration::from_secs(300);
/// How long one delivery may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// What the controller holds: the outbox and the bell that wakes the task.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub outbox: Arc<Mutex<Outbox>>,
    pub bell: Arc<Notify>,
}

impl Webhook {
    /// Keeps `body` for delivery (synced) and wakes the task.
    pub fn put(&self, kind: super::Kind, body: &[u8], now_unix_ms: i64) -> Result<(), super::outbox::OutboxError> {
        let mut outbox = self.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        outbox.put(kind, body, now_unix_ms)?;
        drop(outbox);
        self.bell.notify_one();
        Ok(())
    }
}

/// Runs until the daemon stops.
pub async fn run(webhook: Webhook, config: WebhookConfig) {
    let tls = crate::ai::elevenlabs::tls_config();
    let mut pause = FIRST_RETRY;
    let mut failures: u32 = 0;
    loop {
        // The lock may wait for the controller's fsync, and the files are
        // read here: off this worker, as the journal's writes.
        let next = off_the_worker(|| {
            let mut outbox = webhook.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            outbox.expire(crate::clock::unix_now_ms(), config.max_age_ms);
            outbox.oldest()
        });
        let Some(delivery) = next else {
            webhook.bell.notified().await;
            continue;
        };
        let outbox = || webhook.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match send(&delivery, &config, tls.clone()).await {
            Ok(status) => {
                info!(key = %delivery.key, status, after_failures = failures, "webhook delivered");
                off_the_worker(|| outbox().remove(&delivery.pending));
                pause = FIRST_RETRY;
                failures = 0;
            }
            Err(Refusal::ForGood(status)) => {
                error!(key = %delivery.key, status, file = %delivery.pending.file, "webhook receiver refuses this delivery for good; set aside as .bad");
                off_the_worker(|| outbox().set_aside(&delivery.pending));
                pause = FIRST_RETRY;
                failures = 0;
            }
            Err(Refusal::ForNow(why)) => {
                failures += 1;
                warn!(key = %delivery.key, %why, retry_in_s = pause.as_secs(), failures, "webhook not delivered");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LAST_RETRY);
            }
        }
    }
}

/// Why a delivery was not taken.
enum Refusal {
    /// A 4xx other than 408 and 429: sending the same body again will not help.
    ForGood(u16),
    /// Anything else, in words: try again later.
    ForNow(String),
}

/// One POST; the 2xx status, or why not.
async fn send(delivery: &Delivery, config: &WebhookConfig, tls: Arc<rustls::ClientConfig>) -> Result<u16, Refusal> {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static(concat!("cap4/", env!("CARGO_PKG_VERSION"))));
    let signature = HeaderValue::from_str(&super::signature(&config.secret, &delivery.body)).map_err(|e| Refusal::ForNow(e.to_string()))?;
    headers.insert("x-cap4-signature", signature);
    let key = HeaderValue::from_str(&delivery.key).map_err(|_| Refusal::ForGood(0))?;
    headers.insert("idempotency-key", key);
    let request = Outgoing {
        method: Method::POST,
        uri: &config.url,
        headers,
        body: delivery.body.clone().into(),
        tls: Some(tls),
        max_body: 64 * 1024,
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, http_client::send(request)).await {
        Err(_) => Err(Refusal::ForNow(format!("no response within {} s", ATTEMPT_TIMEOUT.as_secs()))),
        Ok(Err(err)) => Err(Refusal::ForNow(err.to_string())),
        Ok(Ok((status, _))) if (200..300).contains(&status) => Ok(status),
        Ok(Ok((status, _))) if (400..500).contains(&status) && status != 408 && status != 429 => Err(Refusal::ForGood(status)),
        Ok(Ok((status, _))) => Err(Refusal::ForNow(format!("the receiver answered {status}"))),
    }
}
