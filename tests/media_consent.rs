//! A caller who lies about its media address: the real `fala answer` sends nothing there but
//! small, paced connectivity checks (its probes go through the relay) until that address
//! answers a check authentically and nominates itself, and audio as soon as it does.

mod support;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fala_proto::call_keys::CallerKeys;
use fala_proto::{path_check, rtp, ClientMsg, ServerMsg};
use fala_server::Config;
use serde_bytes::ByteBuf;
use support::audio::{speech_wav, temp_path};
use support::{finish, Raw, TestServer};

/// What arrived at a socket in `window`.
#[derive(Debug, Default)]
struct Arrivals {
    rtp: usize,
    rtcp: usize,
    /// Connectivity checks (STUN), and the last one.
    checks: usize,
    last_check: Vec<u8>,
    largest: usize,
}

fn count_arrivals(socket: &UdpSocket, window: Duration) -> Arrivals {
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut got = Arrivals::default();
    let mut buf = [0u8; 2048];
    let until = Instant::now() + window;
    while Instant::now() < until {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            got.largest = got.largest.max(n);
            if fala_proto::stun::is_stun(&buf[..n]) {
                got.checks += 1;
                got.last_check = buf[..n].to_vec();
            } else if rtp::is_rtcp(&buf[..n]) {
                got.rtcp += 1;
            } else {
                got.rtp += 1;
            }
        }
    }
    got
}

#[test]
fn a_false_media_address_gets_only_probes_until_it_answers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(TestServer::start(Config::default()));
    let addr = server.addr.to_string();
    // The third party whose address Mallory gives as hers.
    let victim = UdpSocket::bind("127.0.0.1:0").unwrap();
    let victim_port = victim.local_addr().unwrap().port();

    let out = temp_path("consent-bob.wav");
    let args = [
        "answer",
        "--name",
        "bob",
        "--server",
        &addr,
        "--input",
        speech_wav().to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--plain",
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fala"));
    support::person_config_dir(&mut cmd, &args);
    let bob = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Mallory registers the victim's address as her media address and calls Bob, with an
    // honest key agreement (she is a real user; only her address is a lie).
    let (mut mallory, keys, bob_media, call_id) = rt.block_on(async {
        let mut mallory = Raw::registered(server.addr, "mallory", victim_port).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            mallory
                .send(&ClientMsg::Lookup { name: "bob".into() })
                .await;
            if matches!(mallory.recv().await, ServerMsg::UserFound { .. }) {
                break;
            }
            assert!(Instant::now() < deadline, "bob never registered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caller = CallerKeys::generate().unwrap();
        mallory
            .send(&ClientMsg::Invite {
                to: "bob".into(),
                commit: Some(ByteBuf::from(caller.commitment().to_vec())),
                candidates: Vec::new(),
                hide_address: false,
            })
            .await;
        let connected = mallory
            .recv_until(|m| matches!(m, ServerMsg::CallConnected { .. }))
            .await;
        let ServerMsg::CallConnected {
            call_id,
            media,
            identity,
            key: Some(key),
            signature: Some(signature),
            ..
        } = connected
        else {
            panic!("not an encrypted call: {connected:?}");
        };
        let (keys, reveal) = caller
            .complete(&mallory.identity, call_id, &identity, (&key, &signature))
            .unwrap();
        mallory
            .send(&ClientMsg::Reveal {
                call_id,
                key: ByteBuf::from(reveal.key.to_vec()),
                signature: ByteBuf::from(reveal.signature.to_vec()),
            })
            .await;
        (mallory, keys, media, call_id)
    });

    // Two seconds of Bob's call: the victim gets a few small checks only, never audio (Bob
    // talks through the relay meanwhile).
    let before = count_arrivals(&victim, Duration::from_secs(2));
    eprintln!("before an answer: {before:?}");
    assert_eq!(
        before.rtp, 0,
        "audio went to an address that never answered"
    );
    assert_eq!(before.rtcp, 0, "probes go through the relay");
    // At 0, 0.1, 0.3, 0.7 and 1.5 s.
    assert!(
        (3..=8).contains(&before.checks),
        "{} checks in 2 s",
        before.checks
    );
    assert!(before.largest <= 96, "a check of {} bytes", before.largest);

    // The address answers a check (it holds the call's keys) and, as the caller, nominates
    // itself: audio flows there.
    let key = keys.check_key();
    let Ok(path_check::Check::Request { id, .. }) =
        path_check::parse(&before.last_check, Some(key))
    else {
        panic!("not a check keyed for the call");
    };
    let bob_addr: std::net::SocketAddr = bob_media.to_string().parse().unwrap();
    let mut buf = [0u8; path_check::MAX_CHECK_LEN];
    let n = path_check::write_response(id, bob_addr, Some(key), &mut buf);
    victim.send_to(&buf[..n], bob_addr).unwrap();
    let n = path_check::write_request([7; 12], (true, true), Some(key), &mut buf);
    victim.send_to(&buf[..n], bob_addr).unwrap();
    let after = count_arrivals(&victim, Duration::from_secs(1));
    eprintln!("after an answer: {after:?}");
    // Speech at 50 packets a second (fewer in its pauses, with DTX).
    assert!(
        after.rtp >= 15,
        "only {} RTP packets after consent",
        after.rtp
    );

    rt.block_on(mallory.send(&ClientMsg::Hangup { call_id }));
    let bob = finish(bob, Duration::from_secs(20));
    // Mallory never sent Bob any audio: his call ends as one that carried none.
    let err = support::stderr(&bob);
    assert!(
        !bob.status.success() && err.contains("carried no audio"),
        "{err}"
    );
    rt.block_on(server.stop());
}
