//! The ElevenLabs agent WebSocket messages, as the service's published schema
//! (`agent.asyncapi.yaml`, 2026-08) has them: what we send (initiation data
//! with the client events cap4 needs, `user_audio_chunk`, `pong`,
//! `client_tool_result`, `contextual_update`, `user_message`,
//! `user_activity`), what we read (a tolerant parse of the server's frames),
//! the audio codecs of the wire, and what a close code or an error type means
//! for the call.
//!
//! Promises: parsing never fails on unknown `type`s or unknown fields (they
//! become [`ServerMsg::Other`]); both shapes of `error` are read; closing codes
//! and error types are explained in one place ([`close_reason`],
//! [`error_meaning`]); no I/O here.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::EndReason;
use super::config::{AudioFormat, DynamicValue};
use crate::audio::g711;

/// What the first message of a conversation carries.
#[derive(Debug, Clone, Default)]
pub struct Initiation<'a> {
    pub dynamic_variables: BTreeMap<String, DynamicValue>,
    /// `conversation_config_override` (agent, tts, asr, turn), if any.
    pub overrides: Option<Value>,
    /// `conversation.client_events` (none sent when empty).
    pub client_events: &'a [String],
    /// Who the agent talks to (the caller's number), for the service's history.
    pub user_id: Option<&'a str>,
}

/// The first message of every conversation.
pub fn initiation(init: &Initiation<'_>) -> String {
    let mut msg = json!({
        "type": "conversation_initiation_client_data",
        "dynamic_variables": init.dynamic_variables,
        // `source` is an enum on the service's side; cap4 is none of its SDKs.
        "source_info": {"source": "unknown", "version": concat!("cap4/", env!("CARGO_PKG_VERSION"))},
    });
    let mut overrides = init.overrides.clone();
    if !init.client_events.is_empty() {
        let o = overrides.get_or_insert_with(|| json!({}));
        o["conversation"] = json!({ "client_events": init.client_events });
    }
    if let Some(o) = overrides {
        msg["conversation_config_override"] = o;
    }
    if let Some(user) = init.user_id.filter(|u| !u.is_empty()) {
        msg["user_id"] = json!(user);
    }
    msg.to_string()
}

/// `contextual_update`: a fact the agent should know, not a turn (a key the
/// caller pressed, a state of the call). Only the newest update per
/// `context_id` stays in the agent's context.
pub fn contextual_update(text: &str, context_id: Option<&str>) -> String {
    let mut msg = json!({"type": "contextual_update", "text": text});
    if let Some(id) = context_id {
        msg["context_id"] = json!(id);
    }
    msg.to_string()
}

/// `user_message`: text as if the caller had said it (a turn).
pub fn user_message(text: &str) -> String {
    json!({"type": "user_message", "text": text}).to_string()
}

/// `user_activity`: the caller is still there (keeps a turn from timing out).
pub fn user_activity() -> String {
    json!({"type": "user_activity"}).to_string()
}

/// `{"user_audio_chunk":"<base64>"}` (no `type`) of `pcm` in `format`.
pub fn user_audio_chunk(pcm: &[i16], format: AudioFormat, scratch: &mut Vec<u8>) -> String {
    scratch.clear();
    match format {
        AudioFormat::Pcm(_) => {
            for s in pcm {
                scratch.extend_from_slice(&s.to_le_bytes());
            }
        }
        AudioFormat::Ulaw8000 => {
            scratch.resize(pcm.len(), 0);
            g711::ulaw_encode_slice(pcm, scratch);
        }
    }
    let mut out = String::with_capacity(24 + scratch.len() * 4 / 3);
    out.push_str("{\"user_audio_chunk\":\"");
    B64.encode_string(&scratch[..], &mut out);
    out.push_str("\"}");
    out
}

pub fn pong(event_id: u64) -> String {
    json!({"type": "pong", "event_id": event_id}).to_string()
}

pub fn client_tool_result(tool_call_id: &str, result: &str, is_error: bool) -> String {
    json!({"type": "client_tool_result", "tool_call_id": tool_call_id, "result": result, "is_error": is_error}).to_string()
}

/// Decodes agent audio (base64 of `format`) to PCM16; an odd trailing byte of
/// PCM is dropped. `None` if the base64 is invalid.
pub fn decode_audio(b64: &str, format: AudioFormat) -> Option<Vec<i16>> {
    let bytes = B64.decode(b64.as_bytes()).ok()?;
    Some(match format {
        AudioFormat::Pcm(_) => bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect(),
        AudioFormat::Ulaw8000 => {
            let mut out = vec![0i16; bytes.len()];
            g711::ulaw_decode_slice(&bytes, &mut out);
            out
        }
    })
}

/// An `error` frame, from either shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: Option<u16>,
    pub error_type: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error_type {
            Some(t) => write!(f, "{t}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A server frame, as much as CAP4 needs of it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMsg {
    Metadata {
        conversation_id: String,
        output_format: Option<String>,
        input_format: Option<String>,
    },
    Audio {
        event_id: u64,
        audio_base_64: String,
    },
    AgentResponse {
        text: String,
    },
    AgentResponseCorrection {
        original: String,
        corrected: String,
    },
    UserTranscript {
        text: String,
    },
    Interruption {
        event_id: u64,
    },
    Ping {
        event_id: u64,
        ping_ms: Option<u64>,
    },
    ClientToolCall {
        tool_name: String,
        tool_call_id: String,
        parameters: Value,
    },
    /// The agent is about to run a tool (any kind: client, webhook, system, MCP).
    AgentToolRequest {
        tool_name: String,
        tool_type: Option<String>,
    },
    /// A tool the agent ran, from `agent_tool_response` or its
    /// `_full_payload` twin (for `end_call`: the conversation is over).
    AgentToolResponse {
        tool_name: String,
        tool_type: Option<String>,
        is_error: bool,
    },
    /// A guardrail stopped the agent's reply (the service usually ends the call).
    GuardrailTriggered,
    /// How full the LLM's context is.
    ContextUsage {
        tokens: u64,
        limit: u64,
    },
    /// The conversation waits to be admitted (`waiting`), was (`admitted`),
    /// or waited too long (`timed_out`): while held, what we send is discarded.
    QueueStatus(QueueStatus),
    Error(ServerError),
    /// Anything else (a known event CAP4 ignores, or an unknown `type`).
    Other {
        kind: String,
    },
}

/// Where a conversation stands in the service's admission queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStatus {
    Waiting,
    Admitted,
    TimedOut,
}

/// Why a text frame could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    NotJson(String),
    NoType,
    /// A known `type` without a field CAP4 needs.
    Missing {
        kind: String,
        field: &'static str,
    },
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::NotJson(e) => write!(f, "not JSON: {e}"),
            ParseError::NoType => f.write_str("no \"type\""),
            ParseError::Missing { kind, field } => write!(f, "{kind} without {field}"),
        }
    }
}

fn text_of(v: &Value, event: &str, field: &str) -> Option<String> {
    v.get(event)?.get(field)?.as_str().map(str::to_string)
}

fn u64_of(v: &Value, event: &str, field: &str) -> Option<u64> {
    let x = v.get(event)?.get(field)?;
    x.as_u64().or_else(|| x.as_str()?.parse().ok())
}

pub fn parse(text: &str) -> Result<ServerMsg, ParseError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let kind = v.get("type").and_then(Value::as_str).ok_or(ParseError::NoType)?.to_string();
    let missing = |field: &'static str| ParseError::Missing { kind: kind.clone(), field };
    Ok(match kind.as_str() {
        "conversation_initiation_metadata" => {
            let e = "conversation_initiation_metadata_event";
            ServerMsg::Metadata {
                conversation_id: text_of(&v, e, "conversation_id").ok_or_else(|| missing("conversation_id"))?,
                output_format: text_of(&v, e, "agent_output_audio_format"),
                input_format: text_of(&v, e, "user_input_audio_format"),
            }
        }
        "audio" => {
            // `audio.chunk` is a legacy shape some bridges read; tolerated.
            let b64 = text_of(&v, "audio_event", "audio_base_64")
                .or_else(|| text_of(&v, "audio", "chunk"))
                .ok_or_else(|| missing("audio_base_64"))?;
            let event_id = u64_of(&v, "audio_event", "event_id").ok_or_else(|| missing("event_id"))?;
            ServerMsg::Audio { event_id, audio_base_64: b64 }
        }
        "agent_response" => ServerMsg::AgentResponse {
            text: text_of(&v, "agent_response_event", "agent_response").ok_or_else(|| missing("agent_response"))?,
        },
        "agent_response_correction" => {
            let e = "agent_response_correction_event";
            ServerMsg::AgentResponseCorrection {
                original: text_of(&v, e, "original_agent_response").unwrap_or_default(),
                corrected: text_of(&v, e, "corrected_agent_response").ok_or_else(|| missing("corrected_agent_response"))?,
            }
        }
        "user_transcript" => ServerMsg::UserTranscript {
            text: text_of(&v, "user_transcription_event", "user_transcript").ok_or_else(|| missing("user_transcript"))?,
        },
        "interruption" => {
            ServerMsg::Interruption { event_id: u64_of(&v, "interruption_event", "event_id").ok_or_else(|| missing("event_id"))? }
        }
        "ping" => ServerMsg::Ping {
            event_id: u64_of(&v, "ping_event", "event_id").ok_or_else(|| missing("event_id"))?,
            ping_ms: u64_of(&v, "ping_event", "ping_ms"),
        },
        "client_tool_call" => {
            let e = "client_tool_call";
            ServerMsg::ClientToolCall {
                tool_name: text_of(&v, e, "tool_name").ok_or_else(|| missing("tool_name"))?,
                tool_call_id: text_of(&v, e, "tool_call_id").ok_or_else(|| missing("tool_call_id"))?,
                parameters: v.get(e).and_then(|c| c.get("parameters")).cloned().unwrap_or(Value::Null),
            }
        }
        "agent_tool_request" => ServerMsg::AgentToolRequest {
            tool_name: text_of(&v, "agent_tool_request", "tool_name").ok_or_else(|| missing("tool_name"))?,
            tool_type: text_of(&v, "agent_tool_request", "tool_type"),
        },
        // The full payload adds the tool's whole result, which cap4 does not need.
        "agent_tool_response" | "agent_tool_response_full_payload" => {
            let e = kind.as_str();
            ServerMsg::AgentToolResponse {
                tool_name: text_of(&v, e, "tool_name").ok_or_else(|| missing("tool_name"))?,
                tool_type: text_of(&v, e, "tool_type"),
                is_error: v.get(e).and_then(|c| c.get("is_error")).and_then(Value::as_bool).unwrap_or(false),
            }
        }
        "guardrail_triggered" => ServerMsg::GuardrailTriggered,
        "context_usage" => ServerMsg::ContextUsage {
            tokens: u64_of(&v, "context_usage_event", "context_tokens").ok_or_else(|| missing("context_tokens"))?,
            limit: u64_of(&v, "context_usage_event", "context_limit_tokens").ok_or_else(|| missing("context_limit_tokens"))?,
        },
        // Not in the schema yet (the service's widget reads it, 2026-08).
        "queue_status" => match text_of(&v, "queue_status_event", "status").as_deref() {
            Some("waiting") => ServerMsg::QueueStatus(QueueStatus::Waiting),
            Some("admitted") => ServerMsg::QueueStatus(QueueStatus::Admitted),
            Some("timed_out") => ServerMsg::QueueStatus(QueueStatus::TimedOut),
            _ => ServerMsg::Other { kind },
        },
        "error" => {
            let ev = v.get("error_event");
            let field = |name: &str| -> Option<String> { ev.and_then(|e| e.get(name)).and_then(Value::as_str).map(str::to_string) };
            let message = field("message")
                .or_else(|| v.get("message").and_then(Value::as_str).map(str::to_string))
                .or_else(|| field("reason"))
                .unwrap_or_else(|| "(no message)".to_string());
            let code = ev.and_then(|e| e.get("code")).and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
            ServerMsg::Error(ServerError { code, error_type: field("error_type"), message })
        }
        _ => ServerMsg::Other { kind },
    })
}

/// Name of a close code, for reasons.
pub fn close_code_name(code: u16) -> &'static str {
    match code {
        1000 => "normal",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1006 => "abnormal",
        1007 => "invalid payload",
        1008 => "policy violation",
        1009 => "message too big",
        1011 => "server error",
        1012 => "service restart",
        1013 => "try again later",
        3000..=3999 => "application error",
        _ => "error",
    }
}

/// What an `error` frame means for whoever reads the call record: the
/// service's error types (and its quota message) in plain words, with what to
/// change where cap4 can say.
pub fn error_meaning(error: &ServerError) -> Option<&'static str> {
    let quota = || error.message.to_ascii_lowercase().contains("quota");
    Some(match error.error_type.as_deref() {
        Some("max_duration_exceeded") => "the agent's maximum conversation duration was reached",
        Some("transport_receive_timeout") => "the agent heard nothing from the caller for too long (60 s)",
        Some("missing_dynamic_variable" | "missing_dynamic_variable_transfer") => {
            "the agent's prompt uses a dynamic variable cap4 did not send: add it under [ai.dynamic_variables]"
        }
        Some("override_error") => {
            "the agent does not allow an override cap4 sent: allow it in the agent's security settings, \
             or remove it from [ai.overrides] (client_events: set [ai] client_events = [])"
        }
        Some("llm_timeout") => "the agent's language model did not answer in time",
        Some("llm_error" | "custom_llm_error" | "cascade_brain_error") => "the agent's language model failed",
        Some("safety_violation") => "the service stopped the conversation for a safety violation",
        Some("telephony_agent_error") => "the agent cannot take phone calls (an ASR-only agent)",
        Some("asr_transcription_error" | "vad_error" | "turn_probability_error" | "tts_cascade_error") => {
            "the service's speech recognition or synthesis failed"
        }
        Some("invalid_message" | "value_error" | "missing_fields") => "the service refused a message cap4 sent",
        _ if quota() => "the ElevenLabs account's quota is used up",
        _ => return None,
    })
}

/// What the agent's close means for the call. `error` is the last `error`
/// frame seen before it, if any.
pub fn close_reason(code: u16, reason: &str, error: Option<&ServerError>) -> EndReason {
    let normal_error = error.is_none_or(|e| e.code == Some(1000) || e.error_type.as_deref() == Some("max_duration_exceeded"));
    if code == 1000 && normal_error {
        let detail = match (error, reason.is_empty()) {
            (Some(e), _) => format!("agent closed 1000: {e}"),
            (None, false) => format!("agent closed 1000: {reason}"),
            (None, true) => "agent closed 1000".to_string(),
        };
        return EndReason::Normal { detail };
    }
    let mut text = format!("agent closed {code} ({})", close_code_name(code));
    if !reason.is_empty() {
        text.push_str(": ");
        text.push_str(reason);
    }
    if let Some(e) = error {
        if !reason.contains(&e.message) {
            text.push_str(" after error ");
            text.push_str(&e.to_string());
        }
        if let Some(meaning) = error_meaning(e) {
            text.push_str(" (");
            text.push_str(meaning);
            text.push(')');
        }
    }
    EndReason::Error { code: Some(code), reason: text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initiation_carries_variables_and_overrides() {
        let mut vars = BTreeMap::new();
        vars.insert("call_id".to_string(), DynamicValue::from("c1"));
        vars.insert("tries".to_string(), DynamicValue::Int(2));
        let events = vec!["audio".to_string(), "agent_tool_response".to_string()];
        let init = Initiation {
            dynamic_variables: vars.clone(),
            overrides: Some(json!({"agent": {"language": "de"}})),
            client_events: &events,
            user_id: Some("+4930123"),
        };
        let v: Value = serde_json::from_str(&initiation(&init)).unwrap();
        assert_eq!(v["type"], "conversation_initiation_client_data");
        assert_eq!(v["dynamic_variables"], json!({"call_id": "c1", "tries": 2}));
        assert_eq!(v["conversation_config_override"]["agent"]["language"], "de");
        assert_eq!(v["conversation_config_override"]["conversation"]["client_events"], json!(["audio", "agent_tool_response"]));
        assert_eq!(v["user_id"], "+4930123");
        assert_eq!(v["source_info"]["source"], "unknown");
        assert!(v["source_info"]["version"].as_str().unwrap().starts_with("cap4/"));
        // The events alone make an override; nothing at all makes none.
        let only_events: Value = serde_json::from_str(&initiation(&Initiation { client_events: &events, ..Default::default() })).unwrap();
        assert_eq!(
            only_events["conversation_config_override"],
            json!({"conversation": {"client_events": ["audio", "agent_tool_response"]}})
        );
        let bare: Value = serde_json::from_str(&initiation(&Initiation { dynamic_variables: vars, ..Default::default() })).unwrap();
        assert!(bare.get("conversation_config_override").is_none());
        assert!(bare.get("user_id").is_none());
    }

    #[test]
    fn client_messages_follow_the_schema() {
        let v: Value = serde_json::from_str(&contextual_update("caller pressed 5", Some("dtmf"))).unwrap();
        assert_eq!(v, json!({"type": "contextual_update", "text": "caller pressed 5", "context_id": "dtmf"}));
        let v: Value = serde_json::from_str(&contextual_update("x", None)).unwrap();
        assert!(v.get("context_id").is_none());
        assert_eq!(serde_json::from_str::<Value>(&user_message("hi")).unwrap(), json!({"type": "user_message", "text": "hi"}));
        assert_eq!(serde_json::from_str::<Value>(&user_activity()).unwrap(), json!({"type": "user_activity"}));
    }

    #[test]
    fn audio_chunks_round_trip_in_both_formats() {
        let pcm: Vec<i16> = (0..160).map(|i| (i * 200 - 16000) as i16).collect();
        let mut scratch = Vec::new();
        let msg = user_audio_chunk(&pcm, AudioFormat::Pcm(16000), &mut scratch);
        let v: Value = serde_json::from_str(&msg).unwrap();
        assert!(v.get("type").is_none());
        let b64 = v["user_audio_chunk"].as_str().unwrap();
        assert_eq!(decode_audio(b64, AudioFormat::Pcm(16000)).unwrap(), pcm);
        let msg = user_audio_chunk(&pcm, AudioFormat::Ulaw8000, &mut scratch);
        let v: Value = serde_json::from_str(&msg).unwrap();
        let back = decode_audio(v["user_audio_chunk"].as_str().unwrap(), AudioFormat::Ulaw8000).unwrap();
        assert_eq!(back.len(), 160);
        for (a, b) in pcm.iter().zip(&back) {
            assert!((i32::from(*a) - i32::from(*b)).abs() <= i32::from(a.unsigned_abs() / 16 + 8), "{a} vs {b}");
        }
        assert_eq!(decode_audio("!!", AudioFormat::Pcm(16000)), None);
    }

    #[test]
    fn server_frames_parse_and_unknown_ones_are_other() {
        let p = |s: &str| parse(s).unwrap();
        assert_eq!(
            p(
                r#"{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"conversation_id":"conv_1","agent_output_audio_format":"pcm_16000","user_input_audio_format":"ulaw_8000"}}"#
            ),
            ServerMsg::Metadata {
                conversation_id: "conv_1".into(),
                output_format: Some("pcm_16000".into()),
                input_format: Some("ulaw_8000".into())
            }
        );
        assert_eq!(p(r#"{"type":"ping","ping_event":{"event_id":17,"ping_ms":null}}"#), ServerMsg::Ping { event_id: 17, ping_ms: None });
        assert_eq!(p(r#"{"type":"ping","ping_event":{"event_id":18,"ping_ms":84}}"#), ServerMsg::Ping { event_id: 18, ping_ms: Some(84) });
        assert_eq!(
            p(r#"{"type":"audio","audio_event":{"audio_base_64":"AAA=","event_id":5,"alignment":{}}}"#),
            ServerMsg::Audio { event_id: 5, audio_base_64: "AAA=".into() }
        );
        assert_eq!(p(r#"{"type":"interruption","interruption_event":{"event_id":5}}"#), ServerMsg::Interruption { event_id: 5 });
        assert_eq!(
            p(r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"t","tool_call_id":"x","parameters":{"a":1},"event_id":7}}"#),
            ServerMsg::ClientToolCall { tool_name: "t".into(), tool_call_id: "x".into(), parameters: json!({"a": 1}) }
        );
        assert_eq!(p(r#"{"type":"vad_score","vad_score_event":{"vad_score":0.9}}"#), ServerMsg::Other { kind: "vad_score".into() });
        assert_eq!(
            p(r#"{"type":"agent_chat_response_part","text_response_part":{"text":"Hel","type":"delta","event_id":3}}"#),
            ServerMsg::Other { kind: "agent_chat_response_part".into() }
        );
        assert_eq!(
            p(
                r#"{"type":"agent_tool_request","agent_tool_request":{"tool_name":"end_call","tool_call_id":"t1","tool_type":"system","event_id":4}}"#
            ),
            ServerMsg::AgentToolRequest { tool_name: "end_call".into(), tool_type: Some("system".into()) }
        );
        let response = ServerMsg::AgentToolResponse { tool_name: "end_call".into(), tool_type: Some("system".into()), is_error: false };
        assert_eq!(
            p(
                r#"{"type":"agent_tool_response","agent_tool_response":{"tool_name":"end_call","tool_call_id":"t1","tool_type":"system","is_error":false,"is_called":true,"event_id":4}}"#
            ),
            response
        );
        assert_eq!(
            p(
                r#"{"type":"agent_tool_response_full_payload","agent_tool_response_full_payload":{"tool_name":"end_call","tool_call_id":"t1","tool_type":"system","is_error":false,"is_called":true,"event_id":4,"full_tool_result":"{}","truncated":false}}"#
            ),
            response
        );
        assert_eq!(p(r#"{"type":"guardrail_triggered"}"#), ServerMsg::GuardrailTriggered);
        assert_eq!(
            p(
                r#"{"type":"context_usage","context_usage_event":{"event_id":9,"model":"m","context_tokens":900,"context_limit_tokens":1000}}"#
            ),
            ServerMsg::ContextUsage { tokens: 900, limit: 1000 }
        );
        for (status, expected) in
            [("waiting", QueueStatus::Waiting), ("admitted", QueueStatus::Admitted), ("timed_out", QueueStatus::TimedOut)]
        {
            let frame = format!(r#"{{"type":"queue_status","queue_status_event":{{"status":"{status}"}}}}"#);
            assert_eq!(p(&frame), ServerMsg::QueueStatus(expected));
        }
        assert_eq!(
            p(r#"{"type":"queue_status","queue_status_event":{"status":"later"}}"#),
            ServerMsg::Other { kind: "queue_status".into() }
        );
        assert_eq!(p(r#"{"type":"brand_new_event","x":1}"#), ServerMsg::Other { kind: "brand_new_event".into() });
        assert!(matches!(parse("{not json"), Err(ParseError::NotJson(_))));
        assert_eq!(parse(r#"{"user_audio_chunk":"AA=="}"#), Err(ParseError::NoType));
        assert!(matches!(parse(r#"{"type":"audio","audio_event":{}}"#), Err(ParseError::Missing { .. })));
    }

    #[test]
    fn both_error_shapes_parse() {
        assert_eq!(
            parse(r#"{"type":"error","error_event":{"code":1002,"error_type":"transport_receive_timeout","message":"No user input received","reason":"timeout","debug_message":null,"details":null}}"#).unwrap(),
            ServerMsg::Error(ServerError { code: Some(1002), error_type: Some("transport_receive_timeout".into()), message: "No user input received".into() })
        );
        assert_eq!(
            parse(r#"{"type":"error","message":"received 1002 (protocol error) This request exceeds your quota limit."}"#).unwrap(),
            ServerMsg::Error(ServerError {
                code: None,
                error_type: None,
                message: "received 1002 (protocol error) This request exceeds your quota limit.".into()
            })
        );
    }

    #[test]
    fn close_codes_are_classified() {
        assert!(close_reason(1000, "", None).is_normal());
        let max = ServerError { code: Some(1000), error_type: Some("max_duration_exceeded".into()), message: "m".into() };
        assert!(close_reason(1000, "", Some(&max)).is_normal());
        let quota = ServerError { code: None, error_type: None, message: "exceeds your quota limit".into() };
        let r = close_reason(1000, "", Some(&quota));
        assert!(!r.is_normal());
        for code in [1002u16, 1008, 1011, 3000, 4001] {
            let r = close_reason(code, "bad", None);
            assert!(!r.is_normal(), "{code}");
            assert!(r.to_string().contains(&code.to_string()), "{r}");
        }
        let r = close_reason(1002, "", Some(&quota));
        assert!(r.to_string().contains("quota"), "{r}");
    }

    #[test]
    fn error_types_are_explained_in_the_reason() {
        let error = |t: &str| ServerError { code: Some(1008), error_type: Some(t.into()), message: "m".into() };
        let reason = |t: &str| close_reason(1008, "", Some(&error(t))).to_string();
        assert!(reason("missing_dynamic_variable").contains("[ai.dynamic_variables]"), "{}", reason("missing_dynamic_variable"));
        assert!(reason("override_error").contains("security settings"));
        assert!(reason("transport_receive_timeout").contains("heard nothing from the caller"));
        assert!(reason("llm_timeout").contains("did not answer in time"));
        let quota = ServerError { code: None, error_type: None, message: "This request exceeds your quota limit.".into() };
        assert!(close_reason(1002, "", Some(&quota)).to_string().contains("quota is used up"));
        assert_eq!(error_meaning(&error("something_new")), None);
        assert!(close_reason(1000, "", Some(&error("max_duration_exceeded"))).is_normal());
    }
}
