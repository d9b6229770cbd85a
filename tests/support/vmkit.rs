//! Test-bench kit: run a test inside the QEMU guest of `scripts/vm`, and the
//! guest-side helpers those tests use (gpio-sim chips, ALSA loopback, Baresip on
//! the loopback with the project's config, SIPp streaming a recording).
//!
//! Pattern: a bench test is `#[ignore]`d (it boots a guest; `scripts/test` runs
//! the ignored group). On the host it calls [`run_in_guest`], which boots a guest
//! and re-runs the very same test binary and test inside it with `CAP4_IN_GUEST=1`;
//! inside, [`in_guest`] is true and the test body uses the real devices.
//! Guests run one at a time (a process-wide lock): emulation is CPU-bound.

#![allow(dead_code)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

static ONE_GUEST_AT_A_TIME: Mutex<()> = Mutex::new(());

/// True inside the guest.
pub fn in_guest() -> bool {
    std::env::var_os("CAP4_IN_GUEST").is_some()
}

/// How the guest boots.
pub struct Guest<'a> {
    pub modules: &'a str,
    pub systemd: bool,
    pub timeout_s: u32,
}

/// Boots a guest and runs `test` (of `module`: pass `module_path!()`) of the
/// current test binary inside it; panics with the guest's output unless the
/// inner test passed. Returns the files the inner test left in `/xfer/out`.
pub fn run_in_guest(module: &str, test: &str, guest: Guest<'_>) -> PathBuf {
    run_in_guest_on(module, test, guest, None, Ending::Passes)
}

/// How the inner test must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It passes, and the guest powers off.
    Passes,
    /// It cuts the guest's power itself ([`power_cut`]) after leaving
    /// `/xfer/out/cut`: the guest leaves no status.
    PowerCut,
}

/// [`run_in_guest`] with `disk` (a raw image) as the guest's `/dev/vda`,
/// ending as `ending` says.
pub fn run_in_guest_on(module: &str, test: &str, guest: Guest<'_>, disk: Option<&Path>, ending: Ending) -> PathBuf {
    // The harness names a test by its path below the crate: `vm_bench::name`.
    let full_name = match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{test}"),
        None => test.to_string(),
    };
    let _one = ONE_GUEST_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().expect("test binary path");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("cap4-vm-out-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    let mut cmd = Command::new(root.join("scripts/vm"));
    cmd.arg("run").args(["--timeout", &guest.timeout_s.to_string()]).arg("--out").arg(&out);
    if !guest.modules.is_empty() {
        cmd.args(["--modules", guest.modules]);
    }
    if guest.systemd {
        cmd.arg("--systemd");
    }
    if let Some(disk) = disk {
        cmd.arg("--disk").arg(disk);
    }
    // The test's own switches (CAP4_*) go in with it.
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str().filter(|n| n.starts_with("CAP4_") && *n != "CAP4_IN_GUEST") {
            cmd.args(["-e", name]);
        }
    }
    cmd.args(["-e", "CAP4_IN_GUEST", "-e", "RUST_BACKTRACE", "--"])
        .arg(&exe)
        .args(["--exact", &full_name, "--include-ignored", "--nocapture", "--test-threads=1"])
        .env("CAP4_IN_GUEST", "1")
        .env("RUST_BACKTRACE", "1")
        .current_dir(&root);
    let started = Instant::now();
    let output = cmd.output().expect("run scripts/vm");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("[{test}: guest ran {:.1} s]", started.elapsed().as_secs_f64());
    match ending {
        Ending::Passes => {
            assert!(output.status.success(), "{test} failed in the guest ({:?}):\n{text}", output.status.code());
            assert!(text.contains("1 passed"), "{test} did not run in the guest:\n{text}");
        }
        Ending::PowerCut => {
            // 125: the guest left no status (it never got to power off).
            assert_eq!(output.status.code(), Some(125), "{test} should have cut the power:\n{text}");
            assert!(out.join("cut").exists(), "{test} died before it cut the power:\n{text}");
        }
    }
    out
}

/// Cuts the guest's power now, as a pulled plug would: no sync, no unmount
/// (sysrq `b`: reboot at once, which `-no-reboot` makes QEMU's exit); the
/// page cache is lost, what the disk has is kept. Leaves `/xfer/out/cut`
/// first (written and synced: `/xfer` is the host's) so the host knows the
/// test got this far.
pub fn power_cut(note: &str) -> ! {
    use std::io::Write;
    let mut cut = fs::File::create(xfer_out().join("cut")).expect("/xfer/out/cut");
    cut.write_all(note.as_bytes()).and_then(|()| cut.sync_all()).expect("write /xfer/out/cut");
    let _ = fs::write("/proc/sys/kernel/sysrq", "1");
    let _ = fs::write("/proc/sysrq-trigger", "b");
    thread::sleep(Duration::from_secs(30));
    panic!("sysrq b did not cut the power");
}

/// Where a guest test leaves files for the host (`--out` of scripts/vm).
pub fn xfer_out() -> PathBuf {
    PathBuf::from("/xfer/out")
}

/// Polls `cond` until true or `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    cond()
}

pub fn sh(script: &str) -> String {
    let out = Command::new("bash").args(["-c", script]).output().expect("bash");
    assert!(out.status.success(), "`{script}` failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------- gpio-sim --

/// A simulated GPIO chip made through gpio-sim's configfs interface, with named
/// lines. Removed on drop.
pub struct GpioSim {
    dir: PathBuf,
    /// `gpiochipN` of the live chip.
    pub chip: String,
    /// `/sys/devices/platform/gpio-sim.N/gpiochipM`: per-line `sim_gpioK/{pull,value}`.
    sysfs: PathBuf,
}

impl GpioSim {
    /// Creates device `name` with one bank of `names.len()` lines named `names`.
    pub fn create(name: &str, names: &[&str]) -> io::Result<GpioSim> {
        let dir = Path::new("/sys/kernel/config/gpio-sim").join(name);
        fs::create_dir(&dir)?;
        let bank = dir.join("bank0");
        fs::create_dir(&bank)?;
        fs::write(bank.join("num_lines"), names.len().to_string())?;
        for (i, line) in names.iter().enumerate() {
            let l = bank.join(format!("line{i}"));
            fs::create_dir(&l)?;
            fs::write(l.join("name"), line)?;
        }
        fs::write(dir.join("live"), "1")?;
        let chip = fs::read_to_string(bank.join("chip_name"))?.trim().to_string();
        let dev = fs::read_to_string(dir.join("dev_name"))?.trim().to_string();
        let sysfs = Path::new("/sys/devices/platform").join(dev).join(&chip);
        Ok(GpioSim { dir, chip, sysfs })
    }

    /// Pulls input line `offset` up or down, as a button wired to it would.
    pub fn pull(&self, offset: u32, up: bool) -> io::Result<()> {
        fs::write(self.sysfs.join(format!("sim_gpio{offset}/pull")), if up { "pull-up" } else { "pull-down" })
    }

    /// The value a consumer drives on output line `offset` (an LED), or the pull.
    pub fn value(&self, offset: u32) -> io::Result<u8> {
        let text = fs::read_to_string(self.sysfs.join(format!("sim_gpio{offset}/value")))?;
        text.trim().parse().map_err(|_| io::Error::other(format!("bad value {text:?}")))
    }

    pub fn dev_path(&self) -> PathBuf {
        Path::new("/dev").join(&self.chip)
    }
}

impl Drop for GpioSim {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("live"), "0");
        if let Ok(entries) = fs::read_dir(self.dir.join("bank0")) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let _ = fs::remove_dir(self.dir.join("bank0"));
        let _ = fs::remove_dir(&self.dir);
    }
}

// ------------------------------------------------------------------- audio --

/// Writes 8 kHz mono S16LE samples as a WAV file.
pub fn write_wav(path: &Path, samples: &[i16]) -> io::Result<()> {
    let data_len = (samples.len() * 2) as u32;
    let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&8000u32.to_le_bytes());
    bytes.extend_from_slice(&16000u32.to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    fs::write(path, bytes)
}

/// The samples of a 16-bit PCM WAV file's `data` chunk (first channel).
pub fn read_wav(path: &Path) -> io::Result<Vec<i16>> {
    let bytes = fs::read(path)?;
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
        let body = at + 8;
        if id == b"data" {
            let end = (body + len).min(bytes.len());
            return Ok(bytes[body..end].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect());
        }
        at = body + len + (len & 1);
    }
    Err(io::Error::other(format!("{} has no data chunk", path.display())))
}

/// A test signal no loopback could fake: a sweep under pseudo-random noise.
pub fn test_signal(seconds: f64) -> Vec<i16> {
    let n = (seconds * 8000.0) as usize;
    let mut seed: u32 = 0x1234_5678;
    (0..n)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let t = i as f64 / 8000.0;
            let sweep = (2.0 * std::f64::consts::PI * (200.0 + 600.0 * t) * t).sin() * 8000.0;
            let noise = f64::from((seed >> 20) as i32 - 2048);
            (sweep + noise) as i16
        })
        .collect()
}

// --------------------------------------------------------- Baresip & SIPp --

/// A process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Baresip with the project's config (`config/baresip/`, the ALSA loopback
/// device map) from a copy in `dir`, SIP on `sip_port`, ctrl_tcp on 4444.
pub fn start_baresip(dir: &Path, sip_port: u16) -> io::Result<Proc> {
    start_baresip_tuned(dir, sip_port, &[])
}

/// [`start_baresip`] with some of the config's keys set to other values
/// (`(key, value)`; each key must be in the project's config).
pub fn start_baresip_tuned(dir: &Path, sip_port: u16, set: &[(&str, &str)]) -> io::Result<Proc> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let conf = dir.join("baresip");
    fs::create_dir_all(&conf)?;
    let mut config = fs::read_to_string(root.join("config/baresip/config"))?.replace("127.0.0.1:5060", &format!("127.0.0.1:{sip_port}"));
    for (key, value) in set {
        let lines: Vec<String> = config
            .lines()
            .map(|l| if l.split_whitespace().next() == Some(key) { format!("{key} {value}") } else { l.to_string() })
            .collect();
        let joined = lines.join("\n") + "\n";
        if joined == config {
            return Err(io::Error::other(format!("{key} is not in config/baresip/config")));
        }
        config = joined;
    }
    fs::write(conf.join("config"), config)?;
    let accounts = fs::read_to_string(root.join("config/baresip/accounts"))?.replace("127.0.0.1:5060", &format!("127.0.0.1:{sip_port}"));
    fs::write(conf.join("accounts"), accounts)?;
    let log = fs::File::create(dir.join("baresip.log"))?;
    let child =
        Command::new("baresip").arg("-f").arg(&conf).current_dir(dir).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?;
    let up = wait_for(Duration::from_secs(20), || std::net::TcpStream::connect("127.0.0.1:4444").is_ok());
    if !up {
        return Err(io::Error::other("Baresip's ctrl_tcp never listened"));
    }
    Ok(Proc(child))
}

/// A number field of a `/proc/.../status` text (`VmRSS:`, `voluntary_ctxt_switches:`; kB for sizes).
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches(" kB").parse().ok())
}

/// A synthetic-corpus clip (8 kHz mono FLAC under `tests/fixtures/amd/synthetic`)
/// written to `dir` as raw µ-law, what SIPp's rtp_stream sends.
pub fn clip_as_ulaw(name: &str, dir: &Path) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/amd/synthetic").join(name);
    let mut reader = claxon::FlacReader::open(&path).expect("open FLAC");
    assert_eq!(reader.streaminfo().sample_rate, 8000);
    let pcm: Vec<i16> = reader.samples().map(|s| s.expect("FLAC sample") as i16).collect();
    let mut ulaw = vec![0u8; pcm.len()];
    cap4::audio::g711::ulaw_encode_slice(&pcm, &mut ulaw);
    let out = dir.join(name.replace(".flac", ".ulaw"));
    fs::write(&out, ulaw).expect("write ulaw");
    out
}

/// Starts SIPp as the remote phone: answers, then streams `ulaw` (raw µ-law,
/// looped) until our BYE. The scenario is `tests/fixtures/sipp/answer_wait_bye.xml`
/// with its media path replaced.
pub fn start_sipp_streaming(dir: &Path, port: u16, media_port: u16, ulaw: &Path) -> io::Result<Proc> {
    start_sipp_scenario(dir, "answer_wait_bye.xml", port, media_port, ulaw)
}

/// Starts SIPp with `tests/fixtures/sipp/<scenario>`, its media replaced by `ulaw`.
pub fn start_sipp_scenario(dir: &Path, scenario: &str, port: u16, media_port: u16, ulaw: &Path) -> io::Result<Proc> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let scenario =
        fs::read_to_string(root.join("tests/fixtures/sipp").join(scenario))?.replace("media/hello_8k.ulaw", &ulaw.display().to_string());
    let file = dir.join("sipp-stream.xml");
    fs::write(&file, scenario)?;
    spawn_sipp(dir, &file, port, media_port, &[])
}

/// A SIPp UAC on `port` calling the box (`box@127.0.0.1:<box_sip_port>`)
/// with `tests/fixtures/sipp/<scenario>` (an `incoming_*.xml`), its media
/// replaced by `ulaw`; `keys`: the scenario's `-key`s (`caller`, the From
/// user, for all of them).
pub fn call_box_streaming(
    dir: &Path,
    scenario: &str,
    box_sip_port: u16,
    port: u16,
    media_port: u16,
    ulaw: &Path,
    keys: &[(&str, &str)],
) -> io::Result<Proc> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text =
        fs::read_to_string(root.join("tests/fixtures/sipp").join(scenario))?.replace("media/hello_8k.ulaw", &ulaw.display().to_string());
    let file = dir.join("sipp-caller.xml");
    fs::write(&file, text)?;
    let target = format!("127.0.0.1:{box_sip_port}");
    let mut args = vec![target.as_str(), "-s", "box"];
    for (key, value) in keys {
        args.extend(["-key", key, value]);
    }
    spawn_sipp(dir, &file, port, media_port, &args)
}

/// Runs SIPp with scenario `file` for one call on 127.0.0.1 and waits until
/// it listens.
fn spawn_sipp(dir: &Path, file: &Path, port: u16, media_port: u16, extra: &[&str]) -> io::Result<Proc> {
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(file)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-mi", "127.0.0.1", "-mp", &media_port.to_string()])
        .args(extra)
        .args(["-ci", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "120", "-timeout_error"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if !wait_for(Duration::from_secs(10), || udp_bound(port)) {
        return Err(io::Error::other(format!("SIPp did not bind 127.0.0.1:{port}")));
    }
    Ok(Proc(child))
}

/// Starts SIPp answering with no media of its own and echoing our RTP back
/// (`-rtp_echo` cannot share the media socket with `rtp_stream`, so the
/// scenario's rtp_stream action is taken out).
pub fn start_sipp_echo(dir: &Path, port: u16, media_port: u16) -> io::Result<Proc> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let scenario = fs::read_to_string(root.join("tests/fixtures/sipp/answer_wait_bye.xml"))?;
    let (Some(start), Some(end)) = (scenario.find("<nop>"), scenario.find("</nop>")) else {
        return Err(io::Error::other("answer_wait_bye.xml has no rtp_stream <nop>"));
    };
    let plain = format!("{}{}", &scenario[..start], &scenario[end + "</nop>".len()..]);
    let file = dir.join("sipp-echo.xml");
    fs::write(&file, plain)?;
    spawn_sipp(dir, &file, port, media_port, &["-rtp_echo"])
}

/// True once a UDP socket is bound to 127.0.0.1:`port` (SIPp is listening).
pub fn udp_bound(port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/udp")
        .is_ok_and(|table| table.lines().skip(1).any(|l| l.split_whitespace().nth(1) == Some(wanted.as_str())))
}

/// Sends one ctrl_tcp command to Baresip and returns everything it sent back
/// within `wait` (events and the response), as raw text.
pub fn baresip_command(command: &str, params: &str, wait: Duration) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect("127.0.0.1:4444").expect("ctrl_tcp");
    let payload = format!(r#"{{"command":"{command}","params":"{params}","token":"vm-{command}"}}"#);
    s.write_all(format!("{}:{payload},", payload.len()).as_bytes()).expect("write");
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let until = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Dials SIPp on 127.0.0.1:`sipp_port` from Baresip and waits for the call.
pub fn dial_sipp(sipp_port: u16) {
    let dialled = baresip_command("dial", &format!("sip:100@127.0.0.1:{sipp_port}"), Duration::from_secs(5));
    assert!(dialled.contains("CALL_ESTABLISHED"), "{dialled}");
}

// ----------------------------------------------------------- the engine --

/// Captures `seconds` of the caller into memory, optionally running `during`
/// once per 20 ms frame (with the frame count so far).
pub fn capture(
    engine: &mut cap4::audio::AudioEngine,
    seconds: f64,
    mut during: impl FnMut(&mut cap4::audio::AudioEngine, usize),
) -> Vec<i16> {
    let frame = engine.frame_len();
    let frames = (seconds * 50.0) as usize;
    let mut out = Vec::with_capacity(frames * frame);
    let mut buf = vec![0i16; frame];
    let until = Instant::now() + Duration::from_secs_f64(seconds + 5.0);
    let mut got = 0;
    while got < frames && Instant::now() < until {
        if engine.try_recv_frame(&mut buf) {
            out.extend_from_slice(&buf);
            got += 1;
            during(engine, got);
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(got, frames, "the engine delivered {got} of {frames} frames");
    out
}

/// Root mean square of `x` (0 for no samples).
pub fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// A caller on a live incoming call in the guest: real Baresip on 5062, `cap4
/// run` in `[incoming] mode = "agent"` handing callers to the (fake) agent at
/// `agent_url`, and SIPp on 5070 calling from `+15551230001` with
/// `tests/fixtures/sipp/<scenario>`, streaming a person's voice. Dropping it
/// stops all three.
pub struct AgentCall {
    pub cap4: crate::support::daemon::Daemon,
    pub caller: Proc,
    _baresip: Proc,
}

/// The caller number [`AgentCall`] calls from.
pub const AGENT_CALLER: &str = "+15551230001";

impl AgentCall {
    /// `config`: more of `cap4.toml` (after `[incoming] mode = "agent"`);
    /// `keys`: the scenario's `-key`s besides `caller`.
    pub fn start(dir: &Path, agent_url: &str, config: &str, scenario: &str, keys: &[(&str, &str)]) -> AgentCall {
        let baresip = start_baresip(dir, 5062).expect("Baresip");
        let mut cfg = crate::support::daemon::DaemonConfig::new(4444, "sip:{number}@127.0.0.1:5070".into());
        cfg.ai = format!("[ai]\nprovider = \"elevenlabs\"\nagent_id = \"agent_test\"\nbase_url = \"{agent_url}\"\nsigned_url = false\n");
        cfg.extra = format!("[incoming]\nmode = \"agent\"\n{config}");
        let cap4 = crate::support::daemon::Daemon::start(dir, &cfg);
        cap4.wait_baresip_connected(Duration::from_secs(30));
        let ulaw = clip_as_ulaw("clip_0008.flac", dir);
        let mut all_keys = vec![("caller", AGENT_CALLER)];
        all_keys.extend_from_slice(keys);
        let caller = call_box_streaming(dir, scenario, 5062, 5070, 6000, &ulaw, &all_keys).expect("SIPp");
        AgentCall { cap4, caller, _baresip: baresip }
    }

    /// The call's record once it ended (within `timeout`; panics, with the
    /// daemon's log, if it did not).
    pub fn ended_record(&self, timeout: Duration) -> serde_json::Value {
        let mut record = serde_json::Value::Null;
        let ended = crate::support::wait_until(timeout, Duration::from_millis(100), || {
            let (_, calls) = self.cap4.http("GET", "/api/calls", None);
            record = calls[0].clone();
            record["status"] == "ended"
        });
        assert!(ended, "the call never ended: {record}\nlog:\n{}", self.cap4.log());
        record
    }
}
