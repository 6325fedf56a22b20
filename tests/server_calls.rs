//! Every call flow through a real server: accept, decline, busy, cancel, no answer, hang-up
//! from either side, and a peer vanishing while ringing or talking.

mod support;

use std::time::Duration;

use fala_proto::{CallId, ClientMsg, EndReason, ErrorCode, ServerMsg};
use fala_server::{Config, Timeouts};
use support::{Raw, TestServer};

/// Ana calls Bob; returns the call id once both sides know of it.
async fn ring(ana: &mut Raw, bob: &mut Raw) -> CallId {
    ana.send(&ClientMsg::Invite {
        to: "bob".into(),
        commit: Some(serde_bytes::ByteBuf::from(vec![1, 2, 3])),
        candidates: Vec::new(),
        hide_address: false,
    })
    .await;
    let id = match ana.recv().await {
        ServerMsg::Ringing { call_id, peer } => {
            assert_eq!(peer, "bob");
            call_id
        }
        other => panic!("unexpected {other:?}"),
    };
    match bob.recv().await {
        ServerMsg::IncomingCall {
            call_id,
            caller,
            identity,
            commit,
        } => {
            assert_eq!(call_id, id);
            assert_eq!(caller, "ana");
            // The caller's identity, and not yet its address.
            assert_eq!(identity.as_slice(), ana.identity.public());
            assert_eq!(commit.map(|k| k.into_vec()), Some(vec![1u8, 2, 3]));
        }
        other => panic!("unexpected {other:?}"),
    }
    id
}

async fn pair(server: &TestServer) -> (Raw, Raw) {
    let ana = Raw::registered(server.addr, "ana", 5001).await;
    let bob = Raw::registered(server.addr, "bob", 5002).await;
    (ana, bob)
}

/// The callee accepts without a media key, at its registered address, with no candidates.
async fn accept_in_clear(callee: &mut Raw, id: CallId) {
    callee
        .send(&ClientMsg::Accept {
            call_id: id,
            media: None,
            key: None,
            signature: None,
            candidates: Vec::new(),
            hide_address: false,
        })
        .await;
}

/// Sends an invite without a media key.
async fn invite(from: &mut Raw, to: &str) {
    from.send(&ClientMsg::Invite {
        to: to.into(),
        commit: None,
        candidates: Vec::new(),
        hide_address: false,
    })
    .await;
}

/// The next message is an error with this code.
async fn expect_error(raw: &mut Raw, want: ErrorCode) {
    let got = raw.recv().await;
    assert!(
        matches!(&got, ServerMsg::Error { code, .. } if *code == want),
        "expected {want:?}: {got:?}"
    );
}

/// The next message ends a call for this reason.
async fn expect_end_reason(raw: &mut Raw, want: EndReason) {
    let got = raw.recv().await;
    assert!(
        matches!(&got, ServerMsg::CallEnded { reason, .. } if *reason == want),
        "expected {want:?}: {got:?}"
    );
}

fn ended(id: CallId, peer: &str, reason: EndReason) -> ServerMsg {
    ServerMsg::CallEnded {
        call_id: id,
        peer: peer.into(),
        reason,
    }
}

#[tokio::test]
async fn accept_then_caller_hangs_up() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let id = ring(&mut ana, &mut bob).await;
    bob.send(&ClientMsg::Accept {
        call_id: id,
        media: Some("127.0.0.1:6002".parse().unwrap()),
        key: None,
        signature: None,
        candidates: Vec::new(),
        hide_address: false,
    })
    .await;
    match ana.recv().await {
        ServerMsg::CallConnected {
            call_id,
            peer,
            media,
            ..
        } => {
            assert_eq!((call_id, peer.as_str(), media.port()), (id, "bob", 6002));
        }
        other => panic!("unexpected {other:?}"),
    }
    match bob.recv().await {
        ServerMsg::CallConnected {
            call_id,
            peer,
            media,
            identity,
            key,
            signature,
            ..
        } => {
            assert_eq!((call_id, peer.as_str(), media.port()), (id, "ana", 5001));
            assert_eq!(identity.as_slice(), ana.identity.public());
            // Bob accepted without a key: the call is in clear, on both sides.
            assert!(key.is_none() && signature.is_none());
        }
        other => panic!("unexpected {other:?}"),
    }
    ana.send(&ClientMsg::Hangup { call_id: id }).await;
    assert_eq!(ana.recv().await, ended(id, "bob", EndReason::HungUp));
    assert_eq!(bob.recv().await, ended(id, "ana", EndReason::PeerHungUp));
    // Both are free to call again.
    let id2 = ring(&mut ana, &mut bob).await;
    assert_ne!(id, id2);
    server.stop().await;
}

#[tokio::test]
async fn callee_hangs_up() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let id = ring(&mut ana, &mut bob).await;
    accept_in_clear(&mut bob, id).await;
    assert!(
        matches!(ana.recv().await, ServerMsg::CallConnected { media, .. } if media.port() == 5002)
    );
    assert!(matches!(bob.recv().await, ServerMsg::CallConnected { .. }));
    bob.send(&ClientMsg::Hangup { call_id: id }).await;
    assert_eq!(bob.recv().await, ended(id, "ana", EndReason::HungUp));
    assert_eq!(ana.recv().await, ended(id, "bob", EndReason::PeerHungUp));
    server.stop().await;
}

#[tokio::test]
async fn decline() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let id = ring(&mut ana, &mut bob).await;
    bob.send(&ClientMsg::Decline { call_id: id }).await;
    assert_eq!(ana.recv().await, ended(id, "bob", EndReason::Declined));
    assert_eq!(bob.recv().await, ended(id, "ana", EndReason::Declined));
    server.stop().await;
}

#[tokio::test]
async fn busy_when_callee_is_ringing_or_talking() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let mut cris = Raw::registered(server.addr, "cris", 5003).await;
    let id = ring(&mut ana, &mut bob).await;
    invite(&mut cris, "bob").await;
    assert!(
        matches!(cris.recv().await, ServerMsg::CallEnded { reason: EndReason::Busy, peer, .. } if peer == "bob")
    );
    accept_in_clear(&mut bob, id).await;
    ana.recv().await;
    bob.recv().await;
    invite(&mut cris, "ana").await;
    expect_end_reason(&mut cris, EndReason::Busy).await;
    // A caller already in a call cannot start another.
    invite(&mut ana, "cris").await;
    expect_error(&mut ana, ErrorCode::AlreadyInCall).await;
    server.stop().await;
}

#[tokio::test]
async fn caller_cancels_before_answer() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let id = ring(&mut ana, &mut bob).await;
    // The callee cannot cancel, the caller cannot accept: identity is bound to the connection.
    bob.send(&ClientMsg::Cancel { call_id: id }).await;
    expect_error(&mut bob, ErrorCode::UnknownCall).await;
    accept_in_clear(&mut ana, id).await;
    expect_error(&mut ana, ErrorCode::UnknownCall).await;
    ana.send(&ClientMsg::Cancel { call_id: id }).await;
    assert_eq!(ana.recv().await, ended(id, "bob", EndReason::Cancelled));
    assert_eq!(bob.recv().await, ended(id, "ana", EndReason::Cancelled));
    // Accepting a cancelled call is refused.
    accept_in_clear(&mut bob, id).await;
    expect_error(&mut bob, ErrorCode::UnknownCall).await;
    server.stop().await;
}

#[tokio::test]
async fn a_third_party_cannot_touch_a_call() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let mut eve = Raw::registered(server.addr, "eve", 5009).await;
    let id = ring(&mut ana, &mut bob).await;
    for msg in [
        ClientMsg::Accept {
            call_id: id,
            media: None,
            key: None,
            signature: None,
            candidates: Vec::new(),
            hide_address: false,
        },
        ClientMsg::Decline { call_id: id },
        ClientMsg::Cancel { call_id: id },
        ClientMsg::Hangup { call_id: id },
    ] {
        eve.send(&msg).await;
        assert!(matches!(
            eve.recv().await,
            ServerMsg::Error {
                code: ErrorCode::UnknownCall,
                ..
            }
        ));
    }
    accept_in_clear(&mut bob, id).await;
    assert!(matches!(ana.recv().await, ServerMsg::CallConnected { .. }));
    server.stop().await;
}

#[tokio::test]
async fn self_call_and_unknown_name_get_clear_errors() {
    let server = TestServer::start(Config::default()).await;
    let mut ana = Raw::registered(server.addr, "ana", 5001).await;
    invite(&mut ana, "ANA").await;
    expect_error(&mut ana, ErrorCode::SelfCall).await;
    invite(&mut ana, "ghost").await;
    match ana.recv().await {
        ServerMsg::Error {
            code: ErrorCode::UserNotFound,
            message,
            ..
        } => assert!(message.contains("ghost")),
        other => panic!("unexpected {other:?}"),
    }
    let mut anon = Raw::hello(server.addr).await;
    invite(&mut anon, "ana").await;
    expect_error(&mut anon, ErrorCode::NotRegistered).await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn no_answer_after_ring_timeout() {
    let config = Config {
        timeouts: Timeouts {
            ring: Duration::from_secs(30),
            idle: Duration::from_secs(600),
            ..Timeouts::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let (mut ana, mut bob) = pair(&server).await;
    let start = tokio::time::Instant::now();
    let id = ring(&mut ana, &mut bob).await;
    let long = Duration::from_secs(120);
    assert_eq!(
        ana.recv_within(long).await,
        ended(id, "bob", EndReason::NoAnswer)
    );
    assert_eq!(bob.recv().await, ended(id, "ana", EndReason::NoAnswer));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn peer_dropping_while_ringing_is_reported_at_once() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let id = ring(&mut ana, &mut bob).await;
    drop(bob);
    assert_eq!(ana.recv().await, ended(id, "bob", EndReason::PeerLost));
    let (mut cris, mut dan) = (
        Raw::registered(server.addr, "cris", 1).await,
        Raw::registered(server.addr, "dan", 2).await,
    );
    invite(&mut cris, "dan").await;
    let id = match cris.recv().await {
        ServerMsg::Ringing { call_id, .. } => call_id,
        other => panic!("unexpected {other:?}"),
    };
    assert!(matches!(dan.recv().await, ServerMsg::IncomingCall { .. }));
    drop(cris);
    assert_eq!(dan.recv().await, ended(id, "cris", EndReason::PeerLost));
    server.stop().await;
}

#[tokio::test]
async fn peer_dropping_in_a_call_is_reported_at_once() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let id = ring(&mut ana, &mut bob).await;
    accept_in_clear(&mut bob, id).await;
    ana.recv().await;
    bob.recv().await;
    let t = std::time::Instant::now();
    drop(ana);
    assert_eq!(bob.recv().await, ended(id, "ana", EndReason::PeerLost));
    assert!(t.elapsed() < Duration::from_secs(1));
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn heartbeat_expiry_frees_the_name() {
    let config = Config {
        timeouts: Timeouts {
            idle: Duration::from_secs(30),
            ..Timeouts::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut silent = Raw::registered(server.addr, "quiet", 5000).await;
    let seen = vec![silent.recv_within(Duration::from_secs(120)).await];
    assert_eq!(silent.try_recv().await, None);
    assert!(
        matches!(
            seen.as_slice(),
            [ServerMsg::Error {
                code: ErrorCode::IdleTimeout,
                ..
            }]
        ),
        "{seen:?}"
    );
    let _again = Raw::registered_as(server.addr, "quiet", 5001, &silent.identity).await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pinging_client_stays_registered() {
    let server = TestServer::start(Config::default()).await;
    let mut alive = Raw::registered(server.addr, "alive", 5000).await;
    for n in 0..10 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        alive.send(&ClientMsg::Ping { nonce: n }).await;
        assert_eq!(alive.recv().await, ServerMsg::Pong { nonce: n });
    }
    let mut other = Raw::hello(server.addr).await;
    assert!(matches!(
        other.register("alive", 1).await,
        ServerMsg::Error {
            code: ErrorCode::NameOwned,
            ..
        }
    ));
    server.stop().await;
}

#[tokio::test]
async fn echo_user_answers_at_once_and_is_never_busy() {
    let config = Config {
        echo: Some(fala_server::EchoConfig::default()),
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let (mut ana, mut bob) = pair(&server).await;
    ana.send(&ClientMsg::Lookup {
        name: "Echo".into(),
    })
    .await;
    match ana.recv().await {
        ServerMsg::UserFound { user } => {
            assert_eq!(user.name, "echo");
            assert_eq!(user.identity.len(), 32);
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut ids = Vec::new();
    for c in [&mut ana, &mut bob] {
        c.send(&ClientMsg::Invite {
            to: "echo".into(),
            commit: Some(serde_bytes::ByteBuf::from(vec![9u8; 32])),
            candidates: Vec::new(),
            hide_address: false,
        })
        .await;
        let id = match c.recv().await {
            ServerMsg::Ringing { call_id, .. } => call_id,
            other => panic!("unexpected {other:?}"),
        };
        match c.recv().await {
            ServerMsg::CallConnected {
                call_id,
                peer,
                key,
                media,
                ..
            } => {
                assert_eq!((call_id, peer.as_str()), (id, "echo"));
                // A service advertises the address the caller reached the server on.
                assert_eq!(media.ip(), std::net::Ipv4Addr::LOCALHOST);
                assert_ne!(media.port(), 0);
                assert_eq!(
                    key.map(|k| k.len()),
                    Some(32),
                    "the echo takes part in the key exchange"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        ids.push(id);
    }
    ana.send(&ClientMsg::Hangup { call_id: ids[0] }).await;
    assert_eq!(ana.recv().await, ended(ids[0], "echo", EndReason::HungUp));
    // Nobody can take the echo's name.
    let mut c = Raw::hello(server.addr).await;
    assert!(matches!(
        c.register("ECHO", 1).await,
        ServerMsg::Error {
            code: ErrorCode::NameOwned,
            ..
        }
    ));
    server.stop().await;
}

/// Bob blocks Ana: her invites end at once as declined and Bob is not disturbed; once he
/// unblocks her, she rings through again.
#[tokio::test]
async fn a_blocked_caller_is_declined_without_ringing() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    bob.send(&ClientMsg::Block { name: "ANA".into() }).await;
    // Bob's next message proves the block was handled before Ana's invite.
    bob.send(&ClientMsg::Ping { nonce: 1 }).await;
    assert_eq!(bob.recv().await, ServerMsg::Pong { nonce: 1 });
    invite(&mut ana, "bob").await;
    match ana.recv().await {
        ServerMsg::CallEnded { reason, peer, .. } => {
            assert_eq!((reason, peer.as_str()), (EndReason::Declined, "bob"))
        }
        other => panic!("unexpected {other:?}"),
    }
    bob.send(&ClientMsg::Ping { nonce: 2 }).await;
    assert_eq!(
        bob.recv().await,
        ServerMsg::Pong { nonce: 2 },
        "bob was not told of the blocked call"
    );
    bob.send(&ClientMsg::Unblock { name: "ana".into() }).await;
    bob.send(&ClientMsg::Ping { nonce: 3 }).await;
    assert_eq!(bob.recv().await, ServerMsg::Pong { nonce: 3 });
    ring(&mut ana, &mut bob).await;
    server.stop().await;
}

/// Calling the same person again and again is limited: three invites a minute, then
/// `rate_limited` until the minute has passed.
#[tokio::test(start_paused = true)]
async fn calling_the_same_person_again_and_again_is_limited() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let _carol = Raw::registered(server.addr, "carol", 5003).await;
    for _ in 0..3 {
        let id = ring(&mut ana, &mut bob).await;
        ana.send(&ClientMsg::Cancel { call_id: id }).await;
        expect_end_reason(&mut ana, EndReason::Cancelled).await;
        expect_end_reason(&mut bob, EndReason::Cancelled).await;
        // The invite budget of a connection (one every 2 s) is not what this tests.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    invite(&mut ana, "bob").await;
    expect_error(&mut ana, ErrorCode::RateLimited).await;
    // Someone else can still be called.
    invite(&mut ana, "carol").await;
    assert!(matches!(ana.recv().await, ServerMsg::Ringing { .. }));
    server.stop().await;
}

/// An encrypted call: the caller commits, the callee answers with its signed key, and only
/// then does the caller reveal its own, which the server passes on to the callee. Nobody else
/// may reveal, and a caller that never reveals ends the call at the ring timeout.
#[tokio::test]
async fn the_callers_key_is_revealed_only_after_the_callees() {
    let config = Config {
        timeouts: Timeouts {
            ring: Duration::from_secs(2),
            ..Timeouts::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let (mut ana, mut bob) = pair(&server).await;
    let bytes = |b: u8, n: usize| Some(serde_bytes::ByteBuf::from(vec![b; n]));
    for never_reveals in [false, true] {
        ana.send(&ClientMsg::Invite {
            to: "bob".into(),
            commit: bytes(1, 32),
            candidates: Vec::new(),
            hide_address: false,
        })
        .await;
        let id = match ana.recv().await {
            ServerMsg::Ringing { call_id, .. } => call_id,
            other => panic!("unexpected {other:?}"),
        };
        assert!(matches!(
            bob.recv().await,
            ServerMsg::IncomingCall { commit: Some(c), .. } if c.as_slice() == [1; 32]
        ));
        bob.send(&ClientMsg::Accept {
            call_id: id,
            media: None,
            key: bytes(2, 32),
            signature: bytes(3, 64),
            candidates: Vec::new(),
            hide_address: false,
        })
        .await;
        match ana.recv().await {
            ServerMsg::CallConnected {
                key,
                signature,
                identity,
                ..
            } => {
                assert_eq!(key, bytes(2, 32));
                assert_eq!(signature, bytes(3, 64));
                assert_eq!(identity.as_slice(), bob.identity.public());
            }
            other => panic!("unexpected {other:?}"),
        }
        // Bob hears nothing until Ana reveals (his next message is the answer to this), and
        // he cannot reveal in her place.
        bob.send(&ClientMsg::Reveal {
            call_id: id,
            key: serde_bytes::ByteBuf::from(vec![9; 32]),
            signature: serde_bytes::ByteBuf::from(vec![9; 64]),
        })
        .await;
        expect_error(&mut bob, ErrorCode::UnknownCall).await;
        if never_reveals {
            expect_end_reason(&mut ana, EndReason::Cancelled).await;
            expect_end_reason(&mut bob, EndReason::PeerLost).await;
            continue;
        }
        ana.send(&ClientMsg::Reveal {
            call_id: id,
            key: serde_bytes::ByteBuf::from(vec![4; 32]),
            signature: serde_bytes::ByteBuf::from(vec![5; 64]),
        })
        .await;
        match bob.recv().await {
            ServerMsg::CallConnected {
                key,
                signature,
                media,
                identity,
                ..
            } => {
                assert_eq!(key, bytes(4, 32));
                assert_eq!(signature, bytes(5, 64));
                assert_eq!(media.port(), 5001);
                assert_eq!(identity.as_slice(), ana.identity.public());
            }
            other => panic!("unexpected {other:?}"),
        }
        // Revealing twice is not a thing.
        ana.send(&ClientMsg::Reveal {
            call_id: id,
            key: serde_bytes::ByteBuf::from(vec![4; 32]),
            signature: serde_bytes::ByteBuf::from(vec![5; 64]),
        })
        .await;
        expect_error(&mut ana, ErrorCode::UnknownCall).await;
        ana.send(&ClientMsg::Hangup { call_id: id }).await;
        expect_end_reason(&mut ana, EndReason::HungUp).await;
        expect_end_reason(&mut bob, EndReason::PeerHungUp).await;
    }
    server.stop().await;
}

/// Errors name the request they answer and, for a call, its id; at shutdown every call ends
/// with `server_shutdown` on both sides before the `shutdown` notice.
#[tokio::test]
async fn errors_name_their_request_and_shutdown_ends_calls_first() {
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    ana.send(&ClientMsg::Hangup {
        call_id: CallId(77),
    })
    .await;
    match ana.recv().await {
        ServerMsg::Error {
            code: ErrorCode::UnknownCall,
            request,
            call_id,
            ..
        } => {
            assert_eq!(request.as_deref(), Some("hangup"));
            assert_eq!(call_id, Some(CallId(77)));
        }
        other => panic!("unexpected {other:?}"),
    }
    invite(&mut ana, "nobody").await;
    match ana.recv().await {
        ServerMsg::Error {
            code: ErrorCode::UserNotFound,
            request,
            call_id: None,
            ..
        } => assert_eq!(request.as_deref(), Some("invite")),
        other => panic!("unexpected {other:?}"),
    }
    let id = ring(&mut ana, &mut bob).await;
    accept_in_clear(&mut bob, id).await;
    assert!(matches!(ana.recv().await, ServerMsg::CallConnected { .. }));
    assert!(matches!(bob.recv().await, ServerMsg::CallConnected { .. }));
    server.stop().await;
    for (side, peer) in [(&mut ana, "bob"), (&mut bob, "ana")] {
        let seen = side.until_closed().await;
        assert_eq!(
            seen,
            vec![
                ended(id, peer, EndReason::ServerShutdown),
                ServerMsg::Shutdown {
                    message: "the server is shutting down".into()
                }
            ]
        );
    }
}

/// An accepted call gets a relay leg for each side on the server's UDP port: datagrams with
/// a leg's token reach the other side (at the address it last sent from) and nothing else
/// does: no token, a made-up token, or a token after the call ended.
// Multi-threaded: the test's own sockets block while the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_forwards_between_the_legs_of_a_call_only() {
    use std::net::UdpSocket;
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let id = ring(&mut ana, &mut bob).await;
    accept_in_clear(&mut bob, id).await;
    let relay_of = |m: ServerMsg| match m {
        ServerMsg::CallConnected {
            relay: Some(relay), ..
        } => relay,
        other => panic!("no relay offered: {other:?}"),
    };
    let for_ana = relay_of(ana.recv().await);
    let for_bob = relay_of(bob.recv().await);
    assert_eq!(for_ana.media, for_bob.media, "one relay address");
    assert_eq!(
        for_ana.media.port(),
        server.addr.port(),
        "the server's UDP port"
    );
    assert_ne!(for_ana.token, for_bob.token);
    assert!(for_ana.token.len() == 8 && (0x40..=0x4f).contains(&for_ana.token[0]));

    let relay_addr = std::net::SocketAddr::from(for_ana.media.0);
    let socket = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    };
    let (ana_udp, bob_udp, eve_udp) = (socket(), socket(), socket());
    let with_token = |token: &[u8], body: &[u8]| [token, body].concat();
    let received = |s: &UdpSocket| {
        let mut buf = [0u8; 1500];
        s.recv_from(&mut buf)
            .ok()
            .map(|(n, from)| (buf[..n].to_vec(), from))
    };
    // Bob says something first (so the relay knows where he is), retrying while the UDP
    // port comes up; then Ana's datagram reaches him, token stripped, from the relay.
    let rtp_like = [0x80u8, 111, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4, 42, 42];
    let mut reached = None;
    for _ in 0..20 {
        bob_udp
            .send_to(&with_token(&for_bob.token, &rtp_like), relay_addr)
            .unwrap();
        ana_udp
            .send_to(&with_token(&for_ana.token, &rtp_like), relay_addr)
            .unwrap();
        reached = received(&bob_udp);
        if reached.is_some() {
            break;
        }
    }
    let (got, from) = reached.expect("Ana's datagram reached Bob through the relay");
    assert_eq!(got, rtp_like);
    assert_eq!(from, relay_addr);
    // And Bob's reaches Ana.
    bob_udp
        .send_to(&with_token(&for_bob.token, b"\x80hello bob"), relay_addr)
        .unwrap();
    let mut from_bob = None;
    while let Some((got, _)) = received(&ana_udp) {
        if got == b"\x80hello bob" {
            from_bob = Some(got);
            break;
        }
    }
    assert!(from_bob.is_some(), "Bob's datagram reached Ana");
    // Eve, with a token she made up, without one, or with a copy of nothing: Bob gets none of it.
    while received(&bob_udp).is_some() {}
    eve_udp
        .send_to(&with_token(&[0x41; 8], &rtp_like), relay_addr)
        .unwrap();
    eve_udp.send_to(&rtp_like, relay_addr).unwrap();
    assert!(
        received(&bob_udp).is_none(),
        "a stranger's datagram got through"
    );
    // The call ends: Ana's token is dead.
    ana.send(&ClientMsg::Hangup { call_id: id }).await;
    expect_end_reason(&mut ana, EndReason::HungUp).await;
    ana_udp
        .send_to(&with_token(&for_ana.token, &rtp_like), relay_addr)
        .unwrap();
    assert!(
        received(&bob_udp).is_none(),
        "forwarded after the call ended"
    );
    server.stop().await;
}

/// Each side's candidates reach the other side only in `call_connected` (never in
/// `incoming_call`); a side that hides its addresses is shown as the relay, without
/// candidates, while it still learns the other side's; more than 8 candidates are refused.
#[tokio::test]
async fn candidates_go_to_the_peer_at_connect_and_a_hidden_side_is_shown_as_the_relay() {
    use fala_proto::Candidate;
    let server = TestServer::start(Config::default()).await;
    let (mut ana, mut bob) = pair(&server).await;
    let cand = |s: &str| Candidate(s.parse().unwrap());
    let too_many: Vec<_> = (1..=9)
        .map(|i| cand(&format!("198.51.100.{i}:5000")))
        .collect();
    ana.send(&ClientMsg::Invite {
        to: "bob".into(),
        commit: None,
        candidates: too_many,
        hide_address: false,
    })
    .await;
    match ana.recv().await {
        ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::InvalidMessage),
        other => panic!("9 candidates taken: {other:?}"),
    }
    ana.send(&ClientMsg::Invite {
        to: "bob".into(),
        commit: None,
        candidates: vec![cand("198.51.100.7:6001"), cand("[2001:db8::7]:6001")],
        hide_address: true,
    })
    .await;
    assert!(matches!(ana.recv().await, ServerMsg::Ringing { .. }));
    let call_id = match bob.recv().await {
        // No address of the caller's before the callee accepts.
        ServerMsg::IncomingCall { call_id, .. } => call_id,
        other => panic!("unexpected {other:?}"),
    };
    bob.send(&ClientMsg::Accept {
        call_id,
        media: None,
        key: None,
        signature: None,
        candidates: vec![cand("203.0.113.9:7001")],
        hide_address: false,
    })
    .await;
    let connected = |m: ServerMsg| match m {
        ServerMsg::CallConnected {
            media,
            relay: Some(relay),
            candidates,
            ..
        } => (media, relay, candidates),
        other => panic!("unexpected {other:?}"),
    };
    let (bob_media_for_ana, _, bob_candidates) = connected(ana.recv().await);
    assert_eq!(
        bob_media_for_ana.port(),
        5002,
        "Bob does not hide: his address"
    );
    assert_eq!(bob_candidates, vec![cand("203.0.113.9:7001")]);
    let (ana_media_for_bob, bobs_relay, ana_candidates) = connected(bob.recv().await);
    assert_eq!(
        ana_media_for_bob, bobs_relay.media,
        "Ana hides: Bob sees the relay"
    );
    assert!(ana_candidates.is_empty(), "and none of her candidates");
}

/// Closes a raw client's connection with a reset, as a path that broke does (its client gave
/// it up for a new one): not the orderly close of a client that quit.
fn reset(client: Raw) {
    socket2::SockRef::from(&client.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
}

async fn answer_in_clear(ana: &mut Raw, bob: &mut Raw, id: CallId) {
    accept_in_clear(bob, id).await;
    assert!(matches!(ana.recv().await, ServerMsg::CallConnected { .. }));
    assert!(matches!(bob.recv().await, ServerMsg::CallConnected { .. }));
}

/// Registers `old`'s identity again on a new connection, asking for `call` back.
async fn come_back(
    server: &TestServer,
    old: &fala_proto::identity::Identity,
    call: Option<CallId>,
) -> (Raw, ServerMsg) {
    let mut again = Raw::hello_as(server.addr, old).await;
    let mut register = again.register_msg("ana", support::media(5003));
    if let ClientMsg::Register { resume, .. } = &mut register {
        *resume = call;
    }
    again.send(&register).await;
    let reply = again.recv().await;
    (again, reply)
}

#[tokio::test]
async fn a_call_waits_for_a_side_whose_connection_broke_and_goes_on_when_it_comes_back() {
    let grace = Duration::from_secs(2);
    let config = Config {
        timeouts: Timeouts {
            resume: grace,
            ..Timeouts::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let (mut ana, mut bob) = pair(&server).await;
    let id = ring(&mut ana, &mut bob).await;
    answer_in_clear(&mut ana, &mut bob, id).await;
    let identity = fala_proto::identity::Identity::from_seed(ana.identity.seed());

    // Ana's network changed: her old connection is still open on the server (nothing told
    // it otherwise) when she registers again from the new one, asking for the call.
    let (ana2, reply) = come_back(&server, &identity, Some(id)).await;
    assert!(
        matches!(reply, ServerMsg::Registered { call: Some(c), .. } if c == id),
        "{reply:?}"
    );
    assert!(matches!(
        ana.recv().await,
        ServerMsg::Error {
            code: ErrorCode::Replaced,
            ..
        }
    ));
    // Without resume, the same identity is still refused while online.
    let mut twin = Raw::hello_as(server.addr, &identity).await;
    assert!(matches!(
        twin.register("ana", 5004).await,
        ServerMsg::Error {
            code: ErrorCode::NameTaken,
            ..
        }
    ));

    // Now the new connection breaks (a reset): the call is held, Bob hears nothing yet.
    reset(ana2);
    let quiet = tokio::time::timeout(grace / 2, bob.recv()).await;
    assert!(
        quiet.is_err(),
        "bob is not told while ana may come back: {quiet:?}"
    );
    let (mut ana3, reply) = come_back(&server, &identity, Some(id)).await;
    assert!(
        matches!(reply, ServerMsg::Registered { call: Some(c), .. } if c == id),
        "{reply:?}"
    );
    // The call is whole again: a hang-up from the new connection ends it for Bob.
    ana3.send(&ClientMsg::Hangup { call_id: id }).await;
    assert_eq!(bob.recv().await, ended(id, "ana", EndReason::PeerHungUp));
    assert_eq!(ana3.recv().await, ended(id, "bob", EndReason::HungUp));

    // A broken connection that never comes back: Bob hears `peer_lost` after the grace,
    // and the name is free again.
    let id = ring(&mut ana3, &mut bob).await;
    answer_in_clear(&mut ana3, &mut bob, id).await;
    let lost_at = std::time::Instant::now();
    reset(ana3);
    assert_eq!(
        bob.recv_within(grace * 3).await,
        ended(id, "ana", EndReason::PeerLost)
    );
    let waited = lost_at.elapsed();
    assert!(waited >= grace && waited < grace * 2, "{waited:?}");
    let (_ana4, reply) = come_back(&server, &identity, Some(id)).await;
    assert!(
        matches!(reply, ServerMsg::Registered { call: None, .. }),
        "the call is not there any more: {reply:?}"
    );
    server.stop().await;
}
