//! G.711 µ-law and A-law (ITU-T G.711) to and from 16-bit linear PCM, per
//! sample and over slices. Owns nothing; promises the standard's code tables
//! (decode is exact, `decode(encode(x))` is the quantised `x`), no allocation
//! and no panics for any input.

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// Linear → µ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut x = i32::from(sample);
    let sign = if x < 0 {
        x = -x;
        0x80
    } else {
        0
    };
    let x = x.min(ULAW_CLIP) + ULAW_BIAS;
    // Exponent: position of the highest set bit above bit 7 (x < 0x8000 here).
    let exponent = (31 - (x as u32).leading_zeros()).saturating_sub(7).min(7) as i32;
    let mantissa = (x >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// µ-law → linear.
pub const fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// Linear → A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes; 0x55 toggles the even bits.
    let x = i32::from(sample);
    let (sign, mag) = if x >= 0 { (0x80, x >> 3) } else { (0x00, (-x - 1) >> 3) };
    let mag = mag.min(0x0FFF);
    let code = if mag < 32 {
        (mag >> 1) as u8
    } else {
        let exponent = (31 - (mag as u32).leading_zeros()) as i32 - 4; // 1..=7
        let mantissa = (mag >> exponent) & 0x0F;
        ((exponent << 4) | mantissa) as u8
    };
    (sign | code) ^ 0x55
}

/// A-law → linear.
pub const fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0F) as i32;
    let magnitude = if exponent == 0 { (mantissa << 4) + 8 } else { ((mantissa << 4) + 0x108) << (exponent - 1) };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// Encodes `pcm` into `out[..pcm.len()]` (µ-law). Panics if `out` is shorter.
pub fn ulaw_encode_slice(pcm: &[i16], out: &mut [u8]) {
    for (o, &s) in out[..pcm.len()].iter_mut().zip(pcm) {
        *o = ulaw_encode(s);
    }
}

/// Decodes `codes` into `out[..codes.len()]` (µ-law). Panics if `out` is shorter.
pub fn ulaw_decode_slice(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out[..codes.len()].iter_mut().zip(codes) {
        *o = ULAW_TABLE[c as usize];
    }
}

/// Encodes `pcm` into `out[..pcm.len()]` (A-law). Panics if `out` is shorter.
pub fn alaw_encode_slice(pcm: &[i16], out: &mut [u8]) {
    for (o, &s) in out[..pcm.len()].iter_mut().zip(pcm) {
        *o = alaw_encode(s);
    }
}

/// Decodes `codes` into `out[..codes.len()]` (A-law). Panics if `out` is shorter.
pub fn alaw_decode_slice(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out[..codes.len()].iter_mut().zip(codes) {
        *o = ALAW_TABLE[c as usize];
    }
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw { alaw_decode(i as u8) } else { ulaw_decode(i as u8) };
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = table(false);
static ALAW_TABLE: [i16; 256] = table(true);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes() {
        // Silence, and the loudest codes, per G.711.
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            let u = ulaw_decode(c);
            // 0x7F and 0xFF both mean zero; encode picks the positive one.
            let expect = if c == 0x7F { 0xFF } else { c };
            assert_eq!(ulaw_encode(u), expect, "µ-law {c:#04x} -> {u}");
            assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law {c:#04x}");
        }
    }

    #[test]
    fn quantisation_error_is_within_the_step() {
        for x in (i16::MIN..=i16::MAX).step_by(7) {
            let u = i32::from(ulaw_decode(ulaw_encode(x)));
            let a = i32::from(alaw_decode(alaw_encode(x)));
            let x = i32::from(x);
            // Steps double per segment: 1/16 of the magnitude plus the bias is a bound.
            let bound = x.abs() / 16 + 140;
            assert!((u - x).abs() <= bound.max(x.abs() - 32124 + 1), "µ-law {x} -> {u}");
            assert!((a - x).abs() <= bound.max(x.abs() - 32256 + 1), "A-law {x} -> {a}");
        }
    }

    #[test]
    fn slices_match_samples() {
        let pcm: Vec<i16> = (0..500).map(|i| ((i * 263) % 65536 - 32768) as i16).collect();
        let mut codes = vec![0u8; pcm.len()];
        let mut back = vec![0i16; pcm.len()];
        ulaw_encode_slice(&pcm, &mut codes);
        ulaw_decode_slice(&codes, &mut back);
        assert!(pcm.iter().zip(&back).all(|(&p, &b)| b == ulaw_decode(ulaw_encode(p))));
        alaw_encode_slice(&pcm, &mut codes);
        alaw_decode_slice(&codes, &mut back);
        assert!(pcm.iter().zip(&back).all(|(&p, &b)| b == alaw_decode(alaw_encode(p))));
    }
}
