//! What the Baresip link reports besides events: which of the daemon's
//! commands a response belongs to ([`CommandTag`]), why a command got none
//! ([`CommandError`]), and what Baresip had after a (re)connect ([`Resync`]).
//! Owned here, by the link, so the call machine depends on `baresip/` and not
//! the other way round.

use crate::baresip::protocol::ListedCall;

/// Which of our commands a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandTag {
    Dial,
    /// Answering the active incoming call.
    Accept,
    /// Declining an incoming call the box does not take: its response
    /// changes nothing (the call was never the active one).
    Decline,
    Hangup,
    /// Hanging up a call we found in Baresip but do not own (left from a crash).
    OrphanHangup,
    /// A run of the agent's keys (`sndcode`).
    SendKeys,
    /// The agent's blind transfer (`transfer`).
    Transfer,
    /// `listcalls` after a failed transfer: is the call still there?
    TransferCheck,
}

/// Why a command got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// Baresip did not answer in time (it does not answer input it rejects).
    Timeout,
    /// There was no connection, so it was never sent.
    NotConnected,
    /// The connection dropped before the response came.
    LinkLost,
    /// The controller did not send it (the call record could not be saved).
    NotSent,
}

/// What Baresip reported right after we (re)connected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resync {
    pub calls: Vec<ListedCall>,
    /// The current call's id from `callstat`, if any.
    pub current_call_id: Option<String>,
    /// `listcalls` could not be read; `calls` then comes from `callstat` alone.
    pub calls_unknown: bool,
    /// Each registering account's state, from `reginfo` (`None`: it could
    /// not be read; what was known stands).
    pub registrations: Option<Vec<(String, crate::baresip::registration::RegState)>>,
}
