//! Whether the controller is alive, for systemd's watchdog: the controller
//! loop marks each turn ([`Liveness::turned`]) and each wait on the disk
//! ([`Liveness::on_disk`]); [`watch`] pings the watchdog from its own task
//! while the loop turns, or while it waits on a disk write that is slow but
//! not dead.
//!
//! Why not ping from the loop itself: a record is on disk before anyone is
//! told, so the loop waits for `fdatasync`, and an SD card that collects its
//! garbage stalls that for seconds, sometimes tens of them. Pinged from the
//! loop, a 20 s stall missed `WatchdogSec=20` and systemd killed the daemon
//! mid-call: hanging up on a person to cure a slow card that a restart
//! cannot cure. A loop that stops turning (a hang, a deadlock, a spin) still
//! stops the pings, and so does a disk wait past [`Limits::disk`].
//!
//! Promises: [`judge`] is pure (times in, a [`State`] out); the marks are two
//! atomics, so marking costs the loop nothing. A leaf: it uses no other
//! module of cap4.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the controller may go without a turn, or wait on the disk,
/// before it counts as dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The loop turns at least every second (its heartbeat tick); this much
    /// longer without a turn, outside a disk wait, is a hang.
    pub turn: Duration,
    /// A disk wait this long is a dead card, not a slow one.
    pub disk: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // SD cards have been seen to stall writes for 20-30 s while they
        // collect garbage; two minutes is past any card that still works.
        Limits { turn: Duration::from_secs(5), disk: Duration::from_secs(120) }
    }
}

/// What [`judge`] concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The loop turned within [`Limits::turn`].
    Turning,
    /// The loop waits on the disk, for this long so far (within the limit).
    OnDisk(Duration),
    /// No turn for this long, not on the disk.
    Hung(Duration),
    /// On the disk for this long, past the limit.
    DiskDead(Duration),
}

impl State {
    pub fn alive(self) -> bool {
        matches!(self, State::Turning | State::OnDisk(_))
    }
}

/// The judgement: `since_turn` since the loop last turned; `on_disk`, if it
/// is waiting on the disk, for how long.
pub fn judge(since_turn: Duration, on_disk: Option<Duration>, limits: &Limits) -> State {
    match on_disk {
        Some(wait) if wait > limits.disk => State::DiskDead(wait),
        Some(wait) => State::OnDisk(wait),
        None if since_turn > limits.turn => State::Hung(since_turn),
        None => State::Turning,
    }
}

/// The controller's marks, shared with [`watch`].
#[derive(Debug)]
pub struct Liveness {
    epoch: Instant,
    /// Milliseconds since `epoch` at the last turn.
    turned_ms: AtomicU64,
    /// Milliseconds since `epoch` + 1 at the start of the current disk
    /// wait; 0 when there is none.
    disk_since_ms: AtomicU64,
}

impl Liveness {
    pub fn new() -> Arc<Liveness> {
        Arc::new(Liveness { epoch: Instant::now(), turned_ms: AtomicU64::new(0), disk_since_ms: AtomicU64::new(0) })
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The loop went round once.
    pub fn turned(&self) {
        self.turned_ms.store(self.ms(Instant::now()), Ordering::Relaxed);
    }

    /// Runs `f`, a wait on the disk, marked as one.
    pub fn on_disk<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        self.disk_since_ms.store(self.ms(start) + 1, Ordering::Relaxed);
        let result = f();
        self.disk_since_ms.store(0, Ordering::Relaxed);
        // The wait is over: it counts as a turn, or a long one would read as
        // a hang at the next look.
        self.turned();
        let took = start.elapsed();
        if took > Duration::from_secs(2) {
            tracing::warn!(took_ms = took.as_millis() as u64, "a journal write waited on the disk (a slow SD card?)");
        }
        result
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant, limits: &Limits) -> State {
        let now_ms = self.ms(now);
        let since_turn = Duration::from_millis(now_ms.saturating_sub(self.turned_ms.load(Ordering::Relaxed)));
        let on_disk = match self.disk_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms.saturating_sub(since - 1))),
        };
        judge(since_turn, on_disk, limits)
    }
}

/// Looks every `interval` (at most every second) and calls `ping` if the
/// controller is alive; says once in the log when it stops pinging (and
/// when it pings again). Runs forever.
///
/// Why look that often: `interval` is half of `WatchdogSec=`, so one look
/// that found the controller not alive would already leave a whole
/// `WatchdogSec=` without a ping; looking every second, a controller that
/// comes back within [`Limits::turn`] plus a second keeps the daemon.
pub async fn watch(liveness: Arc<Liveness>, interval: Duration, limits: Limits, mut ping: impl FnMut()) {
    let mut ticks = tokio::time::interval(interval.min(Duration::from_secs(1)));
    let mut silent = false;
    loop {
        ticks.tick().await;
        let state = liveness.state(Instant::now(), &limits);
        if state.alive() {
            if silent {
                tracing::warn!(?state, "controller alive again; watchdog pings resume");
                silent = false;
            }
            ping();
        } else if !silent {
            tracing::error!(?state, "controller not alive: watchdog pings stop, systemd will restart the daemon");
            silent = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { turn: Duration::from_secs(5), disk: Duration::from_secs(120) };

    #[test]
    fn a_long_disk_wait_is_alive_until_the_disk_limit() {
        let s = Duration::from_secs;
        assert_eq!(judge(s(1), None, &LIMITS), State::Turning);
        assert_eq!(judge(s(6), None, &LIMITS), State::Hung(s(6)));
        // A 20 s fdatasync (what killed the daemon mid-call) is alive.
        assert_eq!(judge(s(20), Some(s(20)), &LIMITS), State::OnDisk(s(20)));
        assert_eq!(judge(s(121), Some(s(121)), &LIMITS), State::DiskDead(s(121)));
        assert!(!State::DiskDead(s(121)).alive() && !State::Hung(s(6)).alive());
    }

    #[test]
    fn marks_read_back_as_states() {
        let liveness = Liveness::new();
        liveness.turned();
        let now = Instant::now();
        assert_eq!(liveness.state(now, &LIMITS), State::Turning);
        assert!(matches!(liveness.state(now + Duration::from_secs(10), &LIMITS), State::Hung(_)));
        let inside = liveness.on_disk(|| liveness.state(Instant::now() + Duration::from_secs(30), &LIMITS));
        assert!(matches!(inside, State::OnDisk(d) if d >= Duration::from_secs(30)), "{inside:?}");
        // After the wait, a turn.
        assert_eq!(liveness.state(Instant::now(), &LIMITS), State::Turning);
    }

    /// The watchdog task against a loop that turns, then waits on a slow
    /// disk far longer than its turn limit, then hangs: pings go on through
    /// the disk wait and stop after the hang.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pings_go_on_through_a_slow_disk_and_stop_at_a_hang() {
        use std::sync::atomic::AtomicUsize;
        let limits = Limits { turn: Duration::from_millis(300), disk: Duration::from_secs(30) };
        let liveness = Liveness::new();
        liveness.turned();
        let pings = Arc::new(AtomicUsize::new(0));
        let counter = pings.clone();
        tokio::spawn(watch(liveness.clone(), Duration::from_millis(50), limits, move || {
            counter.fetch_add(1, Ordering::Relaxed);
        }));
        let count = || pings.load(Ordering::Relaxed);

        // A disk wait of five turn limits, the way the controller waits:
        // on a worker, through block_in_place.
        let loop_side = liveness.clone();
        let before_disk = count();
        tokio::task::spawn(
            async move { loop_side.on_disk(|| tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(1500)))) },
        )
        .await
        .expect("the disk wait");
        let during_disk = count() - before_disk;
        assert!(during_disk >= 10, "{during_disk} pings in a 1.5 s disk wait, pinging every 50 ms");

        // Then no turn at all: after the turn limit, silence.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_hang = count();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(count(), after_hang, "pings after the loop stopped turning");
    }
}
