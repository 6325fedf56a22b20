//! The window: [`App`] owns the state ([`logic::Model`]), the link to the signaling task, the
//! audio seam and the stores, and draws one screen per frame from `ui/`.
//!
//! The UI thread never blocks: commands go to the `fala-net` runtime through bounded channels,
//! events come back through one that is drained each frame within [`DRAIN_BUDGET`], and the
//! signaling task wakes the window with `request_repaint` when it queues an event. An idle
//! window therefore does not repaint at all; only ringing and calls repaint on a timer (for
//! the call timer and meters).

pub mod engine_link;
pub mod history;
pub mod i18n;
pub mod local_server;
pub mod logic;
pub mod media_link;
pub mod runtime;
pub mod settings;
pub mod store;
mod ui;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fala_proto::call::CallState;
use fala_proto::name::validate_name;
use fala_proto::MediaAddr;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::net::{self, Event, SignalConfig, SignalHandle};
use history::History;
use i18n::Strings;
use local_server::LocalServer;
use logic::{ConnectProblem, Effect, Model};
use media_link::{AudioChoice, CallMedia, MediaLink, NoEngine, RINGTONE_WAV};
use settings::Settings;
use store::Store;

/// Longest time a frame spends applying queued events before drawing (the rest waits for the
/// next frame, which is requested at once).
pub const DRAIN_BUDGET: Duration = Duration::from_millis(4);
/// Repaint period of the level meters while an audio engine feeds them.
pub const LIVE_REPAINT: Duration = Duration::from_millis(100);

/// Which page the main screen shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    #[default]
    Contacts,
    History,
    Settings,
}

/// Widget state that is not the model's business.
#[derive(Debug, Default)]
struct UiState {
    tab: Tab,
    filter: String,
    lookup_text: String,
    /// Settings opened from the connect screen.
    settings_from_connect: bool,
    /// Whether the settings screen was drawn this frame (its microphone meter runs only then).
    settings_drawn: bool,
    record_error: Option<String>,
    recording: Option<PathBuf>,
    /// Last error from a media action (test tone, ringtone), shown where it happened.
    media_note: Option<String>,
    settings_error: Option<String>,
    applied_theme: Option<settings::Theme>,
}

/// The running signaling task as seen from the UI thread.
struct NetLink {
    handle: SignalHandle,
    events: mpsc::Receiver<Event>,
}

/// The softphone window. Constructible without eframe so tests can drive [`App::show`].
pub struct App {
    model: Model,
    settings: Settings,
    saved_settings: Settings,
    history: History,
    store: Store,
    rt: Handle,
    net: Option<NetLink>,
    /// The UDP socket registered for audio; opened at Register, kept for the session.
    media_socket: Option<UdpSocket>,
    media: Box<dyn MediaLink>,
    local_server: Option<LocalServer>,
    ui: UiState,
    /// Save-dialog answers come back here from the dialog's thread.
    dialog_rx: Option<std::sync::mpsc::Receiver<Option<PathBuf>>>,
    /// When the process started, until the first frame is logged (time to first frame).
    launched: Option<Instant>,
    /// Register on the first frame (`fala --connect`).
    connect_on_start: bool,
}

impl App {
    /// A window with the given settings, running its network side on `rt`, with no audio
    /// engine (see [`App::with_media`]).
    pub fn new(settings: Settings, store: Store, rt: Handle) -> Self {
        let history = store.load_history();
        App {
            model: Model::new(),
            saved_settings: settings.clone(),
            settings,
            history,
            store,
            rt,
            net: None,
            media_socket: None,
            media: Box::new(NoEngine::default()),
            local_server: None,
            ui: UiState::default(),
            dialog_rx: None,
            launched: None,
            connect_on_start: false,
        }
    }

    /// Registers with the remembered settings as soon as the window shows.
    pub fn connect_on_start(mut self, yes: bool) -> Self {
        self.connect_on_start = yes;
        self
    }

    /// Logs how long the first frame took from this instant (see scripts/gui-bench.sh).
    pub fn launched_at(mut self, at: Instant) -> Self {
        self.launched = Some(at);
        self
    }

    /// Plugs in an audio engine.
    pub fn with_media(mut self, media: Box<dyn MediaLink>) -> Self {
        self.media = media;
        self
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// The local server started from the connect screen, if any.
    pub fn local_server_addr(&self) -> Option<std::net::SocketAddr> {
        self.local_server.as_ref().map(|s| s.addr())
    }

    /// The UDP port audio is received on, once registered.
    pub fn media_port(&self) -> Option<u16> {
        self.media_socket
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.port())
    }

    fn tr(&self) -> &'static Strings {
        self.settings.language.strings()
    }

    /// One whole frame: [`App::logic`] then [`App::draw`]. Tests drive the window with this.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.logic(&ctx);
        self.draw(ui);
    }

    /// Applies what arrived from the network and dialogs. eframe calls this even while the
    /// window is hidden or minimised, so an incoming call still rings and notifies then.
    pub fn logic(&mut self, ctx: &egui::Context) {
        if std::mem::take(&mut self.connect_on_start) {
            self.connect(ctx);
        }
        self.drain_events(ctx);
        self.drain_dialogs();
        self.apply_theme(ctx);
    }

    /// Draws the window and handles its keys.
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.handle_hotkeys(&ctx);
        ui::draw(self, ui);
        if let Some(after) = self.live_repaint(Instant::now()) {
            ctx.request_repaint_after(after);
        }
        self.persist_settings();
        if let Some(at) = self.launched.take() {
            tracing::info!(
                "first frame drawn {} ms after start",
                at.elapsed().as_millis()
            );
        }
    }

    /// When the next frame is due without any event: never when idle; while a call rings or
    /// runs, at the next whole second of its clock, or every [`LIVE_REPAINT`] when an audio
    /// engine feeds the meters.
    fn live_repaint(&self, now: Instant) -> Option<Duration> {
        let since = match self.model.calls.state() {
            CallState::Dialing { since, .. }
            | CallState::RingingOut { since, .. }
            | CallState::RingingIn { since, .. } => *since,
            CallState::InCall { .. } if self.media.is_connected() => return Some(LIVE_REPAINT),
            CallState::InCall { since, .. } => *since,
            CallState::Idle | CallState::Ended { .. } => return None,
        };
        let into_second = now.saturating_duration_since(since).subsec_millis() as u64;
        Some(Duration::from_millis(1000 - into_second))
    }

    fn drain_events(&mut self, ctx: &egui::Context) {
        let deadline = Instant::now() + DRAIN_BUDGET;
        loop {
            let Some(net) = self.net.as_mut() else { return };
            let ev = match net.events.try_recv() {
                Ok(ev) => ev,
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => Event::Stopped,
            };
            let stopped = ev == Event::Stopped;
            let fx = self.model.on_event(ev, Instant::now(), SystemTime::now());
            self.apply(fx, ctx);
            if stopped {
                self.net = None;
                self.media_socket = None;
                return;
            }
            if Instant::now() >= deadline {
                ctx.request_repaint();
                return;
            }
        }
    }

    fn drain_dialogs(&mut self) {
        let Some(rx) = &self.dialog_rx else { return };
        if let Ok(answer) = rx.try_recv() {
            self.dialog_rx = None;
            if let Some(path) = answer {
                self.record_to(path);
            }
        }
    }

    fn apply_theme(&mut self, ctx: &egui::Context) {
        if self.ui.applied_theme != Some(self.settings.theme) {
            self.ui.applied_theme = Some(self.settings.theme);
            ctx.set_theme(match self.settings.theme {
                settings::Theme::Light => egui::Theme::Light,
                settings::Theme::Dark => egui::Theme::Dark,
            });
        }
    }

    /// Y / N answer a ringing call (as in the original); the hang-up key ends any call.
    fn handle_hotkeys(&mut self, ctx: &egui::Context) {
        let ringing_in = matches!(self.model.calls.state(), CallState::RingingIn { .. });
        if ringing_in {
            if ctx.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::Y)) {
                self.accept(ctx);
            } else if ctx.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::N)) {
                self.decline(ctx);
            }
        } else if self.model.calls.is_busy() {
            let key = self.settings.hangup_key();
            if ctx.input_mut(|i| i.consume_key(egui::Modifiers::NONE, key)) {
                self.hangup(ctx);
            }
        }
    }

    fn persist_settings(&mut self) {
        if self.settings != self.saved_settings {
            self.saved_settings = self.settings.clone();
            self.ui.settings_error = self
                .store
                .save_settings(&self.settings)
                .err()
                .map(|e| e.to_string());
        }
    }

    /// Carries out what the logic asked for.
    fn apply(&mut self, effects: Vec<Effect>, ctx: &egui::Context) {
        for effect in effects {
            match effect {
                Effect::Send(msg) => {
                    if let Some(net) = &self.net {
                        if !net.handle.send(msg) {
                            tracing::warn!("signaling queue full or closed; message dropped");
                        }
                    }
                }
                Effect::Disconnect => {
                    if let Some(net) = &self.net {
                        net.handle.disconnect();
                    }
                }
                Effect::StartMedia {
                    peer,
                    peer_key,
                    outgoing,
                } => self.start_media(peer, peer_key, outgoing),
                Effect::StopMedia => {
                    self.media.stop();
                    self.ui.recording = None;
                    self.ui.record_error = None;
                }
                Effect::StartRinging => {
                    // Without an engine the ringtone cannot play; the dialog still shows.
                    let _ = self.media.start_ringing(RINGTONE_WAV);
                }
                Effect::StopRinging => self.media.stop_ringing(),
                Effect::NotifyIncoming(caller) => {
                    let focused = ctx.input(|i| i.viewport().focused);
                    if focused == Some(false) {
                        notify_desktop(self.tr(), &caller);
                    }
                }
                Effect::Log(entry) => {
                    self.history.push(entry);
                    if let Err(e) = self.store.save_history(&self.history) {
                        tracing::warn!("{e}");
                    }
                }
            }
        }
    }

    fn audio_choice(&self) -> AudioChoice {
        AudioChoice {
            input_device: self.settings.input_device.clone(),
            output_device: self.settings.output_device.clone(),
            frame_ms: self.settings.frame_ms,
            bitrate_kbps: self.settings.bitrate_kbps,
            max_copies: self.settings.max_copies,
        }
    }

    fn start_media(&mut self, peer: MediaAddr, peer_key: Option<Vec<u8>>, outgoing: bool) {
        let Some(socket) = self.media_socket.as_ref().and_then(|s| s.try_clone().ok()) else {
            tracing::warn!("no media socket to start audio on");
            return;
        };
        let call = CallMedia {
            socket,
            peer,
            peer_key,
            outgoing,
            audio: self.audio_choice(),
        };
        if let Err(e) = self.media.start(call) {
            self.ui.media_note = Some(e.to_string());
        }
        self.media.set_muted(self.model.muted);
    }

    // ---- user actions (the screens call these) ----

    /// Register pressed on the connect screen.
    pub fn connect(&mut self, ctx: &egui::Context) {
        let name = match validate_name(&self.settings.name) {
            Ok(name) => name,
            Err(e) => {
                return self
                    .model
                    .refuse_locally(ConnectProblem::NameInvalid(e.to_string()))
            }
        };
        let advertised = self.settings.advertised_ip.trim();
        let advertised_ip = if advertised.is_empty() {
            Ipv4Addr::UNSPECIFIED
        } else {
            match advertised.parse::<Ipv4Addr>() {
                Ok(ip) => ip,
                Err(_) => {
                    return self
                        .model
                        .refuse_locally(ConnectProblem::AdvertisedIpInvalid)
                }
            }
        };
        // An ephemeral port for every window, so several run side by side on one machine.
        let socket = match crate::term::bind_media(0) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .model
                    .refuse_locally(ConnectProblem::MediaPort(format!("{e:#}")))
            }
        };
        let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
        let server = self.settings.server.trim().to_string();
        let repaint = ctx.clone();
        let config = SignalConfig {
            server: server.clone(),
            name: name.clone(),
            media: MediaAddr::new(advertised_ip, port),
            subscribe: true,
            notify: Some(Arc::new(move || repaint.request_repaint())),
        };
        let (handle, events) = {
            let _entered = self.rt.enter();
            net::spawn(config)
        };
        self.net = Some(NetLink { handle, events });
        self.media_socket = Some(socket);
        let local = local_server::is_on_this_machine(&server);
        self.model.connecting(&server, &name, local);
    }

    /// "Start a local server" on the connect screen: serve the typed address, then register.
    pub fn start_local_server(&mut self, ctx: &egui::Context) {
        match LocalServer::start(&self.rt, self.settings.server.trim()) {
            Ok(server) => {
                self.local_server = Some(server);
                self.connect(ctx);
            }
            Err(e) => self
                .model
                .refuse_locally(ConnectProblem::LocalServer(e.to_string())),
        }
    }

    pub fn call(&mut self, peer: &str, ctx: &egui::Context) {
        let key = self.media.local_key();
        if let Ok(fx) = self
            .model
            .dial(peer, key, Instant::now(), SystemTime::now())
        {
            self.apply(fx, ctx);
        }
    }

    pub fn accept(&mut self, ctx: &egui::Context) {
        let key = self.media.local_key();
        if let Ok(fx) = self.model.accept(key) {
            self.apply(fx, ctx);
        }
    }

    pub fn decline(&mut self, ctx: &egui::Context) {
        if let Ok(fx) = self.model.decline() {
            self.apply(fx, ctx);
        }
    }

    pub fn hangup(&mut self, ctx: &egui::Context) {
        if let Ok(fx) = self.model.hangup(Instant::now()) {
            self.apply(fx, ctx);
        }
    }

    pub fn lookup(&mut self, name: &str, ctx: &egui::Context) {
        let fx = self.model.lookup(name);
        self.apply(fx, ctx);
    }

    pub fn disconnect(&mut self, ctx: &egui::Context) {
        let fx = self.model.disconnect();
        self.apply(fx, ctx);
    }

    pub fn toggle_mute(&mut self) {
        self.model.muted = !self.model.muted;
        self.media.set_muted(self.model.muted);
    }

    /// Records the running call to `path` (the save dialog's answer, or a test's path).
    pub fn record_to(&mut self, path: PathBuf) {
        let tr = self.tr();
        match self.media.start_recording(&path) {
            Ok(()) => {
                self.ui.recording = Some(path);
                self.ui.record_error = None;
            }
            Err(e) => self.ui.record_error = Some(i18n::fill(tr.record_failed, e)),
        }
    }

    /// Opens the save dialog on a thread of its own (it blocks until the user answers).
    fn ask_record_path(&mut self, ctx: &egui::Context) {
        if self.dialog_rx.is_some() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("fala-dialog".into())
            .spawn(move || {
                let path = rfd::FileDialog::new()
                    .add_filter("WAV", &["wav"])
                    .set_file_name("fala-call.wav")
                    .save_file();
                let _ = tx.send(path);
                ctx.request_repaint();
            });
        match spawned {
            Ok(_) => self.dialog_rx = Some(rx),
            Err(e) => self.ui.record_error = Some(e.to_string()),
        }
    }

    fn stop_recording(&mut self) {
        self.media.stop_recording();
        self.ui.recording = None;
    }
}

/// A desktop notification on a thread of its own (D-Bus may be slow or absent); failure is
/// ignored: the dialog in the window is the real signal.
fn notify_desktop(tr: &'static Strings, caller: &str) {
    let body = i18n::fill(tr.notify_body, caller);
    let _ = std::thread::Builder::new()
        .name("fala-notify".into())
        .spawn(move || {
            if let Err(e) = notify_rust::Notification::new()
                .summary(tr.notify_title)
                .body(&body)
                .appname("Fala")
                .show()
            {
                tracing::debug!("no desktop notification: {e}");
            }
        });
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        App::logic(self, ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.persist_settings();
        if let Some(net) = &self.net {
            net.handle.disconnect();
        }
    }
}
