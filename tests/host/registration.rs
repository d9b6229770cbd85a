//! SIP registration on real Baresip against a SIPp registrar: `/api/health`
//! shows each registering account's state and its last error, and a dial
//! while the account is not registered is refused 503 with the reason
//! (Baresip itself would place it: see the `register_forbidden` trace).
//! - 200: `registered`; 401 then 200 (Digest, the password checked by SIPp): `registered`;
//! - 200, then 403 to the refresh (the account revoked while the box runs):
//!   `failed`, `403 Forbidden`, dials refused;
//! - 403 from the start (before cap4 connected: only `reginfo` tells):
//!   `failed`, dials refused;
//! - the wrong password: `failed`, `403 Wrong Password` (and no password in the log).

use crate::support;
use crate::support::daemon;

use std::time::Duration;

use daemon::{Daemon, DaemonConfig};
use serde_json::Value;
use support::{Baresip, Sipp, TempDir, free_media_port, free_port, free_rtp_range};

const WAIT: Duration = Duration::from_secs(20);

/// A registrar running `scenario`, Baresip registering there with
/// `password`, and `cap4 run` on it.
fn bench(dir: &TempDir, scenario: &str, password: &str) -> (Sipp, Baresip, Daemon) {
    let registrar_port = free_port();
    let registrar = Sipp::start(dir.path(), scenario, registrar_port, free_media_port()).expect("SIPp registrar");
    let baresip =
        Baresip::start_registering(dir.path(), free_port(), free_port(), free_rtp_range(10), registrar_port, password).expect("Baresip");
    let cfg = DaemonConfig::new(baresip.ctrl_port(), format!("sip:{{number}}@127.0.0.1:{}", free_port()));
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    (registrar, baresip, cap4)
}

/// The one registering account once `state`, as `/api/health` shows it.
fn account_when(cap4: &Daemon, state: &str) -> Value {
    let mut account = Value::Null;
    let reached = support::wait_until(WAIT, Duration::from_millis(100), || {
        account = cap4.health()["sip"]["accounts"][0].clone();
        account["state"] == state
    });
    assert!(reached, "the account never got {state}: {account}\nlog:\n{}", cap4.log());
    account
}

#[test]
fn a_registrar_that_answers_200_registers_the_account() {
    let dir = TempDir::new("register-ok");
    let (_registrar, _baresip, cap4) = bench(&dir, "registrar_ok.xml", "unused");
    let account = account_when(&cap4, "registered");
    assert!(account["last_error"].is_null(), "{account}");
    assert_eq!(cap4.health()["sip"]["accounts"].as_array().map(Vec::len), Some(1), "one account, tracked once");
}

#[test]
fn a_challenged_registration_with_the_right_password_is_registered() {
    let dir = TempDir::new("register-auth");
    let (_registrar, _baresip, cap4) = bench(&dir, "registrar_auth.xml", "s3cret");
    let account = account_when(&cap4, "registered");
    assert_eq!(account["aor"], format!("sip:box@127.0.0.1:{}", _registrar.port()), "{account}");
    assert!(account["last_error"].is_null(), "{account}");
    assert!(account["since"].is_string(), "{account}");
    // Registered: a dial goes out (to nowhere; it is refused later, not now).
    let record = cap4.dial("+15550001111");
    assert_eq!(record["status"], "dialing");
}

#[test]
fn a_registration_revoked_while_running_shows_its_reason_and_refuses_dials() {
    let dir = TempDir::new("register-revoked");
    let (_registrar, _baresip, cap4) = bench(&dir, "registrar_revoked.xml", "unused");
    account_when(&cap4, "registered");
    // The refresh (every few seconds) gets 403.
    let account = account_when(&cap4, "failed");
    assert_eq!(account["last_error"], "403 Forbidden", "{account}");
    let (status, err) = cap4.http("POST", "/api/calls/dial", Some(r#"{"phone_number":"+15550001111"}"#));
    assert_eq!((status, err["error"]["code"].as_str()), (503, Some("sip_not_registered")), "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("403 Forbidden") && message.contains("sip:box@127.0.0.1"), "{message}");
    let (_, calls) = cap4.http("GET", "/api/calls", None);
    assert_eq!(calls, serde_json::json!([]), "nothing was dialled or recorded");
    assert!(cap4.log().contains("SIP registration failed"), "the journal says so:\n{}", cap4.log());
}

#[test]
fn a_registration_refused_before_cap4_connected_is_known_from_reginfo() {
    let dir = TempDir::new("register-forbidden");
    let (_registrar, _baresip, cap4) = bench(&dir, "registrar_forbidden.xml", "unused");
    let account = account_when(&cap4, "failed");
    assert!(account["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{account}");
    let (status, err) = cap4.http("POST", "/api/calls/dial", Some(r#"{"phone_number":"+15550001111"}"#));
    assert_eq!((status, err["error"]["code"].as_str()), (503, Some("sip_not_registered")), "{err}");
}

#[test]
fn a_wrong_password_is_the_accounts_error() {
    let dir = TempDir::new("register-wrong");
    let (_registrar, _baresip, cap4) = bench(&dir, "registrar_auth.xml", "not-the-password");
    let account = account_when(&cap4, "failed");
    assert_eq!(account["last_error"], "403 Wrong Password", "{account}");
    assert!(!cap4.log().contains("not-the-password"), "the password reached the log");
}

/// `cap4 baresip-config --config TOML --base BASE --out OUT`, the password in
/// `$CAP4_SIP_PASSWORD` if given.
fn baresip_config(toml: &std::path::Path, base: &std::path::Path, out: &std::path::Path, password: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cap4"));
    command.args(["baresip-config", "--config"]).arg(toml).arg("--base").arg(base).arg("--out").arg(out);
    match password {
        Some(password) => command.env("CAP4_SIP_PASSWORD", password),
        None => command.env_remove("CAP4_SIP_PASSWORD"),
    };
    command.output().expect("run cap4")
}

/// `[sip]` in cap4.toml, the password in `$CAP4_SIP_PASSWORD`: `cap4
/// baresip-config` writes the accounts file (0600) that real Baresip
/// registers with, through the registrar's challenge; nothing it prints
/// carries the password.
#[test]
fn the_sip_section_and_the_password_reach_baresip_through_baresip_config() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("register-generated");
    let registrar_port = free_port();
    let registrar = Sipp::start(dir.path(), "registrar_auth.xml", registrar_port, free_media_port()).expect("SIPp registrar");
    let (base, out) = (dir.path().join("base"), dir.path().join("generated"));
    std::fs::create_dir_all(&base).expect("base");
    std::fs::create_dir_all(&out).expect("out");
    std::fs::write(base.join("config"), "module g711.so\n").expect("config");
    std::fs::write(base.join("accounts"), "<sip:box@127.0.0.1>;regint=0\n").expect("accounts");
    let toml = dir.path().join("cap4.toml");
    std::fs::write(&toml, format!("[sip]\naccount = \"sip:box@127.0.0.1:{registrar_port}\"\nregister_interval_s = 60\n")).expect("toml");
    let run = baresip_config(&toml, &base, &out, Some("s3cret"));
    let printed = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{printed}");
    assert!(!printed.contains("s3cret"), "the password was printed: {printed}");
    let accounts = std::fs::read_to_string(out.join("accounts")).expect("accounts written");
    assert_eq!(std::fs::metadata(out.join("accounts")).expect("meta").permissions().mode() & 0o777, 0o600);
    let line = accounts.lines().find(|l| l.starts_with('<')).expect("an account line").to_string();
    assert!(line.contains(";auth_pass=s3cret;") && line.contains(";regint=60;"), "{line}");

    let baresip = Baresip::start_with_account(dir.path(), free_port(), free_port(), free_rtp_range(10), Some(&line)).expect("Baresip");
    let cfg = DaemonConfig::new(baresip.ctrl_port(), format!("sip:{{number}}@127.0.0.1:{}", free_port()));
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    let account = account_when(&cap4, "registered");
    assert_eq!(account["aor"], format!("sip:box@127.0.0.1:{}", registrar.port()), "{account}");

    // A bad [sip] names its key and line, and Baresip still gets its base
    // files (a Baresip that cannot start would reboot the box in a loop;
    // `cap4 run` refuses the file itself).
    std::fs::write(&toml, "[sip]\naccount = \"sip:a@b;auth_pass=x\"\n").expect("toml");
    let bad = baresip_config(&toml, &base, &out, None);
    assert_eq!(bad.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&bad.stderr).contains(":2: key `sip.account`"), "{}", String::from_utf8_lossy(&bad.stderr));
    assert_eq!(std::fs::read_to_string(out.join("accounts")).expect("accounts"), "<sip:box@127.0.0.1>;regint=0\n", "the base accounts");
    let (code, _, err) = {
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_cap4")).arg("check-config").arg(&toml).output().expect("cap4");
        (run.status.code(), (), String::from_utf8_lossy(&run.stderr).into_owned())
    };
    assert_eq!(code, Some(78), "cap4 itself refuses the file: {err}");
    // A password the account line cannot carry is left out, never spliced in.
    std::fs::write(&toml, format!("[sip]\naccount = \"sip:box@127.0.0.1:{registrar_port}\"\n")).expect("toml");
    let run = baresip_config(&toml, &base, &out, Some("x;regint=0"));
    assert!(run.status.success());
    let accounts = std::fs::read_to_string(out.join("accounts")).expect("accounts");
    assert!(!accounts.contains("auth_pass") && accounts.contains(";regint=3600;"), "{accounts}");
    assert!(!String::from_utf8_lossy(&run.stderr).contains("x;regint=0"), "the password was printed");
}
