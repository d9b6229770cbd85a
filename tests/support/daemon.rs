//! Test support for driving a real `cap4 run` process: writes its config, starts
//! it, talks to its HTTP API with a plain blocking HTTP/1.1 client, and reads its
//! journal and log. Used by `tests/host/calls.rs` and `tests/host/api.rs`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{free_port, wait_until};

/// Settings a test may change in the daemon's config.
pub struct DaemonConfig {
    pub ctrl_port: u16,
    pub dial_uri: String,
    pub ring_timeout_s: u64,
    pub max_duration_s: u64,
    pub grace_s: u64,
    /// Sets `CAP4_API_TOKEN` for the daemon.
    pub token: Option<String>,
    /// More TOML appended to the config (`[gpio]`, `[button]`, ...).
    pub extra: String,
    /// The `[ai]` section. Off by default: on a host without sound the audio
    /// engine cannot start, and an answered call would end `ai_failed`.
    pub ai: String,
    /// `[log] level`: `debug` in tests (the log is evidence), `info` where
    /// the figures should be the shipped default's (benchmarks).
    pub log_level: &'static str,
    /// More environment for the daemon (`ELEVENLABS_API_KEY`, ...).
    pub extra_env: Vec<(String, String)>,
}

impl DaemonConfig {
    pub fn new(ctrl_port: u16, dial_uri: String) -> Self {
        Self {
            ctrl_port,
            dial_uri,
            ring_timeout_s: 20,
            max_duration_s: 60,
            grace_s: 10,
            token: None,
            extra: String::new(),
            ai: "[ai]\nenabled = false\n".into(),
            log_level: "debug",
            extra_env: Vec::new(),
        }
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub api: String,
    dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    token: Option<String>,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts `cap4 run` with a config in `dir` and waits until its API answers.
    pub fn start(dir: &Path, cfg: &DaemonConfig) -> Daemon {
        let api = format!("127.0.0.1:{}", free_port());
        let config_path = dir.join("cap4.toml");
        let text = format!(
            "[baresip]\nctrl = \"127.0.0.1:{}\"\ndial_uri = \"{}\"\ncommand_timeout_ms = 2000\n\
             [call]\nring_timeout_s = {}\nmax_duration_s = {}\nbaresip_grace_s = {}\n\
             [api]\nlisten = \"{api}\"\n[storage]\ndir = \"{}\"\n[log]\nlevel = \"{}\"\n{}\n{}",
            cfg.ctrl_port,
            cfg.dial_uri,
            cfg.ring_timeout_s,
            cfg.max_duration_s,
            cfg.grace_s,
            dir.join("state").display(),
            cfg.log_level,
            cfg.ai,
            cfg.extra
        );
        std::fs::write(&config_path, text).expect("write cap4.toml");
        let mut daemon = Daemon {
            child: None,
            api,
            dir: dir.to_path_buf(),
            config_path,
            log_path: dir.join("cap4.log"),
            token: cfg.token.clone(),
            env: cfg.extra_env.clone(),
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("open cap4.log");
        // `CAP4_BIN`: another build of cap4 (the benchmarks run the release one).
        let bin = std::env::var_os("CAP4_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_cap4").into());
        let mut command = Command::new(bin);
        command.args(["run", "--config"]).arg(&self.config_path).env_remove("JOURNAL_STREAM");
        for legacy in ["CAP4_API_TOKEN", "APP_HOST", "APP_PORT", "APP_LOG_LEVEL", "BARESIP_HOST", "BARESIP_CTRL_TCP_PORT"] {
            command.env_remove(legacy);
        }
        if let Some(token) = &self.token {
            command.env("CAP4_API_TOKEN", token);
        }
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(log)).spawn().expect("spawn cap4");
        self.child = Some(child);
        let api = self.api.clone();
        let up = wait_until(Duration::from_secs(15), Duration::from_millis(20), || TcpStream::connect(&api).is_ok());
        assert!(up, "cap4 API never came up; log:\n{}", self.log());
    }

    /// The daemon's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// File descriptors the daemon holds open now.
    pub fn open_fds(&self) -> usize {
        self.pid().and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok()).map_or(0, |d| d.count())
    }

    /// SIGKILLs the daemon (a crash or power cut, as far as it can tell).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id() as i32;
        send_signal(pid, 15);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Every status the journal recorded for call `id`, in order, without repeats.
    pub fn journal_statuses(&self, id: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.join("state/calls.jsonl")).unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
            if v["id"] == id {
                let status = v["status"].as_str().unwrap_or("?").to_string();
                if out.last() != Some(&status) {
                    out.push(status);
                }
            }
        }
        out
    }

    /// A request to the API, with the bearer token if the daemon has one.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        http(&self.api, method, path, body, &headers)
    }

    /// `POST /api/calls/dial`; asserts 201 and returns the record.
    pub fn dial(&self, number: &str) -> Value {
        let body = serde_json::json!({ "phone_number": number }).to_string();
        let (status, record) = self.http("POST", "/api/calls/dial", Some(&body));
        assert_eq!(status, 201, "dial failed: {record}\nlog:\n{}", self.log());
        assert_eq!(record["status"], "dialing");
        record
    }

    pub fn call(&self, id: &str) -> Value {
        let (status, record) = self.http("GET", &format!("/api/calls/{id}"), None);
        assert_eq!(status, 200, "{record}");
        record
    }

    /// Polls the call until its status is `status`; returns the record.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let reached = wait_until(timeout, Duration::from_millis(25), || {
            last = self.call(id);
            last["status"] == status
        });
        assert!(reached, "call {id} never reached {status}; last: {last}\nlog:\n{}", self.log());
        last
    }

    pub fn health(&self) -> Value {
        let (status, health) = self.http("GET", "/api/health", None);
        assert_eq!(status, 200, "{health}");
        health
    }

    pub fn wait_baresip_connected(&self, timeout: Duration) {
        let ok = wait_until(timeout, Duration::from_millis(25), || self.health()["baresip"]["connected"] == true);
        assert!(ok, "cap4 never connected to Baresip; log:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // The daemon's side of a failed test (its last lines).
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- cap4 log (last 200 lines) ---\n{}", lines[lines.len().saturating_sub(200)..].join("\n"));
        }
    }
}

fn send_signal(pid: i32, signal: i32) {
    // std has no way to send SIGTERM; `kill` the command is always there.
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the JSON body
/// (`Value::Null` if the body is not JSON).
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, body) = http_raw(addr, method, path, body.map(str::as_bytes), headers);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

pub fn http_raw(addr: &str, method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let (status, _, body) = http_exchange(addr, method, path, body, headers);
    (status, body)
}

/// One request; the status, the response's header block (as text) and its body.
pub fn http_exchange(addr: &str, method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let body = body.unwrap_or_default();
    let host = headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("host")).map_or(addr, |(_, v)| *v);
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    let typed = headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    if method == "POST" && !typed {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers.iter().filter(|(name, _)| !name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    // The server may answer (413) and close before reading a large body.
    let _ = stream.write_all(&bytes);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |p| p + 4);
    (status, String::from_utf8_lossy(&response[..split]).into_owned(), response[split..].to_vec())
}
