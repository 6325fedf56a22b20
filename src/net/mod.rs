//! Signaling: the client's side of the TCP connection to fala-server.
//!
//! A task on a tokio runtime owns the connection; the rest of the program talks to it with
//! [`Command`]s on a bounded channel and hears back through [`Event`]s. It reconnects and
//! registers again by itself when the server goes away.

mod client;
mod conn;
pub mod tls;
mod tunnel;

pub use client::{spawn, wait_for, Command, Event, Security, SignalConfig, SignalHandle};
pub use conn::{ConnError, Connection};
pub use tunnel::{TunnelEnd, TunnelSlot};

/// This host's addresses other than loopback, in interface order: what a change of network
/// changes (the signaling connection's own address, the media's candidates, the watch that
/// counts changes all read them here).
pub fn host_addresses() -> std::io::Result<Vec<std::net::IpAddr>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .filter(|i| !i.is_loopback())
        .map(|i| i.ip())
        .collect())
}
