//! The ElevenLabs provider: one agent WebSocket per call, over rustls with the
//! `ring` crypto provider (pure Rust + assembly: it cross-builds for aarch64
//! without cmake, unlike aws-lc-rs) and the webpki root certificates.
//!
//! Owns the connection: the signed-URL request (private agents, `xi-api-key`
//! header, over hyper), the upgrade, the initiation data, the metadata check,
//! and then two tasks per call: a reader (answers pings, filters late audio
//! after an interruption, runs client tools off the socket, classifies the
//! end) and a writer (control frames before caller audio, always).
//!
//! Promises: the API key is only ever put in the signed-URL request header
//! (never in a URL, an error or a log); a start fails with a reason if the
//! agent's formats differ from `[ai]`'s (and that socket is closed at once);
//! every `ping` is answered on arrival, ahead of any queued audio; audio with
//! `event_id <= K` after `interruption K` is dropped; the session ends with
//! exactly one [`AiEvent::Ended`] on a close, an `error` (after
//! `error_grace_ms` without a close), a lost socket, or `idle_timeout_ms` of
//! silence, or once the agent's `end_call` ran and its audio has been quiet
//! for `end_call_grace_ms` (the service may keep the socket open). While the
//! service holds the conversation in its queue, caller audio is dropped (it
//! would be discarded) and [`AiEvent::Queue`] tells the call. No reconnection
//! mid-call (it would be a new conversation).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::body::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use super::config::{AiConfig, AudioFormat};
use super::protocol::{self, ServerError, ServerMsg};
use super::{
    AiEvent, AiSession, CallContext, ClientText, ClientTools, EndReason, Provider, SessionInfo, SessionIo, StartError, StartFuture,
    ToolResult,
};
use crate::environment::Secret;
use crate::http_client::{HttpError, Outgoing};
use crate::section::SectionError;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest frame accepted from the agent. Its largest real message is an
/// audio chunk: 250 ms of 48 kHz PCM, base64, about 32 KB. The Python SDK
/// takes 16 MiB; a Pi should not buffer that for a peer that misbehaves.
pub const MAX_MESSAGE: usize = 1 << 20;
/// How long the upgrade over a connection readied at the answer may take
/// before a fresh connection is tried (one round trip and the service's
/// handling: well under this anywhere the service answers at all).
const WARM_UPGRADE_LIMIT: Duration = Duration::from_secs(2);
/// Largest signed-URL response body.
const MAX_HTTP_BODY: usize = 64 << 10;

/// The ElevenLabs agent provider.
pub struct ElevenLabs {
    cfg: AiConfig,
    agent_id: String,
    key: Option<Secret>,
    tools: ClientTools,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ElevenLabs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabs")
            .field("agent_id", &self.agent_id)
            .field("base_url", &self.cfg.base_url)
            .field("signed_url", &self.cfg.signed_url)
            .field("key", &self.key)
            .field("tools", &self.tools)
            .finish()
    }
}

/// The TLS client configuration: TLS 1.2/1.3 on `ring`, webpki roots.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

impl ElevenLabs {
    /// `key` is needed when `cfg.signed_url` (a private agent); without it
    /// every start fails with [`StartError::MissingApiKey`].
    pub fn new(cfg: AiConfig, key: Option<Secret>, tools: ClientTools) -> Result<ElevenLabs, SectionError> {
        cfg.validate()?;
        let agent_id = cfg.agent_id.clone().ok_or(SectionError::new("ai", "agent_id", "required for provider \"elevenlabs\""))?;
        Ok(ElevenLabs { cfg, agent_id, key, tools, tls: tls_config() })
    }

    fn base(&self) -> &str {
        self.cfg.base_url.trim_end_matches('/')
    }

    /// The public agent's WebSocket URL.
    pub fn public_url(&self) -> String {
        let base = self.base();
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", base.trim_start_matches("http://"))
        };
        format!("{ws}/v1/convai/conversation?agent_id={}", self.agent_id)
    }

    fn signed_url_request(&self) -> String {
        format!("{}/v1/convai/conversation/get-signed-url?agent_id={}", self.base(), self.agent_id)
    }

    /// The conversation's URL: the public one, or a signed one fetched now.
    async fn conversation_url(&self) -> Result<String, StartError> {
        if self.cfg.signed_url { self.fetch_signed_url().await } else { Ok(self.public_url()) }
    }

    async fn fetch_signed_url(&self) -> Result<String, StartError> {
        let key = self.key.as_ref().ok_or(StartError::MissingApiKey)?;
        let uri: http::Uri =
            self.signed_url_request().parse().map_err(|e| StartError::SignedUrl { status: None, detail: format!("{e}") })?;
        let (status, body) =
            http_get(&uri, key, self.tls.clone()).await.map_err(|e| StartError::SignedUrl { status: None, detail: e.to_string() })?;
        let text = String::from_utf8_lossy(&body);
        if status != 200 {
            let detail: String = text.chars().take(300).collect();
            return Err(StartError::SignedUrl { status: Some(status), detail });
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| StartError::SignedUrl { status: Some(status), detail: format!("not JSON: {e}") })?;
        let url = v.get("signed_url").and_then(|u| u.as_str()).unwrap_or_default();
        if !(url.starts_with("wss://") || url.starts_with("ws://")) {
            return Err(StartError::SignedUrl { status: Some(status), detail: "no ws(s):// signed_url in the answer".into() });
        }
        // The signed URL is a credential for the conversation: never in clear
        // over the network (a local test agent or proxy on loopback aside).
        if url.starts_with("ws://") && !crate::ai::config::is_loopback_url(url) {
            return Err(StartError::SignedUrl {
                status: Some(status),
                detail: "the signed_url is ws:// (not encrypted) to a remote host; refused".into(),
            });
        }
        Ok(url.to_string())
    }

    /// Fetches the URL (and, once [`WarmUp::connect`] says so, opens TCP and
    /// TLS to its host) in a task of its own.
    fn warm(self: &Arc<Self>) -> WarmUp {
        let (go, connect) = tokio::sync::oneshot::channel::<()>();
        let provider = self.clone();
        let task = tokio::spawn(async move {
            let url = provider.conversation_url().await;
            // Dropped (the call ended, or never got answered): nothing opened.
            if connect.await.is_err() {
                return Warm { url, stream: None };
            }
            let stream = match &url {
                Ok(u) => match open_stream(u, provider.tls.clone()).await {
                    Ok(stream) => Some(stream),
                    Err(e) => {
                        debug!(error = %e, "agent host not reached ahead of the verdict; the start connects again");
                        None
                    }
                },
                Err(_) => None,
            };
            Warm { url, stream }
        });
        WarmUp { task, go: Some(go) }
    }

    async fn start_conversation(&self, ctx: CallContext, warm: Option<WarmUp>) -> Result<AiSession, StartError> {
        let after = Duration::from_millis(self.cfg.connect_timeout_ms);
        let deadline = Instant::now() + after;
        let timeout = |stage| StartError::Timeout { stage, after };

        let warmed = match warm {
            Some(mut warm) => {
                warm.connect();
                match tokio::time::timeout_at(deadline, &mut warm.task).await {
                    Ok(Ok(w)) => Some(w),
                    Ok(Err(_)) => None, // the task failed: start cold
                    Err(_) => return Err(timeout("signed URL or connection readied at the answer")),
                }
            }
            None => None,
        };
        let (url, stream) = match warmed {
            Some(Warm { url: Ok(url), stream }) => (url, stream),
            // A failed fetch ahead of time is tried once more now.
            Some(Warm { url: Err(_), .. }) | None => {
                (tokio::time::timeout_at(deadline, self.conversation_url()).await.map_err(|_| timeout("signed URL"))??, None)
            }
        };
        let ws_config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
        let upgrade_error = |e: tokio_tungstenite::tungstenite::Error| {
            use tokio_tungstenite::tungstenite::Error;
            StartError::Connect(match e {
                Error::Http(resp) => format!("upgrade refused with HTTP {}", resp.status()),
                other => other.to_string(),
            })
        };
        let warm_ws = match stream {
            // The connection opened at the answer: only the upgrade is left.
            // A path that lost it silently must not eat the whole deadline.
            Some(stream) => {
                let limit = (Instant::now() + WARM_UPGRADE_LIMIT).min(deadline);
                match tokio::time::timeout_at(limit, tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(ws_config)))
                    .await
                {
                    Ok(Ok((ws, _))) => Some(ws),
                    Ok(Err(e)) => {
                        debug!(error = %e, "upgrade over the early connection failed; connecting again");
                        None
                    }
                    Err(_) => {
                        debug!("no answer on the early connection; connecting again");
                        None
                    }
                }
            }
            None => None,
        };
        let mut ws = match warm_ws {
            Some(ws) => ws,
            None => {
                let connect = tokio_tungstenite::connect_async_tls_with_config(
                    url.as_str(),
                    Some(ws_config),
                    true,
                    Some(Connector::Rustls(self.tls.clone())),
                );
                tokio::time::timeout_at(deadline, connect).await.map_err(|_| timeout("WebSocket upgrade"))?.map_err(upgrade_error)?.0
            }
        };

        let init = protocol::Initiation {
            dynamic_variables: ctx.variables(&self.cfg.dynamic_variables),
            overrides: ctx.overrides.or(&self.cfg.overrides).to_protocol(),
            client_events: &self.cfg.client_events,
            user_id: Some(ctx.phone_number.as_str()),
        };
        tokio::time::timeout_at(deadline, ws.send(Message::text(protocol::initiation(&init))))
            .await
            .map_err(|_| timeout("initiation data"))?
            .map_err(|e| StartError::ClosedBeforeMetadata { code: None, reason: e.to_string() })?;

        let metadata = tokio::time::timeout_at(deadline, wait_metadata(&mut ws)).await.map_err(|_| timeout("conversation metadata"));
        let (conversation_id, input, output) = match metadata.and_then(|m| m) {
            Ok(m) => m,
            Err(e) => {
                close_quietly(&mut ws, "start failed").await;
                return Err(e);
            }
        };
        let check = |direction: &'static str, expected: AudioFormat, got: Option<String>| {
            // Older servers omitted the input format; the JS SDK takes pcm_16000 then.
            let got = got.unwrap_or_else(|| "pcm_16000".to_string());
            if AudioFormat::parse(&got) == Some(expected) { Ok(()) } else { Err(StartError::FormatMismatch { direction, expected, got }) }
        };
        if let Err(e) = check("input", self.cfg.input_format, input).and_then(|()| check("output", self.cfg.output_format, output)) {
            close_quietly(&mut ws, "audio format mismatch").await;
            return Err(e);
        }
        info!(conversation_id = %conversation_id, agent_id = %self.agent_id, "AI conversation started");

        let info = SessionInfo {
            provider: "elevenlabs",
            conversation_id,
            input_format: self.cfg.input_format,
            output_format: self.cfg.output_format,
        };
        let (mut session, io) = AiSession::channels(info, self.cfg.chunk_samples());
        let reader = Reader {
            events: io.events.clone(),
            backlog: std::collections::VecDeque::new(),
            output: self.cfg.output_format,
            tools: self.tools.clone(),
            interrupted_upto: None,
            last_error: None,
            error_deadline: None,
            error_grace: Duration::from_millis(self.cfg.error_grace_ms),
            idle: Duration::from_millis(self.cfg.idle_timeout_ms),
            end_call_seen: false,
            end_call_grace: Duration::from_millis(self.cfg.end_call_grace_ms),
            end_call_deadline: None,
            guardrail: false,
            queue: None,
            garbage: 0,
        };
        session.attach(tokio::spawn(run(ws, io, reader, self.cfg.input_format)));
        Ok(session)
    }
}

/// What a warm-up got: the conversation URL (or why not) and, if it was
/// told to connect, the open TCP (+ TLS) connection to its host.
struct Warm {
    url: Result<String, StartError>,
    stream: Option<MaybeTlsStream<TcpStream>>,
}

/// A conversation readied ahead of the verdict (see [`Provider::warm_up`]):
/// the signed URL fetched (private agents), then, after [`WarmUp::connect`],
/// TCP and TLS open to the agent host. Nothing is billed: no WebSocket, no
/// conversation. Dropping it closes whatever it opened.
pub struct WarmUp {
    task: tokio::task::JoinHandle<Warm>,
    go: Option<tokio::sync::oneshot::Sender<()>>,
}

impl WarmUp {
    /// Go on to open the connection (at the answer: not through the
    /// ringing, which a server's idle timeout may outlast).
    pub fn connect(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }
}

impl Drop for WarmUp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for WarmUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmUp").field("connecting", &self.go.is_none()).finish()
    }
}

/// TCP (no Nagle: audio frames are small) and, for `wss://`, TLS to `url`'s host.
async fn open_stream(url: &str, tls: Arc<rustls::ClientConfig>) -> std::io::Result<MaybeTlsStream<TcpStream>> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string());
    let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    let host = uri.host().ok_or_else(|| invalid("no host"))?.trim_start_matches('[').trim_end_matches(']').to_string();
    let secure = uri.scheme_str() == Some("wss");
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    if !secure {
        return Ok(MaybeTlsStream::Plain(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|_| invalid("not a host name"))?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    Ok(MaybeTlsStream::Rustls(stream))
}

impl Provider for ElevenLabs {
    fn name(&self) -> &'static str {
        "elevenlabs"
    }

    fn start(&self, ctx: CallContext) -> StartFuture<'_> {
        Box::pin(self.start_conversation(ctx, None))
    }

    fn warm_up(self: Arc<Self>) -> Option<WarmUp> {
        Some(self.warm())
    }

    fn start_warm(&self, ctx: CallContext, warm: WarmUp) -> StartFuture<'_> {
        Box::pin(self.start_conversation(ctx, Some(warm)))
    }
}

async fn close_quietly(ws: &mut Ws, reason: &'static str) {
    let frame = CloseFrame { code: CloseCode::Normal, reason: reason.into() };
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(Some(frame))).await;
}

/// Reads up to the metadata: pings are answered, an `error` or a close is
/// the start's failure, anything else is ignored.
async fn wait_metadata(ws: &mut Ws) -> Result<(String, Option<String>, Option<String>), StartError> {
    let mut last_error: Option<ServerError> = None;
    loop {
        let msg = match ws.next().await {
            None => return Err(StartError::ClosedBeforeMetadata { code: None, reason: "socket closed".into() }),
            Some(Err(e)) => return Err(StartError::ClosedBeforeMetadata { code: None, reason: e.to_string() }),
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Text(text) => match protocol::parse(text.as_str()) {
                Ok(ServerMsg::Metadata { conversation_id, output_format, input_format }) => {
                    return Ok((conversation_id, input_format, output_format));
                }
                Ok(ServerMsg::Ping { event_id, .. }) => {
                    let _ = ws.send(Message::text(protocol::pong(event_id))).await;
                }
                Ok(ServerMsg::Error(e)) => {
                    warn!(error = %e, "agent error before the conversation started");
                    last_error = Some(e);
                }
                Ok(other) => debug!(?other, "frame before the metadata ignored"),
                Err(e) => warn!(error = %e, "unreadable frame before the metadata ignored"),
            },
            Message::Close(frame) => {
                let (code, mut reason) = frame.map(|f| (Some(u16::from(f.code)), f.reason.to_string())).unwrap_or((None, String::new()));
                if let Some(e) = last_error {
                    if !reason.contains(&e.message) {
                        reason = if reason.is_empty() { e.to_string() } else { format!("{reason} (after error {e})") };
                    }
                    if let Some(meaning) = protocol::error_meaning(&e) {
                        reason = format!("{reason}: {meaning}");
                    }
                }
                return Err(StartError::ClosedBeforeMetadata { code, reason });
            }
            Message::Binary(_) => warn!("binary frame before the metadata ignored"),
            _ => {}
        }
    }
}

/// What the reader asks the writer to do.
enum Ctl {
    Text(String),
    /// Held in the service's queue (`true`): caller audio is dropped, as the
    /// service would discard it; admitted (`false`): sent again.
    Hold(bool),
    /// Close with this code and reason, then stop.
    Close(u16, &'static str),
    /// The agent closed: flush the close reply and stop.
    Finish,
}

struct Reader {
    events: mpsc::Sender<AiEvent>,
    /// Events the call has no room for yet, in order; while any wait, the
    /// socket is not read (so at most one frame's events are ever here).
    backlog: std::collections::VecDeque<AiEvent>,
    output: AudioFormat,
    tools: ClientTools,
    interrupted_upto: Option<u64>,
    last_error: Option<ServerError>,
    error_deadline: Option<Instant>,
    error_grace: Duration,
    idle: Duration,
    /// The agent ran `end_call`: the conversation ends once its audio has
    /// been quiet for `end_call_grace` (the farewell is streamed before the
    /// tool's result, but may trail it), or at the agent's close.
    end_call_seen: bool,
    end_call_grace: Duration,
    end_call_deadline: Option<Instant>,
    /// A guardrail stopped the agent: named in the reason of the end.
    guardrail: bool,
    /// The last queue status, if the service queued the conversation.
    queue: Option<protocol::QueueStatus>,
    garbage: u64,
}

async fn run(ws: Ws, io: SessionIo, mut reader: Reader, input: AudioFormat) {
    let SessionIo { audio, texts, events: _, stop } = io;
    let (sink, stream) = ws.split();
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_loop(sink, ctl_rx, texts, audio, input));
    let end = reader.read_loop(stream, &ctl_tx, stop).await;
    if let Some(end) = end {
        match &end {
            EndReason::Normal { .. } => info!(reason = %end, "AI conversation ended"),
            _ => warn!(reason = %end, "AI conversation failed"),
        }
        // What waits goes first: Ended is last.
        while let Some(event) = reader.backlog.pop_front() {
            if reader.events.send(event).await.is_err() {
                break;
            }
        }
        let _ = reader.events.send(AiEvent::Ended(end)).await;
    }
    let _ = ctl_tx.send(Ctl::Finish);
    if tokio::time::timeout(Duration::from_secs(1), &mut writer).await.is_err() {
        writer.abort();
    }
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    mut texts: mpsc::Receiver<ClientText>,
    mut audio: mpsc::Receiver<Vec<i16>>,
    format: AudioFormat,
) {
    let mut scratch = Vec::new();
    let mut audio_open = true;
    let mut held = false;
    loop {
        let msg = tokio::select! {
            biased;
            c = ctl.recv() => match c {
                Some(Ctl::Text(t)) => Message::text(t),
                Some(Ctl::Hold(hold)) => {
                    held = hold;
                    continue;
                }
                Some(Ctl::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(Some(frame)))).await;
                    continue;
                }
                Some(Ctl::Finish) | None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                    return;
                }
            },
            Some(t) = texts.recv() => Message::text(match t {
                ClientText::Context { text, context_id } => protocol::contextual_update(&text, context_id.as_deref()),
                ClientText::UserMessage(text) => protocol::user_message(&text),
                ClientText::Activity => protocol::user_activity(),
            }),
            a = audio.recv(), if audio_open => match a {
                Some(_) if held => continue,
                Some(pcm) => Message::text(protocol::user_audio_chunk(&pcm, format, &mut scratch)),
                None => {
                    audio_open = false;
                    continue;
                }
            },
        };
        if let Err(e) = sink.send(msg).await {
            debug!(error = %e, "agent socket write failed");
            // The reader sees the loss; keep draining control until Finish.
            while let Some(c) = ctl.recv().await {
                if matches!(c, Ctl::Finish) {
                    return;
                }
            }
            return;
        }
    }
}

impl Reader {
    fn emit(&mut self, event: AiEvent) {
        if !self.backlog.is_empty() {
            return self.backlog.push_back(event);
        }
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            self.backlog.push_back(event);
        }
    }

    /// Runs until the conversation ends (`Some`) or we stopped it (`None`).
    async fn read_loop(
        &mut self,
        mut stream: futures_util::stream::SplitStream<Ws>,
        ctl: &mpsc::UnboundedSender<Ctl>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Option<EndReason> {
        let (tool_tx, mut tool_rx) = mpsc::unbounded_channel::<(String, String, serde_json::Value, ToolResult)>();
        loop {
            let error_deadline = self.error_deadline;
            let end_call_deadline = self.end_call_deadline;
            let (events, waiting) = (self.events.clone(), !self.backlog.is_empty());
            tokio::select! {
                permit = events.reserve(), if waiting => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop_front() {
                            permit.send(event);
                        }
                    }
                    // The call is gone: nobody to tell.
                    Err(_) => return None,
                },
                _ = &mut stop => {
                    let _ = ctl.send(Ctl::Close(1000, "call ended"));
                    // Give the agent a moment to answer the close, then go.
                    let _ = tokio::time::timeout(Duration::from_millis(500), async {
                        while let Some(Ok(m)) = stream.next().await {
                            if m.is_close() {
                                break;
                            }
                        }
                    })
                    .await;
                    return None;
                }
                Some((name, id, parameters, result)) = tool_rx.recv() => {
                    info!(tool = %name, is_error = result.is_error, "client tool answered");
                    let _ = ctl.send(Ctl::Text(protocol::client_tool_result(&id, &result.result, result.is_error)));
                    self.emit(AiEvent::ToolCall { name, tool_call_id: id, parameters, result });
                }
                _ = tokio::time::sleep_until(error_deadline.unwrap_or_else(Instant::now)), if error_deadline.is_some() => {
                    let _ = ctl.send(Ctl::Close(1000, "agent error"));
                    // The deadline is set with the error; no panic if that ever changes.
                    let (code, reason) = match self.last_error.take() {
                        Some(e) => (e.code, match protocol::error_meaning(&e) {
                            Some(meaning) => format!("agent error {e} ({meaning})"),
                            None => format!("agent error {e}"),
                        }),
                        None => (None, "agent error".to_string()),
                    };
                    return Some(EndReason::Error { code, reason });
                }
                _ = tokio::time::sleep_until(end_call_deadline.unwrap_or_else(Instant::now)), if end_call_deadline.is_some() => {
                    // The service keeps the socket open after end_call: we close it.
                    let _ = ctl.send(Ctl::Close(1000, "end_call"));
                    return Some(EndReason::Normal { detail: "end_call (the agent ended the call)".into() });
                }
                next = tokio::time::timeout(self.idle, stream.next()), if !waiting => {
                    let msg = match next {
                        Err(_) => {
                            let _ = ctl.send(Ctl::Close(1000, "agent silent"));
                            return Some(EndReason::Lost { detail: format!("no frame from the agent for {} ms", self.idle.as_millis()) });
                        }
                        Ok(None) => return Some(EndReason::Lost { detail: "socket closed without a close frame".into() }),
                        Ok(Some(Err(e))) => return Some(EndReason::Lost { detail: e.to_string() }),
                        Ok(Some(Ok(m))) => m,
                    };
                    match msg {
                        Message::Text(text) => self.on_text(text.as_str(), ctl, &tool_tx),
                        Message::Close(frame) => return Some(self.on_close(frame)),
                        Message::Binary(b) => self.on_garbage(&format!("binary frame of {} bytes", b.len())),
                        _ => {}
                    }
                }
            }
        }
    }

    fn on_garbage(&mut self, what: &str) {
        self.garbage += 1;
        if self.garbage <= 5 || self.garbage.is_power_of_two() {
            warn!(count = self.garbage, "ignored from the agent: {what}");
        }
    }

    fn on_close(&mut self, frame: Option<CloseFrame>) -> EndReason {
        let end = self.end_of(frame);
        match end {
            EndReason::Error { code, reason } if self.queue == Some(protocol::QueueStatus::TimedOut) => {
                EndReason::Error { code, reason: format!("the service had no room for the conversation (its queue timed out): {reason}") }
            }
            EndReason::Error { code, reason } if self.guardrail => {
                EndReason::Error { code, reason: format!("{reason} (after a guardrail stopped the agent)") }
            }
            other => other,
        }
    }

    fn end_of(&mut self, frame: Option<CloseFrame>) -> EndReason {
        match frame {
            Some(f) => {
                let end = protocol::close_reason(u16::from(f.code), f.reason.as_str(), self.last_error.as_ref());
                match end {
                    EndReason::Normal { detail } if self.end_call_seen => EndReason::Normal { detail: format!("end_call ({detail})") },
                    other => other,
                }
            }
            None if self.end_call_seen && self.last_error.is_none() => {
                EndReason::Normal { detail: "end_call (closed without a code)".into() }
            }
            None => match &self.last_error {
                Some(e) => EndReason::Error { code: e.code, reason: format!("agent closed after error {e}") },
                None => EndReason::Error { code: None, reason: "agent closed without a code".into() },
            },
        }
    }

    fn on_text(
        &mut self,
        text: &str,
        ctl: &mpsc::UnboundedSender<Ctl>,
        tool_tx: &mpsc::UnboundedSender<(String, String, serde_json::Value, ToolResult)>,
    ) {
        let msg = match protocol::parse(text) {
            Ok(m) => m,
            Err(e) => {
                let head: String = text.chars().take(80).collect();
                self.on_garbage(&format!("{e}: {head:?}"));
                return;
            }
        };
        match msg {
            ServerMsg::Ping { event_id, .. } => {
                // At once, whatever ping_ms says (current SDKs never delay).
                let _ = ctl.send(Ctl::Text(protocol::pong(event_id)));
            }
            ServerMsg::Audio { event_id, audio_base_64 } => {
                if self.interrupted_upto.is_some_and(|k| event_id <= k) {
                    debug!(event_id, "late audio of an interrupted turn dropped");
                    return;
                }
                if self.end_call_seen {
                    // The farewell still streams: end only once it is over.
                    self.end_call_deadline = Some(Instant::now() + self.end_call_grace);
                }
                match protocol::decode_audio(&audio_base_64, self.output) {
                    Some(samples) if samples.is_empty() => {}
                    Some(samples) => self.emit(AiEvent::Audio { event_id, samples }),
                    None => self.on_garbage("audio that is not base64"),
                }
            }
            ServerMsg::Interruption { event_id } => {
                self.interrupted_upto = Some(self.interrupted_upto.map_or(event_id, |k| k.max(event_id)));
                info!(event_id, "caller interrupted the agent");
                self.emit(AiEvent::Interruption { event_id });
            }
            ServerMsg::UserTranscript { text } => {
                // What people say stays out of the journal at INFO (anyone in
                // `adm` reads it); the call record keeps the transcript.
                info!(chars = text.chars().count(), "caller spoke");
                debug!(text = %text, "caller said");
                self.emit(AiEvent::UserTranscript { text });
            }
            ServerMsg::AgentResponse { text } => {
                info!(chars = text.chars().count(), "agent speaks");
                debug!(text = %text, "agent says");
                self.emit(AiEvent::AgentResponse { text });
            }
            ServerMsg::AgentResponseCorrection { original, corrected } => {
                info!("agent was cut off");
                debug!(text = %corrected, "agent was cut off after");
                self.emit(AiEvent::AgentResponseCorrection { original, corrected });
            }
            ServerMsg::ClientToolCall { tool_name, tool_call_id, parameters } => {
                info!(tool = %tool_name, "agent calls a client tool");
                let tools = self.tools.clone();
                let done = tool_tx.clone();
                tokio::spawn(async move {
                    let (name, params) = (tool_name.clone(), parameters.clone());
                    let result = tokio::task::spawn_blocking(move || tools.call(&name, &params))
                        .await
                        .unwrap_or_else(|_| ToolResult { result: "tool panicked".into(), is_error: true });
                    let _ = done.send((tool_name, tool_call_id, parameters, result));
                });
            }
            ServerMsg::AgentToolRequest { tool_name, tool_type } => {
                info!(tool = %tool_name, tool_type = tool_type.as_deref().unwrap_or("?"), "agent runs a tool");
            }
            ServerMsg::AgentToolResponse { tool_name, tool_type, is_error } => {
                info!(tool = %tool_name, tool_type = tool_type.as_deref().unwrap_or("?"), is_error, "agent tool ran");
                // As the service's own SDK does, whatever is_error says: the
                // agent has decided the conversation is over.
                if tool_name == "end_call" && !self.end_call_seen {
                    self.end_call_seen = true;
                    self.end_call_deadline = Some(Instant::now() + self.end_call_grace);
                }
            }
            ServerMsg::GuardrailTriggered => {
                warn!("a guardrail stopped the agent's reply");
                self.guardrail = true;
            }
            ServerMsg::ContextUsage { tokens, limit } => debug!(tokens, limit, "agent context usage"),
            ServerMsg::QueueStatus(status) => {
                let held = status != protocol::QueueStatus::Admitted;
                if held != self.queue.is_some_and(|q| q != protocol::QueueStatus::Admitted) {
                    let _ = ctl.send(Ctl::Hold(held));
                    self.emit(AiEvent::Queue { held });
                }
                match status {
                    protocol::QueueStatus::Waiting => info!("the service queued the conversation: caller audio is held"),
                    protocol::QueueStatus::Admitted => info!("the service admitted the conversation"),
                    protocol::QueueStatus::TimedOut => warn!("the conversation timed out in the service's queue"),
                }
                self.queue = Some(status);
            }
            ServerMsg::Error(e) => {
                warn!(error = %e, "agent error");
                self.last_error = Some(e);
                self.error_deadline.get_or_insert(Instant::now() + self.error_grace);
            }
            ServerMsg::Metadata { .. } => debug!("repeated metadata ignored"),
            ServerMsg::Other { kind } => debug!(kind = %kind, "agent event ignored"),
        }
    }
}

/// A GET with the API key header; `(status, body)` or a reason without the key.
async fn http_get(uri: &http::Uri, key: &Secret, tls: Arc<rustls::ClientConfig>) -> Result<(u16, Vec<u8>), HttpError> {
    let mut key_value =
        http::HeaderValue::from_str(key.expose()).map_err(|_| HttpError::BadRequest("the API key is not a valid header value".into()))?;
    key_value.set_sensitive(true);
    let mut headers = http::HeaderMap::new();
    headers.insert("xi-api-key", key_value);
    headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("application/json"));
    headers.insert(http::header::USER_AGENT, http::HeaderValue::from_static(concat!("cap4/", env!("CARGO_PKG_VERSION"))));
    let request = Outgoing { method: http::Method::GET, uri, headers, body: Bytes::new(), tls: Some(tls), max_body: MAX_HTTP_BODY };
    crate::http_client::send(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::ProviderKind;

    fn cfg(base: &str) -> AiConfig {
        AiConfig { provider: ProviderKind::Elevenlabs, agent_id: Some("agent_x1".into()), base_url: base.into(), ..AiConfig::default() }
    }

    #[test]
    fn urls_follow_the_base() {
        let p = ElevenLabs::new(cfg("https://api.elevenlabs.io/"), None, ClientTools::new()).unwrap();
        assert_eq!(p.public_url(), "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent_x1");
        assert_eq!(p.signed_url_request(), "https://api.elevenlabs.io/v1/convai/conversation/get-signed-url?agent_id=agent_x1");
        let p = ElevenLabs::new(cfg("http://127.0.0.1:8080/proxy"), None, ClientTools::new()).unwrap();
        assert_eq!(p.public_url(), "ws://127.0.0.1:8080/proxy/v1/convai/conversation?agent_id=agent_x1");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let p = ElevenLabs::new(cfg(crate::ai::config::DEFAULT_BASE_URL), Some(Secret::new("sk_very_secret")), ClientTools::new()).unwrap();
        let text = format!("{p:?}");
        assert!(!text.contains("sk_very_secret"), "{text}");
        assert!(text.contains("redacted"));
    }

    #[test]
    fn the_tls_config_uses_ring_and_the_webpki_roots() {
        let tls = tls_config();
        assert!(!tls.crypto_provider().cipher_suites.is_empty());
    }

    #[tokio::test]
    async fn a_private_agent_without_a_key_does_not_start() {
        let p = ElevenLabs::new(cfg("http://127.0.0.1:9"), None, ClientTools::new()).unwrap();
        assert_eq!(p.start(CallContext::new("c", "1")).await.unwrap_err(), StartError::MissingApiKey);
    }
}
