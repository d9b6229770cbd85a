//! `[incoming]`: what the box does when someone calls it.
//!
//! Owns the section ([`IncomingConfig`]: the mode, the callers allowed, the
//! delay before the answer), the caller's number as read from Baresip's peer
//! URI ([`caller_number`]), and the decision for one caller
//! ([`IncomingConfig::decide`]). Pure: no I/O, no clock.
//!
//! Promises:
//! * `off` (the default) takes no calls: each is declined at once and not
//!   recorded (Baresip cannot be told to ignore an INVITE; left ringing, it
//!   would hold the line);
//! * `reject`, and in `agent` mode a caller not in `allow`, is declined and
//!   recorded (never answered);
//! * only `agent` answers, and only a caller `allow` admits (an empty `allow`
//!   admits everyone, an anonymous caller included);
//! * the caller's number is printable ASCII of at most [`MAX_CALLER_CHARS`], so
//!   nothing a caller sends in its From header reaches a log or a prompt raw.

use serde::Deserialize;

use crate::section::SectionError;

/// The longest caller number kept; longer user parts are cut.
pub const MAX_CALLER_CHARS: usize = 32;

/// What the box does with incoming calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncomingMode {
    /// Answered and handed to the agent at once: a person called, so no
    /// answer classification runs.
    Agent,
    /// Declined (486) and recorded.
    Reject,
    /// Declined (486), not recorded.
    #[default]
    Off,
}

/// `[incoming]` as written in the TOML.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncomingConfig {
    pub mode: IncomingMode,
    /// Callers answered in `agent` mode: numbers (`+4930123456`), or prefixes
    /// ending in `*` (`+4930*`). Spaces, dashes, dots and brackets are
    /// ignored. Empty: every caller.
    pub allow: Vec<String>,
    /// Ringing before the answer, in milliseconds.
    pub answer_after_ms: u32,
}

impl Default for IncomingConfig {
    fn default() -> Self {
        IncomingConfig { mode: IncomingMode::Off, allow: Vec::new(), answer_after_ms: 0 }
    }
}

/// What to do with one incoming call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer it after `after_ms` of ringing, and start the agent.
    Answer { after_ms: u64 },
    /// Decline it and record that, saying why.
    Reject { reason: &'static str },
    /// Decline it without a record (`mode = "off"`).
    Decline,
}

/// Why a call was declined in `reject` mode.
pub const REJECTED_BY_MODE: &str = "declined: [incoming] mode = \"reject\"";
/// Why a caller not in `allow` was declined. The number is in the record, not
/// in this reason (reasons reach the journal at INFO; numbers do not).
pub const REJECTED_NOT_ALLOWED: &str = "declined: the caller is not in [incoming] allow";

impl IncomingConfig {
    /// Checks the values and normalises `allow` (separators dropped).
    pub fn validate(&mut self) -> Result<(), SectionError> {
        if self.answer_after_ms > 60_000 {
            return Err(SectionError::new("incoming", "answer_after_ms", "must be 0 to 60000"));
        }
        normalise_patterns("incoming", &mut self.allow)
    }

    /// What to do with a call from `caller` (as [`caller_number`] read it).
    pub fn decide(&self, caller: &str) -> Decision {
        match self.mode {
            IncomingMode::Off => Decision::Decline,
            IncomingMode::Reject => Decision::Reject { reason: REJECTED_BY_MODE },
            IncomingMode::Agent if self.allows(caller) => Decision::Answer { after_ms: u64::from(self.answer_after_ms) },
            IncomingMode::Agent => Decision::Reject { reason: REJECTED_NOT_ALLOWED },
        }
    }

    /// Whether `allow` admits `caller` (an empty `allow` admits everyone).
    fn allows(&self, caller: &str) -> bool {
        if self.allow.is_empty() {
            return true;
        }
        admits(&self.allow, caller)
    }
}

/// Checks `[section] allow`'s entries (numbers, or prefixes ending in `*`)
/// and drops their separators.
pub(crate) fn normalise_patterns(section: &'static str, allow: &mut [String]) -> Result<(), SectionError> {
    for entry in allow {
        let pattern = without_separators(entry);
        let digits = pattern.strip_suffix('*').unwrap_or(&pattern);
        let digits = digits.strip_prefix('+').unwrap_or(digits);
        let prefix = pattern.ends_with('*');
        let ok = digits.bytes().all(|b| b.is_ascii_digit()) && (1..=15).contains(&digits.len()) && (prefix || digits.len() >= 3);
        if !ok {
            let message = format!("`{entry}`: expected a number (`+4930123456`) or a prefix ending in `*` (`+4930*`)");
            return Err(SectionError::new(section, "allow", message));
        }
        *entry = pattern;
    }
    Ok(())
}

/// Whether one of `patterns` (normalised) admits `number`.
pub(crate) fn admits(patterns: &[String], number: &str) -> bool {
    let number = without_separators(number);
    patterns.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => number.starts_with(prefix),
        None => number == *pattern,
    })
}

/// `text` without the separators people write in numbers (spaces, dashes, dots, brackets).
pub(crate) fn without_separators(text: &str) -> String {
    text.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect()
}

/// The caller's number: the user part of the peer URI Baresip reports
/// (`sip:+4930123456@host;transport=udp`, `<sip:...>`, `tel:+4930123456`),
/// with `%2B` read as `+`. A URI without a user part, or one that is not
/// printable ASCII, gives `unknown`.
pub fn caller_number(peer_uri: &str) -> String {
    let uri = peer_uri.trim();
    let uri = uri.rfind('<').map_or(uri, |at| uri[at + 1..].split('>').next().unwrap_or(""));
    let rest = ["sips:", "sip:", "tel:"].iter().find_map(|scheme| strip_prefix_ignore_case(uri, scheme)).unwrap_or(uri);
    let user = match rest.split_once('@') {
        Some((user, _)) => user,
        None if uri.len() != rest.len() && strip_prefix_ignore_case(uri, "tel:").is_some() => rest,
        None => "",
    };
    let user = user.split([';', ':', '?']).next().unwrap_or("");
    let user = user.replace("%2B", "+").replace("%2b", "+");
    if user.is_empty() || !user.bytes().all(|b| b.is_ascii_graphic()) {
        return "unknown".into();
    }
    user.chars().take(MAX_CALLER_CHARS).collect()
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(allow: &[&str]) -> IncomingConfig {
        let mut cfg =
            IncomingConfig { mode: IncomingMode::Agent, allow: allow.iter().map(|s| s.to_string()).collect(), answer_after_ms: 1500 };
        cfg.validate().unwrap();
        cfg
    }

    #[test]
    fn the_caller_is_the_user_part_of_the_peer_uri() {
        assert_eq!(caller_number("sip:+4930123456@127.0.0.1:5070"), "+4930123456");
        assert_eq!(caller_number("\"Remote Phone\" <sip:%2B4930123456@10.0.0.1;transport=tcp>"), "+4930123456");
        assert_eq!(caller_number("SIPS:100;phone-context=x@h"), "100");
        assert_eq!(caller_number("tel:+4930123456;phone-context=+49"), "+4930123456");
        assert_eq!(caller_number("sip:anonymous@anonymous.invalid"), "anonymous");
        assert_eq!(caller_number("sip:127.0.0.1:5070"), "unknown");
        assert_eq!(caller_number(""), "unknown");
        assert_eq!(caller_number("sip:a\u{7}b@h"), "unknown");
        assert_eq!(caller_number(&format!("sip:{}@h", "9".repeat(80))).len(), MAX_CALLER_CHARS);
    }

    #[test]
    fn each_mode_decides_as_documented() {
        let off = IncomingConfig::default();
        assert_eq!(off.decide("+4930123456"), Decision::Decline);
        let reject = IncomingConfig { mode: IncomingMode::Reject, ..IncomingConfig::default() };
        assert_eq!(reject.decide("+4930123456"), Decision::Reject { reason: REJECTED_BY_MODE });
        assert_eq!(agent(&[]).decide("anonymous"), Decision::Answer { after_ms: 1500 });
    }

    #[test]
    fn allow_admits_numbers_and_prefixes_and_nobody_else() {
        let cfg = agent(&["+49 30 123-456", "+7916*"]);
        assert_eq!(cfg.allow, ["+4930123456", "+7916*"]);
        assert_eq!(cfg.decide("+4930123456"), Decision::Answer { after_ms: 1500 });
        assert_eq!(cfg.decide("+79161234567"), Decision::Answer { after_ms: 1500 });
        assert_eq!(cfg.decide("+4930123457"), Decision::Reject { reason: REJECTED_NOT_ALLOWED });
        assert_eq!(cfg.decide("4930123456"), Decision::Reject { reason: REJECTED_NOT_ALLOWED });
        assert_eq!(cfg.decide("anonymous"), Decision::Reject { reason: REJECTED_NOT_ALLOWED });
    }

    #[test]
    fn bad_values_name_their_key() {
        for bad in ["+49a", "", "*", "12", "+1234567890123456"] {
            let mut cfg = IncomingConfig { allow: vec![bad.into()], ..IncomingConfig::default() };
            let err = cfg.validate().unwrap_err();
            assert_eq!(err.path(), "incoming.allow", "{bad}");
            assert!(err.message.contains(&format!("`{bad}`")), "{err}");
        }
        let mut cfg = IncomingConfig { answer_after_ms: 60_001, ..IncomingConfig::default() };
        assert_eq!(cfg.validate().unwrap_err().path(), "incoming.answer_after_ms");
    }
}
