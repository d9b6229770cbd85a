//! Calls: the record kept for each call, the pure state machine that drives
//! one, and what the box does with a call that comes in.

pub mod dtmf;
pub mod incoming;
pub mod machine;
pub mod record;
pub mod transfer;
