//! Call routing: invite, ringing, accept, reveal, decline, cancel, hang-up, no answer, peer lost.
//!
//! The server only relays; audio flows peer to peer. Every operation is keyed by the
//! connection that asked, so nobody can answer or end a call that is not theirs. For an
//! encrypted call the caller's key is revealed only after the callee's has reached it
//! (`fala_proto::call_keys`), so an accepted call passes through a revealing phase.

use std::time::{Duration, Instant};

use fala_proto::name::name_key;
use fala_proto::{
    Availability, CallId, Candidate, EndReason, ErrorCode, MediaAddr, RelayOffer, ServerMsg,
};
use serde_bytes::ByteBuf;

use crate::hub::{Conn, ConnId, State};
use crate::relay::TOKEN_LEN;

/// Where a call stands on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Ringing,
    /// Accepted: the caller has the callee's key; the callee waits for the caller's reveal.
    Revealing,
    Active,
}

/// One call between two registered users (name keys).
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub caller: String,
    pub callee: String,
    pub phase: Phase,
    /// The caller's commitment to its media key (`None`: a call in clear).
    pub commit: Option<ByteBuf>,
    /// Where the callee receives media, once it accepted.
    pub callee_media: Option<MediaAddr>,
    /// Each side's other media addresses, from its invite or accept; each goes to the other
    /// side only in `call_connected`.
    pub caller_candidates: Vec<Candidate>,
    pub callee_candidates: Vec<Candidate>,
    /// The side asked that the other see the relay instead of its addresses.
    pub caller_hidden: bool,
    pub callee_hidden: bool,
}

/// What one side of a call is shown of the other's addresses: the other's own, or, when the
/// other hides them ("always relay") and a relay carries the call, the address of the relay
/// leg given to this side and no candidates (only the relay reaches the hidden side).
fn shown(
    (media, candidates): (MediaAddr, Vec<Candidate>),
    hidden: bool,
    viewer_relay: &Option<RelayOffer>,
) -> (MediaAddr, Vec<Candidate>) {
    match viewer_relay {
        Some(relay) if hidden => (relay.media, Vec::new()),
        _ => (media, candidates),
    }
}

/// A fresh call id from the OS random generator (unguessable, 64 bits).
pub(crate) fn new_call_id() -> CallId {
    let mut b = [0u8; 8];
    // The OS generator failing is not something a server can work around.
    getrandom::fill(&mut b).expect("OS random generator");
    CallId(u64::from_le_bytes(b))
}

/// Invites from one connection to the same callee within [`REINVITE_WINDOW`]; more are
/// refused as `rate_limited`, so nobody can keep someone ringing (and busy) by calling again
/// and again.
pub(crate) const REINVITES_PER_WINDOW: usize = 3;
pub(crate) const REINVITE_WINDOW: Duration = Duration::from_secs(60);

/// What the session must do after an invite.
pub(crate) enum InviteOutcome {
    /// Arm the ring timer for this call.
    Ringing(CallId),
    /// Answered or refused at once; nothing to arm.
    Done,
}

impl State {
    fn user_key_of(&self, conn: ConnId) -> Option<String> {
        self.conns.get(&conn).and_then(|c| c.user.clone())
    }

    /// Marks a user busy or free and tells subscribers. Services (no connection) take any
    /// number of calls, so they are never marked.
    fn set_call(&mut self, key: &str, call: Option<CallId>) {
        let Some(user) = self.users.get_mut(key).filter(|u| u.conn.is_some()) else {
            return;
        };
        user.call = call;
        let status = if call.is_some() {
            Availability::InCall
        } else {
            Availability::Available
        };
        let name = user.name.clone();
        self.broadcast(key, &ServerMsg::UserStatus { name, status }, None);
    }

    fn display_name(&self, key: &str) -> String {
        self.users
            .get(key)
            .map(|u| u.name.clone())
            .unwrap_or_default()
    }

    /// Counts an invite from `conn` to `callee` at `now`; false when it is one too many
    /// within the window.
    fn note_invite(&mut self, conn: ConnId, callee: &str, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let recent = &mut c.recent_invites;
        while recent
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > REINVITE_WINDOW)
        {
            recent.pop_front();
        }
        if recent.iter().filter(|(k, _)| k == callee).count() >= REINVITES_PER_WINDOW {
            return false;
        }
        if recent.len() >= 4 * REINVITES_PER_WINDOW {
            recent.pop_front();
        }
        recent.push_back((callee.to_string(), now));
        true
    }

    /// Whether the user `callee` refuses calls from `caller`.
    fn blocks(&self, callee: &str, caller: &str) -> bool {
        let conn = self.users.get(callee).and_then(|u| u.conn);
        conn.and_then(|c| self.conns.get(&c))
            .is_some_and(|c| c.blocked.contains(caller))
    }

    /// Refuses calls from `name` to the user of `conn`.
    pub fn block(&mut self, conn: ConnId, name: &str) {
        if self.user_key_of(conn).is_none() {
            let msg = "register a name before blocking anyone";
            return self.send(conn, &ServerMsg::error(ErrorCode::NotRegistered, msg));
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.blocked.len() >= fala_proto::BLOCK_MAX {
            let msg = format!("you can block at most {} names", fala_proto::BLOCK_MAX);
            return self.send(conn, &ServerMsg::error(ErrorCode::InvalidMessage, msg));
        }
        c.blocked.insert(name_key(name));
    }

    pub fn unblock(&mut self, conn: ConnId, name: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.blocked.remove(&name_key(name));
        }
    }

    /// Starts a call from `conn` to `to`.
    pub fn invite(
        &mut self,
        conn: ConnId,
        to: &str,
        (commit, (candidates, hidden)): (Option<ByteBuf>, (Vec<Candidate>, bool)),
        now: Instant,
    ) -> InviteOutcome {
        let Some(caller) = self.user_key_of(conn) else {
            let msg = "register a name before calling";
            self.send(conn, &ServerMsg::error(ErrorCode::NotRegistered, msg));
            return InviteOutcome::Done;
        };
        let callee = name_key(to);
        if callee == caller {
            let msg = "you cannot call yourself";
            self.send(conn, &ServerMsg::error(ErrorCode::SelfCall, msg));
            return InviteOutcome::Done;
        }
        if self.users.get(&caller).is_some_and(|u| u.call.is_some()) {
            let msg = "you are already in a call: hang up first";
            self.send(conn, &ServerMsg::error(ErrorCode::AlreadyInCall, msg));
            return InviteOutcome::Done;
        }
        let Some(callee_user) = self.users.get(&callee) else {
            let msg = format!("{:?} is not online", to.trim());
            self.send(conn, &ServerMsg::error(ErrorCode::UserNotFound, msg));
            return InviteOutcome::Done;
        };
        let call_id = new_call_id();
        let peer = callee_user.name.clone();
        if !self.note_invite(conn, &callee, now) {
            let msg = format!(
                "you called {peer} {REINVITES_PER_WINDOW} times within a minute; wait before calling again"
            );
            self.send(conn, &ServerMsg::error(ErrorCode::RateLimited, msg));
            return InviteOutcome::Done;
        }
        // A call that ends at once is told to the caller only, under a fresh call id.
        let end_at_once = |state: &mut Self, peer: String, reason: EndReason| {
            let ended = ServerMsg::CallEnded {
                call_id,
                peer,
                reason,
            };
            state.send(conn, &ended);
            InviteOutcome::Done
        };
        if self.blocks(&callee, &caller) {
            // Ends as if declined: the caller learns nothing of the block, the callee is not
            // disturbed.
            return end_at_once(self, peer, EndReason::Declined);
        }
        let Some(callee_user) = self.users.get(&callee) else {
            return InviteOutcome::Done;
        };
        if callee_user.call.is_some() {
            return end_at_once(self, peer, EndReason::Busy);
        }
        let service = callee_user.conn.is_none();
        self.calls.insert(
            call_id,
            Call {
                caller: caller.clone(),
                callee: callee.clone(),
                phase: Phase::Ringing,
                commit: commit.clone(),
                callee_media: None,
                caller_candidates: candidates,
                callee_candidates: Vec::new(),
                caller_hidden: hidden,
                callee_hidden: false,
            },
        );
        self.set_call(&caller, Some(call_id));
        self.set_call(&callee, Some(call_id));
        self.send(conn, &ServerMsg::Ringing { call_id, peer });
        let caller_user = &self.users[&caller];
        let incoming = ServerMsg::IncomingCall {
            call_id,
            caller: caller_user.name.clone(),
            identity: ByteBuf::from(caller_user.identity.to_vec()),
            commit,
        };
        if service {
            self.service_incoming(call_id, &callee);
            return InviteOutcome::Done;
        }
        self.send_user(&callee, &incoming);
        InviteOutcome::Ringing(call_id)
    }

    /// A call of `conn`'s in `phase`, with `conn` as caller (`Some(true)`) or callee.
    fn own_call(&self, conn: ConnId, call_id: CallId) -> Option<(Call, bool)> {
        let me = self.user_key_of(conn)?;
        let call = self.calls.get(&call_id)?;
        if call.caller == me {
            Some((call.clone(), true))
        } else if call.callee == me {
            Some((call.clone(), false))
        } else {
            None
        }
    }

    fn unknown_call(&mut self, conn: ConnId, call_id: CallId, what: &str) {
        let msg = format!("call {call_id} is not yours to {what}, or is not in a state to {what}");
        self.send(
            conn,
            &ServerMsg::call_error(ErrorCode::UnknownCall, msg, call_id),
        );
    }

    /// The callee answers. `media` overrides its registered media address for this call;
    /// `signed_key` is its media key and signature.
    pub fn accept(
        &mut self,
        conn: ConnId,
        call_id: CallId,
        media: Option<MediaAddr>,
        signed_key: (Option<ByteBuf>, Option<ByteBuf>),
        (candidates, hidden): (Vec<Candidate>, bool),
    ) {
        match self.own_call(conn, call_id) {
            Some((call, false)) if call.phase == Phase::Ringing => {
                if let Some(c) = self.calls.get_mut(&call_id) {
                    c.callee_candidates = candidates;
                    c.callee_hidden = hidden;
                }
                let peer_ip = self.conns.get(&conn).map(|c| c.peer_ip);
                let callee_media = match (media, peer_ip) {
                    (Some(m), Some(ip)) if m.ip().is_unspecified() => MediaAddr::new(ip, m.port()),
                    (Some(m), _) => m,
                    (None, _) => self.users[&call.callee].media,
                };
                match (call.commit.is_some(), signed_key) {
                    (true, (Some(key), Some(signature))) => {
                        self.await_reveal(call_id, callee_media, key, signature)
                    }
                    // Either side offered no key: the call is in clear, and each client
                    // decides whether it takes such a call.
                    _ => self.connect(call_id, callee_media),
                }
            }
            _ => self.unknown_call(conn, call_id, "accept"),
        }
    }

    /// The callee's signed key goes to the caller; the callee hears of the call once the caller
    /// has revealed its own.
    pub(crate) fn await_reveal(
        &mut self,
        call_id: CallId,
        callee_media: MediaAddr,
        key: ByteBuf,
        signature: ByteBuf,
    ) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        call.phase = Phase::Revealing;
        call.callee_media = Some(callee_media);
        let call = call.clone();
        let (relay, _) = self.relay_offers(call_id, &call);
        let Some(callee) = self.users.get(&call.callee) else {
            return;
        };
        let (media, candidates) = shown(
            (callee_media, call.callee_candidates),
            call.callee_hidden,
            &relay,
        );
        let to_caller = callee.connected(call_id, media, Some((key, signature)), relay, candidates);
        self.send_user(&call.caller, &to_caller);
    }

    /// The relay legs of a call between two connected users (none for a call to a service,
    /// whose media is on this server anyway): each side's offer, with the address that side
    /// reached us on. Asking again gives the same tokens.
    fn relay_offers(
        &self,
        call_id: CallId,
        call: &Call,
    ) -> (Option<RelayOffer>, Option<RelayOffer>) {
        let Some((relay, port)) = &self.relay else {
            return (None, None);
        };
        let conn_of = |key: &str| {
            self.users
                .get(key)
                .and_then(|u| u.conn)
                .and_then(|c| self.conns.get(&c))
        };
        let (Some(caller), Some(callee)) = (conn_of(&call.caller), conn_of(&call.callee)) else {
            return (None, None);
        };
        let (caller_token, callee_token) = relay.open(call_id, Instant::now());
        let offer = |conn: &Conn, token: [u8; TOKEN_LEN]| RelayOffer {
            media: MediaAddr::new(conn.local_ip, *port),
            token: ByteBuf::from(token.to_vec()),
        };
        (
            Some(offer(caller, caller_token)),
            Some(offer(callee, callee_token)),
        )
    }

    /// The caller reveals its signed key: the callee now learns of the connected call.
    pub fn reveal(&mut self, conn: ConnId, call_id: CallId, key: ByteBuf, signature: ByteBuf) {
        let call = match self.own_call(conn, call_id) {
            Some((call, true)) if call.phase == Phase::Revealing => call,
            _ => return self.unknown_call(conn, call_id, "reveal"),
        };
        if let Some(c) = self.calls.get_mut(&call_id) {
            c.phase = Phase::Active;
        }
        let Some(caller) = self.users.get(&call.caller) else {
            return;
        };
        if self
            .users
            .get(&call.callee)
            .is_some_and(|u| u.conn.is_none())
        {
            let identity = caller.identity;
            self.service_reveal(call_id, identity, (&key, &signature));
            return;
        }
        let (_, relay) = self.relay_offers(call_id, &call);
        let (media, candidates) = shown(
            (caller.media, call.caller_candidates),
            call.caller_hidden,
            &relay,
        );
        let to_callee = caller.connected(call_id, media, Some((key, signature)), relay, candidates);
        self.send_user(&call.callee, &to_callee);
    }

    /// Marks a ringing call active, in clear, and tells both sides where to send audio.
    pub(crate) fn connect(&mut self, call_id: CallId, callee_media: MediaAddr) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        call.phase = Phase::Active;
        let call = call.clone();
        let (Some(caller), Some(callee)) =
            (self.users.get(&call.caller), self.users.get(&call.callee))
        else {
            return;
        };
        let (caller_relay, callee_relay) = self.relay_offers(call_id, &call);
        let (media, candidates) = shown(
            (callee_media, call.callee_candidates),
            call.callee_hidden,
            &caller_relay,
        );
        let to_caller = callee.connected(call_id, media, None, caller_relay, candidates);
        let (media, candidates) = shown(
            (caller.media, call.caller_candidates),
            call.caller_hidden,
            &callee_relay,
        );
        let to_callee = caller.connected(call_id, media, None, callee_relay, candidates);
        self.send_user(&call.caller, &to_caller);
        self.send_user(&call.callee, &to_callee);
    }

    /// Removes a call and tells each side why, each in its own words.
    pub(crate) fn finish(&mut self, call_id: CallId, to_caller: EndReason, to_callee: EndReason) {
        let Some(call) = self.calls.remove(&call_id) else {
            return;
        };
        if let Some((relay, _)) = &self.relay {
            if let Some((from_caller, from_callee)) = relay.close(call_id) {
                tracing::debug!(%call_id, ?from_caller, ?from_callee, "relay closed");
            }
        }
        let caller_name = self.display_name(&call.caller);
        let callee_name = self.display_name(&call.callee);
        self.set_call(&call.caller, None);
        self.set_call(&call.callee, None);
        let caller_msg = ServerMsg::CallEnded {
            call_id,
            peer: callee_name,
            reason: to_caller,
        };
        let callee_msg = ServerMsg::CallEnded {
            call_id,
            peer: caller_name,
            reason: to_callee,
        };
        self.send_user(&call.caller, &caller_msg);
        self.send_user(&call.callee, &callee_msg);
        self.service_call_ended(call_id);
        // A side lost mid-call was held for its call only.
        for key in [&call.caller, &call.callee] {
            if self.users.get(key).is_some_and(|u| u.away_since.is_some()) {
                self.leave(key);
            }
        }
    }

    /// The callee says no; also while its accept waits for the caller's key.
    pub fn decline(&mut self, conn: ConnId, call_id: CallId) {
        match self.own_call(conn, call_id) {
            Some((call, false)) if matches!(call.phase, Phase::Ringing | Phase::Revealing) => {
                self.finish(call_id, EndReason::Declined, EndReason::Declined)
            }
            _ => self.unknown_call(conn, call_id, "decline"),
        }
    }

    pub fn cancel(&mut self, conn: ConnId, call_id: CallId) {
        match self.own_call(conn, call_id) {
            Some((call, true)) if call.phase == Phase::Ringing => {
                self.finish(call_id, EndReason::Cancelled, EndReason::Cancelled)
            }
            _ => self.unknown_call(conn, call_id, "cancel"),
        }
    }

    /// Ends a call from either side; while ringing it means cancel (caller) or decline (callee).
    pub fn hangup(&mut self, conn: ConnId, call_id: CallId) {
        match self.own_call(conn, call_id) {
            Some((call, true)) if call.phase == Phase::Ringing => {
                self.finish(call_id, EndReason::Cancelled, EndReason::Cancelled)
            }
            Some((call, false)) if call.phase == Phase::Ringing => {
                self.finish(call_id, EndReason::Declined, EndReason::Declined)
            }
            Some((_, true)) => self.finish(call_id, EndReason::HungUp, EndReason::PeerHungUp),
            Some((_, false)) => self.finish(call_id, EndReason::PeerHungUp, EndReason::HungUp),
            None => self.unknown_call(conn, call_id, "hang up"),
        }
    }

    /// The ring timer fired: a call still ringing ends with `no_answer` for both; one whose
    /// caller never revealed its key ends as `cancelled` for it and `peer_lost` for the
    /// callee.
    pub fn ring_timeout(&mut self, call_id: CallId) {
        match self.calls.get(&call_id).map(|c| c.phase) {
            Some(Phase::Ringing) => self.finish(call_id, EndReason::NoAnswer, EndReason::NoAnswer),
            Some(Phase::Revealing) => {
                self.finish(call_id, EndReason::Cancelled, EndReason::PeerLost)
            }
            _ => {}
        }
    }

    /// The user under `lost_key` vanished: the other side is told at once.
    pub fn end_call_lost(&mut self, call_id: CallId, lost_key: &str) {
        tracing::debug!(%call_id, lost = lost_key, "call ended: peer lost");
        // Only the side still connected receives its message.
        self.finish(call_id, EndReason::PeerLost, EndReason::PeerLost);
    }
}
