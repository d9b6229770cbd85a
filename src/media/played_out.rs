//! "Everything sent to the engine has been heard": the engine's ring empty,
//! then the device's own queue (the playback fill) played out. Pure: the
//! caller passes what is pending and the time.

/// Watches the playback side go quiet; see [`PlayedOut::check`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PlayedOut {
    empty_since_ms: Option<u64>,
}

impl PlayedOut {
    /// What the device still holds once the ring is empty (its fill, and some).
    pub const DEVICE_TAIL_MS: u64 = 120;

    /// `pending`: samples not yet taken by the real-time thread (the engine's
    /// ring, plus anything queued before it). True once nothing was pending
    /// for [`Self::DEVICE_TAIL_MS`].
    pub fn check(&mut self, pending: usize, now_ms: u64) -> bool {
        if pending > 0 {
            self.empty_since_ms = None;
            return false;
        }
        now_ms.saturating_sub(*self.empty_since_ms.get_or_insert(now_ms)) >= Self::DEVICE_TAIL_MS
    }
}

/// A wait until everything sent has been heard, or a limit passed (the
/// farewell, a transfer's last words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardBy {
    played: PlayedOut,
    pub give_up_at_ms: u64,
}

impl HeardBy {
    pub fn new(give_up_at_ms: u64) -> HeardBy {
        HeardBy { played: PlayedOut::default(), give_up_at_ms }
    }

    /// True once heard (see [`PlayedOut::check`]) or at the limit.
    pub fn over(&mut self, pending: usize, now_ms: u64) -> bool {
        self.played.check(pending, now_ms) || now_ms >= self.give_up_at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heard_only_after_the_device_tail_with_nothing_pending() {
        let mut p = PlayedOut::default();
        assert!(!p.check(10, 0));
        assert!(!p.check(0, 100));
        assert!(!p.check(0, 219));
        assert!(p.check(0, 220));
        // New audio starts the wait over.
        assert!(!p.check(5, 230));
        assert!(!p.check(0, 240));
        assert!(p.check(0, 360));
    }
}
