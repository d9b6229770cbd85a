//! Each SIP account's registration, as Baresip reports it: the
//! `REGISTERING` / `REGISTER_OK` / `REGISTER_FAIL` / `UNREGISTERING` events
//! (class `register` in 1.0.0, `ua` in 4.x, each naming its `accountaor`),
//! and `reginfo` at every (re)connection, because Baresip registers at its
//! start, before cap4 is connected, and replays no event. Pure: events and
//! times in, state out.
//!
//! Promises: an account that never registers (`regint=0`) is not tracked
//! and never blocks a dial; an account that does is "registered" only after
//! a `200` (an `OK` in `reginfo`) and stays so through its refreshes until
//! one fails; its last error stays known until the next success.

use std::collections::BTreeMap;

use serde::Serialize;

use super::protocol::{Event, EventKind};

/// Where one account's registration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegState {
    Registering,
    Registered,
    Failed,
    Unregistering,
}

impl RegState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registering => "registering",
            Self::Registered => "registered",
            Self::Failed => "failed",
            Self::Unregistering => "unregistering",
        }
    }
}

/// One registering account, for `/api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountReg {
    pub aor: String,
    pub state: RegState,
    /// Why the last attempt failed (`403 Forbidden`, `Connection timed out`),
    /// until one succeeds.
    pub last_error: Option<String>,
    /// When it entered `state` (RFC 3339).
    pub since: String,
}

/// Every registering account Baresip has told of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registrations {
    accounts: BTreeMap<String, AccountReg>,
}

impl Registrations {
    /// Takes a registration event (anything else is ignored). True if an
    /// account's state changed.
    pub fn on_event(&mut self, event: &Event, now_rfc3339: &str) -> bool {
        let (state, error) = match event.kind {
            EventKind::Registering => (RegState::Registering, None),
            EventKind::RegisterOk => (RegState::Registered, None),
            EventKind::RegisterFail => (RegState::Failed, Some(event.param.clone().unwrap_or_else(|| "no reason given".into()))),
            EventKind::Unregistering => (RegState::Unregistering, None),
            _ => return false,
        };
        let Some(aor) = event.account.clone() else { return false };
        // A refresh of a registered account is no loss of it: dials go on.
        if state == RegState::Registering && self.accounts.get(&aor).is_some_and(|a| a.state == RegState::Registered) {
            return false;
        }
        self.set(aor, state, error, now_rfc3339)
    }

    /// What `reginfo` said at a (re)connection: the accounts it shows
    /// registered or failed replace what was known (an attempt in flight
    /// keeps its last error).
    pub fn resync(&mut self, listed: &[(String, RegState)], now_rfc3339: &str) {
        self.accounts.retain(|aor, _| listed.iter().any(|(listed, _)| listed == aor));
        for (aor, state) in listed {
            let known_error = self.accounts.get(aor).and_then(|a| a.last_error.clone());
            self.set(aor.clone(), *state, error_or(state, known_error), now_rfc3339);
        }
    }

    fn set(&mut self, aor: String, state: RegState, error: Option<String>, now: &str) -> bool {
        let new = !self.accounts.contains_key(&aor);
        let entry = self.accounts.entry(aor.clone()).or_insert_with(|| AccountReg { aor, state, last_error: None, since: now.to_string() });
        let changed = new || entry.state != state || (error.is_some() && error != entry.last_error);
        if entry.state != state {
            entry.since = now.to_string();
        }
        entry.state = state;
        match state {
            RegState::Registered => entry.last_error = None,
            RegState::Failed => entry.last_error = error,
            RegState::Registering | RegState::Unregistering => {}
        }
        changed
    }

    pub fn accounts(&self) -> impl Iterator<Item = &AccountReg> {
        self.accounts.values()
    }

    /// A registering account that is not registered: dials wait for it.
    pub fn not_registered(&self) -> Option<&AccountReg> {
        self.accounts.values().find(|a| a.state != RegState::Registered)
    }
}

/// A failed account's error: what was known, or that `reginfo` says so.
fn error_or(state: &RegState, known: Option<String>) -> Option<String> {
    (*state == RegState::Failed).then(|| known.unwrap_or_else(|| "registration failed (reported by reginfo)".into()))
}

/// Reads `reginfo`'s answer: each registering account's AOR and state.
/// 1.0.0: `> sip:box@host  OK  Expires 6s`, 4.x: `0 - sip:box@host  OK ...`,
/// the marks in ANSI colours: `OK`, `ERR`, `zzz` (registering). An account
/// without a mark does not register and is left out.
pub fn parse_reginfo(data: &str) -> Vec<(String, RegState)> {
    let mut out = Vec::new();
    for line in data.lines() {
        let plain = strip_ansi(line);
        let Some(aor) = plain.split_whitespace().find(|w| w.starts_with("sip:") || w.starts_with("sips:")) else { continue };
        let words: Vec<&str> = plain.split_whitespace().collect();
        let state = if words.contains(&"OK") {
            RegState::Registered
        } else if words.contains(&"ERR") {
            RegState::Failed
        } else if words.contains(&"zzz") {
            RegState::Registering
        } else {
            continue;
        };
        out.push((aor.to_string(), state));
    }
    out
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, aor: &str, param: Option<&str>) -> Event {
        let payload = serde_json::json!({"event": true, "type": kind, "class": "register", "accountaor": aor, "param": param});
        match super::super::protocol::decode(payload.to_string().as_bytes()) {
            Ok(super::super::protocol::Inbound::Event(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_move_each_account_and_keep_its_last_error_until_a_success() {
        let mut regs = Registrations::default();
        assert!(regs.not_registered().is_none(), "nothing tracked blocks nothing");
        assert!(regs.on_event(&ev("REGISTERING", "sip:box@pbx", None), "t1"));
        assert_eq!(regs.not_registered().map(|a| a.state), Some(RegState::Registering));
        assert!(regs.on_event(&ev("REGISTER_FAIL", "sip:box@pbx", Some("403 Forbidden")), "t2"));
        let failed = regs.not_registered().unwrap();
        assert_eq!((failed.state, failed.last_error.as_deref(), failed.since.as_str()), (RegState::Failed, Some("403 Forbidden"), "t2"));
        regs.on_event(&ev("REGISTERING", "sip:box@pbx", None), "t3");
        assert_eq!(regs.not_registered().unwrap().last_error.as_deref(), Some("403 Forbidden"), "kept while retrying");
        assert!(regs.on_event(&ev("REGISTER_OK", "sip:box@pbx", Some("200 OK")), "t4"));
        assert!(regs.not_registered().is_none());
        assert_eq!(regs.accounts().next().unwrap().last_error, None);
        assert!(!regs.on_event(&ev("REGISTER_OK", "sip:box@pbx", Some("200 OK")), "t5"), "a refresh changes nothing");
        assert!(!regs.on_event(&ev("REGISTERING", "sip:box@pbx", None), "t5"), "nor does its REGISTER going out");
        assert!(regs.not_registered().is_none(), "dials go on during a refresh");
        assert_eq!(regs.accounts().next().unwrap().since, "t4");
        assert!(!regs.on_event(&ev("CALL_CLOSED", "sip:box@pbx", None), "t6"));
    }

    #[test]
    fn reginfo_of_both_versions_is_read() {
        let old = "\n--- User Agents (2) ---\n> sip:box@127.0.0.1:5070                     \u{1b}[32mOK \u{1b}[;m  Expires 6s\n  sip:local@127.0.0.1:5062   \n";
        assert_eq!(parse_reginfo(old), [("sip:box@127.0.0.1:5070".to_string(), RegState::Registered)]);
        let new = "\n--- User Agents (1) ---\n0 - sip:box@127.0.0.1:5070                        \u{1b}[31mERR\u{1b}[;m \n\n";
        assert_eq!(parse_reginfo(new), [("sip:box@127.0.0.1:5070".to_string(), RegState::Failed)]);
        assert_eq!(parse_reginfo("> sip:a@b \u{1b}[33mzzz\u{1b}[;m"), [("sip:a@b".to_string(), RegState::Registering)]);
        assert!(parse_reginfo("\n--- User Agents (1) ---\n> sip:box@127.0.0.1:5062                    \n\n").is_empty());
        assert!(parse_reginfo("garbage\u{1b}").is_empty());
    }

    #[test]
    fn a_resync_replaces_what_was_known() {
        let mut regs = Registrations::default();
        regs.on_event(&ev("REGISTER_FAIL", "sip:gone@pbx", Some("408 Request Timeout")), "t1");
        regs.on_event(&ev("REGISTER_FAIL", "sip:box@pbx", Some("403 Forbidden")), "t1");
        regs.resync(&[("sip:box@pbx".into(), RegState::Failed)], "t2");
        let accounts: Vec<_> = regs.accounts().collect();
        assert_eq!(accounts.len(), 1, "an account Baresip no longer lists is dropped");
        assert_eq!(accounts[0].last_error.as_deref(), Some("403 Forbidden"), "the known reason is kept");
        regs.resync(&[("sip:new@pbx".into(), RegState::Failed)], "t3");
        assert_eq!(regs.not_registered().unwrap().last_error.as_deref(), Some("registration failed (reported by reginfo)"));
    }
}
