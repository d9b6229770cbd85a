//! Netstring framing for Baresip's `ctrl_tcp` socket.
//!
//! Owns the byte-level framing only: `<decimal length>:<payload>,`. The decoder is
//! streaming (frames may arrive split across reads, or several in one read) and
//! bounded: a declared length above `max_frame` is an error before any of the
//! payload is buffered, so a peer cannot make us allocate without limit.
//!
//! Promise: after an error the decoder is poisoned (the stream has lost framing and
//! cannot be resynchronised byte-wise); the owner must drop the connection.

use std::fmt;

/// Largest number of length digits we accept; Baresip itself allows 9.
const MAX_LENGTH_DIGITS: usize = 9;

/// Why a byte stream is not a valid sequence of netstrings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetstringError {
    /// A byte other than a digit where the length or its `:` should be.
    BadLength { byte: u8 },
    /// The length has a leading zero (`05:`), which netstrings forbid.
    LeadingZero,
    /// The declared payload is larger than the configured limit.
    TooLarge { declared: usize, limit: usize },
    /// The byte after the payload is not the terminating comma.
    MissingComma { found: u8 },
}

impl fmt::Display for NetstringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength { byte } => write!(f, "netstring length has a non-digit byte 0x{byte:02x}"),
            Self::LeadingZero => write!(f, "netstring length has a leading zero"),
            Self::TooLarge { declared, limit } => {
                write!(f, "netstring of {declared} bytes exceeds the {limit}-byte limit")
            }
            Self::MissingComma { found } => {
                write!(f, "netstring not terminated by ',' (found 0x{found:02x})")
            }
        }
    }
}

impl std::error::Error for NetstringError {}

/// Encodes one payload as a netstring.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let header = payload.len().to_string();
    let mut out = Vec::with_capacity(header.len() + payload.len() + 2);
    out.extend_from_slice(header.as_bytes());
    out.push(b':');
    out.extend_from_slice(payload);
    out.push(b',');
    out
}

/// Streaming netstring decoder with a frame-size limit.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_frame: usize,
    poisoned: Option<NetstringError>,
}

impl Decoder {
    pub fn new(max_frame: usize) -> Self {
        Self { buf: Vec::new(), max_frame, poisoned: None }
    }

    /// Appends received bytes. Call [`Decoder::next_frame`] until it yields `None`.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.poisoned.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete payload, `None` if more bytes are needed, or the framing
    /// error that poisoned the stream (returned again on every later call).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, NetstringError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        match self.parse_header() {
            Ok(None) => Ok(None),
            Ok(Some((header_len, payload_len))) => {
                let total = header_len + payload_len + 1;
                if self.buf.len() < total {
                    return Ok(None);
                }
                let comma = self.buf[total - 1];
                if comma != b',' {
                    return Err(self.poison(NetstringError::MissingComma { found: comma }));
                }
                let payload = self.buf[header_len..header_len + payload_len].to_vec();
                self.buf.drain(..total);
                Ok(Some(payload))
            }
            Err(err) => Err(self.poison(err)),
        }
    }

    /// Parses `<digits>:` at the start of the buffer: `(header bytes incl. ':', payload length)`.
    fn parse_header(&self) -> Result<Option<(usize, usize)>, NetstringError> {
        let mut len: usize = 0;
        for (i, &byte) in self.buf.iter().enumerate() {
            match byte {
                b':' if i > 0 => return Ok(Some((i + 1, len))),
                b'0'..=b'9' => {
                    if i == 1 && self.buf[0] == b'0' {
                        return Err(NetstringError::LeadingZero);
                    }
                    if i >= MAX_LENGTH_DIGITS {
                        return Err(NetstringError::TooLarge { declared: len, limit: self.max_frame });
                    }
                    len = len * 10 + usize::from(byte - b'0');
                    if len > self.max_frame {
                        return Err(NetstringError::TooLarge { declared: len, limit: self.max_frame });
                    }
                }
                other => return Err(NetstringError::BadLength { byte: other }),
            }
        }
        Ok(None)
    }

    fn poison(&mut self, err: NetstringError) -> NetstringError {
        self.buf = Vec::new();
        self.poisoned = Some(err.clone());
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(dec: &mut Decoder) -> Result<Vec<Vec<u8>>, NetstringError> {
        let mut out = Vec::new();
        while let Some(frame) = dec.next_frame()? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn decodes_several_frames_in_one_read() {
        let mut dec = Decoder::new(1024);
        dec.push(b"3:abc,0:,5:hello,");
        assert_eq!(decode_all(&mut dec).unwrap(), vec![b"abc".to_vec(), vec![], b"hello".to_vec()]);
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn waits_for_split_frames() {
        let mut dec = Decoder::new(1024);
        dec.push(b"1");
        assert_eq!(dec.next_frame(), Ok(None));
        dec.push(b"1:hello");
        assert_eq!(dec.next_frame(), Ok(None));
        dec.push(b" worl");
        assert_eq!(dec.next_frame(), Ok(None));
        dec.push(b"d,2:");
        assert_eq!(dec.next_frame(), Ok(Some(b"hello world".to_vec())));
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn counts_bytes_not_characters() {
        let payload = "t\"qé".as_bytes();
        let mut dec = Decoder::new(64);
        dec.push(&encode(payload));
        assert_eq!(dec.next_frame(), Ok(Some(payload.to_vec())));
    }

    #[test]
    fn rejects_garbage_and_stays_poisoned() {
        let mut dec = Decoder::new(64);
        dec.push(b"\n41:{}");
        assert_eq!(dec.next_frame(), Err(NetstringError::BadLength { byte: b'\n' }));
        dec.push(b"2:{},");
        assert!(dec.next_frame().is_err(), "a poisoned decoder must not resume mid-stream");
    }

    #[test]
    fn rejects_leading_zero_wrong_length_and_oversize_header() {
        let mut dec = Decoder::new(64);
        dec.push(b"05:hello,");
        assert_eq!(dec.next_frame(), Err(NetstringError::LeadingZero));

        let mut dec = Decoder::new(64);
        dec.push(b"3:hello,");
        assert_eq!(dec.next_frame(), Err(NetstringError::MissingComma { found: b'l' }));

        // Rejected from the header alone, before the payload arrives.
        let mut dec = Decoder::new(64);
        dec.push(b"65:");
        assert_eq!(dec.next_frame(), Err(NetstringError::TooLarge { declared: 65, limit: 64 }));

        let mut dec = Decoder::new(usize::MAX);
        dec.push(b"1234567890");
        assert!(matches!(dec.next_frame(), Err(NetstringError::TooLarge { .. })));

        let mut dec = Decoder::new(64);
        dec.push(b":x,");
        assert_eq!(dec.next_frame(), Err(NetstringError::BadLength { byte: b':' }));
    }

    proptest! {
        /// Any sequence of payloads, encoded and cut into arbitrary reads, decodes
        /// back to the same payloads in the same order.
        #[test]
        fn roundtrip_with_arbitrary_splits(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in prop::collection::vec(0usize..4000, 0..12),
        ) {
            let wire: Vec<u8> = payloads.iter().flat_map(|p| encode(p)).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.push(0);
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut dec = Decoder::new(300);
            let mut got = Vec::new();
            for pair in cuts.windows(2) {
                dec.push(&wire[pair[0]..pair[1]]);
                while let Some(frame) = dec.next_frame().unwrap() {
                    got.push(frame);
                }
            }
            prop_assert_eq!(got, payloads);
            prop_assert_eq!(dec.pending(), 0);
        }

        /// Arbitrary bytes never panic the decoder, and it never yields a frame
        /// above its limit.
        #[test]
        fn arbitrary_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut dec = Decoder::new(32);
            dec.push(&bytes);
            while let Ok(Some(frame)) = dec.next_frame() {
                prop_assert!(frame.len() <= 32);
            }
        }

        /// A frame followed by a corrupted copy yields the first, then an error.
        #[test]
        fn corruption_after_valid_frame_is_detected(
            payload in prop::collection::vec(any::<u8>(), 1..100),
            bad in prop::sample::select(vec![b'x', b'\n', b' ', b'-']),
        ) {
            let mut wire = encode(&payload);
            wire.push(bad);
            wire.extend(encode(&payload));
            let mut dec = Decoder::new(1000);
            dec.push(&wire);
            prop_assert_eq!(dec.next_frame(), Ok(Some(payload)));
            prop_assert!(dec.next_frame().is_err());
        }
    }
}
