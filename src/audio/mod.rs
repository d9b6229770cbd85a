//! The audio engine: one real-time thread owns both ALSA PCMs (the caller's
//! voice from Baresip, the agent's voice to Baresip), two lock-free SPSC rings
//! connect it to the async side, which exchanges 20 ms frames, flushes agent
//! audio on barge-in and collects per-call stats.
//!
//! ```text
//!  hw:Loopback,1,0 ──readi──▶ ┌───────────────┐ ──capture ring──▶ AudioEngine::recv_frame ─▶ classifier / AI
//!                             │ rt.rs (SCHED_ │
//!  hw:Loopback,0,1 ◀─writei── │ FIFO thread)  │ ◀─playback ring── AudioEngine::send ◀─ resample.rs ◀─ AI
//!                             └───────────────┘ ◀─flush epoch (atomic)── FlushHandle::flush
//! ```
//!
//! - `config.rs`: `[audio]` (devices, rate, periods, rings, priority).
//! - `rt.rs`: the loop and the [`PcmBackend`] trait it runs on.
//! - `alsa_pcm.rs`: the ALSA backend (a simulated one for tests is
//!   `tests/support/sim_pcm.rs`).
//! - `engine.rs`: the handle: start/stop per call, frames, flush, stats.
//! - `wake.rs`: the eventfd by which the thread wakes the call's task per frame.
//! - `g711.rs`: µ-law / A-law; `resample.rs`: rubato rate conversion.

pub mod alsa_pcm;
pub mod config;
pub mod engine;
pub mod g711;
pub mod resample;
pub mod rt;
pub mod wake;

pub use config::AudioConfig;
pub use engine::{AudioEngine, AudioError, AudioStats, FlushHandle, LatencyReport, RtReport};
pub use resample::{RateConverter, ResampleError};
pub use rt::{Grant, PcmBackend, PcmError, RtHooks, Stream};
