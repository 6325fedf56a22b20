//! The window: one face of the call core. [`App`] drives a [`Phone`] (model, signaling,
//! media link) and adds what only a window has: settings and history on disk, sounds outside
//! calls (ringtone, test tone, microphone meter), a local server, and one screen per frame from
//! `ui/`.
//!
//! The UI thread never waits: commands go to the `fala-net` runtime through bounded channels;
//! signaling and media events come back through channels drained each frame within
//! [`DRAIN_BUDGET`], and whoever queues an event wakes the window with `request_repaint`.
//! Devices open on the media thread, device lists come from a thread of their own, and
//! settings, history and recordings are written off this thread. An idle window does not
//! repaint at all; only ringing and calls repaint on a timer (for the call timer and meters).

mod actions;
pub mod call_stats;
mod events;
pub mod i18n;
pub mod local_server;
pub mod runtime;
pub mod settings;
mod sounds;
pub mod store;
mod ui;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fala_proto::call::CallState;
use fala_proto::identity::Identity;
use tokio::runtime::Handle;

use crate::client::history::History;
use crate::client::model::Model;
use crate::client::{Phone, PhoneEvents};
use i18n::Strings;
use local_server::LocalServer;
use settings::Settings;
use sounds::Sounds;
use store::{Saver, Store};

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
    /// What is typed in "Find people".
    search_text: String,
    lookup_text: String,
    /// The name typed to add a contact.
    contact_text: String,
    /// The last safety number shown: for whom, for which of their keys, and the digits.
    safety_number: Option<(String, String, String)>,
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

/// The softphone window. Constructible without eframe so tests can drive [`App::show`].
pub struct App {
    phone: Phone,
    /// The connected phone's events, drained each frame.
    events: Option<PhoneEvents>,
    settings: Settings,
    saved_settings: Settings,
    history: History,
    /// Where the window keeps its files (none under test).
    config_dir: Option<PathBuf>,
    saver: Saver,
    rt: Handle,
    sounds: Sounds,
    local_server: Option<LocalServer>,
    ui: UiState,
    /// Save-dialog answers come back here from the dialog's thread.
    dialog_rx: Option<std::sync::mpsc::Receiver<Option<PathBuf>>>,
    /// When the process started, until the first frame is logged (time to first frame).
    launched: Option<Instant>,
    /// Register on the first frame (`fala --connect`).
    connect_on_start: bool,
    /// Who this window is to the server and its contacts.
    identity: Arc<Identity>,
}

impl App {
    /// A window with the given settings, running its network side on `rt`, with no audio
    /// engine (see [`App::with_audio`]): calls connect, nothing is played, and the window says
    /// so.
    pub fn new(settings: Settings, store: Store, rt: Handle) -> Self {
        let history = store.load_history();
        let mut phone = Phone::new(true, None);
        phone.model_mut().contacts = store.load_contacts();
        App {
            phone,
            events: None,
            saved_settings: settings.clone(),
            settings,
            history,
            config_dir: store.dir().map(PathBuf::from),
            saver: Saver::start(store),
            rt,
            sounds: Sounds::new(false),
            local_server: None,
            ui: UiState::default(),
            dialog_rx: None,
            launched: None,
            connect_on_start: false,
            // Until `with_identity` gives the kept one (tests run with a fresh one).
            identity: Arc::new(Identity::generate().expect("OS random generator")),
        }
    }

    /// Registers and signs calls as `identity` (the one kept in the identity file).
    pub fn with_identity(mut self, identity: Arc<Identity>) -> Self {
        self.identity = identity;
        self
    }

    /// Plays real audio: calls through the media engine, the ringtone, the test tone and the
    /// microphone meter through the sound devices.
    pub fn with_audio(mut self) -> Self {
        let contacts = std::mem::take(&mut self.phone.model_mut().contacts);
        self.phone = Phone::new(true, Some(self.settings.media_options()));
        self.phone.model_mut().contacts = contacts;
        self.sounds = Sounds::new(true);
        self
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

    pub fn model(&self) -> &Model {
        self.phone.model()
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
        let link = self.phone.media()?;
        link.local_addr().ok().map(|a| a.port())
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

    /// Applies what arrived from the network, the media link and dialogs. eframe calls this
    /// even while the window is hidden or minimised, so an incoming call still rings and
    /// notifies then.
    pub fn logic(&mut self, ctx: &egui::Context) {
        if std::mem::take(&mut self.connect_on_start) {
            self.connect(ctx);
        }
        self.drain_events(ctx);
        let fx = self.phone.refresh_directory(Instant::now());
        self.show_effects(fx, ctx);
        self.drain_dialogs();
        if let Some(e) = self.saver.take_error() {
            self.ui.settings_error = Some(e);
        }
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
        let since = match self.model().calls.state() {
            CallState::Dialing { since, .. }
            | CallState::RingingOut { since, .. }
            | CallState::RingingIn { since, .. } => *since,
            CallState::InCall { .. } if self.sounds.enabled() => return Some(LIVE_REPAINT),
            CallState::InCall { since, .. } => *since,
            CallState::Idle | CallState::Ended { .. } => return None,
        };
        let into_second = now.saturating_duration_since(since).subsec_millis() as u64;
        Some(Duration::from_millis(1000 - into_second))
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
        let ringing_in = matches!(self.model().calls.state(), CallState::RingingIn { .. });
        if ringing_in {
            if ctx.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::Y)) {
                self.accept(ctx);
            } else if ctx.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::N)) {
                self.decline(ctx);
            }
        } else if self.model().calls.is_busy() {
            let key = self.settings.hangup_key();
            if ctx.input_mut(|i| i.consume_key(egui::Modifiers::NONE, key)) {
                self.hangup(ctx);
            }
        }
    }

    /// Hands changed settings to the saver (which writes them a moment after the last change,
    /// off this thread) and to the phone (the next call sounds as they say).
    fn persist_settings(&mut self) {
        if self.settings != self.saved_settings {
            self.saved_settings = self.settings.clone();
            self.phone.set_media_options(self.settings.media_options());
            self.saver.save_settings(self.settings.clone());
        }
    }
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        App::logic(self, ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }

    /// The last settings are written before the window goes (the saver finishes on its own
    /// thread; dropping the app waits for it).
    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.persist_settings();
        self.phone.leave();
    }
}
