//! `fala-bench`: measured numbers, printed as tables.
//!
//! `fala-bench signaling` starts the real `fala-server` binary as a child process, connects
//! and registers many clients over loopback TCP, and measures registrations per second, server
//! memory per idle client and invite → incoming-call latency under concurrent call setups.
//!
//! `fala-bench media` runs real calls through the impairment relay on every netsim profile and
//! scores what each side heard: PESQ-WB, STOI, mouth-to-ear latency, jitter-buffer delay,
//! losses and CPU (see `media.rs`).

mod media;
mod relay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use fala::net::tls::{self, KnownServers};
use fala::net::Connection;
use fala_proto::identity::Identity;
use fala_proto::{ClientMsg, MediaAddr, ServerMsg, PROTOCOL_VERSION};
use serde_bytes::ByteBuf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "Fala benchmarks: each prints a table")]
struct BenchCli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Server load: registrations/s, memory per client, call-setup latency.
    Signaling {
        /// Clients to register and keep connected.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Concurrent call setups (pairs of registered clients).
        #[arg(long, default_value_t = 1_000)]
        calls: usize,
        /// Registrations in flight at once.
        #[arg(long, default_value_t = 1000)]
        concurrency: usize,
        /// The server binary (default: fala-server next to this program).
        #[arg(long)]
        server_bin: Option<PathBuf>,
        /// Signaling over TLS (the server's own certificate, pinned by the clients), as users
        /// run it; without it, plain TCP.
        #[arg(long)]
        tls: bool,
    },
    /// The media relay's capacity: concurrent relayed calls at a voice call's packet rate,
    /// the delay the relay adds and what it loses.
    Relay {
        /// Concurrent calls, one level after another (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "250,500,1000,1500")]
        calls: Vec<usize>,
        /// Seconds of traffic per level (relayed, then straight for the baseline).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The server binary (default: fala-server next to this program).
        #[arg(long)]
        server_bin: Option<PathBuf>,
    },
    /// Voice quality and latency of live calls on each netsim profile, vs a fixed-buffer
    /// baseline and an offline Opus reference.
    Media {
        /// Scratch folder for the speech clip, recordings and scorer.
        #[arg(long, default_value = "target/bench-media")]
        work_dir: PathBuf,
        /// Python venv holding pesq and pystoi (created when missing).
        #[arg(long, default_value = "target/bench-venv")]
        venv: PathBuf,
        /// Seed of the impairment relay.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Profiles to run (repeatable; default: all).
        #[arg(long = "profile")]
        profiles: Vec<String>,
        /// Skip the fixed-buffer baseline rows.
        #[arg(long)]
        no_baseline: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = BenchCli::parse();
    raise_fd_limit();
    match cli.bench {
        Bench::Signaling {
            clients,
            calls,
            concurrency,
            server_bin,
            tls,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(
                    std::env::var("FALA_BENCH_THREADS")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(2),
                )
                .thread_name("fala-bench")
                .enable_all()
                .build()?;
            rt.block_on(signaling(clients, calls, concurrency, server_bin, tls))
        }
        Bench::Relay {
            calls,
            seconds,
            server_bin,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("fala-bench")
                .enable_all()
                .build()?;
            rt.block_on(relay::run(relay::RelayArgs {
                levels: calls,
                seconds,
                server_bin,
            }))
        }
        Bench::Media {
            work_dir,
            venv,
            seed,
            profiles,
            no_baseline,
        } => media::run(media::MediaArgs {
            work_dir,
            venv,
            seed,
            profiles,
            no_baseline,
        }),
    }
}

/// Each client and each server connection is a file descriptor; the default soft limit is
/// often 1024.
fn raise_fd_limit() {
    // SAFETY: plain libc calls with valid pointers to stack values.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    /// Clients speak TLS, pinning the server's certificate here (in memory).
    tls: Option<Arc<KnownServers>>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    fn start(bin: PathBuf, max_connections: usize, tls: bool) -> anyhow::Result<ServerProcess> {
        let data_dir =
            std::env::temp_dir().join(format!("fala-bench-server-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new(&bin)
            .args([
                "--listen",
                &addr.to_string(),
                "--max-connections",
                &max_connections.to_string(),
            ])
            .args(["--idle-timeout", "600"])
            // Every bench client comes from 127.0.0.1.
            .args([
                "--max-connections-per-ip",
                "0",
                "--new-names-per-ip-hour",
                "0",
            ])
            // A fresh certificate and name database each run.
            .args(if tls { &[][..] } else { &["--plain"][..] })
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let tls = tls.then(|| Arc::new(KnownServers::at(None)));
        let server = ServerProcess { child, addr, tls };
        for _ in 0..200 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!("{} did not start listening on {addr}", bin.display())
    }

    /// Resident memory of the server process, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// CPU time (user + system) the server used so far.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }
}

async fn register(
    addr: SocketAddr,
    tls: Option<Arc<KnownServers>>,
    name: String,
) -> anyhow::Result<Connection> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let mut conn = match tls {
        Some(known) => Connection::new(tls::connect(stream, &addr.to_string(), &known).await?),
        None => Connection::new(stream),
    };
    conn.send(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        agent: "bench".into(),
    })
    .await?;
    let challenge = match conn.recv().await? {
        ServerMsg::Welcome { challenge, .. } => challenge,
        other => bail!("unexpected {other:?}"),
    };
    let identity = Identity::generate()?;
    conn.send(&ClientMsg::Register {
        signature: ByteBuf::from(identity.sign_register(&challenge, &name).to_vec()),
        identity: ByteBuf::from(identity.public().to_vec()),
        name,
        media: MediaAddr::new([127, 0, 0, 1].into(), 9),
        resume: None,
    })
    .await?;
    match conn.recv().await? {
        ServerMsg::Registered { .. } => Ok(conn),
        other => bail!("unexpected {other:?}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn signaling(
    clients: usize,
    calls: usize,
    concurrency: usize,
    server_bin: Option<PathBuf>,
    tls: bool,
) -> anyhow::Result<()> {
    let bin = match server_bin {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("fala-server"),
    };
    let server = ServerProcess::start(bin, clients + 100, tls)?;
    let addr = server.addr;
    let known = server.tls.clone();
    // Warm up the allocator and runtime, then take the baseline.
    {
        let mut warm = Vec::new();
        for i in 0..50 {
            warm.push(register(addr, known.clone(), format!("warm{i}")).await?);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss();
    let cpu_before = server.cpu();

    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let gate = gate.clone();
        let known = known.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            register(addr, known, format!("user{i}")).await
        }));
    }
    let mut conns = Vec::with_capacity(clients);
    for t in tasks {
        conns.push(t.await??);
    }
    let reg_time = started.elapsed();
    let reg_cpu = server.cpu().saturating_sub(cpu_before);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.rss();
    let per_client = rss_after.saturating_sub(rss_before) as f64 / clients as f64;

    // Unloaded: one call setup at a time, each by a different pair (one invite per caller
    // stays inside the invite rate limit).
    const SERIAL: usize = 100;
    let pairs = calls.min(clients.saturating_sub(2 * SERIAL) / 2);
    let mut serial = Vec::new();
    for k in 0..SERIAL {
        let (a, b) = conns[2 * k..2 * k + 2].split_at_mut(1);
        let (caller, callee) = (&mut a[0], &mut b[0]);
        let t = Instant::now();
        caller
            .send(&ClientMsg::Invite {
                to: format!("user{}", 2 * k + 1),
                commit: None,
                candidates: Vec::new(),
                hide_address: false,
            })
            .await?;
        let id = loop {
            if let ServerMsg::IncomingCall { call_id, .. } = callee.recv().await? {
                break call_id;
            }
        };
        serial.push(t.elapsed());
        callee.send(&ClientMsg::Decline { call_id: id }).await?;
        loop {
            if let ServerMsg::CallEnded { .. } = caller.recv().await? {
                break;
            }
        }
    }
    serial.sort();

    // Loaded: `pairs` call setups in flight at once, first all fired together (a burst), then
    // paced evenly over `pace` (calls stay ringing, so all of them are concurrent at the end).
    let base = 2 * SERIAL;
    let mut rest = conns.into_iter().skip(base).collect::<Vec<_>>();
    let pairs = pairs.min(rest.len() / 4);
    let paced_group: Vec<Connection> = rest.drain(2 * pairs..4 * pairs).collect();
    let burst_group = rest.drain(..2 * pairs).collect::<Vec<_>>();
    let (burst, burst_time) = call_setups(burst_group, base, Duration::ZERO).await?;
    let pace = Duration::from_millis(500);
    let (paced, _) = call_setups(paced_group, base + 2 * pairs, pace).await?;

    println!(
        "## fala-bench signaling ({} registered clients, {} concurrent call setups, {}, identities checked)\n",
        clients,
        pairs,
        if tls { "TLS" } else { "plain TCP" }
    );
    println!("| metric | value | target |");
    println!("|---|---|---|");
    println!("| concurrent registered clients | {clients} | ≥ 10 000 |");
    println!(
        "| registrations per second | {:.0} ({} in {:.2} s, {} in flight) | ≥ 20 000 |",
        clients as f64 / reg_time.as_secs_f64(),
        clients,
        reg_time.as_secs_f64(),
        concurrency
    );
    println!(
        "| server CPU during registration | {:.0} % of one core | |",
        100.0 * reg_cpu.as_secs_f64() / reg_time.as_secs_f64()
    );
    println!(
        "| server RSS per idle client | {:.2} KB (RSS {:.1} MB → {:.1} MB) | ≤ 10 KB |",
        per_client / 1024.0,
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0
    );
    println!(
        "| invite → incoming call, one at a time, p50 | {} | |",
        ms(percentile(&serial, 0.5))
    );
    println!(
        "| invite → incoming call, {pairs} paced over {} ms (all ringing at the end), p50 / p99 | {} / {} | p99 ≤ 2 ms |",
        pace.as_millis(),
        ms(percentile(&paced, 0.5)),
        ms(percentile(&paced, 0.99))
    );
    println!(
        "| invite → incoming call, {pairs} fired at the same instant, p50 / p99 | {} / {} | |",
        ms(percentile(&burst, 0.5)),
        ms(percentile(&burst, 0.99))
    );
    println!(
        "| whole burst of {pairs} setups, first invite to last incoming call | {} | |",
        ms(burst_time)
    );
    Ok(())
}

/// Runs one call setup per pair in `group` (first half calls, second half answers; names
/// `user{first}...`), the invites spread evenly over `spread`. Returns the sorted
/// invite → incoming-call latencies and the time from the first invite to the last arrival.
async fn call_setups(
    mut group: Vec<Connection>,
    first: usize,
    spread: Duration,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let pairs = group.len() / 2;
    let callees: Vec<Connection> = group.drain(pairs..).collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(pairs + 1));
    let mut waits = Vec::new();
    for (i, mut callee) in callees.into_iter().enumerate() {
        let barrier = barrier.clone();
        waits.push(tokio::spawn(async move {
            barrier.wait().await;
            loop {
                if let ServerMsg::IncomingCall { .. } = callee.recv().await? {
                    return anyhow::Ok((i, Instant::now(), callee));
                }
            }
        }));
    }
    barrier.wait().await;
    let step = spread / pairs.max(1) as u32;
    let t0 = Instant::now();
    let mut sent_at = Vec::with_capacity(pairs);
    for (i, caller) in group.iter_mut().enumerate() {
        if !step.is_zero() {
            tokio::time::sleep_until((t0 + step * i as u32).into()).await;
        }
        let to = format!("user{}", first + pairs + i);
        sent_at.push(Instant::now());
        caller
            .send(&ClientMsg::Invite {
                to,
                commit: None,
                candidates: Vec::new(),
                hide_address: false,
            })
            .await?;
    }
    let mut latencies = Vec::with_capacity(pairs);
    let mut last = t0;
    let mut keep = Vec::new();
    for w in waits {
        let (i, got, callee) = w.await??;
        latencies.push(got.saturating_duration_since(sent_at[i]));
        last = last.max(got);
        keep.push(callee);
    }
    latencies.sort();
    Ok((latencies, last - t0))
}
