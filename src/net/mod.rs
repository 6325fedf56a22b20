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
