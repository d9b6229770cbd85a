//! How the real-time thread wakes the call's task when a frame of the caller's
//! voice is ready: one non-blocking `eventfd`, written by the thread, awaited
//! by the task through tokio's reactor.
//!
//! Why an eventfd: the task used to poll the capture ring every 2 ms, 500
//! wake-ups a second of the whole session loop for 50 frames; waking a tokio
//! task directly from the thread would take the scheduler's locks. An eventfd
//! write takes no user-space lock, never blocks (a full counter gives `EAGAIN`,
//! which only means a wake-up is already due) and allocates nothing, so it
//! keeps the real-time promises of `rt.rs`.
//!
//! Promises: [`WakeSignal::signal`] never blocks or allocates; a signal given
//! before or during [`WakeWaiter::wait`] is never lost (the waiter clears the
//! counter *before* its caller looks at the ring again, so the worst case is
//! one spurious wake-up).

use std::io;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The real-time thread's end.
#[derive(Debug, Clone)]
pub struct WakeSignal(Arc<EventFd>);

impl WakeSignal {
    /// Wakes the waiting task (or makes its next wait return at once).
    pub fn signal(&self) {
        // EAGAIN: the counter is at its maximum, a wake-up is due anyway.
        let _ = self.0.write(1);
    }
}

/// The task's end. Registers with the reactor on the first wait, so it can be
/// made outside a runtime (the engine is opened on a blocking thread).
#[derive(Debug)]
pub struct WakeWaiter {
    fd: Arc<EventFd>,
    registered: Option<AsyncFd<Arc<EventFd>>>,
}

impl WakeWaiter {
    /// Returns once a signal came since the last wait (at once if one did).
    /// Must run inside a tokio runtime with I/O enabled.
    pub async fn wait(&mut self) -> io::Result<()> {
        if self.registered.is_none() {
            // SAFETY: the AsyncFd owns a clone of the Arc, so the eventfd stays
            // open, and is the same descriptor, for as long as it is registered.
            let registered = unsafe { AsyncFd::register_with_interest(self.fd.clone(), Interest::READABLE) };
            self.registered = Some(registered.map_err(|e| e.into_parts().1)?);
        }
        let Some(afd) = self.registered.as_ref() else { return Ok(()) };
        loop {
            let mut ready = afd.readable().await?;
            match ready.try_io(|fd| fd.get_ref().read().map_err(io_error)) {
                Ok(Ok(_count)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                // Readiness was stale: try_io cleared it; wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

fn io_error(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

/// A connected pair (close-on-exec, non-blocking).
pub fn pair() -> io::Result<(WakeSignal, WakeWaiter)> {
    let fd = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map_err(io_error)?);
    Ok((WakeSignal(fd.clone()), WakeWaiter { fd, registered: None }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_signal_wakes_the_waiter_and_none_is_lost() {
        let (signal, mut waiter) = pair().unwrap();
        // Given before the wait: the wait returns at once.
        signal.signal();
        signal.signal();
        tokio::time::timeout(Duration::from_secs(5), waiter.wait()).await.expect("a given signal is kept").unwrap();
        // Both were taken by that one wait: the next one waits.
        assert!(tokio::time::timeout(Duration::from_millis(50), waiter.wait()).await.is_err(), "no signal, no wake-up");
        // Given from another thread during the wait.
        let from_thread = signal.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            from_thread.signal();
        });
        tokio::time::timeout(Duration::from_secs(5), waiter.wait()).await.expect("woken from the thread").unwrap();
        t.join().unwrap();
    }
}
