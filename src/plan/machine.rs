//! The plan runs as a pure machine: start, the next attempt when its time
//! comes, the end of each call, cancel, and resume after a restart. Inputs
//! carry a [`Now`]; it returns the runs that changed, for the controller to
//! persist before it acts on them. No I/O, no clock.
//!
//! Promises: at most one run is `running` at a time; a run places one call
//! at a time, never more than numbers × rounds; it ends `done` at the first
//! call that succeeded, `exhausted` after the last attempt failed, and
//! `cancelled` only when asked; pauses are wall-clock instants, so a
//! restart resumes what is left of one; an attempt in flight at a restart
//! counts as failed.

use super::config::{Failure, Plan};
use super::run::{AttemptRecord, PlanRun, RunState};
use crate::call::machine::UNCLASSIFIED_HANGUP;
use crate::call::record::{CallRecord, Outcome};
use crate::clock::{Now, rfc3339};

/// The shortest call that counts as a success, whatever the plan says.
pub const MIN_TALK_MS: u64 = 1_000;

/// The runs kept (the oldest ended ones go first).
pub const MAX_RUNS: usize = 1_000;

/// The attempt whose time has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub run_id: String,
    /// 1-based.
    pub attempt: u32,
    pub number: crate::phone::PhoneNumber,
}

/// Why a run was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartRefused {
    /// Another run is running (its id).
    AlreadyRunning(String),
}

/// Why a run was not cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelRefused {
    NotFound,
    /// It has ended already.
    Ended(Box<PlanRun>),
}

/// How one call ended, for its run.
pub fn judge(record: &CallRecord, plan: &Plan) -> Result<(), (Failure, String)> {
    let reason = || record.reason.clone().unwrap_or_default();
    let failure = match record.outcome {
        Some(Outcome::Busy) => Failure::Busy,
        Some(Outcome::NoAnswer) => Failure::NoAnswer,
        Some(Outcome::Machine) => Failure::Machine,
        Some(Outcome::Rejected) => Failure::Rejected,
        Some(Outcome::Unreachable) => Failure::Unreachable,
        Some(Outcome::Failed | Outcome::AiFailed) | None => Failure::Failed,
        // A person was reached and handed on: the call did its job.
        Some(Outcome::Transferred) => return Ok(()),
        Some(Outcome::RemoteHangup | Outcome::LocalHangup | Outcome::AgentHangup) => {
            if record.answered_at.is_none() {
                return Err((Failure::Failed, format!("ended before an answer: {}", reason())));
            }
            // A machine that hung up during the voicemail drop is still a machine.
            if record.answer.as_ref().is_some_and(|a| a.verdict == "machine") {
                return Err((Failure::Machine, format!("an answering machine: {}", reason())));
            }
            // An `unknown` answer the policy connected counts as a person's;
            // one it hung up on does not.
            if record.reason.as_deref() == Some(UNCLASSIFIED_HANGUP) {
                return Err((Failure::Failed, format!("no person was heard: {}", reason())));
            }
            // Under a second is no conversation (an answer just after the
            // ring timeout, hung up at once), whatever `min_talk_s` says.
            let talk_ms = record.talk_ms.unwrap_or(0);
            if talk_ms < (plan.min_talk_s * 1000).max(MIN_TALK_MS) {
                return Err((Failure::Failed, format!("talked {} ms, the plan needs {} s", talk_ms, plan.min_talk_s)));
            }
            return Ok(());
        }
    };
    Err((failure, reason()))
}

#[derive(Debug, Default)]
pub struct PlanRuns {
    /// Oldest first.
    runs: Vec<PlanRun>,
}

impl PlanRuns {
    /// The runs the journal had, oldest first.
    pub fn new(runs: Vec<PlanRun>) -> Self {
        PlanRuns { runs }
    }

    /// After a restart: an attempt that was in flight is judged by its
    /// call's record if the call had ended (`ended_call` looks it up; the
    /// crash came between the call's end and the run's), and counts as
    /// failed otherwise (how its call ended is not known); a pending one
    /// keeps its time. Returns the runs that changed.
    pub fn resume(&mut self, now: Now, ended_call: impl Fn(&str) -> Option<CallRecord>) -> Vec<PlanRun> {
        let mut changed = Vec::new();
        for i in 0..self.runs.len() {
            if let Some(call) = self.runs[i].call_in_flight().filter(|_| self.runs[i].is_running()).map(str::to_owned) {
                match ended_call(&call).filter(|r| !r.is_active()) {
                    Some(record) => Self::finish_attempt(&mut self.runs[i], &record, now),
                    None => Self::attempt_failed(&mut self.runs[i], Failure::Failed, "cap4 restarted during the attempt".into(), now),
                }
                changed.push(self.runs[i].clone());
            } else if self.runs[i].is_running() && self.runs[i].next_attempt_unix_ms.is_none() {
                // A run with neither (a journal from a crash between two
                // writes): its next attempt is due now.
                Self::schedule(&mut self.runs[i], now.unix_ms);
                changed.push(self.runs[i].clone());
            }
        }
        changed
    }

    pub fn running(&self) -> Option<&PlanRun> {
        self.runs.iter().find(|r| r.is_running())
    }

    /// A running run with no call in flight: it waits for its next attempt.
    pub fn pending(&self) -> Option<&PlanRun> {
        self.running().filter(|r| r.call_in_flight().is_none())
    }

    pub fn get(&self, id: &str) -> Option<&PlanRun> {
        self.runs.iter().find(|r| r.id == id)
    }

    /// Newest first.
    pub fn list(&self, limit: usize) -> Vec<PlanRun> {
        self.runs.iter().rev().take(limit).cloned().collect()
    }

    /// Starts a run of `plan`; its first attempt is due at once.
    pub fn start(&mut self, plan: Plan, id: String, origin: &str, now: Now) -> Result<PlanRun, StartRefused> {
        if let Some(running) = self.running() {
            return Err(StartRefused::AlreadyRunning(running.id.clone()));
        }
        let mut run = PlanRun {
            id,
            plan: plan.name.clone(),
            state: RunState::Running,
            calls: Vec::new(),
            next_attempt_at: None,
            next_attempt_unix_ms: None,
            origin: origin.into(),
            created_at: rfc3339(now.unix_ms),
            ended_at: None,
            reason: None,
            attempts: Vec::new(),
            max_attempts: plan.total_attempts(),
            plan_config: plan,
        };
        Self::schedule(&mut run, now.unix_ms);
        self.runs.push(run.clone());
        self.trim();
        Ok(run)
    }

    /// The attempt due at `now`, if any (the caller places it when the line is free).
    pub fn due(&self, now: Now) -> Option<Attempt> {
        let run = self.pending()?;
        if run.next_attempt_unix_ms.is_some_and(|at| at > now.unix_ms) {
            return None;
        }
        let attempt = u32::try_from(run.attempts.len()).unwrap_or(u32::MAX) + 1;
        let number = run.plan_config.number_for(attempt)?.clone();
        Some(Attempt { run_id: run.id.clone(), attempt, number })
    }

    /// When the next attempt is due (Unix ms), for the controller's timer.
    pub fn next_deadline_unix_ms(&self) -> Option<i64> {
        self.pending()?.next_attempt_unix_ms
    }

    /// `attempt` went out as call `call_id`.
    pub fn placed(&mut self, attempt: &Attempt, call_id: &str) -> Option<PlanRun> {
        let run = self.runs.iter_mut().find(|r| r.id == attempt.run_id && r.is_running())?;
        run.attempts.push(AttemptRecord {
            attempt: attempt.attempt,
            number: attempt.number.to_string(),
            call_id: Some(call_id.into()),
            result: None,
            detail: None,
        });
        run.calls.push(call_id.into());
        run.next_attempt_at = None;
        run.next_attempt_unix_ms = None;
        Some(run.clone())
    }

    /// `attempt` could not be placed (its record could not be saved, the
    /// dial was refused): it counts as failed.
    pub fn not_placed(&mut self, attempt: &Attempt, why: String, now: Now) -> Option<PlanRun> {
        let run = self.runs.iter_mut().find(|r| r.id == attempt.run_id && r.is_running())?;
        run.attempts.push(AttemptRecord {
            attempt: attempt.attempt,
            number: attempt.number.to_string(),
            call_id: None,
            result: None,
            detail: None,
        });
        Self::attempt_failed(run, Failure::Failed, why, now);
        Some(run.clone())
    }

    /// A call ended: if it was a running run's attempt, the run goes on or ends.
    pub fn call_ended(&mut self, record: &CallRecord, now: Now) -> Option<PlanRun> {
        let run = self.runs.iter_mut().find(|r| r.is_running() && r.call_in_flight() == Some(record.id.as_str()))?;
        Self::finish_attempt(run, record, now);
        Some(run.clone())
    }

    fn finish_attempt(run: &mut PlanRun, record: &CallRecord, now: Now) {
        match judge(record, &run.plan_config) {
            Ok(()) => {
                if let Some(last) = run.attempts.last_mut() {
                    last.result = Some("success".into());
                }
                Self::end(run, RunState::Done, format!("attempt {} succeeded", run.attempts.len()), now);
            }
            Err((failure, detail)) => Self::attempt_failed(run, failure, detail, now),
        }
    }

    /// Cancels run `id`; the call in flight (if any) is the caller's to hang up.
    pub fn cancel(&mut self, id: &str, origin: &str, now: Now) -> Result<(PlanRun, Option<String>), CancelRefused> {
        let run = self.runs.iter_mut().find(|r| r.id == id).ok_or(CancelRefused::NotFound)?;
        if !run.is_running() {
            return Err(CancelRefused::Ended(Box::new(run.clone())));
        }
        let in_flight = run.call_in_flight().map(str::to_owned);
        if let Some(last) = run.attempts.last_mut().filter(|a| a.result.is_none()) {
            last.result = Some("cancelled".into());
        }
        Self::end(run, RunState::Cancelled, format!("cancelled by {origin}"), now);
        Ok((run.clone(), in_flight))
    }

    fn attempt_failed(run: &mut PlanRun, failure: Failure, detail: String, now: Now) {
        if let Some(last) = run.attempts.last_mut() {
            last.result = Some(failure.as_str().into());
            last.detail = Some(detail).filter(|d| !d.is_empty());
        }
        let made = u32::try_from(run.attempts.len()).unwrap_or(u32::MAX);
        if made >= run.max_attempts {
            Self::end(run, RunState::Exhausted, format!("all {made} attempts failed; the last: {}", failure.as_str()), now);
        } else {
            let pause_ms = i64::try_from(run.plan_config.retry_s.after(failure)).unwrap_or(i64::MAX / 1000).saturating_mul(1000);
            Self::schedule(run, now.unix_ms.saturating_add(pause_ms));
        }
    }

    fn schedule(run: &mut PlanRun, at_unix_ms: i64) {
        run.next_attempt_unix_ms = Some(at_unix_ms);
        run.next_attempt_at = Some(rfc3339(at_unix_ms));
    }

    fn end(run: &mut PlanRun, state: RunState, reason: String, now: Now) {
        run.state = state;
        run.reason = Some(reason);
        run.ended_at = Some(rfc3339(now.unix_ms));
        run.next_attempt_at = None;
        run.next_attempt_unix_ms = None;
    }

    /// Bounded: the oldest ended runs go past [`MAX_RUNS`].
    fn trim(&mut self) {
        while self.runs.len() > MAX_RUNS {
            match self.runs.iter().position(|r| !r.is_running()) {
                Some(i) => {
                    self.runs.remove(i);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::record::{AnswerRecord, Status};
    use crate::phone::PhoneNumber;
    use crate::plan::config::RetryPauses;

    fn at(unix_ms: i64) -> Now {
        Now { mono_ms: 0, unix_ms }
    }

    fn plan(numbers: &[&str], attempts: u32) -> Plan {
        Plan {
            name: "help".into(),
            numbers: numbers.iter().map(|n| PhoneNumber::parse(n).expect("number")).collect(),
            attempts,
            retry_s: RetryPauses { busy: 30, ..RetryPauses::uniform(60) },
            min_talk_s: 5,
        }
    }

    fn ended(id: &str, outcome: Outcome, talk_ms: Option<u64>) -> CallRecord {
        let text = format!(
            r#"{{"id":"{id}","phone_number":"+15550001","direction":"outbound","status":"ended","started_at":"x","outcome":"{}","answered_at":{},"talk_ms":{}}}"#,
            outcome.as_str(),
            if talk_ms.is_some() { "\"y\"" } else { "null" },
            talk_ms.map_or("null".to_string(), |t| t.to_string()),
        );
        let record: CallRecord = serde_json::from_str(&text).expect("record");
        assert_eq!(record.status, Status::Ended);
        record
    }

    /// Places what is due at `now` as call `call`; the attempt.
    fn place(runs: &mut PlanRuns, now: Now, call: &str) -> Attempt {
        let attempt = runs.due(now).expect("an attempt is due");
        runs.placed(&attempt, call).expect("placed");
        attempt
    }

    #[test]
    fn busy_then_answered_is_done_at_the_second_number() {
        let mut runs = PlanRuns::default();
        runs.start(plan(&["+15550001", "+15550002"], 2), "r".into(), "api", at(0)).expect("started");
        let first = place(&mut runs, at(0), "c1");
        assert_eq!((first.attempt, first.number.as_str()), (1, "+15550001"));
        assert_eq!(runs.due(at(0)), None, "one call at a time");
        let run = runs.call_ended(&ended("c1", Outcome::Busy, None), at(1_000)).expect("its run");
        assert_eq!(run.next_attempt_unix_ms, Some(31_000), "busy waits 30 s");
        assert_eq!(runs.due(at(30_999)), None);
        let second = place(&mut runs, at(31_000), "c2");
        assert_eq!((second.attempt, second.number.as_str()), (2, "+15550002"));
        let run = runs.call_ended(&ended("c2", Outcome::RemoteHangup, Some(6_000)), at(40_000)).expect("its run");
        assert_eq!(run.state, RunState::Done);
        assert_eq!(run.calls, ["c1", "c2"]);
        assert_eq!(run.attempts[1].result.as_deref(), Some("success"));
        assert_eq!(runs.due(at(100_000)), None, "a done run places nothing more");
    }

    #[test]
    fn a_run_that_always_fails_is_exhausted_after_numbers_times_rounds() {
        let mut runs = PlanRuns::default();
        runs.start(plan(&["+15550001", "+15550002"], 2), "r".into(), "api", at(0)).expect("started");
        let mut now = 0;
        for n in 1..=4 {
            let call = format!("c{n}");
            place(&mut runs, at(now), &call);
            let run = runs.call_ended(&ended(&call, Outcome::NoAnswer, None), at(now + 1)).expect("its run");
            now = run.next_attempt_unix_ms.unwrap_or(now + 1);
            assert_eq!(run.state == RunState::Exhausted, n == 4, "attempt {n}");
        }
        assert_eq!(runs.due(at(now + 1_000_000)), None);
    }

    #[test]
    fn a_short_call_or_a_machine_is_not_a_success() {
        let p = plan(&["+15550001"], 1);
        assert!(judge(&ended("c", Outcome::RemoteHangup, Some(4_999)), &p).is_err(), "under min_talk_s");
        assert!(judge(&ended("c", Outcome::RemoteHangup, Some(5_000)), &p).is_ok());
        assert_eq!(judge(&ended("c", Outcome::Machine, Some(9_000)), &p).map_err(|e| e.0), Err(Failure::Machine));
        let mut unknown = ended("c", Outcome::LocalHangup, Some(9_000));
        unknown.reason = Some(UNCLASSIFIED_HANGUP.into());
        unknown.answer = Some(AnswerRecord {
            verdict: "unknown".into(),
            cause: "x".into(),
            decided_at_ms: 1,
            speech_start_ms: None,
            speech_end_ms: None,
            speech_total_ms: 0,
            beep_start_ms: None,
        });
        assert!(judge(&unknown, &p).is_err(), "hung up unclassified: nobody was heard to be a person");
        let mut machine = unknown.clone();
        machine.answer.as_mut().expect("answer").verdict = "machine".into();
        machine.reason = Some("Connection reset by peer".into());
        assert_eq!(judge(&machine, &p).map_err(|e| e.0), Err(Failure::Machine), "a machine that hung up is a machine");
        unknown.reason = Some("Connection reset by peer".into());
        unknown.outcome = Some(Outcome::RemoteHangup);
        assert!(judge(&unknown, &p).is_ok(), "an unknown answer connected, and talked to, is a person's");
        assert_eq!(judge(&ended("c", Outcome::LocalHangup, None), &p).map_err(|e| e.0), Err(Failure::Failed), "no answer at all");
        let mut quick = plan(&["+15550001"], 1);
        quick.min_talk_s = 0;
        assert!(judge(&ended("c", Outcome::LocalHangup, Some(40)), &quick).is_err(), "hung up at once: no conversation");
    }

    #[test]
    fn one_run_at_a_time_and_cancel_hands_back_the_call_in_flight() {
        let mut runs = PlanRuns::default();
        runs.start(plan(&["+15550001"], 3), "r1".into(), "api", at(0)).expect("started");
        assert_eq!(runs.start(plan(&["+15550001"], 1), "r2".into(), "api", at(0)), Err(StartRefused::AlreadyRunning("r1".into())));
        place(&mut runs, at(0), "c1");
        let (run, call) = runs.cancel("r1", "button", at(5)).expect("cancelled");
        assert_eq!((run.state, call.as_deref()), (RunState::Cancelled, Some("c1")));
        assert_eq!(runs.call_ended(&ended("c1", Outcome::LocalHangup, None), at(6)), None, "a cancelled run is not changed by its call");
        assert!(matches!(runs.cancel("r1", "api", at(7)), Err(CancelRefused::Ended(_))));
        assert_eq!(runs.cancel("nope", "api", at(7)), Err(CancelRefused::NotFound));
        assert!(runs.start(plan(&["+15550001"], 1), "r2".into(), "api", at(8)).is_ok(), "a new run after the cancel");
    }

    #[test]
    fn a_restart_counts_the_attempt_in_flight_as_failed_and_keeps_a_pending_pause() {
        let mut runs = PlanRuns::default();
        runs.start(plan(&["+15550001"], 3), "r".into(), "api", at(0)).expect("started");
        place(&mut runs, at(0), "c1");
        // The journal's lines as a restart reads them.
        let mut resumed = PlanRuns::new(runs.list(10));
        let changed = resumed.resume(at(10_000), |_| None);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].attempts[0].result.as_deref(), Some("failed"));
        assert_eq!(changed[0].next_attempt_unix_ms, Some(70_000), "the failed pause, from the restart");
        // Restarted again in the pause: what is left of it is kept.
        let mut again = PlanRuns::new(resumed.list(10));
        assert!(again.resume(at(20_000), |_| None).is_empty());
        assert_eq!(again.due(at(69_999)), None);
        assert_eq!(again.due(at(70_000)).map(|a| a.attempt), Some(2));
    }

    #[test]
    fn a_restart_after_the_call_ended_but_before_the_run_was_saved_judges_the_call() {
        let mut runs = PlanRuns::default();
        runs.start(plan(&["+15550001"], 3), "r".into(), "api", at(0)).expect("started");
        place(&mut runs, at(0), "c1");
        let mut resumed = PlanRuns::new(runs.list(10));
        let changed = resumed.resume(at(10_000), |id| (id == "c1").then(|| ended("c1", Outcome::RemoteHangup, Some(8_000))));
        assert_eq!(changed[0].state, RunState::Done, "the call that succeeded is not called again");
    }

    #[test]
    fn an_attempt_that_could_not_be_placed_counts() {
        let mut runs = PlanRuns::default();
        runs.start(plan(&["+15550001"], 1), "r".into(), "api", at(0)).expect("started");
        let attempt = runs.due(at(0)).expect("due");
        let run = runs.not_placed(&attempt, "disk full".into(), at(1)).expect("its run");
        assert_eq!(run.state, RunState::Exhausted);
        assert_eq!(run.attempts[0].detail.as_deref(), Some("disk full"));
    }
}
