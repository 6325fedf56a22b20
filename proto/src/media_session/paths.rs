//! Which way media goes to the peer, and the connectivity checks that choose it: ICE (RFC 8445)
//! cut to what one socket and one component need, with the server's relay as the fallback.
//!
//! - The peer's candidate addresses (from `call_connected`, and any address an authentic
//!   check came from: peer-reflexive) are each checked with [`crate::path_check`] requests,
//!   [`CHECK_PACING_US`] apart, retried after [`FIRST_RETRY_US`] doubling to
//!   [`MAX_RETRY_US`], for [`CHECKING_US`]. A request that arrives is answered and triggers a
//!   check back at once (that is what opens both NATs' holes).
//! - Media starts on the relay when there is one (nothing to wait for), otherwise on the
//!   peer's registered address. The caller (controlling) moves to the first direct address
//!   whose check is answered and nominates it (USE-CANDIDATE, repeated until answered); the
//!   callee moves where it is nominated. A callee without relay also moves to an answered
//!   address while its current one never answered.
//! - When nothing authentic came from the direct address for [`DIRECT_SILENCE_US`] (the NAT
//!   dropped the mapping, an address changed, a router rebooted), media goes back to the
//!   relay and the checks start again (an ICE restart); when the peer's media arrives through
//!   the relay while the direct address has been quiet for [`FOLLOW_RELAY_US`], the peer did
//!   that first and we follow. On the relay, the checks run again every [`RECHECK_US`].
//! - With "always relay" no check is sent: the peer never learns our address from us.
//! - A peer that does no checks (a client written before them, or from an older protocol
//!   text) is followed where its authentic packets come from straight: it sends to the
//!   address it was given and expects the same back.
//!
//! Unlike the `is` crate (str0m's agent, read before writing this), which keeps the nominated
//! pair until it is pruned about 20 s after its last answer, a direct path here is given up
//! after 3 s of silence: a call on the relay with a little more delay beats 20 s of silence.
//!
//! Time is an input (µs on the driver's clock); nothing here allocates after [`PathAgent::new`].

use std::net::SocketAddr;

/// Most candidate addresses taken from the peer's signaling; more are ignored.
pub const MAX_CANDIDATES: usize = 8;
/// Most peer-reflexive addresses remembered besides them (the oldest is replaced).
const MAX_LEARNED: usize = 4;
/// Between the first checks of two addresses, µs (RFC 8445's Ta).
pub const CHECK_PACING_US: u64 = 20_000;
/// The first retry of an unanswered check, µs; each later one waits twice as long...
pub const FIRST_RETRY_US: u64 = 100_000;
/// ... up to this, µs.
pub const MAX_RETRY_US: u64 = 1_000_000;
/// How long an address is checked before it is given up until the next restart, µs.
pub const CHECKING_US: u64 = 10_000_000;
/// A direct path silent this long is left for the relay, and the checks start again, µs.
pub const DIRECT_SILENCE_US: u64 = 3_000_000;
/// The peer's media through the relay, with the direct path silent this long: follow it, µs.
pub const FOLLOW_RELAY_US: u64 = 1_000_000;
/// On the relay, the checks run again this often (a NAT may have become friendlier), µs.
pub const RECHECK_US: u64 = 30_000_000;

/// Where media goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through the server's relay.
    Relay,
    /// Straight to this address of the peer.
    Direct(SocketAddr),
}

/// One address of the peer and its check.
#[derive(Debug, Clone, Copy)]
struct Remote {
    addr: SocketAddr,
    /// Learned from an authentic check rather than signaled.
    learned: bool,
    /// Transaction id of this round's check (retries reuse it, as STUN retransmits do).
    id: [u8; 12],
    /// When the next check goes out; `None`: no more this round.
    next_check_us: Option<u64>,
    retry_us: u64,
    sent_us: u64,
    /// The check was answered this round: the round trip, µs.
    rtt_us: Option<u64>,
    /// When something authentic last came from this address.
    last_rx_us: Option<u64>,
}

/// A check request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckRequest {
    pub to: SocketAddr,
    pub id: [u8; 12],
    /// USE-CANDIDATE: the caller asks the callee to send its media this way too.
    pub nominate: bool,
}

/// Counters of the path choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PathStats {
    pub checks_sent: u64,
    pub checks_answered: u64,
    /// Times media changed its way (relay ↔ direct, or another direct address).
    pub route_changes: u64,
    /// Times a direct path fell silent and media went back to the relay.
    pub fallbacks: u64,
}

/// The path choice of one call.
pub struct PathAgent {
    controlling: bool,
    relay: bool,
    /// "Always relay": no checks, no direct path.
    relay_only: bool,
    remotes: [Option<Remote>; MAX_CANDIDATES + MAX_LEARNED],
    route: Route,
    /// When the route last changed (a new direct path gets this long before it counts as
    /// silent).
    route_since_us: u64,
    /// When this round of checks began; `None` before the first poll.
    round_us: Option<u64>,
    /// The caller's nomination of the current direct route has been answered.
    nomination_answered: bool,
    /// A verified check request came from the peer: it takes part in the checks.
    peer_checks: bool,
    /// Something authentic has come through the relay.
    relay_heard: bool,
    rng: u64,
    stats: PathStats,
}

impl PathAgent {
    /// `controlling`: we placed the call. `registered`: the peer's address from
    /// `call_connected.media`; `candidates`: its other addresses. `seed` varies the
    /// transaction ids (the driver draws it from the OS).
    pub fn new(
        controlling: bool,
        registered: SocketAddr,
        candidates: &[SocketAddr],
        (relay, relay_only): (Option<SocketAddr>, bool),
        seed: u64,
    ) -> Self {
        let relay_addr = relay;
        let relay = relay.is_some();
        let mut agent = Self {
            controlling,
            relay,
            relay_only: relay_only && relay,
            remotes: [None; MAX_CANDIDATES + MAX_LEARNED],
            route: if relay {
                Route::Relay
            } else {
                Route::Direct(registered)
            },
            route_since_us: 0,
            round_us: None,
            nomination_answered: false,
            peer_checks: false,
            relay_heard: false,
            rng: seed | 1,
            stats: PathStats::default(),
        };
        // A peer that hides its addresses is shown as the relay: nothing to check there.
        let signaled = std::iter::once(registered)
            .chain(candidates.iter().copied())
            .filter(|a| Some(*a) != relay_addr);
        for addr in signaled.take(MAX_CANDIDATES) {
            if agent.find(addr).is_none() {
                agent.add(addr, false);
            }
        }
        agent
    }

    /// We placed the call.
    pub fn controlling(&self) -> bool {
        self.controlling
    }

    /// "Always relay": no checks either way.
    pub fn relay_only(&self) -> bool {
        self.relay_only
    }

    /// Whether something authentic has come the way media goes now: consent (RFC 7675) is
    /// per path, so that no media goes to an address that never showed it listens, whatever
    /// came by another way.
    pub fn route_heard(&self) -> bool {
        match self.route {
            Route::Relay => self.relay_heard,
            Route::Direct(addr) => self
                .find(addr)
                .and_then(|i| self.remotes[i])
                .is_some_and(|r| r.last_rx_us.is_some()),
        }
    }

    /// Where media goes now.
    pub fn route(&self) -> Route {
        self.route
    }

    pub fn stats(&self) -> PathStats {
        self.stats
    }

    /// Whether `from` is one of the peer's addresses (signaled or learned).
    pub fn knows(&self, from: SocketAddr) -> bool {
        self.find(from).is_some()
    }

    fn find(&self, addr: SocketAddr) -> Option<usize> {
        self.remotes
            .iter()
            .position(|r| r.is_some_and(|r| r.addr == addr))
    }

    fn next_id(&mut self) -> [u8; 12] {
        // xorshift64*: ids only have to differ; the integrity key makes them unforgeable.
        let mut id = [0u8; 12];
        for chunk in id.chunks_mut(4) {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let v = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32;
            chunk.copy_from_slice(&v.to_be_bytes());
        }
        id
    }

    /// Adds an address (a learned one replaces the oldest learned one when full).
    fn add(&mut self, addr: SocketAddr, learned: bool) -> usize {
        let range = if learned {
            MAX_CANDIDATES..MAX_CANDIDATES + MAX_LEARNED
        } else {
            0..MAX_CANDIDATES
        };
        let start = range.start;
        let slot = range
            .clone()
            .find(|&i| self.remotes[i].is_none())
            .or_else(|| {
                // Full: the learned address heard from longest ago goes, never the route.
                let route = self.route;
                range
                    .filter(|&i| self.remotes[i].is_some_and(|r| Route::Direct(r.addr) != route))
                    .min_by_key(|&i| self.remotes[i].and_then(|r| r.last_rx_us))
            })
            .unwrap_or(start);
        let id = self.next_id();
        self.remotes[slot] = Some(Remote {
            addr,
            learned,
            id,
            next_check_us: None,
            retry_us: FIRST_RETRY_US,
            sent_us: 0,
            rtt_us: None,
            last_rx_us: None,
        });
        slot
    }

    /// Starts a round of checks at `now_us`: every address again, paced.
    fn restart(&mut self, now_us: u64) {
        self.round_us = Some(now_us);
        let mut at = now_us;
        for i in 0..self.remotes.len() {
            let id = self.next_id();
            if let Some(r) = &mut self.remotes[i] {
                r.id = id;
                r.next_check_us = (!self.relay_only).then_some(at);
                r.retry_us = FIRST_RETRY_US;
                r.rtt_us = None;
                at += CHECK_PACING_US;
            }
        }
    }

    /// When the direct route to `addr` last showed life: something authentic from it, or
    /// its start (a new route gets its full time before it counts as silent).
    fn direct_heard_us(&self, addr: SocketAddr) -> u64 {
        self.find(addr)
            .and_then(|i| self.remotes[i])
            .and_then(|r| r.last_rx_us)
            .unwrap_or(0)
            .max(self.route_since_us)
    }

    fn set_route(&mut self, route: Route, now_us: u64) {
        if route != self.route {
            self.route = route;
            self.route_since_us = now_us;
            self.stats.route_changes += 1;
            self.nomination_answered = false;
        }
    }

    /// Moves with time: the first round of checks, a silent direct path left for the relay,
    /// the periodic round on the relay. Call before polling.
    pub fn tick(&mut self, now_us: u64) {
        let Some(round) = self.round_us else {
            self.restart(now_us);
            return;
        };
        if self.relay_only {
            return;
        }
        match self.route {
            Route::Direct(addr) => {
                let heard = self.direct_heard_us(addr);
                let silent = now_us.saturating_sub(heard) >= DIRECT_SILENCE_US;
                if silent && self.relay {
                    self.stats.fallbacks += 1;
                    self.set_route(Route::Relay, now_us);
                    self.restart(now_us);
                } else if silent && now_us.saturating_sub(round) >= DIRECT_SILENCE_US {
                    // No relay to go to: look again for any way through.
                    self.restart(now_us);
                }
            }
            Route::Relay if now_us.saturating_sub(round) >= RECHECK_US => self.restart(now_us),
            Route::Relay => {}
        }
    }

    /// Our own address changed (another network, a VPN up or down): a direct path is as
    /// good as gone, so media goes through the relay at once (the relay follows our new
    /// address from the first datagram) and the checks start again from the new address,
    /// rather than after [`DIRECT_SILENCE_US`] of silence.
    pub fn local_address_changed(&mut self, now_us: u64) {
        if self.relay_only || self.round_us.is_none() {
            return;
        }
        if self.relay && self.route != Route::Relay {
            self.stats.fallbacks += 1;
            self.set_route(Route::Relay, now_us);
        }
        self.restart(now_us);
    }

    /// When [`PathAgent::poll_check`] will next have something (µs), if ever.
    pub fn next_check_us(&self) -> Option<u64> {
        if self.round_us.is_none() {
            return Some(0);
        }
        self.remotes
            .iter()
            .flatten()
            .filter_map(|r| r.next_check_us)
            .min()
    }

    /// The next check request due at `now_us`, if any.
    pub fn poll_check(&mut self, now_us: u64) -> Option<CheckRequest> {
        let round = self.round_us?;
        let i = (0..self.remotes.len())
            .filter(|&i| {
                self.remotes[i]
                    .and_then(|r| r.next_check_us)
                    .is_some_and(|t| t <= now_us)
            })
            .min_by_key(|&i| self.remotes[i].and_then(|r| r.next_check_us))?;
        let route = self.route;
        let nominating = self.controlling && !self.nomination_answered;
        let r = self.remotes[i].as_mut()?;
        let nominate = nominating && route == Route::Direct(r.addr);
        r.sent_us = now_us;
        let unanswered = r.rtt_us.is_none();
        let expired = now_us.saturating_sub(round) >= CHECKING_US;
        r.next_check_us = ((unanswered || nominate) && !expired).then_some(now_us + r.retry_us);
        r.retry_us = (r.retry_us * 2).min(MAX_RETRY_US);
        self.stats.checks_sent += 1;
        Some(CheckRequest {
            to: r.addr,
            id: r.id,
            nominate,
        })
    }

    /// An authentic check request `from` arrived (the caller answers it): the address is
    /// learned if new, checked back at once, and taken if the caller nominated it.
    pub fn on_request(&mut self, now_us: u64, from: SocketAddr, nominate: bool) {
        if self.relay_only {
            return;
        }
        self.peer_checks = true;
        let i = match self.find(from) {
            Some(i) => i,
            None => self.add(from, true),
        };
        if let Some(r) = &mut self.remotes[i] {
            r.last_rx_us = Some(now_us);
            if r.rtt_us.is_none() && r.next_check_us.is_none_or(|t| t > now_us) {
                // A triggered check: our answer to theirs and this request open both NATs.
                r.next_check_us = Some(now_us);
                r.retry_us = FIRST_RETRY_US;
            }
        }
        if nominate && !self.controlling {
            self.set_route(Route::Direct(from), now_us);
        }
    }

    /// An authentic answer to check `id` came `from`.
    pub fn on_response(&mut self, now_us: u64, from: SocketAddr, id: [u8; 12]) {
        let Some(i) = self.find(from) else {
            return;
        };
        let route = self.route;
        let Some(r) = self.remotes[i].as_mut().filter(|r| r.id == id) else {
            return;
        };
        r.rtt_us = Some(now_us.saturating_sub(r.sent_us));
        r.last_rx_us = Some(now_us);
        self.stats.checks_answered += 1;
        if route == Route::Direct(from) {
            if self.controlling {
                self.nomination_answered = true;
                r.next_check_us = None;
            }
            return;
        }
        let current_answered = match route {
            Route::Direct(addr) => self
                .find(addr)
                .is_some_and(|j| self.remotes[j].is_some_and(|c| c.rtt_us.is_some() || c.learned)),
            Route::Relay => false,
        };
        // The caller takes the first answered address (and nominates it); the callee only
        // while what it uses never answered and no relay carries the call meanwhile.
        let take = match route {
            Route::Relay => self.controlling,
            Route::Direct(_) => !current_answered && (self.controlling || !self.relay),
        };
        if take {
            self.set_route(Route::Direct(from), now_us);
            if let Some(r) = self.remotes[i].as_mut().filter(|_| self.controlling) {
                r.next_check_us = Some(now_us);
                r.retry_us = FIRST_RETRY_US;
            }
        }
    }

    /// Something authentic (media or a report) came `from`; `via_relay`: it came through the
    /// relay, `media`: it was media.
    pub fn on_authentic(&mut self, now_us: u64, from: SocketAddr, via_relay: bool, media: bool) {
        if !via_relay {
            let Some(r) = self.find(from).and_then(|i| self.remotes[i].as_mut()) else {
                return;
            };
            r.last_rx_us = Some(now_us);
            // A peer without checks talks straight from where it is: answer it there.
            if !self.peer_checks && !self.relay_only && self.route != Route::Direct(from) {
                self.set_route(Route::Direct(from), now_us);
            }
            return;
        }
        self.relay_heard = true;
        // The peer's media through the relay while ours goes direct: if the direct path has
        // gone quiet, the peer left it first; follow rather than wait for our own timeout.
        // (Its reports always come both ways, so only media counts.)
        if let (Route::Direct(addr), true) = (self.route, media) {
            let heard = self.direct_heard_us(addr);
            if now_us.saturating_sub(heard) >= FOLLOW_RELAY_US {
                self.stats.fallbacks += 1;
                self.set_route(Route::Relay, now_us);
                self.restart(now_us);
            }
        }
    }
}
