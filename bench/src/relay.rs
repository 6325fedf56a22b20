//! The media relay's capacity on this machine: N calls set up through the real `fala-server`
//! (plain TCP, in clear), each side sending a 100-byte packet every 20 ms (a voice call's
//! rate) through its relay leg, for a few seconds per level. What the relay adds is the
//! difference with the same load sent straight between the same sockets (the baseline: the
//! generator's own scheduling and the loopback). The generator shares the machine's cores
//! with the server, as a bench on one host must; the table says how much CPU the server used.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fala::net::Connection;
use fala_proto::{ClientMsg, ServerMsg};
use tokio::net::UdpSocket;
use tokio::sync::{watch, Semaphore};

use crate::{percentile, register, ServerProcess};

/// What `fala-bench relay` takes.
pub struct RelayArgs {
    /// Concurrent calls per level.
    pub levels: Vec<usize>,
    /// Seconds of traffic per level and mode.
    pub seconds: u64,
    pub server_bin: Option<PathBuf>,
}

/// Bytes each packet carries after the token (a 32 kbit/s Opus frame in RTP is about this).
const PAYLOAD: usize = 100;
/// One packet per leg this often.
const FRAME: Duration = Duration::from_millis(20);

/// One side of one call: its relay leg.
#[derive(Clone, Copy)]
struct Leg {
    relay: SocketAddr,
    token: [u8; 8],
}

/// What one run of traffic gave.
struct Run {
    sent: u64,
    received: u64,
    /// One-way delays, sorted.
    delays: Vec<Duration>,
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    let bin = match args.server_bin {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("fala-server"),
    };
    println!(
        "relay capacity: {} s per level, {PAYLOAD}-byte packets every 20 ms each way; server and \
         load generator share the machine's CPUs",
        args.seconds
    );
    println!(
        "| calls | packets/s relayed | relayed p50 / p99 / max | direct p50 / p99 | added p99 | lost by relay | server CPU |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &calls in &args.levels {
        let server = ServerProcess::start(bin.clone(), 2 * calls + 100, false)?;
        let (legs, _conns) = open_calls(server.addr, calls)
            .await
            .with_context(|| format!("setting up {calls} calls"))?;
        let cpu_before = server.cpu();
        let started = Instant::now();
        let relayed = traffic(&legs, args.seconds, true).await?;
        let cpu = (server.cpu() - cpu_before).as_secs_f64() / started.elapsed().as_secs_f64();
        let direct = traffic(&legs, args.seconds, false).await?;
        let lost = |r: &Run| r.sent.saturating_sub(r.received);
        let p = |r: &Run, q: f64| percentile(&r.delays, q);
        let added = p(&relayed, 0.99).saturating_sub(p(&direct, 0.99));
        println!(
            "| {calls} | {:.0} | {} / {} / {} | {} / {} | {} | {} of {} ({:.3} %) | {:.0} % |",
            relayed.received as f64 / args.seconds as f64,
            ms(p(&relayed, 0.5)),
            ms(p(&relayed, 0.99)),
            ms(relayed.delays.last().copied().unwrap_or_default()),
            ms(p(&direct, 0.5)),
            ms(p(&direct, 0.99)),
            ms(added),
            lost(&relayed).saturating_sub(lost(&direct)),
            relayed.sent,
            100.0 * lost(&relayed) as f64 / relayed.sent.max(1) as f64,
            cpu * 100.0,
        );
    }
    println!(
        "(lost by relay: packets lost through the relay beyond those lost sending straight; \
         server CPU: share of one core)"
    );
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Registers `2 * calls` clients and sets up `calls` calls between them; every call's two
/// relay legs. The connections stay open (the calls with them) while the value is kept.
async fn open_calls(
    addr: SocketAddr,
    calls: usize,
) -> anyhow::Result<(Vec<(Leg, Leg)>, Vec<Connection>)> {
    let gate = Arc::new(Semaphore::new(200));
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let mut caller = register(addr, None, format!("relaya{i}")).await?;
            let mut callee = register(addr, None, format!("relayb{i}")).await?;
            caller
                .send(&ClientMsg::Invite {
                    to: format!("relayb{i}"),
                    commit: None,
                    candidates: Vec::new(),
                    hide_address: false,
                })
                .await?;
            let call_id = loop {
                if let ServerMsg::IncomingCall { call_id, .. } = callee.recv().await? {
                    break call_id;
                }
            };
            callee
                .send(&ClientMsg::Accept {
                    call_id,
                    media: None,
                    key: None,
                    signature: None,
                    candidates: Vec::new(),
                    hide_address: false,
                })
                .await?;
            let a = relay_leg(&mut caller).await?;
            let b = relay_leg(&mut callee).await?;
            anyhow::Ok(((a, b), [caller, callee]))
        }));
    }
    let mut legs = Vec::with_capacity(calls);
    let mut conns = Vec::with_capacity(2 * calls);
    for t in tasks {
        let (pair, two) = t.await??;
        legs.push(pair);
        conns.extend(two);
    }
    Ok((legs, conns))
}

/// Waits for `call_connected` and takes its relay offer.
async fn relay_leg(conn: &mut Connection) -> anyhow::Result<Leg> {
    loop {
        if let ServerMsg::CallConnected { relay, .. } = conn.recv().await? {
            let Some(offer) = relay else {
                bail!("the server offered no relay");
            };
            let token = offer.token.as_slice().try_into()?;
            return Ok(Leg {
                relay: SocketAddr::V4(offer.media.0),
                token,
            });
        }
    }
}

/// Every leg sends for `seconds` (through the relay, or straight to the other leg's socket);
/// every socket records the one-way delay of what it receives.
async fn traffic(legs: &[(Leg, Leg)], seconds: u64, relayed: bool) -> anyhow::Result<Run> {
    let epoch = Instant::now();
    let mut sockets = Vec::with_capacity(legs.len() * 2);
    for _ in 0..legs.len() * 2 {
        sockets.push(Arc::new(UdpSocket::bind("127.0.0.1:0").await?));
    }
    // Where each socket sends, and the bytes before the payload.
    let mut routes: Vec<(Arc<UdpSocket>, SocketAddr, Option<[u8; 8]>)> = Vec::new();
    for (i, (a, b)) in legs.iter().enumerate() {
        let (sa, sb) = (&sockets[2 * i], &sockets[2 * i + 1]);
        if relayed {
            routes.push((sa.clone(), a.relay, Some(a.token)));
            routes.push((sb.clone(), b.relay, Some(b.token)));
        } else {
            routes.push((sa.clone(), sb.local_addr()?, None));
            routes.push((sb.clone(), sa.local_addr()?, None));
        }
    }
    let (stop_tx, stop) = watch::channel(false);
    let mut receivers = Vec::with_capacity(sockets.len());
    for socket in &sockets {
        let (socket, mut stop) = (socket.clone(), stop.clone());
        receivers.push(tokio::spawn(async move {
            let mut delays = Vec::new();
            let mut buf = [0u8; 2048];
            loop {
                tokio::select! {
                    got = socket.recv(&mut buf) => {
                        let now = epoch.elapsed();
                        if let Ok(n) = got {
                            if n >= 8 && buf[0] == 0xfa {
                                let sent = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default()) & 0x00ff_ffff_ffff_ffff;
                                delays.push(now.saturating_sub(Duration::from_nanos(sent)));
                            }
                        }
                    }
                    _ = stop.changed() => return delays,
                }
            }
        }));
    }
    // Each leg speaks once so the relay learns where it is, then the voice pace begins.
    let mut packet = [0u8; 8 + PAYLOAD];
    for (socket, to, token) in &routes {
        if let Some(t) = token {
            packet[..8].copy_from_slice(t);
            let _ = socket.send_to(&packet[..8 + 12], to).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sent = 0u64;
    let start = tokio::time::Instant::now();
    let frames = seconds * 1000 / FRAME.as_millis() as u64;
    let per_ms = routes.len().div_ceil(FRAME.as_millis() as usize);
    for frame in 0..frames {
        // Spread each frame's packets over its 20 ms, a slice every millisecond.
        for (slice, chunk) in routes.chunks(per_ms).enumerate() {
            let at = start + FRAME * frame as u32 + Duration::from_millis(slice as u64);
            tokio::time::sleep_until(at).await;
            for (socket, to, token) in chunk {
                let stamp = epoch.elapsed().as_nanos() as u64 | (0xfa << 56);
                let (head, body) = match token {
                    Some(t) => {
                        packet[..8].copy_from_slice(t);
                        (8, &mut packet[8..])
                    }
                    None => (0, &mut packet[..]),
                };
                body[..8].copy_from_slice(&stamp.to_be_bytes());
                let len = head + PAYLOAD;
                if socket.send_to(&packet[..len], to).await.is_ok() {
                    sent += 1;
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(true)?;
    let mut delays = Vec::new();
    for r in receivers {
        delays.extend(r.await?);
    }
    delays.sort();
    Ok(Run {
        sent,
        received: delays.len() as u64,
        delays,
    })
}
