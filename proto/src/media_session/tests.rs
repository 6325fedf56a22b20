//! Two sessions talking on simulated time: datagrams go from one's `poll_transmit` straight
//! into the other's `handle_datagram`, at whatever instants the test chooses.

use super::*;
use crate::media_crypto::{KeyPair, Role};
use crate::rtp::RtpHeader;

const A: &str = "127.0.0.1:4000";
const B: &str = "127.0.0.1:5000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A session at `A` talking to `B`, and one at `B` talking to `A`, each with the other's
/// consent (their first probes crossed at time 0).
fn pair(crypto: bool) -> (MediaSession, MediaSession) {
    let (mut a, mut b) = strangers(crypto);
    for d in transmits(&mut a, 0) {
        receive(&mut b, 0, A, &d);
    }
    for d in transmits(&mut b, 0) {
        receive(&mut a, 0, B, &d);
    }
    assert!(a.consented() && b.consented());
    (a, b)
}

/// Like [`pair`], before either has heard from the other.
fn strangers(crypto: bool) -> (MediaSession, MediaSession) {
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
    let session = |peer, crypto, ssrc| {
        MediaSession::new(SessionConfig {
            peer: addr(peer),
            crypto,
            ssrc,
            first_seq: 0x7ff0,
            first_timestamp: 0xffff_f000,
            relay: None,
            via_relay: false,
            candidates: Vec::new(),
            controlling: ssrc == 0xa1,
            path_seed: u64::from(ssrc),
        })
    };
    (session(B, ka, 0xa1), session(A, kb, 0xb2))
}

/// Everything but connectivity checks `from` has to send at `now`, with where it goes (the
/// checks, and the path they choose, have tests of their own at the end).
fn all_transmits(from: &mut MediaSession, now: u64) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = from.poll_transmit(now) {
        if !crate::stun::is_stun(t.contents) {
            out.push((t.destination, t.contents.to_vec()));
        }
    }
    out
}

/// Everything but connectivity checks `from` has to send at `now`.
fn transmits(from: &mut MediaSession, now: u64) -> Vec<Vec<u8>> {
    all_transmits(from, now)
        .into_iter()
        .map(|(_, d)| d)
        .collect()
}

/// What one datagram gave: (seq, timestamp, payload, copy) per media event.
fn receive(
    to: &mut MediaSession,
    now: u64,
    from: &str,
    datagram: &[u8],
) -> Vec<(u16, u32, Vec<u8>, bool)> {
    to.handle_datagram(now, addr(from), datagram);
    let mut got = Vec::new();
    while let Some(ev) = to.poll_event() {
        if let SessionEvent::Media(p) = ev {
            got.push((p.seq, p.timestamp, p.payload.to_vec(), p.copy));
        }
    }
    got
}

#[test]
fn packets_reports_and_filters_with_and_without_crypto() {
    for crypto in [false, true] {
        let (mut a, mut b) = pair(crypto);
        let mut got = Vec::new();
        for i in 0..5u8 {
            a.send_frame(&[i; 20], 960, 0);
            for d in transmits(&mut a, 0) {
                got.extend(receive(&mut b, 20_000, A, &d));
            }
        }
        assert_eq!(got.len(), 5, "crypto {crypto}");
        assert_eq!(got[3].2, vec![3u8; 20]);
        assert_eq!(got[1].0, got[0].0.wrapping_add(1));
        assert_eq!(got[1].1, got[0].1.wrapping_add(960));

        // A stranger's copy of a real packet, and a forged SSRC from the peer's address.
        a.send_frame(&[9; 20], 960, 0);
        let real = transmits(&mut a, 0).remove(0);
        assert!(receive(&mut b, 30_000, "127.0.0.1:6000", &real).is_empty());
        let mut forged = [0u8; 40];
        let h = RtpHeader {
            marker: false,
            payload_type: OPUS_PAYLOAD_TYPE,
            sequence: 1,
            timestamp: 1,
            ssrc: a.ssrc() ^ 1,
        };
        rtp::write_packet(&h, &[0; 20], &mut forged).unwrap();
        assert!(receive(&mut b, 30_000, A, &forged[..32]).is_empty());
        let s = b.stats();
        assert_eq!((s.dropped_foreign, s.dropped_ssrc), (1, 1));
        assert_eq!(s.packets_received, 5);

        // Reports both ways, 20 ms of network each way, the peer answering 10 ms after it
        // heard: the side that sent the first report measures 40 ms of round trip.
        let sr = transmits(&mut a, 1_000_000);
        assert_eq!(sr.len(), 1, "one report due");
        receive(&mut b, 1_020_000, A, &sr[0]);
        let rr = transmits(&mut b, 1_030_000);
        assert_eq!(rr.len(), 1);
        receive(&mut a, 1_050_000, B, &rr[0]);
        let s = a.stats();
        // The probe at the start, and this one.
        assert_eq!(s.reports_received, 2, "crypto {crypto}: {s:?}");
        let rtt = s.rtt_ms.expect("rtt");
        assert!((39.9..40.1).contains(&rtt), "{rtt}");
        // The next report waits a whole interval.
        assert!(transmits(&mut a, 1_500_000).is_empty());
        assert!(transmits(&mut a, 1_000_000 + REPORT_INTERVAL_US - 1).is_empty());
        assert_eq!(transmits(&mut a, 1_000_000 + REPORT_INTERVAL_US).len(), 1);
    }
}

#[test]
fn a_report_tells_the_peers_loss_once() {
    let (mut a, mut b) = pair(true);
    // Ten packets sent, three lost on the way.
    for i in 0..10u8 {
        a.send_frame(&[i; 30], 960, 0);
        for d in transmits(&mut a, 0) {
            if ![2, 5, 7].contains(&i) {
                receive(&mut b, 10_000, A, &d);
            }
        }
    }
    let rr = transmits(&mut b, 1_000_000);
    a.handle_datagram(1_020_000, addr(B), &rr[0]);
    // 3 of 10: 76 of 256.
    assert_eq!(a.poll_event(), Some(SessionEvent::PeerLoss(76)));
    assert_eq!(a.poll_event(), None);
    assert!((a.stats().peer_loss - 76.0 / 256.0).abs() < 1e-9);
    assert_eq!(b.stats().packets_lost, 3);
}

#[test]
fn redundant_copies_come_with_their_own_sequence_and_timestamp() {
    for crypto in [false, true] {
        let (mut a, mut b) = pair(crypto);
        let first_ts = a.next_timestamp();
        let mut got = Vec::new();
        for (i, len) in [(1u8, 30), (2, 31), (3, 32)] {
            a.send_frame(&vec![i; len], 960, 2);
            for d in transmits(&mut a, 0) {
                got.extend(receive(&mut b, 0, A, &d));
            }
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
    let (mut a, mut b) = pair(false);
    let mut got = Vec::new();
    for i in 1..=2u8 {
        a.send_frame(&[i; 600], 960, 2);
        for d in transmits(&mut a, 0) {
            got.extend(receive(&mut b, 0, A, &d).into_iter().map(|g| g.3));
        }
    }
    assert_eq!(
        got,
        vec![false, false],
        "a 600-byte copy would make the packet too big"
    );
}

#[test]
fn wrong_key_is_dropped_and_counted() {
    let (mut a, mut b) = pair(true);
    let k = KeyPair::generate().unwrap();
    a.crypto = Some(
        k.derive(
            Role::Caller,
            &KeyPair::generate().unwrap().public_bytes(),
            &[],
        )
        .unwrap(),
    );
    a.send_frame(&[1; 20], 960, 0);
    let d = transmits(&mut a, 0).remove(0);
    assert!(receive(&mut b, 0, A, &d).is_empty());
    assert_eq!(b.stats().dropped_auth, 1);
    assert_eq!(b.stats().packets_received, 0);
}

#[test]
fn skipped_samples_move_the_clock_and_mark_a_talkspurt() {
    let (mut a, mut b) = pair(false);
    a.send_frame(&[1; 20], 960, 0);
    let first = transmits(&mut a, 0).remove(0);
    a.send_frame(&[2; 20], 960, 0);
    let second = transmits(&mut a, 0).remove(0);
    a.skip_samples(3 * 960);
    a.send_frame(&[3; 20], 960, 0);
    let third = transmits(&mut a, 0).remove(0);
    let marker = |d: &[u8]| rtp::parse(d).unwrap().header.marker;
    assert_eq!(
        [marker(&first), marker(&second), marker(&third)],
        [true, false, true]
    );
    let ts: Vec<u32> = [first, second, third]
        .iter()
        .map(|d| receive(&mut b, 0, A, d)[0].1)
        .collect();
    assert_eq!(ts[1].wrapping_sub(ts[0]), 960);
    assert_eq!(
        ts[2].wrapping_sub(ts[1]),
        4 * 960,
        "one frame plus three skipped"
    );
    // The sequence numbers run on: nothing was lost.
    assert_eq!(b.stats().packets_lost, 0);
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let (_, mut b) = pair(true);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..300usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        assert!(receive(&mut b, 0, A, &bytes).is_empty());
    }
    let big = vec![0x80u8; MAX_DATAGRAM + 1];
    assert!(receive(&mut b, 0, A, &big).is_empty());
    let s = b.stats();
    assert_eq!(s.packets_received, 0);
    assert_eq!(s.dropped_malformed + s.dropped_auth, 301);
}

#[test]
fn replayed_rtp_and_rtcp_are_dropped_when_encrypted() {
    let (mut a, mut b) = pair(true);
    let mut sent = Vec::new();
    for i in 0..3u8 {
        a.send_frame(&[i; 20], 960, 0);
        sent.extend(transmits(&mut a, 0));
    }
    for d in &sent {
        assert_eq!(receive(&mut b, 0, A, d).len(), 1);
    }
    // Someone on the path sends them all again: they authenticate, and are dropped.
    for d in &sent {
        assert!(receive(&mut b, 0, A, d).is_empty());
    }
    assert_eq!(b.stats().dropped_replay, 3);
    assert_eq!(b.stats().packets_received, 3);
    // A report, then the same report again.
    let sr = transmits(&mut a, 1_000_000).remove(0);
    receive(&mut b, 1_000_000, A, &sr);
    receive(&mut b, 1_000_001, A, &sr);
    let s = b.stats();
    // The probe at the start, this report once, and the replays dropped.
    assert_eq!((s.reports_received, s.dropped_replay), (2, 4));
    // Reordered but new packets still get in.
    let mut later = Vec::new();
    for i in 3..6u8 {
        a.send_frame(&[i; 20], 960, 0);
        later.extend(transmits(&mut a, 0));
    }
    for d in later.iter().rev() {
        assert_eq!(receive(&mut b, 0, A, d).len(), 1);
    }
}

#[test]
fn in_clear_a_duplicate_still_reaches_the_jitter_buffer() {
    // Without keys anyone can forge a packet: a window would protect nothing, and the
    // jitter buffer already drops duplicates (and counts them).
    let (mut a, mut b) = pair(false);
    a.send_frame(&[1; 20], 960, 0);
    let d = transmits(&mut a, 0).remove(0);
    assert_eq!(receive(&mut b, 0, A, &d).len(), 1);
    assert_eq!(receive(&mut b, 0, A, &d).len(), 1);
    assert_eq!(b.stats().dropped_replay, 0);
}

/// Nothing but small probes goes to an address until something authentic comes from it: a
/// caller cannot aim the callee's audio at a third party by advertising its address.
#[test]
fn no_media_before_the_peer_answers_and_probes_slow_down() {
    for crypto in [false, true] {
        let (mut a, mut b) = strangers(crypto);
        let mut probes = 0;
        let mut media = 0;
        // Six seconds of frames and probes into the void.
        for frame in 0..300u64 {
            a.send_frame(&[1; 60], 960, 0);
            for d in transmits(&mut a, frame * 20_000) {
                if rtp::is_rtcp(&d) {
                    probes += 1;
                } else {
                    media += 1;
                }
            }
        }
        assert_eq!(media, 0, "crypto {crypto}");
        // Every 20 ms for 0.5 s, every 100 ms until 5 s, then once a second.
        assert!((70..=73).contains(&probes), "crypto {crypto}: {probes}");
        let s = a.stats();
        assert_eq!(
            (s.frames_held, s.packets_sent, s.consented),
            (300, 0, false)
        );
        if crypto {
            // A packet from the peer's address that does not authenticate gives no consent.
            let mut forged = [0u8; 60];
            let h = RtpHeader {
                marker: false,
                payload_type: OPUS_PAYLOAD_TYPE,
                sequence: 1,
                timestamp: 1,
                ssrc: 7,
            };
            rtp::write_packet(&h, &[0; 20], &mut forged).unwrap();
            receive(&mut a, 6_000_000, B, &forged);
            assert!(!a.consented());
        }
        // The peer's probe comes back: the next frame goes out, with a jump in the clock that
        // the peer takes as a new talkspurt.
        for d in transmits(&mut b, 6_000_000) {
            receive(&mut a, 6_010_000, B, &d);
        }
        assert!(a.consented(), "crypto {crypto}");
        a.send_frame(&[2; 60], 960, 0);
        let sent = transmits(&mut a, 6_020_000);
        let got: Vec<_> = sent
            .iter()
            .flat_map(|d| receive(&mut b, 6_030_000, A, d))
            .collect();
        assert_eq!(got.len(), 1, "crypto {crypto}");
        assert_eq!(got[0].2, vec![2; 60]);
    }
}

/// Consent lapses after 30 s without anything authentic from the peer (RFC 7675): media
/// stops, probes start again, and the first answer brings media back.
#[test]
fn consent_lapses_when_the_peer_goes_quiet() {
    let (mut a, mut b) = pair(true);
    a.send_frame(&[1; 40], 960, 0);
    assert_eq!(transmits(&mut a, 10_000).len(), 1);
    // 29.9 s later media still flows; at 30 s it stops and a probe goes out at once.
    a.send_frame(&[1; 40], 960, 0);
    assert!(!transmits(&mut a, 29_900_000).is_empty());
    assert!(a.consented());
    let out = transmits(&mut a, 30_000_000);
    assert!(!a.consented());
    assert!(
        out.iter().all(|d| rtp::is_rtcp(d)) && out.len() == 1,
        "{out:?}"
    );
    a.send_frame(&[1; 40], 960, 0);
    let out = transmits(&mut a, 30_020_000);
    assert!(
        out.len() == 1 && rtp::is_rtcp(&out[0]),
        "a probe a frame at first: {out:?}"
    );
    assert!(transmits(&mut a, 30_030_000).is_empty());
    for d in transmits(&mut b, 30_100_000) {
        receive(&mut a, 30_110_000, B, &d);
    }
    a.send_frame(&[1; 40], 960, 0);
    let out = transmits(&mut a, 30_120_000);
    assert!(out.iter().any(|d| !rtp::is_rtcp(d)), "media again");
}

/// The relay's address in these tests.
const RELAY: &str = "127.0.0.1:7400";
const TOKEN: [u8; 8] = [0x4a, 1, 2, 3, 4, 5, 6, 7];

fn relayed_session(via_relay: bool) -> MediaSession {
    MediaSession::new(SessionConfig {
        peer: addr(B),
        crypto: None,
        ssrc: 0xa1,
        first_seq: 0x7ff0,
        first_timestamp: 0xffff_f000,
        relay: Some(RelayLeg {
            addr: addr(RELAY),
            token: TOKEN,
        }),
        via_relay,
        candidates: Vec::new(),
        controlling: true,
        path_seed: 1,
    })
}

/// Through the relay every datagram (media and reports) goes to the relay and starts with the
/// token; what follows is exactly what a direct session sends. Nothing goes to the peer.
#[test]
fn through_the_relay_every_datagram_starts_with_the_token() {
    let mut relayed = relayed_session(true);
    let mut direct = strangers(false).0;
    let (from_relayed, from_direct) = (
        all_transmits(&mut relayed, 0),
        all_transmits(&mut direct, 0),
    );
    assert_eq!(from_relayed.len(), 1, "one probe");
    assert_eq!(from_relayed[0].0, addr(RELAY));
    assert_eq!(&from_relayed[0].1[..8], &TOKEN);
    assert_eq!(&from_relayed[0].1[8..], &from_direct[0].1[..]);
    // The peer's datagrams come from the relay, token stripped: taken (consent), and media
    // then goes out through the relay.
    let (_, mut peer) = strangers(false);
    for (_, d) in all_transmits(&mut peer, 0) {
        relayed.handle_datagram(1_000, addr(RELAY), &d);
    }
    assert!(relayed.consented());
    relayed.send_frame(&[5; 30], 960, 0);
    let out = all_transmits(&mut relayed, 20_000);
    assert!(out
        .iter()
        .all(|(to, d)| *to == addr(RELAY) && d[..8] == TOKEN));
    assert!(
        out.iter().any(|(_, d)| !rtp::is_rtcp(&d[8..])),
        "media went out"
    );
}

/// Only the connectivity checks `from` has to send at `now`.
fn checks(from: &mut MediaSession, now: u64) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = from.poll_transmit(now) {
        if crate::stun::is_stun(t.contents) {
            out.push((t.destination, t.contents.to_vec()));
        }
    }
    out
}

/// Offered a relay, a call starts on it, and goes direct once the peer answers a check; then
/// each report also goes through the relay (so the relay knows where to forward a relaying
/// peer's packets), and the peer's packets are taken from either address.
#[test]
fn a_direct_session_with_a_relay_also_reports_through_it() {
    let mut s = relayed_session(false);
    let out = all_transmits(&mut s, 0);
    let to: Vec<_> = out.iter().map(|(to, _)| *to).collect();
    assert_eq!(to, [addr(RELAY)], "the first probe goes through the relay");
    assert!(s.via_relay());
    // The caller's check reaches the peer, whose answer comes back: direct from now on.
    let (_, mut peer) = strangers(false);
    // (The first went out with the probe above; this is its retry.)
    let check = checks(&mut s, paths::FIRST_RETRY_US);
    assert_eq!(check.len(), 1);
    assert_eq!(check[0].0, addr(B));
    peer.handle_datagram(500, addr(A), &check[0].1);
    let answer = checks(&mut peer, 500);
    assert!(answer.iter().any(|(to, _)| *to == addr(A)));
    for (_, d) in answer.iter().filter(|(to, _)| *to == addr(A)) {
        s.handle_datagram(1_000, addr(B), d);
    }
    assert!(
        !s.via_relay(),
        "an answered check moves the caller to the direct path"
    );
    assert_eq!(s.stats().paths.route_changes, 1);
    for (_, d) in all_transmits(&mut peer, 0) {
        s.handle_datagram(1_000, addr(RELAY), &d);
    }
    assert!(s.consented());
    s.send_frame(&[5; 30], 960, 0);
    let out = all_transmits(&mut s, 20_000);
    let media: Vec<_> = out
        .iter()
        .filter(|(_, d)| d[0] & 0xc0 == 0x80 && !rtp::is_rtcp(d))
        .collect();
    assert_eq!(media.len(), 1);
    assert_eq!(media[0].0, addr(B), "media straight to the peer");
    assert!(
        out.iter().all(|(to, d)| *to == addr(B) || d[..8] == TOKEN),
        "only token-led reports go to the relay"
    );
}

/// Two encrypted sessions with relay legs on simulated time: A (the caller, at `A`) and B
/// (at `B`, seen by A as `b_seen`: its NAT's mapping). Each frame both send one; datagrams to
/// the relay reach the other side from the relay, token stripped; direct ones arrive while
/// `direct` is true, from the sender's address as the other side sees it.
struct Call {
    a: MediaSession,
    b: MediaSession,
    b_seen: SocketAddr,
    direct: bool,
    now: u64,
    /// Sequence numbers of the media each side received (first copies only).
    heard_by_a: Vec<u16>,
    heard_by_b: Vec<u16>,
    /// This side (0: A, 1: B) is a client written before the checks: it ignores the relay
    /// and STUN (its checks are dropped here, as are those sent to it).
    old: Option<usize>,
}

impl Call {
    fn new(b_seen: &str, a_candidates: Vec<SocketAddr>, relay_only_b: bool) -> Self {
        let x = KeyPair::generate().unwrap();
        let y = KeyPair::generate().unwrap();
        let (px, py) = (x.public_bytes(), y.public_bytes());
        let leg = |token: u8| {
            Some(RelayLeg {
                addr: addr(RELAY),
                token: [0x40 | token, 0, 0, 0, 0, 0, 0, token],
            })
        };
        let a = MediaSession::new(SessionConfig {
            peer: addr(b_seen),
            crypto: Some(x.derive(Role::Caller, &py, &[]).unwrap()),
            ssrc: 0xa1,
            first_seq: 1,
            first_timestamp: 0,
            relay: leg(1),
            via_relay: false,
            candidates: a_candidates,
            controlling: true,
            path_seed: 7,
        });
        let b = MediaSession::new(SessionConfig {
            peer: addr(A),
            crypto: Some(y.derive(Role::Callee, &px, &[]).unwrap()),
            ssrc: 0xb2,
            first_seq: 1,
            first_timestamp: 0,
            relay: leg(2),
            via_relay: relay_only_b,
            candidates: Vec::new(),
            controlling: false,
            path_seed: 9,
        });
        Call {
            a,
            b,
            b_seen: addr(b_seen),
            direct: true,
            now: 0,
            heard_by_a: Vec::new(),
            heard_by_b: Vec::new(),
            old: None,
        }
    }

    /// Like [`Call::new`], with side `old` (0: the caller, 1: the callee) an old client.
    fn with_old(old: usize) -> Self {
        let mut call = Call::new(B, Vec::new(), false);
        let (x, y) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let (px, py) = (x.public_bytes(), y.public_bytes());
        let (ka, kb) = (
            x.derive(Role::Caller, &py, &[]).unwrap(),
            y.derive(Role::Callee, &px, &[]).unwrap(),
        );
        let session = |peer: &str, crypto, ssrc, relay, controlling| {
            MediaSession::new(SessionConfig {
                peer: addr(peer),
                crypto: Some(crypto),
                ssrc,
                first_seq: 1,
                first_timestamp: 0,
                relay,
                via_relay: false,
                candidates: Vec::new(),
                controlling,
                path_seed: u64::from(ssrc),
            })
        };
        let leg = |token: u8| {
            Some(RelayLeg {
                addr: addr(RELAY),
                token: [0x40 | token, 0, 0, 0, 0, 0, 0, token],
            })
        };
        call.a = session(B, ka, 0xa1, if old == 0 { None } else { leg(1) }, true);
        call.b = session(A, kb, 0xb2, if old == 1 { None } else { leg(2) }, false);
        call.old = Some(old);
        call
    }

    /// One 20 ms frame: each side sends one, and everything due is delivered at once.
    fn frame(&mut self) {
        let now = self.now;
        self.a.send_frame(&[1; 40], 960, 0);
        self.b.send_frame(&[2; 40], 960, 0);
        let from_a: Vec<_> = std::iter::from_fn(|| {
            self.a
                .poll_transmit(now)
                .map(|t| (t.destination, t.contents.to_vec()))
        })
        .collect();
        let from_b: Vec<_> = std::iter::from_fn(|| {
            self.b
                .poll_transmit(now)
                .map(|t| (t.destination, t.contents.to_vec()))
        })
        .collect();
        let old = self.old;
        let keep = move |side: usize, d: &[u8]| !(old == Some(side) && crate::stun::is_stun(d));
        let from_a: Vec<_> = from_a
            .into_iter()
            .filter(|(_, d)| keep(0, d) && keep(1, d))
            .collect();
        let from_b: Vec<_> = from_b
            .into_iter()
            .filter(|(_, d)| keep(1, d) && keep(0, d))
            .collect();
        for (to, d) in from_a {
            let arrived = match to {
                to if to == addr(RELAY) => Some((addr(RELAY), &d[8..])),
                to if to == addr(B) || to == self.b_seen => Some((addr(A), &d[..])),
                _ => None,
            };
            if let Some((from, d)) = arrived.filter(|(f, _)| *f == addr(RELAY) || self.direct) {
                Self::deliver(&mut self.b, now + 1_000, from, d, &mut self.heard_by_b);
            }
        }
        for (to, d) in from_b {
            let arrived = match to {
                to if to == addr(RELAY) => Some((addr(RELAY), &d[8..])),
                to if to == addr(A) => Some((self.b_seen, &d[..])),
                _ => None,
            };
            if let Some((from, d)) = arrived.filter(|(f, _)| *f == addr(RELAY) || self.direct) {
                Self::deliver(&mut self.a, now + 1_000, from, d, &mut self.heard_by_a);
            }
        }
        self.now += 20_000;
    }

    fn deliver(to: &mut MediaSession, now: u64, from: SocketAddr, d: &[u8], heard: &mut Vec<u16>) {
        to.handle_datagram(now, from, d);
        while let Some(ev) = to.poll_event() {
            if let SessionEvent::Media(p) = ev {
                if !p.copy {
                    heard.push(p.seq);
                }
            }
        }
    }

    fn run_for(&mut self, us: u64) {
        let end = self.now + us;
        while self.now < end {
            self.frame();
        }
    }
}

/// No sequence number missing between the first and the last heard.
fn gaps(heard: &[u16]) -> usize {
    heard
        .windows(2)
        .filter(|w| w[1] != w[0].wrapping_add(1))
        .count()
}

#[test]
fn a_call_starts_on_the_relay_and_both_sides_move_direct_without_losing_a_frame() {
    let mut call = Call::new(B, Vec::new(), false);
    call.frame();
    assert!(
        call.a.via_relay() && call.b.via_relay(),
        "media starts on the relay"
    );
    call.run_for(200_000);
    assert!(
        !call.a.via_relay(),
        "the caller moved on the answered check"
    );
    assert!(!call.b.via_relay(), "the callee followed the nomination");
    assert_eq!(call.a.peer(), addr(B));
    assert_eq!(call.b.peer(), addr(A));
    call.run_for(1_000_000);
    for (side, heard) in [("a", &call.heard_by_a), ("b", &call.heard_by_b)] {
        assert!(heard.len() >= 55, "{side} heard {}", heard.len());
        assert_eq!(gaps(heard), 0, "{side}: no frame lost over the move");
    }
    let (sa, sb) = (call.a.stats(), call.b.stats());
    assert_eq!((sa.paths.route_changes, sb.paths.route_changes), (1, 1));
    // The first frame waited for the probes to cross (consent); the second came through.
    assert_eq!(sa.first_media_us, Some(21_000));
}

#[test]
fn a_silent_direct_path_falls_back_to_the_relay_within_seconds_and_comes_back() {
    let mut call = Call::new(B, Vec::new(), false);
    call.run_for(1_000_000);
    assert!(!call.a.via_relay() && !call.b.via_relay());
    // The NAT forgets the mapping: nothing direct gets through any more.
    call.direct = false;
    let broke_at = call.now;
    let heard_before = (call.heard_by_a.len(), call.heard_by_b.len());
    while !(call.a.via_relay() && call.b.via_relay()) {
        call.frame();
        assert!(
            call.now - broke_at < 4_000_000,
            "both back on the relay in time"
        );
    }
    let back = call.now - broke_at;
    assert!(
        back >= paths::DIRECT_SILENCE_US,
        "not before the silence rule: {back}"
    );
    call.run_for(1_000_000);
    assert!(
        call.heard_by_a.len() > heard_before.0 + 40,
        "audio goes on via the relay"
    );
    assert!(call.heard_by_b.len() > heard_before.1 + 40);
    assert_eq!(
        call.a.stats().paths.fallbacks + call.b.stats().paths.fallbacks,
        2
    );
    // The path heals: the checks restarted at the fallback find it again.
    call.direct = true;
    call.run_for(2_000_000);
    assert!(!call.a.via_relay() && !call.b.via_relay(), "direct again");
}

#[test]
fn a_side_whose_address_changed_goes_to_the_relay_at_once_and_the_other_follows() {
    let mut call = Call::new(B, Vec::new(), false);
    call.run_for(1_000_000);
    assert!(!call.a.via_relay() && !call.b.via_relay());
    // The callee moves to another network: the direct path is gone both ways, and it knows.
    call.direct = false;
    let moved_at = call.now;
    let heard_before = (call.heard_by_a.len(), call.heard_by_b.len());
    call.b.local_address_changed(call.now);
    assert!(call.b.via_relay(), "the side that moved leaves at once");
    while !call.a.via_relay() {
        call.frame();
        assert!(call.now - moved_at < 1_500_000, "the other follows in time");
    }
    let followed = call.now - moved_at;
    assert!(followed < paths::DIRECT_SILENCE_US, "{followed}");
    call.run_for(1_000_000);
    // What the moved side says is not lost at all; what it hears waits for the other to
    // follow (about a second), not for the silence rule.
    let heard_a = &call.heard_by_a[heard_before.0..];
    assert_eq!(gaps(heard_a), 0, "nothing from the moved side lost");
    let heard_b = &call.heard_by_b[heard_before.1 - 1..];
    let lost = heard_b
        .windows(2)
        .map(|w| w[1].wrapping_sub(w[0]).wrapping_sub(1) as u64)
        .sum::<u64>();
    assert!(
        lost * 20_000 <= paths::FOLLOW_RELAY_US + 100_000,
        "{lost} frames lost"
    );
}

#[test]
fn where_direct_never_works_the_call_stays_on_the_relay_and_checking_stops() {
    let mut call = Call::new(B, vec![addr("192.0.2.1:5000")], false);
    call.direct = false;
    call.run_for(paths::CHECKING_US + 1_000_000);
    assert!(call.a.via_relay() && call.b.via_relay());
    assert!(call.heard_by_a.len() > 400 && gaps(&call.heard_by_a) == 0);
    let sent = call.a.stats().paths.checks_sent;
    assert!(sent < 40, "checks back off: {sent}");
    call.run_for(10_000_000);
    assert_eq!(
        call.a.stats().paths.checks_sent,
        sent,
        "and stop until the next round"
    );
    call.run_for(paths::RECHECK_US);
    assert!(
        call.a.stats().paths.checks_sent > sent,
        "a new round every 30 s"
    );
}

#[test]
fn a_port_changing_nat_is_crossed_by_learning_the_address_the_checks_come_from() {
    // B's NAT maps it to another port; A knows only B's private address and a wrong one.
    let mut call = Call::new("10.9.9.9:5000", vec![addr("192.0.2.1:5000")], false);
    call.b_seen = addr("198.51.100.2:6123");
    call.run_for(500_000);
    assert!(!call.a.via_relay(), "direct via the learned address");
    assert_eq!(call.a.peer(), addr("198.51.100.2:6123"));
    assert!(!call.b.via_relay());
}

#[test]
fn a_side_ignores_its_own_checks_looped_back() {
    // Both homes use 192.168.1.2: the caller's check to the callee's host candidate
    // reaches the caller itself. It must not answer itself nor take itself for the peer.
    let mut call = Call::new(B, Vec::new(), false);
    call.direct = false;
    call.run_for(100_000);
    let own: Vec<_> = checks(&mut call.a, paths::FIRST_RETRY_US * 3);
    assert!(!own.is_empty());
    for (_, d) in &own {
        call.a.handle_datagram(call.now, addr(A), d);
    }
    let answers = checks(&mut call.a, call.now);
    assert!(
        answers.iter().all(|(to, _)| *to != addr(A)),
        "no answer to itself"
    );
    assert!(call.a.via_relay());
}

#[test]
fn always_relay_sends_no_check_and_never_goes_direct() {
    let mut call = Call::new(B, Vec::new(), true);
    call.run_for(1_000_000);
    assert!(call.b.via_relay(), "the relaying side stays on the relay");
    assert_eq!(
        call.b.stats().paths.checks_sent,
        0,
        "its address is never sent checks from"
    );
    assert!(call.heard_by_a.len() > 40 && call.heard_by_b.len() > 40);
}

#[test]
fn a_forged_check_moves_nothing() {
    let mut call = Call::new(B, Vec::new(), false);
    call.direct = false;
    call.run_for(200_000);
    // Someone without the call's key nominates their own address to the callee.
    let mut forged = [0u8; crate::path_check::MAX_CHECK_LEN];
    let n = crate::path_check::write_request([3; 12], (true, true), Some(&[0; 32]), &mut forged);
    let attacker = addr("203.0.113.66:4444");
    call.b.handle_datagram(call.now, attacker, &forged[..n]);
    assert!(call.b.via_relay(), "still on the relay");
    assert_eq!(call.b.stats().dropped_auth, 1);
    let out = checks(&mut call.b, call.now);
    assert!(
        out.iter().all(|(to, _)| *to != attacker),
        "no answer, no check to it"
    );
}

#[test]
fn a_peer_that_does_no_checks_is_answered_where_its_packets_come_from() {
    // A client written before the checks sends to the address it was given, answers no STUN
    // and ignores the relay. Fala, offered a relay, starts on it and moves to where the old
    // client's authentic packets come from, as caller and as callee: audio both ways.
    for old in [0, 1] {
        let mut call = Call::with_old(old);
        call.run_for(1_000_000);
        let fala = if old == 0 { &call.b } else { &call.a };
        assert!(
            !fala.via_relay(),
            "old side {old}: Fala answers it straight"
        );
        for (side, heard) in [("a", &call.heard_by_a), ("b", &call.heard_by_b)] {
            assert!(
                heard.len() > 40,
                "old side {old}: {side} heard {}",
                heard.len()
            );
        }
    }
}

#[test]
fn check_answers_are_bounded_per_second() {
    // A call in clear: anyone can make a check. A flood from a spoofed address gets at most
    // CHECK_ANSWERS_PER_SECOND answers a second bounced at it, never one more each.
    let (_, mut b) = strangers(false);
    let victim = addr("198.51.100.66:53");
    let mut buf = [0u8; crate::path_check::MAX_CHECK_LEN];
    let mut answered = 0;
    for i in 0..1000u32 {
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let n = crate::path_check::write_request(id, (true, false), None, &mut buf);
        b.handle_datagram(u64::from(i) * 500, victim, &buf[..n]);
        answered += checks(&mut b, u64::from(i) * 500)
            .iter()
            .filter(|(to, d)| *to == victim && d[..2] == [0x01, 0x01])
            .count();
    }
    // 1 000 requests over half a second.
    assert_eq!(answered, CHECK_ANSWERS_PER_SECOND as usize);
}

#[test]
fn consent_is_per_path_an_advertised_address_gets_no_audio_for_what_came_another_way() {
    // Mallory registered a victim's address and offers her own as a candidate; no relay. Her
    // authentic check from her own address must not send Bob's audio to the victim.
    let victim = addr("198.51.100.66:4000");
    let mallory = addr("203.0.113.5:4000");
    let (x, y) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let (px, py) = (x.public_bytes(), y.public_bytes());
    let mallory_keys = x.derive(Role::Caller, &py, &[]).unwrap();
    let mut bob = MediaSession::new(SessionConfig {
        peer: victim,
        crypto: Some(y.derive(Role::Callee, &px, &[]).unwrap()),
        ssrc: 0xb2,
        first_seq: 1,
        first_timestamp: 0,
        relay: None,
        via_relay: false,
        candidates: vec![mallory],
        controlling: false,
        path_seed: 5,
    });
    let mut buf = [0u8; crate::path_check::MAX_CHECK_LEN];
    let n = crate::path_check::write_request(
        [1; 12],
        (true, false),
        Some(mallory_keys.check_key()),
        &mut buf,
    );
    bob.handle_datagram(1_000, mallory, &buf[..n]);
    for frame in 0..10u64 {
        bob.send_frame(&[3; 40], 960, 0);
        let out = all_transmits(&mut bob, 1_000 + frame * 20_000);
        assert!(
            out.iter().all(|(to, d)| *to != victim || rtp::is_rtcp(d)),
            "audio went to the advertised address"
        );
    }
    assert!(bob.stats().frames_held >= 10);
}
