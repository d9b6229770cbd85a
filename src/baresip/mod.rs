//! Everything about Baresip's `ctrl_tcp` control socket: framing, messages, and the
//! one client connection that the daemon keeps (the only code that talks to Baresip).

pub mod client;
pub mod link;
pub mod netstring;
pub mod protocol;
pub mod registration;
