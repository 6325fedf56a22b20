//! The call state machine one client keeps: idle, dialing, ringing out, ringing in, in a call,
//! ended with a reason. The terminal client and the window both drive it, so they agree on
//! what each server event means. Time is an input (`now`), never read here.

use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use thiserror::Error;

use crate::signal::{CallId, Candidate, ClientMsg, EndReason, ErrorCode, MediaAddr, ServerMsg};

/// How a call attempt or a call finished, in the terms a person is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server ended it for this reason.
    Ended(EndReason),
    /// The user to call is not online.
    NotFound,
    /// The server refused the invite (calling yourself, already in a call, rate limited...).
    Refused { code: ErrorCode, message: String },
    /// The connection to the server dropped during the call.
    ServerLost,
    /// We ended the call as it connected because it would not have been private (the peer's
    /// identity or keys failed a check, or no encryption where it is required); why, in words.
    NotPrivate(String),
}

impl Outcome {
    /// Words for a person.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Ended(reason) => reason.describe().to_string(),
            Outcome::NotFound => "not found: nobody by that name is online".into(),
            Outcome::Refused { message, .. } => message.clone(),
            Outcome::ServerLost => "connection to the server was lost".into(),
            Outcome::NotPrivate(why) => format!("not connected: {why}"),
        }
    }
}

/// Where the call stands.
#[derive(Debug, Clone, PartialEq)]
pub enum CallState {
    Idle,
    /// Invite sent, the server has not answered yet.
    Dialing {
        peer: String,
        since: Instant,
    },
    /// The callee's phone is ringing.
    RingingOut {
        call_id: CallId,
        peer: String,
        since: Instant,
    },
    /// Someone is calling us.
    RingingIn {
        call_id: CallId,
        peer: String,
        /// The caller's identity key.
        identity: ByteBuf,
        /// The caller's commitment to its media key (`None`: it offers a call in clear).
        commit: Option<ByteBuf>,
        since: Instant,
    },
    /// Talking.
    InCall {
        call_id: CallId,
        peer: String,
        media: MediaAddr,
        /// The peer's identity key.
        identity: ByteBuf,
        /// The peer's media key and its identity signature (`None`: in clear).
        key: Option<ByteBuf>,
        signature: Option<ByteBuf>,
        /// The server's relay for this call, if it offered one.
        relay: Option<crate::signal::RelayOffer>,
        /// The peer's other media addresses.
        candidates: Vec<Candidate>,
        since: Instant,
    },
    /// Over; the last outcome stays visible until the next call.
    Ended {
        peer: String,
        outcome: Outcome,
        at: Instant,
        /// How long the conversation lasted, if it was connected.
        talked: Option<Duration>,
    },
}

/// A request that does not fit the current state.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CallError {
    #[error("already in a call: hang up first")]
    Busy,
    #[error("there is no incoming call to answer")]
    NoIncomingCall,
    #[error("there is no call to hang up")]
    NoCall,
}

/// What a state change means to the side that owns the machine, so it can start or stop media,
/// ring, or tell the user.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// Our outgoing call is ringing at the peer.
    RingingOut,
    /// An incoming call to accept or decline.
    Incoming,
    /// Audio should start flowing to this address.
    Connected,
    /// The call is over.
    Ended(Outcome),
    /// An incoming call that arrived while busy was answered with a decline by the machine.
    AutoDeclined(CallId),
}

/// The call machine of one client.
#[derive(Debug, Clone)]
pub struct CallMachine {
    state: CallState,
    /// Set when the user hangs up while dialing, before the call id is known.
    cancel_when_known: bool,
}

impl Default for CallMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl CallMachine {
    pub fn new() -> Self {
        CallMachine {
            state: CallState::Idle,
            cancel_when_known: false,
        }
    }

    pub fn state(&self) -> &CallState {
        &self.state
    }

    /// True from dialing or ringing until the call ends.
    pub fn is_busy(&self) -> bool {
        !matches!(self.state, CallState::Idle | CallState::Ended { .. })
    }

    /// The id of the current call, once the server has given one.
    pub fn call_id(&self) -> Option<CallId> {
        match &self.state {
            CallState::RingingOut { call_id, .. }
            | CallState::RingingIn { call_id, .. }
            | CallState::InCall { call_id, .. } => Some(*call_id),
            _ => None,
        }
    }

    /// Name of the other party, if any.
    pub fn peer(&self) -> Option<&str> {
        match &self.state {
            CallState::Idle => None,
            CallState::Dialing { peer, .. }
            | CallState::RingingOut { peer, .. }
            | CallState::RingingIn { peer, .. }
            | CallState::InCall { peer, .. }
            | CallState::Ended { peer, .. } => Some(peer),
        }
    }

    /// How long the current conversation has lasted.
    pub fn talk_time(&self, now: Instant) -> Option<Duration> {
        match &self.state {
            CallState::InCall { since, .. } => Some(now.saturating_duration_since(*since)),
            _ => None,
        }
    }

    /// Starts calling `peer` with the commitment to our media key (`None`: in clear) and our
    /// other media addresses; returns the invite to send.
    pub fn dial(
        &mut self,
        peer: &str,
        commit: Option<ByteBuf>,
        (candidates, hide_address): (Vec<Candidate>, bool),
        now: Instant,
    ) -> Result<ClientMsg, CallError> {
        if self.is_busy() {
            return Err(CallError::Busy);
        }
        self.cancel_when_known = false;
        self.state = CallState::Dialing {
            peer: peer.to_string(),
            since: now,
        };
        Ok(ClientMsg::Invite {
            to: peer.to_string(),
            commit,
            candidates,
            hide_address,
        })
    }

    /// Accepts the ringing incoming call with our signed media key (`None`: in clear) and our
    /// other media addresses.
    pub fn accept(
        &mut self,
        media: Option<MediaAddr>,
        signed_key: Option<(ByteBuf, ByteBuf)>,
        (candidates, hide_address): (Vec<Candidate>, bool),
    ) -> Result<ClientMsg, CallError> {
        let (key, signature) = signed_key.unzip();
        match &self.state {
            CallState::RingingIn { call_id, .. } => Ok(ClientMsg::Accept {
                call_id: *call_id,
                media,
                key,
                signature,
                candidates,
                hide_address,
            }),
            _ => Err(CallError::NoIncomingCall),
        }
    }

    /// Declines the ringing incoming call.
    pub fn decline(&mut self) -> Result<ClientMsg, CallError> {
        match &self.state {
            CallState::RingingIn { call_id, .. } => Ok(ClientMsg::Decline { call_id: *call_id }),
            _ => Err(CallError::NoIncomingCall),
        }
    }

    /// Hangs up, cancels or declines, whichever fits. The state changes when the server
    /// confirms, except while dialing, where the call ends at once and is cancelled as soon as
    /// its id is known.
    pub fn hangup(&mut self, now: Instant) -> Result<Option<ClientMsg>, CallError> {
        match &self.state {
            CallState::Dialing { peer, .. } => {
                self.cancel_when_known = true;
                self.state = CallState::Ended {
                    peer: peer.clone(),
                    outcome: Outcome::Ended(EndReason::Cancelled),
                    at: now,
                    talked: None,
                };
                Ok(None)
            }
            CallState::RingingOut { call_id, .. } => {
                Ok(Some(ClientMsg::Cancel { call_id: *call_id }))
            }
            CallState::RingingIn { call_id, .. } => {
                Ok(Some(ClientMsg::Decline { call_id: *call_id }))
            }
            CallState::InCall { call_id, .. } => Ok(Some(ClientMsg::Hangup { call_id: *call_id })),
            CallState::Idle | CallState::Ended { .. } => Err(CallError::NoCall),
        }
    }

    /// The server is gone for good (the client stopped): any call is over.
    pub fn server_lost(&mut self, now: Instant) -> Option<CallEvent> {
        self.end(Outcome::ServerLost, now)
    }

    /// The server connection dropped and is being made again: an answered call goes on (its
    /// media does not pass through the signaling, and the server holds the call for us to
    /// come back); one still being set up is over.
    pub fn signaling_lost(&mut self, now: Instant) -> Option<CallEvent> {
        match self.state {
            CallState::InCall { .. } => None,
            _ => self.end(Outcome::ServerLost, now),
        }
    }

    /// Registered again after a lost connection; `kept` is the call the server held for us.
    /// A call of ours it did not keep ended meanwhile.
    pub fn resumed(&mut self, kept: Option<CallId>, now: Instant) -> Option<CallEvent> {
        match self.state {
            CallState::InCall { call_id, .. } if Some(call_id) != kept => {
                self.end(Outcome::ServerLost, now)
            }
            _ => None,
        }
    }

    /// Hung up while the server cannot be told (it is told on reconnecting): the call ends
    /// here at once.
    pub fn hung_up_offline(&mut self, now: Instant) -> Option<CallEvent> {
        self.end(Outcome::Ended(EndReason::HungUp), now)
    }

    /// Refuses the call that just connected because it would not be private: returns the
    /// hang-up to send and ends the call here at once, as never talked (the server's
    /// confirmation then finds no call and changes nothing).
    pub fn refuse(&mut self, why: String, now: Instant) -> (Option<ClientMsg>, Option<CallEvent>) {
        let hangup = match &self.state {
            CallState::InCall { call_id, .. } => Some(ClientMsg::Hangup { call_id: *call_id }),
            CallState::RingingIn { call_id, .. } => Some(ClientMsg::Decline { call_id: *call_id }),
            _ => None,
        };
        if let CallState::InCall { since, .. } = &mut self.state {
            // Not a conversation: nothing was said.
            *since = now;
        }
        let ended = self.end(Outcome::NotPrivate(why), now);
        if let CallState::Ended { talked, .. } = &mut self.state {
            *talked = None;
        }
        (hangup, ended)
    }

    fn end(&mut self, outcome: Outcome, now: Instant) -> Option<CallEvent> {
        if !self.is_busy() {
            return None;
        }
        let talked = self.talk_time(now);
        let peer = self.peer().unwrap_or_default().to_string();
        self.state = CallState::Ended {
            peer,
            outcome: outcome.clone(),
            at: now,
            talked,
        };
        Some(CallEvent::Ended(outcome))
    }

    /// Feeds one server message. Returns what changed and, if needed, a message to send back.
    pub fn on_server(
        &mut self,
        msg: &ServerMsg,
        now: Instant,
    ) -> (Option<CallEvent>, Option<ClientMsg>) {
        match msg {
            ServerMsg::Ringing { call_id, peer } => {
                if self.cancel_when_known {
                    self.cancel_when_known = false;
                    return (None, Some(ClientMsg::Cancel { call_id: *call_id }));
                }
                if matches!(self.state, CallState::Dialing { .. }) {
                    self.state = CallState::RingingOut {
                        call_id: *call_id,
                        peer: peer.clone(),
                        since: now,
                    };
                    return (Some(CallEvent::RingingOut), None);
                }
                (None, None)
            }
            ServerMsg::IncomingCall {
                call_id,
                caller,
                identity,
                commit,
            } => {
                if self.is_busy() {
                    // The server marks a ringing or talking user busy, so this only happens in a
                    // race with our own invite; answer it rather than leave it ringing.
                    return (
                        Some(CallEvent::AutoDeclined(*call_id)),
                        Some(ClientMsg::Decline { call_id: *call_id }),
                    );
                }
                self.state = CallState::RingingIn {
                    call_id: *call_id,
                    peer: caller.clone(),
                    identity: identity.clone(),
                    commit: commit.clone(),
                    since: now,
                };
                (Some(CallEvent::Incoming), None)
            }
            ServerMsg::CallConnected {
                call_id,
                peer,
                media,
                identity,
                key,
                signature,
                relay,
                candidates,
            } => {
                if self.call_id() == Some(*call_id) {
                    self.state = CallState::InCall {
                        call_id: *call_id,
                        peer: peer.clone(),
                        media: *media,
                        identity: identity.clone(),
                        key: key.clone(),
                        signature: signature.clone(),
                        relay: relay.clone(),
                        candidates: candidates.clone(),
                        since: now,
                    };
                    return (Some(CallEvent::Connected), None);
                }
                (None, None)
            }
            ServerMsg::CallEnded {
                call_id, reason, ..
            } => {
                let ours = self.call_id() == Some(*call_id)
                    || (matches!(self.state, CallState::Dialing { .. })
                        && *reason == EndReason::Busy);
                if ours {
                    return (self.end(Outcome::Ended(*reason), now), None);
                }
                (None, None)
            }
            ServerMsg::Error { code, message, .. }
                if matches!(self.state, CallState::Dialing { .. }) =>
            {
                let outcome = match code {
                    ErrorCode::UserNotFound => Outcome::NotFound,
                    ErrorCode::SelfCall
                    | ErrorCode::AlreadyInCall
                    | ErrorCode::RateLimited
                    | ErrorCode::NotRegistered => Outcome::Refused {
                        code: *code,
                        message: message.clone(),
                    },
                    _ => return (None, None),
                };
                (self.end(outcome, now), None)
            }
            ServerMsg::Shutdown { .. } => (
                self.end(Outcome::Ended(EndReason::ServerShutdown), now),
                None,
            ),
            _ => (None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media() -> MediaAddr {
        "127.0.0.1:4000".parse().unwrap()
    }

    #[test]
    fn outgoing_call_rings_connects_and_ends() {
        let t0 = Instant::now();
        let mut m = CallMachine::new();
        let invite = m.dial("bob", None, (Vec::new(), false), t0).unwrap();
        assert!(matches!(invite, ClientMsg::Invite { ref to, .. } if to == "bob"));
        assert_eq!(
            m.dial("carol", None, (Vec::new(), false), t0),
            Err(CallError::Busy)
        );
        let id = CallId(7);
        let ringing = ServerMsg::Ringing {
            call_id: id,
            peer: "bob".into(),
        };
        assert_eq!(m.on_server(&ringing, t0).0, Some(CallEvent::RingingOut));
        let connected = ServerMsg::CallConnected {
            call_id: id,
            peer: "bob".into(),
            media: media(),
            identity: ByteBuf::from(vec![3; 32]),
            key: None,
            signature: None,
            relay: None,
            candidates: Vec::new(),
        };
        assert_eq!(m.on_server(&connected, t0).0, Some(CallEvent::Connected));
        let t1 = t0 + Duration::from_secs(65);
        assert_eq!(m.talk_time(t1), Some(Duration::from_secs(65)));
        assert_eq!(
            m.hangup(t1).unwrap(),
            Some(ClientMsg::Hangup { call_id: id })
        );
        let ended = ServerMsg::CallEnded {
            call_id: id,
            peer: "bob".into(),
            reason: EndReason::HungUp,
        };
        assert_eq!(
            m.on_server(&ended, t1).0,
            Some(CallEvent::Ended(Outcome::Ended(EndReason::HungUp)))
        );
        match m.state() {
            CallState::Ended { talked, .. } => assert_eq!(*talked, Some(Duration::from_secs(65))),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!m.is_busy());
    }

    #[test]
    fn hangup_while_dialing_cancels_once_id_known() {
        let t0 = Instant::now();
        let mut m = CallMachine::new();
        m.dial("bob", None, (Vec::new(), false), t0).unwrap();
        assert_eq!(m.hangup(t0).unwrap(), None);
        assert!(!m.is_busy());
        let ringing = ServerMsg::Ringing {
            call_id: CallId(9),
            peer: "bob".into(),
        };
        assert_eq!(
            m.on_server(&ringing, t0).1,
            Some(ClientMsg::Cancel { call_id: CallId(9) })
        );
    }

    #[test]
    fn not_found_and_busy_end_the_attempt() {
        let t0 = Instant::now();
        let mut m = CallMachine::new();
        m.dial("ghost", None, (Vec::new(), false), t0).unwrap();
        let err = ServerMsg::error(ErrorCode::UserNotFound, "no ghost");
        assert_eq!(
            m.on_server(&err, t0).0,
            Some(CallEvent::Ended(Outcome::NotFound))
        );
        m.dial("bob", None, (Vec::new(), false), t0).unwrap();
        let busy = ServerMsg::CallEnded {
            call_id: CallId(3),
            peer: "bob".into(),
            reason: EndReason::Busy,
        };
        assert_eq!(
            m.on_server(&busy, t0).0,
            Some(CallEvent::Ended(Outcome::Ended(EndReason::Busy)))
        );
    }

    #[test]
    fn incoming_call_accept_and_server_loss() {
        let t0 = Instant::now();
        let mut m = CallMachine::new();
        assert_eq!(
            m.accept(None, None, (Vec::new(), false)),
            Err(CallError::NoIncomingCall)
        );
        let inc = ServerMsg::IncomingCall {
            call_id: CallId(5),
            caller: "ana".into(),
            identity: ByteBuf::from(vec![1; 32]),
            commit: None,
        };
        assert_eq!(m.on_server(&inc, t0).0, Some(CallEvent::Incoming));
        // A second invite while ringing is declined by the machine.
        let inc2 = ServerMsg::IncomingCall {
            call_id: CallId(6),
            caller: "zé".into(),
            identity: ByteBuf::from(vec![2; 32]),
            commit: None,
        };
        assert_eq!(
            m.on_server(&inc2, t0).1,
            Some(ClientMsg::Decline { call_id: CallId(6) })
        );
        assert!(matches!(
            m.accept(None, None, (Vec::new(), false)),
            Ok(ClientMsg::Accept {
                call_id: CallId(5),
                ..
            })
        ));
        let conn = ServerMsg::CallConnected {
            call_id: CallId(5),
            peer: "ana".into(),
            media: media(),
            identity: ByteBuf::from(vec![3; 32]),
            key: None,
            signature: None,
            relay: None,
            candidates: Vec::new(),
        };
        m.on_server(&conn, t0);
        assert_eq!(
            m.server_lost(t0),
            Some(CallEvent::Ended(Outcome::ServerLost))
        );
    }
}
