//! A fala-server running inside the window, so one command gives a working softphone on one
//! machine when no server is running yet.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

#[derive(Debug, Error)]
pub enum LocalServerError {
    #[error("{0} is not an address and port")]
    BadAddress(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(fala_server::tls::TlsError),
}

/// The running server; dropping it shuts the server down (clients are told).
pub struct LocalServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl LocalServer {
    /// Listens on `server` (the address typed on the connect screen) and serves it on `rt`.
    /// Binding happens here, synchronously, so a failure is reported at once. `tls`: speak TLS
    /// with a certificate kept in this folder (`local-server/` in it; made in memory without
    /// one); `None`: plain TCP.
    pub fn start(
        rt: &Handle,
        server: &str,
        tls: Option<Option<&Path>>,
    ) -> Result<Self, LocalServerError> {
        let addr = resolve_literal(server)?;
        let tls = match tls {
            None => None,
            Some(dir) => Some(certificate(dir, addr).map_err(LocalServerError::Tls)?),
        };
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|source| LocalServerError::Bind { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let _entered = rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|source| LocalServerError::Bind { addr, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        rt.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = fala_server::run(listener, config(tls), shutdown).await {
                tracing::warn!("local server stopped: {e}");
            }
        });
        tracing::info!("local server listening on {addr}");
        Ok(LocalServer {
            addr,
            stop: Some(stop),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The local server is configured like `fala-server` with no options: in particular it hosts
/// the `echo` user, so "Test your sound" works on the one-command demo.
fn config(tls: Option<Arc<rustls::ServerConfig>>) -> fala_server::Config {
    fala_server::Config {
        echo: Some(fala_server::EchoConfig::default()),
        tls,
        ..fala_server::Config::default()
    }
}

/// The local server's certificate: kept in `dir/local-server` so its fingerprint (which the
/// window pins) stays the same from one start to the next; made in memory without a folder.
fn certificate(
    dir: Option<&Path>,
    addr: SocketAddr,
) -> Result<Arc<rustls::ServerConfig>, fala_server::tls::TlsError> {
    let names = vec!["localhost".to_string(), addr.ip().to_string()];
    let identity = match dir {
        Some(dir) => fala_server::tls::load_or_make(&dir.join("local-server"), &names)?,
        None => fala_server::tls::make(&names)?,
    };
    Ok(identity.config)
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `host:port` without a DNS query (the UI thread must not block): an IP literal or
/// `localhost`.
fn resolve_literal(server: &str) -> Result<SocketAddr, LocalServerError> {
    let bad = || LocalServerError::BadAddress(server.to_string());
    if let Ok(addr) = server.trim().parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = server.trim().rsplit_once(':').ok_or_else(bad)?;
    if !host.eq_ignore_ascii_case("localhost") {
        return Err(bad());
    }
    let port = port.parse::<u16>().map_err(|_| bad())?;
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Whether `server` names this machine: `localhost`, a loopback or unspecified address, or an
/// address one of our interfaces has (binding a UDP socket to it succeeds only then). Never
/// asks DNS.
pub fn is_on_this_machine(server: &str) -> bool {
    let Ok(addr) = resolve_literal(server) else {
        return false;
    };
    let ip: IpAddr = addr.ip();
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_local_addresses_without_dns() {
        assert!(is_on_this_machine("127.0.0.1:7400"));
        assert!(is_on_this_machine("localhost:7400"));
        assert!(!is_on_this_machine("192.0.2.1:7400"));
        assert!(!is_on_this_machine("example.com:7400"));
        assert!(!is_on_this_machine("nonsense"));
    }
}
