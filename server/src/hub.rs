//! The shared state of one server: connections, registered users, calls and presence
//! subscribers, behind one std `Mutex` that is never held across an `.await`.
//!
//! Everything a connection is sent goes through its bounded outgoing queue while the lock is
//! held, so all clients see events in one global order (a `ringing` can never overtake the
//! `call_connected` that follows it).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use fala_proto::identity::{Identity, CHALLENGE_LEN, IDENTITY_LEN};
use fala_proto::{
    encode_frame, Availability, CallId, Candidate, MediaAddr, RelayOffer, ServerMsg, UserInfo,
};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::calls::Call;
use crate::names::NameBook;
use crate::Config;

/// Identifies one TCP connection for the life of the server.
pub type ConnId = u64;

/// One connected client.
pub(crate) struct Conn {
    /// Its outgoing queue; `None` once the server decided to drop it.
    pub tx: Option<mpsc::Sender<Bytes>>,
    /// The name key it registered, if any.
    pub user: Option<String>,
    /// Address the connection comes from, used when a registration leaves the media IP open.
    pub peer_ip: Ipv4Addr,
    /// Local address the client reached us on (the address a built-in service advertises).
    pub local_ip: Ipv4Addr,
    /// Name keys this user refuses calls from (see `block`), at most [`fala_proto::BLOCK_MAX`].
    pub blocked: HashSet<String>,
    /// The callees of this connection's recent invites, oldest first (see
    /// [`crate::calls::REINVITES_PER_WINDOW`]).
    pub recent_invites: VecDeque<(String, Instant)>,
    /// The name keys whose presence it watches (see `watch`), at most `WATCH_MAX`.
    pub watching: HashSet<String>,
}

/// One registered user.
pub(crate) struct User {
    pub name: String,
    pub media: MediaAddr,
    /// The identity key that proved it holds the name.
    pub identity: [u8; IDENTITY_LEN],
    /// `None` for a service hosted by the server itself (the echo user).
    pub conn: Option<ConnId>,
    pub call: Option<CallId>,
    /// Its connection was lost mid-call at this time: the name and the call wait
    /// [`crate::limits::Timeouts::resume`] for it to come back on a new connection.
    pub away_since: Option<Instant>,
}

impl User {
    pub fn status(&self) -> Availability {
        if self.call.is_some() {
            Availability::InCall
        } else {
            Availability::Available
        }
    }

    /// How others see this user (never its address).
    pub fn info(&self) -> UserInfo {
        UserInfo {
            name: self.name.clone(),
            status: self.status(),
            identity: ByteBuf::from(self.identity.to_vec()),
        }
    }

    /// `call_connected` telling the other side of `call_id` that this user is its peer, to be
    /// reached at `media`, with this user's signed media key if the call is encrypted.
    pub fn connected(
        &self,
        call_id: CallId,
        media: MediaAddr,
        signed_key: Option<(ByteBuf, ByteBuf)>,
        relay: Option<RelayOffer>,
        candidates: Vec<Candidate>,
    ) -> ServerMsg {
        let (key, signature) = signed_key.unzip();
        ServerMsg::CallConnected {
            call_id,
            peer: self.name.clone(),
            media,
            identity: ByteBuf::from(self.identity.to_vec()),
            key,
            signature,
            relay,
            candidates,
        }
    }

    /// Where `viewer` should send this user's audio in a call. A service advertises the
    /// address the viewer reached us on.
    pub fn media_for(&self, viewer: Option<&Conn>) -> MediaAddr {
        let mut media = self.media;
        if self.conn.is_none() && media.ip().is_unspecified() {
            if let Some(v) = viewer {
                media = MediaAddr::new(v.local_ip, media.port());
            }
        }
        media
    }
}

pub(crate) struct State {
    pub conns: HashMap<ConnId, Conn>,
    /// By name key, in order (lists are answered a page at a time).
    pub users: BTreeMap<String, User>,
    pub calls: HashMap<CallId, Call>,
    pub subscribers: HashSet<ConnId>,
    /// Who watches whom: name key → the connections that asked for that person's presence.
    pub watchers: HashMap<String, HashSet<ConnId>>,
    next_conn: ConnId,
    /// Stops new sessions once shutdown began.
    pub closing: bool,
    /// The echo service, when it is on.
    pub echo: Option<crate::echo::EchoHandle>,
    /// The media relay and its UDP port, once the port is bound.
    pub relay: Option<(crate::relay::Relay, u16)>,
    /// Who owns which name, on disk.
    pub names: NameBook,
    /// The `type` of the request being handled, named in the errors that answer it.
    pub replying_to: Option<&'static str>,
}

/// Shared handle to the server state.
pub(crate) struct Hub {
    state: Mutex<State>,
    pub config: Config,
    /// The identity of the users the server hosts itself (the echo).
    pub service_identity: Arc<Identity>,
}

impl Hub {
    pub fn new(config: Config, names: NameBook) -> Arc<Hub> {
        let service_identity = Arc::new(match config.service_identity_seed {
            Some(seed) => Identity::from_seed(seed),
            None => Identity::generate().expect("OS random generator"),
        });
        Arc::new(Hub {
            service_identity,
            state: Mutex::new(State {
                conns: HashMap::new(),
                users: BTreeMap::new(),
                calls: HashMap::new(),
                subscribers: HashSet::new(),
                watchers: HashMap::new(),
                next_conn: 1,
                closing: false,
                echo: None,
                relay: None,
                names,
                replying_to: None,
            }),
            config,
        })
    }

    /// The `welcome` for one connection, with its own registration challenge.
    pub fn welcome(&self, challenge: &[u8; CHALLENGE_LEN]) -> ServerMsg {
        let t = &self.config.timeouts;
        ServerMsg::Welcome {
            version: fala_proto::PROTOCOL_VERSION,
            server: format!("fala-server {}", env!("CARGO_PKG_VERSION")),
            heartbeat_ms: t.heartbeat.as_millis() as u64,
            idle_timeout_ms: t.idle.as_millis() as u64,
            challenge: ByteBuf::from(challenge.to_vec()),
        }
    }

    /// Locks the state. A panic while holding the lock cannot leave it half-updated in a way
    /// that matters more than losing the server, so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Turns any peer address into the IPv4 address media should use.
pub(crate) fn ipv4_of(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

impl State {
    /// Adds a connection and returns its id and the receiving end of its queue.
    pub fn add_conn(
        &mut self,
        queue: usize,
        peer_ip: Ipv4Addr,
        local_ip: Ipv4Addr,
    ) -> (ConnId, mpsc::Receiver<Bytes>) {
        let id = self.next_conn;
        self.next_conn += 1;
        let (tx, rx) = mpsc::channel(queue);
        self.conns.insert(
            id,
            Conn {
                tx: Some(tx),
                user: None,
                peer_ip,
                local_ip,
                blocked: HashSet::new(),
                recent_invites: VecDeque::new(),
                watching: HashSet::new(),
            },
        );
        (id, rx)
    }

    /// Queues an already encoded frame for a connection. A client whose queue is full is not
    /// keeping up; it is dropped rather than letting it hold memory or slow others.
    pub fn send_frame(&mut self, conn: ConnId, frame: Bytes) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(tx) = &c.tx {
            if tx.try_send(frame).is_err() {
                tracing::warn!(conn, "outgoing queue full or closed; dropping connection");
                c.tx = None;
            }
        }
    }

    /// Queues one message for a connection. An error sent while a request is handled names
    /// that request.
    pub fn send(&mut self, conn: ConnId, msg: &ServerMsg) {
        let named;
        let msg = match (msg, self.replying_to) {
            (ServerMsg::Error { request: None, .. }, Some(kind)) => {
                let mut with = msg.clone();
                if let ServerMsg::Error { request, .. } = &mut with {
                    *request = Some(kind.to_string());
                }
                named = with;
                &named
            }
            _ => msg,
        };
        match encode_frame(msg) {
            Ok(frame) => self.send_frame(conn, frame),
            // The message itself may be large (a list): the log names its type only.
            Err(e) => tracing::error!(conn, kind = msg.kind(), "cannot encode a message: {e}"),
        }
    }

    /// Sends a message to the user with this name key, if it has a connection.
    pub fn send_user(&mut self, key: &str, msg: &ServerMsg) {
        if let Some(conn) = self.users.get(key).and_then(|u| u.conn) {
            self.send(conn, msg);
        }
    }

    /// Sends one presence event about the user under `key` to every subscriber and everyone
    /// watching that user, but `except`, once each, encoding it once.
    pub fn broadcast(&mut self, key: &str, msg: &ServerMsg, except: Option<ConnId>) {
        let watching = self.watchers.get(key);
        if self.subscribers.is_empty() && watching.is_none() {
            return;
        }
        let Ok(frame) = encode_frame(msg) else {
            return;
        };
        let mut targets: Vec<ConnId> = self
            .subscribers
            .iter()
            .chain(watching.into_iter().flatten())
            .copied()
            .filter(|c| Some(*c) != except)
            .collect();
        targets.sort_unstable();
        targets.dedup();
        for conn in targets {
            self.send_frame(conn, frame.clone());
        }
    }

    /// Stops sending to a connection: its session sees the queue close and ends.
    pub fn close_queue(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.tx = None;
        }
    }

    /// Tells everyone the server is going away and closes every queue.
    pub fn shutdown(&mut self, message: &str) {
        self.closing = true;
        // Every call ends first, so each side hears why before the connection goes.
        let calls: Vec<CallId> = self.calls.keys().copied().collect();
        for call_id in calls {
            self.finish(
                call_id,
                fala_proto::EndReason::ServerShutdown,
                fala_proto::EndReason::ServerShutdown,
            );
        }
        let msg = ServerMsg::Shutdown {
            message: message.to_string(),
        };
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.send(id, &msg);
            self.close_queue(id);
        }
    }
}
