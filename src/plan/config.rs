//! `[[plan]]` tables: the numbers a run tries in order, how many rounds, the
//! pause before the next attempt (one for all, or one per outcome) and what
//! counts as success.
//!
//! Promises: every value is checked here, and an error names the key as
//! written (`plan[1].retry_s.busy`) and where it is in the file, so
//! `config.rs` can give its line.

use std::fmt;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::phone::PhoneNumber;

/// The longest pause between attempts (a day).
pub const MAX_RETRY_S: u64 = 86_400;
/// The most rounds over a plan's numbers.
pub const MAX_ATTEMPTS: u32 = 20;
/// The most numbers in one plan.
pub const MAX_NUMBERS: usize = 10;
/// The pause when a plan does not say.
pub const DEFAULT_RETRY_S: u64 = 60;

/// Why an attempt did not end the run successfully, for the pause before the
/// next one (`retry_s.<kind>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    Busy,
    NoAnswer,
    Machine,
    Rejected,
    Unreachable,
    /// Everything else: the call failed, the agent failed, a person answered
    /// but the call was shorter than the plan's `min_talk_s`, the dial was refused.
    Failed,
}

impl Failure {
    pub const ALL: [Failure; 6] =
        [Failure::Busy, Failure::NoAnswer, Failure::Machine, Failure::Rejected, Failure::Unreachable, Failure::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
            Self::Machine => "machine",
            Self::Rejected => "rejected",
            Self::Unreachable => "unreachable",
            Self::Failed => "failed",
        }
    }
}

/// The pause before the next attempt, by what the last one ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPauses {
    pub busy: u64,
    pub no_answer: u64,
    pub machine: u64,
    pub rejected: u64,
    pub unreachable: u64,
    pub failed: u64,
}

impl RetryPauses {
    pub fn uniform(seconds: u64) -> Self {
        RetryPauses { busy: seconds, no_answer: seconds, machine: seconds, rejected: seconds, unreachable: seconds, failed: seconds }
    }

    /// Seconds to wait after `failure`.
    pub fn after(&self, failure: Failure) -> u64 {
        match failure {
            Failure::Busy => self.busy,
            Failure::NoAnswer => self.no_answer,
            Failure::Machine => self.machine,
            Failure::Rejected => self.rejected,
            Failure::Unreachable => self.unreachable,
            Failure::Failed => self.failed,
        }
    }

    fn slot(&mut self, failure: Failure) -> &mut u64 {
        match failure {
            Failure::Busy => &mut self.busy,
            Failure::NoAnswer => &mut self.no_answer,
            Failure::Machine => &mut self.machine,
            Failure::Rejected => &mut self.rejected,
            Failure::Unreachable => &mut self.unreachable,
            Failure::Failed => &mut self.failed,
        }
    }
}

/// One plan, validated. A run keeps a copy, so a plan edited or removed
/// while a run waits does not change the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    /// Tried in order, once per round.
    pub numbers: Vec<PhoneNumber>,
    /// Rounds over `numbers`.
    pub attempts: u32,
    pub retry_s: RetryPauses,
    /// Talk time a call needs to count as a success (0: any answered call
    /// a person took that ended normally).
    pub min_talk_s: u64,
}

impl Plan {
    /// The one-number plan of `[button] phone_number`: one attempt, as before plans.
    pub fn single(name: &str, number: PhoneNumber) -> Plan {
        Plan { name: name.into(), numbers: vec![number], attempts: 1, retry_s: RetryPauses::uniform(DEFAULT_RETRY_S), min_talk_s: 0 }
    }

    /// Every attempt a run may make: numbers × rounds.
    pub fn total_attempts(&self) -> u32 {
        self.attempts.saturating_mul(u32::try_from(self.numbers.len()).unwrap_or(u32::MAX))
    }

    /// The number attempt `n` (1-based) dials.
    pub fn number_for(&self, attempt: u32) -> Option<&PhoneNumber> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()? % self.numbers.len().max(1);
        self.numbers.get(index)
    }
}

/// A `[[plan]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    name: Spanned<String>,
    numbers: Spanned<Vec<Spanned<String>>>,
    attempts: Option<Spanned<u32>>,
    retry_s: Option<Spanned<RawRetry>>,
    min_talk_s: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRetry {
    Seconds(u64),
    ByOutcome(std::collections::BTreeMap<String, u64>),
}

/// A plan's value that cannot be used: the key as written, the byte offset
/// of the value in the file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub key: String,
    pub at: Option<usize>,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for PlanError {}

/// Validates every `[[plan]]` table (`plan[1]` is the first).
pub fn validate(raw: Vec<RawPlan>) -> Result<Vec<Plan>, PlanError> {
    let mut plans: Vec<Plan> = Vec::with_capacity(raw.len());
    for (i, raw) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("plan[{}].{k}", i + 1);
        let error = |k: &str, at: usize, message: String| PlanError { key: key(k), at: Some(at), message };
        let name = raw.name.get_ref().clone();
        let name_ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(error(
                "name",
                raw.name.span().start,
                format!("`{name}` must be 1 to 64 letters, digits, - or _ (it is a URL path part)"),
            ));
        }
        if name == "runs" {
            // `/api/plans/runs/...` is the runs' own path.
            return Err(error("name", raw.name.span().start, "`runs` is taken by the API (/api/plans/runs); choose another name".into()));
        }
        if plans.iter().any(|p| p.name == name) {
            return Err(error("name", raw.name.span().start, format!("a plan named `{name}` is defined twice")));
        }
        let written = raw.numbers.get_ref();
        if written.is_empty() || written.len() > MAX_NUMBERS {
            return Err(error("numbers", raw.numbers.span().start, format!("must list 1 to {MAX_NUMBERS} numbers")));
        }
        let mut numbers = Vec::with_capacity(written.len());
        for number in written {
            numbers.push(PhoneNumber::parse(number.get_ref()).map_err(|e| error("numbers", number.span().start, e.to_string()))?);
        }
        let attempts = raw.attempts.as_ref().map_or(1, |a| *a.get_ref());
        if !(1..=MAX_ATTEMPTS).contains(&attempts) {
            let at = raw.attempts.as_ref().map_or(0, |a| a.span().start);
            return Err(error("attempts", at, format!("{attempts} is outside 1..={MAX_ATTEMPTS} (rounds over the numbers)")));
        }
        let retry_s = match &raw.retry_s {
            None => RetryPauses::uniform(DEFAULT_RETRY_S),
            Some(spanned) => match spanned.get_ref() {
                RawRetry::Seconds(s) if *s <= MAX_RETRY_S => RetryPauses::uniform(*s),
                RawRetry::Seconds(s) => return Err(error("retry_s", spanned.span().start, format!("{s} is outside 0..={MAX_RETRY_S}"))),
                RawRetry::ByOutcome(table) => {
                    let mut pauses = RetryPauses::uniform(DEFAULT_RETRY_S);
                    // Serde's untagged enums cannot carry a span per key: the table's.
                    let at = spanned.span().start;
                    for (kind, seconds) in table {
                        let Some(failure) = Failure::ALL.into_iter().find(|f| f.as_str() == kind) else {
                            let known: Vec<&str> = Failure::ALL.iter().map(|f| f.as_str()).collect();
                            return Err(error(&format!("retry_s.{kind}"), at, format!("unknown outcome; one of {}", known.join(", "))));
                        };
                        if *seconds > MAX_RETRY_S {
                            return Err(error(&format!("retry_s.{kind}"), at, format!("{seconds} is outside 0..={MAX_RETRY_S}")));
                        }
                        *pauses.slot(failure) = *seconds;
                    }
                    pauses
                }
            },
        };
        let min_talk_s = raw.min_talk_s.as_ref().map_or(0, |m| *m.get_ref());
        if min_talk_s > 3_600 {
            let at = raw.min_talk_s.as_ref().map_or(0, |m| m.span().start);
            return Err(error("min_talk_s", at, format!("{min_talk_s} is outside 0..=3600")));
        }
        plans.push(Plan { name, numbers, attempts, retry_s, min_talk_s });
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        plan: Vec<RawPlan>,
    }

    fn plans(text: &str) -> Result<Vec<Plan>, PlanError> {
        validate(toml::from_str::<File>(text).expect("TOML").plan)
    }

    #[test]
    fn a_plan_with_pauses_by_outcome() {
        let plans = plans(
            "[[plan]]\nname = \"help\"\nnumbers = [\"+15550001\", \"15550002\"]\nattempts = 3\nretry_s = { busy = 30, machine = 600 }\nmin_talk_s = 5\n",
        )
        .expect("valid");
        let plan = &plans[0];
        assert_eq!(plan.total_attempts(), 6);
        assert_eq!(plan.retry_s.after(Failure::Busy), 30);
        assert_eq!(plan.retry_s.after(Failure::Machine), 600);
        assert_eq!(plan.retry_s.after(Failure::NoAnswer), DEFAULT_RETRY_S, "unlisted outcomes keep the default");
        assert_eq!(plan.number_for(1).map(|n| n.as_str()), Some("+15550001"));
        assert_eq!(plan.number_for(2).map(|n| n.as_str()), Some("15550002"));
        assert_eq!(plan.number_for(3).map(|n| n.as_str()), Some("+15550001"), "the second round starts over");
        assert_eq!(plan.number_for(0), None);
    }

    #[test]
    fn errors_name_the_key_as_written() {
        let err = |text: &str| plans(text).expect_err("refused").key;
        assert_eq!(err("[[plan]]\nname = \"a b\"\nnumbers = [\"+15550001\"]\n"), "plan[1].name");
        assert_eq!(err("[[plan]]\nname = \"runs\"\nnumbers = [\"+15550001\"]\n"), "plan[1].name");
        assert_eq!(err("[[plan]]\nname = \"a\"\nnumbers = []\n"), "plan[1].numbers");
        assert_eq!(err("[[plan]]\nname = \"a\"\nnumbers = [\"12\"]\n"), "plan[1].numbers");
        assert_eq!(err("[[plan]]\nname = \"a\"\nnumbers = [\"+15550001\"]\nattempts = 0\n"), "plan[1].attempts");
        assert_eq!(err("[[plan]]\nname = \"a\"\nnumbers = [\"+15550001\"]\nretry_s = { bussy = 3 }\n"), "plan[1].retry_s.bussy");
        assert_eq!(err("[[plan]]\nname = \"a\"\nnumbers = [\"+15550001\"]\nretry_s = 90000\n"), "plan[1].retry_s");
        let twice = "[[plan]]\nname = \"a\"\nnumbers = [\"+15550001\"]\n[[plan]]\nname = \"a\"\nnumbers = [\"+15550002\"]\n";
        assert_eq!(err(twice), "plan[2].name");
    }
}
