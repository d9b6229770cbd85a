//! cap4 against a fake Baresip that misbehaves on purpose: garbage payloads,
//! split and merged frames, responses to nothing, silence instead of a response,
//! an oversized frame and bytes that are not netstrings at all. cap4 must log
//! each one, survive, and reconnect where the byte stream cannot be trusted.

use crate::support;
use crate::support::daemon;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cap4::baresip::netstring::{Decoder, encode};
use daemon::{Daemon, DaemonConfig};
use serde_json::{Value, json};
use support::{TempDir, free_port};

const WAIT: Duration = Duration::from_secs(20);

/// One accepted connection from cap4, read through the project's own decoder.
struct Peer {
    stream: TcpStream,
    decoder: Decoder,
    /// Every token cap4 sent on this connection: each must be new.
    tokens: std::collections::HashSet<String>,
}

impl Peer {
    fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = listener.accept().expect("cap4 connects");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        Peer { stream, decoder: Decoder::new(64 * 1024), tokens: Default::default() }
    }

    /// The next command cap4 sends.
    fn command(&mut self) -> Value {
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("cap4 sends valid netstrings") {
                let v: Value = serde_json::from_slice(&frame).expect("cap4 sends JSON");
                for member in ["command", "token"] {
                    assert!(v[member].is_string(), "every member is a string (Baresip 1.0.0 crashes otherwise): {v}");
                }
                let token = v["token"].as_str().unwrap_or_default().to_string();
                assert!(self.tokens.insert(token), "a token used twice (responses would be misattributed): {v}");
                return v;
            }
            let mut buf = [0u8; 4096];
            let n = self.stream.read(&mut buf).expect("read from cap4");
            assert!(n > 0, "cap4 closed the connection unexpectedly");
            self.decoder.push(&buf[..n]);
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to cap4");
    }

    fn respond(&mut self, cmd: &Value, data: &str) -> Vec<u8> {
        encode(json!({"response": true, "ok": true, "data": data, "token": cmd["token"]}).to_string().as_bytes())
    }

    /// Answers the resync cap4 starts every connection with.
    fn resync(&mut self) {
        let list = self.command();
        assert_eq!(list["command"], "listcalls");
        let bytes = self.respond(&list, "\n--- Active calls (0) ---\n\n");
        self.send(&bytes);
        let stat = self.command();
        assert_eq!(stat["command"], "callstat");
        let bytes = self.respond(&stat, "\n(no active calls)\n");
        self.send(&bytes);
        self.reginfo();
    }

    /// The resync's last step: one local account, not registering.
    fn reginfo(&mut self) {
        let reg = self.command();
        assert_eq!(reg["command"], "reginfo");
        let bytes = self.respond(&reg, "\n--- User Agents (1) ---\n> sip:box@127.0.0.1:5062\n\n");
        self.send(&bytes);
    }

    /// True once cap4 has closed its end.
    fn closed_by_cap4(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                // Closed with our bytes unread: the kernel resets instead.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

#[test]
fn garbage_split_and_oversized_frames_are_survived() {
    let dir = TempDir::new("fake-baresip");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut cfg = DaemonConfig::new(port, format!("sip:{{number}}@127.0.0.1:{}", free_port()));
    cfg.token = Some("fake-token-5f3a-9b2c".into());
    let cap4 = Daemon::start(dir.path(), &cfg);

    // Connection 1: garbage payloads in good frames, then a split response.
    let mut peer = Peer::accept(&listener);
    let list = peer.command();
    assert_eq!(list["command"], "listcalls");
    peer.send(b"5:hello,2:[],");
    peer.send(&encode(br#"{"response":true,"ok":true,"data":"","token":"nobody-asked"}"#));
    let answer = peer.respond(&list, "\n--- Active calls (0) ---\n\n");
    for piece in answer.chunks(7) {
        peer.send(piece);
        std::thread::sleep(Duration::from_millis(5));
    }
    let stat = peer.command();
    assert_eq!(stat["command"], "callstat");
    // An event and the response merged into one write.
    let mut merged = encode(br#"{"event":true,"type":"CALL_RINGING","class":"call","id":"not-ours","param":"x"}"#);
    merged.extend(peer.respond(&stat, "\n(no active calls)\n"));
    peer.send(&merged);
    peer.reginfo();
    cap4.wait_baresip_connected(WAIT);

    // Baresip does not answer input it rejects: the dial times out, cap4 cancels
    // to be safe, and the call ends `failed` with the reason.
    let id = cap4.dial("+100200300")["id"].as_str().expect("id").to_string();
    let dial = peer.command();
    assert_eq!((dial["command"].as_str(), dial["params"].as_str()), (Some("dial"), Some(&*cfg.dial_uri.replace("{number}", "+100200300"))));
    let hangup = peer.command();
    assert_eq!(hangup["command"], "hangup", "sent after the dial timed out");
    let record = cap4.wait_status(&id, "ended", WAIT);
    assert_eq!(record["outcome"], "failed");
    assert!(record["reason"].as_str().is_some_and(|r| r.contains("did not answer the dial")), "{record}");

    // An oversized frame: the stream cannot be trusted, cap4 drops it and reconnects.
    peer.send(b"999999999:");
    assert!(peer.closed_by_cap4(), "cap4 closes a connection whose framing broke");
    let mut peer2 = Peer::accept(&listener);
    peer2.resync();
    cap4.wait_baresip_connected(WAIT);

    // Bytes that are not netstrings at all: same.
    peer2.send(b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(peer2.closed_by_cap4());
    let mut peer3 = Peer::accept(&listener);
    peer3.resync();
    cap4.wait_baresip_connected(WAIT);

    // A count no Baresip sends: read as unreadable (callstat alone), not a panic
    // or an allocation of that many calls.
    peer3.send(b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(peer3.closed_by_cap4());
    let mut peer4 = Peer::accept(&listener);
    let list = peer4.command();
    let huge = peer4.respond(&list, "\n--- Active calls (18446744073709551615) ---\n\n");
    peer4.send(&huge);
    let stat = peer4.command();
    assert_eq!(stat["command"], "callstat");
    let answer = peer4.respond(&stat, "\n(no active calls)\n");
    peer4.send(&answer);
    peer4.reginfo();
    cap4.wait_baresip_connected(WAIT);

    // A flood of events while cap4 resyncs: it is not held without bound.
    peer4.send(b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(peer4.closed_by_cap4());
    let mut peer5 = Peer::accept(&listener);
    let _list = peer5.command();
    let mut flood = Vec::new();
    for i in 0..300 {
        flood.extend(encode(format!(r#"{{"event":true,"type":"CALL_RINGING","class":"call","id":"flood-{i}","param":"x"}}"#).as_bytes()));
    }
    peer5.send(&flood);
    assert!(peer5.closed_by_cap4(), "cap4 drops a link that floods it during the resync");
    let mut peer6 = Peer::accept(&listener);
    peer6.resync();
    cap4.wait_baresip_connected(WAIT);

    let mut cap4 = cap4;
    assert!(cap4.is_running());
    let log = cap4.log();
    for expected in [
        "unusable message from Baresip skipped",
        "response to no command in flight",
        "Baresip did not answer a command in time",
        "framing error from Baresip",
        "Baresip ctrl_tcp link lost",
        "could not read Baresip's listcalls answer",
        "events during the resync",
    ] {
        assert!(log.contains(expected), "log lacks {expected:?}:\n{log}");
    }
    assert!(!log.contains("fake-token-5f3a-9b2c"), "the API token reached the log");
}
