//! RTP/RTCP over one UDP socket to one peer: sequence numbers and timestamps out, packets in
//! (filtered by address and SSRC, decrypted, counted), sender/receiver reports about once a
//! second for loss, jitter and round-trip time.
//!
//! The socket is non-blocking: the media thread drains it once per tick and never waits on it.

use fala_proto::media_crypto::{SessionKeys, RTCP_OVERHEAD, TAG_LEN};
use fala_proto::red::{self, RED_PAYLOAD_TYPE};
use fala_proto::rtcp::{self, ReceptionStats, Report, SenderInfo};
use fala_proto::rtp::{self, RtpHeader, OPUS_PAYLOAD_TYPE, RTP_HEADER_LEN};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};

/// Interval between reports, µs (RFC 3550 allows far less for two parties; one second keeps
/// loss feedback to the encoder fresh at negligible cost).
const REPORT_INTERVAL_US: u64 = 1_000_000;
/// Datagrams read per tick at most, so a flood cannot stall the audio.
const MAX_READS_PER_TICK: usize = 256;
/// Largest RTP payload sent: redundant copies are left out rather than going past it, so a
/// packet never needs IP fragmentation on an ordinary 1280+ byte path MTU.
const MAX_PAYLOAD: usize = 1100;

/// Counters of the network side.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TransportStats {
    /// RTP packets sent.
    pub packets_sent: u64,
    /// Payload bytes sent (after encryption), for the bitrate.
    pub bytes_sent: u64,
    /// RTP packets accepted.
    pub packets_received: u64,
    /// Packets expected minus received, from sequence numbers (RFC 3550).
    pub packets_lost: i64,
    /// Dropped: from an address other than the peer's.
    pub dropped_foreign: u64,
    /// Dropped: unexpected SSRC after the first accepted packet.
    pub dropped_ssrc: u64,
    /// Dropped: failed authentication.
    pub dropped_auth: u64,
    /// Dropped: not RTP/RTCP we understand.
    pub dropped_malformed: u64,
    /// Interarrival jitter of the received stream, ms.
    pub jitter_ms: f64,
    /// Round-trip time from the last report, ms.
    pub rtt_ms: Option<f64>,
    /// Fraction of our packets the peer says it lost recently, 0..=1.
    pub peer_loss: f64,
    /// Reports sent and received.
    pub reports_sent: u64,
    /// Reports received and understood.
    pub reports_received: u64,
}

/// One received media packet, decrypted.
pub struct Received<'a> {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// When the datagram arrived, µs on the caller's clock (the kernel's receive timestamp
    /// moved onto that clock; the poll time where the kernel gave none).
    pub arrival_us: u64,
    /// Opus payload.
    pub payload: &'a [u8],
    /// A redundant copy of an earlier packet (RFC 2198), not the packet itself: it says nothing
    /// about arrival times.
    pub copy: bool,
}

/// The last packets sent, for redundant copies.
struct SentHistory {
    /// (timestamp, length, bytes); the next push goes to `head`.
    packets: [(u32, usize, Box<[u8; red::MAX_BLOCK_LEN]>); red::MAX_COPIES],
    head: usize,
    count: usize,
}

impl SentHistory {
    fn new() -> Self {
        Self {
            packets: std::array::from_fn(|_| (0, 0, Box::new([0; red::MAX_BLOCK_LEN]))),
            head: 0,
            count: 0,
        }
    }

    fn push(&mut self, timestamp: u32, payload: &[u8]) {
        if payload.len() > red::MAX_BLOCK_LEN {
            // Cannot be carried as a copy: nothing older can be either (copies are contiguous).
            self.count = 0;
            return;
        }
        let slot = &mut self.packets[self.head];
        slot.0 = timestamp;
        slot.1 = payload.len();
        slot.2[..payload.len()].copy_from_slice(payload);
        self.head = (self.head + 1) % red::MAX_COPIES;
        self.count = (self.count + 1).min(red::MAX_COPIES);
    }

    /// The `back`-th packet before the next one (1 = the last sent).
    fn get(&self, back: usize) -> (u32, &[u8]) {
        let idx = (self.head + red::MAX_COPIES - back) % red::MAX_COPIES;
        let (ts, len, data) = &self.packets[idx];
        (*ts, &data[..*len])
    }
}

/// The call's RTP session.
pub struct Transport {
    socket: UdpSocket,
    peer: SocketAddr,
    crypto: Option<SessionKeys>,
    ssrc: u32,
    /// Extended sequence of the next packet; starts below 2^15 so the receiver's first guess at
    /// the rollover count is right even if the first packets are lost (nonce agreement).
    next_ext_seq: u64,
    timestamp: u32,
    remote_ssrc: Option<u32>,
    reception: ReceptionStats,
    rtcp_index: u32,
    next_report_us: u64,
    peer_fraction_lost: u8,
    stats: TransportStats,
    buf: Box<[u8; 2048]>,
    /// Whether the next packet starts a talk spurt (after DTX silence), for the marker bit.
    talk_start: bool,
    /// Packets sent before, for redundant copies, and the RED payload being built.
    history: SentHistory,
    red_buf: Box<[u8; 2048]>,
    /// A receiver report from the peer came in since [`Transport::take_peer_report`].
    new_report: bool,
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // Without OS randomness fall back to the address of a stack value: still varies by call.
    if getrandom::fill(&mut b).is_err() {
        return (&b as *const _ as usize) as u32;
    }
    u32::from_ne_bytes(b)
}

impl Transport {
    /// Wraps an already bound socket (made non-blocking here).
    pub fn new(
        socket: UdpSocket,
        peer: SocketAddr,
        crypto: Option<SessionKeys>,
    ) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        if !super::rx_time::enable(&socket) {
            tracing::debug!("no kernel receive timestamps; arrival times are poll times");
        }
        Ok(Self {
            socket,
            peer,
            crypto,
            ssrc: random_u32(),
            next_ext_seq: (1 << 16) + u64::from(random_u32() % 0x8000),
            timestamp: random_u32(),
            remote_ssrc: None,
            reception: ReceptionStats::default(),
            rtcp_index: 0,
            next_report_us: REPORT_INTERVAL_US / 2,
            peer_fraction_lost: 0,
            stats: TransportStats::default(),
            buf: Box::new([0; 2048]),
            talk_start: true,
            history: SentHistory::new(),
            red_buf: Box::new([0; 2048]),
            new_report: false,
        })
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Counters so far.
    pub fn stats(&self) -> TransportStats {
        let mut s = self.stats;
        s.packets_lost = self.reception.cumulative_lost();
        s.jitter_ms = f64::from(self.reception.jitter()) / 48.0;
        s
    }

    /// The loss fraction (RTCP, 0..=255) of a report that came in since the last call, once.
    pub fn take_peer_report(&mut self) -> Option<u8> {
        std::mem::take(&mut self.new_report).then_some(self.peer_fraction_lost)
    }

    /// Advances the media clock by one frame without sending (DTX silence).
    pub fn skip_frame(&mut self, frame_samples: u32) {
        self.skip_samples(u64::from(frame_samples));
    }

    /// Moves the RTP clock over samples that are not sent (DTX, or a stall); the next packet
    /// starts a talkspurt.
    pub fn skip_samples(&mut self, samples: u64) {
        self.timestamp = self.timestamp.wrapping_add(samples as u32);
        self.talk_start = true;
    }

    /// Sends one Opus frame with up to `copies` redundant copies of the packets sent just
    /// before it (RFC 2198; copies that would not fit are left out). Send errors (no route,
    /// buffer full) count as a lost packet.
    pub fn send_frame(&mut self, payload: &[u8], frame_samples: u32, copies: usize) {
        let timestamp = self.timestamp;
        // Copies must be of the immediately preceding sequence numbers: take the newest ones
        // whose timestamp offset and size fit.
        let mut n = 0;
        let mut size = payload.len() + 1;
        while n < copies.min(self.history.count) {
            let (ts, data) = self.history.get(n + 1);
            let offset = timestamp.wrapping_sub(ts);
            size += 4 + data.len();
            if offset > red::MAX_TS_OFFSET || size > MAX_PAYLOAD {
                break;
            }
            n += 1;
        }
        let mut blocks: [(u32, &[u8]); red::MAX_COPIES] = [(0, &[]); red::MAX_COPIES];
        for (i, block) in blocks[..n].iter_mut().enumerate() {
            // Oldest first.
            let (ts, data) = self.history.get(n - i);
            *block = (timestamp.wrapping_sub(ts), data);
        }
        let (payload_type, body) = if n == 0 {
            (OPUS_PAYLOAD_TYPE, payload)
        } else {
            match red::write(
                OPUS_PAYLOAD_TYPE,
                &blocks[..n],
                payload,
                &mut self.red_buf[..],
            ) {
                Ok(len) => (RED_PAYLOAD_TYPE, &self.red_buf[..len]),
                Err(_) => (OPUS_PAYLOAD_TYPE, payload),
            }
        };
        let header = RtpHeader {
            marker: std::mem::take(&mut self.talk_start),
            payload_type,
            sequence: self.next_ext_seq as u16,
            timestamp,
            ssrc: self.ssrc,
        };
        let ext = self.next_ext_seq;
        self.next_ext_seq += 1;
        self.timestamp = self.timestamp.wrapping_add(frame_samples);
        let buf = &mut self.buf[..];
        let room = buf.len() - TAG_LEN;
        let written = rtp::write_packet(&header, body, &mut buf[..room]);
        self.history.push(timestamp, payload);
        let Ok(mut len) = written else {
            return;
        };
        if let Some(c) = &self.crypto {
            match c.encrypt_rtp(buf, len, RTP_HEADER_LEN, ext) {
                Ok(n) => len = n,
                Err(_) => return,
            }
        }
        if self.socket.send_to(&buf[..len], self.peer).is_ok() {
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += len as u64;
        }
    }

    /// Reads every waiting datagram; hands each accepted media packet to `on_packet`. `now_us`
    /// is the current time on the caller's clock (arrival times are given on it).
    pub fn poll(&mut self, now_us: u64, mut on_packet: impl FnMut(Received<'_>)) {
        let realtime_now = super::rx_time::realtime_now_ns();
        for _ in 0..MAX_READS_PER_TICK {
            let d = match super::rx_time::recv(&self.socket, &mut self.buf[..]) {
                Ok(d) => d,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // ICMP port unreachable and the like: the peer is not up yet; keep going.
                Err(_) => continue,
            };
            if d.from != self.peer {
                self.stats.dropped_foreign += 1;
                continue;
            }
            // How long ago it arrived, by the kernel's clock; never in the future, and a
            // wall-clock step (NTP) is not believed beyond a second.
            let ago_us = d.arrival_realtime_ns.map_or(0, |t| {
                ((realtime_now - t) / 1000).clamp(0, 1_000_000) as u64
            });
            let arrival_us = now_us.saturating_sub(ago_us);
            if rtp::is_rtcp(&self.buf[..d.len]) {
                self.handle_rtcp(arrival_us, d.len);
            } else {
                self.handle_rtp(arrival_us, d.len, &mut on_packet);
            }
        }
    }

    fn handle_rtp(
        &mut self,
        arrival_us: u64,
        len: usize,
        on_packet: &mut impl FnMut(Received<'_>),
    ) {
        let (header, header_len) = match rtp::parse(&self.buf[..len]) {
            Ok(p) if matches!(p.header.payload_type, OPUS_PAYLOAD_TYPE | RED_PAYLOAD_TYPE) => {
                (p.header, p.header_len)
            }
            _ => {
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        if self.remote_ssrc.is_some_and(|s| s != header.ssrc) {
            self.stats.dropped_ssrc += 1;
            return;
        }
        let mut end = len;
        if let Some(c) = &self.crypto {
            let ext = self.reception.peek_ext(header.sequence);
            match c.decrypt_rtp(&mut self.buf[..], len, header_len, ext) {
                Ok(n) => end = n,
                Err(_) => {
                    self.stats.dropped_auth += 1;
                    return;
                }
            }
        }
        let body = &self.buf[header_len..end];
        let red = if header.payload_type == RED_PAYLOAD_TYPE {
            match red::parse(body) {
                Ok(r) if r.primary_type == OPUS_PAYLOAD_TYPE => Some(r),
                _ => {
                    self.stats.dropped_malformed += 1;
                    return;
                }
            }
        } else {
            None
        };
        self.remote_ssrc = Some(header.ssrc);
        self.stats.packets_received += 1;
        self.reception
            .on_packet(header.sequence, header.timestamp, arrival_us * 48 / 1000);
        on_packet(Received {
            seq: header.sequence,
            timestamp: header.timestamp,
            arrival_us,
            payload: red.map_or(body, |r| r.primary),
            copy: false,
        });
        for (back, block) in red.iter().flat_map(|r| r.copies()) {
            if block.payload_type == OPUS_PAYLOAD_TYPE {
                on_packet(Received {
                    seq: header.sequence.wrapping_sub(back),
                    timestamp: header.timestamp.wrapping_sub(block.ts_offset),
                    arrival_us,
                    payload: block.data,
                    copy: true,
                });
            }
        }
    }

    fn handle_rtcp(&mut self, now_us: u64, len: usize) {
        let mut end = len;
        if let Some(c) = &self.crypto {
            match c.decrypt_rtcp(&mut self.buf[..], len) {
                Ok(n) => end = n,
                Err(_) => {
                    self.stats.dropped_auth += 1;
                    return;
                }
            }
        }
        let Ok(report) = rtcp::parse(&self.buf[..end]) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        if self.remote_ssrc.is_some_and(|s| s != report.ssrc) {
            self.stats.dropped_ssrc += 1;
            return;
        }
        self.stats.reports_received += 1;
        let now_ntp = rtcp::ntp_from_micros(now_us);
        if let Some(s) = report.sender {
            self.reception.on_sender_report(s.ntp, now_ntp);
        }
        if let Some(b) = report.block.filter(|b| b.ssrc == self.ssrc) {
            if let Some(rtt) = rtcp::rtt_ms(now_ntp, &b) {
                self.stats.rtt_ms = Some(rtt);
            }
            self.peer_fraction_lost = b.fraction_lost;
            self.new_report = true;
            self.stats.peer_loss = f64::from(b.fraction_lost) / 256.0;
        }
    }

    /// Sends a sender report (with a block about the peer's stream) when one is due.
    pub fn maybe_report(&mut self, now_us: u64) {
        if now_us < self.next_report_us {
            return;
        }
        self.next_report_us = now_us + REPORT_INTERVAL_US;
        let now_ntp = rtcp::ntp_from_micros(now_us);
        let block = self
            .remote_ssrc
            .map(|ssrc| self.reception.report_block(ssrc, now_ntp));
        let report = Report {
            ssrc: self.ssrc,
            sender: Some(SenderInfo {
                ntp: now_ntp,
                rtp_timestamp: self.timestamp,
                packet_count: self.stats.packets_sent as u32,
                octet_count: self.stats.bytes_sent as u32,
            }),
            block,
        };
        let buf = &mut self.buf[..rtcp::MAX_REPORT_LEN + RTCP_OVERHEAD];
        let Ok(mut len) = report.write(buf) else {
            return;
        };
        if let Some(c) = &self.crypto {
            self.rtcp_index = self.rtcp_index.wrapping_add(1);
            match c.encrypt_rtcp(buf, len, self.rtcp_index) {
                Ok(n) => len = n,
                Err(_) => return,
            }
        }
        if self.socket.send_to(&buf[..len], self.peer).is_ok() {
            self.stats.reports_sent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fala_proto::media_crypto::{KeyPair, Role};

    fn pair(crypto: bool) -> (Transport, Transport, UdpSocket) {
        // Arrival times (and so the RTT checked below) come from the kernel's stamps.
        crate::media::rx_time::wait_until_kernel_stamps();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let (ka, kb) = if crypto {
            let x = KeyPair::generate().unwrap();
            let y = KeyPair::generate().unwrap();
            let (px, py) = (x.public_bytes(), y.public_bytes());
            (
                Some(x.derive(Role::Caller, &py).unwrap()),
                Some(y.derive(Role::Callee, &px).unwrap()),
            )
        } else {
            (None, None)
        };
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        (
            Transport::new(a, ba, ka).unwrap(),
            Transport::new(b, aa, kb).unwrap(),
            stranger,
        )
    }

    fn drain(t: &mut Transport, now: u64) -> Vec<(u16, Vec<u8>)> {
        let mut got = Vec::new();
        for _ in 0..50 {
            t.poll(now, |r| got.push((r.seq, r.payload.to_vec())));
            if !got.is_empty() {
                // Give the rest a moment to arrive too.
                std::thread::sleep(std::time::Duration::from_millis(5));
                t.poll(now, |r| got.push((r.seq, r.payload.to_vec())));
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        got
    }

    #[test]
    fn packets_reports_and_filters_with_and_without_crypto() {
        for crypto in [false, true] {
            let (mut a, mut b, stranger) = pair(crypto);
            for i in 0..5u8 {
                a.send_frame(&[i; 20], 960, 0);
            }
            let got = drain(&mut b, 100_000);
            assert_eq!(got.len(), 5, "crypto {crypto}");
            assert_eq!(got[3].1, vec![3u8; 20]);
            assert_eq!(got[1].0, got[0].0.wrapping_add(1));

            // A stranger and a forged SSRC are dropped.
            let b_addr = a.peer;
            stranger.send_to(&a.buf[..40], b_addr).unwrap();
            let mut forged = [0u8; 40];
            let h = RtpHeader {
                marker: false,
                payload_type: 111,
                sequence: 1,
                timestamp: 1,
                ssrc: a.ssrc() ^ 1,
            };
            rtp::write_packet(&h, &[0; 20], &mut forged).unwrap();
            a.socket.send_to(&forged[..32], b_addr).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(drain(&mut b, 120_000).is_empty());
            let s = b.stats();
            assert_eq!(s.dropped_foreign, 1);
            assert_eq!(s.dropped_ssrc, 1);

            // Reports both ways give an RTT on the side that sent the first SR. Each side reads
            // its socket 20 ms after the report came: with kernel arrival times that wait is
            // not counted, and a loopback RTT is well under a millisecond (it was 40 ms when
            // arrivals were taken at read time).
            let t0 = std::time::Instant::now();
            let clock = || 1_000_000 + t0.elapsed().as_micros() as u64;
            a.maybe_report(clock());
            std::thread::sleep(std::time::Duration::from_millis(20));
            b.poll(clock(), |_| {});
            std::thread::sleep(std::time::Duration::from_millis(10));
            b.maybe_report(clock());
            std::thread::sleep(std::time::Duration::from_millis(20));
            a.poll(clock(), |_| {});
            let s = a.stats();
            assert_eq!(s.reports_received, 1, "crypto {crypto}: {s:?}");
            let rtt = s.rtt_ms.expect("rtt");
            assert!((0.0..3.0).contains(&rtt), "{rtt}");
        }
    }

    #[test]
    fn redundant_copies_come_with_their_own_sequence_and_timestamp() {
        for crypto in [false, true] {
            let (mut a, mut b, _s) = pair(crypto);
            let first_ts = a.timestamp;
            a.send_frame(&[1; 30], 960, 2);
            a.send_frame(&[2; 31], 960, 2);
            a.send_frame(&[3; 32], 960, 2);
            let mut got = Vec::new();
            for _ in 0..50 {
                b.poll(0, |r| {
                    got.push((r.seq, r.timestamp, r.payload.to_vec(), r.copy))
                });
                if got.len() >= 6 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            // Packet 1: alone; packet 2: + copy of 1; packet 3: + copies of 1 and 2.
            assert_eq!(got.len(), 6, "crypto {crypto}");
            let s0 = got[0].0;
            let expect = [
                (0u16, 0u32, 1u8, false),
                (1, 960, 2, false),
                (0, 0, 1, true),
                (2, 1920, 3, false),
                (0, 0, 1, true),
                (1, 960, 2, true),
            ];
            for (g, e) in got.iter().zip(expect) {
                assert_eq!(g.0, s0.wrapping_add(e.0));
                assert_eq!(g.1, first_ts.wrapping_add(e.1));
                assert!(g.2.iter().all(|&v| v == e.2) && g.2.len() == 29 + usize::from(e.2));
                assert_eq!(g.3, e.3);
            }
            assert_eq!(b.stats().packets_received, 3);
            assert_eq!(b.stats().packets_lost, 0);
        }
    }

    #[test]
    fn copies_never_push_a_packet_past_the_payload_limit() {
        let (mut a, mut b, _s) = pair(false);
        a.send_frame(&[1; 600], 960, 2);
        a.send_frame(&[2; 600], 960, 2);
        let mut got = Vec::new();
        for _ in 0..50 {
            b.poll(0, |r| got.push(r.copy));
            if got.len() >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(
            got,
            vec![false, false],
            "a 600-byte copy would make the packet too big"
        );
    }

    #[test]
    fn wrong_key_is_dropped_and_counted() {
        let (mut a, mut b, _s) = pair(true);
        let k = KeyPair::generate().unwrap();
        a.crypto = Some(
            k.derive(Role::Caller, &KeyPair::generate().unwrap().public_bytes())
                .unwrap(),
        );
        a.send_frame(&[1; 20], 960, 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(drain(&mut b, 0).is_empty());
        assert_eq!(b.stats().dropped_auth, 1);
        assert_eq!(b.stats().packets_received, 0);
    }
}
