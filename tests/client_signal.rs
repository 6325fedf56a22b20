//! The client signaling task against a real server: registering, being refused, and
//! re-registering by itself after a server restart.

mod support;

use std::time::Duration;

use fala::net::{self, wait_for, Event, Security, SignalConfig};
use fala_proto::{ClientMsg, ErrorCode, ServerMsg};
use fala_server::Config;
use support::{Raw, TestServer};
use tokio::net::TcpListener;

fn config(addr: std::net::SocketAddr, name: &str) -> SignalConfig {
    SignalConfig {
        server: addr.to_string(),
        security: Security::Plain,
        name: name.into(),
        identity: std::sync::Arc::new(fala_proto::identity::Identity::generate().unwrap()),
        media: "0.0.0.0:5555".parse().unwrap(),
        notify: None,
        tunnel: Default::default(),
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn registers_and_reports_presence() {
    let server = TestServer::start(Config::default()).await;
    let (handle, mut events) = net::spawn(config(server.addr, "ana"));
    let media = wait_for(&mut events, WAIT, |e| match e {
        Event::Registered {
            media,
            reconnected: false,
            ..
        } => Some(*media),
        _ => None,
    })
    .await
    .expect("registered");
    assert_eq!(media.to_string(), "127.0.0.1:5555");
    assert!(handle.send(ClientMsg::Watch {
        names: vec!["bob".into()]
    }));
    let watching = wait_for(&mut events, WAIT, |e| match e {
        Event::Server(ServerMsg::Watching { users }) => Some(users.len()),
        _ => None,
    })
    .await;
    assert_eq!(watching, Some(0), "bob is not online yet");
    let _bob = Raw::registered(server.addr, "bob", 1).await;
    let joined = wait_for(&mut events, WAIT, |e| match e {
        Event::Server(ServerMsg::UserJoined { user }) => Some(user.name.clone()),
        _ => None,
    })
    .await;
    assert_eq!(joined.as_deref(), Some("bob"));
    server.stop().await;
}

#[tokio::test]
async fn taken_name_is_refused_and_the_task_stops() {
    let server = TestServer::start(Config::default()).await;
    let _ana = Raw::registered(server.addr, "Ana", 1).await;
    let (_h, mut events) = net::spawn(config(server.addr, "ana"));
    let refused = wait_for(&mut events, WAIT, |e| match e {
        Event::Refused { code, message } => Some((*code, message.clone())),
        _ => None,
    })
    .await
    .expect("refused");
    assert_eq!(refused.0, ErrorCode::NameOwned);
    assert!(
        refused.1.contains("belongs to someone else"),
        "{}",
        refused.1
    );
    assert!(
        wait_for(&mut events, WAIT, |e| (*e == Event::Stopped).then_some(()))
            .await
            .is_some()
    );
    server.stop().await;
}

#[tokio::test]
async fn unreachable_server_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (_h, mut events) = net::spawn(config(addr, "ana"));
    let msg = wait_for(&mut events, WAIT, |e| match e {
        Event::Unreachable { message } => Some(message.clone()),
        _ => None,
    })
    .await
    .expect("unreachable");
    assert!(msg.contains("cannot reach"), "{msg}");
}

#[tokio::test]
async fn server_restart_client_registers_again_by_itself() {
    let server = TestServer::start(Config::default()).await;
    let addr = server.addr;
    let (handle, mut events) = net::spawn(config(addr, "ana"));
    wait_for(&mut events, WAIT, |e| {
        matches!(e, Event::Registered { .. }).then_some(())
    })
    .await
    .expect("registered");
    server.stop().await;
    let lost = wait_for(&mut events, WAIT, |e| match e {
        Event::ConnectionLost { message, .. } => Some(message.clone()),
        _ => None,
    })
    .await
    .expect("told the connection was lost");
    assert!(lost.contains("shut down"), "{lost}");
    // A new server on the same address: the client comes back by itself.
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = TestServer::start_on(listener, Config::default());
    let again = wait_for(&mut events, Duration::from_secs(30), |e| match e {
        Event::Registered {
            name,
            reconnected: true,
            ..
        } => Some(name.clone()),
        _ => None,
    })
    .await;
    assert_eq!(again.as_deref(), Some("ana"));
    let mut bob = Raw::registered(server.addr, "bob", 1).await;
    bob.send(&ClientMsg::Lookup { name: "ana".into() }).await;
    assert!(matches!(bob.recv().await, ServerMsg::UserFound { .. }));
    // Disconnect (the original's 0) frees the name.
    handle.disconnect();
    wait_for(&mut events, WAIT, |e| (*e == Event::Stopped).then_some(()))
        .await
        .expect("stopped");
    let mut freed = false;
    for _ in 0..50 {
        bob.send(&ClientMsg::Lookup { name: "ana".into() }).await;
        if matches!(bob.recv().await, ServerMsg::UserNotFound { .. }) {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed);
    server.stop().await;
}
