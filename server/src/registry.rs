//! Names and presence: register, look up, list, subscribe, leave.

use std::net::IpAddr;
use std::ops::Bound;
use std::time::Instant;

use fala_proto::identity::IDENTITY_LEN;
use fala_proto::name::{name_key, validate_name};

use std::collections::HashSet;

use fala_proto::{
    CallId, ErrorCode, MediaAddr, ServerMsg, UserInfo, LIST_PAGE_MAX, SEARCH_PAGE_MAX, WATCH_MAX,
};

use crate::hub::{ConnId, State, User};
use crate::names::{unix_now, Claim};

/// Says whose a name is without saying anything else about them.
fn owned_message(wanted: &str, owner: &str) -> String {
    if wanted.to_lowercase() == owner.to_lowercase() {
        format!("the name {wanted:?} belongs to someone else")
    } else {
        format!("the name {wanted:?} reads the same as {owner:?}, which belongs to someone else")
    }
}

impl State {
    /// Claims `raw_name` for `conn`, whose client proved it holds `identity` (the session
    /// checked the signature). The name is bound to the connection from here on.
    pub fn register(
        &mut self,
        conn: ConnId,
        raw_name: &str,
        media: MediaAddr,
        identity: [u8; IDENTITY_LEN],
        resume: Option<CallId>,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if let Some(existing) = &c.user {
            let msg = format!("this connection is already registered as {existing:?}");
            self.send(conn, &ServerMsg::error(ErrorCode::AlreadyRegistered, msg));
            return;
        }
        let name = match validate_name(raw_name) {
            Ok(name) => name,
            Err(rule) => {
                let msg = format!("invalid name {raw_name:?}: {rule}");
                self.send(conn, &ServerMsg::error(ErrorCode::InvalidName, msg));
                return;
            }
        };
        let key = name_key(&name);
        if let Some(holder) = self.users.get(&key) {
            if holder.identity == identity && holder.conn.is_some() && resume.is_some() {
                return self.take_over(conn, key, media, resume);
            }
            let (code, msg) = if holder.identity == identity {
                let msg = format!(
                    "you are already online as {:?} on another connection",
                    holder.name
                );
                (ErrorCode::NameTaken, msg)
            } else {
                (ErrorCode::NameOwned, owned_message(&name, &holder.name))
            };
            self.send(conn, &ServerMsg::error(code, msg));
            return;
        }
        let ip = IpAddr::V4(c.peer_ip);
        let refusal = match self
            .names
            .claim(&key, &name, &identity, ip, false, unix_now())
        {
            Claim::Granted { .. } => None,
            Claim::Owned { name: owner } => {
                Some((ErrorCode::NameOwned, owned_message(&name, &owner)))
            }
            Claim::TooManyNew => Some((
                ErrorCode::RateLimited,
                "too many new names from your address; try again within the hour".to_string(),
            )),
            Claim::NoRoom => Some((
                ErrorCode::NoRoom,
                "the server takes no new names right now; try again later".to_string(),
            )),
        };
        if let Some((code, msg)) = refusal {
            self.send(conn, &ServerMsg::error(code, msg));
            return;
        }
        let Some(media) = self.media_seen(conn, media) else {
            return;
        };
        self.users.insert(
            key.clone(),
            User {
                name: name.clone(),
                media,
                identity,
                conn: Some(conn),
                call: None,
                away_since: None,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.user = Some(key.clone());
        }
        tracing::debug!(conn, %name, %media, "registered");
        let stun = self.stun_for(conn);
        let registered = ServerMsg::Registered {
            name,
            media,
            stun,
            call: None,
        };
        self.send(conn, &registered);
        if let Some(user) = self.user_info(&key) {
            self.broadcast(&key, &ServerMsg::UserJoined { user }, Some(conn));
        }
    }

    /// `media` as registered by `conn`: an unspecified IP means the one its connection
    /// comes from. `None` when the connection is gone.
    fn media_seen(&self, conn: ConnId, media: MediaAddr) -> Option<MediaAddr> {
        let c = self.conns.get(&conn)?;
        Some(if media.ip().is_unspecified() {
            MediaAddr::new(c.peer_ip, media.port())
        } else {
            media
        })
    }

    /// The STUN port at the address `conn` reached us on, when the relay's port is bound.
    fn stun_for(&self, conn: ConnId) -> Option<MediaAddr> {
        let (_, port) = self.relay.as_ref()?;
        Some(MediaAddr::new(self.conns.get(&conn)?.local_ip, *port))
    }

    /// The holder of the name under `key` comes back on `conn` (it proved the same identity
    /// and asked to `resume`): the old connection, if the server still has it (a path that
    /// died without a word), is closed; the call named in `resume` goes on, any other call
    /// of the user ends (the client no longer knows it).
    fn take_over(&mut self, conn: ConnId, key: String, media: MediaAddr, resume: Option<CallId>) {
        let Some(media) = self.media_seen(conn, media) else {
            return;
        };
        let Some(old) = self.users.get(&key).and_then(|u| u.conn) else {
            return;
        };
        if old != conn && self.conns.contains_key(&old) {
            let msg = "you registered again on another connection; closing this one";
            self.send(old, &ServerMsg::error(ErrorCode::Replaced, msg));
            if let Some(c) = self.conns.get_mut(&old) {
                c.user = None;
                c.tx = None;
            }
        }
        let Some(user) = self.users.get_mut(&key) else {
            return;
        };
        user.conn = Some(conn);
        user.away_since = None;
        user.media = media;
        let name = user.name.clone();
        let stale = user.call.filter(|c| Some(*c) != resume);
        let call = user.call.filter(|c| Some(*c) == resume);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.user = Some(key.clone());
        }
        tracing::debug!(conn, old, %name, ?call, "resumed");
        let stun = self.stun_for(conn);
        let registered = ServerMsg::Registered {
            name,
            media,
            stun,
            call,
        };
        // `registered` first: it is the answer to `register`, whatever follows.
        self.send(conn, &registered);
        if let Some(call_id) = stale {
            self.end_call_lost(call_id, &key);
        }
    }

    /// How the user under `key` looks to others.
    pub fn user_info(&self, key: &str) -> Option<UserInfo> {
        self.users.get(key).map(|u| u.info())
    }

    /// Answers a lookup: found (with address and availability) or not found.
    pub fn lookup(&mut self, conn: ConnId, raw_name: &str) {
        let reply = match self.user_info(&name_key(raw_name)) {
            Some(user) => ServerMsg::UserFound { user },
            None => ServerMsg::UserNotFound {
                name: raw_name.trim().to_string(),
            },
        };
        self.send(conn, &reply);
    }

    /// One page of who is online: the users after the name key `after`, in order, at most
    /// `limit` (capped at [`LIST_PAGE_MAX`]), and whether more remain.
    pub fn user_page(&self, after: Option<&str>, limit: usize) -> (Vec<UserInfo>, bool) {
        let limit = limit.clamp(1, LIST_PAGE_MAX);
        let from = match after {
            Some(key) => Bound::Excluded(name_key(key)),
            None => Bound::Unbounded,
        };
        let mut page = self.users.range((from, Bound::Unbounded));
        let users: Vec<UserInfo> = page.by_ref().take(limit).map(|(_, u)| u.info()).collect();
        (users, page.next().is_some())
    }

    pub fn list(&mut self, conn: ConnId, after: Option<&str>, limit: Option<u32>) {
        let limit = limit.map_or(LIST_PAGE_MAX, |l| l as usize);
        let (users, more) = self.user_page(after, limit);
        self.send(conn, &ServerMsg::Users { users, more });
    }

    /// Answers a directory search: the online users whose name key starts with the key of
    /// `prefix`, after the name `after`, at most [`SEARCH_PAGE_MAX`], in key order.
    pub fn search(&mut self, conn: ConnId, prefix: &str, after: Option<&str>) {
        let wanted = name_key(prefix);
        let from = match after.map(name_key) {
            Some(last) if last >= wanted => Bound::Excluded(last),
            _ => Bound::Included(wanted.clone()),
        };
        let mut hits = self
            .users
            .range((from, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(&wanted));
        let users: Vec<UserInfo> = hits
            .by_ref()
            .take(SEARCH_PAGE_MAX)
            .map(|(_, u)| u.info())
            .collect();
        let more = hits.next().is_some();
        self.send(conn, &ServerMsg::SearchResults { users, more });
    }

    /// Subscribes to presence and sends the first page of the list as the starting point.
    pub fn subscribe(&mut self, conn: ConnId) {
        self.subscribers.insert(conn);
        self.list(conn, None, None);
    }

    pub fn unsubscribe(&mut self, conn: ConnId) {
        self.subscribers.remove(&conn);
    }

    /// Follows the presence of `names` (replacing what `conn` watched before) and answers with
    /// those online now, in name-key order. At most [`WATCH_MAX`] names.
    pub fn watch(&mut self, conn: ConnId, names: &[String]) {
        if names.len() > WATCH_MAX {
            let msg = format!("you can watch at most {WATCH_MAX} names");
            return self.send(conn, &ServerMsg::error(ErrorCode::InvalidMessage, msg));
        }
        self.unwatch_all(conn);
        let keys: HashSet<String> = names.iter().map(|n| name_key(n)).collect();
        for key in &keys {
            self.watchers.entry(key.clone()).or_default().insert(conn);
        }
        let mut online: Vec<&String> = keys.iter().collect();
        online.sort();
        let users = online
            .into_iter()
            .filter_map(|k| self.user_info(k))
            .collect();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.watching = keys;
        }
        self.send(conn, &ServerMsg::Watching { users });
    }

    /// Stops `conn` watching anyone.
    fn unwatch_all(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        for key in std::mem::take(&mut c.watching) {
            if let Some(set) = self.watchers.get_mut(&key) {
                set.remove(&conn);
                if set.is_empty() {
                    self.watchers.remove(&key);
                }
            }
        }
    }

    /// A connection is gone (bye, closed socket, timeout, kicked): end its call, free its name.
    /// `hold`: the connection ended without `bye` and the server gives lost clients time to
    /// come back. A user so lost in the middle of an answered call keeps its name and its call
    /// (the peer's media may well still flow): returns its name key and the call, for the
    /// caller to end them with [`State::resume_expired`] when the time is up (with the
    /// returned instant, which tells this loss from a later one).
    pub fn disconnect(&mut self, conn: ConnId, hold: bool) -> Option<(String, Instant)> {
        self.subscribers.remove(&conn);
        self.unwatch_all(conn);
        let key = self.conns.remove(&conn)?.user?;
        if let Some(call) = self.users.get(&key).and_then(|u| u.call) {
            let answered = self
                .calls
                .get(&call)
                .is_some_and(|c| c.phase == crate::calls::Phase::Active);
            if hold && answered {
                let now = Instant::now();
                if let Some(user) = self.users.get_mut(&key) {
                    user.away_since = Some(now);
                    tracing::debug!(conn, name = %user.name, %call, "lost mid-call; holding");
                }
                return Some((key, now));
            }
            self.end_call_lost(call, &key);
        }
        self.leave(&key);
        None
    }

    /// The time for the user under `key`, away since `since`, to come back is up: if it is
    /// still away from that loss, its call ends for the peer (`peer_lost`) and its name is
    /// free.
    pub fn resume_expired(&mut self, key: &str, since: Instant) {
        let Some(user) = self.users.get(key).filter(|u| u.away_since == Some(since)) else {
            return;
        };
        if let Some(call) = user.call {
            self.end_call_lost(call, key);
        }
        self.leave(key);
    }

    /// The user under `key` is gone: its name is free and its watchers are told.
    pub(crate) fn leave(&mut self, key: &str) {
        if let Some(user) = self.users.remove(key) {
            tracing::debug!(name = %user.name, "left");
            self.names.seen(key, unix_now());
            self.broadcast(key, &ServerMsg::UserLeft { name: user.name }, None);
        }
    }
}
