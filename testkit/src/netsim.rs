//! A seeded, deterministic userspace UDP impairment relay for tests and the bench (the kernel
//! here has no netem). It sits between two endpoints on 127.0.0.1 and forwards each datagram
//! to the other side after loss (uniform or Gilbert–Elliott bursts), delay, jitter, extra
//! reordering and duplication. Decisions come from a seeded generator, so a profile replays
//! the same pattern of drops for the same packet sequence.

use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Datagrams held in flight at most; beyond that new ones are dropped (a full queue).
const MAX_IN_FLIGHT: usize = 4096;

/// Impairments applied to each direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Independent loss probability, 0..=1.
    pub loss: f64,
    /// Gilbert–Elliott bursts: probability of going good -> bad per packet (0 = off).
    pub burst_enter: f64,
    /// Probability of going bad -> good per packet; every packet in the bad state is lost.
    pub burst_exit: f64,
    /// Fixed one-way delay, ms.
    pub delay_ms: f64,
    /// Uniform jitter added to the delay: ± this many ms (independent per packet, so it
    /// reorders when larger than the packet spacing).
    pub jitter_ms: f64,
    /// Probability that a packet is held back an extra 30 ms (explicit reordering).
    pub reorder: f64,
    /// Probability that a packet is sent twice.
    pub duplicate: f64,
}

impl Impairment {
    /// A perfect link.
    pub const CLEAN: Impairment = Impairment {
        loss: 0.0,
        burst_enter: 0.0,
        burst_exit: 1.0,
        delay_ms: 0.0,
        jitter_ms: 0.0,
        reorder: 0.0,
        duplicate: 0.0,
    };

    /// A named profile: `clean`, `loss5`, `loss10_jitter20`, `bursty`, `jitter40`.
    pub fn profile(name: &str) -> Option<Impairment> {
        let c = Self::CLEAN;
        Some(match name {
            "clean" => c,
            "loss5" => Impairment { loss: 0.05, ..c },
            "loss10_jitter20" => Impairment {
                loss: 0.10,
                delay_ms: 20.0,
                jitter_ms: 10.0,
                ..c
            },
            // Mean burst 1 / 0.3 ≈ 3.3 packets, about 6 % lost overall.
            "bursty" => Impairment {
                burst_enter: 0.02,
                burst_exit: 0.3,
                ..c
            },
            "jitter40" => Impairment {
                delay_ms: 40.0,
                jitter_ms: 20.0,
                ..c
            },
            _ => return None,
        })
    }

    /// The names [`Impairment::profile`] knows.
    pub const PROFILES: [&'static str; 5] =
        ["clean", "loss5", "loss10_jitter20", "bursty", "jitter40"];
}

/// SplitMix64: tiny, seedable, good enough to draw impairments.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction's state: its generator and burst state.
struct Leg {
    imp: Impairment,
    rng: Rng,
    bad: bool,
}

impl Leg {
    /// Delays (ms) of the copies to send; empty = dropped.
    fn decide(&mut self) -> ([f64; 2], usize) {
        let imp = self.imp;
        if imp.burst_enter > 0.0 {
            let flip = self.rng.unit();
            self.bad = if self.bad {
                flip >= imp.burst_exit
            } else {
                flip < imp.burst_enter
            };
        }
        let lost = self.bad || self.rng.unit() < imp.loss;
        if lost {
            return ([0.0; 2], 0);
        }
        let one = |rng: &mut Rng| {
            let mut d = imp.delay_ms + (rng.unit() * 2.0 - 1.0) * imp.jitter_ms;
            if rng.unit() < imp.reorder {
                d += 30.0;
            }
            d.max(0.0)
        };
        let first = one(&mut self.rng);
        if self.rng.unit() < imp.duplicate {
            let second = one(&mut self.rng);
            ([first, second], 2)
        } else {
            ([first, 0.0], 1)
        }
    }
}

/// Counters of what the relay did.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Datagrams received from either side.
    pub received: AtomicU64,
    /// Datagrams dropped by the impairment (or a full queue).
    pub dropped: AtomicU64,
    /// Datagrams sent on (duplicates count twice).
    pub forwarded: AtomicU64,
}

struct InFlight {
    due: Instant,
    order: u64,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.order) == (o.due, o.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (o.due, o.order).cmp(&(self.due, self.order))
    }
}

/// A running relay between `a` and `b`. Stops when dropped.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<RelayCounters>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay on 127.0.0.1 forwarding between `a` and `b`, the same impairment each
    /// way (each with its own seeded generator).
    pub fn start(
        a: SocketAddr,
        b: SocketAddr,
        imp: Impairment,
        seed: u64,
    ) -> std::io::Result<Relay> {
        Self::start_with(a, b, imp, seed, || {})
    }

    /// Like [`Relay::start`], with `on_thread` run first on the relay's thread: callers give it
    /// real-time priority there (Fala's `realtime_priority`), because, like the kernel's netem,
    /// the relay should not add its own scheduling noise to what it measures.
    pub fn start_with(
        a: SocketAddr,
        b: SocketAddr,
        imp: Impairment,
        seed: u64,
        on_thread: fn(),
    ) -> std::io::Result<Relay> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(2)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(RelayCounters::default());
        let (stop2, counters2) = (stop.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("fala-netsim".into())
            .spawn(move || {
                on_thread();
                let mut dirs = [
                    Leg {
                        imp,
                        rng: Rng(seed),
                        bad: false,
                    },
                    Leg {
                        imp,
                        rng: Rng(seed ^ 0x5555_5555_5555_5555),
                        bad: false,
                    },
                ];
                let mut heap = BinaryHeap::new();
                let mut order = 0u64;
                let mut buf = [0u8; 2048];
                while !stop2.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        counters2.received.fetch_add(1, Ordering::Relaxed);
                        let (to, dir) = if from == a {
                            (b, 0)
                        } else if from == b {
                            (a, 1)
                        } else {
                            continue;
                        };
                        let (delays, count) = dirs[dir].decide();
                        if count == 0 || heap.len() >= MAX_IN_FLIGHT {
                            counters2.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        let now = Instant::now();
                        for d in delays.iter().take(count) {
                            if heap.len() >= MAX_IN_FLIGHT {
                                break;
                            }
                            order += 1;
                            heap.push(InFlight {
                                due: now + Duration::from_secs_f64(d / 1000.0),
                                order,
                                to,
                                data: buf[..n].to_vec(),
                            });
                        }
                    }
                    let now = Instant::now();
                    while heap.peek().is_some_and(|p| p.due <= now) {
                        if let Some(p) = heap.pop() {
                            if socket.send_to(&p.data, p.to).is_ok() {
                                counters2.forwarded.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })?;
        Ok(Relay {
            addr,
            stop,
            counters,
            thread: Some(thread),
        })
    }

    /// The relay's address: give it to both endpoints as their peer.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it did so far.
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_lose_about_what_they_say_and_are_deterministic() {
        for (name, expect) in [
            ("clean", 0.0),
            ("loss5", 0.05),
            ("bursty", 0.0625),
            ("loss10_jitter20", 0.10),
        ] {
            let imp = Impairment::profile(name).unwrap();
            let run = |seed| {
                let mut d = Leg {
                    imp,
                    rng: Rng(seed),
                    bad: false,
                };
                (0..20_000).filter(|_| d.decide().1 == 0).count()
            };
            let lost = run(1);
            assert_eq!(lost, run(1), "{name} deterministic");
            let rate = lost as f64 / 20_000.0;
            assert!((rate - expect).abs() < 0.015, "{name}: {rate}");
        }
        assert!(Impairment::profile("nope").is_none());
    }

    #[test]
    fn relays_both_ways_with_delay() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let imp = Impairment {
            delay_ms: 30.0,
            ..Impairment::CLEAN
        };
        let relay = Relay::start(a.local_addr().unwrap(), b.local_addr().unwrap(), imp, 1).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let t = Instant::now();
        a.send_to(b"ping", relay.addr()).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], relay.addr()));
        assert!(t.elapsed() >= Duration::from_millis(29));
        b.send_to(b"pong", relay.addr()).unwrap();
        let (n, _) = a.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        // The relay counts after `send_to` returns, which can be just after we received.
        let deadline = Instant::now() + Duration::from_secs(1);
        while relay.counters().forwarded.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(relay.counters().forwarded.load(Ordering::Relaxed), 2);
    }
}
