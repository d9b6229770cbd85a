//! The ALSA backend: both PCMs opened, configured and owned on the real-time
//! thread (hw devices, S16 mono, interleaved read/write).
//!
//! Promises: the device runs at exactly the configured rate, or opening fails
//! saying so (the loopback cable is locked to the format of its first opener,
//! and `set_rate_near` would silently accept another rate); periods and buffers
//! as configured or the nearest the device allows (reported back); no
//! allocation in the per-period calls (`readi`, `writei`, `delay`, `drop`,
//! `prepare`, `start` go straight to alsa-lib).

use alsa::pcm::{Access, Format, HwParams, PCM, State};
use alsa::{Direction, ValueOr};

use super::config::AudioConfig;
use super::rt::{PcmBackend, PcmError, Stream};

/// Both PCMs of one call.
pub struct AlsaPcm {
    capture: PCM,
    playback: PCM,
    /// Negotiated period and buffer sizes, in frames.
    pub period: usize,
    pub buffer: usize,
}

/// How the devices came up, for the log.
#[derive(Debug, Clone, Copy)]
pub struct AlsaSetup {
    pub capture_period: usize,
    pub capture_buffer: usize,
    pub playback_period: usize,
    pub playback_buffer: usize,
}

/// Why the devices could not be opened for a call.
#[derive(Debug)]
pub enum AlsaError {
    /// A device refused a step of its setup (`step` says which).
    Device { device: String, step: String, source: alsa::Error },
    /// The device runs at another rate: its loopback cable was locked by its
    /// first opener.
    WrongRate { device: String, wanted: u32, got: u32 },
    /// The two devices negotiated different periods (the loop needs one).
    PeriodsDiffer { capture: usize, playback: usize },
    /// The playback buffer cannot hold the fill plus a period.
    BufferTooSmall { buffer: usize, fill: usize },
}

impl std::fmt::Display for AlsaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlsaError::Device { device, step, source } => write!(f, "{device}: {step}: {source}"),
            AlsaError::WrongRate { device, wanted, got } => {
                write!(f, "{device}: runs at {got} Hz, not {wanted} Hz (its first opener locked the loopback cable)")
            }
            AlsaError::PeriodsDiffer { capture, playback } => {
                write!(f, "capture period {capture} and playback period {playback} frames differ")
            }
            AlsaError::BufferTooSmall { buffer, fill } => {
                write!(f, "playback buffer of {buffer} frames cannot hold {fill} frames ahead plus a period")
            }
        }
    }
}

impl std::error::Error for AlsaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AlsaError::Device { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl AlsaPcm {
    /// Opens and configures both devices. `fill` is the playback start
    /// threshold (frames written ahead).
    pub fn open(cfg: &AudioConfig, fill: usize) -> Result<(AlsaPcm, AlsaSetup), AlsaError> {
        let period = cfg.period_frames();
        let buffer = period * cfg.buffer_periods as usize;
        let open = |name: &str, direction| {
            let device = format!("{} device {name}", if direction == Direction::Capture { "capture" } else { "playback" });
            let pcm = PCM::new(name, direction, false).map_err(|source| AlsaError::Device {
                device: device.clone(),
                step: "open".into(),
                source,
            })?;
            Ok::<_, AlsaError>((pcm, device))
        };
        let (capture, capture_name) = open(&cfg.capture_device, Direction::Capture)?;
        let (cp, cb) = configure(&capture, &capture_name, cfg.rate, period, buffer, None)?;
        let (playback, playback_name) = open(&cfg.playback_device, Direction::Playback)?;
        let (pp, pb) = configure(&playback, &playback_name, cfg.rate, period, buffer, Some(fill))?;
        if cp != pp {
            return Err(AlsaError::PeriodsDiffer { capture: cp, playback: pp });
        }
        if pb < fill + pp {
            return Err(AlsaError::BufferTooSmall { buffer: pb, fill });
        }
        let setup = AlsaSetup { capture_period: cp, capture_buffer: cb, playback_period: pp, playback_buffer: pb };
        Ok((AlsaPcm { capture, playback, period: cp, buffer: pb }, setup))
    }
}

fn configure(
    pcm: &PCM,
    device: &str,
    rate: u32,
    period: usize,
    buffer: usize,
    start_at: Option<usize>,
) -> Result<(usize, usize), AlsaError> {
    let e = |step: &str| {
        let device = device.to_string();
        let step = step.to_string();
        move |source| AlsaError::Device { device, step, source }
    };
    {
        let hw = HwParams::any(pcm).map_err(e("hw params"))?;
        hw.set_access(Access::RWInterleaved).map_err(e("interleaved access"))?;
        hw.set_format(Format::s16()).map_err(e("S16 format"))?;
        hw.set_channels(1).map_err(e("1 channel (the cable may be locked by another format)"))?;
        hw.set_rate_resample(false).map_err(e("rate resample"))?;
        hw.set_rate(rate, ValueOr::Nearest).map_err(e(&format!("rate {rate} Hz")))?;
        let got = hw.get_rate().map_err(e("rate"))?;
        if got != rate {
            return Err(AlsaError::WrongRate { device: device.to_string(), wanted: rate, got });
        }
        hw.set_period_size_near(period as alsa::pcm::Frames, ValueOr::Nearest).map_err(e("period size"))?;
        hw.set_buffer_size_near(buffer as alsa::pcm::Frames).map_err(e("buffer size"))?;
        pcm.hw_params(&hw).map_err(e("apply hw params"))?;
    }
    let hw = pcm.hw_params_current().map_err(e("read hw params"))?;
    let got_period = hw.get_period_size().map_err(e("period"))? as usize;
    let got_buffer = hw.get_buffer_size().map_err(e("buffer"))? as usize;
    let sw = pcm.sw_params_current().map_err(e("sw params"))?;
    sw.set_avail_min(got_period as alsa::pcm::Frames).map_err(e("avail min"))?;
    if let Some(start) = start_at {
        sw.set_start_threshold(start.min(got_buffer) as alsa::pcm::Frames).map_err(e("start threshold"))?;
    }
    pcm.sw_params(&sw).map_err(e("apply sw params"))?;
    Ok((got_period, got_buffer))
}

fn classify(err: alsa::Error) -> PcmError {
    match err.errno() {
        libc::EPIPE | libc::ESTRPIPE => PcmError::Xrun,
        // EIO: no period came within the kernel's wait (1.1 buffer times, at
        // least 100 ms): the loopback's clock stalled (a starved machine, the
        // other end reconfiguring), and the stream is still running.
        libc::EIO => PcmError::Stalled,
        n => PcmError::Fatal(n as u32 as i32),
    }
}

fn as_bytes(samples: &[i16]) -> &[u8] {
    // SAFETY: i16 has no padding and u8 has alignment 1; same memory, twice the length.
    unsafe { std::slice::from_raw_parts(samples.as_ptr().cast::<u8>(), samples.len() * 2) }
}

fn as_bytes_mut(samples: &mut [i16]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern is a valid i16.
    unsafe { std::slice::from_raw_parts_mut(samples.as_mut_ptr().cast::<u8>(), samples.len() * 2) }
}

fn restore(pcm: &PCM) -> Result<(), PcmError> {
    // A suspended device (ESTRPIPE) needs resume before prepare; resume may be
    // unsupported, then prepare does it.
    if pcm.state() == State::Suspended {
        let _ = pcm.resume();
    }
    // EIO (a wait that timed out) leaves the device running (as does a
    // resume), and the kernel refuses to prepare a running device (EBUSY):
    // stop it first.
    if matches!(pcm.state(), State::Running | State::Draining | State::Paused) {
        pcm.drop().map_err(classify_fatal)?;
    }
    pcm.prepare().map_err(classify_fatal)
}

fn classify_fatal(err: alsa::Error) -> PcmError {
    PcmError::Fatal(err.errno())
}

impl PcmBackend for AlsaPcm {
    fn start(&mut self) -> Result<(), PcmError> {
        self.playback.prepare().map_err(classify_fatal)?;
        self.capture.prepare().map_err(classify_fatal)?;
        self.capture.start().map_err(classify_fatal)
    }

    fn read(&mut self, buf: &mut [i16]) -> Result<(), PcmError> {
        let mut done = 0;
        while done < buf.len() {
            // The IO object is unchecked (no hw_params query, so no allocation).
            let io = self.capture.io_bytes();
            match io.readi(as_bytes_mut(&mut buf[done..])) {
                Ok(n) => done += n,
                Err(err) if err.errno() == libc::EINTR || err.errno() == libc::EAGAIN => {}
                Err(err) => return Err(classify(err)),
            }
        }
        Ok(())
    }

    fn playback_queued(&mut self) -> Result<usize, PcmError> {
        match self.playback.state() {
            State::XRun | State::Suspended => return Err(PcmError::Xrun),
            State::Prepared | State::Setup => {
                // Not started yet: delay() is what has been written so far.
            }
            _ => {}
        }
        self.playback.delay().map(|d| d.max(0) as usize).map_err(classify)
    }

    fn write(&mut self, buf: &[i16]) -> Result<(), PcmError> {
        let mut done = 0;
        while done < buf.len() {
            let io = self.playback.io_bytes();
            match io.writei(as_bytes(&buf[done..])) {
                Ok(n) => done += n,
                Err(err) if err.errno() == libc::EINTR || err.errno() == libc::EAGAIN => {}
                Err(err) => return Err(classify(err)),
            }
        }
        Ok(())
    }

    fn drop_playback(&mut self) -> Result<(), PcmError> {
        self.playback.drop().map_err(classify)?;
        self.playback.prepare().map_err(classify_fatal)
    }

    fn recover(&mut self, stream: Stream) -> Result<(), PcmError> {
        match stream {
            Stream::Capture => {
                restore(&self.capture)?;
                self.capture.start().map_err(classify_fatal)
            }
            // Playback restarts by its start threshold once refilled.
            Stream::Playback => restore(&self.playback),
        }
    }
}
