//! The box as a person and a technician use it, in the test-bench guest: a
//! gpio-sim button starts a call to a SIPp phone, the LED lines follow the call,
//! a long press hangs up; under a real systemd the unit is active only after
//! READY, a stopped main loop is killed by the watchdog and restarted, and
//! `journalctl CALL_ID=<id>` returns one call's lines.
//!
//! `#[ignore]`d like every guest test; `scripts/test` runs them.

use crate::support;
use crate::support::daemon;
use crate::support::vmkit;

use std::path::Path;
use std::time::{Duration, Instant};

use daemon::{Daemon, DaemonConfig, http};
use support::{Baresip, Sipp, TempDir, free_media_port, free_port, free_rtp_range};
use vmkit::{GpioSim, Guest, in_guest, run_in_guest, sh, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// Samples an LED line for `span`; returns the share of samples it was lit and
/// how many times it changed.
pub(crate) fn watch_led(sim: &GpioSim, line: u32, span: Duration) -> (f64, u32) {
    let until = Instant::now() + span;
    let (mut on, mut total, mut changes, mut last) = (0u32, 0u32, 0u32, None);
    while Instant::now() < until {
        let v = sim.value(line).expect("LED value");
        if last.is_some_and(|l| l != v) {
            changes += 1;
        }
        last = Some(v);
        on += u32::from(v == 1);
        total += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    (f64::from(on) / f64::from(total.max(1)), changes)
}

fn press(sim: &GpioSim, hold: Duration) {
    // Active-low button: pressed pulls the line down.
    sim.pull(0, false).expect("press");
    std::thread::sleep(hold);
    sim.pull(0, true).expect("release");
}

fn only_call(cap4: &Daemon) -> serde_json::Value {
    let (status, calls) = cap4.http("GET", "/api/calls", None);
    assert_eq!(status, 200);
    let calls = calls.as_array().cloned().unwrap_or_default();
    assert_eq!(calls.len(), 1, "exactly one call: {calls:?}");
    calls[0].clone()
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn button_runs_its_plan_leds_follow_long_press_cancels_and_hangs_up() {
    if !in_guest() {
        run_in_guest(
            module_path!(),
            "button_runs_its_plan_leds_follow_long_press_cancels_and_hangs_up",
            Guest { modules: "gpio-sim", systemd: false, timeout_s: 300 },
        );
        return;
    }
    let dir = TempDir::new("box");
    let sim = GpioSim::create("box", &["button", "green", "red"]).expect("gpio-sim");
    let sipp = Sipp::start(dir.path(), "answer_wait_bye.xml", free_port(), free_media_port()).expect("SIPp");
    let baresip = Baresip::start(dir.path(), free_port(), free_port(), free_rtp_range(20)).expect("Baresip");
    let mut cfg = DaemonConfig::new(baresip.ctrl_port(), sipp.dial_uri_template());
    cfg.extra = format!(
        "[gpio]\nbackend = \"cdev\"\nchip = \"{}\"\ndebounce_ms = 20\nbutton = {{ line = 0, active_low = true }}\n\
         led_green = {{ line = 1 }}\nled_red = {{ line = 2 }}\n[button]\nplan = \"help\"\n\
         [[plan]]\nname = \"help\"\nnumbers = [\"+79123456789\"]\nattempts = 3\nretry_s = 1\n",
        sim.chip
    );
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);

    // Idle: a slow green heartbeat, red dark.
    let (green, _) = watch_led(&sim, 1, Duration::from_millis(3200));
    let (red, _) = watch_led(&sim, 2, Duration::from_millis(200));
    assert!(green > 0.0 && green < 0.2, "idle heartbeat: green lit {:.0} % of the time", green * 100.0);
    assert_eq!(red, 0.0);

    press(&sim, Duration::from_millis(150));
    let id = support::wait_until(WAIT, Duration::from_millis(20), || {
        cap4.http("GET", "/api/calls", None).1.as_array().is_some_and(|a| !a.is_empty())
    });
    assert!(id, "a short press placed a call; log:\n{}", cap4.log());
    let call = only_call(&cap4);
    let id = call["id"].as_str().expect("id").to_string();
    assert_eq!(call["phone_number"], "+79123456789");
    let run_id = call["plan_run"].as_str().expect("the press ran the button's plan").to_string();
    assert_eq!(call["attempt"], 1);

    // Ringing (1 s in this scenario): green blinks.
    let (_, changes) = watch_led(&sim, 1, Duration::from_millis(700));
    assert!(changes >= 1, "green blinks while dialling/ringing");
    cap4.wait_status(&id, "answered", WAIT);
    // Classification first (no sound card in this guest: `unknown` as soon as
    // the audio engine fails to open, which takes a moment under emulation).
    let classified = support::wait_until(WAIT, Duration::from_millis(20), || cap4.call(&id)["answer"].is_object());
    assert!(classified, "{}", cap4.call(&id));
    std::thread::sleep(Duration::from_millis(100));
    let (green, _) = watch_led(&sim, 1, Duration::from_millis(1000));
    assert_eq!(green, 1.0, "solid green while talking");

    // A short press during the call: ignored by default, and never a second call.
    press(&sim, Duration::from_millis(150));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(only_call(&cap4)["status"], "answered");

    // A long press hangs up while still held.
    sim.pull(0, false).expect("press");
    let ended = support::wait_until(Duration::from_secs(6), Duration::from_millis(20), || cap4.call(&id)["status"] == "ended");
    sim.pull(0, true).expect("release");
    assert!(ended, "long press hung up; log:\n{}", cap4.log());
    let record = cap4.call(&id);
    assert_eq!((record["outcome"].as_str(), record["reason"].as_str()), (Some("local_hangup"), Some("hung up by button")));
    assert!(cap4.log().contains("press=Long"));
    // The long press cancelled the plan run too: no second attempt follows.
    let run = cap4.http("GET", &format!("/api/plans/runs/{run_id}"), None).1;
    assert_eq!(run["state"], "cancelled", "{run}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(cap4.http("GET", "/api/calls", None).1.as_array().map(Vec::len), Some(1), "no attempt after the cancel");
    let (red, _) = watch_led(&sim, 2, Duration::from_millis(500));
    assert_eq!(red, 0.0, "a normal hangup shows no error");
    drop(baresip);
    // Baresip gone: red blinks slowly.
    let (red, changes) = watch_led(&sim, 2, Duration::from_millis(2500));
    assert!(red > 0.2 && changes >= 1, "Baresip not connected: red blinks ({:.0} % lit, {changes} changes)", red * 100.0);
}

/// The installed unit, with test paths: the binary from target/, the config in
/// /run, a short watchdog. Its credential lines stay: with no credentials in
/// /etc/credstore the unit must still start.
fn install_unit(config: &Path) {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/cap4.service")).expect("unit");
    std::fs::write("/run/systemd/system/cap4.service", unit).expect("write unit");
    std::fs::create_dir_all("/run/systemd/system/cap4.service.d").expect("drop-in dir");
    // The binary is copied out of the checkout: one under /tmp or /var/tmp
    // would be hidden by the unit's PrivateTmp.
    let binary = Path::new("/run/cap4-test/cap4");
    std::fs::copy(env!("CARGO_BIN_EXE_cap4"), binary).expect("copy the binary");
    std::fs::write(
        "/run/systemd/system/cap4.service.d/test.conf",
        format!("[Service]\nExecStart=\nExecStart={} run --config {}\nWatchdogSec=4\nRestartSec=1\n", binary.display(), config.display()),
    )
    .expect("drop-in");
    sh("systemctl daemon-reload");
}

fn unit_prop(name: &str) -> String {
    sh(&format!("systemctl show -P {name} cap4.service")).trim().to_string()
}

#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn systemd_ready_watchdog_and_call_id_journal() {
    if !in_guest() {
        run_in_guest(module_path!(), "systemd_ready_watchdog_and_call_id_journal", Guest { modules: "", systemd: true, timeout_s: 400 });
        return;
    }
    let dir = TempDir::new("unit");
    let mut sipp = Sipp::start(dir.path(), "answer_then_remote_bye.xml", free_port(), free_media_port()).expect("SIPp");
    let ctrl = free_port();
    let api = format!("127.0.0.1:{}", free_port());
    std::fs::create_dir_all("/run/cap4-test").expect("dir");
    let config = Path::new("/run/cap4-test/cap4.toml");
    std::fs::write(
        config,
        format!(
            // No sound card in this guest: without [ai] enabled = false an
            // answered call would be hung up (`ai_failed`, no audio).
            "[baresip]\nctrl = \"127.0.0.1:{ctrl}\"\ndial_uri = \"{}\"\n[api]\nlisten = \"{api}\"\n[storage]\ndir = \"/var/lib/cap4\"\n\
             [ai]\nenabled = false\n",
            sipp.dial_uri_template()
        ),
    )
    .expect("config");
    install_unit(config);

    // Baresip is not up yet: the unit waits in "activating" (no READY).
    sh("systemctl start --no-block cap4.service");
    assert!(wait_for(WAIT, || unit_prop("ActiveState") == "activating"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(unit_prop("ActiveState"), "activating", "not active before Baresip is connected");
    let mut baresip = Baresip::start(dir.path(), ctrl, free_port(), free_rtp_range(20)).expect("Baresip");
    assert!(wait_for(WAIT, || unit_prop("ActiveState") == "active"), "active after READY: {}", unit_prop("ActiveState"));
    assert_eq!(unit_prop("StatusText"), "Baresip connected");

    // One call; its lines carry CALL_ID in the journal.
    let (status, record) = http(&api, "POST", "/api/calls/dial", Some(r#"{"phone_number":"+79123456789"}"#), &[]);
    assert_eq!(status, 201, "{record}");
    let id = record["id"].as_str().expect("id").to_string();
    assert!(wait_for(WAIT, || http(&api, "GET", &format!("/api/calls/{id}"), None, &[]).1["status"] == "ended"));
    assert!(sipp.wait_exit(WAIT).is_some_and(|s| s.success()));
    let lines = sh(&format!("journalctl --no-pager -o cat CALL_ID={id}"));
    for expected in ["dialling", "call status", "call ended"] {
        assert!(lines.contains(expected), "journalctl CALL_ID={id} lacks {expected:?}:\n{lines}");
    }
    let others = sh("journalctl --no-pager -o cat -u cap4.service");
    assert!(others.contains("connected to Baresip"), "{others}");
    assert!(!lines.contains("connected to Baresip"), "CALL_ID selects only that call's lines");

    // A hung main loop: the watchdog kills it and systemd starts it again.
    let pid = unit_prop("MainPID");
    sh(&format!("kill -STOP {pid}"));
    let restarted = wait_for(Duration::from_secs(60), || {
        unit_prop("NRestarts").parse::<u32>().unwrap_or(0) >= 1 && unit_prop("ActiveState") == "active" && unit_prop("MainPID") != pid
    });
    assert!(restarted, "not restarted: {} {}", unit_prop("NRestarts"), unit_prop("ActiveState"));
    let journal = sh("journalctl --no-pager -o cat -u cap4.service");
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    // The history survived the kill.
    let (status, calls) = http(&api, "GET", "/api/calls", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(calls.as_array().map(Vec::len), Some(1));
    sh("systemctl stop cap4.service");
    let _ = baresip.kill9();
}
