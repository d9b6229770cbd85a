//! Every test that runs on the host, in one binary (one link instead of a
//! dozen): unit-level tests of the public API, the recorded-trace replays,
//! the end-to-end calls against real Baresip and SIPp, the AI provider against
//! a fake agent, and the tidy rules. `cargo test --test host`; one module:
//! `cargo test --test host calls::`.

#[path = "../support/mod.rs"]
mod support;

mod alloc_count;

mod ai_agent;
mod ai_calls;
mod ai_endings;
mod ai_protocol;
mod ai_session;
mod ai_warm;
mod amd;
mod amd_alloc;
mod api;
mod audio_rt;
mod calls;
mod fake_baresip;
mod fuzz_replay;
mod incoming;
mod plans;
mod registration;
mod tidy;
mod trace_replay;
