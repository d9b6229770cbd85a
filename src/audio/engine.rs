//! The async-facing handle of one call's audio: starts the real-time thread
//! (which opens both PCMs), exchanges 20 ms frames with it through the two
//! lock-free rings, flushes queued agent audio (barge-in), and reports the
//! call's stats and latencies.
//!
//! Owns the async ends of the rings and the thread's join handle. Promises:
//! [`AudioEngine::start`] returns only once the devices are open and the
//! thread is in its loop (or with the reason it is not); a flush is one atomic
//! store plus one atomic increment, seen by the thread within one period;
//! nothing here blocks for longer than a period (`stop` joins a thread that
//! wakes every period); dropping the engine stops the thread.

use crate::section::SectionError;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rtrb::{Consumer, Producer, RingBuffer};
use serde::{Deserialize, Serialize};

use super::alsa_pcm::{AlsaError, AlsaPcm};
use super::config::AudioConfig;
use super::rt::{self, Grant, Mark, PcmBackend, PcmError, RtHooks, RtLoop, RtRings, RtSizes, Shared};
use super::wake::{self, WakeWaiter};

/// Why the engine could not start or stopped.
#[derive(Debug)]
pub enum AudioError {
    /// The `[audio]` config is invalid (the message names the key).
    Config(SectionError),
    /// A device could not be opened or configured: the backend's own error
    /// ([`AlsaError`](super::alsa_pcm::AlsaError) for ALSA).
    Open(Box<dyn std::error::Error + Send + Sync>),
    /// The real-time thread could not be created.
    Spawn(std::io::Error),
    /// ALSA failed in a way recovery cannot fix (errno).
    Device(i32),
    /// The real-time thread is gone.
    Stopped,
    /// The thread's wake-up eventfd could not be made (out of descriptors).
    Wake(std::io::Error),
}

impl fmt::Display for AudioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioError::Config(m) => write!(f, "invalid [audio] config: {m}"),
            AudioError::Open(m) => write!(f, "audio device: {m}"),
            AudioError::Spawn(e) => write!(f, "audio thread: {e}"),
            AudioError::Device(n) => write!(f, "ALSA failed: {}", std::io::Error::from_raw_os_error(*n)),
            AudioError::Stopped => write!(f, "the audio thread stopped"),
            AudioError::Wake(e) => write!(f, "audio thread wake-up: {e}"),
        }
    }
}

impl std::error::Error for AudioError {}

/// One call's audio figures, for the call record and the debug log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioStats {
    pub capture_xruns: u32,
    pub playback_xruns: u32,
    /// Waits for a period that timed out (the device's clock stalled: a
    /// starved machine), recovered.
    #[serde(default)]
    pub stalls: u32,
    /// The agent's audio ran dry mid-utterance (silence was played).
    pub underruns: u32,
    /// Caller audio lost because the async side did not read it in time.
    pub capture_dropped_ms: u32,
    /// Agent audio refused because the playback ring was full.
    pub playback_rejected_ms: u32,
    pub flushes: u32,
    /// Agent audio discarded by flushes (ring and device).
    pub flushed_ms: u32,
    /// Agent audio waiting now (ring + device).
    pub queued_ms: u32,
    pub max_queued_ms: u32,
    /// Peak levels in dBFS (−96 for silence).
    pub peak_in_dbfs: f32,
    pub peak_out_dbfs: f32,
    pub captured_ms: u64,
    pub played_ms: u64,
    /// The longest time between two capture periods reaching the real-time
    /// thread (one period is normal): when it exceeds the playback fill, the
    /// thread was not run in time and an xrun follows.
    #[serde(default)]
    pub longest_wakeup_gap_ms: u32,
    /// The thread got SCHED_FIFO / its memory is locked.
    pub realtime: bool,
    pub memory_locked: bool,
}

/// p50/p99 of the box-added latency per direction, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyReport {
    /// ALSA capture period read → 20 ms frame handed to the async side.
    pub capture_p50_ms: f64,
    pub capture_p99_ms: f64,
    pub capture_count: u64,
    /// Frame handed to [`AudioEngine::send`] → its first sample written to ALSA.
    pub playback_p50_ms: f64,
    pub playback_p99_ms: f64,
    /// … plus the audio already queued in the device ahead of it (→ played).
    pub playback_played_p50_ms: f64,
    pub playback_played_p99_ms: f64,
    /// Sent → written, less the agent audio already in the ring ahead of it
    /// (which plays first, in order, at the device's pace): the delay the box
    /// adds. Equals the sent → written figure when every send finds the ring empty.
    pub playback_added_p50_ms: f64,
    pub playback_added_p99_ms: f64,
    pub playback_count: u64,
}

/// What the real-time thread got in its setup phase.
#[derive(Debug, Clone, Copy)]
pub struct RtReport {
    pub period_frames: usize,
    pub buffer_frames: usize,
    pub fill_frames: usize,
    /// SCHED_FIFO for the thread.
    pub realtime: Grant,
    /// `mlockall` of the pages mapped at the start.
    pub memory_locked: Grant,
}

/// Flushes the agent audio queued so far, from any task (cheap to clone).
#[derive(Clone, Debug)]
pub struct FlushHandle(Arc<Shared>);

impl FlushHandle {
    /// Barge-in: every agent sample sent before this call is dropped (ring and
    /// device) within one period; audio sent afterwards plays normally.
    pub fn flush(&self) {
        let pushed = self.0.pushed.load(Ordering::Acquire);
        self.0.flush_upto.fetch_max(pushed, Ordering::Release);
        self.0.flush_epoch.fetch_add(1, Ordering::Release);
    }
}

/// Fixed-bucket latency histogram (0.1 ms buckets up to 1 s); no allocation
/// after creation.
struct Histogram {
    buckets: Vec<u32>,
    count: u64,
}

impl Histogram {
    const BUCKET_NS: u64 = 100_000;

    fn new() -> Self {
        Histogram { buckets: vec![0; 10_001], count: 0 }
    }

    fn record(&mut self, ns: u64) {
        let i = ((ns / Self::BUCKET_NS) as usize).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.count += 1;
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return (i as u64 * Self::BUCKET_NS + Self::BUCKET_NS) as f64 / 1e6;
            }
        }
        1000.0
    }
}

/// One [`AudioEngine::send`], remembered until its first sample is written.
#[derive(Debug, Clone, Copy)]
struct SentFrame {
    /// Index of its first sample among all agent samples sent.
    start: u64,
    at_ns: u64,
    /// Agent samples sent before it and not yet taken by the real-time thread.
    ahead: u64,
}

/// One call's audio engine.
pub struct AudioEngine {
    shared: Arc<Shared>,
    capture_rx: Consumer<i16>,
    playback_tx: Producer<i16>,
    capture_marks: Consumer<Mark>,
    playback_marks: Consumer<Mark>,
    utterance_ends: Producer<u64>,
    /// Signalled by the thread once a frame waits in the capture ring.
    frame_ready: WakeWaiter,
    thread: Option<JoinHandle<Result<(), PcmError>>>,
    report: RtReport,
    rate: u32,
    frame: usize,
    received: u64,
    pushed: u64,
    rejected: u64,
    /// Recent sends, for playback latency.
    sends: VecDeque<SentFrame>,
    capture_latency: Histogram,
    playback_latency: Histogram,
    played_latency: Histogram,
    added_latency: Histogram,
}

impl fmt::Debug for AudioEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioEngine").field("report", &self.report).field("rate", &self.rate).finish()
    }
}

impl AudioEngine {
    /// Opens the configured ALSA devices on a new real-time thread.
    pub fn start(cfg: &AudioConfig) -> Result<AudioEngine, AudioError> {
        let fill = cfg.period_frames() * cfg.playback_fill_periods as usize;
        let c = cfg.clone();
        let engine = Self::start_with(cfg, RtHooks::default(), move || {
            let (pcm, setup) = AlsaPcm::open(&c, fill)?;
            let buffer = pcm.buffer;
            let _ = setup;
            Ok::<_, AlsaError>((pcm, buffer))
        })?;
        engine.log_setup(cfg);
        Ok(engine)
    }

    /// Starts the real-time thread on any backend. `open` runs on that thread
    /// (the thread owns the devices) and returns the backend and its playback
    /// buffer size in frames.
    pub fn start_with<B, E, F>(cfg: &AudioConfig, hooks: RtHooks, open: F) -> Result<AudioEngine, AudioError>
    where
        B: PcmBackend + 'static,
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce() -> Result<(B, usize), E> + Send + 'static,
    {
        cfg.validate().map_err(AudioError::Config)?;
        let shared = Arc::new(Shared::new());
        let (capture_tx, capture_rx) = RingBuffer::new(cfg.ms_to_samples(cfg.capture_ring_ms));
        let (playback_tx, playback_rx) = RingBuffer::new(cfg.ms_to_samples(cfg.playback_ring_ms));
        let marks = 4 * 1000 / cfg.period_ms as usize; // 4 s of periods
        let (cmarks_tx, cmarks_rx) = RingBuffer::new(marks);
        let (pmarks_tx, pmarks_rx) = RingBuffer::new(marks);
        let (ends_tx, ends_rx) = RingBuffer::new(256);
        let period = cfg.period_frames();
        let fill = period * cfg.playback_fill_periods as usize;
        let ramp = (cfg.rate as usize / 500).min(period); // 2 ms
        let priority = cfg.realtime_priority;
        let lock = cfg.lock_memory;
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<RtReport, E>>(1);
        let (wake, frame_ready) = wake::pair().map_err(AudioError::Wake)?;
        let frame = cfg.frame_samples();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cap4-audio-rt".into())
            .spawn(move || {
                let shared = thread_shared;
                let finished_wake = wake.clone();
                let finish = |r: Result<(), PcmError>| {
                    if let Err(PcmError::Fatal(n)) = r {
                        shared.fatal.store(n as u32, Ordering::Relaxed);
                    }
                    shared.finished.store(true, Ordering::Release);
                    // A task waiting for a frame learns the thread is gone.
                    finished_wake.signal();
                    r
                };
                let (backend, buffer) = match open() {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return finish(Ok(()));
                    }
                };
                let realtime = rt::set_realtime(priority);
                let sizes = RtSizes { period, fill, buffer, ramp, frame };
                let rings =
                    RtRings { capture_tx, playback_rx, capture_marks: cmarks_tx, playback_marks: pmarks_tx, utterance_ends: ends_rx, wake };
                let mut lp = RtLoop::new(backend, shared.clone(), rings, sizes);
                rt::prefault_stack();
                let memory_locked = if lock { rt::lock_memory() } else { Grant::NotAsked };
                let report = RtReport { period_frames: period, buffer_frames: buffer, fill_frames: fill, realtime, memory_locked };
                let _ = ready_tx.send(Ok(report));
                (hooks.on_loop_enter)();
                let r = lp.run();
                (hooks.on_loop_exit)();
                drop(lp);
                finish(r)
            })
            .map_err(AudioError::Spawn)?;
        let report = match ready_rx.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(AudioError::Open(Box::new(e)));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(AudioError::Stopped);
            }
        };
        Ok(AudioEngine {
            shared,
            capture_rx,
            playback_tx,
            capture_marks: cmarks_rx,
            playback_marks: pmarks_rx,
            utterance_ends: ends_tx,
            thread: Some(thread),
            report,
            rate: cfg.rate,
            frame,
            frame_ready,
            received: 0,
            pushed: 0,
            rejected: 0,
            sends: VecDeque::with_capacity(4096),
            capture_latency: Histogram::new(),
            playback_latency: Histogram::new(),
            played_latency: Histogram::new(),
            added_latency: Histogram::new(),
        })
    }

    fn log_setup(&self, cfg: &AudioConfig) {
        let r = &self.report;
        tracing::info!(
            capture = %cfg.capture_device,
            playback = %cfg.playback_device,
            rate = cfg.rate,
            period_frames = r.period_frames,
            buffer_frames = r.buffer_frames,
            fill_frames = r.fill_frames,
            "audio engine started"
        );
        match r.realtime {
            Grant::Granted => tracing::info!(priority = cfg.realtime_priority, "audio thread runs SCHED_FIFO"),
            Grant::NotAsked => tracing::info!("audio thread at normal priority (realtime_priority = 0)"),
            Grant::Refused(n) => tracing::warn!(
                priority = cfg.realtime_priority,
                error = %std::io::Error::from_raw_os_error(n),
                "SCHED_FIFO refused: the audio thread runs at normal priority and may glitch under load \
                 (grant it with LimitRTPRIO= / CAP_SYS_NICE, or set realtime_priority = 0 to silence this)"
            ),
        }
        match r.memory_locked {
            Grant::Granted | Grant::NotAsked => {}
            Grant::Refused(n) => {
                tracing::warn!(error = %std::io::Error::from_raw_os_error(n), "mlockall refused: audio memory may be paged out")
            }
        }
    }

    /// What the thread got in its setup phase.
    pub fn report(&self) -> RtReport {
        self.report
    }

    /// Samples in one 20 ms frame at the device rate.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// A handle that flushes from any task.
    pub fn flush_handle(&self) -> FlushHandle {
        FlushHandle(self.shared.clone())
    }

    /// Barge-in: see [`FlushHandle::flush`].
    pub fn flush(&self) {
        FlushHandle(self.shared.clone()).flush();
    }

    /// The next 20 ms of the caller's voice into `out[..frame_len()]`, if
    /// captured already. Never blocks.
    pub fn try_recv_frame(&mut self, out: &mut [i16]) -> bool {
        let n = self.frame;
        let Ok(chunk) = self.capture_rx.read_chunk(n) else {
            return false;
        };
        let (a, b) = chunk.as_slices();
        out[..a.len()].copy_from_slice(a);
        out[a.len()..n].copy_from_slice(b);
        chunk.commit_all();
        self.received += n as u64;
        let now = self.shared.now_ns();
        while let Ok(m) = self.capture_marks.peek() {
            if m.end_index > self.received {
                break;
            }
            if m.end_index == self.received {
                self.capture_latency.record(now.saturating_sub(m.at_ns));
            }
            let _ = self.capture_marks.pop();
        }
        true
    }

    /// Waits for the next 20 ms of the caller's voice: sleeps until the thread
    /// signals a whole frame (see `wake.rs`); fails once the thread has stopped
    /// and nothing is left.
    pub async fn recv_frame(&mut self, out: &mut [i16]) -> Result<(), AudioError> {
        loop {
            if self.try_recv_frame(out) {
                return Ok(());
            }
            if self.shared.finished.load(Ordering::Acquire) {
                return Err(self.failure());
            }
            if let Err(e) = self.frame_ready.wait().await {
                // Without the reactor (never in cap4): fall back to a poll.
                tracing::debug!(error = %e, "frame wake-up unavailable; polling");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    /// Queues agent audio (device rate, any length); returns how many samples
    /// fit (the rest is refused and counted).
    pub fn send(&mut self, samples: &[i16]) -> usize {
        self.poll_playback_marks();
        let ahead = self.playback_pending() as u64;
        let (done, rest) = self.playback_tx.push_partial_slice(samples);
        let n = done.len();
        self.rejected += rest.len() as u64;
        if n > 0 {
            let start = self.pushed;
            self.pushed += n as u64;
            self.shared.pushed.store(self.pushed, Ordering::Release);
            if self.sends.len() == self.sends.capacity() {
                self.sends.pop_front();
            }
            self.sends.push_back(SentFrame { start, at_ns: self.shared.now_ns(), ahead });
        }
        n
    }

    /// Agent samples sent but not yet taken by the real-time thread.
    pub fn playback_pending(&self) -> usize {
        self.playback_tx.buffer().capacity() - self.playback_tx.slots()
    }

    /// Space left in the playback ring, in samples.
    pub fn send_capacity(&self) -> usize {
        self.playback_tx.slots()
    }

    /// Declares the agent's current utterance complete (everything sent so
    /// far): running dry right there is the end of speech, not an underrun.
    /// May come late (after the audio played out), but before more is sent.
    pub fn end_utterance(&mut self) {
        let _ = self.utterance_ends.push(self.pushed);
    }

    fn poll_playback_marks(&mut self) {
        while let Ok(m) = self.playback_marks.pop() {
            let queued_ns = u64::from(m.device_queued) * 1_000_000_000 / u64::from(self.rate);
            // A send counts once its first sample is written: the rest of the
            // frame follows in real time by nature, not by the box's doing.
            while let Some(&send) = self.sends.front() {
                if send.start >= m.end_index {
                    break;
                }
                let written = m.at_ns.saturating_sub(send.at_ns);
                self.playback_latency.record(written);
                self.played_latency.record(written + queued_ns);
                let ahead_ns = send.ahead * 1_000_000_000 / u64::from(self.rate);
                self.added_latency.record(written.saturating_sub(ahead_ns));
                self.sends.pop_front();
            }
        }
    }

    /// Latency percentiles so far.
    pub fn latency(&mut self) -> LatencyReport {
        self.poll_playback_marks();
        LatencyReport {
            capture_p50_ms: self.capture_latency.quantile_ms(0.50),
            capture_p99_ms: self.capture_latency.quantile_ms(0.99),
            capture_count: self.capture_latency.count,
            playback_p50_ms: self.playback_latency.quantile_ms(0.50),
            playback_p99_ms: self.playback_latency.quantile_ms(0.99),
            playback_played_p50_ms: self.played_latency.quantile_ms(0.50),
            playback_played_p99_ms: self.played_latency.quantile_ms(0.99),
            playback_added_p50_ms: self.added_latency.quantile_ms(0.50),
            playback_added_p99_ms: self.added_latency.quantile_ms(0.99),
            playback_count: self.playback_latency.count,
        }
    }

    /// The call's figures so far.
    pub fn stats(&self) -> AudioStats {
        let s = &self.shared;
        let ms = |samples: u64| samples * 1000 / u64::from(self.rate);
        let dbfs = |peak: u32| if peak == 0 { -96.0 } else { ((20.0 * (peak as f32 / 32768.0).log10()) * 10.0).round() / 10.0 };
        AudioStats {
            capture_xruns: s.capture_xruns.load(Ordering::Relaxed),
            stalls: s.stalls.load(Ordering::Relaxed),
            playback_xruns: s.playback_xruns.load(Ordering::Relaxed),
            underruns: s.underruns.load(Ordering::Relaxed),
            capture_dropped_ms: ms(s.capture_dropped.load(Ordering::Relaxed)) as u32,
            playback_rejected_ms: ms(self.rejected) as u32,
            flushes: s.flushes.load(Ordering::Relaxed),
            flushed_ms: ms(s.flushed_samples.load(Ordering::Relaxed)) as u32,
            queued_ms: ms(s.queued_samples.load(Ordering::Relaxed)) as u32,
            max_queued_ms: ms(s.max_queued_samples.load(Ordering::Relaxed)) as u32,
            peak_in_dbfs: dbfs(s.peak_in.load(Ordering::Relaxed)),
            peak_out_dbfs: dbfs(s.peak_out.load(Ordering::Relaxed)),
            captured_ms: ms(s.captured.load(Ordering::Relaxed)),
            played_ms: ms(s.played.load(Ordering::Relaxed)),
            longest_wakeup_gap_ms: (s.longest_gap_ns.load(Ordering::Relaxed) / 1_000_000) as u32,
            realtime: self.report.realtime.is_granted(),
            memory_locked: self.report.memory_locked.is_granted(),
        }
    }

    /// True while the real-time thread runs.
    pub fn is_running(&self) -> bool {
        !self.shared.finished.load(Ordering::Acquire)
    }

    fn failure(&self) -> AudioError {
        match self.shared.fatal.load(Ordering::Relaxed) {
            0 => AudioError::Stopped,
            n => AudioError::Device(n as i32),
        }
    }

    /// Stops the thread (within one period), closes the devices and returns
    /// the call's stats, also logged at debug level.
    pub fn stop(self) -> Result<AudioStats, AudioError> {
        let (stats, result) = self.finish();
        result.map(|()| stats)
    }

    /// Like [`stop`](Self::stop), but the stats come back even when the
    /// thread had failed (they say what happened up to then).
    pub fn finish(mut self) -> (AudioStats, Result<(), AudioError>) {
        let result = self.halt();
        let stats = self.stats();
        let latency = self.latency();
        tracing::debug!(?stats, ?latency, "call audio");
        (stats, result)
    }

    fn halt(&mut self) -> Result<(), AudioError> {
        self.shared.stop.store(true, Ordering::Release);
        match self.thread.take().map(|t| t.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(PcmError::Fatal(n)))) => Err(AudioError::Device(n)),
            Some(Ok(Err(PcmError::Xrun | PcmError::Stalled))) => Err(AudioError::Stopped),
            Some(Err(_)) => Err(AudioError::Stopped),
        }
    }
}

impl Drop for AudioEngine {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}
