//! A man in the middle on the signaling path, against the real `fala` binary: a proxy between
//! one client and the server decodes every frame and swaps a media key. The client on the
//! other end refuses the call, says why and exits non-zero; no call goes on with keys the two
//! people do not share.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fala_proto::{
    decode_body, encode_frame, split_frame, ClientMsg, ServerMsg, CLIENT_MSG_TYPES,
    SERVER_MSG_TYPES,
};
use fala_server::Config;
use serde_bytes::ByteBuf;
use support::audio::speech_wav;
use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Rewrite = Arc<dyn Fn(ClientMsg) -> ClientMsg + Send + Sync>;

/// Forwards every connection to `server`, passing what the client sends through `rewrite`
/// (what the server sends goes back untouched, decoded and re-encoded all the same).
async fn proxy(server: SocketAddr, rewrite: Rewrite) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = TcpStream::connect(server).await.unwrap();
            let (c_rd, c_wr) = client.into_split();
            let (s_rd, s_wr) = upstream.into_split();
            let rewrite = rewrite.clone();
            tokio::spawn(pump(c_rd, s_wr, move |body| {
                let msg: ClientMsg = decode_body(body, CLIENT_MSG_TYPES).unwrap();
                encode_frame(&rewrite(msg)).unwrap()
            }));
            tokio::spawn(pump(s_rd, c_wr, |body| {
                let msg: ServerMsg = decode_body(body, SERVER_MSG_TYPES).unwrap();
                encode_frame(&msg).unwrap()
            }));
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    change: impl Fn(&[u8]) -> bytes::Bytes,
) {
    let mut buf = BytesMut::new();
    loop {
        while let Ok(Some(body)) = split_frame(&mut buf) {
            if to.write_all(&change(&body)).await.is_err() {
                return;
            }
        }
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Some other 32-byte key.
fn other_key() -> Option<ByteBuf> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    Some(ByteBuf::from(key.to_vec()))
}

fn fala(server: SocketAddr, args: &[&str]) -> Child {
    let speech = speech_wav().to_str().unwrap().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fala"));
    support::person_config_dir(&mut cmd, args);
    cmd.args(args)
        .args(["--server", &server.to_string(), "--plain"])
        .args(["--input", &speech, "--output", "/dev/null"])
        .args(["--hangup-after", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE");
    cmd.spawn().expect("start fala")
}

fn finish(child: Child) -> Output {
    support::finish(child, Duration::from_secs(30))
}

fn last_line(out: &Output) -> String {
    support::last_stderr_line(out)
}

/// Runs Ana (calling, through `ana_via`) and Bob (answering, through `bob_via`).
fn call(ana_via: SocketAddr, bob_via: SocketAddr) -> (Output, Output) {
    let bob = fala(bob_via, &["answer", "--name", "bob"]);
    std::thread::sleep(Duration::from_millis(500));
    let ana = fala(ana_via, &["call", "bob", "--name", "ana"]);
    (finish(ana), finish(bob))
}

/// The proxy sits on Bob's link and swaps the key in his `accept`: Ana finds it is not signed
/// by Bob's identity and hangs up before any audio.
#[test]
fn a_swapped_callee_key_is_refused_by_the_caller() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start(Config::default()));
    let swap: Rewrite = Arc::new(|msg| match msg {
        ClientMsg::Accept {
            call_id,
            media,
            signature,
            ..
        } => ClientMsg::Accept {
            call_id,
            media,
            key: other_key(),
            signature,
            candidates: Vec::new(),
            hide_address: false,
        },
        other => other,
    });
    let bob_via = rt.block_on(proxy(server.addr, swap));
    let (ana, _bob) = call(server.addr, bob_via);
    assert!(!ana.status.success(), "{}", last_line(&ana));
    let why = last_line(&ana);
    assert!(
        why.contains("not safe") && why.contains("not signed by its identity"),
        "{why}"
    );
    rt.block_on(server.stop());
}

/// The proxy sits on Ana's link and swaps the key she reveals: Bob finds it does not match
/// her commitment and hangs up.
#[test]
fn a_swapped_revealed_key_is_refused_by_the_callee() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start(Config::default()));
    let swap: Rewrite = Arc::new(|msg| match msg {
        ClientMsg::Reveal {
            call_id, signature, ..
        } => ClientMsg::Reveal {
            call_id,
            key: other_key().unwrap(),
            signature,
        },
        other => other,
    });
    let ana_via = rt.block_on(proxy(server.addr, swap));
    let (_ana, bob) = call(ana_via, server.addr);
    assert!(!bob.status.success(), "{}", last_line(&bob));
    let why = last_line(&bob);
    assert!(why.contains("changed on the way"), "{why}");
    rt.block_on(server.stop());
}

/// The same proxy passing everything through untouched: the call works, so the refusals above
/// come from the swaps, not from the proxy.
#[test]
fn an_honest_proxy_changes_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start(Config::default()));
    let via = rt.block_on(proxy(server.addr, Arc::new(|msg| msg)));
    let (ana, bob) = call(via, via);
    assert!(ana.status.success(), "{}", last_line(&ana));
    assert!(bob.status.success(), "{}", last_line(&bob));
    rt.block_on(server.stop());
}
