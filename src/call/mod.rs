//! Calls: the record kept for each call and the pure state machine that drives one.

pub mod machine;
pub mod record;
