//! `[ai]`: which agent provider answers a `human` call, and how to reach it.
//!
//! Owns [`AiConfig`] (serde, unknown keys refused, every key defaulted), the
//! audio formats of the agent protocol ([`AudioFormat`]), the conversation
//! overrides and static dynamic variables sent at the start of each
//! conversation, and where the ElevenLabs API key comes from ([`api_key`]).
//!
//! Promises: [`AiConfig::validate`] refuses anything that would only fail at
//! call time (a missing agent id, a base URL that is not http(s), a chunk
//! length outside 10..=250 ms, a reserved `system__` variable); the API key
//! comes only from the environment or a systemd credential, never from this
//! section, and its `Debug` is redacted (it has no `Display`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::environment::{Environment, Secret};
use crate::section::SectionError;

/// Environment variable holding the ElevenLabs API key.
pub const API_KEY_ENV: &str = "ELEVENLABS_API_KEY";
/// systemd credential holding the ElevenLabs API key (`LoadCredential=elevenlabs-api-key:...`).
pub const API_KEY_CREDENTIAL: &str = "elevenlabs-api-key";

/// The production ElevenLabs API host.
pub const DEFAULT_BASE_URL: &str = "https://api.elevenlabs.io";

/// Which provider answers the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Local, no network: a greeting tone, then the caller's words played back.
    #[default]
    Echo,
    /// An ElevenLabs Conversational AI agent over its WebSocket.
    Elevenlabs,
}

/// An audio format of the agent protocol (`pcm_16000`, `ulaw_8000`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// Signed 16-bit little-endian mono PCM at this rate.
    Pcm(u32),
    /// G.711 µ-law, 8 kHz.
    Ulaw8000,
}

/// PCM rates the protocol defines.
pub const PCM_RATES: [u32; 6] = [8000, 16000, 22050, 24000, 44100, 48000];

impl AudioFormat {
    pub fn parse(text: &str) -> Option<AudioFormat> {
        if text == "ulaw_8000" {
            return Some(AudioFormat::Ulaw8000);
        }
        let rate: u32 = text.strip_prefix("pcm_")?.parse().ok()?;
        PCM_RATES.contains(&rate).then_some(AudioFormat::Pcm(rate))
    }

    /// Samples per second (of the decoded PCM16).
    pub fn rate(self) -> u32 {
        match self {
            AudioFormat::Pcm(rate) => rate,
            AudioFormat::Ulaw8000 => 8000,
        }
    }

    /// Bytes per sample on the wire.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            AudioFormat::Pcm(_) => 2,
            AudioFormat::Ulaw8000 => 1,
        }
    }
}

impl fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioFormat::Pcm(rate) => write!(f, "pcm_{rate}"),
            AudioFormat::Ulaw8000 => f.write_str("ulaw_8000"),
        }
    }
}

impl Serialize for AudioFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AudioFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        AudioFormat::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown audio format {text:?} (pcm_8000, pcm_16000, pcm_22050, pcm_24000, pcm_44100, pcm_48000 or ulaw_8000)"
            ))
        })
    }
}

/// A dynamic variable's value: the protocol allows scalars only.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum DynamicValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl From<&str> for DynamicValue {
    fn from(s: &str) -> Self {
        DynamicValue::String(s.to_string())
    }
}

impl From<String> for DynamicValue {
    fn from(s: String) -> Self {
        DynamicValue::String(s)
    }
}

/// `[ai.overrides]`: the conversation overrides the SDKs use (each must be
/// allowed in the agent's security settings, or the agent closes with 1008).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overrides {
    pub first_message: Option<String>,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub llm: Option<String>,
    pub voice_id: Option<String>,
    pub speed: Option<f64>,
    pub stability: Option<f64>,
    pub similarity_boost: Option<f64>,
    pub keywords: Option<Vec<String>>,
    /// `turn.soft_timeout_config.message`: what the agent says when its LLM
    /// is slow to answer ("One moment..."), instead of dead air.
    pub soft_timeout_message: Option<String>,
}

impl Overrides {
    /// Field by field, `self` where set, else `base`.
    pub fn or(&self, base: &Overrides) -> Overrides {
        Overrides {
            first_message: self.first_message.clone().or_else(|| base.first_message.clone()),
            language: self.language.clone().or_else(|| base.language.clone()),
            prompt: self.prompt.clone().or_else(|| base.prompt.clone()),
            llm: self.llm.clone().or_else(|| base.llm.clone()),
            voice_id: self.voice_id.clone().or_else(|| base.voice_id.clone()),
            speed: self.speed.or(base.speed),
            stability: self.stability.or(base.stability),
            similarity_boost: self.similarity_boost.or(base.similarity_boost),
            keywords: self.keywords.clone().or_else(|| base.keywords.clone()),
            soft_timeout_message: self.soft_timeout_message.clone().or_else(|| base.soft_timeout_message.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }

    /// The protocol's nested `conversation_config_override` object, or `None`
    /// when nothing is overridden (then the field is not sent at all).
    pub fn to_protocol(&self) -> Option<serde_json::Value> {
        use serde_json::{Map, Value};
        fn put<T: Serialize>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
            if let Some(v) = value {
                map.insert(key.to_string(), serde_json::to_value(v).unwrap_or(Value::Null));
            }
        }
        let mut prompt = Map::new();
        put(&mut prompt, "prompt", &self.prompt);
        put(&mut prompt, "llm", &self.llm);
        let mut agent = Map::new();
        if !prompt.is_empty() {
            agent.insert("prompt".into(), Value::Object(prompt));
        }
        put(&mut agent, "first_message", &self.first_message);
        put(&mut agent, "language", &self.language);
        let mut tts = Map::new();
        put(&mut tts, "voice_id", &self.voice_id);
        put(&mut tts, "speed", &self.speed);
        put(&mut tts, "stability", &self.stability);
        put(&mut tts, "similarity_boost", &self.similarity_boost);
        let mut asr = Map::new();
        put(&mut asr, "keywords", &self.keywords);
        let mut turn = Map::new();
        if let Some(message) = &self.soft_timeout_message {
            turn.insert("soft_timeout_config".into(), serde_json::json!({ "message": message }));
        }
        let mut out = Map::new();
        for (key, section) in [("agent", agent), ("tts", tts), ("asr", asr), ("turn", turn)] {
            if !section.is_empty() {
                out.insert(key.into(), Value::Object(section));
            }
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }
}

/// `[ai.echo]`: the local echo provider.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EchoConfig {
    /// PCM rate of both directions.
    pub rate: u32,
    /// Length of the greeting tone (440 Hz).
    pub greeting_ms: u32,
    /// A 20 ms frame louder than this (RMS, dBFS) is speech.
    pub threshold_dbfs: f64,
    /// Silence that ends an utterance.
    pub silence_ms: u32,
    /// Shorter utterances are ignored (clicks, coughs).
    pub min_speech_ms: u32,
    /// Longer utterances are cut and played back.
    pub max_utterance_ms: u32,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig { rate: 16000, greeting_ms: 400, threshold_dbfs: -40.0, silence_ms: 700, min_speech_ms: 200, max_utterance_ms: 10_000 }
    }
}

/// `[ai]`: the agent provider.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiConfig {
    /// Hand a person's call to the agent (false: a person's call just stays up).
    pub enabled: bool,
    pub provider: ProviderKind,
    /// The ElevenLabs agent (`agent_...`).
    pub agent_id: Option<String>,
    /// API host; `https://` (production, a proxy) or `http://` (tests). The
    /// WebSocket uses the same host with `wss://` / `ws://`.
    pub base_url: String,
    /// Private agent: fetch a signed URL with the API key before each call
    /// (recommended: a public agent's id lets anyone spend your credits).
    pub signed_url: bool,
    /// Caller audio per `user_audio_chunk` message.
    pub chunk_ms: u32,
    /// What we send; must equal the agent's `user_input_audio_format`.
    pub input_format: AudioFormat,
    /// What we expect; must equal the agent's `agent_output_audio_format`.
    pub output_format: AudioFormat,
    /// From "start" to the conversation's metadata (signed URL, TLS, upgrade, metadata).
    pub connect_timeout_ms: u64,
    /// No frame at all from the agent for this long: the connection is lost.
    pub idle_timeout_ms: u64,
    /// After an `error` message, how long to wait for the agent's close.
    pub error_grace_ms: u64,
    /// Extra dynamic variables for every conversation (`call_id` and
    /// `phone_number` are always sent).
    pub dynamic_variables: BTreeMap<String, DynamicValue>,
    pub overrides: Overrides,
    /// The server events the conversation asks for
    /// (`conversation_config_override.conversation.client_events`). The
    /// service sends only a few by default; without `agent_tool_response` an
    /// agent's `end_call` is never seen. `[]`: ask for nothing (then enable
    /// them in the agent's own settings).
    pub client_events: Vec<String>,
    /// After the agent's `end_call` tool ran, end the conversation once its
    /// audio has been quiet this long, even if the service keeps the socket open.
    pub end_call_grace_ms: u64,
    pub echo: EchoConfig,
}

/// The server events the service defines (its `ClientEvent` enum).
pub const KNOWN_CLIENT_EVENTS: [&str; 26] = [
    "audio",
    "agent_response",
    "agent_response_correction",
    "agent_chat_response_part",
    "agent_reasoning_response_part",
    "interruption",
    "user_transcript",
    "tentative_user_transcript",
    "conversation_initiation_metadata",
    "client_tool_call",
    "rich_content",
    "agent_tool_request",
    "agent_tool_response",
    "agent_tool_response_full_payload",
    "mcp_tool_call",
    "mcp_connection_status",
    "vad_score",
    "ping",
    "context_usage",
    "asr_initiation_metadata",
    "guardrail_triggered",
    "internal_turn_probability",
    "internal_tentative_agent_response",
    "agent_typing",
    "external_agent_connected",
    "external_agent_disconnected",
];

/// Events a call cannot run without.
const REQUIRED_CLIENT_EVENTS: [&str; 3] = ["conversation_initiation_metadata", "audio", "ping"];

/// What cap4 acts on: the service's default set (less the tentative
/// transcript it ignores), plus corrections, client tools, the agent's tool
/// results (`end_call`) and guardrails.
pub fn default_client_events() -> Vec<String> {
    [
        "conversation_initiation_metadata",
        "audio",
        "interruption",
        "agent_response",
        "agent_response_correction",
        "user_transcript",
        "ping",
        "client_tool_call",
        "agent_tool_response",
        "guardrail_triggered",
    ]
    .map(String::from)
    .to_vec()
}

impl Default for AiConfig {
    fn default() -> Self {
        AiConfig {
            enabled: true,
            provider: ProviderKind::Echo,
            agent_id: None,
            base_url: DEFAULT_BASE_URL.to_string(),
            signed_url: true,
            chunk_ms: 20,
            input_format: AudioFormat::Pcm(16000),
            output_format: AudioFormat::Pcm(16000),
            connect_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            error_grace_ms: 1_000,
            dynamic_variables: BTreeMap::new(),
            overrides: Overrides::default(),
            client_events: default_client_events(),
            end_call_grace_ms: 1_500,
            echo: EchoConfig::default(),
        }
    }
}

fn err(key: &'static str, message: impl Into<String>) -> SectionError {
    SectionError::new("ai", key, message)
}

impl AiConfig {
    pub fn validate(&self) -> Result<(), SectionError> {
        if self.provider == ProviderKind::Elevenlabs {
            let Some(id) = &self.agent_id else {
                return Err(err("agent_id", "required for provider \"elevenlabs\""));
            };
            if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(err("agent_id", "letters, digits, '_' and '-' only (1 to 128)"));
            }
        }
        let url: http::Uri = self.base_url.parse().map_err(|e| err("base_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(err("base_url", "must be http://HOST[:PORT][/PATH] or https://..."));
        }
        if url.query().is_some() {
            return Err(err("base_url", "must not carry a query"));
        }
        if url.scheme_str() == Some("http") && !is_loopback_url(&self.base_url) {
            // The API key (and the conversation) would cross the network in clear.
            return Err(err("base_url", "http:// is for an agent or proxy on this machine (127.0.0.1, ::1, localhost); use https://"));
        }
        if !(10..=250).contains(&self.chunk_ms) {
            return Err(err("chunk_ms", "must be 10 to 250"));
        }
        if !(100..=120_000).contains(&self.connect_timeout_ms) {
            return Err(err("connect_timeout_ms", "must be 100 to 120000"));
        }
        if !(1_000..=600_000).contains(&self.idle_timeout_ms) {
            return Err(err("idle_timeout_ms", "must be 1000 to 600000"));
        }
        if self.error_grace_ms > 10_000 {
            return Err(err("error_grace_ms", "must be at most 10000"));
        }
        for name in self.dynamic_variables.keys() {
            if name.starts_with("system__") {
                return Err(err("dynamic_variables", format!("{name}: names starting system__ are reserved")));
            }
            if name == "call_id" || name == "phone_number" {
                return Err(err("dynamic_variables", format!("{name} is always sent by cap4")));
            }
        }
        if let Some(unknown) = self.client_events.iter().find(|e| !KNOWN_CLIENT_EVENTS.contains(&e.as_str())) {
            return Err(err("client_events", format!("{unknown:?} is not an event the service defines")));
        }
        if !self.client_events.is_empty() {
            if let Some(missing) = REQUIRED_CLIENT_EVENTS.iter().find(|r| !self.client_events.iter().any(|e| e == *r)) {
                return Err(err("client_events", format!("must include {missing:?} (or be [] to leave them to the agent)")));
            }
        }
        if !(100..=10_000).contains(&self.end_call_grace_ms) {
            return Err(err("end_call_grace_ms", "must be 100 to 10000"));
        }
        let echo = &self.echo;
        if !crate::audio::resample::RATES.contains(&echo.rate) || !PCM_RATES.contains(&echo.rate) {
            return Err(err("echo.rate", format!("must be one of {PCM_RATES:?}")));
        }
        if echo.greeting_ms > 10_000 || echo.silence_ms < 100 || echo.max_utterance_ms > 60_000 || echo.max_utterance_ms < 500 {
            return Err(err("echo", "greeting_ms <= 10000, silence_ms >= 100, max_utterance_ms 500 to 60000"));
        }
        if !(-90.0..=0.0).contains(&echo.threshold_dbfs) {
            return Err(err("echo.threshold_dbfs", "must be -90 to 0"));
        }
        Ok(())
    }

    /// Samples of caller audio per message at the input rate.
    pub fn chunk_samples(&self) -> usize {
        (self.input_format.rate() as usize * self.chunk_ms as usize) / 1000
    }
}

/// Whether `url`'s host is this machine (a test agent, a local proxy): the
/// only place a plaintext `http://` or `ws://` URL may point.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else { return false };
    let Some(host) = uri.host() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The ElevenLabs API key: `$ELEVENLABS_API_KEY`, else the
/// `elevenlabs-api-key` systemd credential.
pub fn api_key(env: &dyn Environment) -> Option<Secret> {
    Secret::from_environment(env, API_KEY_ENV, API_KEY_CREDENTIAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_parse_from_an_empty_section() {
        let cfg: AiConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, AiConfig::default());
        cfg.validate().unwrap();
        assert_eq!(cfg.chunk_samples(), 320);
    }

    #[test]
    fn a_full_section_parses() {
        let cfg: AiConfig = toml::from_str(
            r#"
            provider = "elevenlabs"
            agent_id = "agent_01abc"
            base_url = "http://127.0.0.1:9"
            signed_url = false
            chunk_ms = 50
            input_format = "ulaw_8000"
            output_format = "pcm_22050"
            [dynamic_variables]
            site = "berlin"
            tries = 2
            [overrides]
            first_message = "Hallo"
            language = "de"
            speed = 1.1
            [echo]
            silence_ms = 500
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.input_format, AudioFormat::Ulaw8000);
        assert_eq!(cfg.output_format, AudioFormat::Pcm(22050));
        assert_eq!(cfg.chunk_samples(), 400);
        assert_eq!(cfg.dynamic_variables["tries"], DynamicValue::Int(2));
        assert_eq!(cfg.echo.silence_ms, 500);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<AiConfig>("api_key = \"x\"").is_err());
        assert!(toml::from_str::<AiConfig>("[overrides]\nvoice = \"x\"").is_err());
        assert!(toml::from_str::<AiConfig>("input_format = \"pcm_11025\"").is_err());
        let bad = |f: &dyn Fn(&mut AiConfig)| {
            let mut c = AiConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(&|c| c.provider = ProviderKind::Elevenlabs).key, "agent_id");
        assert_eq!(
            bad(&|c| {
                c.provider = ProviderKind::Elevenlabs;
                c.agent_id = Some("a b".into())
            })
            .key,
            "agent_id"
        );
        assert_eq!(bad(&|c| c.base_url = "http://agent.example".into()).key, "base_url", "the key in clear over the network");
        assert_eq!(bad(&|c| c.base_url = "http://192.168.1.9:8080".into()).key, "base_url");
        for local in ["http://127.0.0.1:9", "http://localhost:8080/proxy", "http://[::1]:80", "https://agent.example"] {
            let mut c = AiConfig { provider: ProviderKind::Elevenlabs, agent_id: Some("a".into()), ..AiConfig::default() };
            c.base_url = local.into();
            assert!(c.validate().is_ok(), "{local}");
        }
        assert_eq!(bad(&|c| c.base_url = "ftp://x".into()).key, "base_url");
        assert_eq!(bad(&|c| c.chunk_ms = 5).key, "chunk_ms");
        assert_eq!(bad(&|c| c.client_events.push("agent_dance".into())).key, "client_events");
        assert_eq!(bad(&|c| c.client_events.retain(|e| e != "audio")).key, "client_events");
        let mut none = AiConfig { client_events: Vec::new(), ..AiConfig::default() };
        none.validate().expect("[] leaves the events to the agent");
        none.end_call_grace_ms = 0;
        assert_eq!(none.validate().unwrap_err().key, "end_call_grace_ms");
        assert_eq!(
            bad(&|c| {
                c.dynamic_variables.insert("system__x".into(), "v".into());
            })
            .key,
            "dynamic_variables"
        );
    }

    #[test]
    fn overrides_nest_like_the_protocol_and_merge_field_by_field() {
        assert_eq!(Overrides::default().to_protocol(), None);
        let base = Overrides { language: Some("de".into()), prompt: Some("p".into()), speed: Some(1.0), ..Default::default() };
        let call = Overrides {
            first_message: Some("Hi".into()),
            language: Some("en".into()),
            soft_timeout_message: Some("One moment.".into()),
            ..Default::default()
        };
        let merged = call.or(&base);
        let json = merged.to_protocol().unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "agent": {"prompt": {"prompt": "p"}, "first_message": "Hi", "language": "en"},
                "tts": {"speed": 1.0},
                "turn": {"soft_timeout_config": {"message": "One moment."}}
            })
        );
    }

    #[test]
    fn formats_round_trip() {
        for text in ["pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000"] {
            assert_eq!(AudioFormat::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(AudioFormat::parse("mp3_44100"), None);
        assert_eq!(AudioFormat::Ulaw8000.rate(), 8000);
    }

    struct Env(Option<&'static str>, Option<&'static str>);
    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            (name == API_KEY_ENV).then_some(self.0?.to_string())
        }
        fn credential(&self, name: &str) -> Option<String> {
            (name == API_KEY_CREDENTIAL).then_some(self.1?.to_string())
        }
    }

    #[test]
    fn the_key_comes_from_the_environment_then_the_credential_and_is_never_printed() {
        assert_eq!(api_key(&Env(Some("sk_env"), Some("sk_cred"))).unwrap().expose(), "sk_env");
        assert_eq!(api_key(&Env(None, Some("sk_cred\n"))).unwrap().expose(), "sk_cred");
        assert!(api_key(&Env(None, None)).is_none());
    }
}
