//! The button's call as a plan: `[[plan]]` tables (`config.rs`), a run's
//! record (`run.rs`), the runs as a pure machine (`machine.rs`) and their
//! journal (`journal.rs`). The controller owns the machine and the journal,
//! places the attempts the machine says are due, and feeds it each call's end.

pub mod config;
pub mod journal;
pub mod machine;
pub mod run;

pub use config::{Failure, Plan, RawPlan, RetryPauses};
pub use machine::{Attempt, CancelRefused, PlanRuns, StartRefused};
pub use run::{PlanRun, RunState};
