//! RTP (RFC 3550) packets carrying Opus (RFC 7587).
//!
//! Only what Fala sends is modelled: version 2, no padding, no header extension, no CSRCs on
//! send; on receive CSRCs, an extension and padding are skipped so a packet from another stack
//! still parses. Parsing borrows from the datagram and never panics; serializing writes into a
//! caller buffer so the media thread does not allocate per packet.

use thiserror::Error;

/// Dynamic payload type Fala uses for Opus (the value most stacks pick for `opus/48000/2`).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Opus RTP clock rate, fixed by RFC 7587 whatever the real sampling rate.
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// Size of the fixed RTP header without CSRCs.
pub const RTP_HEADER_LEN: usize = 12;

/// Why a datagram is not an RTP packet we can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    /// Fewer bytes than the header announces.
    #[error("packet too short")]
    TooShort,
    /// Version field is not 2.
    #[error("RTP version {0} is not 2")]
    BadVersion(u8),
    /// Padding length is zero or longer than the payload.
    #[error("bad padding")]
    BadPadding,
    /// Output buffer cannot hold the packet.
    #[error("buffer too small: need {need} bytes")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
    },
}

/// The fields of an RTP header Fala reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit: set on the first packet after a silence (DTX) gap.
    pub marker: bool,
    /// Payload type (111 for Opus).
    pub payload_type: u8,
    /// 16-bit sequence number, wraps around.
    pub sequence: u16,
    /// Media timestamp in 48 kHz units.
    pub timestamp: u32,
    /// Synchronization source: random per call.
    pub ssrc: u32,
}

/// A parsed packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Header fields.
    pub header: RtpHeader,
    /// Length of the header as received (fixed part + CSRCs + extension); used as AAD size.
    pub header_len: usize,
    /// Payload bytes (an Opus frame, or ciphertext + tag when encrypted).
    pub payload: &'a [u8],
}

/// True when the second byte marks an RTCP packet (RFC 5761 section 4: 192..=223).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && (192..=223).contains(&datagram[1])
}

impl RtpHeader {
    /// Writes the 12-byte header into `out` and returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        if out.len() < RTP_HEADER_LEN {
            return Err(RtpError::BufferTooSmall {
                need: RTP_HEADER_LEN,
            });
        }
        out[0] = 0x80;
        out[1] = (u8::from(self.marker) << 7) | (self.payload_type & 0x7f);
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Ok(RTP_HEADER_LEN)
    }
}

/// Serializes a header and payload into `out`; returns the packet length.
pub fn write_packet(header: &RtpHeader, payload: &[u8], out: &mut [u8]) -> Result<usize, RtpError> {
    let need = RTP_HEADER_LEN + payload.len();
    if out.len() < need {
        return Err(RtpError::BufferTooSmall { need });
    }
    header.write(out)?;
    out[RTP_HEADER_LEN..need].copy_from_slice(payload);
    Ok(need)
}

/// Parses a datagram as RTP. Never panics, whatever the bytes.
pub fn parse(datagram: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    if datagram.len() < RTP_HEADER_LEN {
        return Err(RtpError::TooShort);
    }
    let b0 = datagram[0];
    let version = b0 >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let padding = b0 & 0x20 != 0;
    let extension = b0 & 0x10 != 0;
    let csrc_count = usize::from(b0 & 0x0f);
    let mut header_len = RTP_HEADER_LEN + 4 * csrc_count;
    if extension {
        let ext = datagram
            .get(header_len..header_len + 4)
            .ok_or(RtpError::TooShort)?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        header_len += 4 + 4 * words;
    }
    if datagram.len() < header_len {
        return Err(RtpError::TooShort);
    }
    let mut end = datagram.len();
    if padding {
        let pad = usize::from(datagram[end - 1]);
        if pad == 0 || pad > end - header_len {
            return Err(RtpError::BadPadding);
        }
        end -= pad;
    }
    let header = RtpHeader {
        marker: datagram[1] & 0x80 != 0,
        payload_type: datagram[1] & 0x7f,
        sequence: u16::from_be_bytes([datagram[2], datagram[3]]),
        timestamp: u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]),
        ssrc: u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]),
    };
    Ok(RtpPacket {
        header,
        header_len,
        payload: &datagram[header_len..end],
    })
}

/// Extends 16-bit sequence numbers to a monotonic 64-bit index (RFC 3550 appendix A.1 idea).
///
/// The receiver and the crypto nonce both need a sequence that does not wrap; a packet is taken
/// to be the closest candidate to the highest seen so far, so reordering across the 65535 → 0
/// boundary extends correctly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    /// Returns the extended index of `seq` and remembers it if it is the new highest.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let ext = self.peek(seq);
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    /// Extended index of `seq` without updating state.
    pub fn peek(&self, seq: u16) -> u64 {
        let Some(h) = self.highest else {
            // Start one cycle up so a packet reordered before the first never goes negative.
            return (1 << 16) + u64::from(seq);
        };
        let base = h & !0xffff;
        let cand = base | u64::from(seq);
        // Pick among cand - 2^16, cand, cand + 2^16 the one nearest to h.
        let mut best = cand;
        for c in [cand.wrapping_sub(1 << 16), cand + (1 << 16)] {
            if c.abs_diff(h) < best.abs_diff(h) && c >= (1 << 16) {
                best = c;
            }
        }
        best
    }

    /// Highest extended index seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hdr(seq: u16) -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: OPUS_PAYLOAD_TYPE,
            sequence: seq,
            timestamp: 0xdead_beef,
            ssrc: 0x1234_5678,
        }
    }

    #[test]
    fn roundtrip() {
        let mut buf = [0u8; 64];
        let n = write_packet(&hdr(65535), b"opus", &mut buf).unwrap();
        let p = parse(&buf[..n]).unwrap();
        assert_eq!(p.header, hdr(65535));
        assert_eq!(p.payload, b"opus");
        assert_eq!(p.header_len, 12);
        assert!(!is_rtcp(&buf[..n]));
    }

    #[test]
    fn small_buffer_is_an_error() {
        let mut buf = [0u8; 13];
        assert_eq!(
            write_packet(&hdr(1), b"ab", &mut buf),
            Err(RtpError::BufferTooSmall { need: 14 })
        );
    }

    #[test]
    fn skips_csrc_extension_and_padding() {
        let mut p = vec![0x80 | 0x20 | 0x10 | 1, 111, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension of one word
        p.extend_from_slice(b"xy");
        p.extend_from_slice(&[0, 2]); // two bytes of padding
        let pkt = parse(&p).unwrap();
        assert_eq!(pkt.payload, b"xy");
        assert_eq!(pkt.header.sequence, 1);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(&[0x80; 5]), Err(RtpError::TooShort));
        assert_eq!(parse(&[0x40; 12]), Err(RtpError::BadVersion(1)));
        let mut p = [0u8; 12];
        p[0] = 0xa0;
        p[11] = 0;
        assert_eq!(parse(&p), Err(RtpError::BadPadding));
    }

    #[test]
    fn extender_wraps_and_reorders() {
        let mut e = SeqExtender::default();
        let a = e.extend(65534);
        assert_eq!(e.extend(65535), a + 1);
        assert_eq!(e.extend(1), a + 3);
        assert_eq!(e.extend(0), a + 2); // late, across the wrap
        assert_eq!(e.highest(), Some(a + 3));
        assert_eq!(e.extend(65535), a + 1);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
            let _ = is_rtcp(&bytes);
        }

        #[test]
        fn roundtrip_any(seq: u16, ts: u32, ssrc: u32, m: bool, payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            let h = RtpHeader { marker: m, payload_type: 111, sequence: seq, timestamp: ts, ssrc };
            let mut buf = [0u8; 200];
            let n = write_packet(&h, &payload, &mut buf).unwrap();
            let p = parse(&buf[..n]).unwrap();
            prop_assert_eq!(p.header, h);
            prop_assert_eq!(p.payload, &payload[..]);
        }

        #[test]
        fn extender_follows_a_stream(start: u16, steps in proptest::collection::vec(1u16..100, 1..50)) {
            let mut e = SeqExtender::default();
            let first = e.extend(start);
            let mut expect = first;
            let mut seq = start;
            for s in steps {
                seq = seq.wrapping_add(s);
                expect += u64::from(s);
                prop_assert_eq!(e.extend(seq), expect);
            }
        }
    }
}
