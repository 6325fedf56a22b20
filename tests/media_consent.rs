//! A caller who lies about its media address: the real `fala answer` sends nothing there but
//! small probes until something authentic comes back from that address, and audio as soon
//! as it does.

mod support;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fala_proto::call_keys::CallerKeys;
use fala_proto::media_crypto::RTCP_OVERHEAD;
use fala_proto::{rtcp, rtp, ClientMsg, ServerMsg};
use fala_server::Config;
use serde_bytes::ByteBuf;
use support::audio::{speech_wav, temp_path};
use support::{finish, Raw, TestServer};

/// What arrived at a socket in `window`: (RTP datagrams, RTCP datagrams, largest RTCP size).
fn count_arrivals(socket: &UdpSocket, window: Duration) -> (usize, usize, usize) {
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let (mut media, mut reports, mut largest) = (0, 0, 0);
    let mut buf = [0u8; 2048];
    let until = Instant::now() + window;
    while Instant::now() < until {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if rtp::is_rtcp(&buf[..n]) {
                reports += 1;
                largest = largest.max(n);
            } else {
                media += 1;
            }
        }
    }
    (media, reports, largest)
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

    // Two seconds of Bob's call: the victim gets small reports only, never audio.
    let (media, probes, largest) = count_arrivals(&victim, Duration::from_secs(2));
    eprintln!("before an answer: {media} RTP, {probes} RTCP (largest {largest} bytes)");
    assert_eq!(media, 0, "audio went to an address that never answered");
    // One a frame for half a second, then ten a second.
    assert!((25..=45).contains(&probes), "{probes} probes in 2 s");
    assert!(largest <= 100, "a probe of {largest} bytes");

    // The address answers with an authentic report (it holds the call's keys): audio flows.
    let report = rtcp::Report {
        ssrc: 0x5eed,
        sender: None,
        block: None,
    };
    let mut buf = [0u8; rtcp::MAX_REPORT_LEN + RTCP_OVERHEAD];
    let len = report.write(&mut buf).unwrap();
    let len = keys.encrypt_rtcp(&mut buf, len, 1).unwrap();
    victim.send_to(&buf[..len], bob_media.to_string()).unwrap();
    let (media, _, _) = count_arrivals(&victim, Duration::from_secs(1));
    eprintln!("after an answer: {media} RTP in 1 s");
    // Speech at 50 packets a second (fewer in its pauses, with DTX).
    assert!(media >= 15, "only {media} RTP packets after consent");

    rt.block_on(mallory.send(&ClientMsg::Hangup { call_id }));
    let bob = finish(bob, Duration::from_secs(20));
    assert!(bob.status.success(), "{}", support::stderr(&bob));
    rt.block_on(server.stop());
}
