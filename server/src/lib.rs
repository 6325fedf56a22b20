//! fala-server: registration, presence and call routing for Fala clients over TCP.
//!
//! [`run`] serves one listener until a shutdown future resolves; the binary is a thin wrapper.
//! Audio never passes through here (except for the built-in echo service): the server tells
//! each side of a call where the other receives its media.

#![forbid(unsafe_code)]

mod calls;
pub mod data_dir;
pub mod echo;
mod hub;
pub mod limits;
pub mod names;
mod per_ip;
mod registry;
mod relay;
mod services;
mod session;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fala_proto::{ErrorCode, ServerMsg};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

pub use echo::EchoConfig;
pub use limits::{Limits, Timeouts};
pub use names::NamesConfig;

use hub::{ipv4_of, Hub};
use names::NameBook;

/// Everything that can be tuned on a server.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// Host the `echo` user (off in `Config::default()`, on in the command line's default).
    pub echo: Option<EchoConfig>,
    /// Speak TLS with this configuration; `None` is plain TCP (tests, interop, `--plain`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The name database file; `None` keeps the bindings in memory for this run only.
    pub names_db: Option<PathBuf>,
    pub names: NamesConfig,
    /// Seed of the identity of the users the server hosts (the echo); `None`: a new one each
    /// run, so clients that pinned it see it change.
    pub service_identity_seed: Option<[u8; 32]>,
    /// Hand the whole online list to anyone who asks (`list`, `subscribe`): for small private
    /// servers. Off by default: people are found with `search` and followed with `watch`.
    pub open_list: bool,
}

/// Serves `listener` until `shutdown` resolves, then tells every client the server is going
/// away and waits (briefly) for their sessions to flush.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let echo_config = config.echo.clone();
    let echo_enabled = echo_config.is_some();
    let names = NameBook::open(config.names_db.as_deref(), config.names.clone())
        .map_err(std::io::Error::other)?;
    let hub = Hub::new(config, names);
    // The UDP port (the TCP port's number when free) answers STUN Binding requests, so
    // clients learn their public address, and carries the echo user's media when it is on.
    let local = listener.local_addr()?;
    let socket = echo::bind(ipv4_of(local.ip()), local.port()).await?;
    let relay = relay::Relay::default();
    // A clone of the socket, for relayed datagrams that came through a connection.
    relay.set_udp(socket2::SockRef::from(&socket).try_clone()?.into());
    let (echo, task) = echo::spawn(
        socket,
        echo_config.unwrap_or_default(),
        hub.service_identity.clone(),
        relay.clone(),
    )?;
    hub.lock().relay = Some((relay, echo.port));
    if echo.port != local.port() {
        tracing::warn!(
            "UDP port {} is taken: STUN and the echo use UDP port {} instead",
            local.port(),
            echo.port
        );
    }
    if echo_enabled {
        tracing::info!("UDP port {}: STUN, the media relay and the echo", echo.port);
        hub.lock().add_echo_user(echo);
    } else {
        tracing::info!("UDP port {}: STUN and the media relay", echo.port);
    }
    let echo_task = Some(task);
    let tracker = TaskTracker::new();
    let live = Arc::new(AtomicUsize::new(0));
    let per_ip = Arc::new(per_ip::PerIp::default());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning or dying.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                start_session(&hub, &tracker, (&live, &per_ip), stream, peer);
            }
        }
    }
    tracing::info!("shutting down: telling {} clients", hub.lock().conns.len());
    hub.lock().shutdown("the server is shutting down");
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), tracker.wait()).await;
    if let Some(task) = echo_task {
        task.abort();
    }
    hub.lock().names.close();
    Ok(())
}

fn start_session(
    hub: &Arc<Hub>,
    tracker: &TaskTracker,
    (live, per_ip): (&Arc<AtomicUsize>, &Arc<per_ip::PerIp>),
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let limits = &hub.config.limits;
    let admitted = if live.load(Ordering::Relaxed) >= limits.max_connections {
        Err((ErrorCode::ServerFull, "the server is full; try again later"))
    } else {
        let now = std::time::Instant::now();
        per_ip::PerIp::admit(per_ip, peer.ip(), limits, now).ok_or((
            ErrorCode::TooManyConnections,
            "too many connections from your address; close some and try again",
        ))
    };
    // The hello deadline counts from here, through the TLS handshake.
    let hello_by = tokio::time::Instant::now() + hub.config.timeouts.hello;
    let tls = hub.config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let slot = match admitted {
        Ok(slot) => slot,
        Err((code, text)) => {
            let msg = ServerMsg::error(code, text);
            tracker.spawn(async move {
                // Told in the connection's own terms, so the client can show why.
                match tls {
                    None => session::refuse(stream, &msg).await,
                    Some(tls) => {
                        if let Some(stream) = handshake(&tls, stream, hello_by).await {
                            session::refuse(stream, &msg).await;
                        }
                    }
                }
            });
            return;
        }
    };
    let local_ip = stream
        .local_addr()
        .map(|a| ipv4_of(a.ip()))
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
    let (conn, rx) = {
        let mut state = hub.lock();
        state.add_conn(hub.config.limits.out_queue, ipv4_of(peer.ip()), local_ip)
    };
    live.fetch_add(1, Ordering::Relaxed);
    let hub = hub.clone();
    let live = live.clone();
    tracker.spawn(async move {
        match tls {
            None => session::serve(hub, stream, (conn, slot, hello_by), rx).await,
            Some(tls) => match handshake(&tls, stream, hello_by).await {
                Some(stream) => session::serve(hub, stream, (conn, slot, hello_by), rx).await,
                None => {
                    hub.lock().disconnect(conn, false);
                }
            },
        }
        live.fetch_sub(1, Ordering::Relaxed);
    });
}

/// The TLS handshake, by the connection's hello deadline; `None` if it failed or was too slow.
async fn handshake(
    tls: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    by: tokio::time::Instant,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout_at(by, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake failed: {e}");
            None
        }
        Err(_) => None,
    }
}
