//! Baresip's receive buffers, measured (issue 5): which `jitter_buffer_delay`
//! and `audio_buffer` the box ships, and what they cost in delay.
//!
//! In the QEMU guest of `scripts/vm`: the engine plays a probe into Baresip,
//! SIPp echoes the RTP straight back (`-rtp_echo`), and the engine captures
//! what Baresip's jitter buffer and player make of it, over a clean loopback
//! network and with netem delaying every packet each way by 20 ± 10 ms or
//! 40 ± 30 ms (uniform; the echo carries the first leg's jitter back, so
//! Baresip's receive side sees ±20 ms and ±60 ms). The probe is a continuous
//! 400 Hz tone with a loud 1 kHz burst every second: a burst's echo gives the
//! round trip, a vanished tone a gap (a buffer ran dry: the caller's voice
//! would have a hole there).
//!
//! Prints a table (round trip p50 / max, gaps, bursts lost, Baresip's own
//! receive buffers from `audio_debug`) and asserts what the shipped setting
//! is chosen for: no burst lost, and under jitter no more gaps than one slip
//! of the emulated guest makes (see the end of the test). By default only the shipped setting runs (about 1.5 minutes); with
//! `CAP4_JITTER_SWEEP=1` every setting in [`SETTINGS`] does (about 8 minutes),
//! reported, not judged: they show what a smaller or larger buffer saves and
//! costs (docs/audio.md has the figures).
//!
//! `cargo test --test guest -- --ignored --nocapture vm_jitter::`
use crate::support::vmkit;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cap4::audio::{AudioConfig, AudioEngine};
use vmkit::{Guest, in_guest, run_in_guest, xfer_out};

const SIP_PORT: u16 = 5062;
const SIPP_PORT: u16 = 5070;
const MEDIA_PORT: u16 = 6000;

/// Frames of 20 ms captured before the probe starts (the call settles).
const LEAD_FRAMES: usize = 25;
const RATE: usize = 8000;
const FRAME: usize = 160;
/// One burst per second, 40 ms long; the probe ends with a second of tone.
const BURST_EVERY: usize = RATE;
const BURST_LEN: usize = 320;
const BURSTS: usize = 15;
const PROBE_LEN: usize = BURSTS * BURST_EVERY + RATE;
const TONE_AMP: f64 = 3000.0;
const BURST_AMP: f64 = 16000.0;

/// (name, jitter_buffer_delay, audio_buffer). The first is the shipped config
/// (checked against config/baresip/config below); "default" is Baresip's.
const SETTINGS: [(&str, &str, &str); 6] = [
    ("shipped", "4-8", "20-160"),
    ("default", "5-10", "20-160"),
    ("3-6", "3-6", "20-160"),
    ("2-5", "2-5", "20-160"),
    ("1-2", "1-2", "20-160"),
    ("2-5/60", "2-5", "60-160"),
];

/// (name, netem arguments; empty: no qdisc).
const NETWORKS: [(&str, &str); 3] = [("clean", ""), ("jitter 20±10 ms", "delay 20ms 10ms"), ("jitter 40±30 ms", "delay 40ms 30ms")];

fn probe() -> Vec<i16> {
    (0..PROBE_LEN)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            let in_burst = i % BURST_EVERY < BURST_LEN && i < BURSTS * BURST_EVERY;
            let (amp, hz) = if in_burst { (BURST_AMP, 1000.0) } else { (TONE_AMP, 400.0) };
            (amp * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
        })
        .collect()
}

/// What one setting on one network did.
#[derive(Debug)]
struct Outcome {
    /// Round trip of each burst that came back, ms.
    round_trips: Vec<f64>,
    bursts_lost: usize,
    /// 10 ms windows where the tone was missing, and how many separate holes.
    gap_windows: usize,
    gaps: usize,
    jbuf: String,
    box_played_p50_ms: f64,
    box_capture_p50_ms: f64,
    xruns: u32,
}

/// Where each burst's echo starts and where the tone vanished. Sample `s` of
/// the probe is sent when capture frame `s / FRAME + LEAD_FRAMES + 1` has
/// arrived, so both live on the capture's sample clock (one card, one clock).
fn analyse(captured: &[i16]) -> (Vec<f64>, usize, usize, usize) {
    let sent_at = |s: usize| s + (LEAD_FRAMES + 1) * FRAME;
    let mut round_trips = Vec::new();
    let mut lost = 0;
    for j in 0..BURSTS {
        let from = sent_at(j * BURST_EVERY);
        let to = (from + BURST_EVERY).min(captured.len().saturating_sub(40));
        match (from..to).step_by(8).find(|&i| vmkit::rms(&captured[i..i + 40]) > 7000.0) {
            Some(on) => round_trips.push((on - from) as f64 * 1000.0 / RATE as f64),
            None => lost += 1,
        }
    }
    // The tone should be there from the first echo on until the probe's end
    // comes back; 100 ms margins either side.
    let (mut gap_windows, mut gaps, mut in_gap) = (0, 0, false);
    if let (Some(first), Some(last)) = (round_trips.first(), round_trips.last()) {
        let start = sent_at(0) + (*first as usize * RATE / 1000) + 800;
        let end = (sent_at(PROBE_LEN) + (*last as usize * RATE / 1000)).saturating_sub(800).min(captured.len());
        for w in captured.get(start..end).unwrap_or(&[]).chunks_exact(80) {
            let hole = vmkit::rms(w) < 500.0;
            gap_windows += usize::from(hole);
            gaps += usize::from(hole && !in_gap);
            in_gap = hole;
        }
    }
    (round_trips, lost, gap_windows, gaps)
}

/// The receive side of Baresip's `audio_debug` (the JSON string's newlines
/// are still escaped in the raw netstring): the player's buffer (`rx: aubuf`)
/// and the jitter buffer's state.
fn baresip_rx_buffers(debug: &str) -> String {
    let lines: Vec<&str> = debug.split("\\n").map(str::trim).collect();
    let rx_aubuf = lines.iter().skip_while(|l| !l.starts_with("rx:")).find(|l| l.starts_with("aubuf"));
    let jbuf = lines.iter().find(|l| l.starts_with("running="));
    match (rx_aubuf, jbuf) {
        (Some(a), Some(j)) => format!("{a}; jbuf {j}"),
        _ => format!("(audio_debug without the rx buffers: {})", debug.chars().take(200).collect::<String>()),
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn set_network(netem: &str) {
    let _ = Command::new("tc").args(["qdisc", "del", "dev", "lo", "root"]).status();
    if !netem.is_empty() {
        let mut args = vec!["qdisc", "add", "dev", "lo", "root", "netem"];
        args.extend(netem.split_whitespace());
        let ok = Command::new("tc").args(&args).status().is_ok_and(|s| s.success());
        assert!(ok, "tc {args:?} failed (sch_netem loaded?)");
    }
}

fn run_one(jbuf: &str, aubuf: &str, netem: &str, dir: &Path) -> Outcome {
    fs::create_dir_all(dir).unwrap();
    set_network(netem);
    let _sipp = vmkit::start_sipp_echo(dir, SIPP_PORT, MEDIA_PORT).expect("SIPp");
    let _baresip = vmkit::start_baresip_tuned(dir, SIP_PORT, &[("jitter_buffer_delay", jbuf), ("audio_buffer", aubuf)]).expect("Baresip");
    vmkit::dial_sipp(SIPP_PORT);
    let mut engine = AudioEngine::start(&AudioConfig::default()).expect("engine on the loopback");
    let signal = probe();
    let seconds = (LEAD_FRAMES + PROBE_LEN / FRAME + 50) as f64 / 50.0;
    // In lockstep with the capture, as an agent streaming in real time.
    let captured = vmkit::capture(&mut engine, seconds, |e, n| {
        if n > LEAD_FRAMES {
            let k = n - LEAD_FRAMES - 1;
            if let Some(chunk) = signal.get(k * FRAME..(k + 1) * FRAME) {
                e.send(chunk);
            }
        }
    });
    let debug = vmkit::baresip_command("audio_debug", "", Duration::from_millis(800));
    let buffers = baresip_rx_buffers(&debug);
    vmkit::baresip_command("hangup", "", Duration::from_millis(500));
    let latency = engine.latency();
    let stats = engine.stop().expect("stop");
    set_network("");
    let (round_trips, bursts_lost, gap_windows, gaps) = analyse(&captured);
    Outcome {
        round_trips,
        bursts_lost,
        gap_windows,
        gaps,
        jbuf: buffers,
        box_played_p50_ms: latency.playback_played_p50_ms,
        box_capture_p50_ms: latency.capture_p50_ms,
        xruns: stats.capture_xruns + stats.playback_xruns,
    }
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn baresip_buffers_under_network_jitter() {
    let shipped = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/baresip/config")).unwrap();
    let value = |key: &str| shipped.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string())).unwrap_or_default();
    assert_eq!((value("jitter_buffer_delay").as_str(), value("audio_buffer").as_str()), (SETTINGS[0].1, SETTINGS[0].2));
    if !in_guest() {
        let guest = Guest { modules: "snd-aloop,sch_netem", systemd: false, timeout_s: 900 };
        let out = run_in_guest(module_path!(), "baresip_buffers_under_network_jitter", guest);
        let table = fs::read_to_string(out.join("jitter.txt")).expect("figures from the guest");
        eprintln!("{table}");
        return;
    }
    let mut table = String::from(
        "setting   jitter_buffer_delay audio_buffer network          | round trip p50  max    | gaps (10 ms windows) | bursts lost | xruns | Baresip\n",
    );
    let sweep = std::env::var_os("CAP4_JITTER_SWEEP").is_some();
    let mut shipped = Vec::new();
    for (name, jbuf, aubuf) in SETTINGS.into_iter().take(if sweep { SETTINGS.len() } else { 1 }) {
        for (net, netem) in NETWORKS {
            let dir = Path::new("/tmp/vm-jitter").join(format!("{name}-{}", netem.is_empty() as u8));
            let o = run_one(jbuf, aubuf, netem, &dir);
            let mut rt = o.round_trips.clone();
            rt.sort_by(f64::total_cmp);
            let _ = writeln!(
                table,
                "{name:<9} {jbuf:<19} {aubuf:<12} {net:<16} | {:>7.0} ms {:>6.0} ms | {:>3} ({:>4})           | {:>2} of {BURSTS}    | {:>5} | {}",
                percentile(&rt, 0.5),
                percentile(&rt, 1.0),
                o.gaps,
                o.gap_windows,
                o.bursts_lost,
                o.xruns,
                o.jbuf
            );
            eprintln!("{name} {net}: {o:?}");
            if name == "shipped" {
                shipped.push(o);
            }
        }
    }
    let o = &shipped[0];
    let _ = writeln!(
        table,
        "the box's own share of each round trip: agent frame sent -> played p50 {:.1} ms, capture hand-off p50 {:.1} ms",
        o.box_played_p50_ms, o.box_capture_p50_ms
    );
    fs::write(xfer_out().join("jitter.txt"), &table).unwrap();
    eprintln!("{table}");
    for (o, (net, _)) in shipped.iter().zip(NETWORKS) {
        assert_eq!(o.bursts_lost, 0, "the shipped buffers lost bursts ({net}): {o:?}");
    }
    // Judged under jitter only: the clean call is the guest's first and has
    // once slipped a frame while the guest settled (3 gaps, the round trip
    // 32 ms longer from then on). Up to 3 gaps allows one such slip; the
    // buffers this guards against leave many more under ±60 ms (2-5: 12 to
    // 15, 1-2: 59 to 81; 3-6: 1 to 2; 4-8 and 5-10: none).
    // An engine xrun (the real-time thread starved by the emulated CPU: the
    // guest has no KVM) punches a hole of its own, whatever Baresip's buffers
    // do, and can echo into two: those are not the buffers' holes. A CI run
    // had 3 xruns and 6 gaps at 20±10 ms, where runs without xruns have 0-2.
    for (o, (net, _)) in shipped.iter().zip(NETWORKS).skip(1) {
        let allowed = 3 + 2 * o.xruns as usize;
        assert!(o.gaps <= allowed, "the shipped buffers left holes in the caller's audio ({net}; {} allowed): {o:?}", allowed);
    }
}
