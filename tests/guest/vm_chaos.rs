//! Faults in the test-bench guest, against real Baresip, SIPp and `cap4 run`
//! with the echo agent.
//!
//! A power cut mid-call: the guest's state directory is an ext4 disk (a raw
//! image the host keeps across boots); three calls end (a person, a busy
//! line, a voicemail), a fourth is answered and talking, and the guest's
//! power is cut (sysrq `b`: no sync, no unmount). The guest boots again on
//! the same disk: the journal loads, the three records are exactly as the
//! API showed them before the cut, and the interrupted call is `failed`.
//!
//! Baresip killed mid-call, twenty calls in a row: each ends `failed` with
//! its reason, the link comes back, nothing leaks.
//!
//! Agent hosts that stall (TLS that never finishes, no metadata, silence
//! mid-call): each call ends `ai_failed` in time, with a reason, the red LED
//! lit.
//!
//! `#[ignore]`d like every guest test; `scripts/test` runs it.

use crate::support::daemon;
use crate::support::fake_agent;
use crate::support::vmkit;
use crate::vm_soak::{Kind, one_call};

use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon::{Daemon, DaemonConfig};
use serde_json::{Value, json};
use vmkit::{Ending, Guest, in_guest, run_in_guest_on, sh};

const WAIT: Duration = Duration::from_secs(30);
const MODULES: &str = "snd-aloop,virtio_blk,ext4";

/// Where the host keeps the disk and what the first boot saw (the guest
/// sees the host's files at the same paths).
fn chaos_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos")
}

fn expectations() -> PathBuf {
    chaos_dir().join("power-cut.json")
}

/// The disk, mounted where cap4 keeps its state.
fn mount_state(format: bool) -> PathBuf {
    if format {
        sh("mkfs.ext4 -q -F /dev/vda");
    }
    sh("mkdir -p /mnt/disk && mount -t ext4 /dev/vda /mnt/disk");
    let dir = PathBuf::from("/mnt/disk/cap4");
    std::fs::create_dir_all(&dir).expect("the state directory");
    dir
}

fn start_cap4(dir: &Path) -> Daemon {
    let mut cfg = DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
    cfg.ai = "[ai]\nprovider = \"echo\"\n".into();
    let cap4 = Daemon::start(dir, &cfg);
    cap4.wait_baresip_connected(WAIT);
    cap4
}

#[test]
#[ignore = "boots a QEMU guest twice; run by scripts/test"]
fn a_power_cut_mid_call_keeps_every_complete_record() {
    if !in_guest() {
        let dir = chaos_dir();
        std::fs::create_dir_all(&dir).expect("target/chaos");
        let _ = std::fs::remove_file(expectations());
        let disk = dir.join("power-cut.img");
        let image = std::fs::File::create(&disk).expect("the disk image");
        image.set_len(64 << 20).expect("size the disk image");
        let guest = || Guest { modules: MODULES, systemd: false, timeout_s: 900 };
        let name = "a_power_cut_mid_call_keeps_every_complete_record";
        let out = run_in_guest_on(module_path!(), name, guest(), Some(&disk), Ending::PowerCut);
        std::fs::copy(out.join("cut"), expectations()).expect("keep what the first boot saw");
        run_in_guest_on(module_path!(), name, guest(), Some(&disk), Ending::Passes);
        let _ = std::fs::remove_file(&disk);
        return;
    }
    // The first boot finds no expectations, the second finds them.
    match std::fs::read_to_string(expectations()) {
        Err(_) => calls_then_the_power_goes(),
        Ok(text) => after_the_power_comes_back(&serde_json::from_str(&text).expect("the first boot's notes")),
    }
}

fn calls_then_the_power_goes() -> ! {
    let dir = mount_state(true);
    let _baresip = vmkit::start_baresip(&dir, 5062).expect("Baresip");
    let cap4 = start_cap4(&dir);
    let complete: Vec<Value> = [Kind::Person, Kind::Busy, Kind::Voicemail]
        .into_iter()
        .map(|kind| {
            let id = one_call(&cap4, &dir, kind);
            cap4.call(&id)
        })
        .collect();

    // The fourth call: answered by a person, the agent talking, its record
    // being written (answer, verdict, agent start) when the power goes.
    let ulaw = vmkit::clip_as_ulaw("clip_0008.flac", &dir);
    let _sipp = vmkit::start_sipp_scenario(&dir, "answer_wait_bye.xml", 5070, 6000, &ulaw).expect("SIPp");
    let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
    let talking = crate::support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["ai"]["provider"] == "echo");
    assert!(talking, "the person never reached the agent: {}\nlog:\n{}", cap4.call(&id), cap4.log());
    std::thread::sleep(Duration::from_millis(1_500));
    let live = cap4.call(&id);
    assert_eq!(live["status"], "answered", "{live}");
    vmkit::power_cut(&json!({"complete": complete, "interrupted": id}).to_string())
}

fn after_the_power_comes_back(before: &Value) {
    let dir = mount_state(false);
    let _baresip = vmkit::start_baresip(&dir, 5062).expect("Baresip");
    // It starts: the journal loads.
    let cap4 = start_cap4(&dir);
    let complete = before["complete"].as_array().expect("complete records");
    for record in complete {
        let id = record["id"].as_str().expect("id");
        assert_eq!(&cap4.call(id), record, "a complete record changed across the power cut");
    }
    let id = before["interrupted"].as_str().expect("the interrupted call");
    let cut = cap4.call(id);
    assert_eq!((cut["status"].as_str(), cut["outcome"].as_str()), (Some("ended"), Some("failed")), "{cut}");
    assert!(cut["reason"].as_str().is_some_and(|r| r.contains("cap4 stopped")), "{cut}");
    let (code, list) = cap4.http("GET", "/api/calls", None);
    assert_eq!(code, 200, "{list}");
    let records = list.as_array().or_else(|| list["calls"].as_array()).map_or(0, Vec::len);
    assert_eq!(records, complete.len() + 1, "every call, no more: {list}");
    // And the box goes on: a call after the cut ends as it should.
    one_call(&cap4, &dir, Kind::Busy);
}

/// Baresip SIGKILLed while a person talks to the agent, twenty calls in a
/// row, started again at once (as systemd's `Restart=always` does): each
/// call ends `failed` with the reason, the link comes back each time, the
/// daemon keeps no descriptor of a dead call, and the next call after all
/// that ends as it should.
#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn baresip_killed_during_each_of_twenty_calls() {
    if !in_guest() {
        let guest = Guest { modules: "snd-aloop", systemd: false, timeout_s: 1200 };
        let out = vmkit::run_in_guest(module_path!(), "baresip_killed_during_each_of_twenty_calls", guest);
        if let Ok(figures) = std::fs::read_to_string(out.join("baresip-kill.txt")) {
            eprintln!("{figures}");
        }
        return;
    }
    let calls: usize = std::env::var("CAP4_CHAOS_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = crate::support::TempDir::new("baresip-kill");
    let mut baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let mut cfg = DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
    cfg.ai = "[ai]\nprovider = \"echo\"\n".into();
    cfg.grace_s = 3;
    let cap4 = Daemon::start(dir.path(), &cfg);
    let ulaw = vmkit::clip_as_ulaw("clip_0008.flac", dir.path());
    let mut fds_after_first = 0;
    let mut endings = Vec::new();
    for n in 0..calls {
        cap4.wait_baresip_connected(WAIT);
        let sipp = vmkit::start_sipp_scenario(dir.path(), "answer_wait_bye.xml", 5070, 6000, &ulaw).expect("SIPp");
        let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
        let talking = crate::support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["ai"]["provider"] == "echo");
        assert!(talking, "call {}: the person never reached the agent: {}\nlog:\n{}", n + 1, cap4.call(&id), cap4.log());
        drop(baresip); // SIGKILL, and reaped
        baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip again");
        let ended = cap4.wait_status(&id, "ended", WAIT);
        assert_eq!(ended["outcome"], "failed", "call {}: {ended}\nlog:\n{}", n + 1, cap4.log());
        assert!(ended["reason"].as_str().is_some_and(|r| !r.is_empty()), "call {}: no reason: {ended}", n + 1);
        // The media session closes its devices and reports.
        let closed = crate::support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&id)["audio"].is_object());
        assert!(closed, "call {}: the session never reported its end: {}", n + 1, cap4.call(&id));
        drop(sipp);
        if n == 0 {
            fds_after_first = cap4.open_fds();
        }
        endings.push(format!("call {}: Baresip killed while talking: {} ({})", n + 1, ended["outcome"], ended["reason"]));
    }
    std::fs::write(vmkit::xfer_out().join("baresip-kill.txt"), endings.join("\n")).expect("write the endings");
    cap4.wait_baresip_connected(WAIT);
    assert_eq!(cap4.open_fds(), fds_after_first, "descriptors after the first and the last killed call");
    one_call(&cap4, dir.path(), Kind::Busy);
    let (code, list) = cap4.http("GET", "/api/calls?limit=100", None);
    assert_eq!(code, 200, "{list}");
    let records = list.as_array().or_else(|| list["calls"].as_array()).map_or(0, Vec::len);
    assert_eq!(records, calls + 1, "one record per call");
}

/// How an agent host lets the call down.
#[derive(Debug, Clone, Copy)]
enum BadAgent {
    /// Accepts TCP, never answers the TLS handshake.
    TlsNeverFinishes,
    /// Upgrades the WebSocket, never sends the conversation's metadata.
    NoMetadata,
    /// Starts the conversation, says one thing, then goes silent (no
    /// audio, no pings) with the socket open.
    SilentMidCall,
}

/// Agent hosts that stall, each on a call a person answered: the call ends
/// `ai_failed` within the configured timeout (the connect timeout for the
/// first two, the idle timeout for the third), with a reason, and the red
/// LED shows the error.
#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn a_stalled_agent_host_fails_the_call_in_time_and_says_so() {
    if !in_guest() {
        let guest = Guest { modules: "snd-aloop,gpio-sim", systemd: false, timeout_s: 600 };
        let out = vmkit::run_in_guest(module_path!(), "a_stalled_agent_host_fails_the_call_in_time_and_says_so", guest);
        if let Ok(figures) = std::fs::read_to_string(out.join("bad-agents.txt")) {
            eprintln!("{figures}");
        }
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let sim = vmkit::GpioSim::create("chaos", &["green", "red"]).expect("gpio-sim");
    let dir = crate::support::TempDir::new("bad-agents");
    let _baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let ulaw = vmkit::clip_as_ulaw("clip_0008.flac", dir.path());
    // A TCP listener that accepts and holds every connection, silent.
    let tarpit = std::net::TcpListener::bind("127.0.0.1:0").expect("tarpit");
    let tarpit_port = tarpit.local_addr().expect("tarpit port").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in tarpit.incoming().flatten() {
            held.push(stream);
        }
    });
    const TIMEOUT_MS: u64 = 3_000;
    let mut lines = Vec::new();
    for bad in [BadAgent::TlsNeverFinishes, BadAgent::NoMetadata, BadAgent::SilentMidCall] {
        let fake = runtime.block_on(fake_agent::FakeAgent::start(match bad {
            BadAgent::NoMetadata => fake_agent::FakeConfig { metadata_delay: Duration::from_secs(60), ..Default::default() },
            _ => fake_agent::FakeConfig {
                script: vec![fake_agent::Step::Say { text: "Hello.", ms: 400 }, fake_agent::Step::Sleep(Duration::from_secs(60))],
                ping_every: None,
                ..Default::default()
            },
        }));
        let base_url = match bad {
            BadAgent::TlsNeverFinishes => format!("https://127.0.0.1:{tarpit_port}"),
            _ => fake.base_url(),
        };
        let case_dir = dir.path().join(format!("{bad:?}"));
        std::fs::create_dir_all(&case_dir).expect("case dir");
        let mut cfg = DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
        cfg.ai = format!(
            "[ai]\nprovider = \"elevenlabs\"\nagent_id = \"agent_test\"\nbase_url = \"{base_url}\"\nsigned_url = false\n\
             connect_timeout_ms = {TIMEOUT_MS}\nidle_timeout_ms = {TIMEOUT_MS}\n"
        );
        cfg.extra = format!("[gpio]\nbackend = \"cdev\"\nchip = \"{}\"\nled_green = {{ line = 0 }}\nled_red = {{ line = 1 }}\n", sim.chip);
        let cap4 = Daemon::start(&case_dir, &cfg);
        cap4.wait_baresip_connected(WAIT);
        let _sipp = vmkit::start_sipp_scenario(dir.path(), "answer_wait_bye.xml", 5070, 6000, &ulaw).expect("SIPp");
        let id = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
        // From the human verdict (when the agent is asked for) to the end.
        let human = crate::support::wait_until(WAIT, Duration::from_millis(20), || cap4.call(&id)["answer"]["verdict"] == "human");
        assert!(human, "{bad:?}: no human verdict: {}", cap4.call(&id));
        let verdict_at = std::time::Instant::now();
        let ended = cap4.wait_status(&id, "ended", WAIT);
        let took = verdict_at.elapsed();
        let red = crate::vm_box::watch_led(&sim, 1, Duration::from_millis(1000));
        assert_eq!(ended["outcome"], "ai_failed", "{bad:?}: {ended}\nlog:\n{}", cap4.log());
        let reason = ended["reason"].as_str().unwrap_or_default().to_string();
        assert!(!reason.is_empty(), "{bad:?}: no reason: {ended}");
        // The timeout, plus the silent case's first turn and emulation's slack.
        let limit = Duration::from_millis(TIMEOUT_MS + 3_000);
        assert!(took <= limit, "{bad:?}: ended {} ms after the verdict (timeout {TIMEOUT_MS} ms): {ended}", took.as_millis());
        assert!(red.0 >= 0.9, "{bad:?}: the red LED shows the error: lit {:.0} % of a second", red.0 * 100.0);
        lines.push(format!(
            "{bad:?}: ai_failed {} ms after the human verdict (timeout {TIMEOUT_MS} ms), red LED lit; reason: {reason}",
            took.as_millis()
        ));
        drop(cap4);
        drop(fake);
    }
    std::fs::write(vmkit::xfer_out().join("bad-agents.txt"), lines.join("\n")).expect("write the figures");
    drop(runtime);
}

/// A full disk (the state directory a 1 MiB tmpfs): a call that ends while
/// the disk is full ends in the API at once and reaches the journal when
/// space returns; a dial is refused 507 and places no call; cap4 starts on
/// a full disk; once space returns, calls go on, and after a restart every
/// record is there as it ended. First the store alone: a long call's saves
/// on the full disk leave the room its end needs.
#[test]
#[ignore = "boots a QEMU guest; run by scripts/test"]
fn a_full_disk_refuses_dials_loses_nothing_and_recovers() {
    if !in_guest() {
        let guest = Guest { modules: "snd-aloop", systemd: false, timeout_s: 600 };
        vmkit::run_in_guest(module_path!(), "a_full_disk_refuses_dials_loses_nothing_and_recovers", guest);
        return;
    }
    let dir = crate::support::TempDir::new("disk-full");
    the_reserve_is_kept_for_the_end(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    sh(&format!("mount -t tmpfs -o size=1m tmpfs {}", state.display()));
    let fill = || sh(&format!("dd if=/dev/zero of={}/ballast bs=4k 2>/dev/null || true", state.display()));
    let make_room = || std::fs::remove_file(state.join("ballast")).expect("remove the ballast");
    let _baresip = vmkit::start_baresip(dir.path(), 5062).expect("Baresip");
    let mut cfg = DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
    cfg.ai = "[ai]\nprovider = \"echo\"\n".into();
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    let busy = one_call(&cap4, dir.path(), Kind::Busy);

    // A person talking to the agent when the disk fills; we hang up.
    let ulaw = vmkit::clip_as_ulaw("clip_0008.flac", dir.path());
    let sipp = vmkit::start_sipp_scenario(dir.path(), "answer_wait_bye.xml", 5070, 6000, &ulaw).expect("SIPp");
    let person = cap4.dial("+79123456789")["id"].as_str().expect("id").to_string();
    let talking = crate::support::wait_until(WAIT, Duration::from_millis(50), || cap4.call(&person)["ai"]["provider"] == "echo");
    assert!(talking, "the person never reached the agent: {}", cap4.call(&person));
    fill();
    let (code, body) = cap4.http("POST", &format!("/api/calls/{person}/hangup"), None);
    assert_eq!(code, 200, "{body}");
    let ended = cap4.wait_status(&person, "ended", WAIT);
    assert_eq!(ended["outcome"], "local_hangup", "{ended}");
    drop(sipp);

    // A dial on the full disk: refused, nothing placed.
    let (code, body) = cap4.http("POST", "/api/calls/dial", Some(r#"{"phone_number":"+79123456789"}"#));
    assert_eq!((code, body["error"]["code"].as_str()), (507, Some("storage_error")), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("No space left")), "{body}");

    // A restart on the full disk: cap4 comes up (the API answers).
    drop(cap4);
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    assert!(cap4.health()["status"].is_string());

    // Space again: calls go on, and every record is there as it ended.
    make_room();
    let after = one_call(&cap4, dir.path(), Kind::Busy);
    drop(cap4);
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    for (id, outcome) in [(&busy, "busy"), (&person, "local_hangup"), (&after, "busy")] {
        let record = cap4.call(id);
        assert_eq!(record["outcome"], outcome, "{record}\nlog:\n{}", cap4.log());
    }
}

/// A call record as the store keeps it, growing by `events` timeline lines.
fn store_record(id: &str, status: cap4::call::record::Status, events: usize) -> cap4::call::record::CallRecord {
    use cap4::call::record::{CallRecord, TimelineEntry};
    let line = |n: usize| TimelineEntry { at_ms: n as u64, event: "transcript_saved".into(), detail: Some("x".repeat(200)) };
    CallRecord {
        id: id.into(),
        phone_number: "+100".into(),
        direction: cap4::call::record::CallDirection::Outbound,
        status,
        outcome: None,
        reason: None,
        sip_code: None,
        sip_call_id: None,
        started_at: "2026-01-01T00:00:00.000Z".into(),
        answered_at: None,
        ended_at: None,
        talk_ms: None,
        timeline: (0..events).map(line).collect(),
        answer: None,
        audio: None,
        early_media: None,
        ai: None,
        transcript: Vec::new(),
        plan_run: None,
        attempt: None,
        transfer_to: None,
        recording: None,
    }
}

/// The store's reserve on a real full filesystem (a 1 MiB tmpfs): a long
/// call's saves while the disk is full do not spend the room its end
/// needs; a dial refused there, and its "not placed" end, do not either.
fn the_reserve_is_kept_for_the_end(dir: &Path) {
    use cap4::call::record::{Outcome, Status};
    use cap4::store::Store;
    let state = dir.join("store");
    std::fs::create_dir_all(&state).expect("store dir");
    sh(&format!("mount -t tmpfs -o size=1m tmpfs {}", state.display()));
    let (mut store, _) = Store::open(&state, 0).expect("open");
    store.put(&store_record("long", Status::Answered, 1)).expect("the answer");
    sh(&format!("dd if=/dev/zero of={}/ballast bs=4k 2>/dev/null || true", state.display()));
    let reserve = state.join("calls.reserve");
    // A dial on the full disk: refused; its "not placed" end spends nothing.
    // (Records of over a page: the journal's last page may have room left.)
    let err = store.put(&store_record("dial", Status::Dialing, 20)).expect_err("a full disk, no dial");
    assert!(err.is_disk_full(), "{err}");
    let mut not_placed = store_record("dial", Status::Ended, 21);
    not_placed.outcome = Some(Outcome::Failed);
    assert!(store.put(&not_placed).is_err(), "a refused dial's end spent the reserve");
    // Transcript saves every 10 s of a long call, each the whole record:
    // refused, kept in memory, and the reserve is left alone.
    for n in 20..100 {
        let _ = store.put(&store_record("long", Status::Answered, n));
    }
    assert!(reserve.exists(), "a live call's saves spent the reserve");
    let mut end = store_record("long", Status::Ended, 100);
    end.outcome = Some(Outcome::RemoteHangup);
    store.put(&end).expect("the call's end takes the reserve's room");
    assert!(!reserve.exists());
    drop(store);
    let (store, report) = Store::open(&state, 0).expect("reopen on the full disk");
    assert!(report.interrupted.is_empty(), "{report:?}");
    assert_eq!(store.get("long").map(|r| (r.status, r.outcome)), Some((Status::Ended, Some(Outcome::RemoteHangup))));
    drop(store);
    sh(&format!("umount {}", state.display()));
}
