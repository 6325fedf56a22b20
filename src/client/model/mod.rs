//! What a client knows and how it changes: signaling events and user actions in, state and
//! [`Effect`]s out. No I/O, no drawing and no clock here (time is an argument), so every flow is
//! unit tested by feeding events. The call itself is `fala_proto`'s [`CallMachine`]; this adds
//! the registration, the presence list, look-ups and the call log around it.
//!
//! Every face (window, terminal, headless commands) drives one `Model` through
//! [`super::Phone`]; what differs between faces is a flag here ([`Model::new`]'s `presence`),
//! never a copy of the logic.

mod directory;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use fala_proto::call::{CallError, CallEvent, CallMachine, CallState, Outcome};
use fala_proto::call_keys::{SignedKey, COMMITMENT_LEN};
use fala_proto::name::name_key;
use fala_proto::{
    CallId, Candidate, ClientMsg, ErrorCode, MediaAddr, RelayOffer, ServerMsg, UserInfo, BLOCK_MAX,
    WATCH_MAX,
};
use serde_bytes::ByteBuf;

use super::contacts::{ContactBook, KeyCheck};
use super::history::{CallDirection, HistoryEntry};
use crate::net::Event;
pub use directory::{Directory, REFRESH_AFTER};

/// Where the registration with the server stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Not connected; nothing running.
    Offline,
    /// Register pressed; waiting for the server.
    Connecting {
        server: String,
        name: String,
        /// The address is on this machine: if nobody answers, offer a local server.
        server_is_local: bool,
    },
    Online {
        name: String,
        media: MediaAddr,
    },
    /// Registered before, lost the server; the signaling task is retrying by itself.
    Reconnecting {
        name: String,
        message: String,
    },
    /// Disconnect pressed; waiting for the task to say goodbye.
    Disconnecting,
}

/// Why a client could not get online, shown in place (or printed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectProblem {
    /// Someone is online with this name now (or we are, on another connection).
    NameTaken(String),
    /// The name belongs to another identity key; the server's words say which name it
    /// reads as.
    NameOwned(String),
    /// The name breaks a naming rule (checked here first, then by the server).
    NameInvalid(String),
    AdvertisedIpInvalid,
    Unreachable {
        server: String,
        detail: String,
        offer_local_server: bool,
    },
    MediaPort(String),
    LocalServer(String),
    /// The server presented another certificate than before: perhaps a man in the middle.
    Untrusted(String),
    /// Any other refusal, in the server's words.
    Other(String),
}

impl std::fmt::Display for ConnectProblem {
    /// In words for a terminal (the window has its own, translated).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectProblem::NameTaken(name) => write!(f, "the name {name} is taken"),
            ConnectProblem::NameInvalid(why) => write!(f, "invalid name: {why}"),
            ConnectProblem::AdvertisedIpInvalid => {
                write!(f, "the advertised address is not an IPv4 address")
            }
            ConnectProblem::Unreachable { detail, .. } => write!(f, "{detail}"),
            ConnectProblem::MediaPort(e)
            | ConnectProblem::NameOwned(e)
            | ConnectProblem::LocalServer(e)
            | ConnectProblem::Untrusted(e)
            | ConnectProblem::Other(e) => write!(f, "{e}"),
        }
    }
}

/// The name look-up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lookup {
    #[default]
    Idle,
    Pending(String),
    Found(UserInfo),
    NotFound(String),
}

/// A short message shown until the next action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Disconnect was pressed during a call.
    HangUpFirst,
    /// The server said something was wrong, in its words.
    Server(String),
    /// A call was refused or ended because it would not have been private: no encryption
    /// while calls in clear are not allowed, or keys that fail their checks.
    Security(String),
}

/// The call connected: what the media link needs to start audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartMedia {
    pub call_id: CallId,
    pub peer_name: String,
    /// Where the peer receives audio.
    pub peer: MediaAddr,
    /// The peer's identity key, as the server gave it.
    pub peer_identity: Vec<u8>,
    /// The peer's public media key and its identity signature, if it sent them.
    pub peer_key: Option<Vec<u8>>,
    pub peer_signature: Option<Vec<u8>>,
    /// We placed the call (fixes the order of keys in the key schedule).
    pub outgoing: bool,
    /// Our leg of the server's relay for this call, if it offered one.
    pub relay: Option<RelayOffer>,
    /// The peer's other media addresses, to check.
    pub candidates: Vec<Candidate>,
}

/// Things a face (through [`super::Phone`]) must do for the model: send, start audio, ring,
/// log, tell the user.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send(ClientMsg),
    /// The call connected: start audio.
    StartMedia(StartMedia),
    StopMedia,
    StartRinging,
    StopRinging,
    /// The contact book changed (a key pinned or a change noted): save it.
    ContactsChanged,
    /// Tell the desktop (if the window is not focused) that `caller` is calling.
    NotifyIncoming(String),
    /// Append to the call history.
    Log(HistoryEntry),
    /// Ask the signaling task to say goodbye and stop.
    Disconnect,
    /// The call moved on ([`Model::calls`] has the new state); faces that print say so.
    Call(CallEvent),
    /// The look-up has its answer in [`Model::lookup`].
    LookupAnswered,
    /// The server refused something outside a call, in its words (also in [`Model::notice`]).
    ServerError(String),
}

/// When and which way the current call started, for the history.
#[derive(Debug, Clone, Copy)]
struct CallMeta {
    direction: CallDirection,
    started: SystemTime,
}

/// A client's state apart from widgets and devices.
#[derive(Debug)]
pub struct Model {
    pub registration: Registration,
    pub problem: Option<ConnectProblem>,
    /// Who is online among the people we watch (contacts and shown search results), by name
    /// key; kept live by the server's presence events about them.
    pub users: BTreeMap<String, UserInfo>,
    /// "Find people": the directory search.
    pub directory: Directory,
    pub calls: CallMachine,
    pub lookup: Lookup,
    pub notice: Option<Notice>,
    /// Whether the last ended call's outcome was dismissed.
    pub ended_dismissed: bool,
    pub muted: bool,
    /// Take calls in clear (off: an incoming call without encryption is declined, and an
    /// outgoing one answered without it is hung up).
    pub allow_unencrypted: bool,
    /// The people we know and their pinned identity keys.
    pub contacts: ContactBook,
    /// What the current call's identity key means (ringing in, or connected).
    pub key_check: Option<KeyCheck>,
    /// Follow contacts' presence and search the directory (the window). The terminal and
    /// headless clients only look people up, so they do neither.
    presence: bool,
    /// The name keys last sent in `watch` (a connection starts watching nobody).
    watched: BTreeSet<String>,
    meta: Option<CallMeta>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Model {
    /// A model that follows presence when `presence` is set.
    pub fn new(presence: bool) -> Self {
        Model {
            registration: Registration::Offline,
            problem: None,
            users: BTreeMap::new(),
            directory: Directory::default(),
            calls: CallMachine::new(),
            lookup: Lookup::Idle,
            notice: None,
            ended_dismissed: true,
            muted: false,
            allow_unencrypted: false,
            contacts: ContactBook::default(),
            key_check: None,
            presence,
            watched: BTreeSet::new(),
            meta: None,
        }
    }

    /// Whether this client follows its contacts' presence and searches the directory.
    pub fn follows_presence(&self) -> bool {
        self.presence
    }

    /// The people to watch: listed contacts first, then the shown search results, at most
    /// [`WATCH_MAX`], as name keys.
    fn watch_set(&self) -> BTreeSet<String> {
        let contacts = self
            .contacts
            .listed()
            .into_iter()
            .map(|c| name_key(&c.name));
        let found = self.directory.results().iter().map(|u| name_key(&u.name));
        let mut set = BTreeSet::new();
        for key in contacts.chain(found) {
            if set.len() == WATCH_MAX {
                break;
            }
            set.insert(key);
        }
        set
    }

    /// Sends `watch` when the people to follow changed since the last one.
    fn update_watch(&mut self, fx: &mut Vec<Effect>) {
        if !self.presence || !self.is_online() {
            return;
        }
        let set = self.watch_set();
        if self.watched == set {
            return;
        }
        fx.push(Effect::Send(ClientMsg::Watch {
            names: set.iter().cloned().collect(),
        }));
        self.watched = set;
    }

    /// The contact list changed (added or removed someone): follow the new set.
    pub fn contacts_changed(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.update_watch(&mut fx);
        fx
    }

    /// Refuses `name`'s calls from now on (a ringing call from them is declined) and takes
    /// them off the contact list.
    pub fn block(&mut self, name: &str) -> Vec<Effect> {
        let mut fx = vec![Effect::ContactsChanged];
        self.contacts.set_blocked(name, true);
        if self.is_online() {
            fx.push(Effect::Send(ClientMsg::Block {
                name: name.to_string(),
            }));
        }
        let ringing_from_them = matches!(self.calls.state(), CallState::RingingIn { peer, .. }
            if name_key(peer) == name_key(name));
        if ringing_from_them {
            if let Ok(mut more) = self.decline() {
                fx.append(&mut more);
            }
        }
        self.update_watch(&mut fx);
        fx
    }

    /// Takes calls from `name` again.
    pub fn unblock(&mut self, name: &str) -> Vec<Effect> {
        let mut fx = vec![Effect::ContactsChanged];
        self.contacts.set_blocked(name, false);
        if self.is_online() {
            fx.push(Effect::Send(ClientMsg::Unblock {
                name: name.to_string(),
            }));
        }
        fx
    }

    /// "Find people" typed `query`.
    pub fn search(&mut self, query: &str) -> Vec<Effect> {
        if !self.is_online() {
            return Vec::new();
        }
        self.directory
            .set_query(query)
            .map(Effect::Send)
            .into_iter()
            .collect()
    }

    /// "More results".
    pub fn search_more(&mut self) -> Vec<Effect> {
        self.directory
            .ask_more()
            .map(Effect::Send)
            .into_iter()
            .collect()
    }

    /// Asks the shown search results again if they are stale (called when a frame is drawn
    /// anyway; see [`Directory::refresh_if_stale`]).
    pub fn refresh_directory(&mut self, now: Instant) -> Vec<Effect> {
        if !self.is_online() || self.calls.is_busy() {
            return Vec::new();
        }
        self.directory
            .refresh_if_stale(now)
            .map(Effect::Send)
            .into_iter()
            .collect()
    }

    /// Our registered name, while online or reconnecting.
    pub fn my_name(&self) -> Option<&str> {
        match &self.registration {
            Registration::Online { name, .. } | Registration::Reconnecting { name, .. } => {
                Some(name)
            }
            _ => None,
        }
    }

    pub fn is_online(&self) -> bool {
        matches!(self.registration, Registration::Online { .. })
    }

    /// The connect screen is showing (nothing registered yet).
    pub fn on_connect_screen(&self) -> bool {
        matches!(
            self.registration,
            Registration::Offline | Registration::Connecting { .. }
        )
    }

    /// Register pressed and the local checks passed.
    pub fn connecting(&mut self, server: &str, name: &str, server_is_local: bool) {
        self.problem = None;
        self.registration = Registration::Connecting {
            server: server.to_string(),
            name: name.to_string(),
            server_is_local,
        };
    }

    /// A check before connecting failed.
    pub fn refuse_locally(&mut self, problem: ConnectProblem) {
        self.problem = Some(problem);
        self.registration = Registration::Offline;
    }

    /// Feeds one event from the signaling task.
    pub fn on_event(&mut self, ev: Event, now: Instant, wall: SystemTime) -> Vec<Effect> {
        let mut fx = Vec::new();
        match ev {
            Event::Registered {
                name,
                media,
                reconnected,
                resumed,
                ..
            } => {
                if reconnected {
                    if let Some(CallEvent::Ended(outcome)) = self.calls.resumed(resumed, now) {
                        self.call_ended(&outcome, &mut fx);
                    }
                }
                self.problem = None;
                self.registration = Registration::Online { name, media };
                self.users.clear();
                self.watched.clear();
                self.directory.reset();
                // The server keeps blocks per connection: tell it again each time.
                for c in self.contacts.blocked().into_iter().take(BLOCK_MAX) {
                    fx.push(Effect::Send(ClientMsg::Block {
                        name: c.name.clone(),
                    }));
                }
                if self.presence {
                    // Contacts' presence, and the directory's first page for what is typed.
                    self.update_watch(&mut fx);
                    if let Some(search) = self.directory.ask_first() {
                        fx.push(Effect::Send(search));
                    }
                }
            }
            Event::Refused { code, message } => {
                let name = match &self.registration {
                    Registration::Connecting { name, .. } => name.clone(),
                    _ => self.my_name().unwrap_or_default().to_string(),
                };
                self.problem = Some(match code {
                    ErrorCode::NameTaken => ConnectProblem::NameTaken(name),
                    ErrorCode::NameOwned => ConnectProblem::NameOwned(message),
                    ErrorCode::InvalidName => ConnectProblem::NameInvalid(message),
                    _ => ConnectProblem::Other(message),
                });
                self.go_offline(now, &mut fx);
            }
            Event::Unreachable { message } => {
                if let Registration::Connecting {
                    server,
                    server_is_local,
                    ..
                } = &self.registration
                {
                    self.problem = Some(ConnectProblem::Unreachable {
                        server: server.clone(),
                        detail: message,
                        offer_local_server: *server_is_local,
                    });
                }
                self.go_offline(now, &mut fx);
            }
            Event::Untrusted { message } => {
                self.problem = Some(ConnectProblem::Untrusted(message));
                self.go_offline(now, &mut fx);
            }
            Event::ConnectionLost { message, .. } => {
                if let Some(CallEvent::Ended(outcome)) = self.calls.signaling_lost(now) {
                    self.call_ended(&outcome, &mut fx);
                }
                self.users.clear();
                self.watched.clear();
                let name = self.my_name().unwrap_or_default().to_string();
                if !matches!(self.registration, Registration::Disconnecting) {
                    self.registration = Registration::Reconnecting { name, message };
                }
            }
            Event::Stopped => self.go_offline(now, &mut fx),
            Event::Server(msg) => self.on_server(msg, now, wall, &mut fx),
        }
        fx
    }

    fn go_offline(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if let Some(CallEvent::Ended(outcome)) = self.calls.server_lost(now) {
            self.call_ended(&outcome, fx);
        }
        self.registration = Registration::Offline;
        self.users.clear();
        self.watched.clear();
        self.lookup = Lookup::Idle;
        self.notice = None;
    }

    fn on_server(&mut self, msg: ServerMsg, now: Instant, wall: SystemTime, fx: &mut Vec<Effect>) {
        self.on_presence(&msg, now, fx);
        let (event, reply) = self.calls.on_server(&msg, now);
        if let Some(reply) = reply {
            fx.push(Effect::Send(reply));
        }
        match &event {
            Some(CallEvent::Incoming)
                if self
                    .calls
                    .peer()
                    .is_some_and(|p| self.contacts.is_blocked(p)) =>
            {
                // Blocked, and the server did not know yet (the call crossed our `block`):
                // declined without a ring.
                if let Ok(msg) = self.calls.decline() {
                    fx.push(Effect::Send(msg));
                }
            }
            Some(CallEvent::Incoming)
                if !self.allow_unencrypted
                    && matches!(self.ringing_commitment(), Some((_, None))) =>
            {
                let peer = self.calls.peer().unwrap_or_default().to_string();
                if let Ok(msg) = self.calls.decline() {
                    fx.push(Effect::Send(msg));
                }
                self.notice = Some(Notice::Security(format!(
                    "declined a call from {peer}: it was not encrypted, and calls in clear are not allowed (Settings)"
                )));
            }
            Some(CallEvent::Incoming) => {
                if let CallState::RingingIn { peer, identity, .. } = self.calls.state() {
                    self.key_check = Some(self.contacts.peek(peer, identity));
                }
                self.meta = Some(CallMeta {
                    direction: CallDirection::Incoming,
                    started: wall,
                });
                self.ended_dismissed = true;
                fx.push(Effect::StartRinging);
                fx.push(Effect::NotifyIncoming(
                    self.calls.peer().unwrap_or_default().to_string(),
                ));
            }
            Some(CallEvent::Connected) => {
                fx.push(Effect::StopRinging);
                let outgoing = self
                    .meta
                    .is_some_and(|m| m.direction == CallDirection::Outgoing);
                if !self.check_peer_identity(outgoing, now, fx) {
                    return;
                }
                if let CallState::InCall {
                    call_id,
                    peer,
                    media,
                    identity,
                    key,
                    signature,
                    relay,
                    candidates,
                    ..
                } = self.calls.state()
                {
                    fx.push(Effect::StartMedia(StartMedia {
                        call_id: *call_id,
                        peer_name: peer.clone(),
                        peer: *media,
                        peer_identity: identity.to_vec(),
                        peer_key: key.as_ref().map(|k| k.to_vec()),
                        peer_signature: signature.as_ref().map(|k| k.to_vec()),
                        outgoing,
                        relay: relay.clone(),
                        candidates: candidates.clone(),
                    }));
                }
            }
            Some(CallEvent::Ended(outcome)) => {
                self.call_ended(outcome, fx);
                return;
            }
            Some(CallEvent::RingingOut) | Some(CallEvent::AutoDeclined(_)) => {}
            None => match msg {
                ServerMsg::UserFound { user } if self.lookup_pending_for(&user.name) => {
                    self.lookup = Lookup::Found(user);
                    fx.push(Effect::LookupAnswered);
                }
                ServerMsg::UserNotFound { name } if self.lookup_pending_for(&name) => {
                    self.lookup = Lookup::NotFound(name);
                    fx.push(Effect::LookupAnswered);
                }
                ServerMsg::Error {
                    message, request, ..
                } => {
                    if request.as_deref() == Some("search") {
                        self.directory.on_refused();
                    }
                    self.notice = Some(Notice::Server(message.clone()));
                    fx.push(Effect::ServerError(message));
                }
                _ => {}
            },
        }
        if let Some(event) = event {
            fx.push(Effect::Call(event));
        }
    }

    fn lookup_pending_for(&self, name: &str) -> bool {
        matches!(&self.lookup, Lookup::Pending(asked) if name_key(asked) == name_key(name))
    }

    /// Keeps who is online among the watched people in step with the server: search results
    /// (then watched), the `watching` answer, and presence events about them.
    fn on_presence(&mut self, msg: &ServerMsg, now: Instant, fx: &mut Vec<Effect>) {
        let me = self.my_name().map(name_key);
        let is_me = |name: &str| me.as_deref() == Some(&name_key(name));
        match msg {
            ServerMsg::SearchResults { users, more } => {
                let shown: Vec<UserInfo> =
                    users.iter().filter(|u| !is_me(&u.name)).cloned().collect();
                // Online by the server's word now; `watching` confirms and events follow.
                self.users
                    .extend(shown.iter().map(|u| (name_key(&u.name), u.clone())));
                if let Some(next) = self.directory.on_results(&shown, *more, now) {
                    fx.push(Effect::Send(next));
                }
                self.update_watch(fx);
            }
            ServerMsg::Watching { users } => {
                self.users = users
                    .iter()
                    .filter(|u| !is_me(&u.name))
                    .map(|u| (name_key(&u.name), u.clone()))
                    .collect();
            }
            ServerMsg::UserJoined { user } if !is_me(&user.name) => {
                self.users.insert(name_key(&user.name), user.clone());
            }
            ServerMsg::UserLeft { name } => {
                self.users.remove(&name_key(name));
            }
            ServerMsg::UserStatus { name, status } => {
                if let Some(u) = self.users.get_mut(&name_key(name)) {
                    u.status = *status;
                }
            }
            _ => {}
        }
    }

    /// The call ended (by the server, the peer, a lost connection or a local cancel): stop
    /// ringing and audio, log it, and tell the face.
    fn call_ended(&mut self, outcome: &Outcome, fx: &mut Vec<Effect>) {
        fx.push(Effect::StopRinging);
        fx.push(Effect::StopMedia);
        self.muted = false;
        self.ended_dismissed = false;
        if let (Some(meta), CallState::Ended { peer, talked, .. }) =
            (self.meta.take(), self.calls.state())
        {
            fx.push(Effect::Log(HistoryEntry::new(
                peer,
                meta.started,
                meta.direction,
                *talked,
                outcome,
            )));
        }
        fx.push(Effect::Call(CallEvent::Ended(outcome.clone())));
    }

    /// Pins or compares the connected peer's identity key. A changed key ends an outgoing call
    /// at once (the user did not see a warning before placing it); an incoming one was
    /// accepted despite the warning on the ringing dialog, so it goes on, still flagged.
    /// Returns whether the call goes on.
    fn check_peer_identity(&mut self, outgoing: bool, now: Instant, fx: &mut Vec<Effect>) -> bool {
        let CallState::InCall { peer, identity, .. } = self.calls.state() else {
            return true;
        };
        let peer = peer.clone();
        let check = self.contacts.check(&peer, identity);
        self.key_check = Some(check);
        fx.push(Effect::ContactsChanged);
        if check != KeyCheck::Changed || !outgoing {
            return true;
        }
        self.refuse_call(
            format!(
                "{peer}'s identity key has changed since your last call: this may be someone \
                 else, or someone listening in. The call was not connected. Compare safety \
                 numbers, then accept the new key in Contacts"
            ),
            now,
            fx,
        );
        false
    }

    /// Ends the call that is connecting because it would not be private: hangs up, logs it as
    /// not connected, and keeps the reason on screen.
    pub fn refuse_call(&mut self, why: String, now: Instant, fx: &mut Vec<Effect>) {
        let (hangup, ended) = self.calls.refuse(why.clone(), now);
        if let Some(msg) = hangup {
            fx.push(Effect::Send(msg));
        }
        if let Some(CallEvent::Ended(outcome)) = ended {
            self.call_ended(&outcome, fx);
        }
        self.notice = Some(Notice::Security(why));
    }

    /// Starts calling `peer` with the commitment to our media key and our other media
    /// addresses.
    pub fn dial(
        &mut self,
        peer: &str,
        (commitment, addresses): (Option<[u8; COMMITMENT_LEN]>, (Vec<Candidate>, bool)),
        now: Instant,
        wall: SystemTime,
    ) -> Result<Vec<Effect>, CallError> {
        let commit = commitment.map(|c| ByteBuf::from(c.to_vec()));
        let invite = self.calls.dial(peer, commit, addresses, now)?;
        self.meta = Some(CallMeta {
            direction: CallDirection::Outgoing,
            started: wall,
        });
        self.notice = None;
        self.ended_dismissed = true;
        Ok(vec![Effect::Send(invite)])
    }

    /// Accepts the ringing call with our signed media key and our other media addresses
    /// (and whether to hide them behind the relay).
    pub fn accept(
        &mut self,
        answer: Option<SignedKey>,
        addresses: (Vec<Candidate>, bool),
    ) -> Result<Vec<Effect>, CallError> {
        let signed = answer.map(|a| {
            (
                ByteBuf::from(a.key.to_vec()),
                ByteBuf::from(a.signature.to_vec()),
            )
        });
        let msg = self.calls.accept(None, signed, addresses)?;
        Ok(vec![Effect::StopRinging, Effect::Send(msg)])
    }

    /// The ringing incoming call's id and the caller's commitment (`None` inside: in clear).
    pub fn ringing_commitment(&self) -> Option<(CallId, Option<Vec<u8>>)> {
        match self.calls.state() {
            CallState::RingingIn {
                call_id, commit, ..
            } => Some((*call_id, commit.as_ref().map(|c| c.to_vec()))),
            _ => None,
        }
    }

    pub fn decline(&mut self) -> Result<Vec<Effect>, CallError> {
        let msg = self.calls.decline()?;
        Ok(vec![Effect::StopRinging, Effect::Send(msg)])
    }

    /// Hang up, cancel or decline, whichever fits the call's state.
    pub fn hangup(&mut self, now: Instant) -> Result<Vec<Effect>, CallError> {
        let mut fx = Vec::new();
        match self.calls.hangup(now)? {
            // Offline mid-call: the signaling task says it when it is back; the call ends
            // here now.
            Some(msg) if matches!(self.registration, Registration::Reconnecting { .. }) => {
                fx.push(Effect::Send(msg));
                if let Some(CallEvent::Ended(outcome)) = self.calls.hung_up_offline(now) {
                    self.call_ended(&outcome, &mut fx);
                }
            }
            Some(msg) => fx.push(Effect::Send(msg)),
            // Cancelled while dialing: the machine ended the call itself.
            None => {
                if let CallState::Ended { outcome, .. } = self.calls.state() {
                    let outcome = outcome.clone();
                    self.call_ended(&outcome, &mut fx);
                }
            }
        }
        Ok(fx)
    }

    pub fn lookup(&mut self, name: &str) -> Vec<Effect> {
        let name = name.trim();
        if name.is_empty() {
            return Vec::new();
        }
        self.lookup = Lookup::Pending(name.to_string());
        vec![Effect::Send(ClientMsg::Lookup {
            name: name.to_string(),
        })]
    }

    /// The original's "0": refused during a call, otherwise unregisters.
    pub fn disconnect(&mut self) -> Vec<Effect> {
        if self.calls.is_busy() {
            self.notice = Some(Notice::HangUpFirst);
            return Vec::new();
        }
        self.notice = None;
        self.registration = Registration::Disconnecting;
        vec![Effect::Disconnect]
    }

    /// "Find people"'s results that are still online, with their live status, except the
    /// echo service (shown as the sound test), in alphabetical order (name keys order
    /// look-alike skeletons, not what people read).
    pub fn found_people(&self) -> Vec<&UserInfo> {
        let mut shown: Vec<&UserInfo> = self
            .directory
            .results()
            .iter()
            .map(|u| name_key(&u.name))
            .filter(|key| key.as_str() != ECHO_USER)
            .filter_map(|key| self.users.get(&key))
            .collect();
        shown.sort_by_cached_key(|u| u.name.to_lowercase());
        shown.dedup_by(|a, b| a.name == b.name);
        shown
    }
}

/// The server's built-in echo test user.
pub const ECHO_USER: &str = "echo";

#[cfg(test)]
mod tests;
