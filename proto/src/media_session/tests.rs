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
        })
    };
    (session(B, ka, 0xa1), session(A, kb, 0xb2))
}

/// Everything `from` has to send at `now`, with where it goes.
fn all_transmits(from: &mut MediaSession, now: u64) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = from.poll_transmit(now) {
        out.push((t.destination, t.contents.to_vec()));
    }
    out
}

/// Everything `from` has to send at `now`.
fn transmits(from: &mut MediaSession, now: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(t) = from.poll_transmit(now) {
        out.push(t.contents.to_vec());
    }
    out
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
        assert_eq!(a.poll_timeout(), 1_000_000 + REPORT_INTERVAL_US);
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

/// Offered a relay but sending directly, each report also goes through the relay (so the
/// relay knows where to forward a relaying peer's packets), and the peer's packets are taken
/// from either address.
#[test]
fn a_direct_session_with_a_relay_also_reports_through_it() {
    let mut s = relayed_session(false);
    let out = all_transmits(&mut s, 0);
    let to: Vec<_> = out.iter().map(|(to, _)| *to).collect();
    assert_eq!(to, [addr(B), addr(RELAY)]);
    assert_eq!(&out[1].1[8..], &out[0].1[..]);
    let (_, mut peer) = strangers(false);
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
