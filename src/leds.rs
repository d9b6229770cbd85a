//! The status LEDs: a task that turns the box's state into blink patterns on one
//! or two LEDs (green, red). The controller publishes a [`LedState`] on a watch
//! channel; this task alone touches the LED lines (never the audio thread).
//!
//! Patterns (documented in the README): each is a repeating sequence of
//! (green, red, duration) steps; brief outcome patterns play for
//! [`BRIEF`] and then fall back to the steady state.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::warn;

use crate::call::record::{CallDirection, Outcome, Status};
use crate::gpio::OutputLine;

/// How long an outcome pattern (machine, no answer, busy, error) is shown.
pub const BRIEF: Duration = Duration::from_secs(4);

/// What the LEDs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedState {
    /// Connected to Baresip, no call.
    Idle,
    /// Baresip is not connected.
    NoBaresip,
    /// No call, and a SIP account that registers is not registered.
    NotRegistered,
    Dialing,
    /// Ringing or early media.
    Ringing,
    /// Answered, deciding person or machine.
    Classifying,
    /// Answered and talking (to the AI agent).
    Talking,
    /// No call now: a plan run waits for its next attempt.
    PlanPending,
    /// Brief: an answering machine answered.
    Machine,
    /// Brief: no answer, busy, rejected or unreachable.
    NoAnswer,
    /// Brief: the call failed.
    Error,
}

impl LedState {
    /// The steady pattern for the box's situation: the Baresip link, the
    /// active call's status (if any), whether its answer is still being
    /// classified, whether a plan run waits for its next attempt, and
    /// whether every registering SIP account is registered.
    pub fn steady_for(link_up: bool, call: Option<Status>, classifying: bool, plan_pending: bool, registered: bool) -> LedState {
        match (link_up, call) {
            (false, _) => LedState::NoBaresip,
            (true, None | Some(Status::Ended)) if !registered => LedState::NotRegistered,
            (true, None | Some(Status::Ended)) if plan_pending => LedState::PlanPending,
            (true, None | Some(Status::Ended)) => LedState::Idle,
            (true, Some(Status::Dialing)) => LedState::Dialing,
            (true, Some(Status::Ringing | Status::EarlyMedia)) => LedState::Ringing,
            (true, Some(Status::Answered)) if classifying => LedState::Classifying,
            (true, Some(Status::Answered)) => LedState::Talking,
        }
    }

    /// The brief pattern that says how a call ended, if it has one.
    pub fn brief_after(outcome: Option<Outcome>, direction: CallDirection) -> Option<LedState> {
        match outcome? {
            // The box declined a caller, or a caller gave up: nothing went
            // wrong that a technician should see.
            Outcome::Busy | Outcome::Rejected | Outcome::RemoteHangup if direction == CallDirection::Inbound => None,
            Outcome::Busy | Outcome::Rejected | Outcome::NoAnswer | Outcome::Unreachable => Some(LedState::NoAnswer),
            Outcome::Failed | Outcome::AiFailed => Some(LedState::Error),
            Outcome::Machine => Some(LedState::Machine),
            // Ended as calls should: the steady pattern says enough.
            Outcome::RemoteHangup | Outcome::LocalHangup | Outcome::AgentHangup | Outcome::Transferred => None,
        }
    }

    /// The steps of the pattern: (green on, red on, milliseconds).
    pub fn pattern(self) -> &'static [(bool, bool, u64)] {
        match self {
            Self::Idle => &[(true, false, 100), (false, false, 2900)],
            Self::NoBaresip => &[(false, true, 1000), (false, false, 1000)],
            // Both at once, the one pattern that lights both: "the phone line is down".
            Self::NotRegistered => &[(true, true, 500), (false, false, 1500)],
            Self::Dialing => &[(true, false, 125), (false, false, 125)],
            Self::Ringing => &[(true, false, 500), (false, false, 500)],
            Self::Classifying => &[(true, false, 100), (false, false, 100), (true, false, 100), (false, false, 700)],
            Self::Talking => &[(true, false, 1000)],
            // Green then red, then a pause: "not done yet, trying again".
            Self::PlanPending => &[(true, false, 250), (false, true, 250), (false, false, 1500)],
            Self::Machine => &[(false, true, 100), (false, false, 100), (false, true, 100), (false, false, 700)],
            Self::NoAnswer => &[(false, true, 125), (false, false, 125)],
            Self::Error => &[(false, true, 1000)],
        }
    }

    pub fn is_brief(self) -> bool {
        matches!(self, Self::Machine | Self::NoAnswer | Self::Error)
    }
}

/// The LEDs present.
pub struct Leds {
    pub green: Option<Box<dyn OutputLine>>,
    pub red: Option<Box<dyn OutputLine>>,
}

impl Leds {
    fn show(&mut self, green: bool, red: bool) {
        for (line, on) in [(&mut self.green, green), (&mut self.red, red)] {
            if let Some(line) = line {
                if let Err(err) = line.set(on) {
                    warn!(%err, "LED line failed");
                }
            }
        }
    }
}

/// What the controller publishes: the pattern to show now, and the steady one to
/// fall back to at `until` when the first is brief.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedView {
    pub shown: LedState,
    pub steady: LedState,
    pub until: Option<Instant>,
}

impl LedView {
    pub fn steady(state: LedState) -> Self {
        Self { shown: state, steady: state, until: None }
    }
}

/// Drives the LEDs until the sender is dropped.
pub async fn run(mut leds: Leds, mut views: watch::Receiver<LedView>) {
    loop {
        let view = *views.borrow_and_update();
        let state = match view.until {
            Some(until) if Instant::now() < until => view.shown,
            _ => view.steady,
        };
        let brief_until = view.until.filter(|_| state == view.shown && state != view.steady);
        'pattern: loop {
            for &(green, red, ms) in state.pattern() {
                leds.show(green, red);
                let mut until = Instant::now() + Duration::from_millis(ms);
                if let Some(end) = brief_until {
                    until = until.min(end);
                }
                tokio::select! {
                    () = sleep_until(until) => {}
                    changed = views.changed() => {
                        if changed.is_err() {
                            leds.show(false, false);
                            return;
                        }
                        break 'pattern;
                    }
                }
                if brief_until.is_some_and(|end| Instant::now() >= end) {
                    // The brief pattern is over: show the steady one.
                    views.mark_changed();
                    break 'pattern;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steady_pattern_follows_the_link_and_the_call() {
        assert_eq!(LedState::steady_for(false, Some(Status::Answered), false, true, true), LedState::NoBaresip);
        assert_eq!(LedState::steady_for(true, None, false, false, true), LedState::Idle);
        assert_eq!(LedState::steady_for(true, None, false, true, true), LedState::PlanPending);
        assert_eq!(LedState::steady_for(true, Some(Status::Ringing), false, true, true), LedState::Ringing, "the attempt's call shows");
        assert_eq!(LedState::steady_for(true, Some(Status::Ended), false, false, true), LedState::Idle);
        assert_eq!(LedState::steady_for(true, Some(Status::Dialing), false, false, true), LedState::Dialing);
        assert_eq!(LedState::steady_for(true, Some(Status::EarlyMedia), false, false, true), LedState::Ringing);
        assert_eq!(LedState::steady_for(true, Some(Status::Answered), true, false, true), LedState::Classifying);
        assert_eq!(LedState::steady_for(true, Some(Status::Answered), false, false, true), LedState::Talking);
        assert_eq!(LedState::steady_for(true, None, false, true, false), LedState::NotRegistered);
        assert_eq!(LedState::steady_for(false, None, false, false, false), LedState::NoBaresip);
        assert_eq!(LedState::steady_for(true, Some(Status::Answered), false, false, false), LedState::Talking, "a call shows");
    }

    #[test]
    fn only_calls_that_went_wrong_get_a_brief_pattern() {
        assert_eq!(LedState::brief_after(Some(Outcome::Busy), CallDirection::Outbound), Some(LedState::NoAnswer));
        assert_eq!(LedState::brief_after(Some(Outcome::Unreachable), CallDirection::Outbound), Some(LedState::NoAnswer));
        assert_eq!(LedState::brief_after(Some(Outcome::AiFailed), CallDirection::Outbound), Some(LedState::Error));
        assert_eq!(LedState::brief_after(Some(Outcome::Machine), CallDirection::Outbound), Some(LedState::Machine));
        assert_eq!(LedState::brief_after(Some(Outcome::LocalHangup), CallDirection::Outbound), None);
        assert_eq!(LedState::brief_after(None, CallDirection::Outbound), None);
        // A caller declined or gone before the answer is no fault.
        for quiet in [Outcome::Busy, Outcome::Rejected, Outcome::RemoteHangup] {
            assert_eq!(LedState::brief_after(Some(quiet), CallDirection::Inbound), None, "{quiet:?}");
        }
        assert_eq!(LedState::brief_after(Some(Outcome::AiFailed), CallDirection::Inbound), Some(LedState::Error));
    }
}
