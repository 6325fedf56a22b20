//! What the window knows and how it changes: signaling events and user actions in, state and
//! [`Effect`]s out. No I/O, no egui and no clock here (time is an argument), so every flow can
//! be unit tested by feeding events. The call itself is `fala_proto`'s [`CallMachine`], shared
//! with the terminal client so both agree on what each server message means.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use fala_proto::call::{CallError, CallEvent, CallMachine, CallState, Outcome};
use fala_proto::name::name_key;
use fala_proto::{ClientMsg, ErrorCode, MediaAddr, ServerMsg, UserInfo};
use serde_bytes::ByteBuf;

use super::history::{Direction, HistoryEntry};
use crate::net::Event;

/// Where the connection to the server stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    /// The connect screen; nothing running.
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

/// Why the connect screen could not get online, shown in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectProblem {
    NameTaken(String),
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
    /// Any other refusal, in the server's words.
    Other(String),
}

/// The name look-up box.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lookup {
    #[default]
    Idle,
    Pending(String),
    Found(UserInfo),
    NotFound(String),
}

/// A short message shown on the main screen until the next action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Disconnect was pressed during a call.
    HangUpFirst,
    /// The server said something was wrong, in its words.
    Server(String),
}

/// Things the window must do for the logic (send, start audio, ring, log...).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send(ClientMsg),
    /// The call connected: start audio towards `peer`.
    StartMedia {
        peer: MediaAddr,
        peer_key: Option<Vec<u8>>,
        /// We placed the call (fixes the order of keys in the key schedule).
        outgoing: bool,
    },
    StopMedia,
    StartRinging,
    StopRinging,
    /// Tell the desktop (if the window is not focused) that `caller` is calling.
    NotifyIncoming(String),
    /// Append to the call history.
    Log(HistoryEntry),
    /// Ask the signaling task to say goodbye and stop.
    Disconnect,
}

/// When and which way the current call started, for the history.
#[derive(Debug, Clone, Copy)]
struct CallMeta {
    direction: Direction,
    started: SystemTime,
}

/// The window's state apart from widgets.
#[derive(Debug)]
pub struct Model {
    pub session: Session,
    pub problem: Option<ConnectProblem>,
    /// Online users other than us, by name key (sorted case-insensitively).
    pub users: BTreeMap<String, UserInfo>,
    pub calls: CallMachine,
    pub lookup: Lookup,
    pub notice: Option<Notice>,
    /// Whether the last ended call's outcome was dismissed.
    pub ended_dismissed: bool,
    pub muted: bool,
    meta: Option<CallMeta>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    pub fn new() -> Self {
        Model {
            session: Session::Offline,
            problem: None,
            users: BTreeMap::new(),
            calls: CallMachine::new(),
            lookup: Lookup::Idle,
            notice: None,
            ended_dismissed: true,
            muted: false,
            meta: None,
        }
    }

    /// Our registered name, while online or reconnecting.
    pub fn my_name(&self) -> Option<&str> {
        match &self.session {
            Session::Online { name, .. } | Session::Reconnecting { name, .. } => Some(name),
            _ => None,
        }
    }

    pub fn is_online(&self) -> bool {
        matches!(self.session, Session::Online { .. })
    }

    /// The connect screen is showing (nothing registered yet).
    pub fn on_connect_screen(&self) -> bool {
        matches!(self.session, Session::Offline | Session::Connecting { .. })
    }

    /// Register pressed and the local checks passed.
    pub fn connecting(&mut self, server: &str, name: &str, server_is_local: bool) {
        self.problem = None;
        self.session = Session::Connecting {
            server: server.to_string(),
            name: name.to_string(),
            server_is_local,
        };
    }

    /// A check before connecting failed.
    pub fn refuse_locally(&mut self, problem: ConnectProblem) {
        self.problem = Some(problem);
        self.session = Session::Offline;
    }

    /// Feeds one event from the signaling task.
    pub fn on_event(&mut self, ev: Event, now: Instant, wall: SystemTime) -> Vec<Effect> {
        let mut fx = Vec::new();
        match ev {
            Event::Registered { name, media, .. } => {
                self.problem = None;
                self.session = Session::Online { name, media };
                self.users.clear();
                fx.push(Effect::Send(ClientMsg::List));
            }
            Event::Refused { code, message } => {
                let name = match &self.session {
                    Session::Connecting { name, .. } => name.clone(),
                    _ => self.my_name().unwrap_or_default().to_string(),
                };
                self.problem = Some(match code {
                    ErrorCode::NameTaken => ConnectProblem::NameTaken(name),
                    ErrorCode::InvalidName => ConnectProblem::NameInvalid(message),
                    _ => ConnectProblem::Other(message),
                });
                self.go_offline(now, wall, &mut fx);
            }
            Event::Unreachable { message } => {
                if let Session::Connecting {
                    server,
                    server_is_local,
                    ..
                } = &self.session
                {
                    self.problem = Some(ConnectProblem::Unreachable {
                        server: server.clone(),
                        detail: message,
                        offer_local_server: *server_is_local,
                    });
                }
                self.go_offline(now, wall, &mut fx);
            }
            Event::ConnectionLost { message, .. } => {
                if let Some(CallEvent::Ended(outcome)) = self.calls.server_lost(now) {
                    self.call_ended(&outcome, now, &mut fx);
                }
                self.users.clear();
                let name = self.my_name().unwrap_or_default().to_string();
                if !matches!(self.session, Session::Disconnecting) {
                    self.session = Session::Reconnecting { name, message };
                }
            }
            Event::Stopped => self.go_offline(now, wall, &mut fx),
            Event::Server(msg) => self.on_server(msg, now, wall, &mut fx),
        }
        fx
    }

    fn go_offline(&mut self, now: Instant, _wall: SystemTime, fx: &mut Vec<Effect>) {
        if let Some(CallEvent::Ended(outcome)) = self.calls.server_lost(now) {
            self.call_ended(&outcome, now, fx);
        }
        self.session = Session::Offline;
        self.users.clear();
        self.lookup = Lookup::Idle;
        self.notice = None;
    }

    fn on_server(&mut self, msg: ServerMsg, now: Instant, wall: SystemTime, fx: &mut Vec<Effect>) {
        self.on_presence(&msg);
        let (event, reply) = self.calls.on_server(&msg, now);
        if let Some(reply) = reply {
            fx.push(Effect::Send(reply));
        }
        match event {
            Some(CallEvent::Incoming) => {
                self.meta = Some(CallMeta {
                    direction: Direction::Incoming,
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
                if let CallState::InCall { media, key, .. } = self.calls.state() {
                    let outgoing = self
                        .meta
                        .is_some_and(|m| m.direction == Direction::Outgoing);
                    fx.push(Effect::StartMedia {
                        peer: *media,
                        peer_key: key.as_ref().map(|k| k.to_vec()),
                        outgoing,
                    });
                }
            }
            Some(CallEvent::Ended(outcome)) => self.call_ended(&outcome, now, fx),
            Some(CallEvent::RingingOut) | Some(CallEvent::AutoDeclined(_)) => {}
            None => match msg {
                ServerMsg::UserFound { user } if self.lookup_pending_for(&user.name) => {
                    self.lookup = Lookup::Found(user);
                }
                ServerMsg::UserNotFound { name } if self.lookup_pending_for(&name) => {
                    self.lookup = Lookup::NotFound(name);
                }
                ServerMsg::Error { message, .. } => self.notice = Some(Notice::Server(message)),
                _ => {}
            },
        }
    }

    fn lookup_pending_for(&self, name: &str) -> bool {
        matches!(&self.lookup, Lookup::Pending(asked) if name_key(asked) == name_key(name))
    }

    /// Keeps the user list in step with presence events.
    fn on_presence(&mut self, msg: &ServerMsg) {
        let me = self.my_name().map(name_key);
        let is_me = |name: &str| me.as_deref() == Some(&name_key(name));
        match msg {
            ServerMsg::Users { users } => {
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

    fn call_ended(&mut self, outcome: &Outcome, _now: Instant, fx: &mut Vec<Effect>) {
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
    }

    /// Starts calling `peer`.
    pub fn dial(
        &mut self,
        peer: &str,
        key: Option<Vec<u8>>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Vec<Effect>, CallError> {
        let invite = self.calls.dial(peer, key.map(ByteBuf::from), now)?;
        self.meta = Some(CallMeta {
            direction: Direction::Outgoing,
            started: wall,
        });
        self.notice = None;
        self.ended_dismissed = true;
        Ok(vec![Effect::Send(invite)])
    }

    pub fn accept(&mut self, key: Option<Vec<u8>>) -> Result<Vec<Effect>, CallError> {
        let msg = self.calls.accept(None, key.map(ByteBuf::from))?;
        Ok(vec![Effect::StopRinging, Effect::Send(msg)])
    }

    pub fn decline(&mut self) -> Result<Vec<Effect>, CallError> {
        let msg = self.calls.decline()?;
        Ok(vec![Effect::StopRinging, Effect::Send(msg)])
    }

    /// Hang up, cancel or decline, whichever fits the call's state.
    pub fn hangup(&mut self, now: Instant) -> Result<Vec<Effect>, CallError> {
        let mut fx = Vec::new();
        match self.calls.hangup(now)? {
            Some(msg) => fx.push(Effect::Send(msg)),
            // Cancelled while dialing: the machine ended the call itself.
            None => {
                if let CallState::Ended { outcome, .. } = self.calls.state() {
                    let outcome = outcome.clone();
                    self.call_ended(&outcome, now, &mut fx);
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
        self.session = Session::Disconnecting;
        vec![Effect::Disconnect]
    }

    /// Names to show in the list: everyone online except the echo service (shown as the sound
    /// test), filtered by a case-insensitive substring.
    pub fn visible_users<'a>(&'a self, filter: &str) -> impl Iterator<Item = &'a UserInfo> {
        let filter = name_key(filter);
        self.users
            .iter()
            .filter(move |(key, _)| key.as_str() != ECHO_USER && key.contains(&filter))
            .map(|(_, u)| u)
    }
}

/// The server's built-in echo test user.
pub const ECHO_USER: &str = "echo";

#[cfg(test)]
mod tests {
    use super::*;
    use fala_proto::{Availability, CallId, EndReason};

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.into(),
            media: "127.0.0.1:5000".parse().unwrap(),
            status: Availability::Available,
        }
    }

    fn online() -> (Model, Instant, SystemTime) {
        let mut m = Model::new();
        let t = Instant::now();
        let w = SystemTime::UNIX_EPOCH;
        m.connecting("127.0.0.1:7400", "ana", true);
        let fx = m.on_event(
            Event::Registered {
                name: "ana".into(),
                media: "127.0.0.1:4000".parse().unwrap(),
                reconnected: false,
            },
            t,
            w,
        );
        assert_eq!(fx, vec![Effect::Send(ClientMsg::List)]);
        (m, t, w)
    }

    #[test]
    fn presence_keeps_the_list_without_me() {
        let (mut m, t, w) = online();
        let users = vec![user("ana"), user("Bob"), user("echo")];
        m.on_event(Event::Server(ServerMsg::Users { users }), t, w);
        assert_eq!(m.users.len(), 2);
        assert_eq!(m.visible_users("").count(), 1);
        m.on_event(
            Event::Server(ServerMsg::UserStatus {
                name: "bob".into(),
                status: Availability::InCall,
            }),
            t,
            w,
        );
        assert_eq!(m.users["bob"].status, Availability::InCall);
        m.on_event(
            Event::Server(ServerMsg::UserLeft { name: "BOB".into() }),
            t,
            w,
        );
        assert_eq!(m.visible_users("").count(), 0);
    }

    #[test]
    fn unreachable_local_server_offers_to_start_one() {
        let mut m = Model::new();
        m.connecting("127.0.0.1:7400", "ana", true);
        m.on_event(
            Event::Unreachable {
                message: "refused".into(),
            },
            Instant::now(),
            SystemTime::UNIX_EPOCH,
        );
        assert!(matches!(
            m.problem,
            Some(ConnectProblem::Unreachable {
                offer_local_server: true,
                ..
            })
        ));
        assert_eq!(m.session, Session::Offline);
    }

    #[test]
    fn incoming_call_rings_connects_and_logs() {
        let (mut m, t, w) = online();
        let id = CallId(9);
        let fx = m.on_event(
            Event::Server(ServerMsg::IncomingCall {
                call_id: id,
                caller: "bob".into(),
                media: "127.0.0.1:5002".parse().unwrap(),
                key: None,
            }),
            t,
            w,
        );
        assert!(fx.contains(&Effect::StartRinging));
        assert!(fx.contains(&Effect::NotifyIncoming("bob".into())));
        assert_eq!(m.disconnect(), vec![]);
        assert_eq!(m.notice, Some(Notice::HangUpFirst));
        let fx = m.accept(None).unwrap();
        assert!(matches!(fx[1], Effect::Send(ClientMsg::Accept { .. })));
        let fx = m.on_event(
            Event::Server(ServerMsg::CallConnected {
                call_id: id,
                peer: "bob".into(),
                media: "127.0.0.1:5002".parse().unwrap(),
                key: Some(ByteBuf::from(vec![7])),
            }),
            t,
            w,
        );
        assert!(fx.contains(&Effect::StartMedia {
            peer: "127.0.0.1:5002".parse().unwrap(),
            peer_key: Some(vec![7]),
            outgoing: false,
        }));
        let later = t + std::time::Duration::from_secs(65);
        let fx = m.on_event(
            Event::Server(ServerMsg::CallEnded {
                call_id: id,
                peer: "bob".into(),
                reason: EndReason::PeerHungUp,
            }),
            later,
            w,
        );
        assert!(fx.contains(&Effect::StopMedia));
        let logged = fx.iter().find_map(|e| match e {
            Effect::Log(entry) => Some(entry.clone()),
            _ => None,
        });
        let entry = logged.expect("logged");
        assert_eq!(entry.direction, Direction::Incoming);
        assert_eq!(entry.talked_secs, Some(65));
        assert!(!m.ended_dismissed);
    }

    #[test]
    fn cancel_while_dialing_ends_at_once_and_is_logged() {
        let (mut m, t, w) = online();
        m.dial("bob", None, t, w).unwrap();
        let fx = m.hangup(t).unwrap();
        assert!(fx.iter().any(|e| matches!(e, Effect::Log(_))));
        assert!(!m.calls.is_busy());
    }

    #[test]
    fn connection_lost_ends_the_call_and_keeps_the_name() {
        let (mut m, t, w) = online();
        m.dial("bob", None, t, w).unwrap();
        m.on_event(
            Event::ConnectionLost {
                message: "gone".into(),
                retry_in: std::time::Duration::from_secs(1),
            },
            t,
            w,
        );
        assert!(matches!(
            m.calls.state(),
            CallState::Ended {
                outcome: Outcome::ServerLost,
                ..
            }
        ));
        assert_eq!(m.my_name(), Some("ana"));
        assert!(matches!(m.session, Session::Reconnecting { .. }));
    }

    #[test]
    fn lookup_reports_not_found_then_found() {
        let (mut m, t, w) = online();
        m.lookup("zed");
        m.on_event(
            Event::Server(ServerMsg::UserNotFound { name: "zed".into() }),
            t,
            w,
        );
        assert_eq!(m.lookup, Lookup::NotFound("zed".into()));
        m.lookup("bob");
        m.on_event(
            Event::Server(ServerMsg::UserFound { user: user("Bob") }),
            t,
            w,
        );
        assert!(matches!(m.lookup, Lookup::Found(_)));
    }
}
