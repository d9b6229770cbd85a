//! A fake ElevenLabs agent for tests: a WebSocket server on 127.0.0.1:0 that
//! follows the checklist of the protocol reference (§9).
//!
//! - `GET /v1/convai/conversation/get-signed-url?agent_id=…` with `xi-api-key`
//!   → `{"signed_url":"ws://127.0.0.1:PORT/…&conversation_signature=…"}`, 401
//!   on a wrong key, 422 without `agent_id`.
//! - Upgrade at `/v1/convai/conversation?agent_id=…`; an unknown agent, or a
//!   missing signature when signatures are required, is closed before the
//!   metadata with `reject_code`.
//! - Waits for `conversation_initiation_client_data` (or 1 s), refuses
//!   overrides when not allowed (`error` override_error + 1008; the
//!   `client_events` override apart), then sends the metadata with the
//!   configured formats, then runs the script ([`Step`]).
//! - Sends an event beyond the service's default set (tool events,
//!   corrections, client tool calls, guardrails, context usage) only when the
//!   conversation asked for it in `client_events`, else when the agent's own
//!   settings ([`FakeConfig::agent_client_events`]) list it, as the service does.
//! - A queue: `queue_status` waiting, caller audio counted while held (the
//!   service discards it), then admitted, or timed out and closed 3008.
//! - Pings on an interval (rising ids, `ping_ms` null first, then the measured
//!   RTT), records pong latency, optionally closes 1002 when pongs stop.
//! - Agent turns: `agent_response` + audio chunks sharing one `event_id`, the
//!   samples all equal to `marker(event_id)` so tests can tell turns apart.
//! - Barge-in: a turn streamed in real time is interrupted when the caller's
//!   audio turns loud: `interruption{K}`, two stale chunks of K, a correction.
//! - Endings: end_call (farewell, `agent_tool_response`, close 1000), any close
//!   code, raw `error` frames, a TCP drop without a close frame.
//! - Noise: garbage frames, unknown events; slow reads; a receive timeout.
//! - Validates what the client sends (text frames only, JSON, whole samples).
//!
//! It counts connections (and signed-URL requests), so tests can assert how
//! many AI sessions were opened.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What the scripted agent does after the metadata, in order.
#[derive(Debug, Clone)]
pub enum Step {
    /// A turn sent faster than real time: `agent_response` + audio chunks.
    Say {
        text: &'static str,
        ms: u32,
    },
    /// A turn streamed in real time (`chunk_ms` chunks), interrupted if the caller
    /// speaks over it.
    SayInterruptible {
        text: &'static str,
        ms: u32,
    },
    /// Waits (up to 10 s) until the caller spoke and then was quiet for
    /// 300 ms, then sends `user_transcript`.
    Hear {
        transcript: &'static str,
    },
    /// Waits (up to 10 s) for a `user_message` whose text contains this
    /// (the caller's keys come as one); the script stops if none comes.
    AwaitUserMessage {
        containing: &'static str,
    },
    /// `client_tool_call`; waits up to 2 s for the result.
    ToolCall {
        name: &'static str,
        parameters: Value,
    },
    /// Farewell turn, `agent_tool_response(end_call)`, close 1000.
    EndCall {
        farewell: &'static str,
        ms: u32,
    },
    /// Farewell turn and `agent_tool_response(end_call)`, then the socket
    /// stays open: the client must end the conversation itself.
    EndCallNoClose {
        farewell: &'static str,
        ms: u32,
    },
    /// `queue_status` waiting; after `wait`, admitted (or timed out: closed
    /// 3008 "too many concurrent connections").
    Queue {
        wait: Duration,
        admit: bool,
    },
    Close {
        code: u16,
        reason: &'static str,
    },
    /// Any text frame, as is.
    Raw(String),
    Binary(Vec<u8>),
    /// Garbage and noise: a binary frame, a non-JSON text, an audio frame
    /// without its fields, ignorable events and an invented type.
    Noise,
    /// Drops the TCP connection without a close frame.
    Drop,
    Sleep(Duration),
    /// Reads each client frame this late from now on (zero: normal again).
    SlowReads(Duration),
}

/// The fake's knobs.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub agent_id: String,
    pub api_key: String,
    /// Upgrades without a valid `conversation_signature` are refused.
    pub require_signature: bool,
    /// Close code for a refused upgrade (before the metadata).
    pub reject_code: u16,
    pub input_format: String,
    pub output_format: String,
    pub allow_overrides: bool,
    /// The agent allows the `conversation.client_events` override.
    pub allow_client_events: bool,
    /// The events the agent's own settings enable (when the client asks for none).
    pub agent_client_events: Vec<String>,
    /// Delay before the metadata (connect-timeout tests).
    pub metadata_delay: Duration,
    pub ping_every: Option<Duration>,
    /// Close 1002 when this many pings are unanswered.
    pub close_after_missed_pongs: Option<u32>,
    /// `error{transport_receive_timeout}` + 1002 after this long without a client frame.
    pub receive_timeout: Option<Duration>,
    /// Length of each agent audio chunk (100 ms by default; an odd length
    /// leaves partial blocks in the client's resampler).
    pub chunk_ms: u32,
    pub script: Vec<Step>,
    /// Closes a TCP connection that sent no request for this long (a
    /// server's idle timeout).
    pub idle_close_after: Option<Duration>,
    /// TCP connections (by their number, from 1) accepted and then never
    /// answered: a path that silently lost the flow.
    pub silent_connections: Vec<u32>,
    /// The host (and port) the signed URL names instead of this server's
    /// (a `ws://` URL to somewhere else, which the client must refuse).
    pub signed_url_host: Option<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            agent_id: "agent_test".into(),
            api_key: "sk_test_key".into(),
            require_signature: false,
            reject_code: 1008,
            input_format: "pcm_16000".into(),
            output_format: "pcm_16000".into(),
            allow_overrides: true,
            allow_client_events: true,
            agent_client_events: SERVICE_DEFAULT_EVENTS.iter().map(|e| e.to_string()).collect(),
            metadata_delay: Duration::ZERO,
            ping_every: None,
            close_after_missed_pongs: None,
            receive_timeout: None,
            chunk_ms: 100,
            script: Vec::new(),
            signed_url_host: None,
            idle_close_after: None,
            silent_connections: Vec::new(),
        }
    }
}

/// What the service sends when nobody asked for more (its schema's default).
pub const SERVICE_DEFAULT_EVENTS: [&str; 7] =
    ["audio", "interruption", "agent_response", "user_transcript", "tentative_user_transcript", "conversation_initiation_metadata", "ping"];

/// The sample value of every sample of turn `event_id`'s audio.
pub fn marker(event_id: u64) -> i16 {
    (event_id as i16) * 100
}

/// What the fake saw, all connections together.
#[derive(Debug, Default)]
pub struct Recorded {
    /// WebSocket upgrade requests (accepted or refused).
    pub connections: u32,
    /// TCP connections accepted (each HTTP request and upgrade has one; a
    /// connection opened ahead of time is one too).
    pub tcp_accepts: u32,
    /// Connections the client closed without sending a request.
    pub closed_unused: u32,
    /// Idle connections the fake closed (`idle_close_after`).
    pub idle_closed: u32,
    pub signed_url_requests: u32,
    /// Upgrade request paths with their queries.
    pub upgrade_paths: Vec<String>,
    pub init: Vec<Value>,
    /// (ping event id, pong latency).
    pub pongs: Vec<(u64, Duration)>,
    pub pings_sent: u64,
    pub audio_chunks: u64,
    pub audio_samples: u64,
    pub audio_chunk_sizes: Vec<usize>,
    pub first_audio_at: Option<Instant>,
    /// When each caller chunk arrived.
    pub chunk_times: Vec<Instant>,
    pub first_agent_audio_sent_at: Option<Instant>,
    /// When each conversation's metadata went out, and its first audio.
    pub metadata_sent_at: Vec<Instant>,
    pub first_audio_sent_at: Vec<Instant>,
    /// Loud caller chunks (RMS over 500).
    pub loud_chunks: u64,
    pub last_loud_at: Option<Instant>,
    /// Frames that break the protocol: binary, not JSON, bad audio.
    pub bad_frames: Vec<String>,
    pub tool_results: Vec<Value>,
    /// `contextual_update`, `user_message` and `user_activity` frames, as sent.
    pub client_texts: Vec<Value>,
    /// Caller audio chunks that came while the conversation was held in the queue.
    pub audio_while_held: u64,
    /// Events the script would have sent but the conversation did not ask for.
    pub withheld_events: Vec<String>,
    /// Close frames the client sent.
    pub client_closes: Vec<(u16, String)>,
    /// Closes the fake sent.
    pub server_closes: Vec<u16>,
    /// Steps run, for debugging.
    pub log: Vec<String>,
}

pub struct FakeAgent {
    pub addr: SocketAddr,
    cfg: Arc<Mutex<FakeConfig>>,
    rec: Arc<Mutex<Recorded>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAgent {
    pub async fn start(cfg: FakeConfig) -> FakeAgent {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let cfg = Arc::new(Mutex::new(cfg));
        let rec = Arc::new(Mutex::new(Recorded::default()));
        let changed = Arc::new(Notify::new());
        let (c, r, n) = (cfg.clone(), rec.clone(), changed.clone());
        let task = tokio::spawn(async move {
            let mut signatures = 0u32;
            while let Ok((tcp, _)) = listener.accept().await {
                signatures += 1;
                r.lock().unwrap().tcp_accepts += 1;
                n.notify_waiters();
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve(tcp, addr, c.clone(), r.clone(), n.clone(), signatures));
            }
        });
        FakeAgent { addr, cfg, rec, changed, task }
    }

    /// `http://127.0.0.1:PORT`, for `[ai] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_script(&self, script: Vec<Step>) {
        self.cfg.lock().unwrap().script = script;
    }

    pub fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.rec.lock().unwrap()
    }

    pub fn connections(&self) -> u32 {
        self.rec.lock().unwrap().connections
    }

    /// Waits up to `within` for `cond` on the record.
    pub async fn wait_for(&self, within: Duration, what: &str, cond: impl Fn(&Recorded) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            if cond(&self.rec.lock().unwrap()) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("fake agent: timed out waiting for {what}; saw {:#?}", self.rec.lock().unwrap());
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }
}

/// Reads an HTTP head without consuming it (the upgrade handler reads it again).
async fn peek_head(tcp: &TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 8192];
    for _ in 0..200 {
        let n = tcp.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buf[..end]).to_string());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn query_param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

async fn serve(mut tcp: TcpStream, addr: SocketAddr, cfg: Arc<Mutex<FakeConfig>>, rec: Arc<Mutex<Recorded>>, changed: Arc<Notify>, n: u32) {
    if cfg.lock().unwrap().silent_connections.contains(&n) {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(tcp);
        return;
    }
    let idle = cfg.lock().unwrap().idle_close_after.unwrap_or(Duration::from_secs(3600));
    let head = match tokio::time::timeout(idle, peek_head(&tcp)).await {
        Ok(Some(head)) => head,
        Ok(None) => {
            rec.lock().unwrap().closed_unused += 1;
            changed.notify_waiters();
            return;
        }
        Err(_) => {
            rec.lock().unwrap().idle_closed += 1;
            changed.notify_waiters();
            return;
        }
    };
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
    if path.starts_with("/v1/convai/conversation/get-signed-url") {
        let mut sink = vec![0u8; head.len() + 4];
        let _ = tcp.read_exact(&mut sink).await;
        let key = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("xi-api-key").then(|| value.trim().to_string())
        });
        let c = cfg.lock().unwrap().clone();
        rec.lock().unwrap().signed_url_requests += 1;
        changed.notify_waiters();
        let (status, body) = match (key, query_param(&path, "agent_id")) {
            (k, _) if k.as_deref() != Some(c.api_key.as_str()) => ("401 Unauthorized", json!({"detail": {"status": "invalid_api_key"}})),
            (_, None) => ("422 Unprocessable Entity", json!({"detail": [{"loc": ["query", "agent_id"], "msg": "field required"}]})),
            (_, Some(agent)) => (
                "200 OK",
                json!({"signed_url": format!(
                    "ws://{}/v1/convai/conversation?agent_id={agent}&conversation_signature=cvtkn_{n}",
                    c.signed_url_host.clone().unwrap_or_else(|| addr.to_string())
                )}),
            ),
        };
        let body = body.to_string();
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tcp.write_all(resp.as_bytes()).await;
        let _ = tcp.shutdown().await;
        return;
    }

    let seen_path = Arc::new(Mutex::new(String::new()));
    let sp = seen_path.clone();
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| {
        *sp.lock().unwrap() = req.uri().to_string();
        Ok(resp)
    };
    {
        let mut r = rec.lock().unwrap();
        r.connections += 1;
    }
    changed.notify_waiters();
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
    let path = seen_path.lock().unwrap().clone();
    rec.lock().unwrap().upgrade_paths.push(path.clone());
    let c = cfg.lock().unwrap().clone();

    let agent_ok = query_param(&path, "agent_id").as_deref() == Some(c.agent_id.as_str());
    let signature_ok = !c.require_signature || query_param(&path, "conversation_signature").is_some_and(|s| s.starts_with("cvtkn_"));
    if !agent_ok || !signature_ok {
        let reason = if agent_ok { "Invalid conversation signature" } else { "Agent not found" };
        rec.lock().unwrap().server_closes.push(c.reject_code);
        let _ = ws.close(Some(CloseFrame { code: CloseCode::from(c.reject_code), reason: reason.into() })).await;
        changed.notify_waiters();
        return;
    }

    // The initiation data (first frame), or go on after 1 s without it.
    let mut events = c.agent_client_events.clone();
    if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
        let is_init = v["type"] == "conversation_initiation_client_data";
        let overrides = v.get("conversation_config_override").and_then(Value::as_object);
        let has_override = overrides.is_some_and(|o| o.keys().any(|k| k != "conversation"));
        let asked = overrides.and_then(|o| o.get("conversation")).and_then(|c| c.get("client_events")).and_then(Value::as_array);
        if let Some(asked) = asked {
            events = asked.iter().filter_map(Value::as_str).map(str::to_string).collect();
        }
        let refused = match () {
            () if asked.is_some() && !c.allow_client_events => Some("client_events"),
            () if has_override && !c.allow_overrides => Some("first_message"),
            () => None,
        };
        rec.lock().unwrap().init.push(v);
        changed.notify_waiters();
        if !is_init {
            rec.lock().unwrap().bad_frames.push("first frame is not the initiation data".into());
        }
        if let Some(field) = refused {
            let message = format!("Override for field '{field}' is not allowed by config.");
            let err = json!({"type": "error", "error_event": {"code": 1008, "error_type": "override_error", "message": message}});
            let _ = ws.send(Message::text(err.to_string())).await;
            rec.lock().unwrap().server_closes.push(1008);
            let _ = ws.close(Some(CloseFrame { code: CloseCode::Policy, reason: message.into() })).await;
            changed.notify_waiters();
            return;
        }
    }
    tokio::time::sleep(c.metadata_delay).await;
    let meta = json!({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
        "conversation_id": format!("conv_fake_{n}"),
        "agent_output_audio_format": c.output_format,
        "user_input_audio_format": c.input_format,
    }});
    if ws.send(Message::text(meta.to_string())).await.is_err() {
        return;
    }
    rec.lock().unwrap().metadata_sent_at.push(Instant::now());

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
    let conn = Arc::new(Conn {
        rec: rec.clone(),
        changed: changed.clone(),
        out: out_tx.clone(),
        cfg: c.clone(),
        events,
        held: Mutex::new(false),
        spoke: Mutex::new(false),
        pings: Mutex::new(Vec::new()),
        slow: Mutex::new(Duration::ZERO),
    });
    let script = tokio::spawn(run_script(conn.clone()));
    let pinger = c.ping_every.map(|every| tokio::spawn(run_pinger(conn.clone(), every)));

    let mut last_client_frame = Instant::now();
    loop {
        let receive_deadline = c.receive_timeout.map(|t| last_client_frame + t);
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(Out::Msg(m)) => {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(code, reason)) => {
                    conn.rec.lock().unwrap().server_closes.push(code);
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })).await;
                    // Read the client's answer (its close), briefly.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(m)) = ws.next().await {
                            conn.on_client(m);
                        }
                    }).await;
                    break;
                }
                Some(Out::Drop) | None => break,
            },
            _ = tokio::time::sleep_until(receive_deadline.map(tokio::time::Instant::from_std).unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))) => {
                let err = json!({"type": "error", "error_event": {"code": 1002, "error_type": "transport_receive_timeout", "message": "No user input received"}});
                let _ = conn.out.send(Out::Msg(Message::text(err.to_string())));
                let _ = conn.out.send(Out::Close(1002, "No user input received"));
                last_client_frame = Instant::now() + Duration::from_secs(3600);
            }
            frame = ws.next() => {
                let Some(Ok(m)) = frame else { break };
                last_client_frame = Instant::now();
                let closing = m.is_close();
                conn.on_client(m);
                if closing {
                    break;
                }
                let slow = *conn.slow.lock().unwrap();
                if !slow.is_zero() {
                    tokio::time::sleep(slow).await;
                }
            }
        }
    }
    script.abort();
    if let Some(p) = pinger {
        p.abort();
    }
    changed.notify_waiters();
}

enum Out {
    Msg(Message),
    Close(u16, &'static str),
    Drop,
}

struct Conn {
    rec: Arc<Mutex<Recorded>>,
    changed: Arc<Notify>,
    out: mpsc::UnboundedSender<Out>,
    cfg: FakeConfig,
    /// The server events this conversation gets.
    events: Vec<String>,
    /// Held in the queue: caller audio is discarded (and counted).
    held: Mutex<bool>,
    /// This conversation's first audio went out.
    spoke: Mutex<bool>,
    /// (ping id, sent at, answered).
    pings: Mutex<Vec<(u64, Instant, bool)>>,
    slow: Mutex<Duration>,
}

fn decode_samples(b64: &str, format: &str) -> Result<Vec<i16>, String> {
    let bytes = B64.decode(b64).map_err(|e| format!("audio not base64: {e}"))?;
    if format == "ulaw_8000" {
        let mut out = vec![0i16; bytes.len()];
        cap4::audio::g711::ulaw_decode_slice(&bytes, &mut out);
        return Ok(out);
    }
    if bytes.len() % 2 != 0 {
        return Err(format!("audio chunk of {} bytes is not whole PCM16 samples", bytes.len()));
    }
    Ok(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
}

fn encode_samples(samples: &[i16], format: &str) -> String {
    if format == "ulaw_8000" {
        let mut out = vec![0u8; samples.len()];
        cap4::audio::g711::ulaw_encode_slice(samples, &mut out);
        return B64.encode(out);
    }
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    B64.encode(bytes)
}

fn rate_of(format: &str) -> usize {
    format.rsplit('_').next().and_then(|r| r.parse().ok()).unwrap_or(16000)
}

impl Conn {
    fn send(&self, v: Value) {
        let kind = v["type"].as_str().unwrap_or_default();
        let gated = !SERVICE_DEFAULT_EVENTS.contains(&kind) && kind != "error" && kind != "queue_status";
        if gated && !self.events.iter().any(|e| e == kind) {
            self.rec.lock().unwrap().withheld_events.push(kind.to_string());
            return;
        }
        let _ = self.out.send(Out::Msg(Message::text(v.to_string())));
    }

    fn log(&self, what: String) {
        self.rec.lock().unwrap().log.push(what);
        self.changed.notify_waiters();
    }

    fn on_client(&self, m: Message) {
        let mut r = self.rec.lock().unwrap();
        match m {
            Message::Text(t) => match serde_json::from_str::<Value>(t.as_str()) {
                Err(e) => r.bad_frames.push(format!("not JSON: {e}")),
                Ok(v) => {
                    if let Some(b64) = v.get("user_audio_chunk").and_then(Value::as_str) {
                        if *self.held.lock().unwrap() {
                            r.audio_while_held += 1;
                        }
                        match decode_samples(b64, &self.cfg.input_format) {
                            Err(e) => r.bad_frames.push(e),
                            Ok(samples) => {
                                let now = Instant::now();
                                r.audio_chunks += 1;
                                r.audio_samples += samples.len() as u64;
                                r.audio_chunk_sizes.push(samples.len());
                                r.first_audio_at.get_or_insert(now);
                                r.chunk_times.push(now);
                                let energy: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len().max(1) as f64;
                                if energy.sqrt() > 500.0 {
                                    r.loud_chunks += 1;
                                    r.last_loud_at = Some(now);
                                }
                            }
                        }
                    } else {
                        match v["type"].as_str() {
                            Some("pong") => {
                                let id = v["event_id"].as_u64().unwrap_or(u64::MAX);
                                let mut pings = self.pings.lock().unwrap();
                                match pings.iter_mut().find(|p| p.0 == id && !p.2) {
                                    Some(p) => {
                                        p.2 = true;
                                        r.pongs.push((id, p.1.elapsed()));
                                    }
                                    None => r.bad_frames.push(format!("pong for unknown ping {id}")),
                                }
                            }
                            Some("client_tool_result") => r.tool_results.push(v),
                            Some("contextual_update" | "user_message" | "user_activity") => r.client_texts.push(v),
                            Some("conversation_initiation_client_data") => r.init.push(v),
                            other => r.bad_frames.push(format!("unexpected client message type {other:?}")),
                        }
                    }
                }
            },
            Message::Close(f) => {
                r.client_closes.push(f.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new())))
            }
            Message::Binary(_) => r.bad_frames.push("binary frame from the client".into()),
            _ => {}
        }
        drop(r);
        self.changed.notify_waiters();
    }

    fn audio(&self, event_id: u64, ms: u32) {
        let samples = vec![marker(event_id); rate_of(&self.cfg.output_format) * ms as usize / 1000];
        self.send(json!({"type": "audio", "audio_event": {"audio_base_64": encode_samples(&samples, &self.cfg.output_format), "event_id": event_id}}));
        let mut r = self.rec.lock().unwrap();
        r.first_agent_audio_sent_at.get_or_insert_with(Instant::now);
        let mut spoke = self.spoke.lock().unwrap();
        if !*spoke {
            *spoke = true;
            r.first_audio_sent_at.push(Instant::now());
        }
    }

    fn say(&self, event_id: u64, text: &str) {
        self.send(json!({"type": "agent_response", "agent_response_event": {"agent_response": text, "event_id": event_id}}));
    }

    fn loud(&self) -> (u64, Option<Instant>) {
        let r = self.rec.lock().unwrap();
        (r.loud_chunks, r.last_loud_at)
    }
}

async fn run_pinger(conn: Arc<Conn>, every: Duration) {
    let mut id = 1000u64;
    loop {
        tokio::time::sleep(every).await;
        let (missed, rtt) = {
            let pings = conn.pings.lock().unwrap();
            let missed = pings.iter().rev().take_while(|p| !p.2).count() as u32;
            let rtt = conn.rec.lock().unwrap().pongs.last().map(|p| p.1.as_millis() as u64);
            (missed, rtt)
        };
        if conn.cfg.close_after_missed_pongs.is_some_and(|n| missed >= n) {
            let _ = conn.out.send(Out::Close(1002, "ping timeout"));
            return;
        }
        id += 1;
        conn.pings.lock().unwrap().push((id, Instant::now(), false));
        conn.rec.lock().unwrap().pings_sent += 1;
        conn.send(json!({"type": "ping", "ping_event": {"event_id": id, "ping_ms": rtt}}));
    }
}

async fn run_script(conn: Arc<Conn>) {
    let mut turn = 0u64;
    for step in conn.cfg.script.clone() {
        conn.log(format!("{step:?}"));
        match step {
            Step::Say { text, ms } => {
                turn += 1;
                conn.say(turn, text);
                for _ in 0..ms.div_ceil(conn.cfg.chunk_ms) {
                    conn.audio(turn, conn.cfg.chunk_ms);
                }
            }
            Step::SayInterruptible { text, ms } => {
                turn += 1;
                let (loud_before, _) = conn.loud();
                conn.say(turn, text);
                let mut interrupted = false;
                for i in 0..ms.div_ceil(conn.cfg.chunk_ms) {
                    if conn.loud().0 > loud_before {
                        conn.send(json!({"type": "interruption", "interruption_event": {"event_id": turn}}));
                        // Stale chunks still in flight: the client must drop them.
                        conn.audio(turn, conn.cfg.chunk_ms);
                        conn.audio(turn, conn.cfg.chunk_ms);
                        let spoken: String = text.chars().take((i as usize * 4).min(text.len())).collect();
                        conn.send(json!({"type": "agent_response_correction", "agent_response_correction_event": {
                            "original_agent_response": text, "corrected_agent_response": spoken, "event_id": turn}}));
                        interrupted = true;
                        break;
                    }
                    conn.audio(turn, conn.cfg.chunk_ms);
                    tokio::time::sleep(Duration::from_millis(u64::from(conn.cfg.chunk_ms))).await;
                }
                conn.log(format!("turn {turn} interrupted: {interrupted}"));
            }
            Step::Hear { transcript } => {
                let (before, _) = conn.loud();
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let (n, last) = conn.loud();
                    if n > before && last.is_some_and(|t| t.elapsed() >= Duration::from_millis(300)) {
                        break;
                    }
                    if Instant::now() > deadline {
                        conn.log("Hear: the caller never spoke".into());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                turn += 1;
                conn.send(json!({"type": "vad_score", "vad_score_event": {"vad_score": 0.95}}));
                conn.send(
                    json!({"type": "user_transcript", "user_transcription_event": {"user_transcript": transcript, "event_id": turn}}),
                );
            }
            Step::AwaitUserMessage { containing } => {
                let deadline = Instant::now() + Duration::from_secs(10);
                let heard = |rec: &Recorded| {
                    rec.client_texts
                        .iter()
                        .any(|t| t["type"] == "user_message" && t["text"].as_str().is_some_and(|text| text.contains(containing)))
                };
                while !heard(&conn.rec.lock().unwrap()) {
                    if Instant::now() > deadline {
                        conn.log(format!("AwaitUserMessage: no user_message with {containing:?}"));
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Step::ToolCall { name, parameters } => {
                turn += 1;
                let id = format!("toolu_{turn}");
                let before = conn.rec.lock().unwrap().tool_results.len();
                conn.send(json!({"type": "client_tool_call", "client_tool_call": {"tool_name": name, "tool_call_id": id, "parameters": parameters, "event_id": turn}}));
                let deadline = Instant::now() + Duration::from_secs(2);
                while conn.rec.lock().unwrap().tool_results.len() == before && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Step::EndCall { farewell, ms } => {
                turn += 1;
                conn.say(turn, farewell);
                for _ in 0..ms.div_ceil(conn.cfg.chunk_ms) {
                    conn.audio(turn, conn.cfg.chunk_ms);
                }
                conn.send(json!({"type": "agent_tool_request", "agent_tool_request": {"tool_name": "end_call", "tool_call_id": "end_call_1", "tool_type": "system", "event_id": turn}}));
                conn.send(json!({"type": "agent_tool_response", "agent_tool_response": {"tool_name": "end_call", "tool_call_id": "end_call_1", "tool_type": "system", "is_error": false, "is_called": true, "event_id": turn}}));
                let _ = conn.out.send(Out::Close(1000, ""));
            }
            Step::EndCallNoClose { farewell, ms } => {
                turn += 1;
                conn.say(turn, farewell);
                for _ in 0..ms.div_ceil(conn.cfg.chunk_ms) {
                    conn.audio(turn, conn.cfg.chunk_ms);
                }
                conn.send(json!({"type": "agent_tool_response", "agent_tool_response": {"tool_name": "end_call", "tool_call_id": "end_call_1", "tool_type": "system", "is_error": false, "is_called": true, "event_id": turn}}));
            }
            Step::Queue { wait, admit } => {
                *conn.held.lock().unwrap() = true;
                conn.send(json!({"type": "queue_status", "queue_status_event": {"status": "waiting"}}));
                tokio::time::sleep(wait).await;
                *conn.held.lock().unwrap() = false;
                if admit {
                    conn.send(json!({"type": "queue_status", "queue_status_event": {"status": "admitted"}}));
                } else {
                    conn.send(json!({"type": "queue_status", "queue_status_event": {"status": "timed_out"}}));
                    let _ = conn.out.send(Out::Close(3008, "too many concurrent connections"));
                }
            }
            Step::Close { code, reason } => {
                let _ = conn.out.send(Out::Close(code, reason));
            }
            Step::Raw(text) => {
                let _ = conn.out.send(Out::Msg(Message::text(text)));
            }
            Step::Binary(bytes) => {
                let _ = conn.out.send(Out::Msg(Message::binary(bytes)));
            }
            Step::Noise => {
                let _ = conn.out.send(Out::Msg(Message::binary(vec![0xde, 0xad, 0xbe, 0xef])));
                let _ = conn.out.send(Out::Msg(Message::text("{this is not json")));
                let _ = conn.out.send(Out::Msg(Message::text("[1,2,3]")));
                conn.send(json!({"type": "audio", "audio_event": {}}));
                conn.send(json!({"type": "audio", "audio_event": {"audio_base_64": "***", "event_id": 1}}));
                conn.send(json!({"type": "asr_initiation_metadata", "asr_initiation_metadata_event": {}}));
                conn.send(json!({"type": "internal_turn_probability", "turn_probability_internal_event": {"turn_probability": 0.7}}));
                conn.send(json!({"type": "context_usage", "context_usage_event": {"event_id": 12, "model": "m", "context_tokens": 1, "context_limit_tokens": 2}}));
                conn.send(json!({"type": "brand_new_event_2027", "brand_new_event_2027_event": {"x": 1}}));
            }
            Step::Drop => {
                let _ = conn.out.send(Out::Drop);
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::SlowReads(d) => *conn.slow.lock().unwrap() = d,
        }
    }
    conn.log("script done".into());
}

pub mod caller;
