//! `fala-server`: the signaling server's command line.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fala_server::{Config, EchoConfig, Limits, NamesConfig, Timeouts};

/// Fala signaling server: registers names, shows who is online and sets up calls.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:7400")]
    listen: SocketAddr,
    /// Seconds an unanswered call rings before it ends with "no answer".
    #[arg(long, default_value_t = 30)]
    ring_timeout: u64,
    /// Seconds of silence after which a client is dropped and its name freed.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
    /// Seconds a caller whose connection dropped mid-call (a network change) has to come
    /// back before the call ends for the other side (0: it ends at once).
    #[arg(long, default_value_t = 20)]
    resume_grace: u64,
    /// Do not host the `echo` user (a sound test that plays your voice back).
    #[arg(long)]
    no_echo: bool,
    /// Seconds the echo user waits before playing audio back (0 allowed).
    #[arg(long, default_value_t = 1.0)]
    echo_delay: f64,
    /// Most connections served at once.
    #[arg(long, default_value_t = 16_000)]
    max_connections: usize,
    /// Most connections from one IP address at once (0 = no per-address limits: for a proxy
    /// in front of the server, or a load bench on one host).
    #[arg(long, default_value_t = 64)]
    max_connections_per_ip: usize,
    /// Plain TCP instead of TLS (tests, interop, a TLS proxy in front).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    plain: bool,
    /// PEM certificate chain to present (e.g. from a CA); default: a self-signed one kept in
    /// the data folder.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where the server keeps what must survive a restart (its certificate, who owns which
    /// name, the echo's identity). Default: ~/.local/share/fala-server.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Days a name may go unused before another identity can claim it.
    #[arg(long, default_value_t = 180)]
    name_reclaim_days: u64,
    /// New names one IP address may take per hour (0 = no limit: a load bench on one host).
    #[arg(long, default_value_t = 20)]
    new_names_per_ip_hour: u32,
    /// Most names the server keeps; past this, only known owners may register.
    #[arg(long, default_value_t = 1_000_000)]
    max_names: usize,
    /// Let every client list everyone online and follow everyone's presence (`list`,
    /// `subscribe`): for a small private server. Off: people are found by searching.
    #[arg(long)]
    open_list: bool,
}

/// Every connection is an open file: raises the soft limit to the hard one (distributions
/// default the soft one to 1024, far below what a server holds) and says what it got.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!("open-file limit: {limit}");
            // A few files go to the listener, the echo socket, the runtime and logs.
            let room = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(64);
            if room < max_connections {
                tracing::warn!(
                    "the open-file limit ({limit}) allows only about {room} of the \
                     {max_connections} connections asked for (--max-connections)"
                );
            }
        }
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("fala-server: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    raise_open_file_limit(args.max_connections);
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(fala_server::data_dir::default_data_dir);
    let tls = tls_identity(&args, &data_dir)?;
    let service_key = data_dir.join("service-identity.key");
    let service_seed = fala_server::data_dir::load_or_make_seed(&service_key)
        .with_context(|| format!("the echo's identity in {}", service_key.display()))?;
    let config = Config {
        timeouts: Timeouts {
            ring: Duration::from_secs(args.ring_timeout),
            idle: Duration::from_secs(args.idle_timeout),
            resume: Duration::from_secs(args.resume_grace),
            ..Timeouts::default()
        },
        limits: Limits {
            max_connections: args.max_connections,
            max_connections_per_ip: args.max_connections_per_ip,
            ..Limits::default()
        },
        echo: (!args.no_echo).then(|| EchoConfig {
            delay: Duration::from_secs_f64(args.echo_delay.max(0.0)),
        }),
        tls: tls.as_ref().map(|t| t.config.clone()),
        names_db: Some(data_dir.join("names.redb")),
        names: NamesConfig {
            reclaim_after: Duration::from_secs(args.name_reclaim_days.saturating_mul(24 * 3600)),
            max_names: args.max_names,
            new_names_per_ip_hour: args.new_names_per_ip_hour,
        },
        service_identity_seed: Some(service_seed),
        open_list: args.open_list,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fala-server")
        .build()?;
    runtime.block_on(async move {
        let listener =
            listen(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
        let local = listener.local_addr()?;
        print_reachable(local);
        match &tls {
            Some(t) => println!(
                "TLS certificate fingerprint (SHA-256), for clients to compare:\n  {}",
                t.fingerprint
            ),
            None => println!("plain TCP: signaling is not encrypted (--plain)"),
        }
        fala_server::run(listener, config, shutdown_signal()).await?;
        println!("fala-server stopped");
        Ok(())
    })
}

/// The certificate to present: the one given, or the one kept in the data folder (made on the
/// first start, for this host's names and addresses); none with `--plain`.
fn tls_identity(
    args: &Args,
    dir: &std::path::Path,
) -> anyhow::Result<Option<fala_server::tls::TlsIdentity>> {
    if args.plain {
        return Ok(None);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Ok(Some(fala_server::tls::load(cert, key)?));
    }
    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = hostname() {
        names.push(host);
    }
    if let Ok(addrs) = if_addrs::get_if_addrs() {
        names.extend(addrs.iter().map(|a| a.ip().to_string()));
    }
    let identity = fala_server::tls::load_or_make(dir, &names)
        .with_context(|| format!("TLS certificate in {}", dir.display()))?;
    Ok(Some(identity))
}

/// This machine's host name, for the certificate it makes.
fn hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/etc/hostname")?.trim().to_string())
}

/// Binds with a deep accept backlog, so a crowd of clients reconnecting at once after a
/// restart is queued rather than reset.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Prints where clients can reach the server, as the original printed its IPv4 and port.
fn print_reachable(local: SocketAddr) {
    println!("fala-server listening on {local}");
    let port = local.port();
    let ips: Vec<IpAddr> = if local.ip().is_unspecified() {
        if_addrs::get_if_addrs()
            .map(|ifs| {
                ifs.into_iter()
                    .map(|i| i.ip())
                    .filter(IpAddr::is_ipv4)
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![local.ip()]
    };
    for ip in ips {
        println!("  reachable at {ip}:{port}");
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
