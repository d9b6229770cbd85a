//! Voice activity over 10 ms frames: a high-pass filter (hum, rumble), the
//! frame level, an adaptive noise floor and an active/inactive decision with
//! hysteresis.
//!
//! Promises: the noise floor is the quietest 100 ms block of a trailing window
//! (minimum statistics; a block's level is its third-quietest 10 ms frame, so a
//! lone dropout or a fade-in does not pin the floor), so it follows rising or
//! falling background noise within that window and is not dragged up by a long
//! stretch of speech that has any pause in it; nothing allocates after `new`.

/// Sample rate everything in `amd` runs at.
pub const RATE: u32 = 8000;
/// Samples in one analysis frame (10 ms).
pub const FRAME: usize = 80;
/// Milliseconds in one analysis frame.
pub const FRAME_MS: u32 = 10;

/// Level of digital silence, so that logs stay finite.
const SILENCE_DBFS: f32 = -100.0;
/// Mean square of a full-scale sine: the 0 dBFS reference.
const FULL_SCALE_MS: f32 = 32768.0 * 32768.0 / 2.0;

/// Second-order Butterworth high-pass (direct form I, f32).
#[derive(Debug, Clone)]
pub struct Highpass {
    b: [f32; 3],
    a: [f32; 2],
    x: [f32; 2],
    y: [f32; 2],
}

impl Highpass {
    pub fn new(corner_hz: f32) -> Self {
        let w = 2.0 * std::f32::consts::PI * corner_hz / RATE as f32;
        let (sin, cos) = w.sin_cos();
        let alpha = sin / std::f32::consts::SQRT_2; // Q = 1/sqrt(2)
        let a0 = 1.0 + alpha;
        let b0 = (1.0 + cos) / 2.0 / a0;
        Highpass { b: [b0, -2.0 * b0, b0], a: [-2.0 * cos / a0, (1.0 - alpha) / a0], x: [0.0; 2], y: [0.0; 2] }
    }

    /// Filters `input` into `output` (same length).
    pub fn run(&mut self, input: &[f32], output: &mut [f32]) {
        for (o, &x) in output.iter_mut().zip(input) {
            let y = self.b[0] * x + self.b[1] * self.x[0] + self.b[2] * self.x[1] - self.a[0] * self.y[0] - self.a[1] * self.y[1];
            self.x = [x, self.x[0]];
            self.y = [y, self.y[0]];
            *o = y;
        }
    }
}

/// The level of a frame in dBFS (a full-scale sine is 0 dBFS).
pub fn level_dbfs(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return SILENCE_DBFS;
    }
    let ms = frame.iter().map(|x| x * x).sum::<f32>() / frame.len() as f32;
    if ms <= 0.0 { SILENCE_DBFS } else { (10.0 * (ms / FULL_SCALE_MS).log10()).max(SILENCE_DBFS) }
}

/// What the VAD says about one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameActivity {
    pub level_dbfs: f32,
    pub floor_dbfs: f32,
    /// Above the (hysteresis) threshold.
    pub active: bool,
}

/// Adaptive noise floor and the active/inactive decision.
#[derive(Debug, Clone)]
pub struct Vad {
    on_db: f32,
    off_db: f32,
    min_dbfs: f32,
    /// Level of each completed 100 ms block in the window.
    block_min: Vec<f32>,
    next_block: usize,
    /// Frame levels of the block in progress.
    current: [f32; BLOCK_FRAMES],
    frames_in_block: usize,
    /// A block has completed.
    warm: bool,
    active: bool,
}

/// Frames per noise-floor block (100 ms).
const BLOCK_FRAMES: usize = 10;
/// A block's level is its frame of this rank, quietest first.
const BLOCK_RANK: usize = 2;

impl Vad {
    pub fn new(on_db: f32, off_db: f32, min_dbfs: f32, window_ms: u32) -> Self {
        let blocks = (window_ms / (BLOCK_FRAMES as u32 * FRAME_MS)).max(1) as usize;
        Vad {
            on_db,
            off_db,
            min_dbfs,
            block_min: vec![f32::INFINITY; blocks],
            next_block: 0,
            current: [0.0; BLOCK_FRAMES],
            frames_in_block: 0,
            warm: false,
            active: false,
        }
    }

    /// The current noise floor (the quietest frame in the window), dBFS.
    pub fn floor_dbfs(&self) -> f32 {
        if self.warm {
            return self.block_min.iter().copied().fold(f32::INFINITY, f32::min);
        }
        // The first 100 ms: the block-in-progress's rank (nothing is voice
        // before it has that many frames).
        let n = self.frames_in_block;
        if n <= BLOCK_RANK {
            return 0.0;
        }
        let mut sorted = self.current;
        sorted[..n].sort_unstable_by(f32::total_cmp);
        sorted[BLOCK_RANK]
    }

    /// Takes one high-passed frame.
    pub fn frame(&mut self, frame: &[f32]) -> FrameActivity {
        let level = level_dbfs(frame);
        self.current[self.frames_in_block] = level;
        self.frames_in_block += 1;
        if self.frames_in_block == BLOCK_FRAMES {
            self.current.sort_unstable_by(f32::total_cmp);
            self.block_min[self.next_block] = self.current[BLOCK_RANK];
            self.next_block = (self.next_block + 1) % self.block_min.len();
            self.frames_in_block = 0;
            self.warm = true;
        }
        let floor = self.floor_dbfs();
        let margin = if self.active { self.off_db } else { self.on_db };
        self.active = level > (floor + margin).max(self.min_dbfs);
        FrameActivity { level_dbfs: level, floor_dbfs: floor, active: self.active }
    }
}

/// The front end every detector here shares: 8 kHz samples in, 10 ms frames
/// out, high-passed, each with its voice activity. Allocation-free.
#[derive(Debug, Clone)]
pub struct FrontEnd {
    highpass: Highpass,
    vad: Vad,
    pending: [f32; FRAME],
    pending_len: usize,
    filtered: [f32; FRAME],
}

impl FrontEnd {
    /// The `[amd]` voice-activity keys, with the high-pass at `corner_hz`.
    pub fn new(config: &super::config::AmdConfig, corner_hz: f32) -> Self {
        FrontEnd {
            highpass: Highpass::new(corner_hz),
            vad: Vad::new(config.vad_on_db, config.vad_off_db, config.vad_min_dbfs, config.noise_window_ms),
            pending: [0.0; FRAME],
            pending_len: 0,
            filtered: [0.0; FRAME],
        }
    }

    /// Takes one sample; when it completes a frame, filters it and returns
    /// its activity (the frame itself is then [`FrontEnd::frame`]).
    pub fn sample(&mut self, s: i16) -> Option<FrameActivity> {
        self.pending[self.pending_len] = f32::from(s);
        self.pending_len += 1;
        if self.pending_len < FRAME {
            return None;
        }
        self.pending_len = 0;
        self.highpass.run(&self.pending, &mut self.filtered);
        Some(self.vad.frame(&self.filtered))
    }

    /// The last completed frame, high-passed.
    pub fn frame(&self) -> &[f32; FRAME] {
        &self.filtered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, amp: f32, n: usize, phase0: usize) -> Vec<f32> {
        (0..n).map(|i| amp * (2.0 * std::f32::consts::PI * freq * (i + phase0) as f32 / RATE as f32).sin()).collect()
    }

    fn noise(amp: f32, n: usize, seed: &mut u32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                amp * ((*seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
            })
            .collect()
    }

    #[test]
    fn full_scale_sine_is_zero_dbfs() {
        let l = level_dbfs(&tone(1000.0, 32767.0, 800, 0));
        assert!((l - 0.0).abs() < 0.1, "{l}");
        assert_eq!(level_dbfs(&[0.0; 80]), SILENCE_DBFS);
    }

    #[test]
    fn highpass_removes_hum_and_keeps_speech_band() {
        let mut hp = Highpass::new(200.0);
        let hum = tone(50.0, 10000.0, 8000, 0);
        let mut out = vec![0.0; hum.len()];
        hp.run(&hum, &mut out);
        assert!(level_dbfs(&out[4000..]) < level_dbfs(&hum) - 20.0);
        let mut hp = Highpass::new(200.0);
        let voice = tone(1000.0, 10000.0, 8000, 0);
        hp.run(&voice, &mut out);
        assert!((level_dbfs(&out[4000..]) - level_dbfs(&voice)).abs() < 0.5);
    }

    /// Tone bursts over noise: active exactly on the bursts, whatever the noise level.
    #[test]
    fn bursts_over_noise_are_active_and_gaps_are_not() {
        for noise_amp in [0.0, 30.0, 300.0] {
            let mut vad = Vad::new(9.0, 6.0, -52.0, 1500);
            let mut seed = 1;
            let mut activity = Vec::new();
            // 1 s noise, then 0.5 s burst (20 dB over the noise), 1 s noise, 0.3 s burst.
            for (secs, burst) in [(1.0, false), (0.5, true), (1.0, false), (0.3, true), (0.5, false)] {
                let frames = (secs * 100.0) as usize;
                for f in 0..frames {
                    let mut x = noise(noise_amp, FRAME, &mut seed);
                    if burst {
                        for (s, t) in x.iter_mut().zip(tone(700.0, 3000.0, FRAME, f * FRAME)) {
                            *s += t;
                        }
                    }
                    activity.push((burst, vad.frame(&x).active));
                }
            }
            let wrong = activity.iter().filter(|(want, got)| want != got).count();
            assert!(wrong <= 2, "noise {noise_amp}: {wrong} frames wrong");
        }
    }

    #[test]
    fn floor_follows_rising_noise_within_the_window() {
        let mut vad = Vad::new(9.0, 6.0, -52.0, 1000);
        let mut seed = 7;
        for _ in 0..100 {
            vad.frame(&noise(10.0, FRAME, &mut seed));
        }
        let quiet = vad.floor_dbfs();
        for _ in 0..150 {
            vad.frame(&noise(1000.0, FRAME, &mut seed));
        }
        assert!(vad.floor_dbfs() > quiet + 30.0);
        assert!(!vad.frame(&noise(1000.0, FRAME, &mut seed)).active);
    }
}
