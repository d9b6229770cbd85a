//! The ElevenLabs agent WebSocket messages: what we send (initiation data,
//! `user_audio_chunk`, `pong`, `client_tool_result`), what we read (a tolerant
//! parse of the server's frames), the audio codecs of the wire, and what a
//! close code means for the call.
//!
//! Promises: parsing never fails on unknown `type`s or unknown fields (they
//! become [`ServerMsg::Other`]); both shapes of `error` are read; closing codes
//! are classified in one place ([`close_reason`]); no I/O here.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::EndReason;
use super::config::{AudioFormat, DynamicValue};
use crate::audio::g711;

/// The first message of every conversation.
pub fn initiation(dynamic_variables: &BTreeMap<String, DynamicValue>, overrides: Option<Value>) -> String {
    let mut msg = json!({
        "type": "conversation_initiation_client_data",
        "dynamic_variables": dynamic_variables,
    });
    if let Some(o) = overrides {
        msg["conversation_config_override"] = o;
    }
    msg.to_string()
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
    AgentToolResponse {
        tool_name: String,
        is_error: bool,
    },
    Error(ServerError),
    /// Anything else (a known event CAP4 ignores, or an unknown `type`).
    Other {
        kind: String,
    },
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
        "agent_tool_response" => {
            let e = "agent_tool_response";
            ServerMsg::AgentToolResponse {
                tool_name: text_of(&v, e, "tool_name").ok_or_else(|| missing("tool_name"))?,
                is_error: v.get(e).and_then(|c| c.get("is_error")).and_then(Value::as_bool).unwrap_or(false),
            }
        }
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
        let text = initiation(&vars, Some(json!({"agent": {"language": "de"}})));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "conversation_initiation_client_data");
        assert_eq!(v["dynamic_variables"], json!({"call_id": "c1", "tries": 2}));
        assert_eq!(v["conversation_config_override"]["agent"]["language"], "de");
        let bare: Value = serde_json::from_str(&initiation(&vars, None)).unwrap();
        assert!(bare.get("conversation_config_override").is_none());
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
}
