//! The post-call webhook: every ended call and every ended plan run is
//! POSTed, as its final record plus `"type"`, to `[webhook] url`, signed
//! with HMAC-SHA256 (`X-CAP4-Signature: sha256=<hex>`) and carrying the
//! record's id as `Idempotency-Key`. `outbox.rs` keeps what is not
//! delivered yet on disk; `deliver.rs` is the task that sends it.
//!
//! Promises: a delivery is on disk (synced) before the controller goes on,
//! so it survives a restart or a power cut; it is delivered at least once
//! (a receiver must use the key to drop repeats), retried with exponential
//! backoff for up to `max_age_h`; the secret never reaches a log line.

pub mod deliver;
pub mod outbox;

use serde::Deserialize;

use crate::environment::{Environment, Secret};
use crate::section::SectionError;

/// Environment variable with the signing secret (also a systemd credential).
pub const SECRET_ENV: &str = "CAP4_WEBHOOK_SECRET";
pub const SECRET_CREDENTIAL: &str = "cap4-webhook-secret";
/// The shortest secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;

/// `[webhook]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    url: Option<String>,
    max_pending: Option<usize>,
    max_age_h: Option<u64>,
}

/// `[webhook]`, validated, with its secret.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: http::Uri,
    pub secret: Secret,
    /// Deliveries kept at most; past it the oldest is dropped (and counted).
    pub max_pending: usize,
    /// How long a delivery is retried.
    pub max_age_ms: i64,
}

impl RawWebhook {
    /// `None` without a `url`: no webhook.
    pub fn validate(&self, env: &dyn Environment) -> Result<Option<WebhookConfig>, SectionError> {
        let Some(text) = &self.url else { return Ok(None) };
        let url: http::Uri = text.parse().map_err(|_| SectionError::new("webhook", "url", format!("`{text}` is not a URL")))?;
        let host = url.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme_str() {
            Some("https") if !host.is_empty() => {}
            Some("http") if loopback => {}
            Some("http") => {
                return Err(SectionError::new(
                    "webhook",
                    "url",
                    format!("`{text}`: http only on loopback (the records are personal data); use https"),
                ));
            }
            _ => return Err(SectionError::new("webhook", "url", format!("`{text}` must be an https:// URL (or http:// on loopback)"))),
        }
        let secret = Secret::from_environment(env, SECRET_ENV, SECRET_CREDENTIAL).ok_or_else(|| {
            SectionError::new(
                "webhook",
                "url",
                format!("a webhook needs its signing secret: set {SECRET_ENV} or the {SECRET_CREDENTIAL} systemd credential"),
            )
        })?;
        if secret.expose().chars().count() < MIN_SECRET_CHARS {
            return Err(SectionError::new(
                "webhook",
                "url",
                format!("the webhook secret must be at least {MIN_SECRET_CHARS} characters: make one with `openssl rand -hex 32`"),
            ));
        }
        let max_pending = self.max_pending.unwrap_or(1_000);
        if !(1..=100_000).contains(&max_pending) {
            return Err(SectionError::new("webhook", "max_pending", format!("{max_pending} is outside 1..=100000")));
        }
        let max_age_h = self.max_age_h.unwrap_or(24);
        if !(1..=168).contains(&max_age_h) {
            return Err(SectionError::new("webhook", "max_age_h", format!("{max_age_h} is outside 1..=168")));
        }
        Ok(Some(WebhookConfig { url, secret, max_pending, max_age_ms: i64::try_from(max_age_h).unwrap_or(168) * 3_600_000 }))
    }
}

/// What a delivery is about: its `"type"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Call,
    PlanRun,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::PlanRun => "plan_run",
        }
    }
}

/// The body for `record` (a JSON object): its fields plus `"type"`.
pub fn body(kind: Kind, record: &impl serde::Serialize) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(record)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("type".into(), serde_json::Value::String(kind.as_str().into()));
    }
    serde_json::to_vec(&value)
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, the `X-CAP4-Signature` value.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in tag.as_ref() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env(Option<&'static str>);
    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            (name == SECRET_ENV).then_some(self.0?.to_string())
        }
        fn credential(&self, _name: &str) -> Option<String> {
            None
        }
    }

    fn raw(url: &str) -> RawWebhook {
        RawWebhook { url: Some(url.into()), ..RawWebhook::default() }
    }

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe".
        let secret = Secret::from_environment(&Env(Some("Jefe")), SECRET_ENV, SECRET_CREDENTIAL).expect("secret");
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn https_or_loopback_http_and_a_long_enough_secret() {
        let env = Env(Some("0123456789abcdef"));
        assert!(raw("https://hooks.example.com/cap4").validate(&env).expect("valid").is_some());
        assert!(raw("http://127.0.0.1:9000/hook").validate(&env).expect("valid").is_some());
        assert!(raw("http://[::1]:9000/hook").validate(&env).expect("valid").is_some());
        assert_eq!(raw("http://hooks.example.com/").validate(&env).expect_err("refused").key, "url");
        assert_eq!(raw("ftp://x/").validate(&env).expect_err("refused").key, "url");
        assert!(raw("https://x/").validate(&Env(None)).expect_err("refused").message.contains(SECRET_ENV));
        assert!(raw("https://x/").validate(&Env(Some("short"))).is_err());
        assert!(RawWebhook::default().validate(&Env(None)).expect("no webhook").is_none());
    }

    #[test]
    fn the_body_is_the_record_with_its_type() {
        let body = body(Kind::PlanRun, &serde_json::json!({"id": "r1", "state": "done"})).expect("body");
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value, serde_json::json!({"id": "r1", "state": "done", "type": "plan_run"}));
    }
}
