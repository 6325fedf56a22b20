//! Feeds arbitrary bytes to every media parser a datagram meets: RTP, RTCP, RED, STUN, and the whole
//! media session (in clear and encrypted) as a receiver would take them in, datagram by
//! datagram, with the events it hands out read to the end.
#![no_main]

use fala_proto::media_crypto::{KeyPair, Role};
use fala_proto::media_session::{MediaSession, SessionConfig, SessionEvent};
use fala_proto::{red, rtcp, rtp, stun};
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
        relay: None,
        via_relay: false,
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = rtp::parse(data);
    let _ = rtcp::parse(data);
    let _ = red::parse(data);
    let mut answer = [0u8; stun::MAX_RESPONSE_LEN];
    let _ = stun::answer_binding(data, "10.0.0.1:9".parse().unwrap(), &mut answer);
    let _ = stun::binding_response_address(data, [0; 12]);
    // The first byte says how the rest is cut into datagrams.
    let cut = data.first().map_or(1, |b| usize::from(*b) % 300 + 1);
    for encrypted in [false, true] {
        let mut s = session(encrypted);
        let from = "127.0.0.1:4000".parse().unwrap();
        for (i, datagram) in data.chunks(cut).enumerate() {
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
