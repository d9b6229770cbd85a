//! SIP registration on real Baresip against a SIPp registrar: `/api/health`
//! shows each registering account's state and its last error, and a dial
//! while the account is not registered is refused 503 with the reason
//! (Baresip itself would place it: see the `register_forbidden` trace).
//! - 401 then 200 (Digest, the password checked by SIPp): `registered`;
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
