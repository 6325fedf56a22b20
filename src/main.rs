//! `fala`: the softphone. With no arguments it opens the window; subcommands give scripts and
//! tests a headless way in.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use anyhow::Context;

use clap::{Parser, Subcommand};
use fala::app::{runtime::NetRuntime, store::Store, App};
use fala::term::{self, SignalConfigParts, TermOptions};
use fala_proto::MediaAddr;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Fala: a softphone — register a name, see who is online, call them"
)]
struct Cli {
    /// Open the window and register at once with the remembered name and server.
    #[arg(long)]
    connect: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Terminal client: 0 disconnects, 1 looks a user up and calls them; Y / N answer a call.
    Term {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "127.0.0.1:7400")]
        server: String,
        /// UDP port to receive audio on (0 = any free port).
        #[arg(long, default_value_t = 0)]
        media_port: u16,
        /// Media address to advertise instead of the bound one (port forwarding, test relays).
        #[arg(long)]
        advertise: Option<SocketAddrV4>,
        /// Key (typed, then Enter) that hangs up.
        #[arg(long, default_value = "h")]
        hangup_key: String,
    },
}

fn main() -> anyhow::Result<()> {
    let launched = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Term {
            name,
            server,
            media_port,
            advertise,
            hangup_key,
        }) => {
            let socket = term::bind_media(media_port)?;
            let port = socket.local_addr()?.port();
            let media = advertise
                .map(MediaAddr)
                .unwrap_or_else(|| MediaAddr::new(Ipv4Addr::UNSPECIFIED, port));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(term::run(TermOptions {
                signal: SignalConfigParts {
                    server,
                    name,
                    media,
                },
                hangup_key,
            }))
        }
        None => run_window(launched, cli.connect),
    }
}

/// Opens the window. Settings and history live in `FALA_CONFIG_DIR` or the user's config
/// folder; signaling (and an optional local server) run on the `fala-net` thread.
fn run_window(launched: Instant, connect: bool) -> anyhow::Result<()> {
    let store = Store::default_location();
    let settings = store.load_settings();
    let net = NetRuntime::start().context("cannot start the network thread")?;
    let handle = net.handle();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Fala")
            .with_app_id("fala")
            .with_inner_size([780.0, 560.0])
            .with_min_inner_size([600.0, 440.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Fala",
        options,
        Box::new(move |_cc| {
            let app = App::new(settings, store, handle)
                .launched_at(launched)
                .connect_on_start(connect);
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window failed: {e}"))?;
    drop(net);
    Ok(())
}
