//! `[audio]`: the ALSA devices and the engine's timing. Owns the defaults and
//! their validation; promises that a config which passes [`AudioConfig::validate`]
//! can be turned into period, buffer and ring sizes without further checks.
//!
//! The defaults follow the device map in ARCHITECTURE.md: Baresip plays the
//! caller into `hw:Loopback,0,0`, so cap4 captures `hw:Loopback,1,0`; cap4 plays
//! into `hw:Loopback,0,1`, which Baresip records from `hw:Loopback,1,1`.

use crate::section::SectionError;
use serde::Deserialize;

/// The `[audio]` section. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// ALSA device the caller's voice is read from.
    pub capture_device: String,
    /// ALSA device the agent's voice is written to.
    pub playback_device: String,
    /// Device rate in Hz. 8000 matches G.711 on the wire: no resampling between
    /// Baresip and cap4, and the loopback cable is locked to the rate of its
    /// first opener (Baresip opens it at the codec's rate).
    pub rate: u32,
    /// ALSA period in milliseconds (1..=10): the real-time thread wakes once per
    /// capture period, so this is the flush reaction time and the capture
    /// hand-off granularity.
    pub period_ms: u32,
    /// ALSA buffer size in periods (both devices).
    pub buffer_periods: u32,
    /// How many periods of agent audio are kept written ahead in the playback
    /// device. More absorbs scheduling jitter; each one adds a period of delay.
    pub playback_fill_periods: u32,
    /// Capacity of the ring carrying the caller's voice to the async side.
    pub capture_ring_ms: u32,
    /// Capacity of the ring carrying agent audio to the real-time thread (the
    /// agent may send faster than real time).
    pub playback_ring_ms: u32,
    /// SCHED_FIFO priority for the real-time thread (1..=99); 0 keeps the
    /// normal scheduler.
    pub realtime_priority: u8,
    /// `mlockall(MCL_CURRENT)` once the real-time thread's buffers exist.
    pub lock_memory: bool,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            capture_device: "hw:Loopback,1,0".to_string(),
            playback_device: "hw:Loopback,0,1".to_string(),
            rate: 8000,
            period_ms: 10,
            buffer_periods: 6,
            playback_fill_periods: 3,
            capture_ring_ms: 2000,
            playback_ring_ms: 60_000,
            realtime_priority: 60,
            lock_memory: true,
        }
    }
}

/// Rates the engine accepts for the devices.
pub const DEVICE_RATES: [u32; 5] = [8000, 16000, 24000, 32000, 48000];

impl AudioConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), SectionError> {
        let bad = |key, message: String| Err(SectionError::new("audio", key, message));
        if self.capture_device.trim().is_empty() {
            return bad("capture_device", "must not be empty".into());
        }
        if self.playback_device.trim().is_empty() {
            return bad("playback_device", "must not be empty".into());
        }
        if !DEVICE_RATES.contains(&self.rate) {
            return bad("rate", format!("{} is not one of {DEVICE_RATES:?}", self.rate));
        }
        if !(1..=10).contains(&self.period_ms) {
            return bad("period_ms", format!("{} is not within 1..=10", self.period_ms));
        }
        if (self.rate * self.period_ms) % 1000 != 0 {
            return bad("period_ms", format!("{} ms is not a whole number of samples at {} Hz", self.period_ms, self.rate));
        }
        if self.playback_fill_periods < 1 {
            return bad("playback_fill_periods", "must be at least 1".into());
        }
        if self.buffer_periods < self.playback_fill_periods + 1 || self.buffer_periods > 32 {
            return bad(
                "buffer_periods",
                format!("{} must be within playback_fill_periods + 1 ({}) and 32", self.buffer_periods, self.playback_fill_periods + 1),
            );
        }
        if !(100..=10_000).contains(&self.capture_ring_ms) {
            return bad("capture_ring_ms", format!("{} is not within 100..=10000", self.capture_ring_ms));
        }
        if !(100..=600_000).contains(&self.playback_ring_ms) {
            return bad("playback_ring_ms", format!("{} is not within 100..=600000", self.playback_ring_ms));
        }
        if self.realtime_priority > 99 {
            return bad("realtime_priority", format!("{} is not within 0..=99", self.realtime_priority));
        }
        Ok(())
    }

    /// Samples per ALSA period.
    pub fn period_frames(&self) -> usize {
        (self.rate * self.period_ms / 1000) as usize
    }

    /// Samples in one 20 ms frame, the unit the async side exchanges.
    pub fn frame_samples(&self) -> usize {
        (self.rate / 50) as usize
    }

    pub(crate) fn ms_to_samples(&self, ms: u32) -> usize {
        (u64::from(self.rate) * u64::from(ms) / 1000) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_the_device_map() {
        let c = AudioConfig::default();
        c.validate().unwrap();
        assert_eq!(c.capture_device, "hw:Loopback,1,0");
        assert_eq!(c.playback_device, "hw:Loopback,0,1");
        assert_eq!((c.period_frames(), c.frame_samples()), (80, 160));
    }

    #[test]
    fn parses_partial_tables_and_refuses_unknown_keys() {
        let c: AudioConfig = toml::from_str("period_ms = 5\nrealtime_priority = 0").unwrap();
        assert_eq!((c.period_ms, c.realtime_priority, c.rate), (5, 0, 8000));
        let err = toml::from_str::<AudioConfig>("perod_ms = 5").unwrap_err().to_string();
        assert!(err.contains("perod_ms"), "{err}");
    }

    #[test]
    fn refuses_bad_values_naming_the_key() {
        let bad = |f: fn(&mut AudioConfig)| {
            let mut c = AudioConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.period_ms = 20).key, "period_ms");
        assert_eq!(bad(|c| c.rate = 44100).key, "rate");
        assert_eq!(bad(|c| c.buffer_periods = 2).key, "buffer_periods");
        assert_eq!(bad(|c| c.playback_fill_periods = 0).key, "playback_fill_periods");
        assert_eq!(bad(|c| c.capture_device.clear()).key, "capture_device");
        assert_eq!(bad(|c| c.realtime_priority = 100).key, "realtime_priority");
    }
}
