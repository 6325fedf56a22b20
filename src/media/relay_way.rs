//! Whether datagrams for the server's relay go by UDP or through the signaling connection
//! (the tunnel), for networks that block UDP, and back to UDP when it works again.
//!
//! - On UDP, the relay is given up for the tunnel when media goes through the relay and
//!   nothing authentic has come from it by UDP for [`UDP_SILENCE_US`] (a call's reports come
//!   every second each way, so a working relay is never that quiet), or when the peer's
//!   reports have not echoed one of ours for [`PEER_DEAF_US`] (our way out is blocked while
//!   the way in still works, as behind a firewall that keeps old flows open).
//! - On the tunnel, a STUN Binding request goes to the relay's port by UDP every
//!   [`FIRST_PROBE_US`] at first; its answer (matched by a random transaction id) means UDP
//!   gets through both ways again, and the relay goes back to UDP. Each time that turns out
//!   wrong (UDP goes quiet again) the probes slow down, doubling up to [`MAX_PROBE_US`], so a
//!   path that lets STUN through but not media does not flap.
//!
//! Time is an input (µs on the media clock).

/// The relay silent by UDP this long (while media goes through it): use the tunnel, µs.
pub const UDP_SILENCE_US: u64 = 2_000_000;
/// The peer's reports not echoing ours this long (while media goes through the relay):
/// nothing of ours gets out by UDP; use the tunnel, µs.
/// (Reports go once a second each way: two lost in a row, common at a few % loss, must not
/// move a call, so three.)
pub const PEER_DEAF_US: u64 = 3_500_000;
/// On the tunnel, UDP is tried this often at first, µs ...
pub const FIRST_PROBE_US: u64 = 5_000_000;
/// ... and at most this seldom, µs.
pub const MAX_PROBE_US: u64 = 60_000_000;

/// The relay's way, and the probes that bring it back to UDP.
#[derive(Debug)]
pub struct RelayWay {
    tunnel: bool,
    /// When the current way was taken.
    since_us: u64,
    /// When media last came onto the relay (from a direct path); `None` while it is not
    /// on the relay. Silence from before counts for nothing.
    on_relay_since_us: Option<u64>,
    /// When something authentic last came from the relay by UDP.
    udp_heard_us: Option<u64>,
    probe_every_us: u64,
    next_probe_us: u64,
    /// The probe waiting for its answer.
    probe_id: Option<[u8; 12]>,
    /// Times the way changed.
    changes: u32,
}

impl RelayWay {
    /// Starts on the tunnel when UDP to the server is known not to work (its STUN port did
    /// not answer before the call).
    pub fn new(now_us: u64, udp_blocked: bool) -> Self {
        Self {
            tunnel: udp_blocked,
            since_us: now_us,
            on_relay_since_us: None,
            udp_heard_us: None,
            probe_every_us: FIRST_PROBE_US,
            next_probe_us: now_us + FIRST_PROBE_US,
            probe_id: None,
            changes: 0,
        }
    }

    /// Whether datagrams for the relay go through the tunnel now.
    pub fn tunnel(&self) -> bool {
        self.tunnel
    }

    /// The probe waiting for its answer.
    pub fn probe_id(&self) -> Option<[u8; 12]> {
        self.probe_id
    }

    /// Times the way changed (UDP ↔ tunnel).
    pub fn changes(&self) -> u32 {
        self.changes
    }

    /// Something authentic came from the relay by UDP.
    pub fn on_udp_heard(&mut self, now_us: u64) {
        self.udp_heard_us = Some(now_us);
    }

    /// Moves with time; `on_relay`: media goes through the relay now; `peer_heard_us`: when
    /// the peer's reports last showed it got ours.
    pub fn tick(&mut self, now_us: u64, on_relay: bool, peer_heard_us: Option<u64>) {
        if !on_relay {
            self.on_relay_since_us = None;
            return;
        }
        let on_relay_since = *self.on_relay_since_us.get_or_insert(now_us);
        if self.tunnel {
            return;
        }
        let start = self.since_us.max(on_relay_since);
        let heard = self.udp_heard_us.unwrap_or(0).max(start);
        let heard_by_peer = peer_heard_us.unwrap_or(0).max(start);
        let deaf = now_us.saturating_sub(heard_by_peer) >= PEER_DEAF_US;
        if now_us.saturating_sub(heard) >= UDP_SILENCE_US || deaf {
            self.tunnel = true;
            self.since_us = now_us;
            self.changes += 1;
            self.next_probe_us = now_us + self.probe_every_us;
        }
    }

    /// A probe to send by UDP to the relay's port now, with this transaction id.
    pub fn poll_probe(
        &mut self,
        now_us: u64,
        fresh_id: impl FnOnce() -> [u8; 12],
    ) -> Option<[u8; 12]> {
        if !self.tunnel || now_us < self.next_probe_us {
            return None;
        }
        self.next_probe_us = now_us + self.probe_every_us;
        let id = fresh_id();
        self.probe_id = Some(id);
        Some(id)
    }

    /// The answer to probe `id` came by UDP: back to UDP, with the next probes slower in case
    /// this does not last.
    pub fn on_probe_answer(&mut self, now_us: u64, id: [u8; 12]) {
        if !self.tunnel || self.probe_id != Some(id) {
            return;
        }
        self.probe_id = None;
        self.tunnel = false;
        self.since_us = now_us;
        self.changes += 1;
        self.probe_every_us = (self.probe_every_us * 2).min(MAX_PROBE_US);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn a_silent_relay_moves_to_the_tunnel_and_an_answered_probe_moves_back() {
        let mut way = RelayWay::new(0, false);
        // The relay answers by UDP: it stays there.
        for t in (0..10 * S).step_by(500_000) {
            way.on_udp_heard(t);
            way.tick(t, true, Some(t));
        }
        assert!(!way.tunnel());
        // A direct path needs no relay, however quiet the relay is.
        way.tick(30 * S, false, None);
        assert!(!way.tunnel());
        // Onto the relay, and nothing by UDP for 2 s there: the tunnel.
        way.tick(30 * S, true, Some(30 * S));
        assert!(!way.tunnel(), "not at once");
        way.tick(32 * S, true, Some(32 * S));
        assert!(way.tunnel());
        assert_eq!(way.poll_probe(33 * S, || [1; 12]), None, "no probe at once");
        let id = way.poll_probe(32 * S + FIRST_PROBE_US, || [1; 12]).unwrap();
        // An answer to another probe (or a forged one) changes nothing.
        way.on_probe_answer(37 * S, [2; 12]);
        assert!(way.tunnel());
        way.on_probe_answer(37 * S, id);
        assert!(!way.tunnel());
        assert_eq!(way.changes(), 2);
        // UDP goes quiet again: the tunnel, and the probes come half as often.
        way.tick(39 * S, true, Some(39 * S));
        assert!(way.tunnel());
        assert_eq!(way.poll_probe(39 * S + FIRST_PROBE_US, || [3; 12]), None);
        assert!(way
            .poll_probe(39 * S + 2 * FIRST_PROBE_US, || [3; 12])
            .is_some());
    }

    #[test]
    fn a_peer_that_stops_hearing_us_moves_us_to_the_tunnel_though_the_relay_still_talks() {
        let mut way = RelayWay::new(0, false);
        for t in (0..10 * S).step_by(500_000) {
            way.on_udp_heard(t);
            // The peer's reports echoed ours until 5 s.
            way.tick(t, true, Some(t.min(5 * S)));
        }
        assert!(way.tunnel(), "deaf for 3.5 s");
    }

    #[test]
    fn silence_from_before_media_came_onto_the_relay_counts_for_nothing() {
        let mut way = RelayWay::new(0, false);
        // Direct for 10 s: the relay is quiet by UDP and the peer's echoes stopped at 5 s
        // (our direct path broke).
        for t in (0..10 * S).step_by(500_000) {
            way.tick(t, false, Some(t.min(5 * S)));
        }
        // Onto the relay at 10 s: it gets its full time before anything counts as silent.
        way.tick(10 * S, true, Some(5 * S));
        way.tick(10 * S + 1_900_000, true, Some(5 * S));
        assert!(!way.tunnel());
        way.on_udp_heard(13 * S);
        way.tick(13 * S + 600_000, true, Some(5 * S));
        assert!(
            way.tunnel(),
            "but the peer not hearing us for 3.5 s on the relay does"
        );
    }

    #[test]
    fn a_call_known_to_have_no_udp_starts_on_the_tunnel() {
        let way = RelayWay::new(0, true);
        assert!(way.tunnel());
    }
}
