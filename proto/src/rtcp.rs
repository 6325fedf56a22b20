//! RTCP sender and receiver reports (RFC 3550 sections 6.4.1 and 6.4.2), multiplexed with RTP
//! on one UDP socket (RFC 5761: the second byte 192..=223 marks RTCP).
//!
//! Fala talks to exactly one peer, so a report carries at most one report block; a packet from
//! another stack with more blocks still parses and the first block is kept. Time is an input:
//! the caller passes its own clock in 64-bit NTP format (any monotonic origin works, since only
//! the sender of an SR ever compares its own timestamps, for the RTT).

use crate::rtp::SeqExtender;
use thiserror::Error;

/// Payload type of a sender report.
pub const PT_SR: u8 = 200;
/// Payload type of a receiver report.
pub const PT_RR: u8 = 201;
/// Bytes before the report body: V/P/RC, PT, length, sender SSRC. Clear text when encrypted.
pub const RTCP_HEADER_LEN: usize = 8;
const SENDER_INFO_LEN: usize = 20;
const BLOCK_LEN: usize = 24;
/// Largest report Fala writes: header + sender info + one block.
pub const MAX_REPORT_LEN: usize = RTCP_HEADER_LEN + SENDER_INFO_LEN + BLOCK_LEN;

/// Why a datagram is not a report we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtcpError {
    /// Shorter than its header or length field says.
    #[error("RTCP packet too short")]
    TooShort,
    /// Version is not 2.
    #[error("RTCP version {0} is not 2")]
    BadVersion(u8),
    /// Some other RTCP packet type (SDES, BYE, feedback...), ignored by Fala.
    #[error("RTCP packet type {0} not handled")]
    Unsupported(u8),
    /// Output buffer too small.
    #[error("buffer too small")]
    BufferTooSmall,
}

/// Sender information of an SR: lets the peer compute RTT through LSR/DLSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// Sender's clock, 64-bit NTP format (32.32 fixed point seconds).
    pub ntp: u64,
    /// RTP timestamp matching `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent so far.
    pub packet_count: u32,
    /// Payload octets sent so far.
    pub octet_count: u32,
}

/// Reception quality of one source (RFC 3550 section 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// Source this block is about.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire; duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub ext_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received from that source, 0 if none.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// One SR or RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Sender of this report.
    pub ssrc: u32,
    /// Present for an SR (PT 200), absent for an RR (PT 201).
    pub sender: Option<SenderInfo>,
    /// The first report block, if any.
    pub block: Option<ReportBlock>,
}

/// Compact NTP (middle 32 bits, 16.16 seconds), as carried in LSR.
pub fn compact_ntp(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Converts microseconds on the caller's clock into 64-bit NTP format.
pub fn ntp_from_micros(micros: u64) -> u64 {
    let secs = micros / 1_000_000;
    let frac = ((micros % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

/// Round-trip time in milliseconds from a received block (RFC 3550 section 6.4.1):
/// `now - LSR - DLSR`, all in compact NTP. `None` when the peer has not seen an SR yet.
pub fn rtt_ms(now_ntp: u64, block: &ReportBlock) -> Option<f64> {
    if block.lsr == 0 {
        return None;
    }
    let rtt = compact_ntp(now_ntp)
        .wrapping_sub(block.lsr)
        .wrapping_sub(block.dlsr);
    // A negative result wraps to a huge value: reject anything over a minute.
    (rtt < 60 << 16).then(|| f64::from(rtt) * 1000.0 / 65536.0)
}

impl Report {
    /// Writes the report into `out`; returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtcpError> {
        let len = RTCP_HEADER_LEN
            + if self.sender.is_some() {
                SENDER_INFO_LEN
            } else {
                0
            }
            + if self.block.is_some() { BLOCK_LEN } else { 0 };
        if out.len() < len {
            return Err(RtcpError::BufferTooSmall);
        }
        out[0] = 0x80 | u8::from(self.block.is_some());
        out[1] = if self.sender.is_some() { PT_SR } else { PT_RR };
        out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
        out[4..8].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut at = RTCP_HEADER_LEN;
        if let Some(s) = &self.sender {
            out[at..at + 8].copy_from_slice(&s.ntp.to_be_bytes());
            out[at + 8..at + 12].copy_from_slice(&s.rtp_timestamp.to_be_bytes());
            out[at + 12..at + 16].copy_from_slice(&s.packet_count.to_be_bytes());
            out[at + 16..at + 20].copy_from_slice(&s.octet_count.to_be_bytes());
            at += SENDER_INFO_LEN;
        }
        if let Some(b) = &self.block {
            out[at..at + 4].copy_from_slice(&b.ssrc.to_be_bytes());
            let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
            out[at + 4..at + 8]
                .copy_from_slice(&(lost | u32::from(b.fraction_lost) << 24).to_be_bytes());
            out[at + 8..at + 12].copy_from_slice(&b.ext_highest_seq.to_be_bytes());
            out[at + 12..at + 16].copy_from_slice(&b.jitter.to_be_bytes());
            out[at + 16..at + 20].copy_from_slice(&b.lsr.to_be_bytes());
            out[at + 20..at + 24].copy_from_slice(&b.dlsr.to_be_bytes());
        }
        Ok(len)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the first packet of an RTCP datagram. Never panics, whatever the bytes.
pub fn parse(datagram: &[u8]) -> Result<Report, RtcpError> {
    if datagram.len() < RTCP_HEADER_LEN {
        return Err(RtcpError::TooShort);
    }
    let version = datagram[0] >> 6;
    if version != 2 {
        return Err(RtcpError::BadVersion(version));
    }
    let count = usize::from(datagram[0] & 0x1f);
    let pt = datagram[1];
    let len = (usize::from(u16::from_be_bytes([datagram[2], datagram[3]])) + 1) * 4;
    // A length field of 0 says the packet is 4 bytes: shorter than its own header.
    if datagram.len() < len || len < RTCP_HEADER_LEN {
        return Err(RtcpError::TooShort);
    }
    let body = &datagram[..len];
    let ssrc = be32(body, 4);
    let mut at = RTCP_HEADER_LEN;
    let sender = match pt {
        PT_SR => {
            if body.len() < at + SENDER_INFO_LEN {
                return Err(RtcpError::TooShort);
            }
            let ntp = (u64::from(be32(body, at)) << 32) | u64::from(be32(body, at + 4));
            let s = SenderInfo {
                ntp,
                rtp_timestamp: be32(body, at + 8),
                packet_count: be32(body, at + 12),
                octet_count: be32(body, at + 16),
            };
            at += SENDER_INFO_LEN;
            Some(s)
        }
        PT_RR => None,
        other => return Err(RtcpError::Unsupported(other)),
    };
    if body.len() < at + count * BLOCK_LEN {
        return Err(RtcpError::TooShort);
    }
    let block = (count > 0).then(|| {
        let word = be32(body, at + 4);
        // Sign-extend the 24-bit cumulative loss.
        let cumulative_lost = ((word << 8) as i32) >> 8;
        ReportBlock {
            ssrc: be32(body, at),
            fraction_lost: (word >> 24) as u8,
            cumulative_lost,
            ext_highest_seq: be32(body, at + 8),
            jitter: be32(body, at + 12),
            lsr: be32(body, at + 16),
            dlsr: be32(body, at + 20),
        }
    });
    Ok(Report {
        ssrc,
        sender,
        block,
    })
}

/// Receive-side bookkeeping for one source, producing the numbers of a report block.
///
/// Pure: arrival time is given in RTP clock units by the caller (RFC 3550 appendix A.8 jitter).
#[derive(Debug, Clone, Default)]
pub struct ReceptionStats {
    seq: SeqExtender,
    base_seq: Option<u64>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Jitter estimate in RTP units, times 16 (RFC 3550 A.8 fixed-point trick).
    jitter_q4: u64,
    last_transit: Option<i64>,
    last_sr: Option<(u32, u64)>,
}

impl ReceptionStats {
    /// Records one accepted packet; returns its extended sequence number.
    pub fn on_packet(&mut self, seq: u16, rtp_timestamp: u32, arrival_rtp: u64) -> u64 {
        let ext = self.seq.extend(seq);
        if self.base_seq.is_none_or(|b| ext < b) {
            self.base_seq = Some(ext);
        }
        self.received += 1;
        let transit = arrival_rtp as i64 - i64::from(rtp_timestamp);
        if let Some(last) = self.last_transit {
            // Transit difference in a wrapping 32-bit timestamp space.
            let d = i64::from(((transit - last) as i32).unsigned_abs());
            let j = self.jitter_q4 as i64;
            self.jitter_q4 = (j + d - ((j + 8) >> 4)).max(0) as u64;
        }
        self.last_transit = Some(transit);
        ext
    }

    /// Extended sequence `seq` would get, without recording it (to authenticate first).
    pub fn peek_ext(&self, seq: u16) -> u64 {
        self.seq.peek(seq)
    }

    /// Remembers the last SR: its compact NTP time and our arrival clock (NTP format).
    pub fn on_sender_report(&mut self, sr_ntp: u64, arrival_ntp: u64) {
        self.last_sr = Some((compact_ntp(sr_ntp), arrival_ntp));
    }

    /// Packets expected so far (from first to highest sequence).
    pub fn expected(&self) -> u64 {
        match (self.base_seq, self.seq.highest()) {
            (Some(b), Some(h)) => h - b + 1,
            _ => 0,
        }
    }

    /// Packets received (duplicates included, as RFC 3550 counts them).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative loss (may be negative with duplicates).
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in RTP units.
    pub fn jitter(&self) -> u32 {
        (self.jitter_q4 >> 4) as u32
    }

    /// Builds the block to send now and starts a new fraction-lost interval.
    pub fn report_block(&mut self, source_ssrc: u32, now_ntp: u64) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (lsr, compact_ntp(now_ntp.saturating_sub(at))),
            None => (0, 0),
        };
        ReportBlock {
            ssrc: source_ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            ext_highest_seq: self.seq.highest().unwrap_or(0) as u32,
            jitter: self.jitter(),
            lsr,
            dlsr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block() -> ReportBlock {
        ReportBlock {
            ssrc: 7,
            fraction_lost: 25,
            cumulative_lost: -3,
            ext_highest_seq: 0x1_0005,
            jitter: 480,
            lsr: 0x1234_5678,
            dlsr: 65536,
        }
    }

    #[test]
    fn sr_and_rr_roundtrip() {
        let sr = Report {
            ssrc: 1,
            sender: Some(SenderInfo {
                ntp: 0x0102_0304_0506_0708,
                rtp_timestamp: 9,
                packet_count: 10,
                octet_count: 11,
            }),
            block: Some(block()),
        };
        let rr = Report {
            ssrc: 2,
            sender: None,
            block: Some(block()),
        };
        let mut buf = [0u8; MAX_REPORT_LEN];
        for r in [sr, rr] {
            let n = r.write(&mut buf).unwrap();
            assert!(crate::rtp::is_rtcp(&buf[..n]));
            assert_eq!(parse(&buf[..n]).unwrap(), r);
        }
    }

    #[test]
    fn rtt_from_lsr_dlsr() {
        // SR sent at t = 10 s, peer held it 0.5 s, answer arrives at t = 10.6 s: RTT 100 ms.
        let sent = ntp_from_micros(10_000_000);
        let b = ReportBlock {
            lsr: compact_ntp(sent),
            dlsr: 1 << 15,
            ..block()
        };
        let rtt = rtt_ms(ntp_from_micros(10_600_000), &b).unwrap();
        assert!((rtt - 100.0).abs() < 0.1, "{rtt}");
        assert_eq!(rtt_ms(0, &ReportBlock { lsr: 0, ..b }), None);
    }

    #[test]
    fn reception_counts_loss_and_jitter() {
        let mut s = ReceptionStats::default();
        // 10 packets, seq 3 and 6 lost, perfect timing.
        let seqs: Vec<u16> = (0..10).map(|i: u16| 65530u16.wrapping_add(i)).collect();
        for (i, &seq) in seqs.iter().enumerate() {
            if i == 3 || i == 6 {
                continue;
            }
            s.on_packet(seq, i as u32 * 960, 1000 + i as u64 * 960);
        }
        assert_eq!(s.expected(), 10);
        assert_eq!(s.cumulative_lost(), 2);
        assert_eq!(s.jitter(), 0);
        let b = s.report_block(5, 0);
        assert_eq!(b.fraction_lost, (2 * 256 / 10) as u8);
        assert_eq!(b.cumulative_lost, 2);
        // Next interval: nothing lost.
        s.on_packet(65530u16.wrapping_add(10), 9600, 1000 + 9600 + 480);
        let b = s.report_block(5, 0);
        assert_eq!(b.fraction_lost, 0);
        assert_eq!(s.jitter(), 480 / 16);
    }

    /// Found by the fuzzer: a length field of 0 (a 4-byte packet) read the SSRC past the end.
    #[test]
    fn a_packet_shorter_than_its_header_is_refused() {
        let bytes = [0xb5, 0x00, 0x00, 0x00, 0x00, 0xdc, 0x30, 0xdc];
        assert_eq!(parse(&bytes), Err(RtcpError::TooShort));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse(&bytes);
        }

        /// Random bytes rarely get past the version and type checks: these always do, with a
        /// length field and a block count that may lie.
        #[test]
        fn never_panics_past_the_first_checks(
            count in 0u8..32,
            sr: bool,
            words in 0u16..12,
            rest in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut bytes = vec![0x80 | count, if sr { PT_SR } else { PT_RR }];
            bytes.extend_from_slice(&words.to_be_bytes());
            bytes.extend_from_slice(&rest);
            let _ = parse(&bytes);
        }

        #[test]
        fn roundtrip_any(ssrc: u32, ntp: u64, ts: u32, fl: u8, lost in -0x80_0000i32..0x80_0000, hs: u32, j: u32, lsr: u32, dlsr: u32, sr: bool) {
            let r = Report {
                ssrc,
                sender: sr.then_some(SenderInfo { ntp, rtp_timestamp: ts, packet_count: hs, octet_count: j }),
                block: Some(ReportBlock { ssrc, fraction_lost: fl, cumulative_lost: lost, ext_highest_seq: hs, jitter: j, lsr, dlsr }),
            };
            let mut buf = [0u8; MAX_REPORT_LEN];
            let n = r.write(&mut buf).unwrap();
            prop_assert_eq!(parse(&buf[..n]).unwrap(), r);
        }
    }
}
