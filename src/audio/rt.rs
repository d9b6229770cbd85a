//! The real-time audio thread. Owns both PCM handles (through a [`PcmBackend`]:
//! real ALSA, or a simulation in tests), the consumer end of the playback ring
//! and the producer end of the capture ring.
//!
//! Promises, once [`RtHooks::on_loop_enter`] has run and until
//! [`RtHooks::on_loop_exit`]: no allocation, no lock, no system call other than
//! the backend's (ALSA), the rings' atomics and one non-blocking eventfd write
//! per frame ([`WakeSignal`]); the clock is the vDSO's
//! `CLOCK_MONOTONIC`. Every buffer is allocated in the setup phase, before the
//! loop. The setup phase also asks for SCHED_FIFO and `mlockall(MCL_CURRENT)`
//! and reports (never logs: logging may lock) whether it got them.
//!
//! One iteration per capture period: read one period (blocking; the capture
//! device is the clock), push it to the capture ring (waking the call's task
//! once a whole frame waits there), apply a pending flush, then
//! top the playback device up to `playback_fill_periods` from the playback ring,
//! filling what the ring lacks with silence reached by a short ramp (no click).
//! Both devices sit on the same card (snd-aloop), so their clocks cannot drift.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use rtrb::{Consumer, Producer};

use super::wake::WakeSignal;

/// Which PCM a backend error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Capture,
    Playback,
}

/// A backend failure: an xrun or a stall (recoverable, counted) or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcmError {
    /// Overrun (capture) or underrun (playback), or a suspend: recover and go on.
    Xrun,
    /// No period came within the kernel's wait (EIO): the device's clock
    /// stalled (a starved machine) and the stream is left running. Recover
    /// and go on, counted apart from xruns.
    Stalled,
    /// An errno from ALSA that recovery cannot fix; the loop stops.
    Fatal(i32),
}

/// The two PCMs as the real-time loop uses them. Mono i16 at the configured
/// rate; every method is called on the real-time thread only.
pub trait PcmBackend {
    /// Starts capture and prepares playback (playback starts by itself once
    /// its start threshold of `playback_fill_periods` is written).
    fn start(&mut self) -> Result<(), PcmError>;
    /// Blocks until exactly `buf.len()` frames are captured.
    fn read(&mut self, buf: &mut [i16]) -> Result<(), PcmError>;
    /// Frames written to playback and not yet played.
    fn playback_queued(&mut self) -> Result<usize, PcmError>;
    /// Writes all of `buf` to playback (never blocks in steady state: the loop
    /// only writes what fits).
    fn write(&mut self, buf: &[i16]) -> Result<(), PcmError>;
    /// Discards everything queued in playback at once and makes it ready for
    /// writes again (barge-in).
    fn drop_playback(&mut self) -> Result<(), PcmError>;
    /// Recovers `stream` after [`PcmError::Xrun`].
    fn recover(&mut self, stream: Stream) -> Result<(), PcmError>;
}

/// Called on the real-time thread right before the loop starts and right after
/// it ends (for instrumentation: the allocation test counts between them).
#[derive(Clone, Copy)]
pub struct RtHooks {
    pub on_loop_enter: fn(),
    pub on_loop_exit: fn(),
}

impl Default for RtHooks {
    fn default() -> Self {
        fn nothing() {}
        RtHooks { on_loop_enter: nothing, on_loop_exit: nothing }
    }
}

/// One period's timing, sent from the real-time thread for latency figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark {
    /// Cumulative sample index at the end of this period (captured samples, or
    /// agent samples taken from the playback ring).
    pub end_index: u64,
    /// Nanoseconds since the engine started, when the period was read / written.
    pub at_ns: u64,
    /// Playback: frames already queued in the device ahead of this period.
    pub device_queued: u32,
}

/// State shared lock-free between the real-time thread and the async side.
#[derive(Debug)]
pub struct Shared {
    pub(crate) epoch: Instant,
    pub(crate) stop: AtomicBool,
    pub(crate) finished: AtomicBool,
    /// errno of the failure that ended the loop (0: none).
    pub(crate) fatal: AtomicU32,
    /// Bumped by a flush; the real-time thread compares it once per period.
    pub(crate) flush_epoch: AtomicU32,
    /// Agent samples pushed so far (written by the producer after each push).
    pub(crate) pushed: AtomicU64,
    /// A flush drops agent samples with an index below this.
    pub(crate) flush_upto: AtomicU64,
    pub(crate) capture_xruns: AtomicU32,
    pub(crate) playback_xruns: AtomicU32,
    /// Waits that timed out (EIO), either stream.
    pub(crate) stalls: AtomicU32,
    pub(crate) underruns: AtomicU32,
    pub(crate) capture_dropped: AtomicU64,
    pub(crate) flushes: AtomicU32,
    pub(crate) flushed_samples: AtomicU64,
    pub(crate) queued_samples: AtomicU64,
    pub(crate) max_queued_samples: AtomicU64,
    pub(crate) peak_in: AtomicU32,
    pub(crate) peak_out: AtomicU32,
    pub(crate) captured: AtomicU64,
    pub(crate) played: AtomicU64,
    /// Longest interval between two capture reads returning.
    pub(crate) longest_gap_ns: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            fatal: AtomicU32::new(0),
            flush_epoch: AtomicU32::new(0),
            pushed: AtomicU64::new(0),
            flush_upto: AtomicU64::new(0),
            capture_xruns: AtomicU32::new(0),
            playback_xruns: AtomicU32::new(0),
            stalls: AtomicU32::new(0),
            underruns: AtomicU32::new(0),
            capture_dropped: AtomicU64::new(0),
            flushes: AtomicU32::new(0),
            flushed_samples: AtomicU64::new(0),
            queued_samples: AtomicU64::new(0),
            max_queued_samples: AtomicU64::new(0),
            peak_in: AtomicU32::new(0),
            peak_out: AtomicU32::new(0),
            captured: AtomicU64::new(0),
            played: AtomicU64::new(0),
            longest_gap_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// Capture reads failing in a row (each recovered) before the device is
/// taken for gone: about 5 s of 100 ms kernel waits.
const MAX_FAILED_READS: u32 = 50;

/// Sizes the loop needs (frames at the device rate).
#[derive(Debug, Clone, Copy)]
pub struct RtSizes {
    pub period: usize,
    /// Playback frames kept written ahead.
    pub fill: usize,
    /// The device buffer (for the playback history).
    pub buffer: usize,
    /// Ramp length to and from silence.
    pub ramp: usize,
    /// The consumer's frame: once the capture ring holds this many samples,
    /// its task is woken.
    pub frame: usize,
}

/// The ring ends the loop owns (its side of each lock-free queue).
pub struct RtRings {
    pub capture_tx: Producer<i16>,
    pub playback_rx: Consumer<i16>,
    pub capture_marks: Producer<Mark>,
    pub playback_marks: Producer<Mark>,
    /// Agent sample indices where the producer declared an utterance ended.
    pub utterance_ends: Consumer<u64>,
    /// Wakes the consumer of the capture ring.
    pub wake: WakeSignal,
}

/// The loop and everything it owns. Built in the setup phase (allocates),
/// then [`RtLoop::run`] (does not).
pub struct RtLoop<B: PcmBackend> {
    backend: B,
    shared: Arc<Shared>,
    capture_tx: Producer<i16>,
    playback_rx: Consumer<i16>,
    capture_marks: Producer<Mark>,
    playback_marks: Producer<Mark>,
    /// Agent sample indices where the producer declared an utterance ended:
    /// running dry exactly there is the end of speech, not an underrun.
    utterance_ends: Consumer<u64>,
    wake: WakeSignal,
    sizes: RtSizes,
    capture_buf: Vec<i16>,
    playback_buf: Vec<i16>,
    /// The last `buffer` samples written to playback, by written index.
    history: Vec<i16>,
    written: u64,
    consumed: u64,
    captured: u64,
    last_out: i16,
    playing: bool,
    /// Consumed index where the ring ran dry mid-speech, if it did.
    dry_at: Option<u64>,
    fade_in_left: usize,
    seen_flush: u32,
    /// When the previous capture period was read (0: none yet).
    last_read_ns: u64,
}

impl<B: PcmBackend> RtLoop<B> {
    pub(crate) fn new(backend: B, shared: Arc<Shared>, rings: RtRings, sizes: RtSizes) -> Self {
        let RtRings { capture_tx, playback_rx, capture_marks, playback_marks, utterance_ends, wake } = rings;
        RtLoop {
            backend,
            shared,
            capture_tx,
            playback_rx,
            capture_marks,
            playback_marks,
            utterance_ends,
            wake,
            capture_buf: vec![0; sizes.period],
            playback_buf: vec![0; sizes.fill],
            history: vec![0; sizes.buffer.max(sizes.fill + sizes.period)],
            sizes,
            written: 0,
            consumed: 0,
            captured: 0,
            last_out: 0,
            playing: false,
            dry_at: None,
            fade_in_left: 0,
            seen_flush: 0,
            last_read_ns: 0,
        }
    }

    /// Runs until [`Shared::stop`] or a fatal error. Allocation-free.
    pub(crate) fn run(&mut self) -> Result<(), PcmError> {
        self.seen_flush = self.shared.flush_epoch.load(Ordering::Acquire);
        self.backend.start()?;
        self.top_up()?;
        let mut failed_reads = 0;
        while !self.shared.stop.load(Ordering::Acquire) {
            match self.backend.read(&mut self.capture_buf) {
                Ok(()) => {
                    failed_reads = 0;
                    self.deliver_capture();
                }
                Err(kind @ (PcmError::Xrun | PcmError::Stalled)) => {
                    let counter = if kind == PcmError::Xrun { &self.shared.capture_xruns } else { &self.shared.stalls };
                    counter.fetch_add(1, Ordering::Relaxed);
                    failed_reads += 1;
                    if failed_reads > MAX_FAILED_READS {
                        // Recovering does not bring the device back: give up.
                        return Err(PcmError::Fatal(libc::EIO));
                    }
                    self.backend.recover(Stream::Capture)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let flush = self.shared.flush_epoch.load(Ordering::Acquire);
            if flush != self.seen_flush {
                self.seen_flush = flush;
                self.flush()?;
            }
            self.top_up()?;
        }
        Ok(())
    }

    fn deliver_capture(&mut self) {
        let at_ns = self.shared.now_ns();
        if self.last_read_ns != 0 {
            self.shared.longest_gap_ns.fetch_max(at_ns.saturating_sub(self.last_read_ns), Ordering::Relaxed);
        }
        self.last_read_ns = at_ns;
        let peak = self.capture_buf.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        self.shared.peak_in.fetch_max(u32::from(peak), Ordering::Relaxed);
        let (_, rest) = self.capture_tx.push_partial_slice(&self.capture_buf);
        if !rest.is_empty() {
            // The async side is not reading: the newest audio is lost, counted.
            self.shared.capture_dropped.fetch_add(rest.len() as u64, Ordering::Relaxed);
        }
        self.captured += self.capture_buf.len() as u64;
        self.shared.captured.store(self.captured, Ordering::Relaxed);
        let _ = self.capture_marks.push(Mark { end_index: self.captured, at_ns, device_queued: 0 });
        let waiting = self.capture_tx.buffer().capacity() - self.capture_tx.slots();
        if waiting >= self.sizes.frame {
            self.wake.signal();
        }
    }

    /// Drops the agent audio queued before the flush, in the ring and in the
    /// device, then ramps from the sample that was sounding to silence.
    fn flush(&mut self) -> Result<(), PcmError> {
        let upto = self.shared.flush_upto.load(Ordering::Acquire);
        let drop_n = (upto.saturating_sub(self.consumed) as usize).min(self.playback_rx.slots());
        if let Ok(chunk) = self.playback_rx.read_chunk(drop_n) {
            chunk.commit_all();
        }
        self.consumed += drop_n as u64;
        let queued = match self.backend.playback_queued() {
            Ok(q) => q,
            Err(PcmError::Xrun | PcmError::Stalled) => 0,
            Err(e) => return Err(e),
        };
        // The sample the device is playing now: ramp down from it.
        let sounding = self.written.saturating_sub(queued as u64 + 1);
        self.last_out = self.history[(sounding % self.history.len() as u64) as usize];
        match self.backend.drop_playback() {
            Ok(()) => {}
            Err(PcmError::Xrun | PcmError::Stalled) => self.backend.recover(Stream::Playback)?,
            Err(e) => return Err(e),
        }
        self.written = self.written.saturating_sub(queued as u64);
        self.playing = false;
        self.dry_at = None;
        self.shared.flushes.fetch_add(1, Ordering::Relaxed);
        self.shared.flushed_samples.fetch_add(drop_n as u64 + queued as u64, Ordering::Relaxed);
        self.shared.played.store(self.consumed, Ordering::Relaxed);
        Ok(())
    }

    /// Writes what the playback device lacks to hold exactly `fill` frames:
    /// any amount, not whole periods, so the device never holds less than
    /// `fill` minus one wake-up's worth (the loopback's clock moves in
    /// jiffies, so wake-ups are uneven).
    fn top_up(&mut self) -> Result<(), PcmError> {
        let mut queued = loop {
            match self.backend.playback_queued() {
                Ok(q) => break q,
                Err(kind @ (PcmError::Xrun | PcmError::Stalled)) => self.playback_xrun(kind)?,
                Err(e) => return Err(e),
            }
        };
        // Below this, a write is not worth a system call.
        let min_write = (self.sizes.period / 8).max(1);
        while queued + min_write <= self.sizes.fill {
            let want = self.sizes.fill - queued;
            let device_queued = queued as u32;
            self.fill_buffer(want);
            match self.backend.write(&self.playback_buf[..want]) {
                Ok(()) => {}
                Err(kind @ (PcmError::Xrun | PcmError::Stalled)) => {
                    // This audio is lost to the xrun; start again from a
                    // recovered, empty device.
                    self.playback_xrun(kind)?;
                    queued = 0;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let len = self.history.len() as u64;
            for &s in self.playback_buf[..want].iter() {
                self.history[(self.written % len) as usize] = s;
                self.written += 1;
            }
            queued += want;
            let at_ns = self.shared.now_ns();
            let _ = self.playback_marks.push(Mark { end_index: self.consumed, at_ns, device_queued });
        }
        let ring = self.playback_rx.slots() as u64;
        let total = ring + queued as u64;
        self.shared.queued_samples.store(total, Ordering::Relaxed);
        self.shared.max_queued_samples.fetch_max(total, Ordering::Relaxed);
        Ok(())
    }

    fn playback_xrun(&mut self, kind: PcmError) -> Result<(), PcmError> {
        let counter = if kind == PcmError::Stalled { &self.shared.stalls } else { &self.shared.playback_xruns };
        counter.fetch_add(1, Ordering::Relaxed);
        self.backend.recover(Stream::Playback)
    }

    /// Fills `playback_buf[..want]`: ring audio, then a ramp to silence if
    /// the ring ran short.
    fn fill_buffer(&mut self, want: usize) {
        let period = want;
        if self.dry_at.is_none() {
            // Ends already passed without running dry: forget them.
            while let Ok(&end) = self.utterance_ends.peek() {
                if end >= self.consumed {
                    break;
                }
                let _ = self.utterance_ends.pop();
            }
        }
        let (head, _) = self.playback_rx.pop_partial_slice(&mut self.playback_buf[..want]);
        let n = head.len();
        if n > 0 {
            if let Some(dry) = self.dry_at.take() {
                // Audio resumed after running dry: a gap in the agent's speech
                // unless the producer declared an utterance ending right there.
                let mut declared = false;
                while let Ok(&end) = self.utterance_ends.peek() {
                    if end > dry {
                        break;
                    }
                    declared |= end == dry;
                    let _ = self.utterance_ends.pop();
                }
                if !declared {
                    self.shared.underruns.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !self.playing {
                self.fade_in_left = self.sizes.ramp;
            }
            let ramp = self.sizes.ramp as i32;
            for s in self.playback_buf[..n].iter_mut() {
                if self.fade_in_left == 0 {
                    break;
                }
                let k = ramp - self.fade_in_left as i32;
                *s = (i32::from(*s) * k / ramp) as i16;
                self.fade_in_left -= 1;
            }
            let peak = self.playback_buf[..n].iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
            self.shared.peak_out.fetch_max(u32::from(peak), Ordering::Relaxed);
            self.consumed += n as u64;
            self.shared.played.store(self.consumed, Ordering::Relaxed);
            self.last_out = self.playback_buf[n - 1];
        }
        if n < period {
            if n > 0 || self.playing {
                self.dry_at = Some(self.consumed);
            }
            self.playing = false;
            let room = period - n;
            let ramp = self.sizes.ramp.min(room).max(1) as i32;
            let from = i32::from(self.last_out);
            for (i, s) in self.playback_buf[n..want].iter_mut().enumerate() {
                let i = i as i32;
                *s = if i < ramp { (from * (ramp - 1 - i) / ramp) as i16 } else { 0 };
            }
            self.last_out = 0;
        } else {
            self.playing = true;
        }
    }
}

/// What the setup phase asked the kernel for, and got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Granted,
    /// Not asked for (`realtime_priority = 0`, `lock_memory = false`).
    NotAsked,
    /// Refused, with the errno.
    Refused(i32),
}

impl Grant {
    pub fn is_granted(self) -> bool {
        self == Grant::Granted
    }
}

/// SCHED_FIFO for the calling thread at `priority` (0: not asked for).
pub(crate) fn set_realtime(priority: u8) -> Grant {
    if priority == 0 {
        return Grant::NotAsked;
    }
    let param = libc::sched_param { sched_priority: i32::from(priority) };
    // SAFETY: plain FFI call on the current thread with a valid parameter.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc == 0 { Grant::Granted } else { Grant::Refused(rc) }
}

/// Locks the pages mapped now (the real-time thread's buffers and stack are,
/// by then) so they cannot be paged out. `MCL_FUTURE` is left out on purpose:
/// under a small `RLIMIT_MEMLOCK` it would make later allocations elsewhere in
/// the daemon fail.
pub(crate) fn lock_memory() -> Grant {
    // SAFETY: plain FFI call.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT) };
    if rc == 0 { Grant::Granted } else { Grant::Refused(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)) }
}

/// Touches the stack the loop will use so its pages are mapped (and locked).
#[inline(never)]
pub(crate) fn prefault_stack() {
    let mut page = [0u8; 64 * 1024];
    std::hint::black_box(&mut page);
}
