//! The media session of one call, without I/O: RTP out (sequence, timestamps, redundant
//! copies, encryption), RTP and RTCP in (filtered by address and SSRC, authenticated, counted),
//! and sender/receiver reports about once a second for loss, jitter and round-trip time.
//!
//! Shaped like str0m's `Rtc` and quinn-proto's `Connection`: the driver owns the socket, the
//! clock and the randomness, and moves the session with
//! - [`MediaSession::handle_datagram`] for every datagram read, then
//!   [`MediaSession::poll_event`] until it says `None`;
//! - [`MediaSession::send_frame`] for every encoded frame, then
//!   [`MediaSession::poll_transmit`] until it says `None` (reports come out of it when due;
//!   [`MediaSession::poll_timeout`] says when the next one is).
//!
//! **Consent** (after RFC 7675): no media goes a way (one of the peer's addresses, or the
//! relay) until an authentic packet (RTP, RTCP or a check that passes authentication and the
//! replay window; in clear, any packet we understand) has come *that way*: an address someone
//! merely advertised, a third party's, gets nothing but small reports and checks, whatever
//! came by another way. Until then reports go out as probes every
//! [`FIRST_PROBE_INTERVAL_US`] for [`FIRST_PROBES_US`] (a lost probe must not cost the first
//! words), then every [`PROBE_INTERVAL_US`] until [`FAST_PROBING_US`], then at the usual
//! interval, and the frames
//! are held back (the RTP clock moves on, as in DTX). Consent lapses when nothing authentic
//! has come for [`CONSENT_TIMEOUT_US`]; media stops and probing starts again.
//!
//! Time is microseconds on the driver's clock, given with every call. Nothing here reads a
//! clock, touches a socket or allocates after [`MediaSession::new`], so tests run whole
//! exchanges between two sessions on simulated time.

mod paths;
mod replay;
mod send;

use std::net::SocketAddr;

use crate::media_crypto::{SessionKeys, RTCP_INDEX_LEN, RTCP_OVERHEAD};
use crate::path_check::{self, Check, CheckError, CHECK_KEY_LEN, MAX_CHECK_LEN};
use crate::red::{self, RED_PAYLOAD_TYPE};
use crate::rtcp::{self, ReceptionStats, Report, SenderInfo};
use crate::rtp::{self, OPUS_PAYLOAD_TYPE};
pub use paths::{PathAgent, PathStats, Route, MAX_CANDIDATES};
use replay::ReplayWindow;
pub use replay::REPLAY_WINDOW;
use send::Sender;
pub use send::MAX_PAYLOAD;

/// Interval between reports, µs (RFC 3550 allows far less for two parties; one second keeps
/// loss feedback to the encoder fresh at negligible cost).
pub const REPORT_INTERVAL_US: u64 = 1_000_000;
/// Interval between probes right after the call starts, µs: one a frame.
pub const FIRST_PROBE_INTERVAL_US: u64 = 20_000;
/// How long probes go out at [`FIRST_PROBE_INTERVAL_US`], µs.
pub const FIRST_PROBES_US: u64 = 500_000;
/// Interval between reports while waiting for the peer's consent (probes), µs.
pub const PROBE_INTERVAL_US: u64 = 100_000;
/// How long probes go out at [`PROBE_INTERVAL_US`] before slowing to [`REPORT_INTERVAL_US`]
/// (an address that never answers gets about 60 bytes a second), µs.
pub const FAST_PROBING_US: u64 = 5_000_000;
/// Consent lapses when nothing authentic came from the peer for this long (RFC 7675), µs.
pub const CONSENT_TIMEOUT_US: u64 = 30_000_000;
/// Check requests answered per second at most: a peer checks a handful of addresses a few
/// times a second; more is someone bouncing answers off us (in a call in clear, where checks
/// carry no integrity) and is dropped.
pub const CHECK_ANSWERS_PER_SECOND: u32 = 50;
/// Largest datagram taken in; longer ones are malformed for Fala.
pub const MAX_DATAGRAM: usize = 2048;

/// What the driver chooses for a session: the peer, the keys, and the random starting points
/// of our stream (RFC 3550 wants SSRC, sequence and timestamp to start unpredictably).
#[derive(Debug)]
pub struct SessionConfig {
    /// The peer's address from `call_connected.media`: the first one checked, and where
    /// media goes when no relay is offered. Media is accepted from the peer's addresses
    /// (this one, its candidates, the ones its checks came from) and from the relay.
    pub peer: SocketAddr,
    /// Keys from the call's key exchange; `None` sends clear RTP.
    pub crypto: Option<SessionKeys>,
    pub ssrc: u32,
    /// First sequence number (only its low 15 bits are used).
    pub first_seq: u16,
    pub first_timestamp: u32,
    /// Our leg of the server's relay, when it offered one (see PROTOCOL.md, the media relay).
    pub relay: Option<RelayLeg>,
    /// "Always relay": everything through the relay, nothing straight to the peer and no
    /// connectivity checks (the peer does not learn our address from us).
    pub via_relay: bool,
    /// The peer's other addresses to check (`call_connected.candidates`).
    pub candidates: Vec<SocketAddr>,
    /// We placed the call: we choose (nominate) the direct path.
    pub controlling: bool,
    /// Varies the check transaction ids (drawn from the OS by the driver).
    pub path_seed: u64,
}

/// Where the relay is and the token that must lead every datagram sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLeg {
    pub addr: SocketAddr,
    pub token: [u8; RELAY_TOKEN_LEN],
}

/// Bytes of a relay leg's token.
pub const RELAY_TOKEN_LEN: usize = 8;

/// Counters of the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SessionStats {
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
    /// Dropped: authentic, but seen before or too old for the replay window (encrypted calls).
    /// A report seen twice is not counted when the call has a relay leg: a peer that sends
    /// straight sends each report through the relay too, by design.
    pub dropped_replay: u64,
    /// Dropped: not RTP/RTCP we understand.
    pub dropped_malformed: u64,
    /// Interarrival jitter of the received stream, ms.
    pub jitter_ms: f64,
    /// Round-trip time from the last report, ms.
    pub rtt_ms: Option<f64>,
    /// Fraction of our packets the peer says it lost recently, 0..=1.
    pub peer_loss: f64,
    /// Reports sent.
    pub reports_sent: u64,
    /// Reports received and understood.
    pub reports_received: u64,
    /// Frames not sent because the peer had not (or no longer) consented: nothing authentic
    /// had come from its address.
    pub frames_held: u64,
    /// Whether media goes out now (something authentic came from the peer lately).
    pub consented: bool,
    /// When the first media packet arrived, µs on the driver's clock.
    pub first_media_us: Option<u64>,
    /// When the last media packet arrived, µs on the driver's clock.
    pub last_media_us: Option<u64>,
    /// When anything authentic (media, a report, a check) last came from the peer, µs.
    pub last_heard_us: Option<u64>,
    /// The longest time between two media packets (a path that broke, a peer that stalled;
    /// with DTX also the pauses in speech), µs.
    pub longest_media_gap_us: u64,
    /// Media goes through the relay now.
    pub relayed: bool,
    /// The connectivity checks and the path's changes.
    pub paths: PathStats,
}

/// One received media packet, decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPacket<'a> {
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// When the datagram arrived, µs on the driver's clock.
    pub arrival_us: u64,
    /// Opus payload.
    pub payload: &'a [u8],
    /// A redundant copy of an earlier packet (RFC 2198), not the packet itself: it says nothing
    /// about arrival times.
    pub copy: bool,
}

/// What the session has for the driver after a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent<'a> {
    /// A media packet, or a copy of an earlier one; the packet comes first, then its copies.
    Media(MediaPacket<'a>),
    /// The peer reported on our stream: the share it lost lately (RTCP fraction lost, of 256).
    PeerLoss(u8),
}

/// A datagram to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub destination: SocketAddr,
    pub contents: &'a [u8],
}

/// The media packet of the last datagram, until all of it has been polled.
#[derive(Debug, Clone, Copy)]
struct Pending {
    header_len: usize,
    end: usize,
    seq: u16,
    timestamp: u32,
    arrival_us: u64,
    red: bool,
    /// Events of this packet already handed out (0: none; 1: the packet; 1 + k: k copies).
    polled: usize,
}

/// One call's RTP session with one peer.
pub struct MediaSession {
    crypto: Option<SessionKeys>,
    sender: Sender,
    remote_ssrc: Option<u32>,
    reception: ReceptionStats,
    /// Replay windows of the peer's RTP (by extended sequence) and RTCP (by SRTCP index),
    /// used when the call is encrypted (without keys anyone can forge packets anyway).
    rtp_replay: ReplayWindow,
    rtcp_replay: ReplayWindow,
    rtcp_index: u32,
    next_report_us: u64,
    stats: SessionStats,
    /// The last datagram taken in (decrypted in place).
    rx: Box<[u8; MAX_DATAGRAM]>,
    pending: Option<Pending>,
    /// A report's loss figure not polled yet.
    peer_loss: Option<u8>,
    /// The packet being sent (and then the report): `tx_len` bytes after the relay token's
    /// room, waiting for poll_transmit.
    tx: Box<[u8; RELAY_TOKEN_LEN + MAX_DATAGRAM]>,
    tx_len: Option<usize>,
    /// A report just sent straight to the peer, `n` bytes, to send through the relay too:
    /// the relay forwards the peer's datagrams to us only once our leg has spoken.
    relay_copy: Option<usize>,
    relay: Option<RelayLeg>,
    /// Which way media goes, and the checks that choose it.
    paths: PathAgent,
    check_key: Option<[u8; CHECK_KEY_LEN]>,
    /// The check message being sent (a request, or the answer to one).
    check_tx: [u8; MAX_CHECK_LEN],
    /// An answer to a check request, waiting for poll_transmit: where and how long.
    check_answer: Option<(SocketAddr, usize)>,
    /// Answers sent in the current second (starting at the first of the pair, µs).
    answers: (u64, u32),
    /// When the last authentic packet came from the peer (consent), µs.
    last_authentic_us: Option<u64>,
    /// When the current wait for consent began (the first poll, or consent lapsing), µs.
    probing_since: Option<u64>,
    /// When something authentic last came through the relay, µs.
    relay_heard_us: Option<u64>,
    /// The peer's last report's echo of our last sender report (LSR), and when a report
    /// first showed it: a new echo means the peer got our reports.
    peer_echo: (u32, Option<u64>),
}

impl MediaSession {
    pub fn new(config: SessionConfig) -> Self {
        let relay = config.relay.map(|r| r.addr);
        Self {
            paths: PathAgent::new(
                config.controlling,
                config.peer,
                &config.candidates,
                (relay, config.via_relay),
                config.path_seed,
            ),
            check_key: config.crypto.as_ref().map(|c| *c.check_key()),
            check_tx: [0; MAX_CHECK_LEN],
            check_answer: None,
            answers: (0, 0),
            crypto: config.crypto,
            sender: Sender::new(config.ssrc, config.first_seq, config.first_timestamp),
            remote_ssrc: None,
            reception: ReceptionStats::default(),
            rtp_replay: ReplayWindow::default(),
            rtcp_replay: ReplayWindow::default(),
            rtcp_index: 0,
            // The first probe goes out at once.
            next_report_us: 0,
            stats: SessionStats::default(),
            rx: Box::new([0; MAX_DATAGRAM]),
            pending: None,
            peer_loss: None,
            tx: {
                let mut tx = Box::new([0; RELAY_TOKEN_LEN + MAX_DATAGRAM]);
                if let Some(relay) = config.relay {
                    tx[..RELAY_TOKEN_LEN].copy_from_slice(&relay.token);
                }
                tx
            },
            tx_len: None,
            relay_copy: None,
            relay: config.relay,
            last_authentic_us: None,
            probing_since: None,
            relay_heard_us: None,
            peer_echo: (0, None),
        }
    }

    /// Whether the peer consented: media goes out.
    pub fn consented(&self) -> bool {
        self.last_authentic_us.is_some() && self.paths.route_heard()
    }

    /// Something authentic came from the peer at `now_us`.
    fn on_authentic(&mut self, now_us: u64) {
        if self.last_authentic_us.is_none() {
            self.probing_since = None;
        }
        self.last_authentic_us = Some(now_us);
    }

    /// Ends consent when nothing authentic came for [`CONSENT_TIMEOUT_US`].
    fn expire_consent(&mut self, now_us: u64) {
        let lapsed = self
            .last_authentic_us
            .is_some_and(|t| now_us.saturating_sub(t) >= CONSENT_TIMEOUT_US);
        if lapsed {
            self.last_authentic_us = None;
            self.probing_since = Some(now_us);
            self.next_report_us = now_us;
        }
    }

    /// The time until the next report: the usual interval with consent, probes without.
    fn report_interval(&mut self, now_us: u64) -> u64 {
        if self.consented() {
            return REPORT_INTERVAL_US;
        }
        let since = *self.probing_since.get_or_insert(now_us);
        match now_us.saturating_sub(since) {
            waited if waited < FIRST_PROBES_US => FIRST_PROBE_INTERVAL_US,
            waited if waited < FAST_PROBING_US => PROBE_INTERVAL_US,
            _ => REPORT_INTERVAL_US,
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.sender.ssrc
    }

    /// The RTP timestamp the next frame will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.sender.timestamp
    }

    /// Where media goes now: the relay's address, or the peer's.
    pub fn peer(&self) -> SocketAddr {
        match (self.paths.route(), self.relay) {
            (Route::Direct(addr), _) => addr,
            (Route::Relay, Some(relay)) => relay.addr,
            // A route to the relay exists only with a relay leg.
            (Route::Relay, None) => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        let mut s = self.stats;
        s.consented = self.consented();
        s.last_heard_us = self.last_authentic_us.max(s.last_media_us);
        s.packets_lost = self.reception.cumulative_lost();
        s.jitter_ms = f64::from(self.reception.jitter()) / 48.0;
        s.relayed = self.via_relay();
        s.paths = self.paths.stats();
        s
    }

    /// Moves the RTP clock over samples that are not sent (DTX, or a stall); the next packet
    /// starts a talkspurt.
    pub fn skip_samples(&mut self, samples: u64) {
        self.sender.skip_samples(samples);
    }

    /// Queues one Opus frame with up to `copies` redundant copies of the packets sent just
    /// before it (copies that would not fit are left out); [`MediaSession::poll_transmit`]
    /// hands it out. A frame that cannot be written is lost, as a failed send would be.
    /// Without the peer's consent the frame is held back instead (counted; the clock moves).
    pub fn send_frame(&mut self, payload: &[u8], frame_samples: u32, copies: usize) {
        if !self.consented() {
            self.stats.frames_held += 1;
            self.sender.skip_samples(u64::from(frame_samples));
            return;
        }
        let written = self.sender.write_frame(
            payload,
            frame_samples,
            copies,
            self.crypto.as_ref(),
            &mut self.tx[RELAY_TOKEN_LEN..],
        );
        if let Some(len) = written {
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += len as u64;
            self.tx_len = Some(len);
        }
    }

    /// The next datagram to send: a queued media packet, then a report (or probe) when one is
    /// due.
    pub fn poll_transmit(&mut self, now_us: u64) -> Option<Transmit<'_>> {
        if self.check_due(now_us) {
            return self.poll_check(now_us);
        }
        self.poll_media(now_us)
    }

    /// Whether a connectivity check (an answer, or a request) is due.
    fn check_due(&mut self, now_us: u64) -> bool {
        self.expire_consent(now_us);
        self.paths.tick(now_us);
        self.check_answer.is_some() || self.paths.next_check_us().is_some_and(|t| t <= now_us)
    }

    /// The next connectivity check to send now, and nothing else: the driver answers a check
    /// as soon as it arrives (its round trip is what the path is chosen by) without sending
    /// a report early.
    pub fn poll_check(&mut self, now_us: u64) -> Option<Transmit<'_>> {
        if let Some((to, len)) = self.check_answer.take() {
            return Some(Transmit {
                destination: to,
                contents: &self.check_tx[..len],
            });
        }
        if let Some(check) = self.paths.poll_check(now_us) {
            let key = self.check_key.as_ref();
            let role = (self.paths.controlling(), check.nominate);
            let len = path_check::write_request(check.id, role, key, &mut self.check_tx);
            return Some(Transmit {
                destination: check.to,
                contents: &self.check_tx[..len],
            });
        }
        None
    }

    /// The next media packet, relay copy or report.
    fn poll_media(&mut self, now_us: u64) -> Option<Transmit<'_>> {
        if let (Some(len), Some(relay)) = (self.relay_copy.take(), self.relay) {
            return Some(Transmit {
                destination: relay.addr,
                contents: &self.tx[..RELAY_TOKEN_LEN + len],
            });
        }
        let (len, report) = match self.tx_len.take() {
            Some(len) => (len, false),
            None => (self.write_report(now_us)?, true),
        };
        let route = self.paths.route();
        if report && route != Route::Relay && self.relay.is_some() {
            self.relay_copy = Some(len);
        }
        Some(match (route, self.relay) {
            (Route::Relay, Some(relay)) => Transmit {
                destination: relay.addr,
                contents: &self.tx[..RELAY_TOKEN_LEN + len],
            },
            _ => Transmit {
                destination: self.peer(),
                contents: &self.tx[RELAY_TOKEN_LEN..RELAY_TOKEN_LEN + len],
            },
        })
    }

    /// Whether one more check may be answered now ([`CHECK_ANSWERS_PER_SECOND`]).
    fn may_answer(&mut self, now_us: u64) -> bool {
        let (since, count) = &mut self.answers;
        if now_us.saturating_sub(*since) >= 1_000_000 {
            (*since, *count) = (now_us, 0);
        }
        *count += 1;
        *count <= CHECK_ANSWERS_PER_SECOND
    }

    /// Our own address changed: see [`PathAgent::local_address_changed`].
    pub fn local_address_changed(&mut self, now_us: u64) {
        self.paths.local_address_changed(now_us);
    }

    /// When something authentic last came through the relay (µs on the driver's clock): the
    /// driver tells by this whether the relay's way (UDP, or a tunnel) works.
    pub fn relay_heard_us(&self) -> Option<u64> {
        self.relay_heard_us
    }

    /// When a report from the peer last showed that it got one of ours (µs): a peer whose
    /// reports come but stop echoing ours no longer hears us (our way out is blocked).
    pub fn peer_heard_us_us(&self) -> Option<u64> {
        self.peer_echo.1
    }

    /// Our leg of the relay, if the call has one.
    pub fn relay(&self) -> Option<RelayLeg> {
        self.relay
    }

    /// Whether media goes through the relay now.
    pub fn via_relay(&self) -> bool {
        self.paths.route() == Route::Relay
    }

    /// When something is next due: a report or a check (µs on the driver's clock).
    pub fn poll_timeout(&self) -> u64 {
        let check = self.paths.next_check_us().unwrap_or(u64::MAX);
        self.next_report_us.min(check)
    }

    /// Takes in one datagram that arrived at `arrival_us` from `from`; what it carried comes
    /// out of [`MediaSession::poll_event`]. Anything not from the peer, not understood, or not
    /// authentic is dropped and counted.
    pub fn handle_datagram(&mut self, arrival_us: u64, from: SocketAddr, datagram: &[u8]) {
        self.pending = None;
        let via_relay = self.relay.is_some_and(|r| r.addr == from);
        if crate::stun::is_stun(datagram) && !via_relay {
            // A check may come from an address we have never heard of (the peer's NAT
            // mapped it anew): its integrity says whether it is the peer.
            self.handle_check(arrival_us, from, datagram);
            return;
        }
        // The peer's media comes from one of its addresses, or from the relay.
        if !via_relay && !self.paths.knows(from) {
            self.stats.dropped_foreign += 1;
            return;
        }
        let Some(buf) = self.rx.get_mut(..datagram.len()) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        buf.copy_from_slice(datagram);
        let authentic = if rtp::is_rtcp(datagram) {
            self.handle_rtcp(arrival_us, datagram.len())
        } else {
            self.handle_rtp(arrival_us, datagram.len())
        };
        if let Some(media) = authentic {
            self.paths.on_authentic(arrival_us, from, via_relay, media);
            if via_relay {
                self.relay_heard_us = Some(arrival_us);
            }
        }
    }

    /// A connectivity check from `from`: a request is answered (and may move the path), an
    /// answer to ours may move it.
    fn handle_check(&mut self, now_us: u64, from: SocketAddr, datagram: &[u8]) {
        match path_check::parse(datagram, self.check_key.as_ref()) {
            Ok(Check::Request { controlling, .. })
                if controlling == Some(self.paths.controlling()) || self.paths.relay_only() =>
            {
                // Our own request come back (the same key is on both sides), or one we must
                // not answer: always relay tells the peer nothing about our address.
                self.stats.dropped_foreign += 1;
            }
            Ok(Check::Request { .. }) if !self.may_answer(now_us) => {
                self.stats.dropped_malformed += 1;
            }
            Ok(Check::Request { id, nominate, .. }) => {
                self.on_authentic(now_us);
                self.paths.on_request(now_us, from, nominate);
                let key = self.check_key.as_ref();
                let len = path_check::write_response(id, from, key, &mut self.check_tx);
                self.check_answer = Some((from, len));
            }
            Ok(Check::Response { id, .. }) => {
                if self.paths.knows(from) {
                    self.on_authentic(now_us);
                }
                self.paths.on_response(now_us, from, id);
            }
            Err(CheckError::Integrity) => self.stats.dropped_auth += 1,
            Err(_) => self.stats.dropped_malformed += 1,
        }
    }

    /// The next thing the last datagram carried: the media packet, then its redundant copies;
    /// a peer's loss report.
    pub fn poll_event(&mut self) -> Option<SessionEvent<'_>> {
        if let Some(lost) = self.peer_loss.take() {
            return Some(SessionEvent::PeerLoss(lost));
        }
        let p = self.pending?;
        let body = &self.rx[p.header_len..p.end];
        let packet = MediaPacket {
            seq: p.seq,
            timestamp: p.timestamp,
            arrival_us: p.arrival_us,
            payload: body,
            copy: false,
        };
        // A RED payload was parsed and checked when the datagram came in.
        let event = match red::parse(body).ok().filter(|_| p.red) {
            None => (p.polled == 0).then_some(packet),
            Some(red) if p.polled == 0 => Some(MediaPacket {
                payload: red.primary,
                ..packet
            }),
            // Copies of payload types other than Opus are skipped.
            Some(red) => red
                .copies()
                .filter(|(_, block)| block.payload_type == OPUS_PAYLOAD_TYPE)
                .nth(p.polled - 1)
                .map(|(back, block)| MediaPacket {
                    seq: p.seq.wrapping_sub(back),
                    timestamp: p.timestamp.wrapping_sub(block.ts_offset),
                    payload: block.data,
                    copy: true,
                    ..packet
                }),
        };
        self.pending = event.is_some().then_some(Pending {
            polled: p.polled + 1,
            ..p
        });
        event.map(SessionEvent::Media)
    }

    /// Takes in an RTP packet; `Some(true)` when it was authentic.
    fn handle_rtp(&mut self, arrival_us: u64, len: usize) -> Option<bool> {
        let (header, header_len) = match rtp::parse(&self.rx[..len]) {
            Ok(p) if matches!(p.header.payload_type, OPUS_PAYLOAD_TYPE | RED_PAYLOAD_TYPE) => {
                (p.header, p.header_len)
            }
            _ => {
                self.stats.dropped_malformed += 1;
                return None;
            }
        };
        if self.remote_ssrc.is_some_and(|s| s != header.ssrc) {
            self.stats.dropped_ssrc += 1;
            return None;
        }
        let mut end = len;
        if let Some(c) = &self.crypto {
            let ext = self.reception.peek_ext(header.sequence);
            match c.decrypt_rtp(&mut self.rx[..], len, header_len, ext) {
                Ok(n) => end = n,
                Err(_) => {
                    self.stats.dropped_auth += 1;
                    return None;
                }
            }
            if !self.rtp_replay.accept(ext) {
                self.stats.dropped_replay += 1;
                return None;
            }
        }
        let red = header.payload_type == RED_PAYLOAD_TYPE;
        if red {
            let ok = red::parse(&self.rx[header_len..end])
                .is_ok_and(|r| r.primary_type == OPUS_PAYLOAD_TYPE);
            if !ok {
                self.stats.dropped_malformed += 1;
                return None;
            }
        }
        self.remote_ssrc = Some(header.ssrc);
        self.on_authentic(arrival_us);
        self.stats.first_media_us.get_or_insert(arrival_us);
        if let Some(last) = self.stats.last_media_us {
            let gap = arrival_us.saturating_sub(last);
            self.stats.longest_media_gap_us = self.stats.longest_media_gap_us.max(gap);
        }
        self.stats.last_media_us = Some(arrival_us);
        self.stats.packets_received += 1;
        self.reception
            .on_packet(header.sequence, header.timestamp, arrival_us * 48 / 1000);
        self.pending = Some(Pending {
            header_len,
            end,
            seq: header.sequence,
            timestamp: header.timestamp,
            arrival_us,
            red,
            polled: 0,
        });
        Some(true)
    }

    /// Takes in an RTCP packet; `Some(false)` when it was authentic.
    fn handle_rtcp(&mut self, now_us: u64, len: usize) -> Option<bool> {
        let mut end = len;
        if let Some(c) = &self.crypto {
            match c.decrypt_rtcp(&mut self.rx[..], len) {
                Ok(n) => end = n,
                Err(_) => {
                    self.stats.dropped_auth += 1;
                    return None;
                }
            }
            // The SRTCP index is the datagram's last 4 bytes, covered by the tag.
            let at = len - RTCP_INDEX_LEN;
            let index = u32::from_be_bytes(self.rx[at..len].try_into().unwrap_or_default());
            if !self.rtcp_replay.accept(u64::from(index)) {
                if self.relay.is_none() {
                    self.stats.dropped_replay += 1;
                }
                return None;
            }
        }
        let Ok(report) = rtcp::parse(&self.rx[..end]) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        if self.remote_ssrc.is_some_and(|s| s != report.ssrc) {
            self.stats.dropped_ssrc += 1;
            return None;
        }
        self.on_authentic(now_us);
        self.stats.reports_received += 1;
        let now_ntp = rtcp::ntp_from_micros(now_us);
        if let Some(s) = report.sender {
            self.reception.on_sender_report(s.ntp, now_ntp);
        }
        if let Some(b) = report
            .block
            .filter(|b| b.ssrc == self.sender.ssrc && b.lsr != 0)
        {
            if b.lsr != self.peer_echo.0 {
                self.peer_echo = (b.lsr, Some(now_us));
            }
        }
        if let Some(b) = report.block.filter(|b| b.ssrc == self.sender.ssrc) {
            if let Some(rtt) = rtcp::rtt_ms(now_ntp, &b) {
                self.stats.rtt_ms = Some(rtt);
            }
            self.peer_loss = Some(b.fraction_lost);
            self.stats.peer_loss = f64::from(b.fraction_lost) / 256.0;
        }
        Some(false)
    }

    /// Writes a sender report (with a block about the peer's stream) into the outgoing
    /// buffer when one is due; returns its length.
    fn write_report(&mut self, now_us: u64) -> Option<usize> {
        if now_us < self.next_report_us {
            return None;
        }
        self.next_report_us = now_us + self.report_interval(now_us);
        let now_ntp = rtcp::ntp_from_micros(now_us);
        let block = self
            .remote_ssrc
            .map(|ssrc| self.reception.report_block(ssrc, now_ntp));
        let report = Report {
            ssrc: self.sender.ssrc,
            sender: Some(SenderInfo {
                ntp: now_ntp,
                rtp_timestamp: self.sender.timestamp,
                packet_count: self.stats.packets_sent as u32,
                octet_count: self.stats.bytes_sent as u32,
            }),
            block,
        };
        let buf =
            &mut self.tx[RELAY_TOKEN_LEN..RELAY_TOKEN_LEN + rtcp::MAX_REPORT_LEN + RTCP_OVERHEAD];
        let mut len = report.write(buf).ok()?;
        if let Some(c) = &self.crypto {
            self.rtcp_index = self.rtcp_index.wrapping_add(1);
            len = c.encrypt_rtcp(buf, len, self.rtcp_index).ok()?;
        }
        self.stats.reports_sent += 1;
        Some(len)
    }
}

#[cfg(test)]
mod tests;
