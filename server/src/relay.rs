//! The media relay: forwards the (already end-to-end encrypted) datagrams of an accepted call
//! between its two legs, for clients that cannot reach each other directly (NATs that change
//! ports, blocked inbound UDP) or that do not want the other side to learn their address.
//!
//! It is never an open relay: a datagram is taken only with a leg's token, a random 8-byte
//! value made for one side of one call and told to that side alone in `call_connected`; it is
//! forwarded only to the other leg of that call, to the address the other leg last sent from
//! (so a leg behind a NAT that changes its mapping, or a client that moves to another
//! network, is followed); nothing goes anywhere before the other leg has sent something.
//! Each leg may send [`LEG_BYTES_PER_SECOND`] (with a burst of [`LEG_BURST_BYTES`]); past that,
//! datagrams are dropped and counted. The tokens die with the call.
//!
//! A leg may also come through its signaling connection (a `media` message, for networks that
//! block UDP, as Mumble tunnels its voice): the other leg's datagrams then go back down that
//! connection as `media` messages, until the leg sends by UDP again.
//!
//! The relay shares the server's UDP port: a relayed datagram is `token ‖ datagram`, and a
//! token's first byte is 64–79, a range that neither STUN (0–3) nor RTP/RTCP (128–191) uses
//! (RFC 7983 gives it to TURN channels). Its address is told in the call setup, so a
//! deployment can move it to other machines later without clients assuming anything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use fala_proto::{encode_frame, CallId, ServerMsg};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

/// Room kept in a connection's outgoing queue for its signaling: relayed media goes down a
/// connection only while more than this is free (a queue that fills drops the connection).
const TUNNEL_QUEUE_RESERVE: usize = 64;

/// Bytes of a token, in front of every relayed datagram (the clients' session writes them).
pub const TOKEN_LEN: usize = fala_proto::media_session::RELAY_TOKEN_LEN;
/// What one leg may send per second through the relay: ~520 kbit/s, far above a voice call
/// with two redundant copies (~170 kbit/s), far below what would make the relay useful for
/// anything else.
pub const LEG_BYTES_PER_SECOND: u64 = 65_536;
/// How far a leg may run ahead of its rate at once.
pub const LEG_BURST_BYTES: u64 = 32_768;

/// Whether a datagram on the server's UDP port is for the relay.
pub fn is_relayed(datagram: &[u8]) -> bool {
    datagram.len() > TOKEN_LEN && (0x40..=0x4f).contains(&datagram[0])
}

/// A fresh token: random, with its first byte in the relay's range.
fn new_token() -> [u8; TOKEN_LEN] {
    let mut t = [0u8; TOKEN_LEN];
    // The OS generator failing is not something a server can work around.
    getrandom::fill(&mut t).expect("OS random generator");
    t[0] = 0x40 | (t[0] & 0x0f);
    t
}

/// Where a leg's datagrams come from, and so where the other leg's go.
#[derive(Clone, Debug)]
pub(crate) enum LegAddr {
    Udp(SocketAddr),
    /// Its signaling connection, by its outgoing queue (weakly: the relay must not keep a
    /// connection's queue open once the server dropped the connection).
    Tunnel(mpsc::WeakSender<Bytes>),
}

impl PartialEq for LegAddr {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (LegAddr::Udp(a), LegAddr::Udp(b)) => a == b,
            (LegAddr::Tunnel(a), LegAddr::Tunnel(b)) => match (a.upgrade(), b.upgrade()) {
                (Some(a), Some(b)) => a.same_channel(&b),
                _ => false,
            },
            _ => false,
        }
    }
}

/// One side of a relayed call.
struct Leg {
    /// The other side's token.
    other: [u8; TOKEN_LEN],
    /// Where this side last sent from: where the other side's datagrams go.
    addr: Option<LegAddr>,
    /// Bytes it may still send now (refilled at [`LEG_BYTES_PER_SECOND`]).
    allowance: u64,
    refilled: Instant,
    counters: LegCounters,
}

/// What went through one leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegCounters {
    /// Datagrams from this leg forwarded to the other.
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    /// Dropped: over the leg's rate.
    pub over_rate: u64,
    /// Dropped: the other leg had not sent anything yet (its address is unknown).
    pub other_unknown: u64,
    /// Datagrams from this leg that came through its signaling connection.
    pub tunneled_in: u64,
    /// Dropped: bound for the other leg's connection, whose queue had no room.
    pub tunnel_full: u64,
}

#[derive(Default)]
struct Legs {
    by_token: HashMap<[u8; TOKEN_LEN], Leg>,
    by_call: HashMap<CallId, [[u8; TOKEN_LEN]; 2]>,
    /// Datagrams with a token no call has.
    unknown_token: u64,
}

/// The relay, shared by the hub (calls open and close it), the UDP task and the sessions
/// (which forward).
#[derive(Clone, Default)]
pub(crate) struct Relay {
    legs: Arc<Mutex<Legs>>,
    /// The UDP port's socket, for datagrams that came through a connection.
    udp: Arc<OnceLock<std::net::UdpSocket>>,
}

fn lock(legs: &Mutex<Legs>) -> std::sync::MutexGuard<'_, Legs> {
    legs.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relay {
    /// Makes the two legs of `call`; returns (caller's token, callee's token). Opening a call
    /// again returns the tokens it already has.
    pub fn open(&self, call: CallId, now: Instant) -> ([u8; TOKEN_LEN], [u8; TOKEN_LEN]) {
        let mut legs = lock(&self.legs);
        if let Some([a, b]) = legs.by_call.get(&call) {
            return (*a, *b);
        }
        let (a, b) = (new_token(), new_token());
        let leg = |other| Leg {
            other,
            addr: None,
            allowance: LEG_BURST_BYTES,
            refilled: now,
            counters: LegCounters::default(),
        };
        legs.by_token.insert(a, leg(b));
        legs.by_token.insert(b, leg(a));
        legs.by_call.insert(call, [a, b]);
        (a, b)
    }

    /// Ends the legs of `call`; returns what went through them (caller's, callee's).
    pub fn close(&self, call: CallId) -> Option<(LegCounters, LegCounters)> {
        let mut legs = lock(&self.legs);
        let [a, b] = legs.by_call.remove(&call)?;
        let a = legs.by_token.remove(&a)?.counters;
        let b = legs.by_token.remove(&b)?.counters;
        Some((a, b))
    }

    /// Gives the relay the UDP port's socket (a non-blocking clone), for datagrams that came
    /// through a connection and go on by UDP.
    pub fn set_udp(&self, socket: std::net::UdpSocket) {
        let _ = self.udp.set(socket);
    }

    /// A datagram `token ‖ inner` came through a signaling connection (whose outgoing queue
    /// is `conn`): forwards it, by UDP or down the other leg's connection.
    pub fn forward_from_tunnel(
        &self,
        datagram: &[u8],
        conn: &mpsc::WeakSender<Bytes>,
        now: Instant,
    ) {
        let to = self.route(datagram, LegAddr::Tunnel(conn.clone()), now);
        if let (Some(to), Some(socket)) = (to, self.udp.get()) {
            // A full socket buffer loses the datagram, as the network could.
            let _ = socket.send_to(&datagram[TOKEN_LEN..], to);
        }
    }

    /// Forwards `token ‖ inner` from `from`: down the other leg's connection when that is where
    /// it is, or returns the UDP address `inner` goes to, for the caller to send by its socket.
    pub fn route(&self, datagram: &[u8], from: LegAddr, now: Instant) -> Option<SocketAddr> {
        match self.forward(datagram, from, now)? {
            LegAddr::Udp(to) => Some(to),
            LegAddr::Tunnel(to) => {
                self.send_down(datagram, &to);
                None
            }
        }
    }

    /// Sends the datagram (after its token) down a leg's connection as a `media` message, if
    /// its queue has room to spare; counted against the sending leg when not.
    pub fn send_down(&self, datagram: &[u8], to: &mpsc::WeakSender<Bytes>) {
        let to = to.upgrade();
        let sent = to.is_some_and(|to| {
            to.capacity() > TUNNEL_QUEUE_RESERVE && {
                let msg = ServerMsg::Media {
                    data: ByteBuf::from(&datagram[TOKEN_LEN..]),
                };
                encode_frame(&msg).is_ok_and(|frame| to.try_send(frame).is_ok())
            }
        });
        if sent {
            return;
        }
        let token: Option<[u8; TOKEN_LEN]> =
            datagram.get(..TOKEN_LEN).and_then(|t| t.try_into().ok());
        let mut legs = lock(&self.legs);
        if let Some(leg) = token.and_then(|t| legs.by_token.get_mut(&t)) {
            leg.counters.tunnel_full += 1;
        }
    }

    /// A datagram `token ‖ inner` arrived from `from` at `now`: returns where `inner` goes, or
    /// `None` when it is dropped (unknown token, over the rate, the other side not heard yet).
    pub fn forward(&self, datagram: &[u8], from: LegAddr, now: Instant) -> Option<LegAddr> {
        let token: [u8; TOKEN_LEN] = datagram.get(..TOKEN_LEN)?.try_into().ok()?;
        let size = (datagram.len() - TOKEN_LEN) as u64;
        let mut legs = lock(&self.legs);
        let Some(leg) = legs.by_token.get_mut(&token) else {
            legs.unknown_token += 1;
            return None;
        };
        if matches!(from, LegAddr::Tunnel(_)) {
            leg.counters.tunneled_in += 1;
        }
        leg.addr = Some(from);
        let elapsed = now.saturating_duration_since(leg.refilled);
        let earned = elapsed.as_micros() as u64 * LEG_BYTES_PER_SECOND / 1_000_000;
        if earned > 0 {
            leg.allowance = (leg.allowance + earned).min(LEG_BURST_BYTES);
            leg.refilled = now;
        }
        if leg.allowance < size {
            leg.counters.over_rate += 1;
            return None;
        }
        let other = leg.other;
        let to = legs.by_token.get(&other).and_then(|o| o.addr.clone());
        let leg = legs.by_token.get_mut(&token)?;
        match to {
            Some(to) => {
                leg.allowance -= size;
                leg.counters.forwarded += 1;
                leg.counters.forwarded_bytes += size;
                Some(to)
            }
            None => {
                leg.counters.other_unknown += 1;
                None
            }
        }
    }

    /// Datagrams that came with a token no call has (since the start).
    #[cfg(test)]
    fn unknown_tokens(&self) -> u64 {
        lock(&self.legs).unknown_token
    }

    /// Calls with legs open now.
    #[cfg(test)]
    fn open_calls(&self) -> usize {
        lock(&self.legs).by_call.len()
    }

    /// The call a token belongs to (tests and logs).
    #[cfg(test)]
    fn call_of(&self, token: &[u8; TOKEN_LEN]) -> Option<CallId> {
        let legs = lock(&self.legs);
        legs.by_call
            .iter()
            .find(|(_, pair)| pair.contains(token))
            .map(|(call, _)| *call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn udp(addr: &str) -> LegAddr {
        LegAddr::Udp(addr.parse().unwrap())
    }

    fn datagram(token: [u8; TOKEN_LEN], len: usize) -> Vec<u8> {
        let mut d = token.to_vec();
        d.resize(TOKEN_LEN + len, 0x80);
        d
    }

    #[test]
    fn forwards_only_between_the_legs_of_a_call_and_follows_moves() {
        let relay = Relay::default();
        let t0 = Instant::now();
        let (a, b) = relay.open(CallId(1), t0);
        assert!(is_relayed(&datagram(a, 1)) && is_relayed(&datagram(b, 1)));
        assert_eq!(relay.call_of(&a), Some(CallId(1)));
        let (ana, bob) = (udp("198.51.100.1:4000"), udp("203.0.113.9:5000"));
        // Ana speaks first: Bob's address is not known yet, nothing goes out.
        assert_eq!(relay.forward(&datagram(a, 100), ana.clone(), t0), None);
        // Bob speaks: it goes to Ana; then Ana's go to Bob.
        assert_eq!(
            relay.forward(&datagram(b, 100), bob.clone(), t0),
            Some(ana.clone())
        );
        assert_eq!(
            relay.forward(&datagram(a, 100), ana.clone(), t0),
            Some(bob.clone())
        );
        // Bob's NAT gives him another port: the relay follows.
        let bob2 = udp("203.0.113.9:5999");
        relay.forward(&datagram(b, 100), bob2.clone(), t0);
        assert_eq!(
            relay.forward(&datagram(a, 100), ana.clone(), t0),
            Some(bob2.clone())
        );
        // A token nobody has, and one of another call's, go nowhere near this call.
        let stranger = [0x41; TOKEN_LEN];
        assert_eq!(
            relay.forward(&datagram(stranger, 100), ana.clone(), t0),
            None
        );
        assert_eq!(relay.unknown_tokens(), 1);
        let (c, _) = relay.open(CallId(2), t0);
        assert_eq!(relay.forward(&datagram(c, 100), ana.clone(), t0), None);
        // The call ends: its tokens are dead.
        let (to_bob, to_ana) = relay.close(CallId(1)).unwrap();
        assert_eq!((to_bob.forwarded, to_bob.other_unknown), (2, 1));
        assert_eq!(to_ana.forwarded, 2);
        assert_eq!(relay.forward(&datagram(a, 100), ana.clone(), t0), None);
        assert_eq!(relay.open_calls(), 1);
    }

    #[test]
    fn each_leg_is_held_to_its_rate() {
        let relay = Relay::default();
        let t0 = Instant::now();
        let (a, b) = relay.open(CallId(7), t0);
        let (ana, bob) = (udp("10.0.0.1:1"), udp("10.0.0.2:2"));
        relay.forward(&datagram(b, 10), bob.clone(), t0);
        // A flood of 1 000-byte datagrams in one instant: the burst goes, the rest is dropped.
        let passed = (0..100)
            .filter(|_| relay.forward(&datagram(a, 1000), ana.clone(), t0).is_some())
            .count();
        assert_eq!(passed, (LEG_BURST_BYTES / 1000) as usize);
        // A voice call's pace (200 bytes every 20 ms, ~80 kbit/s) is never dropped.
        let mut t = t0 + Duration::from_secs(1);
        for _ in 0..500 {
            assert!(relay.forward(&datagram(a, 200), ana.clone(), t).is_some());
            t += Duration::from_millis(20);
        }
        let (counters, _) = relay.close(CallId(7)).unwrap();
        assert_eq!(counters.over_rate, 100 - passed as u64);
    }

    #[test]
    fn a_leg_that_comes_through_its_connection_is_answered_down_it_until_it_sends_by_udp() {
        let relay = Relay::default();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        relay.set_udp(socket.try_clone().unwrap());
        let bob_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bob = LegAddr::Udp(bob_socket.local_addr().unwrap());
        let t0 = Instant::now();
        let (a, b) = relay.open(CallId(3), t0);
        let (ana_conn, mut ana_rx) = mpsc::channel::<Bytes>(256);
        // Bob is on UDP; Ana's network blocks it, so her datagrams come through her
        // connection, and go on to Bob by UDP.
        relay.forward(&datagram(b, 10), bob.clone(), t0);
        relay.forward_from_tunnel(&datagram(a, 20), &ana_conn.downgrade(), t0);
        let mut got = [0u8; 64];
        bob_socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (n, from) = bob_socket.recv_from(&mut got).unwrap();
        assert_eq!((n, from), (20, socket.local_addr().unwrap()));
        // Bob's go down Ana's connection as `media` messages, without the token.
        let to = relay.forward(&datagram(b, 30), bob.clone(), t0);
        assert_eq!(to, Some(LegAddr::Tunnel(ana_conn.downgrade())));
        relay.send_down(&datagram(b, 30), &ana_conn.downgrade());
        let frame = ana_rx.try_recv().unwrap();
        let mut buf = bytes::BytesMut::from(&frame[..]);
        let body = fala_proto::split_frame(&mut buf).unwrap().unwrap();
        let msg: ServerMsg = fala_proto::decode_body(&body, fala_proto::SERVER_MSG_TYPES).unwrap();
        assert_eq!(
            msg,
            ServerMsg::Media {
                data: ByteBuf::from(vec![0x80; 30])
            }
        );
        // A connection with no room to spare gets no media (its signaling comes first).
        let (tight, _tight_rx) = mpsc::channel::<Bytes>(TUNNEL_QUEUE_RESERVE);
        relay.forward_from_tunnel(&datagram(a, 20), &tight.downgrade(), t0);
        if let Some(LegAddr::Tunnel(to)) = relay.forward(&datagram(b, 30), bob.clone(), t0) {
            relay.send_down(&datagram(b, 30), &to);
        }
        // Ana's UDP works again: from her next UDP datagram on, Bob's go by UDP.
        let ana_udp = udp("198.51.100.1:4000");
        relay.forward(&datagram(a, 10), ana_udp.clone(), t0);
        assert_eq!(relay.forward(&datagram(b, 30), bob, t0), Some(ana_udp));
        let (from_ana, from_bob) = relay.close(CallId(3)).unwrap();
        assert_eq!(from_ana.tunneled_in, 2);
        assert_eq!(from_bob.tunnel_full, 1);
    }
}
