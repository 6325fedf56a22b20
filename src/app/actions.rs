//! What the user does in the window: the screens call these, and each hands the work to the
//! phone (or the local server, or a dialog thread) and shows the outcome.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::local_server::{self, LocalServer};
use super::{i18n, App};
use crate::client::model::{ConnectProblem, Effect};
use crate::client::{paths, Advertise, ConnectRequest};

impl App {
    /// Register pressed on the connect screen.
    pub fn connect(&mut self, ctx: &egui::Context) {
        let advertised = self.settings.advertised_ip.trim();
        let advertise = if advertised.is_empty() {
            Advertise::Seen
        } else {
            match advertised.parse::<Ipv4Addr>() {
                Ok(ip) => Advertise::Ip(ip),
                Err(_) => {
                    return self
                        .phone
                        .model_mut()
                        .refuse_locally(ConnectProblem::AdvertisedIpInvalid)
                }
            }
        };
        let server = self.settings.server.trim().to_string();
        let repaint = ctx.clone();
        let security = paths::security(self.settings.plain, self.config_dir.clone());
        let request = ConnectRequest {
            server_is_local: local_server::is_on_this_machine(&server),
            server,
            security,
            name: self.settings.name.clone(),
            identity: self.identity.clone(),
            // An ephemeral port for every window, so several run side by side on one machine.
            media_port: 0,
            advertise,
            notify: Some(Arc::new(move || repaint.request_repaint())),
        };
        self.phone.model_mut().allow_unencrypted = self.settings.allow_unencrypted;
        let _entered = self.rt.enter();
        if let Ok(events) = self.phone.connect(request) {
            self.events = Some(events);
        }
    }

    /// Writes the contact book (on the saver's thread).
    pub(crate) fn save_contacts(&self) {
        self.saver
            .save_contacts(self.phone.model().contacts.clone());
    }

    /// Adds `name` to the contact list.
    pub fn add_contact(&mut self, name: &str) {
        let name = name.trim();
        if fala_proto::name::validate_name(name).is_ok() {
            // Its only effect is the new `watch`, which the phone sends.
            let _watch = self.phone.add_contact(name);
            self.save_contacts();
        }
    }

    /// Takes `name` off the contact list (its pinned key is kept).
    pub fn remove_contact(&mut self, name: &str) {
        let _watch = self.phone.remove_contact(name);
        self.save_contacts();
    }

    /// Marks `name`'s safety number compared (or not).
    pub fn set_contact_verified(&mut self, name: &str, verified: bool) {
        self.phone.model_mut().contacts.set_verified(name, verified);
        self.save_contacts();
    }

    /// Trusts the changed identity key of `name` from now on.
    pub fn accept_changed_key(&mut self, name: &str) {
        self.phone.model_mut().contacts.accept_changed_key(name);
        self.save_contacts();
    }

    /// The safety number with `name`, once their key is pinned. Worked out once per person and
    /// key (it takes thousands of hashes) and kept, not on every frame.
    pub fn safety_number(&mut self, name: &str) -> Option<String> {
        let pinned = self.phone.model().contacts.get(name)?.identity.clone()?;
        if let Some((for_name, for_key, number)) = &self.ui.safety_number {
            if for_name == name && *for_key == pinned {
                return Some(number.clone());
            }
        }
        let number = self
            .phone
            .model()
            .contacts
            .safety_number(&self.identity.public(), name)?;
        self.ui.safety_number = Some((name.to_string(), pinned, number.clone()));
        Some(number)
    }

    /// "Start a local server" on the connect screen: serve the typed address, then register.
    pub fn start_local_server(&mut self, ctx: &egui::Context) {
        let tls = (!self.settings.plain).then_some(self.config_dir.as_deref());
        match LocalServer::start(&self.rt, self.settings.server.trim(), tls) {
            Ok(server) => {
                self.local_server = Some(server);
                self.connect(ctx);
            }
            Err(e) => self
                .phone
                .model_mut()
                .refuse_locally(ConnectProblem::LocalServer(e.to_string())),
        }
    }

    pub fn call(&mut self, peer: &str, ctx: &egui::Context) {
        let dialed = self.phone.dial(peer, Instant::now(), SystemTime::now());
        self.show_result(dialed, ctx);
    }

    pub fn accept(&mut self, ctx: &egui::Context) {
        let accepted = self.phone.accept();
        self.show_result(accepted, ctx);
    }

    /// Refuses `name`'s calls from now on (declining theirs if it rings).
    pub fn block(&mut self, name: &str, ctx: &egui::Context) {
        let fx = self.phone.block(name);
        self.show_effects(fx, ctx);
    }

    pub fn unblock(&mut self, name: &str, ctx: &egui::Context) {
        let fx = self.phone.unblock(name);
        self.show_effects(fx, ctx);
    }

    pub fn decline(&mut self, ctx: &egui::Context) {
        let declined = self.phone.decline();
        self.show_result(declined, ctx);
    }

    pub fn hangup(&mut self, ctx: &egui::Context) {
        let hung_up = self.phone.hangup(Instant::now());
        self.show_result(hung_up, ctx);
    }

    pub fn lookup(&mut self, name: &str, ctx: &egui::Context) {
        let fx = self.phone.lookup(name);
        self.show_effects(fx, ctx);
    }

    /// "Find people" changed: search for what is typed now.
    pub fn search(&mut self, ctx: &egui::Context) {
        let query = self.ui.search_text.clone();
        let fx = self.phone.search(&query);
        self.show_effects(fx, ctx);
    }

    /// The next page of "Find people".
    pub fn search_more(&mut self, ctx: &egui::Context) {
        let fx = self.phone.search_more();
        self.show_effects(fx, ctx);
    }

    pub fn disconnect(&mut self, ctx: &egui::Context) {
        let fx = self.phone.disconnect();
        self.show_effects(fx, ctx);
    }

    pub fn toggle_mute(&mut self) {
        let muted = !self.model().muted;
        self.phone.set_muted(muted);
    }

    /// Records the running call to `path` (the save dialog's answer, or a test's path). The
    /// file is created off this thread; a failure to create it is shown when it comes back.
    pub fn record_to(&mut self, path: PathBuf) {
        match self.phone.start_recording(path.clone()) {
            Ok(()) => {
                self.ui.recording = Some(path);
                self.ui.record_error = None;
            }
            Err(e) => self.ui.record_error = Some(i18n::fill(self.tr().record_failed, e)),
        }
    }

    /// Opens the save dialog on a thread of its own (it blocks until the user answers).
    pub(super) fn ask_record_path(&mut self, ctx: &egui::Context) {
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

    pub(super) fn stop_recording(&mut self) {
        self.phone.stop_recording();
        self.ui.recording = None;
    }

    /// Shows the effects of a call action that fits the call's state (one that does not, such
    /// as accepting when nothing rings, changes nothing).
    fn show_result<E>(&mut self, done: Result<Vec<Effect>, E>, ctx: &egui::Context) {
        if let Ok(fx) = done {
            self.show_effects(fx, ctx);
        }
    }
}
