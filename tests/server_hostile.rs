//! Hostile input: the offender gets a clear error (and is closed where it cannot be served),
//! everyone else on the same server keeps working, and the server never stops.

mod support;

use std::time::Duration;

use fala_proto::{ClientMsg, ErrorCode, ServerMsg, PROTOCOL_VERSION};
use fala_server::{Config, Limits};
use support::{Raw, TestServer};

/// A bystander checks the server still serves registered users normally.
async fn still_serves(bystander: &mut Raw, nonce: u64) {
    bystander.send(&ClientMsg::Ping { nonce }).await;
    assert_eq!(bystander.recv().await, ServerMsg::Pong { nonce });
    bystander
        .send(&ClientMsg::Lookup {
            name: "bystander".into(),
        })
        .await;
    assert!(matches!(
        bystander.recv().await,
        ServerMsg::UserFound { .. }
    ));
}

fn first_error(seen: &[ServerMsg]) -> Option<ErrorCode> {
    seen.iter().find_map(|m| match m {
        ServerMsg::Error { code, .. } => Some(*code),
        _ => None,
    })
}

#[tokio::test]
async fn random_bytes_get_an_error_and_a_close() {
    let server = TestServer::start(Config::default()).await;
    let mut by = Raw::registered(server.addr, "bystander", 5000).await;
    let mut seed = 0x1234_5678_u64;
    for round in 0..20 {
        let mut evil = Raw::connect(server.addr).await;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        evil.send_raw(&bytes).await;
        let seen = evil.until_closed().await;
        assert!(
            first_error(&seen).is_some(),
            "round {round}: no error in {seen:?}"
        );
        still_serves(&mut by, round).await;
    }
    assert!(server.is_running());
    server.stop().await;
}

#[tokio::test]
async fn huge_length_prefix_is_refused_without_buffering() {
    let server = TestServer::start(Config::default()).await;
    let mut by = Raw::registered(server.addr, "bystander", 5000).await;
    let mut evil = Raw::hello(server.addr).await;
    evil.send_raw(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    let seen = evil.until_closed().await;
    assert_eq!(
        first_error(&seen),
        Some(ErrorCode::FrameTooLarge),
        "{seen:?}"
    );
    still_serves(&mut by, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_msgpack_unknown_type_and_bad_fields_are_answered_and_survived() {
    let server = TestServer::start(Config::default()).await;
    let mut by = Raw::registered(server.addr, "bystander", 5000).await;
    let mut evil = Raw::hello(server.addr).await;
    // A valid length with a body that is not MessagePack at all.
    evil.send_raw(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).await;
    assert!(matches!(
        evil.recv().await,
        ServerMsg::Error {
            code: ErrorCode::Malformed,
            ..
        }
    ));
    // A map whose type nobody knows.
    let body =
        rmp_serde::to_vec_named(&serde_json::json!({"type": "teleport", "to": "mars"})).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    evil.send_raw(&frame).await;
    match evil.recv().await {
        ServerMsg::Error {
            code: ErrorCode::UnknownMessage,
            message,
            request,
            ..
        } => {
            assert!(message.contains("teleport"));
            assert_eq!(request.as_deref(), Some("teleport"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // A known type with a field of the wrong kind.
    let body = rmp_serde::to_vec_named(&serde_json::json!({"type": "lookup", "name": 42})).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    evil.send_raw(&frame).await;
    assert!(matches!(
        evil.recv().await,
        ServerMsg::Error {
            code: ErrorCode::InvalidMessage,
            ..
        }
    ));
    // An empty frame.
    evil.send_raw(&[0, 0, 0, 0]).await;
    assert!(matches!(
        evil.recv().await,
        ServerMsg::Error {
            code: ErrorCode::Malformed,
            ..
        }
    ));
    // The connection still works after recoverable errors.
    evil.send(&ClientMsg::Ping { nonce: 5 }).await;
    assert_eq!(evil.recv().await, ServerMsg::Pong { nonce: 5 });
    still_serves(&mut by, 2).await;
    server.stop().await;
}

#[tokio::test]
async fn persistent_garbage_gets_the_connection_closed() {
    let server = TestServer::start(Config::default()).await;
    let mut evil = Raw::hello(server.addr).await;
    for _ in 0..20 {
        evil.send_raw(&[0, 0, 0, 1, 0xc1]).await;
    }
    let seen = evil.until_closed().await;
    let errors = seen
        .iter()
        .filter(|m| matches!(m, ServerMsg::Error { .. }))
        .count();
    assert!(
        (10..=11).contains(&errors),
        "{errors} errors before close: {seen:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn messages_before_hello_and_wrong_version() {
    let server = TestServer::start(Config::default()).await;
    let mut early = Raw::connect(server.addr).await;
    early
        .send(&early.register_msg("early", support::media(1)))
        .await;
    assert!(matches!(
        early.recv().await,
        ServerMsg::Error {
            code: ErrorCode::HelloRequired,
            ..
        }
    ));
    // Hello afterwards still works.
    early
        .send(&ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            agent: String::new(),
        })
        .await;
    assert!(matches!(early.recv().await, ServerMsg::Welcome { .. }));

    let mut old = Raw::connect(server.addr).await;
    old.send(&ClientMsg::Hello {
        version: 99,
        agent: String::new(),
    })
    .await;
    let seen = old.until_closed().await;
    match seen.as_slice() {
        [ServerMsg::Error {
            code: ErrorCode::UnsupportedVersion,
            message,
            ..
        }] => {
            assert!(message.contains("99") && message.contains(&PROTOCOL_VERSION.to_string()))
        }
        other => panic!("unexpected {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn no_hello_within_ten_seconds_closes() {
    let server = TestServer::start(Config::default()).await;
    let mut mute = Raw::connect(server.addr).await;
    let start = tokio::time::Instant::now();
    let msg = mute.recv_within(Duration::from_secs(60)).await;
    assert!(
        matches!(
            msg,
            ServerMsg::Error {
                code: ErrorCode::HelloTimeout,
                ..
            }
        ),
        "{msg:?}"
    );
    assert_eq!(start.elapsed().as_secs(), 10);
    assert_eq!(mute.try_recv().await, None);
    server.stop().await;
}

#[tokio::test]
async fn flood_over_the_rate_limit_is_limited_then_closed() {
    let server = TestServer::start(Config::default()).await;
    let mut by = Raw::registered(server.addr, "bystander", 5000).await;
    let mut flood = Raw::registered(server.addr, "flood", 5001).await;
    let mut frames = Vec::new();
    for nonce in 0..400u64 {
        frames.extend_from_slice(&fala_proto::encode_frame(&ClientMsg::Ping { nonce }).unwrap());
    }
    flood.send_raw(&frames).await;
    let seen = flood.until_closed().await;
    let pongs = seen
        .iter()
        .filter(|m| matches!(m, ServerMsg::Pong { .. }))
        .count();
    let limited = seen
        .iter()
        .filter(|m| {
            matches!(
                m,
                ServerMsg::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            )
        })
        .count();
    let burst = Limits::default().msg_burst as usize;
    // The registration took one token of the burst.
    assert!(pongs >= burst - 1 && pongs < burst + 10, "{pongs} pongs");
    assert_eq!(
        limited, 2,
        "one notice when limiting starts, one when closing"
    );
    still_serves(&mut by, 3).await;
    server.stop().await;
}

#[tokio::test]
async fn invite_flood_is_limited() {
    let server = TestServer::start(Config::default()).await;
    let mut spam = Raw::registered(server.addr, "spam", 5001).await;
    let mut limited = false;
    for _ in 0..10 {
        spam.send(&ClientMsg::Invite {
            to: "ghost".into(),
            commit: None,
            candidates: Vec::new(),
            hide_address: false,
        })
        .await;
        if let ServerMsg::Error {
            code: ErrorCode::RateLimited,
            ..
        } = spam.recv().await
        {
            limited = true;
            break;
        }
    }
    assert!(limited, "ten invites in a row were never limited");
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_told_the_server_is_full() {
    let config = Config {
        limits: Limits {
            max_connections: 3,
            ..Limits::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(Raw::registered(server.addr, &format!("u{i}"), 5000).await);
    }
    let mut extra = Raw::connect(server.addr).await;
    let seen = extra.until_closed().await;
    assert_eq!(first_error(&seen), Some(ErrorCode::ServerFull));
    still_serves_named(&mut kept[0]).await;
    server.stop().await;
}

async fn still_serves_named(c: &mut Raw) {
    c.send(&ClientMsg::Ping { nonce: 77 }).await;
    assert_eq!(c.recv().await, ServerMsg::Pong { nonce: 77 });
}

/// Frames serde alone would execute: `{type: 12}` (serde reads a number as the twelfth variant,
/// `bye`), an array in place of the map, a `type` sent as bytes, and a valid message with a
/// byte after it. Each is answered `malformed`, and the connection stays (no bye happened).
#[tokio::test]
async fn only_a_map_with_a_string_type_is_a_message() {
    let server = TestServer::start(Config::default()).await;
    let mut c = Raw::registered(server.addr, "strict", 5000).await;
    let mut bye_then_stray = fala_proto::encode_frame(&ClientMsg::Bye).unwrap().to_vec();
    bye_then_stray.push(0xc0);
    let len = (bye_then_stray.len() - 4) as u32;
    bye_then_stray[..4].copy_from_slice(&len.to_be_bytes());
    let bodies: [&[u8]; 3] = [
        &[0x81, 0xa4, b't', b'y', b'p', b'e', 0x0c],
        &[0x91, 0xa3, b'b', b'y', b'e'],
        &[
            0x81, 0xa4, b't', b'y', b'p', b'e', 0xc4, 3, b'b', b'y', b'e',
        ],
    ];
    for (i, body) in bodies.iter().enumerate() {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        c.send_raw(&frame).await;
        let reply = c.recv().await;
        assert!(
            matches!(
                reply,
                ServerMsg::Error {
                    code: ErrorCode::Malformed,
                    ..
                }
            ),
            "body {i}: {reply:?}"
        );
    }
    c.send_raw(&bye_then_stray).await;
    let reply = c.recv().await;
    assert!(
        matches!(
            reply,
            ServerMsg::Error {
                code: ErrorCode::Malformed,
                ..
            }
        ),
        "{reply:?}"
    );
    // Still connected and registered.
    c.send(&ClientMsg::Ping { nonce: 7 }).await;
    assert_eq!(c.recv().await, ServerMsg::Pong { nonce: 7 });
    c.send(&ClientMsg::Lookup {
        name: "strict".into(),
    })
    .await;
    assert!(matches!(c.recv().await, ServerMsg::UserFound { .. }));
    server.stop().await;
}

/// A byte every 3 s is not a hello: the 10 s deadline counts from the connect, so a slowloris
/// client is closed at 10 s, not kept open by each byte.
#[tokio::test(start_paused = true)]
async fn partial_frames_do_not_extend_the_hello_deadline() {
    let server = TestServer::start(Config::default()).await;
    let mut slow = Raw::connect(server.addr).await;
    let start = tokio::time::Instant::now();
    let hello = fala_proto::encode_frame(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        agent: "slowloris".into(),
    })
    .unwrap();
    for byte in &hello[..4] {
        slow.send_raw(&[*byte]).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        if start.elapsed() >= Duration::from_secs(10) {
            break;
        }
    }
    let msg = slow.recv_within(Duration::from_secs(60)).await;
    assert!(
        matches!(
            msg,
            ServerMsg::Error {
                code: ErrorCode::HelloTimeout,
                ..
            }
        ),
        "{msg:?}"
    );
    assert!(
        start.elapsed() <= Duration::from_secs(12),
        "{:?}",
        start.elapsed()
    );
    server.stop().await;
}

/// 500 connections that each send a byte every 5 s and never a hello are all closed at the
/// hello deadline, while real clients keep registering meanwhile.
#[tokio::test(start_paused = true)]
async fn five_hundred_slowloris_connections_are_closed_while_others_register() {
    let config = Config {
        limits: Limits {
            max_connections_per_ip: 0,
            ..Limits::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut slow = Vec::new();
    for _ in 0..500 {
        slow.push(Raw::connect(server.addr).await);
    }
    let start = tokio::time::Instant::now();
    for round in 0..3u8 {
        for c in &mut slow {
            c.send_raw(&[0]).await;
        }
        let mut real = Raw::registered(server.addr, &format!("real{round}"), 5000).await;
        real.send(&ClientMsg::Ping { nonce: 1 }).await;
        assert_eq!(real.recv().await, ServerMsg::Pong { nonce: 1 });
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    for c in &mut slow {
        let seen = c.until_closed().await;
        assert_eq!(first_error(&seen), Some(ErrorCode::HelloTimeout));
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    server.stop().await;
}

/// Connections from one address past its limit are refused with a clear code; others from the
/// same address keep working.
#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let config = Config {
        limits: Limits {
            max_connections_per_ip: 3,
            ..Limits::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(Raw::registered(server.addr, &format!("u{i}"), 5000).await);
    }
    let mut extra = Raw::connect(server.addr).await;
    let seen = extra.until_closed().await;
    assert_eq!(first_error(&seen), Some(ErrorCode::TooManyConnections));
    still_serves_named(&mut kept[0]).await;
    // A place freed is a place to take.
    drop(kept.pop());
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut c = Raw::connect(server.addr).await;
        c.send(&ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            agent: "test".into(),
        })
        .await;
        if matches!(c.try_recv().await, Some(ServerMsg::Welcome { .. })) {
            again = Some(c);
            break;
        }
    }
    assert!(again.is_some(), "the freed place was never given back");
    server.stop().await;
}

/// Invites from all the connections of one address share one budget: opening more
/// connections buys no more invites.
#[tokio::test]
async fn connections_of_one_address_share_their_invites() {
    let config = Config {
        limits: Limits {
            ip_invite_burst: 2,
            ip_invite_per_sec: 0.0,
            ..Limits::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let _target = Raw::registered(server.addr, "target", 5000).await;
    let mut callers = Vec::new();
    for i in 0..3 {
        callers.push(Raw::registered(server.addr, &format!("caller{i}"), 5001 + i).await);
    }
    for (i, c) in callers.iter_mut().enumerate() {
        c.send(&ClientMsg::Invite {
            to: "target".into(),
            commit: None,
            candidates: Vec::new(),
            hide_address: false,
        })
        .await;
        let reply = c.recv().await;
        let limited = matches!(
            reply,
            ServerMsg::Error {
                code: ErrorCode::RateLimited,
                ..
            }
        );
        assert_eq!(limited, i == 2, "caller {i}: {reply:?}");
    }
    server.stop().await;
}

/// A client that stops reading is dropped once a write to it cannot finish in time, and its
/// name is free again: it cannot pin its session (and a ghost registration) forever.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_its_name_freed() {
    let config = Config {
        timeouts: fala_server::Timeouts {
            write: Duration::from_millis(500),
            ..fala_server::Timeouts::default()
        },
        limits: Limits {
            max_connections_per_ip: 0,
            ..Limits::default()
        },
        names: support::unlimited_new_names(),
        open_list: true,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    // Enough users that each `list` answer is tens of kilobytes.
    let mut fillers = Vec::new();
    for i in 0..800 {
        let name = format!("filler-with-a-long-name-{i:03}");
        fillers.push(Raw::registered(server.addr, &name, 5000).await);
    }
    // The slow client keeps its receive buffer small, keeps asking for the list (under the rate
    // limit), and never reads an answer: the server's socket buffer fills, then its write
    // cannot finish.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = Raw::on(socket.connect(server.addr).await.unwrap());
    slow.send(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        agent: "test".into(),
    })
    .await;
    match slow.recv().await {
        ServerMsg::Welcome { challenge, .. } => slow.challenge = challenge.into_vec(),
        other => panic!("expected welcome, got {other:?}"),
    }
    slow.send(&slow.register_msg("slow", support::media(5999)))
        .await;
    let list = fala_proto::encode_frame(&ClientMsg::List {
        after: None,
        limit: None,
    })
    .unwrap();
    let mut checker = Raw::registered(server.addr, "checker", 5000).await;
    let mut freed = false;
    for round in 0..200 {
        use tokio::io::AsyncWriteExt;
        // The server may have closed it already: writes then fail, which is fine.
        let burst = if round == 0 { 50 } else { 1 };
        for _ in 0..burst {
            let _ = slow.stream.write_all(&list).await;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        if round % 5 == 0 {
            checker
                .send(&ClientMsg::Lookup {
                    name: "slow".into(),
                })
                .await;
            if matches!(checker.recv().await, ServerMsg::UserNotFound { .. }) {
                freed = true;
                break;
            }
        }
    }
    assert!(
        freed,
        "the client that stopped reading still holds its name"
    );
    still_serves_named(&mut checker).await;
    server.stop().await;
}

/// The relay's way through a connection (`media`) and the comeback (`register` with
/// `resume`) give an attacker nothing: thousands of `media` frames with made-up tokens or
/// none are dropped without a word (no answer, no error, the connection stays usable), and
/// another identity asking to resume someone's name is refused without touching them.
#[tokio::test]
async fn media_floods_and_foreign_resumes_get_nowhere() {
    let server = TestServer::start(Config::default()).await;
    let mut bystander = Raw::registered(server.addr, "bystander", 5000).await;
    let mut mallory = Raw::registered(server.addr, "mallory", 5001).await;
    for i in 0..5_000u32 {
        let mut data = vec![0x80u8; 100];
        if i % 2 == 0 {
            // A relayed datagram's shape: a token (first byte 64–79) no call has.
            data[0] = 0x40 | (i % 16) as u8;
            data[1..5].copy_from_slice(&i.to_be_bytes());
        }
        mallory
            .send(&ClientMsg::Media {
                data: serde_bytes::ByteBuf::from(data),
            })
            .await;
    }
    // Nothing came back for any of it: the next message is the answer to this ping.
    mallory.send(&ClientMsg::Ping { nonce: 9 }).await;
    assert_eq!(mallory.recv().await, ServerMsg::Pong { nonce: 9 });
    still_serves(&mut bystander, 1).await;

    // Another identity cannot take the bystander's name by claiming to come back.
    let mut thief = Raw::hello(server.addr).await;
    let mut register = thief.register_msg("bystander", support::media(5002));
    if let ClientMsg::Register { resume, .. } = &mut register {
        *resume = Some(fala_proto::CallId(1));
    }
    thief.send(&register).await;
    assert_eq!(
        first_error(&[thief.recv().await]),
        Some(ErrorCode::NameOwned)
    );
    still_serves(&mut bystander, 2).await;
    server.stop().await;
}
