//! Test support: a real server on 127.0.0.1:0 and a raw protocol client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use fala_proto::{
    decode_body, encode_frame, split_frame, ClientMsg, MediaAddr, ServerMsg, PROTOCOL_VERSION,
    SERVER_MSG_TYPES,
};
use fala_server::Config;
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
}

pub const WAIT: Duration = Duration::from_secs(5);

pub fn media(port: u16) -> MediaAddr {
    MediaAddr::new(std::net::Ipv4Addr::LOCALHOST, port)
}

impl Raw {
    /// A raw client on a stream the test set up itself (socket options, say).
    pub fn on(stream: TcpStream) -> Raw {
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// Connects and says hello.
    pub async fn hello(addr: SocketAddr) -> Raw {
        let mut c = Raw::connect(addr).await;
        c.send(&ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            agent: "test".into(),
        })
        .await;
        assert!(matches!(c.recv().await, ServerMsg::Welcome { .. }));
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

    pub async fn register(&mut self, name: &str, port: u16) -> ServerMsg {
        self.send(&ClientMsg::Register {
            name: name.into(),
            media: media(port),
        })
        .await;
        self.recv().await
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
