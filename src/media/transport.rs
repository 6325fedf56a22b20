//! The media socket's driver: one non-blocking UDP socket, the kernel's receive timestamps,
//! and the call's sans-IO [`MediaSession`] (in `fala_proto`), which does all the RTP/RTCP work
//! (sequence numbers and timestamps, copies, encryption, filtering, reports).
//!
//! The media thread drains the socket when it has something to decide and never waits on it.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fala_proto::media_crypto::SessionKeys;
use fala_proto::stun;

use super::relay_way::RelayWay;
use crate::net::TunnelEnd;
use fala_proto::media_session::{
    MediaSession, RelayLeg, SessionConfig, SessionEvent, MAX_DATAGRAM,
};

pub use fala_proto::media_session::{MediaPacket, SessionStats};

/// Datagrams read per drain at most, so a flood cannot stall the audio.
const MAX_READS_PER_TICK: usize = 256;

/// How a call may reach the peer (the choice itself is
/// [`fala_proto::media_session::PathAgent`]'s).
#[derive(Default)]
pub struct PathSetup {
    /// Our leg of the server's relay, if it offered one.
    pub relay: Option<RelayLeg>,
    /// Everything through the relay, no connectivity checks: the peer never learns our
    /// address from us.
    pub always_relay: bool,
    /// The peer's other addresses (`call_connected.candidates`).
    pub candidates: Vec<SocketAddr>,
    /// We placed the call (we nominate the direct path).
    pub controlling: bool,
    /// Counts this host's address changes (see `client::net_watch`); a change sends media
    /// through the relay at once and checks again.
    pub address_changes: Option<Arc<AtomicU64>>,
    /// The call's end of the tunnel through the signaling connection, for the relay's
    /// datagrams when UDP does not get through.
    pub tunnel: Option<TunnelEnd>,
    /// UDP to the server looked blocked before the call: start on the tunnel.
    pub udp_blocked: bool,
}

/// The call's media session on its socket.
pub struct Transport {
    socket: UdpSocket,
    session: MediaSession,
    buf: Box<[u8; MAX_DATAGRAM]>,
    /// The loss the peer reported last, until the send path takes it.
    peer_loss: Option<u8>,
    /// The host's address-change count, and the value the session last heard of.
    address_changes: Option<(Arc<AtomicU64>, u64)>,
    /// The tunnel, and which way the relay's datagrams go (with a relay leg only).
    tunnel: Option<(TunnelEnd, RelayWay)>,
}

/// A fresh STUN transaction id for a probe.
fn random_id() -> [u8; 12] {
    let mut id = [0u8; 12];
    for chunk in id.chunks_mut(4) {
        chunk.copy_from_slice(&random_u32().to_ne_bytes());
    }
    id
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
    /// Wraps an already bound socket (made non-blocking here); SSRC, first sequence number and
    /// first timestamp are drawn at random (RFC 3550).
    /// `paths`: the relay and the peer's other addresses.
    pub fn new(
        socket: UdpSocket,
        peer: SocketAddr,
        crypto: Option<SessionKeys>,
        paths: PathSetup,
    ) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        if !super::rx_time::enable(&socket) {
            tracing::debug!("no kernel receive timestamps; arrival times are poll times");
        }
        let session = MediaSession::new(SessionConfig {
            peer,
            crypto,
            ssrc: random_u32(),
            first_seq: random_u32() as u16,
            first_timestamp: random_u32(),
            relay: paths.relay,
            via_relay: paths.always_relay,
            candidates: paths.candidates,
            controlling: paths.controlling,
            path_seed: u64::from(random_u32()) << 32 | u64::from(random_u32()),
        });
        let has_relay = paths.relay.is_some();
        let tunnel = paths
            .tunnel
            .filter(|_| has_relay)
            .map(|end| (end, RelayWay::new(0, paths.udp_blocked)));
        let address_changes = paths.address_changes.map(|c| {
            let seen = c.load(Ordering::Relaxed);
            (c, seen)
        });
        Ok(Self {
            socket,
            session,
            buf: Box::new([0; MAX_DATAGRAM]),
            peer_loss: None,
            address_changes,
            tunnel,
        })
    }

    /// Whether media goes through the server's relay now.
    pub fn relayed(&self) -> bool {
        self.session.via_relay()
    }

    /// Times the relay's datagrams moved between UDP and the tunnel.
    pub fn tunnel_changes(&self) -> u32 {
        self.tunnel.as_ref().map_or(0, |(_, way)| way.changes())
    }

    /// Whether the relay's datagrams go through the signaling connection now (UDP blocked).
    pub fn tunneled(&self) -> bool {
        self.session.via_relay() && self.tunnel.as_ref().is_some_and(|(_, way)| way.tunnel())
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.session.ssrc()
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        self.session.stats()
    }

    /// The loss fraction (RTCP, 0..=255) of a report that came in since the last call, once.
    pub fn take_peer_report(&mut self) -> Option<u8> {
        self.peer_loss.take()
    }

    /// Advances the media clock by one frame without sending (DTX silence).
    pub fn skip_frame(&mut self, frame_samples: u32) {
        self.skip_samples(u64::from(frame_samples));
    }

    /// Moves the RTP clock over samples that are not sent (DTX, or a stall); the next packet
    /// starts a talkspurt.
    pub fn skip_samples(&mut self, samples: u64) {
        self.session.skip_samples(samples);
    }

    /// Sends one Opus frame with up to `copies` redundant copies of the packets sent just
    /// before it (copies that would not fit are left out), and a report if one is due. A send
    /// error (no route, buffer full) loses the packet, as the network could.
    pub fn send_frame(&mut self, now_us: u64, payload: &[u8], frame_samples: u32, copies: usize) {
        self.session.send_frame(payload, frame_samples, copies);
        self.flush(now_us);
    }

    /// Reads every waiting datagram; hands each accepted media packet to `on_packet`. `now_us`
    /// is the current time on the caller's clock (arrival times are given on it: the kernel's
    /// receive timestamp moved onto that clock, or the poll time where the kernel gave none).
    pub fn poll(&mut self, now_us: u64, mut on_packet: impl FnMut(MediaPacket<'_>)) {
        if let Some((changes, seen)) = &mut self.address_changes {
            let now = changes.load(Ordering::Relaxed);
            if now != *seen {
                *seen = now;
                self.session.local_address_changed(now_us);
            }
        }
        let realtime_now = super::rx_time::realtime_now_ns();
        let relay = self.session.relay().map(|r| r.addr);
        for _ in 0..MAX_READS_PER_TICK {
            let d = match super::rx_time::recv(&self.socket, &mut self.buf[..]) {
                Ok(d) => d,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // ICMP port unreachable and the like: the peer is not up yet; keep going.
                Err(_) => continue,
            };
            // How long ago it arrived, by the kernel's clock; never in the future, and a
            // wall-clock step (NTP) is not believed beyond a second.
            let ago_us = d.arrival_realtime_ns.map_or(0, |t| {
                ((realtime_now - t) / 1000).clamp(0, 1_000_000) as u64
            });
            let arrival_us = now_us.saturating_sub(ago_us);
            if let Some((_, way)) = self.tunnel.as_mut().filter(|_| relay == Some(d.from)) {
                // The answer to our UDP probe of the relay's port, when on the tunnel.
                let probe = way.probe_id();
                let datagram = &self.buf[..d.len];
                if let Some(id) =
                    probe.filter(|id| stun::binding_response_address(datagram, *id).is_ok())
                {
                    way.on_probe_answer(now_us, id);
                    continue;
                }
            }
            let relay_heard = self.session.relay_heard_us();
            self.take_in(now_us, arrival_us, d.from, d.len, &mut on_packet);
            if let Some((_, way)) = self.tunnel.as_mut() {
                if self.session.relay_heard_us() != relay_heard && relay == Some(d.from) {
                    way.on_udp_heard(now_us);
                }
            }
        }
        self.poll_tunnel(now_us, &mut on_packet);
    }

    /// Takes in what came down the tunnel, as from the relay.
    fn poll_tunnel(&mut self, now_us: u64, on_packet: &mut impl FnMut(MediaPacket<'_>)) {
        let Some(relay) = self.session.relay().map(|r| r.addr) else {
            return;
        };
        for _ in 0..MAX_READS_PER_TICK {
            let Some(datagram) = self.tunnel.as_ref().and_then(|(end, _)| end.try_recv()) else {
                return;
            };
            let Some(buf) = self.buf.get_mut(..datagram.len()) else {
                continue;
            };
            buf.copy_from_slice(&datagram);
            self.take_in(now_us, now_us, relay, datagram.len(), on_packet);
        }
    }

    /// Hands the datagram in `buf[..len]` to the session, answers a check at once, and passes
    /// on what it carried.
    fn take_in(
        &mut self,
        now_us: u64,
        arrival_us: u64,
        from: SocketAddr,
        len: usize,
        on_packet: &mut impl FnMut(MediaPacket<'_>),
    ) {
        self.session
            .handle_datagram(arrival_us, from, &self.buf[..len]);
        if stun::is_stun(&self.buf[..len]) {
            // A connectivity check is answered at once: its round trip picks the path.
            while let Some(t) = self.session.poll_check(now_us) {
                let _ = self.socket.send_to(t.contents, t.destination);
            }
        }
        while let Some(ev) = self.session.poll_event() {
            match ev {
                SessionEvent::Media(packet) => on_packet(packet),
                SessionEvent::PeerLoss(lost) => self.peer_loss = Some(lost),
            }
        }
    }

    /// Sends a report when one is due.
    pub fn maybe_report(&mut self, now_us: u64) {
        self.flush(now_us);
    }

    /// Sends what the session has to send now: the relay's datagrams through the tunnel
    /// when it is on, the rest by UDP.
    fn flush(&mut self, now_us: u64) {
        let relay = self.session.relay().map(|r| r.addr);
        if let Some((_, way)) = self.tunnel.as_mut() {
            way.tick(
                now_us,
                self.session.via_relay(),
                self.session.peer_heard_us_us(),
            );
            if let (Some(relay), Some(id)) = (relay, way.poll_probe(now_us, random_id)) {
                let mut probe = [0u8; stun::MAX_RESPONSE_LEN];
                let len = stun::binding_request(id, &mut probe);
                let _ = self.socket.send_to(&probe[..len], relay);
            }
        }
        while let Some(t) = self.session.poll_transmit(now_us) {
            match &self.tunnel {
                Some((end, way)) if way.tunnel() && Some(t.destination) == relay => {
                    end.send(t.contents);
                }
                // A failed send is a lost packet; the peer's reports will say so.
                _ => {
                    let _ = self.socket.send_to(t.contents, t.destination);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The driver on real sockets: what the session does is tested on simulated time in
    //! `fala_proto::media_session`; here, that datagrams really go out and come in, that only
    //! the peer's are taken, and that arrival times are the kernel's.

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
                Some(x.derive(Role::Caller, &py, &[]).unwrap()),
                Some(y.derive(Role::Callee, &px, &[]).unwrap()),
            )
        } else {
            (None, None)
        };
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (mut a, mut b) = (
            Transport::new(
                a,
                ba,
                ka,
                PathSetup {
                    controlling: true,
                    ..PathSetup::default()
                },
            )
            .unwrap(),
            Transport::new(b, aa, kb, PathSetup::default()).unwrap(),
        );
        // Each side's first probe reaches the other: both consent to media.
        a.maybe_report(0);
        b.maybe_report(0);
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            a.poll(0, |_| {});
            b.poll(0, |_| {});
            if a.stats().consented && b.stats().consented {
                break;
            }
        }
        assert!(a.stats().consented && b.stats().consented);
        (a, b, stranger)
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
                a.send_frame(0, &[i; 20], 960, 0);
            }
            let got = drain(&mut b, 100_000);
            assert_eq!(got.len(), 5, "crypto {crypto}");
            assert_eq!(got[3].1, vec![3u8; 20]);
            assert_eq!(got[1].0, got[0].0.wrapping_add(1));

            // A stranger is dropped.
            let b_addr = a.session.peer();
            stranger.send_to(&[0x80; 40], b_addr).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(drain(&mut b, 120_000).is_empty());
            assert_eq!(b.stats().dropped_foreign, 1);

            // Reports both ways give an RTT on the side that sent the first SR. Each side reads
            // its socket 20 ms after the report came: with kernel arrival times that wait is
            // not counted, and a loopback RTT is well under a millisecond (with arrivals taken
            // at read time it would be about 40 ms).
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
            // The probe at the start, and this report.
            assert_eq!(s.reports_received, 2, "crypto {crypto}: {s:?}");
            let rtt = s.rtt_ms.expect("rtt");
            assert!((0.0..3.0).contains(&rtt), "{rtt}");
        }
    }
}
