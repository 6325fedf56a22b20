//! Names and presence: register, look up, list, subscribe, leave.

use fala_proto::name::{name_key, validate_name};
use std::ops::Bound;

use fala_proto::{ErrorCode, MediaAddr, ServerMsg, UserInfo, LIST_PAGE_MAX};

use crate::hub::{ConnId, State, User};

impl State {
    /// Claims `raw_name` for `conn`. Identity is bound to the connection from here on.
    pub fn register(&mut self, conn: ConnId, raw_name: &str, media: MediaAddr) {
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
            let msg = format!("name {:?} is already registered", holder.name);
            self.send(conn, &ServerMsg::error(ErrorCode::NameTaken, msg));
            return;
        }
        let media = if media.ip().is_unspecified() {
            MediaAddr::new(c.peer_ip, media.port())
        } else {
            media
        };
        self.users.insert(
            key.clone(),
            User {
                name: name.clone(),
                media,
                conn: Some(conn),
                call: None,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.user = Some(key.clone());
        }
        tracing::debug!(conn, %name, %media, "registered");
        self.send(conn, &ServerMsg::Registered { name, media });
        let user = self.user_info(&key, None);
        if let Some(user) = user {
            self.broadcast(&ServerMsg::UserJoined { user }, Some(conn));
        }
    }

    /// How the user under `key` looks to `viewer`.
    pub fn user_info(&self, key: &str, viewer: Option<ConnId>) -> Option<UserInfo> {
        let viewer = viewer.and_then(|v| self.conns.get(&v));
        self.users.get(key).map(|u| u.info_for(viewer))
    }

    /// Answers a lookup: found (with address and availability) or not found.
    pub fn lookup(&mut self, conn: ConnId, raw_name: &str) {
        let reply = match self.user_info(&name_key(raw_name), Some(conn)) {
            Some(user) => ServerMsg::UserFound { user },
            None => ServerMsg::UserNotFound {
                name: raw_name.trim().to_string(),
            },
        };
        self.send(conn, &reply);
    }

    /// One page of who is online: the users after the name key `after`, in order, at most
    /// `limit` (capped at [`LIST_PAGE_MAX`]), and whether more remain.
    pub fn user_page(
        &self,
        viewer: ConnId,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<UserInfo>, bool) {
        let v = self.conns.get(&viewer);
        let limit = limit.clamp(1, LIST_PAGE_MAX);
        let from = match after {
            Some(key) => Bound::Excluded(name_key(key)),
            None => Bound::Unbounded,
        };
        let mut page = self.users.range((from, Bound::Unbounded));
        let users: Vec<UserInfo> = page
            .by_ref()
            .take(limit)
            .map(|(_, u)| u.info_for(v))
            .collect();
        (users, page.next().is_some())
    }

    pub fn list(&mut self, conn: ConnId, after: Option<&str>, limit: Option<u32>) {
        let limit = limit.map_or(LIST_PAGE_MAX, |l| l as usize);
        let (users, more) = self.user_page(conn, after, limit);
        self.send(conn, &ServerMsg::Users { users, more });
    }

    /// Subscribes to presence and sends the first page of the list as the starting point.
    pub fn subscribe(&mut self, conn: ConnId) {
        self.subscribers.insert(conn);
        self.list(conn, None, None);
    }

    pub fn unsubscribe(&mut self, conn: ConnId) {
        self.subscribers.remove(&conn);
    }

    /// A connection is gone (bye, closed socket, timeout, kicked): end its call, free its name.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.subscribers.remove(&conn);
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let Some(key) = c.user else {
            return;
        };
        if let Some(call) = self.users.get(&key).and_then(|u| u.call) {
            self.end_call_lost(call, &key);
        }
        if let Some(user) = self.users.remove(&key) {
            tracing::debug!(conn, name = %user.name, "left");
            self.broadcast(&ServerMsg::UserLeft { name: user.name }, None);
        }
    }
}
