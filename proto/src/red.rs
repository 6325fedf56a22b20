//! Audio redundancy (RFC 2198 "RED"): one RTP packet carries the current Opus frame and full
//! copies of the one or two frames sent before it.
//!
//! Why: Opus in-band FEC (LBRR) covers only a single lost packet, with a coarse copy; a frame
//! decoded from a full copy is bit-identical to the original, so the decoder state stays exact
//! too, and two copies survive two losses in a row (Fala's measurements are in its
//! docs/BENCHMARKS-media.md).
//!
//! Layout (RFC 2198 §3), inside the RTP payload, before encryption:
//!
//! ```text
//! |1| block PT (7) | timestamp offset (14) | block length (10) |   one per copy, oldest first
//! |0| block PT (7) |                                               then the primary's PT
//! copy data (oldest first) ... primary data
//! ```
//!
//! Fala's convention on top of RFC 2198 (which does not carry sequence numbers for copies):
//! the copies are always of the packets sent with the immediately preceding sequence numbers,
//! so the k-th block counting back from the primary is sequence number `seq - k`. Parsing
//! borrows from the payload, never allocates and never panics.

use thiserror::Error;

/// Dynamic payload type of a RED packet (`red/48000/2`, the value browsers offer for Opus RED).
pub const RED_PAYLOAD_TYPE: u8 = 63;
/// Copies a packet may carry; more are refused by the parser.
pub const MAX_COPIES: usize = 2;
/// Largest timestamp offset a block header can express (14 bits).
pub const MAX_TS_OFFSET: u32 = (1 << 14) - 1;
/// Largest copy a block header can express (10 bits).
pub const MAX_BLOCK_LEN: usize = (1 << 10) - 1;

/// Why a RED payload cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RedError {
    /// The headers or the blocks run past the end of the payload.
    #[error("RED payload truncated")]
    Truncated,
    /// More redundant blocks than [`MAX_COPIES`].
    #[error("RED payload with more than {MAX_COPIES} copies")]
    TooManyCopies,
    /// A copy is too long, or its timestamp offset too large, for a block header.
    #[error("RED block does not fit its header")]
    BlockTooLarge,
    /// The output buffer is too small.
    #[error("buffer too small: need {need} bytes")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
    },
}

/// One redundant copy: how far back its timestamp is, and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    /// Payload type of the copy (111, Opus, for Fala).
    pub payload_type: u8,
    /// Primary timestamp minus the copy's timestamp, in 48 kHz units.
    pub ts_offset: u32,
    /// The copied Opus packet.
    pub data: &'a [u8],
}

/// A parsed RED payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedPayload<'a> {
    copies: [Option<Block<'a>>; MAX_COPIES],
    /// Payload type of the primary.
    pub primary_type: u8,
    /// The primary Opus packet.
    pub primary: &'a [u8],
}

impl<'a> RedPayload<'a> {
    /// The copies with their distance back in sequence numbers (1 = the packet just before).
    pub fn copies(&self) -> impl Iterator<Item = (u16, Block<'a>)> + '_ {
        let n = self.copies.iter().flatten().count();
        self.copies
            .iter()
            .flatten()
            .enumerate()
            .map(move |(i, c)| ((n - i) as u16, *c))
    }
}

/// Writes a RED payload: `copies` (oldest first, each `(ts_offset, bytes)`) then `primary`,
/// all of payload type `payload_type`. Returns the length written.
pub fn write(
    payload_type: u8,
    copies: &[(u32, &[u8])],
    primary: &[u8],
    out: &mut [u8],
) -> Result<usize, RedError> {
    if copies.len() > MAX_COPIES {
        return Err(RedError::TooManyCopies);
    }
    let need =
        4 * copies.len() + 1 + copies.iter().map(|c| c.1.len()).sum::<usize>() + primary.len();
    if out.len() < need {
        return Err(RedError::BufferTooSmall { need });
    }
    let pt = payload_type & 0x7f;
    let mut at = 0;
    for &(offset, data) in copies {
        if offset > MAX_TS_OFFSET || data.len() > MAX_BLOCK_LEN {
            return Err(RedError::BlockTooLarge);
        }
        let word = (u32::from(0x80 | pt) << 24) | (offset << 10) | data.len() as u32;
        out[at..at + 4].copy_from_slice(&word.to_be_bytes());
        at += 4;
    }
    out[at] = pt;
    at += 1;
    for &(_, data) in copies {
        out[at..at + data.len()].copy_from_slice(data);
        at += data.len();
    }
    out[at..at + primary.len()].copy_from_slice(primary);
    Ok(at + primary.len())
}

/// Parses a RED payload. Never panics, whatever the bytes.
pub fn parse(payload: &[u8]) -> Result<RedPayload<'_>, RedError> {
    let mut headers = [(0u8, 0u32, 0usize); MAX_COPIES];
    let mut count = 0;
    let mut at = 0;
    let primary_type = loop {
        let first = *payload.get(at).ok_or(RedError::Truncated)?;
        if first & 0x80 == 0 {
            at += 1;
            break first & 0x7f;
        }
        let b = payload.get(at..at + 4).ok_or(RedError::Truncated)?;
        let word = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if count == MAX_COPIES {
            return Err(RedError::TooManyCopies);
        }
        headers[count] = (first & 0x7f, (word >> 10) & 0x3fff, (word & 0x3ff) as usize);
        count += 1;
        at += 4;
    };
    let mut copies = [None; MAX_COPIES];
    for (slot, &(payload_type, ts_offset, len)) in copies.iter_mut().zip(&headers[..count]) {
        let data = payload.get(at..at + len).ok_or(RedError::Truncated)?;
        *slot = Some(Block {
            payload_type,
            ts_offset,
            data,
        });
        at += len;
    }
    Ok(RedPayload {
        copies,
        primary_type,
        primary: &payload[at..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_with_zero_one_and_two_copies() {
        let (a, b, p) = ([1u8; 90], [2u8; 7], [3u8; 120]);
        let mut out = [0u8; 400];
        for copies in [
            &[][..],
            &[(960, &b[..])][..],
            &[(1920, &a[..]), (960, &b[..])][..],
        ] {
            let n = write(111, copies, &p, &mut out).unwrap();
            assert_eq!(
                n,
                4 * copies.len() + 1 + copies.iter().map(|c| c.1.len()).sum::<usize>() + 120
            );
            let red = parse(&out[..n]).unwrap();
            assert_eq!(red.primary, &p[..]);
            assert_eq!(red.primary_type, 111);
            let got: Vec<_> = red.copies().collect();
            assert_eq!(got.len(), copies.len());
            for ((distance, c), (k, want)) in got.iter().zip(copies.iter().enumerate()) {
                assert_eq!(usize::from(*distance), copies.len() - k);
                assert_eq!((c.ts_offset, c.data, c.payload_type), (want.0, want.1, 111));
            }
        }
    }

    #[test]
    fn rfc2198_header_bits() {
        // RFC 2198 §3: F=1, PT, 14-bit offset, 10-bit length; final header F=0 + PT.
        let mut out = [0u8; 32];
        let n = write(111, &[(960, &[9, 9, 9])], &[7], &mut out).unwrap();
        assert_eq!(&out[..n], &[0x80 | 111, 0x0f, 0x00, 0x03, 111, 9, 9, 9, 7]);
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert_eq!(parse(&[]), Err(RedError::Truncated));
        assert_eq!(parse(&[0x80 | 111, 0, 0]), Err(RedError::Truncated));
        // Block longer than the payload.
        assert_eq!(
            parse(&[0x80 | 111, 0, 0x3c, 0x10, 111, 1]),
            Err(RedError::Truncated)
        );
        let three = [0xef, 0, 0, 0, 0xef, 0, 0, 0, 0xef, 0, 0, 0, 111];
        assert_eq!(parse(&three), Err(RedError::TooManyCopies));
        let big = [0u8; 1024];
        assert_eq!(
            write(111, &[(960, &big[..])], &[], &mut [0u8; 2048]),
            Err(RedError::BlockTooLarge)
        );
        assert_eq!(
            write(111, &[(1 << 14, &big[..1])], &[], &mut [0u8; 2048]),
            Err(RedError::BlockTooLarge)
        );
        assert!(matches!(
            write(111, &[], &big, &mut [0u8; 100]),
            Err(RedError::BufferTooSmall { .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(red) = parse(&bytes) {
                let total: usize = red.copies().map(|(_, c)| c.data.len()).sum::<usize>() + red.primary.len();
                prop_assert!(total <= bytes.len());
            }
        }
    }
}
