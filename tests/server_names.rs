//! Names belong to identities: a name is bound to the first identity key that registers it,
//! on disk, and refused to every other key — while its owner is online, after it left, after a
//! server restart, and under a name that only looks the same. Registering proves possession
//! of the key by signing the connection's challenge.

mod support;

use std::time::Duration;

use fala_proto::identity::Identity;
use fala_proto::{ClientMsg, ErrorCode, ServerMsg};
use fala_server::{Config, NamesConfig};
use serde_bytes::ByteBuf;
use support::{Raw, TestServer};

fn refused_with(reply: &ServerMsg, code: ErrorCode) -> bool {
    matches!(reply, ServerMsg::Error { code: c, .. } if *c == code)
}

/// The owner leaves; nobody else can take the name or a look-alike of it; the owner comes back.
#[tokio::test]
async fn a_name_stays_its_owners_while_offline_and_against_look_alikes() {
    let server = TestServer::start(Config::default()).await;
    let ana = Identity::generate().unwrap();
    let mut first = Raw::registered_as(server.addr, "Ana", 5000, &ana).await;
    first.send(&ClientMsg::Bye).await;
    first.until_closed().await;
    for look_alike in ["Ana", "ANA", "\u{410}na", "ａｎａ", "A\u{200b}na"] {
        let mut eve = Raw::hello(server.addr).await;
        let reply = eve.register(look_alike, 6000).await;
        let code = if look_alike.contains('\u{200b}') {
            // Invisible characters are not allowed in names at all.
            ErrorCode::InvalidName
        } else {
            ErrorCode::NameOwned
        };
        assert!(refused_with(&reply, code), "{look_alike:?}: {reply:?}");
    }
    // The owner registers again, under another spelling of the same name.
    let mut back = Raw::hello_as(server.addr, &ana).await;
    match back.register("ana", 5001).await {
        ServerMsg::Registered { name, .. } => assert_eq!(name, "ana"),
        other => panic!("the owner was refused: {other:?}"),
    }
    // Online, the owner is told it is already online elsewhere, not that the name is owned.
    let mut twice = Raw::hello_as(server.addr, &ana).await;
    assert!(refused_with(
        &twice.register("Ana", 5002).await,
        ErrorCode::NameTaken
    ));
    server.stop().await;
}

/// The binding is on disk: a restarted server still refuses the name to anyone else.
#[tokio::test]
async fn bindings_survive_a_server_restart() {
    let dir = std::env::temp_dir().join(format!("fala-names-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config {
        names_db: Some(dir.join("names.redb")),
        ..Config::default()
    };
    let bob = Identity::generate().unwrap();
    let server = TestServer::start(config.clone()).await;
    let _held = Raw::registered_as(server.addr, "bob", 5000, &bob).await;
    server.stop().await;
    let server = TestServer::start(config).await;
    let mut eve = Raw::hello(server.addr).await;
    assert!(refused_with(
        &eve.register("Bob", 6000).await,
        ErrorCode::NameOwned
    ));
    let _back = Raw::registered_as(server.addr, "Bob", 5001, &bob).await;
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With a reclaim period of zero, a name whose owner is offline is free for the next identity
/// (the default is 180 days); while the owner is online it never is.
#[tokio::test]
async fn an_unused_name_can_be_reclaimed_after_the_period() {
    let config = Config {
        names: NamesConfig {
            reclaim_after: Duration::ZERO,
            ..NamesConfig::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut old = Raw::registered(server.addr, "cris", 5000).await;
    let mut new = Raw::hello(server.addr).await;
    assert!(refused_with(
        &new.register("cris", 6000).await,
        ErrorCode::NameOwned
    ));
    old.send(&ClientMsg::Bye).await;
    old.until_closed().await;
    let mut taken = false;
    for _ in 0..50 {
        let mut c = Raw::hello_as(server.addr, &new.identity).await;
        if matches!(c.register("cris", 6000).await, ServerMsg::Registered { .. }) {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(taken, "the name was not reclaimed");
    server.stop().await;
}

/// A registration must be signed by the key it names, over this connection's challenge: a
/// signature copied from another connection, another name or another key is refused.
#[tokio::test]
async fn registering_proves_possession_of_the_key() {
    let server = TestServer::start(Config::default()).await;
    let ana = Identity::generate().unwrap();
    let mut watcher = Raw::hello(server.addr).await;
    let seen = ClientMsg::Register {
        name: "ana".into(),
        media: support::media(5000),
        identity: ByteBuf::from(ana.public().to_vec()),
        signature: ByteBuf::from(ana.sign_register(&watcher.challenge, "ana").to_vec()),
        resume: None,
    };
    // Replayed on another connection (another challenge).
    let mut thief = Raw::hello(server.addr).await;
    thief.send(&seen).await;
    assert!(refused_with(
        &thief.recv().await,
        ErrorCode::InvalidIdentity
    ));
    // Another name under the same signature.
    let ClientMsg::Register {
        identity,
        signature,
        media,
        ..
    } = seen.clone()
    else {
        unreachable!()
    };
    let other_name = ClientMsg::Register {
        name: "bob".into(),
        media,
        identity: identity.clone(),
        signature: signature.clone(),
        resume: None,
    };
    watcher.send(&other_name).await;
    assert!(refused_with(
        &watcher.recv().await,
        ErrorCode::InvalidIdentity
    ));
    // A key that is not 32 bytes.
    let short = ClientMsg::Register {
        name: "ana".into(),
        media,
        identity: ByteBuf::from(vec![1; 31]),
        signature,
        resume: None,
    };
    watcher.send(&short).await;
    assert!(refused_with(
        &watcher.recv().await,
        ErrorCode::InvalidIdentity
    ));
    // The genuine one still works on its own connection (refusals used nothing up).
    watcher.send(&seen).await;
    assert!(matches!(watcher.recv().await, ServerMsg::Registered { .. }));
    server.stop().await;
}

/// One address may bind only so many new names an hour: a host cannot fill the database
/// with throw-away identities. Owners coming back are not new names.
#[tokio::test]
async fn one_address_binds_a_bounded_number_of_new_names() {
    let config = Config {
        names: NamesConfig {
            new_names_per_ip_hour: 3,
            ..NamesConfig::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(Raw::registered(server.addr, &format!("user{n}"), 5000).await);
    }
    let mut fourth = Raw::hello(server.addr).await;
    assert!(refused_with(
        &fourth.register("user3", 5000).await,
        ErrorCode::RateLimited
    ));
    let first = held.remove(0);
    let identity = Identity::from_seed(first.identity.seed());
    drop(first);
    let mut again = false;
    for _ in 0..50 {
        let mut c = Raw::hello_as(server.addr, &identity).await;
        if matches!(
            c.register("user0", 5000).await,
            ServerMsg::Registered { .. }
        ) {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again, "the owner could not come back");
    server.stop().await;
}
