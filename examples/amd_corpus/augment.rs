//! Augmented copies of the developer corpora: what real rooms and lines do to
//! an answer, made here, deterministically (a seeded generator per clip and
//! condition, so every run sees the same copies).
//!
//! Backgrounds are mixed at a signal-to-noise ratio against the clip's own
//! speech level (the RMS of its frames within 30 dB of its loudest), over the
//! whole clip: from the answer on, before anyone speaks too, which is where
//! music in the room used to hang up on people.

/// One way to alter a clip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Clean,
    /// Music-like: a melody of harmonic notes with chords under it.
    Music {
        snr_db: f32,
    },
    /// Three other clips' speech at once, shifted: people talking.
    Babble {
        snr_db: f32,
    },
    /// Pink noise (the hiss of a room, a fan).
    Pink {
        snr_db: f32,
    },
    /// Street: brown noise whose level swells and falls (traffic).
    Street {
        snr_db: f32,
    },
    /// A TV: one other clip's speech, muffled (low-passed), looped.
    Tv {
        snr_db: f32,
    },
    /// The whole line louder or quieter (clipped at full scale).
    Level {
        gain_db: f32,
    },
    /// G.711 A-law on top of the corpus's µ-law (a second codec hop).
    ALaw,
}

/// The conditions the benchmark reports, in its order.
pub const CONDITIONS: [Condition; 13] = [
    Condition::Clean,
    Condition::Music { snr_db: 20.0 },
    Condition::Music { snr_db: 10.0 },
    Condition::Music { snr_db: 0.0 },
    Condition::Babble { snr_db: 10.0 },
    Condition::Pink { snr_db: 20.0 },
    Condition::Pink { snr_db: 10.0 },
    Condition::Street { snr_db: 10.0 },
    Condition::Tv { snr_db: 15.0 },
    Condition::Tv { snr_db: 5.0 },
    Condition::Level { gain_db: -20.0 },
    Condition::Level { gain_db: 10.0 },
    Condition::ALaw,
];

impl Condition {
    /// A sound mixed under the clip (not a change of the clip itself).
    pub fn is_background(self) -> bool {
        matches!(
            self,
            Condition::Music { .. } | Condition::Babble { .. } | Condition::Pink { .. } | Condition::Street { .. } | Condition::Tv { .. }
        )
    }

    pub fn name(self) -> String {
        match self {
            Condition::Clean => "clean".into(),
            Condition::Music { snr_db } => format!("music {snr_db:.0} dB"),
            Condition::Babble { snr_db } => format!("babble {snr_db:.0} dB"),
            Condition::Pink { snr_db } => format!("pink noise {snr_db:.0} dB"),
            Condition::Street { snr_db } => format!("street {snr_db:.0} dB"),
            Condition::Tv { snr_db } => format!("TV {snr_db:.0} dB"),
            Condition::Level { gain_db } => format!("level {gain_db:+.0} dB"),
            Condition::ALaw => "A-law hop".into(),
        }
    }
}

/// A small, fixed generator (xorshift64*): the same seed, the same copy.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `clip` under `condition`; `others` are the corpus's other voices (each
/// clip's labelled speech, for babble and TV); `seed` tells copies apart.
pub fn apply(clip: &[i16], condition: Condition, others: &[&[i16]], seed: u64) -> Vec<i16> {
    let x: Vec<f32> = clip.iter().map(|&s| f32::from(s)).collect();
    let mut rng = Rng::new(seed);
    let out = match condition {
        Condition::Clean => x,
        Condition::Level { gain_db } => x.iter().map(|s| s * db(gain_db)).collect(),
        Condition::ALaw => x.iter().map(|&s| alaw_round_trip(s)).collect(),
        Condition::Music { snr_db } => mix(&x, &music(x.len(), &mut rng), snr_db),
        Condition::Pink { snr_db } => mix(&x, &pink(x.len(), &mut rng), snr_db),
        Condition::Street { snr_db } => mix(&x, &street(x.len(), &mut rng), snr_db),
        Condition::Babble { snr_db } => {
            let mut bed = vec![0.0; x.len()];
            for _ in 0..3 {
                add_looped(&mut bed, others[rng.below(others.len())], rng.below(8000 * 4));
            }
            mix(&x, &bed, snr_db)
        }
        Condition::Tv { snr_db } => {
            let mut bed = vec![0.0; x.len()];
            add_looped(&mut bed, others[rng.below(others.len())], rng.below(8000 * 4));
            mix(&x, &low_pass(&bed, 0.25), snr_db)
        }
    };
    out.iter().map(|&s| s.clamp(-32768.0, 32767.0) as i16).collect()
}

fn db(d: f32) -> f32 {
    10f32.powf(d / 20.0)
}

/// RMS of the frames (10 ms) within 30 dB of the loudest: the speech level,
/// not diluted by the silences around it.
pub fn active_rms(x: &[f32]) -> f32 {
    let frames: Vec<f32> = x.chunks(80).map(|f| (f.iter().map(|s| s * s).sum::<f32>() / f.len() as f32).sqrt()).collect();
    let loudest = frames.iter().copied().fold(0.0, f32::max);
    let active: Vec<f32> = frames.into_iter().filter(|&r| r > loudest * db(-30.0)).collect();
    if active.is_empty() { 0.0 } else { (active.iter().map(|r| r * r).sum::<f32>() / active.len() as f32).sqrt() }
}

/// `x` + `noise` scaled so that the speech is `snr_db` above it.
fn mix(x: &[f32], noise: &[f32], snr_db: f32) -> Vec<f32> {
    let speech = active_rms(x).max(1.0);
    let noise_rms = (noise.iter().map(|s| s * s).sum::<f32>() / noise.len().max(1) as f32).sqrt().max(1e-6);
    let gain = speech / noise_rms / db(snr_db);
    x.iter().zip(noise).map(|(s, n)| s + n * gain).collect()
}

fn add_looped(bed: &mut [f32], src: &[i16], offset: usize) {
    if src.is_empty() {
        return;
    }
    for (i, b) in bed.iter_mut().enumerate() {
        *b += f32::from(src[(i + offset) % src.len()]);
    }
}

/// One-pole low-pass (`a` near 0: more muffled).
fn low_pass(x: &[f32], a: f32) -> Vec<f32> {
    let mut y = 0.0;
    x.iter()
        .map(|&s| {
            y += a * (s - y);
            y
        })
        .collect()
}

/// Pink noise (Paul Kellet's economy filter over white noise).
fn pink(n: usize, rng: &mut Rng) -> Vec<f32> {
    let (mut b0, mut b1, mut b2) = (0.0f32, 0.0f32, 0.0f32);
    (0..n)
        .map(|_| {
            let white = rng.unit() * 2.0 - 1.0;
            b0 = 0.99765 * b0 + white * 0.0990460;
            b1 = 0.96300 * b1 + white * 0.2965164;
            b2 = 0.57000 * b2 + white * 1.0526913;
            b0 + b1 + b2 + white * 0.1848
        })
        .collect()
}

/// Brown noise, swelling and falling over seconds (passing traffic).
fn street(n: usize, rng: &mut Rng) -> Vec<f32> {
    let mut brown = 0.0f32;
    let period = 8000.0 * (3.0 + 4.0 * rng.unit());
    let phase = rng.unit() * std::f32::consts::TAU;
    (0..n)
        .map(|i| {
            brown = (brown + (rng.unit() * 2.0 - 1.0) * 0.1) * 0.995;
            let swell = 0.55 + 0.45 * (std::f32::consts::TAU * i as f32 / period + phase).sin();
            brown * swell
        })
        .collect()
}

/// A melody (notes of 120–450 ms from a pentatonic scale, three harmonics,
/// a soft attack and decay) over chords of three notes changing every two
/// seconds: tonal, moving, never silent. Not a beep: no single steady tone
/// lasts as long as a voicemail's.
fn music(n: usize, rng: &mut Rng) -> Vec<f32> {
    const SCALE: [f32; 10] = [262.0, 294.0, 330.0, 392.0, 440.0, 523.0, 587.0, 659.0, 784.0, 880.0];
    let mut out = vec![0.0f32; n];
    let tone = |out: &mut [f32], start: usize, len: usize, f: f32, amp: f32| {
        for (k, s) in out.iter_mut().skip(start).take(len).enumerate() {
            let t = k as f32 / 8000.0;
            let env = (k as f32 / 80.0).min(1.0) * (-(t * 3.0)).exp();
            let w = std::f32::consts::TAU * f * t;
            *s += amp * env * (w.sin() + 0.5 * (2.0 * w).sin() + 0.25 * (3.0 * w).sin());
        }
    };
    let mut at = 0;
    while at < n {
        let len = 960 + rng.below(2640);
        tone(&mut out, at, len, SCALE[rng.below(SCALE.len())], 1.0);
        at += len;
    }
    let mut at = 0;
    while at < n {
        let root = rng.below(5);
        for step in [0, 2, 4] {
            tone(&mut out, at, 16_000, SCALE[root + step] / 2.0, 0.35);
        }
        at += 16_000;
    }
    out
}

/// G.711 A-law encode then decode (ITU-T G.711, segment and mantissa).
fn alaw_round_trip(s: f32) -> f32 {
    let pcm = s.clamp(-32768.0, 32767.0) as i32 >> 3; // 13-bit
    let sign = pcm < 0;
    let mag = if sign { -pcm - 1 } else { pcm }.min(4095);
    let (seg, mant) = if mag < 32 {
        (0, mag >> 1)
    } else {
        let seg = (31 - (mag as u32).leading_zeros()) as i32 - 4;
        (seg, (mag >> seg) & 0x0F)
    };
    let decoded = if seg == 0 { (mant << 1) + 1 } else { ((mant | 0x10) << seg) + (1 << (seg - 1)) };
    let value = (decoded << 3) as f32;
    if sign { -value } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alaw_keeps_a_sample_within_its_step() {
        for s in [-32000.0, -1000.0, -8.0, 0.0, 8.0, 100.0, 1000.0, 10_000.0, 32000.0] {
            let back = alaw_round_trip(s);
            assert!((back - s).abs() <= s.abs() / 16.0 + 16.0, "{s} -> {back}");
        }
    }
}
