//! Signaling messages between a client and the server, and the limits both sides enforce.
//!
//! Every message is a MessagePack map with a string field `type` naming the message (snake_case)
//! and the other fields by name. docs/PROTOCOL.md documents each one for implementers.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

/// Most users in one `users` reply: every reply fits a frame whatever the server holds.
pub const LIST_PAGE_MAX: usize = 200;

/// Most users in one `search_results` reply.
pub const SEARCH_PAGE_MAX: usize = 50;

/// Most names one connection may watch.
pub const WATCH_MAX: usize = 1000;
/// Most names one user may block (`block`); more get `error invalid_message`.
pub const BLOCK_MAX: usize = 1000;

/// Version of the signaling protocol spoken by this crate; sent in `hello` / `welcome`.
pub const PROTOCOL_VERSION: u32 = 2;

/// Random, unguessable identifier of one call attempt (64 bits from the OS generator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A relay leg of one call: where to send, and the token that must lead every datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayOffer {
    /// The relay's UDP address.
    pub media: MediaAddr,
    /// 8 bytes, first byte 64–79; secret to this side of this call.
    pub token: ByteBuf,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Most candidate addresses in one `invite` or `accept`; more get `error invalid_message`.
pub const CANDIDATES_MAX: usize = 8;

/// One more address the peer may reach our media socket at (a host address of another
/// interface, or the address our NAT maps it to, as the server's STUN port saw it): IPv4
/// `"a.b.c.d:port"` or IPv6 `"[addr]:port"` on the wire. Checked by the connectivity checks
/// (see PROTOCOL.md) before any media goes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate(pub std::net::SocketAddr);

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Candidate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Candidate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let addr: std::net::SocketAddr = text.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{:?} is not an address and port",
                crate::clip(&text, 60)
            ))
        })?;
        let ip = addr.ip();
        if addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() {
            return Err(serde::de::Error::custom(format!(
                "{addr} is not an address media can be sent to"
            )));
        }
        Ok(Candidate(addr))
    }
}

/// Where a client receives its audio: IPv4 address and UDP port, written `"a.b.c.d:port"` on
/// the wire. `0.0.0.0` in a registration means "the address you see my TCP connection from".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaAddr(pub SocketAddrV4);

impl MediaAddr {
    pub fn new(ip: Ipv4Addr, port: u16) -> Self {
        MediaAddr(SocketAddrV4::new(ip, port))
    }
    pub fn ip(&self) -> Ipv4Addr {
        *self.0.ip()
    }
    pub fn port(&self) -> u16 {
        self.0.port()
    }
}

impl fmt::Display for MediaAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MediaAddr {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(MediaAddr)
    }
}

impl Serialize for MediaAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MediaAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let addr: MediaAddr = text.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{:?} is not an IPv4 address and port",
                crate::clip(&text, 60)
            ))
        })?;
        if addr.port() == 0 {
            return Err(serde::de::Error::custom("media port 0 is not a port"));
        }
        Ok(addr)
    }
}

/// Whether a user can take a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Available,
    /// Ringing or talking: a new call gets `busy`.
    InCall,
}

/// A user as others see them: never their address (only a call peer learns that, at accept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub status: Availability,
    /// Their public identity key (32 bytes, Ed25519), the one that owns the name.
    pub identity: ByteBuf,
}

/// Why a call ended (or never started), from the point of view of the side told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The callee declined.
    Declined,
    /// The callee was already ringing or in a call.
    Busy,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// The caller gave up before an answer.
    Cancelled,
    /// You hung up (the server's confirmation).
    HungUp,
    /// The other side hung up.
    PeerHungUp,
    /// The other side's connection dropped or timed out.
    PeerLost,
    /// The server is shutting down.
    ServerShutdown,
}

impl EndReason {
    /// Words for a person, used by the terminal client and the window.
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::Declined => "the call was declined",
            EndReason::Busy => "busy: already in a call",
            EndReason::NoAnswer => "no answer",
            EndReason::Cancelled => "the call was cancelled",
            EndReason::HungUp => "you hung up",
            EndReason::PeerHungUp => "hung up by the other side",
            EndReason::PeerLost => "connection to the other side was lost",
            EndReason::ServerShutdown => "the server shut down",
        }
    }
}

/// Machine-readable error kinds carried by the `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// `hello.version` is not one the server speaks; the connection is closed.
    UnsupportedVersion,
    /// A message other than `hello` arrived first.
    HelloRequired,
    /// No `hello` within the hello timeout; the connection is closed.
    HelloTimeout,
    /// Someone with this name (or one that reads the same, see PROTOCOL.md) is online now.
    NameTaken,
    /// The name (or one that reads the same) belongs to another identity key, online or not.
    NameOwned,
    /// The identity key or the registration signature is not valid.
    InvalidIdentity,
    /// The server takes no new names now (it is full, or busy writing); known owners still
    /// register. Try again later.
    NoRoom,
    /// The name breaks the naming rules; the message names the rule.
    InvalidName,
    /// This connection already registered a name.
    AlreadyRegistered,
    /// The request needs a registered name first.
    NotRegistered,
    /// No user by that name is online.
    UserNotFound,
    /// You tried to call yourself.
    SelfCall,
    /// You are already ringing or in a call.
    AlreadyInCall,
    /// The call id is not a call of yours in a state where that request applies.
    UnknownCall,
    /// Too many messages (or invites); the message was dropped. Persisting closes the connection.
    RateLimited,
    /// The server has reached its connection limit; the connection is closed.
    ServerFull,
    /// Too many connections from this address at once; the connection is closed.
    TooManyConnections,
    /// The length prefix was over the limit; the connection is closed.
    FrameTooLarge,
    /// The frame body was not a MessagePack map with a `type` string.
    Malformed,
    /// The `type` is not a message the server knows.
    UnknownMessage,
    /// A known message with missing or wrongly typed fields.
    InvalidMessage,
    /// Nothing was received for longer than the idle timeout; the connection is closed.
    IdleTimeout,
    /// The connection could not keep up with the messages sent to it; it is closed.
    TooSlow,
    /// The same identity registered again on another connection (resuming after a network
    /// change): this connection is closed.
    Replaced,
    /// The server does not offer this request (`list` and `subscribe` are off unless its
    /// operator opened the whole online list); use `search` and `watch` instead.
    NotOffered,
    /// An error code this side does not know (sent by a newer peer).
    #[serde(other)]
    Other,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message on every connection.
    Hello {
        version: u32,
        /// Free text naming the client software, for logs.
        #[serde(default)]
        agent: String,
    },
    /// Claim a name and say where audio should be sent. `identity` is the client's public
    /// identity key; `signature` signs the `welcome` challenge and the name with it (see
    /// PROTOCOL.md, identities).
    Register {
        name: String,
        media: MediaAddr,
        identity: ByteBuf,
        signature: ByteBuf,
        /// "I am coming back": the connection this identity had was lost (a network change,
        /// a dead path) while in this call. The server hands the name over from the old
        /// connection, if it still holds it, and keeps the call if it is still on (see
        /// PROTOCOL.md, resuming); `registered.call` says whether it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<CallId>,
    },
    /// Ask whether a user is online.
    Lookup { name: String },
    /// Ask who is online, a page at a time: the users whose name key (see
    /// [`crate::name::name_key`]) comes after `after`, in that order, at most `limit` of them
    /// (default and most: [`LIST_PAGE_MAX`]).
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Find online users whose name key starts with the key of `prefix`, a page at a time:
    /// those after `after` (a name from the previous page), at most [`SEARCH_PAGE_MAX`].
    Search {
        prefix: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Follow these people's presence only (your contacts): replaces the watched set; answered
    /// with `watching`, then `user_joined` / `user_left` / `user_status` about them.
    Watch { names: Vec<String> },
    /// Start receiving `user_joined` / `user_left` / `user_status` events.
    Subscribe,
    /// Stop receiving presence events.
    Unsubscribe,
    /// Call a user. `commit` is the commitment to the caller's public media key (see
    /// PROTOCOL.md, media encryption); without it the call is in clear.
    Invite {
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<ByteBuf>,
        /// Our other media addresses (at most [`CANDIDATES_MAX`]); the callee learns them
        /// only in `call_connected`, once it has accepted.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        candidates: Vec<Candidate>,
        /// Show the callee the relay instead of our addresses ("always relay").
        #[serde(default, skip_serializing_if = "is_false")]
        hide_address: bool,
    },
    /// Answer an incoming call; `media` overrides the registered media address for this call.
    /// `key` is the callee's public media key and `signature` signs it with the callee's
    /// identity.
    Accept {
        call_id: CallId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaAddr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<ByteBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<ByteBuf>,
        /// Our other media addresses (at most [`CANDIDATES_MAX`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        candidates: Vec<Candidate>,
        /// Show the caller the relay instead of our addresses ("always relay").
        #[serde(default, skip_serializing_if = "is_false")]
        hide_address: bool,
    },
    /// The caller's public media key (the one `commit` committed to), signed with its identity;
    /// sent once the callee's key has arrived in `call_connected`.
    Reveal {
        call_id: CallId,
        key: ByteBuf,
        signature: ByteBuf,
    },
    /// Refuse an incoming call.
    Decline { call_id: CallId },
    /// Give up an outgoing call before it is answered.
    Cancel { call_id: CallId },
    /// End a call (also works while ringing: it then cancels or declines).
    Hangup { call_id: CallId },
    /// Heartbeat; answered with `pong` carrying the same nonce.
    Ping { nonce: u64 },
    /// Refuse calls from this name for as long as you stay registered: its invites end at once
    /// as `declined`, and you are not told. Needs a registered name.
    Block { name: String },
    /// Take calls from this name again.
    Unblock { name: String },
    /// Leave: frees the name and ends any call. The server closes the connection.
    Bye,
    /// A relayed datagram through this connection instead of UDP (networks that block UDP):
    /// `token ‖ datagram` exactly as it would go to the relay's UDP port. Not rate-limited
    /// as a message; held to the relay leg's rate (see PROTOCOL.md, the TCP fallback).
    Media { data: ByteBuf },
}

/// The `type` values of [`ClientMsg`], for telling unknown messages from invalid ones.
pub const CLIENT_MSG_TYPES: &[&str] = &[
    "hello",
    "register",
    "lookup",
    "list",
    "search",
    "watch",
    "subscribe",
    "unsubscribe",
    "invite",
    "accept",
    "reveal",
    "decline",
    "cancel",
    "hangup",
    "ping",
    "block",
    "unblock",
    "bye",
    "media",
];

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Reply to `hello`: the session is open.
    Welcome {
        version: u32,
        server: String,
        /// How often the client should send `ping`.
        heartbeat_ms: u64,
        /// Silence longer than this and the server drops the connection.
        idle_timeout_ms: u64,
        /// 32 random bytes, new for every connection, that `register` signs.
        challenge: ByteBuf,
    },
    /// Reply to `register`: the name is yours; `media` is the address others will send audio to.
    Registered {
        name: String,
        media: MediaAddr,
        /// The server's STUN port (RFC 8489 Binding), at the address the client reached the
        /// server on: a Binding request sent there from the media socket tells the client
        /// the address its NAT maps that socket to, a candidate for its calls.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stun: Option<MediaAddr>,
        /// After a `register` with `resume`: the call that went on while we were away (the
        /// one named there); absent when it ended meanwhile.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call: Option<CallId>,
    },
    /// Reply to `lookup` when the user is online.
    UserFound { user: UserInfo },
    /// Reply to `lookup` when nobody by that name is online.
    UserNotFound { name: String },
    /// Reply to `list` (and the first page after `subscribe`), sorted by name key; `more` when
    /// users after the last one remain (ask again with `after` = its name key).
    Users {
        users: Vec<UserInfo>,
        #[serde(default)]
        more: bool,
    },
    /// Reply to `search`, in name-key order; `more` when other matches follow the last one.
    SearchResults {
        users: Vec<UserInfo>,
        #[serde(default)]
        more: bool,
    },
    /// Reply to `watch`: those of the watched people who are online now.
    Watching { users: Vec<UserInfo> },
    /// Presence event (after `subscribe`): someone registered.
    UserJoined { user: UserInfo },
    /// Presence event: someone left.
    UserLeft { name: String },
    /// Presence event: someone's availability changed.
    UserStatus { name: String, status: Availability },
    /// To the caller: the invite reached the callee, whose phone is ringing.
    Ringing { call_id: CallId, peer: String },
    /// To the callee: someone is calling; `identity` is the caller's identity key.
    IncomingCall {
        call_id: CallId,
        caller: String,
        identity: ByteBuf,
        /// The caller's commitment to its media key; absent for a call in clear.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<ByteBuf>,
    },
    /// To both sides: the call was accepted; send audio to `media`. `identity` is the peer's
    /// identity key.
    CallConnected {
        call_id: CallId,
        peer: String,
        media: MediaAddr,
        identity: ByteBuf,
        /// The peer's public media key and its identity signature; absent in clear.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<ByteBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<ByteBuf>,
        /// The server's media relay for this call, when it offers one: send `token ‖ datagram`
        /// to `media` and the peer receives `datagram` (see PROTOCOL.md, the relay).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<RelayOffer>,
        /// The peer's other media addresses, from its `invite` or `accept`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        candidates: Vec<Candidate>,
    },
    /// To each side concerned: the call is over (or never started).
    CallEnded {
        call_id: CallId,
        peer: String,
        reason: EndReason,
    },
    /// Reply to `ping`.
    Pong { nonce: u64 },
    /// Something was wrong with a request or with the connection. `request` is the `type` of
    /// the message it answers (absent for an error about the connection itself: a timeout, a
    /// frame that was not a message at all); `call_id` the call it is about, when it is.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<CallId>,
    },
    /// The server is going away; the connection closes next.
    Shutdown { message: String },
    /// A datagram from the other leg of our call's relay, sent through this connection
    /// because our leg's last datagram came through it (`media` from the client).
    Media { data: ByteBuf },
}

/// The `type` values of [`ServerMsg`].
pub const SERVER_MSG_TYPES: &[&str] = &[
    "welcome",
    "registered",
    "user_found",
    "user_not_found",
    "users",
    "search_results",
    "watching",
    "user_joined",
    "user_left",
    "user_status",
    "ringing",
    "incoming_call",
    "call_connected",
    "call_ended",
    "pong",
    "error",
    "shutdown",
    "media",
];

impl ServerMsg {
    /// The message's `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMsg::Welcome { .. } => "welcome",
            ServerMsg::Registered { .. } => "registered",
            ServerMsg::UserFound { .. } => "user_found",
            ServerMsg::UserNotFound { .. } => "user_not_found",
            ServerMsg::Users { .. } => "users",
            ServerMsg::SearchResults { .. } => "search_results",
            ServerMsg::Watching { .. } => "watching",
            ServerMsg::UserJoined { .. } => "user_joined",
            ServerMsg::UserLeft { .. } => "user_left",
            ServerMsg::UserStatus { .. } => "user_status",
            ServerMsg::Ringing { .. } => "ringing",
            ServerMsg::IncomingCall { .. } => "incoming_call",
            ServerMsg::CallConnected { .. } => "call_connected",
            ServerMsg::CallEnded { .. } => "call_ended",
            ServerMsg::Pong { .. } => "pong",
            ServerMsg::Error { .. } => "error",
            ServerMsg::Shutdown { .. } => "shutdown",
            ServerMsg::Media { .. } => "media",
        }
    }

    /// Shorthand for an error message (the server fills in `request` when it answers one).
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            code,
            message: message.into(),
            request: None,
            call_id: None,
        }
    }

    /// An error about the call `call_id`.
    pub fn call_error(code: ErrorCode, message: impl Into<String>, call_id: CallId) -> Self {
        ServerMsg::Error {
            code,
            message: message.into(),
            request: None,
            call_id: Some(call_id),
        }
    }
}

impl ClientMsg {
    /// The message's `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Hello { .. } => "hello",
            ClientMsg::Register { .. } => "register",
            ClientMsg::Lookup { .. } => "lookup",
            ClientMsg::List { .. } => "list",
            ClientMsg::Search { .. } => "search",
            ClientMsg::Watch { .. } => "watch",
            ClientMsg::Subscribe => "subscribe",
            ClientMsg::Unsubscribe => "unsubscribe",
            ClientMsg::Invite { .. } => "invite",
            ClientMsg::Accept { .. } => "accept",
            ClientMsg::Reveal { .. } => "reveal",
            ClientMsg::Decline { .. } => "decline",
            ClientMsg::Cancel { .. } => "cancel",
            ClientMsg::Hangup { .. } => "hangup",
            ClientMsg::Ping { .. } => "ping",
            ClientMsg::Block { .. } => "block",
            ClientMsg::Unblock { .. } => "unblock",
            ClientMsg::Bye => "bye",
            ClientMsg::Media { .. } => "media",
        }
    }
}
