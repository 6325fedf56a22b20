//! Feeds arbitrary bytes to every media parser a datagram meets: RTP, RTCP, RED, STUN, the
//! connectivity checks, and the whole media session (in clear and encrypted, with a relay leg
//! and the peer's candidates) as a receiver would take them in, datagram by datagram, from the
//! peer, the relay or a stranger, with the events it hands out read to the end.
#![no_main]

use fala_proto::media_crypto::{KeyPair, Role};
use fala_proto::media_session::{MediaSession, RelayLeg, SessionConfig, SessionEvent};
use fala_proto::{path_check, red, rtcp, rtp, stun};
use libfuzzer_sys::fuzz_target;

fn session(encrypted: bool) -> MediaSession {
    let crypto = encrypted.then(|| {
        let mine = KeyPair::from_secret_bytes([1; 32]);
        let theirs = KeyPair::from_secret_bytes([2; 32]);
        mine.derive(Role::Callee, &theirs.public_bytes(), &[]).unwrap()
    });
    MediaSession::new(SessionConfig {
        peer: "127.0.0.1:4000".parse().unwrap(),
        crypto,
        ssrc: 1,
        first_seq: 1,
        first_timestamp: 1,
        relay: Some(RelayLeg {
            addr: "127.0.0.1:7400".parse().unwrap(),
            token: [0x40, 1, 2, 3, 4, 5, 6, 7],
        }),
        via_relay: false,
        candidates: vec!["10.0.0.2:4000".parse().unwrap()],
        controlling: encrypted,
        path_seed: 3,
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = rtp::parse(data);
    let _ = rtcp::parse(data);
    let _ = red::parse(data);
    let mut answer = [0u8; stun::MAX_RESPONSE_LEN];
    let _ = stun::answer_binding(data, "10.0.0.1:9".parse().unwrap(), &mut answer);
    let _ = stun::binding_response_address(data, [0; 12]);
    let _ = path_check::parse(data, None);
    let _ = path_check::parse(data, Some(&[9; 32]));
    // The first byte says how the rest is cut into datagrams.
    let cut = data.first().map_or(1, |b| usize::from(*b) % 300 + 1);
    for encrypted in [false, true] {
        let mut s = session(encrypted);
        let senders = ["127.0.0.1:4000", "127.0.0.1:7400", "10.0.0.2:4000", "192.0.2.9:1"];
        for (i, datagram) in data.chunks(cut).enumerate() {
            // Each datagram's last byte says who sent it.
            let who = datagram.last().map_or(0, |b| usize::from(*b) % senders.len());
            let from = senders[who].parse().unwrap();
            s.handle_datagram(i as u64 * 20_000, from, datagram);
            while let Some(ev) = s.poll_event() {
                if let SessionEvent::Media(p) = ev {
                    let _ = p.payload.len();
                }
            }
            while s.poll_transmit(i as u64 * 20_000).is_some() {}
        }
    }
});
