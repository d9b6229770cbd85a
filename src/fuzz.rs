//! The fuzz targets' bodies: one function per parser that meets outside
//! input, each feeding it arbitrary bytes and checking what must hold for
//! every input, not only "no panic". `fuzz/` (libFuzzer, run by
//! `scripts/fuzz`) calls them with generated inputs; `tests/host/fuzz_replay.rs`
//! calls them with every committed corpus file, so CI replays the corpora on
//! a normal build.
//!
//! Promises: each function panics only when a property fails (a parser's own
//! panic or a broken invariant); none touches the disk, the network or the
//! clock, so an input gives the same result every run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use crate::ai::config::AudioFormat;
use crate::ai::protocol as agent;
use crate::baresip::netstring::{self, Decoder};
use crate::baresip::protocol as baresip;
use crate::config::{Config, ConfigError};
use crate::environment::Environment;

/// The Baresip link's frame limit, as the link uses it.
const NETSTRING_MAX_FRAME: usize = 64 * 1024;

/// The netstring decoder, fed the input whole and in two pieces (split where
/// the first byte says): both give the same frames and the same error, each
/// frame re-encodes to exactly the bytes it consumed, and a frame's payload
/// round-trips through `encode`.
pub fn netstring_decoder(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else { return };
    let whole = decode_all(&[stream]);
    let at = usize::from(split).min(stream.len());
    let pieces = decode_all(&[&stream[..at], &stream[at..]]);
    assert_eq!(whole, pieces, "chunking changed what the decoder saw");

    let (frames, _) = &whole;
    let consumed: Vec<u8> = frames.iter().flat_map(|f| netstring::encode(f)).collect();
    assert!(stream.starts_with(&consumed), "frames do not re-encode to the bytes they came from");

    if stream.len() <= NETSTRING_MAX_FRAME {
        let mut decoder = Decoder::new(NETSTRING_MAX_FRAME);
        decoder.push(&netstring::encode(stream));
        assert_eq!(decoder.next_frame(), Ok(Some(stream.to_vec())), "encode/decode round trip");
        assert_eq!(decoder.pending(), 0);
    }
}

/// Every frame of `pieces` pushed in order, and the error that ended it.
fn decode_all(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Option<netstring::NetstringError>) {
    let mut decoder = Decoder::new(NETSTRING_MAX_FRAME);
    let mut frames = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= NETSTRING_MAX_FRAME, "a frame over the limit");
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(err) => {
                    // Poisoned: the same error every time after.
                    assert_eq!(decoder.next_frame(), Err(err.clone()));
                    return (frames, Some(err));
                }
            }
        }
    }
    (frames, None)
}

/// Baresip's messages: a netstring payload as `decode` reads it, and its
/// text through every parser of command output and event parameters.
/// `listcalls` never claims more calls than [`baresip::MAX_LISTED_CALLS`].
pub fn baresip_message(data: &[u8]) {
    let _ = baresip::decode(data);
    let text = String::from_utf8_lossy(data);
    if let Some(calls) = baresip::parse_listcalls(&text) {
        assert!(calls.len() <= baresip::MAX_LISTED_CALLS, "listcalls claimed {} calls", calls.len());
    }
    for (aor, _) in crate::baresip::registration::parse_reginfo(&text) {
        assert!(aor.starts_with("sip"), "reginfo aor {aor:?}");
    }
    if let Some(id) = baresip::parse_callstat_id(&text) {
        assert!(!id.is_empty() && !id.contains(char::is_whitespace), "callstat id {id:?}");
    }
    if let Some(id) = baresip::call_id_from_dial_data(&text) {
        assert!(!id.is_empty() && id == id.trim(), "dial call id {id:?}");
    }
    let _ = baresip::classify_close(&text);
}

/// The agent's server messages, and the audio they carry in every format:
/// PCM gives one sample per two bytes, µ-law one per byte.
pub fn agent_message(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(agent::ServerMsg::Audio { audio_base_64, .. }) = agent::parse(&text) {
        check_audio(&audio_base_64);
    }
    // The raw input as base64 too: most inputs are not JSON, and audio
    // decoding deserves its own share of the search.
    check_audio(&text);
}

fn check_audio(b64: &str) {
    let (Some(pcm), Some(ulaw)) = (agent::decode_audio(b64, AudioFormat::Pcm(16_000)), agent::decode_audio(b64, AudioFormat::Ulaw8000))
    else {
        return;
    };
    // Against an independent decode of the same text.
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("decode_audio took it, so it is base64");
    assert_eq!(pcm.len(), bytes.len() / 2, "PCM is two bytes a sample");
    assert_eq!(ulaw.len(), bytes.len(), "µ-law is one byte a sample");
    if let Some(pair) = bytes.get(..2) {
        assert_eq!(pcm[0], i16::from_le_bytes([pair[0], pair[1]]), "PCM is little-endian");
    }
}

/// WAV parsing (`cap4 amd FILE`, voicemail messages): never more samples out
/// than the bytes could hold.
pub fn wav(data: &[u8]) {
    if let Ok(samples) = crate::wav::parse_8k_mono(data) {
        // A frame is at least one byte, and the lowest rate accepted
        // (1 kHz) resamples up at most 8 times, give or take the filter's
        // rounding.
        assert!(samples.len() <= data.len() * 8 + 16, "{} samples from {} bytes", samples.len(), data.len());
    }
}

/// An environment with nothing set but a valid API key, so the parse
/// reaches every section.
struct FuzzEnv(HashMap<&'static str, &'static str>);

impl Environment for FuzzEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| (*v).to_string())
    }

    fn credential(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Config parsing: an error names a line that exists in the file, and a
/// table as written (never with a stray bracket).
pub fn config(data: &[u8]) {
    static ENV: OnceLock<FuzzEnv> = OnceLock::new();
    let env = ENV.get_or_init(|| FuzzEnv(HashMap::from([("ELEVENLABS_API_KEY", "sk_fuzz_0123456789abcdef")])));
    let Ok(text) = std::str::from_utf8(data) else { return };
    let result = Config::parse(Path::new("fuzz.toml"), text, env);
    if let Err(err) = result {
        let shown = err.to_string();
        assert!(shown.starts_with("fuzz.toml"), "the error names the file: {shown}");
        if let ConfigError::Invalid { key, line: Some(line), .. } = &err {
            assert!(*line >= 1 && *line <= text.split('\n').count(), "line {line} of a {}-line file", text.lines().count());
            // A table header's line names the table, without its brackets
            // (`[[plan]]` once came out as `[plan`). Other lines' keys are
            // whatever the line says, brackets and all.
            let written = text.split('\n').nth(line - 1).unwrap_or_default().trim();
            if written.starts_with('[') {
                assert!(!key.contains(['[', ']']), "the table on line {line} ({written:?}) named as {key:?}");
            }
        }
    }
}

/// The API's token in the HTTP target: a request without these bytes must
/// never get a 2xx from a path but `/api/health`.
const HTTP_TOKEN: &str = "fuzz-token-5f3a9c1e";

/// What serves the HTTP target's inputs: one runtime and one router for the
/// whole run (as the daemon has), with a controller that knows no calls.
struct HttpBench {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn http_bench() -> &'static HttpBench {
    static BENCH: OnceLock<HttpBench> = OnceLock::new();
    BENCH.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime for the HTTP target");
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        runtime.spawn(async move {
            use crate::controller::ApiRequest;
            while let Some(request) = rx.recv().await {
                // Answers that need no record; the rest are dropped, which
                // the API answers as "stopping" (503).
                match request {
                    ApiRequest::Get { reply, .. } => drop(reply.send(None)),
                    ApiRequest::GetRun { reply, .. } => drop(reply.send(None)),
                    ApiRequest::List { reply, .. } => drop(reply.send(Ok(Vec::new()))),
                    ApiRequest::ListRuns { reply, .. } => drop(reply.send(Vec::new())),
                    _ => {}
                }
            }
        });
        let ctrl = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let router = crate::api::router(tx, Some(crate::environment::Secret::new(HTTP_TOKEN)), ctrl);
        HttpBench { runtime, router }
    })
}

/// HTTP request handling: the input is what a client sends on one
/// connection (then it closes its side). Every response is well formed;
/// every error with a body is the API's JSON error; nothing but
/// `/api/health` answers 2xx without the token; the connection ends.
pub fn http(data: &[u8]) {
    let reply = http_exchange(data);
    // Without the token only `/api/health` answers 2xx: never more 2xx
    // than the input names it.
    let with_token = contains(data, HTTP_TOKEN.as_bytes());
    let health_requests = data.windows(b"/api/health".len()).filter(|w| *w == b"/api/health").count();
    let responses = parse_responses(&reply);
    let successes = responses.iter().filter(|(status, _)| (200..300).contains(status)).count();
    assert!(with_token || successes <= health_requests, "{successes} 2xx without the token, {health_requests} health requests");
    for (status, body) in responses {
        assert!((100..600).contains(&status), "status {status}");
        if status >= 400 && !body.is_empty() {
            let json: serde_json::Value = serde_json::from_slice(&body).expect("an error body is JSON");
            assert!(json["error"]["code"].is_string(), "an error body names its code: {json}");
        }
    }
}

/// The statuses the HTTP target's server answers `data` with, in order.
pub fn http_statuses(data: &[u8]) -> Vec<u16> {
    parse_responses(&http_exchange(data)).into_iter().map(|(status, _)| status).collect()
}

/// Everything the server sends back on a connection that carries `data`.
fn http_exchange(data: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bench = http_bench();
    let service = hyper_util::service::TowerToHyperService::new(bench.router.clone());
    bench.runtime.block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut builder = crate::api::server::connection_builder(&crate::api::server::Limits::default());
        builder.half_close(true);
        let conn = tokio::spawn(builder.serve_connection(hyper_util::rt::TokioIo::new(server), service));
        let exchange = async {
            // Write and read at once: a response can fill the pipe before
            // the request is all written.
            let (mut reader, mut writer) = tokio::io::split(&mut client);
            let write = async {
                let _ = writer.write_all(data).await;
                let _ = writer.shutdown().await;
            };
            let mut reply = Vec::new();
            let read = reader.read_to_end(&mut reply);
            let ((), _) = tokio::join!(write, read);
            reply
        };
        let reply = tokio::time::timeout(std::time::Duration::from_secs(5), exchange).await.expect("the connection ended");
        // A handler's panic ends the connection's task: it must fail the
        // replay as it fails the fuzzer.
        let _ = conn.await.expect("the connection task did not panic");
        reply
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The `(status, body)` of each response in `bytes`, which must be a run
/// of well-formed HTTP/1.x responses with a `content-length` each (hyper's
/// own refusals and the API's answers all have one).
fn parse_responses(mut bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut responses = Vec::new();
    while !bytes.is_empty() {
        let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a response's head ends");
        let head = std::str::from_utf8(&bytes[..head_end]).expect("a response's head is text");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .expect("an HTTP/1.x status line");
        let length = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .expect("a content-length");
        let body_start = head_end + 4;
        let body = bytes.get(body_start..body_start + length).expect("the whole body");
        responses.push((status, body.to_vec()));
        bytes = &bytes[body_start + length..];
    }
    responses
}
