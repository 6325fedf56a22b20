//! Registration, look-up, list and presence against a real server over real TCP.

mod support;

use fala_proto::{Availability, ClientMsg, ErrorCode, ServerMsg};
use fala_server::Config;
use support::{Raw, TestServer};

#[tokio::test]
async fn register_then_duplicate_name_is_refused_ignoring_case() {
    let server = TestServer::start(Config::default()).await;
    let mut ana = Raw::hello(server.addr).await;
    match ana.register("  Ana ", 5000).await {
        ServerMsg::Registered {
            name, media, stun, ..
        } => {
            assert_eq!(name, "Ana");
            assert_eq!(media.port(), 5000);
            // The STUN port is where the client reached the server, on its UDP port.
            let stun = stun.expect("the server tells its STUN port");
            assert_eq!(std::net::IpAddr::V4(stun.ip()), server.addr.ip());
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut other = Raw::hello(server.addr).await;
    match other.register("aNA", 5001).await {
        ServerMsg::Error {
            code: ErrorCode::NameOwned,
            message,
            ..
        } => {
            assert!(message.contains("belongs to someone else"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    // The refused connection may still register a free name.
    assert!(matches!(
        other.register("Bia", 5001).await,
        ServerMsg::Registered { .. }
    ));
    // And a second registration on one connection is refused.
    assert!(matches!(
        other.register("Cris", 5001).await,
        ServerMsg::Error {
            code: ErrorCode::AlreadyRegistered,
            ..
        }
    ));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_racing_for_one_name_exactly_one_wins() {
    let server = TestServer::start(Config::default()).await;
    let mut tasks = Vec::new();
    for i in 0..50u16 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::hello(addr).await;
            let name = if i % 2 == 0 { "Racer" } else { "rACER" };
            (c.register(name, 6000 + i).await, c)
        }));
    }
    let mut wins = 0;
    let mut taken = 0;
    let mut keep = Vec::new();
    for t in tasks {
        let (reply, c) = t.await.unwrap();
        match reply {
            ServerMsg::Registered { .. } => wins += 1,
            ServerMsg::Error {
                code: ErrorCode::NameOwned,
                ..
            } => taken += 1,
            other => panic!("unexpected {other:?}"),
        }
        keep.push(c);
    }
    assert_eq!((wins, taken), (1, 49));
    server.stop().await;
}

#[tokio::test]
async fn invalid_names_are_refused_with_the_rule() {
    let server = TestServer::start(Config::default()).await;
    let mut c = Raw::hello(server.addr).await;
    for (name, rule) in [
        ("", "empty"),
        ("   ", "empty"),
        (&"x".repeat(33)[..], "at most 32"),
        ("bob!", "letters, digits"),
    ] {
        match c.register(name, 5000).await {
            ServerMsg::Error {
                code: ErrorCode::InvalidName,
                message,
                ..
            } => {
                assert!(message.contains(rule), "{name:?}: {message}")
            }
            other => panic!("{name:?}: unexpected {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn media_ip_left_open_is_filled_from_the_connection() {
    let server = TestServer::start(Config::default()).await;
    let mut c = Raw::hello(server.addr).await;
    c.send(&c.register_msg("dora", "0.0.0.0:7000".parse().unwrap()))
        .await;
    match c.recv().await {
        ServerMsg::Registered { media, .. } => assert_eq!(media.to_string(), "127.0.0.1:7000"),
        other => panic!("unexpected {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn lookup_found_and_not_found() {
    let server = TestServer::start(Config::default()).await;
    let bob = Raw::registered(server.addr, "Bob", 5002).await;
    let mut ana = Raw::registered(server.addr, "ana", 5001).await;
    ana.send(&ClientMsg::Lookup { name: "BOB".into() }).await;
    match ana.recv().await {
        ServerMsg::UserFound { user } => {
            assert_eq!(user.name, "Bob");
            // The identity that owns the name, and never the address.
            assert_eq!(user.identity.as_slice(), bob.identity.public());
            assert_eq!(user.status, Availability::Available);
        }
        other => panic!("unexpected {other:?}"),
    }
    ana.send(&ClientMsg::Lookup {
        name: "nobody".into(),
    })
    .await;
    assert_eq!(
        ana.recv().await,
        ServerMsg::UserNotFound {
            name: "nobody".into()
        }
    );
    // The user may try again, as in the original.
    ana.send(&ClientMsg::Lookup { name: "bob".into() }).await;
    assert!(matches!(ana.recv().await, ServerMsg::UserFound { .. }));
    server.stop().await;
}

#[tokio::test]
async fn list_and_live_presence_events_when_the_operator_opens_the_list() {
    let server = TestServer::start(Config {
        open_list: true,
        ..Config::default()
    })
    .await;
    let mut watcher = Raw::registered(server.addr, "watcher", 5000).await;
    watcher.send(&ClientMsg::Subscribe).await;
    match watcher.recv().await {
        ServerMsg::Users { users, more } => assert_eq!(
            (
                users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
                more
            ),
            (vec!["watcher"], false)
        ),
        other => panic!("unexpected {other:?}"),
    }
    let mut ana = Raw::registered(server.addr, "ana", 5001).await;
    assert!(matches!(watcher.recv().await, ServerMsg::UserJoined { user } if user.name == "ana"));
    let mut bob = Raw::registered(server.addr, "bob", 5002).await;
    assert!(matches!(watcher.recv().await, ServerMsg::UserJoined { user } if user.name == "bob"));
    ana.send(&ClientMsg::List {
        after: None,
        limit: None,
    })
    .await;
    match ana.recv().await {
        ServerMsg::Users { users, more } => {
            let names: Vec<_> = users.iter().map(|u| u.name.as_str()).collect();
            assert_eq!(names, ["ana", "bob", "watcher"]);
            assert!(!more);
        }
        other => panic!("unexpected {other:?}"),
    }
    ana.send(&ClientMsg::Invite {
        to: "bob".into(),
        commit: None,
        candidates: Vec::new(),
        hide_address: false,
    })
    .await;
    let call_id = match bob.recv().await {
        ServerMsg::IncomingCall { call_id, .. } => call_id,
        other => panic!("unexpected {other:?}"),
    };
    for who in ["ana", "bob"] {
        let m = watcher.recv().await;
        assert_eq!(
            m,
            ServerMsg::UserStatus {
                name: who.into(),
                status: Availability::InCall
            }
        );
    }
    bob.send(&ClientMsg::Decline { call_id }).await;
    for who in ["ana", "bob"] {
        let m = watcher.recv().await;
        assert_eq!(
            m,
            ServerMsg::UserStatus {
                name: who.into(),
                status: Availability::Available
            }
        );
    }
    bob.send(&ClientMsg::Bye).await;
    assert_eq!(
        watcher.recv().await,
        ServerMsg::UserLeft { name: "bob".into() }
    );
    drop(ana);
    assert_eq!(
        watcher.recv().await,
        ServerMsg::UserLeft { name: "ana".into() }
    );
    // Unsubscribed clients get nothing more.
    watcher.send(&ClientMsg::Unsubscribe).await;
    let _carl = Raw::registered(server.addr, "carl", 5003).await;
    watcher.send(&ClientMsg::Ping { nonce: 9 }).await;
    assert_eq!(watcher.recv().await, ServerMsg::Pong { nonce: 9 });
    server.stop().await;
}

/// By default nobody gets the whole online list: `list` and `subscribe` are refused with a
/// reason that points to `search` and `watch`, and the connection goes on.
#[tokio::test]
async fn the_whole_online_list_is_not_offered_by_default() {
    let server = TestServer::start(Config::default()).await;
    let _bob = Raw::registered(server.addr, "bob", 5001).await;
    let mut ana = Raw::registered(server.addr, "ana", 5002).await;
    let list = ClientMsg::List {
        after: None,
        limit: None,
    };
    for (msg, kind) in [(list, "list"), (ClientMsg::Subscribe, "subscribe")] {
        ana.send(&msg).await;
        match ana.recv().await {
            ServerMsg::Error {
                code: ErrorCode::NotOffered,
                message,
                request,
                ..
            } => {
                assert!(message.contains("search"), "{message}");
                assert_eq!(request.as_deref(), Some(kind));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Bob's arrival and departure are not told to Ana; a search finds him.
    let _carol = Raw::registered(server.addr, "carol", 5003).await;
    ana.send(&ClientMsg::Search {
        prefix: "B".into(),
        after: None,
    })
    .await;
    assert!(matches!(
        ana.recv().await,
        ServerMsg::SearchResults { users, more: false } if users.len() == 1 && users[0].name == "bob"
    ));
    server.stop().await;
}

#[tokio::test]
async fn bye_and_closing_the_socket_free_the_name() {
    let server = TestServer::start(Config::default()).await;
    let mut a = Raw::registered(server.addr, "zé", 5000).await;
    a.send(&ClientMsg::Bye).await;
    assert!(a.until_closed().await.is_empty());
    // The name is free for its owner to come back (anyone else is refused: see the names
    // tests).
    let b = Raw::registered_as(server.addr, "Zé", 5001, &a.identity).await;
    drop(b);
    // The server notices the close asynchronously; retry briefly.
    let mut ok = false;
    for _ in 0..50 {
        let mut c = Raw::hello_as(server.addr, &a.identity).await;
        if matches!(c.register("ZÉ", 5002).await, ServerMsg::Registered { .. }) {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "name was not freed after the socket closed");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_tells_connected_clients() {
    let server = TestServer::start(Config::default()).await;
    let mut a = Raw::registered(server.addr, "ana", 5000).await;
    server.stop().await;
    let seen = a.until_closed().await;
    assert!(
        matches!(seen.as_slice(), [ServerMsg::Shutdown { .. }]),
        "{seen:?}"
    );
}

/// A thousand users with 31-character names: the list comes in pages that each fit a frame
/// (it used to be one frame too big to send, and the asker got nothing at all).
#[tokio::test]
async fn a_thousand_users_with_long_names_come_in_pages() {
    let server = TestServer::start(Config {
        open_list: true,
        ..support::crowd_config()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..1000 {
        let name = format!("user-with-a-long-long-name-{i:04}");
        assert_eq!(name.chars().count(), 31);
        held.push(Raw::registered(server.addr, &name, 5000).await);
    }
    let asker = &mut held[0];
    let mut names = Vec::new();
    let mut after = None;
    for page in 0.. {
        asker
            .send(&ClientMsg::List {
                after: after.clone(),
                limit: None,
            })
            .await;
        let ServerMsg::Users { users, more } = asker.recv().await else {
            panic!("page {page}: not a users reply");
        };
        assert!(users.len() <= fala_proto::LIST_PAGE_MAX);
        names.extend(users.iter().map(|u| u.name.clone()));
        if !more {
            break;
        }
        // The cursor is the last name as shown; the server compares by its key.
        after = users.last().map(|u| u.name.clone());
    }
    assert_eq!(names.len(), 1000);
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| fala_proto::name::name_key(n));
    sorted.dedup();
    assert_eq!(sorted, names, "in name-key order, each once");
    // A smaller page on request.
    asker
        .send(&ClientMsg::List {
            after: None,
            limit: Some(3),
        })
        .await;
    match asker.recv().await {
        ServerMsg::Users { users, more } => assert_eq!((users.len(), more), (3, true)),
        other => panic!("unexpected {other:?}"),
    }
    server.stop().await;
}

/// 5 000 registered users: a directory search answers a page of at most 50 matches in
/// name-key order and pages on; look-ups and presence still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_users_search_lookup_and_presence_still_answer() {
    let server = TestServer::start(support::crowd_config()).await;
    let mut held = Vec::with_capacity(5000);
    for batch in 0..50 {
        let tasks: Vec<_> = (0..100)
            .map(|j| {
                let addr = server.addr;
                tokio::spawn(async move {
                    Raw::registered(addr, &format!("person-{:04}", batch * 100 + j), 5000).await
                })
            })
            .collect();
        for t in tasks {
            held.push(t.await.unwrap());
        }
    }
    let mut asker = Raw::registered(server.addr, "asker", 6000).await;
    let search = |prefix: &str, after: Option<String>| ClientMsg::Search {
        prefix: prefix.into(),
        after,
    };
    // 100 names start with "person-12": two pages.
    let mut found = Vec::new();
    let mut after = None;
    for page in 0..3 {
        asker.send(&search("PERSON-12", after.clone())).await;
        let ServerMsg::SearchResults { users, more } = asker.recv().await else {
            panic!("page {page}: not search results");
        };
        assert!(users.len() <= fala_proto::SEARCH_PAGE_MAX);
        found.extend(users.iter().map(|u| u.name.clone()));
        after = users.last().map(|u| u.name.clone());
        if !more {
            break;
        }
    }
    assert_eq!(found.len(), 100, "{found:?}");
    assert!(found.iter().all(|n| n.starts_with("person-12")));
    let mut sorted = found.clone();
    sorted.sort_by_key(|n| fala_proto::name::name_key(n));
    sorted.dedup();
    assert_eq!(sorted, found);
    // One exact match, and none.
    asker.send(&search("person-4999", None)).await;
    assert!(matches!(
        asker.recv().await,
        ServerMsg::SearchResults { users, more: false } if users.len() == 1
    ));
    asker.send(&search("zzz", None)).await;
    assert!(matches!(
        asker.recv().await,
        ServerMsg::SearchResults { users, more: false } if users.is_empty()
    ));
    // Look-ups and presence still answer.
    asker
        .send(&ClientMsg::Lookup {
            name: "person-2500".into(),
        })
        .await;
    assert!(matches!(asker.recv().await, ServerMsg::UserFound { .. }));
    asker
        .send(&ClientMsg::Watch {
            names: vec!["person-0001".into(), "latecomer".into()],
        })
        .await;
    assert!(matches!(
        asker.recv().await,
        ServerMsg::Watching { users } if users.len() == 1 && users[0].name == "person-0001"
    ));
    let _late = Raw::registered(server.addr, "latecomer", 7000).await;
    let joined = asker
        .recv_until(|m| matches!(m, ServerMsg::UserJoined { .. }))
        .await;
    assert!(matches!(joined, ServerMsg::UserJoined { user } if user.name == "latecomer"));
    drop(held);
    server.stop().await;
}

/// `watch` follows only the named people: their arrival, status and departure, nobody else's;
/// a new `watch` replaces the set.
#[tokio::test]
async fn watching_follows_only_the_named_people() {
    let server = TestServer::start(Config::default()).await;
    let mut bob = Raw::registered(server.addr, "Bob", 5001).await;
    let mut carol = Raw::registered(server.addr, "carol", 5002).await;
    carol
        .send(&ClientMsg::Watch {
            names: vec!["BOB".into(), "dora".into()],
        })
        .await;
    match carol.recv().await {
        ServerMsg::Watching { users } => {
            assert_eq!(
                users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
                ["Bob"]
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    // Only what is about Bob or Dora reaches Carol: a ping after each change shows nothing else
    // came first.
    let eve = Raw::registered(server.addr, "eve", 5003).await;
    nothing_else(&mut carol, 1).await;
    let _dora = Raw::registered(server.addr, "dora", 5004).await;
    assert!(matches!(
        carol.recv().await,
        ServerMsg::UserJoined { user } if user.name == "dora"
    ));
    bob.send(&ClientMsg::Invite {
        to: "eve".into(),
        commit: None,
        candidates: Vec::new(),
        hide_address: false,
    })
    .await;
    assert_eq!(
        carol.recv().await,
        ServerMsg::UserStatus {
            name: "Bob".into(),
            status: fala_proto::Availability::InCall
        }
    );
    nothing_else(&mut carol, 2).await;
    // Eve leaves: Bob's call ends, and Carol hears that Bob is free (not that Eve left).
    drop(eve);
    assert_eq!(
        carol.recv().await,
        ServerMsg::UserStatus {
            name: "Bob".into(),
            status: fala_proto::Availability::Available
        }
    );
    carol.send(&ClientMsg::Watch { names: vec![] }).await;
    assert_eq!(carol.recv().await, ServerMsg::Watching { users: vec![] });
    drop(bob);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    nothing_else(&mut carol, 3).await;
    server.stop().await;
}

/// Pings and expects the pong next: nothing else was queued for `raw` before it.
async fn nothing_else(raw: &mut Raw, n: u64) {
    raw.send(&ClientMsg::Ping { nonce: n }).await;
    assert_eq!(raw.recv().await, ServerMsg::Pong { nonce: n });
}
