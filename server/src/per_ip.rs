//! What one IP address may have at once, across all its connections: a connection count and a
//! shared invite budget. One host must not be able to exhaust the server by opening many
//! connections, nor multiply its invites by spreading them over connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::limits::{Limits, TokenBucket};

/// Counts and budgets of the addresses that have connections now (an address with none is
/// forgotten, so the table stays as small as the set of connected hosts).
#[derive(Default)]
pub(crate) struct PerIp {
    hosts: Mutex<HashMap<IpAddr, Host>>,
}

struct Host {
    connections: usize,
    invites: TokenBucket,
}

/// One connection's place in its address's count; dropping it gives the place back.
pub(crate) struct Slot {
    table: Arc<PerIp>,
    ip: IpAddr,
    /// Per-address limits are on (see `Limits::max_connections_per_ip`).
    limited: bool,
}

impl PerIp {
    /// Takes a place for a new connection from `ip`, unless it has `limits.max_connections_per_ip`
    /// already.
    pub(crate) fn admit(
        table: &Arc<PerIp>,
        ip: IpAddr,
        limits: &Limits,
        now: Instant,
    ) -> Option<Slot> {
        let limited = limits.max_connections_per_ip > 0;
        let mut hosts = table.lock();
        let host = hosts.entry(ip).or_insert_with(|| Host {
            connections: 0,
            invites: TokenBucket::new(limits.ip_invite_burst, limits.ip_invite_per_sec, now),
        });
        if limited && host.connections >= limits.max_connections_per_ip {
            return None;
        }
        host.connections += 1;
        Some(Slot {
            table: table.clone(),
            ip,
            limited,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Host>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Slot {
    /// Takes one invite from the address's shared budget.
    pub(crate) fn try_invite(&self, now: Instant) -> bool {
        !self.limited
            || self
                .table
                .lock()
                .get_mut(&self.ip)
                .is_some_and(|h| h.invites.try_take(now))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut hosts = self.table.lock();
        if let Some(host) = hosts.get_mut(&self.ip) {
            host.connections -= 1;
            if host.connections == 0 {
                hosts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_address_and_given_back() {
        let limits = Limits {
            max_connections_per_ip: 2,
            ..Limits::default()
        };
        let table = Arc::new(PerIp::default());
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = PerIp::admit(&table, a, &limits, now).unwrap();
        let _second = PerIp::admit(&table, a, &limits, now).unwrap();
        assert!(PerIp::admit(&table, a, &limits, now).is_none());
        assert!(PerIp::admit(&table, b, &limits, now).is_some());
        drop(first);
        assert!(PerIp::admit(&table, a, &limits, now).is_some());
    }

    #[test]
    fn connections_of_one_address_share_one_invite_budget() {
        let limits = Limits {
            ip_invite_burst: 3,
            ip_invite_per_sec: 0.0,
            ..Limits::default()
        };
        let table = Arc::new(PerIp::default());
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let one = PerIp::admit(&table, ip, &limits, now).unwrap();
        let two = PerIp::admit(&table, ip, &limits, now).unwrap();
        assert!(one.try_invite(now) && two.try_invite(now) && one.try_invite(now));
        assert!(!two.try_invite(now), "the fourth invite from this address");
        // The budget lives as long as the address has a connection.
        drop(one);
        assert!(!two.try_invite(now));
    }
}
