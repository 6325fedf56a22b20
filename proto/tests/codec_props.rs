//! Property tests: every message survives the codec, and no byte string makes the decoder panic.

use bytes::BytesMut;
use fala_proto::*;
use proptest::prelude::*;
use serde_bytes::ByteBuf;

fn media() -> impl Strategy<Value = MediaAddr> {
    (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| MediaAddr::new(ip.into(), port))
}

/// Addresses media can be sent to (others are refused by design), IPv4 and IPv6.
fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    let v4 = (1u8..224, any::<[u8; 3]>(), 1u16..).prop_map(|(a, [b, c, d], port)| {
        Candidate(std::net::SocketAddr::from(([a, b, c, d], port)))
    });
    let v6 = (0x2000u16..0xfe00, any::<[u16; 7]>(), 1u16..).prop_map(|(a, rest, port)| {
        let [b, c, d, e, f, g, h] = rest;
        Candidate(std::net::SocketAddr::from(([a, b, c, d, e, f, g, h], port)))
    });
    proptest::collection::vec(prop_oneof![v4, v6], 0..4)
}

fn key() -> impl Strategy<Value = Option<ByteBuf>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64).prop_map(ByteBuf::from))
}

fn bytes() -> impl Strategy<Value = ByteBuf> {
    proptest::collection::vec(any::<u8>(), 0..70).prop_map(ByteBuf::from)
}

fn call_id() -> impl Strategy<Value = CallId> {
    any::<u64>().prop_map(CallId)
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        (any::<u32>(), ".{0,20}").prop_map(|(version, agent)| ClientMsg::Hello { version, agent }),
        (
            (".{0,40}", media(), bytes(), bytes()),
            proptest::option::of(call_id())
        )
            .prop_map(|((name, media, identity, signature), resume)| {
                ClientMsg::Register {
                    name,
                    media,
                    identity,
                    signature,
                    resume,
                }
            }),
        ".{0,40}".prop_map(|name| ClientMsg::Lookup { name }),
        Just(ClientMsg::List {
            after: None,
            limit: None
        }),
        (".{0,20}", proptest::option::of(".{0,20}"))
            .prop_map(|(prefix, after)| ClientMsg::Search { prefix, after }),
        proptest::collection::vec(".{0,20}", 0..4).prop_map(|names| ClientMsg::Watch { names }),
        Just(ClientMsg::Subscribe),
        Just(ClientMsg::Unsubscribe),
        (".{0,40}", key(), candidates(), any::<bool>()).prop_map(
            |(to, commit, candidates, hide_address)| ClientMsg::Invite {
                to,
                commit,
                candidates,
                hide_address,
            }
        ),
        (
            call_id(),
            proptest::option::of(media()),
            key(),
            key(),
            candidates(),
            any::<bool>()
        )
            .prop_map(
                |(call_id, media, key, signature, candidates, hide_address)| ClientMsg::Accept {
                    call_id,
                    media,
                    key,
                    signature,
                    candidates,
                    hide_address,
                }
            ),
        (call_id(), bytes(), bytes()).prop_map(|(call_id, key, signature)| ClientMsg::Reveal {
            call_id,
            key,
            signature
        }),
        call_id().prop_map(|call_id| ClientMsg::Decline { call_id }),
        call_id().prop_map(|call_id| ClientMsg::Cancel { call_id }),
        call_id().prop_map(|call_id| ClientMsg::Hangup { call_id }),
        any::<u64>().prop_map(|nonce| ClientMsg::Ping { nonce }),
        ".{0,40}".prop_map(|name| ClientMsg::Block { name }),
        ".{0,40}".prop_map(|name| ClientMsg::Unblock { name }),
        Just(ClientMsg::Bye),
        bytes().prop_map(|data| ClientMsg::Media { data }),
    ]
}

fn user() -> impl Strategy<Value = UserInfo> {
    (".{0,40}", bytes(), any::<bool>()).prop_map(|(name, identity, busy)| UserInfo {
        name,
        identity,
        status: if busy {
            Availability::InCall
        } else {
            Availability::Available
        },
    })
}

fn reason() -> impl Strategy<Value = EndReason> {
    prop_oneof![
        Just(EndReason::Declined),
        Just(EndReason::Busy),
        Just(EndReason::NoAnswer),
        Just(EndReason::Cancelled),
        Just(EndReason::HungUp),
        Just(EndReason::PeerHungUp),
        Just(EndReason::PeerLost),
        Just(EndReason::ServerShutdown),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    prop_oneof![
        (any::<u32>(), ".{0,20}", any::<u64>(), any::<u64>(), bytes()).prop_map(
            |(version, server, heartbeat_ms, idle_timeout_ms, challenge)| {
                ServerMsg::Welcome {
                    version,
                    server,
                    heartbeat_ms,
                    idle_timeout_ms,
                    challenge,
                }
            }
        ),
        (
            ".{0,40}",
            media(),
            proptest::option::of(media()),
            proptest::option::of(call_id())
        )
            .prop_map(|(name, media, stun, call)| {
                ServerMsg::Registered {
                    name,
                    media,
                    stun,
                    call,
                }
            }),
        user().prop_map(|user| ServerMsg::UserFound { user }),
        ".{0,40}".prop_map(|name| ServerMsg::UserNotFound { name }),
        (proptest::collection::vec(user(), 0..5), any::<bool>())
            .prop_map(|(users, more)| ServerMsg::Users { users, more }),
        (proptest::collection::vec(user(), 0..5), any::<bool>())
            .prop_map(|(users, more)| ServerMsg::SearchResults { users, more }),
        proptest::collection::vec(user(), 0..5).prop_map(|users| ServerMsg::Watching { users }),
        user().prop_map(|user| ServerMsg::UserJoined { user }),
        ".{0,40}".prop_map(|name| ServerMsg::UserLeft { name }),
        (".{0,40}", any::<bool>()).prop_map(|(name, b)| ServerMsg::UserStatus {
            name,
            status: if b {
                Availability::InCall
            } else {
                Availability::Available
            }
        }),
        (call_id(), ".{0,40}").prop_map(|(call_id, peer)| ServerMsg::Ringing { call_id, peer }),
        (call_id(), ".{0,40}", bytes(), key()).prop_map(|(call_id, caller, identity, commit)| {
            ServerMsg::IncomingCall {
                call_id,
                caller,
                identity,
                commit,
            }
        }),
        (
            call_id(),
            ".{0,40}",
            media(),
            bytes(),
            key(),
            key(),
            proptest::option::of((media(), bytes())),
            candidates(),
        )
            .prop_map(
                |(call_id, peer, media, identity, key, signature, relay, candidates)| {
                    ServerMsg::CallConnected {
                        call_id,
                        peer,
                        media,
                        identity,
                        key,
                        signature,
                        relay: relay.map(|(media, token)| fala_proto::RelayOffer { media, token }),
                        candidates,
                    }
                }
            ),
        (call_id(), ".{0,40}", reason()).prop_map(|(call_id, peer, reason)| ServerMsg::CallEnded {
            call_id,
            peer,
            reason
        }),
        any::<u64>().prop_map(|nonce| ServerMsg::Pong { nonce }),
        ".{0,60}".prop_map(|m| ServerMsg::error(ErrorCode::RateLimited, m)),
        (call_id(), ".{0,60}").prop_map(|(id, m)| ServerMsg::Error {
            code: ErrorCode::UnknownCall,
            message: m,
            request: Some("hangup".into()),
            call_id: Some(id),
        }),
        ".{0,60}".prop_map(|message| ServerMsg::Shutdown { message }),
        bytes().prop_map(|data| ServerMsg::Media { data }),
    ]
}

fn roundtrip<T>(msg: &T, known: &[&str]) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let frame = encode_frame(msg).unwrap();
    let mut buf = BytesMut::from(&frame[..]);
    let body = split_frame(&mut buf).unwrap().expect("whole frame");
    assert!(buf.is_empty());
    decode_body(&body, known).unwrap()
}

proptest! {
    #[test]
    fn client_messages_roundtrip(msg in client_msg()) {
        prop_assert_eq!(roundtrip(&msg, CLIENT_MSG_TYPES), msg);
    }

    #[test]
    fn server_messages_roundtrip(msg in server_msg()) {
        prop_assert_eq!(roundtrip(&msg, SERVER_MSG_TYPES), msg);
    }

    #[test]
    fn a_server_message_kind_is_its_wire_type(msg in server_msg()) {
        let body = rmp_serde::to_vec_named(&msg).unwrap();
        let value: rmpv::Value = rmpv::decode::read_value(&mut &body[..]).unwrap();
        let wire = value.as_map().unwrap().iter().find(|(k, _)| k.as_str() == Some("type"));
        prop_assert_eq!(wire.and_then(|(_, v)| v.as_str()), Some(msg.kind()));
        prop_assert!(SERVER_MSG_TYPES.contains(&msg.kind()));
    }

    #[test]
    fn a_client_message_kind_is_its_wire_type(msg in client_msg()) {
        let body = rmp_serde::to_vec_named(&msg).unwrap();
        let value: rmpv::Value = rmpv::decode::read_value(&mut &body[..]).unwrap();
        let wire = value.as_map().unwrap().iter().find(|(k, _)| k.as_str() == Some("type"));
        prop_assert_eq!(wire.and_then(|(_, v)| v.as_str()), Some(msg.kind()));
        prop_assert!(CLIENT_MSG_TYPES.contains(&msg.kind()));
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(body)) = split_frame(&mut buf) {
            let _ = decode_body::<ClientMsg>(&body, CLIENT_MSG_TYPES);
            let _ = decode_body::<ServerMsg>(&body, SERVER_MSG_TYPES);
        }
        let _ = decode_body::<ClientMsg>(&bytes, CLIENT_MSG_TYPES);
    }

    #[test]
    fn any_msgpack_value_decodes_or_errors(v in arb_value()) {
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &v).unwrap();
        let _ = decode_body::<ClientMsg>(&body, CLIENT_MSG_TYPES);
    }
}

/// Arbitrary MessagePack values, including maps with a `type` key, to reach deeper decoder paths.
fn arb_value() -> impl Strategy<Value = rmpv::Value> {
    let leaf = prop_oneof![
        Just(rmpv::Value::Nil),
        any::<bool>().prop_map(rmpv::Value::from),
        any::<i64>().prop_map(rmpv::Value::from),
        any::<u64>().prop_map(rmpv::Value::from),
        ".{0,12}".prop_map(rmpv::Value::from),
        prop_oneof![
            Just("hello"),
            Just("register"),
            Just("invite"),
            Just("accept")
        ]
        .prop_map(rmpv::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(rmpv::Value::Array),
            proptest::collection::vec(
                (prop_oneof![Just("type".to_string()), ".{0,8}"], inner),
                0..6
            )
            .prop_map(|kv| rmpv::Value::Map(
                kv.into_iter()
                    .map(|(k, v)| (rmpv::Value::from(k), v))
                    .collect()
            )),
        ]
    })
}

#[test]
fn unknown_error_codes_map_to_other() {
    #[derive(serde::Serialize)]
    struct E<'a> {
        #[serde(rename = "type")]
        t: &'a str,
        code: &'a str,
        message: &'a str,
    }
    let body = rmp_serde::to_vec_named(&E {
        t: "error",
        code: "from_the_future",
        message: "x",
    })
    .unwrap();
    let msg: ServerMsg = decode_body(&body, SERVER_MSG_TYPES).unwrap();
    assert_eq!(msg, ServerMsg::error(ErrorCode::Other, "x"));
}
