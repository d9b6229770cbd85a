//! The AI agent a `human` call is handed to.
//!
//! Owns the provider abstraction: a [`Provider`] starts one conversation per
//! call from a [`CallContext`] and returns an [`AiSession`], the per-call
//! handle through which the caller's audio goes in (PCM16 at the provider's
//! input rate, any length per call; re-chunked to `chunk_ms`) and
//! [`AiEvent`]s come out (agent audio with its `event_id`, interruptions,
//! transcripts, tool calls, and finally the end of the conversation).
//!
//! - `config.rs`: `[ai]`, audio formats, overrides, the API key.
//! - `protocol.rs`: the ElevenLabs messages and close codes (no I/O).
//! - `elevenlabs.rs`: the ElevenLabs provider (WebSocket over rustls/ring).
//! - `echo.rs`: the local echo provider (no network).
//! - `playout.rs`: the agent-audio queue with barge-in flushing.
//!
//! Promises of every session: `start` resolves only once the conversation
//! runs (for ElevenLabs: after `conversation_initiation_metadata` with the
//! expected formats), else it fails with a [`StartError`]; then events come
//! in wire order, agent audio that belongs to an interrupted turn never comes
//! after its [`AiEvent::Interruption`], and [`AiEvent::Ended`] comes exactly
//! once, last (unless the caller ended the session). `send_audio` never
//! blocks: if the provider cannot keep up, chunks are dropped and counted.
//! At most 256 events wait for the call; a provider with more to say waits
//! (for ElevenLabs: stops reading the socket, so TCP holds the agent back).
//! Dropping the handle or [`AiSession::end`] closes the conversation (1000).

pub mod config;
pub mod echo;
pub mod elevenlabs;
pub mod playout;
pub mod protocol;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::{AiConfig, AudioFormat, DynamicValue, EchoConfig, Overrides, ProviderKind};
pub use echo::Echo;
pub use elevenlabs::{ElevenLabs, WarmUp};
pub use playout::Playout;

/// What a conversation is started with.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub call_id: String,
    pub phone_number: String,
    /// Per-call variables, on top of the configured ones (`call_id` and
    /// `phone_number` are always added).
    pub dynamic_variables: BTreeMap<String, DynamicValue>,
    /// Per-call overrides, field by field over the configured ones.
    pub overrides: Overrides,
}

impl CallContext {
    pub fn new(call_id: impl Into<String>, phone_number: impl Into<String>) -> CallContext {
        CallContext { call_id: call_id.into(), phone_number: phone_number.into(), ..Default::default() }
    }

    /// Configured variables, then the call's, then `call_id` and `phone_number`.
    pub fn variables(&self, configured: &BTreeMap<String, DynamicValue>) -> BTreeMap<String, DynamicValue> {
        let mut all = configured.clone();
        all.extend(self.dynamic_variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        all.insert("call_id".into(), self.call_id.clone().into());
        all.insert("phone_number".into(), self.phone_number.clone().into());
        all
    }
}

/// How a conversation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The agent ended it (`end_call`, maximum duration, close 1000): play out
    /// the queued audio, then hang up.
    Normal { detail: String },
    /// The agent's side failed (close 1002, 1008, 1011, 3000, ..., or an
    /// `error` message): hang up with this reason.
    Error { code: Option<u16>, reason: String },
    /// The connection was lost without a close (TCP drop, read error, silence).
    Lost { detail: String },
}

impl EndReason {
    pub fn is_normal(&self) -> bool {
        matches!(self, EndReason::Normal { .. })
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Normal { detail } => write!(f, "conversation ended: {detail}"),
            EndReason::Error { reason, .. } => f.write_str(reason),
            EndReason::Lost { detail } => write!(f, "connection to the agent lost: {detail}"),
        }
    }
}

/// The answer to a client tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub result: String,
    pub is_error: bool,
}

/// What a session reports, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum AiEvent {
    /// Agent speech, PCM16 at the session's output rate, to be queued for playback.
    Audio {
        event_id: u64,
        samples: Vec<i16>,
    },
    /// The caller barged in: flush queued playback; audio of turns up to
    /// `event_id` is already being dropped.
    Interruption {
        event_id: u64,
    },
    UserTranscript {
        text: String,
    },
    AgentResponse {
        text: String,
    },
    AgentResponseCorrection {
        original: String,
        corrected: String,
    },
    /// A client tool the agent called, and what it was answered.
    ToolCall {
        name: String,
        tool_call_id: String,
        parameters: serde_json::Value,
        result: ToolResult,
    },
    /// The service holds the conversation in its admission queue (`held`),
    /// or admitted it: the wait is not conversation time.
    Queue {
        held: bool,
    },
    /// The end: nothing follows.
    Ended(EndReason),
}

/// Why a conversation could not start (the call goes to its fallback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// Signed URLs need `ELEVENLABS_API_KEY` or the `elevenlabs-api-key` credential.
    MissingApiKey,
    /// The signed-URL request failed (`status` when the server answered).
    SignedUrl { status: Option<u16>, detail: String },
    /// TCP, TLS or the WebSocket upgrade failed.
    Connect(String),
    /// The agent closed (or dropped) the socket before its metadata.
    ClosedBeforeMetadata { code: Option<u16>, reason: String },
    /// The agent's audio formats are not what we send / expect.
    FormatMismatch { direction: &'static str, expected: AudioFormat, got: String },
    /// No metadata within `connect_timeout_ms`.
    Timeout { stage: &'static str, after: Duration },
    /// The agent sent something other than the protocol before its metadata.
    Protocol(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::MissingApiKey => {
                write!(f, "no ElevenLabs API key: set {} or the {} credential", config::API_KEY_ENV, config::API_KEY_CREDENTIAL)
            }
            StartError::SignedUrl { status: Some(s), detail } => write!(f, "signed URL refused (HTTP {s}): {detail}"),
            StartError::SignedUrl { status: None, detail } => write!(f, "signed URL request failed: {detail}"),
            StartError::Connect(e) => write!(f, "cannot connect to the agent: {e}"),
            StartError::ClosedBeforeMetadata { code: Some(c), reason } => {
                write!(f, "agent closed {c} ({}) before the conversation started: {reason}", protocol::close_code_name(*c))
            }
            StartError::ClosedBeforeMetadata { code: None, reason } => {
                write!(f, "agent went away before the conversation started: {reason}")
            }
            StartError::FormatMismatch { direction, expected, got } => write!(
                f,
                "agent {direction} audio format is {got}, cap4 is configured for {expected}: set the agent's format to {expected} (or change ai.{direction}_format)"
            ),
            StartError::Timeout { stage, after } => write!(f, "agent did not answer within {} ms ({stage})", after.as_millis()),
            StartError::Protocol(e) => write!(f, "agent protocol error: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The caller's handle was used after the conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClosed;

impl fmt::Display for SessionClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the AI session has ended")
    }
}

impl std::error::Error for SessionClosed {}

/// Why [`AiSession::send_text`] did not take a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRefused {
    /// The conversation has ended.
    Closed,
    /// The provider lags: too many texts wait.
    Full,
}

impl fmt::Display for TextRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TextRefused::Closed => "the AI session has ended",
            TextRefused::Full => "the agent is not keeping up: text refused",
        })
    }
}

impl std::error::Error for TextRefused {}

/// What `start` returns.
pub type StartFuture<'a> = Pin<Box<dyn Future<Output = Result<AiSession, StartError>> + Send + 'a>>;

/// An agent provider: one conversation per call.
pub trait Provider: Send + Sync {
    /// `"echo"` or `"elevenlabs"`, for logs and records.
    fn name(&self) -> &'static str;
    /// Starts a conversation; resolves once it runs.
    fn start(&self, ctx: CallContext) -> StartFuture<'_>;
    /// Readies a conversation before it is asked for (for ElevenLabs: the
    /// signed URL, then TCP and TLS once told to connect), so that the start
    /// after a `human` verdict pays only for what is left. Nothing is billed;
    /// dropping the handle closes anything it opened. `None`: nothing to ready.
    fn warm_up(self: Arc<Self>) -> Option<WarmUp> {
        None
    }
    /// [`Provider::start`] with what [`Provider::warm_up`] readied.
    fn start_warm(&self, ctx: CallContext, warm: WarmUp) -> StartFuture<'_> {
        drop(warm);
        self.start(ctx)
    }
}

/// A client tool: parameters in, a string result (or a [`ToolError`]) out.
/// Runs on a blocking thread, never on the socket's reader.
pub type ToolFn = Arc<dyn Fn(&serde_json::Value) -> Result<String, ToolError> + Send + Sync>;

/// A tool's failure, as the agent is told it (`is_error: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError(pub String);

impl From<&str> for ToolError {
    fn from(text: &str) -> ToolError {
        ToolError(text.to_string())
    }
}

/// The client tools the agent may call; any other name gets an error result.
#[derive(Clone, Default)]
pub struct ClientTools(HashMap<String, ToolFn>);

impl fmt::Debug for ClientTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl ClientTools {
    pub fn new() -> ClientTools {
        ClientTools::default()
    }

    pub fn with(
        mut self,
        name: impl Into<String>,
        tool: impl Fn(&serde_json::Value) -> Result<String, ToolError> + Send + Sync + 'static,
    ) -> Self {
        self.0.insert(name.into(), Arc::new(tool));
        self
    }

    pub fn call(&self, name: &str, parameters: &serde_json::Value) -> ToolResult {
        match self.0.get(name) {
            Some(tool) => match tool(parameters) {
                Ok(result) => ToolResult { result, is_error: false },
                Err(ToolError(e)) => ToolResult { result: e, is_error: true },
            },
            None => ToolResult { result: format!("unknown tool: {name}"), is_error: true },
        }
    }
}

/// The provider `cfg` names (each provider's constructor validates what it
/// uses). `key` is used only by a private ElevenLabs agent (see [`config::api_key`]).
pub fn provider_from_config(
    cfg: &AiConfig,
    key: Option<crate::environment::Secret>,
    tools: ClientTools,
) -> Result<Arc<dyn Provider>, crate::section::SectionError> {
    Ok(match cfg.provider {
        ProviderKind::Echo => Arc::new(Echo::new(cfg.echo.clone(), cfg.chunk_ms)?),
        ProviderKind::Elevenlabs => Arc::new(ElevenLabs::new(cfg.clone(), key.filter(|_| cfg.signed_url), tools)?),
    })
}

/// What a running conversation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub provider: &'static str,
    pub conversation_id: String,
    /// What `send_audio` takes (its rate is the input rate).
    pub input_format: AudioFormat,
    /// What agent audio was in on the wire (samples come as PCM16 at its rate).
    pub output_format: AudioFormat,
}

/// Text for the agent beside the caller's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientText {
    /// A fact, not a turn (a key pressed, a state of the call); only the
    /// newest per `context_id` stays in the agent's context.
    Context { text: String, context_id: Option<String> },
    /// Words as if the caller had said them: a turn.
    UserMessage(String),
    /// The caller is still there: keeps the turn from timing out.
    Activity,
}

/// The provider task's ends of a session's channels.
pub(crate) struct SessionIo {
    pub audio: mpsc::Receiver<Vec<i16>>,
    pub texts: mpsc::Receiver<ClientText>,
    pub events: mpsc::Sender<AiEvent>,
    pub stop: oneshot::Receiver<()>,
}

/// Caller chunks in flight before new ones are dropped (at 20 ms: 1 s).
const AUDIO_QUEUE: usize = 50;
/// Texts in flight before new ones are refused.
const TEXT_QUEUE: usize = 16;
/// Events the provider may have waiting for the call before it stops
/// reading the agent (TCP then holds the agent back): a turn's audio comes
/// faster than real time, a few dozen chunks, and the call takes each at once.
pub(crate) const EVENT_QUEUE: usize = 256;

/// One conversation, owned by the call.
pub struct AiSession {
    info: SessionInfo,
    chunk_samples: usize,
    pending: Vec<i16>,
    audio: mpsc::Sender<Vec<i16>>,
    texts: mpsc::Sender<ClientText>,
    events: mpsc::Receiver<AiEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    dropped_chunks: u64,
    sent_chunks: u64,
    ended: bool,
}

impl fmt::Debug for AiSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AiSession").field("info", &self.info).field("ended", &self.ended).finish()
    }
}

impl AiSession {
    /// A handle and the provider's ends; the provider spawns its task and
    /// hands it over with [`AiSession::attach`].
    pub(crate) fn channels(info: SessionInfo, chunk_samples: usize) -> (AiSession, SessionIo) {
        let (audio_tx, audio_rx) = mpsc::channel(AUDIO_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (texts_tx, texts_rx) = mpsc::channel(TEXT_QUEUE);
        let (stop_tx, stop_rx) = oneshot::channel();
        let session = AiSession {
            info,
            chunk_samples: chunk_samples.max(1),
            pending: Vec::with_capacity(chunk_samples.max(1)),
            audio: audio_tx,
            texts: texts_tx,
            events: events_rx,
            stop: Some(stop_tx),
            task: None,
            dropped_chunks: 0,
            sent_chunks: 0,
            ended: false,
        };
        (session, SessionIo { audio: audio_rx, texts: texts_rx, events: events_tx, stop: stop_rx })
    }

    pub(crate) fn attach(&mut self, task: JoinHandle<()>) {
        self.task = Some(task);
    }

    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Queues the caller's audio (PCM16 at the input rate, any length); full
    /// `chunk_ms` chunks go to the provider. Never blocks.
    pub fn send_audio(&mut self, mut pcm: &[i16]) -> Result<(), SessionClosed> {
        if self.ended || self.audio.is_closed() {
            return Err(SessionClosed);
        }
        while !pcm.is_empty() {
            let take = (self.chunk_samples - self.pending.len()).min(pcm.len());
            self.pending.extend_from_slice(&pcm[..take]);
            pcm = &pcm[take..];
            if self.pending.len() == self.chunk_samples {
                let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(self.chunk_samples));
                match self.audio.try_send(chunk) {
                    Ok(()) => self.sent_chunks += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => self.dropped_chunks += 1,
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(SessionClosed),
                }
            }
        }
        Ok(())
    }

    /// Sends text to the agent (never blocks). `Err(TextRefused::Full)` when
    /// the provider has 16 texts still unsent.
    pub fn send_text(&mut self, text: ClientText) -> Result<(), TextRefused> {
        if self.ended {
            return Err(TextRefused::Closed);
        }
        self.texts.try_send(text).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TextRefused::Full,
            mpsc::error::TrySendError::Closed(_) => TextRefused::Closed,
        })
    }

    /// Samples (at the input rate) per chunk handed to the provider.
    pub fn chunk_samples(&self) -> usize {
        self.chunk_samples
    }

    /// Chunks handed to the provider, and chunks dropped because it lagged.
    pub fn audio_counters(&self) -> (u64, u64) {
        (self.sent_chunks, self.dropped_chunks)
    }

    /// Events waiting to be taken (never more than the channel's bound).
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// The next event; `None` once [`AiEvent::Ended`] was taken.
    pub async fn next_event(&mut self) -> Option<AiEvent> {
        let event = self.events.recv().await;
        self.note(&event);
        event
    }

    /// The next event if one is waiting (never blocks).
    pub fn try_next_event(&mut self) -> Option<AiEvent> {
        match self.events.try_recv() {
            Ok(event) => {
                let event = Some(event);
                self.note(&event);
                event
            }
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.ended = true;
                None
            }
        }
    }

    fn note(&mut self, event: &Option<AiEvent>) {
        if matches!(event, Some(AiEvent::Ended(_)) | None) {
            self.ended = true;
        }
    }

    /// Ends the conversation from our side (the caller hung up): closes with
    /// 1000 and waits up to 2 s for the provider to finish.
    pub async fn end(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for AiSession {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(chunk: usize) -> (AiSession, SessionIo) {
        let info = SessionInfo {
            provider: "test",
            conversation_id: "c".into(),
            input_format: AudioFormat::Pcm(16000),
            output_format: AudioFormat::Pcm(16000),
        };
        AiSession::channels(info, chunk)
    }

    #[test]
    fn audio_is_rechunked_and_dropped_not_blocked_when_the_provider_lags() {
        let (mut s, mut io) = session(320);
        s.send_audio(&[1; 100]).unwrap();
        assert!(io.audio.try_recv().is_err(), "no partial chunk");
        s.send_audio(&[2; 860]).unwrap(); // 960 in all: three chunks
        for expected_first in [1, 2, 2] {
            let c = io.audio.try_recv().unwrap();
            assert_eq!(c.len(), 320);
            assert_eq!(c[0], expected_first);
        }
        for _ in 0..AUDIO_QUEUE + 10 {
            s.send_audio(&[0; 320]).unwrap();
        }
        assert_eq!(s.audio_counters(), (3 + AUDIO_QUEUE as u64, 10));
        drop(io);
        assert_eq!(s.send_audio(&[0; 320]), Err(SessionClosed));
    }

    #[test]
    fn tools_answer_and_unknown_tools_get_an_error() {
        let tools =
            ClientTools::new().with("add", |p| Ok((p["a"].as_i64().unwrap_or(0) + 1).to_string())).with("fail", |_| Err("nope".into()));
        assert_eq!(tools.call("add", &serde_json::json!({"a": 1})), ToolResult { result: "2".into(), is_error: false });
        assert_eq!(tools.call("fail", &serde_json::Value::Null), ToolResult { result: "nope".into(), is_error: true });
        assert!(tools.call("other", &serde_json::Value::Null).is_error);
    }

    #[test]
    fn call_variables_always_carry_the_call() {
        let mut configured = BTreeMap::new();
        configured.insert("site".to_string(), DynamicValue::from("berlin"));
        let mut ctx = CallContext::new("call-1", "+4930123456");
        ctx.dynamic_variables.insert("site".into(), "paris".into());
        let vars = ctx.variables(&configured);
        assert_eq!(vars["site"], DynamicValue::from("paris"));
        assert_eq!(vars["call_id"], DynamicValue::from("call-1"));
        assert_eq!(vars["phone_number"], DynamicValue::from("+4930123456"));
    }
}
