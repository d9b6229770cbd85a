//! A simulated PCM pair for tests and benchmarks on machines without sound
//! hardware: a capture clock (real-time paced, or as fast as the loop runs),
//! a generated capture signal, and a playback device whose output ("what the
//! phone hears") goes to a lock-free ring the test reads.
//!
//! Owns the simulated device state; promises that, like ALSA on a loopback,
//! one capture period plays one period of playback, an empty playback device
//! at a period boundary is an xrun, and that it allocates nothing after
//! [`SimPcm::new`] (injected xruns are listed up front). Lives with the tests,
//! so the release binary carries only the ALSA backend.

#![allow(dead_code)] // each test binary uses a part of it

use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer, RingBuffer};

use cap4::audio::{PcmBackend, PcmError, Stream};

/// What the simulated phone says: sample `index` of the capture stream.
pub type Source = fn(u64) -> i16;

/// The simulated device pair.
pub struct SimPcm {
    period: usize,
    buffer: usize,
    start_threshold: usize,
    pace: Option<Duration>,
    next_deadline: Option<Instant>,
    source: Source,
    captured: u64,
    periods: u64,
    queued: usize,
    running: bool,
    xrun: bool,
    /// Periods at which a capture overrun is injected (sorted).
    capture_xruns_at: Vec<u64>,
    next_xrun: usize,
    /// Periods whose read times out (EIO), leaving capture running (sorted).
    capture_stalls_at: Vec<u64>,
    next_stall: usize,
    /// Periods at which the playback device is made to underrun (sorted).
    playback_xruns_at: Vec<u64>,
    next_pxrun: usize,
    /// (period, extra delay): that period reaches the loop late, as when the
    /// thread is not scheduled in time; later periods come at once until
    /// the clock is caught up, as ALSA's would.
    stall: Option<(u64, Duration)>,
    heard: Producer<i16>,
    device: Vec<i16>,
    device_head: usize,
}

impl SimPcm {
    /// `period`/`buffer` in frames; `pace`: sleep to real time per period
    /// (`None`: free-running). Returns the device and the ring of what it
    /// played (capacity `heard_capacity`; older audio is dropped when full).
    pub fn new(
        period: usize,
        buffer: usize,
        start_threshold: usize,
        pace: Option<Duration>,
        source: Source,
        heard_capacity: usize,
    ) -> (SimPcm, Consumer<i16>) {
        let (heard, heard_rx) = RingBuffer::new(heard_capacity);
        let sim = SimPcm {
            period,
            buffer,
            start_threshold,
            pace,
            next_deadline: None,
            source,
            captured: 0,
            periods: 0,
            queued: 0,
            running: false,
            xrun: false,
            capture_xruns_at: Vec::new(),
            next_xrun: 0,
            capture_stalls_at: Vec::new(),
            next_stall: 0,
            playback_xruns_at: Vec::new(),
            next_pxrun: 0,
            stall: None,
            heard,
            device: vec![0; buffer],
            device_head: 0,
        };
        (sim, heard_rx)
    }

    /// Injects a capture overrun at each of these period numbers.
    pub fn with_capture_xruns(mut self, mut at: Vec<u64>) -> Self {
        at.sort_unstable();
        self.capture_xruns_at = at;
        self
    }

    /// Makes capture reads time out (EIO) at each of these period numbers.
    pub fn with_capture_stalls(mut self, mut at: Vec<u64>) -> Self {
        at.sort_unstable();
        self.capture_stalls_at = at;
        self
    }

    /// Makes the playback device underrun at each of these period numbers.
    pub fn with_playback_xruns(mut self, mut at: Vec<u64>) -> Self {
        at.sort_unstable();
        self.playback_xruns_at = at;
        self
    }

    /// Delivers capture period `at` late by `delay` (a stalled thread).
    pub fn with_stall(mut self, at: u64, delay: Duration) -> Self {
        self.stall = Some((at, delay));
        self
    }

    /// One period of playback time passes.
    fn play_period(&mut self) {
        if !self.running {
            return;
        }
        if self.queued < self.period {
            // Ran empty inside the period: ALSA stops the stream (xrun).
            for _ in 0..self.queued {
                self.emit();
            }
            for _ in self.queued..self.period {
                let _ = self.heard.push(0);
            }
            self.queued = 0;
            self.running = false;
            self.xrun = true;
            return;
        }
        for _ in 0..self.period {
            self.emit();
        }
    }

    fn emit(&mut self) {
        let s = self.device[self.device_head];
        self.device_head = (self.device_head + 1) % self.buffer;
        self.queued -= 1;
        let _ = self.heard.push(s);
    }
}

impl PcmBackend for SimPcm {
    fn start(&mut self) -> Result<(), PcmError> {
        self.next_deadline = self.pace.map(|p| Instant::now() + p);
        Ok(())
    }

    fn read(&mut self, buf: &mut [i16]) -> Result<(), PcmError> {
        if let Some(deadline) = self.next_deadline {
            let now = Instant::now();
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
            self.next_deadline = Some(deadline + self.pace.unwrap_or_default());
        }
        if let Some((at, delay)) = self.stall {
            if self.periods + 1 == at {
                std::thread::sleep(delay);
            }
        }
        self.periods += 1;
        self.play_period();
        if self.playback_xruns_at.get(self.next_pxrun) == Some(&self.periods) {
            self.next_pxrun += 1;
            self.queued = 0;
            self.running = false;
            self.xrun = true;
        }
        if self.capture_xruns_at.get(self.next_xrun) == Some(&self.periods) {
            self.next_xrun += 1;
            return Err(PcmError::Xrun);
        }
        if self.capture_stalls_at.get(self.next_stall) == Some(&self.periods) {
            self.next_stall += 1;
            return Err(PcmError::Stalled);
        }
        for s in buf.iter_mut() {
            *s = (self.source)(self.captured);
            self.captured += 1;
        }
        Ok(())
    }

    fn playback_queued(&mut self) -> Result<usize, PcmError> {
        if self.xrun { Err(PcmError::Xrun) } else { Ok(self.queued) }
    }

    fn write(&mut self, buf: &[i16]) -> Result<(), PcmError> {
        if self.xrun {
            return Err(PcmError::Xrun);
        }
        if self.queued + buf.len() > self.buffer {
            return Err(PcmError::Fatal(libc::EINVAL));
        }
        for &s in buf {
            let at = (self.device_head + self.queued) % self.buffer;
            self.device[at] = s;
            self.queued += 1;
        }
        if !self.running && self.queued >= self.start_threshold {
            self.running = true;
        }
        Ok(())
    }

    fn drop_playback(&mut self) -> Result<(), PcmError> {
        self.queued = 0;
        self.running = false;
        self.xrun = false;
        Ok(())
    }

    fn recover(&mut self, stream: Stream) -> Result<(), PcmError> {
        if stream == Stream::Playback {
            self.drop_playback()?;
        }
        Ok(())
    }
}
