//! The HTTP API under load while a call is up, in the test-bench guest: real
//! Baresip on the ALSA loopback, SIPp streaming a person's recording, `cap4
//! run` with the echo agent talking, and clients in this process hammering
//! the API on the same (emulated) two cores: first 32 keep-alive clients
//! reading the live call's record, then 32 clients opening a new connection
//! for every request to `/api/health`.
//!
//! Figures printed, never judged (a benchmark): requests and connections per
//! second, p50 and p99 latency, and what the call's audio saw meanwhile
//! (xruns, underruns, the longest wake-up gap). Asserted: every request
//! within the connection limit was answered 200, and the call went on, then
//! ended as hung up. `scripts/bench-api` runs it on the release build.
//!
//! `#[ignore]`d like every guest test; `scripts/test` runs it.

use crate::support;
use crate::support::daemon;
use crate::support::vmkit;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use daemon::{Daemon, DaemonConfig};
use vmkit::{Guest, in_guest, run_in_guest};

const WAIT: Duration = Duration::from_secs(30);
/// Half the API's connection limit (64): clients a box could have, many times over.
const CLIENTS: usize = 32;

/// What one load run saw.
struct Load {
    requests: usize,
    failures: usize,
    latencies_us: Vec<u64>,
    seconds: f64,
}

impl Load {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(at).copied().unwrap_or(0) as f64 / 1000.0
    }

    fn line(&self, what: &str, unit: &str) -> String {
        format!(
            "{what}: {:.0} {unit}/s over {:.1} s ({} requests, {} failed), latency p50 {:.1} ms, p99 {:.1} ms",
            self.requests as f64 / self.seconds,
            self.seconds,
            self.requests,
            self.failures,
            self.percentile(0.50),
            self.percentile(0.99)
        )
    }
}

/// One request on `stream`; true if the answer was a whole 200.
fn request(stream: &mut TcpStream, path: &str, keep_alive: bool) -> bool {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let mut reply = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
            let length =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
            if reply.len() >= end + 4 + length {
                return head.starts_with("http/1.1 200");
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `CLIENTS` threads sending requests for `path` for `span`, one
/// connection each (`keep_alive`) or a new one per request.
fn load(api: &str, path: &str, keep_alive: bool, span: Duration) -> Load {
    let started = Instant::now();
    let until = started + span;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (api, path) = (api.to_string(), path.to_string());
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut latencies) = (0usize, 0usize, Vec::new());
                let mut stream: Option<TcpStream> = None;
                while Instant::now() < until {
                    let sent = Instant::now();
                    if stream.is_none() {
                        stream = TcpStream::connect(&api).ok();
                        if let Some(s) = &stream {
                            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        }
                    }
                    let answered = stream.as_mut().is_some_and(|s| request(s, &path, keep_alive));
                    if answered {
                        ok += 1;
                        latencies.push(sent.elapsed().as_micros() as u64);
                    } else {
                        failed += 1;
                    }
                    if !answered || !keep_alive {
                        stream = None;
                    }
                }
                (ok, failed, latencies)
            })
        })
        .collect();
    let mut load = Load { requests: 0, failures: 0, latencies_us: Vec::new(), seconds: 0.0 };
    for worker in workers {
        let (ok, failed, latencies) = worker.join().expect("a load client");
        load.requests += ok;
        load.failures += failed;
        load.latencies_us.extend(latencies);
    }
    load.seconds = started.elapsed().as_secs_f64();
    load
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn the_api_under_load_while_a_call_is_up() {
    if !in_guest() {
        let out = run_in_guest(
            module_path!(),
            "the_api_under_load_while_a_call_is_up",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 400 },
        );
        if let Ok(figures) = std::fs::read_to_string(out.join("api-load.txt")) {
            eprintln!("{figures}");
        }
        return;
    }
    let seconds: u64 = std::env::var("CAP4_API_LOAD_S").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let dir = support::TempDir::new("api-load");
    let _baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let mut cfg = DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
    cfg.ai = "[ai]\nprovider = \"echo\"\n".into();
    cfg.log_level = "info";
    cfg.max_duration_s = 2 * seconds + 60;
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    let ulaw = vmkit::clip_as_ulaw("clip_0008.flac", dir.path());
    let _sipp = vmkit::start_sipp_streaming(dir.path(), 5070, 6000, &ulaw).expect("SIPp");
    let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
    let talking = support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["ai"]["provider"] == "echo");
    assert!(talking, "the call never reached the agent: {}\nlog:\n{}", cap4.call(&id), cap4.log());

    let span = Duration::from_secs(seconds);
    let reads = load(&cap4.api, &format!("/api/calls/{id}"), true, span);
    let connects = load(&cap4.api, "/api/health", false, span);
    assert_eq!(cap4.call(&id)["status"], "answered", "the call went on under load");
    let (code, ended) = cap4.http("POST", &format!("/api/calls/{id}/hangup"), None);
    assert_eq!((code, ended["outcome"].as_str()), (200, Some("local_hangup")), "{ended}");
    let counted = support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["audio"].is_object());
    assert!(counted, "audio counters recorded");
    let audio = cap4.call(&id)["audio"].clone();

    let build = if std::env::var_os("CAP4_BIN").is_some() { "the CAP4_BIN build" } else { "the test (debug) build" };
    let figures = format!(
        "The API with a call up (echo agent talking), {CLIENTS} clients on the guest's two emulated cores, cap4 = {build}:\n\
         {}\n{}\n\
         the call meanwhile: capture xruns {}, playback xruns {}, underruns {}, longest wake-up gap {} ms",
        reads.line("keep-alive reads of the live call's record", "requests"),
        connects.line("a new connection per /api/health", "connections"),
        audio["capture_xruns"],
        audio["playback_xruns"],
        audio["underruns"],
        audio["longest_wakeup_gap_ms"],
    );
    std::fs::write(vmkit::xfer_out().join("api-load.txt"), &figures).expect("write figures");
    eprintln!("{figures}");
    assert_eq!(reads.failures, 0, "within the connection limit every request is answered:\n{figures}");
    assert_eq!(connects.failures, 0, "within the connection limit every connection is served:\n{figures}");
    assert!(reads.requests > 0 && connects.requests > 0, "{figures}");
}
