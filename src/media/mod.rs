//! A call's media session as a pure machine ([`MediaMachine`]): classification,
//! early-media analysis, the voicemail drop and the agent's audio path, driven
//! by inputs with a `Now`; `session.rs` is its driver (the engine, the
//! provider, the controller's channel).
//!
//! - `machine.rs`: inputs, effects, the machine and its promises.
//! - `agent_audio.rs`: resampling both ways, playout gated by event id, the farewell.
//! - `voicemail_drop.rs`: the drop after a machine verdict.
//! - `played_out.rs`: "everything sent has been heard".

pub mod agent_audio;
pub mod machine;
pub mod played_out;
pub mod voicemail_drop;

pub use machine::{AiFigures, MediaEffect, MediaInput, MediaMachine, MediaSetup, MediaSummary, Note, Playback};
pub use played_out::PlayedOut;
