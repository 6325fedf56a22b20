//! Test support: a real server on 127.0.0.1:0 and a raw protocol client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use fala_proto::identity::Identity;
use fala_proto::{
    decode_body, encode_frame, split_frame, ClientMsg, MediaAddr, ServerMsg, PROTOCOL_VERSION,
    SERVER_MSG_TYPES,
};
use fala_server::Config;
use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running in the test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, config)
    }

    pub fn start_on(listener: TcpListener, config: Config) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(fala_server::run(listener, config, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// Graceful shutdown; waits for the server to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }

    /// Whether the server task is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// A client speaking the raw protocol, for exact control in tests.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The `welcome` challenge, once hello is done.
    pub challenge: Vec<u8>,
    /// Who this client is (a fresh identity unless a test sets one).
    pub identity: Identity,
}

pub const WAIT: Duration = Duration::from_secs(5);

/// Name rules for tests that register many names from 127.0.0.1 (the per-address budget for
/// new names is off; everything else as by default).
pub fn unlimited_new_names() -> fala_server::NamesConfig {
    fala_server::NamesConfig {
        new_names_per_ip_hour: 0,
        ..fala_server::NamesConfig::default()
    }
}

/// Waits for a child with a time limit, so a hung client fails the test instead of CI.
pub fn finish(child: std::process::Child, limit: Duration) -> std::process::Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &id.to_string()])
                .status();
            panic!("fala did not finish within {limit:?}");
        }
    }
}

/// A process's standard error, as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line of a process's standard error (the one-line reason `fala` exits with).
pub fn last_stderr_line(out: &std::process::Output) -> String {
    stderr(out).lines().last().unwrap_or_default().to_string()
}

/// Gives a `fala` process the config folder of the person registering as `args`' `--name`
/// (their identity, settings and known servers), under the system's temp folder and kept for
/// this test process: tests never touch the user's files, every name spelled differently is
/// a different person, and the same name run twice is the same person coming back.
pub fn person_config_dir(cmd: &mut std::process::Command, args: &[&str]) {
    let name = args
        .iter()
        .position(|a| *a == "--name")
        .and_then(|i| args.get(i + 1))
        .copied()
        .unwrap_or("nobody");
    let dir = std::env::temp_dir()
        .join(format!("fala-test-people-{}", std::process::id()))
        .join(name);
    cmd.env("FALA_CONFIG_DIR", dir);
}

/// A server for tests with thousands of users, all from 127.0.0.1: no per-address limits
/// (connections, invites, new names).
pub fn crowd_config() -> Config {
    Config {
        limits: fala_server::Limits {
            max_connections_per_ip: 0,
            ..fala_server::Limits::default()
        },
        names: unlimited_new_names(),
        ..Config::default()
    }
}

pub fn media(port: u16) -> MediaAddr {
    MediaAddr::new(std::net::Ipv4Addr::LOCALHOST, port)
}

impl Raw {
    /// A raw client on a stream the test set up itself (socket options, say).
    pub fn on(stream: TcpStream) -> Raw {
        Raw {
            stream,
            buf: BytesMut::new(),
            challenge: Vec::new(),
            identity: Identity::generate().unwrap(),
        }
    }

    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw::on(TcpStream::connect(addr).await.unwrap())
    }

    /// Connects and says hello.
    pub async fn hello(addr: SocketAddr) -> Raw {
        let mut c = Raw::connect(addr).await;
        c.send(&ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            agent: "test".into(),
        })
        .await;
        match c.recv().await {
            ServerMsg::Welcome { challenge, .. } => c.challenge = challenge.into_vec(),
            other => panic!("expected welcome, got {other:?}"),
        }
        c
    }

    /// Connects and says hello as `identity`.
    pub async fn hello_as(addr: SocketAddr, identity: &Identity) -> Raw {
        let mut c = Raw::hello(addr).await;
        c.identity = Identity::from_seed(identity.seed());
        c
    }

    /// Connects, says hello and registers `name`; panics if refused.
    pub async fn registered(addr: SocketAddr, name: &str, port: u16) -> Raw {
        let mut c = Raw::hello(addr).await;
        let reply = c.register(name, port).await;
        assert!(
            matches!(reply, ServerMsg::Registered { .. }),
            "register {name}: {reply:?}"
        );
        c
    }

    /// Connects, says hello and registers `name` as `identity`; panics if refused.
    pub async fn registered_as(
        addr: SocketAddr,
        name: &str,
        port: u16,
        identity: &Identity,
    ) -> Raw {
        let mut c = Raw::hello_as(addr, identity).await;
        let reply = c.register(name, port).await;
        assert!(
            matches!(reply, ServerMsg::Registered { .. }),
            "register {name}: {reply:?}"
        );
        c
    }

    pub async fn register(&mut self, name: &str, port: u16) -> ServerMsg {
        let msg = self.register_msg(name, media(port));
        self.send(&msg).await;
        self.recv().await
    }

    /// A `register` for `name` signed with this client's identity and challenge.
    pub fn register_msg(&self, name: &str, media: MediaAddr) -> ClientMsg {
        ClientMsg::Register {
            name: name.into(),
            media,
            identity: ByteBuf::from(self.identity.public().to_vec()),
            signature: ByteBuf::from(self.identity.sign_register(&self.challenge, name).to_vec()),
            resume: None,
        }
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        let frame = encode_frame(msg).unwrap();
        self.stream.write_all(&frame).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Next message, or `None` when the server closed the connection.
    pub async fn try_recv(&mut self) -> Option<ServerMsg> {
        self.try_recv_within(WAIT).await
    }

    /// Like [`Raw::try_recv`] with a chosen wait (paused-clock tests wait in virtual time).
    pub async fn try_recv_within(&mut self, wait: Duration) -> Option<ServerMsg> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(body) = split_frame(&mut self.buf).unwrap() {
                    return Some(decode_body(&body, SERVER_MSG_TYPES).unwrap());
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("no message from the server in time")
    }

    pub async fn recv(&mut self) -> ServerMsg {
        self.try_recv().await.expect("server closed the connection")
    }

    pub async fn recv_within(&mut self, wait: Duration) -> ServerMsg {
        self.try_recv_within(wait)
            .await
            .expect("server closed the connection")
    }

    /// Reads until a message matches, skipping others (presence noise); panics on close.
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let m = self.recv().await;
            if pred(&m) {
                return m;
            }
        }
    }

    /// Reads until the server closes the connection, returning what came before.
    pub async fn until_closed(&mut self) -> Vec<ServerMsg> {
        let mut seen = Vec::new();
        while let Some(m) = self.try_recv().await {
            seen.push(m);
        }
        seen
    }
}

pub mod audio;
