//! What an answered call costs in CPU, cap4 beside Baresip, in the test-bench
//! guest: real Baresip on the ALSA loopback, SIPp streaming a person's
//! recording, `cap4 run` with its audio engine, classifier and the local echo
//! agent (resampling and the agent bridge both ways). Both processes' CPU
//! time, each thread's share and wake-ups per second, and cap4's peak RSS are
//! read from `/proc` over the same stretch of the same call.
//!
//! The test asserts what the call did (a person, the echo heard and
//! answered, a clean hang-up) and that both processes were measured; the
//! figures are printed, never judged (a benchmark, not a timed test).
//! `scripts/bench-cpu` runs it on the release build for 60 s.
//!
//! `#[ignore]`d like every guest test; `scripts/test` runs it.

use crate::support;
use crate::support::daemon;
use crate::support::vmkit;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use daemon::{Daemon, DaemonConfig};
use vmkit::{Guest, in_guest, run_in_guest, status_field};

const WAIT: Duration = Duration::from_secs(30);

/// One thread's counters (clock ticks; context switches).
#[derive(Debug, Clone, Default)]
struct ThreadTimes {
    name: String,
    ticks: u64,
    voluntary: u64,
    involuntary: u64,
}

/// A process's counters at one moment, by thread id.
#[derive(Debug, Clone, Default)]
struct ProcTimes {
    ticks: u64,
    threads: BTreeMap<u32, ThreadTimes>,
}

/// utime + stime of a `/proc/.../stat` line (fields 14 and 15, after the
/// parenthesised name, which may itself hold spaces).
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn sample(pid: u32) -> ProcTimes {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(stat_ticks).unwrap_or(0);
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
        let dir = entry.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let status = read("status");
        threads.insert(
            tid,
            ThreadTimes {
                name: read("comm").trim().to_string(),
                ticks: stat_ticks(&read("stat")).unwrap_or(0),
                voluntary: status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0),
                involuntary: status_field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0),
            },
        );
    }
    ProcTimes { ticks, threads }
}

/// The clock ticks per second of `/proc`'s times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// CPU percent of one core, and per-thread lines (threads grouped by name).
fn report(label: &str, before: &ProcTimes, after: &ProcTimes, seconds: f64, out: &mut String) -> f64 {
    let hz = ticks_per_second();
    let percent = (after.ticks.saturating_sub(before.ticks)) as f64 / hz / seconds * 100.0;
    let _ = writeln!(out, "{label}: {percent:.1} % of a core");
    let mut by_name: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for (tid, t) in &after.threads {
        let b = before.threads.get(tid).cloned().unwrap_or_default();
        let entry = by_name.entry(t.name.clone()).or_default();
        entry.0 += t.ticks.saturating_sub(b.ticks) as f64 / hz / seconds * 100.0;
        entry.1 += (t.voluntary + t.involuntary).saturating_sub(b.voluntary + b.involuntary) as f64 / seconds;
        entry.2 += 1;
    }
    for (name, (cpu, wakeups, count)) in by_name {
        let _ = writeln!(out, "  {name:<16} x{count:<2} {cpu:5.1} %  {wakeups:7.0} switches/s");
    }
    percent
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn cpu_of_an_answered_call_beside_baresip() {
    if !in_guest() {
        let out = run_in_guest(
            module_path!(),
            "cpu_of_an_answered_call_beside_baresip",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 400 },
        );
        for file in ["cpu.txt", "perf.txt"] {
            if let Ok(figures) = std::fs::read_to_string(out.join(file)) {
                eprintln!("{figures}");
            }
        }
        return;
    }
    let seconds: u64 = std::env::var("CAP4_CPU_CALL_S").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let dir = support::TempDir::new("cpu");
    let baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let mut cfg = DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
    // `CAP4_CPU_AI`: another `[ai]` section, to see what each part costs.
    cfg.ai = std::env::var("CAP4_CPU_AI").unwrap_or_else(|_| "[ai]\nprovider = \"echo\"\n".into());
    // `CAP4_CPU_EXTRA`: more of the config (`[recording] enabled = true`, say).
    cfg.extra = std::env::var("CAP4_CPU_EXTRA").unwrap_or_default();
    cfg.log_level = "info";
    cfg.max_duration_s = seconds + 60;
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);

    let ulaw = vmkit::clip_as_ulaw("clip_0008.flac", dir.path());
    let _sipp = vmkit::start_sipp_streaming(dir.path(), 5070, 6000, &ulaw).expect("SIPp");
    let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
    let with_agent = !cfg.ai.contains("enabled = false");
    let talking = support::wait_until(WAIT, Duration::from_millis(50), || {
        let record = cap4.call(&id);
        if with_agent { record["ai"]["provider"] == "echo" } else { record["answer"]["verdict"] == "human" }
    });
    assert!(talking, "the call never reached the agent: {}\nlog:\n{}", cap4.call(&id), cap4.log());

    let (cap4_pid, baresip_pid) = (cap4.pid().expect("cap4 runs"), baresip.0.id());
    let started = Instant::now();
    let (cap4_before, baresip_before) = (sample(cap4_pid), sample(baresip_pid));
    // `CAP4_CPU_PERF=1`: a flat profile of cap4 over the same stretch (Debian's
    // linux-perf on the host's root; symbols need an unstripped CAP4_BIN).
    let profile = std::env::var_os("CAP4_CPU_PERF").map(|_| {
        let data = vmkit::xfer_out().join("perf.data");
        std::process::Command::new("perf")
            .args(["record", "-q", "-F", "999", "-p", &cap4_pid.to_string(), "-o"])
            .arg(&data)
            .args(["--", "sleep", &seconds.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(|child| (vmkit::Proc(child), data))
    });
    std::thread::sleep(Duration::from_secs(seconds));
    let (cap4_after, baresip_after) = (sample(cap4_pid), sample(baresip_pid));
    let elapsed = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{cap4_pid}/status")).unwrap_or_default();
    let peak_rss_kb = status_field(&status, "VmHWM:").unwrap_or(0);

    let (code, ended) = cap4.http("POST", &format!("/api/calls/{id}/hangup"), None);
    assert_eq!(code, 200, "{ended}");
    assert_eq!(ended["outcome"], "local_hangup", "{ended}");
    assert_eq!(ended["answer"]["verdict"], "human", "{ended}");
    let heard = ended["transcript"].as_array().is_some_and(|t| t.iter().any(|l| l["speaker"] == "user"));
    assert!(heard || !with_agent, "the echo heard the caller during the measured call: {ended}");
    let counted = support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["audio"].is_object());
    assert!(counted, "audio counters recorded");
    let audio = cap4.call(&id)["audio"].clone();

    let build = if std::env::var_os("CAP4_BIN").is_some() { "the CAP4_BIN build" } else { "the test (debug) build" };
    let mut out = format!("CPU over {elapsed:.1} s of an answered echo-agent call, cap4 = {build}\n");
    let cap4_cpu = report("cap4", &cap4_before, &cap4_after, elapsed, &mut out);
    let baresip_cpu = report("baresip", &baresip_before, &baresip_after, elapsed, &mut out);
    assert!(cap4_cpu > 0.0 && baresip_cpu > 0.0, "both processes were measured:\n{out}");
    let _ = writeln!(out, "cap4 / baresip = {:.2}", cap4_cpu / baresip_cpu);
    let _ = writeln!(out, "cap4 peak RSS {:.1} MB", peak_rss_kb as f64 / 1024.0);
    let _ = writeln!(
        out,
        "audio: capture xruns {}, playback xruns {}, underruns {}, longest wake-up gap {} ms",
        audio["capture_xruns"], audio["playback_xruns"], audio["underruns"], audio["longest_wakeup_gap_ms"]
    );
    if let Some(Ok((mut perf, data))) = profile {
        let _ = perf.0.wait();
        let report = std::process::Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", "comm,dso,symbol", "--percent-limit", "0.5", "-i"])
            .arg(&data)
            .output();
        if let Ok(report) = report {
            let _ = std::fs::write(vmkit::xfer_out().join("perf.txt"), &report.stdout);
        }
    }
    std::fs::write(vmkit::xfer_out().join("cpu.txt"), &out).expect("write figures");
    eprintln!("{out}");
}
