//! DTMF both ways, as pure logic (no I/O, time in from the caller).
//!
//! - The agent's keys ([`KeyPlan`]): `digits` of the `send_dtmf` client tool,
//!   validated ([`Digits`]), cut at each `w` into runs that Baresip's
//!   `sndcode` sends as RFC 4733 events. A run is sent only when the one
//!   before it has played out and its pauses have passed.
//! - The caller's keys ([`KeyEntry`]): Baresip's `CALL_DTMF_START` keys,
//!   gathered into one entry that ends with `#`, after [`ENTRY_GAP_MS`]
//!   without a key, or at [`MAX_KEYS`] keys.
//!
//! Promise: no key leaves the box that is not in `0-9 * #`, and every
//! caller's key reaches exactly one entry.

use std::collections::VecDeque;
use std::fmt;

/// The most keys (and pauses) one `send_dtmf` call or one caller's entry holds.
pub const MAX_KEYS: usize = 32;
/// What one `w` waits.
pub const PAUSE_MS: u64 = 500;
/// How long Baresip takes to play one key: its telephone-event sender holds a
/// key for 9 packets and ends it with 3 (libre's `telev`), at the 20 ms
/// packet time: 240 ms. Runs after a pause wait for the keys before them.
pub const KEY_PLAY_MS: u64 = 240;
/// A caller's entry is complete this long after its last key.
pub const ENTRY_GAP_MS: u64 = 1_500;

/// Keys the agent asked for: `0-9 * #` and `w` (a pause), at least one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digits(String);

/// Why `digits` were refused (the agent is told this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigitsError {
    /// No key at all (empty, or only pauses).
    NoKey,
    TooLong {
        len: usize,
    },
    /// A character that is no key, at this (0-based) position.
    NotAKey {
        found: char,
        at: usize,
    },
}

impl fmt::Display for DigitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoKey => write!(f, "digits has no key: use 0-9, * and #, and w for a 0.5 s pause"),
            Self::TooLong { len } => write!(f, "digits is {len} characters long; at most {MAX_KEYS}"),
            Self::NotAKey { found, at } => {
                write!(f, "digits[{at}] is {found:?}, which is no key: use 0-9, * and #, and w for a 0.5 s pause")
            }
        }
    }
}

impl std::error::Error for DigitsError {}

impl Digits {
    pub fn parse(text: &str) -> Result<Digits, DigitsError> {
        let len = text.chars().count();
        if len > MAX_KEYS {
            return Err(DigitsError::TooLong { len });
        }
        if let Some((at, found)) = text.chars().enumerate().find(|(_, c)| !is_key(*c) && *c != 'w') {
            return Err(DigitsError::NotAKey { found, at });
        }
        if !text.chars().any(is_key) {
            return Err(DigitsError::NoKey);
        }
        Ok(Digits(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key Baresip can send and the caller can press.
pub fn is_key(c: char) -> bool {
    c.is_ascii_digit() || c == '*' || c == '#'
}

/// The agent's keys being sent: runs of keys, each with the pause before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPlan {
    /// (pause before, keys), the next first.
    runs: VecDeque<(u64, String)>,
    /// When the next run may go: set when the run before it was accepted.
    next_at_ms: u64,
    /// A run's `sndcode` is out and not answered yet.
    in_flight: bool,
}

impl KeyPlan {
    /// The runs of `digits`; the first may go at `now_ms` (after its pauses).
    pub fn new(digits: &Digits, now_ms: u64) -> KeyPlan {
        let mut runs = VecDeque::new();
        let (mut pause, mut keys) = (0u64, String::new());
        for c in digits.as_str().chars() {
            if c == 'w' {
                if !keys.is_empty() {
                    runs.push_back((pause, std::mem::take(&mut keys)));
                    pause = 0;
                }
                pause += PAUSE_MS;
            } else {
                keys.push(c);
            }
        }
        if !keys.is_empty() {
            runs.push_back((pause, keys));
        }
        let first_pause = runs.front().map_or(0, |(p, _)| *p);
        KeyPlan { runs, next_at_ms: now_ms + first_pause, in_flight: false }
    }

    /// When the next run is due (none while one is in flight or when all went).
    pub fn due_at(&self) -> Option<u64> {
        (!self.in_flight && !self.runs.is_empty()).then_some(self.next_at_ms)
    }

    /// The next run's keys, if due at `now_ms`; it is in flight until [`Self::accepted`].
    pub fn take_due(&mut self, now_ms: u64) -> Option<String> {
        if self.due_at()? > now_ms {
            return None;
        }
        self.in_flight = true;
        self.runs.front().map(|(_, keys)| keys.clone())
    }

    /// Baresip took the run in flight at `now_ms`. True: that was the last.
    pub fn accepted(&mut self, now_ms: u64) -> bool {
        self.in_flight = false;
        if let Some((_, keys)) = self.runs.pop_front() {
            let playing = KEY_PLAY_MS * keys.chars().count() as u64;
            self.next_at_ms = now_ms + playing + self.runs.front().map_or(0, |(p, _)| *p);
        }
        self.runs.is_empty()
    }
}

/// The caller's keys since the last complete entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyEntry {
    keys: String,
    last_at_ms: u64,
}

impl KeyEntry {
    /// Adds a pressed key (Baresip's event `param`); the entry if this
    /// completed it. Anything but one key is not a key press (`None`).
    pub fn press(&mut self, param: &str, now_ms: u64) -> Option<String> {
        let mut chars = param.trim().chars();
        let key = chars.next().filter(|c| is_key(*c) && chars.next().is_none())?;
        self.keys.push(key);
        self.last_at_ms = now_ms;
        (key == '#' || self.keys.len() >= MAX_KEYS).then(|| std::mem::take(&mut self.keys))
    }

    /// When the entry completes without another key.
    pub fn due_at(&self) -> Option<u64> {
        (!self.keys.is_empty()).then_some(self.last_at_ms + ENTRY_GAP_MS)
    }

    /// The entry, if it is complete at `now_ms`.
    pub fn take_due(&mut self, now_ms: u64) -> Option<String> {
        (self.due_at()? <= now_ms).then(|| std::mem::take(&mut self.keys))
    }

    /// What is pressed so far (at the end of the call: no more will come).
    pub fn take(&mut self) -> Option<String> {
        (!self.keys.is_empty()).then(|| std::mem::take(&mut self.keys))
    }
}

/// What the agent is told when the caller's entry is complete: a turn
/// (`user_message`), as if the caller had said it. A key press answers a
/// question ("press 1 to confirm"), so the agent must reply to it; a
/// `contextual_update` gets no reply and would leave the caller in silence.
pub fn entry_for_agent(keys: &str) -> String {
    let spaced: Vec<String> = keys.chars().map(String::from).collect();
    format!("(The caller pressed on the phone's keypad: {})", spaced.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_take_keys_and_pauses_only() {
        assert_eq!(Digits::parse("123w#*").map(|d| d.as_str().to_string()), Ok("123w#*".into()));
        assert_eq!(Digits::parse(""), Err(DigitsError::NoKey));
        assert_eq!(Digits::parse("ww"), Err(DigitsError::NoKey));
        assert_eq!(Digits::parse("12a"), Err(DigitsError::NotAKey { found: 'a', at: 2 }));
        assert_eq!(Digits::parse("1 2"), Err(DigitsError::NotAKey { found: ' ', at: 1 }));
        assert_eq!(Digits::parse("W1"), Err(DigitsError::NotAKey { found: 'W', at: 0 }));
        assert_eq!(Digits::parse(&"1".repeat(33)), Err(DigitsError::TooLong { len: 33 }));
        assert!(Digits::parse(&"1".repeat(32)).is_ok());
        assert!(DigitsError::NotAKey { found: 'a', at: 2 }.to_string().contains("digits[2]"));
    }

    #[test]
    fn a_plan_sends_each_run_after_the_keys_before_it_played_and_its_pauses() {
        let mut plan = KeyPlan::new(&Digits::parse("12ww3w").unwrap(), 1_000);
        assert_eq!(plan.due_at(), Some(1_000));
        assert_eq!(plan.take_due(1_000), Some("12".into()));
        assert_eq!(plan.due_at(), None, "nothing while a run is in flight");
        assert_eq!(plan.take_due(9_999), None);
        assert!(!plan.accepted(1_010));
        // Two keys play 480 ms, then two pauses of 500 ms.
        assert_eq!(plan.due_at(), Some(1_010 + 480 + 1_000));
        assert_eq!(plan.take_due(2_489), None);
        assert_eq!(plan.take_due(2_490), Some("3".into()));
        assert!(plan.accepted(2_500), "the trailing pause sends nothing");
        assert_eq!(plan.due_at(), None);
    }

    #[test]
    fn a_leading_pause_delays_the_first_run() {
        let mut plan = KeyPlan::new(&Digits::parse("w9").unwrap(), 0);
        assert_eq!(plan.take_due(499), None);
        assert_eq!(plan.take_due(500), Some("9".into()));
        assert!(plan.accepted(500));
    }

    #[test]
    fn an_entry_ends_at_the_pound_key_after_a_gap_or_when_full() {
        let mut entry = KeyEntry::default();
        assert_eq!(entry.press("1", 0), None);
        assert_eq!(entry.press("2", 300), None);
        assert_eq!(entry.press("#", 600), Some("12#".into()));
        assert_eq!(entry.due_at(), None);

        assert_eq!(entry.press("5", 1_000), None);
        assert_eq!(entry.due_at(), Some(1_000 + ENTRY_GAP_MS));
        assert_eq!(entry.take_due(2_499), None);
        assert_eq!(entry.take_due(2_500), Some("5".into()));

        for i in 0..MAX_KEYS - 1 {
            assert_eq!(entry.press("*", i as u64), None);
        }
        assert_eq!(entry.press("0", 99).map(|k| k.len()), Some(MAX_KEYS));
    }

    #[test]
    fn what_is_no_single_key_is_not_a_press() {
        let mut entry = KeyEntry::default();
        for param in ["", "12", "A", "x", " "] {
            assert_eq!(entry.press(param, 0), None, "{param:?}");
        }
        assert_eq!(entry.take(), None);
        entry.press(" 7 ", 0);
        assert_eq!(entry.take(), Some("7".into()));
    }

    #[test]
    fn the_agent_reads_each_key() {
        assert_eq!(entry_for_agent("12#"), "(The caller pressed on the phone's keypad: 1 2 #)");
    }
}
