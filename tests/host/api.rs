//! The HTTP API's refusals and the CLI, against a real `cap4 run`: bad numbers,
//! bad bodies, unknown calls and paths, the token, Baresip unavailable, config
//! errors with exit code 78, and the CLI's client commands on a real call.

use crate::support;
use crate::support::daemon;

use std::process::Command;
use std::time::Duration;

use daemon::{Daemon, DaemonConfig, http, http_raw};
use support::{Baresip, Sipp, TempDir, free_media_port, free_port, free_rtp_range};

/// A daemon whose Baresip never answers (nothing listens on its ctrl port).
fn lonely(name: &str) -> (TempDir, Daemon) {
    let dir = TempDir::new(name);
    let cfg = DaemonConfig::new(free_port(), "sip:{number}@127.0.0.1:5999".into());
    let cap4 = Daemon::start(dir.path(), &cfg);
    (dir, cap4)
}

#[test]
fn refusals_are_json_with_the_right_status() {
    let (_dir, cap4) = lonely("api-refusals");
    let health = cap4.health();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["baresip"]["connected"], false);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_s"].is_u64());

    let (status, err) = cap4.http("POST", "/api/calls/dial", Some(r#"{"phone_number":"+79123456789"}"#));
    assert_eq!((status, err["error"]["code"].as_str()), (503, Some("baresip_unavailable")));

    for bad in [r#""12""#, r#""+7912 3456""#, r#""1234;transport=tcp""#, "79123456789", r#""sip:1@x""#, "null", r#""x", "other": 1"#] {
        let (status, err) = cap4.http("POST", "/api/calls/dial", Some(&format!(r#"{{"phone_number":{bad}}}"#)));
        assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_phone_number")), "{bad}");
    }
    let (status, _) = cap4.http("POST", "/api/calls/dial", Some(r#"{"number":"+100"}"#));
    assert_eq!(status, 422, "a missing phone_number is a bad number");
    for bad in ["", "{", "[]", "\"+100\""] {
        let (status, err) = cap4.http("POST", "/api/calls/dial", Some(bad));
        assert_eq!((status, err["error"]["code"].as_str()), (400, Some("bad_request")), "{bad:?}");
    }
    let big = format!(r#"{{"phone_number":"+100","pad":"{}"}}"#, "x".repeat(20_000));
    let (status, _) = http_raw(&cap4.api, "POST", "/api/calls/dial", Some(big.as_bytes()), &[]);
    assert_eq!(status, 413);

    for path in ["/api/calls/nope", "/api/calls/nope/recording"] {
        let (status, err) = cap4.http("GET", path, None);
        assert_eq!((status, err["error"]["code"].as_str()), (404, Some("not_found")), "{path}");
    }
    let (status, err) = cap4.http("GET", "/api/nothing", None);
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, err) = cap4.http("DELETE", "/api/calls", None);
    assert_eq!((status, err["error"]["code"].as_str()), (405, Some("method_not_allowed")));
    for query in ["limit=0", "limit=abc", "limit=100000", "color=red"] {
        let (status, _) = cap4.http("GET", &format!("/api/calls?{query}"), None);
        assert_eq!(status, 422, "{query}");
    }
    let (status, _) = cap4.http("GET", "/api/calls?before=unknown", None);
    assert_eq!(status, 404);
    let (status, calls) = cap4.http("GET", "/api/calls", None);
    assert_eq!((status, calls), (200, serde_json::json!([])));
}

#[test]
fn the_token_guards_everything_but_health() {
    let dir = TempDir::new("api-token");
    let mut cfg = DaemonConfig::new(free_port(), "sip:{number}@127.0.0.1:5999".into());
    cfg.token = Some("s3cret-token-7788".into());
    let cap4 = Daemon::start(dir.path(), &cfg);
    let (status, err) = http(&cap4.api, "GET", "/api/calls", None, &[]);
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = http(&cap4.api, "GET", "/api/calls", None, &[("Authorization", "Bearer wrong")]);
    assert_eq!(status, 401);
    let (status, _) = http(&cap4.api, "GET", "/api/calls", None, &[("Authorization", "Bearer s3cret-token-7788")]);
    assert_eq!(status, 200);
    let (status, _) = http(&cap4.api, "GET", "/api/health", None, &[]);
    assert_eq!(status, 200);
    assert!(!cap4.log().contains("s3cret-token-7788"));
}

fn cap4(args: &[&str]) -> (i32, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_cap4")).args(args).env_remove("CAP4_API").env_remove("CAP4_API_TOKEN").output().expect("run cap4");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The write end of a pipe whose read end is already closed: every write fails
/// with EPIPE (Rust ignores SIGPIPE).
fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe(2)");
    // SAFETY: both descriptors were just created and are owned here alone.
    unsafe {
        drop(std::fs::File::from_raw_fd(fds[0]));
        std::process::Stdio::from(std::fs::File::from_raw_fd(fds[1]))
    }
}

#[test]
fn bad_config_exits_78_naming_key_and_line() {
    let dir = TempDir::new("bad-config");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cap4.toml");
    let (code, out, _) = cap4(&["check-config", example]);
    assert_eq!(code, 0, "the shipped example is valid");
    assert!(out.contains(": ok"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[baresip]\nctrl = \"127.0.0.1:4444\"\n\n[call]\nring_timeout_s = 0\n").unwrap();
    for args in [vec!["check-config", bad.to_str().unwrap()], vec!["run", "--config", bad.to_str().unwrap()]] {
        let (code, _, err) = cap4(&args);
        assert_eq!(code, 78, "{args:?}: {err}");
        assert!(err.contains("bad.toml:5") && err.contains("call.ring_timeout_s"), "{err}");
    }
    std::fs::write(&bad, "[api]\nlisten = \"127.0.0.1:8000\"\ntoken = \"hunter2\"\n").unwrap();
    let (code, _, err) = cap4(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(err.contains("bad.toml:3") && err.contains("api.token") && !err.contains("hunter2"), "{err}");
    let (code, _, err) = cap4(&["check-config", dir.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    let (code, _, _) = cap4(&["frobnicate"]);
    assert_eq!(code, 64);
    let (code, _, err) = cap4(&["calls", "--api", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(code, 69, "daemon unreachable: {err}");
}

#[test]
fn cli_dials_lists_shows_and_hangs_up() {
    let dir = TempDir::new("cli");
    let mut sipp = Sipp::start(dir.path(), "answer_wait_bye.xml", free_port(), free_media_port()).expect("SIPp");
    let baresip = Baresip::start(dir.path(), free_port(), free_port(), free_rtp_range(20)).expect("Baresip");
    let cap4d = Daemon::start(dir.path(), &DaemonConfig::new(baresip.ctrl_port(), sipp.dial_uri_template()));
    cap4d.wait_baresip_connected(Duration::from_secs(20));
    let api = cap4d.api.clone();

    let (code, _, err) = cap4(&["dial", "12", "--api", &api]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid_phone_number"), "{err}");

    let (code, out, err) = cap4(&["dial", "+79123456789", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value = serde_json::from_str(&out).expect("dial prints the record as JSON");
    let id = record["id"].as_str().expect("id").to_string();
    cap4d.wait_status(&id, "answered", Duration::from_secs(20));

    let (code, out, _) = cap4(&["calls", "--api", &api]);
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("answered"), "{out}");

    // No id: the active call.
    let (code, out, err) = cap4(&["hangup", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("local_hangup"), "{out}");

    let (code, out, _) = cap4(&["show", &id, "--api", &api]);
    assert_eq!(code, 0);
    assert!(out.contains("CALL_ESTABLISHED") && out.contains("outcome local_hangup"), "{out}");
    // A reader that has gone (`cap4 show ID | grep -q ended`) is no failure.
    let out = Command::new(env!("CARGO_BIN_EXE_cap4"))
        .args(["show", &id, "--api", &api])
        .env_remove("CAP4_API_TOKEN")
        .stdout(closed_pipe())
        .output()
        .expect("run cap4");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, _, err) = cap4(&["hangup", "--api", &api]);
    assert_eq!(code, 1, "nothing left to hang up");
    assert!(err.contains("no active call"), "{err}");
    assert!(sipp.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
}

#[test]
fn a_web_page_can_neither_read_the_history_nor_dial() {
    let (_dir, cap4) = lonely("api-browser");
    // DNS rebinding: the page's own name, now pointing at the box.
    for (method, path) in [("GET", "/api/calls"), ("GET", "/api/health"), ("POST", "/api/calls/dial")] {
        let (status, err) = http(&cap4.api, method, path, Some(r#"{"phone_number":"+79123456789"}"#), &[("Host", "evil.example:8000")]);
        assert_eq!((status, err["error"]["code"].as_str()), (403, Some("host_not_allowed")), "{method} {path}");
    }
    let port = cap4.api.rsplit(':').next().unwrap_or_default().to_string();
    for host in [cap4.api.clone(), format!("localhost:{port}"), format!("[::1]:{port}")] {
        let (status, _) = http(&cap4.api, "GET", "/api/calls", None, &[("Host", &host)]);
        assert_eq!(status, 200, "{host}");
    }
    // A cross-site form or fetch without a preflight: text/plain, a form, nothing.
    for content_type in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let headers: Vec<(&str, &str)> = if content_type.is_empty() { vec![] } else { vec![("Content-Type", content_type)] };
        let (status, _) = http_raw(&cap4.api, "POST", "/api/calls/dial", Some(br#"{"phone_number":"+79123456789"}"#), &headers);
        let (hangup, _) = http_raw(&cap4.api, "POST", "/api/calls/x/hangup", None, &headers);
        if content_type.is_empty() {
            // The helper adds the JSON type when none is given: send it bare.
            let bare = raw_request(
                &cap4.api,
                "POST /api/calls/dial HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            assert!(bare.starts_with("HTTP/1.1 415"), "{bare}");
            continue;
        }
        assert_eq!((status, hangup), (415, 415), "{content_type}");
    }
    let (_, calls) = cap4.http("GET", "/api/calls", None);
    assert_eq!(calls, serde_json::json!([]), "no call was placed");
}

/// Sends `request` as is; the whole answer.
fn raw_request(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn stalled_connections_are_cut_and_the_api_keeps_answering() {
    use std::io::{Read, Write};
    let (_dir, cap4) = lonely("api-stall");
    let before = cap4.open_fds();
    // Half a request line each, then nothing.
    let mut stalled: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(&cap4.api).ok())
        .map(|mut s| {
            let _ = s.write_all(b"GET /api/hea");
            s
        })
        .collect();
    // Until the daemon has taken them all in (accepted or refused): its fd
    // count stops moving.
    let mut during = cap4.open_fds();
    let settled = support::wait_until(Duration::from_secs(4), Duration::from_millis(100), || {
        let now = cap4.open_fds();
        std::mem::replace(&mut during, now) == now && now > before
    });
    assert!(settled, "the daemon never took the connections in ({during} fds, {before} before)");
    assert!(during <= before + 64 + 4, "the daemon holds {during} fds (was {before}): the connection limit does not hold");
    // Within the header timeout (5 s) and a margin, the server has closed every one.
    let started = std::time::Instant::now();
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a stalled connection was not closed by the server: {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(9), "stalled connections lived {:?}", started.elapsed());
    let health = cap4.health();
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(cap4.open_fds() <= before + 2, "fds after the flood: {} (before {before})", cap4.open_fds());
}
