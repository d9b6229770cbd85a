//! The test bench itself, proven in a QEMU guest (`scripts/vm`): the real ALSA
//! loopback carries audio sample-exact, gpio-sim lines are seen through the GPIO
//! character device with edge events, systemd starts a `Type=notify` unit only
//! after READY and journald has its lines, and Baresip with the project's config
//! carries a SIPp call's audio onto the loopback.
//!
//! Every test here boots a guest, so they are `#[ignore]`d in a plain
//! `cargo test`; `scripts/test` (and so CI) runs them with `--ignored`.

use crate::support::vmkit;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmkit::{GpioSim, Guest, Proc, in_guest, read_wav, run_in_guest, sh, test_signal, wait_for, write_wav};

/// True once ALSA reports the capture substream `pcm` (e.g. `pcm1c/sub0`) running.
fn capture_running(pcm: &str) -> bool {
    std::fs::read_to_string(format!("/proc/asound/Loopback/{pcm}/status")).is_ok_and(|s| s.contains("RUNNING"))
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn audio_loopback_is_sample_exact() {
    if !in_guest() {
        run_in_guest(module_path!(), "audio_loopback_is_sample_exact", Guest { modules: "snd-aloop", systemd: false, timeout_s: 180 });
        return;
    }
    // Guest RAM, not the 9p share: writes there during audio cause slips.
    let reference = test_signal(3.0);
    // Half a second of silence after the signal: the loopback's last period around
    // the writer's close is not exact (measured: 16-32 samples, 44-52 ms before
    // the end of what aplay wrote), so the end of the stream must not be signal.
    let mut played = reference.clone();
    played.extend(std::iter::repeat_n(0i16, 4000));
    write_wav(Path::new("/tmp/ref.wav"), &played).expect("write ref");
    let mut rec = Proc(
        Command::new("arecord")
            .args(["-q", "-D", "hw:Loopback,1,0", "-f", "S16_LE", "-r", "8000", "-c", "1", "-d", "5", "/tmp/cap.wav"])
            .spawn()
            .expect("arecord"),
    );
    assert!(wait_for(Duration::from_secs(10), || capture_running("pcm1c/sub0")), "arecord never started");
    sh("aplay -q -D hw:Loopback,0,0 /tmp/ref.wav");
    assert!(rec.0.wait().expect("arecord").success());
    let captured = read_wav(Path::new("/tmp/cap.wav")).expect("read capture");

    let head = &reference[..64];
    let start = captured.windows(64).position(|w| w == head).expect("the reference's start is in the capture, sample-exact");
    let compare = reference.len();
    assert!(captured.len() >= start + compare, "capture too short: {} from {start}", captured.len());
    let mismatches: Vec<usize> = (0..compare).filter(|&i| captured[start + i] != reference[i]).collect();
    assert!(
        mismatches.is_empty(),
        "aplay -> snd-aloop -> arecord is bit-exact; {} samples differ, first at {:?} of {}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(8)],
        reference.len()
    );
    assert!(captured[..start].iter().all(|&s| s == 0), "before the writer opened, the capture is silence");
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn gpio_sim_lines_through_the_character_device() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "gpio_sim_lines_through_the_character_device",
            Guest { modules: "gpio-sim", systemd: false, timeout_s: 180 },
        );
        return;
    }
    let sim = GpioSim::create("bench", &["button", "led"]).expect("gpio-sim chip");
    assert!(sim.dev_path().exists(), "{} exists", sim.dev_path().display());
    let info = sh(&format!("gpioinfo {}", sim.chip));
    assert!(info.contains("\"button\"") && info.contains("\"led\""), "named lines: {info}");

    // An input line: the "button" pulled up and down, read through the chardev.
    sim.pull(0, true).expect("pull up");
    assert_eq!(sh(&format!("gpioget {} 0", sim.chip)).trim(), "1");
    sim.pull(0, false).expect("pull down");
    assert_eq!(sh(&format!("gpioget {} 0", sim.chip)).trim(), "0");

    // An edge event on the input line.
    let mut mon =
        Command::new("gpiomon").args(["--num-events=1", "--rising-edge", &sim.chip, "0"]).stdout(Stdio::piped()).spawn().expect("gpiomon");
    let requested = wait_for(Duration::from_secs(10), || sh(&format!("gpioinfo {}", sim.chip)).contains("\"gpiomon\""));
    assert!(requested, "gpiomon requested the line");
    sim.pull(0, true).expect("press");
    let done = wait_for(Duration::from_secs(10), || mon.try_wait().ok().flatten().is_some());
    assert!(done, "no edge event arrived");
    let out = mon.wait_with_output().expect("gpiomon output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("RISING EDGE"), "{text}");

    // An output line: a consumer drives the "led"; the simulator reads it.
    let mut set = Proc(Command::new("gpioset").args(["--mode=signal", &sim.chip, "1=1"]).spawn().expect("gpioset"));
    assert!(wait_for(Duration::from_secs(10), || sim.value(1).is_ok_and(|v| v == 1)), "LED line driven high");
    let _ = set.0.kill();
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn systemd_notify_unit_becomes_active_only_after_ready() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "systemd_notify_unit_becomes_active_only_after_ready",
            Guest { modules: "", systemd: true, timeout_s: 240 },
        );
        return;
    }
    std::fs::write(
        "/run/systemd/system/cap4-bench-notify.service",
        "[Service]\nType=notify\nNotifyAccess=all\n\
         ExecStart=/bin/bash -c 'echo bench-before-ready; sleep 2; systemd-notify --ready; echo bench-after-ready; exec sleep 600'\n",
    )
    .expect("write unit");
    sh("systemctl daemon-reload && systemctl start --no-block cap4-bench-notify.service");
    let started = Instant::now();
    let state = || sh("systemctl is-active cap4-bench-notify.service || true").trim().to_string();
    assert!(wait_for(Duration::from_secs(5), || state() == "activating"), "starts as activating: {}", state());
    assert!(wait_for(Duration::from_secs(60), || state() == "active"), "never became active: {}", state());
    assert!(started.elapsed() >= Duration::from_millis(1500), "active before READY was sent");
    let journal = sh("journalctl -u cap4-bench-notify.service --no-pager -o cat");
    assert!(journal.contains("bench-before-ready") && journal.contains("bench-after-ready"), "{journal}");
    sh("systemctl stop cap4-bench-notify.service");
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn baresip_puts_a_sipp_call_on_the_loopback() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "baresip_puts_a_sipp_call_on_the_loopback",
            Guest { modules: "snd-aloop", systemd: false, timeout_s: 240 },
        );
        return;
    }
    let dir = Path::new("/tmp/bench-call");
    std::fs::create_dir_all(dir).expect("dir");
    let ulaw = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sipp/media/hello_8k.ulaw");
    let _sipp = vmkit::start_sipp_streaming(dir, 5070, 6000, &ulaw).expect("SIPp");
    let _baresip = vmkit::start_baresip(dir, 5062).expect("Baresip");
    // Baresip opens hw:Loopback,0,0 once the call has audio; capture its far end.
    vmkit::dial_sipp(5070);
    let mut rec = Proc(
        Command::new("arecord")
            .args(["-q", "-D", "hw:Loopback,1,0", "-f", "S16_LE", "-r", "8000", "-c", "1", "-d", "3", "/tmp/bench-call/rx.wav"])
            .spawn()
            .expect("arecord"),
    );
    assert!(rec.0.wait().expect("arecord").success());
    vmkit::baresip_command("hangup", "", Duration::from_millis(500));
    let rx = read_wav(&dir.join("rx.wav")).expect("capture");
    // 100 ms windows: speech from the remote phone, not silence.
    let loud = rx.chunks(800).filter(|w| (w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len() as f64).sqrt() > 300.0).count();
    assert!(loud >= 10, "expected at least 1 s of speech in 3 s of capture, got {loud} loud windows of 100 ms");
}
