//! A plan run's record: what the API shows, the journal keeps and the
//! webhook sends. Fields added later must be `#[serde(default)]` so that
//! older journals still load.

use serde::{Deserialize, Serialize};

use super::config::Plan;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// An attempt is in flight or the next one is pending.
    Running,
    /// One call succeeded.
    Done,
    /// Every attempt failed.
    Exhausted,
    /// Cancelled by the API, the CLI or a long press.
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Exhausted => "exhausted",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One attempt of a run and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based, as in the call record's `attempt`.
    pub attempt: u32,
    pub number: String,
    /// The call placed, if the dial went out.
    #[serde(default)]
    pub call_id: Option<String>,
    /// `success`, or the kind of failure (`busy`, `no_answer`, `machine`,
    /// `rejected`, `unreachable`, `failed`); none while in flight.
    #[serde(default)]
    pub result: Option<String>,
    /// Why, in words, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRun {
    pub id: String,
    /// The plan's name.
    pub plan: String,
    pub state: RunState,
    /// The calls placed, in order.
    pub calls: Vec<String>,
    /// When the next attempt is placed (RFC 3339), while one is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The same, in Unix milliseconds: what a restart resumes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_unix_ms: Option<i64>,
    /// `api`, `cli` (the API too) or `button`.
    pub origin: String,
    pub created_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    /// Why it ended, in words.
    #[serde(default)]
    pub reason: Option<String>,
    /// Every attempt so far, in order.
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// Attempts the plan allows (numbers × rounds).
    pub max_attempts: u32,
    /// The plan as it was when the run started.
    pub plan_config: Plan,
}

impl PlanRun {
    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// The call of the attempt in flight, if one is.
    pub fn call_in_flight(&self) -> Option<&str> {
        self.attempts.last().filter(|a| a.result.is_none()).and_then(|a| a.call_id.as_deref())
    }
}
