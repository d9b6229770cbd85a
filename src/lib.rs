//! CAP4: places phone calls through a co-located Baresip and (in later stages)
//! hands live answers to an AI agent. See `ARCHITECTURE.md` for the map.

pub mod ai;
pub mod amd;
pub mod api;
pub mod audio;
pub mod baresip;
pub mod button;
pub mod call;
pub mod cli;
pub mod clock;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod environment;
pub mod fuzz;
pub mod gpio;
pub mod http_client;
pub mod leds;
pub mod liveness;
pub mod logging;
pub mod media;
pub mod phone;
pub mod plan;
pub mod recording;
pub mod sd_notify;
pub mod section;
pub mod session;
pub mod sip;
pub mod store;
pub mod supervise;
pub mod voicemail;
pub mod wav;
pub mod webhook;
pub mod worker;

/// Process exit codes (sysexits.h where one fits).
pub mod exit {
    pub const OK: i32 = 0;
    /// A command ran but failed (an API error, a runtime failure).
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 64;
    /// The daemon's API (or another service) is not reachable.
    pub const UNAVAILABLE: i32 = 69;
    /// The state directory cannot be used.
    pub const CANT_CREATE: i32 = 73;
    /// A task of the daemon ended before shutdown (systemd restarts it).
    pub const SOFTWARE: i32 = 70;
    /// The configuration is invalid.
    pub const CONFIG: i32 = 78;
}
