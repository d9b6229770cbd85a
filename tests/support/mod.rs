//! Integration-test support, shared by both test binaries (`tests/host/`,
//! `tests/guest/`): a real Baresip and a real SIPp on 127.0.0.1 (here), a
//! `cap4 run` daemon (`daemon.rs`), a fake ElevenLabs agent (`fake_agent/`),
//! simulated PCM devices (`sim_pcm.rs`) and the QEMU test bench (`vmkit.rs`).
//!
//! What this module owns:
//! * picking free loopback ports ([`free_port`], [`free_media_port`],
//!   [`free_rtp_range`]) and unique scratch folders ([`TempDir`]);
//! * starting, watching and stopping one Baresip 1.0.0 process per [`Baresip`]
//!   value, with a config written by us (loopback only, `ausine` source, no
//!   player, G.711, `account`, `menu` and `ctrl_tcp` modules);
//! * starting, waiting for and stopping one SIPp 3.6.1 UAS per [`Sipp`] value,
//!   running a scenario from `tests/fixtures/sipp/`;
//! * a polling helper, [`wait_until`].
//!
//! What it promises:
//! * Every address used is 127.0.0.1. (Baresip 1.0.0 still binds its RTP/RTCP
//!   sockets and its DNS client socket to the wildcard address; there is no
//!   config key for that. The SDP it sends says 127.0.0.1.)
//! * No process outlives the value that started it: `Drop` sends SIGKILL to the
//!   child and reaps it. Only the child's own PID is signalled.
//! * [`Baresip::start`] returns only when the `ctrl_tcp` port is listening, and
//!   it never connects to that port itself (see [`Baresip::start`] for why).
//!   [`Sipp::start`] returns only when SIPp's SIP socket is bound.
//! * Nothing outside the repository is read at run time: fixtures come from
//!   `env!("CARGO_MANIFEST_DIR")/tests/fixtures`.
//! * Logs go into the test's folder: `baresip.log` (Baresip's console output),
//!   `sipp-<scenario>-<port>.{messages,errors,stdout}.log`. Keep them after
//!   the test by setting `CAP4_KEEP_TEST_DIRS=1`.
//!
//! Linux only (readiness is read from `/proc/net/{tcp,udp}` and
//! `/proc/<pid>/fd`). Needs the Debian packages `baresip-core` and `sip-tester`.
//! std only; no extra crates.
//!
//! Declare the [`TempDir`] first in a test, so it is dropped (and removed) after
//! the processes that write into it.

#![allow(dead_code)] // shared by the host and the guest test binaries, each uses a part

pub mod daemon;
pub mod fake_agent;
pub mod sim_pcm;
pub mod vmkit;
pub mod webhook_receiver;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the Debian package installs Baresip's modules.
pub const BARESIP_MODULE_PATH: &str = "/usr/lib/baresip/modules";
/// How long [`Baresip::start`] / [`Baresip::restart`] wait for the ctrl port.
pub const BARESIP_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Sipp::start`] waits for SIPp's SIP socket.
pub const SIPP_START_TIMEOUT: Duration = Duration::from_secs(10);
/// SIPp's global `-timeout`: a safety net so a SIPp whose test process died
/// (and so never ran `Drop`) still ends. Longer than any scenario's own wait
/// (60 s). Reaching it makes SIPp exit 255 (`-timeout_error`).
pub const SIPP_GLOBAL_TIMEOUT_SECS: u32 = 120;

// ---------------------------------------------------------------- helpers --

/// Poll `cond` every `poll` until it returns true (then `true`) or `timeout`
/// has passed (then `false`). `cond` is always called at least once, and once
/// more after the deadline.
pub fn wait_until(timeout: Duration, poll: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return cond();
        }
        thread::sleep(poll.min(deadline - now));
    }
}

/// `tests/fixtures` of this crate (absolute).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// `tests/fixtures/sipp` (absolute): the SIPp scenarios and their media.
pub fn sipp_fixtures_dir() -> PathBuf {
    fixtures_dir().join("sipp")
}

/// `tests/fixtures/baresip/traces/<name>` (absolute), e.g. `"e_486_busy_immediately.jsonl"`.
pub fn baresip_trace_path(name: &str) -> PathBuf {
    fixtures_dir().join("baresip").join("traces").join(name)
}

// ------------------------------------------------------------------ ports --

/// Ports handed out by this process, so two tests running in parallel threads
/// of one test binary never get the same one (the kernel may hand an ephemeral
/// port out again as soon as the probing socket is closed).
static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn claim(ports: &[u16]) -> bool {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if ports.iter().any(|p| handed.contains(p)) {
        return false;
    }
    handed.extend_from_slice(ports);
    true
}

fn udp_free(ip: &str, port: u16) -> bool {
    UdpSocket::bind((ip, port)).is_ok()
}

/// A port that is free on 127.0.0.1 for both UDP and TCP right now (bound once
/// with port 0, then released). Use it for Baresip's ctrl and SIP ports and
/// for SIPp's SIP port. It comes from the kernel's ephemeral range, so it
/// never overlaps a range from [`free_rtp_range`]. As with every "free port"
/// helper, another process could take it before it is used; tests keep that
/// window short.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("cannot bind a UDP socket on 127.0.0.1:0");
        let port = udp.local_addr().expect("local_addr of a bound UDP socket").port();
        let tcp_ok = TcpListener::bind(("127.0.0.1", port)).is_ok();
        drop(udp);
        if tcp_ok && claim(&[port]) {
            return port;
        }
    }
    panic!("free_port: found no port free for both UDP and TCP on 127.0.0.1 in 1000 tries");
}

/// A UDP port `p` on 127.0.0.1 for SIPp's `-mp`: SIPp 3.6.1 binds both `p`
/// (audio; `rtp_stream` also sends from it) and `p + 2` (video echo), so
/// `p ..= p + 3` are all checked free.
pub fn free_media_port() -> u16 {
    for _ in 0..1000 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("cannot bind a UDP socket on 127.0.0.1:0");
        let port = udp.local_addr().expect("local_addr of a bound UDP socket").port();
        drop(udp);
        if port > u16::MAX - 3 {
            continue;
        }
        let all: Vec<u16> = (port..=port + 3).collect();
        if all.iter().all(|&p| udp_free("127.0.0.1", p)) && claim(&all) {
            return port;
        }
    }
    panic!("free_media_port: found no 4 consecutive free UDP ports on 127.0.0.1 in 1000 tries");
}

/// An inclusive `(first, last)` range of `len` UDP ports (`len` >= 2, rounded
/// up to even, `first` even) for Baresip's `rtp_ports`, all free right now on
/// the wildcard address (Baresip 1.0.0 binds RTP and RTCP = RTP + 1 to
/// 0.0.0.0). Ranges are taken from 20000..32000, below Linux's default
/// ephemeral range (32768..60999), so they never meet a [`free_port`] result.
///
/// Baresip does retry another port in its range when one is taken (two
/// Baresips sharing 10000-10003 both got a call up; a third failed `dial`
/// with "Address already in use"), but separate ranges keep tests
/// independent. 20 ports are plenty for one call at a time.
pub fn free_rtp_range(len: u16) -> (u16, u16) {
    const LOW: u32 = 20000;
    const HIGH: u32 = 32000;
    let len = u32::from(len.max(2)).div_ceil(2) * 2;
    assert!(len < HIGH - LOW, "free_rtp_range: len {len} too large");
    let span = (HIGH - LOW - len) / 2; // number of even start positions
    // Spread test binaries (different PIDs) and calls within one binary.
    let seed = std::process::id().wrapping_mul(7919);
    for attempt in 0..2000u32 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let start = LOW + 2 * ((seed.wrapping_add(n.wrapping_mul(len / 2 + 1)).wrapping_add(attempt)) % span);
        let first = start as u16;
        let last = (start + len - 1) as u16;
        let mut held = Vec::new();
        let mut ok = true;
        for p in first..=last {
            match UdpSocket::bind(("0.0.0.0", p)) {
                Ok(s) => held.push(s),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        drop(held);
        let all: Vec<u16> = (first..=last).collect();
        if ok && claim(&all) {
            return (first, last);
        }
    }
    panic!("free_rtp_range: no {len} consecutive free UDP ports in {LOW}..{HIGH}");
}

// ---------------------------------------------------------------- TempDir --

/// A fresh folder under `std::env::temp_dir()`, unique per process and call.
/// Removed with everything in it on `Drop`, unless the environment variable
/// `CAP4_KEEP_TEST_DIRS` is set (then its path is printed to stderr).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/cap4-<label>-<pid>-<n>-<nanos>`.
    pub fn new(label: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let safe: String = label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let path = std::env::temp_dir().join(format!("cap4-{safe}-{}-{n}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create test folder {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("CAP4_KEEP_TEST_DIRS").is_some() {
            eprintln!("CAP4_KEEP_TEST_DIRS: kept {}", self.path.display());
            return;
        }
        if thread::panicking() {
            eprintln!("test failed; removing {} (set CAP4_KEEP_TEST_DIRS=1 to keep its logs)", self.path.display());
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ------------------------------------------------------------ /proc probes --

/// `/proc/net/{tcp,udp}` spell 127.0.0.1 as `0100007F`, 0.0.0.0 as `00000000`.
fn proc_net_inodes(table: &str, port: u16, want_state: Option<&str>) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/net/{table}"))?;
    let want_port = format!("{port:04X}");
    let mut inodes = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let Some((addr, p)) = f[1].split_once(':') else {
            continue;
        };
        if p != want_port || !(addr == "0100007F" || addr == "00000000") {
            continue;
        }
        if want_state.is_some_and(|st| f[3] != st) {
            continue;
        }
        inodes.push(f[9].to_string());
    }
    Ok(inodes)
}

/// Does process `pid` hold a socket on `port` in `/proc/net/<table>` (in state
/// `want_state`, e.g. `0A` = TCP LISTEN)?
fn pid_holds_socket(pid: u32, table: &str, port: u16, want_state: Option<&str>) -> io::Result<bool> {
    let inodes = proc_net_inodes(table, port, want_state)?;
    if inodes.is_empty() {
        return Ok(false);
    }
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(entry) = entry else { continue };
        if let Ok(target) = fs::read_link(entry.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                if inodes.iter().any(|i| i == inode) {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

fn kill_and_reap(child: &mut Child) -> io::Result<ExitStatus> {
    // Child::kill sends SIGKILL to this child's PID only; Ok if it has exited already.
    child.kill()?;
    child.wait()
}

// ---------------------------------------------------------------- Baresip --

/// One Baresip process with its own config folder `<dir>/baresip/` and log
/// `<dir>/baresip.log` (stdout and stderr; appended to across restarts).
pub struct Baresip {
    child: Option<Child>,
    config_dir: PathBuf,
    log_path: PathBuf,
    ctrl_port: u16,
    sip_port: u16,
    rtp_range: (u16, u16),
    starts: u32,
}

impl Baresip {
    /// Writes `<dir>/baresip/{config,accounts}`, runs `baresip -f <dir>/baresip`
    /// (working directory `dir`, stdin null, output to `<dir>/baresip.log`) and
    /// waits up to 10 s until its `ctrl_tcp` port listens.
    ///
    /// Readiness is read from `/proc/net/tcp` (a LISTEN socket on
    /// 127.0.0.1:`ctrl_port`) and `/proc/<pid>/fd` (that socket belongs to this
    /// Baresip, not to some other process that grabbed the port). We do not
    /// probe by connecting: `ctrl_tcp` serves one client at a time and a new
    /// connection replaces the old one, so a probe is itself a client
    /// (Baresip logs it, and a probe racing a test's real connection could
    /// end up being the one that wins). Waiting for the SIP UDP port would be
    /// too early: SIP is bound in `ua_init`, before the `module_app` modules
    /// (menu, ctrl_tcp) are loaded. If `/proc/net/tcp` cannot be read, the
    /// "baresip is ready." log line (printed after all modules are loaded;
    /// Baresip's log output reaches the file line by line) is used instead.
    ///
    /// Baresip binds its SIP port for UDP and TCP and the next one for TLS;
    /// a port checked free can be taken before Baresip binds it (another
    /// test's ephemeral source port: seen in CI as exit 98, "Address already
    /// in use" for SIP/TLS). Then the start is tried again on another SIP
    /// port (nothing outside Baresip knows that port).
    pub fn start(dir: &Path, ctrl_port: u16, sip_port: u16, rtp_range: (u16, u16)) -> io::Result<Baresip> {
        Self::start_with_account(dir, ctrl_port, sip_port, rtp_range, None)
    }

    /// [`Baresip::start`] with its one account registering at a registrar on
    /// 127.0.0.1:`registrar_port` (`sip:box@127.0.0.1:<port>`, every 6 s,
    /// `auth_pass` = `password`).
    pub fn start_registering(
        dir: &Path,
        ctrl_port: u16,
        sip_port: u16,
        rtp_range: (u16, u16),
        registrar_port: u16,
        password: &str,
    ) -> io::Result<Baresip> {
        let account = format!("<sip:box@127.0.0.1:{registrar_port}>;auth_pass={password};regint=6;call_transfer=no;audio_codecs=PCMU,PCMA");
        Self::start_with_account(dir, ctrl_port, sip_port, rtp_range, Some(&account))
    }

    /// [`Baresip::start`] with `account` as its accounts file's one line (`None`: the local one).
    pub fn start_with_account(
        dir: &Path,
        ctrl_port: u16,
        sip_port: u16,
        rtp_range: (u16, u16),
        account: Option<&str>,
    ) -> io::Result<Baresip> {
        let mut sip_port = sip_port;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_on(dir, ctrl_port, sip_port, rtp_range, account) {
                Err(err)
                    if attempt < 4
                        && err.to_string().contains("Address already in use")
                        && !err.to_string().contains(&format!(":{ctrl_port})")) =>
                {
                    sip_port = free_port();
                }
                other => return other,
            }
        }
    }

    fn start_on(dir: &Path, ctrl_port: u16, sip_port: u16, rtp_range: (u16, u16), account: Option<&str>) -> io::Result<Baresip> {
        let config_dir = dir.join("baresip");
        fs::create_dir_all(&config_dir)?;
        fs::write(config_dir.join("config"), config_text(ctrl_port, sip_port, rtp_range))?;
        let accounts = match account {
            Some(line) => format!("# CAP4 integration test account, registering.\n{line}\n"),
            None => format!(
                "# CAP4 integration test account: local only, never registers.\n\
                 <sip:box@127.0.0.1:{sip_port}>;regint=0;call_transfer=no;audio_codecs=PCMU,PCMA\n"
            ),
        };
        fs::write(config_dir.join("accounts"), accounts)?;
        let mut baresip = Baresip { child: None, config_dir, log_path: dir.join("baresip.log"), ctrl_port, sip_port, rtp_range, starts: 0 };
        baresip.spawn()?;
        Ok(baresip)
    }

    fn spawn(&mut self) -> io::Result<()> {
        self.starts += 1;
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log_path)?;
        if self.starts > 1 {
            writeln!(log, "\n===== test harness: baresip start #{} =====", self.starts)?;
        }
        let log_err = log.try_clone()?;
        let workdir = self.config_dir.parent().unwrap_or(&self.config_dir).to_path_buf();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&self.config_dir)
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run `baresip` (apt-get install baresip-core): {e}")))?;
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + BARESIP_START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(io::Error::other(format!("baresip exited during start-up ({status}); log tail:\n{}", tail(&self.log(), 3000))));
            }
            let ready = match pid_holds_socket(pid, "tcp", self.ctrl_port, Some("0A")) {
                Ok(ready) => ready,
                Err(_) => self.log().matches("baresip is ready.").count() >= self.starts as usize,
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(mut child) = self.child.take() {
                    let _ = kill_and_reap(&mut child);
                }
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "baresip did not listen on ctrl port 127.0.0.1:{} within {:?}; log tail:\n{}",
                        self.ctrl_port,
                        BARESIP_START_TIMEOUT,
                        tail(&self.log(), 3000)
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// PID of the running Baresip. Panics if it was killed and not restarted.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("Baresip::pid: baresip is not running (kill9 without restart?)").id()
    }

    /// `Some(status)` if the process has exited (e.g. crashed), `None` while it runs
    /// or after [`Baresip::kill9`].
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && matches!(self.try_wait(), Ok(None))
    }

    /// SIGKILL (no BYE goes out, no event on ctrl_tcp: the client just sees
    /// EOF) and reap. Errors if it is not running.
    pub fn kill9(&mut self) -> io::Result<ExitStatus> {
        let mut child = self.child.take().ok_or_else(|| io::Error::other("Baresip::kill9: baresip is not running"))?;
        kill_and_reap(&mut child)
    }

    /// Start again with the same config and ports (SIGKILLs the old process
    /// first if it still runs). Waits for the ctrl port like [`Baresip::start`].
    /// Re-listening on the same ctrl port right after a SIGKILL works, even
    /// with the old client connection still half-open (measured: ~40 ms).
    pub fn restart(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child)?;
        }
        self.spawn()
    }

    /// Everything Baresip printed so far (all starts), lossy UTF-8. Note: while
    /// a call is up, menu.so adds a status line ("[0:00:01] audio=...") about
    /// every 100 ms.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `sip:box@127.0.0.1:<sip_port>`, as it appears in events' `accountaor`.
    pub fn account_aor(&self) -> String {
        format!("sip:box@127.0.0.1:{}", self.sip_port)
    }

    pub fn ctrl_port(&self) -> u16 {
        self.ctrl_port
    }

    /// `127.0.0.1:<ctrl_port>`, for `TcpStream::connect` or the CAP4 config.
    pub fn ctrl_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ctrl_port)
    }

    pub fn sip_port(&self) -> u16 {
        self.sip_port
    }

    pub fn rtp_range(&self) -> (u16, u16) {
        self.rtp_range
    }

    /// The folder holding `config` and `accounts`.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill_and_reap(&mut child);
        }
    }
}

/// Our Baresip 1.0.0 config (see tests/fixtures/baresip/README.md and the CAP4
/// reference notes for why each line is there).
fn config_text(ctrl_port: u16, sip_port: u16, (rtp_lo, rtp_hi): (u16, u16)) -> String {
    format!(
        "# Written by tests/support/mod.rs for one CAP4 integration test.\n\
         poll_method epoll\n\
         # SIP (UDP and TCP) on loopback only; SDP address pinned to loopback.\n\
         sip_listen 127.0.0.1:{sip_port}\n\
         net_interface 127.0.0.1\n\
         call_local_timeout 120\n\
         # One call at a time, as config/baresip/config: a caller during a call gets 486 Max Calls.\n\
         call_max_calls 1\n\
         # No sound card: 440 Hz sine; ausine in 1.0.0 only runs at 48 kHz stereo.\n\
         audio_source ausine,440\n\
         ausrc_srate 48000\n\
         ausrc_channels 2\n\
         # No audio_player and no player module: received audio is decoded and dropped.\n\
         audio_level no\n\
         rtp_ports {rtp_lo}-{rtp_hi}\n\
         rtcp_mux no\n\
         rtp_stats no\n\
         module_path {BARESIP_MODULE_PATH}\n\
         module g711.so\n\
         module ausine.so\n\
         # module_app, not module_tmp: Baresip 2.11 removed module_tmp.\n\
         module_app account.so\n\
         # menu.so registers dial/hangup/accept/listcalls/...; ctrl_tcp only carries them.\n\
         module_app menu.so\n\
         module_app ctrl_tcp.so\n\
         ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n\
         ringback_disabled yes\n"
    )
}

// ------------------------------------------------------------------- Sipp --

/// One SIPp process running `tests/fixtures/sipp/<scenario>`: a UAS the box
/// calls ([`Sipp::start`]) or a UAC calling the box ([`Sipp::call_box`]).
pub struct Sipp {
    child: Option<Child>,
    status: Option<ExitStatus>,
    scenario: String,
    port: u16,
    media_port: u16,
    message_log: PathBuf,
    error_log: PathBuf,
    stdout_log: PathBuf,
}

impl Sipp {
    /// Runs
    /// `sipp -sf <fixtures>/sipp/<scenario> -i 127.0.0.1 -p <port> -mi 127.0.0.1
    /// -mp <media_port> -ci 127.0.0.1 -m 1 -nostdin -timeout 120s -timeout_error
    /// -trace_msg -message_file .. -trace_err -error_file ..` with the working
    /// directory `tests/fixtures/sipp` (so `media/hello_8k.ulaw` resolves) and
    /// waits until SIPp's SIP UDP socket is bound (a few ms after spawn; an
    /// INVITE sent earlier would get an ICMP port-unreachable).
    ///
    /// `media_port` and `media_port + 2` are bound by SIPp: use [`free_media_port`].
    /// `-ci 127.0.0.1` keeps SIPp's remote-control socket on loopback (it takes
    /// 8888, or the next free port, by itself).
    pub fn start(dir: &Path, scenario: &str, port: u16, media_port: u16) -> io::Result<Sipp> {
        Self::start_for(dir, scenario, port, media_port, 1)
    }

    /// [`Sipp::start`] for `calls` calls in a row (`-m calls`).
    pub fn start_for(dir: &Path, scenario: &str, port: u16, media_port: u16, calls: u32) -> io::Result<Sipp> {
        Self::spawn(dir, scenario, port, media_port, calls, &[])
    }

    /// A SIPp UAC on `port` calling the box: `<scenario>` (an `incoming_*.xml`)
    /// sends its INVITE to `box@127.0.0.1:<box_sip_port>` with the From user
    /// `caller` (`-key caller`); `talk_ms` is `-d` (the talk or ring time of
    /// scenarios that have one). The call starts at once.
    pub fn call_box(
        dir: &Path,
        scenario: &str,
        port: u16,
        media_port: u16,
        box_sip_port: u16,
        caller: &str,
        talk_ms: u32,
    ) -> io::Result<Sipp> {
        let target = format!("127.0.0.1:{box_sip_port}");
        let talk = talk_ms.to_string();
        Self::spawn(dir, scenario, port, media_port, 1, &[&target, "-s", "box", "-key", "caller", caller, "-d", &talk])
    }

    fn spawn(dir: &Path, scenario: &str, port: u16, media_port: u16, calls: u32, extra: &[&str]) -> io::Result<Sipp> {
        let scenario_path = sipp_fixtures_dir().join(scenario);
        if !scenario_path.is_file() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no SIPp scenario {}", scenario_path.display())));
        }
        fs::create_dir_all(dir)?;
        let stem = scenario.trim_end_matches(".xml");
        let base = format!("sipp-{stem}-{port}");
        let message_log = dir.join(format!("{base}.messages.log"));
        let error_log = dir.join(format!("{base}.errors.log"));
        let stdout_log = dir.join(format!("{base}.stdout.log"));
        let out = File::create(&stdout_log)?;
        let err = out.try_clone()?;
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&scenario_path)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mi", "127.0.0.1", "-mp", &media_port.to_string()])
            .args(["-ci", "127.0.0.1"])
            .args(["-m", &calls.to_string(), "-nostdin"])
            .args(["-timeout", &format!("{SIPP_GLOBAL_TIMEOUT_SECS}s"), "-timeout_error"])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&message_log)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&error_log)
            .args(extra)
            .current_dir(sipp_fixtures_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run `sipp` (apt-get install sip-tester): {e}")))?;
        let pid = child.id();
        let mut sipp =
            Sipp { child: Some(child), status: None, scenario: scenario.to_string(), port, media_port, message_log, error_log, stdout_log };

        let deadline = Instant::now() + SIPP_START_TIMEOUT;
        loop {
            if let Some(status) = sipp.try_wait()? {
                return Err(io::Error::other(format!(
                    "sipp ({scenario}) exited during start-up ({status}); output:\n{}\n{}",
                    tail(&sipp.output(), 3000),
                    tail(&sipp.error_log(), 2000)
                )));
            }
            match pid_holds_socket(pid, "udp", port, None) {
                Ok(true) => return Ok(sipp),
                Ok(false) => {}
                // No /proc: fall back to a short fixed grace period.
                Err(_) => {
                    thread::sleep(Duration::from_millis(300));
                    return Ok(sipp);
                }
            }
            if Instant::now() >= deadline {
                sipp.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("sipp ({scenario}) did not bind 127.0.0.1:{port} within {SIPP_START_TIMEOUT:?}"),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.status = status;
            self.child = None;
        }
        Ok(status)
    }

    /// Waits up to `timeout` for SIPp to exit; `Some(status)` once it has (also
    /// on later calls), `None` if it still runs. Exit codes: 0 the scenario ran
    /// to the end, 1 the call failed (unexpected message or a `recv` timeout),
    /// 255 the global timeout or a fatal error; killed by us: signal 9.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, Duration::from_millis(20), || {
            status = self.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// SIGKILL and reap, if it still runs. Returns the exit status (the
    /// earlier one if it had already exited; `None` only if reaping failed).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(mut child) = self.child.take() {
            if let Ok(status) = kill_and_reap(&mut child) {
                self.status = Some(status);
            }
        }
        self.status
    }

    /// SIPp's message log so far: every SIP message it received and sent, each
    /// after a `----- <timestamp>` line and "UDP message received [n] bytes :"
    /// or "UDP message sent (n bytes):". Written as it happens, so it can be
    /// read while SIPp runs. E.g. `sipp.message_log().contains("\nCANCEL sip:")`.
    pub fn message_log(&self) -> String {
        read_lossy(&self.message_log)
    }

    /// Unexpected messages and errors SIPp logged (`-trace_err`). Not a failure
    /// signal by itself: a `recv` timeout that jumps to a label on purpose is
    /// logged here too (early_media_then_answer.xml does that when no CANCEL
    /// comes in its first 2 s). Use the exit status for pass/fail.
    pub fn error_log(&self) -> String {
        read_lossy(&self.error_log)
    }

    /// SIPp's stdout/stderr (its final statistics screen is printed at exit).
    pub fn output(&self) -> String {
        read_lossy(&self.stdout_log)
    }

    /// Request lines and status lines in the message log, in order, e.g.
    /// `["INVITE sip:x@127.0.0.1:5070 SIP/2.0", "SIP/2.0 486 Busy Here", "ACK sip:..."]`.
    pub fn sip_first_lines(&self) -> Vec<String> {
        self.message_log()
            .lines()
            .filter(|l| {
                l.starts_with("SIP/2.0 ")
                    || (l.ends_with(" SIP/2.0")
                        && l.split(' ').next().is_some_and(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_uppercase())))
            })
            .map(str::to_string)
            .collect()
    }

    /// `sip:{number}@127.0.0.1:<port>`: replace `{number}` with any user part.
    pub fn dial_uri_template(&self) -> String {
        format!("sip:{{number}}@127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn media_port(&self) -> u16 {
        self.media_port
    }

    pub fn scenario(&self) -> &str {
        &self.scenario
    }

    /// PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        self.kill();
    }
}
