//! `fala`: the softphone. With no arguments it opens the window; subcommands give scripts and
//! tests a headless way in.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use fala::app::{runtime::NetRuntime, store::Store, App};
use fala::client::{identity_file, paths, Advertise, ConnectRequest, MediaOptions};
use fala::headless::{self, Mode};
use fala::media::{CodecSettings, FrameMs, InputSpec, JitterMode, JitterSettings, OutputSpec};
use fala::term::{self, TermOptions};
use fala_proto::identity::Identity;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Fala: a softphone — register a name, see who is online, call them"
)]
struct Cli {
    /// Open the window and register at once with the remembered name and server.
    #[arg(long)]
    connect: bool,
    /// The identity key file to use (made if missing). Default: identity.key in the config
    /// folder.
    #[arg(long, global = true, value_name = "FILE")]
    identity: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

/// Who to be and where.
#[derive(Args, Debug, Clone)]
struct Who {
    /// The name to register.
    #[arg(long)]
    name: String,
    /// The signaling server, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7400")]
    server: String,
    /// UDP port to receive audio on (0 = any free port).
    #[arg(long, default_value_t = 0)]
    media_port: u16,
    /// Media address to advertise instead of the bound one (port forwarding, test relays).
    #[arg(long)]
    advertise: Option<SocketAddrV4>,
    /// Plain TCP to the server instead of TLS (for a server started with --plain).
    #[arg(long)]
    plain: bool,
}

/// Where audio comes from and goes to, and how it is coded.
#[derive(Args, Debug, Clone)]
struct AudioArgs {
    /// Play this WAV file as the microphone from the moment the call connects, then silence.
    #[arg(long, conflicts_with = "input_device")]
    input: Option<PathBuf>,
    /// Capture device (part of its name; see `fala devices`). Default: the system default.
    #[arg(long)]
    input_device: Option<String>,
    /// Record what is heard to this WAV file (48 kHz mono 16-bit), in real time.
    #[arg(long, conflicts_with = "output_device")]
    output: Option<PathBuf>,
    /// Playback device (part of its name). Default: the system default.
    #[arg(long)]
    output_device: Option<String>,
    /// Opus bitrate in bits per second.
    #[arg(long, default_value_t = CodecSettings::default().bitrate)]
    bitrate: u32,
    /// Frame size in milliseconds: 10 or 20 (values in between mean 10).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(10..=20))]
    frame_ms: u32,
    /// Send near-empty packets during silence (Opus DTX).
    #[arg(long)]
    dtx: bool,
    /// Most redundant copies of earlier packets to send while the peer reports loss (each
    /// multiplies the send bitrate while in use; 0 = in-band FEC only).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    max_copies: u8,
    /// Baseline mode: a fixed playout delay of this many ms and no FEC or copies (what simple
    /// phones do).
    #[arg(long)]
    fixed_jitter_ms: Option<u32>,
    /// Send media in clear (for packet captures); encrypted by default. Implies
    /// --allow-unencrypted.
    #[arg(long)]
    no_encrypt: bool,
    /// Take calls whose other side sends media in clear (refused by default).
    #[arg(long)]
    allow_unencrypted: bool,
    /// Send and receive call audio through the server's relay, never directly: the other side
    /// never learns your address (the server shows it the relay instead).
    #[arg(long)]
    always_relay: bool,
}

impl Who {
    fn request(self, identity: Arc<Identity>) -> ConnectRequest {
        ConnectRequest {
            identity,
            security: paths::security(self.plain, paths::config_dir()),
            server: self.server,
            name: self.name,
            media_port: self.media_port,
            advertise: self.advertise.map_or(Advertise::Seen, Advertise::Addr),
            server_is_local: false,
            notify: None,
        }
    }
}

impl AudioArgs {
    fn options(&self) -> MediaOptions {
        let input = match (&self.input, &self.input_device) {
            (Some(path), _) => InputSpec::Wav(path.clone()),
            (None, dev) => InputSpec::Device(dev.clone()),
        };
        let output = match (&self.output, &self.output_device) {
            (Some(path), _) => OutputSpec::Wav(path.clone()),
            (None, dev) => OutputSpec::Device(dev.clone()),
        };
        let mut codec = CodecSettings {
            bitrate: self.bitrate,
            frame: FrameMs::from_ms(self.frame_ms),
            dtx: self.dtx,
            max_copies: self.max_copies,
            ..CodecSettings::default()
        };
        let mut jitter = JitterSettings::default();
        if let Some(delay_ms) = self.fixed_jitter_ms {
            jitter.mode = JitterMode::Fixed { delay_ms };
            codec.fec = false;
        }
        MediaOptions {
            input,
            output,
            codec,
            jitter,
            encrypt: !self.no_encrypt,
            allow_unencrypted: self.allow_unencrypted,
            always_relay: self.always_relay,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Terminal client: 0 disconnects, 1 looks a user up and calls them; Y / N answer a call.
    Term {
        #[command(flatten)]
        id: Who,
        #[command(flatten)]
        audio: AudioArgs,
        /// Key (typed, then Enter) that hangs up.
        #[arg(long, default_value = "h")]
        hangup_key: String,
    },
    /// Call PEER, talk, and exit when the call ends (0 after a normal hang-up).
    Call {
        /// Who to call.
        peer: String,
        #[command(flatten)]
        id: Who,
        #[command(flatten)]
        audio: AudioArgs,
        /// Hang up this many seconds after the call connects.
        #[arg(long)]
        hangup_after: Option<f64>,
        /// Write final call statistics here as JSON.
        #[arg(long)]
        stats: Option<PathBuf>,
    },
    /// Wait for the first incoming call, accept it (or decline it), talk, and exit.
    Answer {
        #[command(flatten)]
        id: Who,
        #[command(flatten)]
        audio: AudioArgs,
        /// Decline the call instead of accepting it.
        #[arg(long)]
        decline: bool,
        /// Hang up this many seconds after the call connects.
        #[arg(long)]
        hangup_after: Option<f64>,
        /// Write final call statistics here as JSON.
        #[arg(long)]
        stats: Option<PathBuf>,
    },
    /// List audio input and output devices.
    Devices,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn headless_call(
    id: Who,
    identity: Arc<Identity>,
    audio: AudioArgs,
    mode: Mode,
    hangup_after: Option<f64>,
    stats: Option<PathBuf>,
) -> anyhow::Result<()> {
    let opts = headless::Options {
        connect: id.request(identity),
        mode,
        media: audio.options(),
        hangup_after: hangup_after.map(Duration::from_secs_f64),
        stats,
    };
    runtime()?.block_on(headless::run(opts))
}

/// Errors end the program with one line on standard error and exit status 1 (scripts read
/// the reason; a backtrace would bury it).
fn main() {
    if let Err(e) = run() {
        eprintln!("fala: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let launched = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let identity = load_identity(cli.identity.as_deref())?;
    match cli.command {
        Some(Cmd::Term {
            id,
            audio,
            hangup_key,
        }) => {
            let opts = TermOptions {
                connect: id.request(identity),
                hangup_key,
            };
            runtime()?.block_on(term::run(opts, audio.options()))
        }
        Some(Cmd::Call {
            peer,
            id,
            audio,
            hangup_after,
            stats,
        }) => headless_call(id, identity, audio, Mode::Call(peer), hangup_after, stats),
        Some(Cmd::Answer {
            id,
            audio,
            decline,
            hangup_after,
            stats,
        }) => {
            let mode = Mode::Answer { decline };
            headless_call(id, identity, audio, mode, hangup_after, stats)
        }
        Some(Cmd::Devices) => {
            let (inputs, outputs) = fala::media::device::list_devices();
            println!("Input devices:");
            for d in inputs {
                println!("  {d}");
            }
            println!("Output devices:");
            for d in outputs {
                println!("  {d}");
            }
            Ok(())
        }
        None => run_window(launched, cli.connect, identity),
    }
}

/// The identity kept in `file`, or in the config folder; a fresh one for this run only when
/// there is no config folder at all.
fn load_identity(file: Option<&std::path::Path>) -> anyhow::Result<Arc<Identity>> {
    let path = file
        .map(PathBuf::from)
        .or_else(|| identity_file::default_path(paths::config_dir().as_deref()));
    let identity = match path {
        Some(path) => identity_file::load_or_create(&path)?,
        None => {
            tracing::warn!("no config folder: using an identity for this run only");
            Identity::generate().map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    Ok(Arc::new(identity))
}

/// Opens the window. Settings and history live in `FALA_CONFIG_DIR` or the user's config
/// folder; signaling (and an optional local server) run on the `fala-net` thread.
fn run_window(launched: Instant, connect: bool, identity: Arc<Identity>) -> anyhow::Result<()> {
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
                .with_identity(identity)
                .with_audio()
                .launched_at(launched)
                .connect_on_start(connect);
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window failed: {e}"))?;
    drop(net);
    Ok(())
}
