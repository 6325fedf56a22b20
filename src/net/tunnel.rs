//! The media tunnel through the signaling connection, for networks that block UDP (as Mumble
//! tunnels voice through its TCP control channel): datagrams for the server's relay go up as
//! `media` messages, and the other leg's come back down the same way.
//!
//! The signaling task and the call's media thread meet here through bounded queues: a
//! datagram that finds a queue full is lost, as on the network.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::client::Command;

/// Datagrams from the server waiting for the media thread (which drains them twice a frame).
const INBOUND_QUEUE: usize = 64;
/// Room kept in the signaling task's command queue for what the person does (a hang-up
/// must never find it full of media): media goes up only while more than this is free.
const COMMAND_RESERVE: usize = 64;

/// Where datagrams that came down the connection go: the running call's end, if any. Shared
/// by the signaling task (which delivers) and the phone (which opens an end per call).
#[derive(Clone, Default)]
pub struct TunnelSlot(Arc<Mutex<Option<SyncSender<Vec<u8>>>>>);

impl TunnelSlot {
    /// A datagram came down the connection: to the call, or nowhere.
    pub fn deliver(&self, datagram: Vec<u8>) {
        if let Ok(slot) = self.0.lock() {
            if let Some(to_call) = slot.as_ref() {
                let _ = to_call.try_send(datagram);
            }
        }
    }

    /// The media thread's end for a new call, sending up through `commands` (the signaling
    /// task's queue); it replaces the last call's.
    pub fn open(&self, commands: mpsc::Sender<Command>) -> TunnelEnd {
        let (tx, rx) = sync_channel(INBOUND_QUEUE);
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(tx);
        }
        TunnelEnd {
            up: commands,
            down: rx,
        }
    }
}

/// A call's end of the tunnel, owned by its media thread.
pub struct TunnelEnd {
    up: mpsc::Sender<Command>,
    down: Receiver<Vec<u8>>,
}

impl TunnelEnd {
    /// Sends `token ‖ datagram` to the relay through the connection; false when it could not
    /// be queued (the connection is down or busy): the datagram is lost.
    pub fn send(&self, datagram: &[u8]) -> bool {
        self.up.capacity() > COMMAND_RESERVE
            && self
                .up
                .try_send(Command::Media(datagram.to_vec(), Instant::now()))
                .is_ok()
    }

    /// The next datagram that came down the connection, if one is waiting.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        self.down.try_recv().ok()
    }
}
