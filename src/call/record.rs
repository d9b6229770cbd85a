//! The call record: what the API shows and the journal keeps.
//!
//! Field names follow the API of the system CAP4 replaces (`id`, `phone_number`,
//! `status`, `direction`, `started_at`) and add to it. Every field added later must
//! be `#[serde(default)]` so that older journals still load.

use serde::{Deserialize, Serialize};

/// Where a call is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// INVITE sent, no provisional response yet.
    Dialing,
    /// An 18x without SDP: the phone rings.
    Ringing,
    /// An 18x with SDP: the network plays audio (announcements). Never answered.
    EarlyMedia,
    /// 200 OK (`CALL_ESTABLISHED`), the only "answered".
    Answered,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dialing => "dialing",
            Self::Ringing => "ringing",
            Self::EarlyMedia => "early_media",
            Self::Answered => "answered",
            Self::Ended => "ended",
        }
    }
}

/// Who placed the call: the box (`outbound`, the old API's word) or a caller
/// who reached it (`inbound`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    #[default]
    Outbound,
    Inbound,
}

impl CallDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 486 Busy Here or 600 Busy Everywhere; for an incoming call: it came
    /// while another call was in progress.
    Busy,
    /// Any other final 4xx-6xx response; the code is in `sip_code`. For an
    /// incoming call: the box declined it (`[incoming]`), never answered.
    Rejected,
    /// Our ring timeout (or Baresip's local timeout) expired before an answer.
    NoAnswer,
    /// The INVITE timed out or the transport refused it.
    Unreachable,
    RemoteHangup,
    LocalHangup,
    /// Baresip was lost or shut down, or the call failed in a way SIP does not explain.
    Failed,
    /// An answering machine answered; we hung up (see `answer`).
    Machine,
    /// The AI agent ended the conversation (its farewell played); we hung up.
    AgentHangup,
    /// The AI agent could not start, failed or was lost; we hung up (see `ai`).
    AiFailed,
    /// The agent handed the caller to a person (`transfer_call`, a blind
    /// transfer the far end accepted); the target is in `transfer_to`.
    Transferred,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Rejected => "rejected",
            Self::NoAnswer => "no_answer",
            Self::Unreachable => "unreachable",
            Self::RemoteHangup => "remote_hangup",
            Self::LocalHangup => "local_hangup",
            Self::Failed => "failed",
            Self::Machine => "machine",
            Self::AgentHangup => "agent_hangup",
            Self::AiFailed => "ai_failed",
            Self::Transferred => "transferred",
        }
    }
}

/// One step in a call's life, `at_ms` after the dial request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_ms: u64,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What answer classification decided, and what it measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// `human`, `machine` or `unknown`.
    pub verdict: String,
    pub cause: String,
    /// From the answer (200 OK) to the decision.
    pub decided_at_ms: u32,
    #[serde(default)]
    pub speech_start_ms: Option<u32>,
    #[serde(default)]
    pub speech_end_ms: Option<u32>,
    #[serde(default)]
    pub speech_total_ms: u32,
    #[serde(default)]
    pub beep_start_ms: Option<u32>,
}

impl AnswerRecord {
    pub fn from_verdict(v: &crate::amd::Verdict) -> Self {
        let text = |value: serde_json::Value| value.as_str().unwrap_or_default().to_string();
        Self {
            verdict: text(serde_json::to_value(v.kind).unwrap_or_default()),
            cause: text(serde_json::to_value(v.cause).unwrap_or_default()),
            decided_at_ms: v.decided_at_ms,
            speech_start_ms: v.speech_start_ms,
            speech_end_ms: v.speech_end_ms,
            speech_total_ms: v.speech_total_ms,
            beep_start_ms: v.beep_start_ms,
        }
    }
}

/// Who said a line of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The caller, as the agent's speech recognition heard them.
    User,
    Agent,
    /// The agent's own correction of what it had said (after a barge-in).
    AgentCorrection,
    /// A client tool the agent called, and its result.
    Tool,
    /// Keys the caller pressed, one entry per line (`12#`).
    Dtmf,
}

/// One line of the conversation, `at_ms` after the dial request (like the timeline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptLine {
    pub at_ms: u64,
    pub speaker: Speaker,
    pub text: String,
}

/// The AI stage of a call: asked for after a `human` verdict only.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AiRecord {
    /// `echo` or `elevenlabs`, once the conversation runs.
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// From the request (the verdict) to the conversation running.
    #[serde(default)]
    pub setup_ms: Option<u32>,
    /// From the request to the first caller audio handed to the agent.
    #[serde(default)]
    pub first_caller_audio_ms: Option<u32>,
    /// From the request to the first agent audio queued for playback.
    #[serde(default)]
    pub first_agent_audio_ms: Option<u32>,
    /// Conversation time (what the provider bills), from running to its
    /// end, less any time the service held it in its queue.
    #[serde(default)]
    pub seconds: f64,
    /// Time the service held the conversation in its admission queue.
    #[serde(default)]
    pub queued_ms: u64,
    /// How the conversation ended, in words.
    #[serde(default)]
    pub end_reason: Option<String>,
    /// Caller audio chunks dropped because the provider lagged.
    #[serde(default)]
    pub dropped_chunks: u64,
    /// How often the caller barged in (the agent's queued audio was dropped).
    #[serde(default)]
    pub interruptions: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: String,
    pub phone_number: String,
    /// `outbound` (dialled by the box) or `inbound` (a caller reached it).
    pub direction: CallDirection,
    pub status: Status,
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Why it ended, in words: `486 Busy Here`, `no answer within 30 s`, ...
    #[serde(default)]
    pub reason: Option<String>,
    /// The final SIP status code, when the call ended with one.
    #[serde(default)]
    pub sip_code: Option<u16>,
    /// Baresip's id for the call (the SIP Call-ID), once known.
    #[serde(default)]
    pub sip_call_id: Option<String>,
    pub started_at: String,
    #[serde(default)]
    pub answered_at: Option<String>,
    #[serde(default)]
    pub ended_at: Option<String>,
    /// Milliseconds from answer to end (talk time), once ended after an answer.
    #[serde(default)]
    pub talk_ms: Option<u64>,
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// Answer classification, once the call was answered and classified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<AnswerRecord>,
    /// The audio engine's counters for this call (xruns, levels, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<crate::audio::AudioStats>,
    /// What the network played in early media (18x with SDP), before any
    /// answer: `amd::EarlyMediaReport` (kind, SIT code, timings). For the
    /// record only; kept as JSON so that its shape may grow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_media: Option<serde_json::Value>,
    /// The AI conversation, once one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<AiRecord>,
    /// What was said, once an AI conversation ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transcript: Vec<TranscriptLine>,
    /// The plan run this call is an attempt of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_run: Option<String>,
    /// Which attempt of that run (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The number the call was transferred to (outcome `transferred`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_to: Option<String>,
    /// The call's recording (`[recording] enabled`), once it is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<crate::recording::RecordingRecord>,
}

impl CallRecord {
    /// A record of a call just begun: nothing known yet but who and when.
    pub fn new(id: String, phone_number: String, direction: CallDirection, status: Status, started_at: String) -> Self {
        CallRecord {
            id,
            phone_number,
            direction,
            status,
            outcome: None,
            reason: None,
            sip_code: None,
            sip_call_id: None,
            started_at,
            answered_at: None,
            ended_at: None,
            talk_ms: None,
            timeline: Vec::new(),
            answer: None,
            audio: None,
            early_media: None,
            ai: None,
            transcript: Vec::new(),
            attempt: None,
            plan_run: None,
            transfer_to: None,
            recording: None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.status != Status::Ended
    }
}
