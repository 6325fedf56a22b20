//! Per-connection abuse limits: token buckets with time as an input.

use std::time::{Duration, Instant};

/// A token bucket: `capacity` messages at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(capacity: u32, per_second: f64, now: Instant) -> Self {
        TokenBucket {
            capacity: capacity as f64,
            per_second,
            tokens: capacity as f64,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The limits one server applies to every connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Messages a client may send in a burst.
    pub msg_burst: u32,
    /// Sustained messages per second.
    pub msg_per_sec: f64,
    /// Invites in a burst.
    pub invite_burst: u32,
    /// Sustained invites per second.
    pub invite_per_sec: f64,
    /// Messages dropped by the rate limit in a row before the connection is closed.
    pub max_limited_in_a_row: u32,
    /// Malformed, unknown or invalid frames tolerated on one connection before it is closed.
    pub max_bad_frames: u32,
    /// Connections served at once; more get `server_full`.
    pub max_connections: usize,
    /// Connections from one IP address at once; more get `too_many_connections`. A home or
    /// office behind one NAT shares an address, so this is far above one person's needs.
    /// 0 turns the per-address limits off (this one and the shared invite budget): for a
    /// proxy in front of the server, or a bench that connects thousands of clients from one
    /// host.
    pub max_connections_per_ip: usize,
    /// Invites in a burst from all the connections of one IP address together ...
    pub ip_invite_burst: u32,
    /// ... and sustained, per second: opening more connections buys no more invites.
    pub ip_invite_per_sec: f64,
    /// Outgoing messages queued for one connection before it is dropped as too slow.
    pub out_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            msg_burst: 60,
            msg_per_sec: 20.0,
            invite_burst: 5,
            invite_per_sec: 0.5,
            max_limited_in_a_row: 100,
            max_bad_frames: 10,
            max_connections: 16_000,
            max_connections_per_ip: 64,
            ip_invite_burst: 10,
            ip_invite_per_sec: 1.0,
            out_queue: 256,
        }
    }
}

/// Rate-limit state of one connection.
#[derive(Debug)]
pub struct ConnLimiter {
    messages: TokenBucket,
    invites: TokenBucket,
    limited_in_a_row: u32,
    bad_frames: u32,
}

/// What to do with a message after the rate limit looked at it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Drop it and tell the client (only the first of a streak gets an error frame).
    Drop {
        notify: bool,
    },
    /// The client keeps flooding: close the connection.
    Close,
}

impl ConnLimiter {
    pub fn new(limits: &Limits, now: Instant) -> Self {
        ConnLimiter {
            messages: TokenBucket::new(limits.msg_burst, limits.msg_per_sec, now),
            invites: TokenBucket::new(limits.invite_burst, limits.invite_per_sec, now),
            limited_in_a_row: 0,
            bad_frames: 0,
        }
    }

    /// Judges one incoming message; `is_invite` also charges the invite bucket.
    pub fn check(&mut self, limits: &Limits, is_invite: bool, now: Instant) -> Verdict {
        let ok = self.messages.try_take(now) && (!is_invite || self.invites.try_take(now));
        if ok {
            self.limited_in_a_row = 0;
            return Verdict::Pass;
        }
        self.limited_in_a_row += 1;
        if self.limited_in_a_row > limits.max_limited_in_a_row {
            Verdict::Close
        } else {
            Verdict::Drop {
                notify: self.limited_in_a_row == 1,
            }
        }
    }

    /// Counts a bad frame; true when the connection should be closed.
    pub fn bad_frame(&mut self, limits: &Limits) -> bool {
        self.bad_frames += 1;
        self.bad_frames >= limits.max_bad_frames
    }
}

/// Time-outs of a session.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// A connection must say hello within this.
    pub hello: Duration,
    /// A registered client silent for longer is dropped.
    pub idle: Duration,
    /// How often clients are asked to ping (told in `welcome`).
    pub heartbeat: Duration,
    /// An unanswered call ends with `no_answer` after this.
    pub ring: Duration,
    /// A write to a client that takes longer (it stopped reading) drops the connection.
    pub write: Duration,
    /// A connection lost without `bye` in the middle of a call keeps the name and the call
    /// this long, for the client to come back (`register` with `resume`) from its new
    /// network; then the peer hears `peer_lost`.
    pub resume: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            hello: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            ring: Duration::from_secs(30),
            write: Duration::from_secs(10),
            resume: Duration::from_secs(20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_over_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 1.0, t0);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(500)));
        assert!(b.try_take(t0 + Duration::from_millis(1001)));
    }

    #[test]
    fn flood_is_dropped_then_closed() {
        let t0 = Instant::now();
        let limits = Limits {
            msg_burst: 3,
            max_limited_in_a_row: 5,
            ..Limits::default()
        };
        let mut l = ConnLimiter::new(&limits, t0);
        for _ in 0..3 {
            assert_eq!(l.check(&limits, false, t0), Verdict::Pass);
        }
        assert_eq!(l.check(&limits, false, t0), Verdict::Drop { notify: true });
        for _ in 0..4 {
            assert_eq!(l.check(&limits, false, t0), Verdict::Drop { notify: false });
        }
        assert_eq!(l.check(&limits, false, t0), Verdict::Close);
    }

    #[test]
    fn invites_have_their_own_budget() {
        let t0 = Instant::now();
        let limits = Limits {
            invite_burst: 1,
            ..Limits::default()
        };
        let mut l = ConnLimiter::new(&limits, t0);
        assert_eq!(l.check(&limits, true, t0), Verdict::Pass);
        assert_eq!(l.check(&limits, true, t0), Verdict::Drop { notify: true });
        assert_eq!(l.check(&limits, false, t0), Verdict::Pass);
    }
}
